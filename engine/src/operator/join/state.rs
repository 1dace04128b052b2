//! A join key's rows on both sides, as kept in memory and evicted.

use super::Side;
use crate::error::Result;
use crate::operator::evictable::{EvictableValue, corrupt};

/// One distinct row of a side, with how many copies of it the side holds
/// and how many rows of the other side (copies counted) it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The row, encoded by its side's row converter.
    pub row: Vec<u8>,
    /// Copies of the row held.
    pub copies: u64,
    /// Rows of the other side it joins with (for an outer join: when it
    /// drops to 0 the row is padded with nulls again; for a semi or anti
    /// join: whether it is emitted).
    pub matches: u64,
}

/// The rows of one join key, per side, each side sorted by its rows'
/// bytes, so that a row is found by binary search: a key may hold many rows
/// (every auction of a window, in a window's join).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyRows {
    sides: [Vec<Entry>; 2],
}

impl KeyRows {
    /// The rows of `side`.
    pub fn side(&self, side: Side) -> &[Entry] {
        &self.sides[side.index()]
    }

    /// The rows of `side`, to change their match counts.
    pub fn side_mut(&mut self, side: Side) -> &mut [Entry] {
        &mut self.sides[side.index()]
    }

    /// Adds a copy of `row` to `side`, which matches `matches` rows of the
    /// other side.
    pub fn add(&mut self, side: Side, row: &[u8], matches: u64) {
        let rows = &mut self.sides[side.index()];
        match rows.binary_search_by(|e| e.row.as_slice().cmp(row)) {
            Ok(at) => rows[at].copies += 1,
            Err(at) => rows.insert(
                at,
                Entry {
                    row: row.to_vec(),
                    copies: 1,
                    matches,
                },
            ),
        }
    }

    /// Takes a copy of `row` back from `side`; false when the side holds
    /// none.
    pub fn remove(&mut self, side: Side, row: &[u8]) -> bool {
        let rows = &mut self.sides[side.index()];
        let Ok(at) = rows.binary_search_by(|e| e.row.as_slice().cmp(row)) else {
            return false;
        };
        rows[at].copies -= 1;
        if rows[at].copies == 0 {
            rows.remove(at);
        }
        true
    }

    /// Replaces the rows of `side` (in the same order, some dropped).
    pub fn set_side(&mut self, side: Side, rows: Vec<Entry>) {
        self.sides[side.index()] = rows;
    }

    /// Whether neither side holds a row.
    pub fn is_empty(&self) -> bool {
        self.sides.iter().all(Vec::is_empty)
    }
}

/// Per side: its entry count, then per entry the row after its length
/// (u32 BE), its copies and its matches (u64 BE).
impl EvictableValue for KeyRows {
    fn encode(&self, out: &mut Vec<u8>) {
        for rows in &self.sides {
            out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
            for entry in rows {
                out.extend_from_slice(&(entry.row.len() as u32).to_be_bytes());
                out.extend_from_slice(&entry.row);
                out.extend_from_slice(&entry.copies.to_be_bytes());
                out.extend_from_slice(&entry.matches.to_be_bytes());
            }
        }
    }

    fn decode(mut bytes: &[u8]) -> Result<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            let (head, tail) = bytes
                .split_at_checked(n)
                .ok_or_else(|| corrupt("a join key's rows are truncated"))?;
            *bytes = tail;
            Ok(head)
        }
        fn u32_of(bytes: &mut &[u8]) -> Result<usize> {
            let b = take(bytes, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        fn u64_of(bytes: &mut &[u8]) -> Result<u64> {
            let mut b = [0u8; 8];
            b.copy_from_slice(take(bytes, 8)?);
            Ok(u64::from_be_bytes(b))
        }
        let mut rows = KeyRows::default();
        for side in &mut rows.sides {
            let count = u32_of(&mut bytes)?;
            for _ in 0..count {
                let len = u32_of(&mut bytes)?;
                // Encoded in order; a row out of order is corrupt state.
                let row = take(&mut bytes, len)?.to_vec();
                let copies = u64_of(&mut bytes)?;
                let matches = u64_of(&mut bytes)?;
                if side.last().is_some_and(|last| last.row >= row) {
                    return Err(corrupt("a join key's rows are out of order"));
                }
                side.push(Entry {
                    row,
                    copies,
                    matches,
                });
            }
        }
        if !bytes.is_empty() {
            return Err(corrupt("a join key's rows have trailing bytes"));
        }
        Ok(rows)
    }

    fn heap_size(&self) -> usize {
        self.sides
            .iter()
            .flatten()
            .map(|e| e.row.len() + std::mem::size_of::<Entry>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rows_count_copies_and_round_trip() {
        let mut rows = KeyRows::default();
        rows.add(Side::Left, b"a", 0);
        rows.add(Side::Left, b"a", 0);
        rows.add(Side::Right, b"bb", 2);
        assert_eq!(rows.side(Side::Left)[0].copies, 2);
        let mut bytes = Vec::new();
        rows.encode(&mut bytes);
        assert_eq!(KeyRows::decode(&bytes).unwrap(), rows);
        assert!(KeyRows::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(rows.remove(Side::Left, b"a"));
        assert!(rows.remove(Side::Left, b"a"));
        assert!(!rows.remove(Side::Left, b"a"));
        assert!(rows.remove(Side::Right, b"bb"));
        assert!(rows.is_empty());
    }
}
