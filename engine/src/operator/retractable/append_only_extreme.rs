//! `MIN(x)` and `MAX(x)` over an append-only input, of a fixed-width type:
//! with nothing ever taken back only the extreme can be the answer, so each
//! group keeps one value, in Arrow's row format, in one buffer of fixed
//! stride (Flink's `MaxAggFunction` against its `MaxWithRetractAggFunction`).
//! Its checkpointed state is that of the retracting `MIN`/`MAX` (the value
//! with multiplicity one), so either restores the other's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};

use super::{
    RetractableAccumulator, decode_value_counts, encode_value_count, included, state_column,
};
use crate::error::{Error, Result};

/// One value per group, `width` bytes each.
#[derive(Debug)]
pub(super) struct AppendOnlyExtreme {
    converter: RowConverter,
    data_type: DataType,
    output: DataType,
    max: bool,
    /// The row-format width of a value.
    width: usize,
    /// Group `g`'s value, at `g * width`.
    values: Vec<u8>,
    /// Whether group `g` has seen a value.
    present: Vec<bool>,
}

impl AppendOnlyExtreme {
    /// `None` when `data_type` is not of fixed width.
    pub(super) fn new(data_type: DataType, output: DataType, max: bool) -> Result<Option<Self>> {
        if !data_type.is_primitive() {
            return Ok(None);
        }
        let converter = RowConverter::new(vec![SortField::new(data_type.clone())])?;
        let width = converter
            .convert_columns(&[new_null_array(&data_type, 1)])?
            .row(0)
            .data()
            .len();
        Ok(Some(Self {
            converter,
            data_type,
            output,
            max,
            width,
            values: Vec::new(),
            present: Vec::new(),
        }))
    }

    fn grow(&mut self, total: usize) {
        if self.present.len() < total {
            self.present.resize(total, false);
            self.values.resize(total * self.width, 0);
        }
    }

    fn value(&self, group: usize) -> Option<&[u8]> {
        let at = group * self.width;
        self.present[group].then(|| &self.values[at..at + self.width])
    }

    /// Makes `value` group `group`'s if it beats the current one.
    fn offer(&mut self, group: usize, value: &[u8]) -> Result<()> {
        if value.len() != self.width {
            return Err(Error::internal("a MIN/MAX value of an unexpected width"));
        }
        let better = match self.value(group) {
            None => true,
            Some(current) if self.max => value > current,
            Some(current) => value < current,
        };
        if better {
            let at = group * self.width;
            self.values[at..at + self.width].copy_from_slice(value);
            self.present[group] = true;
        }
        Ok(())
    }
}

impl RetractableAccumulator for AppendOnlyExtreme {
    fn update(
        &mut self,
        args: &[ArrayRef],
        groups: &[usize],
        retract: &[bool],
        mask: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let arg = args
            .first()
            .ok_or_else(|| Error::internal("MIN/MAX without an argument"))?;
        if retract.iter().any(|&r| r) {
            return Err(Error::internal(
                "an append-only MIN/MAX was given a retraction",
            ));
        }
        self.grow(total);
        let rows = self.converter.convert_columns(std::slice::from_ref(arg))?;
        for (row, &group) in groups.iter().enumerate() {
            if included(mask, row) && arg.is_valid(row) {
                self.offer(group, rows.row(row).data())?;
            }
        }
        Ok(())
    }

    fn evaluate(&self, groups: &[usize]) -> Result<ArrayRef> {
        let null = self
            .converter
            .convert_columns(&[new_null_array(&self.data_type, 1)])?;
        let parser = self.converter.parser();
        let rows = groups.iter().map(|&g| match self.value(g) {
            Some(value) => parser.parse(value),
            None => null.row(0),
        });
        let column = self
            .converter
            .convert_rows(rows)?
            .pop()
            .ok_or_else(|| Error::internal("MIN/MAX decoded no column"))?;
        if column.data_type() == &self.output {
            Ok(column)
        } else {
            Ok(cast(&column, &self.output)?)
        }
    }

    fn reset(&mut self, group: usize) {
        if let Some(present) = self.present.get_mut(group) {
            *present = false;
        }
    }

    /// As the retracting `MIN`/`MAX`'s: per group its entries, each
    /// (length, bytes, count), here at most one.
    fn state(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        let encoded = groups.iter().map(|&g| {
            let mut out = Vec::new();
            if let Some(value) = self.value(g) {
                encode_value_count(&mut out, value, 1);
            }
            out
        });
        Ok(vec![Arc::new(BinaryArray::from_iter_values(encoded))])
    }

    fn restore(&mut self, state: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        self.grow(total);
        let column = state_column(state, 0)?;
        let encoded = column
            .as_binary_opt::<i32>()
            .ok_or_else(|| Error::internal("checkpointed MIN/MAX values are not binary"))?;
        for (row, &group) in groups.iter().enumerate() {
            self.reset(group);
            for (value, _count) in decode_value_counts(encoded.value(row))? {
                self.offer(group, value)?;
            }
        }
        Ok(())
    }

    fn state_width(&self) -> usize {
        1
    }

    fn size(&self) -> usize {
        self.values.capacity() + self.present.capacity()
    }

    fn group_size(&self, _group: usize) -> usize {
        self.width + 1
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;

    use super::super::ExtremeAccumulator;
    use super::*;

    fn ints(values: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(values.to_vec()))]
    }

    fn evaluated(acc: &dyn RetractableAccumulator, groups: &[usize]) -> Vec<Option<i64>> {
        let column = acc.evaluate(groups).unwrap();
        column
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect()
    }

    #[test]
    fn keeps_the_extreme_of_each_group_and_restores_from_either_form() {
        let mut max = AppendOnlyExtreme::new(DataType::Int64, DataType::Int64, true)
            .unwrap()
            .unwrap();
        let args = ints(&[Some(3), Some(-7), None, Some(9), Some(-2)]);
        max.update(&args, &[0, 1, 2, 0, 1], &[false; 5], None, 3)
            .unwrap();
        assert_eq!(evaluated(&max, &[0, 1, 2]), vec![Some(9), Some(-2), None]);

        // Its state restores into the retracting MIN/MAX and back.
        let state = max.state(&[0, 1, 2]).unwrap();
        let mut retracting =
            ExtremeAccumulator::new(DataType::Int64, DataType::Int64, true, false).unwrap();
        retracting.restore(&state, &[0, 1, 2], 3).unwrap();
        assert_eq!(
            evaluated(&retracting, &[0, 1, 2]),
            vec![Some(9), Some(-2), None]
        );
        let mut restored = AppendOnlyExtreme::new(DataType::Int64, DataType::Int64, true)
            .unwrap()
            .unwrap();
        restored
            .restore(&retracting.state(&[0, 1, 2]).unwrap(), &[2, 0, 1], 3)
            .unwrap();
        assert_eq!(
            evaluated(&restored, &[0, 1, 2]),
            vec![Some(-2), None, Some(9)]
        );

        // A reset slot starts again; a retraction is refused.
        restored.reset(2);
        restored
            .update(&ints(&[Some(1)]), &[2], &[false], None, 3)
            .unwrap();
        assert_eq!(evaluated(&restored, &[2]), vec![Some(1)]);
        assert!(
            restored
                .update(&ints(&[Some(1)]), &[2], &[true], None, 3)
                .is_err()
        );
    }

    #[test]
    fn min_of_floats_and_strings_is_not_fixed_width() {
        let min = AppendOnlyExtreme::new(DataType::Float64, DataType::Float64, false).unwrap();
        assert!(min.is_some());
        let strings = AppendOnlyExtreme::new(DataType::Utf8, DataType::Utf8, false).unwrap();
        assert!(strings.is_none());
    }
}
