//! Window Top-N under faults and rescaling, with real processes: the best
//! rows of each tumbling window and key, over a checkpointed generator,
//! written to a filesystem table while workers are SIGKILLed or the job is
//! rescaled. The committed rows must be exactly the expected ones: a window
//! lost, emitted twice after a replay, or ranked from partial state shows
//! as a difference. (`spill.rs` runs the same query past the memory budget.)

use std::collections::BTreeMap;
use std::time::Duration;

use weir_proto as pb;

use super::fault::{
    checkpointed_source, committed, difference, in_progress_files, kill_randomly, submit_script,
    wait_for_checkpoints,
};
use super::harness::{TestCluster, wait_for_end};
use super::late_rows::timestamp;

/// A window Top-N over ids `1..=rows`, each at event time `id` ms: per
/// tumbling window of `window_ms` (whole seconds) and key `id % keys`, the `top` best rows
/// by a scrambled value, ties broken by id.
#[derive(Debug, Clone, Copy)]
pub struct TopQuery {
    pub rows: u64,
    pub keys: u64,
    pub window_ms: u64,
    pub top: usize,
}

/// The ranking value: scrambled.
fn value(id: u64) -> u64 {
    (id * 7919) % 100_003
}

impl TopQuery {
    /// The job: the generator (`source_options` added to its options) at
    /// `rows_per_second`, and the query into the table `top` under `out`.
    pub fn script(
        &self,
        out: &std::path::Path,
        rows_per_second: u64,
        source_options: &str,
    ) -> String {
        let TopQuery {
            rows,
            keys,
            window_ms,
            top,
        } = *self;
        format!(
            "{source}
            CREATE TABLE top (we TIMESTAMP(3), k BIGINT, id BIGINT, rn BIGINT)
            WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv');
            INSERT INTO top SELECT window_end, k, id, rn FROM (
              SELECT window_end, k, id,
                     ROW_NUMBER() OVER (PARTITION BY window_start, window_end, k ORDER BY v DESC, id) AS rn
              FROM (SELECT *, id % {keys} AS k, (id * 7919) % 100003 AS v
                    FROM TUMBLE(src, ts, INTERVAL '{seconds}' SECOND)))
            WHERE rn <= {top};",
            seconds = window_ms / 1_000,
            source = checkpointed_source(rows, rows_per_second, source_options),
            path = out.join("top").display(),
        )
    }

    /// The top rows of every window and key, as CSV lines.
    pub fn expected(&self) -> BTreeMap<String, usize> {
        let mut groups: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
        for id in 1..=self.rows {
            let end = (id / self.window_ms + 1) * self.window_ms;
            groups.entry((end, id % self.keys)).or_default().push(id);
        }
        let mut rows = BTreeMap::new();
        for ((end, k), mut ids) in groups {
            ids.sort_by_key(|&id| (std::cmp::Reverse(value(id)), id));
            for (rank, id) in ids.into_iter().take(self.top).enumerate() {
                let row = format!("{},{k},{id},{}", timestamp(end), rank + 1);
                *rows.entry(row).or_default() += 1;
            }
        }
        rows
    }

    /// Waits for `job` to finish and checks that the table holds exactly
    /// the expected rows, with nothing left in progress.
    pub async fn check(&self, cluster: &TestCluster, job: &str, out: &std::path::Path) {
        let client = cluster.client().await;
        let summary = wait_for_end(&client, job, Duration::from_secs(150)).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "{}\n{}",
            summary.failure,
            cluster.logs()
        );
        let dir = out.join("top");
        let got = committed(&dir);
        let expected = self.expected();
        assert!(got == expected, "{}", difference(&expected, &got));
        let leftovers = in_progress_files(&dir);
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// The three best rows of each one-second window and of five keys.
const QUERY: TopQuery = TopQuery {
    rows: 80_000,
    keys: 5,
    window_ms: 1_000,
    top: 3,
};

/// Workers are SIGKILLed while the job ranks windows: the table ends
/// exactly as expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_top_n_survives_worker_kills_exactly_once() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    // Parallelism 3: a slice on each worker, so every kill hits the job.
    let script = QUERY.script(out.path(), 8_000, ", 'scan.parallelism' = '1'");
    let jobs = submit_script(&cluster, &script, 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0, 0], 1).await;
    let landed = kill_randomly(&mut cluster, &jobs, 2).await;
    assert!(landed >= 1, "no kill landed");
    QUERY.check(&cluster, &jobs[0], out.path()).await;
    let client = cluster.client().await;
    let restarts = client
        .job(&jobs[0])
        .await
        .unwrap()
        .summary
        .unwrap()
        .restarts;
    assert!(restarts >= 1, "the job never restarted");
}

/// Rescaling a running job 2 → 3 → 1: each partition's open windows move
/// by key group to their new subtask and fire there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_top_n_rescales_two_to_three_to_one() {
    let query = TopQuery {
        rows: 200_000,
        keys: 50,
        ..QUERY
    };
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, 4).await;
    let script = query.script(out.path(), 12_000, ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0], 2).await;
    for parallelism in [3, 1] {
        client.rescale(&jobs[0], parallelism).await.unwrap();
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 2).await;
        let detail = client.job(&jobs[0]).await.unwrap();
        let top_n = detail
            .subtasks
            .iter()
            .filter(|t| t.vertex_name.contains("WindowTopN"))
            .map(|t| t.task.clone().unwrap().subtask)
            .max();
        assert_eq!(
            top_n.map(|max| max + 1),
            Some(parallelism),
            "the window Top-N runs at the old parallelism: {:?}",
            detail.subtasks
        );
    }
    query.check(&cluster, &jobs[0], out.path()).await;
}
