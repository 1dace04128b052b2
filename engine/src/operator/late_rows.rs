//! Rows an operator refuses because they came behind the watermark: a
//! window that has fired, a session that has closed. Every operator counts
//! them (`weir_late_records_dropped_total`); with a late-rows sink
//! (`table.exec.late-records.sink`) it also emits them on its
//! [`OutputPort::LateRows`] output, each with the operator that refused it
//! and the watermark at that moment, instead of dropping them silently.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::{Collector, OperatorContext};
use crate::error::{Error, Result};
use crate::graph::OutputPort;
use crate::message::Watermark;

/// The column naming the operator (and subtask) that refused a late row.
pub const LATE_OPERATOR_COLUMN: &str = "late_operator";
/// The column holding the operator's watermark when it refused the row.
pub const LATE_WATERMARK_COLUMN: &str = "late_watermark";

/// The late-rows output of one operator: its input's columns, then
/// [`LATE_OPERATOR_COLUMN`] and [`LATE_WATERMARK_COLUMN`].
#[derive(Debug, Clone)]
pub struct LateRows {
    schema: SchemaRef,
}

impl LateRows {
    /// The late-rows output of an operator whose input has `input` columns.
    pub fn new(input: &Schema) -> Self {
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(LATE_OPERATOR_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(
            LATE_WATERMARK_COLUMN,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ));
        Self {
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The schema of the rows emitted.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Emits rows `rows` of `input` (all of them for `None`), refused at
    /// `watermark`, on the late-rows output.
    pub fn emit(
        &self,
        input: &RecordBatch,
        rows: Option<&[u32]>,
        watermark: Watermark,
        ctx: &OperatorContext,
        out: &mut Collector,
    ) -> Result<()> {
        let refused = match rows {
            Some([]) => return Ok(()),
            Some(rows) => take_record_batch(input, &UInt32Array::from(rows.to_vec()))?,
            None => input.clone(),
        };
        let n = refused.num_rows();
        let operator = format!("{} (subtask {})", ctx.task.operator, ctx.task.subtask);
        // Before the first watermark there is none to report.
        let watermark = (watermark > Watermark::MIN).then_some(watermark.0);
        // The input may carry more columns (keys appended for the shuffle).
        let width = self.schema.fields().len() - 2;
        let Some(input_columns) = refused.columns().get(..width) else {
            return Err(Error::internal(format!(
                "late rows have {} columns, fewer than the operator's input ({width})",
                refused.num_columns()
            )));
        };
        let mut columns: Vec<ArrayRef> = input_columns.to_vec();
        columns.push(Arc::new(StringArray::from(vec![operator; n])));
        columns.push(Arc::new(TimestampMillisecondArray::from(vec![
            watermark;
            n
        ])));
        out.collect_to(
            OutputPort::LateRows,
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::TimestampMillisecondType;

    use super::*;

    #[test]
    fn refused_rows_carry_the_operator_and_the_watermark() {
        let input = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let late = LateRows::new(&input);
        let batch =
            RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let ctx = OperatorContext::for_test("WindowAggregate");
        let mut out = Collector::new();
        late.emit(&batch, Some(&[0, 2]), Watermark(5_000), &ctx, &mut out)
            .unwrap();
        late.emit(&batch, Some(&[]), Watermark(5_000), &ctx, &mut out)
            .unwrap();
        assert!(
            out.drain().unwrap().is_empty(),
            "nothing on the main output"
        );
        let side = out.take_side();
        assert_eq!(side.len(), 1);
        let (port, rows) = &side[0];
        assert_eq!(*port, OutputPort::LateRows);
        assert_eq!(rows.schema(), *late.schema());
        let v = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(v.values(), &[1, 3]);
        assert_eq!(
            rows.column(1).as_string::<i32>().value(0),
            "WindowAggregate (subtask 0)"
        );
        let wm = rows.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(wm.value(1), 5_000);
    }
}
