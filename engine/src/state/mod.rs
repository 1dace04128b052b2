//! Keyed state on RocksDB and durable, incremental checkpoints on an object
//! store.
//!
//! Each worker process opens one [`StateBackend`] (its local state directory,
//! a block cache and a write-buffer budget shared by every job). A job attempt
//! gets a fresh RocksDB instance, its [`JobStore`], into which operators write
//! their state as [`StateWrites`] under [`StateKey`]s: keyed state per
//! (operator, key group), operator state per (operator, subtask). Operators
//! past their memory budget also write spilled state straight into it: runs
//! of aggregate state (see [`RunKey`]), session fragments with timers (see
//! [`SessionFragment`]) and the updating aggregate's evicted groups (see
//! [`EvictedGroup`]).
//!
//! A checkpoint goes through three steps:
//!
//! ```text
//!  JobStore::snapshot          CheckpointStorage::upload         CheckpointStorage::commit
//!  RocksDB checkpoint    ──>   new *.sst  -> shared/           ──>  chk-<id>/_manifest.json
//!  (hard links, local)         others     -> chk-<id>/<worker>/     (written last, atomically)
//! ```
//!
//! SST files are immutable, so each one is uploaded once and later
//! checkpoints only reference it (the [`UploadTracker`] remembers what a
//! worker already uploaded): checkpoints are incremental. A checkpoint exists
//! once its manifest exists; the manifest carries a crc32 of its own body and
//! a crc32 and size for every file, verified on every read.
//! [`CheckpointStorage::latest`] finds the newest usable checkpoint,
//! [`CheckpointStorage::download`] restores one worker's snapshot as a
//! read-only [`RestoredSnapshot`], and [`CheckpointStorage::retain`] deletes
//! what old checkpoints no longer need.
//!
//! Failpoints (compiled in with the `failpoints` feature):
//! `state::after-local-snapshot`, `state::after-upload`,
//! `state::before-manifest`; the `return` action makes the step fail.

mod backend;
mod groups;
mod key;
mod manifest;
mod retain;
mod runs;
mod sessions;
mod storage;

#[cfg(test)]
mod tests;

pub use backend::{JobStore, LocalSnapshot, RestoredSnapshot, StateBackend, StateConfig};
pub use groups::EvictedGroup;
pub use key::{StateKey, StateWrites};
pub use manifest::{CheckpointManifest, SnapshotFile, WorkerSnapshot};
pub use retain::RetainStats;
pub use runs::{RunKey, namespace_of, namespace_value};
pub use sessions::{FragmentId, SessionFragment, StoredFragment};
pub use storage::{CheckpointStorage, UploadTracker};

/// Turns an identifier (job id, worker id) into one safe path segment:
/// ASCII letters, digits and `-` stay, `.` stays unless it leads, every other
/// byte becomes `_xx` (hex). Injective, so distinct ids never share a path.
pub(crate) fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Evaluates a failpoint that, when configured with `return`, fails the step
/// with a [`crate::Error::State`] naming it.
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |arg| {
            Err($crate::error::Error::state(
                concat!("failpoint ", $name),
                arg.unwrap_or_else(|| "injected failure".to_string()),
            ))
        })
    };
}
pub(crate) use failpoint;
