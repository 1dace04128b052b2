//! Unit tests of `upsert-kafka`: options, the upsert encoding of changes,
//! and the decoding of keys, values and tombstones. Against real brokers it
//! is tested in `tests/kafka/upsert.rs`.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use weir_engine::changelog::{for_display, with_row_kinds};
use weir_engine::{Connector, RowKind, TableDescriptor};

use super::decode::UpsertDecoder;
use super::encode::UpsertEncoder;
use super::{UpsertKafkaConnector, UpsertOptions};
use crate::kafka::decode::{BatchDecoder, RecordBuffer};
use crate::kafka::encode::{ChangeEncoder, OutRecord};
use crate::util::test_support::{rows, table};

const BASE: &[(&str, &str)] = &[
    ("connector", "upsert-kafka"),
    ("topic", "t"),
    ("properties.bootstrap.servers", "127.0.0.1:1"),
    ("key.format", "json"),
    ("value.format", "json"),
];

/// `(id BIGINT, name STRING, v BIGINT)` keyed by `key`, with options.
fn upsert_table(key: &[&str], extra: &[(&str, &str)]) -> TableDescriptor {
    let mut options: Vec<(&str, &str)> = BASE
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    options.extend_from_slice(extra);
    let mut t = table(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ],
        &options,
    );
    t.primary_key = key.iter().map(|k| k.to_string()).collect();
    t
}

fn error(t: &TableDescriptor) -> String {
    let source = UpsertKafkaConnector.validate_source(t).unwrap_err();
    let sink = UpsertKafkaConnector.validate_sink(t).unwrap_err();
    assert_eq!(source.to_string(), sink.to_string());
    source.to_string()
}

#[test]
fn options_follow_flink() {
    let t = upsert_table(&["id"], &[]);
    UpsertKafkaConnector.validate_source(&t).unwrap();
    UpsertKafkaConnector.validate_sink(&t).unwrap();
    assert!(UpsertKafkaConnector.accepts_updates(&t));
    assert!(UpsertKafkaConnector.produces_updates(&t));
    assert_eq!(UpsertKafkaConnector.upsert_key(&t), Some(vec!["id".into()]));
    assert!(!UpsertKafkaConnector.is_bounded(&t));

    let missing = error(&upsert_table(&[], &[]));
    assert!(
        missing.contains("'upsert-kafka' needs a primary key")
            && missing.contains("PRIMARY KEY (…) NOT ENFORCED"),
        "{missing}"
    );
    let typo = error(&upsert_table(&["id"], &[("value.fields-includ", "ALL")]));
    assert!(
        typo.contains("did you mean 'value.fields-include'"),
        "{typo}"
    );
    let format = error(&upsert_table(&["id"], &[("value.format", "jsn")]));
    assert!(
        format.contains("'value.format' = 'jsn'") && format.contains("did you mean 'json'"),
        "{format}"
    );
    let changelog = error(&upsert_table(&["id"], &[("value.format", "debezium-json")]));
    assert!(changelog.contains("changelog format"), "{changelog}");
    let prefix = error(&upsert_table(&["id"], &[("key.fields-prefix", "k_")]));
    assert!(prefix.contains("EXCEPT_KEY"), "{prefix}");
    let prefix = error(&upsert_table(
        &["id"],
        &[
            ("key.fields-prefix", "k_"),
            ("value.fields-include", "EXCEPT_KEY"),
        ],
    ));
    assert!(prefix.contains("does not start with"), "{prefix}");
    let include = error(&upsert_table(&["id"], &[("value.fields-include", "SOME")]));
    assert!(include.contains("ALL or EXCEPT_KEY"), "{include}");
    let raw = upsert_table(&["id", "name"], &[("key.format", "raw")]);
    for e in [
        UpsertKafkaConnector.validate_source(&raw).unwrap_err(),
        UpsertKafkaConnector.validate_sink(&raw).unwrap_err(),
    ] {
        assert!(e.to_string().contains("exactly one column"), "{e}");
    }
    // Format options are prefixed by their side.
    let t = upsert_table(
        &["id"],
        &[("value.format", "csv"), ("value.csv.field-delimiter", ";")],
    );
    UpsertKafkaConnector.validate_sink(&t).unwrap();
    let bounded = upsert_table(&["id"], &[("scan.bounded.mode", "latest-offset")]);
    assert!(UpsertKafkaConnector.is_bounded(&bounded));
}

fn changes(rows: &[(i64, Option<&str>, i64, RowKind)]) -> RecordBatch {
    let t = upsert_table(&["id"], &[]);
    let schema = weir_engine::changelog::updating_schema(&t.schema);
    with_row_kinds(
        &schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
        rows.iter().map(|r| r.3).collect(),
    )
    .unwrap()
}

fn encode(t: &TableDescriptor, batch: &RecordBatch) -> Vec<(String, Option<String>)> {
    let encoder = UpsertEncoder::new(&UpsertOptions::parse(t).unwrap(), t).unwrap();
    let (data, kinds) = weir_engine::changelog::split_row_kinds(batch).unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    encoder
        .encode_changes(&data, kinds.as_deref())
        .unwrap()
        .into_iter()
        .map(|r: OutRecord| (text(r.key.unwrap()), r.value.map(text)))
        .collect()
}

#[test]
fn changes_become_upserts_and_tombstones() {
    use RowKind::*;
    let t = upsert_table(&["id"], &[]);
    let batch = changes(&[
        (1, Some("a"), 10, Insert),
        (1, Some("a"), 10, UpdateBefore),
        (1, Some("b"), 11, UpdateAfter),
        (2, Some("c"), 20, UpdateBefore),
        (3, Some("d"), 30, UpdateAfter),
        (3, None, 30, Delete),
        (4, Some("e"), 40, UpdateBefore),
    ]);
    let key = |id: i64| format!(r#"{{"id":{id}}}"#);
    assert_eq!(
        encode(&t, &batch),
        vec![
            (key(1), Some(r#"{"id":1,"name":"a","v":10}"#.to_string())),
            // The -U before the +U of the same key is left out.
            (key(1), Some(r#"{"id":1,"name":"b","v":11}"#.to_string())),
            // A -U followed by another key's +U, or by nothing: a tombstone.
            (key(2), None),
            (key(3), Some(r#"{"id":3,"name":"d","v":30}"#.to_string())),
            (key(3), None),
            (key(4), None),
        ]
    );
    // EXCEPT_KEY with a prefix: the key's fields lose the prefix, the value has no key.
    let mut prefixed = upsert_table(
        &[],
        &[
            ("key.fields-prefix", "k_"),
            ("value.fields-include", "EXCEPT_KEY"),
        ],
    );
    let mut fields: Vec<Field> = prefixed
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[0] = Field::new("k_id", DataType::Int64, false);
    prefixed.schema = Arc::new(Schema::new(fields));
    prefixed.primary_key = vec!["k_id".into()];
    let (data, _) = weir_engine::changelog::split_row_kinds(&batch).unwrap();
    let appended =
        RecordBatch::try_new(Arc::clone(&prefixed.schema), data.columns().to_vec()).unwrap();
    let records = encode(&prefixed, &appended.slice(0, 1));
    assert_eq!(
        records,
        vec![(key(1), Some(r#"{"name":"a","v":10}"#.to_string()))]
    );
}

/// Records with these keys and values, on partition 0 from offset 7.
fn buffer(records: &[(Option<&str>, Option<&str>)]) -> RecordBuffer {
    let mut b = RecordBuffer::default();
    let topic = b.topic_id("t");
    for (i, (k, v)) in records.iter().enumerate() {
        b.topic_ids.push(topic);
        b.partitions.push(0);
        b.offsets.push(7 + i as i64);
        b.timestamps.push(None);
        b.keys.push(k.map(|k| k.as_bytes().to_vec()));
        b.headers.push(None);
        match v {
            Some(v) => {
                let start = b.values.len();
                b.values.extend_from_slice(v.as_bytes());
                b.spans.push(Some((start, b.values.len())));
            }
            None => b.spans.push(None),
        }
    }
    b
}

#[test]
fn keys_values_and_tombstones_decode_to_an_upsert_stream() {
    let t = upsert_table(&["id"], &[]);
    let options = UpsertOptions::parse(&t).unwrap();
    // The source reads `v` and the key, `id`.
    let mut decoder = UpsertDecoder::new(&options, &t, &[0, 2], 1 << 20).unwrap();
    let (batch, bad) = decoder
        .decode(&buffer(&[
            (Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","v":10}"#)),
            (Some(r#"{"id":2}"#), None),
            (None, Some(r#"{"id":3,"v":1}"#)),
            (Some("not json"), Some(r#"{"id":4,"v":1}"#)),
            (Some(r#"{"id":5}"#), Some(r#"{"id":5,"v":"x"}"#)),
            // With ALL, the key column is read from the key.
            (Some(r#"{"id":6}"#), Some(r#"{"id":60,"v":6}"#)),
        ]))
        .unwrap();
    assert_eq!(
        rows(&[for_display(&batch).unwrap()]),
        vec!["+U,1,10", "-D,2,NULL", "+U,6,6"]
    );
    assert_eq!(batch.schema(), *decoder.schema());
    let bad: Vec<(usize, String)> = bad.into_iter().map(|b| (b.index, b.reason)).collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert_eq!(bad[0].0, 2);
    assert!(bad[0].1.contains("no key"), "{bad:?}");
    assert_eq!(bad[1].0, 3);
    assert!(bad[1].1.starts_with("key: invalid json"), "{bad:?}");
    assert_eq!(bad[2].0, 4);
    assert!(bad[2].1.starts_with("value: "), "{bad:?}");
}

#[test]
fn what_the_encoder_writes_the_decoder_reads() {
    use RowKind::*;
    let t = upsert_table(&["id"], &[("value.fields-include", "EXCEPT_KEY")]);
    let batch = changes(&[(1, Some("a"), 10, Insert), (2, None, 20, Delete)]);
    let written = encode(&t, &batch);
    let records: Vec<(Option<&str>, Option<&str>)> = written
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_deref()))
        .collect();
    let options = UpsertOptions::parse(&t).unwrap();
    let mut decoder = UpsertDecoder::new(&options, &t, &[0, 1, 2], 1 << 20).unwrap();
    let (back, bad) = decoder.decode(&buffer(&records)).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        rows(&[for_display(&back).unwrap()]),
        vec!["+U,1,a,10", "-D,2,NULL,NULL"]
    );
}
