//! Window Top-N under faults, with real processes: the three best rows of
//! each one-second window and key, over a checkpointed generator, written
//! to a filesystem table while workers are SIGKILLed. The committed rows
//! must be exactly the expected ones: a window lost, emitted twice after a
//! replay, or ranked from partial state shows as a difference.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_proto as pb;

use super::fault::{
    committed, difference, in_progress_files, kill_randomly, submit_script, wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};
use super::late_rows::timestamp;

/// Rows of the generated input: ids 1..=ROWS, each at event time `id` ms.
const ROWS: u64 = 80_000;
/// Partition keys: `id % KEYS`.
const KEYS: u64 = 5;
/// Rows kept per window and key.
const TOP: usize = 3;

/// The ranking value: scrambled, ties broken by id.
fn value(id: u64) -> u64 {
    (id * 7919) % 100_003
}

fn script(out: &std::path::Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE src (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3),
          WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '8000',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
              'scan.batch-size' = '500', 'scan.parallelism' = '1');
        CREATE TABLE top (we TIMESTAMP(3), k BIGINT, id BIGINT, rn BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{top}', 'format' = 'csv');
        INSERT INTO top SELECT window_end, k, id, rn FROM (
          SELECT window_end, k, id,
                 ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC, id) AS rn
          FROM (SELECT *, id % {KEYS} AS k, (id * 7919) % 100003 AS v
                FROM TUMBLE(src, ts, INTERVAL '1' SECOND)))
        WHERE rn <= {TOP};",
        top = out.join("top").display(),
    )
}

/// The top rows of every window and key, as CSV lines.
fn expected() -> BTreeMap<String, usize> {
    let mut groups: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for id in 1..=ROWS {
        let end = (id / 1_000 + 1) * 1_000;
        groups.entry((end, id % KEYS)).or_default().push(id);
    }
    let mut rows = BTreeMap::new();
    for ((end, k), mut ids) in groups {
        ids.sort_by_key(|&id| (std::cmp::Reverse(value(id)), id));
        for (rank, id) in ids.into_iter().take(TOP).enumerate() {
            let row = format!("{},{k},{id},{}", timestamp(end), rank + 1);
            *rows.entry(row).or_default() += 1;
        }
    }
    rows
}

/// Workers are SIGKILLed while the job ranks windows: the table ends
/// exactly as expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_top_n_survives_worker_kills_exactly_once() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    // Parallelism 3: a slice on each worker, so every kill hits the job.
    let jobs = submit_script(&cluster, &script(out.path()), 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 1).await;
    let landed = kill_randomly(&mut cluster, &jobs, 2).await;
    assert!(landed >= 1, "no kill landed");
    let client = cluster.client().await;
    let summary = wait_for_end(&client, &jobs[0], Duration::from_secs(150)).await;
    assert_eq!(
        summary.state(),
        pb::JobState::Finished,
        "{}\n{}",
        summary.failure,
        cluster.logs()
    );
    let dir = out.path().join("top");
    let got = committed(&dir);
    let expected = expected();
    assert!(got == expected, "{}", difference(&expected, &got));
    let leftovers = in_progress_files(&dir);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let restarts = client
        .job(&jobs[0])
        .await
        .unwrap()
        .summary
        .unwrap()
        .restarts;
    assert!(restarts >= 1, "the job never restarted");
}
