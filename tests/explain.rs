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
    explain_on(&mut engine().await, sql).await
}

/// `sql` (an EXPLAIN) on `engine`, whose settings it sees.
async fn explain_on(engine: &mut Engine, sql: &str) -> String {
    match engine.execute(sql).await {
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
async fn explain_cumulating_window_aggregate() {
    insta::assert_snapshot!(
        explain(
            "EXPLAIN SELECT window_start, window_end, bidder, COUNT(*), SUM(price) \
             FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE)) \
             GROUP BY window_start, window_end, bidder"
        )
        .await
    );
}

#[tokio::test]
async fn explain_legacy_group_window() {
    insta::assert_snapshot!(
        explain(
            "EXPLAIN SELECT bidder, HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS s, COUNT(*) \
             FROM bids GROUP BY bidder, HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)"
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

/// What the lowering refuses is pointed at in the statement: the keyword of
/// the construct, wherever planning found it.
#[tokio::test]
async fn unsupported_constructs_are_pointed_at() {
    for (sql, at) in [
        (
            "SELECT a.price FROM ticks a JOIN ticks b ON a.id > b.id",
            "at line 1, column 29: a join on streams needs an equality",
        ),
        (
            "SELECT price, SUM(price) OVER (PARTITION BY id) FROM ticks",
            "at line 1, column 26: OVER window functions",
        ),
        (
            "SELECT id\nFROM ticks\nORDER BY price",
            "at line 3, column 1: ORDER BY on an unbounded stream",
        ),
    ] {
        let error = error_of(sql).await;
        assert!(error.contains(at), "{sql}: {error}");
    }
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
        "SELECT * FROM bids JOIN bids b2 ON bids.id > b2.id",
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

/// The error corpus: `(name, setup script, statement)`. Each case's message
/// has a snapshot, and none may name Arrow types or planner internals.
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "unknown_column_in_a_window_query",
        "",
        "SELECT bidr, window_start FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)",
    ),
    (
        "unknown_column_in_a_window_query_with_a_wildcard",
        "",
        "SELECT * FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) WHERE bidr > 1",
    ),
    (
        "unknown_column_in_a_hop_query",
        "",
        "SELECT bidr FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
    ),
    (
        "group_by_violation_in_a_window_query",
        "",
        "SELECT window_start, bidder, price FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) \
         GROUP BY window_start, window_end, bidder",
    ),
    ("type_mismatch", "", "SELECT SUM(channel) FROM bids"),
    (
        "unknown_type",
        "",
        "CREATE TABLE t (\n  id BIGINT,\n  amount MONEY\n) WITH ('connector' = 'blackhole')",
    ),
    (
        "misspelt_type_bignt",
        "",
        "CREATE TABLE t (id BIGNT) WITH ('connector' = 'blackhole')",
    ),
    (
        "misspelt_type_strng",
        "",
        "CREATE TABLE t (id BIGINT, name STRNG) WITH ('connector' = 'blackhole')",
    ),
    (
        "misspelt_type_timestmp",
        "",
        "CREATE TABLE t (\n  id BIGINT,\n  ts TIMESTMP(3)\n) WITH ('connector' = 'blackhole')",
    ),
    ("collate", "", "SELECT channel COLLATE \"C\" FROM bids"),
    (
        "unknown_with_option",
        "",
        "CREATE TABLE files (id BIGINT)\nWITH (\n  'connector' = 'filesystem',\n  \
         'pathh' = 'tests/data/late.csv',\n  'format' = 'csv'\n)",
    ),
    (
        "bad_option_value",
        "",
        "CREATE TABLE files (id BIGINT)\nWITH (\n  'connector' = 'filesystem',\n  \
         'path' = 'tests/data/late.csv',\n  'format' = 'cvs'\n)",
    ),
    (
        "window_over_a_missing_time_column",
        "",
        "SELECT window_start, COUNT(*)\nFROM TUMBLE(bids, nosuch, INTERVAL '10' SECOND)\n\
         GROUP BY window_start, window_end",
    ),
    (
        "csv_row_that_does_not_parse",
        "CREATE TABLE prices (id BIGINT, price BIGINT, ts TIMESTAMP(3))
         WITH ('connector' = 'filesystem', 'path' = 'tests/data/bad_price.csv', 'format' = 'csv');",
        "SELECT id, price FROM prices",
    ),
    (
        "cast_a_sink_cannot_take",
        "CREATE TABLE flags (id BIGINT, flag BOOLEAN) WITH ('connector' = 'blackhole');",
        "INSERT INTO flags SELECT id, ts FROM bids",
    ),
    (
        "primary_key_of_an_unknown_column",
        "",
        "CREATE TABLE t (\n  amount BIGINT,\n  PRIMARY KEY (amuont) NOT ENFORCED\n) WITH ('connector' = 'blackhole')",
    ),
    (
        "primary_key_without_not_enforced",
        "",
        "CREATE TABLE t (\n  id BIGINT PRIMARY KEY,\n  v BIGINT\n) WITH ('connector' = 'blackhole')",
    ),
    (
        "upsert_kafka_without_a_primary_key",
        "",
        "CREATE TABLE totals (k STRING, n BIGINT)\nWITH ('connector' = 'upsert-kafka', 'topic' = 'totals',\n  \
         'properties.bootstrap.servers' = 'localhost:9092', 'key.format' = 'json', 'value.format' = 'json')",
    ),
    (
        "cdc_events_duplicate_without_a_primary_key",
        "SET 'table.exec.source.cdc-events-duplicate' = 'true';
         CREATE TABLE changes (id BIGINT, k STRING)
         WITH ('connector' = 'filesystem', 'path' = 'tests/data/cdc.json', 'format' = 'debezium-json');",
        "SELECT k, COUNT(*) FROM changes GROUP BY k",
    ),
    (
        "updating_query_into_an_insert_only_sink",
        "CREATE TABLE counts (k BIGINT, n BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '/tmp/weir-never-written', 'format' = 'csv');",
        "INSERT INTO counts SELECT id % 10, COUNT(*) FROM ticks GROUP BY id % 10",
    ),
];

/// The message a user sees when `sql` fails after `setup` ran: the
/// statement's error, or the job's when it fails while running.
async fn failure_of(setup: &str, sql: &str) -> String {
    let mut engine = engine().await;
    engine.execute_script(setup).await.expect("setup is valid");
    match engine.query(sql).await {
        Ok(_) => panic!("expected an error for: {sql}"),
        Err(e) => e.to_string(),
    }
}

/// Snapshots the message of the corpus case `name`, the statement as its description.
async fn assert_corpus_case(name: &str) {
    let Some((_, setup, sql)) = CORPUS.iter().find(|c| c.0 == name) else {
        panic!("no corpus case '{name}'");
    };
    let message = failure_of(setup, sql).await;
    insta::with_settings!({ description => *sql, omit_expression => true }, {
        insta::assert_snapshot!(format!("error_{name}"), message);
    });
}

#[tokio::test]
async fn error_unknown_column_in_a_window_query() {
    assert_corpus_case("unknown_column_in_a_window_query").await;
}

#[tokio::test]
async fn error_unknown_column_in_a_window_query_with_a_wildcard() {
    assert_corpus_case("unknown_column_in_a_window_query_with_a_wildcard").await;
}

#[tokio::test]
async fn error_unknown_column_in_a_hop_query() {
    assert_corpus_case("unknown_column_in_a_hop_query").await;
}

#[tokio::test]
async fn error_group_by_violation_in_a_window_query() {
    assert_corpus_case("group_by_violation_in_a_window_query").await;
}

#[tokio::test]
async fn error_type_mismatch() {
    assert_corpus_case("type_mismatch").await;
}

#[tokio::test]
async fn error_unknown_type() {
    assert_corpus_case("unknown_type").await;
}

#[tokio::test]
async fn error_misspelt_type_bignt() {
    assert_corpus_case("misspelt_type_bignt").await;
}

#[tokio::test]
async fn error_misspelt_type_strng() {
    assert_corpus_case("misspelt_type_strng").await;
}

#[tokio::test]
async fn error_misspelt_type_timestmp() {
    assert_corpus_case("misspelt_type_timestmp").await;
}

#[tokio::test]
async fn error_collate() {
    assert_corpus_case("collate").await;
}

#[tokio::test]
async fn error_unknown_with_option() {
    assert_corpus_case("unknown_with_option").await;
}

#[tokio::test]
async fn error_bad_option_value() {
    assert_corpus_case("bad_option_value").await;
}

#[tokio::test]
async fn error_window_over_a_missing_time_column() {
    assert_corpus_case("window_over_a_missing_time_column").await;
}

#[tokio::test]
async fn error_csv_row_that_does_not_parse() {
    assert_corpus_case("csv_row_that_does_not_parse").await;
}

#[tokio::test]
async fn error_cast_a_sink_cannot_take() {
    assert_corpus_case("cast_a_sink_cannot_take").await;
}

#[tokio::test]
async fn error_primary_key_of_an_unknown_column() {
    assert_corpus_case("primary_key_of_an_unknown_column").await;
}

#[tokio::test]
async fn error_primary_key_without_not_enforced() {
    assert_corpus_case("primary_key_without_not_enforced").await;
}

#[tokio::test]
async fn error_upsert_kafka_without_a_primary_key() {
    assert_corpus_case("upsert_kafka_without_a_primary_key").await;
}

#[tokio::test]
async fn error_cdc_events_duplicate_without_a_primary_key() {
    assert_corpus_case("cdc_events_duplicate_without_a_primary_key").await;
}

#[tokio::test]
async fn error_updating_query_into_an_insert_only_sink() {
    assert_corpus_case("updating_query_into_an_insert_only_sink").await;
}

/// A table with a column of every type Weir declares, and computed columns.
const EVERY_TYPE: &str = "CREATE TABLE every_type (
    a TINYINT, b SMALLINT, c INT, d BIGINT NOT NULL, e FLOAT, f DOUBLE, g DECIMAL(10, 2),
    h BOOLEAN, i STRING, j VARCHAR(20), k BYTES, l DATE,
    m TIMESTAMP(0), n TIMESTAMP(3), o TIMESTAMP(6), p TIMESTAMP(9), q TIMESTAMP_LTZ(3),
    r AS d * 2, s AS f / 2, t AS TO_TIMESTAMP_LTZ(d, 3), u AS n + INTERVAL '1' SECOND,
    WATERMARK FOR n AS n - INTERVAL '5' SECOND
) WITH ('connector' = 'blackhole');";

async fn describe_every_type() -> String {
    let mut engine = engine().await;
    engine
        .execute_script(EVERY_TYPE)
        .await
        .expect("the table is valid");
    let rows = engine
        .query("DESCRIBE every_type")
        .await
        .expect("DESCRIBE works");
    arrow::util::pretty::pretty_format_batches(&rows)
        .expect("the rows print")
        .to_string()
}

#[tokio::test]
async fn describe_names_sql_types() {
    insta::assert_snapshot!(describe_every_type().await);
}

/// Every message of the corpus, and DESCRIBE, speaks SQL: no Arrow type
/// names, no planner names, no Rust debug dumps, no line break inside a
/// quoted name.
#[tokio::test]
async fn messages_speak_sql() {
    let mut texts = vec![("describe".to_string(), describe_every_type().await)];
    for (name, setup, sql) in CORPUS {
        texts.push((name.to_string(), failure_of(setup, sql).await));
    }
    for (name, text) in texts {
        for internal in [
            "Int64",
            "Int32",
            "Utf8",
            "Float64",
            "Timestamp(",
            "tumble()",
            "hop()",
            "session()",
            " { ",
            "\n'",
            "\r'",
        ] {
            assert!(
                !text.contains(internal),
                "{name}: the message shows '{internal}': {text}"
            );
        }
    }
}

/// An updating aggregate of an unbounded stream, an aggregate of its
/// changelog and Top-Ns: each updating operator is marked, the aggregates
/// name their input's mode, the settings show; a Top-N without
/// `PARTITION BY` over a changelog ranks hash buckets first.
#[tokio::test]
async fn explain_updating_aggregate_and_top_n() {
    let mut engine = engine().await;
    engine
        .execute_script(
            "SET 'table.exec.state.ttl' = '1 h';
             SET 'table.exec.mini-batch.enabled' = 'true';
             SET 'table.exec.mini-batch.allow-latency' = '2 s';
             SET 'table.exec.mini-batch.size' = '5000';",
        )
        .await
        .expect("settings are valid");
    let mut texts = Vec::new();
    for sql in [
        "EXPLAIN INSERT INTO out SELECT c, COUNT(*) FROM \
         (SELECT id % 10 AS k, COUNT(*) AS c FROM ticks GROUP BY id % 10) GROUP BY c",
        "EXPLAIN SELECT id, price FROM (SELECT id, price, \
         ROW_NUMBER() OVER (PARTITION BY id ORDER BY price DESC) AS rn FROM ticks) WHERE rn <= 3",
        // Without PARTITION BY over a changelog: the buckets rank first.
        "EXPLAIN SELECT k, c, rn FROM (SELECT k, c, ROW_NUMBER() OVER (ORDER BY c DESC, k) AS rn \
         FROM (SELECT id % 10 AS k, COUNT(*) AS c FROM ticks GROUP BY id % 10)) WHERE rn <= 3",
    ] {
        texts.push(explain_on(&mut engine, sql).await);
    }
    insta::assert_snapshot!(texts.join("\n"));
}

/// Window Top-N: over a window function's rows (keyed by the auction) and
/// over a window aggregate's output (no other key: one subtask), each
/// emitting a window's top rows when the watermark passes its end.
#[tokio::test]
async fn explain_window_top_n() {
    let mut engine = engine().await;
    let mut texts = Vec::new();
    for sql in [
        "EXPLAIN SELECT window_start, auction, price FROM (SELECT window_start, auction, price, \
         ROW_NUMBER() OVER (PARTITION BY window_start, window_end, auction ORDER BY price DESC) AS rn \
         FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)) WHERE rn <= 3",
        "EXPLAIN SELECT * FROM (SELECT window_end, bidder, c, \
         RANK() OVER (PARTITION BY window_start, window_end ORDER BY c DESC) AS r \
         FROM (SELECT window_start, window_end, bidder, COUNT(*) AS c \
         FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) \
         GROUP BY window_start, window_end, bidder)) WHERE r <= 2",
    ] {
        texts.push(explain_on(&mut engine, sql).await);
    }
    insta::assert_snapshot!(texts.join("\n"));
}

/// A window whose late rows go to a table: its late-rows output feeds a
/// projection to that table's columns and the table's sink, kept apart
/// from the job's own output.
#[tokio::test]
async fn explain_late_rows_sink() {
    let mut engine = engine().await;
    engine
        .execute_script(
            "CREATE TABLE late_bids (bidder BIGINT, price DOUBLE, late_operator STRING, late_watermark TIMESTAMP(3))
               WITH ('connector' = 'blackhole');
             SET 'table.exec.late-records.sink' = 'late_bids';",
        )
        .await
        .expect("tables and settings are valid");
    let sql = "EXPLAIN INSERT INTO out SELECT window_start, bidder, COUNT(*), SUM(price) \
               FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, bidder";
    match engine.execute(sql).await {
        Ok(Executed::Explain(text)) => insta::assert_snapshot!(text),
        Ok(_) => panic!("EXPLAIN returned no text"),
        Err(e) => panic!("EXPLAIN failed: {e}"),
    }
}

/// An upsert-kafka source is followed by a ChangelogNormalize keyed by its
/// primary key (after a hash exchange); its key is read even where the
/// query does not need it, and DESCRIBE shows the key.
#[tokio::test]
async fn explain_upsert_kafka_source_and_sink() {
    let mut engine = engine().await;
    engine
        .execute_script(
            "CREATE TABLE users (id BIGINT, name STRING, score BIGINT, PRIMARY KEY (id) NOT ENFORCED)
             WITH ('connector' = 'upsert-kafka', 'topic' = 'users',
                   'properties.bootstrap.servers' = '127.0.0.1:9092',
                   'key.format' = 'json', 'value.format' = 'json');
             CREATE TABLE scores (name STRING, total BIGINT, PRIMARY KEY (name) NOT ENFORCED)
             WITH ('connector' = 'upsert-kafka', 'topic' = 'scores',
                   'properties.bootstrap.servers' = '127.0.0.1:9092',
                   'key.format' = 'json', 'value.format' = 'json',
                   'sink.delivery-guarantee' = 'exactly-once');",
        )
        .await
        .expect("tables are valid");
    let text = match engine
        .execute("EXPLAIN INSERT INTO scores SELECT name, SUM(score) FROM users GROUP BY name")
        .await
    {
        Ok(Executed::Explain(text)) => text,
        Ok(_) => panic!("EXPLAIN returned no text"),
        Err(e) => panic!("EXPLAIN failed: {e}"),
    };
    insta::assert_snapshot!(text);
    let described = engine.query("DESCRIBE users").await.unwrap();
    let rows = weir_engine::testing::format_rows(&described[0]);
    assert_eq!(rows[0], "id,BIGINT,false,PRIMARY KEY NOT ENFORCED");
}

/// With `table.exec.source.cdc-events-duplicate`, a `debezium-json` source
/// with a primary key is followed by a ChangelogNormalize keyed by it (after
/// a hash exchange), as an upsert source is; its key is read even where the
/// query does not need it.
#[tokio::test]
async fn explain_cdc_events_duplicate_normalizes_a_changelog_source() {
    let mut engine = engine().await;
    engine
        .execute_script(
            "SET 'table.exec.source.cdc-events-duplicate' = 'true';
             CREATE TABLE changes (id BIGINT, k STRING, v BIGINT, PRIMARY KEY (id) NOT ENFORCED)
             WITH ('connector' = 'kafka', 'topic' = 'changes', 'format' = 'debezium-json',
                   'properties.bootstrap.servers' = '127.0.0.1:9092',
                   'scan.startup.mode' = 'earliest-offset');",
        )
        .await
        .expect("the table is valid");
    let text = match engine
        .execute("EXPLAIN INSERT INTO out SELECT k, SUM(v) FROM changes GROUP BY k")
        .await
    {
        Ok(Executed::Explain(text)) => text,
        Ok(_) => panic!("EXPLAIN returned no text"),
        Err(e) => panic!("EXPLAIN failed: {e}"),
    };
    insta::assert_snapshot!(text);
    // Without the option, no ChangelogNormalize.
    engine
        .execute_script("RESET 'table.exec.source.cdc-events-duplicate';")
        .await
        .expect("RESET works");
    let text = match engine
        .execute("EXPLAIN INSERT INTO out SELECT k, SUM(v) FROM changes GROUP BY k")
        .await
    {
        Ok(Executed::Explain(text)) => text,
        Ok(_) => panic!("EXPLAIN returned no text"),
        Err(e) => panic!("EXPLAIN failed: {e}"),
    };
    assert!(!text.contains("ChangelogNormalize"), "{text}");
}

/// Regular joins: an inner join of two streams hashed by its key, whose
/// state is unbounded (and says so); an interval join, which drops rows as
/// the watermark passes their interval; a window join of two window
/// aggregates, which drops a window's rows when it closes; with a state TTL, a left join of a
/// running aggregate with a computed key, its input marked as a changelog.
#[tokio::test]
async fn explain_regular_joins() {
    let mut engine = engine().await;
    let mut texts = Vec::new();
    let unbounded = "EXPLAIN SELECT b.id, t.price FROM bids b JOIN ticks t ON b.auction = t.id AND b.price < t.price";
    texts.push(explain_on(&mut engine, unbounded).await);
    let interval = "EXPLAIN SELECT a.id, b.id FROM bids a LEFT JOIN bids b \
         ON a.auction = b.auction AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '2' SECOND";
    texts.push(explain_on(&mut engine, interval).await);
    let window = "EXPLAIN SELECT a.bidder, a.n, b.n FROM \
         (SELECT bidder, window_start, window_end, COUNT(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) \
          GROUP BY bidder, window_start, window_end) a \
         LEFT JOIN (SELECT auction, window_start, window_end, COUNT(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) \
          GROUP BY auction, window_start, window_end) b \
         ON a.bidder = b.auction AND a.window_start = b.window_start AND a.window_end = b.window_end";
    texts.push(explain_on(&mut engine, window).await);
    engine
        .execute_script("SET 'table.exec.state.ttl' = '1 h';")
        .await
        .expect("settings are valid");
    let bounded = "EXPLAIN SELECT c.k, c.n, t.price FROM \
         (SELECT id % 10 AS k, COUNT(*) AS n FROM ticks GROUP BY id % 10) c \
         LEFT JOIN ticks t ON c.k = t.id + 1";
    texts.push(explain_on(&mut engine, bounded).await);
    insta::assert_snapshot!(texts.join("\n"));
}
