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
//! row number and the union over subtasks is exactly the table. Each column
//! has its own RNG seeded from (`seed`, subtask, column), so a projection
//! does not change the values of the columns it keeps, and columns outside
//! the projection are never generated.

mod field;

use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use weir_engine::{Connector, ConnectorOptions, Error, Result, Source, SourcePoll, TableDescriptor, TaskInfo};

use self::field::{FIELD_OPTIONS, FieldGen};
use crate::util::{make_batch, positive_usize, projected_schema, projection_indices, split_range};

const NAME: &str = "datagen";
const OPTIONS: &[&str] = &["number-of-rows", "rows-per-second", "scan.batch-size", "seed", "scan.parallelism"];
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
            Some(0) => return Err(Error::Config("option 'rows-per-second' must be greater than 0".into())),
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
            return Err(Error::Config(format!(
                "option '{key}' must look like 'fields.<column>.<option>'"
            )));
        };
        if !columns.contains(&column) {
            let hint = weir_engine::suggest::closest(column, columns.iter().copied())
                .map(|c| format!(" (did you mean '{c}'?)"))
                .unwrap_or_default();
            return Err(Error::Config(format!(
                "option '{key}' names column '{column}', which the table does not have{hint}"
            )));
        }
        if !FIELD_OPTIONS.contains(&option) {
            let hint = weir_engine::suggest::closest(option, FIELD_OPTIONS.iter().copied())
                .map(|c| format!(" (did you mean 'fields.{column}.{c}'?)"))
                .unwrap_or_default();
            return Err(Error::Config(format!(
                "unknown option '{key}' for connector '{NAME}'{hint}; field options: {}",
                FIELD_OPTIONS.join(", ")
            )));
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
        Ok(Box::new(DatagenSource::new(config, table, projection, task)?))
    }
}

/// One projected column: its generator, type and RNG.
struct Column {
    generator: FieldGen,
    data_type: arrow::datatypes::DataType,
    rng: SmallRng,
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
    fn new(config: DatagenConfig, table: &TableDescriptor, projection: Option<&[usize]>, task: &TaskInfo) -> Result<Self> {
        let schema = projected_schema(&table.schema, projection)?;
        let parallelism = task.parallelism.max(1);
        let columns = projection_indices(&table.schema, projection)
            .into_iter()
            .map(|index| Column {
                generator: config.fields[index].clone(),
                data_type: table.schema.field(index).data_type().clone(),
                rng: SmallRng::seed_from_u64(column_seed(config.seed, task.subtask, index)),
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

/// A distinct, reproducible seed per (seed, subtask, column).
fn column_seed(seed: u64, subtask: usize, column: usize) -> u64 {
    let mut z = seed
        ^ (subtask as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (column as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    // splitmix64 finaliser, so that nearby inputs give unrelated seeds.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[async_trait]
impl Source for DatagenSource {
    async fn poll_batch(&mut self) -> Result<SourcePoll> {
        let remaining = self.end_row.map_or(u64::MAX, |end| end.saturating_sub(self.next_row));
        if remaining == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut len = self.batch_size.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if let Some(limiter) = &mut self.limiter {
            match limiter.acquire(len) {
                Ok(granted) => len = granted,
                Err(wait) => return Ok(SourcePoll::Idle(wait)),
            }
        }
        let first_row = self.next_row;
        let arrays = self
            .columns
            .iter_mut()
            .map(|c| c.generator.generate(&c.data_type, &mut c.rng, first_row, len))
            .collect::<Result<Vec<_>>>()?;
        self.next_row += len as u64;
        Ok(SourcePoll::Batch(make_batch(&self.schema, arrays, len)?))
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

