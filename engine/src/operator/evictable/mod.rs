//! Per-key state in a map, larger than memory, for the operators that keep
//! a value per key (ChangelogNormalize's last rows, Top-N partitions, the
//! window Top-N's partitions of each window), as the updating aggregate
//! keeps its groups (see `updating_aggregate/evict.rs`, whose store layer,
//! [`crate::state::EvictedGroup`], this shares). The map is a hash map or,
//! where key order matters, a B-tree map ([`KeyedMap`]); a key's key group
//! is that of the columns it encodes ([`KeyGroupsOf`]), which for most
//! operators are the whole key:
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
//! - An operator whose keys start with a time (the window Top-N: window end,
//!   then partition) loads back the due ones, all at once, when the
//!   watermark passes them ([`EvictableKeys::load_below`]).
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
use crate::partition::KeyGroup;
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

/// The map an operator keeps its values in, by encoded key: a hash map, or
/// a B-tree map where the keys' order matters (the window Top-N's keys
/// start with their window's end, so windows fire in order).
pub(super) trait KeyedMap<V> {
    /// Whether `key` is in the map.
    fn has(&self, key: &[u8]) -> bool;
    /// Puts `value` under `key`; returns the value it replaced.
    fn put(&mut self, key: Vec<u8>, value: V) -> Option<V>;
    /// Takes the value of `key` out.
    fn take(&mut self, key: &[u8]) -> Option<V>;
    /// Keeps only the keys `keep` says to.
    fn keep(&mut self, keep: impl FnMut(&Vec<u8>) -> bool);
    /// How many keys the map holds.
    fn count(&self) -> usize;
}

impl<V> KeyedMap<V> for HashMap<Vec<u8>, V> {
    fn has(&self, key: &[u8]) -> bool {
        self.contains_key(key)
    }
    fn put(&mut self, key: Vec<u8>, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn take(&mut self, key: &[u8]) -> Option<V> {
        self.remove(key)
    }
    fn keep(&mut self, mut keep: impl FnMut(&Vec<u8>) -> bool) {
        self.retain(|key, _| keep(key));
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl<V> KeyedMap<V> for BTreeMap<Vec<u8>, V> {
    fn has(&self, key: &[u8]) -> bool {
        self.contains_key(key)
    }
    fn put(&mut self, key: Vec<u8>, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn take(&mut self, key: &[u8]) -> Option<V> {
        self.remove(key)
    }
    fn keep(&mut self, mut keep: impl FnMut(&Vec<u8>) -> bool) {
        self.retain(|key, _| keep(key));
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// How an operator's map keys map to key groups: as the job's shuffle
/// hashes the columns they encode.
pub(super) trait KeyGroupsOf {
    /// The key group of each of `keys` (encoded map keys), out of
    /// `max_key_groups`.
    fn key_groups_of(&self, keys: &[&[u8]], max_key_groups: u32) -> Result<Vec<KeyGroup>>;
}

/// Keys that are rows of the key columns, encoded by this converter.
impl KeyGroupsOf for RowConverter {
    fn key_groups_of(&self, keys: &[&[u8]], max_key_groups: u32) -> Result<Vec<KeyGroup>> {
        let parser = self.parser();
        let columns = self.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        key_groups_of(&columns, true, keys.len(), max_key_groups)
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
        state: &mut impl KeyedMap<V>,
        ctx: &mut OperatorContext,
        what: &str,
    ) -> Result<()> {
        let Some(ttl) = self.ttl_ms else {
            return Ok(());
        };
        let now = ctx.clock.now_millis();
        if now - self.last_sweep >= ttl.min(1000) {
            self.last_sweep = now;
            let before = state.count();
            let (meta, held) = (&mut self.meta, &mut self.held);
            state.keep(|key| {
                let live = meta.get(key).is_some_and(|m| now - m.touched_at < ttl);
                if !live && let Some(m) = meta.remove(key) {
                    *held -= m.bytes;
                }
                live
            });
            let expired = before - state.count();
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
        state: &mut impl KeyedMap<V>,
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
                !state.has(key) && seen.insert(key)
            })
            .map(|row| row as u32)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let now = ctx.clock.now_millis();
        let (loaded, expired) = take_evicted(spill, keys, encoded, &missing, self.ttl_ms, now)?;
        self.admit(state, loaded, expired, ctx)
    }

    /// Loads the evicted ones among `keys` (distinct encoded keys not in
    /// `state`, by key group) back into `state`: for an operator whose map
    /// keys are not rows of the columns that give their key groups.
    pub(super) fn load_keys<V: EvictableValue>(
        &mut self,
        state: &mut impl KeyedMap<V>,
        keys: BTreeMap<KeyGroup, Vec<Vec<u8>>>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if !self.evicted || keys.is_empty() {
            return Ok(());
        }
        let Some(spill) = ctx.spill.as_mut() else {
            return Ok(());
        };
        let now = ctx.clock.now_millis();
        let (loaded, expired) = take_evicted_keys(spill, keys, self.ttl_ms, now)?;
        self.admit(state, loaded, expired, ctx)
    }

    /// Loads every evicted key that sorts below `upper` (every one
    /// without) back into `state`: for an operator whose keys start with a
    /// time, the ones that are due. Reads only those (see
    /// [`crate::state::JobStore::for_each_evicted_group_below`]).
    pub(super) fn load_below<V: EvictableValue>(
        &mut self,
        state: &mut impl KeyedMap<V>,
        upper: Option<&[u8]>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if !self.evicted {
            return Ok(());
        }
        let Some(spill) = ctx.spill.as_mut() else {
            return Ok(());
        };
        let now = ctx.clock.now_millis();
        let mut consumed = Vec::new();
        let mut loaded = Vec::new();
        let mut expired = 0;
        spill.store().for_each_evicted_group_below(
            spill.node(),
            spill.key_groups(),
            upper,
            |entry, key, value| {
                if spill.is_consumed(entry) {
                    return Ok(());
                }
                consumed.push(entry.to_vec());
                let (touched_at, value) = split_value(value)?;
                if self.ttl_ms.is_some_and(|ttl| now - touched_at >= ttl) {
                    expired += 1;
                    return Ok(());
                }
                loaded.push(TakenEntry {
                    key: key.to_vec(),
                    touched_at,
                    value: value.to_vec(),
                });
                Ok(())
            },
        )?;
        if !consumed.is_empty() {
            spill.consume(consumed)?;
        }
        self.admit(state, loaded, expired, ctx)
    }

    /// Puts keys read back from disk into `state`, touched when they were
    /// evicted; counts the `expired` ones dropped instead.
    fn admit<V: EvictableValue>(
        &mut self,
        state: &mut impl KeyedMap<V>,
        loaded: Vec<TakenEntry>,
        expired: usize,
        ctx: &OperatorContext,
    ) -> Result<()> {
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
            if state.put(key, value).is_some() {
                return Err(Error::internal(
                    "a key loaded back from disk was in memory too",
                ));
            }
        }
        tracing::trace!(
            loaded = count,
            expired,
            "loaded evicted keys back into memory"
        );
        Ok(())
    }

    /// Calls `f` with every evicted key of this subtask and its stored
    /// value (`[last touched][encoded value]`), skipping consumed entries.
    fn for_each_evicted_entry(
        &self,
        ctx: &OperatorContext,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(spill) = ctx.spill.as_ref().filter(|_| self.evicted) else {
            return Ok(());
        };
        spill.store().for_each_evicted_group_below(
            spill.node(),
            spill.key_groups(),
            None,
            |entry, key, value| {
                if spill.is_consumed(entry) {
                    return Ok(());
                }
                f(key, value)
            },
        )
    }

    /// Calls `f` with every evicted key of this subtask (after a restore:
    /// an operator that indexes its evicted keys rebuilds the index).
    pub(super) fn for_each_evicted_key(
        &self,
        ctx: &OperatorContext,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_evicted_entry(ctx, |key, _| f(key))
    }

    /// Calls `f` with every evicted key of this subtask and its value, read
    /// from disk without loading it back (an operator that answers from all
    /// of its state, keeping only what the answer needs).
    pub(super) fn for_each_evicted_value<V: EvictableValue>(
        &self,
        ctx: &OperatorContext,
        mut f: impl FnMut(&[u8], V) -> Result<()>,
    ) -> Result<()> {
        self.for_each_evicted_entry(ctx, |key, value| {
            let (_, encoded) = split_value(value)?;
            f(key, V::decode(encoded)?)
        })
    }

    /// Past the memory budget, evicts the least recently touched keys of
    /// `state` (encoded by `converter`) until a quarter of the budget is
    /// free again.
    pub(super) fn evict_if_over_budget<V: EvictableValue>(
        &mut self,
        state: &mut impl KeyedMap<V>,
        keys: &impl KeyGroupsOf,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.evict_noting(state, keys, ctx, |_| Ok(()))
    }

    /// [`EvictableKeys::evict_if_over_budget`], calling `evicted` with each
    /// key it evicts (an operator that indexes its evicted keys notes them).
    pub(super) fn evict_noting<V: EvictableValue>(
        &mut self,
        state: &mut impl KeyedMap<V>,
        keys: &impl KeyGroupsOf,
        ctx: &mut OperatorContext,
        mut evicted: impl FnMut(&[u8]) -> Result<()>,
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
        let victim_keys: Vec<&[u8]> = victims.iter().map(|(k, _)| k.as_slice()).collect();
        let kgs = keys.key_groups_of(&victim_keys, spill.max_key_groups())?;
        if let Some(kg) = kgs.iter().find(|kg| !spill.key_groups().contains(kg)) {
            return Err(Error::internal(format!(
                "an evicted key in key group {kg}, outside this subtask's key groups {:?}",
                spill.key_groups()
            )));
        }
        let mut written = 0;
        let mut entries = Vec::with_capacity(victims.len());
        for ((key, touched_at), key_group) in victims.into_iter().zip(kgs) {
            let Some(value) = state.take(&key) else {
                return Err(Error::internal(
                    "a key tracked for eviction has no state in memory",
                ));
            };
            let mut encoded = touched_at.to_be_bytes().to_vec();
            value.encode(&mut encoded);
            written += key.len() + encoded.len();
            self.forget(&key);
            evicted(&key)?;
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
    take_evicted_keys(spill, by_key_group, ttl_ms, now)
}

/// [`take_evicted`] of distinct encoded keys, by key group.
fn take_evicted_keys(
    spill: &mut StateSpill,
    by_key_group: BTreeMap<KeyGroup, Vec<Vec<u8>>>,
    ttl_ms: Option<i64>,
    now: i64,
) -> Result<(Vec<TakenEntry>, usize)> {
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

/// Checks shared by the tests of the operators that evict keys.
#[cfg(test)]
pub(super) mod check;
