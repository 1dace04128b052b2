//! Keys an operator evicted past its memory budget (the updating
//! aggregate's groups, ChangelogNormalize's last rows, Top-N partitions; see
//! `operator/evictable.rs`): one entry per key, keyed as session fragments
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
use crate::error::Result;

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
