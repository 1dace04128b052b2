//! Tests of reading `debezium-json` files: the changelog a file holds, bad
//! change records, restoring in the middle of an update.

use arrow::datatypes::{DataType, Field, TimeUnit};
use weir_engine::changelog::{materialize, split_row_kinds};
use weir_engine::message::ROW_KIND_COLUMN;
use weir_engine::{Connector, RowKind, SourcePoll, TableDescriptor};

use super::FilesystemConnector;
use crate::util::test_support::{drain, read_all, rows, table, task};

/// The hand-written changelog of the SQL tests (see `tests/slt/11_cdc.slt`).
const CDC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/cdc.json");

fn fields() -> Vec<Field> {
    vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]
}

fn cdc_table(path: &str, batch_size: &str) -> TableDescriptor {
    table(
        fields(),
        &[
            ("connector", "filesystem"),
            ("path", path),
            ("format", "debezium-json"),
            ("scan.batch-size", batch_size),
        ],
    )
}

#[tokio::test]
async fn reads_a_changelog() {
    let t = cdc_table(CDC_FILE, "4");
    assert!(FilesystemConnector.produces_updates(&t));
    let batches = read_all(&FilesystemConnector, &t, None, 2).await;
    let schema = batches[0].schema();
    assert_eq!(schema.fields().len(), 5);
    assert_eq!(schema.field(4).name(), ROW_KIND_COLUMN);
    // Every batch but the last holds 4 change records (an update is 2 rows).
    assert!(batches.len() >= 4, "{} batches", batches.len());
    let kinds: Vec<RowKind> = batches
        .iter()
        .flat_map(|b| split_row_kinds(b).unwrap().1.unwrap())
        .collect();
    use RowKind::*;
    assert_eq!(
        kinds,
        [
            Insert,
            Insert,
            Insert,
            UpdateBefore,
            UpdateAfter,
            Insert,
            UpdateBefore,
            UpdateAfter,
            Delete,
            Insert,
            UpdateBefore,
            UpdateAfter,
            Delete,
            Insert,
            UpdateBefore,
            UpdateAfter,
            Insert,
        ]
    );
    // SQL text, ISO-8601 text and epoch milliseconds read as the same kind of timestamp.
    let all = rows(&batches);
    assert_eq!(all[1], "2,b,20,2024-01-01T10:00:01,0");
    assert_eq!(all[2], "3,a,5,2024-01-01T10:00:02,0");
    // The final rows, in the order they were (last) inserted.
    assert_eq!(
        rows(&materialize(&batches).unwrap()),
        [
            "1,a,15,2024-01-01T10:00:03",
            "2,a,20,2024-01-01T10:00:05",
            "6,c,3,2024-01-01T10:00:08",
            "5,b,NULL,2024-01-01T10:00:09",
            "7,a,2,2024-01-01T10:00:10",
        ]
    );
}

#[tokio::test]
async fn reads_a_projection_of_a_changelog() {
    let t = cdc_table(CDC_FILE, "100");
    let batches = read_all(&FilesystemConnector, &t, Some(&[2, 1]), 1).await;
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["v", "k", ROW_KIND_COLUMN]);
    assert_eq!(
        rows(&materialize(&batches).unwrap()),
        ["15,a", "20,a", "3,c", "NULL,b", "2,a"]
    );
    // No columns at all (COUNT(*)): the row kinds still come.
    let batches = read_all(&FilesystemConnector, &t, Some(&[]), 1).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!((rows, batches[0].num_columns()), (17, 1));
}

#[tokio::test]
async fn restores_in_the_middle_of_the_changelog() {
    let t = cdc_table(CDC_FILE, "3");
    let mut source = FilesystemConnector
        .create_source(&t, None, &task(0, 1))
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            source.poll_batch().await.unwrap(),
            SourcePoll::Batch(_)
        ));
    }
    let position = source.snapshot_position().unwrap().unwrap();
    let rest = rows(&drain(source).await.unwrap());
    let mut restored = FilesystemConnector
        .create_source(&t, None, &task(0, 1))
        .unwrap();
    restored.restore_position(&position).unwrap();
    assert_eq!(rows(&drain(restored).await.unwrap()), rest);
    assert!(!rest.is_empty());
}

#[tokio::test]
async fn a_bad_change_record_fails_the_read_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("changes.json");
    let path = file.to_string_lossy().to_string();
    let good = r#"{"before":null,"after":{"id":1,"k":"a","v":1},"op":"c"}"#;
    let cases = [
        ("not json", "not valid JSON"),
        (r#"{"after":{"id":2},"op":"x"}"#, "unknown op 'x'"),
        (r#"{"after":{"id":2}}"#, "no 'op'"),
        (
            r#"{"before":null,"after":{"id":2},"op":"u"}"#,
            "(op 'u') has no 'before' row",
        ),
        (r#"{"after":null,"op":"d"}"#, "(op 'd') has no 'before' row"),
        (r#"{"before":null,"op":"c"}"#, "(op 'c') has no 'after' row"),
        (r#"{"after":null,"op":"r"}"#, "(op 'r') has no 'after' row"),
        (
            r#"{"before":{"id":1},"after":null,"op":"u"}"#,
            "(op 'u') has no 'after' row",
        ),
        (r#"{"after":{"id":"two"},"op":"c"}"#, "BIGINT"),
        (r#"{"after":{"k":"no id"},"op":"c"}"#, "id"),
    ];
    for batch_size in ["1", "2", "100"] {
        for (bad, reason) in cases {
            std::fs::write(&file, format!("{good}\n\n{good}\n{bad}\n{good}\n")).unwrap();
            let t = cdc_table(&path, batch_size);
            let source = FilesystemConnector
                .create_source(&t, None, &task(0, 1))
                .unwrap();
            let err = drain(source).await.unwrap_err();
            assert_eq!(err.domain(), weir_engine::ErrorDomain::User, "{err}");
            let err = err.to_string();
            assert!(
                err.contains("changes.json") && err.contains("line 4:") && err.contains(reason),
                "{bad} (batch size {batch_size}): {err}"
            );
        }
    }
}

#[test]
fn the_sink_refuses_to_write_the_schema() {
    let t = table(
        fields(),
        &[
            ("connector", "filesystem"),
            ("path", "/tmp/never-written"),
            ("format", "debezium-json"),
            ("debezium-json.schema-include", "true"),
        ],
    );
    assert!(FilesystemConnector.validate_source(&t).is_ok());
    let err = FilesystemConnector
        .validate_sink(&t)
        .unwrap_err()
        .to_string();
    assert!(err.contains("debezium-json.schema-include"), "{err}");
}
