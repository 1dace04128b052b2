//! Helpers shared by the connectors: projections, subtask splits, row kinds.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use weir_engine::{Error, Result};

/// The schema of `projection` of `schema` (all of it when `None`).
pub fn projected_schema(schema: &SchemaRef, projection: Option<&[usize]>) -> Result<SchemaRef> {
    match projection {
        None => Ok(Arc::clone(schema)),
        Some(indices) => schema.project(indices).map(Arc::new).map_err(|e| {
            Error::internal(format!(
                "projection {indices:?} does not fit the table schema: {e}"
            ))
        }),
    }
}

/// The table column indices a projection reads, in output order.
pub fn projection_indices(schema: &Schema, projection: Option<&[usize]>) -> Vec<usize> {
    match projection {
        None => (0..schema.fields().len()).collect(),
        Some(indices) => indices.to_vec(),
    }
}

/// A batch of `columns` with `schema`, also for zero columns (`count(*)`).
pub fn make_batch(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// The rows `0..total` that `subtask` of `parallelism` owns: a contiguous block,
/// the blocks of all subtasks covering `0..total` exactly once.
pub fn split_range(total: u64, subtask: usize, parallelism: usize) -> Range<u64> {
    let p = parallelism.max(1) as u128;
    let k = subtask as u128;
    let total = total as u128;
    // u128 so that `total * k` cannot overflow for any u64 total.
    let start = total * k / p;
    let end = total * (k + 1) / p;
    start as u64..end as u64
}

pub use weir_engine::changelog::split_row_kinds;

/// The batch's columns under `schema` (the sink table's names and types),
/// cast where the types differ. Errors when the column count differs or a
/// NOT NULL column holds nulls.
pub fn conform_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::internal(format!(
            "sink received {} columns, the table has {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type()).map_err(Error::from)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    make_batch(schema, columns, batch.num_rows()).map_err(|e| match e {
        Error::Arrow(e) => Error::BadInput(format!(
            "the rows do not fit the sink table: {}",
            weir_engine::sql_type_names_in(&e.to_string())
        )),
        other => other,
    })
}

/// Parses a size such as `128MB`, `64 kb`, `1gb` or `1048576` (bytes), as Flink's `MemorySize`.
pub fn parse_memory_size(key: &str, value: &str) -> Result<u64> {
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        "t" | "tb" | "tebibytes" => 1 << 40,
        other => {
            return Err(Error::invalid_option(
                key,
                format!(
                    "option '{key}' = '{value}' has an unknown unit '{other}' (use b, kb, mb, gb or tb)"
                ),
            ));
        }
    };
    let number: u64 = digits.parse().map_err(|_| {
        Error::invalid_option(
            key,
            format!("option '{key}' = '{value}' is not a size such as '128mb'"),
        )
    })?;
    number
        .checked_mul(multiplier)
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::invalid_option(key, format!("option '{key}' = '{value}' is out of range"))
        })
}

pub use weir_engine::time::parse_duration_ms;

/// A positive integer option, with a default.
pub fn positive_usize(
    options: &weir_engine::ConnectorOptions,
    key: &str,
    default: usize,
) -> Result<usize> {
    match options.parse::<usize>(key)? {
        Some(0) => Err(Error::invalid_option(
            key,
            format!("option '{key}' must be greater than 0"),
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_covers_everything_once() {
        for total in [0u64, 1, 7, 10, 1000] {
            for p in 1..6 {
                let ranges: Vec<_> = (0..p).map(|k| split_range(total, k, p)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[p - 1].end, total);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
            }
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("k", "128MB").unwrap(), 128 << 20);
        assert_eq!(parse_memory_size("k", "64 kb").unwrap(), 64 << 10);
        assert_eq!(parse_memory_size("k", "1000").unwrap(), 1000);
        assert!(
            parse_memory_size("k", "12 parsecs")
                .unwrap_err()
                .to_string()
                .contains("'k'")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("k", "5000").unwrap(), 5000);
        assert_eq!(parse_duration_ms("k", "10 s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("k", "2min").unwrap(), 120_000);
        assert!(parse_duration_ms("k", "-1").is_err());
    }
}

/// Decodes a checkpointed position stored as 8 little-endian bytes.
pub fn decode_u64_position(connector: &str, position: &[u8]) -> weir_engine::Result<u64> {
    <[u8; 8]>::try_from(position)
        .map(u64::from_le_bytes)
        .map_err(|_| weir_engine::Error::Connector {
            connector: connector.into(),
            message: format!(
                "a checkpointed position must be 8 bytes, got {}",
                position.len()
            ),
        })
}

/// Helpers for the connectors' unit tests.
#[cfg(test)]
pub mod test_support {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    use weir_engine::{ConnectorOptions, Source, SourcePoll, TableDescriptor, TaskInfo};

    /// A table with `fields` and `options`.
    pub fn table(fields: Vec<Field>, options: &[(&str, &str)]) -> TableDescriptor {
        TableDescriptor::new(
            "t",
            Arc::new(Schema::new(fields)),
            ConnectorOptions::new(options.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
        )
    }

    /// Subtask `subtask` of `parallelism`.
    pub fn task(subtask: usize, parallelism: usize) -> TaskInfo {
        TaskInfo {
            subtask,
            parallelism,
            ..TaskInfo::single("test")
        }
    }

    /// Polls a bounded source to the end (an `Idle` is waited out briefly).
    pub async fn drain(mut source: Box<dyn Source>) -> weir_engine::Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        loop {
            match source.poll_batch().await? {
                SourcePoll::Batch(b) => batches.push(b),
                SourcePoll::Idle(d) => tokio::time::sleep(d).await,
                SourcePoll::Finished => return Ok(batches),
            }
        }
    }

    /// Reads a whole bounded table through every subtask of a source at `parallelism`.
    pub async fn read_all(
        connector: &dyn weir_engine::Connector,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        parallelism: usize,
    ) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        for k in 0..parallelism {
            let source = connector
                .create_source(table, projection, &task(k, parallelism))
                .expect("source");
            out.extend(drain(source).await.expect("readable source"));
        }
        out
    }

    /// The rows of `batches` as strings.
    pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(weir_engine::testing::format_rows)
            .collect()
    }
}
