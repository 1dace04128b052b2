//! The group table of the updating aggregate: a slot per live group, with
//! its key (in Arrow's row format), its live row count, when it was last
//! touched, and the slots' accumulators. Slots of groups whose rows were all
//! taken back (or that were evicted to RocksDB) are reused. The table keeps
//! an estimate of the bytes its live groups take, which the updating
//! aggregate holds to its memory budget.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use arrow::row::RowConverter;

use super::retractable::RetractableAccumulator;
use crate::error::Result;

/// The groups of one subtask: a slot per live group.
pub(super) struct Groups {
    /// Encodes group keys; `None` for a global aggregate (one group).
    pub(super) keys: Option<RowConverter>,
    pub(super) slot_of: HashMap<Vec<u8>, usize>,
    /// Per slot: its key, its live row count, when it was last touched.
    pub(super) key_of: Vec<Vec<u8>>,
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
            slot_of: HashMap::new(),
            key_of: Vec::new(),
            rows: Vec::new(),
            touched_at: Vec::new(),
            stamp: Vec::new(),
            free: Vec::new(),
            accumulators,
            sizes: Vec::new(),
            held: 0,
        }
    }

    /// The slot of the group `key`, taken from the free ones if new.
    pub(super) fn slot(&mut self, key: &[u8]) -> usize {
        if let Some(&slot) = self.slot_of.get(key) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.key_of.push(Vec::new());
                self.rows.push(0);
                self.touched_at.push(0);
                self.stamp.push(0);
                self.sizes.push(0);
                self.key_of.len() - 1
            }
        };
        self.key_of[slot] = key.to_vec();
        self.slot_of.insert(key.to_vec(), slot);
        slot
    }

    /// Frees a slot whose group's rows were all taken back (or expired).
    pub(super) fn release(&mut self, slot: usize) {
        self.slot_of.remove(&self.key_of[slot]);
        self.key_of[slot] = Vec::new();
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
        self.key_of.len()
    }

    /// The slots of live groups, in slot order.
    pub(super) fn live_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = self.slot_of.values().copied().collect();
        slots.sort_unstable();
        slots
    }

    /// The key columns of `slots`.
    pub(super) fn key_columns(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        let Some(keys) = &self.keys else {
            return Ok(Vec::new());
        };
        let parser = keys.parser();
        Ok(keys.convert_rows(slots.iter().map(|&s| parser.parse(&self.key_of[s])))?)
    }

    /// Measures the groups of `slots` again, after they changed.
    pub(super) fn measure(&mut self, slots: &[usize]) {
        for &slot in slots {
            let size = 2 * self.key_of[slot].len()
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
        self.slot_of.keys().map(|k| 2 * k.len() + 64).sum::<usize>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }
}
