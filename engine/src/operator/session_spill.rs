//! How session-window state goes to RocksDB and back (see
//! [`crate::state::SessionFragment`]): a spilled key's sessions are one
//! fragment, `[count u32]` then per session `[start i64][end i64][len u32]`
//! and the accumulators' state in Arrow's row format.

use arrow::array::ArrayRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::grouped_state::{AggregateSpec, SingleGroupState};
use super::snapshot::rows_by_key_group;
use crate::error::{Error, Result};
use crate::partition::KeyGroup;

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
