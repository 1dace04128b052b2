//! Interval joins: the bounds that say when a row can match no more, and
//! dropping the rows the watermark closed (see the parent module's docs).

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};

use super::{Collector, Emitted, JoinOperator, OperatorContext, RowKind, Side, alone};
use crate::error::{Error, Result};
use crate::operator::evictable::{EvictableValue, KeyGroupsOf};

/// An interval join's bounds: a pair matches when `right_time - left_time`
/// lies in `[lower_ms, upper_ms]` (the join's condition says so too; the
/// bounds say when a row can match no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalBounds {
    /// The left input's event-time column.
    pub left_time: usize,
    /// The right input's event-time column.
    pub right_time: usize,
    /// The least `right_time - left_time` of a pair, in milliseconds.
    pub lower_ms: i64,
    /// The greatest `right_time - left_time` of a pair, in milliseconds.
    pub upper_ms: i64,
}

impl IntervalBounds {
    /// The time column of `side`.
    pub(super) fn time_column(&self, side: Side) -> usize {
        match side {
            Side::Left => self.left_time,
            Side::Right => self.right_time,
        }
    }

    /// The last event time at which a row of `side` at `time` can still
    /// match a row of the other side.
    pub(super) fn expiry(&self, side: Side, time: i64) -> i64 {
        match side {
            Side::Left => time.saturating_add(self.upper_ms),
            Side::Right => time.saturating_sub(self.lower_ms),
        }
    }

    /// How far the output watermark trails the input's.
    pub(super) fn delay_ms(&self) -> i64 {
        self.upper_ms.max(-self.lower_ms).max(0)
    }
}

/// Event times, in milliseconds, of a timestamp column (`None`: null).
pub(super) fn event_times(column: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let zone = match column.data_type() {
        DataType::Timestamp(_, zone) => zone.clone(),
        other => {
            return Err(Error::internal(format!(
                "an interval join's time column is {other}, not a timestamp"
            )));
        }
    };
    let millis = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, zone))?;
    let millis = millis
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| Error::internal("a cast to milliseconds gave another type"))?;
    Ok(millis.iter().collect())
}

impl JoinOperator {
    /// Drops an interval join's rows that can match no more now that the
    /// watermark is at `watermark`, emitting the outer or anti join's rows
    /// that never matched.
    pub(super) fn expire(
        &mut self,
        watermark: i64,
        ctx: &mut OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let Some(bounds) = self.spec.interval else {
            return Ok(());
        };
        let later = self.expiries.split_off(&watermark);
        let due = std::mem::replace(&mut self.expiries, later);
        if due.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = due.into_values().flatten().collect();
        keys.sort_unstable();
        keys.dedup();
        if self.keyed.may_have_evicted() {
            let missing: Vec<&[u8]> = keys
                .iter()
                .filter(|k| !self.state.contains_key(k.as_slice()))
                .map(Vec::as_slice)
                .collect();
            let groups = self
                .key_rows
                .key_groups_of(&missing, ctx.task.max_key_groups)?;
            let mut by_group: BTreeMap<crate::partition::KeyGroup, Vec<Vec<u8>>> = BTreeMap::new();
            for (key, group) in missing.iter().zip(groups) {
                by_group.entry(group).or_default().push(key.to_vec());
            }
            self.keyed.load_keys(&mut self.state, by_group, ctx)?;
        }
        let kind = self.spec.kind;
        let mut emitted: Vec<Emitted> = Vec::new();
        for key in keys {
            let Some(entries) = self.state.get_mut(&key) else {
                continue;
            };
            let mut next: Option<i64> = None;
            for side in [Side::Left, Side::Right] {
                let rows = entries.side(side);
                if rows.is_empty() {
                    continue;
                }
                let converter = &self.rows[side.index()];
                let parser = converter.parser();
                let columns = converter.convert_rows(rows.iter().map(|e| parser.parse(&e.row)))?;
                let times = event_times(&columns[bounds.time_column(side)])?;
                let emits_alone =
                    kind.preserves(side) || (kind.is_anti() && kind.filtered_side() == Some(side));
                let mut kept = Vec::with_capacity(rows.len());
                for (entry, time) in rows.iter().zip(times) {
                    let expiry = time.map_or(i64::MIN, |t| bounds.expiry(side, t));
                    if expiry >= watermark {
                        next = Some(next.map_or(expiry, |n| n.min(expiry)));
                        kept.push(entry.clone());
                    } else if emits_alone && entry.matches == 0 {
                        for _ in 0..entry.copies {
                            emitted.push(alone(side, &entry.row, RowKind::Insert));
                        }
                    }
                }
                entries.set_side(side, kept);
            }
            if entries.is_empty() {
                self.state.remove(&key);
                self.keyed.forget(&key);
            } else {
                self.keyed.touch(&key, entries.heap_size(), ctx);
                if let Some(next) = next {
                    self.expiries.entry(next).or_default().insert(key);
                }
            }
        }
        self.emit(emitted, out)?;
        self.keyed
            .evict_if_over_budget(&mut self.state, &self.key_rows, ctx)
    }
}
