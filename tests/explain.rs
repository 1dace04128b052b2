//! Snapshots of EXPLAIN output and of the main error messages.

use weir::{Engine, Executed};

const BIDS: &str = "CREATE TABLE bids (
    id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
    ts AS TO_TIMESTAMP_LTZ(id, 3),
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '1000',
        'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000');
CREATE TABLE ticks (id BIGINT, price BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10');
CREATE TABLE out WITH ('connector' = 'blackhole');";

async fn engine() -> Engine {
    let mut engine = Engine::new(4);
    engine.execute_script(BIDS).await.expect("tables are valid");
    engine
}

async fn explain(sql: &str) -> String {
    match engine().await.execute(sql).await {
        Ok(Executed::Explain(text)) => text,
        Ok(_) => panic!("EXPLAIN returned no text"),
        Err(e) => panic!("EXPLAIN failed: {e}"),
    }
}

async fn error_of(sql: &str) -> String {
    match engine().await.execute(sql).await {
        Ok(_) => panic!("expected an error for: {sql}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn explain_tumbling_window_aggregate() {
    insta::assert_snapshot!(
        explain(
            "EXPLAIN INSERT INTO out SELECT window_start, bidder, COUNT(*) AS bids, SUM(price) AS volume \
             FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, bidder"
        )
        .await
    );
}

#[tokio::test]
async fn explain_filter_projection_as_dot() {
    insta::assert_snapshot!(
        explain(
            "EXPLAIN (FORMAT DOT) SELECT id, price * 2 AS double_price FROM bids WHERE price > 100"
        )
        .await
    );
}

#[tokio::test]
async fn explain_session_window() {
    insta::assert_snapshot!(
        explain(
            "EXPLAIN SELECT bidder, window_start, window_end, MAX(price) \
             FROM SESSION(bids, ts, INTERVAL '5' SECOND) GROUP BY bidder, window_start, window_end"
        )
        .await
    );
}

#[tokio::test]
async fn error_unknown_column_suggests_a_name() {
    insta::assert_snapshot!(error_of("SELECT bidr FROM bids").await);
}

#[tokio::test]
async fn error_unknown_table_suggests_a_name() {
    insta::assert_snapshot!(error_of("SELECT * FROM bid").await);
}

#[tokio::test]
async fn error_parse_error_has_a_position() {
    insta::assert_snapshot!(error_of("SELECT id FROM bids WHERE AND price > 1").await);
}

#[tokio::test]
async fn error_order_by_on_a_stream() {
    insta::assert_snapshot!(error_of("SELECT id FROM ticks ORDER BY price").await);
}

#[tokio::test]
async fn error_unknown_connector_option() {
    insta::assert_snapshot!(
        error_of("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagen', 'number-of-row' = '5')")
            .await
    );
}

#[tokio::test]
async fn error_unknown_connector() {
    insta::assert_snapshot!(
        error_of("CREATE TABLE t (a BIGINT) WITH ('connector' = 'datagn')").await
    );
}

#[tokio::test]
async fn error_window_function_misuse() {
    insta::assert_snapshot!(
        error_of("SELECT * FROM TUMBLE(bids, price_ts, INTERVAL '10' SECOND)").await
    );
}

/// No SQL input may panic: a handful of odd statements all give errors.
#[tokio::test]
async fn odd_sql_gives_errors_not_panics() {
    let mut engine = engine().await;
    for sql in [
        "",
        ";",
        "SELECT",
        "CREATE TABLE",
        "CREATE TABLE x (",
        "CREATE TABLE x (a) WITH ('connector' = 'datagen')",
        "CREATE TABLE x (a BIGINT, WATERMARK FOR b AS b) WITH ('connector' = 'datagen')",
        "INSERT INTO nowhere SELECT 1",
        "SELECT * FROM bids JOIN bids b2 ON bids.id = b2.id",
        "SELECT * FROM TUMBLE(bids)",
        "SELECT * FROM HOP(bids, ts, INTERVAL '-1' SECOND, INTERVAL '1' SECOND)",
        "SET 'parallelism.default' = 'zero'",
        "EXPLAIN SET 'a' = 'b'",
        "SELECT 'unterminated FROM bids",
    ] {
        assert!(
            engine.execute(sql).await.is_err(),
            "expected an error for {sql:?}"
        );
    }
}
