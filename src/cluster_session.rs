//! What an [`Engine`] on a cluster adds to its SQL session: the shared
//! catalog (tables live on the coordinator, so every session and every
//! submitted script sees them, and they survive a coordinator restart), and
//! the statements about running jobs (`SHOW JOBS`, `STOP JOB`, `CANCEL JOB`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt32Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use tracing::warn;
use weir_sql::{JobControl, SqlError, Statement};

use crate::cluster::Client;
use crate::cluster::client::state_name;
use crate::{Engine, Executed};

/// The catalog tables a session has loaded, and the catalog version it saw.
#[derive(Debug)]
pub(crate) struct CatalogView {
    /// False for a session that keeps its tables to itself.
    pub(crate) shared: bool,
    version: Option<u64>,
    /// Table name → the DDL it was created with.
    tables: BTreeMap<String, String>,
}

impl Default for CatalogView {
    fn default() -> Self {
        Self {
            shared: true,
            version: None,
            tables: BTreeMap::new(),
        }
    }
}

impl CatalogView {
    /// True when the table came from (or went to) the shared catalog.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// The DDL of the catalog's tables this session loaded.
    pub(crate) fn ddl(&self) -> impl Iterator<Item = &str> {
        self.tables.values().map(String::as_str)
    }
}

/// `"name"`, quoted so that the session takes it verbatim.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Engine {
    /// Brings the session's tables in line with the coordinator's catalog:
    /// one cheap call per statement, a reload only when the version moved.
    pub(crate) async fn sync_catalog(&mut self, client: &Client) -> Result<(), SqlError> {
        if !self.catalog.shared {
            return Ok(());
        }
        let catalog = client
            .catalog()
            .await
            .map_err(|e| crate::cluster_error(client, e))?;
        if self.catalog.version == Some(catalog.version) {
            return Ok(());
        }
        let wanted: BTreeMap<&str, &str> = catalog
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.ddl.as_str()))
            .collect();
        let stale: Vec<String> = self
            .catalog
            .tables
            .iter()
            .filter(|(name, ddl)| wanted.get(name.as_str()) != Some(&ddl.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.session
                .execute(&format!("DROP TABLE IF EXISTS {}", quoted(&name)))
                .await?;
            self.catalog.tables.remove(&name);
        }
        for table in &catalog.tables {
            if self.catalog.tables.contains_key(&table.name) {
                continue;
            }
            self.session
                .execute(&format!("DROP TABLE IF EXISTS {}", quoted(&table.name)))
                .await?;
            match self.session.execute(&table.ddl).await {
                Ok(_) => {
                    self.catalog
                        .tables
                        .insert(table.name.clone(), table.ddl.clone());
                }
                Err(e) => {
                    warn!(table = %table.name, error = %e, "a catalog table does not plan here; skipped")
                }
            }
        }
        self.catalog.version = Some(catalog.version);
        Ok(())
    }

    /// After the session ran a `CREATE TABLE` or `DROP TABLE`, makes the
    /// same change in the shared catalog. A refused change is undone
    /// locally and reported. False when the statement stays in the
    /// session: a temporary table, or a session with its own catalog.
    pub(crate) async fn publish_ddl(
        &mut self,
        client: &Client,
        statement: &Statement,
        sql: &str,
    ) -> Result<bool, SqlError> {
        if !self.catalog.shared {
            return Ok(false);
        }
        match statement {
            Statement::CreateTable(create) if create.temporary => return Ok(false),
            Statement::CreateTable(create) if !self.catalog.contains(&create.name) => {
                if let Err(e) = client.create_table(&create.name, sql).await {
                    self.session
                        .execute(&format!("DROP TABLE IF EXISTS {}", quoted(&create.name)))
                        .await?;
                    return Err(SqlError::plan(format!(
                        "the cluster's catalog refused table '{}': {e}",
                        create.name
                    )));
                }
                self.catalog
                    .tables
                    .insert(create.name.clone(), sql.to_string());
            }
            Statement::DropTable { name, .. } if self.catalog.contains(name) => {
                self.catalog.tables.remove(name);
                if let Err(e) = client.drop_table(name).await {
                    // Someone else dropped it first: the outcome is the same.
                    warn!(table = %name, error = %e, "dropping a catalog table");
                }
            }
            Statement::DropTable { .. } => return Ok(false),
            _ => {}
        }
        Ok(true)
    }
}

/// Answers `SHOW JOBS`, `STOP JOB` and `CANCEL JOB` from the coordinator.
pub(crate) async fn job_control(
    client: &Client,
    control: JobControl,
) -> Result<Executed, SqlError> {
    let error = |e| crate::cluster_error(client, e);
    match control {
        JobControl::List => {
            let jobs = client.jobs().await.map_err(error)?;
            jobs_batch(&jobs).map(Executed::Rows)
        }
        JobControl::Stop(id) => {
            client.stop(&id).await.map_err(|e| job_error(&id, e))?;
            Ok(Executed::Text(format!("Job '{id}' is stopping.")))
        }
        JobControl::Cancel(id) => {
            client.cancel(&id).await.map_err(|e| job_error(&id, e))?;
            Ok(Executed::Text(format!("Job '{id}' cancelled.")))
        }
    }
}

fn job_error(id: &str, error: crate::cluster::ClusterError) -> SqlError {
    match error {
        crate::cluster::ClusterError::Rejected(m) => SqlError::plan(m),
        other => SqlError::plan(format!("job '{id}': {other}")),
    }
}

/// `SHOW JOBS` as rows: id, name, state, parallelism, start time, rows in
/// and out, restarts.
fn jobs_batch(jobs: &[weir_proto::JobSummary]) -> Result<RecordBatch, SqlError> {
    let text = |f: &dyn Fn(&weir_proto::JobSummary) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(jobs.iter().map(f)))
    };
    let started = |j: &weir_proto::JobSummary| {
        chrono::DateTime::from_timestamp_millis(j.started_at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    RecordBatch::try_from_iter([
        ("job_id", text(&|j| j.job_id.clone())),
        ("name", text(&|j| j.name.clone())),
        ("state", text(&|j| state_name(j.state()).to_string())),
        (
            "parallelism",
            Arc::new(UInt32Array::from_iter_values(
                jobs.iter().map(|j| j.parallelism),
            )) as ArrayRef,
        ),
        ("started", text(&started)),
        (
            "records_read",
            Arc::new(UInt64Array::from_iter_values(
                jobs.iter().map(|j| j.records_read),
            )),
        ),
        (
            "records_written",
            Arc::new(UInt64Array::from_iter_values(
                jobs.iter().map(|j| j.records_written),
            )),
        ),
        (
            "restarts",
            Arc::new(UInt32Array::from_iter_values(
                jobs.iter().map(|j| j.restarts),
            )),
        ),
    ])
    .map_err(|e| SqlError::Internal(format!("cannot build the jobs table: {e}")))
}
