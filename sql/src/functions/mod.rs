//! Flink's function names where DataFusion's differ, so Flink users can
//! paste their SQL: `TO_TIMESTAMP_LTZ`, `DATE_FORMAT` (Java patterns), `MOD`,
//! `PROCTIME()`, and (in [`flink`]) `SPLIT_INDEX`, `REGEXP_EXTRACT` and the
//! time parts.

mod flink;

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::compute::kernels::numeric::rem;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use weir_engine::sql_type_name;

/// Registers Weir's Flink-compatible functions.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(ToTimestampLtz::new()));
    ctx.register_udf(ScalarUDF::from(DateFormat::new()));
    ctx.register_udf(ScalarUDF::from(Mod::new()));
    ctx.register_udf(ScalarUDF::from(Proctime::new()));
    ctx.register_udf(ScalarUDF::from(flink::SplitIndex::new()));
    ctx.register_udf(ScalarUDF::from(flink::RegexpExtract::new()));
    for part in flink::TimePart::all() {
        ctx.register_udf(ScalarUDF::from(part));
    }
}

/// The name of the `PROCTIME()` function.
pub const PROCTIME: &str = "proctime";

/// `PROCTIME()`: the wall clock when the row is computed, as a timestamp.
/// A computed column `pt AS PROCTIME()` is a processing-time attribute:
/// windows over it close on the wall clock.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Proctime {
    signature: Signature,
}

impl Proctime {
    fn new() -> Self {
        Self {
            // Volatile: planning must not fold it into a constant.
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for Proctime {
    fn name(&self) -> &str {
        PROCTIME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use weir_engine::clock::Clock;
        let now = weir_engine::clock::SystemClock.now_millis();
        let ts = TimestampMillisecondArray::from_value(now, args.number_rows);
        Ok(ColumnarValue::Array(Arc::new(ts)))
    }
}

fn scalar_i64(value: &ColumnarValue, what: &str) -> Result<i64> {
    match value {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(v)) => Ok(v),
            _ => exec_err!("{what} must not be NULL"),
        },
        ColumnarValue::Array(_) => exec_err!("{what} must be a constant"),
    }
}

/// `TO_TIMESTAMP_LTZ(epoch, precision)`: epoch seconds (precision 0) or
/// milliseconds (precision 3) to a timestamp.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestampLtz {
    signature: Signature,
}

impl ToTimestampLtz {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ToTimestampLtz {
    fn name(&self) -> &str {
        "to_timestamp_ltz"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args[0].is_integer() && !args[0].is_numeric() {
            return plan_err!(
                "TO_TIMESTAMP_LTZ expects a numeric epoch value, not {}",
                sql_type_name(&args[0])
            );
        }
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let precision = scalar_i64(&args.args[1], "the TO_TIMESTAMP_LTZ precision")?;
        let factor = match precision {
            0 => 1000,
            3 => 1,
            p => return exec_err!("TO_TIMESTAMP_LTZ precision must be 0 or 3, not {p}"),
        };
        let values = args.args[0].to_array(args.number_rows)?;
        let values = cast(&values, &DataType::Int64)?;
        let millis: Int64Array = values
            .as_primitive::<arrow::datatypes::Int64Type>()
            .unary(|v| v * factor);
        let ts: TimestampMillisecondArray = millis.reinterpret_cast();
        Ok(ColumnarValue::Array(Arc::new(ts)))
    }
}

/// Converts a Java `SimpleDateFormat` pattern to a chrono one.
fn java_to_chrono(pattern: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        let piece = match (c, run) {
            ('y', 2) => "%y".to_string(),
            ('y', _) => "%Y".to_string(),
            ('M', 1 | 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', _) => "%d".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', n) => format!("%{}f", n.min(9)),
            ('a', _) => "%p".to_string(),
            ('E', _) => "%a".to_string(),
            ('\'', _) => String::new(),
            ('%', _) => "%%".repeat(run),
            (c, n) => c.to_string().repeat(n),
        };
        out.push_str(&piece);
        i += run;
    }
    out
}

/// `DATE_FORMAT(timestamp, 'yyyy-MM-dd HH:mm:ss')` with Java patterns, as Flink.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::LargeUtf8(Some(p))
                | ScalarValue::Utf8View(Some(p)),
            ) => java_to_chrono(p),
            _ => return exec_err!("DATE_FORMAT expects a constant pattern string"),
        };
        let values = args.args[0].to_array(args.number_rows)?;
        let values = cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let ts = values.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let out: StringArray = ts
            .iter()
            .map(|v| {
                v.and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.naive_utc().format(&pattern).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `MOD(a, b)`: the remainder, as `a % b`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args[0].is_numeric() || !args[1].is_numeric() {
            return plan_err!(
                "MOD expects numbers, not {} and {}",
                sql_type_name(&args[0]),
                sql_type_name(&args[1])
            );
        }
        if args[0].is_integer() && args[1].is_integer() {
            Ok(DataType::Int64)
        } else {
            Ok(DataType::Float64)
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let a = cast(&args.args[0].to_array(args.number_rows)?, &target)?;
        let b = cast(&args.args[1].to_array(args.number_rows)?, &target)?;
        Ok(ColumnarValue::Array(rem(&a, &b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_java_patterns() {
        assert_eq!(java_to_chrono("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(
            java_to_chrono("yyyy-MM-dd HH:mm:ss.SSS"),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
    }
}
