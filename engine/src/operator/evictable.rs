//! Per-key state in a map, larger than memory, for the operators that keep
//! a value per key (ChangelogNormalize's last rows, Top-N partitions), as
//! the updating aggregate keeps its groups (see `updating_aggregate/evict.rs`,
//! whose store layer, [`crate::state::EvictedGroup`], this shares):
//!
//! - Flink's state TTL (`table.exec.state.ttl`): when each key was last
//!   touched, in processing time, and a sweep, at most once a second, that
//!   drops the keys idle for longer than the TTL without retracting
//!   anything, counted in `weir_state_expired_keys_total`.
//! - Past the operator's memory budget the least recently touched keys are
//!   *evicted* into the job's RocksDB instance until a quarter of the budget
//!   is free, one entry per key (`[last touched][encoded value]`) keyed by
//!   key group and key, and counted in `state_spilled_bytes`.
//! - Before a batch is applied, the evicted keys among its keys are loaded
//!   back (one key group at a time, one seek per distinct key) and their
//!   entries consumed (deleted once no pending snapshot needs them, see
//!   [`StateSpill::consume`]): a key is in memory or on disk, never both.
//!   One past the TTL is dropped when loaded; a sweep of the evicted keys
//!   (at most once per TTL and per [`SWEEP_MIN_INTERVAL_MS`]) drops those
//!   never touched again.
//!
//! A checkpoint writes the keys in memory as keyed state; the evicted ones
//! are in the RocksDB snapshot, and a restore copies the entries of the key
//! groups a subtask now owns into its store (by node and key group, as for
//! the aggregate's groups), where [`EvictableKeys::restored`] finds them.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::ArrayRef;
use arrow::row::{RowConverter, Rows};

use super::OperatorContext;
use super::session_spill::key_groups_of;
use super::snapshot::take_rows;
use crate::error::{Error, Result};
use crate::state::EvictedGroup;

use super::StateSpill;

/// The shortest time between two sweeps of the evicted keys for ones past
/// the state TTL: a sweep reads every evicted key.
pub(super) const SWEEP_MIN_INTERVAL_MS: i64 = 10_000;

/// Keys written per RocksDB write batch.
const WRITE_CHUNK: usize = 4096;

/// Bytes a key costs in memory besides its key and value bytes: the map
/// entries (value and bookkeeping) and their allocations.
const KEY_OVERHEAD: usize = 96;

/// A value kept per key that can be evicted: encoded, decoded and sized.
pub(super) trait EvictableValue: Sized {
    /// Appends the value's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// The value `bytes` (from [`EvictableValue::encode`]) encode.
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// Approximate bytes the value holds in memory.
    fn heap_size(&self) -> usize;
}

/// A row (or any bytes) is its own encoding.
impl EvictableValue for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
    fn heap_size(&self) -> usize {
        self.len()
    }
}

/// Bookkeeping of one key in memory.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Processing time it was last touched.
    touched_at: i64,
    /// Order of its last touch: the least recent goes first.
    seq: u64,
    /// Bytes it holds (key, value, overhead).
    bytes: usize,
}

/// Touch times, sizes and eviction of the keys of an operator's map; see
/// the module docs. Inert (tracks nothing) without a TTL or a spill space.
#[derive(Debug, Default)]
pub(super) struct EvictableKeys {
    ttl_ms: Option<i64>,
    meta: HashMap<Vec<u8>, Meta>,
    held: usize,
    seq: u64,
    /// When the keys in memory were last swept for ones past the TTL.
    last_sweep: i64,
    /// When the evicted keys were last swept.
    last_evicted_sweep: i64,
    /// Whether keys may be on disk: set by an eviction or a restore.
    evicted: bool,
}

impl EvictableKeys {
    /// A TTL of `ttl_ms` (`None` or not positive: state is kept forever).
    pub(super) fn new(ttl_ms: Option<i64>) -> Self {
        Self {
            ttl_ms: ttl_ms.filter(|&t| t > 0),
            ..Self::default()
        }
    }

    fn tracks(&self, ctx: &OperatorContext) -> bool {
        self.ttl_ms.is_some() || ctx.spill.is_some()
    }

    /// Notes that `key`, whose value now holds `value_size` bytes (its
    /// [`EvictableValue::heap_size`]), was touched.
    pub(super) fn touch(&mut self, key: &[u8], value_size: usize, ctx: &OperatorContext) {
        if !self.tracks(ctx) {
            return;
        }
        self.seq += 1;
        let meta = Meta {
            touched_at: ctx.clock.now_millis(),
            seq: self.seq,
            bytes: key.len() + value_size + KEY_OVERHEAD,
        };
        if let Some(old) = self.meta.insert(key.to_vec(), meta) {
            self.held -= old.bytes;
        }
        self.held += meta.bytes;
    }

    /// Forgets `key` (its state is gone).
    pub(super) fn forget(&mut self, key: &[u8]) {
        if let Some(old) = self.meta.remove(key) {
            self.held -= old.bytes;
        }
    }

    /// Whether keys may be on disk (evicted, or restored there): else a
    /// batch need not look for them.
    pub(super) fn may_have_evicted(&self) -> bool {
        self.evicted
    }

    /// Drops from `state` the keys idle for longer than the TTL, at most
    /// once a second, and from disk the evicted ones (see the module docs);
    /// counts them and says so as `what`.
    pub(super) fn sweep<V>(
        &mut self,
        state: &mut HashMap<Vec<u8>, V>,
        ctx: &mut OperatorContext,
        what: &str,
    ) -> Result<()> {
        let Some(ttl) = self.ttl_ms else {
            return Ok(());
        };
        let now = ctx.clock.now_millis();
        if now - self.last_sweep >= ttl.min(1000) {
            self.last_sweep = now;
            let before = state.len();
            let (meta, held) = (&mut self.meta, &mut self.held);
            state.retain(|key, _| {
                let live = meta.get(key).is_some_and(|m| now - m.touched_at < ttl);
                if !live && let Some(m) = meta.remove(key) {
                    *held -= m.bytes;
                }
                live
            });
            let expired = before - state.len();
            if expired > 0 {
                ctx.metrics.add_state_expired(expired);
                tracing::debug!(expired, "{what} past the state TTL");
            }
        }
        if self.evicted {
            sweep_evicted(ctx, ttl, &mut self.last_evicted_sweep, what)?;
        }
        Ok(())
    }

    /// Loads the evicted keys among a batch's keys (`keys`, the key
    /// columns, encoded as `encoded`) back into `state` before the batch is
    /// applied.
    pub(super) fn load<V: EvictableValue>(
        &mut self,
        state: &mut HashMap<Vec<u8>, V>,
        keys: &[ArrayRef],
        encoded: &Rows,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if !self.evicted {
            return Ok(());
        }
        let Some(spill) = ctx.spill.as_mut() else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        let missing: Vec<u32> = (0..encoded.num_rows())
            .filter(|&row| {
                let key = encoded.row(row).data();
                !state.contains_key(key) && seen.insert(key)
            })
            .map(|row| row as u32)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let now = ctx.clock.now_millis();
        let (loaded, expired) = take_evicted(spill, keys, encoded, &missing, self.ttl_ms, now)?;
        if expired > 0 {
            ctx.metrics.add_state_expired(expired);
        }
        let count = loaded.len();
        for TakenEntry {
            key,
            touched_at,
            value,
        } in loaded
        {
            let value = V::decode(&value)?;
            self.seq += 1;
            let meta = Meta {
                touched_at,
                seq: self.seq,
                bytes: key.len() + value.heap_size() + KEY_OVERHEAD,
            };
            self.held += meta.bytes;
            if let Some(old) = self.meta.insert(key.clone(), meta) {
                self.held -= old.bytes;
            }
            state.insert(key, value);
        }
        tracing::trace!(
            loaded = count,
            expired,
            "loaded evicted keys back into memory"
        );
        Ok(())
    }

    /// Past the memory budget, evicts the least recently touched keys of
    /// `state` (encoded by `converter`) until a quarter of the budget is
    /// free again.
    pub(super) fn evict_if_over_budget<V: EvictableValue>(
        &mut self,
        state: &mut HashMap<Vec<u8>, V>,
        converter: &RowConverter,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let Some(spill) = ctx.spill.as_mut() else {
            return Ok(());
        };
        let held = self.held;
        if held <= spill.budget() || self.meta.is_empty() {
            return Ok(());
        }
        let target = spill.budget() / 4 * 3;
        let mut by_age: Vec<(&Vec<u8>, &Meta)> = self.meta.iter().collect();
        by_age.sort_unstable_by_key(|(_, m)| m.seq);
        let mut freed = 0;
        let mut victims: Vec<(Vec<u8>, i64)> = Vec::new();
        for (key, meta) in by_age {
            if held - freed <= target {
                break;
            }
            freed += meta.bytes;
            victims.push((key.clone(), meta.touched_at));
        }
        let parser = converter.parser();
        let columns = converter.convert_rows(victims.iter().map(|(k, _)| parser.parse(k)))?;
        let kgs = key_groups_of(&columns, true, victims.len(), spill.max_key_groups())?;
        if let Some(kg) = kgs.iter().find(|kg| !spill.key_groups().contains(kg)) {
            return Err(Error::internal(format!(
                "an evicted key in key group {kg}, outside this subtask's key groups {:?}",
                spill.key_groups()
            )));
        }
        let mut written = 0;
        let mut entries = Vec::with_capacity(victims.len());
        for ((key, touched_at), key_group) in victims.into_iter().zip(kgs) {
            let Some(value) = state.remove(&key) else {
                return Err(Error::internal(
                    "a key tracked for eviction has no state in memory",
                ));
            };
            let mut encoded = touched_at.to_be_bytes().to_vec();
            value.encode(&mut encoded);
            written += key.len() + encoded.len();
            self.forget(&key);
            entries.push(EvictedGroup {
                key_group,
                key,
                value: encoded,
            });
        }
        spill.note_first_spill();
        let id = spill.next_fragment_id();
        for chunk in entries.chunks(WRITE_CHUNK) {
            spill.store().put_evicted_groups(spill.node(), id, chunk)?;
        }
        ctx.metrics.add_spilled(written);
        self.evicted = true;
        tracing::debug!(
            held,
            budget = spill.budget(),
            keys = entries.len(),
            written,
            "evicted the least recently touched keys to RocksDB"
        );
        Ok(())
    }

    /// After a restore: whether the restore copied evicted keys of this
    /// subtask's key groups into its store (they come back when touched).
    pub(super) fn restored(&mut self, ctx: &OperatorContext) -> Result<()> {
        if let Some(spill) = &ctx.spill {
            self.evicted = spill
                .store()
                .has_evicted_groups(spill.node(), spill.key_groups())?;
        }
        Ok(())
    }
}

/// An evicted key read back by [`take_evicted`].
pub(super) struct TakenEntry {
    /// The encoded key.
    pub(super) key: Vec<u8>,
    /// When it was last touched, in processing time.
    pub(super) touched_at: i64,
    /// Its encoded value.
    pub(super) value: Vec<u8>,
}

/// Reads the evicted entries of the rows `missing` of a batch's keys
/// (`keys`, encoded as `encoded`; rows of distinct keys not in memory), one
/// key group at a time with one seek per key, and consumes them. Returns
/// each key found with when it was last touched and its encoded value, and
/// how many were past `ttl_ms` (dropped).
pub(super) fn take_evicted(
    spill: &mut StateSpill,
    keys: &[ArrayRef],
    encoded: &Rows,
    missing: &[u32],
    ttl_ms: Option<i64>,
    now: i64,
) -> Result<(Vec<TakenEntry>, usize)> {
    let columns = take_rows(keys, missing.to_vec())?;
    let kgs = key_groups_of(&columns, true, missing.len(), spill.max_key_groups())?;
    let mut by_key_group: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for (&row, kg) in missing.iter().zip(kgs) {
        by_key_group
            .entry(kg)
            .or_default()
            .push(encoded.row(row as usize).data().to_vec());
    }
    let mut consumed = Vec::new();
    let mut found = Vec::new();
    let mut expired = 0;
    for (kg, mut keys) in by_key_group {
        keys.sort_unstable();
        let entries = spill.store().evicted_groups(spill.node(), kg, &keys)?;
        for (key, entries) in keys.into_iter().zip(entries) {
            let mut live = entries.into_iter().filter(|e| !spill.is_consumed(&e.key));
            let Some(mut entry) = live.next() else {
                continue;
            };
            if live.next().is_some() {
                return Err(Error::internal(format!(
                    "a key of key group {kg} was evicted twice without being loaded back"
                )));
            }
            let touched_at = split_value(&entry.value)?.0;
            consumed.push(entry.key);
            if ttl_ms.is_some_and(|ttl| now - touched_at >= ttl) {
                expired += 1;
                continue;
            }
            entry.value.drain(..8);
            found.push(TakenEntry {
                key,
                touched_at,
                value: entry.value,
            });
        }
    }
    if !consumed.is_empty() {
        spill.consume(consumed)?;
    }
    Ok((found, expired))
}

/// Drops the evicted keys of the subtask untouched for longer than `ttl`,
/// reading them all: at most once per `ttl` and per
/// [`SWEEP_MIN_INTERVAL_MS`] since `last_sweep`. Counts them, says so as
/// `what`.
pub(super) fn sweep_evicted(
    ctx: &mut OperatorContext,
    ttl: i64,
    last_sweep: &mut i64,
    what: &str,
) -> Result<()> {
    let Some(spill) = ctx.spill.as_mut() else {
        return Ok(());
    };
    let now = ctx.clock.now_millis();
    if now - *last_sweep < ttl.max(SWEEP_MIN_INTERVAL_MS) {
        return Ok(());
    }
    *last_sweep = now;
    let mut expired = Vec::new();
    spill
        .store()
        .for_each_evicted_group(spill.node(), spill.key_groups(), |key, value| {
            if !spill.is_consumed(key) && now - split_value(value)?.0 >= ttl {
                expired.push(key.to_vec());
            }
            Ok(())
        })?;
    if expired.is_empty() {
        return Ok(());
    }
    let count = expired.len();
    spill.consume(expired)?;
    ctx.metrics.add_state_expired(count);
    tracing::debug!(expired = count, "{what} evicted past the state TTL");
    Ok(())
}

/// An entry value's last-touched time and encoded value.
pub(super) fn split_value(value: &[u8]) -> Result<(i64, &[u8])> {
    let (touched, rest) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("truncated"))?;
    Ok((i64::from_be_bytes(*touched), rest))
}

/// An evicted entry that does not decode.
pub(super) fn corrupt(why: &str) -> Error {
    Error::state("decoding an evicted key", why.to_string())
}

/// Checks shared by the tests of the operators that evict keys: the same
/// output as in memory, and a restore at another parallelism that finds the
/// evicted keys by key group.
#[cfg(test)]
pub(super) mod check {
    use arrow::array::{BooleanArray, RecordBatch};

    use crate::message::CheckpointBarrier;
    use crate::operator::{Operator, TaskInfo};
    use crate::testing::{OperatorHarness, TestStore};

    /// Creates the operator under test as a subtask.
    pub(crate) type Create<'a> = &'a dyn Fn(&TaskInfo) -> Box<dyn Operator>;

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            timestamp_ms: 0,
            then_stop: false,
        }
    }

    fn changes(h: &mut OperatorHarness) -> Vec<String> {
        h.take_batches()
            .iter()
            .flat_map(|b| crate::testing::format_rows(&crate::changelog::for_display(b).unwrap()))
            .collect()
    }

    pub(crate) fn spilled_bytes(h: &OperatorHarness) -> u64 {
        h.context()
            .metrics
            .state_spilled_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn subtask(index: usize, parallelism: usize) -> TaskInfo {
        TaskInfo {
            subtask: index,
            parallelism,
            ..TaskInfo::single("keyed")
        }
    }

    /// The rows of `batch` whose key (column `key_column`) `task` owns.
    fn owned(batch: &RecordBatch, key_column: usize, task: &TaskInfo) -> RecordBatch {
        let keys = [std::sync::Arc::clone(batch.column(key_column))];
        let kgs = super::key_groups_of(
            &keys,
            true,
            batch.num_rows(),
            crate::partition::DEFAULT_MAX_KEY_GROUPS,
        )
        .unwrap();
        let mine = BooleanArray::from_iter(
            kgs.into_iter()
                .map(|kg| Some(task.key_groups().contains(&kg))),
        );
        arrow::compute::filter_record_batch(batch, &mine).unwrap()
    }

    /// Run under `budget` bytes with checkpoints (which defer the deletes of
    /// loaded entries) and commits, `input` gives the output of a run in
    /// memory, and most of the state went to RocksDB. Returns that output.
    pub(crate) async fn evicting_gives_the_in_memory_output(
        create: Create<'_>,
        input: &[RecordBatch],
        budget: usize,
    ) -> Vec<String> {
        let task = TaskInfo::single("keyed");
        let mut unbounded = OperatorHarness::new(create(&task));
        let store = TestStore::new();
        let mut bounded =
            OperatorHarness::new(create(&task)).with_spill(store.store.clone(), budget);
        for (i, batch) in input.iter().enumerate() {
            unbounded.process(batch.clone()).await.unwrap();
            bounded.process(batch.clone()).await.unwrap();
            if i % 10 == 9 {
                let id = i as u64 / 10 + 1;
                bounded.checkpoint(barrier(id)).await.unwrap();
                bounded.snapshot().await.unwrap();
                if id.is_multiple_of(2) {
                    bounded.commit(id).await.unwrap();
                }
            }
        }
        let expected = changes(&mut unbounded);
        assert_eq!(changes(&mut bounded), expected);
        let spilled = spilled_bytes(&bounded);
        assert!(spilled > 8 * budget as u64, "spilled {spilled}");
        expected
    }

    /// Checkpointed after `before` with keys evicted, then run on past the
    /// barrier (evicting and loading more) before the local snapshot,
    /// restored at parallelism 2 with the evicted keys of each subtask's
    /// key groups copied: `after` gives what it gives in memory.
    pub(crate) async fn evicted_keys_restore_at_another_parallelism(
        create: Create<'_>,
        before: &[RecordBatch],
        after: &[RecordBatch],
        key_column: usize,
        budget: usize,
    ) {
        let single = TaskInfo::single("keyed");
        let mut unbounded = OperatorHarness::new(create(&single));
        for batch in before {
            unbounded.process(batch.clone()).await.unwrap();
        }
        unbounded.take_batches();
        for batch in after {
            unbounded.process(batch.clone()).await.unwrap();
        }
        let mut expected = changes(&mut unbounded);
        expected.sort();

        let old = TestStore::new();
        let mut h = OperatorHarness::new(create(&single)).with_spill(old.store.clone(), budget);
        for batch in before {
            h.process(batch.clone()).await.unwrap();
        }
        h.checkpoint(barrier(1)).await.unwrap();
        let snapshot = h.snapshot().await.unwrap();
        let spilled = spilled_bytes(&h);
        assert!(spilled > 0, "nothing evicted before the barrier");
        for batch in &after[..after.len() / 2] {
            h.process(batch.clone()).await.unwrap();
        }
        assert!(
            spilled_bytes(&h) > spilled,
            "nothing evicted past the barrier"
        );
        let local = old.store.snapshot(1).unwrap();
        let restored = crate::state::RestoredSnapshot::open(&local.dir, 1).unwrap();

        let mut got = Vec::new();
        for index in 0..2 {
            let task = subtask(index, 2);
            let new = TestStore::new();
            let copied = restored
                .copy_evicted_groups(&new.store, 1, &task.key_groups())
                .unwrap();
            assert!(copied > 0, "subtask {index} found no evicted keys");
            let mut h = OperatorHarness::restored_spilling(
                create(&task),
                task.clone(),
                std::slice::from_ref(&snapshot),
                new.store.clone(),
                budget,
                1,
            )
            .unwrap();
            for batch in after {
                h.process(owned(batch, key_column, &task)).await.unwrap();
            }
            got.extend(changes(&mut h));
        }
        got.sort();
        assert_eq!(got, expected);
    }
}
