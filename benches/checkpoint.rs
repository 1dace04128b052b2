//! Checkpointing on a real cluster (a coordinator and two worker processes,
//! RocksDB state, checkpoints in a local directory):
//!
//! 1. Throughput of a 1-million-key aggregation with checkpoints every 1 s,
//!    every 10 s, and none, in events per CPU-second of all processes, with
//!    the median checkpoint duration (Flink 2.3 on this kind of machine:
//!    about 43 K events per CPU-second, 1.2 s median checkpoint).
//! 2. Checkpoint duration and bytes uploaded against state size (keys).
//! 3. Recovery time: a worker is killed mid-run; the time until the
//!    restarted job's sinks receive rows again.
//!
//! `cargo bench --bench checkpoint` (`WEIR_BENCH_ROWS`, default 30,000,000).
//! `WEIR_BENCH_STATE_KEYS=24000000` (a comma-separated list) runs only part
//! 2, with these key counts: 24 M keys make about 1 GB of state.
//! `WEIR_BENCH_SESSION_KEYS=3000000` adds session windows that keep that many
//! sessions open (with `WEIR_BENCH_STATE_KEYS`, say `=0`, to skip the rest).
//! `WEIR_WORKER_STATE_OPERATOR_MEMORY_KB` sets the workers' memory budget.

mod support;

use std::time::{Duration, Instant};

use support::Cluster;
use weir::cluster::Client;
use weir_proto as pb;

/// Session windows that stay open for the whole run: every key's rows are
/// closer together than the gap, so the state is one session per key.
fn sessions(rows: u64, keys: u64) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
         CREATE TABLE src (id BIGINT, k BIGINT, price BIGINT,
           ts AS TO_TIMESTAMP_LTZ(id, 3), WATERMARK FOR ts AS ts) WITH (
           'connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rate}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
           'fields.k.min' = '1', 'fields.k.max' = '{keys}',
           'fields.price.min' = '1', 'fields.price.max' = '100000');
         CREATE TABLE sink WITH ('connector' = 'blackhole');
         INSERT INTO sink SELECT k, window_start, window_end, COUNT(*), SUM(price)
         FROM SESSION(src, ts, INTERVAL '{gap}' SECOND) GROUP BY k, window_start, window_end;",
        rate = rows / 8,
        gap = rows / 1000 + 1,
    )
}

fn aggregation(rows: u64, keys: u64, interval: &str, rate: Option<u64>) -> String {
    let rate = rate
        .map(|r| format!(", 'rows-per-second' = '{r}'"))
        .unwrap_or_default();
    format!(
        "SET 'execution.checkpointing.interval' = '{interval}';
         CREATE TABLE src (id BIGINT, k BIGINT, price BIGINT) WITH (
           'connector' = 'datagen', 'number-of-rows' = '{rows}'{rate},
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
           'fields.k.min' = '1', 'fields.k.max' = '{keys}',
           'fields.price.min' = '1', 'fields.price.max' = '100000');
         CREATE TABLE sink WITH ('connector' = 'blackhole');
         INSERT INTO sink SELECT k, COUNT(*), SUM(price) FROM src GROUP BY k;"
    )
}

struct Run {
    cpu: Duration,
    wall: Duration,
    checkpoints: Vec<pb::CheckpointRecord>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Submits `sql` at parallelism 2 and follows the job to its end.
fn run(cluster: &Cluster, sql: &str) -> Run {
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect(&cluster.address, Duration::from_secs(5))
            .await
            .expect("connect");
        let cpu_before = cluster.cpu();
        let started = Instant::now();
        let job = client.submit(sql, 2, "bench").await.expect("submit").jobs[0]
            .job_id
            .clone();
        let mut checkpoints: Vec<pb::CheckpointRecord> = Vec::new();
        loop {
            let detail = client.job(&job).await.expect("job");
            for c in &detail.checkpoints {
                if !checkpoints
                    .iter()
                    .any(|k| k.checkpoint_id == c.checkpoint_id)
                {
                    checkpoints.push(c.clone());
                }
            }
            let summary = detail.summary.unwrap_or_default();
            if summary.state() == pb::JobState::Finished {
                break;
            }
            assert!(
                summary.state() != pb::JobState::Failed,
                "the benchmark job failed: {}",
                summary.failure
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Run {
            cpu: cluster.cpu().saturating_sub(cpu_before),
            wall: started.elapsed(),
            checkpoints,
        }
    })
}

/// The checkpoints of a run that completed.
fn completed(r: &Run) -> Vec<&pb::CheckpointRecord> {
    r.checkpoints
        .iter()
        .filter(|c| c.status == "COMPLETED")
        .collect()
}

/// The workers' peak resident memory, as "N MB, N MB".
fn peak_memory(cluster: &Cluster) -> String {
    let rss: Vec<String> = cluster
        .worker_peak_rss_mb()
        .iter()
        .map(|mb| format!("{mb:.0} MB"))
        .collect();
    rss.join(", ")
}

fn median_ms(checkpoints: &[pb::CheckpointRecord]) -> u64 {
    let mut d: Vec<u64> = checkpoints
        .iter()
        .filter(|c| c.status == "COMPLETED")
        .map(|c| c.duration_ms)
        .collect();
    d.sort_unstable();
    d.get(d.len() / 2).copied().unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = support::rows(30_000_000);
    let dir = std::env::temp_dir().join(format!("weir-checkpoint-bench-{}", std::process::id()));
    let checkpoints = format!("file://{}", dir.join("checkpoints").display());
    let cluster = Cluster::start(2, 2, &["--checkpoint-dir", &checkpoints]);

    let state_keys: Option<Vec<u64>> = std::env::var("WEIR_BENCH_STATE_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect());
    let intervals: &[&str] = if state_keys.is_some() {
        &[]
    } else {
        &["0", "10s", "1s"]
    };
    if !intervals.is_empty() {
        println!("1-million-key aggregation, {rows} events, parallelism 2, 2 worker processes:");
    }
    for &interval in intervals {
        let r = run(&cluster, &aggregation(rows, 1_000_000, interval, None));
        let completed = completed(&r);
        let state = completed.iter().map(|c| c.state_bytes).max().unwrap_or(0);
        println!(
            "  checkpoints {:<4}: {:>6.2} M events/CPU-s, {:>6.2} M events/s wall; {} checkpoints, median {} ms, largest {:.1} MB",
            if interval == "0" { "off" } else { interval },
            rows as f64 / r.cpu.as_secs_f64().max(1e-3) / 1e6,
            rows as f64 / r.wall.as_secs_f64() / 1e6,
            completed.len(),
            median_ms(&r.checkpoints),
            state as f64 / 1e6
        );
    }

    println!(
        "checkpoint duration and upload against state size (1 s checkpoints, rate-limited input):"
    );
    let only_state = state_keys.is_some();
    for keys in state_keys.unwrap_or_else(|| vec![10_000, 100_000, 1_000_000, 3_000_000]) {
        if keys == 0 {
            continue;
        }
        let n = keys * 4;
        let r = run(&cluster, &aggregation(n, keys, "1s", Some(n / 8)));
        let completed = completed(&r);
        let state = completed.iter().map(|c| c.state_bytes).max().unwrap_or(0);
        let uploaded: u64 = completed.iter().map(|c| c.uploaded_bytes).sum();
        let total: u64 = completed.iter().map(|c| c.state_bytes).sum();
        println!(
            "  {keys:>9} keys: state {:>8.1} MB, median checkpoint {:>5} ms, uploaded {:>5.1}% of the checkpoints' bytes ({} checkpoints)",
            state as f64 / 1e6,
            median_ms(&r.checkpoints),
            100.0 * uploaded as f64 / total.max(1) as f64,
            completed.len()
        );
    }
    println!(
        "  peak resident memory of the workers: {} (operators keep {} KiB of state in memory, WEIR_WORKER_STATE_OPERATOR_MEMORY_KB)",
        peak_memory(&cluster),
        std::env::var("WEIR_WORKER_STATE_OPERATOR_MEMORY_KB").unwrap_or_else(|_| "65536".into())
    );
    drop(cluster);
    let session_keys: Option<Vec<u64>> = std::env::var("WEIR_BENCH_SESSION_KEYS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect());
    for keys in session_keys.iter().flatten().copied() {
        // A fresh cluster, so its peak memory is this run's.
        let cluster = Cluster::start(2, 2, &["--checkpoint-dir", &checkpoints]);
        let n = keys * 4;
        let r = run(&cluster, &sessions(n, keys));
        let completed = completed(&r);
        let state = completed.iter().map(|c| c.state_bytes).max().unwrap_or(0);
        println!(
            "  session windows, {keys} keys open at once: state {:.1} MB, median checkpoint {} ms, {:.2} M events/CPU-s, {:.1} s, peak worker memory {}",
            state as f64 / 1e6,
            median_ms(&r.checkpoints),
            n as f64 / r.cpu.as_secs_f64().max(1e-3) / 1e6,
            r.wall.as_secs_f64(),
            peak_memory(&cluster)
        );
    }
    if only_state || session_keys.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    println!("recovery (a worker killed mid-run, 1 s checkpoints):");
    let mut cluster = Cluster::start(
        3,
        2,
        &[
            "--checkpoint-dir",
            &checkpoints,
            "--heartbeat-interval-ms",
            "100",
        ],
    );
    let rt = runtime();
    let recovery = rt.block_on(async {
        let client = Client::connect(&cluster.address, Duration::from_secs(5))
            .await
            .expect("connect");
        let sql = aggregation(50_000_000, 100_000, "1s", Some(2_000_000));
        let job = client
            .submit(&sql, 2, "recovery")
            .await
            .expect("submit")
            .jobs[0]
            .job_id
            .clone();
        // Let it take a few checkpoints.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let detail = client.job(&job).await.expect("job");
        let victim = detail
            .subtasks
            .iter()
            .map(|t| t.worker_id.clone())
            .find(|w| w != "w3")
            .unwrap_or_else(|| "w1".into());
        let index: usize = victim.trim_start_matches('w').parse().unwrap_or(1);
        let killed = Instant::now();
        let _ = cluster.processes[index].kill();
        loop {
            let detail = client.job(&job).await.expect("job");
            let restarted = detail.summary.as_ref().is_some_and(|s| s.restarts > 0);
            let flowing = detail.subtasks.iter().any(|t| {
                t.state() == pb::TaskState::Running
                    && t.records_out > 0
                    && t.vertex_name.contains("GroupAggregate")
            }) || detail
                .subtasks
                .iter()
                .any(|t| t.state() == pb::TaskState::Running && t.records_in > 0);
            if restarted && flowing {
                break killed.elapsed();
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no recovery");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    println!(
        "  kill -> rows flowing again in the restarted job: {:.2} s (heartbeat-independent: the broken session is seen at once)",
        recovery.as_secs_f64()
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
