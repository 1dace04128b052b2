//! How session-window state goes to RocksDB and back (see
//! [`crate::state::SessionFragment`]): a spilled key's sessions are one
//! fragment, `[count u32]` then per session `[start i64][end i64][len u32]`
//! and the accumulators' state in Arrow's row format. Also the session
//! operator's spilling, firing and merging back.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::ArrayRef;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::grouped_state::{AggregateSpec, SingleGroupState};
use super::session_window_aggregate::{Session, SessionWindowAggregateOperator, take_ended};
use super::snapshot::rows_by_key_group;
use super::spill::StateSpill;
use super::{Collector, OperatorContext};
use crate::error::{Error, Result};
use crate::partition::KeyGroup;
use crate::state::{JobStore, SessionFragment};

/// A session read back from a fragment.
pub(super) struct SpilledSession {
    pub start: i64,
    pub end: i64,
    pub state: SingleGroupState,
}

/// Encodes and decodes the sessions of one key.
pub(super) struct SessionCodec {
    state_rows: RowConverter,
    widths: Vec<usize>,
}

impl SessionCodec {
    /// A codec for the accumulator state of `single` (the session
    /// aggregates without keys); `None` when the row format cannot hold
    /// that state, and the operator then keeps its state in memory.
    pub fn new(single: &AggregateSpec) -> Result<Option<Self>> {
        let mut fields = Vec::new();
        for agg in &single.aggregates {
            for field in agg.state_fields()? {
                fields.push(SortField::new(field.data_type().clone()));
            }
        }
        let widths = single.state_widths()?;
        Ok(RowConverter::new(fields)
            .ok()
            .map(|state_rows| SessionCodec { state_rows, widths }))
    }

    /// The state of many sessions, as rows: `states[i]` are session `i`'s
    /// one-row state columns.
    pub fn state_rows(&self, states: &[Vec<ArrayRef>]) -> Result<Rows> {
        let width = self.widths.iter().sum::<usize>();
        let mut columns = Vec::with_capacity(width);
        for c in 0..width {
            let parts: Vec<&dyn arrow::array::Array> = states
                .iter()
                .map(|s| s.get(c).map(|a| a.as_ref()))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::internal("session state is narrower than its aggregates"))?;
            columns.push(arrow::compute::concat(&parts)?);
        }
        Ok(self.state_rows.convert_columns(&columns)?)
    }

    /// Decodes one fragment.
    pub fn decode(&self, single: &AggregateSpec, value: &[u8]) -> Result<Vec<SpilledSession>> {
        let mut reader = Reader(value);
        let count = reader.u32()?;
        let mut out = Vec::with_capacity(count as usize);
        let parser = self.state_rows.parser();
        for _ in 0..count {
            let start = reader.i64()?;
            let end = reader.i64()?;
            let len = reader.u32()? as usize;
            let bytes = reader.take(len)?;
            let row = parser.parse(bytes);
            let columns = self.state_rows.convert_rows([row])?;
            let mut state = single.new_single_state()?;
            state.restore_columns(&columns, &self.widths)?;
            out.push(SpilledSession { start, end, state });
        }
        if !reader.0.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(out)
    }
}

/// Appends one key's sessions to a fragment value: `(start, end, row)`.
pub(super) fn encode_sessions<'a>(
    sessions: impl ExactSizeIterator<Item = (i64, i64, &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(sessions.len() as u32).to_be_bytes());
    for (start, end, row) in sessions {
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
        out.extend_from_slice(&(row.len() as u32).to_be_bytes());
        out.extend_from_slice(row);
    }
    out
}

/// The key group of every session key, hashed as the job's shuffle hashes
/// the key columns (`key_columns` empty: one key for the whole stream).
pub(super) fn key_groups_of(
    keys: &[ArrayRef],
    hashed: bool,
    rows: usize,
    max_key_groups: u32,
) -> Result<Vec<KeyGroup>> {
    let hashed: Vec<usize> = if hashed {
        (0..keys.len()).collect()
    } else {
        Vec::new()
    };
    let mut out = vec![0; rows];
    for (kg, indices) in rows_by_key_group(keys, &hashed, rows, max_key_groups)? {
        for i in indices {
            out[i as usize] = kg;
        }
    }
    Ok(out)
}

fn corrupt(why: &str) -> Error {
    Error::state("decoding spilled sessions", why.to_string())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

impl SessionWindowAggregateOperator {
    /// Fires with spilled sessions: per key group, the keys that may fire
    /// (in memory, or with a due timer) get their fragments merged back
    /// first.
    pub(super) fn fire_spilled(
        &mut self,
        bound: i64,
        spill: &mut StateSpill,
        out: &mut Collector,
    ) -> Result<()> {
        let candidates: Vec<OwnedRow> = self
            .sessions
            .iter()
            .filter(|(_, sessions)| sessions.iter().any(|s| s.end <= bound))
            .map(|(key, _)| key.clone())
            .collect();
        let key_arrays = self
            .converter
            .convert_rows(candidates.iter().map(|k| k.row()))?;
        let kgs = key_groups_of(
            &key_arrays,
            !self.key_groups.is_empty(),
            candidates.len(),
            spill.max_key_groups(),
        )?;
        let mut in_memory: BTreeMap<u32, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for (key, kg) in candidates.iter().zip(kgs) {
            in_memory
                .entry(kg)
                .or_default()
                .insert(key.as_ref().to_vec());
        }
        // One key group at a time, so a firing holds one key group's
        // spilled sessions.
        let mut next_spilled = i64::MAX;
        for kg in spill.key_groups().clone() {
            let mut keys = in_memory.remove(&kg).unwrap_or_default();
            let (due, next) = spill
                .store()
                .due_sessions(spill.node(), kg, bound, |timer| spill.is_consumed(timer))?;
            keys.extend(due);
            next_spilled = next_spilled.min(next.unwrap_or(i64::MAX));
            if keys.is_empty() {
                continue;
            }
            let keys: Vec<Vec<u8>> = keys.into_iter().collect();
            // At the end of input everything comes back once: no need to
            // remember each entry taken.
            self.merge_back(spill, kg, &keys, bound != i64::MAX)?;
            let mut fired: Vec<(OwnedRow, Session)> = Vec::new();
            for key in &keys {
                let owned = self.converter.parser().parse(key).owned();
                if let Some(sessions) = self.sessions.get_mut(&owned) {
                    take_ended(&owned, sessions, bound, &mut fired);
                    if sessions.is_empty() {
                        self.sessions.remove(&owned);
                    }
                }
            }
            self.emit_fired(fired, out)?;
        }
        if bound == i64::MAX {
            spill.consume_session_state()?;
            self.spilled = false;
        }
        self.next_end = next_spilled.min(self.earliest_end_in_memory());
        Ok(())
    }

    /// Merges the spilled fragments of `keys` (of key group `kg`) back into
    /// memory.
    fn merge_back(
        &mut self,
        spill: &mut StateSpill,
        kg: u32,
        keys: &[Vec<u8>],
        track: bool,
    ) -> Result<()> {
        let Some(codec) = &self.codec else {
            return Ok(());
        };
        let fragments = spill.store().session_fragments(spill.node(), kg, keys)?;
        let mut consumed = Vec::new();
        let mut restored = Vec::new();
        for (key, fragments) in keys.iter().zip(fragments) {
            for fragment in fragments {
                if spill.is_consumed(&fragment.key) {
                    continue;
                }
                let sessions = codec.decode(&self.single, &fragment.value)?;
                if track {
                    let ends: Vec<i64> = sessions.iter().map(|s| s.end).collect();
                    consumed.extend(JobStore::session_timer_keys(
                        spill.node(),
                        kg,
                        key,
                        fragment.id,
                        &ends,
                    ));
                    consumed.push(fragment.key);
                }
                if !sessions.is_empty() {
                    let owned = self.converter.parser().parse(key).owned();
                    restored.push((owned, sessions));
                }
            }
        }
        for (owned, sessions) in restored {
            for s in sessions {
                let bytes = Self::session_bytes(&s.state, &owned);
                self.held_bytes += bytes;
                let session = Session {
                    start: s.start,
                    end: s.end,
                    state: s.state,
                    bytes,
                };
                self.add_session(owned.clone(), session)?;
            }
        }
        if !consumed.is_empty() {
            spill.consume(consumed)?;
        }
        Ok(())
    }

    /// Past the memory budget, writes every session in memory out as one
    /// fragment per key, with its timers.
    pub(super) fn spill_if_over_budget(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let (Some(spill), Some(codec)) = (&mut ctx.spill, &self.codec) else {
            return Ok(());
        };
        if self.held_bytes <= spill.budget() || self.sessions.is_empty() {
            return Ok(());
        }
        let held = self.held_bytes;
        self.held_bytes = 0;
        let mut keys = Vec::with_capacity(self.sessions.len());
        let mut lists = Vec::with_capacity(self.sessions.len());
        for (key, sessions) in std::mem::take(&mut self.sessions) {
            keys.push(key);
            lists.push(sessions);
        }
        let key_arrays = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        let kgs = key_groups_of(
            &key_arrays,
            !self.key_groups.is_empty(),
            keys.len(),
            spill.max_key_groups(),
        )?;
        if let Some(kg) = kgs.iter().find(|kg| !spill.key_groups().contains(kg)) {
            return Err(Error::internal(format!(
                "spilled sessions in key group {kg}, outside this subtask's key groups {:?}",
                spill.key_groups()
            )));
        }
        // The sessions go: their state is taken, not copied.
        let mut states = Vec::new();
        let mut bounds: Vec<Vec<(i64, i64)>> = Vec::with_capacity(lists.len());
        for sessions in lists {
            bounds.push(sessions.iter().map(|s| (s.start, s.end)).collect());
            for s in sessions {
                states.push(s.state.into_columns()?);
            }
        }
        let rows = codec.state_rows(&states)?;
        drop(states);
        let mut fragments = Vec::with_capacity(keys.len());
        let mut next = 0;
        let mut written = 0;
        for ((key, sessions), kg) in keys.iter().zip(&bounds).zip(kgs) {
            let base = next;
            next += sessions.len();
            let value = encode_sessions(
                sessions
                    .iter()
                    .enumerate()
                    .map(|(j, &(start, end))| (start, end, rows.row(base + j).data())),
            );
            written += value.len();
            fragments.push(SessionFragment {
                key_group: kg,
                key: key.as_ref().to_vec(),
                value,
                ends: sessions.iter().map(|&(_, end)| end).collect(),
            });
        }
        spill.note_first_spill();
        let id = spill.next_fragment_id();
        for chunk in fragments.chunks(4096) {
            spill
                .store()
                .put_session_fragments(spill.node(), id, chunk)?;
        }
        ctx.metrics.add_spilled(written);
        self.spilled = true;
        tracing::debug!(held, written, keys = keys.len(), "spilled sessions");
        Ok(())
    }
}
