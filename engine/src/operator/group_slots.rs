//! The group table of the updating aggregate: a slot per live group, with
//! its key (in Arrow's row format), its live row count, when it was last
//! touched, and the slots' accumulators. Slots of groups whose rows were all
//! taken back (or that were evicted to RocksDB) are reused. The table keeps
//! an estimate of the bytes its live groups take, which the updating
//! aggregate holds to its memory budget.

use arrow::array::ArrayRef;
use arrow::row::RowConverter;
use hashbrown::HashTable;

use super::retractable::RetractableAccumulator;
use crate::error::Result;

/// The group keys of every slot, in one buffer: a key is a span of it. A
/// freed slot's bytes are reused by the next key that fits, and the buffer
/// is compacted once more than half of it is free, so a million groups
/// are a few allocations rather than a million.
#[derive(Default)]
struct KeyArena {
    bytes: Vec<u8>,
    /// Per slot: where its key starts, its length, and the room it has.
    spans: Vec<(usize, usize, usize)>,
    /// Bytes no live key uses.
    free: usize,
}

impl KeyArena {
    fn key(&self, slot: usize) -> &[u8] {
        let (start, len, _) = self.spans[slot];
        &self.bytes[start..start + len]
    }

    /// Sets slot `slot` (new, or freed) to `key`.
    fn set(&mut self, slot: usize, key: &[u8]) {
        if slot == self.spans.len() {
            self.spans.push((self.bytes.len(), 0, 0));
        }
        let (start, _, room) = self.spans[slot];
        if key.len() <= room {
            self.bytes[start..start + key.len()].copy_from_slice(key);
            self.spans[slot] = (start, key.len(), room);
            self.free -= key.len();
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.spans[slot] = (start, key.len(), key.len());
    }

    /// Frees slot `slot`'s key; its room stays for the next key there.
    fn clear(&mut self, slot: usize) {
        let (start, len, room) = self.spans[slot];
        self.free += len;
        self.spans[slot] = (start, 0, room);
        if self.free > 1 << 20 && self.free * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Copies the live keys into a buffer of their size.
    fn compact(&mut self) {
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.free);
        for span in &mut self.spans {
            let (start, len, _) = *span;
            let at = bytes.len();
            bytes.extend_from_slice(&self.bytes[start..start + len]);
            *span = (at, len, len);
        }
        self.bytes = bytes;
        self.free = 0;
    }
}

/// The groups of one subtask: a slot per live group.
pub(super) struct Groups {
    /// Encodes group keys; `None` for a global aggregate (one group).
    pub(super) keys: Option<RowConverter>,
    /// The live slots, found by their key's hash.
    table: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    /// Per slot: its key's hash, its key.
    hashes: Vec<u64>,
    arena: KeyArena,
    /// Per slot: its live row count, when it was last touched.
    pub(super) rows: Vec<i64>,
    pub(super) touched_at: Vec<i64>,
    /// The batch that last touched each slot, to list a batch's groups once.
    pub(super) stamp: Vec<u64>,
    pub(super) free: Vec<usize>,
    pub(super) accumulators: Vec<Box<dyn RetractableAccumulator>>,
    /// Per slot: the bytes its group was last measured at.
    sizes: Vec<usize>,
    /// The sum of `sizes` over live slots.
    held: usize,
}

impl Groups {
    /// No groups yet.
    pub(super) fn new(
        keys: Option<RowConverter>,
        accumulators: Vec<Box<dyn RetractableAccumulator>>,
    ) -> Self {
        Self {
            keys,
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            hashes: Vec::new(),
            arena: KeyArena::default(),
            rows: Vec::new(),
            touched_at: Vec::new(),
            stamp: Vec::new(),
            free: Vec::new(),
            accumulators,
            sizes: Vec::new(),
            held: 0,
        }
    }

    /// The hash of group key `key`, for [`Groups::find`] and
    /// [`Groups::insert`].
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// The slot of the live group `key` (of hash `hash`).
    pub(super) fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.table
            .find(hash, |&slot| self.arena.key(slot) == key)
            .copied()
    }

    /// How many groups are live.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The key of live slot `slot`.
    pub(super) fn key(&self, slot: usize) -> &[u8] {
        self.arena.key(slot)
    }

    /// The slot of the group `key`, taken from the free ones if new.
    pub(super) fn slot(&mut self, key: &[u8]) -> usize {
        let hash = self.hash(key);
        match self.find(hash, key) {
            Some(slot) => slot,
            None => self.insert(hash, key),
        }
    }

    /// A slot for the new group `key` (of hash `hash`, not live yet).
    pub(super) fn insert(&mut self, hash: u64, key: &[u8]) -> usize {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.hashes.push(0);
                self.rows.push(0);
                self.touched_at.push(0);
                self.stamp.push(0);
                self.sizes.push(0);
                self.hashes.len() - 1
            }
        };
        self.arena.set(slot, key);
        self.hashes[slot] = hash;
        let hashes = &self.hashes;
        self.table.insert_unique(hash, slot, |&s| hashes[s]);
        slot
    }

    /// Frees a slot whose group's rows were all taken back (or expired).
    pub(super) fn release(&mut self, slot: usize) {
        if let Ok(entry) = self.table.find_entry(self.hashes[slot], |&s| s == slot) {
            entry.remove();
        }
        self.arena.clear(slot);
        self.rows[slot] = 0;
        self.held -= self.sizes[slot];
        self.sizes[slot] = 0;
        for acc in &mut self.accumulators {
            acc.reset(slot);
        }
        self.free.push(slot);
    }

    /// How many slots there are, live or free.
    pub(super) fn total(&self) -> usize {
        self.hashes.len()
    }

    /// The slots of live groups, in slot order.
    pub(super) fn live_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self.table.iter().copied().collect();
        slots.sort_unstable();
        slots
    }

    /// The key columns of `slots`.
    pub(super) fn key_columns(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        let Some(keys) = &self.keys else {
            return Ok(Vec::new());
        };
        let parser = keys.parser();
        Ok(keys.convert_rows(slots.iter().map(|&s| parser.parse(self.arena.key(s))))?)
    }

    /// Measures the groups of `slots` again, after they changed.
    pub(super) fn measure(&mut self, slots: &[usize]) {
        for &slot in slots {
            let size = self.arena.key(slot).len()
                + 64
                + self
                    .accumulators
                    .iter()
                    .map(|a| a.group_size(slot))
                    .sum::<usize>();
            self.held = self.held - self.sizes[slot] + size;
            self.sizes[slot] = size;
        }
    }

    /// The least recently touched live slots (by `stamp`, then slot) whose
    /// groups take at least `bytes` together.
    pub(super) fn least_recent(&self, bytes: usize) -> Vec<usize> {
        let mut live = self.live_slots();
        live.sort_by_key(|&s| self.stamp[s]);
        let mut freed = 0;
        live.into_iter()
            .take_while(|&s| {
                let more = freed < bytes;
                freed += self.sizes[s];
                more
            })
            .collect()
    }

    /// Approximate bytes the live groups take, as last measured.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Approximate bytes held, with the capacity of every slot.
    pub(super) fn size(&self) -> usize {
        self.arena.bytes.capacity()
            + self.table.capacity() * 8
            + self.hashes.len() * 64
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }
}
