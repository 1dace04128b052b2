//! The updating aggregate past its memory budget, as Flink's RocksDB state
//! backend keeps a `GroupAggregate`'s groups: the groups in memory are held
//! to the operator's budget, and past it the least recently touched ones
//! are *evicted* into the job's RocksDB instance, one entry per group (see
//! [`crate::state::EvictedGroup`]), keyed by key group and group key.
//!
//! Unlike a window's runs, a group cannot be merged blindly when emitted:
//! every batch reads the current value of the groups it touches. So before
//! a batch is folded in, the evicted groups among its keys are loaded back,
//! one key group at a time with one seek per distinct key, and their
//! entries are consumed (deleted once no pending snapshot needs them, see
//! [`StateSpill::consume`]): a group is in memory or on disk, never both.
//!
//! A checkpoint writes the groups in memory as keyed state, as without
//! eviction; the evicted ones are in the RocksDB snapshot, whose new SST
//! files alone are uploaded. A restore copies the entries of the key groups
//! a subtask now owns into its store, and the subtask finds them there when
//! its input touches them.
//!
//! An entry's value is when its group was last touched, then its row count
//! and its accumulators' checkpoint columns
//! ([`RetractableAccumulator::state`]) as one row of Arrow's row format.
//! With a state TTL, an evicted group past it is dropped when loaded, and a
//! sweep of the evicted groups (at most once per TTL, and per 10 s) drops
//! those never touched again. Reading entries back and the sweep are shared
//! with the other operators that evict keys (`operator/evictable/`); the
//! groups' slots and codec are this operator's own.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, Rows, SortField};

use super::UpdatingAggregateOperator;
use crate::error::{Error, Result};
use crate::operator::OperatorContext;
use crate::operator::evictable::{sweep_evicted, take_evicted};
use crate::operator::group_slots::Groups;
use crate::operator::retractable::RetractableAccumulator;
use crate::operator::session_spill::key_groups_of;
use crate::state::EvictedGroup;

#[cfg(doc)]
use crate::operator::StateSpill;

/// Groups written per RocksDB write batch.
const WRITE_CHUNK: usize = 4096;

/// Encodes a group's row count and accumulator state as one row.
pub(super) struct GroupCodec {
    rows: RowConverter,
    /// Columns of each accumulator's state.
    widths: Vec<usize>,
}

impl GroupCodec {
    /// A codec for the state of `accumulators`; `None` when the row format
    /// cannot hold it (the groups then stay in memory).
    pub(super) fn new(accumulators: &[Box<dyn RetractableAccumulator>]) -> Result<Option<Self>> {
        let mut fields = vec![SortField::new(DataType::Int64)];
        let mut widths = Vec::with_capacity(accumulators.len());
        for acc in accumulators {
            let columns = acc.state(&[])?;
            widths.push(columns.len());
            fields.extend(
                columns
                    .iter()
                    .map(|c| SortField::new(c.data_type().clone())),
            );
        }
        Ok(RowConverter::new(fields)
            .ok()
            .map(|rows| GroupCodec { rows, widths }))
    }

    /// The entry values of the groups of `slots`.
    fn encode(&self, groups: &Groups, slots: &[usize]) -> Result<Vec<Vec<u8>>> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|&s| groups.rows[s]),
        ))];
        for acc in &groups.accumulators {
            columns.extend(acc.state(slots)?);
        }
        let rows = self.rows.convert_columns(&columns)?;
        Ok(slots
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let row = rows.row(i);
                let row = row.data();
                let mut value = Vec::with_capacity(8 + row.len());
                value.extend_from_slice(&groups.touched_at[s].to_be_bytes());
                value.extend_from_slice(row);
                value
            })
            .collect())
    }

    /// Loads entry values (their state, after the last-touched time) into
    /// `slots`.
    fn load(&self, groups: &mut Groups, states: &[&[u8]], slots: &[usize]) -> Result<()> {
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(states.iter().map(|s| parser.parse(s)))?;
        let counts = columns[0]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| corrupt("the row count is not a BIGINT"))?;
        for (i, &slot) in slots.iter().enumerate() {
            groups.rows[slot] = counts.value(i);
        }
        let total = groups.total();
        let mut at = 1;
        for (acc, &width) in groups.accumulators.iter_mut().zip(&self.widths) {
            let state = columns
                .get(at..at + width)
                .ok_or_else(|| corrupt("too few state columns"))?;
            acc.restore(state, slots, total)?;
            at += width;
        }
        Ok(())
    }
}

fn corrupt(why: &str) -> Error {
    Error::state("decoding an evicted group", why.to_string())
}

impl UpdatingAggregateOperator {
    /// Loads the evicted groups among a batch's keys (`keys`, encoded as
    /// `encoded`) back into memory before the batch is folded in.
    pub(super) fn load_evicted(
        &mut self,
        keys: &[ArrayRef],
        encoded: &Rows,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let (Some(spill), Some(codec)) = (ctx.spill.as_mut(), &self.codec) else {
            return Ok(());
        };
        if !self.evicted {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let missing: Vec<u32> = (0..encoded.num_rows())
            .filter(|&row| {
                let key = encoded.row(row).data();
                self.groups.find(self.groups.hash(key), key).is_none() && seen.insert(key)
            })
            .map(|row| row as u32)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let now = ctx.clock.now_millis();
        let (found, expired) =
            take_evicted(spill, keys, encoded, &missing, self.state_ttl_ms, now)?;
        let mut slots = Vec::with_capacity(found.len());
        let mut states = Vec::with_capacity(found.len());
        for entry in &found {
            let slot = self.groups.slot(&entry.key);
            self.groups.touched_at[slot] = entry.touched_at;
            slots.push(slot);
            states.push(entry.value.as_slice());
        }
        if !slots.is_empty() {
            codec.load(&mut self.groups, &states, &slots)?;
            self.groups.measure(&slots);
        }
        if expired > 0 {
            ctx.metrics.add_state_expired(expired);
        }
        tracing::trace!(
            loaded = slots.len(),
            expired,
            "loaded evicted groups back into memory"
        );
        Ok(())
    }

    /// Past the memory budget, evicts the least recently touched groups
    /// until a quarter of the budget is free again.
    pub(super) fn evict_if_over_budget(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let (Some(spill), Some(codec)) = (ctx.spill.as_mut(), &self.codec) else {
            return Ok(());
        };
        let held = self.groups.held();
        if self.groups.keys.is_none() || held <= spill.budget() {
            return Ok(());
        }
        let target = spill.budget() / 4 * 3;
        let victims = self.groups.least_recent(held - target);
        let keys = self.groups.key_columns(&victims)?;
        let kgs = key_groups_of(&keys, true, victims.len(), spill.max_key_groups())?;
        if let Some(kg) = kgs.iter().find(|kg| !spill.key_groups().contains(kg)) {
            return Err(Error::internal(format!(
                "an evicted group in key group {kg}, outside this subtask's key groups {:?}",
                spill.key_groups()
            )));
        }
        let values = codec.encode(&self.groups, &victims)?;
        let mut written = 0;
        let groups: Vec<EvictedGroup> = victims
            .iter()
            .zip(kgs)
            .zip(values)
            .map(|((&slot, key_group), value)| {
                let key = self.groups.key(slot).to_vec();
                written += key.len() + value.len();
                EvictedGroup {
                    key_group,
                    key,
                    value,
                }
            })
            .collect();
        spill.note_first_spill();
        let id = spill.next_fragment_id();
        for chunk in groups.chunks(WRITE_CHUNK) {
            spill.store().put_evicted_groups(spill.node(), id, chunk)?;
        }
        ctx.metrics.add_spilled(written);
        for &slot in &victims {
            self.groups.release(slot);
        }
        self.evicted = true;
        tracing::debug!(
            held,
            budget = spill.budget(),
            groups = victims.len(),
            written,
            "evicted the least recently touched groups to RocksDB"
        );
        Ok(())
    }

    /// Drops the evicted groups untouched for longer than `ttl` (see
    /// [`sweep_evicted`]).
    pub(super) fn sweep_evicted(&mut self, ctx: &mut OperatorContext, ttl: i64) -> Result<()> {
        if !self.evicted {
            return Ok(());
        }
        sweep_evicted(ctx, ttl, &mut self.last_sweep, "dropped groups")
    }
}
