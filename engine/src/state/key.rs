//! State keys and write batches.
//!
//! A [`StateKey`] encodes as `[kind u8][node u32 BE][key group or subtask u32 BE]`:
//! big-endian integers sort like the numbers, so all keyed state of one node
//! is one contiguous, ascending range of RocksDB keys.

use crate::error::{Error, Result};

/// Kind byte of keyed state.
const KEYED: u8 = 1;
/// Kind byte of operator (non-keyed) state.
const OPERATOR: u8 = 2;
/// Length of an encoded key.
pub(crate) const KEY_LEN: usize = 9;

/// Identifies one stored value in a job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    /// Keyed state of operator `node` (a logical node index of the job graph) for one key group.
    Keyed {
        /// The operator's logical node index.
        node: u32,
        /// The key group.
        key_group: u32,
    },
    /// Non-keyed state of operator `node` in one subtask (source positions, sink pending commits).
    Operator {
        /// The operator's logical node index.
        node: u32,
        /// The subtask index.
        subtask: u32,
    },
}

impl StateKey {
    /// The key's byte encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, node, index) = match *self {
            StateKey::Keyed { node, key_group } => (KEYED, node, key_group),
            StateKey::Operator { node, subtask } => (OPERATOR, node, subtask),
        };
        encode_parts(kind, node, index).to_vec()
    }

    /// Decodes a key written by [`StateKey::encode`].
    pub fn decode(bytes: &[u8]) -> Result<StateKey> {
        let bad = |why: &str| Error::state("decoding a state key", format!("{why}: {bytes:02x?}"));
        let raw: &[u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| bad(&format!("expected {KEY_LEN} bytes, got {}", bytes.len())))?;
        let node = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
        let index = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]);
        match raw[0] {
            KEYED => Ok(StateKey::Keyed {
                node,
                key_group: index,
            }),
            OPERATOR => Ok(StateKey::Operator {
                node,
                subtask: index,
            }),
            kind => Err(bad(&format!("unknown key kind {kind}"))),
        }
    }
}

/// The encoding of a keyed-state key of `node` for `key_group`.
pub(crate) fn keyed_key(node: u32, key_group: u32) -> [u8; KEY_LEN] {
    encode_parts(KEYED, node, key_group)
}

/// The 5-byte prefix shared by every operator-state key of `node`.
pub(crate) fn operator_prefix(node: u32) -> [u8; 5] {
    let mut out = [0u8; 5];
    out[0] = OPERATOR;
    out[1..].copy_from_slice(&node.to_be_bytes());
    out
}

fn encode_parts(kind: u8, node: u32, index: u32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[0] = kind;
    out[1..5].copy_from_slice(&node.to_be_bytes());
    out[5..].copy_from_slice(&index.to_be_bytes());
    out
}

/// One write to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateWrite {
    Put(StateKey, Vec<u8>),
    Delete(StateKey),
}

/// Puts and deletes applied atomically by [`crate::state::JobStore::write`],
/// in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateWrites {
    writes: Vec<StateWrite>,
    bytes: usize,
}

impl StateWrites {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: StateKey, value: Vec<u8>) {
        self.bytes += KEY_LEN + value.len();
        self.writes.push(StateWrite::Put(key, value));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: StateKey) {
        self.bytes += KEY_LEN;
        self.writes.push(StateWrite::Delete(key));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The number of puts and deletes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Bytes of keys and values to write.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn into_writes(self) -> Vec<StateWrite> {
        self.writes
    }
}
