//! How types are named to users: in Weir's SQL (Flink's names), never as
//! Arrow's `Int64`, `Utf8` or `Timestamp(ms)`.
//!
//! [`sql_type_name`] names a type; [`sql_type_names_in`] rewrites the Arrow
//! type names inside a message that came from Arrow or DataFusion.

use std::str::FromStr;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};

/// The SQL name of `data_type`: `BIGINT`, `STRING`, `TIMESTAMP(3)`,
/// `DECIMAL(10, 2)`, `ARRAY<INT>`, `ROW<a INT, b STRING>` …
pub fn sql_type_name(data_type: &DataType) -> String {
    use DataType as D;
    match data_type {
        D::Null => "NULL".into(),
        D::Boolean => "BOOLEAN".into(),
        D::Int8 => "TINYINT".into(),
        D::Int16 => "SMALLINT".into(),
        D::Int32 => "INT".into(),
        D::Int64 => "BIGINT".into(),
        // Flink has no unsigned integers; say what they are.
        D::UInt8 => "TINYINT UNSIGNED".into(),
        D::UInt16 => "SMALLINT UNSIGNED".into(),
        D::UInt32 => "INT UNSIGNED".into(),
        D::UInt64 => "BIGINT UNSIGNED".into(),
        D::Float16 => "HALF FLOAT".into(),
        D::Float32 => "FLOAT".into(),
        D::Float64 => "DOUBLE".into(),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            format!("DECIMAL({p}, {s})")
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "STRING".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "BYTES".into(),
        D::FixedSizeBinary(n) => format!("BINARY({n})"),
        D::Date32 | D::Date64 => "DATE".into(),
        D::Time32(unit) | D::Time64(unit) => format!("TIME({})", precision(*unit)),
        D::Timestamp(unit, None) => format!("TIMESTAMP({})", precision(*unit)),
        D::Timestamp(unit, Some(_)) => format!("TIMESTAMP_LTZ({})", precision(*unit)),
        D::Duration(unit) => format!("INTERVAL DAY TO SECOND({})", precision(*unit)),
        D::Interval(IntervalUnit::YearMonth) => "INTERVAL YEAR TO MONTH".into(),
        D::Interval(IntervalUnit::DayTime) => "INTERVAL DAY TO SECOND(3)".into(),
        D::Interval(IntervalUnit::MonthDayNano) => "INTERVAL".into(),
        D::List(f) | D::LargeList(f) | D::ListView(f) | D::LargeListView(f) => {
            format!("ARRAY<{}>", element(f))
        }
        D::FixedSizeList(f, _) => format!("ARRAY<{}>", element(f)),
        D::Map(entries, _) => match entries.data_type() {
            D::Struct(kv) if kv.len() == 2 => {
                format!("MAP<{}, {}>", element(&kv[0]), element(&kv[1]))
            }
            other => format!("MAP<{}>", sql_type_name(other)),
        },
        D::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), element(f)))
                .collect();
            format!("ROW<{}>", fields.join(", "))
        }
        D::Union(..) => "UNION".into(),
        // Dictionary and run-end encoding are how values are stored, not what they are.
        D::Dictionary(_, values) => sql_type_name(values),
        D::RunEndEncoded(_, values) => sql_type_name(values.data_type()),
    }
}

/// The fractional-second digits of a time unit, as in `TIMESTAMP(3)`.
fn precision(unit: TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// A nested field's type, `NOT NULL` when it cannot be null (Flink's syntax).
fn element(field: &Field) -> String {
    let name = sql_type_name(field.data_type());
    if field.is_nullable() {
        name
    } else {
        format!("{name} NOT NULL")
    }
}

/// Arrow type names that take no parameters; followed by `(…)` in a
/// message they are a DataFusion literal such as `Int64(1)`.
const PLAIN_TYPES: &[&str] = &[
    "Null",
    "Boolean",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Float16",
    "Float32",
    "Float64",
    "Utf8",
    "LargeUtf8",
    "Utf8View",
    "Binary",
    "LargeBinary",
    "BinaryView",
    "Date32",
    "Date64",
];

/// Arrow type names that only name a type with their parameters, as in
/// `Timestamp(ms)` or `Decimal128(10, 2)`.
const PARAMETERISED_TYPES: &[&str] = &[
    "Timestamp",
    "Time32",
    "Time64",
    "Duration",
    "Interval",
    "FixedSizeBinary",
    "Decimal32",
    "Decimal64",
    "Decimal128",
    "Decimal256",
    "List",
    "LargeList",
    "ListView",
    "LargeListView",
    "FixedSizeList",
    "Struct",
    "Map",
    "Dictionary",
    "RunEndEncoded",
];

/// `text` with each Arrow type name in it (a whole word, with its
/// parameters: `Int64`, `Utf8`, `Timestamp(ms)`, `Timestamp(Millisecond,
/// None)`, `Decimal128(10, 2)`) replaced by its SQL name, and DataFusion's
/// typed literals (`Int64(1)`, `Utf8("a")`) by plain SQL literals.
pub fn sql_type_names_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let starts_word = c.is_ascii_alphabetic() && !previous.is_some_and(is_word_char);
        if !starts_word {
            out.push(c);
            previous = Some(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let word_len = rest
            .find(|ch: char| !is_word_char(ch))
            .unwrap_or(rest.len());
        let word = &rest[..word_len];
        let after = &rest[word_len..];
        let (replacement, consumed) = translate(word, after);
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(&rest[..word_len + consumed]),
        }
        let used = word_len + consumed;
        previous = rest[..used].chars().last();
        rest = &rest[used..];
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The SQL text for the Arrow type name `word` followed by `after`, and
/// how many bytes of `after` it used; `None` leaves the word as it is.
fn translate(word: &str, after: &str) -> (Option<String>, usize) {
    let plain = PLAIN_TYPES.contains(&word);
    if !plain && !PARAMETERISED_TYPES.contains(&word) {
        return (None, 0);
    }
    if let Some(args) = parenthesised(after) {
        if let Ok(data_type) = DataType::from_str(&format!("{word}{args}")) {
            return (Some(sql_type_name(&data_type)), args.len());
        }
        if plain {
            return (Some(literal(&args[1..args.len() - 1])), args.len());
        }
        return (None, 0);
    }
    match DataType::from_str(word) {
        Ok(data_type) if plain => (Some(sql_type_name(&data_type)), 0),
        _ => (None, 0),
    }
}

/// The balanced `(…)` at the start of `text`, skipping parentheses inside
/// double-quoted strings.
fn parenthesised(text: &str) -> Option<&str> {
    if !text.starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A DataFusion literal's value as SQL: `"a"` becomes `'a'`, others stay.
fn literal(value: &str) -> String {
    let value = value.trim();
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Fields;

    use super::*;

    #[test]
    fn names_types_as_flink_does() {
        let cases = [
            (DataType::Int8, "TINYINT"),
            (DataType::Int16, "SMALLINT"),
            (DataType::Int32, "INT"),
            (DataType::Int64, "BIGINT"),
            (DataType::Float32, "FLOAT"),
            (DataType::Float64, "DOUBLE"),
            (DataType::Decimal128(10, 2), "DECIMAL(10, 2)"),
            (DataType::Boolean, "BOOLEAN"),
            (DataType::Utf8, "STRING"),
            (DataType::Utf8View, "STRING"),
            (DataType::Binary, "BYTES"),
            (DataType::Date32, "DATE"),
            (DataType::Time64(TimeUnit::Microsecond), "TIME(6)"),
            (DataType::Null, "NULL"),
            (
                DataType::Interval(IntervalUnit::YearMonth),
                "INTERVAL YEAR TO MONTH",
            ),
            (DataType::Timestamp(TimeUnit::Second, None), "TIMESTAMP(0)"),
            (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                "TIMESTAMP(3)",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "TIMESTAMP(6)",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "TIMESTAMP(9)",
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                "TIMESTAMP_LTZ(3)",
            ),
        ];
        for (data_type, name) in cases {
            assert_eq!(sql_type_name(&data_type), name, "{data_type:?}");
        }
    }

    #[test]
    fn names_nested_types() {
        assert_eq!(
            sql_type_name(&DataType::new_list(DataType::Int64, true)),
            "ARRAY<BIGINT>"
        );
        assert_eq!(
            sql_type_name(&DataType::new_list(DataType::Utf8, false)),
            "ARRAY<STRING NOT NULL>"
        );
        let row = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, false),
        ]));
        assert_eq!(sql_type_name(&row), "ROW<a INT, b STRING NOT NULL>");
        let entries = Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Float64, true),
            ])),
            false,
        );
        assert_eq!(
            sql_type_name(&DataType::Map(Arc::new(entries), false)),
            "MAP<STRING NOT NULL, DOUBLE>"
        );
        assert_eq!(
            sql_type_name(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            "STRING"
        );
    }

    #[test]
    fn rewrites_arrow_names_in_messages() {
        assert_eq!(
            sql_type_names_in("Cannot cast Utf8 to Int64"),
            "Cannot cast STRING to BIGINT"
        );
        assert_eq!(
            sql_type_names_in("operation Int64 = Timestamp(ms) failed"),
            "operation BIGINT = TIMESTAMP(3) failed"
        );
        assert_eq!(
            sql_type_names_in("to Timestamp(Millisecond, None) and Decimal128(10, 2)."),
            "to TIMESTAMP(3) and DECIMAL(10, 2)."
        );
        assert_eq!(
            sql_type_names_in("parsing value 'x' as type 'Float32' for column 1"),
            "parsing value 'x' as type 'FLOAT' for column 1"
        );
        assert_eq!(
            sql_type_names_in("only \"count(Int64(1)), concat(Utf8(\"a\"))\" appears"),
            "only \"count(1), concat('a')\" appears"
        );
    }

    #[test]
    fn leaves_other_words_alone() {
        for text in [
            "column Int64Array, MyInt64 and int64 are not types",
            "List of tables: Map",
            "Timestamp is a word here",
            "a_Utf8 Utf8_b",
        ] {
            assert_eq!(sql_type_names_in(text), text);
        }
        assert_eq!(sql_type_names_in("é Utf8 ü"), "é STRING ü");
    }
}
