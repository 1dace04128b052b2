//! The Postgres wire protocol server of a real coordinator process
//! (`weir coordinator --pg-listen`), driven by `psql` and by
//! `tokio-postgres` (simple and extended protocol, binary results);
//! `describe`: psql's `\d`, `\l` and `\dn`.

mod describe;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, SimpleQueryMessage};
use weir::cluster::client::{is_terminal, state_name};

use crate::cluster::harness::TestCluster;

const TABLES: &str = "\
CREATE TABLE t (id BIGINT, k BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1000', \
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000', \
  'fields.k.min' = '1', 'fields.k.max' = '5');
CREATE TABLE endless (v BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '200', \
  'fields.v.min' = '1', 'fields.v.max' = '9');
CREATE TABLE sink (v BIGINT, w BIGINT) WITH ('connector' = 'blackhole');
";

/// Runs `script` through `psql` against `address`, unaligned and tuples
/// only: (stdout, stderr).
fn psql(address: &str, script: &str, password: Option<&str>) -> (String, String) {
    psql_with(&["-A", "-t"], address, script, password)
}

/// Runs `script` through `psql` with extra `options`: (stdout, stderr).
fn psql_with(
    options: &[&str],
    address: &str,
    script: &str,
    password: Option<&str>,
) -> (String, String) {
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut child = Command::new("timeout")
        .args(["120", "psql", "-X", "-v", "ON_ERROR_STOP=0"])
        .args(options)
        .args([
            "-h", host, "-p", port, "-U", "weir", "-d", "weir", "-f", "-",
        ])
        .env("PGPASSWORD", password.unwrap_or(""))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql (postgresql-client) is installed; `./dev test` installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn connect(
    address: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with_handle(address, password).await.map(|(c, _)| c)
}

/// A client and the task that owns its socket (abort it to hang up).
async fn connect_with_handle(
    address: &str,
    password: Option<&str>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut config = format!("host={host} port={port} user=weir dbname=weir connect_timeout=10");
    if let Some(p) = password {
        config.push_str(&format!(" password={p}"));
    }
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// The rows of a simple query, each as its columns' text joined by `|`.
async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and error position of a failed statement.
fn db_error(error: tokio_postgres::Error) -> (String, Option<u32>, String) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {error}"));
    let position = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
        _ => None,
    };
    (
        db.code().code().to_string(),
        position,
        db.message().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_against_a_coordinator() {
    let cluster =
        TestCluster::start_with_coordinator_args(1, 8, &["--pg-listen", "127.0.0.1:0"]).await;
    let pg = cluster.pg_address.clone().unwrap();

    // psql: tables, a bounded aggregate, LIMIT over an unbounded stream,
    // catalog queries, a pipeline, jobs, and errors that leave the session usable.
    let script = format!(
        "{TABLES}
SELECT COUNT(*), SUM(id), MIN(id), MAX(id) FROM t;
SELECT 'limited', v BETWEEN 1 AND 9 FROM endless LIMIT 3;
SHOW TABLES;
SELECT version();
SELECT current_database(), current_schema(), current_user;
SHOW server_version;
SHOW transaction isolation level;
SET extra_float_digits = 3;
SET 'pipeline.name' = 'pg-pipeline';
BEGIN;
COMMIT;
SELECT table_name || ':' || column_name || ':' || data_type FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position;
SELECT * FROM nope;
SELECT * FROM pg_catalog.pg_stat_activity;
INSERT INTO sink SELECT v, v * 2 FROM endless;
\\dt
SELECT 'after errors', COUNT(*) FROM t;
CREATE TABLE u (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1000', \
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000', 'scan.batch-size' = '50');
SET 'execution.runtime-mode' = 'streaming';
SELECT 'updating', id % 4, COUNT(*), MAX(id) FROM u GROUP BY id % 4;
SELECT 'snapshot', v % 3, COUNT(*) > 0 FROM endless GROUP BY v % 3 LIMIT 2;
"
    );
    let (out, err) = psql(&pg, &script, None);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let has = |line: &str| lines.contains(&line);
    let context = format!("stdout:\n{out}\nstderr:\n{err}\n{}", cluster.logs());
    assert!(has("1000|500500|1|1000"), "{context}");
    assert_eq!(
        lines.iter().filter(|l| **l == "limited|t").count(),
        3,
        "{context}"
    );
    assert!(has("t") && has("endless") && has("sink"), "{context}");
    assert!(
        lines.iter().any(|l| l.starts_with("PostgreSQL 16.6 (Weir")),
        "{context}"
    );
    assert!(has("weir|public|weir"), "{context}");
    assert!(has("16.6") && has("read committed"), "{context}");
    assert!(has("t:id:bigint") && has("t:k:bigint"), "{context}");
    assert!(has("public|t|table|weir"), "\\dt: {context}");
    assert!(has("after errors|1000"), "{context}");
    // An updating result reaches psql as its final rows, once each.
    let mut updating: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("updating|"))
        .collect();
    updating.sort_unstable();
    assert_eq!(
        updating,
        [
            "updating|0|250|1000",
            "updating|1|250|997",
            "updating|2|250|998",
            "updating|3|250|999",
        ],
        "{context}"
    );
    // LIMIT over an unbounded updating result answers with the first rows
    // there and ends the job (the script would hang otherwise).
    let snapshot: std::collections::BTreeSet<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("snapshot|"))
        .collect();
    assert_eq!(snapshot.len(), 2, "{context}");
    assert!(
        snapshot
            .iter()
            .all(|l| ["snapshot|0|t", "snapshot|1|t", "snapshot|2|t"].contains(l)),
        "{context}"
    );
    assert!(
        err.contains("ERROR:  planning error: table 'nope' not found"),
        "{context}"
    );
    // psql draws the caret from the error position.
    assert!(err.contains("LINE 1: SELECT * FROM nope"), "{context}");
    assert!(
        err.contains("pg_stat_activity") && err.contains("HINT:"),
        "{context}"
    );
    // A join whose state can only grow is warned about as it starts.
    let (_, join_err) = psql(
        &pg,
        "INSERT INTO sink SELECT a.id, b.k FROM t a JOIN t b ON a.id = b.id;",
        None,
    );
    assert!(
        join_err.contains("NOTICE:  warning: job ")
            && join_err.contains("an inner join keeps every row of both inputs"),
        "{join_err}"
    );
    let job_id = err
        .lines()
        .find_map(|l| l.split("NOTICE:  job ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job notice: {context}"))
        .to_string();

    let (out, _) = psql(&pg, "SHOW JOBS;", None);
    let listed = out
        .lines()
        .find(|l| l.starts_with(&job_id))
        .unwrap_or_else(|| panic!("job {job_id} not in SHOW JOBS:\n{out}"));
    assert!(listed.contains("pg-pipeline"), "{listed}");
    let coordinator = cluster.client().await;
    let job = coordinator.job(&job_id).await.unwrap().summary.unwrap();
    assert!(
        !is_terminal(&job),
        "the pipeline runs on: {}",
        state_name(job.state())
    );

    // tokio-postgres: the simple protocol (text) and prepared statements
    // (extended protocol, binary results) give the same rows.
    let client = connect(&pg, None).await.unwrap();
    let by_key = "SELECT k, COUNT(*) AS c, SUM(id) AS s FROM t GROUP BY k";
    let simple: BTreeSet<String> = simple_rows(&client, by_key).await.into_iter().collect();
    let prepared: BTreeSet<String> = client
        .query(by_key, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}",
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2)
            )
        })
        .collect();
    assert_eq!(simple, prepared);
    assert_eq!(simple.len(), 5, "{simple:?}");
    let (mut rows, mut sum) = (0, 0);
    for row in &simple {
        let parts: Vec<i64> = row.split('|').map(|p| p.parse().unwrap()).collect();
        assert!((1..=5).contains(&parts[0]), "{row}");
        rows += parts[1];
        sum += parts[2];
    }
    assert_eq!((rows, sum), (1000, 500_500));

    // Parameters, and values of several types in the binary format.
    let row = client
        .query_one(
            "SELECT COUNT(*) AS n, SUM(id) AS s FROM t WHERE id <= $1 AND id > $2",
            &[&10i64, &0i64],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (10, 55));
    let row = client
        .query_one(
            "SELECT CAST(id AS INT) AS i, CAST(id AS DOUBLE) / 2 AS d, CAST(id AS VARCHAR) AS s, \
             id > 500 AS b, CAST(id AS SMALLINT) AS small, CAST(NULL AS BIGINT) AS nothing \
             FROM t WHERE id = $1",
            &[&7i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>("i"), 7);
    assert_eq!(row.get::<_, f64>("d"), 3.5);
    assert_eq!(row.get::<_, String>("s"), "7");
    assert!(!row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, i16>("small"), 7);
    assert_eq!(row.get::<_, Option<i64>>("nothing"), None);
    let row = client
        .query_one("SELECT $1::VARCHAR AS greeting", &[&"it's"])
        .await;
    let greeting = row.map(|r| r.get::<_, String>(0));
    assert_eq!(greeting.unwrap(), "it's");
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with("PostgreSQL 16.6"), "{version}");

    // Bad input: errors with SQLSTATE and position; the connection goes on.
    let (code, position, message) =
        db_error(client.simple_query("SELECT * FROM nope").await.unwrap_err());
    assert_eq!((code.as_str(), position), ("42P01", Some(15)), "{message}");
    let (code, position, _) = db_error(
        client
            .simple_query("SELECT 1;\nSELECT 'unterminated")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "42601");
    assert!(position.is_some());
    let (code, _, message) = db_error(client.simple_query("FROBNICATE t").await.unwrap_err());
    assert_eq!(code, "42601", "{message}");
    let (code, position, message) =
        db_error(client.prepare("SELECT idd FROM t").await.unwrap_err());
    assert_eq!(code, "42703", "{message}");
    assert!(message.contains("idd"), "{message}");
    assert_eq!(position, Some(8), "{message}");
    let (code, _, _) = db_error(
        client
            .query("SELECT * FROM nope WHERE x = $1", &[&1i64])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "42P01");
    // Each kind of error has its SQLSTATE, decided by the error's type.
    for (sql, expected) in [
        (
            "CREATE TABLE t (a BIGINT) WITH ('connector' = 'blackhole')",
            "42P07",
        ),
        ("SELECT a.id FROM t a JOIN t b ON a.id > b.id", "0A000"),
        (
            "SELECT window_start FROM TUMBLE(t, nosuch, INTERVAL '1' SECOND)",
            "42703",
        ),
        (
            "SELECT window_start FROM TUMBLE(tt, ts, INTERVAL '1' SECOND)",
            "42P01",
        ),
    ] {
        let (code, _, message) = db_error(client.simple_query(sql).await.unwrap_err());
        assert_eq!(code, expected, "{sql}: {message}");
    }
    assert_eq!(
        simple_rows(&client, "SELECT COUNT(*) FROM t").await,
        vec!["1000"]
    );
    assert_eq!(
        client
            .query_one("SELECT COUNT(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1000
    );

    // A client that goes away mid-query: its job is cancelled, and the
    // server goes on serving others.
    let before: BTreeSet<String> = coordinator
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    let (doomed, socket) = connect_with_handle(&pg, None).await.unwrap();
    let query = tokio::spawn(async move {
        let _ = doomed.simple_query("SELECT v FROM endless").await;
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let query_job = loop {
        let jobs = coordinator.jobs().await.unwrap();
        if let Some(j) = jobs
            .iter()
            .find(|j| !before.contains(&j.job_id) && !is_terminal(j) && j.records_read > 0)
        {
            break j.job_id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the query's job never ran: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The client process dies: its socket closes without a goodbye.
    socket.abort();
    query.abort();
    let _ = query.await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = coordinator.job(&query_job).await.unwrap().summary.unwrap();
        if is_terminal(&job) {
            assert_eq!(
                state_name(job.state()),
                state_name(weir_proto::JobState::Canceled)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned query's job still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = connect(&pg, None).await.unwrap();
    assert_eq!(
        simple_rows(&fresh, "SELECT COUNT(*) FROM t").await,
        vec!["1000"]
    );
    assert_eq!(simple_rows(&client, "SELECT 1 + 1").await, vec!["2"]);

    let (_, err) = psql(&pg, &format!("STOP JOB '{job_id}';"), None);
    assert!(err.contains("stopping"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[coordinator]\npg_password = \"s3cret\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let cluster = TestCluster::start_with_coordinator_args(
        1,
        2,
        &["--pg-listen", "127.0.0.1:0", "--config", &config],
    )
    .await;
    let pg = cluster.pg_address.clone().unwrap();

    let client = connect(&pg, Some("s3cret")).await.unwrap();
    assert_eq!(simple_rows(&client, "SELECT 40 + 2").await, vec!["42"]);
    let error = connect(&pg, Some("wrong"))
        .await
        .expect_err("a wrong password is refused");
    let (code, _, _) = db_error(error);
    assert_eq!(code, "28P01");
    assert!(connect(&pg, None).await.is_err(), "no password, no entry");

    let (out, err) = psql(&pg, "SELECT current_user;", Some("s3cret"));
    assert_eq!(out.trim(), "weir", "{err}");
    let (out, err) = psql(&pg, "SELECT current_user;", Some("nope"));
    assert!(
        out.trim().is_empty()
            && err
                .to_lowercase()
                .contains("password authentication failed"),
        "{out}\n{err}"
    );
}

/// Views over Postgres: created through psql, listed by `\dv` and
/// `information_schema.tables`, read from another connection (the view is
/// in the cluster's catalog), and their errors with SQLSTATE and position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_postgres() {
    let cluster =
        TestCluster::start_with_coordinator_args(1, 8, &["--pg-listen", "127.0.0.1:0"]).await;
    let pg = cluster.pg_address.clone().unwrap();
    let script = format!(
        "{TABLES}
CREATE VIEW big (id, key) AS SELECT id, k FROM t WHERE id > 900;
SELECT COUNT(*), SUM(id) FROM big;
\\dv
\\dt
SHOW VIEWS;
SELECT table_name || ':' || table_type FROM information_schema.tables ORDER BY table_name;
"
    );
    let (out, err) = psql(&pg, &script, None);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let has = |line: &str| lines.contains(&line);
    let context = format!("stdout:\n{out}\nstderr:\n{err}\n{}", cluster.logs());
    // 901..1000.
    assert!(has("100|95050"), "{context}");
    assert!(has("public|big|view|weir"), "\\dv: {context}");
    assert!(has("public|t|table|weir"), "\\dt: {context}");
    assert!(
        !has("public|big|table|weir"),
        "\\dt lists tables: {context}"
    );
    assert!(has("big"), "SHOW VIEWS: {context}");
    assert!(has("big:VIEW") && has("t:BASE TABLE"), "{context}");
    assert!(!err.contains("ERROR"), "{context}");

    // Another connection (another session) reads it, in both protocols.
    let client = connect(&pg, None).await.unwrap();
    assert_eq!(
        simple_rows(&client, "SELECT MIN(id), MAX(key) <= 5 FROM big").await,
        vec!["901|t"]
    );
    let row = client
        .query_one("SELECT COUNT(*) FROM big WHERE id <= $1", &[&950i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    for (sql, expected, position) in [
        ("DROP VIEW bigg", "42P01", None),
        ("CREATE VIEW big AS SELECT 1", "42P07", None),
        ("CREATE VIEW t AS SELECT 1", "42P07", None),
        ("CREATE VIEW bad AS SELECT nope FROM t", "42703", Some(27)),
    ] {
        let (code, at, message) = db_error(client.simple_query(sql).await.unwrap_err());
        assert_eq!(
            (code.as_str(), at),
            (expected, position),
            "{sql}: {message}"
        );
    }
    client.simple_query("DROP VIEW big").await.unwrap();
    let (code, _, message) = db_error(client.simple_query("SELECT * FROM big").await.unwrap_err());
    assert_eq!(code, "42P01", "{message}");
}
