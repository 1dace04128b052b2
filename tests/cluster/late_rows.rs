//! Late rows under faults, with real processes: a window job whose source
//! sends every hundredth row (past the first 10 000) five seconds behind the
//! others writes its windows to one filesystem table and the rows it
//! refuses as late to another, while workers are SIGKILLed. Both tables
//! must hold exactly the expected rows: a late row lost, or written twice
//! by a replay, shows as a difference. (Late rows carry the columns the
//! window reads: `MAX(ts)` makes it read the event time.)

use std::collections::BTreeMap;
use std::time::Duration;

use weir_proto as pb;

use super::fault::{
    committed, difference, in_progress_files, kill_randomly, submit_script, wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};

/// Rows of the generated input: ids 1..=ROWS.
const ROWS: u64 = 120_000;

/// A row's event time in ms: its id, or five seconds earlier for the late ones.
fn event_time(id: u64) -> u64 {
    if is_late(id) { id - 5_000 } else { id }
}

/// Every late row is far enough behind that its window has fired: the
/// watermark is the newest time less one second, and batches hold 500 rows.
fn is_late(id: u64) -> bool {
    id.is_multiple_of(100) && id > 10_000
}

/// Timestamps as the CSV sink writes them (ms since the epoch, UTC).
pub(super) fn timestamp(ms: u64) -> String {
    format!(
        "1970-01-01 00:{:02}:{:02}.{:03}",
        ms / 60_000,
        ms / 1_000 % 60,
        ms % 1_000
    )
    .trim_end_matches(".000")
    .to_string()
}

fn script(out: &std::path::Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE src (id BIGINT,
          ts AS TO_TIMESTAMP_LTZ(CASE WHEN id % 100 = 0 AND id > 10000 THEN id - 5000 ELSE id END, 3),
          WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '8000',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
              'scan.batch-size' = '500', 'scan.parallelism' = '1');
        CREATE TABLE win (we TIMESTAMP(3), c BIGINT, s BIGINT, m TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{win}', 'format' = 'csv');
        CREATE TABLE late (id BIGINT, ts TIMESTAMP(3), window_end TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{late}', 'format' = 'csv');
        SET 'table.exec.late-records.sink' = 'late';
        INSERT INTO win SELECT window_end, COUNT(*), SUM(id), MAX(ts)
        FROM TUMBLE(src, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end;",
        win = out.join("win").display(),
        late = out.join("late").display(),
    )
}

/// The windows (without their late rows) and the late rows, as CSV lines.
fn expected() -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut windows: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let mut late = BTreeMap::new();
    for id in 1..=ROWS {
        let ts = event_time(id);
        let end = (ts / 1_000 + 1) * 1_000;
        if is_late(id) {
            let row = format!("{id},{},{}", timestamp(ts), timestamp(end));
            *late.entry(row).or_default() += 1;
        } else {
            let w = windows.entry(end).or_default();
            *w = (w.0 + 1, w.1 + id, w.2.max(ts));
        }
    }
    let windows = windows
        .into_iter()
        .map(|(end, (c, s, m))| (format!("{},{c},{s},{}", timestamp(end), timestamp(m)), 1))
        .collect();
    (windows, late)
}

/// Workers are SIGKILLed while the job routes late rows: both tables end
/// exactly as expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_survive_worker_kills_exactly_once() {
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
    let (windows, late) = expected();
    for (table, expected) in [("win", windows), ("late", late)] {
        let got = committed(&out.path().join(table));
        assert!(got == expected, "{table}: {}", difference(&expected, &got));
        let leftovers = in_progress_files(&out.path().join(table));
        assert!(leftovers.is_empty(), "{table}: {leftovers:?}");
    }
    assert!(
        client
            .job(&jobs[0])
            .await
            .unwrap()
            .summary
            .unwrap()
            .restarts
            >= 1,
        "the job never restarted"
    );
}
