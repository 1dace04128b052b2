//! `upsert-kafka` against real brokers: an updating aggregate written as
//! upserts with exactly-once (in one process, and on a cluster whose
//! workers are SIGKILLed), an upsert topic read back as a changelog, and bad
//! upsert records under each bad-record policy.
//!
//! The output topic is checked the way its readers use it: compacted by
//! key (the last value of each key, a tombstone deleting it), read
//! `read_committed`, compared with the answer computed here from the input.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::brokers::{ConsumedRecord, MockKafka, consume_all, produce};
use super::cdc::{apply, changes, run, written_state};
use crate::cluster::fault::{kill_randomly, submit_script};
use crate::cluster::harness::{TestCluster, wait_for_end};

type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);
/// A change: the row before and the row after (as Debezium's envelope).
type Change = (Option<Value>, Option<Value>);
/// A record's key and value.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A topic compacted by key: the last value of each key, tombstones
/// deleting it. Keys and values as JSON.
fn compacted(records: &[ConsumedRecord]) -> BTreeMap<String, Value> {
    let mut table = BTreeMap::new();
    for r in records {
        let key: Value = serde_json::from_slice(r.key.as_deref().expect("a keyed record")).unwrap();
        match &r.value {
            Some(v) => {
                table.insert(key.to_string(), serde_json::from_slice(v).unwrap());
            }
            None => {
                table.remove(&key.to_string());
            }
        }
    }
    table
}

/// `SELECT k, COUNT(*), SUM(v) … GROUP BY k` over rows (as JSON, with
/// multiplicities), computed here: `{"k": …}` -> `{"k", "n", "s"}`.
fn count_and_sum(rows: &BTreeMap<String, i64>) -> BTreeMap<String, Value> {
    let mut groups: BTreeMap<String, (Value, i64, Option<i64>)> = BTreeMap::new();
    for (row, &copies) in rows {
        let row: Value = serde_json::from_str(row).unwrap();
        let k = row["k"].clone();
        let entry = groups
            .entry(json!({ "k": k }).to_string())
            .or_insert((k, 0, None));
        entry.1 += copies;
        if let Some(v) = row["v"].as_i64() {
            entry.2 = Some(entry.2.unwrap_or(0) + v * copies);
        }
    }
    groups
        .into_iter()
        .map(|(key, (k, n, s))| (key, json!({ "k": k, "n": n, "s": s })))
        .collect()
}

fn sink_ddl(bootstrap: &str, topic: &str, key_type: &str) -> String {
    format!(
        "CREATE TABLE {topic} (k {key_type}, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
         WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{bootstrap}',
               'key.format' = 'json', 'value.format' = 'json',
               'sink.delivery-guarantee' = 'exactly-once');"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_kafka_sink_compacts_to_the_aggregate_exactly_once() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("changes", 2);
    kafka.create_topic("totals", 3);
    let bootstrap = kafka.bootstrap().to_string();
    let input = changes();
    produce(&bootstrap, "changes", &input).await;
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "SET 'execution.checkpointing.interval' = '200ms';
         CREATE TABLE changes (id BIGINT NOT NULL, k STRING, v BIGINT, ts TIMESTAMP(3))
         WITH ('connector' = 'kafka', 'topic' = 'changes', 'format' = 'debezium-json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'scan.batch-size' = '2');
         {sink}
         INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM changes GROUP BY k;",
        sink = sink_ddl(&bootstrap, "totals", "STRING"),
    );
    let output = run(dir.path(), "upsert", &script, "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let records = consume_all(&bootstrap, "totals", true, Duration::from_secs(60));
    // The answer by hand: the changes applied, then grouped.
    let values: Vec<&[u8]> = input.iter().filter_map(|r| r.2.as_deref()).collect();
    let expected = count_and_sum(&apply(values));
    assert_eq!(compacted(&records), expected);
    assert_eq!(
        expected["{\"k\":\"a\"}"],
        json!({"k": "a", "n": 3, "s": 37}),
        "the hand-checked answer of tests/slt/11_cdc.slt"
    );
    // Upserts, not just the final rows: groups changed on the way.
    assert!(records.len() > expected.len(), "{records:?}");
}

/// Ids 1..=IDS, created, some updated (v, and for some k too), some deleted.
const IDS: u64 = 4_000;
const BASE: i64 = 1_700_000_000_000;
/// A bounded read ends at the first record at or after this time.
const END: i64 = BASE + 1_000_000;

/// The change records of one id, in order, as (before, after) rows.
fn history(id: u64) -> Vec<Change> {
    let created = json!({"id": id, "k": id % 7, "v": id});
    let mut out = vec![(None, Some(created.clone()))];
    let mut now = created;
    if id.is_multiple_of(3) {
        let updated = json!({"id": id, "k": (id / 3) % 7, "v": id * 2});
        out.push((Some(now.clone()), Some(updated.clone())));
        now = updated;
    }
    if id.is_multiple_of(5) {
        out.push((Some(now), None));
    }
    out
}

fn envelope(before: &Option<Value>, after: &Option<Value>) -> Vec<u8> {
    let op = match (before, after) {
        (None, _) => "c",
        (Some(_), Some(_)) => "u",
        (Some(_), None) => "d",
    };
    json!({"before": before, "after": after, "op": op})
        .to_string()
        .into_bytes()
}

/// Every id's changes, each id on partition `id % 4`, interleaved by round.
fn cluster_input() -> Vec<Record> {
    let histories: Vec<(u64, Vec<Change>)> = (1..=IDS).map(|id| (id, history(id))).collect();
    let mut records = Vec::new();
    for round in 0..3 {
        for (id, changes) in &histories {
            if let Some((before, after)) = changes.get(round) {
                let ts = BASE + records.len() as i64;
                records.push((
                    Some((id % 4) as i32),
                    None,
                    Some(envelope(before, after)),
                    Some(ts),
                ));
            }
        }
    }
    records
}

/// The answer: the ids' last rows, grouped by k.
fn cluster_expected() -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    for id in 1..=IDS {
        if let Some((_, Some(last))) = history(id).last() {
            *rows.entry(last.to_string()).or_default() += 1;
        }
    }
    count_and_sum(&rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upsert_kafka_sink_stays_exact_when_workers_are_killed() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("changes", 4);
    kafka.create_topic("totals", 3);
    let bootstrap = kafka.bootstrap().to_string();
    let mut cluster = TestCluster::start(3, 4).await;
    let input = cluster_input();
    // Slowly, so that the kills land while the job runs; then one record
    // per partition past the end time.
    let producer = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            for slice in input.chunks(input.len() / 40 + 1) {
                produce(&bootstrap, "changes", slice).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let markers: Vec<Record> = (0..4)
                .map(|p| (Some(p), None, Some(b"{}".to_vec()), Some(END + 1)))
                .collect();
            produce(&bootstrap, "changes", &markers).await;
        })
    };
    let script = format!(
        "SET 'execution.checkpointing.interval' = '1s';
         SET 'restart-strategy.fixed-delay.delay' = '200ms';
         CREATE TABLE changes (id BIGINT NOT NULL, k BIGINT, v BIGINT)
         WITH ('connector' = 'kafka', 'topic' = 'changes', 'format' = 'debezium-json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'timestamp', 'scan.bounded.timestamp-millis' = '{END}');
         {sink}
         INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM changes GROUP BY k;",
        sink = sink_ddl(&bootstrap, "totals", "BIGINT"),
    );
    let jobs = submit_script(&cluster, &script, 3).await;
    let landed = kill_randomly(&mut cluster, &jobs, 3).await;
    producer.await.unwrap();
    let client = cluster.client().await;
    for job in &jobs {
        let summary = wait_for_end(&client, job, Duration::from_secs(180)).await;
        assert_eq!(
            summary.state(),
            weir_proto::JobState::Finished,
            "job {job}: {}\n{}",
            summary.failure,
            cluster.logs()
        );
    }
    let records = consume_all(&bootstrap, "totals", true, Duration::from_secs(60));
    let got = compacted(&records);
    let expected = cluster_expected();
    assert_eq!(got.len(), 7);
    assert_eq!(got, expected);
    let mut restarts = 0;
    for job in &jobs {
        restarts += client.job(job).await.unwrap().summary.unwrap().restarts;
    }
    assert!(
        landed >= 2 && restarts >= 1,
        "{landed} kills, {restarts} restarts"
    );
}

/// A keyed record of the upsert source's topic: `v` = `None` is a tombstone.
fn upsert(id: i64, v: Option<i64>) -> Record {
    (
        Some(0),
        Some(json!({ "id": id }).to_string().into_bytes()),
        v.map(|v| {
            json!({ "v": v, "name": format!("n{v}") })
                .to_string()
                .into_bytes()
        }),
        Some(1_000),
    )
}

fn source_ddl(bootstrap: &str, topic: &str, policy: &str) -> String {
    format!(
        "CREATE TABLE src (id BIGINT, name STRING, v BIGINT, PRIMARY KEY (id) NOT ENFORCED)
         WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{bootstrap}',
               'key.format' = 'json', 'value.format' = 'json',
               'value.fields-include' = 'EXCEPT_KEY',
               'scan.bounded.mode' = 'latest-offset'{policy});"
    )
}

fn aggregate_script(bootstrap: &str, topic: &str, out: &Path, policy: &str) -> String {
    format!(
        "{source}
         CREATE TABLE totals (n BIGINT, s BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json');
         INSERT INTO totals SELECT COUNT(*), SUM(v) FROM src;",
        out.display(),
        source = source_ddl(bootstrap, topic, policy),
    )
}

/// The compacted content of upsert records (id -> v), by hand.
fn compact_upserts(records: &[Record]) -> BTreeMap<i64, i64> {
    let mut table = BTreeMap::new();
    for (_, key, value, _) in records {
        let Some(key) = key else { continue };
        let Ok(key) = serde_json::from_slice::<Value>(key) else {
            continue;
        };
        let Some(id) = key["id"].as_i64() else {
            continue;
        };
        match value {
            None => {
                table.remove(&id);
            }
            Some(v) => {
                if let Some(v) = serde_json::from_slice::<Value>(v)
                    .ok()
                    .and_then(|v| v["v"].as_i64())
                {
                    table.insert(id, v);
                }
            }
        }
    }
    table
}

fn totals_of(table: &BTreeMap<i64, i64>) -> BTreeMap<String, i64> {
    let row = json!({"n": table.len(), "s": table.values().sum::<i64>()});
    BTreeMap::from([(row.to_string(), 1)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_kafka_source_reads_a_changelog_of_its_keys() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("users", 1);
    let bootstrap = kafka.bootstrap().to_string();
    let records = vec![
        upsert(1, Some(10)),
        upsert(2, Some(20)),
        upsert(3, Some(30)),
        // Updates of a key.
        upsert(1, Some(11)),
        upsert(1, Some(12)),
        // A tombstone, and one for a key never seen.
        upsert(2, None),
        upsert(99, None),
        // The same row again, and a deleted key back.
        upsert(3, Some(30)),
        upsert(2, Some(21)),
        upsert(4, Some(40)),
        upsert(4, None),
    ];
    produce(&bootstrap, "users", &records).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("totals");
    let output = run(
        dir.path(),
        "source",
        &aggregate_script(&bootstrap, "users", &out, ""),
        "2",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expected = totals_of(&compact_upserts(&records));
    assert_eq!(
        expected,
        BTreeMap::from([(json!({"n": 3, "s": 12 + 21 + 30}).to_string(), 1)])
    );
    assert_eq!(written_state(&out), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upsert_records_follow_the_policy() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("upserts_bad", 1);
    kafka.create_topic("dlq", 1);
    let bootstrap = kafka.bootstrap().to_string();
    let good = [
        upsert(1, Some(10)),
        upsert(2, Some(20)),
        upsert(1, Some(15)),
        upsert(2, None),
    ];
    let bad: Vec<Record> = vec![
        // No key.
        (Some(0), None, Some(br#"{"v":1}"#.to_vec()), Some(1_000)),
        // A key that is not JSON.
        (
            Some(0),
            Some(b"id=7".to_vec()),
            Some(br#"{"v":7}"#.to_vec()),
            Some(1_000),
        ),
        // A value that does not fit the columns.
        (
            Some(0),
            Some(br#"{"id":8}"#.to_vec()),
            Some(br#"{"v":"eight"}"#.to_vec()),
            Some(1_000),
        ),
    ];
    // Good and bad records alternate: the first bad one is at offset 1.
    let mut records = Vec::new();
    for (i, g) in good.iter().enumerate() {
        records.push(g.clone());
        if let Some(b) = bad.get(i) {
            records.push(b.clone());
        }
    }
    produce(&bootstrap, "upserts_bad", &records).await;
    let expected = totals_of(&compact_upserts(&good));
    let dir = tempfile::tempdir().unwrap();

    // fail: the job fails, naming topic, partition, offset and what is wrong.
    let out = dir.path().join("fail");
    let script = aggregate_script(&bootstrap, "upserts_bad", &out, "");
    let output = run(dir.path(), "fail", &script, "1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad record in topic 'upserts_bad' partition 0 offset 1")
            && stderr.contains("the record has no key"),
        "{stderr}"
    );

    // drop: the good records apply; the bad ones are counted.
    let out = dir.path().join("drop");
    let policy = ", 'scan.bad-record-policy' = 'drop'";
    let script = aggregate_script(&bootstrap, "upserts_bad", &out, policy);
    let output = run(dir.path(), "drop", &script, "1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    assert!(
        stderr.contains(&format!("{} bad records skipped", bad.len())),
        "{stderr}"
    );

    // dead-letter: the bad records, as they were, with the reason.
    let out = dir.path().join("dlq");
    let policy = ", 'scan.bad-record-policy' = 'dead-letter', 'scan.dead-letter-topic' = 'dlq'";
    let script = aggregate_script(&bootstrap, "upserts_bad", &out, policy);
    let output = run(dir.path(), "dlq", &script, "1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    let letters = consume_all(&bootstrap, "dlq", true, Duration::from_secs(30));
    let mut got: Vec<KeyValue> = letters
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    let mut want: Vec<KeyValue> = bad.iter().map(|r| (r.1.clone(), r.2.clone())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let reasons: Vec<String> = letters
        .iter()
        .filter_map(|l| {
            l.headers
                .iter()
                .find(|(k, _)| k == "weir.error")
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .collect();
    for reason in ["no key", "key: invalid json", "value: "] {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "{reason}: {reasons:?}"
        );
    }
}
