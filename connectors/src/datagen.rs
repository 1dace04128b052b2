//! The `datagen` source: random or sequential rows, with Flink's options.
//!
//! ```sql
//! CREATE TABLE bids (id BIGINT, price BIGINT, channel VARCHAR) WITH (
//!   'connector' = 'datagen', 'number-of-rows' = '1000000',
//!   'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000',
//!   'fields.price.min' = '1', 'fields.price.max' = '100000', 'fields.channel.length' = '8');
//! ```
//!
//! Rows are numbered `0..N` for the whole table; subtask `k` of `p` generates a
//! contiguous block of them, so a sequence field's values depend only on the
//! row number and the union over subtasks is exactly the table. Random values
//! come from a `SmallRng` per column, seeded for every batch from (`seed`,
//! subtask, column, first row of the batch): a projection does not change
//! the values of the columns it keeps, columns outside the projection are
//! never generated, and a source restored from a checkpoint (which records
//! the next row) regenerates the same rows.

mod field;

use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use weir_engine::{
    Connector, ConnectorOptions, Error, Result, Source, SourcePoll, TableDescriptor, TaskInfo,
};

use self::field::{FIELD_OPTIONS, FieldGen};
use crate::util::{make_batch, positive_usize, projected_schema, projection_indices, split_range};

const NAME: &str = "datagen";
const OPTIONS: &[&str] = &[
    "number-of-rows",
    "rows-per-second",
    "scan.batch-size",
    "seed",
    "scan.parallelism",
];
const DEFAULT_BATCH_SIZE: usize = 8192;

/// The `datagen` connector (source only).
#[derive(Debug, Clone, Copy, Default)]
pub struct DatagenConnector;

/// A table's datagen options, parsed and checked.
#[derive(Debug, Clone)]
struct DatagenConfig {
    /// Rows of the whole table: `number-of-rows` and every sequence's length, the smallest.
    rows: Option<u64>,
    rows_per_second: Option<u64>,
    batch_size: usize,
    seed: u64,
    /// One per table column.
    fields: Vec<FieldGen>,
}

impl DatagenConfig {
    fn parse(table: &TableDescriptor) -> Result<Self> {
        let options = &table.options;
        options.check_keys(NAME, OPTIONS, |k| k.starts_with("fields."))?;
        check_field_keys(options, &table.schema)?;
        let fields = table
            .schema
            .fields()
            .iter()
            .map(|f| FieldGen::from_options(options, f))
            .collect::<Result<Vec<_>>>()?;
        let rows = options
            .parse::<u64>("number-of-rows")?
            .into_iter()
            .chain(fields.iter().filter_map(FieldGen::sequence_len))
            .min();
        let rows_per_second = match options.parse::<u64>("rows-per-second")? {
            Some(0) => {
                return Err(Error::invalid_option(
                    "rows-per-second",
                    "option 'rows-per-second' must be greater than 0",
                ));
            }
            other => other,
        };
        Ok(DatagenConfig {
            rows,
            rows_per_second,
            batch_size: positive_usize(options, "scan.batch-size", DEFAULT_BATCH_SIZE)?,
            seed: options.parse::<u64>("seed")?.unwrap_or(0),
            fields,
        })
    }
}

/// Checks every `fields.<col>.<option>` key names a column and a known option.
fn check_field_keys(options: &ConnectorOptions, schema: &SchemaRef) -> Result<()> {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for key in options.keys().filter(|k| k.starts_with("fields.")) {
        let rest = &key["fields.".len()..];
        let Some((column, option)) = rest.rsplit_once('.') else {
            return Err(Error::invalid_option(
                key,
                format!("option '{key}' must look like 'fields.<column>.<option>'"),
            ));
        };
        if !columns.contains(&column) {
            let hint = weir_engine::suggest::closest(column, columns.iter().copied())
                .map(|c| format!(" (did you mean '{c}'?)"))
                .unwrap_or_default();
            return Err(Error::invalid_option(
                key,
                format!(
                    "option '{key}' names column '{column}', which the table does not have{hint}"
                ),
            ));
        }
        if !FIELD_OPTIONS.contains(&option) {
            let hint = weir_engine::suggest::closest(option, FIELD_OPTIONS.iter().copied())
                .map(|c| format!(" (did you mean 'fields.{column}.{c}'?)"))
                .unwrap_or_default();
            return Err(Error::invalid_option(
                key,
                format!(
                    "unknown option '{key}' for connector '{NAME}'{hint}; field options: {}",
                    FIELD_OPTIONS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Connector for DatagenConnector {
    fn name(&self) -> &str {
        NAME
    }

    fn validate_source(&self, table: &TableDescriptor) -> Result<()> {
        DatagenConfig::parse(table).map(|_| ())
    }

    fn is_bounded(&self, table: &TableDescriptor) -> bool {
        DatagenConfig::parse(table).is_ok_and(|c| c.rows.is_some())
    }

    fn create_source(
        &self,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Box<dyn Source>> {
        let config = DatagenConfig::parse(table)?;
        Ok(Box::new(DatagenSource::new(
            config, table, projection, task,
        )?))
    }
}

/// One projected column: its generator, type and RNG seed.
struct Column {
    generator: FieldGen,
    data_type: arrow::datatypes::DataType,
    seed: u64,
}

/// One subtask of a datagen source.
struct DatagenSource {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// The next global row number.
    next_row: u64,
    /// One past this subtask's last row (`None`: unbounded).
    end_row: Option<u64>,
    batch_size: usize,
    limiter: Option<RateLimiter>,
}

impl DatagenSource {
    fn new(
        config: DatagenConfig,
        table: &TableDescriptor,
        projection: Option<&[usize]>,
        task: &TaskInfo,
    ) -> Result<Self> {
        let schema = projected_schema(&table.schema, projection)?;
        let parallelism = task.parallelism.max(1);
        let columns = projection_indices(&table.schema, projection)
            .into_iter()
            .map(|index| Column {
                generator: config.fields[index].clone(),
                data_type: table.schema.field(index).data_type().clone(),
                seed: mix(mix(config.seed, task.subtask as u64), index as u64),
            })
            .collect();
        let (next_row, end_row) = match config.rows {
            Some(rows) => {
                let range = split_range(rows, task.subtask, parallelism);
                (range.start, Some(range.end))
            }
            None => (0, None),
        };
        let limiter = config
            .rows_per_second
            .map(|total| RateLimiter::new(total as f64 / parallelism as f64));
        Ok(DatagenSource {
            schema,
            columns,
            next_row,
            end_row,
            batch_size: config.batch_size,
            limiter,
        })
    }
}

/// Combines a seed with a value into a new seed (splitmix64), so that nearby
/// inputs give unrelated seeds.
fn mix(seed: u64, value: u64) -> u64 {
    let mut z = seed
        ^ value
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[async_trait]
impl Source for DatagenSource {
    async fn poll_batch(&mut self) -> Result<SourcePoll> {
        let remaining = self
            .end_row
            .map_or(u64::MAX, |end| end.saturating_sub(self.next_row));
        if remaining == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut len = self
            .batch_size
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if let Some(limiter) = &mut self.limiter {
            match limiter.acquire(len) {
                Ok(granted) => len = granted,
                Err(wait) => return Ok(SourcePoll::Idle(wait)),
            }
        }
        let first_row = self.next_row;
        let arrays = self
            .columns
            .iter()
            .map(|c| {
                let mut rng = SmallRng::seed_from_u64(mix(c.seed, first_row));
                c.generator.generate(&c.data_type, &mut rng, first_row, len)
            })
            .collect::<Result<Vec<_>>>()?;
        self.next_row += len as u64;
        Ok(SourcePoll::Batch(make_batch(&self.schema, arrays, len)?))
    }

    fn snapshot_position(&self) -> Result<Option<Vec<u8>>> {
        Ok(Some(self.next_row.to_le_bytes().to_vec()))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<()> {
        let row = crate::util::decode_u64_position(NAME, position)?;
        if self.end_row.is_some_and(|end| row > end) {
            return Err(Error::Connector {
                connector: NAME.into(),
                message: format!("checkpointed row {row} lies beyond this subtask's rows"),
            });
        }
        self.next_row = row;
        Ok(())
    }
}

/// Lets rows through at a steady rate, in chunks of about 50 ms worth.
#[derive(Debug)]
struct RateLimiter {
    rows_per_second: f64,
    start: Option<Instant>,
    emitted: u64,
}

impl RateLimiter {
    fn new(rows_per_second: f64) -> Self {
        RateLimiter {
            rows_per_second,
            start: None,
            emitted: 0,
        }
    }

    /// How many of `wanted` rows may go now, or how long to wait.
    fn acquire(&mut self, wanted: usize) -> std::result::Result<usize, Duration> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let rate = self.rows_per_second;
        // The first row may go at once; later ones when their time has come.
        let allowed = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        let available = allowed.saturating_sub(self.emitted);
        let chunk = wanted.min(((rate / 20.0) as usize).max(1)) as u64;
        if available >= chunk {
            self.emitted += chunk;
            Ok(chunk as usize)
        } else {
            let wait = (chunk - available) as f64 / rate;
            Err(Duration::from_secs_f64(wait.clamp(0.001, 0.1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};

    use super::*;
    use crate::util::test_support::{drain, table, task};

    fn bench_table(n: &str) -> TableDescriptor {
        table(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("auction", DataType::Int64, true),
                Field::new("bidder", DataType::Int64, true),
                Field::new("price", DataType::Int64, true),
                Field::new("channel", DataType::Utf8, true),
            ],
            &[
                ("connector", "datagen"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "1"),
                ("fields.id.end", n),
                ("fields.auction.min", "1000"),
                ("fields.auction.max", "1999"),
                ("fields.bidder.min", "1000"),
                ("fields.bidder.max", "10999"),
                ("fields.price.min", "1"),
                ("fields.price.max", "100000"),
                ("fields.channel.length", "8"),
                ("scan.batch-size", "100"),
            ],
        )
    }

    async fn read(
        t: &TableDescriptor,
        projection: Option<&[usize]>,
        parallelism: usize,
    ) -> Vec<RecordBatch> {
        crate::util::test_support::read_all(&DatagenConnector, t, projection, parallelism).await
    }

    fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(column)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn sequence_union_is_exact_at_any_parallelism() {
        let t = bench_table("1000");
        assert!(DatagenConnector.is_bounded(&t));
        for p in [1, 3] {
            let mut ids = ints(&read(&t, None, p).await, 0);
            ids.sort_unstable();
            assert_eq!(ids, (1..=1000).collect::<Vec<_>>(), "parallelism {p}");
        }
    }

    #[tokio::test]
    async fn random_values_stay_in_bounds() {
        let t = bench_table("5000");
        let batches = read(&t, None, 2).await;
        assert_eq!(batches[0].schema(), t.schema);
        for (column, lo, hi) in [(1, 1000, 1999), (2, 1000, 10999), (3, 1, 100000)] {
            let values = ints(&batches, column);
            assert!(
                values.iter().all(|v| (lo..=hi).contains(v)),
                "column {column}"
            );
            // Uniform over the range: both ends are approached.
            let (min, max) = (values.iter().min().unwrap(), values.iter().max().unwrap());
            assert!(
                *min < lo + (hi - lo) / 20 && *max > hi - (hi - lo) / 20,
                "column {column}"
            );
        }
        for b in &batches {
            let channel = b.column(4).as_string::<i32>();
            assert!(
                channel
                    .iter()
                    .flatten()
                    .all(|s| s.len() == 8 && s.bytes().all(|c| c.is_ascii_alphanumeric()))
            );
        }
    }

    #[tokio::test]
    async fn projection_skips_columns_and_keeps_values() {
        let t = bench_table("300");
        let full = read(&t, None, 1).await;
        let projected = read(&t, Some(&[3, 0]), 1).await;
        assert_eq!(
            projected[0].schema().as_ref(),
            &t.schema.project(&[3, 0]).unwrap()
        );
        assert_eq!(ints(&projected, 0), ints(&full, 3));
        assert_eq!(ints(&projected, 1), ints(&full, 0));
        let counted = read(&t, Some(&[]), 2).await;
        assert_eq!(
            counted.iter().map(RecordBatch::num_rows).sum::<usize>(),
            300
        );
        // Same seed, same rows.
        assert_eq!(ints(&read(&t, None, 1).await, 3), ints(&full, 3));
    }

    #[tokio::test]
    async fn number_of_rows_and_types() {
        let t = table(
            vec![
                Field::new("i8", DataType::Int8, true),
                Field::new("u32", DataType::UInt32, true),
                Field::new("f", DataType::Float64, true),
                Field::new("d", DataType::Decimal128(10, 2), true),
                Field::new("b", DataType::Boolean, true),
                Field::new("s", DataType::Utf8, true),
                Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
                Field::new("day", DataType::Date32, true),
                Field::new("seq", DataType::Utf8, false),
            ],
            &[
                ("number-of-rows", "50"),
                ("fields.f.min", "-1.5"),
                ("fields.f.max", "2.5"),
                ("fields.d.min", "1.25"),
                ("fields.d.max", "3.00"),
                ("fields.s.null-rate", "0.5"),
                ("fields.ts.max-past", "60000"),
                ("fields.seq.kind", "sequence"),
                ("fields.seq.start", "10"),
                ("fields.seq.end", "1000"),
            ],
        );
        let batches = read(&t, None, 3).await;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 50);
        for b in &batches {
            assert_eq!(b.schema(), t.schema);
            let f = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
            assert!(f.values().iter().all(|v| (-1.5..=2.5).contains(v)));
            let d = b
                .column(3)
                .as_primitive::<arrow::datatypes::Decimal128Type>();
            assert!(d.values().iter().all(|v| (125..=300).contains(v)));
        }
        let nulls: usize = batches.iter().map(|b| b.column(5).null_count()).sum();
        assert!((5..45).contains(&nulls), "{nulls}");
        let seq: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                b.column(8)
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(seq.first().map(String::as_str), Some("10"));
        assert_eq!(seq.last().map(String::as_str), Some("59"));
    }

    #[tokio::test]
    async fn restores_from_a_position() {
        let t = bench_table("1000");
        let mut source = DatagenConnector
            .create_source(&t, None, &task(1, 2))
            .unwrap();
        let _ = source.poll_batch().await.unwrap();
        let position = source.snapshot_position().unwrap().unwrap();
        let rest = drain(source).await.unwrap();
        let mut restored = DatagenConnector
            .create_source(&t, None, &task(1, 2))
            .unwrap();
        restored.restore_position(&position).unwrap();
        let again = drain(restored).await.unwrap();
        assert_eq!(
            crate::util::test_support::rows(&again),
            crate::util::test_support::rows(&rest)
        );
        assert_eq!(ints(&again, 0).first(), Some(&601));
    }

    #[tokio::test]
    async fn rate_limit_returns_idle() {
        let mut t = bench_table("100000");
        t.options = ConnectorOptions::new(
            t.options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("rows-per-second".to_string(), "20".to_string())]),
        );
        let mut source = DatagenConnector
            .create_source(&t, None, &task(0, 2))
            .unwrap();
        let first = source.poll_batch().await.unwrap();
        assert!(
            matches!(first, SourcePoll::Batch(ref b) if b.num_rows() == 1),
            "{first:?}"
        );
        assert!(matches!(
            source.poll_batch().await.unwrap(),
            SourcePoll::Idle(_)
        ));
    }

    #[test]
    fn bad_options_name_the_key() {
        let err = |options: &[(&str, &str)]| {
            let t = table(
                vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("s", DataType::Utf8, true),
                ],
                options,
            );
            DatagenConnector
                .validate_source(&t)
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("number-of-row", "5")]);
        assert!(e.contains("did you mean 'number-of-rows'"), "{e}");
        let e = err(&[("fields.id.kinds", "sequence")]);
        assert!(e.contains("did you mean 'fields.id.kind'"), "{e}");
        let e = err(&[("fields.ids.kind", "sequence")]);
        assert!(e.contains("did you mean 'id'"), "{e}");
        let e = err(&[("fields.id.kind", "sequence"), ("fields.id.start", "1")]);
        assert!(e.contains("fields.id.end"), "{e}");
        let e = err(&[("fields.id.min", "10"), ("fields.id.max", "1")]);
        assert!(e.contains("fields.id.min"), "{e}");
        let e = err(&[("fields.s.min", "1")]);
        assert!(e.contains("fields.s.min"), "{e}");
        let e = err(&[("fields.id.null-rate", "0.1")]);
        assert!(e.contains("NOT NULL"), "{e}");
        let e = err(&[("rows-per-second", "fast")]);
        assert!(e.contains("rows-per-second"), "{e}");
        let t = table(
            vec![Field::new(
                "l",
                DataType::new_list(DataType::Int32, true),
                true,
            )],
            &[],
        );
        let e = DatagenConnector
            .validate_source(&t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot generate column 'l'"), "{e}");
        assert!(
            !DatagenConnector
                .is_bounded(&table(vec![Field::new("id", DataType::Int64, false)], &[]))
        );
    }
}
