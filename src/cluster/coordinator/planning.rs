//! Planning a submitted script into job specs, and placing a job's slices
//! on worker slots.

use std::collections::BTreeMap;

use arrow::util::pretty::pretty_format_batches;
use tonic::Status;
use tracing::debug;
use weir_engine::PhysicalGraph;
use weir_proto as pb;
use weir_sql::{Outcome, Session};

use super::catalog::TableEntry;
use super::state::State;

/// A job planned from a script: its spec (what workers re-plan) and graph.
pub(super) struct PlannedJob {
    pub spec: pb::JobSpec,
    pub graph: PhysicalGraph,
    /// The session's `SET` values when the job was planned.
    pub settings: BTreeMap<String, String>,
}

/// A script, planned whole.
#[derive(Default)]
pub(super) struct PlannedScript {
    /// A job per `INSERT` / `SELECT`, in order.
    pub jobs: Vec<PlannedJob>,
    /// Confirmations of the other statements.
    pub messages: Vec<String>,
    /// What the statements show (`DESCRIBE`, `SHOW TABLES`, `EXPLAIN`).
    pub results: Vec<String>,
}

/// Runs a script's statements in a fresh session that starts with the
/// `catalog`'s tables, except those the script creates itself. Each
/// `INSERT` or `SELECT` becomes a job whose SQL is the catalog tables' DDL
/// and the script's state-changing statements so far, followed by it — a
/// self-contained script every worker can plan again. Other statements
/// answer with a message or a result. Every statement is planned before
/// any job starts; when some do not plan, the error names each of them.
pub(super) async fn plan_script(
    script: &str,
    origin: &str,
    parallelism: u32,
    catalog: &[TableEntry],
) -> Result<PlannedScript, Status> {
    let mut session = Session::new(weir_connectors::default_registry());
    session.set_default_parallelism(parallelism.max(1) as usize);
    let statements = weir_sql::split_statements(script)
        .map_err(|e| Status::invalid_argument(format!("{origin}: {e}")))?;
    let created_by_script: Vec<String> = statements
        .iter()
        .filter_map(|s| match weir_sql::parse_statement(&s.text) {
            Ok(weir_sql::Statement::CreateTable(c)) => Some(c.name),
            Ok(weir_sql::Statement::CreateView(c)) => Some(c.name),
            _ => None,
        })
        .collect();
    let entries = catalog
        .iter()
        .filter(|t| !created_by_script.contains(&t.name))
        .map(|t| (t.name.as_str(), t.ddl.as_str()));
    let (ran, failed) = crate::cluster_session::replay_catalog(&mut session, entries).await;
    for (name, e) in failed {
        let view = catalog.iter().any(|t| t.name == name && t.ddl_is_view());
        if view {
            // As in Flink, a view whose table was dropped stays in the
            // catalog and fails only when used.
            debug!(view = %name, error = %e, "a catalog view does not plan; skipped");
            continue;
        }
        return Err(Status::failed_precondition(format!(
            "the catalog's table '{name}' no longer plans: {e}"
        )));
    }
    // In the order they ran: a view after what it reads.
    let mut context: Vec<String> = ran
        .iter()
        .filter_map(|name| catalog.iter().find(|t| t.name == *name))
        .map(|t| t.ddl.clone())
        .collect();
    let mut planned = PlannedScript::default();
    let mut errors: Vec<String> = Vec::new();
    let mut failed_tables: Vec<String> = Vec::new();
    for statement in statements {
        let outcome = match session.execute(&statement.text).await {
            Ok(outcome) => outcome,
            Err(e) => {
                match weir_sql::parse_statement(&statement.text) {
                    Ok(weir_sql::Statement::CreateTable(c)) => failed_tables.push(c.name),
                    Ok(weir_sql::Statement::CreateView(c)) => failed_tables.push(c.name),
                    _ => {}
                }
                // Not again for a table whose CREATE TABLE failed above.
                if !matches!(&e, weir_sql::SqlError::UnknownTable { name, .. } if failed_tables.contains(name))
                {
                    errors.push(crate::render_sql_error(script, origin, &statement, e));
                }
                continue;
            }
        };
        let (plan, query) = match outcome {
            Outcome::Job(plan) => (plan, false),
            Outcome::Query(q) => (q.job, true),
            Outcome::Explain(text) => {
                planned.results.push(text);
                continue;
            }
            Outcome::Control(_) => {
                return Err(Status::invalid_argument(format!(
                    "{origin}: SHOW JOBS, STOP JOB and CANCEL JOB are statements of `weir sql`; \
                     a submitted script cannot run them (use `weir jobs`, `weir stop ID`)"
                )));
            }
            Outcome::Message(m) => {
                context.push(statement.text);
                planned.messages.push(m);
                continue;
            }
            Outcome::Rows(batch) => {
                context.push(statement.text);
                planned.results.push(
                    pretty_format_batches(&[batch])
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                );
                continue;
            }
        };
        let mut sql = context.join(";\n");
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.text);
        planned.jobs.push(PlannedJob {
            spec: pb::JobSpec {
                name: plan.name.clone(),
                sql,
                parallelism: parallelism.max(1),
                query,
            },
            graph: plan.graph,
            settings: session.settings().clone(),
        });
    }
    if !errors.is_empty() {
        let count = errors.len();
        errors.push(format!(
            "{count} statement{} of {origin} do{} not plan; no job was started",
            if count == 1 { "" } else { "s" },
            if count == 1 { "es" } else { "" }
        ));
        return Err(Status::invalid_argument(errors.join("\n")));
    }
    Ok(planned)
}

/// Picks a worker for each of `slices` slices: each goes to the worker with
/// the most free slots left (ties by id), so a job spreads evenly.
pub(super) fn place(state: &State, slices: usize, job: &str) -> Result<Vec<String>, Status> {
    let mut free: BTreeMap<&str, u32> = state
        .workers
        .iter()
        .map(|(id, w)| (id.as_str(), w.free_slots))
        .collect();
    let available: u32 = free.values().sum();
    if (available as usize) < slices {
        return Err(Status::resource_exhausted(format!(
            "not enough free slots for job '{job}': it needs {slices} (one per parallel slice), \
             the cluster has {available} free on {} worker(s); start more workers, give them \
             more --slots, or lower the parallelism",
            state.workers.len()
        )));
    }
    let mut placed = Vec::with_capacity(slices);
    for _ in 0..slices {
        let Some((&id, _)) = free
            .iter()
            .filter(|(_, n)| **n > 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        else {
            return Err(Status::internal("slot accounting went wrong"));
        };
        if let Some(n) = free.get_mut(id) {
            *n -= 1;
        }
        placed.push(id.to_string());
    }
    Ok(placed)
}
