//! Counters kept per subtask, named as a Prometheus user would expect
//! (`weir_records_in_total{operator,subtask}` …), and a registry that
//! snapshots them for progress reports and `EXPLAIN ANALYZE`-style output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one subtask.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    /// Rows received (for a source: rows produced).
    pub records_in: AtomicU64,
    /// Rows sent downstream (for a sink: rows written).
    pub records_out: AtomicU64,
    /// Rows dropped because they arrived after the watermark passed their window.
    pub late_records_dropped: AtomicU64,
    /// Records a source skipped as bad (its connector's bad-record policy).
    pub bad_records: AtomicU64,
    /// Bytes of keyed state written to RocksDB as runs because the
    /// operator's in-memory state passed its budget.
    pub state_spilled_bytes: AtomicU64,
    /// Groups (or keys) whose state was dropped past the state TTL.
    pub state_expired: AtomicU64,
    /// Deletions and retractions of rows an operator does not hold (a
    /// tombstone or a CDC `d` for a key never seen, a `-U`/`-D` of a group
    /// or row not in the state), dropped: by `ChangelogNormalize`, the
    /// updating aggregate or the Top-N.
    pub unmatched_deletes: AtomicU64,
    /// When [`Self::add_unmatched_retractions`] last warned, per operator kind.
    unmatched_warnings: Mutex<BTreeMap<UnmatchedAt, WarningThrottle>>,
}

/// How long a subtask stays quiet after warning about unmatched retractions.
pub const UNMATCHED_WARNING_INTERVAL_MS: i64 = 10_000;

/// The operator that dropped a retraction of something it does not hold,
/// where that may mean a wrong result and deserves a warning.
/// (`ChangelogNormalize` only counts its own: a tombstone or a duplicated
/// delete of a key it does not hold is expected there.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UnmatchedAt {
    /// The updating aggregate: a retraction of a group it does not hold.
    UpdatingAggregate,
    /// The Top-N: a retraction of a row it does not hold.
    TopN,
    /// A join: a retraction of a row its side does not hold.
    Join,
}

impl UnmatchedAt {
    /// What was dropped, for the warning.
    pub fn description(self) -> &'static str {
        match self {
            Self::UpdatingAggregate => {
                "the updating aggregate skipped retractions of groups it does not hold \
                 (expired state, or a changelog source deleting rows it never inserted: \
                 see 'table.exec.source.cdc-events-duplicate')"
            }
            Self::TopN => {
                "the Top-N skipped retractions of rows it does not hold \
                 (expired state, or a changelog source deleting rows it never inserted: \
                 see 'table.exec.source.cdc-events-duplicate')"
            }
            Self::Join => {
                "a join skipped retractions of rows it does not hold \
                 (expired state, or a changelog source deleting rows it never inserted: \
                 see 'table.exec.source.cdc-events-duplicate')"
            }
        }
    }
}

/// Rows dropped since the last warning, and when that was.
#[derive(Debug, Default)]
struct WarningThrottle {
    last_warned_ms: Option<i64>,
    pending: u64,
}

impl TaskMetrics {
    /// Adds to the input counter.
    pub fn add_in(&self, rows: usize) {
        self.records_in.fetch_add(rows as u64, Ordering::Relaxed);
    }
    /// Adds to the output counter.
    pub fn add_out(&self, rows: usize) {
        self.records_out.fetch_add(rows as u64, Ordering::Relaxed);
    }
    /// A point-in-time copy.
    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records_dropped: self.late_records_dropped.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            state_spilled_bytes: self.state_spilled_bytes.load(Ordering::Relaxed),
            state_expired: self.state_expired.load(Ordering::Relaxed),
            unmatched_deletes: self.unmatched_deletes.load(Ordering::Relaxed),
        }
    }
    /// Sets the bad-records counter to a source's own count.
    pub fn set_bad_records(&self, records: u64) {
        self.bad_records.store(records, Ordering::Relaxed);
    }
    /// Adds to the spilled-state counter.
    pub fn add_spilled(&self, bytes: usize) {
        self.state_spilled_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Adds to the expired-state counter.
    pub fn add_state_expired(&self, keys: usize) {
        self.state_expired.fetch_add(keys as u64, Ordering::Relaxed);
    }
    /// Adds to the unmatched-deletes counter.
    pub fn add_unmatched_deletes(&self, rows: usize) {
        self.unmatched_deletes
            .fetch_add(rows as u64, Ordering::Relaxed);
    }
    /// Counts `rows` retractions `at` could not match in
    /// [`Self::unmatched_deletes`]. Returns how many to warn about now:
    /// every one since the last warning, at most once per
    /// [`UNMATCHED_WARNING_INTERVAL_MS`] of `now_ms`, so a stream of them
    /// does not flood the log.
    pub fn add_unmatched_retractions(
        &self,
        at: UnmatchedAt,
        rows: u64,
        now_ms: i64,
    ) -> Option<u64> {
        self.unmatched_deletes.fetch_add(rows, Ordering::Relaxed);
        let mut warnings = self
            .unmatched_warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let throttle = warnings.entry(at).or_default();
        throttle.pending += rows;
        let due = throttle
            .last_warned_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= UNMATCHED_WARNING_INTERVAL_MS);
        if !due || throttle.pending == 0 {
            return None;
        }
        throttle.last_warned_ms = Some(now_ms);
        Some(std::mem::take(&mut throttle.pending))
    }
    /// Adds to the late-rows counter.
    pub fn add_late(&self, rows: usize) {
        self.late_records_dropped
            .fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// A point-in-time copy of one subtask's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskMetricsSnapshot {
    /// See [`TaskMetrics::records_in`].
    pub records_in: u64,
    /// See [`TaskMetrics::records_out`].
    pub records_out: u64,
    /// See [`TaskMetrics::late_records_dropped`].
    pub late_records_dropped: u64,
    /// See [`TaskMetrics::bad_records`].
    pub bad_records: u64,
    /// See [`TaskMetrics::state_spilled_bytes`].
    pub state_spilled_bytes: u64,
    /// See [`TaskMetrics::state_expired`].
    pub state_expired: u64,
    /// See [`TaskMetrics::unmatched_deletes`].
    pub unmatched_deletes: u64,
}

/// Counters by (operator, subtask).
type TaskTable = BTreeMap<(String, usize), Arc<TaskMetrics>>;

/// A named counter series of the Prometheus output: name, help, field.
type Series = (&'static str, &'static str, fn(&TaskMetricsSnapshot) -> u64);

/// Where a job's subtasks register their counters.
#[derive(Debug, Default, Clone)]
pub struct MetricsRegistry {
    tasks: Arc<Mutex<TaskTable>>,
}

impl MetricsRegistry {
    /// Counters for one subtask of one operator (or chain), created on first use.
    pub fn task(&self, operator: &str, subtask: usize) -> Arc<TaskMetrics> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(tasks.entry((operator.to_string(), subtask)).or_default())
    }

    /// Snapshot of every subtask's counters, by (operator, subtask).
    pub fn snapshot(&self) -> BTreeMap<(String, usize), TaskMetricsSnapshot> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .iter()
            .map(|(k, m)| (k.clone(), m.snapshot()))
            .collect()
    }

    /// Sum of a counter over every subtask of operators whose name matches.
    pub fn total(
        &self,
        pick: impl Fn(&str) -> bool,
        field: fn(&TaskMetricsSnapshot) -> u64,
    ) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((op, _), _)| pick(op))
            .map(|(_, m)| field(m))
            .sum()
    }

    /// Rows produced by the job's sources.
    pub fn rows_read(&self) -> u64 {
        self.total(|op| op.contains("Source"), |m| m.records_out)
    }

    /// Rows written by the job's sinks.
    pub fn rows_written(&self) -> u64 {
        self.total(|op| op.ends_with(" Sink"), |m| m.records_out)
    }

    /// Records the job's sources skipped as bad.
    pub fn bad_records(&self) -> u64 {
        self.total(|_| true, |m| m.bad_records)
    }

    /// Deletions and retractions of rows not held, dropped anywhere in the job.
    pub fn unmatched_deletes(&self) -> u64 {
        self.total(|_| true, |m| m.unmatched_deletes)
    }

    /// Rows dropped as late anywhere in the job.
    pub fn late_rows_dropped(&self) -> u64 {
        self.total(|_| true, |m| m.late_records_dropped)
    }

    /// The counters in the Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let snapshot = self.snapshot();
        let mut out = String::new();
        let series: [Series; 7] = [
            (
                "weir_records_in_total",
                "Rows received by a subtask.",
                |m| m.records_in,
            ),
            (
                "weir_records_out_total",
                "Rows emitted by a subtask.",
                |m| m.records_out,
            ),
            (
                "weir_late_records_dropped_total",
                "Rows dropped because they arrived behind the watermark.",
                |m| m.late_records_dropped,
            ),
            (
                "weir_source_bad_records_total",
                "Records a source dropped or dead-lettered because they did not decode.",
                |m| m.bad_records,
            ),
            (
                "weir_state_spilled_bytes_total",
                "Bytes of keyed state an operator wrote to RocksDB past its memory budget.",
                |m| m.state_spilled_bytes,
            ),
            (
                "weir_state_expired_keys_total",
                "Keys whose state an operator dropped because it was idle past table.exec.state.ttl.",
                |m| m.state_expired,
            ),
            (
                "weir_unmatched_deletes_total",
                "Deletions and retractions of rows or groups an operator does not hold (a tombstone or CDC delete of an unknown key, a retraction of state that expired), dropped.",
                |m| m.unmatched_deletes,
            ),
        ];
        for (name, help, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((op, subtask), m) in &snapshot {
                let op = op.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "{name}{{operator=\"{op}\",subtask=\"{subtask}\"}} {}",
                    field(m)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_retractions_are_counted_and_warned_about_at_most_every_interval() {
        let m = TaskMetrics::default();
        let at = UnmatchedAt::UpdatingAggregate;
        assert_eq!(m.add_unmatched_retractions(at, 2, 1_000), Some(2));
        assert_eq!(m.add_unmatched_retractions(at, 3, 1_500), None);
        // The Top-N's warnings are throttled apart from the aggregate's.
        assert_eq!(
            m.add_unmatched_retractions(UnmatchedAt::TopN, 1, 1_600),
            Some(1)
        );
        assert_eq!(m.add_unmatched_retractions(at, 1, 10_999), None);
        // Due again: everything since the last warning.
        assert_eq!(m.add_unmatched_retractions(at, 4, 11_000), Some(8));
        assert_eq!(m.snapshot().unmatched_deletes, 2 + 3 + 1 + 1 + 4);
    }
}
