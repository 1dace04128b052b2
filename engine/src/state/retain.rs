//! Deleting old checkpoints and the shared files only they needed.
//!
//! Shared SST files are referenced by many checkpoints, and a checkpoint
//! still being uploaded references files no manifest names yet. So a shared
//! file that no kept manifest references is deleted only when it is provably
//! old: a deleted checkpoint referenced it (an SST file that left a worker's
//! live set never returns to it), or it was written before the oldest kept
//! manifest (an orphan of an aborted checkpoint). A checkpoint in flight while
//! `retain` runs uploads its new files after the oldest kept manifest was
//! written as long as at most `keep` checkpoints overlap, so its files are
//! safe; the uploader also re-uploads a remembered file that has gone.

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::{info, warn};

use super::manifest::CheckpointManifest;
use super::storage::{CheckpointStorage, MANIFEST};
use crate::error::{Error, Result};

/// What [`CheckpointStorage::retain`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainStats {
    /// `chk-<id>` directories deleted (completed or aborted).
    pub deleted_checkpoints: usize,
    /// Shared files deleted.
    pub deleted_files: usize,
    /// Bytes of the shared files deleted.
    pub deleted_bytes: u64,
}

impl CheckpointStorage {
    /// Keeps the newest `keep` completed checkpoints whose manifests verify;
    /// deletes older `chk-*` directories, `chk-*` directories without a
    /// manifest older than the newest completed checkpoint (aborted
    /// attempts), and shared files no kept checkpoint needs (see the module
    /// docs for when an unreferenced shared file counts as unneeded).
    #[tracing::instrument(skip_all, fields(keep))]
    pub async fn retain(&self, keep: usize) -> Result<RetainStats> {
        if keep == 0 {
            return Err(Error::Config(
                "checkpoint retention must keep at least one checkpoint".to_string(),
            ));
        }
        let mut stats = RetainStats::default();
        let dirs = self.checkpoint_dirs().await?;
        let mut completed = HashSet::new();
        for id in &dirs {
            if self.has_manifest(*id).await? {
                completed.insert(*id);
            }
        }
        let Some(newest_completed) = completed.iter().max().copied() else {
            return Ok(stats);
        };

        let mut kept: Vec<CheckpointManifest> = Vec::new();
        for id in dirs.iter().rev().filter(|id| completed.contains(id)) {
            if kept.len() == keep {
                break;
            }
            match self.load(*id).await {
                Ok(manifest) => kept.push(manifest),
                Err(e) => {
                    warn!(checkpoint_id = id, error = %e, "not counting an unreadable checkpoint as kept")
                }
            }
        }
        let Some(oldest_kept) = kept.last().map(|m| m.checkpoint_id) else {
            warn!("no completed checkpoint verifies; deleting nothing");
            return Ok(stats);
        };
        let referenced: HashSet<&str> = shared_paths(&kept).collect();

        let doomed: Vec<u64> = dirs
            .iter()
            .copied()
            .filter(|id| {
                if completed.contains(id) {
                    *id < oldest_kept
                } else {
                    *id < newest_completed
                }
            })
            .collect();

        // Shared files of deleted checkpoints are provably old.
        let mut old_files: HashSet<String> = HashSet::new();
        for id in doomed.iter().filter(|id| completed.contains(id)) {
            match self.load(*id).await {
                Ok(manifest) => old_files
                    .extend(shared_paths(std::slice::from_ref(&manifest)).map(String::from)),
                Err(e) => {
                    warn!(checkpoint_id = id, error = %e, "deleting an unreadable checkpoint")
                }
            }
        }
        let oldest_manifest = self.object(&format!("chk-{oldest_kept}/{MANIFEST}"));
        let cutoff = self
            .inner
            .store
            .head(&oldest_manifest)
            .await
            .map_err(|e| self.error(format_args!("checking {oldest_manifest}"), e))?
            .last_modified;

        for id in &doomed {
            self.delete_checkpoint(*id).await?;
            stats.deleted_checkpoints += 1;
        }

        let shared = self.object("shared");
        let listing: Vec<_> = self
            .inner
            .store
            .list(Some(&shared))
            .try_collect()
            .await
            .map_err(|e| self.error(format_args!("listing {shared}"), e))?;
        for meta in listing {
            let Some(relative) = self.relative(&meta.location) else {
                continue;
            };
            if referenced.contains(relative.as_str()) {
                continue;
            }
            if old_files.contains(&relative) || meta.last_modified < cutoff {
                self.delete(&meta.location).await?;
                stats.deleted_files += 1;
                stats.deleted_bytes += meta.size;
            }
        }
        info!(
            keep,
            oldest_kept,
            deleted_checkpoints = stats.deleted_checkpoints,
            deleted_files = stats.deleted_files,
            deleted_bytes = stats.deleted_bytes,
            "retained checkpoints"
        );
        Ok(stats)
    }

    /// Deletes `chk-<id>/`: the manifest first, so the checkpoint stops
    /// existing before any of its files go.
    async fn delete_checkpoint(&self, id: u64) -> Result<()> {
        let manifest = self.object(&format!("chk-{id}/{MANIFEST}"));
        self.delete(&manifest).await?;
        let dir = self.object(&format!("chk-{id}"));
        let objects: Vec<_> = self
            .inner
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.error(format_args!("listing {dir}"), e))?;
        for meta in objects {
            self.delete(&meta.location).await?;
        }
        Ok(())
    }

    /// Deletes one object; one already gone is fine.
    async fn delete(&self, location: &Path) -> Result<()> {
        match self.inner.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format_args!("deleting {location}"), e)),
        }
    }
}

/// Shared-file paths the manifests reference.
fn shared_paths(manifests: &[CheckpointManifest]) -> impl Iterator<Item = &str> {
    manifests
        .iter()
        .flat_map(|m| m.workers.iter())
        .flat_map(|w| w.files.iter())
        .filter(|f| f.path.starts_with("shared/"))
        .map(|f| f.path.as_str())
}
