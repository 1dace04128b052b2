//! What an [`Engine`] on a cluster adds to its SQL session: the shared
//! catalog (tables and views live on the coordinator, so every session and
//! every submitted script sees them, and they survive a coordinator
//! restart), and
//! the statements about running jobs (`SHOW JOBS`, `STOP JOB`, `CANCEL JOB`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt32Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use tracing::warn;
use weir_sql::{JobControl, Session, SqlError, Statement};

use crate::cluster::Client;
use crate::cluster::client::state_name;
use crate::{Engine, Executed};

/// The catalog tables and views a session has loaded, and the catalog
/// version it saw.
#[derive(Debug)]
pub(crate) struct CatalogView {
    /// False for a session that keeps its tables to itself.
    pub(crate) shared: bool,
    version: Option<u64>,
    /// Name and the DDL it was created with, in the order they ran here
    /// (a view after what it reads).
    entries: Vec<(String, String)>,
}

impl Default for CatalogView {
    fn default() -> Self {
        Self {
            shared: true,
            version: None,
            entries: Vec::new(),
        }
    }
}

impl CatalogView {
    /// True when the table or view came from (or went to) the shared catalog.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// The names and DDL of the catalog's tables and views this session
    /// loaded, in the order they ran.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, d)| (n.as_str(), d.as_str()))
    }

    fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }
}

/// `"name"`, quoted so that the session takes it verbatim.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// True when `ddl` creates a view.
pub(crate) fn is_view(ddl: &str) -> bool {
    matches!(weir_sql::parse_statement(ddl), Ok(Statement::CreateView(_)))
}

/// The statement that drops `name` from a session, if it is there.
fn drop_if_exists(name: &str, view: bool) -> String {
    let kind = if view { "VIEW" } else { "TABLE" };
    format!("DROP {kind} IF EXISTS {}", quoted(name))
}

/// Runs the catalog's DDL in `session`: in catalog order, then what failed
/// again while anything more plans (a view whose table was dropped and
/// created again comes before it in the catalog). Returns the names that
/// ran, in the order they ran, and the errors of the others.
pub(crate) async fn replay_catalog<'a>(
    session: &mut Session,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Vec<&'a str>, Vec<(&'a str, SqlError)>) {
    let mut pending: Vec<(&str, &str)> = entries.into_iter().collect();
    let mut ran = Vec::new();
    loop {
        let before = ran.len();
        let mut failed = Vec::new();
        for (name, ddl) in pending {
            match session.execute(ddl).await {
                Ok(_) => ran.push(name),
                Err(e) => failed.push((name, ddl, e)),
            }
        }
        if failed.is_empty() || ran.len() == before {
            return (ran, failed.into_iter().map(|(n, _, e)| (n, e)).collect());
        }
        pending = failed.into_iter().map(|(n, d, _)| (n, d)).collect();
    }
}

impl Engine {
    /// Brings the session's tables and views in line with the
    /// coordinator's catalog: one cheap call per statement, a reload only
    /// when the version moved.
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
        let stale: Vec<(String, String)> = self
            .catalog
            .entries
            .iter()
            .filter(|(name, ddl)| wanted.get(name.as_str()) != Some(&ddl.as_str()))
            .cloned()
            .collect();
        // Views first: what they read goes after them.
        for (name, ddl) in stale.iter().rev() {
            self.drop_local(name, is_view(ddl)).await;
            self.catalog.remove(name);
        }
        let new: Vec<(&str, &str)> = catalog
            .tables
            .iter()
            .filter(|t| !self.catalog.contains(&t.name))
            .map(|t| (t.name.as_str(), t.ddl.as_str()))
            .collect();
        for (name, ddl) in &new {
            self.drop_local(name, is_view(ddl)).await;
        }
        let (ran, failed) = replay_catalog(&mut self.session, new).await;
        for name in ran {
            if let Some(ddl) = wanted.get(name) {
                self.catalog
                    .entries
                    .push((name.to_string(), ddl.to_string()));
            }
        }
        for (name, e) in failed {
            warn!(%name, error = %e, "a catalog table or view does not plan here; skipped");
        }
        self.catalog.version = Some(catalog.version);
        Ok(())
    }

    /// Drops a table or view of the session, if it has one of that name.
    async fn drop_local(&mut self, name: &str, view: bool) {
        if let Err(e) = self.session.execute(&drop_if_exists(name, view)).await {
            warn!(%name, error = %e, "cannot drop a stale catalog entry");
        }
    }

    /// After the session ran a `CREATE TABLE`, `CREATE VIEW`, `DROP TABLE`
    /// or `DROP VIEW`, makes the same change in the shared catalog. A
    /// refused change is undone locally and reported. False when the
    /// statement stays in the session: a temporary table or view, or a
    /// session with its own catalog.
    pub(crate) async fn publish_ddl(
        &mut self,
        client: &Client,
        statement: &Statement,
        sql: &str,
    ) -> Result<bool, SqlError> {
        if !self.catalog.shared {
            return Ok(false);
        }
        let created = match statement {
            Statement::CreateTable(create) if create.temporary => return Ok(false),
            Statement::CreateView(create) if create.temporary => return Ok(false),
            Statement::CreateTable(create) => Some((&create.name, false)),
            Statement::CreateView(create) => Some((&create.name, true)),
            Statement::DropTable { name, .. } | Statement::DropView { name, .. } => {
                if !self.catalog.contains(name) {
                    return Ok(false);
                }
                self.catalog.remove(name);
                if let Err(e) = client.drop_table(name).await {
                    // Someone else dropped it first: the outcome is the same.
                    warn!(%name, error = %e, "dropping a catalog table or view");
                }
                None
            }
            _ => None,
        };
        if let Some((name, view)) = created
            && !self.catalog.contains(name)
        {
            if let Err(e) = client.create_table(name, sql).await {
                self.session.execute(&drop_if_exists(name, view)).await?;
                let (kind, hint) = if view {
                    (
                        "view",
                        " (a view in the cluster's catalog reads only the catalog's tables and \
                         views; CREATE TEMPORARY VIEW keeps one in this session)",
                    )
                } else {
                    ("table", "")
                };
                return Err(SqlError::plan(format!(
                    "the cluster's catalog refused {kind} '{name}': {e}{hint}"
                )));
            }
            self.catalog.entries.push((name.clone(), sql.to_string()));
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
