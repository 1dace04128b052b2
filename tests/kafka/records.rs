//! The Kafka source's record handling through `weir run`: bad records under
//! each policy, `METADATA` columns, startup and bounded modes.

use std::collections::BTreeMap;
use std::path::Path;

use super::brokers::{MockKafka, consume_all, produce};
use crate::cluster::fault::committed;
use crate::cluster::harness::weir;

type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

fn value(v: &[u8]) -> Record {
    (Some(0), None, Some(v.to_vec()), Some(1_000))
}

/// Good records (ids 1..=5) and, between them, one of each kind of bad one.
fn corpus() -> (Vec<Record>, Vec<Option<Vec<u8>>>) {
    let oversized = format!(r#"{{"id": 99, "name": "{}"}}"#, "x".repeat(300)).into_bytes();
    let bad: Vec<Option<Vec<u8>>> = vec![
        Some(br#"{"id": 1"#.to_vec()),                         // truncated
        Some(br#"{"id": "two", "name": "b"}"#.to_vec()),       // wrong type
        Some(br#"{"name": "no id"}"#.to_vec()),                // missing NOT NULL field
        Some(b"{\"id\": 4, \"name\": \"\xc3\x28\"}".to_vec()), // invalid UTF-8
        None,                                                  // null value
        Some(oversized),                                       // larger than the limit
        Some(b"not json at all".to_vec()),
        Some(br#"{"id": 7} {"id": 8}"#.to_vec()), // two records in one
    ];
    let mut records = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        let id = i + 1;
        if id <= 5 {
            records.push(value(
                format!(r#"{{"id": {id}, "name": "n{id}"}}"#).as_bytes(),
            ));
        }
        records.push((Some(0), None, b.clone(), Some(1_000)));
    }
    (records, bad)
}

fn script(bootstrap: &str, out: &Path, policy: &str) -> String {
    format!(
        "CREATE TABLE src (id BIGINT NOT NULL, name STRING)
         WITH ('connector' = 'kafka', 'topic' = 'bad', 'format' = 'json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'scan.max-record-bytes' = '200'{policy});
         CREATE TABLE out (id BIGINT, name STRING)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out SELECT id, name FROM src;",
        out.display()
    )
}

fn run(dir: &Path, name: &str, script: &str) -> std::process::Output {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, script).unwrap();
    weir()
        .args(["run", path.to_str().unwrap(), "-p", "1", "--workers", "1"])
        .output()
        .unwrap()
}

fn good_rows() -> BTreeMap<String, usize> {
    (1..=5).map(|id| (format!("{id},n{id}"), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bad_records_follow_the_policy() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("bad", 1);
    kafka.create_topic("dlq", 1);
    let bootstrap = kafka.bootstrap().to_string();
    let (records, bad) = corpus();
    produce(&bootstrap, "bad", &records).await;
    let dir = tempfile::tempdir().unwrap();

    // fail: the job fails, naming topic, partition, offset and reason.
    let out = dir.path().join("fail");
    let output = run(dir.path(), "fail", &script(&bootstrap, &out, ""));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad record in topic 'bad' partition 0 offset 1")
            && stderr.contains("scan.bad-record-policy"),
        "{stderr}"
    );

    // drop: the good records come out exactly once; the bad ones are counted.
    let out = dir.path().join("drop");
    let output = run(
        dir.path(),
        "drop",
        &script(&bootstrap, &out, ", 'scan.bad-record-policy' = 'drop'"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(committed(&out), good_rows());
    assert!(
        stderr.contains(&format!("{} bad records skipped", bad.len())),
        "{stderr}"
    );

    // dead-letter: the bad records, as they were, in the dead-letter topic.
    let out = dir.path().join("dlq");
    let output = run(
        dir.path(),
        "dlq",
        &script(
            &bootstrap,
            &out,
            ", 'scan.bad-record-policy' = 'dead-letter', 'scan.dead-letter-topic' = 'dlq'",
        ),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(committed(&out), good_rows());
    let letters = consume_all(&bootstrap, "dlq", true, std::time::Duration::from_secs(30));
    let mut got: Vec<Option<Vec<u8>>> = letters.iter().map(|r| r.value.clone()).collect();
    let mut want = bad.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for letter in &letters {
        let header = |k: &str| {
            letter
                .headers
                .iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        assert_eq!(header("weir.source.topic").as_deref(), Some("bad"));
        assert_eq!(header("weir.source.partition").as_deref(), Some("0"));
        assert!(header("weir.error").is_some_and(|e| !e.is_empty()));
        let offset: i64 = header("weir.source.offset").unwrap().parse().unwrap();
        assert_eq!(records[offset as usize].2, letter.value, "offset {offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_metadata_columns_and_startup_by_timestamp() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("meta", 2);
    let bootstrap = kafka.bootstrap().to_string();
    // Partition p holds ids 10p+1..=10p+5 at times 1000·(id mod 10), keyed "k<id>".
    let records: Vec<Record> = (0..2)
        .flat_map(|p| {
            (1..=5).map(move |i| {
                let id = 10 * p + i;
                (
                    Some(p),
                    Some(format!("k{id}").into_bytes()),
                    Some(format!("{id}").into_bytes()),
                    Some(1_000 * i as i64),
                )
            })
        })
        .collect();
    produce(&bootstrap, "meta", &records).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "CREATE TABLE src (
            line STRING,
            p INT METADATA FROM 'partition' VIRTUAL,
            o BIGINT METADATA FROM 'offset' VIRTUAL,
            k STRING METADATA FROM 'key',
            t TIMESTAMP(3) METADATA FROM 'timestamp',
            topic STRING METADATA VIRTUAL)
         WITH ('connector' = 'kafka', 'topic' = 'meta', 'format' = 'raw',
               'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'timestamp', 'scan.startup.timestamp-millis' = '3000',
               'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE out (line STRING, p INT, o BIGINT, k STRING, t BIGINT, topic STRING)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out SELECT line, p, o, k, CAST(t AS BIGINT), topic FROM src;",
        out.display()
    );
    let output = run(dir.path(), "meta", &script);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // From time 3000 on: offsets 2..=4 of each partition.
    let expected: BTreeMap<String, usize> = (0..2)
        .flat_map(|p| {
            (3..=5).map(move |i| {
                let id = 10 * p + i;
                (format!("{id},{p},{},k{id},{},meta", i - 1, 1_000 * i), 1)
            })
        })
        .collect();
    assert_eq!(committed(&out), expected);
}

/// Per-partition watermarks: partition 0's records all come before partition
/// 1's (same event times), and the watermark has no delay. One watermark over
/// both partitions would make every record of partition 1 late; with one per
/// partition none is, and every window counts both partitions' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_watermarks_wait_for_the_slowest_partition() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("lag", 2);
    let bootstrap = kafka.bootstrap().to_string();
    for p in 0..2 {
        let records: Vec<Record> = (0..5_000i64)
            // Not from 0: librdkafka takes a timestamp of 0 for "now".
            .map(|i| {
                (
                    Some(p),
                    None,
                    Some(format!("{i}").into_bytes()),
                    Some(10_000 + 2 * i),
                )
            })
            .collect();
        produce(&bootstrap, "lag", &records).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "CREATE TABLE lag (v STRING, ts TIMESTAMP(3) METADATA FROM 'timestamp', WATERMARK FOR ts AS ts)
         WITH ('connector' = 'kafka', 'topic' = 'lag', 'format' = 'raw',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset', 'scan.batch-size' = '100');
         CREATE TABLE out (we BIGINT, c BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out SELECT CAST(window_end AS BIGINT), COUNT(*) FROM TUMBLE(lag, ts, INTERVAL '1' SECOND)
         GROUP BY window_start, window_end;",
        out.display()
    );
    let output = run(dir.path(), "lag", &script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("late rows dropped"), "{stderr}");
    let expected: BTreeMap<String, usize> = (11..=20)
        .map(|s| (format!("{},1000", s * 1000), 1))
        .collect();
    assert_eq!(committed(&out), expected);
}

/// A bounded read of many records over several partitions and subtasks reads every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bounded_read_reads_every_record() {
    let mut kafka = MockKafka::start();
    kafka.create_topic("many", 4);
    let bootstrap = kafka.bootstrap().to_string();
    let records: Vec<Record> = (0..400_000i64)
        .map(|i| {
            (
                Some((i % 4) as i32),
                None,
                Some(format!(r#"{{"id": {i}}}"#).into_bytes()),
                Some(1_000 + i),
            )
        })
        .collect();
    for chunk in records.chunks(50_000) {
        produce(&bootstrap, "many", chunk).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "CREATE TABLE many (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'many', 'format' = 'json',
               'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset',
               'scan.bounded.mode' = 'latest-offset');
         CREATE TABLE out (n BIGINT, s BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
         INSERT INTO out SELECT COUNT(*), SUM(id) FROM many;",
        out.display()
    );
    let path = dir.path().join("many.sql");
    std::fs::write(&path, script).unwrap();
    let output = weir()
        .args(["run", path.to_str().unwrap(), "-p", "2", "--workers", "2"])
        .env("WEIR_LOG", "weir_connectors=info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let sum: i64 = (0..400_000i64).sum();
    assert_eq!(
        committed(&out),
        BTreeMap::from([(format!("400000,{sum}"), 1)]),
        "{stderr}"
    );
}

/// An unbounded read where one of two partitions never gets a record: it
/// holds the watermark back until `scan.watermark.idle-timeout` takes it out,
/// and then the windows of the other partition fire while the job runs.
#[test]
fn kafka_idle_partitions_stop_holding_back_the_watermark() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut kafka = MockKafka::start();
    kafka.create_topic("idle", 2);
    let bootstrap = kafka.bootstrap().to_string();
    let records: Vec<Record> = (0..3_000i64)
        .map(|i| {
            (
                Some(0),
                None,
                Some(format!("{i}").into_bytes()),
                Some(10_000 + i),
            )
        })
        .collect();
    runtime.block_on(produce(&bootstrap, "idle", &records));
    let dir = tempfile::tempdir().unwrap();
    let fired = |idle: &str| -> Vec<String> {
        let path = dir.path().join("idle.sql");
        std::fs::write(
            &path,
            format!(
                "CREATE TABLE idle (v STRING, ts TIMESTAMP(3) METADATA FROM 'timestamp', WATERMARK FOR ts AS ts)
                 WITH ('connector' = 'kafka', 'topic' = 'idle', 'format' = 'raw',
                       'properties.bootstrap.servers' = '{bootstrap}', 'scan.startup.mode' = 'earliest-offset'{idle});
                 SELECT CAST(window_end AS BIGINT) AS we, COUNT(*) AS c FROM TUMBLE(idle, ts, INTERVAL '1' SECOND)
                 GROUP BY window_start, window_end;"
            ),
        )
        .unwrap();
        let mut child = weir()
            .args(["run", path.to_str().unwrap(), "-p", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        let mut rows = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("| 1") => rows.push(line.replace(' ', "")),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        rows
    };
    // Without the timeout the silent partition holds every window back.
    assert_eq!(fired(""), Vec::<String>::new());
    // With it, every window of the records fires while the job runs.
    let rows = fired(", 'scan.watermark.idle-timeout' = '500 ms'");
    let expected: Vec<String> = (11..=13).map(|s| format!("|{}|1000|", s * 1000)).collect();
    assert_eq!(rows, expected);
}
