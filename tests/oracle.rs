//! The oracle: every window and aggregate query of the sqllogictest corpus
//! carries, in a `# oracle:` comment, the same query written as DataFusion
//! batch SQL over the same files (`date_bin` for tumbling windows, …). The
//! streaming result must equal the batch result as a multiset of rows.
//!
//! A query that groups or windows without an oracle fails the test, unless
//! a `# no-oracle: <reason>` comment says why (late events, for example,
//! have no batch equivalent). `# oracle: same` says the query text itself
//! is the batch query. A changelog table (`debezium-json`) is registered as
//! its final state: the whole changelog read by Weir and applied.
//!
//! A file's views are created in the batch context too (where their query
//! is batch SQL; a view over a window function is not), so `# oracle: same`
//! works for queries over views. `$__TEST_DIR__` (sqllogictest's temporary
//! directory) is a temporary directory here too. `WEIR_SLT_FILES` picks
//! files as for the corpus (see `slt.rs`).

use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};
use weir::Engine;
use weir_engine::changelog::materialize;

use crate::common::{rows_of, slt_dir, slt_selected};

struct Case {
    file: String,
    line: usize,
    streaming: String,
    oracle: String,
}

enum Block {
    Statement(String),
    Case(Case),
}

/// Reads statements and oracle-annotated queries from one slt file.
fn parse(path: &std::path::Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).expect("readable slt file");
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut oracle: Option<String> = None;
    let mut excused = false;
    let mut i = 0;
    let take_sql = |i: &mut usize| {
        let mut sql = Vec::new();
        while *i < lines.len() && !lines[*i].trim().is_empty() && lines[*i].trim() != "----" {
            sql.push(lines[*i]);
            *i += 1;
        }
        sql.join("\n")
    };
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("# oracle:") {
            let mut sql = rest.trim().to_string();
            while i + 1 < lines.len() && lines[i + 1].starts_with("#   ") {
                i += 1;
                sql.push('\n');
                sql.push_str(lines[i].trim_start_matches('#').trim());
            }
            oracle = Some(sql);
            i += 1;
        } else if line.starts_with("# no-oracle:") {
            excused = true;
            i += 1;
        } else if line.starts_with("statement ok") {
            i += 1;
            blocks.push(Block::Statement(take_sql(&mut i)));
        } else if line.starts_with("query ") {
            let at = i + 1;
            i += 1;
            let sql = take_sql(&mut i);
            let upper = sql.to_uppercase();
            let aggregates = upper.contains("GROUP BY")
                || [
                    "TUMBLE(",
                    "HOP(",
                    "SESSION(",
                    "CUMULATE(",
                    "COUNT(",
                    "SUM(",
                    "AVG(",
                    "MIN(",
                    "MAX(",
                ]
                .iter()
                .any(|f| upper.contains(f));
            match oracle.take() {
                Some(o) => blocks.push(Block::Case(Case {
                    file: path.display().to_string(),
                    line: at,
                    // `same`: the streaming SQL is also valid batch SQL.
                    oracle: if o == "same" { sql.clone() } else { o },
                    streaming: sql,
                })),
                None if aggregates && !excused => {
                    panic!(
                        "{}:{at}: a window/aggregate query without '# oracle:'",
                        path.display()
                    )
                }
                None => {}
            }
            excused = false;
        } else {
            i += 1;
        }
    }
    blocks
}

/// Registers a Weir table's file in the batch context under the same name,
/// with its computed columns as a view.
async fn register(batch: &SessionContext, engine: &mut Engine, name: &str) -> anyhow::Result<()> {
    let table = engine.session().table(name)?;
    let options = &table.descriptor.options;
    if options.get("connector") != Some("filesystem") {
        return Ok(());
    }
    let mut path = options.require("path")?.to_string();
    if !std::path::Path::new(&path).exists() {
        // A sink not written yet.
        return Ok(());
    }
    if std::path::Path::new(&path).is_dir() {
        // DataFusion reads a directory when its path ends with '/'.
        path.push('/');
    }
    let path = path.as_str();
    let schema = table.descriptor.schema.as_ref().clone();
    let raw = format!("{name}__raw");
    // A table created again after a DROP TABLE.
    batch.deregister_table(raw.as_str())?;
    batch.deregister_table(name)?;
    match options.get("format") {
        Some("csv") => {
            let header = options.get("csv.ignore-first-line") == Some("true");
            batch
                .register_csv(
                    &raw,
                    path,
                    CsvReadOptions::new().schema(&schema).has_header(header),
                )
                .await?
        }
        Some("json") => {
            batch
                .register_json(
                    &raw,
                    path,
                    JsonReadOptions::default()
                        .schema(&schema)
                        .file_extension(""),
                )
                .await?
        }
        // A changelog: the batch table is its final state, as Weir reads it.
        // (A sink-only table, whose files do not exist yet, is not registered.)
        Some("debezium-json") if !std::path::Path::new(path).exists() => return Ok(()),
        Some("debezium-json") => {
            let changes = engine.query(&format!("SELECT * FROM {name}")).await?;
            let rows = materialize(&changes)?;
            let schema = rows
                .first()
                .map_or_else(|| std::sync::Arc::new(schema.clone()), |b| b.schema());
            let table = datafusion::datasource::MemTable::try_new(schema, vec![rows])?;
            batch.register_table(&raw, std::sync::Arc::new(table))?;
        }
        other => anyhow::bail!("oracle cannot read format {other:?}"),
    }
    let mut select = vec!["*".to_string()];
    for c in &table.computed {
        select.push(format!("{} AS {}", c.sql, c.name));
    }
    batch
        .sql(&format!(
            "CREATE VIEW {name} AS SELECT {} FROM {raw}",
            select.join(", ")
        ))
        .await?;
    Ok(())
}

/// Creates a Weir view in the batch context, where its query is batch SQL
/// (DataFusion has no temporary views: every view is one there).
async fn create_view(batch: &SessionContext, view: &weir::sql::CreateView) {
    let columns = if view.columns.is_empty() {
        String::new()
    } else {
        format!(" ({})", view.columns.join(", "))
    };
    if view.if_not_exists && batch.table_exist(view.name.as_str()).unwrap_or(false) {
        return;
    }
    let sql = format!("CREATE VIEW {}{columns} AS {}", view.name, view.query);
    if let Err(e) = batch.sql(&sql).await {
        // Its queries then have no oracle: they fail below if they claim one.
        eprintln!("view '{}' is not batch SQL: {e}", view.name);
    }
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_results_equal_batch_results() -> anyhow::Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(slt_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt") && slt_selected(p))
        .collect();
    files.sort();
    let selected = std::env::var("WEIR_SLT_FILES").is_ok();
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in files {
        let mut engine = Engine::new(3);
        let batch = SessionContext::new();
        weir::sql::functions::register(&batch);
        let test_dir = tempfile::tempdir()?;
        for block in parse(&file) {
            match block {
                Block::Statement(sql) => {
                    let sql = sql.replace("$__TEST_DIR__", &test_dir.path().to_string_lossy());
                    engine.execute_script(&format!("{sql};")).await?;
                    match weir::sql::statement::parse_statement(&sql) {
                        Ok(weir::sql::statement::Statement::CreateTable(t)) => {
                            register(&batch, &mut engine, &t.name).await?;
                        }
                        Ok(weir::sql::statement::Statement::CreateView(v)) => {
                            create_view(&batch, &v).await;
                        }
                        _ => {}
                    }
                }
                Block::Case(case) => {
                    // An updating result is compared by its final state.
                    let changes = engine.query(&case.streaming).await?;
                    let streaming = sorted(rows_of(&materialize(&changes)?));
                    let expected =
                        sorted(rows_of(&batch.sql(&case.oracle).await?.collect().await?));
                    if streaming.is_empty() {
                        failures.push(format!(
                            "{}:{}: the query returned no rows",
                            case.file, case.line
                        ));
                    } else if streaming != expected {
                        failures.push(format!(
                            "{}:{}: streaming and batch results differ\nstreaming: {streaming:?}\nbatch:     {expected:?}",
                            case.file, case.line
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        selected || checked >= 15,
        "only {checked} oracle comparisons ran"
    );
    Ok(())
}
