//! Keyed state larger than the memory budget: workers with a tiny budget
//! (16 KiB per operator subtask) spill window and aggregate state to RocksDB
//! as runs, checkpoint the runs, copy them into the new attempt on restore,
//! and emit from them. With random worker kills, the output is exactly the
//! hand-computed aggregate and the undisturbed (unspilled) run's windows.

use std::collections::BTreeMap;
use std::path::Path;

use super::fault::{committed, difference, kill_randomly, submit_script, wait_for_checkpoints};
use super::harness::{TestCluster, wait_for_end};
use weir_proto as pb;

const ROWS: u64 = 200_000;
/// Groups of the non-windowed aggregate: ten rows each.
const GROUPS: u64 = 20_000;

fn script(out: &Path, rows_per_second: u64) -> String {
    script_with(out, rows_per_second, "")
}

/// [`script`] with extra source options (`, 'key' = 'value'`).
fn script_with(out: &Path, rows_per_second: u64, source_options: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE src (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '{rows_per_second}',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
              'scan.batch-size' = '500'{source_options});
        CREATE TABLE win (k BIGINT, we TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{win}', 'format' = 'csv');
        CREATE TABLE agg (k BIGINT, c BIGINT, s BIGINT, m BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{agg}', 'format' = 'csv');
        INSERT INTO win SELECT id % 5000, window_end, COUNT(*), SUM(id)
        FROM TUMBLE(src, ts, INTERVAL '10' SECOND) GROUP BY id % 5000, window_start, window_end;
        INSERT INTO agg SELECT id % {GROUPS}, COUNT(*), SUM(id), MAX(id) FROM src GROUP BY id % {GROUPS};",
        win = out.join("win").display(),
        agg = out.join("agg").display(),
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

/// The windows of an undisturbed `weir run` with the default budget (no
/// spilling), checked by hand to count every row once.
fn undisturbed_windows(dir: &Path) -> BTreeMap<String, usize> {
    let script_path = dir.join("undisturbed.sql");
    std::fs::write(&script_path, script(dir, 10_000_000)).unwrap();
    let output = super::harness::weir()
        .args(["run", script_path.to_str().unwrap(), "-p", "3"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let win = committed(&dir.join("win"));
    let column_sum = |i: usize| -> u64 {
        win.keys()
            .map(|r| r.split(',').nth(i).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(column_sum(2), ROWS);
    assert_eq!(column_sum(3), ROWS * (ROWS + 1) / 2);
    assert_eq!(committed(&dir.join("agg")), expected_aggregate());
    win
}

/// Waits for the jobs to finish and compares their committed output.
async fn check_outputs(
    cluster: &TestCluster,
    jobs: &[String],
    out: &Path,
    windows: &BTreeMap<String, usize>,
) {
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
    assert!(&got == windows, "windows: {}", difference(windows, &got));
    let expected = expected_aggregate();
    let got = committed(&out.join("agg"));
    assert!(
        got == expected,
        "aggregate: {}",
        difference(&expected, &got)
    );
    // The state really went through runs, and restores really copied them.
    assert!(
        cluster.logs_contain("spilling runs to RocksDB"),
        "nothing spilled"
    );
    assert!(
        cluster.logs_contain("restored spilled state runs"),
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
    let windows = undisturbed_windows(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let jobs = submit_script(&cluster, &script(out.path(), 15_000), 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    check_outputs(&cluster, &jobs, out.path(), &windows).await;
}

/// Spilled runs move by key group too: 2 → 3 → 1 subtasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_state_rescales_two_to_three_to_one() {
    let expected_dir = tempfile::tempdir().unwrap();
    let windows = undisturbed_windows(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_common_env(3, 4, &TINY_BUDGET).await;
    let script = script_with(out.path(), 15_000, ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0, 0], 2).await;
    for parallelism in [3, 1] {
        for job in &jobs {
            client.rescale(job, parallelism).await.unwrap();
        }
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 2).await;
    }
    check_outputs(&cluster, &jobs, out.path(), &windows).await;
}
