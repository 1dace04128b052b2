//! Spilled session-window state: per session key, append-only *fragments*
//! (the key's sessions when they were spilled) and one *timer* per spilled
//! session, ordered by the session's end, so a watermark finds the keys with
//! sessions it may fire without reading the sessions themselves.
//!
//! ```text
//! fragment  [4][node u32][key group u32][len u32][key][epoch u64][writer u32][seq u32]
//! timer     [5][node u32][key group u32][end u64][len u32][key][epoch u64][writer u32][seq u32]
//! ```
//!
//! As for runs (see [`super::RunKey`]), the epoch is the last barrier the
//! writer had passed, and a restore of checkpoint `c` takes only entries of
//! epoch `< c`. Entries are copied verbatim: a restored subtask starts its
//! epochs at `c`, so its own writes never collide with copied ones.
//!
//! The updating aggregate's evicted groups share the fragment's key layout
//! under their own kind byte (see [`super::EvictedGroup`]).

use std::ops::Range;

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::backend::{JobStore, RestoredSnapshot};
use super::runs::namespace_of;
use crate::error::{Error, Result};

const FRAGMENT: u8 = 4;
const TIMER: u8 = 5;
/// epoch, writer, seq.
const SUFFIX_LEN: usize = 16;

/// Who wrote a fragment and when: the tail of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentId {
    /// The last barrier the writer had passed.
    pub epoch: u64,
    /// The writing subtask.
    pub writer: u32,
    /// The writer's sequence number.
    pub seq: u32,
}

impl FragmentId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.writer.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    pub(super) fn decode(key: &[u8]) -> Result<FragmentId> {
        let start = key
            .len()
            .checked_sub(SUFFIX_LEN)
            .ok_or_else(|| bad_key(key))?;
        let tail = &key[start..];
        let u32_at =
            |i: usize| u32::from_be_bytes([tail[i], tail[i + 1], tail[i + 2], tail[i + 3]]);
        Ok(FragmentId {
            epoch: (u64::from(u32_at(0)) << 32) | u64::from(u32_at(4)),
            writer: u32_at(8),
            seq: u32_at(12),
        })
    }
}

/// One session key's spilled sessions, to write.
#[derive(Debug, Clone)]
pub struct SessionFragment {
    /// The key's key group.
    pub key_group: u32,
    /// The session key (the operator's row encoding of its key columns).
    pub key: Vec<u8>,
    /// The encoded sessions.
    pub value: Vec<u8>,
    /// The end of every session in `value`: one timer each.
    pub ends: Vec<i64>,
}

pub(super) fn prefix(kind: u8, node: u32, key_group: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(kind);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&key_group.to_be_bytes());
    out
}

fn push_key(out: &mut Vec<u8>, key: &[u8]) {
    // A key longer than u32::MAX bytes cannot be a row of session keys.
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// The prefix of every entry of `kind` of one key (a session key's
/// fragments, say).
fn entry_prefix(kind: u8, node: u32, key_group: u32, key: &[u8]) -> Vec<u8> {
    let mut out = prefix(kind, node, key_group);
    push_key(&mut out, key);
    out
}

/// The key of one entry of `kind`: `[kind][node][key group][len][key][id]`.
pub(super) fn entry_key(
    kind: u8,
    node: u32,
    key_group: u32,
    key: &[u8],
    id: FragmentId,
) -> Vec<u8> {
    let mut out = entry_prefix(kind, node, key_group, key);
    id.encode(&mut out);
    out
}

fn timer_key(node: u32, key_group: u32, end: i64, key: &[u8], id: FragmentId) -> Vec<u8> {
    let mut out = prefix(TIMER, node, key_group);
    out.extend_from_slice(&namespace_of(end).to_be_bytes());
    push_key(&mut out, key);
    id.encode(&mut out);
    out
}

fn bad_key(key: &[u8]) -> Error {
    Error::state("decoding a session-state key", format!("{key:02x?}"))
}

/// The session end inside a timer key.
fn timer_end(timer: &[u8]) -> Result<i64> {
    let at = 1 + 4 + 4;
    let bytes: [u8; 8] = timer
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_key(timer))?;
    Ok(super::runs::namespace_value(u64::from_be_bytes(bytes)))
}

/// The session key inside a timer key.
fn timer_session_key(timer: &[u8]) -> Result<&[u8]> {
    // kind, node, key group, end, length
    let at = 1 + 4 + 4 + 8;
    let len_bytes: [u8; 4] = timer
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_key(timer))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    timer
        .get(at + 4..at + 4 + len)
        .ok_or_else(|| bad_key(timer))
}

/// One stored fragment: its RocksDB key and value.
#[derive(Debug, Clone)]
pub struct StoredFragment {
    /// The fragment's key in the store (to delete it once merged back).
    pub key: Vec<u8>,
    /// Who wrote it.
    pub id: FragmentId,
    /// The encoded sessions.
    pub value: Vec<u8>,
}

impl JobStore {
    /// Writes the fragments of one spill, with their timers.
    pub fn put_session_fragments(
        &self,
        node: u32,
        id: FragmentId,
        fragments: &[SessionFragment],
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for f in fragments {
            batch.put(entry_key(FRAGMENT, node, f.key_group, &f.key, id), &f.value);
            for &end in &f.ends {
                batch.put(timer_key(node, f.key_group, end, &f.key, id), []);
            }
        }
        self.write_batch(batch)
    }

    /// The session keys of `key_group` with a spilled session ending at or
    /// before `bound`, deduplicated, skipping timers `skip` says are gone;
    /// and the end of the first timer after `bound`, if any.
    pub fn due_sessions(
        &self,
        node: u32,
        key_group: u32,
        bound: i64,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<Vec<u8>>, Option<i64>)> {
        let db = self.db();
        let start = prefix(TIMER, node, key_group);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix(TIMER, node, key_group.saturating_add(1)));
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut next = None;
        for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
            let (k, _) =
                item.map_err(|e| super::backend::rocks("scanning timers in", db.path(), e))?;
            if skip(&k) {
                continue;
            }
            let end = timer_end(&k)?;
            if end > bound {
                next = Some(end);
                break;
            }
            let session_key = timer_session_key(&k)?;
            if keys.last().map(Vec::as_slice) != Some(session_key) {
                keys.push(session_key.to_vec());
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok((keys, next))
    }

    /// Every fragment of each of `keys` (session keys of one key group), in
    /// the order of `keys`: one iterator, one seek per key.
    pub fn session_fragments(
        &self,
        node: u32,
        key_group: u32,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Vec<StoredFragment>>> {
        self.entries_of(FRAGMENT, node, key_group, keys)
    }

    /// Every entry of `kind` of each of `keys` (of one key group), in the
    /// order of `keys`: one iterator, one seek per key (sorted keys make
    /// the seeks move forward only).
    pub(super) fn entries_of(
        &self,
        kind: u8,
        node: u32,
        key_group: u32,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Vec<StoredFragment>>> {
        let db = self.db();
        let mut iter = db.raw_iterator();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let prefix = entry_prefix(kind, node, key_group, key);
            let mut fragments = Vec::new();
            iter.seek(&prefix);
            while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                if !k.starts_with(&prefix) || k.len() != prefix.len() + SUFFIX_LEN {
                    break;
                }
                fragments.push(StoredFragment {
                    id: FragmentId::decode(k)?,
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
                iter.next();
            }
            iter.status()
                .map_err(|e| super::backend::rocks("reading spilled state in", db.path(), e))?;
            out.push(fragments);
        }
        Ok(out)
    }

    /// The timer keys of a fragment's sessions.
    pub fn session_timer_keys(
        node: u32,
        key_group: u32,
        key: &[u8],
        id: FragmentId,
        ends: &[i64],
    ) -> Vec<Vec<u8>> {
        ends.iter()
            .map(|&end| timer_key(node, key_group, end, key, id))
            .collect()
    }

    /// Whether any fragment of `node` is in `key_groups`.
    pub fn has_session_fragments(&self, node: u32, key_groups: &Range<u32>) -> Result<bool> {
        self.has_entries(FRAGMENT, node, key_groups)
    }

    /// Whether any entry of `kind` of `node` is in `key_groups`.
    pub(super) fn has_entries(&self, kind: u8, node: u32, key_groups: &Range<u32>) -> Result<bool> {
        if key_groups.is_empty() {
            return Ok(false);
        }
        let db = self.db();
        let start = prefix(kind, node, key_groups.start);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix(kind, node, key_groups.end));
        let mut iter = db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read);
        match iter.next() {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(super::backend::rocks(
                "reading spilled state in",
                db.path(),
                e,
            )),
        }
    }

    /// Deletes every fragment and timer of `node` in `key_groups`.
    pub fn delete_session_state(&self, node: u32, key_groups: &Range<u32>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for kind in [FRAGMENT, TIMER] {
            batch.delete_range(
                prefix(kind, node, key_groups.start),
                prefix(kind, node, key_groups.end),
            );
        }
        self.write_batch(batch)
    }

    /// Deletes entries by their keys.
    pub fn delete_keys(&self, keys: impl IntoIterator<Item = Vec<u8>>) -> Result<()> {
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete(key);
        }
        self.write_batch(batch)
    }
}

impl RestoredSnapshot {
    /// Copies the session fragments and timers of `node` in `key_groups`
    /// that this checkpoint covers (epoch below it) into `store`, verbatim,
    /// one write batch of a few MiB at a time. Returns the bytes copied.
    pub fn copy_session_state(
        &self,
        store: &JobStore,
        node: u32,
        key_groups: &Range<u32>,
    ) -> Result<u64> {
        self.copy_entries(store, &[FRAGMENT, TIMER], node, key_groups)
    }

    /// Copies the entries of `kinds` (keyed as [`entry_key`]) of `node` in
    /// `key_groups` that this checkpoint covers, as
    /// [`RestoredSnapshot::copy_session_state`] does.
    pub(super) fn copy_entries(
        &self,
        store: &JobStore,
        kinds: &[u8],
        node: u32,
        key_groups: &Range<u32>,
    ) -> Result<u64> {
        const BATCH_BYTES: usize = 4 << 20;
        let db = self.db();
        let mut copied = 0u64;
        let mut batch = WriteBatch::default();
        for &kind in kinds {
            if key_groups.is_empty() {
                break;
            }
            let start = prefix(kind, node, key_groups.start);
            let mut read = ReadOptions::default();
            read.set_iterate_upper_bound(prefix(kind, node, key_groups.end));
            for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
                let (k, v) = item.map_err(|e| {
                    super::backend::rocks("copying spilled state from", db.path(), e)
                })?;
                if FragmentId::decode(&k)?.epoch >= self.checkpoint_id() {
                    continue;
                }
                copied += (k.len() + v.len()) as u64;
                batch.put(&k, &v);
                if batch.size_in_bytes() >= BATCH_BYTES {
                    store.write_batch(std::mem::take(&mut batch))?;
                }
            }
        }
        store.write_batch(batch)?;
        Ok(copied)
    }
}
