//! The coordinator's Prometheus metrics: workers and slots, jobs by state,
//! and every job's and subtask's counters, as of the last heartbeats.

use std::collections::BTreeMap;

use weir_proto as pb;

use super::Coordinator;
use super::checkpoints::JobCheckpoints;
use crate::cluster::client;

impl Coordinator {
    /// The cluster's state in the Prometheus text format: workers and
    /// slots, jobs by state, and every job's and subtask's row counters.
    pub fn prometheus(&self) -> String {
        use crate::cluster::metrics_endpoint::{family, label};
        let state = self.state();
        let mut out = String::new();
        let workers = || state.workers.iter();
        family(
            &mut out,
            "weir_workers",
            "gauge",
            "Registered workers.",
            [(String::new(), state.workers.len() as u64)],
        );
        family(
            &mut out,
            "weir_worker_lost_total",
            "counter",
            "Workers lost (session broken or heartbeats missed).",
            [(
                String::new(),
                self.losses.load(std::sync::atomic::Ordering::Relaxed),
            )],
        );
        family(
            &mut out,
            "weir_worker_slots",
            "gauge",
            "Slots a worker offers.",
            workers().map(|(id, w)| (format!("worker=\"{}\"", label(id)), u64::from(w.slots))),
        );
        family(
            &mut out,
            "weir_worker_free_slots",
            "gauge",
            "Slots a worker has free.",
            workers().map(|(id, w)| (format!("worker=\"{}\"", label(id)), u64::from(w.free_slots))),
        );
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for job in state.jobs.values() {
            *by_state.entry(client::state_name(job.state)).or_default() += 1;
        }
        family(
            &mut out,
            "weir_jobs",
            "gauge",
            "Jobs by state.",
            by_state
                .into_iter()
                .map(|(s, n)| (format!("state=\"{s}\""), n)),
        );
        let jobs: Vec<(String, pb::JobSummary)> = state
            .jobs
            .values()
            .map(|j| {
                (
                    format!("job=\"{}\",name=\"{}\"", label(&j.id), label(&j.spec.name)),
                    j.summary(),
                )
            })
            .collect();
        for (name, help, field) in [
            (
                "weir_job_records_read_total",
                "Rows read by a job's sources.",
                (|s: &pb::JobSummary| s.records_read) as fn(&pb::JobSummary) -> u64,
            ),
            (
                "weir_job_records_written_total",
                "Rows written by a job's sinks.",
                |s| s.records_written,
            ),
            (
                "weir_job_late_records_dropped_total",
                "Rows a job dropped as late.",
                |s| s.late_records_dropped,
            ),
            (
                "weir_job_bad_records_total",
                "Records a job's sources dropped or dead-lettered because they did not decode.",
                |s| s.bad_records,
            ),
            (
                "weir_job_state_spilled_bytes_total",
                "Bytes of keyed state a job's operators spilled to RocksDB past their memory budget.",
                |s| s.state_spilled_bytes,
            ),
            (
                "weir_job_unmatched_deletes_total",
                "Deletions and retractions of rows a job's operators did not hold, dropped.",
                |s| s.unmatched_deletes,
            ),
        ] {
            family(
                &mut out,
                name,
                "counter",
                help,
                jobs.iter().map(|(l, s)| (l.clone(), field(s))),
            );
        }
        let checkpointed: Vec<(String, &JobCheckpoints, usize)> = state
            .jobs
            .values()
            .filter_map(|j| {
                let labels = format!("job=\"{}\",name=\"{}\"", label(&j.id), label(&j.spec.name));
                j.checkpoints
                    .as_ref()
                    .map(|c| (labels, c, j.restarts.len()))
            })
            .collect();
        for (name, kind, help, field) in [
            (
                "weir_job_checkpoints_completed_total",
                "counter",
                "Checkpoints a job completed.",
                (|c: &JobCheckpoints, _| c.completed_total) as fn(&JobCheckpoints, usize) -> u64,
            ),
            (
                "weir_job_checkpoints_failed_total",
                "counter",
                "Checkpoints of a job that failed or were declined.",
                |c, _| c.failed_total,
            ),
            (
                "weir_job_last_checkpoint_duration_milliseconds",
                "gauge",
                "How long the newest completed checkpoint took, trigger to manifest.",
                |c, _| {
                    c.history
                        .iter()
                        .rev()
                        .find(|r| r.status == "COMPLETED")
                        .map_or(0, |r| r.duration_ms)
                },
            ),
            (
                "weir_job_last_checkpoint_size_bytes",
                "gauge",
                "State size of the newest completed checkpoint.",
                |c, _| {
                    c.history
                        .iter()
                        .rev()
                        .find(|r| r.status == "COMPLETED")
                        .map_or(0, |r| r.state_bytes)
                },
            ),
            (
                "weir_job_restarts_total",
                "counter",
                "Times a job restarted after a failure.",
                |_, restarts| restarts as u64,
            ),
        ] {
            family(
                &mut out,
                name,
                kind,
                help,
                checkpointed
                    .iter()
                    .map(|(l, c, r)| (l.clone(), field(c, *r))),
            );
        }
        let subtasks: Vec<(String, u64, u64)> = state
            .jobs
            .values()
            .flat_map(|j| {
                j.subtasks.iter().map(move |(&(v, s), t)| {
                    (
                        format!(
                            "job=\"{}\",vertex=\"{v}\",subtask=\"{s}\",worker=\"{}\"",
                            label(&j.id),
                            label(&t.worker_id)
                        ),
                        t.records_in,
                        t.records_out,
                    )
                })
            })
            .collect();
        family(
            &mut out,
            "weir_subtask_records_in_total",
            "counter",
            "Rows into a subtask's operator chain.",
            subtasks.iter().map(|(l, i, _)| (l.clone(), *i)),
        );
        family(
            &mut out,
            "weir_subtask_records_out_total",
            "counter",
            "Rows out of a subtask's operator chain.",
            subtasks.iter().map(|(l, _, o)| (l.clone(), *o)),
        );
        out
    }
}
