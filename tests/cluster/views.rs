//! Views in the cluster's catalog: created from one session, usable from
//! another, kept across a coordinator restart, as tables are.

use weir::{Engine, Executed};

use super::harness::TestCluster;
use crate::common::rows_of;

const SEQ: &str = "CREATE TABLE seq (id BIGINT) WITH ('connector' = 'datagen', \
    'number-of-rows' = '1000', 'fields.id.kind' = 'sequence', \
    'fields.id.start' = '1', 'fields.id.end' = '1000');";

async fn rows(engine: &mut Engine, sql: &str) -> Vec<Vec<String>> {
    let batches = engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    let mut rows = rows_of(&batches);
    rows.sort();
    rows
}

async fn error(engine: &mut Engine, sql: &str) -> String {
    match engine.execute(sql).await {
        Ok(Executed::Query { mut rows, job, .. }) => {
            while rows.recv().await.is_some() {}
            panic!("{sql} ran: {:?}", job.wait().await)
        }
        Ok(_) => panic!("{sql} did not fail"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_created_in_one_session_is_used_from_another_and_kept() {
    let mut cluster = TestCluster::start(2, 4).await;
    let mut first = Engine::on_cluster(cluster.client().await, 2);
    first
        .execute_script(&format!(
            "{SEQ}
             CREATE VIEW odd AS SELECT id FROM seq WHERE id % 2 = 1;
             CREATE TEMPORARY VIEW mine AS SELECT id FROM seq WHERE id <= 3;"
        ))
        .await
        .unwrap();
    assert_eq!(rows(&mut first, "SELECT COUNT(*) FROM mine").await, [["3"]]);

    // Another session reads the view, and builds a view on it.
    let mut second = Engine::on_cluster(cluster.client().await, 2);
    assert_eq!(
        rows(&mut second, "SELECT COUNT(*), SUM(id) FROM odd").await,
        [["500", "250000"]]
    );
    second
        .execute("CREATE VIEW odd_tail (n) AS SELECT id FROM odd WHERE id > 990")
        .await
        .unwrap();
    // A temporary view stays in its session.
    let message = error(&mut second, "SELECT * FROM mine").await;
    assert!(message.contains("table 'mine' not found"), "{message}");
    // The name is taken in the catalog, for tables too.
    let message = error(
        &mut first,
        "CREATE TABLE odd_tail (a BIGINT) WITH ('connector' = 'blackhole')",
    )
    .await;
    assert!(
        message.contains("view 'odd_tail' already exists"),
        "{message}"
    );
    assert_eq!(
        rows(&mut first, "SELECT n FROM odd_tail").await,
        [["991"], ["993"], ["995"], ["997"], ["999"]]
    );

    cluster.restart_coordinator();
    cluster.wait_for_workers(2).await;
    let mut third = Engine::on_cluster(cluster.client().await, 2);
    assert_eq!(
        rows(&mut third, "SHOW VIEWS").await,
        [["odd"], ["odd_tail"]],
        "{}",
        cluster.logs()
    );
    assert_eq!(
        rows(&mut third, "SELECT SUM(n) FROM odd_tail").await,
        [["4975"]]
    );
    // Dropped in one session, gone in the others.
    third.execute("DROP VIEW odd_tail").await.unwrap();
    let message = error(&mut third, "SELECT * FROM odd_tail").await;
    assert!(message.contains("table 'odd_tail' not found"), "{message}");
    let mut fourth = Engine::on_cluster(cluster.client().await, 2);
    assert_eq!(rows(&mut fourth, "SHOW VIEWS").await, [["odd"]]);
}
