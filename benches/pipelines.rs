//! End-to-end pipeline benchmarks: the four Bid-shaped `datagen` queries of
//! `../shared/peers/flink/` (source, filter, window, groupagg), run on the
//! embedded engine.
//!
//! Criterion is given CPU time (user + system of the whole process) rather
//! than wall time, so its throughput figure reads directly as **events per
//! CPU-second**, the peers' metric.
//!
//! `cargo bench --bench pipelines` (`WEIR_BENCH_ROWS`, default 2,000,000 per
//! run; `WEIR_BENCH_PARALLELISM`, default 1).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn rows() -> u64 {
    std::env::var("WEIR_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}

fn parallelism() -> usize {
    std::env::var("WEIR_BENCH_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// User + system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn bid_table(rows: u64) -> String {
    format!(
        "CREATE TABLE bid (
           id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
           ts AS TO_TIMESTAMP_LTZ(id, 3),
           WATERMARK FOR ts AS ts
         ) WITH (
           'connector' = 'datagen', 'number-of-rows' = '{rows}',
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
           'fields.auction.min' = '1000', 'fields.auction.max' = '1999',
           'fields.bidder.min' = '1000', 'fields.bidder.max' = '10999',
           'fields.price.min' = '1', 'fields.price.max' = '100000',
           'fields.channel.length' = '8'
         );
         CREATE TABLE sink WITH ('connector' = 'blackhole');"
    )
}

const QUERIES: [(&str, &str); 4] = [
    (
        "source",
        "INSERT INTO sink SELECT id, auction, bidder, price, channel FROM bid",
    ),
    (
        "filter",
        "INSERT INTO sink SELECT auction, 0.908 * price, UPPER(channel) FROM bid \
         WHERE MOD(auction, 7) = 0 OR price > 90000",
    ),
    (
        "window",
        "INSERT INTO sink SELECT bidder, COUNT(*), SUM(price), window_start, window_end \
         FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end",
    ),
    (
        "groupagg",
        "INSERT INTO sink SELECT id % 1000000, COUNT(*), SUM(price), MAX(price) FROM bid GROUP BY id % 1000000",
    ),
];

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
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut cpu = Duration::ZERO;
                for _ in 0..iterations {
                    let script = format!("{}\n{query};", bid_table(rows));
                    let before = cpu_time();
                    runtime.block_on(async {
                        let mut engine = weir::Engine::new(parallelism());
                        engine
                            .execute_script(&script)
                            .await
                            .expect("benchmark job runs");
                    });
                    cpu += cpu_time().saturating_sub(before);
                }
                cpu
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipelines);
criterion_main!(benches);
