//! Event-time helpers: reading timestamp columns as epoch milliseconds.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// True for the types an event-time column may have.
pub fn is_event_time_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _) | DataType::Int64 | DataType::Date32 | DataType::Date64
    )
}

/// Reads an event-time column (any timestamp unit, or `BIGINT` epoch
/// milliseconds) as epoch milliseconds.
pub fn to_epoch_millis(column: &ArrayRef) -> Result<Int64Array> {
    let as_ms: ArrayRef = match column.data_type() {
        DataType::Int64 => Arc::clone(column),
        DataType::Timestamp(TimeUnit::Millisecond, _) => cast(column, &DataType::Int64)?,
        DataType::Timestamp(_, tz) => {
            let ms = cast(
                column,
                &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
            )?;
            cast(&ms, &DataType::Int64)?
        }
        DataType::Date32 | DataType::Date64 => {
            let ms = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            cast(&ms, &DataType::Int64)?
        }
        other => {
            return Err(Error::Config(format!(
                "an event-time column must be a TIMESTAMP or BIGINT (epoch milliseconds), not {}",
                crate::types::sql_type_name(other)
            )));
        }
    };
    as_ms
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Error::internal("cast to Int64 did not give an Int64Array"))
}

/// Builds a column of `data_type` (a timestamp or `BIGINT`) from epoch milliseconds.
pub fn from_epoch_millis(millis: Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    let millis: ArrayRef = Arc::new(millis);
    Ok(match data_type {
        DataType::Int64 => millis,
        DataType::Timestamp(TimeUnit::Millisecond, tz) => cast(
            &millis,
            &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        )?,
        DataType::Timestamp(_, tz) => {
            let ms = cast(
                &millis,
                &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
            )?;
            cast(&ms, data_type)?
        }
        other => cast(&millis, other)?,
    })
}

/// Parses a duration such as `5000` (milliseconds), `10 s`, `5min` or `1h`, as Flink's `Duration` options.
pub fn parse_duration_ms(key: &str, value: &str) -> Result<i64> {
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let millis: i64 = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => {
            return Err(Error::invalid_option(
                key,
                format!(
                    "option '{key}' = '{value}' has an unknown time unit '{other}' (use ms, s, min, h or d)"
                ),
            ));
        }
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(millis))
        .ok_or_else(|| {
            Error::invalid_option(
                key,
                format!("option '{key}' = '{value}' is not a duration such as '10 s'"),
            )
        })
}
