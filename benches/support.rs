//! What the benchmarks share: the Bid-shaped `datagen` table of the peer
//! scripts, the row count knob, and CPU time read from `/proc`.

#![allow(dead_code)]

use std::time::Duration;

/// Rows per run: `WEIR_BENCH_ROWS`, or `default`.
pub fn rows(default: u64) -> u64 {
    std::env::var("WEIR_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of a process (`"self"` or a pid), from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// The Bid table of `../shared/peers/flink/` and a blackhole sink.
pub fn bid_table(rows: u64) -> String {
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

/// The windowed aggregation of the peer scripts.
pub const WINDOW_QUERY: &str = "INSERT INTO sink SELECT bidder, COUNT(*), SUM(price), window_start, window_end \
     FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end";
