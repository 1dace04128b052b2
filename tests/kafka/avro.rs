//! Avro through `weir run`: Confluent-framed records whose writer schemas
//! (two versions) come from a schema registry, and plain datums with an
//! inline schema. Records are written and read back with `apache-avro`, an
//! Avro implementation independent of the connector's `arrow-avro`.

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::Schema;
use apache_avro::types::Value;

use super::brokers::{MockKafka, consume_all, produce};
use super::schema_registry::SchemaRegistry;
use crate::cluster::harness::weir;

type Record = (Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

const V1: &str = r#"{"type": "record", "name": "Reading", "namespace": "com.example", "fields": [
    {"name": "sensor", "type": "string"},
    {"name": "value", "type": "long"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;

/// Version 2: fields reordered, `value` narrowed to int (promoted to long on
/// reading), a new field with a default.
const V2: &str = r#"{"type": "record", "name": "Reading", "namespace": "com.example", "fields": [
    {"name": "unit", "type": "string", "default": "C"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "value", "type": "int"},
    {"name": "sensor", "type": "string"}]}"#;

/// The schema the plain-Avro job writes with.
const OUT: &str = r#"{"type": "record", "name": "Out", "fields": [
    {"name": "sensor", "type": ["null", "string"]},
    {"name": "we", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
    {"name": "n", "type": ["null", "long"]},
    {"name": "total", "type": ["null", "long"]}]}"#;

const READINGS: i64 = 600;
const BASE_MS: i64 = 1_700_000_000_000;

/// Reading `i`: sensor, value, event time (up to 400 ms out of order).
fn reading(i: i64) -> (String, i64, i64) {
    let ts = BASE_MS + i * 100 - (i * 7919 % 5) * 100;
    (format!("s{}", i % 3), i, ts)
}

fn datum(schema: &Schema, i: i64, v2: bool) -> Vec<u8> {
    let (sensor, value, ts) = reading(i);
    let record = if v2 {
        Value::Record(vec![
            ("unit".into(), Value::String("K".into())),
            ("ts".into(), Value::TimestampMillis(ts)),
            ("value".into(), Value::Int(value as i32)),
            ("sensor".into(), Value::String(sensor)),
        ])
    } else {
        Value::Record(vec![
            ("sensor".into(), Value::String(sensor)),
            ("value".into(), Value::Long(value)),
            ("ts".into(), Value::TimestampMillis(ts)),
        ])
    };
    apache_avro::to_avro_datum(schema, record).unwrap()
}

fn confluent(id: u32, datum: &[u8]) -> Vec<u8> {
    [&[0u8][..], &id.to_be_bytes(), datum].concat()
}

fn record(i: i64, value: Option<Vec<u8>>) -> Record {
    (Some((i % 2) as i32), None, value, Some(reading(i).2))
}

/// Per (sensor, window end): count and sum of values, 10 s windows.
fn expected() -> BTreeMap<String, usize> {
    let mut windows: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..READINGS {
        let (sensor, value, ts) = reading(i);
        let end = ts - ts.rem_euclid(10_000) + 10_000;
        let w = windows.entry((sensor, end)).or_default();
        w.0 += 1;
        w.1 += value;
    }
    windows
        .into_iter()
        .map(|((sensor, end), (n, total))| (format!("{sensor},{end},{n},{total}"), 1))
        .collect()
}

/// A decoded record's fields, unions unwrapped, as `sensor,we,n,total`.
fn row(value: Value) -> String {
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}");
    };
    let fields: BTreeMap<String, Value> = fields
        .into_iter()
        .map(|(k, v)| match v {
            Value::Union(_, inner) => (k, *inner),
            v => (k, v),
        })
        .collect();
    let text = |k: &str| match &fields[k] {
        Value::String(s) => s.clone(),
        Value::Long(n) | Value::TimestampMillis(n) => n.to_string(),
        other => panic!("{k}: {other:?}"),
    };
    format!(
        "{},{},{},{}",
        text("sensor"),
        text("we"),
        text("n"),
        text("total")
    )
}

fn run(dir: &Path, name: &str, script: &str) -> std::process::Output {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, script).unwrap();
    weir()
        .args(["run", path.to_str().unwrap(), "-p", "2", "--workers", "1"])
        .output()
        .unwrap()
}

fn multiset(rows: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

const WINDOWS: &str = "INSERT INTO out SELECT sensor, window_end, COUNT(*), SUM(value)
    FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY sensor, window_start, window_end;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_avro_with_a_schema_registry_and_inline_schemas() {
    let mut kafka = MockKafka::start();
    for topic in ["readings", "plain", "out", "plain-out", "dlq"] {
        kafka.create_topic(topic, 2);
    }
    let bootstrap = kafka.bootstrap().to_string();
    let registry = SchemaRegistry::start();
    let v1 = Schema::parse_str(V1).unwrap();
    let v2 = Schema::parse_str(V2).unwrap();
    let id1 = registry.register("readings-value", V1);
    let id2 = registry.register("readings-value", V2);

    // Versions alternate; bad records between them.
    let mut records: Vec<Record> = (0..READINGS)
        .map(|i| {
            let (id, schema) = if i % 2 == 0 { (id1, &v1) } else { (id2, &v2) };
            record(i, Some(confluent(id, &datum(schema, i, i % 2 == 1))))
        })
        .collect();
    let good = datum(&v1, 1, false);
    let bad = [
        Some(confluent(id1, &good[..good.len() / 2])), // truncated Avro
        Some(confluent(999, &good)),                   // unknown schema id
        Some(br#"{"sensor": "s0"}"#.to_vec()),         // not the wire format
        None,                                          // null value
        Some(vec![0, 0]),                              // a cut-off header
    ];
    for (n, value) in bad.iter().enumerate() {
        records.insert(100 * n + 50, record(n as i64, value.clone()));
    }
    produce(&bootstrap, "readings", &records).await;

    let dir = tempfile::tempdir().unwrap();
    let script = |policy: &str| {
        format!(
        "SET 'execution.checkpointing.interval' = '1s';
        CREATE TABLE readings (sensor STRING NOT NULL, value BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL,
                               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'kafka', 'topic' = 'readings', 'format' = 'avro-confluent',
              'avro-confluent.url' = '{url}', 'properties.bootstrap.servers' = '{bootstrap}',
              'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
              'scan.bad-record-policy' = '{policy}');
        CREATE TABLE out (sensor STRING, we TIMESTAMP(3), n BIGINT, total BIGINT)
        WITH ('connector' = 'kafka', 'topic' = 'out', 'format' = 'avro-confluent',
              'avro-confluent.url' = '{url}', 'properties.bootstrap.servers' = '{bootstrap}',
              'sink.delivery-guarantee' = 'exactly-once', 'sink.parallelism' = '1',
              'sink.partitioner' = 'fixed');
        {WINDOWS}",
            url = registry.url()
        )
    };
    // 'fail': the first bad record stops the job, named with its reason.
    let output = run(dir.path(), "fail", &script("fail"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // The two source subtasks race: either partition's first bad record
    // (partition 0: the truncated one; partition 1: the unknown schema id).
    let first_of_0 = stderr.contains("bad record in topic 'readings' partition 0 offset 25")
        && stderr.contains("invalid Avro");
    let first_of_1 = stderr.contains("bad record in topic 'readings' partition 1 offset 74")
        && stderr.contains("schema id 999 is not in the schema registry");
    assert!(first_of_0 || first_of_1, "{stderr}");
    // 'dead-letter': the bad records, as they were, in their topic.
    let output = run(
        dir.path(),
        "registry",
        &script("dead-letter', 'scan.dead-letter-topic' = 'dlq"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(registry.lookups() >= 2, "the source looked schemas up");
    let letters = consume_all(&bootstrap, "dlq", false, std::time::Duration::from_secs(30));
    let mut got: Vec<Option<Vec<u8>>> = letters.into_iter().map(|r| r.value).collect();
    let mut want = bad.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // The exactly-once sink registered its schema under Confluent's default subject, and
    // every record names it.
    let versions = registry.versions("out-value");
    assert_eq!(versions.len(), 1, "{versions:?}");
    let out_schema = Schema::parse_str(&registry.schema(versions[0]).unwrap()).unwrap();
    let out = consume_all(&bootstrap, "out", true, std::time::Duration::from_secs(30));
    // One sink subtask, 'fixed': everything in partition 0.
    assert!(out.iter().all(|r| r.partition == 0));
    let rows = out.iter().map(|r| {
        let bytes = r.value.as_deref().unwrap();
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
            versions[0]
        );
        row(apache_avro::from_avro_datum(&out_schema, &mut &bytes[5..], None).unwrap())
    });
    assert_eq!(multiset(rows), expected());

    // Plain datums in and out, with inline schemas.
    let plain: Vec<Record> = (0..READINGS)
        .map(|i| record(i, Some(datum(&v1, i, false))))
        .collect();
    produce(&bootstrap, "plain", &plain).await;
    let inline = |s: &str| s.replace('\n', " ").replace('\'', "''");
    let script = format!(
        "CREATE TABLE readings (sensor STRING NOT NULL, value BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL,
                               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'kafka', 'topic' = 'plain', 'format' = 'avro', 'avro.schema' = '{v1}',
              'properties.bootstrap.servers' = '{bootstrap}',
              'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset');
        CREATE TABLE out (sensor STRING, we TIMESTAMP(3), n BIGINT, total BIGINT)
        WITH ('connector' = 'kafka', 'topic' = 'plain-out', 'format' = 'avro', 'avro.schema' = '{out}',
              'properties.bootstrap.servers' = '{bootstrap}');
        {WINDOWS}",
        v1 = inline(V1),
        out = inline(OUT),
    );
    let output = run(dir.path(), "plain", &script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let out_schema = Schema::parse_str(OUT).unwrap();
    let out = consume_all(
        &bootstrap,
        "plain-out",
        false,
        std::time::Duration::from_secs(30),
    );
    let rows = out.iter().map(|r| {
        let bytes = r.value.as_deref().unwrap();
        row(apache_avro::from_avro_datum(&out_schema, &mut &bytes[..], None).unwrap())
    });
    assert_eq!(multiset(rows), expected());
}
