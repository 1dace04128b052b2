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

pub(super) fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    ConnectorOptions::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

const BASE: &[(&str, &str)] = &[
    ("connector", "kafka"),
    ("topic", "t"),
    ("properties.bootstrap.servers", "127.0.0.1:1"),
    ("scan.startup.mode", "earliest-offset"),
    ("format", "json"),
];

pub(super) fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
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
    let err = source_error(&[("scan.bad-record-policy", "dead-leter")]);
    assert!(err.contains("did you mean 'dead-letter'"), "{err}");
    assert!(err.contains("use fail, drop, dead-letter"), "{err}");
    assert!(
        source_error(&[("scan.bad-record-policy", "dead-letter")])
            .contains("scan.dead-letter-topic")
    );
    assert!(source_error(&[("format", "jsn")]).contains("did you mean 'json'"));
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

pub(super) fn metadata(name: &str, data_type: DataType, key: &str) -> Field {
    Field::new(name, data_type, true).with_metadata(HashMap::from([(
        METADATA_FIELD_KEY.to_string(),
        key.to_string(),
    )]))
}

pub(super) fn buffer(values: &[Option<&[u8]>]) -> RecordBuffer {
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
    let mut decoder = RecordDecoder::new(
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
    let mut decoder = RecordDecoder::new(
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
    let mut decoder = RecordDecoder::new(format, &table_csv, &[0, 1], 1 << 20).unwrap();
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
    let mut decoder = RecordDecoder::new(KafkaFormat::Raw, &table_raw, &[1, 0], 1 << 20).unwrap();
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
                value: Some(br#"{"k":1,"name":"a\nb"}"#.to_vec()),
                timestamp: Some(5)
            },
            OutRecord {
                key: Some(b"2".to_vec()),
                value: Some(br#"{"k":2,"name":null}"#.to_vec()),
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
    assert_eq!(records[0].value, Some(b"1,\"a\nb\"".to_vec()));
    assert_eq!(records[1].key, None);
}

/// Avro's zig-zag varint of a long or int.
fn avro_long(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return out;
        }
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
}

fn avro_string(s: &str) -> Vec<u8> {
    let mut out = avro_long(s.len() as i64);
    out.extend_from_slice(s.as_bytes());
    out
}

fn avro_table(extra: &[(&'static str, &'static str)]) -> weir_engine::TableDescriptor {
    table(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            metadata("off", DataType::Int64, "offset"),
        ],
        &with(extra),
    )
}

#[test]
fn avro_rows_round_trip_through_the_derived_schema() {
    let table = avro_table(&[("format", "avro")]);
    let format = KafkaFormat::parse(&table.options, "format").unwrap();
    let value_schema = Schema::new(table.schema.fields()[..3].to_vec());
    let encoder = RecordEncoder::new(&value_schema, format.clone(), None).unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(value_schema),
        vec![
            Arc::new(Int64Array::from(vec![1, -2, 1 << 40])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ünï")])),
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![
                Some(1_700_000_000_123),
                None,
                Some(0),
            ])),
        ],
    )
    .unwrap();
    let out = encoder.encode(&batch).unwrap();
    // Hand-checked: id 1 (zig-zag 2), union branch 1, "a", union branch 1, the millis.
    let mut first = vec![2, 2, 2, b'a', 2];
    first.extend(avro_long(1_700_000_000_123));
    assert_eq!(out[0].value, Some(first));
    let values: Vec<Option<&[u8]>> = out.iter().map(|r| r.value.as_deref()).collect();
    let mut decoder = RecordDecoder::new(format, &table, &[0, 1, 2, 3], 1 << 20).unwrap();
    let (decoded, bad) = decoder.decode(&buffer(&values)).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        rows(&[decoded]),
        [
            "1,a,2023-11-14T22:13:20.123,100",
            "-2,NULL,NULL,101",
            "1099511627776,ünï,1970-01-01T00:00:00,102"
        ]
    );
}

#[test]
fn avro_writer_schema_resolves_into_the_table() {
    // Another record name and namespace, fields reordered, an extra field,
    // `id` written as int (promoted to long), no `ts` (null by default).
    let writer = r#"{"type": "record", "name": "Bid", "namespace": "com.acme", "fields": [
        {"name": "name", "type": ["null", "string"]},
        {"name": "extra", "type": "int"},
        {"name": "id", "type": "int"}]}"#;
    let table = avro_table(&[("format", "avro"), ("avro.schema", writer)]);
    KafkaConnector
        .validate_source(&table)
        .expect("the writer schema resolves");
    let format = KafkaFormat::parse(&table.options, "format").unwrap();
    let mut decoder = RecordDecoder::new(format, &table, &[0, 1, 2], 1 << 20).unwrap();
    let datum = |name: Option<&str>, extra: i64, id: i64| {
        let mut v = match name {
            Some(n) => [vec![2], avro_string(n)].concat(),
            None => vec![0],
        };
        v.extend(avro_long(extra));
        v.extend(avro_long(id));
        v
    };
    let good1 = datum(Some("x"), 7, 1);
    let good2 = datum(None, -1, 300);
    // The string's length, but not its byte.
    let truncated = good1[..2].to_vec();
    let two = [good1.clone(), good2.clone()].concat();
    // A negative string length.
    let bad_branch = [vec![2, 3], good1[3..].to_vec()].concat();
    // Well-formed Avro, but the string is not UTF-8 (found by the property
    // test below: arrow-avro checks it only when it builds the batch).
    let not_utf8 = [vec![2, 2, 0xff], avro_long(7), avro_long(2)].concat();
    let records = buffer(&[
        Some(&good1),
        Some(&truncated),
        Some(&two),
        None,
        Some(b""),
        Some(&bad_branch),
        Some(&not_utf8),
        Some(&good2),
    ]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert_eq!(rows(&[batch]), ["1,x,NULL", "300,NULL,NULL"]);
    let bad_indices: Vec<usize> = bad.iter().map(|b| b.index).collect();
    assert_eq!(bad_indices, [1, 2, 3, 4, 5, 6], "{bad:?}");
    assert!(bad[5].reason.contains("UTF-8"), "{:?}", bad[5]);
    assert!(bad[0].reason.contains("truncated"), "{:?}", bad[0]);
    assert!(bad[4].reason.contains("invalid Avro"), "{:?}", bad[4]);
    assert!(bad[1].reason.contains("after the end"), "{:?}", bad[1]);
}

#[test]
fn avro_options_and_unreadable_schemas_are_config_errors() {
    let err = source_error(&[("format", "avro-confluent")]);
    assert!(err.contains("avro-confluent.url"), "{err}");
    let err = source_error(&[("format", "avro"), ("csv.field-delimiter", ";")]);
    assert!(err.contains("does not apply"), "{err}");
    let err = source_error(&[("format", "avrp")]);
    assert!(err.contains("did you mean 'avro'"), "{err}");
    let err = source_error(&[
        ("format", "avro-confluent"),
        ("avro-confluent.url", "localhost:8081"),
    ]);
    assert!(err.contains("http://"), "{err}");

    // `name` cannot be read from a boolean.
    let writer = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "boolean"}]}"#;
    let table = avro_table(&[("format", "avro"), ("avro.schema", writer)]);
    let err = KafkaConnector
        .validate_source(&table)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be read into the table's columns"),
        "{err}"
    );
    // `id` is NOT NULL and has no default.
    let writer =
        r#"{"type": "record", "name": "R", "fields": [{"name": "name", "type": "string"}]}"#;
    let table = avro_table(&[("format", "avro"), ("avro.schema", writer)]);
    assert!(KafkaConnector.validate_source(&table).is_err());
    let table = avro_table(&[("format", "avro"), ("avro.schema", "{not json")]);
    let err = KafkaConnector
        .validate_source(&table)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not JSON"), "{err}");

    let sink = SinkOptions::parse(&options(&[
        ("topic", "t"),
        ("properties.bootstrap.servers", "127.0.0.1:1"),
        ("format", "avro-confluent"),
        ("avro-confluent.url", "http://127.0.0.1:1"),
    ]))
    .unwrap();
    assert!(
        matches!(&sink.format, KafkaFormat::Avro(a) if a.subject.as_deref() == Some("t-value"))
    );
}

mod avro_properties {
    use arrow::array::Array;
    use proptest::prelude::*;

    use super::*;

    type Row = (i64, Option<String>, Option<i64>);

    fn encode(rows: &[Row]) -> Vec<Vec<u8>> {
        let table = avro_table(&[("format", "avro")]);
        let format = KafkaFormat::parse(&table.options, "format").unwrap();
        let value_schema = Schema::new(table.schema.fields()[..3].to_vec());
        let encoder = RecordEncoder::new(&value_schema, format, None).unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(value_schema),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone()))),
                Arc::new(arrow::array::TimestampMillisecondArray::from_iter(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap();
        encoder
            .encode(&batch)
            .unwrap()
            .into_iter()
            .map(|r| r.value.unwrap_or_default())
            .collect()
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            any::<i64>(),
            proptest::option::of("\\PC{0,12}"),
            proptest::option::of(-10_000_000_000_000i64..10_000_000_000_000),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Encoded rows decode to themselves.
        #[test]
        fn avro_rows_round_trip(rows in proptest::collection::vec(row(), 0..40)) {
            let values = encode(&rows);
            let table = avro_table(&[("format", "avro")]);
            let format = KafkaFormat::parse(&table.options, "format").unwrap();
            let mut decoder = RecordDecoder::new(format, &table, &[0, 1, 2], 1 << 20).unwrap();
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
            let (batch, bad) = decoder.decode(&buffer(&refs)).unwrap();
            prop_assert!(bad.is_empty());
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            prop_assert_eq!(batch.num_rows(), rows.len());
            for (i, r) in rows.iter().enumerate() {
                prop_assert_eq!(ids.value(i), r.0);
                prop_assert_eq!(names.is_valid(i).then(|| names.value(i).to_string()), r.1.clone());
            }
        }

        /// Arbitrary bytes among good records: never a panic, never a good
        /// record reported bad or changed, one row or one bad record each.
        #[test]
        fn garbage_never_panics_or_disturbs_good_records(
            rows in proptest::collection::vec(row(), 1..20),
            garbage in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..48), 1..20),
        ) {
            let good = encode(&rows);
            // Interleave: good, garbage, good, garbage, …
            let mut values: Vec<Vec<u8>> = Vec::new();
            let mut good_at = Vec::new();
            for i in 0..good.len().max(garbage.len()) {
                if let Some(g) = good.get(i) {
                    good_at.push(values.len());
                    values.push(g.clone());
                }
                if let Some(g) = garbage.get(i) {
                    values.push(g.clone());
                }
            }
            let table = avro_table(&[("format", "avro")]);
            let format = KafkaFormat::parse(&table.options, "format").unwrap();
            let mut decoder = RecordDecoder::new(format, &table, &[0, 1, 2], 1 << 20).unwrap();
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_slice())).collect();
            let (batch, bad) = decoder.decode(&buffer(&refs)).unwrap();
            prop_assert_eq!(batch.num_rows() + bad.len(), values.len());
            let bad_set: std::collections::HashSet<usize> = bad.iter().map(|b| b.index).collect();
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let mut row = 0;
            let mut next_good = 0;
            for i in 0..values.len() {
                if bad_set.contains(&i) {
                    prop_assert!(!good_at.contains(&i), "good record {} reported bad", i);
                    continue;
                }
                if good_at.get(next_good) == Some(&i) {
                    prop_assert_eq!(ids.value(row), rows[next_good].0);
                    next_good += 1;
                }
                row += 1;
            }
            prop_assert_eq!(next_good, rows.len());
        }
    }
}
