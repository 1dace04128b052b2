//! Runs the sqllogictest corpus (`tests/slt/*.slt`) on the embedded engine
//! at parallelism 1 and 4: both must give the expected rows. An updating
//! query (a changelog) is checked by its final state: the changes applied.
//!
//! `WEIR_SLT_FILES=cumulate` runs only the files whose name has that word.
//! `WEIR_SLT_UPDATE=1 cargo test slt` rewrites the expected results from
//! the engine's output (review the diff, and let the oracle test check it).

use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use weir::{Engine, Executed};
use weir_engine::changelog::{data_schema, materialize};

use crate::common::{rows_of, slt_dir, slt_selected, type_letters};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WeirTestError(String);

/// The engine as sqllogictest sees it.
pub struct WeirDb {
    engine: Engine,
}

#[async_trait]
impl sqllogictest::AsyncDB for WeirDb {
    type Error = WeirTestError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, WeirTestError> {
        let err = |e: &dyn std::fmt::Display| WeirTestError(e.to_string());
        let run = async {
            match self.engine.execute(sql).await.map_err(|e| err(&e))? {
                Executed::Text(_) | Executed::Explain(_) => Ok(DBOutput::StatementComplete(0)),
                Executed::Rows(batch) => Ok(DBOutput::Rows {
                    types: type_letters(&batch),
                    rows: rows_of(&[batch]),
                }),
                Executed::Job(job) => {
                    job.wait().await.map_err(|e| err(&e))?;
                    Ok(DBOutput::StatementComplete(0))
                }
                Executed::Query {
                    job,
                    mut rows,
                    schema,
                } => {
                    let mut batches = Vec::new();
                    while let Some(b) = rows.recv().await {
                        batches.push(b);
                    }
                    job.wait().await.map_err(|e| err(&e))?;
                    // An updating result is checked as its final state.
                    let batches = materialize(&batches).map_err(|e| err(&e))?;
                    let empty = arrow::record_batch::RecordBatch::new_empty(data_schema(&schema));
                    Ok(DBOutput::Rows {
                        types: type_letters(&empty),
                        rows: rows_of(&batches),
                    })
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .map_err(|_| WeirTestError(format!("timed out after 60s: {sql}")))?
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "weir"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(slt_dir())
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    files
}

async fn run_corpus(parallelism: usize) {
    run_corpus_with(
        &format!("parallelism {parallelism}"),
        parallelism == 1,
        move || Engine::new(parallelism),
    )
    .await
}

/// Runs every file of the corpus on engines made by `make`; `label` names
/// the setting in failures. `may_update` lets `WEIR_SLT_UPDATE=1` rewrite.
pub async fn run_corpus_with(
    label: &str,
    may_update: bool,
    make: impl Fn() -> Engine + Clone + Send + Sync + 'static,
) {
    let update = std::env::var("WEIR_SLT_UPDATE").is_ok_and(|v| v == "1") && may_update;
    let mut failures = Vec::new();
    for file in slt_files().into_iter().filter(|f| slt_selected(f)) {
        let make = make.clone();
        let mut runner = Runner::new(move || {
            let engine = make();
            async move { Ok(WeirDb { engine }) }
        });
        runner.add_label("weir");
        let result = if update {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(&file)
                .await
                .map_err(|e| e.display(false).to_string())
        };
        if let Err(e) = result {
            failures.push(format!("{} ({label}):\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_at_parallelism_1() {
    run_corpus(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_at_parallelism_4() {
    run_corpus(4).await;
}

/// Counts the queries of the corpus, so the corpus cannot shrink unnoticed.
#[test]
fn corpus_has_at_least_40_queries() {
    let queries: usize = slt_files()
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("query ") || l.starts_with("statement error"))
                .count()
        })
        .sum();
    assert!(queries >= 40, "the corpus has only {queries} queries");
}
