//! Encoding a sink's changes as upsert records: the primary key in the key
//! format, the row in the value format, or a tombstone.
//!
//! ```text
//!   +I row, +U row            -> key, value = row
//!   -D row                    -> key, null value (tombstone)
//!   -U row, then +U same key  -> nothing for the -U (the +U replaces the row)
//!   -U row otherwise          -> key, null value
//! ```

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use weir_engine::changelog::take_rows;
use weir_engine::{Error, Result, RowKind, TableDescriptor};

use super::UpsertOptions;
use crate::kafka::encode::{ChangeEncoder, OutRecord, RecordEncoder};

/// Encodes upserts and tombstones; see the module docs.
#[derive(Debug)]
pub struct UpsertEncoder {
    /// Input columns of the key.
    key_columns: Vec<usize>,
    /// The key's fields as the key format names them.
    key_schema: SchemaRef,
    /// Encodes a batch of key columns (its "values" are the keys).
    keys: RecordEncoder,
    /// Input columns of the value.
    value_columns: Vec<usize>,
    values: RecordEncoder,
}

impl UpsertEncoder {
    /// An encoder for rows of `table`.
    pub fn new(options: &UpsertOptions, table: &TableDescriptor) -> Result<Self> {
        let key_columns = table.primary_key_indices()?;
        let key_schema = options.key_schema(table)?;
        let value_columns = options.value_columns(table)?;
        let value_schema = table.schema.project(&value_columns)?;
        let keys = RecordEncoder::new(&key_schema, options.key_format.clone(), None)
            .map_err(|e| side_error(e, "key"))?;
        let values = RecordEncoder::new(&value_schema, options.value_format.clone(), None)
            .map_err(|e| side_error(e, "value"))?;
        Ok(UpsertEncoder {
            key_columns,
            key_schema,
            keys,
            value_columns,
            values,
        })
    }

    /// What to write for each row: `Some(true)` the row, `Some(false)` a
    /// tombstone, `None` nothing.
    fn actions(&self, batch: &RecordBatch, kinds: Option<&[RowKind]>) -> Result<Vec<Option<bool>>> {
        let Some(kinds) = kinds else {
            return Ok(vec![Some(true); batch.num_rows()]);
        };
        let mut keys: Option<arrow::row::Rows> = None;
        let mut actions = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            actions.push(match kind {
                RowKind::Insert | RowKind::UpdateAfter => Some(true),
                RowKind::Delete => Some(false),
                RowKind::UpdateBefore => {
                    if kinds.get(i + 1) != Some(&RowKind::UpdateAfter) {
                        Some(false)
                    } else {
                        if keys.is_none() {
                            keys = Some(self.encoded_keys(batch)?);
                        }
                        let same = keys.as_ref().is_some_and(|k| k.row(i) == k.row(i + 1));
                        if same { None } else { Some(false) }
                    }
                }
            });
        }
        Ok(actions)
    }

    fn encoded_keys(&self, batch: &RecordBatch) -> Result<arrow::row::Rows> {
        let converter = RowConverter::new(
            self.key_columns
                .iter()
                .map(|&k| SortField::new(batch.column(k).data_type().clone()))
                .collect(),
        )?;
        let columns: Vec<_> = self
            .key_columns
            .iter()
            .map(|&k| Arc::clone(batch.column(k)))
            .collect();
        Ok(converter.convert_columns(&columns)?)
    }
}

/// Names the side (key or value) a format complaint is about.
fn side_error(e: Error, side: &str) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("'{side}.format': {m}")),
        other => other,
    }
}

/// The records' bytes: the encoder's values.
fn encoded(encoder: &RecordEncoder, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>> {
    Ok(encoder
        .encode(batch)?
        .into_iter()
        .map(|r| r.value)
        .collect())
}

impl ChangeEncoder for UpsertEncoder {
    fn encode_changes(
        &self,
        batch: &RecordBatch,
        kinds: Option<&[RowKind]>,
    ) -> Result<Vec<OutRecord>> {
        let actions = self.actions(batch, kinds)?;
        let written: Vec<u32> = (0..actions.len())
            .filter(|&i| actions[i].is_some())
            .map(|i| i as u32)
            .collect();
        if written.is_empty() {
            return Ok(Vec::new());
        }
        let upserts: Vec<u32> = written
            .iter()
            .copied()
            .filter(|&i| actions[i as usize] == Some(true))
            .collect();
        let rows = take_rows(batch, &UInt32Array::from(written.clone()))?;
        let key_batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                self.key_schema
                    .fields()
                    .iter()
                    .zip(&self.key_columns)
                    .map(|(f, &c)| {
                        f.as_ref()
                            .clone()
                            .with_nullable(rows.schema().field(c).is_nullable())
                    })
                    .collect::<Vec<_>>(),
            )),
            self.key_columns
                .iter()
                .map(|&c| Arc::clone(rows.column(c)))
                .collect(),
        )?;
        let keys = encoded(&self.keys, &key_batch)?;
        let value_rows =
            take_rows(batch, &UInt32Array::from(upserts))?.project(&self.value_columns)?;
        let mut values = encoded(&self.values, &value_rows)?.into_iter();
        let mut out = Vec::with_capacity(written.len());
        for (key, &i) in keys.into_iter().zip(&written) {
            let value = match actions[i as usize] {
                Some(true) => values
                    .next()
                    .ok_or_else(|| Error::internal("fewer encoded values than upserts"))?,
                _ => None,
            };
            out.push(OutRecord {
                key,
                value,
                timestamp: None,
            });
        }
        Ok(out)
    }

    fn takes_updates(&self) -> bool {
        true
    }
}
