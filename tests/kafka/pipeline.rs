//! Kafka → SQL → Kafka pipelines on real processes: a coordinator and three
//! workers reading and writing librdkafka's mock cluster (exactly-once,
//! with workers killed and broker errors injected) or tansu
//! (at-least-once). Every test compares what a consumer of the output
//! topics sees with the expected multiset computed by hand from the input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use weir_proto as pb;

use super::brokers::{ConsumedRecord, MockKafka, Tansu, consume_all, produce};
use crate::cluster::fault::{
    arm_failpoint, await_crash_and_restart, difference, kill_randomly, submit_script,
};
use crate::cluster::harness::{TestCluster, wait_for_end};

/// Input ids 1..=EVENTS, over 4 partitions.
const EVENTS: u64 = 60_000;
/// Event time of id `i`: BASE + i ms, minus up to 300 ms of disorder.
const BASE: i64 = 1_700_000_000_000;
/// A bounded read ends at the first record at or after this time.
const END: i64 = BASE + EVENTS as i64 + 60_000;

type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

fn event_time(id: u64) -> i64 {
    BASE + id as i64 - (id * 7919 % 300) as i64
}

/// The input, in production order: each id's JSON to partition `id % 4`.
fn events(ids: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    ids.map(|id| {
        let value = format!(r#"{{"id": {id}, "note": "e{id}"}}"#).into_bytes();
        (
            Some((id % 4) as i32),
            None,
            Some(value),
            Some(event_time(id)),
        )
    })
    .collect()
}

/// One record per partition past the end time: bounded reads stop there.
fn end_markers(partitions: i32) -> Vec<Record> {
    (0..partitions)
        .map(|p| (Some(p), None, Some(b"{}".to_vec()), Some(END + 1)))
        .collect()
}

/// Produces the input in slices over about `seconds`, then the end markers.
fn produce_slowly(bootstrap: String, seconds: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slices = seconds * 4;
        let per = EVENTS / slices;
        for s in 0..slices {
            let last = if s + 1 == slices {
                EVENTS
            } else {
                (s + 1) * per
            };
            produce(&bootstrap, "events", &events(s * per + 1..=last)).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        produce(&bootstrap, "events", &end_markers(4)).await;
    })
}

fn script(bootstrap: &str, guarantee: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE events (id BIGINT, note STRING, ts TIMESTAMP(3) METADATA FROM 'timestamp',
                             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
        WITH ('connector' = 'kafka', 'topic' = 'events', 'format' = 'json',
              'properties.bootstrap.servers' = '{bootstrap}',
              'scan.startup.mode' = 'earliest-offset',
              'scan.bounded.mode' = 'timestamp', 'scan.bounded.timestamp-millis' = '{END}');
        CREATE TABLE copy (id BIGINT, note STRING) WITH ('connector' = 'kafka', 'topic' = 'copy',
              'format' = 'json', 'properties.bootstrap.servers' = '{bootstrap}',
              'sink.delivery-guarantee' = '{guarantee}');
        CREATE TABLE windows (k BIGINT, we BIGINT, c BIGINT, s BIGINT) WITH ('connector' = 'kafka',
              'topic' = 'windows', 'format' = 'json', 'key.fields' = 'k',
              'properties.bootstrap.servers' = '{bootstrap}',
              'sink.delivery-guarantee' = '{guarantee}');
        INSERT INTO copy SELECT id, note FROM events;
        INSERT INTO windows SELECT id % 7, CAST(window_end AS BIGINT), COUNT(*), SUM(id)
        FROM TUMBLE(events, ts, INTERVAL '1' SECOND) GROUP BY id % 7, window_start, window_end;"
    )
}

/// The expected outputs, by hand: every id once; per (id % 7, window end)
/// the count and sum of the ids.
fn expected() -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut copy = BTreeMap::new();
    let mut windows: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for id in 1..=EVENTS {
        *copy
            .entry(format!(r#"{{"id":{id},"note":"e{id}"}}"#))
            .or_default() += 1;
        let end = event_time(id).div_euclid(1000) * 1000 + 1000;
        let w = windows.entry((id % 7, end)).or_default();
        w.0 += 1;
        w.1 += id;
    }
    let windows = windows
        .into_iter()
        .map(|((k, we), (c, s))| (format!(r#"{{"k":{k},"we":{we},"c":{c},"s":{s}}}"#), 1))
        .collect();
    (copy, windows)
}

fn multiset(records: &[ConsumedRecord]) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    for r in records {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        *rows.entry(value).or_default() += 1;
    }
    rows
}

async fn wait_finished(cluster: &TestCluster, jobs: &[String], within: Duration) {
    let client = cluster.client().await;
    for job in jobs {
        let summary = wait_for_end(&client, job, within).await;
        assert_eq!(
            summary.state(),
            pb::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
    }
}

/// What a `read_committed` consumer of the outputs sees equals the expected multisets.
fn check_exact(bootstrap: &str) {
    let (copy, windows) = expected();
    let got_copy = multiset(&consume_all(
        bootstrap,
        "copy",
        true,
        Duration::from_secs(60),
    ));
    let got_windows = multiset(&consume_all(
        bootstrap,
        "windows",
        true,
        Duration::from_secs(60),
    ));
    assert!(got_copy == copy, "copy: {}", difference(&copy, &got_copy));
    assert!(
        got_windows == windows,
        "windows: {}",
        difference(&windows, &got_windows)
    );
}

fn create_topics(kafka: &mut MockKafka) {
    kafka.create_topic("events", 4);
    kafka.create_topic("copy", 3);
    kafka.create_topic("windows", 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_exactly_once_survives_worker_kills() {
    let mut kafka = MockKafka::start();
    create_topics(&mut kafka);
    let bootstrap = kafka.bootstrap().to_string();
    let mut cluster = TestCluster::start(3, 4).await;
    let started = Instant::now();
    let producer = produce_slowly(bootstrap.clone(), 16);
    let jobs = submit_script(&cluster, &script(&bootstrap, "exactly-once"), 3).await;
    let landed = kill_randomly(&mut cluster, &jobs, 4).await;
    producer.await.unwrap();
    wait_finished(&cluster, &jobs, Duration::from_secs(180)).await;
    check_exact(&bootstrap);
    let client = cluster.client().await;
    let mut restarts = 0;
    for job in &jobs {
        restarts += client.job(job).await.unwrap().summary.unwrap().restarts;
    }
    assert!(
        landed >= 2 && restarts >= 1,
        "{landed} kills, {restarts} restarts"
    );
    eprintln!(
        "{landed} kills, {restarts} restarts, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_exactly_once_survives_broker_errors() {
    let mut kafka = MockKafka::start();
    create_topics(&mut kafka);
    let bootstrap = kafka.bootstrap().to_string();
    let cluster = TestCluster::start(3, 4).await;
    let producer = produce_slowly(bootstrap.clone(), 12);
    let jobs = submit_script(&cluster, &script(&bootstrap, "exactly-once"), 3).await;
    let mut rng = rand::rng();
    for command in [
        "request-errors Fetch LEADER_NOT_AVAILABLE 5",
        "request-errors Produce REQUEST_TIMED_OUT 3",
        "request-errors EndTxn NOT_COORDINATOR 2",
        "request-errors AddPartitionsToTxn CONCURRENT_TRANSACTIONS 3",
        "request-errors ListOffsets LEADER_NOT_AVAILABLE 2",
        "request-errors OffsetCommit COORDINATOR_LOAD_IN_PROGRESS 2",
    ] {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2_000))).await;
        kafka.command(command).unwrap();
    }
    producer.await.unwrap();
    wait_finished(&cluster, &jobs, Duration::from_secs(180)).await;
    check_exact(&bootstrap);
}

/// tansu answers ListOffsets wrongly (the latest offset is the last batch's
/// base + 1, and lookups by time give 0), so its source is unbounded: the
/// test waits until every id came out, then cancels the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_at_least_once_on_tansu_survives_worker_kills() {
    let mut tansu = Tansu::start();
    tansu.create_topic("events", 4);
    tansu.create_topic("copy", 3);
    let bootstrap = tansu.bootstrap().to_string();
    let mut cluster = TestCluster::start(3, 4).await;
    let producer = produce_slowly(bootstrap.clone(), 10);
    let script = format!(
        "SET 'execution.checkpointing.interval' = '1s';
        SET 'restart-strategy.fixed-delay.delay' = '200ms';
        CREATE TABLE events (id BIGINT, note STRING) WITH ('connector' = 'kafka', 'topic' = 'events',
              'format' = 'json', 'properties.bootstrap.servers' = '{bootstrap}',
              'scan.startup.mode' = 'earliest-offset');
        CREATE TABLE copy (id BIGINT, note STRING) WITH ('connector' = 'kafka', 'topic' = 'copy',
              'format' = 'json', 'properties.bootstrap.servers' = '{bootstrap}',
              'sink.delivery-guarantee' = 'at-least-once');
        INSERT INTO copy SELECT id, note FROM events WHERE id IS NOT NULL;"
    );
    let jobs = submit_script(&cluster, &script, 3).await;
    let landed = kill_randomly(&mut cluster, &jobs, 2).await;
    producer.await.unwrap();
    let (copy, _) = expected();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let got = multiset(&consume_all(
            &bootstrap,
            "copy",
            false,
            Duration::from_secs(60),
        ));
        if copy.keys().all(|r| got.contains_key(r)) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let client = cluster.client().await;
    for job in &jobs {
        client.cancel(job).await.unwrap();
    }
    let missing: Vec<&String> = copy.keys().filter(|r| !got.contains_key(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} ids missing, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        cluster.logs()
    );
    let unexpected: Vec<&String> = got.keys().filter(|r| !copy.contains_key(*r)).collect();
    assert!(unexpected.is_empty(), "unexpected rows {unexpected:?}");
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!("tansu, at-least-once: {landed} kills, {duplicates} duplicate rows");
}

/// A worker crashes at an exact step (its `FAILPOINTS` fire the third
/// time), then comes back; the outputs must still be exact.
async fn kafka_crash_at(failpoint: &str) -> TestCluster {
    let mut kafka = MockKafka::start();
    create_topics(&mut kafka);
    let bootstrap = kafka.bootstrap().to_string();
    let mut cluster = TestCluster::start(3, 4).await;
    arm_failpoint(&mut cluster, failpoint).await;
    let producer = produce_slowly(bootstrap.clone(), 10);
    let jobs = submit_script(&cluster, &script(&bootstrap, "exactly-once"), 3).await;
    await_crash_and_restart(&mut cluster, failpoint).await;
    producer.await.unwrap();
    wait_finished(&cluster, &jobs, Duration::from_secs(180)).await;
    check_exact(&bootstrap);
    cluster
}

/// The coordinator completed a checkpoint, the worker dies before its sinks
/// commit: the restored sinks write that checkpoint's rows, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_crash_between_checkpoint_and_commit() {
    kafka_crash_at("worker::before-commit").await;
}

/// The worker dies in the middle of a transaction, half its rows sent (and
/// visible: the mock cluster has no isolation). The restored sink reads the
/// topic back from the begin marker and writes only the missing rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_crash_in_the_middle_of_a_transaction() {
    let cluster = kafka_crash_at("kafka::mid-transaction").await;
    assert!(
        cluster.logs_contain("re-committing a checkpoint's rows after a crash"),
        "the restored sink did not read back the half-written checkpoint\n{}",
        cluster.logs()
    );
}
