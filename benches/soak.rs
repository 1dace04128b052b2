//! Soak: the fault tests' invariant over a longer run and many more kills.
//! A coordinator and 3 worker processes run two jobs over generated input
//! with unique ids — a pass-through and a keyed tumbling-window aggregation,
//! both into filesystem sinks that commit with checkpoints (every second).
//! A random worker is SIGKILLed every 1–3 s and restarted; at the end the
//! committed output must equal an undisturbed `weir run` of the same script:
//! no row lost, none duplicated. The benchmark fails otherwise.
//!
//! `cargo bench --bench soak` (`WEIR_SOAK_ROWS`, default 4,000,000 at
//! `WEIR_SOAK_RATE` 100,000 rows/s in all: 40 s of input; at most
//! `WEIR_SOAK_KILLS` kills, default 30).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use support::Cluster;
use weir::cluster::Client;
use weir_proto as pb;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn script(out: &Path, rows: u64, rate: u64) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        SET 'restart-strategy.fixed-delay.attempts' = '100000';
        CREATE TABLE src (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rate}',
              'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}');
        CREATE TABLE pass (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{pass}', 'format' = 'csv');
        CREATE TABLE win (k BIGINT, we TIMESTAMP(3), c BIGINT, s BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{win}', 'format' = 'csv');
        INSERT INTO pass SELECT id FROM src;
        INSERT INTO win SELECT id % 97, window_end, COUNT(*), SUM(id)
        FROM TUMBLE(src, ts, INTERVAL '1' SECOND) GROUP BY id % 97, window_start, window_end;",
        pass = out.join("pass").display(),
        win = out.join("win").display(),
    )
}

/// The committed (visible) rows of a filesystem sink, as a multiset.
fn committed(dir: &Path) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            *rows.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    rows
}

/// Rows missing from `actual`, and rows in it more often than expected.
fn compare(expected: &BTreeMap<String, usize>, actual: &BTreeMap<String, usize>) -> (usize, usize) {
    let mut missing = 0;
    let mut extra = 0;
    for (row, &n) in expected {
        let got = actual.get(row).copied().unwrap_or(0);
        missing += n.saturating_sub(got);
        extra += got.saturating_sub(n);
    }
    for (row, &got) in actual {
        if !expected.contains_key(row) {
            extra += got;
        }
    }
    (missing, extra)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = env("WEIR_SOAK_ROWS", 4_000_000);
    let rate = env("WEIR_SOAK_RATE", 100_000);
    let kills = env("WEIR_SOAK_KILLS", 30);
    let dir = std::env::temp_dir().join(format!("weir-soak-{}", std::process::id()));
    let reference = dir.join("reference");
    std::fs::create_dir_all(&reference).expect("a directory");
    let path = reference.join("script.sql");
    std::fs::write(&path, script(&reference, rows, rows)).expect("the script");
    let output = support::weir()
        .args(["run", path.to_str().unwrap_or_default(), "-p", "3"])
        .output()
        .expect("weir run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected_pass = committed(&reference.join("pass"));
    let expected_win = committed(&reference.join("win"));
    assert_eq!(expected_pass.len() as u64, rows, "the reference run");

    let checkpoints = format!("file://{}", dir.join("checkpoints").display());
    let mut cluster = Cluster::start(3, 4, &["--checkpoint-dir", &checkpoints]);
    let out = dir.join("soak");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let (landed, restarts) = rt.block_on(async {
        let client = Client::connect(&cluster.address, Duration::from_secs(5))
            .await
            .expect("connect");
        let jobs: Vec<String> = client
            .submit(&script(&out, rows, rate), 3, "soak")
            .await
            .expect("submit")
            .jobs
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        let mut rng = rand::rng();
        let mut landed = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..3_000))).await;
            let mut running = false;
            for job in &jobs {
                let summary = client
                    .job(job)
                    .await
                    .expect("job")
                    .summary
                    .unwrap_or_default();
                match summary.state() {
                    pb::JobState::Failed | pb::JobState::Canceled => {
                        panic!("job {job} ended: {}", summary.failure)
                    }
                    pb::JobState::Finished => {}
                    _ => running = true,
                }
            }
            if !running {
                break;
            }
            if landed < kills {
                let victim = rng.random_range(1..=3);
                cluster.restart_worker(victim, Duration::from_millis(300));
                landed += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "the jobs did not finish"
            );
        }
        let mut restarts = 0;
        for job in &jobs {
            restarts += client
                .job(job)
                .await
                .expect("job")
                .summary
                .unwrap_or_default()
                .restarts;
        }
        (landed, restarts)
    });
    let wall = started.elapsed();
    let (pass_missing, pass_extra) = compare(&expected_pass, &committed(&out.join("pass")));
    let (win_missing, win_extra) = compare(&expected_win, &committed(&out.join("win")));
    println!(
        "soak: {rows} rows at {rate} rows/s, 3 workers, 1 s checkpoints: \
         {landed} SIGKILLs, {restarts} job restarts, {:.1} s wall",
        wall.as_secs_f64()
    );
    println!(
        "  pass-through: {} rows, {pass_missing} missing, {pass_extra} duplicated or unexpected",
        expected_pass.values().sum::<usize>()
    );
    println!(
        "  windows:      {} rows, {win_missing} missing, {win_extra} duplicated or unexpected",
        expected_win.values().sum::<usize>()
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        pass_missing + pass_extra + win_missing + win_extra == 0,
        "the output differs from the undisturbed run's"
    );
}
