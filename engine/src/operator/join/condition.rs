//! A join's condition beyond its key equality: which pairs of rows it
//! passes, and how EXPLAIN prints it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::Rows;
use datafusion::physical_expr::PhysicalExpr;

use super::{JoinCondition, JoinOperator, Side};
use crate::error::{Error, Result};

/// A join condition as EXPLAIN prints it: its columns as `left.name` and
/// `right.name`.
pub(super) fn condition_label(condition: &JoinCondition, data: &[SchemaRef; 2]) -> String {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_expr::expressions::Column;
    let named = Arc::clone(&condition.expr).transform_down(|e| {
        let Some(column) = e.downcast_ref::<Column>() else {
            return Ok(Transformed::no(e));
        };
        let Some(&(side, index)) = condition.columns.get(column.index()) else {
            return Ok(Transformed::no(e));
        };
        let (prefix, schema) = match side {
            Side::Left => ("left", &data[0]),
            Side::Right => ("right", &data[1]),
        };
        let name = schema
            .fields()
            .get(index)
            .map_or_else(|| format!("#{index}"), |f| f.name().clone());
        Ok(Transformed::yes(
            Arc::new(Column::new(&format!("{prefix}.{name}"), column.index()))
                as Arc<dyn PhysicalExpr>,
        ))
    });
    match named {
        Ok(expr) => {
            datafusion::physical_expr_common::physical_expr::fmt_sql(expr.data.as_ref()).to_string()
        }
        Err(_) => condition.expr.to_string(),
    }
}

impl JoinOperator {
    /// Per row of `data` (a batch of `side`): the indices, into the other
    /// side's rows of its key, of those it joins with. The other side does
    /// not change while a batch of this side is applied.
    pub(super) fn matches(
        &self,
        side: Side,
        data: &RecordBatch,
        keys: &Rows,
        null_keys: &[bool],
    ) -> Result<Vec<Vec<usize>>> {
        let other = side.other();
        let mut matched: Vec<Vec<usize>> = vec![Vec::new(); data.num_rows()];
        // Candidate pairs: this row, the other side's entry.
        let mut this_rows: Vec<u32> = Vec::new();
        let mut other_rows: Vec<&[u8]> = Vec::new();
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (row, found) in matched.iter_mut().enumerate() {
            if null_keys[row] {
                continue;
            }
            let Some(entries) = self.state.get(keys.row(row).data()) else {
                continue;
            };
            for (i, entry) in entries.side(other).iter().enumerate() {
                match &self.spec.condition {
                    None => found.push(i),
                    Some(_) => {
                        this_rows.push(row as u32);
                        other_rows.push(&entry.row);
                        pairs.push((row, i));
                    }
                }
            }
        }
        let Some(condition) = &self.spec.condition else {
            return Ok(matched);
        };
        if pairs.is_empty() {
            return Ok(matched);
        }
        let this_columns = crate::operator::snapshot::take_rows(data.columns(), this_rows)?;
        let parser = self.rows[other.index()].parser();
        let other_columns =
            self.rows[other.index()].convert_rows(other_rows.iter().map(|r| parser.parse(r)))?;
        let columns: Vec<ArrayRef> = condition
            .columns
            .iter()
            .map(|&(s, c)| {
                let source = if s == side {
                    &this_columns
                } else {
                    &other_columns
                };
                source.get(c).cloned().ok_or_else(|| {
                    Error::internal(format!("a join condition reads column {c} of {s:?}"))
                })
            })
            .collect::<Result<_>>()?;
        let intermediate = RecordBatch::try_new(Arc::clone(&condition.schema), columns)?;
        let passed = condition
            .expr
            .evaluate(&intermediate)?
            .into_array(pairs.len())?;
        let passed = passed
            .as_boolean_opt()
            .ok_or_else(|| Error::internal("a join condition is not a boolean"))?;
        for (p, &(row, i)) in pairs.iter().enumerate() {
            if passed.is_valid(p) && passed.value(p) {
                matched[row].push(i);
            }
        }
        Ok(matched)
    }
}
