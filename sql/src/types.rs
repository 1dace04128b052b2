//! SQL type names (Flink's and standard) to Arrow types.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use weir_engine::suggest::closest;

fn timestamp_unit(precision: Option<u64>) -> TimeUnit {
    match precision {
        Some(0) => TimeUnit::Second,
        None | Some(1..=3) => TimeUnit::Millisecond,
        Some(4..=6) => TimeUnit::Microsecond,
        Some(_) => TimeUnit::Nanosecond,
    }
}

/// The types a column may be declared with, for errors.
const TYPES: &str = "BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), \
                     STRING, BYTES, DATE, TIMESTAMP(p) and TIMESTAMP_LTZ(p)";

/// Type names (and Flink's and the SQL standard's synonyms) that a
/// misspelt type is compared with.
const TYPE_NAMES: &[&str] = &[
    "BOOLEAN",
    "TINYINT",
    "SMALLINT",
    "INT",
    "INTEGER",
    "BIGINT",
    "FLOAT",
    "REAL",
    "DOUBLE",
    "DECIMAL",
    "NUMERIC",
    "STRING",
    "VARCHAR",
    "CHAR",
    "BYTES",
    "BINARY",
    "VARBINARY",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMP_LTZ",
];

/// Parses a column type such as `BIGINT`, `STRING`, `DECIMAL(10, 2)`,
/// `TIMESTAMP(3)` or `TIMESTAMP_LTZ(3)`.
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    // Flink's TIMESTAMP_LTZ(p): an instant; Weir keeps instants as UTC timestamps.
    if let Some(rest) = upper.strip_prefix("TIMESTAMP_LTZ") {
        let p = rest
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let precision = if p.is_empty() { None } else { p.parse().ok() };
        return Ok(DataType::Timestamp(
            timestamp_unit(precision.or(Some(6))),
            None,
        ));
    }
    let dialect = GenericDialect {};
    let sql_type = Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_data_type())
        .map_err(|e| format!("unknown type '{text}': {e}"))?;
    convert(&sql_type).ok_or_else(|| match sql_type {
        SqlType::Custom(name, _) => {
            let name = name.to_string();
            let rest = text.get(name.len()..).unwrap_or_default();
            match closest(&name, TYPE_NAMES.iter().copied()) {
                Some(known) => format!("unknown type '{text}' (did you mean '{known}{rest}'?)"),
                None => format!("unknown type '{text}'; Weir's types are {TYPES}"),
            }
        }
        _ => format!("type '{text}' is not supported; Weir's types are {TYPES}"),
    })
}

fn convert(t: &SqlType) -> Option<DataType> {
    Some(match t {
        SqlType::TinyInt(_) => DataType::Int8,
        SqlType::SmallInt(_) => DataType::Int16,
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => DataType::Int32,
        SqlType::BigInt(_) | SqlType::Int8(_) | SqlType::Int64 => DataType::Int64,
        SqlType::Float(_) | SqlType::Real | SqlType::Float4 => DataType::Float32,
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 | SqlType::Float64 => {
            DataType::Float64
        }
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::String(_)
        | SqlType::Varchar(_)
        | SqlType::Char(_)
        | SqlType::Text
        | SqlType::CharVarying(_)
        | SqlType::CharacterVarying(_)
        | SqlType::Character(_)
        | SqlType::Nvarchar(_) => DataType::Utf8,
        SqlType::Bytea
        | SqlType::Bytes(_)
        | SqlType::Binary(_)
        | SqlType::Varbinary(_)
        | SqlType::Blob(_) => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Timestamp(precision, tz) => {
            let unit = timestamp_unit(*precision);
            match tz {
                TimezoneInfo::None | TimezoneInfo::WithoutTimeZone => {
                    DataType::Timestamp(unit, None)
                }
                _ => DataType::Timestamp(unit, None),
            }
        }
        SqlType::Decimal(info) | SqlType::Numeric(info) | SqlType::Dec(info) => match info {
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(*p as u8, *s as i8),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(*p as u8, 0),
            ExactNumberInfo::None => DataType::Decimal128(10, 0),
        },
        SqlType::Custom(name, args) => {
            let n = name.to_string().to_ascii_uppercase();
            match n.as_str() {
                "BYTES" => DataType::Binary,
                "TIMESTAMP_LTZ" => DataType::Timestamp(
                    timestamp_unit(args.first().and_then(|a| a.parse().ok())),
                    None,
                ),
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_flink_types() {
        assert_eq!(parse_type("BIGINT"), Ok(DataType::Int64));
        assert_eq!(parse_type("STRING"), Ok(DataType::Utf8));
        assert_eq!(
            parse_type("TIMESTAMP(3)"),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(
            parse_type("TIMESTAMP_LTZ(3)"),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(
            parse_type("DECIMAL(10, 2)"),
            Ok(DataType::Decimal128(10, 2))
        );
        assert_eq!(parse_type("BYTES"), Ok(DataType::Binary));
        assert_eq!(parse_type("VARBINARY"), Ok(DataType::Binary));
        assert!(parse_type("FOO").is_err());
    }

    #[test]
    fn suggests_close_type_names() {
        assert_eq!(
            parse_type("BIGNT"),
            Err("unknown type 'BIGNT' (did you mean 'BIGINT'?)".into())
        );
        assert_eq!(
            parse_type("TIMESTMP(3)"),
            Err("unknown type 'TIMESTMP(3)' (did you mean 'TIMESTAMP(3)'?)".into())
        );
        assert_eq!(
            parse_type("strng"),
            Err("unknown type 'strng' (did you mean 'STRING'?)".into())
        );
        let money = parse_type("MONEY\n").unwrap_err();
        assert!(
            money.starts_with("unknown type 'MONEY'; Weir's types are BOOLEAN"),
            "{money}"
        );
    }
}
