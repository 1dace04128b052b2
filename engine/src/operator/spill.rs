//! Keyed state larger than memory: an aggregate keeps its state in memory up
//! to a budget, and past it writes the state as *runs* (one per key group)
//! into the job's RocksDB instance and starts afresh. Accumulator state is
//! mergeable, so a run is never read again until its namespace (a window, or
//! the whole stream) is emitted: then the runs of one key group at a time
//! are merged and emitted, so memory holds one key group, not the state.
//!
//! Runs are part of every checkpoint without being rewritten: the local
//! RocksDB snapshot holds them, and only their new SST files are uploaded.
//! Each run carries the epoch it was written in (see
//! [`crate::state::RunKey`]); runs of an emitted namespace are deleted only
//! once no pending local snapshot can still need them.
//!
//! [`StateSpill`] is also the session operator's handle on the store (its
//! fragments, see `session_spill.rs`): ids, the epoch, deferred deletes.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tracing::info;

use super::grouped_state::{AggregateSpecRef, GroupedState};
use super::snapshot::{decode_batches, encode_batch, rows_by_key_group, take_rows};
use super::{Collector, LazyBatches, TaskInfo};
use crate::error::Result;
use crate::message::CheckpointId;
use crate::metrics::TaskMetrics;
use crate::partition::KeyGroup;
use crate::state::{FragmentId, JobStore};

/// Rows gathered before a spilled namespace's key groups go out as one batch.
const EMIT_BATCH_ROWS: usize = 8192;

/// One operator subtask's spill space in the job's RocksDB instance.
#[derive(Debug, Clone)]
pub struct StateSpill {
    store: JobStore,
    node: u32,
    writer: u32,
    key_groups: Range<KeyGroup>,
    max_key_groups: u32,
    budget: usize,
    /// The last checkpoint barrier passed.
    epoch: CheckpointId,
    /// The last checkpoint completed.
    completed: CheckpointId,
    seq: u32,
    /// What was emitted or merged back but a pending snapshot may still
    /// need, with the epoch it happened in.
    deferred: Vec<(CheckpointId, Deferred)>,
    /// Keys of entries merged back into memory and waiting in `deferred`:
    /// readers skip them.
    consumed: HashSet<Vec<u8>>,
}

/// A deletion waiting for the checkpoint that may need the data to resolve.
#[derive(Debug, Clone)]
enum Deferred {
    /// The runs of an emitted namespace.
    Namespace(u64),
    /// Entries merged back into memory.
    Keys(Vec<Vec<u8>>),
    /// Every session fragment and timer of the subtask.
    SessionState,
}

impl StateSpill {
    /// Spill space for the subtask `task` of operator `node`, spilling past
    /// `budget` bytes of in-memory state.
    pub fn new(store: JobStore, node: usize, task: &TaskInfo, budget: usize) -> Self {
        Self {
            store,
            node: node as u32,
            writer: task.subtask as u32,
            key_groups: task.key_groups(),
            max_key_groups: task.max_key_groups,
            budget,
            epoch: 0,
            completed: 0,
            seq: 0,
            deferred: Vec::new(),
            consumed: HashSet::new(),
        }
    }

    /// For a subtask restored from checkpoint `restored_from`: its epochs
    /// start there, after those of every entry the restore copied.
    pub fn restored_from(mut self, restored_from: CheckpointId) -> Self {
        self.epoch = restored_from;
        self
    }

    /// The job's store.
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    /// The operator's logical node.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> &Range<KeyGroup> {
        &self.key_groups
    }

    /// The job's number of key groups.
    pub fn max_key_groups(&self) -> u32 {
        self.max_key_groups
    }

    /// A new, unique id for entries written now.
    pub fn next_fragment_id(&mut self) -> FragmentId {
        let id = FragmentId {
            epoch: self.epoch,
            writer: self.writer,
            seq: self.seq,
        };
        self.seq = self.seq.wrapping_add(1);
        id
    }

    /// Whether the entry under `key` was merged back into memory already.
    pub fn is_consumed(&self, key: &[u8]) -> bool {
        self.consumed.contains(key)
    }

    /// Entries merged back into memory: deleted now, or (skipped by
    /// readers until then) once no pending snapshot can need them.
    pub fn consume(&mut self, keys: Vec<Vec<u8>>) -> Result<()> {
        if self.epoch <= self.completed {
            return self.store.delete_keys(keys);
        }
        self.consumed.extend(keys.iter().cloned());
        self.deferred.push((self.epoch, Deferred::Keys(keys)));
        Ok(())
    }

    /// Every session fragment and timer was merged back (the end of
    /// input): deleted as [`StateSpill::consume`] deletes, without keeping
    /// their keys, since nothing reads them again.
    pub fn consume_session_state(&mut self) -> Result<()> {
        if self.epoch <= self.completed {
            return self.store.delete_session_state(self.node, &self.key_groups);
        }
        self.deferred.push((self.epoch, Deferred::SessionState));
        Ok(())
    }

    /// Logs the first spill of the subtask.
    pub(crate) fn note_first_spill(&self) {
        if self.seq == 0 {
            info!(
                node = self.node,
                subtask = self.writer,
                budget = self.budget,
                "keyed state passed its memory budget: spilling runs to RocksDB"
            );
        }
    }

    /// In-memory state, in bytes, past which an operator spills.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The barrier of checkpoint `id` passed the operator: later runs belong
    /// to the next checkpoint. The coordinator triggers a checkpoint only
    /// once the one before it completed or was given up, so no snapshot of
    /// an earlier checkpoint can still need the runs of namespaces emitted
    /// before this barrier: they go now, before this checkpoint's snapshot.
    pub fn passed_barrier(&mut self, id: CheckpointId) -> Result<()> {
        self.delete_deferred(|epoch| epoch < id)?;
        self.epoch = self.epoch.max(id);
        Ok(())
    }

    /// Checkpoint `id` completed everywhere: the runs of namespaces emitted
    /// up to its barrier are no longer needed.
    pub fn checkpoint_completed(&mut self, id: CheckpointId) -> Result<()> {
        self.completed = self.completed.max(id);
        let completed = self.completed;
        self.delete_deferred(|epoch| epoch <= completed)
    }

    fn delete_deferred(&mut self, due: impl Fn(CheckpointId) -> bool) -> Result<()> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|&(epoch, _)| due(epoch));
        self.deferred = later;
        for (_, deferred) in now {
            match deferred {
                Deferred::Namespace(namespace) => {
                    self.store
                        .delete_runs(self.node, namespace, &self.key_groups)?;
                }
                Deferred::Keys(keys) => {
                    for key in &keys {
                        self.consumed.remove(key);
                    }
                    self.store.delete_keys(keys)?;
                }
                Deferred::SessionState => {
                    self.store
                        .delete_session_state(self.node, &self.key_groups)?;
                }
            }
        }
        Ok(())
    }

    /// Namespaces holding runs of this subtask's key groups (after a restore).
    pub fn namespaces(&self) -> Result<Vec<u64>> {
        self.store.run_namespaces(self.node, &self.key_groups)
    }

    /// Writes `state` as runs of `namespace`, split by the key groups of
    /// `key_columns` (the group columns the job's shuffle hashes). Returns
    /// the bytes written.
    pub fn spill(
        &mut self,
        namespace: u64,
        state: GroupedState,
        key_columns: &[usize],
        metrics: &TaskMetrics,
    ) -> Result<usize> {
        let (columns, rows) = state.into_columns()?;
        let by_key_group = rows_by_key_group(&columns, key_columns, rows, self.max_key_groups)?;
        if let Some(kg) = by_key_group.keys().find(|kg| !self.key_groups.contains(kg)) {
            return Err(crate::error::Error::internal(format!(
                "spilled state in key group {kg}, outside this subtask's key groups {:?}",
                self.key_groups
            )));
        }
        self.note_first_spill();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        // One key group at a time: a spill holds the state's columns and one
        // key group's encoding, not every encoding at once. A local snapshot
        // taken mid-spill is harmless: a restore of it leaves this epoch out.
        let mut bytes = 0;
        for (kg, indices) in by_key_group {
            let n = indices.len();
            let run = encode_batch(take_rows(&columns, indices)?, n)?;
            bytes += run.len();
            self.store.put_runs(
                self.node,
                namespace,
                self.epoch,
                self.writer,
                seq,
                [(kg, run)],
            )?;
        }
        metrics.add_spilled(bytes);
        Ok(bytes)
    }

    /// Emits `namespace`: its runs merged with `memory` (the state not
    /// spilled), one key group at a time, in batches of a few thousand rows
    /// that the task pulls one by one (see [`LazyBatches`]). The namespace's
    /// runs are deleted once read, or once no pending snapshot needs them.
    pub fn emit(
        &mut self,
        namespace: u64,
        memory: Option<GroupedState>,
        spec: &AggregateSpecRef,
        key_columns: &[usize],
        metrics: &TaskMetrics,
        out: &mut Collector,
    ) -> Result<()> {
        if let Some(memory) = memory {
            self.spill(namespace, memory, key_columns, metrics)?;
        }
        // Runs may go as soon as they are read unless a snapshot taken
        // after the last barrier may still need them.
        let delete_when_read = self.epoch <= self.completed;
        if !delete_when_read {
            self.deferred
                .push((self.epoch, Deferred::Namespace(namespace)));
        }
        out.collect_lazy(Box::new(SpilledEmission {
            store: self.store.clone(),
            node: self.node,
            namespace,
            key_groups: self.key_groups.clone(),
            next: Some(self.key_groups.start),
            widths: spec.state_widths()?,
            spec: Arc::clone(spec),
            delete_when_read,
        }));
        Ok(())
    }
}

/// The lazy output of [`StateSpill::emit`]: the runs of one namespace,
/// merged and emitted key group by key group.
struct SpilledEmission {
    store: JobStore,
    node: u32,
    namespace: u64,
    key_groups: Range<KeyGroup>,
    /// The next key group to read; `None` once done.
    next: Option<KeyGroup>,
    spec: AggregateSpecRef,
    widths: Vec<usize>,
    delete_when_read: bool,
}

impl LazyBatches for SpilledEmission {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let schema = &self.spec.output_schema;
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut rows = 0;
        while rows < EMIT_BATCH_ROWS {
            let Some(from) = self.next else {
                break;
            };
            let Some((kg, runs)) =
                self.store
                    .next_runs(self.node, self.namespace, from, &self.key_groups)?
            else {
                self.next = None;
                if self.delete_when_read {
                    self.store
                        .delete_runs(self.node, self.namespace, &self.key_groups)?;
                }
                break;
            };
            let mut state = self.spec.new_state()?;
            for bytes in runs {
                for (columns, n) in decode_batches(&bytes)? {
                    state.restore_columns(&columns, n, &self.widths)?;
                }
            }
            let batch = state.emit(schema)?;
            rows += batch.num_rows();
            batches.push(batch);
            self.next = Some(kg + 1);
        }
        Ok(match batches.len() {
            0 => None,
            1 => batches.pop(),
            _ => Some(arrow::compute::concat_batches(schema, &batches)?),
        })
    }
}
