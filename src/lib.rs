//! Weir: a distributed stream processing engine over Apache Arrow.
//!
//! This facade crate re-exports the public Rust API and offers [`Engine`]: a
//! SQL [`Session`](weir_sql::Session) with every built-in connector whose
//! jobs run either on the in-process runtime ([`Engine::new`]) or on a
//! cluster ([`Engine::on_cluster`], [`Engine::embedded_cluster`]) — see
//! [`cluster`] for the coordinator, the workers and the client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut engine = weir::Engine::new(2);
//! engine.execute_script("CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '10');").await?;
//! let rows = engine.query("SELECT COUNT(*) FROM t").await?;
//! # Ok(()) }
//! ```

pub mod cluster;
mod cluster_session;

/// Every Weir process allocates through mimalloc: the operators allocate
/// and free many small buffers per batch (group keys, row-format values),
/// where it is several times faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod pg;
mod running_job;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use weir_engine::LocalRuntime;
use weir_sql::{Outcome, Session, SqlError, StatementText};

pub use running_job::RunningJob;
pub use weir_connectors as connectors;
pub use weir_engine as engine;
pub use weir_sql as sql;

use cluster::{Client, ClusterConfig, EmbeddedCluster};

/// A SQL session plus somewhere to run its jobs.
pub struct Engine {
    session: Session,
    backend: Backend,
    parallelism: usize,
    /// The statements that shaped the session (`SET`, and DDL on the
    /// local runtime), replayed in front of each job submitted to a
    /// cluster, after the catalog's tables.
    context: Vec<String>,
    /// On a cluster, the tables loaded from the shared catalog.
    catalog: cluster_session::CatalogView,
}

enum Backend {
    Local(LocalRuntime),
    Cluster {
        client: Client,
        _embedded: Option<Arc<EmbeddedCluster>>,
    },
}

/// A statement of a script that does not plan, and why.
#[derive(Debug)]
pub struct StatementError {
    /// Which of the statements checked.
    pub index: usize,
    /// The statement, with where it starts in its script.
    pub statement: StatementText,
    /// Why it does not plan (positions relative to the statement).
    pub error: SqlError,
}

/// What running a statement produced.
pub enum Executed {
    /// A confirmation to show (`Table 't' created.`).
    Text(String),
    /// `EXPLAIN` output: the dataflow graph.
    Explain(String),
    /// A small result computed at once.
    Rows(RecordBatch),
    /// A job that was started.
    Job(RunningJob),
    /// A started query job and its result stream.
    Query {
        /// The running job.
        job: RunningJob,
        /// Result batches as they are produced.
        rows: tokio::sync::mpsc::Receiver<RecordBatch>,
        /// The result schema.
        schema: arrow::datatypes::SchemaRef,
    },
}

impl Engine {
    /// An engine running jobs in this process, defaulting to `parallelism`.
    pub fn new(parallelism: usize) -> Self {
        Self::with_backend(parallelism, Backend::Local(LocalRuntime::default()))
    }

    /// An engine submitting jobs to the coordinator `client` talks to.
    pub fn on_cluster(client: Client, parallelism: usize) -> Self {
        Self::with_backend(
            parallelism,
            Backend::Cluster {
                client,
                _embedded: None,
            },
        )
    }

    /// An engine on an embedded cluster: a coordinator and `workers` workers
    /// in this process, talking gRPC over loopback.
    pub async fn embedded_cluster(
        parallelism: usize,
        workers: usize,
        config: ClusterConfig,
    ) -> Result<Self, cluster::ClusterError> {
        let slots = (parallelism.div_ceil(workers.max(1)) as u32).max(1) * 16;
        let cluster = EmbeddedCluster::start(workers, slots, config).await?;
        Ok(Self::with_backend(
            parallelism,
            Backend::Cluster {
                client: cluster.client().clone(),
                _embedded: Some(Arc::new(cluster)),
            },
        ))
    }

    fn with_backend(parallelism: usize, backend: Backend) -> Self {
        let mut session = Session::new(weir_connectors::default_registry());
        session.set_default_parallelism(parallelism);
        Self {
            session,
            backend,
            parallelism,
            context: Vec::new(),
            catalog: Default::default(),
        }
    }

    /// Keeps this session's tables to itself instead of sharing them
    /// through the cluster's catalog (as Flink's in-memory session catalog
    /// does); tables already in the cluster's catalog stay invisible.
    pub fn with_session_catalog(mut self) -> Self {
        self.catalog.shared = false;
        self
    }

    /// The SQL session (catalog and settings).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The cluster's client, when jobs run on a cluster.
    pub fn client(&self) -> Option<&Client> {
        match &self.backend {
            Backend::Cluster { client, .. } => Some(client),
            Backend::Local(_) => None,
        }
    }

    /// Plans and starts one statement. On a cluster, `CREATE TABLE`,
    /// `CREATE VIEW`, `DROP TABLE` and `DROP VIEW` change the cluster's
    /// shared catalog, and every statement first sees the catalog's current
    /// tables and views.
    pub async fn execute(&mut self, sql: &str) -> Result<Executed, SqlError> {
        let client = match &self.backend {
            Backend::Cluster { client, .. } => Some(client.clone()),
            Backend::Local(_) => None,
        };
        if let Some(client) = &client {
            self.sync_catalog(client).await?;
        }
        let ddl = weir_sql::parse_statement(sql).ok().filter(|s| {
            matches!(
                s,
                weir_sql::Statement::CreateTable(_)
                    | weir_sql::Statement::DropTable { .. }
                    | weir_sql::Statement::CreateView(_)
                    | weir_sql::Statement::DropView { .. }
            )
        });
        Ok(match self.session.execute(sql).await? {
            Outcome::Message(m) => {
                let published = match (&client, &ddl) {
                    (Some(client), Some(statement)) => {
                        self.publish_ddl(client, statement, sql).await?
                    }
                    _ => false,
                };
                if !published {
                    self.context.push(sql.to_string());
                }
                Executed::Text(m)
            }
            Outcome::Control(control) => match &client {
                Some(client) => cluster_session::job_control(client, control).await?,
                None => {
                    return Err(SqlError::plan(
                        "SHOW JOBS, STOP JOB and CANCEL JOB need a cluster; \
                         `weir sql` and `weir run --workers N` start one",
                    ));
                }
            },
            Outcome::Explain(m) => Executed::Explain(m),
            Outcome::Rows(b) => Executed::Rows(b),
            Outcome::Job(plan) => {
                let warnings = plan.graph.logical().warnings().to_vec();
                let job = match &self.backend {
                    Backend::Local(runtime) => {
                        RunningJob::local(runtime.spawn(&plan.name, &plan.graph)?, plan.output)
                    }
                    Backend::Cluster { client, .. } => {
                        self.submit(client, sql, &plan.name, plan.output).await?
                    }
                };
                Executed::Job(job.with_warnings(&warnings))
            }
            Outcome::Query(q) => match &self.backend {
                Backend::Local(runtime) => Executed::Query {
                    job: RunningJob::local(runtime.spawn(&q.job.name, &q.job.graph)?, q.job.output),
                    rows: q.rows,
                    schema: q.schema,
                },
                Backend::Cluster { client, .. } => {
                    let job = self.submit(client, sql, &q.job.name, q.job.output).await?;
                    let rows = job.rows().await.map_err(|e| cluster_error(client, e))?;
                    Executed::Query {
                        job,
                        rows,
                        schema: q.schema,
                    }
                }
            },
        })
    }

    async fn submit(
        &self,
        client: &Client,
        sql: &str,
        name: &str,
        output: weir_sql::JobOutput,
    ) -> Result<RunningJob, SqlError> {
        let mut script = self.context.join(";\n");
        if !script.is_empty() {
            script.push_str(";\n");
        }
        script.push_str(sql);
        let response = client
            .submit(&script, self.parallelism as u32, name)
            .await
            .map_err(|e| cluster_error(client, e))?;
        let job = response.jobs.into_iter().next().ok_or_else(|| {
            SqlError::Internal("the coordinator planned no job for the statement".into())
        })?;
        Ok(RunningJob::remote(client.clone(), job, output))
    }

    /// Plans `statements` one after the other in a scratch copy of this
    /// session, starting nothing, and returns the error of every statement
    /// that does not plan (a script runs only when there are none). A
    /// statement that fails only because an earlier `CREATE TABLE` or
    /// `CREATE VIEW` of the name it reads failed is not reported again.
    pub async fn check(
        &mut self,
        statements: &[StatementText],
    ) -> Result<Vec<StatementError>, SqlError> {
        if let Backend::Cluster { client, .. } = &self.backend {
            let client = client.clone();
            self.sync_catalog(&client).await?;
        }
        let mut scratch = Session::new(weir_connectors::default_registry());
        scratch.set_default_parallelism(self.parallelism);
        // Each planned before.
        cluster_session::replay_catalog(&mut scratch, self.catalog.entries()).await;
        for sql in &self.context {
            if let Err(e) = scratch.execute(sql).await {
                tracing::debug!(error = %e, "a session statement does not replay");
            }
        }
        let mut failed_tables: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        for (index, statement) in statements.iter().enumerate() {
            let Err(error) = scratch.execute(&statement.text).await else {
                continue;
            };
            match weir_sql::parse_statement(&statement.text) {
                Ok(weir_sql::Statement::CreateTable(create)) => failed_tables.push(create.name),
                Ok(weir_sql::Statement::CreateView(create)) => failed_tables.push(create.name),
                _ => {}
            }
            if let SqlError::UnknownTable { name, .. } = &error
                && failed_tables.contains(name)
            {
                continue;
            }
            errors.push(StatementError {
                index,
                statement: statement.clone(),
                error,
            });
        }
        Ok(errors)
    }

    /// Stops the engine: an embedded cluster shuts down cleanly (its
    /// workers leave, then its coordinator stops).
    pub async fn shutdown(self) {
        if let Backend::Cluster {
            _embedded: Some(cluster),
            ..
        } = self.backend
            && let Ok(cluster) = Arc::try_unwrap(cluster)
        {
            cluster.shutdown().await;
        }
    }

    /// Runs every statement of a script and waits for every job it started.
    /// Query results are discarded; use [`Engine::query`] to read them.
    pub async fn execute_script(&mut self, script: &str) -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        for statement in weir_sql::split_statements(script)? {
            match self
                .execute(&statement.text)
                .await
                .map_err(|e| e.offset_by(statement.start.line - 1, statement.start.column - 1))?
            {
                Executed::Job(job) => jobs.push(job),
                Executed::Query { job, mut rows, .. } => {
                    while rows.recv().await.is_some() {}
                    job.wait().await?;
                }
                Executed::Text(_) | Executed::Explain(_) | Executed::Rows(_) => {}
            }
        }
        for job in jobs {
            job.wait().await?;
        }
        Ok(())
    }

    /// Runs a bounded query to the end and returns all its rows.
    pub async fn query(&mut self, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
        match self.execute(sql).await? {
            Executed::Query { job, mut rows, .. } => {
                let mut batches = Vec::new();
                while let Some(b) = rows.recv().await {
                    batches.push(b);
                }
                job.wait().await?;
                Ok(batches)
            }
            Executed::Rows(b) => Ok(vec![b]),
            Executed::Job(job) => {
                job.wait().await?;
                Ok(Vec::new())
            }
            Executed::Text(_) | Executed::Explain(_) => Ok(Vec::new()),
        }
    }
}

fn cluster_error(client: &Client, error: cluster::ClusterError) -> SqlError {
    match error {
        cluster::ClusterError::Sql(e) => e,
        other => SqlError::from(weir_engine::Error::network(client.address(), other)),
    }
}

/// An error of a script's statement, with the script line and a caret under
/// the spot when the error has a position.
pub fn render_sql_error(
    script: &str,
    origin: &str,
    statement: &StatementText,
    error: SqlError,
) -> String {
    let error = error.offset_by(statement.start.line - 1, statement.start.column - 1);
    let mut text = format!("{origin}: {error}");
    if let Some(p) = error.position()
        && let Some(line) = script.lines().nth(p.line.saturating_sub(1) as usize)
    {
        let caret = " ".repeat(p.column.saturating_sub(1) as usize);
        text.push_str(&format!("\n  |\n{:>3} | {line}\n  | {caret}^", p.line));
    }
    text
}
