//! The filesystem sink: part files made visible by renaming.
//!
//! A part file is written under a hidden name (`.part-….inprogress`). It is
//! closed when it reaches `sink.rolling-policy.file-size`, at a checkpoint
//! barrier (`pre_commit`) and at the end of the input. Closed files are
//! renamed to their final name (`part-<job>-<attempt>-<subtask>-<run>-<n>.<ext>`,
//! `<run>` telling apart sinks that share the rest, say two local runs)
//! when the checkpoint that covers them commits, or at `finish`.
//!
//! A restarted (or rescaled) job finds the hidden files of its failed
//! attempt: what it wrote after its last completed checkpoint, which the
//! new attempt writes again. Subtask 0 of the new attempt deletes them at
//! its first commit: a checkpoint of the new attempt completes only after
//! every subtask restored (and published what the restored checkpoint
//! covered), so nothing hidden of an earlier attempt is needed by then.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use weir_engine::{CheckpointId, Error, Result, RowKind, Sink, TableDescriptor, TaskInfo};

use super::FsOptions;
use super::format::{Format, PartWriter};
use crate::util::{conform_to, split_row_kinds};

/// A closed part file: its in-progress and final paths.
#[derive(Debug)]
struct PendingFile {
    hidden: PathBuf,
    visible: PathBuf,
}

/// One subtask of a filesystem sink.
pub struct FilesystemSink {
    dir: PathBuf,
    format: Format,
    schema: SchemaRef,
    subtask: usize,
    /// The job's id, the same for all its attempts.
    job_id: String,
    /// The job's attempt: files of earlier attempts are told apart by it.
    attempt: u32,
    /// Distinguishes this sink's files from any other's with the same job
    /// id, attempt and subtask.
    run: String,
    /// The hidden files of earlier attempts were deleted (or need not be).
    orphans_checked: bool,
    next_part: u64,
    rolling_file_size: Option<u64>,
    current: Option<(PartWriter, PendingFile)>,
    /// Closed files not yet covered by a checkpoint.
    closed: Vec<PendingFile>,
    /// Closed files by the checkpoint that covers them, awaiting its commit.
    pre_committed: BTreeMap<CheckpointId, Vec<PendingFile>>,
}

impl FilesystemSink {
    /// A sink subtask writing into the directory `options.path` (created if missing).
    pub fn new(options: FsOptions, table: &TableDescriptor, task: &TaskInfo) -> Result<Self> {
        std::fs::create_dir_all(&options.path).map_err(|e| {
            Error::io(
                format!("creating sink directory '{}'", options.path.display()),
                e,
            )
        })?;
        Ok(FilesystemSink {
            dir: options.path,
            format: options.format,
            schema: Arc::clone(&table.schema),
            subtask: task.subtask,
            job_id: task.job_id.clone(),
            attempt: task.attempt,
            run: format!("{:08x}", rand::random::<u32>()),
            orphans_checked: task.attempt == 0 || task.subtask != 0,
            next_part: 0,
            rolling_file_size: options.rolling_file_size,
            current: None,
            closed: Vec::new(),
            pre_committed: BTreeMap::new(),
        })
    }

    fn failed(
        &self,
        action: &str,
        path: &std::path::Path,
        reason: impl std::fmt::Display,
    ) -> Error {
        Error::Connector {
            connector: "filesystem".into(),
            message: format!("{action} '{}': {reason}", path.display()),
        }
    }

    /// The open part file, starting one if none is open.
    fn current(&mut self) -> Result<&mut (PartWriter, PendingFile)> {
        if self.current.is_none() {
            let name = format!(
                "part-{}-{}-{}-{}-{}.{}",
                self.job_id,
                self.attempt,
                self.subtask,
                self.run,
                self.next_part,
                self.format.extension()
            );
            self.next_part += 1;
            let pending = PendingFile {
                hidden: self.dir.join(format!(".{name}.inprogress")),
                visible: self.dir.join(name),
            };
            let file: File = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&pending.hidden)
                .map_err(|e| Error::io(format!("creating '{}'", pending.hidden.display()), e))?;
            let writer = PartWriter::open(&self.format, file, &self.schema)?;
            self.current = Some((writer, pending));
        }
        self.current
            .as_mut()
            .ok_or_else(|| Error::internal("filesystem sink: no open part file"))
    }

    /// Closes the open part file, if any, into `closed`.
    fn close_current(&mut self) -> Result<()> {
        if let Some((writer, pending)) = self.current.take() {
            writer
                .close()
                .map_err(|e| self.failed("completing", &pending.hidden, e))?;
            self.closed.push(pending);
        }
        Ok(())
    }

    /// Deletes the hidden files earlier attempts of this job left behind
    /// (once, in subtask 0; see the module's documentation for why it is
    /// safe at the first commit).
    fn remove_orphans(&mut self) -> Result<()> {
        if self.orphans_checked {
            return Ok(());
        }
        self.orphans_checked = true;
        let prefix = format!(".part-{}-", self.job_id);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing '{}'", self.dir.display()), e))?;
        let mut removed = 0;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("listing '{}'", self.dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let attempt = rest.split('-').next().and_then(|a| a.parse::<u32>().ok());
            if name.ends_with(".inprogress") && attempt.is_some_and(|a| a < self.attempt) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::io(
                            format!("removing '{}'", entry.path().display()),
                            e,
                        ));
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                files = removed,
                "removed in-progress files of the job's earlier attempts"
            );
        }
        Ok(())
    }

    fn publish(&self, files: Vec<PendingFile>) -> Result<()> {
        for file in files {
            std::fs::rename(&file.hidden, &file.visible)
                .map_err(|e| Error::io(format!("publishing '{}'", file.visible.display()), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FilesystemSink {
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let (batch, kinds) = split_row_kinds(&batch)?;
        if !self.format.is_changelog() && kinds.iter().flatten().any(|k| *k != RowKind::Insert) {
            return Err(Error::Config(
                "the filesystem sink only takes inserts in this format, but the query produces updates or deletes; use 'format' = 'debezium-json'"
                    .into(),
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform_to(&batch, &self.schema)?;
        let (writer, pending) = self.current()?;
        if let Err(e) = writer.write(&batch, kinds.as_deref()) {
            let path = pending.hidden.clone();
            return Err(self.failed("writing", &path, e));
        }
        let size = writer.size();
        if self.rolling_file_size.is_some_and(|limit| size >= limit) {
            self.close_current()?;
        }
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.close_current()?;
        let files = std::mem::take(&mut self.closed);
        self.pre_committed
            .entry(checkpoint)
            .or_default()
            .extend(files);
        Ok(())
    }

    async fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let later = match checkpoint.checked_add(1) {
            Some(next) => self.pre_committed.split_off(&next),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut self.pre_committed, later);
        self.publish(done.into_values().flatten().collect())?;
        self.remove_orphans()
    }

    /// The pre-committed files, one `hidden<TAB>visible` line each.
    fn snapshot_state(&mut self) -> Result<Option<Vec<u8>>> {
        let mut state = String::new();
        for file in self.pre_committed.values().flatten() {
            let (hidden, visible) = (file.hidden.to_str(), file.visible.to_str());
            let (Some(hidden), Some(visible)) = (hidden, visible) else {
                return Err(self.failed("checkpointing", &file.hidden, "path is not UTF-8"));
            };
            state.push_str(hidden);
            state.push('\t');
            state.push_str(visible);
            state.push('\n');
        }
        Ok(Some(state.into_bytes()))
    }

    /// Publishes the files pre-committed for the restored checkpoint, which
    /// completed: rename those still hidden; those already visible were
    /// published before the crash.
    fn restore_state(&mut self, states: Vec<Vec<u8>>) -> Result<()> {
        for state in states {
            let text = String::from_utf8(state)
                .map_err(|_| Error::internal("filesystem sink state is not UTF-8"))?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (hidden, visible) = line
                    .split_once('\t')
                    .ok_or_else(|| Error::internal("filesystem sink state is malformed"))?;
                let file = PendingFile {
                    hidden: PathBuf::from(hidden),
                    visible: PathBuf::from(visible),
                };
                if file.hidden.exists() {
                    self.publish(vec![file])?;
                } else if !file.visible.exists() {
                    return Err(self.failed(
                        "restoring",
                        &file.hidden,
                        "a file of a completed checkpoint is missing (neither the in-progress nor \
                         the final file exists)",
                    ));
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.close_current()?;
        let mut files: Vec<PendingFile> = std::mem::take(&mut self.pre_committed)
            .into_values()
            .flatten()
            .collect();
        files.append(&mut self.closed);
        self.publish(files)
    }
}
