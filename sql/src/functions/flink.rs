//! Flink's string and time-part functions that the Nexmark queries use and
//! DataFusion lacks: `SPLIT_INDEX`, `REGEXP_EXTRACT` (NULL when nothing
//! matches) and `YEAR`/`MONTH`/`DAYOFMONTH`/`HOUR`/`MINUTE`/`SECOND`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::compute::cast;
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use weir_engine::sql_type_name;

/// The arguments as string arrays of `rows` rows.
fn strings(args: &[ColumnarValue], rows: usize) -> Result<Vec<ArrayRef>> {
    args.iter()
        .map(|a| Ok(cast(&a.to_array(rows)?, &DataType::Utf8)?))
        .collect()
}

/// `SPLIT_INDEX(text, separator, index)`: the `index`-th (from 0) piece of
/// `text` split at `separator`; NULL when there is no such piece.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    pub(super) fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args[2].is_integer() && args[2] != DataType::Null {
            return plan_err!(
                "SPLIT_INDEX expects an integer index, not {}",
                sql_type_name(&args[2])
            );
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let text = strings(&args.args[..2], rows)?;
        let index = cast(&args.args[2].to_array(rows)?, &DataType::Int64)?;
        let (text, separator, index) = (
            text[0].as_string::<i32>(),
            text[1].as_string::<i32>(),
            index.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        let out: StringArray = (0..rows)
            .map(|i| {
                if text.is_null(i) || separator.is_null(i) || index.is_null(i) {
                    return None;
                }
                let n = usize::try_from(index.value(i)).ok()?;
                let separator = separator.value(i);
                if separator.is_empty() {
                    return None;
                }
                text.value(i).split(separator).nth(n)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `REGEXP_EXTRACT(text, regex [, group])`: the `group`-th group (0, the
/// default, is the whole match) of the first match; NULL when nothing
/// matches, as Flink gives.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    pub(super) fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(2),
                    datafusion::logical_expr::TypeSignature::Any(3),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let text = strings(&args.args[..2], rows)?;
        let group = match args.args.get(2) {
            Some(g) => Some(cast(&g.to_array(rows)?, &DataType::Int64)?),
            None => None,
        };
        let (text, patterns) = (text[0].as_string::<i32>(), text[1].as_string::<i32>());
        // A constant pattern (the usual case) compiles once.
        let constant = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(p))) => match regex::Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    return exec_err!("REGEXP_EXTRACT: invalid regular expression '{p}': {e}");
                }
            },
            _ => None,
        };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if text.is_null(i) || patterns.is_null(i) {
                out.push(None);
                continue;
            }
            let compiled;
            let regex = match &constant {
                Some(r) => r,
                None => match regex::Regex::new(patterns.value(i)) {
                    Ok(r) => {
                        compiled = r;
                        &compiled
                    }
                    // Flink gives NULL for a pattern that does not compile.
                    Err(_) => {
                        out.push(None);
                        continue;
                    }
                },
            };
            let index = match &group {
                Some(g) if g.is_null(i) => {
                    out.push(None);
                    continue;
                }
                Some(g) => g.as_primitive::<arrow::datatypes::Int64Type>().value(i),
                None => 0,
            };
            let piece = usize::try_from(index).ok().and_then(|index| {
                regex
                    .captures(text.value(i))
                    .and_then(|c| c.get(index))
                    .map(|m| m.as_str().to_string())
            });
            out.push(piece);
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `HOUR(ts)`, `MINUTE(ts)`, …: one field of a timestamp or date, as BIGINT.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct TimePart {
    name: &'static str,
    part: DatePartKey,
    signature: Signature,
}

/// [`DatePart`] is not `Hash`: the parts, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DatePartKey {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl TimePart {
    /// Every time-part function.
    pub(super) fn all() -> Vec<TimePart> {
        [
            ("year", DatePartKey::Year),
            ("month", DatePartKey::Month),
            ("dayofmonth", DatePartKey::Day),
            ("hour", DatePartKey::Hour),
            ("minute", DatePartKey::Minute),
            ("second", DatePartKey::Second),
        ]
        .into_iter()
        .map(|(name, part)| TimePart {
            name,
            part,
            signature: Signature::any(1, Volatility::Immutable),
        })
        .collect()
    }
}

impl ScalarUDFImpl for TimePart {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !matches!(
            args[0],
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null
        ) {
            return plan_err!(
                "{} expects a TIMESTAMP or DATE, not {}",
                self.name.to_uppercase(),
                sql_type_name(&args[0])
            );
        }
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let part = match self.part {
            DatePartKey::Year => DatePart::Year,
            DatePartKey::Month => DatePart::Month,
            DatePartKey::Day => DatePart::Day,
            DatePartKey::Hour => DatePart::Hour,
            DatePartKey::Minute => DatePart::Minute,
            DatePartKey::Second => DatePart::Second,
        };
        let parts = date_part(&values, part)?;
        Ok(ColumnarValue::Array(cast(&parts, &DataType::Int64)?))
    }
}
