//! Changelogs through Kafka with `'format' = 'debezium-json'`: Debezium
//! change records in, an updating aggregate, Debezium envelopes out with
//! exactly-once; bad change records under each bad-record policy; deletions
//! of rows never seen, which are not bad records, under each policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::brokers::{MockKafka, consume_all, produce};
use crate::cluster::harness::weir;

type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

/// The envelope of a change record (bare or in Debezium's `payload`).
pub(super) fn envelope(value: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(value).unwrap();
    match v.get("payload") {
        Some(payload) if v.get("op").is_none() => payload.clone(),
        _ => v,
    }
}

/// The change records of `tests/data/cdc.json`, each on partition `id % 2`
/// (so every row's changes stay in order).
pub(super) fn changes() -> Vec<Record> {
    let text = std::fs::read_to_string("tests/data/cdc.json").unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let e = envelope(line.as_bytes());
            let row = if e["after"].is_null() {
                &e["before"]
            } else {
                &e["after"]
            };
            let id = row["id"].as_i64().unwrap();
            (
                Some((id % 2) as i32),
                None,
                Some(line.as_bytes().to_vec()),
                Some(1_000),
            )
        })
        .collect()
}

/// Applies Debezium envelopes in order: the rows left (as JSON) and how
/// many of each. A retraction of a row that is not there fails the test.
pub(super) fn apply<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> BTreeMap<String, i64> {
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for value in values {
        let e = envelope(value);
        let mut change = |row: &Value, by: i64| {
            let count = rows.entry(row.to_string()).or_default();
            *count += by;
            assert!(*count >= 0, "retracts {row}, which is not there");
        };
        match e["op"].as_str() {
            Some("c" | "r") => change(&e["after"], 1),
            Some("u") => {
                change(&e["before"], -1);
                change(&e["after"], 1);
            }
            Some("d") => change(&e["before"], -1),
            other => panic!("op {other:?} in {e}"),
        }
    }
    rows.retain(|_, n| *n > 0);
    rows
}

pub(super) fn run(dir: &Path, name: &str, script: &str, parallelism: &str) -> std::process::Output {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, script).unwrap();
    weir()
        .args([
            "run",
            path.to_str().unwrap(),
            "-p",
            parallelism,
            "--workers",
            "1",
        ])
        .output()
        .unwrap()
}

pub(super) fn final_state(rows: &[&str]) -> BTreeMap<String, i64> {
    rows.iter().map(|r| (r.to_string(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_debezium_changes_through_an_updating_aggregate_exactly_once() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("changes", 2);
    kafka.create_topic("totals", 1);
    let bootstrap = kafka.bootstrap().to_string();
    produce(&bootstrap, "changes", &changes()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "SET 'execution.checkpointing.interval' = '200ms';
         CREATE TABLE changes (id BIGINT NOT NULL, k STRING, v BIGINT, ts TIMESTAMP(3))
         WITH ('connector' = 'kafka', 'topic' = 'changes', 'format' = 'debezium-json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'scan.batch-size' = '2');
         CREATE TABLE totals (k STRING, n BIGINT, s BIGINT)
         WITH ('connector' = 'kafka', 'topic' = 'totals', 'format' = 'debezium-json',
               'key.fields' = 'k', 'key.format' = 'raw',
               'properties.bootstrap.servers' = '{bootstrap}',
               'sink.delivery-guarantee' = 'exactly-once');
         INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM changes GROUP BY k;"
    );
    let output = run(dir.path(), "cdc", &script, "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let records = consume_all(&bootstrap, "totals", true, Duration::from_secs(60));
    let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value.as_deref()).collect();
    // The hand-checked answer (see tests/slt/11_cdc.slt).
    assert_eq!(
        apply(values.iter().copied()),
        final_state(&[
            r#"{"k":"a","n":3,"s":37}"#,
            r#"{"k":"b","n":1,"s":null}"#,
            r#"{"k":"c","n":1,"s":3}"#,
        ])
    );
    // A changelog, not just the final rows: groups were retracted on the way.
    let deletes = values.iter().filter(|v| envelope(v)["op"] == "d").count();
    assert!(
        deletes >= 3,
        "{deletes} deletes in {} records",
        values.len()
    );
    assert!(
        records
            .iter()
            .all(|r| r.key.is_some() && envelope(r.value.as_deref().unwrap())["op"] != "u"),
        "every record is keyed, and a c or a d"
    );
}

/// Good change records and, between them, one of each kind of bad one.
fn corpus() -> (Vec<Record>, Vec<Vec<u8>>) {
    let good = [
        r#"{"before":null,"after":{"id":1,"k":"a","v":1},"op":"c"}"#,
        r#"{"before":null,"after":{"id":2,"k":"b","v":2},"op":"c"}"#,
        r#"{"before":{"id":1,"k":"a","v":1},"after":{"id":1,"k":"a","v":5},"op":"u"}"#,
        r#"{"before":{"id":2,"k":"b","v":2},"after":null,"op":"d"}"#,
        r#"{"schema":{},"payload":{"before":null,"after":{"id":3,"k":"a","v":7},"op":"r"}}"#,
    ];
    let bad: Vec<Vec<u8>> = [
        "not json at all",
        r#"{"before":null,"after":{"id":9,"k":"x"},"op":"t"}"#,
        r#"{"before":null,"after":{"id":9,"k":"x"},"op":"u"}"#,
        r#"{"before":null,"after":null,"op":"d"}"#,
        r#"{"before":null,"op":"c"}"#,
        r#"{"before":null,"after":{"id":"nine","k":"x"},"op":"c"}"#,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    let record = |v: Option<Vec<u8>>| (Some(0), None, v, Some(1_000));
    let mut records = Vec::new();
    for (i, g) in good.iter().enumerate() {
        records.push(record(Some(g.as_bytes().to_vec())));
        if let Some(b) = bad.get(i) {
            records.push(record(Some(b.clone())));
        }
        if i == 3 {
            // Debezium's tombstone after a delete: skipped, not a bad record.
            records.push(record(None));
        }
    }
    records.extend(bad[good.len()..].iter().map(|b| record(Some(b.clone()))));
    (records, bad)
}

fn bad_script(bootstrap: &str, out: &Path, policy: &str) -> String {
    format!(
        "CREATE TABLE changes (id BIGINT NOT NULL, k STRING, v BIGINT)
         WITH ('connector' = 'kafka', 'topic' = 'cdc_bad', 'format' = 'debezium-json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset'{policy});
         CREATE TABLE totals (k STRING, n BIGINT, s BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json');
         INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM changes GROUP BY k;",
        out.display()
    )
}

/// The final state of the changelog files the filesystem sink wrote.
pub(super) fn written_state(dir: &Path) -> BTreeMap<String, i64> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().starts_with('.') {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    apply(lines.iter().map(|l| l.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bad_change_records_follow_the_policy() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("cdc_bad", 1);
    kafka.create_topic("dlq", 1);
    let bootstrap = kafka.bootstrap().to_string();
    let (records, bad) = corpus();
    produce(&bootstrap, "cdc_bad", &records).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = final_state(&[r#"{"k":"a","n":2,"s":12}"#]);

    // fail: the job fails, naming topic, partition, offset and what is wrong.
    let out = dir.path().join("fail");
    let output = run(dir.path(), "fail", &bad_script(&bootstrap, &out, ""), "1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad record in topic 'cdc_bad' partition 0 offset 1")
            && stderr.contains("invalid debezium-json: the change record is not valid JSON"),
        "{stderr}"
    );

    // drop: the good changes apply; the bad ones are counted.
    let out = dir.path().join("drop");
    let policy = ", 'scan.bad-record-policy' = 'drop'";
    let output = run(
        dir.path(),
        "drop",
        &bad_script(&bootstrap, &out, policy),
        "1",
    );
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
    let output = run(
        dir.path(),
        "dlq",
        &bad_script(&bootstrap, &out, policy),
        "1",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    let letters = consume_all(&bootstrap, "dlq", true, Duration::from_secs(30));
    let mut got: Vec<Vec<u8>> = letters.iter().filter_map(|r| r.value.clone()).collect();
    let mut want = bad.clone();
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
    assert_eq!(reasons.len(), bad.len());
    for reason in [
        "unknown op 't'",
        "(op 'u') has no 'before' row",
        "(op 'd') has no 'before' row",
        "(op 'c') has no 'after' row",
        "BIGINT",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "{reason}: {reasons:?}"
        );
    }
}

/// Change records with deletions of rows never inserted (ids 8 and 9),
/// each in a group that holds rows then, and the same with the malformed
/// records of [`corpus`] between them. Applied by hand: ids 1 (a, 5),
/// 3 (a, 7) and 4 (a, 10) are left.
fn unseen_corpus() -> (Vec<Record>, Vec<Record>, Vec<Vec<u8>>) {
    let good = [
        r#"{"before":null,"after":{"id":1,"k":"a","v":1},"op":"c"}"#,
        r#"{"before":null,"after":{"id":2,"k":"b","v":2},"op":"c"}"#,
        r#"{"before":null,"after":{"id":4,"k":"a","v":10},"op":"c"}"#,
        r#"{"before":{"id":9,"k":"a","v":100},"after":null,"op":"d"}"#,
        r#"{"before":{"id":1,"k":"a","v":1},"after":{"id":1,"k":"a","v":5},"op":"u"}"#,
        r#"{"before":{"id":8,"k":"b","v":3},"after":null,"op":"d"}"#,
        r#"{"schema":{},"payload":{"before":null,"after":{"id":3,"k":"a","v":7},"op":"r"}}"#,
        r#"{"before":{"id":2,"k":"b","v":2},"after":null,"op":"d"}"#,
    ];
    let (_, bad) = corpus();
    let record = |v: &[u8]| (Some(0), None, Some(v.to_vec()), Some(1_000));
    let clean: Vec<Record> = good.iter().map(|g| record(g.as_bytes())).collect();
    let mut mixed = Vec::new();
    for (i, g) in good.iter().enumerate() {
        mixed.push(record(g.as_bytes()));
        if let Some(b) = bad.get(i) {
            mixed.push(record(b));
        }
    }
    (clean, mixed, bad)
}

fn unseen_script(bootstrap: &str, topic: &str, out: &Path, policy: &str) -> String {
    format!(
        "SET 'table.exec.source.cdc-events-duplicate' = 'true';
         CREATE TABLE changes (id BIGINT, k STRING, v BIGINT, PRIMARY KEY (id) NOT ENFORCED)
         WITH ('connector' = 'kafka', 'topic' = '{topic}', 'format' = 'debezium-json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'scan.batch-size' = '3'{policy});
         CREATE TABLE totals (k STRING, n BIGINT, s BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'debezium-json');
         INSERT INTO totals SELECT k, COUNT(*), SUM(v) FROM changes GROUP BY k;",
        out.display()
    )
}

/// A `d` for a row never inserted is not a bad record (the source cannot
/// know): under every bad-record policy the job goes on, the deletion is
/// dropped by the ChangelogNormalize of `cdc-events-duplicate` and counted,
/// never dead-lettered, and the aggregate is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_deletes_of_rows_never_seen_are_dropped_under_every_policy() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("cdc_unseen", 1);
    kafka.create_topic("cdc_unseen_bad", 1);
    kafka.create_topic("dlq_unseen", 1);
    let bootstrap = kafka.bootstrap().to_string();
    let (clean, mixed, bad) = unseen_corpus();
    produce(&bootstrap, "cdc_unseen", &clean).await;
    produce(&bootstrap, "cdc_unseen_bad", &mixed).await;
    let dir = tempfile::tempdir().unwrap();
    // By hand: a holds ids 1 (5), 3 (7) and 4 (10); b was emptied.
    let expected = final_state(&[r#"{"k":"a","n":3,"s":22}"#]);
    let unmatched = "2 deletions of rows never seen dropped";

    // fail: the deletions are no reason to fail.
    let out = dir.path().join("fail");
    let script = unseen_script(&bootstrap, "cdc_unseen", &out, "");
    let output = run(dir.path(), "fail", &script, "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    assert!(stderr.contains(unmatched), "{stderr}");
    assert!(!stderr.contains("bad records skipped"), "{stderr}");

    // drop: the malformed records are the only bad ones.
    let out = dir.path().join("drop");
    let policy = ", 'scan.bad-record-policy' = 'drop'";
    let script = unseen_script(&bootstrap, "cdc_unseen_bad", &out, policy);
    let output = run(dir.path(), "drop", &script, "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    assert!(
        stderr.contains(&format!("{} bad records skipped", bad.len())),
        "{stderr}"
    );
    assert!(stderr.contains(unmatched), "{stderr}");

    // dead-letter: the malformed records only, not the deletions.
    let out = dir.path().join("dlq");
    let policy =
        ", 'scan.bad-record-policy' = 'dead-letter', 'scan.dead-letter-topic' = 'dlq_unseen'";
    let script = unseen_script(&bootstrap, "cdc_unseen_bad", &out, policy);
    let output = run(dir.path(), "dlq", &script, "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(written_state(&out), expected);
    assert!(stderr.contains(unmatched), "{stderr}");
    let letters = consume_all(&bootstrap, "dlq_unseen", true, Duration::from_secs(30));
    let mut got: Vec<Vec<u8>> = letters.iter().filter_map(|r| r.value.clone()).collect();
    let mut want = bad;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
