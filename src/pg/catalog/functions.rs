//! The Postgres functions catalog queries call (`format_type`,
//! `pg_get_userbyid`, `obj_description` …, and the `regclass`-style casts
//! the rewrite turns into calls), as DataFusion UDFs over the snapshot.
//!
//! Catalog relations have a handful of rows, so each function is written
//! for one row of values and applied row by row.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ListArray, StringArray, new_empty_array};
use arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::tables::{
    NAMESPACES, OWNER_OID, UTF8_ENCODING, description, table_by_oid, table_oid_of,
};
use super::types::{TYPES, format_type, type_by_oid};
use super::{DATABASE, Snapshot};
use crate::pg::compat::SERVER_VERSION;

/// The functions answered by the catalog rather than the engine: a
/// statement calling one of them is a catalog query.
pub(crate) const NAMES: [&str; 37] = [
    "version",
    "current_database",
    "current_catalog",
    "current_schema",
    "current_schemas",
    "current_setting",
    "pg_backend_pid",
    "pg_get_userbyid",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "obj_description",
    "col_description",
    "shobj_description",
    "format_type",
    "pg_get_expr",
    "pg_encoding_to_char",
    "has_database_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "has_column_privilege",
    "pg_size_pretty",
    "pg_database_size",
    "pg_table_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_indexes_size",
    "pg_relation_is_publishable",
    "pg_get_statisticsobjdef_columns",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_triggerdef",
    "pg_get_viewdef",
    "pg_get_ruledef",
    "regclass",
    "regtype",
    "regnamespace",
    "regrole",
];

/// What a function computes from one row of arguments.
type Eval = dyn Fn(&[ScalarValue]) -> Result<ScalarValue> + Send + Sync;

/// A catalog function: its result type (from its argument types) and what
/// it computes for one row.
struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: fn(&[DataType]) -> DataType,
    eval: Box<Eval>,
}

impl fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

// One context registers each name once: the name is the identity.
impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl Hash for PgFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok((self.returns)(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let scalars: Option<Vec<ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        if let Some(values) = scalars {
            let value = (self.eval)(&values)?;
            return Ok(ColumnarValue::Scalar(value.cast_to(&target)?));
        }
        if args.number_rows == 0 {
            return Ok(ColumnarValue::Array(new_empty_array(&target)));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let values = arrays
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<Vec<_>>>()?;
            out.push((self.eval)(&values)?.cast_to(&target)?);
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

fn udf(
    name: &'static str,
    returns: fn(&[DataType]) -> DataType,
    eval: impl Fn(&[ScalarValue]) -> Result<ScalarValue> + Send + Sync + 'static,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(PgFunction {
        name,
        signature: Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
            Volatility::Stable,
        ),
        returns,
        eval: Box::new(eval),
    })
}

fn text(_: &[DataType]) -> DataType {
    DataType::Utf8
}

fn boolean(_: &[DataType]) -> DataType {
    DataType::Boolean
}

fn bigint(_: &[DataType]) -> DataType {
    DataType::Int64
}

fn integer(_: &[DataType]) -> DataType {
    DataType::Int32
}

fn text_array(_: &[DataType]) -> DataType {
    DataType::new_list(DataType::Utf8, true)
}

/// A name becomes an oid; an oid becomes a name (how a `reg*` value reads
/// and prints).
fn oid_or_name(args: &[DataType]) -> DataType {
    match args.first() {
        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => DataType::Int64,
        _ => DataType::Utf8,
    }
}

/// The `i`th argument as an integer (an oid may come as text: `'16400'`).
fn int_arg(args: &[ScalarValue], i: usize) -> Option<i64> {
    match args.get(i)? {
        ScalarValue::Int8(v) => v.map(i64::from),
        ScalarValue::Int16(v) => v.map(i64::from),
        ScalarValue::Int32(v) => v.map(i64::from),
        ScalarValue::Int64(v) => *v,
        ScalarValue::UInt8(v) => v.map(i64::from),
        ScalarValue::UInt16(v) => v.map(i64::from),
        ScalarValue::UInt32(v) => v.map(i64::from),
        ScalarValue::UInt64(v) => v.and_then(|v| i64::try_from(v).ok()),
        other => str_arg(std::slice::from_ref(other), 0)?.trim().parse().ok(),
    }
}

/// The `i`th argument as text.
fn str_arg(args: &[ScalarValue], i: usize) -> Option<&str> {
    match args.get(i)? {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.as_deref(),
        _ => None,
    }
}

fn some_text(value: Option<String>) -> ScalarValue {
    ScalarValue::Utf8(value)
}

/// A name as Postgres reads it in a `reg*` literal: unquoted parts fold to
/// lower case, a schema qualifier goes.
fn object_name(text: &str) -> String {
    let last = text.rsplit('.').next().unwrap_or(text).trim();
    match last.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => last.to_lowercase(),
    }
}

/// A name as Postgres prints it: quoted unless a plain lower-case word.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `pg_size_pretty`: bytes in the largest unit that keeps 4 digits or
/// more, rounded half up, as Postgres prints it.
fn size_pretty(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    let limit = 10 * 1024;
    if bytes.abs() < limit {
        return format!("{bytes} bytes");
    }
    let mut size = bytes;
    for (i, unit) in UNITS.iter().enumerate() {
        // Halve once less and round, as Postgres does.
        let half = size / 512;
        let rounded = (half + half.signum()) / 2;
        if rounded.abs() < limit || i == UNITS.len() - 1 {
            return format!("{rounded} {unit}");
        }
        size /= 1024;
    }
    format!("{bytes} bytes")
}

/// The catalog functions of `snapshot`.
pub(crate) fn functions(snapshot: &Arc<Snapshot>) -> Vec<ScalarUDF> {
    let user = snapshot.user.clone();
    let constant = |name: &'static str, value: String| {
        udf(name, text, move |_| Ok(some_text(Some(value.clone()))))
    };
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Weir {}) on {}-linux, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    let s = Arc::clone(snapshot);
    let settings = move |args: &[ScalarValue]| {
        let name = str_arg(args, 0).unwrap_or_default();
        Ok(some_text(s.settings.get(name).map(str::to_string)))
    };
    let name_of_user = user.clone();
    let userbyid = move |args: &[ScalarValue]| {
        Ok(some_text(int_arg(args, 0).map(|oid| {
            if oid == OWNER_OID {
                name_of_user.clone()
            } else {
                format!("unknown (OID={oid})")
            }
        })))
    };
    let s = Arc::clone(snapshot);
    let table_visible = move |args: &[ScalarValue]| {
        Ok(ScalarValue::Boolean(
            int_arg(args, 0).and_then(|oid| table_by_oid(&s, oid).map(|_| true)),
        ))
    };
    let s = Arc::clone(snapshot);
    let obj_description = move |args: &[ScalarValue]| {
        Ok(some_text(
            int_arg(args, 0).and_then(|oid| description(&s, oid, str_arg(args, 1), 0)),
        ))
    };
    let s = Arc::clone(snapshot);
    let col_description = move |args: &[ScalarValue]| {
        let (Some(oid), Some(column)) = (int_arg(args, 0), int_arg(args, 1)) else {
            return Ok(some_text(None));
        };
        let column = i32::try_from(column).unwrap_or(0);
        Ok(some_text(description(&s, oid, Some("pg_class"), column)))
    };
    let s = Arc::clone(snapshot);
    let regclass = move |args: &[ScalarValue]| {
        Ok(match str_arg(args, 0) {
            Some(name) => ScalarValue::Int64(table_oid_of(&s, &object_name(name))),
            None => some_text(int_arg(args, 0).map(|oid| match table_by_oid(&s, oid) {
                Some(table) => quote_ident(&table.name),
                None => oid.to_string(),
            })),
        })
    };
    let regtype = |args: &[ScalarValue]| {
        Ok(match str_arg(args, 0) {
            Some(name) => {
                let name = object_name(name);
                ScalarValue::Int64(
                    TYPES
                        .iter()
                        .find(|t| t.ty.name() == name || t.sql_name == name)
                        .map(|t| i64::from(t.ty.oid())),
                )
            }
            None => some_text(int_arg(args, 0).map(|oid| match type_by_oid(oid) {
                Some(_) => format_type(oid, None),
                None => oid.to_string(),
            })),
        })
    };
    let regnamespace = |args: &[ScalarValue]| {
        Ok(match str_arg(args, 0) {
            Some(name) => {
                let name = object_name(name);
                ScalarValue::Int64(
                    NAMESPACES
                        .iter()
                        .find(|(_, n, _)| *n == name)
                        .map(|(oid, _, _)| *oid),
                )
            }
            None => some_text(int_arg(args, 0).map(|oid| {
                NAMESPACES
                    .iter()
                    .find(|(o, _, _)| *o == oid)
                    .map_or_else(|| oid.to_string(), |(_, n, _)| n.to_string())
            })),
        })
    };
    let role = user.clone();
    let regrole = move |args: &[ScalarValue]| {
        Ok(match str_arg(args, 0) {
            Some(name) => ScalarValue::Int64((object_name(name) == role).then_some(OWNER_OID)),
            None => some_text(int_arg(args, 0).map(|oid| {
                if oid == OWNER_OID {
                    quote_ident(&role)
                } else {
                    oid.to_string()
                }
            })),
        })
    };
    let truth = |name| udf(name, boolean, |_| Ok(ScalarValue::Boolean(Some(true))));
    let unknown_size = |name| udf(name, bigint, |_| Ok(ScalarValue::Int64(None)));
    let no_definition = |name| udf(name, text, |_| Ok(some_text(None)));
    vec![
        constant("version", version),
        constant("current_database", DATABASE.into()),
        constant("current_catalog", DATABASE.into()),
        constant("current_schema", "public".into()),
        constant("current_user", user.clone()),
        constant("session_user", user),
        udf("current_schemas", text_array, |args| {
            let implicit = matches!(args.first(), Some(ScalarValue::Boolean(Some(true))));
            let names: Vec<&str> = if implicit {
                vec!["pg_catalog", "public"]
            } else {
                vec!["public"]
            };
            let values = Arc::new(StringArray::from(names));
            let field = Arc::new(Field::new("item", DataType::Utf8, true));
            let list = ListArray::try_new(
                field,
                arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                values,
                None,
            )?;
            Ok(ScalarValue::List(Arc::new(list)))
        }),
        udf("current_setting", text, settings),
        udf("pg_backend_pid", integer, |_| {
            Ok(ScalarValue::Int32(i32::try_from(std::process::id()).ok()))
        }),
        udf("pg_get_userbyid", text, userbyid),
        udf("pg_table_is_visible", boolean, table_visible),
        udf("pg_type_is_visible", boolean, |args| {
            Ok(ScalarValue::Boolean(
                int_arg(args, 0).map(|oid| type_by_oid(oid).is_some()),
            ))
        }),
        udf("obj_description", text, obj_description),
        udf("col_description", text, col_description),
        // No shared object (database, role, tablespace) has a description.
        udf("shobj_description", text, |_| Ok(some_text(None))),
        udf("format_type", text, |args| {
            Ok(some_text(
                int_arg(args, 0).map(|oid| format_type(oid, int_arg(args, 1))),
            ))
        }),
        // Weir keeps expressions as SQL text, which is what this prints.
        udf("pg_get_expr", text, |args| {
            Ok(some_text(str_arg(args, 0).map(str::to_string)))
        }),
        udf("pg_encoding_to_char", text, |args| {
            Ok(some_text(int_arg(args, 0).map(|e| {
                match e {
                    0 => "SQL_ASCII",
                    e if e == i64::from(UTF8_ENCODING) => "UTF8",
                    _ => "",
                }
                .to_string()
            })))
        }),
        // Weir has no privileges: whoever connects may do everything.
        truth("has_database_privilege"),
        truth("has_schema_privilege"),
        truth("has_table_privilege"),
        truth("has_column_privilege"),
        udf("pg_size_pretty", text, |args| {
            Ok(some_text(int_arg(args, 0).map(size_pretty)))
        }),
        // Tables are connectors: Weir stores nothing it could measure.
        unknown_size("pg_database_size"),
        unknown_size("pg_table_size"),
        unknown_size("pg_relation_size"),
        unknown_size("pg_total_relation_size"),
        unknown_size("pg_indexes_size"),
        udf("pg_relation_is_publishable", boolean, |_| {
            Ok(ScalarValue::Boolean(Some(false)))
        }),
        no_definition("pg_get_statisticsobjdef_columns"),
        no_definition("pg_get_indexdef"),
        no_definition("pg_get_constraintdef"),
        no_definition("pg_get_triggerdef"),
        no_definition("pg_get_viewdef"),
        no_definition("pg_get_ruledef"),
        udf("regclass", oid_or_name, regclass),
        udf("regtype", oid_or_name, regtype),
        udf("regnamespace", oid_or_name, regnamespace),
        udf("regrole", oid_or_name, regrole),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_postgres_prints_them() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10_239), "10239 bytes");
        assert_eq!(size_pretty(10_240), "10 kB");
        assert_eq!(size_pretty(7_434_911), "7261 kB");
        assert_eq!(size_pretty(123_456_789_012), "115 GB");
    }

    #[test]
    fn names_fold_and_quote_as_in_postgres() {
        assert_eq!(object_name("public.Orders"), "orders");
        assert_eq!(object_name("\"Orders\""), "Orders");
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("my table"), "\"my table\"");
    }
}
