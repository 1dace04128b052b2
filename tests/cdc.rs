//! Changelogs in and out through files: an updating aggregate written with
//! the `debezium-json` filesystem sink and read back by a `debezium-json`
//! source is, applied, the batch answer. (The SQL over a hand-written
//! changelog is in `tests/slt/11_cdc.slt`.)

use datafusion::prelude::{CsvReadOptions, SessionContext};
use weir::Engine;
use weir_engine::changelog::materialize;

use crate::common::rows_of;

const BIDS: &str = "CREATE TABLE bids (
  id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, ts TIMESTAMP(3)
) WITH ('connector' = 'filesystem', 'path' = 'tests/data/bids.csv', 'format' = 'csv',
        'scan.batch-size' = '5');";

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

async fn batch_answer(sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let batch = SessionContext::new();
    let mut engine = Engine::new(1);
    engine.execute_script(BIDS).await?;
    let schema = engine
        .session()
        .table("bids")?
        .descriptor
        .schema
        .as_ref()
        .clone();
    batch
        .register_csv(
            "bids",
            "tests/data/bids.csv",
            CsvReadOptions::new().schema(&schema).has_header(false),
        )
        .await?;
    Ok(sorted(rows_of(&batch.sql(sql).await?.collect().await?)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updating_aggregate_round_trips_through_debezium_json_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("totals");
    let query = "SELECT channel, bidder, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS top \
                 FROM bids GROUP BY channel, bidder";
    for parallelism in [1, 3] {
        let _ = std::fs::remove_dir_all(&path);
        let mut engine = Engine::new(parallelism);
        engine
            .execute_script(&format!(
                "SET 'execution.runtime-mode' = 'streaming';
                 {BIDS}
                 CREATE TABLE totals (channel STRING, bidder BIGINT, n BIGINT, total BIGINT, top BIGINT)
                 WITH ('connector' = 'filesystem', 'path' = '{p}', 'format' = 'debezium-json');
                 INSERT INTO totals {query};
                 CREATE TABLE totals_in (channel STRING, bidder BIGINT, n BIGINT, total BIGINT, top BIGINT)
                 WITH ('connector' = 'filesystem', 'path' = '{p}', 'format' = 'debezium-json');",
                p = path.display()
            ))
            .await?;
        // The sink wrote a changelog, not just the final rows: there are
        // deletes (Flink writes -U as a delete) in it.
        let written: String = std::fs::read_dir(&path)?
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(written.contains(r#""op":"d""#), "{written}");
        // One file per sink subtask; every group lives in one subtask, so
        // its changes are in order within its file.
        let changes = engine.query("SELECT * FROM totals_in").await?;
        let back = sorted(rows_of(&materialize(&changes)?));
        assert_eq!(
            back,
            batch_answer(query).await?,
            "parallelism {parallelism}"
        );
        assert_eq!(back.len(), 14, "{back:?}");
    }
    Ok(())
}
