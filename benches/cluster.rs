//! The windowed aggregation of the peer scripts at parallelism 2, on a real
//! cluster: a coordinator and worker processes of the `weir` binary.
//! Compares 2 worker processes (one slice each, the shuffle crossing
//! loopback gRPC) with 1 worker process holding both slices (in-memory
//! channels), in events per CPU-second of all the cluster's processes.
//!
//! `cargo bench --bench cluster` (`WEIR_BENCH_ROWS`, default 10,000,000;
//! `WEIR_BENCH_RUNS`, default 3; the best run is reported).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Cluster, WINDOW_QUERY, bid_table, weir};

fn main() {
    // `cargo test --benches` runs this with `--test`-like flags: stay quick.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = support::rows(10_000_000);
    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("weir-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("window.sql");
    std::fs::write(&script, format!("{}\n{WINDOW_QUERY};", bid_table(rows))).expect("write");
    println!("window (10 s tumble, 10 K keys), {rows} events, parallelism 2:");
    for (workers, slots) in [(1, 2), (2, 1)] {
        let cluster = Cluster::start(workers, slots, &[]);
        let mut best: Option<(Duration, Duration)> = None;
        for _ in 0..runs {
            let cpu_before = cluster.cpu();
            let started = Instant::now();
            let status = weir()
                .args([
                    "submit",
                    "--wait",
                    "-p",
                    "2",
                    "--coordinator",
                    &cluster.address,
                ])
                .arg(&script)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("weir submit");
            assert!(status.success(), "the benchmark job failed");
            let (wall, cpu) = (started.elapsed(), cluster.cpu().saturating_sub(cpu_before));
            if best.is_none_or(|(_, c)| cpu < c) {
                best = Some((wall, cpu));
            }
        }
        let (wall, cpu) = best.expect("at least one run");
        println!(
            "  {workers} worker process(es): {:>6.2} M events/CPU-s, {:>6.2} M events/s wall ({:.2} s, {:.2} CPU-s)",
            rows as f64 / cpu.as_secs_f64().max(1e-3) / 1e6,
            rows as f64 / wall.as_secs_f64() / 1e6,
            wall.as_secs_f64(),
            cpu.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
