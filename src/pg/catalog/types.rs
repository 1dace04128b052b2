//! The Postgres types the catalog knows: their `pg_type` rows, the names
//! `format_type` prints, and the type a Weir column shows as.

use arrow::datatypes::{DataType, TimeUnit};
use pgwire::api::Type;

use crate::pg::encode::pg_type;

/// The database's default collation.
pub(crate) const DEFAULT_COLLATION_OID: i64 = 100;
/// The `C` collation (that of `name`).
pub(crate) const C_COLLATION_OID: i64 = 950;

/// A Postgres type the catalog knows: its `pg_type` row and the name
/// `format_type` gives it.
pub(crate) struct PgType {
    pub(crate) ty: Type,
    pub(crate) sql_name: &'static str,
    pub(crate) len: i16,
    pub(crate) category: &'static str,
    pub(crate) storage: &'static str,
    pub(crate) collation: i64,
}

const fn pg(
    ty: Type,
    sql_name: &'static str,
    len: i16,
    category: &'static str,
    storage: &'static str,
    collation: i64,
) -> PgType {
    PgType {
        ty,
        sql_name,
        len,
        category,
        storage,
        collation,
    }
}

/// The types `pg_type` lists: those Weir's columns map to, and those the
/// catalog's own columns and casts use.
pub(crate) static TYPES: [PgType; 24] = [
    pg(Type::BOOL, "boolean", 1, "B", "p", 0),
    pg(Type::BYTEA, "bytea", -1, "U", "x", 0),
    pg(Type::CHAR, "\"char\"", 1, "Z", "p", 0),
    pg(Type::NAME, "name", 64, "S", "p", C_COLLATION_OID),
    pg(Type::INT8, "bigint", 8, "N", "p", 0),
    pg(Type::INT2, "smallint", 2, "N", "p", 0),
    pg(Type::INT4, "integer", 4, "N", "p", 0),
    pg(Type::TEXT, "text", -1, "S", "x", DEFAULT_COLLATION_OID),
    pg(Type::OID, "oid", 4, "N", "p", 0),
    pg(Type::FLOAT4, "real", 4, "N", "p", 0),
    pg(Type::FLOAT8, "double precision", 8, "N", "p", 0),
    pg(Type::UNKNOWN, "unknown", -2, "X", "p", 0),
    pg(
        Type::BPCHAR,
        "character",
        -1,
        "S",
        "x",
        DEFAULT_COLLATION_OID,
    ),
    pg(
        Type::VARCHAR,
        "character varying",
        -1,
        "S",
        "x",
        DEFAULT_COLLATION_OID,
    ),
    pg(Type::DATE, "date", 4, "D", "p", 0),
    pg(Type::TIME, "time without time zone", 8, "D", "p", 0),
    pg(
        Type::TIMESTAMP,
        "timestamp without time zone",
        8,
        "D",
        "p",
        0,
    ),
    pg(
        Type::TIMESTAMPTZ,
        "timestamp with time zone",
        8,
        "D",
        "p",
        0,
    ),
    pg(Type::INTERVAL, "interval", 16, "T", "p", 0),
    pg(Type::NUMERIC, "numeric", -1, "N", "m", 0),
    pg(Type::REGCLASS, "regclass", 4, "N", "p", 0),
    pg(Type::REGTYPE, "regtype", 4, "N", "p", 0),
    pg(Type::REGNAMESPACE, "regnamespace", 4, "N", "p", 0),
    pg(Type::REGROLE, "regrole", 4, "N", "p", 0),
];

/// The type with `oid`.
pub(crate) fn type_by_oid(oid: i64) -> Option<&'static PgType> {
    TYPES.iter().find(|t| i64::from(t.ty.oid()) == oid)
}

/// `format_type(oid, typmod)`: the type's SQL name with its modifier, as
/// Postgres prints it (`numeric(10,2)`, `timestamp(3) without time zone`).
pub(crate) fn format_type(oid: i64, typmod: Option<i64>) -> String {
    let Some(t) = type_by_oid(oid) else {
        return "???".into();
    };
    let modifier = typmod.filter(|m| *m >= 0);
    match (t.ty.clone(), modifier) {
        (Type::TIMESTAMP, Some(p)) => format!("timestamp({p}) without time zone"),
        (Type::TIMESTAMPTZ, Some(p)) => format!("timestamp({p}) with time zone"),
        (Type::TIME, Some(p)) => format!("time({p}) without time zone"),
        (Type::NUMERIC, Some(m)) if m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
        }
        (Type::VARCHAR, Some(m)) if m >= 4 => format!("character varying({})", m - 4),
        (Type::BPCHAR, Some(m)) if m >= 4 => format!("character({})", m - 4),
        _ => t.sql_name.to_string(),
    }
}

/// The type oid and modifier of a column of `data_type`: the precision of
/// timestamps, the precision and scale of decimals.
pub(crate) fn column_type(data_type: &DataType) -> (i64, i32) {
    let oid = i64::from(pg_type(data_type).oid());
    let precision = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        // Finer than Postgres keeps: no modifier says it.
        TimeUnit::Nanosecond => -1,
    };
    let typmod = match data_type {
        DataType::Timestamp(unit, _) | DataType::Time32(unit) | DataType::Time64(unit) => {
            precision(unit)
        }
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s)
            if *s >= 0 =>
        {
            ((i32::from(*p) << 16) | i32::from(*s as u8)) + 4
        }
        _ => -1,
    };
    (oid, typmod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_print_as_postgres_prints_them() {
        let of = |dt: DataType| {
            let (oid, typmod) = column_type(&dt);
            format_type(oid, Some(i64::from(typmod)))
        };
        assert_eq!(of(DataType::Int64), "bigint");
        assert_eq!(of(DataType::Int32), "integer");
        assert_eq!(of(DataType::Utf8), "text");
        assert_eq!(of(DataType::Boolean), "boolean");
        assert_eq!(of(DataType::Float64), "double precision");
        assert_eq!(of(DataType::Decimal128(10, 2)), "numeric(10,2)");
        assert_eq!(
            of(DataType::Timestamp(TimeUnit::Millisecond, None)),
            "timestamp(3) without time zone"
        );
        assert_eq!(
            of(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            "timestamp(6) with time zone"
        );
        assert_eq!(
            of(DataType::Timestamp(TimeUnit::Nanosecond, None)),
            "timestamp without time zone"
        );
        assert_eq!(of(DataType::Date32), "date");
        assert_eq!(of(DataType::Binary), "bytea");
        assert_eq!(format_type(1043, Some(14)), "character varying(10)");
        assert_eq!(format_type(1700, None), "numeric");
        assert_eq!(format_type(99_999, None), "???");
    }
}
