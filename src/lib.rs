//! Weir: a distributed stream processing engine over Apache Arrow.
//!
//! This facade crate re-exports the public Rust API and offers [`Engine`],
//! the embedded engine: a SQL [`Session`](weir_sql::Session) with every
//! built-in connector, running jobs on the local runtime.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut engine = weir::Engine::new(2);
//! engine.execute_script("CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '10');").await?;
//! let rows = engine.query("SELECT COUNT(*) FROM t").await?;
//! # Ok(()) }
//! ```

use arrow::record_batch::RecordBatch;
use weir_engine::{JobHandle, LocalRuntime};
use weir_sql::{Outcome, Session};

pub use weir_connectors as connectors;
pub use weir_engine as engine;
pub use weir_sql as sql;

/// The embedded engine: a SQL session plus the local runtime.
pub struct Engine {
    session: Session,
    runtime: LocalRuntime,
}

/// What running a statement produced.
pub enum Executed {
    /// Text to show (confirmation, EXPLAIN).
    Text(String),
    /// A small result computed at once.
    Rows(RecordBatch),
    /// A job that was started.
    Job(JobHandle),
    /// A started query job and its result stream.
    Query {
        /// The running job.
        job: JobHandle,
        /// Result batches as they are produced.
        rows: tokio::sync::mpsc::Receiver<RecordBatch>,
        /// The result schema.
        schema: arrow::datatypes::SchemaRef,
    },
}

impl Engine {
    /// An engine whose jobs default to `parallelism`.
    pub fn new(parallelism: usize) -> Self {
        let mut session = Session::new(weir_connectors::default_registry());
        session.set_default_parallelism(parallelism);
        Self {
            session,
            runtime: LocalRuntime::default(),
        }
    }

    /// The SQL session (catalog and settings).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Plans and starts one statement.
    pub async fn execute(&mut self, sql: &str) -> Result<Executed, weir_sql::SqlError> {
        Ok(match self.session.execute(sql).await? {
            Outcome::Message(m) | Outcome::Explain(m) => Executed::Text(m),
            Outcome::Rows(b) => Executed::Rows(b),
            Outcome::Job(plan) => Executed::Job(self.runtime.spawn(&plan.name, &plan.graph)?),
            Outcome::Query(q) => Executed::Query {
                job: self.runtime.spawn(&q.job.name, &q.job.graph)?,
                rows: q.rows,
                schema: q.schema,
            },
        })
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
                Executed::Text(_) | Executed::Rows(_) => {}
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
            Executed::Text(_) => Ok(Vec::new()),
        }
    }
}
