//! Joins under faults, with real processes: a coordinator and three workers
//! run an inner join of two generated streams (append-only, to a CSV sink),
//! a left interval join of them (append-only: its outer rows come out as
//! their intervals close) and a left join of two updating aggregates (a
//! changelog, to a `debezium-json` sink), while workers are SIGKILLed or
//! the jobs rescaled. The committed output must be exactly the answer computed
//! here: the CSV rows as a multiset, the changelog netted out per row.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_proto as pb;

use super::fault::{
    checkpointed_source, committed, difference, kill_randomly, submit_script, wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};
use super::updating::{difference_signed, net_rows};

/// Ids of the first stream: 1..=ROWS.
const ROWS: u64 = 120_000;
/// Ids of the second stream: 1..=SECOND_ROWS.
const SECOND_ROWS: u64 = 60_000;

fn script(out: &Path, source_options: &str) -> String {
    format!(
        "{source}
        SET 'execution.runtime-mode' = 'streaming';
        CREATE TABLE src2 (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3),
                           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{SECOND_ROWS}', 'rows-per-second' = '6000',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{SECOND_ROWS}',
              'scan.batch-size' = '500'{source_options});
        CREATE TABLE pairs (a BIGINT, b BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{pairs}', 'format' = 'csv');
        INSERT INTO pairs SELECT a.id, b.id FROM src a JOIN src2 b ON a.id = b.id * 3;
        CREATE TABLE lefts (k BIGINT, n BIGINT, m BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{lefts}', 'format' = 'debezium-json');
        INSERT INTO lefts SELECT a.k, a.n, b.m
        FROM (SELECT id % 500 AS k, COUNT(*) AS n FROM src GROUP BY id % 500) a
        LEFT JOIN (SELECT id % 300 AS k, MAX(id) AS m FROM src2 GROUP BY id % 300) b ON a.k = b.k;
        CREATE TABLE near (a BIGINT, b BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{near}', 'format' = 'csv');
        INSERT INTO near SELECT a.id, b.id FROM src a LEFT JOIN src2 b
        ON a.id % 100 = b.id % 100 AND b.ts BETWEEN a.ts - INTERVAL '0.15' SECOND AND a.ts;",
        source = checkpointed_source(ROWS, 12_000, source_options),
        pairs = out.join("pairs").display(),
        lefts = out.join("lefts").display(),
        near = out.join("near").display(),
    )
}

/// The inner join's rows: `(3b, b)` for every `b` whose triple is an id.
fn expected_pairs() -> BTreeMap<String, usize> {
    (1..=SECOND_ROWS)
        .filter(|b| 3 * b <= ROWS)
        .map(|b| (format!("{},{b}", 3 * b), 1))
        .collect()
}

/// The interval join's rows: each id of the first stream with the ids of
/// the second at most 150 ms (ids) before it with the same remainder by
/// 100, that is itself and the id 100 before; padded when there is none.
fn expected_near() -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    for a in 1..=ROWS {
        let matches: Vec<u64> = [a, a.wrapping_sub(100)]
            .into_iter()
            .filter(|b| (1..=SECOND_ROWS).contains(b))
            .collect();
        if matches.is_empty() {
            *rows.entry(format!("{a},")).or_default() += 1;
        }
        for b in matches {
            *rows.entry(format!("{a},{b}")).or_default() += 1;
        }
    }
    rows
}

/// The left join's final rows: every key of the first aggregate, with the
/// second's maximum where it has the key.
fn expected_lefts() -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for id in 1..=ROWS {
        *counts.entry(id % 500).or_default() += 1;
    }
    let mut maxima: BTreeMap<u64, u64> = BTreeMap::new();
    for id in 1..=SECOND_ROWS {
        let m = maxima.entry(id % 300).or_default();
        *m = (*m).max(id);
    }
    counts
        .into_iter()
        .map(|(k, n)| {
            let row = serde_json::json!({"k": k, "n": n, "m": maxima.get(&k)});
            (row.to_string(), 1)
        })
        .collect()
}

async fn check(cluster: &TestCluster, jobs: &[String], out: &Path) {
    let client = cluster.client().await;
    for job in jobs {
        let summary = wait_for_end(&client, job, Duration::from_secs(150)).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
    }
    let expected = expected_pairs();
    let got = committed(&out.join("pairs"));
    assert!(got == expected, "pairs: {}", difference(&expected, &got));
    let expected = expected_near();
    let got = committed(&out.join("near"));
    assert!(got == expected, "near: {}", difference(&expected, &got));
    let expected = expected_lefts();
    let got = net_rows(&out.join("lefts"));
    assert!(
        got == expected,
        "lefts: {}",
        difference_signed(&expected, &got)
    );
}

/// Workers are SIGKILLed while both joins run at parallelism 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_survive_worker_kills_exactly_once() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    let jobs = submit_script(&cluster, &script(out.path(), ""), 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 1).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    check(&cluster, &jobs, out.path()).await;
    let client = cluster.client().await;
    let mut restarts = 0;
    for job in &jobs {
        restarts += client.job(job).await.unwrap().summary.unwrap().restarts;
    }
    assert!(restarts >= 1, "no job restarted after {landed} kills");
}

/// Rescaling 2 → 3 → 1: both sides' rows move with their key groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_rescales_by_key_group() {
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, 4).await;
    let script = script(out.path(), ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 1).await;
    for parallelism in [3, 1] {
        for job in &jobs {
            client.rescale(job, parallelism).await.unwrap();
        }
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 1).await;
    }
    check(&cluster, &jobs, out.path()).await;
}
