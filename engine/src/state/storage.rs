//! Durable checkpoint storage of one job on an object store.
//!
//! Layout under `<url>/<job id>/`:
//!
//! ```text
//! shared/<worker>-<instance>-<file>.sst   immutable SST files, uploaded once, referenced by many checkpoints
//! chk-<id>/<worker>/<file>                the small per-snapshot files (CURRENT, MANIFEST-*, OPTIONS-*, ...)
//! chk-<id>/_manifest.json                 written last; the checkpoint exists once it does
//! ```
//!
//! Job and worker ids are escaped into safe path segments
//! ([`super::path_segment`]); the manifest keeps them as given.

use std::collections::HashMap;
use std::path::{Path as LocalPath, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::backend::{LocalSnapshot, RestoredSnapshot, remove_dir_if_exists};
use super::manifest::{self, CheckpointManifest, SnapshotFile, WorkerSnapshot};
use super::{failpoint, path_segment};
use crate::error::{Error, Result};

/// Files up to this size are uploaded with one put; larger ones are streamed
/// as a multipart upload in parts of this size, so a large SST file is never
/// held in memory whole.
const PART_BYTES: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 2;
/// Files uploaded, downloaded or checked at once.
const FILE_CONCURRENCY: usize = 4;
/// Name of the manifest inside `chk-<id>/`.
pub(super) const MANIFEST: &str = "_manifest.json";

/// Shared SST files a worker has already uploaded, so later checkpoints only
/// reference them. Keyed by object path, which names the RocksDB instance and
/// the local file name.
#[derive(Debug, Clone, Default)]
pub struct UploadTracker {
    shared: HashMap<String, SnapshotFile>,
}

impl UploadTracker {
    /// The number of shared files it remembers.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether it remembers no file.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }
}

/// Durable checkpoint storage of one job at a URL: `file:///abs/dir` (a
/// local directory shared by processes on one host), `s3://bucket/prefix`
/// (configured from the `AWS_*` environment, so S3-compatible stores work),
/// or `memory://` (tests; each `open` is a new, empty store, clones share it).
#[derive(Clone)]
pub struct CheckpointStorage {
    pub(super) inner: Arc<StorageInner>,
}

pub(super) struct StorageInner {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) url: String,
    pub(super) job_id: String,
    /// `<url prefix>/<job segment>`.
    pub(super) prefix: Path,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("url", &self.inner.url)
            .field("job_id", &self.inner.job_id)
            .finish_non_exhaustive()
    }
}

/// What one file of a snapshot needs.
enum FileTask {
    /// Upload `local` to `path`.
    Upload {
        name: String,
        path: String,
        local: PathBuf,
    },
    /// Already uploaded; check it is still there.
    Reuse(SnapshotFile),
}

impl CheckpointStorage {
    /// Opens the checkpoint storage of `job_id` at `url`.
    pub fn open(url: &str, job_id: &str) -> Result<Self> {
        let unsupported = |why: &str| {
            Error::Config(format!(
                "checkpoint storage URL '{url}': {why} (expected file:///absolute/dir, \
                 s3://bucket/prefix or memory://)"
            ))
        };
        if job_id.is_empty() {
            return Err(Error::Config(format!(
                "checkpoint storage URL '{url}': empty job id"
            )));
        }
        let (store, base): (Arc<dyn ObjectStore>, String) = if let Some(dir) =
            url.strip_prefix("file://")
        {
            if !dir.starts_with('/') {
                return Err(unsupported("a file URL needs an absolute path"));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating the checkpoint directory {dir}"), e))?;
            let fs = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::state(format!("checkpoint storage '{url}'"), e))?
                .with_automatic_cleanup(true);
            (Arc::new(fs), String::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(unsupported("no bucket"));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::Config(format!("checkpoint storage URL '{url}': {e}")))?;
            (Arc::new(s3), prefix.to_string())
        } else if url.starts_with("memory://") {
            (Arc::new(InMemory::new()), String::new())
        } else {
            return Err(unsupported("unsupported scheme"));
        };
        let prefix = Path::from(format!("{base}/{}", path_segment(job_id)));
        debug!(url, job = job_id, prefix = %prefix, "opened checkpoint storage");
        Ok(Self {
            inner: Arc::new(StorageInner {
                store,
                url: url.to_string(),
                job_id: job_id.to_string(),
                prefix,
            }),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The job whose checkpoints it holds.
    pub fn job_id(&self) -> &str {
        &self.inner.job_id
    }

    /// The object path of `relative` (a path relative to the job prefix).
    pub(super) fn object(&self, relative: &str) -> Path {
        Path::from(format!("{}/{relative}", self.inner.prefix))
    }

    /// `location` relative to the job prefix.
    pub(super) fn relative(&self, location: &Path) -> Option<String> {
        let parts = location.prefix_match(&self.inner.prefix)?;
        Some(
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Wraps an object-store error with what was being done.
    pub(super) fn error(&self, doing: impl std::fmt::Display, e: object_store::Error) -> Error {
        Error::state(format!("checkpoint storage {}: {doing}", self.inner.url), e)
    }

    /// Uploads the files of a local snapshot that are not yet in storage
    /// (SST files this tracker already uploaded are only referenced, after
    /// checking they are still there), computing a crc32 per file.
    #[tracing::instrument(skip_all, fields(checkpoint_id = snapshot.checkpoint_id, worker = worker_id))]
    pub async fn upload(
        &self,
        snapshot: &LocalSnapshot,
        worker_id: &str,
        tracker: &mut UploadTracker,
    ) -> Result<WorkerSnapshot> {
        let started = Instant::now();
        let id = snapshot.checkpoint_id;
        let worker = path_segment(worker_id);
        let mut tasks = Vec::new();
        for (name, local) in list_local(&snapshot.dir).await? {
            if name.ends_with(".sst") {
                let path = format!("shared/{worker}-{}-{name}", snapshot.instance);
                match tracker.shared.get(&path) {
                    Some(file) if file.name == name => tasks.push(FileTask::Reuse(file.clone())),
                    _ => tasks.push(FileTask::Upload { name, path, local }),
                }
            } else {
                let path = format!("chk-{id}/{worker}/{name}");
                tasks.push(FileTask::Upload { name, path, local });
            }
        }

        let results: Vec<(SnapshotFile, bool)> = bounded(
            tasks
                .into_iter()
                .map(|task| self.run_file_task(id, task, &snapshot.dir))
                .collect(),
            FILE_CONCURRENCY,
        )
        .await?;

        // Files not in this snapshot were compacted away and never come back.
        tracker.shared.clear();
        let mut files = Vec::with_capacity(results.len());
        let (mut uploaded_bytes, mut total_bytes, mut uploaded_files) = (0, 0, 0);
        for (file, uploaded) in results {
            total_bytes += file.size;
            if uploaded {
                uploaded_bytes += file.size;
                uploaded_files += 1;
            }
            if file.path.starts_with("shared/") {
                tracker.shared.insert(file.path.clone(), file.clone());
            }
            files.push(file);
        }
        failpoint!("state::after-upload");
        info!(
            checkpoint_id = id,
            worker = worker_id,
            files = files.len(),
            uploaded_files,
            uploaded_bytes,
            total_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "uploaded snapshot"
        );
        Ok(WorkerSnapshot {
            worker_id: worker_id.to_string(),
            checkpoint_id: id,
            files,
            subtasks: Vec::new(),
            uploaded_bytes,
            total_bytes,
        })
    }

    /// Uploads or re-checks one file; returns it and whether it was uploaded.
    async fn run_file_task(
        &self,
        id: u64,
        task: FileTask,
        dir: &LocalPath,
    ) -> Result<(SnapshotFile, bool)> {
        match task {
            FileTask::Reuse(file) => {
                let object = self.object(&file.path);
                match self.inner.store.head(&object).await {
                    Ok(meta) if meta.size == file.size => return Ok((file, false)),
                    Ok(meta) => warn!(
                        path = file.path,
                        size = meta.size,
                        expected = file.size,
                        "uploaded shared file changed size; uploading it again"
                    ),
                    Err(object_store::Error::NotFound { .. }) => {
                        warn!(
                            path = file.path,
                            "uploaded shared file is gone; uploading it again"
                        )
                    }
                    Err(e) => {
                        return Err(
                            self.error(format_args!("checkpoint {id}: checking {object}"), e)
                        );
                    }
                }
                let local = dir.join(&file.name);
                let (size, crc32) = self.upload_file(id, &local, &object).await?;
                let file = SnapshotFile {
                    size,
                    crc32,
                    ..file
                };
                Ok((file, true))
            }
            FileTask::Upload { name, path, local } => {
                let object = self.object(&path);
                let (size, crc32) = self.upload_file(id, &local, &object).await?;
                Ok((
                    SnapshotFile {
                        name,
                        path,
                        size,
                        crc32,
                    },
                    true,
                ))
            }
        }
    }

    /// Streams one local file to `object`; returns its size and crc32.
    async fn upload_file(&self, id: u64, local: &LocalPath, object: &Path) -> Result<(u64, u32)> {
        let doing = || format!("checkpoint {id}: uploading {} to {object}", local.display());
        let read_error = |e| {
            Error::io(
                format!("checkpoint {id}: reading {} for upload", local.display()),
                e,
            )
        };
        let mut file = tokio::fs::File::open(local).await.map_err(read_error)?;
        let mut hasher = crc32fast::Hasher::new();
        let first = read_chunk(&mut file).await.map_err(read_error)?;
        if first.len() < PART_BYTES {
            hasher.update(&first);
            let size = first.len() as u64;
            self.inner
                .store
                .put(object, PutPayload::from(first))
                .await
                .map_err(|e| self.error(doing(), e))?;
            return Ok((size, hasher.finalize()));
        }

        let upload = self
            .inner
            .store
            .put_multipart(object)
            .await
            .map_err(|e| self.error(doing(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut size = 0u64;
        let streamed: Result<()> = async {
            let mut chunk = first;
            while !chunk.is_empty() {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                writer
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| self.error(doing(), e))?;
                writer.put(chunk);
                chunk = read_chunk(&mut file).await.map_err(read_error)?;
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.error(doing(), e))?;
                Ok((size, hasher.finalize()))
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    warn!(%object, error = %abort, "could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    /// Writes the manifest last and atomically; then the checkpoint is complete.
    #[tracing::instrument(skip_all, fields(checkpoint_id = manifest.checkpoint_id))]
    pub async fn commit(&self, manifest: &CheckpointManifest) -> Result<()> {
        let id = manifest.checkpoint_id;
        if manifest.job_id != self.inner.job_id {
            return Err(Error::internal(format!(
                "checkpoint {id}: manifest of job '{}' committed to the storage of job '{}'",
                manifest.job_id, self.inner.job_id
            )));
        }
        let bytes = manifest::encode(manifest)
            .map_err(|e| Error::internal(format!("checkpoint {id}: encoding the manifest: {e}")))?;
        let object = self.object(&format!("chk-{id}/{MANIFEST}"));
        failpoint!("state::before-manifest");
        self.inner
            .store
            .put(&object, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(format_args!("checkpoint {id}: writing {object}"), e))?;
        info!(
            checkpoint_id = id,
            workers = manifest.workers.len(),
            uploaded_bytes = manifest
                .workers
                .iter()
                .map(|w| w.uploaded_bytes)
                .sum::<u64>(),
            total_bytes = manifest.workers.iter().map(|w| w.total_bytes).sum::<u64>(),
            "checkpoint committed"
        );
        Ok(())
    }

    /// Ids of every `chk-<id>` directory, with or without a manifest, ascending.
    pub(super) async fn checkpoint_dirs(&self) -> Result<Vec<u64>> {
        let listing = self
            .inner
            .store
            .list_with_delimiter(Some(&self.inner.prefix))
            .await
            .map_err(|e| self.error("listing checkpoints", e))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Whether checkpoint `id` has a manifest.
    pub(super) async fn has_manifest(&self, id: u64) -> Result<bool> {
        let object = self.object(&format!("chk-{id}/{MANIFEST}"));
        match self.inner.store.head(&object).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(format_args!("checking {object}"), e)),
        }
    }

    /// Completed checkpoint ids (those with a manifest), ascending.
    pub async fn completed(&self) -> Result<Vec<u64>> {
        let dirs = self.checkpoint_dirs().await?;
        let flags: Vec<bool> = bounded(
            dirs.iter().map(|id| self.has_manifest(*id)).collect(),
            FILE_CONCURRENCY,
        )
        .await?;
        Ok(dirs
            .into_iter()
            .zip(flags)
            .filter_map(|(id, done)| done.then_some(id))
            .collect())
    }

    /// Loads and verifies one manifest (its own checksum).
    pub async fn load(&self, checkpoint_id: u64) -> Result<CheckpointManifest> {
        let id = checkpoint_id;
        let object = self.object(&format!("chk-{id}/{MANIFEST}"));
        let context = || format!("checkpoint {id}");
        let bytes = match self.inner.store.get(&object).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::state(
                    context(),
                    format!("no manifest {object} (never completed, or deleted)"),
                ));
            }
            Err(e) => return Err(self.error(format_args!("checkpoint {id}: reading {object}"), e)),
        };
        let manifest = manifest::decode(&bytes).map_err(|why| {
            Error::state(context(), format!("manifest {object} is invalid: {why}"))
        })?;
        if manifest.checkpoint_id != id || manifest.job_id != self.inner.job_id {
            return Err(Error::state(
                context(),
                format!(
                    "manifest {object} describes checkpoint {} of job '{}'",
                    manifest.checkpoint_id, manifest.job_id
                ),
            ));
        }
        Ok(manifest)
    }

    /// The newest checkpoint whose manifest verifies and whose every
    /// referenced file exists with the recorded size, plus why each newer
    /// checkpoint was skipped. File contents are verified by
    /// [`CheckpointStorage::download`].
    pub async fn latest(&self) -> Result<(Option<CheckpointManifest>, Vec<String>)> {
        let mut skipped = Vec::new();
        for id in self.completed().await?.into_iter().rev() {
            let manifest = match self.load(id).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(checkpoint_id = id, error = %e, "skipping checkpoint");
                    skipped.push(e.to_string());
                    continue;
                }
            };
            match self.check_files(&manifest).await? {
                None => return Ok((Some(manifest), skipped)),
                Some(why) => {
                    warn!(checkpoint_id = id, reason = why, "skipping checkpoint");
                    skipped.push(why);
                }
            }
        }
        Ok((None, skipped))
    }

    /// Why some referenced file of `manifest` is missing or has the wrong
    /// size, if one is.
    async fn check_files(&self, manifest: &CheckpointManifest) -> Result<Option<String>> {
        let id = manifest.checkpoint_id;
        let files = manifest.workers.iter().flat_map(|w| w.files.iter());
        let checks: Vec<_> = files
            .map(|file| async move {
                let object = self.object(&file.path);
                match self.inner.store.head(&object).await {
                    Ok(meta) if meta.size == file.size => Ok(None),
                    Ok(meta) => Ok(Some(format!(
                        "checkpoint {id}: file {} has {} bytes, expected {}",
                        file.path, meta.size, file.size
                    ))),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(format!(
                        "checkpoint {id}: file {} is missing",
                        file.path
                    ))),
                    Err(e) => {
                        Err(self.error(format_args!("checkpoint {id}: checking {object}"), e))
                    }
                }
            })
            .collect();
        let problems: Vec<Option<String>> = bounded(checks, FILE_CONCURRENCY * 2).await?;
        Ok(problems.into_iter().flatten().next())
    }

    /// Downloads one worker snapshot into `local_dir` (replacing whatever is
    /// there), verifies every file's size and crc32, and opens it read-only.
    #[tracing::instrument(skip_all, fields(checkpoint_id = snapshot.checkpoint_id, worker = snapshot.worker_id))]
    pub async fn download(
        &self,
        snapshot: &WorkerSnapshot,
        local_dir: &LocalPath,
    ) -> Result<RestoredSnapshot> {
        let started = Instant::now();
        let id = snapshot.checkpoint_id;
        for file in &snapshot.files {
            if !is_plain_file_name(&file.name) {
                return Err(Error::state(
                    format!("checkpoint {id}"),
                    format!("file {} has an unsafe name '{}'", file.path, file.name),
                ));
            }
        }
        remove_dir_if_exists(local_dir)?;
        tokio::fs::create_dir_all(local_dir).await.map_err(|e| {
            Error::io(
                format!("creating the restore directory {}", local_dir.display()),
                e,
            )
        })?;
        bounded(
            snapshot
                .files
                .iter()
                .map(|file| self.download_file(id, file, local_dir))
                .collect(),
            FILE_CONCURRENCY,
        )
        .await?;
        let total_bytes: u64 = snapshot.files.iter().map(|f| f.size).sum();
        info!(
            checkpoint_id = id,
            worker = snapshot.worker_id,
            files = snapshot.files.len(),
            total_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "downloaded snapshot"
        );
        let dir = local_dir.to_path_buf();
        tokio::task::spawn_blocking(move || RestoredSnapshot::open(&dir, id))
            .await
            .map_err(|e| Error::internal(format!("checkpoint {id}: opening the snapshot: {e}")))?
    }

    /// Downloads one file, verifying size and crc32 as it streams.
    async fn download_file(&self, id: u64, file: &SnapshotFile, dir: &LocalPath) -> Result<()> {
        let object = self.object(&file.path);
        let context = || format!("checkpoint {id}");
        let mut stream = match self.inner.store.get(&object).await {
            Ok(result) => result.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::state(
                    context(),
                    format!("file {} is missing", file.path),
                ));
            }
            Err(e) => return Err(self.error(format_args!("checkpoint {id}: reading {object}"), e)),
        };
        let local = dir.join(&file.name);
        let write_error = |e| Error::io(format!("writing {}", local.display()), e);
        let mut out = tokio::fs::File::create(&local).await.map_err(write_error)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| self.error(format_args!("checkpoint {id}: reading {object}"), e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        out.flush().await.map_err(write_error)?;
        if size != file.size {
            return Err(Error::state(
                context(),
                format!(
                    "file {} is corrupt: size {size} != {}",
                    file.path, file.size
                ),
            ));
        }
        let crc = hasher.finalize();
        if crc != file.crc32 {
            return Err(Error::state(
                context(),
                format!(
                    "file {} is corrupt: crc32 {crc:08x} != {:08x}",
                    file.path, file.crc32
                ),
            ));
        }
        Ok(())
    }
}

/// The regular files of a snapshot directory, by name.
async fn list_local(dir: &LocalPath) -> Result<Vec<(String, PathBuf)>> {
    let list_error = |e| Error::io(format!("listing the snapshot {}", dir.display()), e);
    let mut entries = tokio::fs::read_dir(dir).await.map_err(list_error)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(list_error)? {
        if !entry.file_type().await.map_err(list_error)?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            return Err(Error::state(
                format!("listing the snapshot {}", dir.display()),
                format!("file name {:?} is not UTF-8", entry.file_name()),
            ));
        };
        files.push((name, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// Reads up to [`PART_BYTES`] (fewer only at the end of the file).
async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(PART_BYTES);
    while buf.len() < PART_BYTES {
        if file.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Whether `name` is one plain file name (no directories, no `..`).
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Runs `futures` at most `limit` at a time and collects their results in
/// order. (Not `stream::iter(..).map(closure).buffered(..)`: a closure that
/// borrows, in the stream's type, makes the callers' futures not `Send`
/// (rust-lang/rust#102211), and workers run these in spawned tasks.)
async fn bounded<T, F>(futures: Vec<F>, limit: usize) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut out = Vec::with_capacity(futures.len());
    let mut rest = futures.into_iter();
    loop {
        let chunk: Vec<F> = rest.by_ref().take(limit.max(1)).collect();
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend(futures::future::try_join_all(chunk).await?);
    }
}
