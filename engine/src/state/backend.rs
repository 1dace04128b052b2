//! The worker-local side of state: the [`StateBackend`] (one per worker
//! process), a [`JobStore`] (one RocksDB instance per job attempt), its local
//! snapshots, and read-only [`RestoredSnapshot`]s.
//!
//! Local layout under [`StateConfig::dir`]:
//!
//! ```text
//! <dir>/<job id>/attempt-<n>/db                 the RocksDB instance
//! <dir>/<job id>/attempt-<n>/snapshots/chk-<id> RocksDB checkpoints (hard links)
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteBufferManager, WriteOptions,
};
use tracing::{debug, info};

use super::key::{self, StateKey, StateWrite, StateWrites};
use super::{failpoint, path_segment};
use crate::error::{Error, Result};

/// Where and with how much memory a worker keeps state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The local state directory (RocksDB instances and local snapshots).
    pub dir: PathBuf,
    /// The block cache shared by every job on the worker, in bytes.
    pub block_cache_bytes: usize,
    /// The memtable budget shared by every job on the worker, in bytes.
    pub write_buffer_bytes: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("weir-state"),
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// One per worker process: owns the local state directory and a block cache
/// and write-buffer manager shared by all job stores.
#[derive(Clone)]
pub struct StateBackend {
    inner: Arc<BackendInner>,
}

struct BackendInner {
    config: StateConfig,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateBackend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl StateBackend {
    /// Opens (creating if needed) the local state directory.
    pub fn open(config: StateConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            Error::io(
                format!("creating the state directory {}", config.dir.display()),
                e,
            )
        })?;
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        // Memtables are charged to the block cache too, so one budget bounds
        // both; writers are not stalled, memtables are flushed early instead.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes,
            false,
            cache.clone(),
        );
        Ok(Self {
            inner: Arc::new(BackendInner {
                config,
                cache,
                write_buffers,
            }),
        })
    }

    /// The configuration the backend was opened with.
    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// The local directory of a job (all its attempts).
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.inner.config.dir.join(path_segment(job_id))
    }

    /// A fresh RocksDB instance for one job attempt on this worker at
    /// `dir/<job_id>/attempt-<n>` (anything already there is removed, so
    /// close an earlier store of the same attempt first). Tuned for
    /// checkpointed state: lz4, the shared cache and write-buffer budget, and
    /// no write-ahead log.
    pub fn open_job(&self, job_id: &str, attempt: u32) -> Result<JobStore> {
        let attempt_dir = self.job_dir(job_id).join(format!("attempt-{attempt}"));
        remove_dir_if_exists(&attempt_dir)?;
        let db_dir = attempt_dir.join("db");
        std::fs::create_dir_all(&db_dir).map_err(|e| {
            Error::io(
                format!("creating the state directory {}", db_dir.display()),
                e,
            )
        })?;

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.inner.cache);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_write_buffer_manager(&self.inner.write_buffers);
        options.set_block_based_table_factory(&table);
        options.set_keep_log_file_num(2);
        let db = DB::open(&options, &db_dir).map_err(|e| rocks("opening", &db_dir, e))?;

        // Writes are made durable by checkpoints, not by a WAL.
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);

        let identity = db
            .get_db_identity()
            .map_err(|e| rocks("reading the identity of", &db_dir, e))?;
        let instance = instance_name(&identity, attempt);
        info!(job = job_id, attempt, dir = %db_dir.display(), instance, "opened job state");
        Ok(JobStore {
            inner: Arc::new(StoreInner {
                db,
                write_options,
                attempt_dir,
                instance,
            }),
        })
    }

    /// Deletes every local directory of the job (all attempts). Close the
    /// job's stores first.
    pub fn drop_job(&self, job_id: &str) -> Result<()> {
        let dir = self.job_dir(job_id);
        remove_dir_if_exists(&dir)?;
        debug!(job = job_id, dir = %dir.display(), "dropped local job state");
        Ok(())
    }
}

/// A short, path-safe name of one RocksDB instance: its identity (a UUID
/// RocksDB generates when it creates the database) without dashes. SST file
/// numbers are unique within an instance, so `<instance>-<file>` names an
/// immutable file forever.
fn instance_name(identity: &[u8], attempt: u32) -> String {
    let id: String = String::from_utf8_lossy(identity)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    if id.is_empty() {
        // Never expected; fall back to something still unique per process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("a{attempt}p{}t{nanos:x}", std::process::id())
    } else {
        id
    }
}

/// A job's RocksDB instance on this worker. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct JobStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    db: DB,
    write_options: WriteOptions,
    attempt_dir: PathBuf,
    instance: String,
}

impl fmt::Debug for JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStore")
            .field("dir", &self.inner.attempt_dir)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

impl JobStore {
    /// The attempt's directory (`<dir>/<job>/attempt-<n>`).
    pub fn dir(&self) -> &Path {
        &self.inner.attempt_dir
    }

    /// The name of this RocksDB instance used in shared file names.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Applies puts and deletes atomically (one WriteBatch).
    pub fn write(&self, writes: StateWrites) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for write in writes.into_writes() {
            match write {
                StateWrite::Put(key, value) => batch.put(key.encode(), value),
                StateWrite::Delete(key) => batch.delete(key.encode()),
            }
        }
        self.write_batch(batch)
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>> {
        get(&self.inner.db, key)
    }

    pub(super) fn db(&self) -> &DB {
        &self.inner.db
    }

    /// Applies a write batch with the store's write options (no WAL).
    pub(super) fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner
            .db
            .write_opt(batch, &self.inner.write_options)
            .map_err(|e| rocks("writing to", self.inner.db.path(), e))
    }

    /// Keyed entries of `node` whose key group is in `range`: (key_group, value), ascending.
    pub fn keyed(&self, node: u32, range: Range<u32>) -> Result<Vec<(u32, Vec<u8>)>> {
        keyed(&self.inner.db, node, range)
    }

    /// Every operator-state entry of `node`: (subtask, value), ascending.
    pub fn operator_entries(&self, node: u32) -> Result<Vec<(u32, Vec<u8>)>> {
        operator_entries(&self.inner.db, node)
    }

    /// Compacts all state into the bottom level: fewer, larger files, none
    /// shared with earlier checkpoints. Blocking.
    pub fn compact(&self) {
        self.inner.db.compact_range(None::<&[u8]>, None::<&[u8]>);
    }

    /// Takes a local snapshot for checkpoint `checkpoint_id`: a RocksDB
    /// checkpoint (hard links, memtable flushed) in
    /// `<job dir>/snapshots/chk-<id>`. Blocking work: callers run it in
    /// `spawn_blocking`.
    pub fn snapshot(&self, checkpoint_id: u64) -> Result<LocalSnapshot> {
        let started = std::time::Instant::now();
        let snapshots = self.inner.attempt_dir.join("snapshots");
        let dir = snapshots.join(format!("chk-{checkpoint_id}"));
        // A retried checkpoint id replaces its earlier, unfinished snapshot.
        remove_dir_if_exists(&dir)?;
        std::fs::create_dir_all(&snapshots).map_err(|e| {
            Error::io(
                format!("creating the snapshot directory {}", snapshots.display()),
                e,
            )
        })?;
        let checkpoint = Checkpoint::new(&self.inner.db)
            .map_err(|e| rocks("starting a snapshot of", self.inner.db.path(), e))?;
        checkpoint
            .create_checkpoint(&dir)
            .map_err(|e| rocks("writing the snapshot", &dir, e))?;
        failpoint!("state::after-local-snapshot");
        info!(
            checkpoint_id,
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "took local snapshot"
        );
        Ok(LocalSnapshot {
            checkpoint_id,
            dir,
            instance: self.inner.instance.clone(),
        })
    }
}

/// A local RocksDB checkpoint, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSnapshot {
    /// The checkpoint it was taken for.
    pub checkpoint_id: u64,
    /// Its directory.
    pub dir: PathBuf,
    /// The RocksDB instance it was taken from ([`JobStore::instance`]).
    pub instance: String,
}

impl LocalSnapshot {
    /// Deletes the local snapshot (once uploaded).
    pub fn remove(self) -> Result<()> {
        remove_dir_if_exists(&self.dir)
    }
}

/// A downloaded snapshot opened read-only.
pub struct RestoredSnapshot {
    db: DB,
    dir: PathBuf,
    checkpoint_id: u64,
}

impl fmt::Debug for RestoredSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoredSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RestoredSnapshot {
    /// Opens a downloaded snapshot directory read-only. Blocking.
    pub(crate) fn open(dir: &Path, checkpoint_id: u64) -> Result<Self> {
        let options = Options::default();
        let db = DB::open_for_read_only(&options, dir, false).map_err(|e| {
            Error::state(
                format!(
                    "checkpoint {checkpoint_id}: opening the restored snapshot {}",
                    dir.display()
                ),
                e,
            )
        })?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            checkpoint_id,
        })
    }

    pub(super) fn db(&self) -> &DB {
        &self.db
    }

    /// The checkpoint it belongs to.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// The local directory it was downloaded to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>> {
        get(&self.db, key)
    }

    /// Keyed entries of `node` whose key group is in `range`: (key_group, value), ascending.
    pub fn keyed(&self, node: u32, range: Range<u32>) -> Result<Vec<(u32, Vec<u8>)>> {
        keyed(&self.db, node, range)
    }

    /// Every operator-state entry of `node`: (subtask, value), ascending.
    pub fn operator_entries(&self, node: u32) -> Result<Vec<(u32, Vec<u8>)>> {
        operator_entries(&self.db, node)
    }
}

fn get(db: &DB, key: &StateKey) -> Result<Option<Vec<u8>>> {
    db.get(key.encode())
        .map_err(|e| rocks(&format!("reading {key:?} from"), db.path(), e))
}

fn keyed(db: &DB, node: u32, range: Range<u32>) -> Result<Vec<(u32, Vec<u8>)>> {
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let start = key::keyed_key(node, range.start);
    let mut read = ReadOptions::default();
    read.set_iterate_upper_bound(key::keyed_key(node, range.end).to_vec());
    let mut out = Vec::new();
    for item in db.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
        let (k, v) = item.map_err(|e| rocks("scanning keyed state in", db.path(), e))?;
        match StateKey::decode(&k)? {
            StateKey::Keyed { key_group, .. } => out.push((key_group, v.into_vec())),
            other => {
                return Err(Error::internal(format!(
                    "keyed-state scan of node {node} met {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

fn operator_entries(db: &DB, node: u32) -> Result<Vec<(u32, Vec<u8>)>> {
    let prefix = key::operator_prefix(node);
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
        let (k, v) = item.map_err(|e| rocks("scanning operator state in", db.path(), e))?;
        if !k.starts_with(&prefix) {
            break;
        }
        match StateKey::decode(&k)? {
            StateKey::Operator { subtask, .. } => out.push((subtask, v.into_vec())),
            other => {
                return Err(Error::internal(format!(
                    "operator-state scan of node {node} met {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

pub(super) fn rocks(what: &str, path: &Path, e: rocksdb::Error) -> Error {
    Error::state(format!("{what} RocksDB at {}", path.display()), e)
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}
