//! The Nexmark queries of `benches/nexmark/` (q0–q23, as the public Nexmark
//! benchmark for Flink writes them, on RisingWave's column names) run
//! bounded on the `nexmark` connector in streaming mode, and each final
//! state (an updating result's changelog applied) must equal DataFusion's
//! batch answer over the same generated events: the query itself, or the
//! batch form its file gives after `-- batch:` (a window function as
//! `date_bin`, a session as gaps and islands).
//!
//! A query file's header says how it is checked: `-- batch: same`, a
//! `-- batch:` section, `-- no-batch: <why>` (it must run and return rows),
//! or `-- unsupported: <why>` (it must fail at planning, so that the list of
//! what cannot run yet stays true).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use weir::Engine;
use weir_engine::changelog::materialize;

use crate::common::rows_of;

/// Events generated: 1 person, 3 auctions and 46 bids in every 50.
const EVENTS: usize = 20_000;
/// Events per second of event time: the run spans 100 s of windows.
const RATE: usize = 200;

/// How a query is checked.
enum Check {
    /// Against the batch query.
    Batch(String),
    /// It runs and returns rows.
    Runs,
    /// It fails at planning.
    Unsupported,
}

struct Query {
    name: String,
    sql: String,
    check: Check,
}

pub fn nexmark_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark")
}

/// The tables' DDL with `events` events at `rate` per second.
pub fn nexmark_ddl(events: usize, rate: usize) -> String {
    std::fs::read_to_string(nexmark_dir().join("ddl.sql"))
        .expect("benches/nexmark/ddl.sql")
        .replace("${EVENTS}", &events.to_string())
        .replace("${RATE}", &rate.to_string())
}

/// Query `n`'s file: its header comments, its query and its check.
fn query(n: usize) -> Query {
    let name = format!("q{n}");
    let text = std::fs::read_to_string(nexmark_dir().join(format!("{name}.sql")))
        .unwrap_or_else(|e| panic!("benches/nexmark/{name}.sql: {e}"));
    let (streaming, batch) = match text.split_once("\n-- batch:\n") {
        Some((s, b)) => (s, Some(b.trim().to_string())),
        None => (text.as_str(), None),
    };
    let header = |key: &str| streaming.lines().any(|l| l.starts_with(key));
    let sql: String = streaming
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let check = match batch {
        Some(b) => Check::Batch(b),
        None if header("-- batch: same") => Check::Batch(sql.clone()),
        None if header("-- no-batch:") => Check::Runs,
        None if header("-- unsupported:") => Check::Unsupported,
        None => panic!("{name}.sql says neither how to check it nor why it cannot be"),
    };
    Query { name, sql, check }
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_equal_their_batch_answers() -> anyhow::Result<()> {
    let mut engine = Engine::new(2);
    engine.execute_script(&nexmark_ddl(EVENTS, RATE)).await?;
    engine
        .execute_script("SET 'execution.runtime-mode' = 'streaming';")
        .await?;
    let batch = SessionContext::new();
    weir::sql::functions::register(&batch);
    for table in ["person", "auction", "bid"] {
        let rows = engine.query(&format!("SELECT * FROM {table}")).await?;
        let schema = rows.first().map(|b| b.schema()).expect("generated rows");
        let memory = datafusion::datasource::MemTable::try_new(schema, vec![rows])?;
        batch.register_table(table, Arc::new(memory))?;
    }
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for n in 0..=23 {
        let q = query(n);
        let result = engine.query(&q.sql).await;
        match (&q.check, result) {
            (Check::Unsupported, Err(_)) => continue,
            (Check::Unsupported, Ok(_)) => {
                failures.push(format!("{}: listed as unsupported but runs", q.name));
            }
            (_, Err(e)) => failures.push(format!("{}: {e}", q.name)),
            (Check::Runs, Ok(changes)) => {
                if materialize(&changes)?.iter().all(|b| b.num_rows() == 0) {
                    failures.push(format!("{}: returned no rows", q.name));
                }
                checked.push(q.name);
            }
            (Check::Batch(oracle), Ok(changes)) => {
                let streaming = sorted(rows_of(&materialize(&changes)?));
                let expected = match batch.sql(oracle).await {
                    Ok(frame) => sorted(rows_of(&frame.collect().await?)),
                    Err(e) => {
                        failures.push(format!("{}: the batch query fails: {e}", q.name));
                        continue;
                    }
                };
                if streaming.is_empty() {
                    failures.push(format!("{}: returned no rows", q.name));
                } else if streaming != expected {
                    let (s, b) = (streaming.len(), expected.len());
                    let first = streaming
                        .iter()
                        .zip(&expected)
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("{x:?} against {y:?}"));
                    failures.push(format!(
                        "{}: {s} streaming rows, {b} batch rows; first difference: {first:?}",
                        q.name
                    ));
                }
                checked.push(format!("{} ({} rows)", q.name, streaming.len()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("checked: {}", checked.join(", "));
    Ok(())
}
