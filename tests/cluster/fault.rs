//! Fault tolerance with real processes: a coordinator and three workers,
//! RocksDB state, checkpoints in a local directory, filesystem sinks that
//! commit with checkpoints. Workers are killed with SIGKILL at random times
//! (and restarted), or crash at exact steps of the checkpoint protocol
//! through failpoints; the committed output must equal an undisturbed run's
//! — no row lost, none duplicated.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use weir_proto as pb;

use super::harness::{TestCluster, wait_for_end};

/// Rows of the generated input: ids 1..=ROWS, one millisecond apart.
const ROWS: u64 = 240_000;

/// Two jobs over the same generated input: a pass-through (every id once)
/// and a tumbling-window aggregation (keyed state in RocksDB).
fn script(out: &Path, rows_per_second: u64) -> String {
    script_with(out, rows_per_second, "")
}

/// The fault jobs' settings (1 s checkpoints, quick restarts) and their
/// source `src`: ids 1..=`rows`, one millisecond of event time apart, with
/// extra source options (`, 'key' = 'value'`).
pub fn checkpointed_source(rows: u64, rows_per_second: u64, source_options: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE src (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rows_per_second}',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
              'scan.batch-size' = '500'{source_options});"
    )
}

/// [`script`] with extra source options (`, 'key' = 'value'`).
fn script_with(out: &Path, rows_per_second: u64, source_options: &str) -> String {
    format!(
        "{source}
        CREATE TABLE pass (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{pass}', 'format' = 'csv');
        CREATE TABLE win (k BIGINT, we TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{win}', 'format' = 'csv');
        INSERT INTO pass SELECT id FROM src;
        INSERT INTO win SELECT id % 7, window_end, COUNT(*), SUM(id)
        FROM TUMBLE(src, ts, INTERVAL '1' SECOND) GROUP BY id % 7, window_start, window_end;",
        source = checkpointed_source(ROWS, rows_per_second, source_options),
        pass = out.join("pass").display(),
        win = out.join("win").display(),
    )
}

/// The committed (visible) rows of a filesystem sink, as a multiset.
pub fn committed(dir: &Path) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines().filter(|l| !l.is_empty()) {
            *rows.entry(line.to_string()).or_default() += 1;
        }
    }
    rows
}

/// Differences between two multisets, for a readable failure.
pub fn difference(expected: &BTreeMap<String, usize>, actual: &BTreeMap<String, usize>) -> String {
    let mut out = Vec::new();
    for (row, &n) in expected {
        let got = actual.get(row).copied().unwrap_or(0);
        if got != n {
            out.push(format!("{row}: expected {n}, got {got}"));
        }
    }
    for (row, &n) in actual {
        if !expected.contains_key(row) {
            out.push(format!("{row}: unexpected, {n} times"));
        }
    }
    let total = out.len();
    out.truncate(10);
    format!("{total} rows differ, e.g. {out:?}")
}

/// Submits the script, returns the two jobs' ids.
async fn submit(cluster: &TestCluster, out: &Path, rows_per_second: u64) -> Vec<String> {
    submit_script(cluster, &script(out, rows_per_second), 3).await
}

pub async fn submit_script(cluster: &TestCluster, script: &str, parallelism: u32) -> Vec<String> {
    let client = cluster.client().await;
    client
        .submit(script, parallelism, "fault")
        .await
        .unwrap_or_else(|e| panic!("submit failed: {e}\n{}", cluster.logs()))
        .jobs
        .into_iter()
        .map(|j| j.job_id)
        .collect()
}

/// Runs `script` with `weir run -p 3` (one process, nothing killed), from
/// `dir`, and waits for it to succeed.
pub fn run_undisturbed(dir: &Path, script: &str) {
    let script_path = dir.join("undisturbed.sql");
    std::fs::write(&script_path, script).unwrap();
    let output = super::harness::weir()
        .args(["run", script_path.to_str().unwrap(), "-p", "3"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The expected output: the same script, undisturbed, in one process.
fn undisturbed(out: &Path) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    static ONCE: std::sync::OnceLock<(BTreeMap<String, usize>, BTreeMap<String, usize>)> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        run_undisturbed(out, &script(out, 10_000_000));
        let pass = committed(&out.join("pass"));
        let win = committed(&out.join("win"));
        // Hand-checked: every id once; the windows count every row once.
        assert_eq!(pass.len() as u64, ROWS);
        assert!(pass.values().all(|&n| n == 1));
        let counted: u64 = win
            .keys()
            .map(|r| r.split(',').nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, ROWS);
        (pass, win)
    })
    .clone()
}

async fn check_outputs(cluster: &TestCluster, jobs: &[String], out: &Path, expected_dir: &Path) {
    let client = cluster.client().await;
    for job in jobs {
        let summary = wait_for_end(&client, job, Duration::from_secs(150)).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
    }
    let (pass, win) = undisturbed(expected_dir);
    let got_pass = committed(&out.join("pass"));
    assert!(
        got_pass == pass,
        "pass-through: {}",
        difference(&pass, &got_pass)
    );
    let got_win = committed(&out.join("win"));
    assert!(got_win == win, "windows: {}", difference(&win, &got_win));
    // Across restarts and rescales, the jobs count what they committed:
    // rows read once each, rows written as many as the sinks hold.
    for (job, sink) in jobs.iter().zip(["pass", "win"]) {
        let summary = client.job(job).await.unwrap().summary.unwrap();
        let rows: usize = committed(&out.join(sink)).values().sum();
        assert_eq!(
            (summary.records_read, summary.records_written),
            (ROWS, rows as u64),
            "job {job} ({sink}, {} restarts) counts other rows than it committed",
            summary.restarts
        );
        let leftovers = in_progress_files(&out.join(sink));
        assert!(
            leftovers.is_empty(),
            "in-progress files of failed attempts left in {sink}: {leftovers:?}"
        );
    }
}

/// The hidden in-progress part files in a filesystem sink's directory.
pub fn in_progress_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with('.') && n.ends_with(".inprogress"))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills random workers at random times while the jobs run, restarting
/// each a moment later; returns how many kills landed.
pub async fn kill_randomly(cluster: &mut TestCluster, jobs: &[String], kills: usize) -> usize {
    let client = cluster.client().await;
    let mut rng = rand::rng();
    let mut landed = 0;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_200..3_500))).await;
        let mut running = false;
        for job in jobs {
            let summary = client.job(job).await.unwrap().summary.unwrap();
            running |= summary.state() == pb::JobState::Running;
        }
        if !running {
            break;
        }
        let victim = format!("w{}", rng.random_range(1..=3));
        cluster
            .restart_worker(&victim, Duration::from_millis(300))
            .await;
        landed += 1;
    }
    landed
}

/// Checkpoints in an S3-compatible store (moto's server) instead of the
/// local directory: worker kills restore from there, and nothing is lost or
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_in_s3_restore_after_worker_kills() {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let moto = super::moto::Moto::start();
    moto.create_bucket("weir-checkpoints");
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_common_env(3, 4, &env).await;
    let script = format!(
        "SET 'execution.checkpointing.dir' = 's3://weir-checkpoints/ckpt';\n{}",
        script(out.path(), 12_000)
    );
    let jobs = submit_script(&cluster, &script, 3).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0], 2).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    assert!(landed >= 2, "only {landed} kills landed");
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
    let client = cluster.client().await;
    for job in &jobs {
        let summary = client.job(job).await.unwrap().summary.unwrap();
        assert!(summary.restarts >= 1 || landed == 0, "{summary:?}");
        assert!(summary.last_checkpoint >= 2, "{summary:?}");
    }
    // The checkpoints are in the bucket, manifests and RocksDB files, and
    // none in the local directory.
    let keys = moto.keys("weir-checkpoints", "ckpt/");
    assert!(
        keys.iter().any(|k| k.ends_with("/_manifest.json"))
            && keys.iter().any(|k| k.ends_with(".sst")),
        "{keys:?}"
    );
    let local = std::fs::read_dir(cluster.checkpoint_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(local, 0, "checkpoints were written locally too");
}

async fn kills_during_a_run(kills: usize) {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    let started = Instant::now();
    let jobs = submit(&cluster, out.path(), 12_000).await;
    let landed = kill_randomly(&mut cluster, &jobs, kills).await;
    assert!(landed >= kills.min(3), "only {landed} kills landed");
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
    let client = cluster.client().await;
    let restarts: u32 = {
        let mut n = 0;
        for job in &jobs {
            n += client.job(job).await.unwrap().summary.unwrap().restarts;
        }
        n
    };
    assert!(restarts >= 1, "no job restarted after {landed} kills");
    eprintln!(
        "{landed} kills, {restarts} restarts, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_and_duplicate_nothing_a() {
    kills_during_a_run(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_and_duplicate_nothing_b() {
    kills_during_a_run(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_and_duplicate_nothing_c() {
    kills_during_a_run(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_and_duplicate_nothing_d() {
    kills_during_a_run(5).await;
}

/// A worker crashes at an exact step of the checkpoint protocol (its
/// `FAILPOINTS` fire on the third checkpoint), then comes back.
async fn crash_at(failpoint: &str) {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    arm_failpoint(&mut cluster, failpoint).await;
    let jobs = submit(&cluster, out.path(), 20_000).await;
    await_crash_and_restart(&mut cluster, failpoint).await;
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
}

/// Restarts worker w2 with `failpoint` armed to fire the third time.
pub async fn arm_failpoint(cluster: &mut TestCluster, failpoint: &str) {
    let failpoints = format!("{failpoint}=2*off->1*return");
    let old = worker_address(cluster, "w2").await;
    cluster.replace_worker("w2", &[("FAILPOINTS", failpoints.as_str())]);
    wait_for_new_registration(cluster, "w2", old).await;
}

/// Waits for w2's failpoint to crash it, then brings w2 back without it.
pub async fn await_crash_and_restart(cluster: &mut TestCluster, failpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.worker_is_alive("w2") {
        assert!(
            Instant::now() < deadline,
            "failpoint {failpoint} never fired\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = worker_address(cluster, "w2").await;
    cluster.replace_worker("w2", &[]);
    wait_for_new_registration(cluster, "w2", old).await;
}

/// The data address the coordinator lists for worker `id`, if any.
async fn worker_address(cluster: &TestCluster, id: &str) -> Option<String> {
    cluster
        .client()
        .await
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.worker_id == id)
        .map(|w| w.data_address)
}

/// Waits until the worker `id`, replaced while the coordinator listed it
/// at `old`, has registered again (a new process: a new data address).
/// `old` is read before the replacement: read after, a new process quick
/// to register would already be `old`, and the wait would never end.
async fn wait_for_new_registration(cluster: &TestCluster, id: &str, old: Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = worker_address(cluster, id).await;
        if now.is_some() && now != old {
            return;
        }
        assert!(Instant::now() < deadline, "{id} did not register again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_local_snapshot() {
    crash_at("worker::after-local-snapshot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_upload_before_the_ack() {
    crash_at("worker::after-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_completion_before_the_sinks_commit() {
    crash_at("worker::before-commit").await;
}

/// Waits until every job completed `more` checkpoints beyond `after`
/// (per job); returns each job's newest completed checkpoint.
pub async fn wait_for_checkpoints(
    cluster: &TestCluster,
    jobs: &[String],
    after: &[u64],
    more: u64,
) -> Vec<u64> {
    let client = cluster.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut latest = Vec::new();
        for job in jobs {
            latest.push(
                client
                    .job(job)
                    .await
                    .unwrap()
                    .summary
                    .unwrap()
                    .last_checkpoint,
            );
        }
        if latest.iter().zip(after).all(|(l, a)| *l >= a + more) {
            return latest;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints did not complete: {latest:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rescaling 2 → 3 → 1 while the jobs run: keyed window state moves by key
/// group, the sinks commit what the checkpoint covered, and the output is
/// still exactly the undisturbed run's. The source keeps parallelism 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescaling_two_to_three_to_one_keeps_every_row_once() {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, 4).await;
    let script = script_with(out.path(), 12_000, ", 'scan.parallelism' = '2'");
    let jobs = submit_script(&cluster, &script, 2).await;
    let client = cluster.client().await;
    let mut seen = wait_for_checkpoints(&cluster, &jobs, &[0, 0], 2).await;
    for parallelism in [3, 1] {
        for job in &jobs {
            client.rescale(job, parallelism).await.unwrap();
        }
        seen = wait_for_checkpoints(&cluster, &jobs, &seen, 2).await;
        for job in &jobs {
            let detail = client.job(job).await.unwrap();
            let windows = detail
                .subtasks
                .iter()
                .filter(|t| {
                    t.vertex_name.contains("WindowAggregate") || t.vertex_name.contains("Sink")
                })
                .map(|t| t.task.clone().unwrap().subtask)
                .max();
            if let Some(max) = windows {
                assert_eq!(
                    max + 1,
                    parallelism,
                    "job {job} runs at the old parallelism"
                );
            }
        }
    }
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
}

/// The coordinator is killed mid-job and restarted: the workers rejoin, the
/// jobs resume from their newest checkpoints, and the output is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resumes_its_jobs() {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    let jobs = submit(&cluster, out.path(), 12_000).await;
    wait_for_checkpoints(&cluster, &jobs, &[0, 0], 2).await;
    cluster.restart_coordinator();
    cluster.wait_for_workers(3).await;
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
    let client = cluster.client().await;
    for job in &jobs {
        let detail = client.job(job).await.unwrap();
        assert!(
            detail
                .restarts
                .iter()
                .any(|r| r.cause.contains("coordinator restarted")),
            "{:?}",
            detail.restarts
        );
    }
}

/// The newest completed checkpoint's files are corrupted while the workers
/// are frozen (so no newer checkpoint completes), then a worker dies: the
/// restore detects the bad checksum, names the file, and the job restarts
/// from the previous checkpoint and finishes. Output committed by the
/// corrupt checkpoint is produced again (the fallback is at-least-once for
/// that span): no id is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_detected_and_an_older_one_restored() {
    let out = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, 4).await;
    let script = script(out.path(), 12_000);
    let pass_only = script
        .split_inclusive(';')
        .filter(|s| !s.contains("INSERT INTO win"))
        .collect::<String>();
    let jobs = submit_script(&cluster, &pass_only, 3).await;
    let job = jobs[0].clone();
    wait_for_checkpoints(&cluster, &jobs, &[0], 3).await;
    for w in ["w1", "w2", "w3"] {
        cluster.signal_worker(w, "STOP");
    }
    // Give a checkpoint in flight time to finish or stall.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = cluster.client().await;
    let newest = client
        .job(&job)
        .await
        .unwrap()
        .summary
        .unwrap()
        .last_checkpoint;
    let chk_dir = cluster
        .checkpoint_dir()
        .join(&job)
        .join(format!("chk-{newest}"));
    let mut corrupted = 0;
    for worker_dir in std::fs::read_dir(&chk_dir).unwrap().flatten() {
        if !worker_dir.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(worker_dir.path()).unwrap().flatten() {
            let mut bytes = std::fs::read(file.path()).unwrap();
            if let Some(b) = bytes.last_mut() {
                *b ^= 0xff;
                std::fs::write(file.path(), bytes).unwrap();
                corrupted += 1;
            }
        }
    }
    assert!(corrupted > 0, "no files in {}", chk_dir.display());
    cluster.kill_worker("w2");
    for w in ["w1", "w3"] {
        cluster.signal_worker(w, "CONT");
    }
    cluster.replace_worker("w2", &[]);
    let summary = wait_for_end(&client, &job, Duration::from_secs(150)).await;
    assert_eq!(
        summary.state(),
        pb::JobState::Finished,
        "{}\n{}",
        summary.failure,
        cluster.logs()
    );
    let detail = client.job(&job).await.unwrap();
    assert!(
        detail.restarts.iter().any(|r| r
            .cause
            .contains(&format!("cannot restore checkpoint {newest}"))
            && r.cause.contains("corrupt")),
        "the corruption was not reported: {:?}",
        detail.restarts
    );
    let last = detail.restarts.last().unwrap();
    assert!(
        last.from_checkpoint < newest,
        "restored {} despite its corruption",
        last.from_checkpoint
    );
    let rows = committed(&out.path().join("pass"));
    for id in 1..=ROWS {
        assert!(rows.contains_key(&id.to_string()), "id {id} is missing");
    }
}

/// The checkpoint store refuses writes for a while (each job's `shared`
/// directory replaced by a file, as a full or broken volume would refuse
/// them): checkpoints fail and are reported with the reason, the jobs keep
/// running, and once the store works again checkpoints complete and the
/// output is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_store_that_refuses_writes_fails_checkpoints_not_jobs() {
    let expected_dir = tempfile::tempdir().unwrap();
    let _ = undisturbed(expected_dir.path());
    let out = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, 4).await;
    let jobs = submit(&cluster, out.path(), 12_000).await;
    let seen = wait_for_checkpoints(&cluster, &jobs, &[0, 0], 1).await;
    for job in &jobs {
        let shared = cluster.checkpoint_dir().join(job).join("shared");
        std::fs::rename(&shared, shared.with_extension("away")).unwrap();
        std::fs::write(&shared, b"not a directory").unwrap();
    }
    let client = cluster.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for job in &jobs {
        loop {
            let detail = client.job(job).await.unwrap();
            let failed = detail.checkpoints.iter().find(|c| c.status == "FAILED");
            if let Some(failed) = failed {
                assert!(failed.failure.contains("declined"), "{}", failed.failure);
                assert_eq!(detail.summary.unwrap().state(), pb::JobState::Running);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint failed\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for job in &jobs {
        let shared = cluster.checkpoint_dir().join(job).join("shared");
        std::fs::remove_file(&shared).unwrap();
        std::fs::rename(shared.with_extension("away"), &shared).unwrap();
    }
    wait_for_checkpoints(&cluster, &jobs, &seen, 1).await;
    check_outputs(&cluster, &jobs, out.path(), expected_dir.path()).await;
}
