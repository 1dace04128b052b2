//! Keyed state larger than the memory budget: workers with a tiny budget
//! (16 KiB per operator subtask) spill window, aggregate and session state
//! to RocksDB, checkpoint it, copy it into the new attempt on restore, and
//! emit from it. With random worker kills, and rescaled, the output is
//! exactly the hand-computed aggregate and the undisturbed (unspilled) run's
//! windows and sessions. The updating aggregate evicts its groups and loads
//! them back, and so does a Top-N over it its partitions; their changelogs
//! net out to the hand-computed answers; so does a Top-N without
//! `PARTITION BY`, whose first stage evicts its hash buckets, and a join
//! its keys, both sides. The window Top-N evicts the
//! partitions of its open windows, loads them back for their rows and reads
//! them back to fire: killed and rescaled, it ranks every window exactly
//! once.

use std::collections::BTreeMap;
use std::path::Path;

use super::fault::{
    checkpointed_source, committed, difference, kill_randomly, run_undisturbed, submit_script,
    wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};
use super::updating::{difference_signed, net_rows};
use super::window_top_n::TopQuery;
use weir_proto as pb;

const ROWS: u64 = 200_000;
/// Groups of the non-windowed aggregate: ten rows each.
const GROUPS: u64 = 20_000;
/// Sessions: 1,000 keys with a row every second for 40 s out of every
/// 50 s, so each key has a session per 50 s; the other 10 s go to 7 keys.
const SESSION_KEY: &str = "CASE WHEN id % 50000 < 40000 THEN id % 1000 ELSE 1000 + id % 7 END";

fn script(out: &Path, rows_per_second: u64) -> String {
    script_with(out, rows_per_second, "")
}

/// [`script`] with extra source options (`, 'key' = 'value'`).
fn script_with(out: &Path, rows_per_second: u64, source_options: &str) -> String {
    let session_key = SESSION_KEY;
    format!(
        "{source}
        CREATE TABLE win (k BIGINT, we TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{win}', 'format' = 'csv');
        CREATE TABLE agg (k BIGINT, c BIGINT, s BIGINT, m BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{agg}', 'format' = 'csv');
        INSERT INTO win SELECT id % 5000, window_end, COUNT(*), SUM(id)
        FROM TUMBLE(src, ts, INTERVAL '10' SECOND) GROUP BY id % 5000, window_start, window_end;
        INSERT INTO agg SELECT id % {GROUPS}, COUNT(*), SUM(id), MAX(id) FROM src GROUP BY id % {GROUPS};
        CREATE TABLE sess (k BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{sess}', 'format' = 'csv');
        INSERT INTO sess SELECT {session_key}, window_start, window_end, COUNT(*), SUM(id)
        FROM SESSION(src, ts, INTERVAL '2' SECOND) GROUP BY {session_key}, window_start, window_end;",
        source = checkpointed_source(ROWS, rows_per_second, source_options),
        win = out.join("win").display(),
        agg = out.join("agg").display(),
        sess = out.join("sess").display(),
    )
}

/// The aggregate, computed by hand.
fn expected_aggregate() -> BTreeMap<String, usize> {
    let mut groups: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for id in 1..=ROWS {
        let g = groups.entry(id % GROUPS).or_default();
        *g = (g.0 + 1, g.1 + id, g.2.max(id));
    }
    groups
        .into_iter()
        .map(|(k, (c, s, m))| (format!("{k},{c},{s},{m}"), 1))
        .collect()
}

/// The windows and sessions of an undisturbed `weir run` with the default
/// budget (no spilling), checked by hand to count every row once.
fn undisturbed(dir: &Path) -> Expected {
    run_undisturbed(dir, &script(dir, 10_000_000));
    let win = committed(&dir.join("win"));
    let sess = committed(&dir.join("sess"));
    let column_sum = |rows: &BTreeMap<String, usize>, i: usize| -> u64 {
        rows.keys()
            .map(|r| r.split(',').nth(i).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(column_sum(&win, 2), ROWS);
    assert_eq!(column_sum(&win, 3), ROWS * (ROWS + 1) / 2);
    assert_eq!(column_sum(&sess, 3), ROWS);
    assert_eq!(column_sum(&sess, 4), ROWS * (ROWS + 1) / 2);
    // Four 40 s stretches per key, each its own session, and id 200,000
    // (200,000 % 50,000 = 0) alone in a fifth for key 0.
    let main_key_sessions = sess
        .keys()
        .filter(|r| r.split(',').next().unwrap().parse::<u64>().unwrap() < 1000)
        .count();
    assert_eq!(main_key_sessions, 4 * 1000 + 1);
    assert_eq!(committed(&dir.join("agg")), expected_aggregate());
    Expected { win, sess }
}

/// What the jobs must commit besides the hand-computed aggregate.
struct Expected {
    win: BTreeMap<String, usize>,
    sess: BTreeMap<String, usize>,
}

/// Waits for the jobs to finish and compares their committed output.
async fn check_outputs(cluster: &TestCluster, jobs: &[String], out: &Path, expected: &Expected) {
    let client = cluster.client().await;
    for job in jobs {
        let summary = wait_for_end(&client, job, std::time::Duration::from_secs(150)).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
        assert!(summary.state_spilled_bytes > 0, "{summary:?}");
    }
    let got = committed(&out.join("win"));
    assert!(
        got == expected.win,
        "windows: {}",
        difference(&expected.win, &got)
    );
    let got = committed(&out.join("sess"));
    assert!(
        got == expected.sess,
        "sessions: {}",
        difference(&expected.sess, &got)
    );
    let aggregate = expected_aggregate();
    let got = committed(&out.join("agg"));
    assert!(
        got == aggregate,
        "aggregate: {}",
        difference(&aggregate, &got)
    );
    // The state really went through runs, and restores really copied them.
    assert!(
        cluster.logs_contain("spilling runs to RocksDB"),
        "nothing spilled"
    );
    assert!(
        cluster.logs_contain("restored spilled state"),
        "no restore found runs to copy\n{}",
        cluster.logs()
    );
}

/// Workers keeping 16 KiB of state per operator subtask in memory, whose
/// local snapshots lag 300 ms behind the barrier: runs written after the
/// barrier land in the snapshot too, and a restore must leave them out.
const TINY_BUDGET: [(&str, &str); 2] = [
    ("WEIR_WORKER_STATE_OPERATOR_MEMORY_KB", "16"),
    ("FAILPOINTS", "worker::before-local-snapshot=sleep(300)"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_past_the_memory_budget_spills_and_survives_worker_kills() {
    let expected_dir = tempfile::tempdir().unwrap();
    let expected = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let jobs = submit_script(&cluster, &script(out.path(), 15_000), 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    check_outputs(&cluster, &jobs, out.path(), &expected).await;
}

/// Spilled runs move by key group too: 2 → 3 → 1 subtasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_state_rescales_two_to_three_to_one() {
    let expected_dir = tempfile::tempdir().unwrap();
    let expected = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let script = script_with(out.path(), 15_000, ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 2).await;
    for parallelism in [3, 1] {
        for job in &jobs {
            client.rescale(job, parallelism).await.unwrap();
        }
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 2).await;
    }
    check_outputs(&cluster, &jobs, out.path(), &expected).await;
}

/// Groups of the updating aggregate: three rows each.
const UPDATING_KEYS: u64 = 50_000;
const UPDATING_ROWS: u64 = 3 * UPDATING_KEYS;

/// A `GROUP BY` over 50,000 keys as a changelog: each key's three rows come
/// 50,000 rows apart, so with a 16 KiB budget every group is evicted to
/// RocksDB before its next row, which must load it back.
fn updating_script(out: &Path) -> String {
    format!(
        "{source}
        SET 'execution.runtime-mode' = 'streaming';
        CREATE TABLE totals (k BIGINT, c BIGINT, lo BIGINT, hi BIGINT, d BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{totals}', 'format' = 'debezium-json');
        INSERT INTO totals SELECT id % {UPDATING_KEYS}, COUNT(*), MIN(id), MAX(id), COUNT(DISTINCT id % 7)
        FROM src GROUP BY id % {UPDATING_KEYS};
        CREATE TABLE tops (p BIGINT, k BIGINT, hi BIGINT, rn BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{tops}', 'format' = 'debezium-json');
        INSERT INTO tops SELECT p, k, hi, rn FROM (
          SELECT p, k, hi, ROW_NUMBER() OVER (PARTITION BY p ORDER BY hi DESC) AS rn
          FROM (SELECT id % {UPDATING_KEYS} AS k, id % {TOP_PARTITIONS} AS p, MAX(id) AS hi
                FROM src GROUP BY id % {UPDATING_KEYS}, id % {TOP_PARTITIONS})) WHERE rn <= 2;",
        source = checkpointed_source(UPDATING_ROWS, 15_000, ""),
        totals = out.join("totals").display(),
        tops = out.join("tops").display(),
    )
}

/// Partitions of the Top-N over the updating aggregate: five keys each, so
/// with a 16 KiB budget most partitions are evicted between their rows.
const TOP_PARTITIONS: u64 = 10_000;

/// The final answer of the Top-N of [`updating_script`]: per partition the
/// two keys with the largest ids, ranked.
fn expected_tops() -> BTreeMap<String, i64> {
    let mut hi: BTreeMap<u64, u64> = BTreeMap::new();
    for id in 1..=UPDATING_ROWS {
        let h = hi.entry(id % UPDATING_KEYS).or_default();
        *h = (*h).max(id);
    }
    let mut partitions: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (k, h) in hi {
        partitions
            .entry(k % TOP_PARTITIONS)
            .or_default()
            .push((h, k));
    }
    let mut rows = BTreeMap::new();
    for (p, mut keys) in partitions {
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for (rank, (h, k)) in keys.into_iter().take(2).enumerate() {
            let row = serde_json::json!({"p": p, "k": k, "hi": h, "rn": rank + 1});
            rows.insert(row.to_string(), 1);
        }
    }
    rows
}

/// The final answer of [`updating_script`], computed here.
fn expected_updating() -> BTreeMap<String, i64> {
    let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for id in 1..=UPDATING_ROWS {
        groups.entry(id % UPDATING_KEYS).or_default().push(id);
    }
    groups
        .into_iter()
        .map(|(k, ids)| {
            let sevens: std::collections::BTreeSet<u64> = ids.iter().map(|id| id % 7).collect();
            let row = serde_json::json!({
                "k": k,
                "c": ids.len(),
                "lo": ids.iter().min(),
                "hi": ids.iter().max(),
                "d": sevens.len(),
            });
            (row.to_string(), 1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_groups_past_the_memory_budget_are_evicted_and_survive_worker_kills() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let jobs = submit_script(&cluster, &updating_script(out.path()), 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    let client = cluster.client().await;
    for job in &jobs {
        let summary = wait_for_end(&client, job, std::time::Duration::from_secs(150)).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
        assert!(summary.state_spilled_bytes > 0, "{summary:?}");
        assert!(summary.restarts >= 1, "{summary:?}");
    }
    let expected = expected_updating();
    let got = net_rows(&out.path().join("totals"));
    assert!(
        got == expected,
        "totals: {}",
        difference_signed(&expected, &got)
    );
    // The Top-N evicted too (its first eviction per subtask is logged).
    let logs = cluster.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("task=TopN") && l.contains("passed its memory budget")),
        "the Top-N evicted nothing\n{logs}"
    );
    let expected = expected_tops();
    let got = net_rows(&out.path().join("tops"));
    assert!(
        got == expected,
        "tops: {}",
        difference_signed(&expected, &got)
    );
    assert!(
        cluster.logs_contain("restored spilled state"),
        "no restore found evicted groups to copy\n{}",
        cluster.logs()
    );
}

/// The two best rows of each 10 s window and of 2,000 keys: with a 16 KiB
/// budget nearly every (window, key) is evicted before the key's next row
/// (2,000 rows later), and most of a window is on disk when it fires.
const SPILLED_TOP: TopQuery = TopQuery {
    rows: 200_000,
    keys: 2_000,
    window_ms: 10_000,
    top: 2,
};

/// Checks that the window Top-N of `job` evicted and, restored, found
/// evicted keys to copy; then its output.
async fn check_spilled_top(cluster: &TestCluster, job: &str, out: &Path) {
    SPILLED_TOP.check(cluster, job, out).await;
    let client = cluster.client().await;
    let summary = client.job(job).await.unwrap().summary.unwrap();
    assert!(summary.state_spilled_bytes > 0, "{summary:?}");
    let logs = cluster.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("task=WindowTopN") && l.contains("passed its memory budget")),
        "the window Top-N evicted nothing\n{logs}"
    );
    assert!(
        cluster.logs_contain("restored spilled state"),
        "no restore found evicted keys to copy\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_top_n_keys_past_the_memory_budget_are_evicted_and_survive_worker_kills() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let script = SPILLED_TOP.script(out.path(), 15_000, "");
    let jobs = submit_script(&cluster, &script, 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    check_spilled_top(&cluster, &jobs[0], out.path()).await;
    let client = cluster.client().await;
    let summary = client.job(&jobs[0]).await.unwrap().summary.unwrap();
    assert!(summary.restarts >= 1, "{summary:?}");
}

/// Evicted window Top-N keys move by key group: 2 → 3 → 1 subtasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_top_n_evicted_keys_rescale_two_to_three_to_one() {
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let script = SPILLED_TOP.script(out.path(), 15_000, ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0], 2).await;
    for parallelism in [3, 1] {
        client.rescale(&jobs[0], parallelism).await.unwrap();
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 2).await;
    }
    check_spilled_top(&cluster, &jobs[0], out.path()).await;
}

/// Runs `script`'s one job on workers with a 16 KiB budget while two
/// workers are killed: it must finish after restarting, having spilled, and
/// operator `task` must have passed its memory budget.
async fn spill_one_job_through_kills(script: &str, task: &str) {
    let mut cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let jobs = submit_script(&cluster, script, 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 2).await;
    assert!(landed >= 1, "no kill landed");
    let client = cluster.client().await;
    let summary = wait_for_end(&client, &jobs[0], std::time::Duration::from_secs(150)).await;
    assert_eq!(
        summary.state(),
        pb::JobState::Finished,
        "{}\n{}",
        summary.failure,
        cluster.logs()
    );
    assert!(summary.restarts >= 1, "{summary:?}");
    assert!(summary.state_spilled_bytes > 0, "{summary:?}");
    let logs = cluster.logs();
    let marker = format!("task={task}");
    assert!(
        logs.lines()
            .any(|l| l.contains(&marker) && l.contains("passed its memory budget")),
        "{task} evicted nothing\n{logs}"
    );
}

/// Keys of the Top-N without `PARTITION BY`: three rows each.
const GLOBAL_TOP_KEYS: u64 = 30_000;

/// The three keys with the fewest rows so far (the largest keys first among
/// equal counts), over a running count: every count goes 1, 2, 3, so the
/// bottom three keep changing and rows deep in a bucket come back (key 0,
/// last of its bucket, is in the bottom three near the end of the second
/// pass).
fn global_top_script(out: &Path) -> String {
    format!(
        "{source}
        SET 'execution.runtime-mode' = 'streaming';
        CREATE TABLE bottom (k BIGINT, c BIGINT, rn BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{bottom}', 'format' = 'debezium-json');
        INSERT INTO bottom SELECT k, c, rn FROM (
          SELECT k, c, ROW_NUMBER() OVER (ORDER BY c, k DESC) AS rn
          FROM (SELECT id % {GLOBAL_TOP_KEYS} AS k, COUNT(*) AS c FROM src GROUP BY id % {GLOBAL_TOP_KEYS}))
        WHERE rn <= 3;",
        source = checkpointed_source(3 * GLOBAL_TOP_KEYS, 15_000, ""),
        bottom = out.join("bottom").display(),
    )
}

/// The final answer of [`global_top_script`], computed here.
fn expected_global_top() -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for id in 1..=3 * GLOBAL_TOP_KEYS {
        *counts.entry(id % GLOBAL_TOP_KEYS).or_default() += 1;
    }
    let mut ranked: Vec<(u64, u64)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    ranked
        .into_iter()
        .take(3)
        .enumerate()
        .map(|(i, (k, c))| {
            let row = serde_json::json!({"k": k, "c": c, "rn": i + 1});
            (row.to_string(), 1)
        })
        .collect()
}

/// A Top-N without `PARTITION BY` over a changelog ranks hash buckets of
/// rows first: that stage is partitioned, so past the budget it evicts its
/// buckets, and killed workers restore them. The second stage, one task,
/// holds only the buckets' tops and never evicts; so every eviction logged
/// by a Top-N here is the first stage's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_top_n_over_a_changelog_evicts_its_buckets_and_survives_worker_kills() {
    let out = tempfile::tempdir().unwrap();
    spill_one_job_through_kills(&global_top_script(out.path()), "TopN").await;
    let expected = expected_global_top();
    let got = net_rows(&out.path().join("bottom"));
    assert!(
        got == expected,
        "bottom: {}",
        difference_signed(&expected, &got)
    );
}

/// Ids of the join's second input (the first has `GLOBAL_TOP_KEYS * 3`).
const JOIN_RIGHT_ROWS: u64 = 40_000;

/// A left join of two streams on their ids: every id is a key of its own,
/// so with a 16 KiB budget nearly every key is evicted before the other
/// side's row comes, which must load it back.
fn join_script(out: &Path) -> String {
    format!(
        "{source}
        SET 'execution.runtime-mode' = 'streaming';
        CREATE TABLE src2 (id BIGINT)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{JOIN_RIGHT_ROWS}', 'rows-per-second' = '5000',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{JOIN_RIGHT_ROWS}',
              'scan.batch-size' = '500');
        CREATE TABLE joined (a BIGINT, b BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{joined}', 'format' = 'debezium-json');
        INSERT INTO joined SELECT a.id, b.id FROM src a LEFT JOIN src2 b ON a.id = b.id;",
        source = checkpointed_source(3 * GLOBAL_TOP_KEYS, 15_000, ""),
        joined = out.join("joined").display(),
    )
}

/// Every id of the first input, with itself where the second has it.
fn expected_joined() -> BTreeMap<String, i64> {
    (1..=3 * GLOBAL_TOP_KEYS)
        .map(|a| {
            let b = (a <= JOIN_RIGHT_ROWS).then_some(a);
            (serde_json::json!({"a": a, "b": b}).to_string(), 1)
        })
        .collect()
}

/// Join state past the budget is evicted by key, loaded back when the other
/// side's row comes, and restored after worker kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_keys_past_the_memory_budget_are_evicted_and_survive_worker_kills() {
    let out = tempfile::tempdir().unwrap();
    spill_one_job_through_kills(&join_script(out.path()), "Join").await;
    let expected = expected_joined();
    let got = net_rows(&out.path().join("joined"));
    assert!(
        got == expected,
        "joined: {}",
        difference_signed(&expected, &got)
    );
}
