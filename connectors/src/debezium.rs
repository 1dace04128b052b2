//! The `debezium-json` format: changes as Debezium's JSON envelope
//! `{"before": …, "after": …, "op": …}`, as Flink writes and reads it.
//!
//! Writing follows Flink's `debezium-json` serializer: an insert or the new
//! row of an update (`+I`, `+U`) becomes `{"before":null,"after":{…},"op":"c"}`,
//! and a deleted row or the old row of an update (`-D`, `-U`) becomes
//! `{"before":{…},"after":null,"op":"d"}`. Applying the records in order
//! rebuilds the table.
//!
//! Reading ([`DebeziumDecoder`]) follows Flink's `debezium-json`
//! deserializer: `c` (create) and `r` (snapshot read) become `+I` of
//! `after`, `u` becomes `-U` of `before` then `+U` of `after`, `d` becomes
//! `-D` of `before`. The envelope may stand alone or sit in the `payload` of
//! Debezium's `{"schema": …, "payload": …}` (both shapes are read, whatever
//! `debezium-json.schema-include` says). The row objects are decoded by
//! Arrow's JSON decoder, a batch at a time, so values read exactly as the
//! `json` format reads them.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt8Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::value::RawValue;
use weir_engine::changelog::updating_schema;
use weir_engine::{Error, Result, RowKind};

/// How timestamps are written inside the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DebeziumOptions {
    /// ISO-8601 timestamps (`2024-01-01T00:00:00`) instead of SQL ones.
    pub iso_timestamps: bool,
}

const SQL_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.f";
const SQL_TIMESTAMP_TZ: &str = "%Y-%m-%d %H:%M:%S%.f%:z";
const ISO_TIMESTAMP: &str = "%Y-%m-%dT%H:%M:%S%.f";
const ISO_TIMESTAMP_TZ: &str = "%Y-%m-%dT%H:%M:%S%.f%:z";

/// One envelope per row of `data`; `kinds` are the rows' kinds (`None`:
/// every row is an insert).
pub fn encode(
    data: &RecordBatch,
    kinds: Option<&[RowKind]>,
    options: DebeziumOptions,
) -> Result<Vec<Vec<u8>>> {
    let (ts, ts_tz) = if options.iso_timestamps {
        (ISO_TIMESTAMP, ISO_TIMESTAMP_TZ)
    } else {
        (SQL_TIMESTAMP, SQL_TIMESTAMP_TZ)
    };
    let mut lines = Vec::with_capacity(data.num_rows() * 64);
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_timestamp_format(ts.into())
            .with_timestamp_tz_format(ts_tz.into())
            .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
        writer.write(data)?;
        writer.finish()?;
    }
    let rows: Vec<&[u8]> = lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if rows.len() != data.num_rows() {
        return Err(Error::internal(format!(
            "debezium-json: {} rows encoded as {} lines",
            data.num_rows(),
            rows.len()
        )));
    }
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let kind = kinds.map_or(RowKind::Insert, |k| k[i]);
            let mut out = Vec::with_capacity(row.len() + 40);
            match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    out.extend_from_slice(b"{\"before\":null,\"after\":");
                    out.extend_from_slice(row);
                    out.extend_from_slice(b",\"op\":\"c\"}");
                }
                RowKind::UpdateBefore | RowKind::Delete => {
                    out.extend_from_slice(b"{\"before\":");
                    out.extend_from_slice(row);
                    out.extend_from_slice(b",\"after\":null,\"op\":\"d\"}");
                }
            }
            out
        })
        .collect())
}

/// Why a change record cannot be read. The message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadChange {
    /// Not a JSON object at all.
    #[error("the change record is not valid JSON: {0}")]
    NotJson(String),
    /// No `op` field.
    #[error(
        "the change record has no 'op'; expected Debezium's envelope \
         {{\"before\": …, \"after\": …, \"op\": …}} (bare or in \"payload\")"
    )]
    MissingOp,
    /// An `op` other than `c`, `r`, `u`, `d`.
    #[error("the change record has unknown op '{0}'; Debezium's ops are 'c', 'r', 'u' and 'd'")]
    UnknownOp(String),
    /// `before` or `after` is null or missing where the op needs it.
    #[error("{}", missing_row_message(*.op, .field))]
    MissingRow {
        /// The op.
        op: char,
        /// `before` or `after`.
        field: &'static str,
    },
    /// `before` or `after` is not a JSON object.
    #[error("the '{field}' of the change record (op '{op}') is not a JSON object")]
    NotAnObject {
        /// The op.
        op: char,
        /// `before` or `after`.
        field: &'static str,
    },
    /// A row object does not fit the table's columns (a wrong type, a null
    /// in a NOT NULL column).
    #[error("{0}")]
    Row(String),
}

fn missing_row_message(op: char, field: &str) -> String {
    let hint = if field == "before" {
        " (Debezium sends the old row only when the database logs it: \
         a Postgres table needs REPLICA IDENTITY FULL)"
    } else {
        ""
    };
    format!("the change record (op '{op}') has no '{field}' row{hint}")
}

/// The envelope's fields Weir reads; others (`source`, `ts_ms`, …) are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// The row(s) one change record stands for, as JSON objects with their kinds.
fn rows_of(record: &[u8]) -> std::result::Result<Vec<(RowKind, &str)>, BadChange> {
    let mut envelope: Envelope<'_> =
        serde_json::from_slice(record).map_err(|e| BadChange::NotJson(e.to_string()))?;
    // `{"schema": …, "payload": {…}}`: the envelope is the payload.
    if envelope.op.is_none()
        && let Some(payload) = envelope.payload
    {
        envelope = serde_json::from_str(payload.get())
            .map_err(|e| BadChange::NotJson(format!("'payload': {e}")))?;
    }
    let op = match envelope.op.as_deref() {
        None => return Err(BadChange::MissingOp),
        Some(op @ ("c" | "r" | "u" | "d")) => op.as_bytes()[0] as char,
        Some(other) => return Err(BadChange::UnknownOp(other.to_string())),
    };
    let row = |field, value| row_object(op, field, value);
    Ok(match op {
        'c' | 'r' => vec![(RowKind::Insert, row("after", envelope.after)?)],
        'u' => vec![
            (RowKind::UpdateBefore, row("before", envelope.before)?),
            (RowKind::UpdateAfter, row("after", envelope.after)?),
        ],
        _ => vec![(RowKind::Delete, row("before", envelope.before)?)],
    })
}

/// The text of `before` or `after` of a record of `op`: a JSON object.
fn row_object<'a>(
    op: char,
    field: &'static str,
    value: Option<&'a RawValue>,
) -> std::result::Result<&'a str, BadChange> {
    let text = value
        .map(|v| v.get().trim())
        .filter(|v| *v != "null")
        .ok_or(BadChange::MissingRow { op, field })?;
    if !text.starts_with('{') {
        return Err(BadChange::NotAnObject { op, field });
    }
    Ok(text)
}

/// Decodes Debezium change records into updating batches: the columns of
/// `schema` plus the row-kind column. Records are checked as they are
/// pushed; their rows are decoded together at [`DebeziumDecoder::flush`].
#[derive(Debug)]
pub struct DebeziumDecoder {
    schema: SchemaRef,
    output: SchemaRef,
    /// The rows' JSON objects, one per line.
    rows: Vec<u8>,
    kinds: Vec<RowKind>,
}

impl DebeziumDecoder {
    /// A decoder of rows of `schema` (the columns read, by name).
    pub fn new(schema: SchemaRef) -> Self {
        DebeziumDecoder {
            output: updating_schema(&schema),
            schema,
            rows: Vec::new(),
            kinds: Vec::new(),
        }
    }

    /// The schema of the batches: the columns plus the row-kind column.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Rows buffered since the last flush.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Adds one change record; returns how many rows it stands for (1 or
    /// 2). A bad record adds nothing.
    pub fn push(&mut self, record: &[u8]) -> std::result::Result<usize, BadChange> {
        let rows = rows_of(record)?;
        for (kind, row) in &rows {
            self.rows.extend_from_slice(row.as_bytes());
            self.rows.push(b'\n');
            self.kinds.push(*kind);
        }
        Ok(rows.len())
    }

    /// The buffered rows as one batch (`None` when there are none). On an
    /// error (a row that does not fit the columns) the buffered rows are
    /// dropped: the caller finds the bad record by pushing records alone.
    pub fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, BadChange> {
        if self.kinds.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        let kinds = std::mem::take(&mut self.kinds);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        if !self.schema.fields().is_empty() {
            columns = self.decode_rows(&rows, kinds.len())?;
        }
        let codes: UInt8Array = kinds.iter().map(|k| *k as u8).collect();
        columns.push(Arc::new(codes));
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(kinds.len()));
        RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)
            .map(Some)
            .map_err(|e| BadChange::Row(e.to_string()))
    }

    /// The columns of `count` rows, one JSON object per line of `rows`.
    fn decode_rows(
        &self,
        rows: &[u8],
        count: usize,
    ) -> std::result::Result<Vec<ArrayRef>, BadChange> {
        let bad = |e: &dyn std::fmt::Display| {
            BadChange::Row(weir_engine::sql_type_names_in(&e.to_string()))
        };
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&self.schema))
            .with_batch_size(count)
            .build_decoder()
            .map_err(|e| bad(&e))?;
        let used = decoder.decode(rows).map_err(|e| bad(&e))?;
        match decoder.flush().map_err(|e| bad(&e))? {
            Some(data) if used == rows.len() && data.num_rows() == count => {
                Ok(data.columns().to_vec())
            }
            data => Err(BadChange::Row(format!(
                "internal error: {count} rows decoded as {}",
                data.map_or(0, |d| d.num_rows())
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn writes_flinks_envelopes() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, false),
                Field::new("n", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a", "a", "a"])),
                Arc::new(Int64Array::from(vec![Some(1), Some(1), None])),
            ],
        )
        .unwrap();
        let kinds = [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter];
        let lines = encode(&batch, Some(&kinds), DebeziumOptions::default()).unwrap();
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                r#"{"before":null,"after":{"k":"a","n":1},"op":"c"}"#,
                r#"{"before":{"k":"a","n":1},"after":null,"op":"d"}"#,
                r#"{"before":null,"after":{"k":"a","n":null},"op":"c"}"#,
            ]
        );
    }

    fn table() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// The decoded rows as `(kind, k, v)`.
    fn decoded(records: &[&str]) -> Vec<(RowKind, String, Option<i64>)> {
        let mut decoder = DebeziumDecoder::new(table());
        for r in records {
            decoder.push(r.as_bytes()).unwrap();
        }
        let batch = decoder.flush().unwrap().unwrap();
        assert_eq!(batch.schema(), *decoder.output_schema());
        let (data, kinds) = weir_engine::changelog::split_row_kinds(&batch).unwrap();
        let k = data
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let v = data
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        kinds
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                (
                    kind,
                    k.value(i).to_string(),
                    v.is_valid(i).then(|| v.value(i)),
                )
            })
            .collect()
    }

    fn bad(record: &str) -> BadChange {
        let mut decoder = DebeziumDecoder::new(table());
        let err = decoder.push(record.as_bytes()).unwrap_err();
        assert!(decoder.is_empty(), "a bad record adds no rows");
        err
    }

    #[test]
    fn reads_every_op() {
        use RowKind::*;
        let rows = decoded(&[
            r#"{"before":null,"after":{"k":"a","v":1},"op":"c"}"#,
            r#"{"before":null,"after":{"k":"b","v":2},"op":"r","ts_ms":1}"#,
            r#"{"before":{"k":"a","v":1},"after":{"k":"a","v":5},"op":"u"}"#,
            r#"{"before":{"k":"b","v":2},"after":null,"op":"d"}"#,
            r#"{"after":{"k":"c"},"op":"c","source":{"db":"x"}}"#,
        ]);
        let s = |x: &str| x.to_string();
        assert_eq!(
            rows,
            vec![
                (Insert, s("a"), Some(1)),
                (Insert, s("b"), Some(2)),
                (UpdateBefore, s("a"), Some(1)),
                (UpdateAfter, s("a"), Some(5)),
                (Delete, s("b"), Some(2)),
                (Insert, s("c"), None),
            ]
        );
    }

    #[test]
    fn reads_the_envelope_with_its_schema() {
        let with_schema = r#"{"schema":{"type":"struct","fields":[]},
            "payload":{"before":{"k":"a","v":1},"after":{"k":"a","v":2},"op":"u"}}"#;
        assert_eq!(
            decoded(&[with_schema]),
            vec![
                (RowKind::UpdateBefore, "a".into(), Some(1)),
                (RowKind::UpdateAfter, "a".into(), Some(2)),
            ]
        );
    }

    #[test]
    fn what_weir_writes_it_reads() {
        let batch = RecordBatch::try_new(
            table(),
            vec![
                Arc::new(StringArray::from(vec!["a", "a", "b"])),
                Arc::new(Int64Array::from(vec![Some(1), Some(1), None])),
            ],
        )
        .unwrap();
        let kinds = [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter];
        let lines = encode(&batch, Some(&kinds), DebeziumOptions::default()).unwrap();
        let lines: Vec<&str> = lines
            .iter()
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        // Flink's writer turns -U into a delete and +U into a create.
        assert_eq!(
            decoded(&lines),
            vec![
                (RowKind::Insert, "a".into(), Some(1)),
                (RowKind::Delete, "a".into(), Some(1)),
                (RowKind::Insert, "b".into(), None),
            ]
        );
    }

    #[test]
    fn a_projection_of_no_columns_keeps_the_row_count() {
        let mut decoder = DebeziumDecoder::new(Arc::new(Schema::empty()));
        decoder
            .push(br#"{"before":{"k":"a"},"after":{"k":"b"},"op":"u"}"#)
            .unwrap();
        let batch = decoder.flush().unwrap().unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 1));
        assert!(decoder.flush().unwrap().is_none());
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let cases: Vec<(&str, BadChange, &str)> = vec![
            (
                "not json",
                BadChange::NotJson(String::new()),
                "not valid JSON",
            ),
            (
                r#"{"before":null,"after":{"k":"a"}}"#,
                BadChange::MissingOp,
                "no 'op'",
            ),
            (
                r#"{"after":{"k":"a"},"op":"x"}"#,
                BadChange::UnknownOp("x".into()),
                "unknown op 'x'",
            ),
            (
                r#"{"before":null,"after":{"k":"a"},"op":"u"}"#,
                BadChange::MissingRow {
                    op: 'u',
                    field: "before",
                },
                "(op 'u') has no 'before' row",
            ),
            (
                r#"{"after":null,"op":"d"}"#,
                BadChange::MissingRow {
                    op: 'd',
                    field: "before",
                },
                "REPLICA IDENTITY FULL",
            ),
            (
                r#"{"before":null,"op":"c"}"#,
                BadChange::MissingRow {
                    op: 'c',
                    field: "after",
                },
                "(op 'c') has no 'after' row",
            ),
            (
                r#"{"before":null,"after":null,"op":"r"}"#,
                BadChange::MissingRow {
                    op: 'r',
                    field: "after",
                },
                "(op 'r') has no 'after' row",
            ),
            (
                r#"{"before":{"k":"a"},"after":null,"op":"u"}"#,
                BadChange::MissingRow {
                    op: 'u',
                    field: "after",
                },
                "(op 'u') has no 'after' row",
            ),
            (
                r#"{"after":[1,2],"op":"c"}"#,
                BadChange::NotAnObject {
                    op: 'c',
                    field: "after",
                },
                "'after' of the change record (op 'c') is not a JSON object",
            ),
            (
                r#"{"schema":{},"payload":"c"}"#,
                BadChange::NotJson(String::new()),
                "'payload'",
            ),
        ];
        for (record, kind, message) in cases {
            let err = bad(record);
            let same = match (&err, &kind) {
                (BadChange::NotJson(_), BadChange::NotJson(_)) => true,
                _ => err == kind,
            };
            assert!(same, "{record}: {err:?}, expected {kind:?}");
            assert!(err.to_string().contains(message), "{record}: {err}");
        }
    }

    #[test]
    fn a_row_that_does_not_fit_fails_the_flush_and_leaves_nothing_behind() {
        let mut decoder = DebeziumDecoder::new(table());
        decoder
            .push(br#"{"after":{"k":"a","v":"seven"},"op":"c"}"#)
            .unwrap();
        let err = decoder.flush().unwrap_err();
        assert!(matches!(err, BadChange::Row(_)), "{err:?}");
        assert!(
            err.to_string().contains("seven") || err.to_string().contains("BIGINT"),
            "{err}"
        );
        // A null in the NOT NULL key.
        decoder.push(br#"{"after":{"v":1},"op":"c"}"#).unwrap();
        let err = decoder.flush().unwrap_err();
        assert!(err.to_string().contains('k'), "{err}");
        decoder
            .push(br#"{"after":{"k":"b","v":2},"op":"c"}"#)
            .unwrap();
        assert_eq!(decoder.flush().unwrap().unwrap().num_rows(), 1);
    }
}
