//! End-to-end pipeline benchmarks: the four Bid-shaped `datagen` queries of
//! `../shared/peers/flink/` (source, filter, window, groupagg), and an
//! unbounded Top-N (`topn`, Flink's side in `benches/peers/flink_top_n.py`),
//! run on the embedded engine.
//!
//! Criterion is given CPU time (user + system of the whole process) rather
//! than wall time, so its throughput figure reads directly as **events per
//! CPU-second**, the peers' metric.
//!
//! The `nexmark` group runs the Nexmark queries with joins of
//! `benches/nexmark/` (q3, q4, q5, q7, q8, q9, q20) over the `nexmark`
//! connector, `WEIR_BENCH_NEXMARK_EVENTS` events (default 2,000,000) at
//! 100,000 events per second of event time; events count the whole
//! stream (people, auctions and bids), as Nexmark's figures do.
//!
//! `cargo bench --bench pipelines` (`WEIR_BENCH_ROWS`, default 2,000,000 per
//! run; `WEIR_BENCH_PARALLELISM`, default 1; `cargo bench --bench pipelines
//! nexmark` for those alone).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;

use support::{WINDOW_QUERY, bid_table, cpu_time};

fn rows() -> u64 {
    support::rows(2_000_000)
}

fn parallelism() -> usize {
    std::env::var("WEIR_BENCH_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

const QUERIES: [(&str, &str); 5] = [
    (
        "source",
        "INSERT INTO sink SELECT id, auction, bidder, price, channel FROM bid",
    ),
    (
        "filter",
        "INSERT INTO sink SELECT auction, 0.908 * price, UPPER(channel) FROM bid \
         WHERE MOD(auction, 7) = 0 OR price > 90000",
    ),
    ("window", WINDOW_QUERY),
    // As Flink runs it: a changelog (streaming mode over the bounded
    // generator) with Nexmark's mini-batch settings.
    (
        "groupagg",
        "SET 'execution.runtime-mode' = 'streaming';
         SET 'table.exec.mini-batch.enabled' = 'true';
         SET 'table.exec.mini-batch.allow-latency' = '2 s';
         SET 'table.exec.mini-batch.size' = '5000';
         INSERT INTO sink SELECT id % 1000000, COUNT(*), SUM(price), MAX(price) FROM bid GROUP BY id % 1000000",
    ),
    // An unbounded Top-N (the three highest bids of each of 1,000
    // auctions), a changelog on both sides; Flink's side is
    // `benches/peers/flink_top_n.py`.
    (
        "topn",
        "SET 'execution.runtime-mode' = 'streaming';
         INSERT INTO sink SELECT auction, price, id, rn FROM (
           SELECT auction, price, id, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn
           FROM bid) WHERE rn <= 3",
    ),
];

/// Runs `script` on a new embedded engine per iteration; the time measured
/// is the process's CPU time.
fn cpu_per_run(b: &mut criterion::Bencher<'_>, runtime: &tokio::runtime::Runtime, script: &str) {
    b.iter_custom(|iterations| {
        let mut cpu = Duration::ZERO;
        for _ in 0..iterations {
            let before = cpu_time("self");
            runtime.block_on(async {
                let mut engine = weir::Engine::new(parallelism());
                engine
                    .execute_script(script)
                    .await
                    .expect("benchmark job runs");
            });
            cpu += cpu_time("self").saturating_sub(before);
        }
        cpu
    })
}

fn pipelines(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = rows();
    let mut group = c.benchmark_group(format!("pipelines_p{}", parallelism()));
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows));
    group.measurement_time(Duration::from_secs(20));
    for (name, query) in QUERIES {
        let script = format!("{}\n{query};", bid_table(rows));
        group.bench_function(name, |b| cpu_per_run(b, &runtime, &script));
    }
    group.finish();
}

/// The Nexmark queries with joins, as `benches/nexmark/` writes them.
const NEXMARK_QUERIES: [&str; 7] = ["q3", "q4", "q5", "q7", "q8", "q9", "q20"];

fn nexmark(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let events: u64 = std::env::var("WEIR_BENCH_NEXMARK_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/nexmark");
    let ddl = std::fs::read_to_string(dir.join("ddl.sql"))
        .expect("benches/nexmark/ddl.sql")
        .replace("${EVENTS}", &events.to_string())
        .replace("${RATE}", "100000");
    let mut group = c.benchmark_group(format!("nexmark_p{}", parallelism()));
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.measurement_time(Duration::from_secs(20));
    for name in NEXMARK_QUERIES {
        let text = std::fs::read_to_string(dir.join(format!("{name}.sql"))).expect("query file");
        let streaming = text.split("\n-- batch:\n").next().unwrap_or_default();
        let query: Vec<&str> = streaming.lines().filter(|l| !l.starts_with("--")).collect();
        let script = format!(
            "{ddl}\nSET 'execution.runtime-mode' = 'streaming';\n\
             CREATE TABLE sink WITH ('connector' = 'blackhole');\n\
             INSERT INTO sink {};",
            query.join("\n")
        );
        group.bench_function(name, |b| cpu_per_run(b, &runtime, &script));
    }
    group.finish();
}

criterion_group!(benches, pipelines, nexmark);
criterion_main!(benches);
