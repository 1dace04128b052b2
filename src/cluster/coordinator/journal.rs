//! Durable job definitions. With `coordinator.state_dir` set, the
//! coordinator writes each job's definition (its SQL, parallelism,
//! settings and current attempt) when the job is deployed or restarted,
//! and marks it ended when it ends. A restarted coordinator resumes every
//! job that had not ended, from the newest completed checkpoint in the
//! job's checkpoint storage, once workers have registered again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// What the journal keeps of one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct JobRecord {
    pub job_id: String,
    pub name: String,
    pub sql: String,
    pub parallelism: u32,
    pub settings: BTreeMap<String, String>,
    pub attempt: u32,
    pub started_at_ms: i64,
    /// FINISHED, FAILED or CANCELED once ended; empty while running.
    pub ended: String,
}

/// Writes a record atomically (a temporary file renamed over the old one).
/// Failures are logged: the job runs on, it just would not survive a
/// coordinator restart.
pub(super) fn write(dir: &Path, record: &JobRecord) {
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let temp = dir.join(format!(".{}.json.tmp", record.job_id));
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, path(dir, &record.job_id))
    })();
    if let Err(e) = result {
        warn!(job = %record.job_id, dir = %dir.display(), error = %e, "cannot record the job");
    }
}

/// Every job recorded in `dir` that had not ended. Unreadable records are
/// reported and skipped.
pub(super) fn unfinished(dir: &Path) -> Vec<JobRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let file = entry.path();
        if file.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(record) if record.ended.is_empty() => records.push(record),
            Ok(_) => {}
            Err(e) => {
                warn!(file = %file.display(), error = %e, "skipping an unreadable job record")
            }
        }
    }
    records.sort_by_key(|r| r.started_at_ms);
    records
}

fn path(dir: &Path, job_id: &str) -> PathBuf {
    dir.join(format!("{job_id}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ended_jobs_are_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = JobRecord {
            job_id: "a1".into(),
            name: "job".into(),
            sql: "INSERT INTO t SELECT 1".into(),
            parallelism: 2,
            settings: BTreeMap::from([("k".to_string(), "v".to_string())]),
            attempt: 3,
            started_at_ms: 1,
            ended: String::new(),
        };
        write(dir.path(), &record);
        assert_eq!(unfinished(dir.path()), vec![record.clone()]);
        record.ended = "FINISHED".into();
        write(dir.path(), &record);
        assert!(unfinished(dir.path()).is_empty());
        std::fs::write(dir.path().join("bad.json"), b"{not json").unwrap();
        assert!(unfinished(dir.path()).is_empty());
    }
}
