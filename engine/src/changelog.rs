//! Changelog streams: what a stream's rows mean, and the row-kind column
//! that updating streams carry.
//!
//! Every stream is either append-only (each row is a new fact) or updating
//! (each row is a change: `+I`, `-U`, `+U`, `-D`, as Flink's `RowKind`). An
//! updating batch carries its kinds in a trailing `UInt8` column named
//! [`ROW_KIND_COLUMN`]; an append-only batch has no such column. So the
//! changelog mode of a stream is a property of its schema
//! ([`ChangelogMode::of`]), and every operator and connector can tell the
//! two apart without being told.
//!
//! ```text
//!   append-only:  | a | b |            updating: | a | b | _weir_row_kind |
//!                 | 1 | x |                      | 1 | x |  +I            |
//!                                                | 1 | x |  -U            |
//!                                                | 1 | y |  +U            |
//! ```
//!
//! ## Upsert streams
//!
//! A source of upserts (a compacted topic read by `upsert-kafka`, whose
//! connector reports an [`crate::Connector::upsert_key`]) does not know a
//! key's previous row, so it cannot emit a retract changelog itself. It
//! emits an *upsert stream* with the same trailing column
//! ([`upsert_schema`]): `+U` is the latest row of its key (an insert or an
//! update), `-D` the deletion of its key and carries only the key columns
//! (the others are null, which is why they are all nullable there). Only a
//! `ChangelogNormalize` operator, keyed by the key, reads an upsert stream:
//! it remembers each key's last row and emits the retract changelog
//! (`+I`, `-U old`/`+U new`, `-D old`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt8Array, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt8Type};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};
pub use crate::message::{ROW_KIND_COLUMN, RowKind};

/// What the rows of a stream mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangelogMode {
    /// Only inserts; batches carry no row-kind column.
    AppendOnly,
    /// Inserts, updates and deletes, an update as a `-U` of the old row
    /// followed by a `+U` of the new one.
    Retract,
    /// An upsert source's rows before they are normalized: `+U` is the
    /// latest row of its key, `-D` deletes its key (see "Upsert streams").
    Upsert,
}

/// The schema metadata key that marks an upsert stream ([`upsert_schema`]).
pub const CHANGELOG_METADATA_KEY: &str = "weir.changelog";

impl ChangelogMode {
    /// The mode of a stream with `schema`: updating when it has the
    /// row-kind column, upserts when [`upsert_schema`] marked it so.
    pub fn of(schema: &Schema) -> Self {
        if schema.index_of(ROW_KIND_COLUMN).is_err() {
            ChangelogMode::AppendOnly
        } else if schema
            .metadata()
            .get(CHANGELOG_METADATA_KEY)
            .is_some_and(|m| m == "upsert")
        {
            ChangelogMode::Upsert
        } else {
            ChangelogMode::Retract
        }
    }

    /// True for a stream whose rows may change.
    pub fn is_updating(self) -> bool {
        self != ChangelogMode::AppendOnly
    }
}

impl fmt::Display for ChangelogMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangelogMode::AppendOnly => "append-only",
            ChangelogMode::Retract => "retract",
            ChangelogMode::Upsert => "upsert",
        })
    }
}

/// The field of the row-kind column.
pub fn row_kind_field() -> Field {
    Field::new(ROW_KIND_COLUMN, DataType::UInt8, false)
}

/// `schema` with the row-kind column appended (unchanged if it has one).
pub fn updating_schema(schema: &SchemaRef) -> SchemaRef {
    if ChangelogMode::of(schema).is_updating() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(row_kind_field());
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema of an upsert stream over `schema` (see the module docs):
/// every column but the `key` ones nullable, then the row-kind column.
pub fn upsert_schema(schema: &SchemaRef, key: &[usize]) -> SchemaRef {
    let fields: Vec<Field> = data_schema(schema)
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = f.as_ref().clone();
            if key.contains(&i) {
                field
            } else {
                field.with_nullable(true)
            }
        })
        .collect();
    let mut metadata = schema.metadata().clone();
    metadata.insert(CHANGELOG_METADATA_KEY.into(), "upsert".into());
    updating_schema(&Arc::new(Schema::new_with_metadata(fields, metadata)))
}

/// `schema` without the row-kind column.
pub fn data_schema(schema: &SchemaRef) -> SchemaRef {
    if !ChangelogMode::of(schema).is_updating() {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != ROW_KIND_COLUMN)
        .map(|f| f.as_ref().clone())
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The row-kind codes of an updating batch; `None` for an append-only one.
pub fn row_kind_codes(batch: &RecordBatch) -> Result<Option<&UInt8Array>> {
    let Ok(index) = batch.schema().index_of(ROW_KIND_COLUMN) else {
        return Ok(None);
    };
    let column = batch.column(index);
    column
        .as_primitive_opt::<UInt8Type>()
        .map(Some)
        .ok_or_else(|| {
            Error::internal(format!(
                "column '{ROW_KIND_COLUMN}' is {}, not UInt8",
                column.data_type()
            ))
        })
}

/// True when the code stands for a row that leaves the result (`-U`, `-D`).
pub fn is_retraction(code: u8) -> bool {
    code == RowKind::UpdateBefore as u8 || code == RowKind::Delete as u8
}

/// Splits the row-kind column off an updating batch: the data columns,
/// and the kinds (`None` for an append-only batch).
pub fn split_row_kinds(batch: &RecordBatch) -> Result<(RecordBatch, Option<Vec<RowKind>>)> {
    let Some(codes) = row_kind_codes(batch)? else {
        return Ok((batch.clone(), None));
    };
    let index = batch.schema().index_of(ROW_KIND_COLUMN)?;
    let kinds = codes
        .iter()
        .map(|code| {
            code.and_then(RowKind::from_code)
                .ok_or_else(|| Error::internal(format!("invalid row kind code {code:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut data = batch.clone();
    data.remove_column(index);
    Ok((data, Some(kinds)))
}

/// Appends `kinds` to a batch of `data` columns under `schema` (which has
/// the row-kind column last).
pub fn with_row_kinds(
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
    kinds: Vec<RowKind>,
) -> Result<RecordBatch> {
    let codes: UInt8Array = kinds.into_iter().map(|k| k as u8).collect();
    columns.push(Arc::new(codes));
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// An updating batch as people read it, as Flink's changelog result mode
/// shows it: a leading `op` column (`+I`, `-U`, …) instead of the codes.
/// An append-only batch is returned as it is.
pub fn for_display(batch: &RecordBatch) -> Result<RecordBatch> {
    let (data, Some(kinds)) = split_row_kinds(batch)? else {
        return Ok(batch.clone());
    };
    let ops: StringArray = kinds.iter().map(|k| Some(k.short_string())).collect();
    let mut fields = vec![Field::new("op", DataType::Utf8, false)];
    fields.extend(data.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ops)];
    columns.extend(data.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The schema [`for_display`] gives batches of `schema`.
pub fn display_schema(schema: &SchemaRef) -> SchemaRef {
    if !ChangelogMode::of(schema).is_updating() {
        return Arc::clone(schema);
    }
    let mut fields = vec![Field::new("op", DataType::Utf8, false)];
    fields.extend(
        schema
            .fields()
            .iter()
            .filter(|f| f.name() != ROW_KIND_COLUMN)
            .map(|f| f.as_ref().clone()),
    );
    Arc::new(Schema::new(fields))
}

/// Applies a changelog: the rows that remain after every `+I`/`+U` added
/// its row and every `-U`/`-D` removed one equal row, in the order they
/// were first inserted. Append-only batches only add. A retraction of a row
/// that is not there is an error (the changelog is inconsistent).
#[derive(Debug, Default)]
pub struct Materialized {
    converter: Option<RowConverter>,
    schema: Option<SchemaRef>,
    /// Per distinct row (encoded): how many copies are live, and the
    /// position of its first insertion.
    live: HashMap<Vec<u8>, (u64, usize)>,
    inserted: usize,
}

impl Materialized {
    /// Nothing applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one batch.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<()> {
        let (data, kinds) = split_row_kinds(batch)?;
        if self.converter.is_none() {
            let fields = data
                .schema()
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
            self.schema = Some(data.schema());
        }
        let Some(converter) = &self.converter else {
            return Ok(());
        };
        let rows = converter.convert_columns(data.columns())?;
        for (i, row) in rows.iter().enumerate() {
            let kind = kinds.as_ref().map_or(RowKind::Insert, |k| k[i]);
            let key = row.as_ref();
            match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    let position = self.inserted;
                    self.inserted += 1;
                    let entry = self.live.entry(key.to_vec()).or_insert((0, position));
                    if entry.0 == 0 {
                        entry.1 = position;
                    }
                    entry.0 += 1;
                }
                RowKind::UpdateBefore | RowKind::Delete => match self.live.get_mut(key) {
                    Some(entry) if entry.0 > 0 => entry.0 -= 1,
                    _ => {
                        return Err(Error::internal(format!(
                            "the changelog retracts ({}) a row it never inserted",
                            kind.short_string()
                        )));
                    }
                },
            }
        }
        self.live.retain(|_, (count, _)| *count > 0);
        Ok(())
    }

    /// How many rows remain.
    pub fn len(&self) -> usize {
        self.live.values().map(|(count, _)| *count as usize).sum()
    }

    /// True when no row remains.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The rows that remain (`None` when nothing was ever applied).
    pub fn finish(self) -> Result<Option<RecordBatch>> {
        self.current()
    }

    /// The rows that remain now, in the order they were inserted (`None`
    /// when nothing was ever applied).
    pub fn current(&self) -> Result<Option<RecordBatch>> {
        let (Some(converter), Some(schema)) = (&self.converter, &self.schema) else {
            return Ok(None);
        };
        let mut live: Vec<(usize, u64, &Vec<u8>)> = self
            .live
            .iter()
            .map(|(row, (count, position))| (*position, *count, row))
            .collect();
        live.sort();
        let parser = converter.parser();
        let rows = live
            .iter()
            .flat_map(|(_, count, row)| std::iter::repeat_n(parser.parse(row), *count as usize));
        let columns = converter.convert_rows(rows)?;
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }
}

/// The rows left after applying every batch's changes (see
/// [`Materialized`]); append-only batches come back as they are.
pub fn materialize(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    if !batches
        .iter()
        .any(|b| ChangelogMode::of(&b.schema()).is_updating())
    {
        return Ok(batches.to_vec());
    }
    let mut state = Materialized::new();
    for batch in batches {
        state.apply(batch)?;
    }
    Ok(state.finish()?.into_iter().collect())
}

/// The rows of `batch` at `indices`, every column.
pub fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn changes(rows: &[(i64, RowKind)]) -> RecordBatch {
        let schema = updating_schema(&Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::Int64,
            true,
        )])));
        let values: Int64Array = rows.iter().map(|(v, _)| Some(*v)).collect();
        with_row_kinds(
            &schema,
            vec![Arc::new(values)],
            rows.iter().map(|(_, k)| *k).collect(),
        )
        .unwrap()
    }

    #[test]
    fn materializing_applies_every_change() {
        use RowKind::*;
        let batches = [
            changes(&[(1, Insert), (2, Insert), (2, Insert)]),
            changes(&[(1, UpdateBefore), (3, UpdateAfter), (2, Delete)]),
        ];
        let rows = materialize(&batches).unwrap();
        let values: Vec<i64> = rows[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(values, vec![2, 3]);
        assert_eq!(rows[0].num_columns(), 1);
    }

    #[test]
    fn a_retraction_of_a_missing_row_is_an_error() {
        let err = materialize(&[changes(&[(1, RowKind::Delete)])]).unwrap_err();
        assert!(err.to_string().contains("never inserted"), "{err}");
    }

    #[test]
    fn display_puts_the_kind_first() {
        let shown = for_display(&changes(&[(7, RowKind::UpdateAfter)])).unwrap();
        assert_eq!(shown.schema().field(0).name(), "op");
        assert_eq!(shown.column(0).as_string::<i32>().value(0), "+U");
        assert_eq!(shown.schema(), display_schema(&changes(&[]).schema()));
        assert_eq!(
            ChangelogMode::of(&changes(&[]).schema()),
            ChangelogMode::Retract
        );
    }
}
