//! Spilled keyed state: *runs* of mergeable aggregate state that operators
//! write into the job's RocksDB instance when their in-memory state passes
//! its budget, and read back one key group at a time when they emit.
//!
//! A run key is
//! `[3][node u32][namespace u64][key group u32][epoch u64][writer u32][seq u32]`,
//! all big-endian, so the runs of one namespace (a window's end) are one
//! contiguous range ordered by key group. The *epoch* is the id of the last
//! checkpoint barrier the writer had passed (0 before the first): the local
//! snapshot of checkpoint `c` is taken after its barrier, so it may hold
//! runs of epoch `>= c` that already contain state the checkpoint also holds
//! in memory form. A restore of `c` therefore takes only runs of epoch `< c`.

use std::ops::Range;

use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteBatch};

use super::backend::{JobStore, RestoredSnapshot};
use crate::error::{Error, Result};

/// Kind byte of a run (keyed state is 1, operator state 2).
const RUN: u8 = 3;
/// Length of an encoded run key.
const RUN_KEY_LEN: usize = 33;
/// Length of the `[kind][node][namespace]` prefix.
const NAMESPACE_PREFIX_LEN: usize = 13;

/// Identifies one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunKey {
    /// The operator's logical node.
    pub node: u32,
    /// What the state belongs to within the operator: a window's end, or 0.
    pub namespace: u64,
    /// The key group of every row in the run.
    pub key_group: u32,
    /// The last checkpoint barrier the writer had passed.
    pub epoch: u64,
    /// The writing subtask ([`RunKey::RESTORED`] for runs copied on restore).
    pub writer: u32,
    /// The writer's sequence number.
    pub seq: u32,
}

impl RunKey {
    /// The writer of runs copied from a checkpoint into a new attempt.
    pub const RESTORED: u32 = u32::MAX;

    fn encode(&self) -> [u8; RUN_KEY_LEN] {
        let mut out = [0u8; RUN_KEY_LEN];
        out[..NAMESPACE_PREFIX_LEN].copy_from_slice(&namespace_prefix(self.node, self.namespace));
        out[13..17].copy_from_slice(&self.key_group.to_be_bytes());
        out[17..25].copy_from_slice(&self.epoch.to_be_bytes());
        out[25..29].copy_from_slice(&self.writer.to_be_bytes());
        out[29..33].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<RunKey> {
        let raw: &[u8; RUN_KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::state(
                "decoding a run key",
                format!("expected {RUN_KEY_LEN} bytes, got {}", bytes.len()),
            )
        })?;
        if raw[0] != RUN {
            return Err(Error::state(
                "decoding a run key",
                format!("kind {} is not a run", raw[0]),
            ));
        }
        let u32_at = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Ok(RunKey {
            node: u32_at(1),
            namespace: u64_at(5),
            key_group: u32_at(13),
            epoch: u64_at(17),
            writer: u32_at(25),
            seq: u32_at(29),
        })
    }
}

/// Maps an `i64` namespace (a window end) to a `u64` that sorts the same way.
pub fn namespace_of(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// The inverse of [`namespace_of`].
pub fn namespace_value(namespace: u64) -> i64 {
    (namespace ^ (1 << 63)) as i64
}

fn namespace_prefix(node: u32, namespace: u64) -> [u8; NAMESPACE_PREFIX_LEN] {
    let mut out = [0u8; NAMESPACE_PREFIX_LEN];
    out[0] = RUN;
    out[1..5].copy_from_slice(&node.to_be_bytes());
    out[5..13].copy_from_slice(&namespace.to_be_bytes());
    out
}

/// The first possible key of `(node, namespace, key_group)`.
fn group_start(node: u32, namespace: u64, key_group: u32) -> Vec<u8> {
    let mut out = namespace_prefix(node, namespace).to_vec();
    out.extend_from_slice(&key_group.to_be_bytes());
    out
}

impl JobStore {
    /// Writes runs of `(node, namespace)` atomically, one per key group.
    pub fn put_runs(
        &self,
        node: u32,
        namespace: u64,
        epoch: u64,
        writer: u32,
        seq: u32,
        runs: impl IntoIterator<Item = (u32, Vec<u8>)>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (key_group, value) in runs {
            let key = RunKey {
                node,
                namespace,
                key_group,
                epoch,
                writer,
                seq,
            };
            batch.put(key.encode(), value);
        }
        self.write_batch(batch)
    }

    /// The runs of the first key group in `key_groups` at or after `from`
    /// that has any in `(node, namespace)`: the key group and its runs.
    pub fn next_runs(
        &self,
        node: u32,
        namespace: u64,
        from: u32,
        key_groups: &Range<u32>,
    ) -> Result<Option<(u32, Vec<Vec<u8>>)>> {
        let db = self.db();
        let start = group_start(node, namespace, from.max(key_groups.start));
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(group_start(node, namespace, key_groups.end));
        let mut found: Option<(u32, Vec<Vec<u8>>)> = None;
        for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
            let (k, v) = item.map_err(|e| scan_error(db, e))?;
            let key = RunKey::decode(&k)?;
            match &mut found {
                None => found = Some((key.key_group, vec![v.into_vec()])),
                Some((kg, runs)) if *kg == key.key_group => runs.push(v.into_vec()),
                Some(_) => break,
            }
        }
        Ok(found)
    }

    /// The namespaces of `node` with runs in `key_groups`, ascending: one
    /// seek per namespace, not a scan of the runs.
    pub fn run_namespaces(&self, node: u32, key_groups: &Range<u32>) -> Result<Vec<u64>> {
        let db = self.db();
        let mut out = Vec::new();
        if key_groups.is_empty() {
            return Ok(out);
        }
        let mut seek = group_start(node, 0, key_groups.start);
        loop {
            let mut iter = db.raw_iterator();
            iter.seek(&seek);
            let Some(k) = iter.key() else {
                iter.status().map_err(|e| scan_error(db, e))?;
                break;
            };
            if k.len() != RUN_KEY_LEN || k[0] != RUN || k[1..5] != node.to_be_bytes() {
                break;
            }
            let key = RunKey::decode(k)?;
            if key_groups.contains(&key.key_group) {
                out.push(key.namespace);
                match key.namespace.checked_add(1) {
                    Some(next) => seek = group_start(node, next, key_groups.start),
                    None => break,
                }
            } else if key.key_group < key_groups.start {
                seek = group_start(node, key.namespace, key_groups.start);
            } else {
                match key.namespace.checked_add(1) {
                    Some(next) => seek = group_start(node, next, key_groups.start),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Deletes every run of `(node, namespace)` in `key_groups`.
    pub fn delete_runs(&self, node: u32, namespace: u64, key_groups: &Range<u32>) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(
            group_start(node, namespace, key_groups.start),
            group_start(node, namespace, key_groups.end),
        );
        self.write_batch(batch)
    }
}

impl RestoredSnapshot {
    /// Copies the runs of `node` in `key_groups` that checkpoint
    /// [`RestoredSnapshot::checkpoint_id`] covers (epoch below it) into
    /// `store`, as epoch-0 runs of writer [`RunKey::RESTORED`] numbered from
    /// `*seq` on. Streams: holds one write batch of a few MiB at a time.
    /// Returns the bytes copied.
    pub fn copy_runs(
        &self,
        store: &JobStore,
        node: u32,
        key_groups: &Range<u32>,
        seq: &mut u32,
    ) -> Result<u64> {
        const BATCH_BYTES: usize = 4 << 20;
        let db = self.db();
        let mut prefix = vec![RUN];
        prefix.extend_from_slice(&node.to_be_bytes());
        let mut batch = WriteBatch::default();
        let mut copied = 0u64;
        for item in db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(|e| scan_error(db, e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let key = RunKey::decode(&k)?;
            if !key_groups.contains(&key.key_group) || key.epoch >= self.checkpoint_id() {
                continue;
            }
            let copy = RunKey {
                epoch: 0,
                writer: RunKey::RESTORED,
                seq: *seq,
                ..key
            };
            *seq = seq.wrapping_add(1);
            copied += v.len() as u64;
            batch.put(copy.encode(), &v);
            if batch.size_in_bytes() >= BATCH_BYTES {
                store.write_batch(std::mem::take(&mut batch))?;
            }
        }
        store.write_batch(batch)?;
        Ok(copied)
    }
}

fn scan_error(db: &DB, e: rocksdb::Error) -> Error {
    Error::state(
        format!("scanning runs in RocksDB at {}", db.path().display()),
        e,
    )
}
