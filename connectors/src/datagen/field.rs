//! Per-column generators of the datagen source: each makes a whole Arrow
//! array per batch from a column's `fields.<col>.*` options.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, LargeStringArray, PrimitiveArray,
    StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::*;
use rand::Rng;
use rand::distr::uniform::SampleUniform;
use rand::distr::{Distribution, Uniform};
use rand::rngs::SmallRng;
use weir_engine::{ConnectorOptions, Error, Result, sql_type_name};

/// Parses an integer bound option: `(key, value) -> unscaled value`.
type BoundParser<'a> = &'a dyn Fn(&str, Option<&str>) -> Result<Option<i128>>;

/// The suffixes allowed after `fields.<col>.`.
pub const FIELD_OPTIONS: &[&str] = &[
    "kind",
    "start",
    "end",
    "min",
    "max",
    "length",
    "max-past",
    "null-rate",
];

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const MILLIS_PER_DAY: i64 = 86_400_000;

/// How one column's values are made.
#[derive(Debug, Clone)]
pub enum ColumnGen {
    /// `start + row index` (integers, or their decimal text for strings).
    Sequence { start: i128, end: i128 },
    /// Uniform integers in `min..=max` (integer types and DECIMAL, unscaled).
    Int { min: i128, max: i128 },
    /// Uniform floats in `min..=max`.
    Float { min: f64, max: f64 },
    /// Random booleans.
    Bool,
    /// Random alphanumeric strings of exactly `length` characters.
    Text { length: usize },
    /// Timestamps or dates in the last `max_past_ms` milliseconds.
    Time { max_past_ms: i64 },
}

/// A column's generator and null rate.
#[derive(Debug, Clone)]
pub struct FieldGen {
    pub generator: ColumnGen,
    pub null_rate: f64,
}

impl FieldGen {
    /// Reads `fields.<name>.*` for a column of `field`'s type.
    pub fn from_options(options: &ConnectorOptions, field: &Field) -> Result<Self> {
        let name = field.name();
        let keys = FieldKeys { options, name };
        let key = |suffix: &str| keys.key(suffix);
        let get = |suffix: &str| keys.get(suffix);
        let data_type = field.data_type();
        let unsupported = || {
            Error::Config(format!(
                "datagen cannot generate column '{name}' of type {}; supported: integers, floats, \
                 DECIMAL, BOOLEAN, STRING, TIMESTAMP and DATE",
                sql_type_name(data_type)
            ))
        };
        let reject = |suffix: &str, why: &str| -> Result<()> {
            match get(suffix) {
                Some(_) => Err(Error::invalid_option(
                    key(suffix),
                    format!("option '{}' {why}", key(suffix)),
                )),
                None => Ok(()),
            }
        };

        let null_rate = options.parse::<f64>(&key("null-rate"))?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&null_rate) {
            return Err(Error::invalid_option(
                key("null-rate"),
                format!("option '{}' must be between 0 and 1", key("null-rate")),
            ));
        }
        if null_rate > 0.0 && !field.is_nullable() {
            return Err(Error::invalid_option(
                key("null-rate"),
                format!(
                    "option '{}' is set but column '{name}' is NOT NULL",
                    key("null-rate")
                ),
            ));
        }

        let kind = get("kind").unwrap_or("random").to_ascii_lowercase();
        let generator = match kind.as_str() {
            "sequence" => {
                if !(data_type.is_integer() || is_string(data_type)) {
                    return Err(Error::invalid_option(
                        key("kind"),
                        format!(
                            "option '{}' = 'sequence' needs an integer or string column, '{name}' is {}",
                            key("kind"),
                            sql_type_name(data_type)
                        ),
                    ));
                }
                for suffix in ["min", "max", "length", "max-past"] {
                    reject(suffix, "does not apply to a sequence field")?;
                }
                let (lo, hi) = int_range(data_type).unwrap_or((i64::MIN as i128, i64::MAX as i128));
                let start = parse_int(&key("start"), get("start"), lo, hi)?.ok_or_else(|| {
                    Error::invalid_option(
                        key("start"),
                        format!("a sequence field needs option '{}'", key("start")),
                    )
                })?;
                let end = parse_int(&key("end"), get("end"), lo, hi)?.ok_or_else(|| {
                    Error::invalid_option(
                        key("end"),
                        format!("a sequence field needs option '{}'", key("end")),
                    )
                })?;
                if start > end {
                    return Err(Error::invalid_option(
                        key("start"),
                        format!(
                            "option '{}' = {start} is greater than '{}' = {end}",
                            key("start"),
                            key("end")
                        ),
                    ));
                }
                ColumnGen::Sequence { start, end }
            }
            "random" => {
                reject("start", "only applies to a sequence field")?;
                reject("end", "only applies to a sequence field")?;
                if !is_string(data_type) {
                    reject("length", "only applies to string columns")?;
                }
                if !matches!(
                    data_type,
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                ) {
                    reject("max-past", "only applies to TIMESTAMP and DATE columns")?;
                }
                let numeric =
                    data_type.is_integer() || data_type.is_floating() || is_decimal(data_type);
                if !numeric {
                    reject("min", "only applies to numeric columns")?;
                    reject("max", "only applies to numeric columns")?;
                }
                random_gen(data_type, &keys).ok_or_else(unsupported)??
            }
            other => {
                return Err(Error::invalid_option(
                    key("kind"),
                    format!(
                        "option '{}' = '{other}' must be 'sequence' or 'random'",
                        key("kind")
                    ),
                ));
            }
        };
        if matches!(generator, ColumnGen::Sequence { .. }) && !supports(data_type) {
            return Err(unsupported());
        }
        Ok(FieldGen {
            generator,
            null_rate,
        })
    }

    /// The number of rows a sequence field bounds the table to.
    pub fn sequence_len(&self) -> Option<u64> {
        match self.generator {
            ColumnGen::Sequence { start, end } => {
                Some(u64::try_from(end - start + 1).unwrap_or(u64::MAX))
            }
            _ => None,
        }
    }

    /// An array of `len` values of `data_type` for the rows starting at global row `first_row`.
    pub fn generate(
        &self,
        data_type: &DataType,
        rng: &mut SmallRng,
        first_row: u64,
        len: usize,
    ) -> Result<ArrayRef> {
        let nulls = (self.null_rate > 0.0).then(|| {
            let rate = self.null_rate;
            NullBuffer::new(BooleanBuffer::from_iter(
                (0..len).map(|_| !rng.random_bool(rate)),
            ))
        });
        generate_values(&self.generator, data_type, rng, first_row, len, nulls)
    }
}

/// The generator of a random column, `None` for an unsupported type.
/// The `fields.<name>.*` options of one column.
struct FieldKeys<'a> {
    options: &'a ConnectorOptions,
    name: &'a str,
}

impl<'a> FieldKeys<'a> {
    fn key(&self, suffix: &str) -> String {
        format!("fields.{}.{suffix}", self.name)
    }

    fn get(&self, suffix: &str) -> Option<&'a str> {
        self.options.get(&self.key(suffix)).map(str::trim)
    }
}

fn random_gen(data_type: &DataType, keys: &FieldKeys<'_>) -> Option<Result<ColumnGen>> {
    let name = keys.name;
    let key = |suffix: &str| keys.key(suffix);
    let get = |suffix: &str| keys.get(suffix);
    let min_max = |lo: i128, hi: i128, parse: BoundParser<'_>| {
        let min = parse(&key("min"), get("min"))?.unwrap_or(lo);
        let max = parse(&key("max"), get("max"))?.unwrap_or(hi);
        if min > max {
            return Err(Error::invalid_option(
                key("min"),
                format!(
                    "option '{}' is greater than '{}' for column '{name}'",
                    key("min"),
                    key("max")
                ),
            ));
        }
        Ok(ColumnGen::Int { min, max })
    };
    Some(match data_type {
        t if t.is_integer() => {
            let (lo, hi) = int_range(t)?;
            min_max(lo, hi, &|k, v| parse_int(k, v, lo, hi))
        }
        DataType::Decimal128(precision, scale) => {
            let bound = 10i128
                .checked_pow(u32::from(*precision))
                .map_or(i128::MAX, |b| b - 1);
            let (precision, scale) = (*precision, *scale);
            min_max(-bound, bound, &|k, v| {
                v.map(|text| {
                    parse_decimal::<Decimal128Type>(text, precision, scale).map_err(|e| {
                        Error::invalid_option(k, format!("option '{k}' = '{text}' is invalid: {e}"))
                    })
                })
                .transpose()
            })
        }
        DataType::Float32 | DataType::Float64 => (|| {
            let parse = |k: &str, v: Option<&str>| -> Result<Option<f64>> {
                v.map(|text| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| {
                            Error::invalid_option(
                                k,
                                format!("option '{k}' = '{text}' is not a finite number"),
                            )
                        })
                })
                .transpose()
            };
            let min = parse(&key("min"), get("min"))?.unwrap_or(0.0);
            let max = parse(&key("max"), get("max"))?.unwrap_or(1.0);
            if min > max {
                return Err(Error::invalid_option(
                    key("min"),
                    format!("option '{}' is greater than '{}'", key("min"), key("max")),
                ));
            }
            Ok(ColumnGen::Float { min, max })
        })(),
        DataType::Boolean => Ok(ColumnGen::Bool),
        t if is_string(t) => (|| {
            let length = match get("length") {
                None => 10,
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 1 << 20)
                    .ok_or_else(|| {
                        Error::invalid_option(
                            key("length"),
                            format!(
                                "option '{}' = '{v}' must be a length up to 1048576",
                                key("length")
                            ),
                        )
                    })?,
            };
            Ok(ColumnGen::Text { length })
        })(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => (|| {
            let max_past_ms = match get("max-past") {
                None => 0,
                Some(v) => crate::util::parse_duration_ms(&key("max-past"), v)?,
            };
            Ok(ColumnGen::Time { max_past_ms })
        })(),
        _ => return None,
    })
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_decimal(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Decimal128(..))
}

/// True when some generator can make `data_type`.
pub fn supports(data_type: &DataType) -> bool {
    data_type.is_integer()
        || is_string(data_type)
        || is_decimal(data_type)
        || matches!(
            data_type,
            DataType::Float32
                | DataType::Float64
                | DataType::Boolean
                | DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
        )
}

fn int_range(data_type: &DataType) -> Option<(i128, i128)> {
    Some(match data_type {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        _ => return None,
    })
}

fn parse_int(key: &str, value: Option<&str>, lo: i128, hi: i128) -> Result<Option<i128>> {
    value
        .map(|text| {
            text.parse::<i128>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| {
                    Error::invalid_option(
                        key,
                        format!("option '{key}' = '{text}' must be an integer in {lo}..={hi}"),
                    )
                })
        })
        .transpose()
}

fn generate_values(
    generator: &ColumnGen,
    data_type: &DataType,
    rng: &mut SmallRng,
    first_row: u64,
    len: usize,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    use DataType as D;
    macro_rules! by_int_type {
        ($f:ident, $($args:expr),*) => {
            match data_type {
                D::Int8 => $f::<Int8Type>($($args),*),
                D::Int16 => $f::<Int16Type>($($args),*),
                D::Int32 => $f::<Int32Type>($($args),*),
                D::Int64 => $f::<Int64Type>($($args),*),
                D::UInt8 => $f::<UInt8Type>($($args),*),
                D::UInt16 => $f::<UInt16Type>($($args),*),
                D::UInt32 => $f::<UInt32Type>($($args),*),
                D::UInt64 => $f::<UInt64Type>($($args),*),
                D::Decimal128(..) => $f::<Decimal128Type>($($args),*),
                other => Err(Error::internal(format!("datagen: no integer generator for {other}"))),
            }
        };
    }
    let array: ArrayRef = match (generator, data_type) {
        (ColumnGen::Sequence { start, .. }, t) if is_string(t) => {
            let first = start + i128::from(first_row);
            let strings =
                StringArray::from_iter_values((0..len as i128).map(|i| (first + i).to_string()));
            with_nulls_cast(Arc::new(strings), nulls, t)?
        }
        (ColumnGen::Sequence { start, .. }, _) => {
            let first = start + i128::from(first_row);
            by_int_type!(sequence, first, len, nulls, data_type)?
        }
        (ColumnGen::Int { min, max }, _) => {
            by_int_type!(uniform_ints, rng, *min, *max, len, nulls, data_type)?
        }
        (ColumnGen::Float { min, max }, D::Float32) => Arc::new(uniform::<Float32Type>(
            rng,
            *min as f32,
            *max as f32,
            len,
            nulls,
        )?),
        (ColumnGen::Float { min, max }, _) => {
            Arc::new(uniform::<Float64Type>(rng, *min, *max, len, nulls)?)
        }
        (ColumnGen::Bool, _) => {
            let values = BooleanBuffer::from_iter((0..len).map(|_| rng.random::<bool>()));
            Arc::new(BooleanArray::new(values, nulls))
        }
        (ColumnGen::Text { length }, t) => {
            let dist =
                Uniform::new(0, ALPHANUMERIC.len()).map_err(|e| Error::internal(e.to_string()))?;
            let bytes: Vec<u8> = (0..len * length)
                .map(|_| ALPHANUMERIC[dist.sample(rng)])
                .collect();
            let lengths = std::iter::repeat_n(*length, len);
            if *t == D::LargeUtf8 {
                Arc::new(LargeStringArray::try_new(
                    OffsetBuffer::from_lengths(lengths),
                    Buffer::from_vec(bytes),
                    nulls,
                )?)
            } else {
                let strings = StringArray::try_new(
                    OffsetBuffer::from_lengths(lengths),
                    Buffer::from_vec(bytes),
                    nulls,
                )?;
                with_nulls_cast(Arc::new(strings), None, t)?
            }
        }
        (ColumnGen::Time { max_past_ms }, t) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| Error::internal(format!("system clock before 1970: {e}")))?
                .as_millis() as i64;
            let millis =
                uniform::<Int64Type>(rng, now.saturating_sub(*max_past_ms), now, len, nulls)?;
            match t {
                D::Timestamp(unit, _) => {
                    let t = t.clone();
                    match unit {
                        TimeUnit::Second => Arc::new(
                            millis
                                .unary::<_, TimestampSecondType>(|v| v.div_euclid(1000))
                                .with_data_type(t),
                        ),
                        TimeUnit::Millisecond => Arc::new(
                            millis
                                .unary::<_, TimestampMillisecondType>(|v| v)
                                .with_data_type(t),
                        ),
                        TimeUnit::Microsecond => Arc::new(
                            millis
                                .unary::<_, TimestampMicrosecondType>(|v| v.saturating_mul(1_000))
                                .with_data_type(t),
                        ),
                        TimeUnit::Nanosecond => Arc::new(
                            millis
                                .unary::<_, TimestampNanosecondType>(|v| {
                                    v.saturating_mul(1_000_000)
                                })
                                .with_data_type(t),
                        ),
                    }
                }
                D::Date32 => {
                    Arc::new(millis.unary::<_, Date32Type>(|v| v.div_euclid(MILLIS_PER_DAY) as i32))
                }
                _ => Arc::new(millis.unary::<_, Date64Type>(|v| v - v.rem_euclid(MILLIS_PER_DAY))),
            }
        }
    };
    if array.data_type() != data_type {
        return Ok(cast(&array, data_type)?);
    }
    Ok(array)
}

/// Applies a `data_type` the Utf8 array is not (Utf8View), keeping `nulls`.
fn with_nulls_cast(
    array: ArrayRef,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> Result<ArrayRef> {
    let array = match nulls {
        Some(nulls) => {
            let strings = array
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::internal("datagen: expected a string array"))?
                .clone();
            let (offsets, values, _) = strings.into_parts();
            Arc::new(StringArray::try_new(offsets, values, Some(nulls))?) as ArrayRef
        }
        None => array,
    };
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(cast(&array, data_type)?)
    }
}

fn sequence<T>(
    first: i128,
    len: usize,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> Result<ArrayRef>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i128>,
{
    let values = (0..len as i128)
        .map(|i| T::Native::try_from(first + i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::internal("datagen: sequence value out of the column's range"))?;
    Ok(Arc::new(
        PrimitiveArray::<T>::new(ScalarBuffer::from(values), nulls)
            .with_data_type(data_type.clone()),
    ))
}

fn uniform_ints<T>(
    rng: &mut SmallRng,
    min: i128,
    max: i128,
    len: usize,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> Result<ArrayRef>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i128> + SampleUniform,
{
    let bound = |v: i128| {
        T::Native::try_from(v)
            .map_err(|_| Error::internal(format!("datagen: bound {v} out of range")))
    };
    Ok(Arc::new(
        uniform::<T>(rng, bound(min)?, bound(max)?, len, nulls)?.with_data_type(data_type.clone()),
    ))
}

fn uniform<T>(
    rng: &mut SmallRng,
    min: T::Native,
    max: T::Native,
    len: usize,
    nulls: Option<NullBuffer>,
) -> Result<PrimitiveArray<T>>
where
    T: ArrowPrimitiveType,
    T::Native: SampleUniform,
{
    let dist =
        Uniform::new_inclusive(min, max).map_err(|e| Error::internal(format!("datagen: {e}")))?;
    let values: Vec<T::Native> = (0..len).map(|_| dist.sample(rng)).collect();
    Ok(PrimitiveArray::<T>::new(ScalarBuffer::from(values), nulls))
}
