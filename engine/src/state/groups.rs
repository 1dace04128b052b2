//! Keys an operator evicted past its memory budget (the updating
//! aggregate's groups, ChangelogNormalize's last rows, Top-N partitions,
//! the window Top-N's partitions of each window; see
//! `operator/evictable/`): one entry per key, keyed as session fragments
//! are (see [`super::sessions`]), the node telling the operators apart,
//!
//! ```text
//! group  [6][node u32][key group u32][len u32][group key][epoch u64][writer u32][seq u32]
//! value  [last touched i64][the group's state]
//! ```
//!
//! so a key group's groups are one contiguous range (a restore copies them
//! by key group) and one seek finds a group's entries. A group is written
//! again on every eviction, under a new id, and its old entry is deleted
//! when it is loaded back, once no pending snapshot needs it: as for runs
//! (see [`super::RunKey`]), the epoch is the last barrier the writer had
//! passed, and a restore of checkpoint `c` takes only entries of epoch `< c`.

use std::ops::Range;

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::backend::{JobStore, RestoredSnapshot};
use super::sessions::{entry_key, prefix};
use super::{FragmentId, StoredFragment};
use crate::error::{Error, Result};

/// Kind byte of an evicted group.
const GROUP: u8 = 6;

/// One evicted group, to write.
#[derive(Debug, Clone)]
pub struct EvictedGroup {
    /// The group key's key group.
    pub key_group: u32,
    /// The group key (the operator's row encoding of its group columns).
    pub key: Vec<u8>,
    /// When it was last touched, then its encoded state.
    pub value: Vec<u8>,
}

impl JobStore {
    /// Writes the groups of one eviction atomically.
    pub fn put_evicted_groups(
        &self,
        node: u32,
        id: FragmentId,
        groups: &[EvictedGroup],
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for g in groups {
            batch.put(entry_key(GROUP, node, g.key_group, &g.key, id), &g.value);
        }
        self.write_batch(batch)
    }

    /// The entries of each of `keys` (group keys of one key group, best
    /// sorted), in the order of `keys`: one iterator, one seek per key.
    pub fn evicted_groups(
        &self,
        node: u32,
        key_group: u32,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Vec<StoredFragment>>> {
        self.entries_of(GROUP, node, key_group, keys)
    }

    /// Whether any group of `node` in `key_groups` is evicted.
    pub fn has_evicted_groups(&self, node: u32, key_groups: &Range<u32>) -> Result<bool> {
        self.has_entries(GROUP, node, key_groups)
    }

    /// Calls `f` with the key and value of every evicted group of `node` in
    /// `key_groups`, in key order.
    pub fn for_each_evicted_group(
        &self,
        node: u32,
        key_groups: &Range<u32>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        if key_groups.is_empty() {
            return Ok(());
        }
        let db = self.db();
        let start = prefix(GROUP, node, key_groups.start);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix(GROUP, node, key_groups.end));
        for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
            let (k, v) = item
                .map_err(|e| super::backend::rocks("scanning evicted groups in", db.path(), e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Calls `f` with the store key, group key and value of every evicted
    /// group of `node` in `key_groups` whose group key sorts below `upper`
    /// (every one without), in store order. A key group's entries are
    /// ordered by key length first, then key: this reads the run of each
    /// length up to `upper` and seeks past the rest, so an operator whose
    /// keys start with a time (the window Top-N's window end) reads only
    /// the due ones.
    pub fn for_each_evicted_group_below(
        &self,
        node: u32,
        key_groups: &Range<u32>,
        upper: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        if key_groups.is_empty() {
            return Ok(());
        }
        let db = self.db();
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix(GROUP, node, key_groups.end));
        let mut iter = db.raw_iterator_opt(read);
        iter.seek(prefix(GROUP, node, key_groups.start));
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            let (key_group, key) = group_key_of(k)?;
            if upper.is_none_or(|upper| key < upper) {
                f(k, key, v)?;
                iter.next();
                continue;
            }
            // Every longer key of this key group may still be below.
            let next = match u32::try_from(key.len() + 1) {
                Ok(len) => {
                    let mut next = prefix(GROUP, node, key_group);
                    next.extend_from_slice(&len.to_be_bytes());
                    next
                }
                Err(_) => prefix(GROUP, node, key_group.saturating_add(1)),
            };
            iter.seek(next);
        }
        iter.status()
            .map_err(|e| super::backend::rocks("scanning evicted groups in", db.path(), e))
    }
}

/// The key group and group key of an evicted group's store key.
fn group_key_of(entry: &[u8]) -> Result<(u32, &[u8])> {
    let bad = || Error::state("decoding an evicted group's key", format!("{entry:02x?}"));
    // kind, node, then the key group and the key's length.
    let at = 1 + 4;
    let u32_at = |i: usize| -> Result<u32> {
        let bytes: [u8; 4] = entry
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(u32::from_be_bytes(bytes))
    };
    let key_group = u32_at(at)?;
    let len = u32_at(at + 4)? as usize;
    let key = entry.get(at + 8..at + 8 + len).ok_or_else(bad)?;
    Ok((key_group, key))
}

impl RestoredSnapshot {
    /// Copies the evicted groups of `node` in `key_groups` that this
    /// checkpoint covers (epoch below it) into `store`, verbatim. Returns
    /// the bytes copied.
    pub fn copy_evicted_groups(
        &self,
        store: &JobStore,
        node: u32,
        key_groups: &Range<u32>,
    ) -> Result<u64> {
        self.copy_entries(store, &[GROUP], node, key_groups)
    }
}
