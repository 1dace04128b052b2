//! The `debezium-json` format: changes as Debezium's JSON envelope
//! `{"before": …, "after": …, "op": …}`, as Flink writes and reads it.
//!
//! Writing follows Flink's `debezium-json` serializer: an insert or the new
//! row of an update (`+I`, `+U`) becomes `{"before":null,"after":{…},"op":"c"}`,
//! and a deleted row or the old row of an update (`-D`, `-U`) becomes
//! `{"before":{…},"after":null,"op":"d"}`. Applying the records in order
//! rebuilds the table.

use arrow::record_batch::RecordBatch;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
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
}
