//! Tests of the filesystem connector against real files in temporary directories.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::array::{TimestampMillisecondArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use weir_engine::message::ROW_KIND_COLUMN;
use weir_engine::{Connector, SourcePoll, TableDescriptor, TaskInfo};

use super::FilesystemConnector;
use super::source::list_files;
use crate::util::test_support::{drain, rows, table, task};

fn fields() -> Vec<Field> {
    vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
    ]
}

fn fs_table(dir: &Path, format: &str, extra: &[(&str, &str)]) -> TableDescriptor {
    let path = dir.to_string_lossy().to_string();
    let mut options = vec![
        ("connector", "filesystem"),
        ("path", path.as_str()),
        ("format", format),
    ];
    options.extend_from_slice(extra);
    table(fields(), &options)
}

/// Rows `start..start + n`, with nulls in every third row.
fn batch(t: &TableDescriptor, start: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    let some = |i: &i64| i % 3 != 2;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter(
            ids.iter().map(|i| some(i).then(|| format!("n, \"{i}\""))),
        )),
        Arc::new(Float64Array::from_iter(
            ids.iter().map(|i| some(i).then(|| *i as f64 / 4.0)),
        )),
        Arc::new(TimestampMillisecondArray::from_iter(
            ids.iter()
                .map(|i| some(i).then(|| 1_704_067_200_000 + i * 1001)),
        )),
        Arc::new(BooleanArray::from_iter(
            ids.iter().map(|i| some(i).then_some(i % 2 == 0)),
        )),
        Arc::new(Date32Array::from_iter(
            ids.iter().map(|i| some(i).then(|| 19_000 + *i as i32)),
        )),
    ];
    RecordBatch::try_new(Arc::clone(&t.schema), columns).unwrap()
}

async fn write(t: &TableDescriptor, subtask: usize, parallelism: usize, batches: Vec<RecordBatch>) {
    let mut sink = FilesystemConnector
        .create_sink(t, &task(subtask, parallelism))
        .unwrap();
    for b in batches {
        sink.write_batch(b).await.unwrap();
    }
    sink.finish().await.unwrap();
}

async fn read(
    t: &TableDescriptor,
    projection: Option<&[usize]>,
    parallelism: usize,
) -> Vec<RecordBatch> {
    crate::util::test_support::read_all(&FilesystemConnector, t, projection, parallelism).await
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

#[tokio::test]
async fn round_trip_every_format_at_parallelism_1_and_2() {
    for format in ["csv", "json", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let t = fs_table(dir.path(), format, &[("scan.batch-size", "4")]);
        FilesystemConnector.validate_sink(&t).unwrap();
        FilesystemConnector.validate_source(&t).unwrap();
        write(&t, 0, 2, vec![batch(&t, 0, 5), batch(&t, 5, 5)]).await;
        write(&t, 1, 2, vec![batch(&t, 10, 7)]).await;
        let expected = sorted(rows(&[batch(&t, 0, 17)]));

        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2, "{format}: {files:?}");
        assert!(
            files
                .iter()
                .all(|f| f.extension().is_some_and(|e| e == format))
        );

        for p in [1, 2] {
            let batches = read(&t, None, p).await;
            assert!(
                batches
                    .iter()
                    .all(|b| b.schema() == t.schema && b.num_rows() <= 4),
                "{format}"
            );
            assert_eq!(
                sorted(rows(&batches)),
                expected,
                "{format} at parallelism {p}"
            );
        }
        let projected = read(&t, Some(&[3, 0]), 2).await;
        assert_eq!(
            projected[0].schema().as_ref(),
            &t.schema.project(&[3, 0]).unwrap()
        );
        assert_eq!(
            projected.iter().map(RecordBatch::num_rows).sum::<usize>(),
            17,
            "{format}"
        );
        let counted = read(&t, Some(&[]), 2).await;
        assert_eq!(
            counted.iter().map(RecordBatch::num_rows).sum::<usize>(),
            17,
            "{format} count(*)"
        );
    }
}

#[tokio::test]
async fn one_file_is_read_in_order_by_subtask_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bids.csv");
    std::fs::write(
        &file,
        "id,name,price,ts,ok,day\n1,a,1.5,2024-01-01 00:00:05,true,2024-01-01\n\
         2,,2.5,2024-01-01T00:00:06Z,false,\n3,c,,2024-01-01T00:00:07.250,,2024-01-03\n",
    )
    .unwrap();
    let path = file.to_string_lossy().to_string();
    let t = table(
        fields(),
        &[
            ("path", &path),
            ("format", "csv"),
            ("csv.ignore-first-line", "true"),
            ("scan.batch-size", "2"),
        ],
    );
    let mut sources: Vec<_> = (0..4)
        .map(|k| {
            FilesystemConnector
                .create_source(&t, None, &task(k, 4))
                .unwrap()
        })
        .collect();
    for other in &mut sources[1..] {
        assert!(matches!(
            other.poll_batch().await.unwrap(),
            SourcePoll::Finished
        ));
    }
    let batches = drain(sources.swap_remove(0)).await.unwrap();
    assert_eq!(
        batches
            .iter()
            .map(RecordBatch::num_rows)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        rows(&batches),
        [
            "1,a,1.5,2024-01-01T00:00:05,true,2024-01-01",
            "2,NULL,2.5,2024-01-01T00:00:06,false,NULL",
            "3,c,NULL,2024-01-01T00:00:07.250,NULL,2024-01-03",
        ]
    );
}

#[tokio::test]
async fn restores_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let t = fs_table(dir.path(), "json", &[("scan.batch-size", "3")]);
    write(&t, 0, 1, vec![batch(&t, 0, 5)]).await;
    write(&t, 0, 1, vec![batch(&t, 5, 5)]).await;
    let mut source = FilesystemConnector
        .create_source(&t, None, &task(0, 1))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            source.poll_batch().await.unwrap(),
            SourcePoll::Batch(_)
        ));
    }
    let position = source.snapshot_position().unwrap().unwrap();
    let rest = rows(&drain(source).await.unwrap());
    assert_eq!(rest.len(), 10 - 3 - 2 - 3);
    let mut restored = FilesystemConnector
        .create_source(&t, None, &task(0, 1))
        .unwrap();
    restored.restore_position(&position).unwrap();
    assert_eq!(rows(&drain(restored).await.unwrap()), rest);
    std::fs::remove_file(&list_files(dir.path()).unwrap()[1]).unwrap();
    let mut changed = FilesystemConnector
        .create_source(&t, None, &task(0, 1))
        .unwrap();
    assert!(changed.restore_position(&position).is_err());
}

#[tokio::test]
async fn csv_options_and_json_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "1|x|N|2024-01-01 00:00:05|true|N\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    std::fs::write(dir.path().join(".hidden.csv"), "garbage\n").unwrap();
    let t = fs_table(
        dir.path(),
        "csv",
        &[("csv.field-delimiter", "|"), ("csv.null-literal", "N")],
    );
    assert_eq!(
        rows(&read(&t, None, 1).await),
        ["1,x,NULL,2024-01-01T00:00:05,true,NULL"]
    );

    std::fs::write(
        dir.path().join("b.json"),
        "{\"id\": 2, \"ts\": \"2024-01-01T00:00:06Z\", \"day\": \"2024-01-02\"}\n\
         {\"id\": 3, \"ts\": \"2024-01-01 00:00:07.5\", \"extra\": [1]}\n",
    )
    .unwrap();
    let path = dir.path().join("b.json").to_string_lossy().to_string();
    let t = table(fields(), &[("path", &path), ("format", "json")]);
    assert_eq!(
        rows(&read(&t, None, 1).await),
        [
            "2,NULL,NULL,2024-01-01T00:00:06,NULL,2024-01-02",
            "3,NULL,NULL,2024-01-01T00:00:07.500,NULL,NULL"
        ]
    );

    let out = tempfile::tempdir().unwrap();
    let j = fs_table(out.path(), "json", &[]);
    write(&j, 0, 1, vec![batch(&j, 0, 2)]).await;
    let files = list_files(out.path()).unwrap();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        r#"{"id":0,"name":"n, \"0\"","price":0.0,"ts":"2024-01-01 00:00:00","ok":true,"day":"2022-01-08"}"#
    );
    assert!(text.contains(r#""ts":"2024-01-01 00:00:01.001""#), "{text}");
}

#[tokio::test]
async fn malformed_records_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "h\n1,a,1.0,,,\n2,b,2.0,,,\nthree,c,3.0,,,\n4,d,4.0,,,\n",
    )
    .unwrap();
    let path = csv.to_string_lossy().to_string();
    let t = table(
        fields(),
        &[
            ("path", &path),
            ("format", "csv"),
            ("csv.ignore-first-line", "true"),
        ],
    );
    let err = read_err(&t).await;
    assert!(
        err.contains("bad.csv") && err.contains("line 4") && err.contains("three"),
        "{err}"
    );

    std::fs::write(&csv, "1,a,1.0,,,\n2,b\n").unwrap();
    let t = table(
        fields(),
        &[("path", &path), ("format", "csv"), ("scan.batch-size", "1")],
    );
    let err = read_err(&t).await;
    assert!(err.contains("bad.csv") && err.contains("line 2"), "{err}");

    let json = dir.path().join("bad.json");
    std::fs::write(
        &json,
        "{\"id\": 1}\n\n{\"id\": 2, \"price\": \"cheap\"}\n{\"id\": 3}\n",
    )
    .unwrap();
    let path = json.to_string_lossy().to_string();
    let t = table(fields(), &[("path", &path), ("format", "json")]);
    let err = read_err(&t).await;
    assert!(
        err.contains("bad.json") && err.contains("line 3") && err.contains("price"),
        "{err}"
    );

    std::fs::write(&json, "{\"id\": 1}\n{\"id\": 2, \n").unwrap();
    let err = read_err(&t).await;
    assert!(err.contains("bad.json") && err.contains("line 2"), "{err}");

    std::fs::write(&json, "{\"id\": 1}\n{\"name\": \"no id\"}\n").unwrap();
    let err = read_err(&t).await;
    assert!(err.contains("bad.json") && err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn error_lines_are_exact_across_batches_and_buffers() {
    let dir = tempfile::tempdir().unwrap();
    for (format, good, bad) in [
        ("csv", "{i},\"multi\nline\",1.0,,,\n", "x{i},a,1.0,,,\n"),
        (
            "json",
            "{{\"id\": {i}, \"name\": \"n\"}}\n",
            "{{\"id\": \"x{i}\"}}\n",
        ),
    ] {
        let file = dir.path().join(format!("big.{format}"));
        let mut text = String::new();
        let mut line = 1;
        for i in 0..30_000 {
            if i == 25_000 {
                assert!(line > 25_000);
                text.push_str(
                    &bad.replace("{i}", &i.to_string())
                        .replace("{{", "{")
                        .replace("}}", "}"),
                );
                break;
            }
            let record = good
                .replace("{i}", &i.to_string())
                .replace("{{", "{")
                .replace("}}", "}");
            line += record.matches('\n').count();
            text.push_str(&record);
        }
        std::fs::write(&file, text).unwrap();
        let path = file.to_string_lossy().to_string();
        let t = table(
            fields(),
            &[
                ("path", &path),
                ("format", format),
                ("scan.batch-size", "1000"),
            ],
        );
        let err = read_err(&t).await;
        assert!(
            err.contains(&format!("line {line}:")),
            "{format}: expected line {line}: {err}"
        );
    }
}

async fn read_err(t: &TableDescriptor) -> String {
    let source = FilesystemConnector
        .create_source(t, None, &task(0, 1))
        .unwrap();
    let err = drain(source).await.unwrap_err();
    assert_eq!(err.domain(), weir_engine::ErrorDomain::User, "{err}");
    err.to_string()
}

#[tokio::test]
async fn files_stay_hidden_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let t = fs_table(
        dir.path(),
        "parquet",
        &[("sink.rolling-policy.file-size", "1b")],
    );
    let mut sink = FilesystemConnector.create_sink(&t, &task(0, 1)).unwrap();
    sink.write_batch(batch(&t, 0, 3)).await.unwrap();
    sink.write_batch(batch(&t, 3, 3)).await.unwrap();
    assert!(list_files(dir.path()).unwrap().is_empty());
    sink.pre_commit(1).await.unwrap();
    sink.write_batch(batch(&t, 6, 3)).await.unwrap();
    sink.pre_commit(2).await.unwrap();
    assert!(list_files(dir.path()).unwrap().is_empty());
    sink.commit(1).await.unwrap();
    // The 1-byte rolling size closed a file after each batch.
    assert_eq!(list_files(dir.path()).unwrap().len(), 2);
    assert_eq!(
        read(&t, None, 1)
            .await
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        6
    );
    sink.write_batch(batch(&t, 9, 1)).await.unwrap();
    sink.finish().await.unwrap();
    assert_eq!(list_files(dir.path()).unwrap().len(), 4);
    assert_eq!(
        sorted(rows(&read(&t, None, 2).await)),
        sorted(rows(&[batch(&t, 0, 10)]))
    );
    let all = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(all, 4, "no in-progress file is left behind");
}

/// A restarted job's subtask 0 deletes, at its first commit, the hidden
/// files earlier attempts of the same job left, and nothing else.
#[tokio::test]
async fn a_restored_attempt_removes_the_orphans_of_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let t = fs_table(dir.path(), "csv", &[]);
    let hidden = [
        ".part-job7-0-0-0a0a0a0a-0.csv.inprogress", // attempt 0: an orphan
        ".part-job7-1-2-0b0b0b0b-3.csv.inprogress", // attempt 1: an orphan
        ".part-job7-2-1-0c0c0c0c-0.csv.inprogress", // this attempt: kept
        ".part-job8-0-0-0d0d0d0d-0.csv.inprogress", // another job: kept
        ".part-job77-0-0-0e0e0e0e-0.csv.inprogress", // another job: kept
    ];
    for name in hidden {
        std::fs::write(dir.path().join(name), "1\n").unwrap();
    }
    std::fs::write(dir.path().join("part-job7-0-0-0a0a0a0a-1.csv"), "2\n").unwrap();
    let attempt = |subtask| TaskInfo {
        job_id: "job7".into(),
        attempt: 2,
        ..task(subtask, 2)
    };
    // Subtask 1 deletes nothing; subtask 0 at its first commit does.
    let mut other = FilesystemConnector.create_sink(&t, &attempt(1)).unwrap();
    other.commit(5).await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 6);
    let mut first = FilesystemConnector.create_sink(&t, &attempt(0)).unwrap();
    first.write_batch(batch(&t, 0, 2)).await.unwrap();
    first.pre_commit(5).await.unwrap();
    first.commit(5).await.unwrap();
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(left, [hidden[2], hidden[4], hidden[3]]);
    assert_eq!(
        list_files(dir.path()).unwrap().len(),
        2,
        "visible files stay"
    );
}

#[tokio::test]
async fn sink_rejects_updates_and_parquet_fills_missing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let narrow = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new(ROW_KIND_COLUMN, DataType::UInt8, false),
    ]));
    let t = TableDescriptor {
        schema: Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        ..fs_table(dir.path(), "parquet", &[])
    };
    let mut sink = FilesystemConnector.create_sink(&t, &task(0, 1)).unwrap();
    let inserts = RecordBatch::try_new(
        Arc::clone(&narrow),
        vec![
            Arc::new(arrow::array::Int32Array::from(vec![7])),
            Arc::new(UInt8Array::from(vec![0])),
        ],
    )
    .unwrap();
    sink.write_batch(inserts).await.unwrap();
    let deletes = RecordBatch::try_new(
        narrow,
        vec![
            Arc::new(arrow::array::Int32Array::from(vec![7])),
            Arc::new(UInt8Array::from(vec![3])),
        ],
    )
    .unwrap();
    assert!(
        sink.write_batch(deletes)
            .await
            .unwrap_err()
            .to_string()
            .contains("only takes inserts")
    );
    sink.finish().await.unwrap();
    // Read the one-column file as the wide table: nullable columns it lacks are null.
    let wide = fs_table(dir.path(), "parquet", &[]);
    assert_eq!(
        rows(&read(&wide, None, 1).await),
        ["7,NULL,NULL,NULL,NULL,NULL"]
    );
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let err = |extra: &[(&str, &str)], format: &str| {
        FilesystemConnector
            .validate_source(&fs_table(dir.path(), format, extra))
            .unwrap_err()
            .to_string()
    };
    let e = err(&[("csv.field-delimeter", ";")], "csv");
    assert!(e.contains("did you mean 'csv.field-delimiter'"), "{e}");
    let e = err(&[], "jsn");
    assert!(e.contains("did you mean 'json'"), "{e}");
    let e = err(&[("csv.field-delimiter", ";;")], "csv");
    assert!(e.contains("csv.field-delimiter"), "{e}");
    let e = err(&[("csv.ignore-first-line", "true")], "json");
    assert!(e.contains("does not apply to format 'json'"), "{e}");
    let e = err(&[("scan.batch-size", "0")], "csv");
    assert!(e.contains("scan.batch-size"), "{e}");
    let t = fs_table(dir.path(), "csv", &[("csv.ignore-first-line", "true")]);
    assert!(FilesystemConnector.validate_sink(&t).is_err());
    let nested = table(
        vec![Field::new(
            "l",
            DataType::new_list(DataType::Int64, true),
            true,
        )],
        &[("path", "/tmp/x"), ("format", "csv")],
    );
    let e = FilesystemConnector
        .validate_source(&nested)
        .unwrap_err()
        .to_string();
    assert!(e.contains("column 'l'"), "{e}");
    let missing = table(
        fields(),
        &[("path", "/nonexistent/weir"), ("format", "csv")],
    );
    assert!(FilesystemConnector.validate_source(&missing).is_ok());
    let e = FilesystemConnector
        .create_source(&missing, None, &task(0, 1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/weir"), "{e}");
}
