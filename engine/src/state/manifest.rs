//! What a checkpoint consists of, and the self-verifying manifest format.
//!
//! `_manifest.json` is one header line followed by the manifest as JSON:
//!
//! ```text
//! {"format":"weir-checkpoint-manifest","version":1,"length":1234,"crc32":"0a1b2c3d"}
//! { "job_id": "...", "checkpoint_id": 7, ... }
//! ```
//!
//! `length` and `crc32` cover the body (everything after the first newline),
//! so a truncated or garbled manifest is detected before its contents are
//! trusted.

use serde::{Deserialize, Serialize};

/// Format name in the header line.
const FORMAT: &str = "weir-checkpoint-manifest";
/// Current format version.
const VERSION: u32 = 1;

/// One stored file of a worker snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The original (local) file name.
    pub name: String,
    /// The object path relative to the job prefix.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// crc32 (IEEE) of the contents.
    pub crc32: u32,
}

/// One worker's part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// The worker that took it.
    pub worker_id: String,
    /// The checkpoint it belongs to.
    pub checkpoint_id: u64,
    /// Every file of the RocksDB checkpoint.
    pub files: Vec<SnapshotFile>,
    /// (logical node, subtask) whose state this snapshot holds; filled by
    /// the caller. By node, not vertex: chaining changes with parallelism.
    pub subtasks: Vec<(u32, u32)>,
    /// Bytes actually uploaded for this checkpoint (new files only).
    pub uploaded_bytes: u64,
    /// Bytes of all files, uploaded now or earlier.
    pub total_bytes: u64,
}

/// A completed checkpoint: what every worker stored, and how the job looked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointManifest {
    /// The job.
    pub job_id: String,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// When the checkpoint was triggered, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The job attempt that took it.
    pub attempt: u32,
    /// The job's number of key groups.
    pub max_key_groups: u32,
    /// Parallelism of each logical node (operator) when the checkpoint was
    /// taken, by node id; a restore at another parallelism redistributes
    /// by these.
    pub node_parallelism: Vec<u32>,
    /// Every worker's snapshot.
    pub workers: Vec<WorkerSnapshot>,
    /// Rows the job's sources had read, over all attempts, when the
    /// checkpoint's barrier left them: what a restore resumes counting from.
    #[serde(default)]
    pub records_read: u64,
    /// Rows the job's sinks had written (and this checkpoint commits),
    /// over all attempts.
    #[serde(default)]
    pub records_written: u64,
    /// Free-form extra metadata.
    pub extra: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    length: u64,
    crc32: String,
}

/// The stored bytes of `manifest`.
pub(crate) fn encode(manifest: &CheckpointManifest) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        length: body.len() as u64,
        crc32: format!("{:08x}", crc32fast::hash(&body)),
    };
    let mut out = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// Verifies and parses stored manifest bytes; the error says what is wrong.
pub(crate) fn decode(bytes: &[u8]) -> Result<CheckpointManifest, String> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line (truncated or not a manifest)")?;
    let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let header: Header =
        serde_json::from_slice(header).map_err(|e| format!("unreadable header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!("not a manifest (format '{}')", header.format));
    }
    if header.version != VERSION {
        return Err(format!(
            "unsupported manifest version {} (this build reads {VERSION})",
            header.version
        ));
    }
    if body.len() as u64 != header.length {
        return Err(format!(
            "body is {} bytes, header says {} (truncated?)",
            body.len(),
            header.length
        ));
    }
    let crc = format!("{:08x}", crc32fast::hash(body));
    if crc != header.crc32 {
        return Err(format!(
            "checksum mismatch: crc32 {crc} != {}",
            header.crc32
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))
}
