//! Unit tests of the Kafka connector's options, decoding and encoding. The
//! connector against real brokers is tested in `tests/kafka/`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use weir_engine::connector::METADATA_FIELD_KEY;
use weir_engine::{Connector, ConnectorOptions};

use super::decode::{RecordBuffer, RecordDecoder};
use super::encode::{OutRecord, RecordEncoder, frame_records, unframe_records};
use super::*;
use crate::util::test_support::{rows, table};

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    ConnectorOptions::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

const BASE: &[(&str, &str)] = &[
    ("connector", "kafka"),
    ("topic", "t"),
    ("properties.bootstrap.servers", "127.0.0.1:1"),
    ("scan.startup.mode", "earliest-offset"),
    ("format", "json"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = BASE
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    all.extend_from_slice(extra);
    all
}

fn source_error(extra: &[(&'static str, &'static str)]) -> String {
    SourceOptions::parse(&options(&with(extra)))
        .unwrap_err()
        .to_string()
}

#[test]
fn source_options_follow_flink() {
    let o = SourceOptions::parse(&options(&with(&[
        ("topic", "a; b"),
        ("scan.bounded.mode", "latest-offset"),
        ("properties.group.id", "g"),
    ])))
    .unwrap();
    assert!(matches!(&o.topics, Topics::Names(n) if n == &["a", "b"]));
    assert_eq!(o.startup, StartupMode::Earliest);
    assert_eq!(o.bounded, BoundedMode::LatestOffset);
    assert_eq!(o.bad_records, BadRecordPolicy::Fail);
    assert!(o.properties.contains(&("group.id".into(), "g".into())));

    let o = SourceOptions::parse(&options(&with(&[
        ("scan.startup.mode", "timestamp"),
        ("scan.startup.timestamp-millis", "1700000000000"),
        ("json.ignore-parse-errors", "true"),
    ])))
    .unwrap();
    assert_eq!(o.startup, StartupMode::Timestamp(1_700_000_000_000));
    assert_eq!(o.bad_records, BadRecordPolicy::Drop);

    let o = SourceOptions::parse(&options(&with(&[
        ("scan.bad-record-policy", "dead-letter"),
        ("scan.dead-letter-topic", "dlq"),
    ])))
    .unwrap();
    assert_eq!(o.bad_records, BadRecordPolicy::DeadLetter("dlq".into()));
}

#[test]
fn bad_source_options_are_named() {
    let err = source_error(&[("scan.startup.mode", "earlest-offset")]);
    assert!(err.contains("did you mean 'earliest-offset'"), "{err}");
    assert!(
        source_error(&[("scan.startup.mode", "timestamp")])
            .contains("scan.startup.timestamp-millis")
    );
    assert!(source_error(&[("topc", "x")]).contains("did you mean 'topic'"));
    assert!(
        source_error(&[("scan.startup.mode", "group-offsets")]).contains("properties.group.id")
    );
    assert!(
        source_error(&[("scan.bad-record-policy", "dead-letter")])
            .contains("scan.dead-letter-topic")
    );
    assert!(source_error(&[("format", "jsn")]).contains("did you mean 'json'"));
    assert!(source_error(&[("format", "avro")]).contains("Avro is not supported yet"));
    assert!(
        source_error(&[("csv.field-delimiter", ";")]).contains("does not apply to format 'json'")
    );
    let err = SourceOptions::parse(&options(&[
        ("connector", "kafka"),
        ("topic", "t"),
        ("format", "json"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("properties.bootstrap.servers"), "{err}");
}

#[test]
fn sink_options() {
    let o = SinkOptions::parse(&options(&[
        ("connector", "kafka"),
        ("topic", "out"),
        ("properties.bootstrap.servers", "x:1"),
        ("format", "json"),
        ("key.fields", "k"),
        ("sink.delivery-guarantee", "exactly-once"),
    ]))
    .unwrap();
    assert_eq!(o.guarantee, DeliveryGuarantee::ExactlyOnce);
    assert_eq!(
        o.key.as_ref().map(|k| k.0.clone()),
        Some(vec!["k".to_string()])
    );
    let err = SinkOptions::parse(&options(&[
        ("connector", "kafka"),
        ("topic", "a;b"),
        ("properties.bootstrap.servers", "x:1"),
        ("format", "json"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("exactly one"), "{err}");
}

fn metadata(name: &str, data_type: DataType, key: &str) -> Field {
    Field::new(name, data_type, true).with_metadata(HashMap::from([(
        METADATA_FIELD_KEY.to_string(),
        key.to_string(),
    )]))
}

fn buffer(values: &[Option<&[u8]>]) -> RecordBuffer {
    let mut b = RecordBuffer::default();
    let topic = b.topic_id("in");
    for (i, v) in values.iter().enumerate() {
        b.topic_ids.push(topic);
        b.partitions.push(i as i32 % 2);
        b.offsets.push(100 + i as i64);
        b.timestamps.push(Some(1_000 * i as i64));
        b.keys.push(Some(format!("k{i}").into_bytes()));
        b.headers.push(None);
        match v {
            Some(v) => {
                let start = b.values.len();
                b.values.extend_from_slice(v);
                b.spans.push(Some((start, b.values.len())));
            }
            None => b.spans.push(None),
        }
    }
    b
}

fn json_table() -> weir_engine::TableDescriptor {
    table(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            metadata(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                "timestamp",
            ),
            metadata("off", DataType::Int64, "offset"),
            metadata("k", DataType::Utf8, "key"),
        ],
        &with(&[]),
    )
}

#[test]
fn json_records_decode_in_one_batch_with_metadata() {
    let table = json_table();
    let decoder = RecordDecoder::new(
        KafkaFormat::Json(JsonOptions {
            iso_timestamps: false,
        }),
        &table,
        &[0, 1, 2, 3, 4],
        1 << 20,
    )
    .unwrap();
    let records = buffer(&[Some(br#"{"id": 1, "name": "a"}"#), Some(br#"{"id": 2}"#)]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert!(bad.is_empty());
    assert_eq!(
        rows(&[batch]),
        [
            "1,a,1970-01-01T00:00:00,100,k0",
            "2,NULL,1970-01-01T00:00:01,101,k1"
        ]
    );
}

#[test]
fn malformed_records_are_found_one_by_one() {
    let table = json_table();
    let decoder = RecordDecoder::new(
        KafkaFormat::Json(JsonOptions {
            iso_timestamps: false,
        }),
        &table,
        &[0, 3],
        64,
    )
    .unwrap();
    let oversized = format!(r#"{{"id": 9, "name": "{}"}}"#, "x".repeat(100));
    let records = buffer(&[
        Some(br#"{"id": 1}"#),
        Some(br#"{"id": "#),                          // truncated JSON
        Some(br#"{"id": "two"}"#),                    // wrong type
        Some(br#"{"name": "no id"}"#),                // missing NOT NULL field
        Some(b"{\"id\": 5, \"name\": \"\xff\xfe\"}"), // invalid UTF-8
        None,                                         // null value
        Some(oversized.as_bytes()),                   // oversized
        Some(br#"{"id": 8} {"id": 8}"#),              // two records in one
        Some(b""),                                    // empty
        Some(br#"{"id": 10}"#),
    ]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert_eq!(rows(&[batch]), ["1,100", "10,109"]);
    let bad_indices: Vec<usize> = bad.iter().map(|b| b.index).collect();
    assert_eq!(bad_indices, [1, 2, 3, 4, 5, 6, 7, 8], "{bad:?}");
    assert!(bad[4].reason.contains("null"), "{:?}", bad[4]);
    assert!(
        bad[5].reason.contains("scan.max-record-bytes"),
        "{:?}",
        bad[5]
    );
}

#[test]
fn csv_and_raw_records() {
    let table_csv = table(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ],
        &with(&[("format", "csv")]),
    );
    let format = KafkaFormat::parse(&table_csv.options, "format").unwrap();
    let decoder = RecordDecoder::new(format, &table_csv, &[0, 1], 1 << 20).unwrap();
    let records = buffer(&[Some(b"1,a\n"), Some(b"x,b"), Some(b"3,\"c,d\"")]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert_eq!(rows(&[batch]), ["1,a", "3,c,d"]);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].index, 1);

    let table_raw = table(
        vec![
            Field::new("line", DataType::Utf8, true),
            metadata("p", DataType::Int32, "partition"),
        ],
        &with(&[("format", "raw")]),
    );
    let decoder = RecordDecoder::new(KafkaFormat::Raw, &table_raw, &[1, 0], 1 << 20).unwrap();
    let records = buffer(&[Some(b"hello"), Some(b"\xff"), None]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert_eq!(rows(&[batch]), ["0,hello", "0,NULL"]);
    assert_eq!(bad.len(), 1);
    assert!(bad[0].reason.contains("UTF-8"));
}

#[test]
fn connector_checks_columns() {
    let connector = KafkaConnector;
    let bad_type = table(
        vec![
            Field::new("id", DataType::Int64, false),
            metadata("p", DataType::Utf8, "partition"),
        ],
        &with(&[]),
    );
    let err = connector
        .validate_source(&bad_type)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'p'") && err.contains("cannot be of type"),
        "{err}"
    );
    let raw_two = table(
        vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ],
        &with(&[("format", "raw")]),
    );
    assert!(
        connector
            .validate_source(&raw_two)
            .unwrap_err()
            .to_string()
            .contains("exactly one column")
    );
    let mut sink_options: Vec<_> = with(&[])
        .into_iter()
        .filter(|(k, _)| !k.starts_with("scan."))
        .collect();
    sink_options.push(("key.fields", "nope"));
    let sink = table(
        vec![Field::new("id", DataType::Int64, false)],
        &sink_options,
    );
    assert!(
        connector
            .validate_sink(&sink)
            .unwrap_err()
            .to_string()
            .contains("no column 'nope'")
    );
}

#[test]
fn rows_encode_to_records_and_frame_round_trip() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        metadata(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            "timestamp",
        ),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("a\nb"), None])),
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![5, 6])),
        ],
    )
    .unwrap();
    let json = KafkaFormat::Json(JsonOptions {
        iso_timestamps: false,
    });
    let keys = vec!["k".to_string()];
    let encoder =
        RecordEncoder::new(&schema, json.clone(), Some((&keys, KafkaFormat::Raw))).unwrap();
    let records = encoder.encode(&batch).unwrap();
    assert_eq!(
        records,
        [
            OutRecord {
                key: Some(b"1".to_vec()),
                value: br#"{"k":1,"name":"a\nb"}"#.to_vec(),
                timestamp: Some(5)
            },
            OutRecord {
                key: Some(b"2".to_vec()),
                value: br#"{"k":2,"name":null}"#.to_vec(),
                timestamp: Some(6)
            },
        ]
    );
    let mut framed = Vec::new();
    frame_records(&records, &mut framed);
    let mut input = framed.as_slice();
    assert_eq!(unframe_records(&mut input).unwrap(), records);
    assert!(input.is_empty());
    let mut truncated = &framed[..framed.len() - 3];
    assert!(unframe_records(&mut truncated).is_err());

    let csv = KafkaFormat::parse(&options(&[("format", "csv")]), "format").unwrap();
    let encoder = RecordEncoder::new(&schema, csv, None).unwrap();
    let records = encoder.encode(&batch).unwrap();
    assert_eq!(records[0].value, b"1,\"a\nb\"".to_vec());
    assert_eq!(records[1].key, None);
}
