//! Arrow values as Postgres values: the type a column is announced with,
//! and each value in the text or the binary format the client asked for.

use std::error::Error;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::datatypes::{Schema, TimestampMicrosecondType, TimestampMillisecondType};
use arrow::datatypes::{TimestampNanosecondType, TimestampSecondType};
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql};

type BoxError = Box<dyn Error + Sync + Send>;

/// Days from 1970-01-01 to 2000-01-01, Postgres' epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// The Postgres type a column of `data_type` is announced with; types
/// without a Postgres counterpart go as text.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Type::NUMERIC,
        _ => Type::TEXT,
    }
}

/// The Postgres name of a column type, as `information_schema` shows it.
pub(crate) fn pg_type_name(data_type: &DataType) -> &'static str {
    match pg_type(data_type) {
        Type::BOOL => "boolean",
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::BYTEA => "bytea",
        Type::DATE => "date",
        Type::TIME => "time without time zone",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        Type::NUMERIC => "numeric",
        _ => "text",
    }
}

/// The result columns of `schema`, each in the format the client asked for.
pub(crate) fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

/// `fields` again, in the formats of a portal.
pub(crate) fn with_format(fields: &[FieldInfo], format: &Format) -> Vec<FieldInfo> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().to_string(),
                f.table_id(),
                f.column_id(),
                f.datatype().clone(),
                format.format_for(i),
            )
        })
        .collect()
}

/// Every row of `batch` as a `DataRow` of `fields`.
pub(crate) fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    rows: usize,
) -> PgWireResult<Vec<DataRow>> {
    if batch.num_columns() != fields.len() {
        return Err(user_error(
            "XX000",
            format!(
                "internal error (this is a bug in Weir, please report it): a result batch has {} \
                 columns, the result was described with {}",
                batch.num_columns(),
                fields.len()
            ),
        ));
    }
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut out = Vec::with_capacity(rows.min(batch.num_rows()));
    for row in 0..rows.min(batch.num_rows()) {
        for column in batch.columns() {
            encoder.encode_field(&cell(column, row)?)?;
        }
        out.push(encoder.take_row());
    }
    Ok(out)
}

/// A user-facing error with a SQLSTATE.
pub(crate) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// One value, ready for either format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    /// A `UInt64` above `i64::MAX` still shows as text.
    BigUnsigned(u64),
    Float4(f32),
    Float8(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 1970-01-01, without or with a time zone.
    Timestamp(i64, bool),
    /// A decimal number as text.
    Numeric(String),
}

fn micros(value: i64, unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value.div_euclid(1_000),
    }
}

/// The value at `row` of `array`.
pub(crate) fn cell(array: &ArrayRef, row: usize) -> PgWireResult<Cell> {
    if array.is_null(row) {
        return Ok(Cell::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Cell::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Cell::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Cell::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Cell::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Cell::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Cell::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Cell::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v).map_or(Cell::BigUnsigned(v), Cell::Int)
        }
        DataType::Float16 => Cell::Float4(array.as_primitive::<Float16Type>().value(row).into()),
        DataType::Float32 => Cell::Float4(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Cell::Float8(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(row).to_string()),
        DataType::Binary => Cell::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Cell::Bytes(array.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Cell::Bytes(array.as_binary_view().value(row).to_vec()),
        DataType::FixedSizeBinary(_) => {
            Cell::Bytes(array.as_fixed_size_binary().value(row).to_vec())
        }
        DataType::Date32 => Cell::Date(array.as_primitive::<Date32Type>().value(row).into()),
        DataType::Date64 => Cell::Date(
            array
                .as_primitive::<Date64Type>()
                .value(row)
                .div_euclid(86_400_000),
        ),
        DataType::Time32(TimeUnit::Second) => {
            Cell::Time(i64::from(array.as_primitive::<Time32SecondType>().value(row)) * 1_000_000)
        }
        DataType::Time32(_) => {
            Cell::Time(i64::from(array.as_primitive::<Time32MillisecondType>().value(row)) * 1_000)
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            Cell::Time(array.as_primitive::<Time64MicrosecondType>().value(row))
        }
        DataType::Time64(_) => {
            Cell::Time(array.as_primitive::<Time64NanosecondType>().value(row) / 1_000)
        }
        DataType::Timestamp(unit, tz) => {
            let raw = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            Cell::Timestamp(micros(raw, unit), tz.is_some())
        }
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Cell::Numeric(text_of(array, row)?),
        _ => Cell::Text(text_of(array, row)?),
    })
}

fn text_of(array: &ArrayRef, row: usize) -> PgWireResult<String> {
    array_value_to_string(array, row).map_err(|e| {
        user_error(
            "XX000",
            format!(
                "cannot show a {} value: {e}",
                weir_engine::sql_type_name(array.data_type())
            ),
        )
    })
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        v.to_string()
    }
}

impl Cell {
    /// The Postgres text format of the value (`None` for NULL).
    pub(crate) fn text(&self) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Cell::Int(v) => v.to_string(),
            Cell::BigUnsigned(v) => v.to_string(),
            Cell::Float4(v) => {
                if v.is_finite() {
                    v.to_string()
                } else {
                    float_text(f64::from(*v))
                }
            }
            Cell::Float8(v) => float_text(*v),
            Cell::Text(s) | Cell::Numeric(s) => s.clone(),
            Cell::Bytes(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                s
            }
            Cell::Date(days) => chrono::DateTime::from_timestamp(days.saturating_mul(86_400), 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| days.to_string()),
            Cell::Time(us) => chrono::DateTime::from_timestamp_micros(*us)
                .map(|d| d.format("%H:%M:%S%.f").to_string())
                .unwrap_or_else(|| us.to_string()),
            Cell::Timestamp(us, tz) => chrono::DateTime::from_timestamp_micros(*us)
                .map(|d| {
                    let mut s = d.format("%Y-%m-%d %H:%M:%S%.f").to_string();
                    if *tz {
                        s.push_str("+00");
                    }
                    s
                })
                .unwrap_or_else(|| us.to_string()),
        })
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Cell::Int(v) => Some(*v),
            Cell::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(v) => Some(*v as f64),
            Cell::BigUnsigned(v) => Some(*v as f64),
            Cell::Float4(v) => Some(f64::from(*v)),
            Cell::Float8(v) => Some(*v),
            _ => None,
        }
    }
}

fn mismatch(cell: &Cell, ty: &Type) -> BoxError {
    format!("cannot send {cell:?} as a {ty} value").into()
}

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if matches!(self, Cell::Null) {
            return Ok(IsNull::Yes);
        }
        let out_of_range = || -> BoxError { format!("{self:?} is out of range for {ty}").into() };
        match *ty {
            Type::BOOL => match self {
                Cell::Bool(b) => out.put_u8(u8::from(*b)),
                _ => return Err(mismatch(self, ty)),
            },
            Type::INT2 => {
                let v = self.as_i64().ok_or_else(|| mismatch(self, ty))?;
                out.put_i16(i16::try_from(v).map_err(|_| out_of_range())?);
            }
            Type::INT4 => {
                let v = self.as_i64().ok_or_else(|| mismatch(self, ty))?;
                out.put_i32(i32::try_from(v).map_err(|_| out_of_range())?);
            }
            Type::INT8 => {
                let v = self.as_i64().ok_or_else(|| mismatch(self, ty))?;
                out.put_i64(v);
            }
            Type::FLOAT4 => out.put_f32(self.as_f64().ok_or_else(|| mismatch(self, ty))? as f32),
            Type::FLOAT8 => out.put_f64(self.as_f64().ok_or_else(|| mismatch(self, ty))?),
            Type::NUMERIC => {
                let text = match self {
                    Cell::Numeric(s) => s.clone(),
                    Cell::Int(_) | Cell::BigUnsigned(_) => self.text().unwrap_or_default(),
                    _ => return Err(mismatch(self, ty)),
                };
                numeric_binary(&text, out)?;
            }
            Type::DATE => match self {
                Cell::Date(days) => {
                    out.put_i32(i32::try_from(days - PG_EPOCH_DAYS).map_err(|_| out_of_range())?)
                }
                _ => return Err(mismatch(self, ty)),
            },
            Type::TIME => match self {
                Cell::Time(us) => out.put_i64(*us),
                _ => return Err(mismatch(self, ty)),
            },
            Type::TIMESTAMP | Type::TIMESTAMPTZ => match self {
                Cell::Timestamp(us, _) => out.put_i64(us.saturating_sub(PG_EPOCH_MICROS)),
                _ => return Err(mismatch(self, ty)),
            },
            Type::BYTEA => match self {
                Cell::Bytes(b) => out.put_slice(b),
                other => out.put_slice(other.text().unwrap_or_default().as_bytes()),
            },
            _ => out.put_slice(self.text().unwrap_or_default().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Cell {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, BoxError> {
        match self.text() {
            None => Ok(IsNull::Yes),
            Some(s) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }
}

/// A decimal number (`-123.4500`) in Postgres' binary NUMERIC format:
/// base-10000 digits with a weight, a sign and the display scale.
fn numeric_binary(text: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let text = text.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(format!("'{text}' is not a decimal number").into());
    }
    let int = int.trim_start_matches('0');
    let group = |s: &str| -> i16 {
        s.bytes()
            .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
    };
    let mut digits: Vec<i16> = Vec::new();
    let int_padded = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    for chunk in int_padded.as_bytes().chunks(4) {
        digits.push(group(std::str::from_utf8(chunk)?));
    }
    let mut weight = digits.len() as i32 - 1;
    let frac_padded = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    for chunk in frac_padded.as_bytes().chunks(4) {
        digits.push(group(std::str::from_utf8(chunk)?));
    }
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let too_big = || -> BoxError { format!("'{text}' has too many digits for NUMERIC").into() };
    out.put_i16(i16::try_from(digits.len()).map_err(|_| too_big())?);
    out.put_i16(i16::try_from(weight).map_err(|_| too_big())?);
    out.put_u16(if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(u16::try_from(frac.len()).map_err(|_| too_big())?);
    for d in digits {
        out.put_i16(d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};

    fn numeric(text: &str) -> Vec<i16> {
        let mut out = BytesMut::new();
        numeric_binary(text, &mut out).unwrap();
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_in_base_10000() {
        // ndigits, weight, sign, dscale, digits…
        assert_eq!(numeric("123.45"), vec![2, 0, 0, 2, 123, 4500]);
        assert_eq!(numeric("-0.00001"), vec![1, -2, 0x4000, 5, 1000]);
        assert_eq!(numeric("10000"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric("0"), vec![0, 0, 0, 0]);
        assert!(numeric_binary("1e5", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn cells_in_text_and_binary() {
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![946_684_800_000_001]));
        let c = cell(&ts, 0).unwrap();
        assert_eq!(c.text().unwrap(), "2000-01-01 00:00:00.000001");
        let mut out = BytesMut::new();
        c.to_sql(&Type::TIMESTAMP, &mut out).unwrap();
        assert_eq!(out.as_ref(), 1i64.to_be_bytes());

        let d: ArrayRef = Arc::new(
            Decimal128Array::from(vec![12345])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        assert_eq!(cell(&d, 0).unwrap(), Cell::Numeric("123.45".into()));
        assert_eq!(pg_type(d.data_type()), Type::NUMERIC);

        let i: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None]));
        assert_eq!(cell(&i, 1).unwrap(), Cell::Null);
        let mut out = BytesMut::new();
        cell(&i, 0).unwrap().to_sql(&Type::INT4, &mut out).unwrap();
        assert_eq!(out.as_ref(), 7i32.to_be_bytes());

        let s: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        let schema = Schema::new(vec![arrow::datatypes::Field::new(
            "s",
            DataType::Utf8,
            true,
        )]);
        let f = fields(&schema, &Format::UnifiedBinary);
        assert_eq!(f[0].format(), pgwire::api::results::FieldFormat::Binary);
        assert_eq!(cell(&s, 0).unwrap().text().unwrap(), "x");
    }
}
