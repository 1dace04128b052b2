//! Kafka pipelines on a real cluster (a coordinator and two worker
//! processes) against librdkafka's mock cluster, hosted in this process:
//!
//! 1. Source throughput: a bounded read of 100-byte JSON records (the same
//!    bytes as `raw`, and the same rows as 100-byte plain Avro datums) into a blackhole sink, in records/s and MB/s per
//!    CPU-second of the Weir processes (the broker's CPU is not counted).
//! 2. Kafka → Kafka pass-through with `exactly-once` at 1 s and 10 s
//!    checkpoint intervals, and `at-least-once` for comparison.
//!
//! `cargo bench --bench kafka` (`WEIR_BENCH_KAFKA_ROWS`, default 1,920,000:
//! 40,000 per partition, which the mock cluster keeps whole).

mod support;

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::Cluster;
use weir::cluster::Client;
use weir_proto as pb;

/// librdkafka's mock cluster keeps at most about 5 MB per partition (older
/// records are deleted), so the input is spread over many partitions.
const PARTITIONS: i32 = 48;

fn rows() -> u64 {
    std::env::var("WEIR_BENCH_KAFKA_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_920_000)
}

/// A Bid-like JSON record padded to 100 bytes.
fn record(id: u64) -> Vec<u8> {
    let mut json = format!(
        r#"{{"id":{id},"auction":{},"bidder":{},"price":{},"channel":"ch-{}","extra":""#,
        id % 10_000,
        id % 77_777,
        id * 7 % 100_000,
        id % 11
    );
    while json.len() < 98 {
        json.push('x');
    }
    json.push_str("\"}");
    json.into_bytes()
}

/// Avro's zig-zag varint.
fn avro_long(n: i64, out: &mut Vec<u8>) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The same Bid as a plain Avro datum of the table's derived schema (all
/// columns NOT NULL), padded to 100 bytes.
fn avro_record(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(100);
    for n in [id, id % 10_000, id % 77_777, id * 7 % 100_000] {
        avro_long(n as i64, &mut out);
    }
    let channel = format!("ch-{}", id % 11);
    avro_long(channel.len() as i64, &mut out);
    out.extend_from_slice(channel.as_bytes());
    // The padding's length takes one varint byte below 64, two above.
    let rest = 100 - out.len();
    let pad = if rest - 1 < 64 { rest - 1 } else { rest - 2 };
    avro_long(pad as i64, &mut out);
    out.resize(100, b'x');
    debug_assert_eq!(out.len(), 100);
    out
}

fn fill(bootstrap: &str, topic: &str, rows: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer");
    let started = Instant::now();
    for id in 1..=rows {
        let value = if topic.contains("avro") {
            avro_record(id)
        } else {
            record(id)
        };
        let mut pending = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(&value)
            .partition((id % PARTITIONS as u64) as i32);
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((_, back)) => {
                    pending = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    eprintln!(
        "produced {rows} records to '{topic}' in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

struct Run {
    cpu: Duration,
    wall: Duration,
}

fn run(cluster: &Cluster, sql: &str) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = Client::connect(&cluster.address, Duration::from_secs(5))
            .await
            .expect("connect");
        let cpu_before = cluster.cpu();
        let started = Instant::now();
        let job = client.submit(sql, 2, "bench").await.expect("submit").jobs[0]
            .job_id
            .clone();
        loop {
            let summary = client
                .job(&job)
                .await
                .expect("job")
                .summary
                .unwrap_or_default();
            match summary.state() {
                pb::JobState::Finished => break,
                pb::JobState::Failed | pb::JobState::Canceled => {
                    panic!("the benchmark job ended: {}", summary.failure)
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Run {
            wall: started.elapsed(),
            cpu: cluster.cpu().saturating_sub(cpu_before),
        }
    })
}

fn source_table(bootstrap: &str, topic: &str, format: &str) -> String {
    let columns = if format == "raw" {
        "line BYTES"
    } else if format == "avro" {
        "id BIGINT NOT NULL, auction BIGINT NOT NULL, bidder BIGINT NOT NULL, price BIGINT NOT NULL, \
         channel STRING NOT NULL, extra STRING NOT NULL"
    } else {
        "id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, extra STRING"
    };
    format!(
        "CREATE TABLE src ({columns}) WITH ('connector' = 'kafka', 'topic' = '{topic}',
           'format' = '{format}', 'properties.bootstrap.servers' = '{bootstrap}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');"
    )
}

fn report(what: &str, rows: u64, run: &Run) {
    let cpu = run.cpu.as_secs_f64();
    let per_cpu = rows as f64 / cpu;
    println!(
        "{what:<44} {:>10.0} records/s  {:>9.0} records/CPU-s  {:>6.1} MB/CPU-s  ({:.1}s wall, {cpu:.1} CPU-s)",
        rows as f64 / run.wall.as_secs_f64(),
        per_cpu,
        per_cpu * 100.0 / 1e6,
        run.wall.as_secs_f64(),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows = rows();
    let mock = MockCluster::new(3).expect("a mock cluster");
    let bootstrap = mock.bootstrap_servers();
    for topic in ["in", "in-avro", "out-eos-1s", "out-eos-10s", "out-alo"] {
        mock.create_topic(topic, PARTITIONS, 1).expect("a topic");
    }
    fill(&bootstrap, "in", rows);
    fill(&bootstrap, "in-avro", rows);
    let cluster = Cluster::start(2, 2, &[]);
    println!(
        "Kafka, {rows} records of 100 bytes, {PARTITIONS} partitions, parallelism 2 on 2 workers:"
    );
    let out = std::env::temp_dir().join(format!("weir-kafka-bench-{}", std::process::id()));
    for (format, topic) in [("json", "in"), ("raw", "in"), ("avro", "in-avro")] {
        // COUNT(*) checks every record was read; the decoder still parses whole records.
        let dir = out.join(format);
        let sql = format!(
            "{} CREATE TABLE sink (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO sink SELECT COUNT(*) FROM src;",
            source_table(&bootstrap, topic, format),
            dir.display()
        );
        let result = run(&cluster, &sql);
        assert_eq!(counted(&dir), rows, "every record read");
        report(&format!("source, {format} -> COUNT(*)"), rows, &result);
    }
    let _ = std::fs::remove_dir_all(&out);
    for (what, topic, guarantee, interval) in [
        (
            "kafka -> kafka, exactly-once, 1 s",
            "out-eos-1s",
            "exactly-once",
            "1s",
        ),
        (
            "kafka -> kafka, exactly-once, 10 s",
            "out-eos-10s",
            "exactly-once",
            "10s",
        ),
        (
            "kafka -> kafka, at-least-once, 1 s",
            "out-alo",
            "at-least-once",
            "1s",
        ),
    ] {
        let sql = format!(
            "SET 'execution.checkpointing.interval' = '{interval}'; {}
             CREATE TABLE sink (id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, extra STRING)
             WITH ('connector' = 'kafka', 'topic' = '{topic}', 'format' = 'json',
                   'properties.bootstrap.servers' = '{bootstrap}', 'sink.delivery-guarantee' = '{guarantee}');
             INSERT INTO sink SELECT * FROM src;",
            source_table(&bootstrap, "in", "json")
        );
        let result = run(&cluster, &sql);
        let written = topic_records(&bootstrap, topic);
        assert!(
            written >= rows,
            "{what}: {written} of {rows} records written"
        );
        report(what, rows, &result);
    }
}

/// The number in the COUNT(*) output files under `dir`.
fn counted(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("the count's output")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Records written to `topic`: the sum of its partitions' end offsets.
fn topic_records(bootstrap: &str, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a consumer");
    (0..PARTITIONS)
        .map(|p| {
            // The topic started empty: the end offset counts every record.
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            high as u64
        })
        .sum()
}
