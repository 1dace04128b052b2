//! A worker's side of checkpointing: it collects the snapshots of a job's
//! local subtasks, writes them into the job's RocksDB instance, takes a
//! local RocksDB checkpoint once every local subtask has reported, uploads
//! what storage lacks, and acknowledges to the coordinator. It also loads a
//! restored job's state from a completed checkpoint.
//!
//! Failpoints (`FAILPOINTS=name=return` in a worker's environment, with
//! the `failpoints` build) abort the process at exact protocol steps (and
//! `worker::before-local-snapshot=sleep(ms)` delays the local snapshot):
//! `worker::after-local-snapshot`, `worker::after-upload` (before the
//! acknowledgement) and `worker::before-commit` (the coordinator declared a
//! checkpoint complete, the sinks have not committed it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};
use weir_engine::operator::OperatorRestore;
use weir_engine::partition::key_group_range;
use weir_engine::state::{
    CheckpointStorage, JobStore, RestoredSnapshot, StateKey, StateWrites, UploadTracker,
    WorkerSnapshot,
};
use weir_engine::{CheckpointEvent, CheckpointSetup, PhysicalGraph, TaskSnapshot};
use weir_proto as pb;

use super::worker::report::Failure;

/// Kills the process at a named failpoint (a crash, as `kill -9` would).
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            warn!(failpoint = $name, "failpoint: aborting the process");
            std::process::abort();
        })
    };
}
pub(super) use crash_point;

/// Everything the checkpoint driver of one job part needs.
pub(super) struct PartCheckpoints {
    pub job_id: String,
    pub attempt: u32,
    pub worker_id: String,
    /// The subtasks deployed here, `(vertex, subtask)`.
    pub local: BTreeSet<(usize, usize)>,
    /// The same subtasks as `(logical node, subtask)` of every chained node.
    pub local_nodes: Vec<(u32, u32)>,
    pub store: JobStore,
    pub storage: CheckpointStorage,
    pub events: mpsc::UnboundedSender<pb::WorkerEvent>,
}

/// A checkpoint's snapshots collected so far from the local subtasks.
#[derive(Default)]
struct PendingPart {
    writes: StateWrites,
    reported: BTreeSet<(usize, usize)>,
    /// Rows read and written when the barrier passed, summed.
    rows_read: u64,
    rows_written: u64,
}

/// Drives the checkpoints of one job part until its tasks end.
pub(super) fn spawn_driver(
    part: PartCheckpoints,
    mut reports: mpsc::UnboundedReceiver<CheckpointEvent>,
) -> JoinHandle<()> {
    let span = info_span!("checkpoints", job = %part.job_id, attempt = part.attempt);
    tokio::spawn(
        async move {
            let mut tracker = UploadTracker::default();
            let mut pending: BTreeMap<u64, PendingPart> = BTreeMap::new();
            while let Some(report) = reports.recv().await {
                match report {
                    CheckpointEvent::SourceExhausted { vertex, subtask } => {
                        send(
                            &part.events,
                            pb::worker_event::Event::SourceExhausted(pb::SourceExhausted {
                                job_id: part.job_id.clone(),
                                attempt: part.attempt,
                                vertex: vertex as u32,
                                subtask: subtask as u32,
                            }),
                        );
                    }
                    CheckpointEvent::Snapshot(snapshot) => {
                        let id = snapshot.checkpoint;
                        let entry = pending.entry(id).or_default();
                        entry.reported.insert((snapshot.vertex, snapshot.subtask));
                        entry.rows_read += snapshot.rows_read;
                        entry.rows_written += snapshot.rows_written;
                        add_writes(&mut entry.writes, snapshot);
                        if entry.reported != part.local {
                            continue;
                        }
                        let Some(collected) = pending.remove(&id) else {
                            continue;
                        };
                        let (rows_read, rows_written) =
                            (collected.rows_read, collected.rows_written);
                        let event = match checkpoint(&part, id, collected.writes, &mut tracker)
                            .await
                        {
                            Ok(ack) => pb::worker_event::Event::CheckpointAck(pb::CheckpointAck {
                                records_read: rows_read,
                                records_written: rows_written,
                                ..ack
                            }),
                            Err(reason) => {
                                warn!(checkpoint = id, %reason, "checkpoint declined");
                                pb::worker_event::Event::CheckpointDeclined(
                                    pb::CheckpointDeclined {
                                        job_id: part.job_id.clone(),
                                        attempt: part.attempt,
                                        checkpoint_id: id,
                                        reason,
                                    },
                                )
                            }
                        };
                        send(&part.events, event);
                    }
                }
            }
        }
        .instrument(span),
    )
}

fn send(events: &mpsc::UnboundedSender<pb::WorkerEvent>, event: pb::worker_event::Event) {
    let _ = events.send(pb::WorkerEvent { event: Some(event) });
}

/// A task's snapshot as RocksDB writes.
fn add_writes(writes: &mut StateWrites, snapshot: TaskSnapshot) {
    for (node, state) in snapshot.operators {
        let node = node as u32;
        for (key_group, value) in state.keyed {
            let key = StateKey::Keyed { node, key_group };
            match value {
                Some(value) => writes.put(key, value),
                None => writes.delete(key),
            }
        }
        let key = StateKey::Operator {
            node,
            subtask: snapshot.subtask as u32,
        };
        match state.operator {
            Some(value) => writes.put(key, value),
            None => writes.delete(key),
        }
    }
}

/// Writes, snapshots and uploads this worker's part of checkpoint `id`.
async fn checkpoint(
    part: &PartCheckpoints,
    id: u64,
    writes: StateWrites,
    tracker: &mut UploadTracker,
) -> Result<pb::CheckpointAck, String> {
    let started = Instant::now();
    let store = part.store.clone();
    let local = tokio::task::spawn_blocking(move || {
        // `sleep(ms)` here widens the gap between the barrier and the local
        // snapshot, in which operators go on writing state.
        fail::fail_point!("worker::before-local-snapshot");
        store.write(writes)?;
        store.snapshot(id)
    })
    .await
    .map_err(|e| format!("local snapshot task failed: {e}"))?
    .map_err(|e| format!("local snapshot failed: {e}"))?;
    crash_point!("worker::after-local-snapshot");
    let uploaded = part.storage.upload(&local, &part.worker_id, tracker).await;
    if let Err(e) = local.remove() {
        warn!(checkpoint = id, error = %e, "could not remove the local snapshot");
    }
    let mut snapshot = uploaded.map_err(|e| format!("upload failed: {e}"))?;
    crash_point!("worker::after-upload");
    snapshot.subtasks = part.local_nodes.clone();
    let json = serde_json::to_string(&snapshot)
        .map_err(|e| format!("cannot describe the snapshot: {e}"))?;
    info!(
        checkpoint = id,
        files = snapshot.files.len(),
        uploaded_bytes = snapshot.uploaded_bytes,
        total_bytes = snapshot.total_bytes,
        ms = started.elapsed().as_millis() as u64,
        "checkpoint part stored"
    );
    Ok(pb::CheckpointAck {
        job_id: part.job_id.clone(),
        attempt: part.attempt,
        checkpoint_id: id,
        snapshot_json: json,
        state_bytes: snapshot.total_bytes,
        uploaded_bytes: snapshot.uploaded_bytes,
        ..Default::default()
    })
}

/// The state of this worker's subtasks in checkpoint `checkpoint_id`:
/// keyed state by the key groups each subtask owns now, operator state of
/// the old subtasks assigned to it (the same index at the same parallelism).
pub(super) async fn load_restore(
    storage: &CheckpointStorage,
    checkpoint_id: u64,
    graph: &PhysicalGraph,
    local: &BTreeSet<(usize, usize)>,
    scratch: &Path,
    store: &JobStore,
) -> Result<CheckpointSetup, Failure> {
    let corrupt = |e: weir_engine::Error| {
        Failure::corrupt_checkpoint(
            checkpoint_id,
            format!("cannot restore checkpoint {checkpoint_id}: {e}"),
        )
    };
    let manifest = storage.load(checkpoint_id).await.map_err(corrupt)?;
    let vertices = graph.vertices();
    let node_count = graph.logical().nodes().len();
    if manifest.node_parallelism.len() != node_count
        || manifest.max_key_groups != graph.max_key_groups()
    {
        return Err(Failure::other(format!(
            "checkpoint {checkpoint_id} was taken from a different plan ({} operators, {} key \
             groups; this plan has {node_count} and {})",
            manifest.node_parallelism.len(),
            manifest.max_key_groups,
            graph.max_key_groups()
        )));
    }
    let max = manifest.max_key_groups;
    // Per local (node, subtask): the key groups it owns now and the old
    // subtasks whose operator state it takes over.
    struct Wanted {
        node: usize,
        subtask: usize,
        range: std::ops::Range<u32>,
        old_keyed: Vec<u32>,
        old_operator: Vec<u32>,
    }
    let mut wanted: Vec<Wanted> = Vec::new();
    for &(v, s) in local {
        let new_p = vertices[v].parallelism;
        let range = key_group_range(s, max, new_p);
        for &node in &vertices[v].nodes {
            let old_p = manifest.node_parallelism[node] as usize;
            let old_keyed = (0..old_p)
                .filter(|&o| {
                    let old = key_group_range(o, max, old_p);
                    old.start < range.end && range.start < old.end
                })
                .map(|o| o as u32)
                .collect();
            let old_operator = if old_p == new_p {
                vec![s as u32]
            } else {
                (0..old_p)
                    .filter(|o| o % new_p == s)
                    .map(|o| o as u32)
                    .collect()
            };
            wanted.push(Wanted {
                node,
                subtask: s,
                range: range.clone(),
                old_keyed,
                old_operator,
            });
        }
    }
    let holds = |ws: &WorkerSnapshot, node: usize, old: &[u32]| {
        ws.subtasks
            .iter()
            .any(|&(n, o)| n as usize == node && old.contains(&o))
    };
    let needed: BTreeSet<usize> = manifest
        .workers
        .iter()
        .enumerate()
        .filter(|(_, ws)| {
            wanted
                .iter()
                .any(|w| holds(ws, w.node, &w.old_keyed) || holds(ws, w.node, &w.old_operator))
        })
        .map(|(i, _)| i)
        .collect();
    let mut restored: Vec<(RestoredSnapshot, &WorkerSnapshot)> = Vec::new();
    for i in needed {
        let ws = &manifest.workers[i];
        let dir: PathBuf = scratch.join(format!("chk-{checkpoint_id}-{i}"));
        let snapshot = storage.download(ws, &dir).await.map_err(corrupt)?;
        restored.push((snapshot, ws));
    }
    let read = corrupt;
    let mut setup = CheckpointSetup {
        restored_from: checkpoint_id,
        ..CheckpointSetup::default()
    };
    // Spilled runs, session fragments and evicted keys (of every operator
    // that evicts: aggregate groups, last rows, Top-N partitions) go
    // straight into the new attempt's store, streamed.
    let mut run_seq = 0;
    let mut run_bytes = 0;
    for w in wanted {
        let mut restore = OperatorRestore::default();
        for (snapshot, ws) in &restored {
            if holds(ws, w.node, &w.old_keyed) {
                restore.keyed.extend(
                    snapshot
                        .keyed(w.node as u32, w.range.clone())
                        .map_err(read)?,
                );
                run_bytes += snapshot
                    .copy_runs(store, w.node as u32, &w.range, &mut run_seq)
                    .map_err(read)?;
                run_bytes += snapshot
                    .copy_session_state(store, w.node as u32, &w.range)
                    .map_err(read)?;
                run_bytes += snapshot
                    .copy_evicted_groups(store, w.node as u32, &w.range)
                    .map_err(read)?;
            }
            for &old in &w.old_operator {
                if !ws.subtasks.contains(&(w.node as u32, old)) {
                    continue;
                }
                let key = StateKey::Operator {
                    node: w.node as u32,
                    subtask: old,
                };
                if let Some(value) = snapshot.get(&key).map_err(read)? {
                    restore.operator.push((old, value));
                }
            }
        }
        restore.keyed.sort_by_key(|(kg, _)| *kg);
        restore.operator.sort_by_key(|(old, _)| *old);
        setup.restore.insert((w.node, w.subtask), restore);
    }
    if run_bytes > 0 {
        info!(
            checkpoint = checkpoint_id,
            runs = run_seq,
            bytes = run_bytes,
            "restored spilled state"
        );
    }
    drop(restored);
    if let Err(e) = std::fs::remove_dir_all(scratch)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %scratch.display(), error = %e, "could not remove restore scratch files");
    }
    Ok(setup)
}
