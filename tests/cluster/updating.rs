//! Updating results under faults, with real processes: a coordinator and
//! three workers run a `GROUP BY` without a window, an aggregate of its
//! changelog, a Top-N and a Top-N of the `GROUP BY`'s changelog, written as `debezium-json` by filesystem sinks
//! that commit with checkpoints, while workers are SIGKILLed or the jobs
//! rescaled.
//!
//! A changelog's `-U`/`-D` repeat the row they take back, so the committed
//! records net out: each row's count of `c` records minus its count of `d`
//! records must be 1 for the rows of the final answer and 0 for every other
//! — a lost or duplicated change shows as another count, in any order of
//! the part files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_proto as pb;

use super::fault::{
    checkpointed_source, difference, in_progress_files, kill_randomly, submit_script,
    wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};

/// Rows of the generated input: ids 1..=ROWS.
const ROWS: u64 = 120_000;
/// The first aggregate's groups.
const KEYS: u64 = 97;

fn script(out: &Path, source_options: &str) -> String {
    format!(
        "{source}
        SET 'execution.runtime-mode' = 'streaming';
        CREATE TABLE totals (k BIGINT, c BIGINT, s BIGINT, m BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{totals}', 'format' = 'debezium-json');
        CREATE TABLE spread (b BIGINT, n BIGINT, lo BIGINT, hi BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{spread}', 'format' = 'debezium-json');
        INSERT INTO totals SELECT id % {KEYS}, COUNT(*), SUM(id), MAX(id) FROM src GROUP BY id % {KEYS};
        INSERT INTO spread SELECT c % 5, COUNT(*), MIN(k), MAX(k)
        FROM (SELECT id % {KEYS} AS k, COUNT(*) AS c FROM src GROUP BY id % {KEYS}) GROUP BY c % 5;
        CREATE TABLE best (k BIGINT, id BIGINT, rn BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{best}', 'format' = 'debezium-json');
        INSERT INTO best SELECT k, id, rn FROM (
          SELECT k, id, ROW_NUMBER() OVER (PARTITION BY k ORDER BY id DESC) AS rn
          FROM (SELECT id % {KEYS} AS k, id FROM src)) WHERE rn <= 3;
        CREATE TABLE leaders (k BIGINT, c BIGINT, rn BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{leaders}', 'format' = 'debezium-json');
        INSERT INTO leaders SELECT k, c, rn FROM (
          SELECT k, c, ROW_NUMBER() OVER (ORDER BY c DESC, k) AS rn
          FROM (SELECT id % {KEYS} AS k, COUNT(*) AS c FROM src GROUP BY id % {KEYS})) WHERE rn <= 3;",
        source = checkpointed_source(ROWS, 12_000, source_options),
        totals = out.join("totals").display(),
        spread = out.join("spread").display(),
        best = out.join("best").display(),
        leaders = out.join("leaders").display(),
    )
}

/// The final answers, computed here from the ids.
type Rows = BTreeMap<String, i64>;

fn expected() -> [(&'static str, Rows); 4] {
    let mut per_key: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for id in 1..=ROWS {
        let entry = per_key.entry(id % KEYS).or_default();
        *entry = (entry.0 + 1, entry.1 + id, entry.2.max(id));
    }
    let totals = per_key
        .iter()
        .map(|(k, (c, s, m))| {
            let row = serde_json::json!({"k": k, "c": c, "s": s, "m": m});
            (row.to_string(), 1)
        })
        .collect();
    let mut buckets: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for (&k, &(c, _, _)) in &per_key {
        let entry = buckets.entry(c % 5).or_insert((0, u64::MAX, 0));
        *entry = (entry.0 + 1, entry.1.min(k), entry.2.max(k));
    }
    let spread = buckets
        .iter()
        .map(|(b, (n, lo, hi))| {
            let row = serde_json::json!({"b": b, "n": n, "lo": lo, "hi": hi});
            (row.to_string(), 1)
        })
        .collect();
    // The three largest ids of each key, ranked.
    let mut best = BTreeMap::new();
    for k in 0..KEYS {
        let mut ids: Vec<u64> = (1..=ROWS)
            .rev()
            .filter(|id| id % KEYS == k)
            .take(3)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for (rank, id) in ids.into_iter().enumerate() {
            let row = serde_json::json!({"k": k, "id": id, "rn": rank + 1});
            best.insert(row.to_string(), 1);
        }
    }
    // The three keys with the most rows (a Top-N over the updating counts).
    let mut by_count: Vec<(u64, u64)> = per_key.iter().map(|(&k, &(c, _, _))| (c, k)).collect();
    by_count.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let leaders = by_count
        .iter()
        .take(3)
        .enumerate()
        .map(|(rank, (c, k))| {
            let row = serde_json::json!({"k": k, "c": c, "rn": rank + 1});
            (row.to_string(), 1)
        })
        .collect();
    [
        ("totals", totals),
        ("spread", spread),
        ("best", best),
        ("leaders", leaders),
    ]
}

/// The committed changes of a debezium-json sink, netted out per row.
pub(super) fn net_rows(dir: &Path) -> BTreeMap<String, i64> {
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    let mut changes = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let (row, sign) = match record["op"].as_str() {
                Some("c") => (&record["after"], 1),
                Some("d") => (&record["before"], -1),
                other => panic!("unexpected op {other:?} in {line}"),
            };
            *net.entry(row.to_string()).or_default() += sign;
            changes += 1;
        }
    }
    // More changes than rows: the groups really were updated along the way.
    assert!(changes > net.values().filter(|&&n| n != 0).count());
    net.retain(|_, n| *n != 0);
    net
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
    for (sink, expected) in expected() {
        let got = net_rows(&out.join(sink));
        assert!(
            got == expected,
            "{sink}: {}",
            difference_signed(&expected, &got)
        );
        let leftovers = in_progress_files(&out.join(sink));
        assert!(leftovers.is_empty(), "{sink}: {leftovers:?}");
    }
}

pub(super) fn difference_signed(
    expected: &BTreeMap<String, i64>,
    got: &BTreeMap<String, i64>,
) -> String {
    let as_counts = |m: &BTreeMap<String, i64>| -> BTreeMap<String, usize> {
        m.iter()
            .map(|(k, v)| (format!("{k} (net {v})"), 1))
            .collect()
    };
    difference(&as_counts(expected), &as_counts(got))
}

/// Workers are SIGKILLed while both updating jobs run at parallelism 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_results_survive_worker_kills() {
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

/// Rescaling 2 → 3 → 1: the groups' state moves by key group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_results_rescale_by_key_group() {
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
