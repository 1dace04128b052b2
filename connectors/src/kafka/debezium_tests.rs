//! Unit tests of `'format' = 'debezium-json'` in the Kafka connector:
//! options, decoding change records, encoding changes.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use weir_engine::changelog::{materialize, split_row_kinds};
use weir_engine::message::ROW_KIND_COLUMN;
use weir_engine::{Connector, RowKind};

use super::decode::RecordDecoder;
use super::encode::RecordEncoder;
use super::tests::{buffer, metadata, options, with};
use super::*;
use crate::util::test_support::{rows, table};

fn format() -> KafkaFormat {
    KafkaFormat::parse(&options(&[("format", "debezium-json")]), "format").unwrap()
}

fn cdc_table() -> TableDescriptor {
    table(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("k", DataType::Utf8, true),
            metadata("off", DataType::Int64, "offset"),
            metadata(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                "timestamp",
            ),
        ],
        &with(&[("format", "debezium-json")]),
    )
}

/// The options of a sink table: the base ones but the source's, and `extra`.
fn sink_options(extra: &[(&'static str, &'static str)]) -> ConnectorOptions {
    let all: Vec<_> = with(extra)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("scan."))
        .collect();
    options(&all)
}

#[test]
fn debezium_json_is_a_changelog_format_of_values_only() {
    let t = cdc_table();
    assert!(KafkaConnector.produces_updates(&t));
    assert!(KafkaConnector.accepts_updates(&t));
    assert!(KafkaConnector.validate_source(&t).is_ok());
    let json = table(vec![Field::new("id", DataType::Int64, false)], &with(&[]));
    assert!(!KafkaConnector.produces_updates(&json));
    assert!(!KafkaConnector.accepts_updates(&json));

    let o = SourceOptions::parse(&options(&with(&[
        ("format", "debezium-json"),
        ("debezium-json.ignore-parse-errors", "true"),
        ("debezium-json.schema-include", "true"),
    ])))
    .unwrap();
    assert_eq!(o.bad_records, BadRecordPolicy::Drop);
    assert_eq!(o.format.name(), "debezium-json");

    let err = SinkOptions::parse(&sink_options(&[
        ("format", "json"),
        ("key.fields", "id"),
        ("key.format", "debezium-json"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'key.format' = 'debezium-json' is not a Kafka key format"),
        "{err}"
    );
    let err = SinkOptions::parse(&sink_options(&[
        ("format", "debezium-json"),
        ("debezium-json.schema-include", "true"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("applies only when reading"), "{err}");
    let err = SourceOptions::parse(&options(&with(&[
        ("format", "json"),
        ("debezium-json.timestamp-format.standard", "SQL"),
    ])))
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not apply to format 'json'"), "{err}");
}

#[test]
fn change_records_decode_into_rows_with_kinds_and_metadata() {
    let mut decoder = RecordDecoder::new(format(), &cdc_table(), &[1, 2, 0], 1 << 20).unwrap();
    let records = buffer(&[
        Some(br#"{"before":null,"after":{"id":1,"k":"a"},"op":"c"}"#),
        Some(br#"{"before":{"id":1,"k":"a"},"after":{"id":1,"k":"b"},"op":"u"}"#),
        Some(br#"{"schema":{},"payload":{"before":{"id":1,"k":"b"},"after":null,"op":"d"}}"#),
        None, // Debezium's tombstone after a delete: skipped, not bad
        Some(br#"{"before":null,"after":{"id":2,"k":"c"},"op":"r"}"#),
    ]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(batch.schema(), *decoder.schema());
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["k", "off", "id", ROW_KIND_COLUMN]);
    // An update's two rows both carry its record's offset.
    assert_eq!(
        rows(std::slice::from_ref(&batch)),
        [
            "a,100,1,0",
            "a,101,1,1",
            "b,101,1,2",
            "b,102,1,3",
            "c,104,2,0"
        ]
    );
    let (_, kinds) = split_row_kinds(&batch).unwrap();
    assert_eq!(kinds.unwrap()[1], RowKind::UpdateBefore);
}

#[test]
fn bad_change_records_are_found_one_by_one() {
    let mut decoder = RecordDecoder::new(format(), &cdc_table(), &[0, 1], 1 << 20).unwrap();
    let records = buffer(&[
        Some(br#"{"after":{"id":1,"k":"a"},"op":"c"}"#),
        Some(b"not json"),
        Some(br#"{"after":{"id":2},"op":"x"}"#),
        Some(br#"{"before":null,"after":{"id":1,"k":"z"},"op":"u"}"#),
        Some(br#"{"before":null,"after":null,"op":"d"}"#),
        Some(br#"{"before":null,"op":"c"}"#),
        Some(br#"{"after":{"id":"three"},"op":"c"}"#), // a row that does not fit
        Some(br#"{"before":{"id":1,"k":"a"},"after":{"id":1,"k":"b"},"op":"u"}"#),
    ]);
    let (batch, bad) = decoder.decode(&records).unwrap();
    assert_eq!(rows(&[batch]), ["1,a,0", "1,a,1", "1,b,2"]);
    let found: Vec<(usize, &str)> = bad.iter().map(|b| (b.index, b.reason.as_str())).collect();
    let expected = [
        (1, "not valid JSON"),
        (2, "unknown op 'x'"),
        (3, "(op 'u') has no 'before' row"),
        (4, "(op 'd') has no 'before' row"),
        (5, "(op 'c') has no 'after' row"),
        (6, "BIGINT"),
    ];
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for ((index, reason), (want_index, want)) in found.iter().zip(expected) {
        assert_eq!(*index, want_index, "{found:?}");
        assert!(
            reason.starts_with("invalid debezium-json: ") && reason.contains(want),
            "{index}: {reason}"
        );
    }
}

#[test]
fn changes_encode_as_envelopes_with_keys() {
    let schema = Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "a"])),
            Arc::new(Int64Array::from(vec![1, 1, 2])),
        ],
    )
    .unwrap();
    let keys = vec!["k".to_string()];
    let encoder = RecordEncoder::new(&schema, format(), Some((&keys, KafkaFormat::Raw))).unwrap();
    let kinds = [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter];
    let records = encoder.encode_changes(&batch, Some(&kinds)).unwrap();
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default()).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
            r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
            r#"{"before":null,"after":{"k":"a","n":2},"op":"c"}"#,
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.key.as_deref() == Some(b"a".as_slice()))
    );

    // What the sink writes, the source reads back to the same final state.
    let t = table(
        schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
        &with(&[("format", "debezium-json")]),
    );
    let mut decoder = RecordDecoder::new(format(), &t, &[0, 1], 1 << 20).unwrap();
    let values: Vec<Option<&[u8]>> = records.iter().map(|r| r.value.as_deref()).collect();
    let (back, bad) = decoder.decode(&buffer(&values)).unwrap();
    assert!(bad.is_empty());
    assert_eq!(rows(&materialize(&[back]).unwrap()), ["a,2"]);

    // A format that takes only inserts refuses changes.
    let json = KafkaFormat::parse(&options(&[("format", "json")]), "format").unwrap();
    let encoder = RecordEncoder::new(&schema, json, None).unwrap();
    assert!(encoder.encode_changes(&batch, Some(&kinds)).is_err());
    assert_eq!(encoder.encode_changes(&batch, None).unwrap().len(), 3);
}
