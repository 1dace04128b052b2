//! The rows of `pg_catalog` and `information_schema`: what Weir knows of
//! the session's tables, laid out as Postgres lays out its catalog, and the
//! Postgres types, namespaces and descriptions the functions look up too.
//!
//! Relations Weir has nothing for (`pg_index`, `pg_constraint`,
//! `pg_policy` …) are served empty, with the columns psql reads.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use pgwire::api::Type;
use weir_sql::SqlError;

use super::{CatalogTable, DATABASE, Snapshot};
use crate::pg::encode::{pg_type, pg_type_name};

/// The oid of the role every object belongs to (the connected user).
pub(crate) const OWNER_OID: i64 = 10;
/// `pg_catalog`'s oid.
pub(crate) const PG_CATALOG_OID: i64 = 11;
/// `public`'s oid.
pub(crate) const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13_000;
/// The database's oid.
pub(crate) const DATABASE_OID: i64 = 16_384;
const FIRST_TABLE_OID: i64 = 16_400;
/// Default expressions (computed columns) get oids from here on.
const FIRST_ATTRDEF_OID: i64 = 900_000;
/// The `heap` access method (every table's, as in Postgres).
const HEAP_OID: i64 = 2;
const DEFAULT_TABLESPACE_OID: i64 = 1663;
const GLOBAL_TABLESPACE_OID: i64 = 1664;
/// The database's default collation.
const DEFAULT_COLLATION_OID: i64 = 100;
const C_COLLATION_OID: i64 = 950;
const POSIX_COLLATION_OID: i64 = 951;
/// Postgres' `UTF8` encoding number.
pub(crate) const UTF8_ENCODING: i32 = 6;

/// Catalog relation names and the oids Postgres gives them, for
/// `obj_description(oid, 'pg_class')` and `pg_description.classoid`.
pub(crate) const CATALOG_RELATIONS: [(&str, i64); 8] = [
    ("pg_am", 2601),
    ("pg_attribute", 1249),
    ("pg_class", 1259),
    ("pg_collation", 3456),
    ("pg_database", 1262),
    ("pg_namespace", 2615),
    ("pg_tablespace", 1213),
    ("pg_type", 1247),
];

fn catalog_relation(name: &str) -> i64 {
    CATALOG_RELATIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, oid)| *oid)
}

/// The schemas: oid, name and description.
pub(crate) const NAMESPACES: [(i64, &str, Option<&str>); 3] = [
    (PG_CATALOG_OID, "pg_catalog", Some("system catalog schema")),
    (PUBLIC_OID, "public", Some("standard public schema")),
    (INFORMATION_SCHEMA_OID, "information_schema", None),
];

/// A Postgres type the catalog knows: its `pg_type` row and the name
/// `format_type` gives it.
pub(crate) struct PgType {
    pub(crate) ty: Type,
    pub(crate) sql_name: &'static str,
    len: i16,
    category: &'static str,
    storage: &'static str,
    collation: i64,
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
    pg(Type::BPCHAR, "character", -1, "S", "x", DEFAULT_COLLATION_OID),
    pg(Type::VARCHAR, "character varying", -1, "S", "x", DEFAULT_COLLATION_OID),
    pg(Type::DATE, "date", 4, "D", "p", 0),
    pg(Type::TIME, "time without time zone", 8, "D", "p", 0),
    pg(Type::TIMESTAMP, "timestamp without time zone", 8, "D", "p", 0),
    pg(Type::TIMESTAMPTZ, "timestamp with time zone", 8, "D", "p", 0),
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

/// The oid of the session's `index`th table.
fn table_oid(index: usize) -> i64 {
    FIRST_TABLE_OID + index as i64
}

/// The session's table with `oid`.
pub(crate) fn table_by_oid(snapshot: &Snapshot, oid: i64) -> Option<&CatalogTable> {
    let index = usize::try_from(oid.checked_sub(FIRST_TABLE_OID)?).ok()?;
    snapshot.tables.get(index)
}

/// The oid of the session's table `name`.
pub(crate) fn table_oid_of(snapshot: &Snapshot, name: &str) -> Option<i64> {
    snapshot
        .tables
        .iter()
        .position(|t| t.name == name)
        .map(table_oid)
}

/// `pg_description`'s rows: object, catalog, column (0: the object) and
/// text. A watermark is described on its column.
pub(crate) fn descriptions(snapshot: &Snapshot) -> Vec<(i64, i64, i32, String)> {
    let mut out: Vec<(i64, i64, i32, String)> = NAMESPACES
        .iter()
        .filter_map(|(oid, _, d)| {
            d.map(|d| (*oid, catalog_relation("pg_namespace"), 0, d.to_string()))
        })
        .collect();
    for (i, table) in snapshot.tables.iter().enumerate() {
        if let Some((column, expr)) = &table.watermark
            && let Some(position) = table.schema.fields().iter().position(|f| f.name() == column)
        {
            out.push((
                table_oid(i),
                catalog_relation("pg_class"),
                position as i32 + 1,
                format!("watermark: {expr}"),
            ));
        }
    }
    out
}

/// The description of an object (`subid` 0) or of a table column.
pub(crate) fn description(
    snapshot: &Snapshot,
    oid: i64,
    catalog: Option<&str>,
    subid: i32,
) -> Option<String> {
    let class = catalog.map(catalog_relation);
    descriptions(snapshot)
        .into_iter()
        .find(|(o, c, s, _)| *o == oid && *s == subid && class.is_none_or(|class| class == *c))
        .map(|(_, _, _, d)| d)
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn texts(values: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn nulls(n: usize) -> ArrayRef {
    Arc::new(StringArray::from(vec![None::<&str>; n]))
}

/// `n` NULL text arrays (`aclitem[]`, `text[]` … columns).
fn null_lists(n: usize) -> ArrayRef {
    let field = Arc::new(Field::new("item", DataType::Utf8, true));
    Arc::new(ListArray::new_null(field, n))
}

fn ints(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

fn int32s(values: impl IntoIterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(values))
}

fn int16s(values: impl IntoIterator<Item = i16>) -> ArrayRef {
    Arc::new(Int16Array::from_iter_values(values))
}

fn bools(n: usize, value: bool) -> ArrayRef {
    Arc::new(BooleanArray::from(vec![value; n]))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, SqlError> {
    RecordBatch::try_from_iter(columns).map_err(SqlError::from)
}

/// A column of a catalog relation Weir serves empty.
enum Col {
    Oid,
    Int2,
    Int4,
    Float4,
    Bool,
    Text,
    TextArray,
}

/// An empty relation with `columns`.
fn empty(columns: &[(&str, Col)]) -> Result<RecordBatch, SqlError> {
    let columns = columns
        .iter()
        .map(|(name, col)| {
            let array: ArrayRef = match col {
                Col::Oid => ints([]),
                Col::Int2 => int16s([]),
                Col::Int4 => int32s([]),
                Col::Float4 => Arc::new(Float32Array::from(Vec::<f32>::new())),
                Col::Bool => bools(0, false),
                Col::Text => strings([]),
                Col::TextArray => null_lists(0),
            };
            (*name, array)
        })
        .collect();
    batch(columns)
}

/// The relations Postgres has and Weir answers with no rows.
fn empty_relations() -> Result<Vec<(&'static str, RecordBatch)>, SqlError> {
    use Col::*;
    Ok(vec![
        (
            "pg_constraint",
            empty(&[
                ("oid", Oid),
                ("conname", Text),
                ("connamespace", Oid),
                ("contype", Text),
                ("condeferrable", Bool),
                ("condeferred", Bool),
                ("convalidated", Bool),
                ("conrelid", Oid),
                ("contypid", Oid),
                ("conindid", Oid),
                ("conparentid", Oid),
                ("confrelid", Oid),
                ("conislocal", Bool),
                ("coninhcount", Int2),
                ("connoinherit", Bool),
                ("conkey", TextArray),
                ("confkey", TextArray),
            ])?,
        ),
        (
            "pg_foreign_table",
            empty(&[
                ("ftrelid", Oid),
                ("ftserver", Oid),
                ("ftoptions", TextArray),
            ])?,
        ),
        (
            "pg_index",
            empty(&[
                ("indexrelid", Oid),
                ("indrelid", Oid),
                ("indnatts", Int2),
                ("indnkeyatts", Int2),
                ("indisunique", Bool),
                ("indnullsnotdistinct", Bool),
                ("indisprimary", Bool),
                ("indisexclusion", Bool),
                ("indimmediate", Bool),
                ("indisclustered", Bool),
                ("indisvalid", Bool),
                ("indisready", Bool),
                ("indislive", Bool),
                ("indisreplident", Bool),
                ("indkey", TextArray),
            ])?,
        ),
        (
            "pg_inherits",
            empty(&[
                ("inhrelid", Oid),
                ("inhparent", Oid),
                ("inhseqno", Int4),
                ("inhdetachpending", Bool),
            ])?,
        ),
        (
            "pg_policy",
            empty(&[
                ("oid", Oid),
                ("polname", Text),
                ("polrelid", Oid),
                ("polcmd", Text),
                ("polpermissive", Bool),
                ("polroles", TextArray),
                ("polqual", Text),
                ("polwithcheck", Text),
            ])?,
        ),
        (
            "pg_publication",
            empty(&[
                ("oid", Oid),
                ("pubname", Text),
                ("pubowner", Oid),
                ("puballtables", Bool),
                ("pubinsert", Bool),
                ("pubupdate", Bool),
                ("pubdelete", Bool),
                ("pubtruncate", Bool),
                ("pubviaroot", Bool),
            ])?,
        ),
        (
            "pg_publication_namespace",
            empty(&[("oid", Oid), ("pnpubid", Oid), ("pnnspid", Oid)])?,
        ),
        (
            "pg_publication_rel",
            empty(&[
                ("oid", Oid),
                ("prpubid", Oid),
                ("prrelid", Oid),
                ("prqual", Text),
                ("prattrs", TextArray),
            ])?,
        ),
        (
            "pg_rewrite",
            empty(&[
                ("oid", Oid),
                ("rulename", Text),
                ("ev_class", Oid),
                ("ev_type", Text),
                ("ev_enabled", Text),
                ("is_instead", Bool),
            ])?,
        ),
        (
            "pg_shdescription",
            empty(&[("objoid", Oid), ("classoid", Oid), ("description", Text)])?,
        ),
        (
            "pg_statistic_ext",
            empty(&[
                ("oid", Oid),
                ("stxrelid", Oid),
                ("stxname", Text),
                ("stxnamespace", Oid),
                ("stxowner", Oid),
                ("stxstattarget", Int2),
                ("stxkeys", TextArray),
                ("stxkind", TextArray),
            ])?,
        ),
        (
            "pg_trigger",
            empty(&[
                ("oid", Oid),
                ("tgrelid", Oid),
                ("tgparentid", Oid),
                ("tgname", Text),
                ("tgfoid", Oid),
                ("tgtype", Int2),
                ("tgenabled", Text),
                ("tgisinternal", Bool),
                ("tgconstraint", Oid),
            ])?,
        ),
        (
            "pg_views",
            empty(&[
                ("schemaname", Text),
                ("viewname", Text),
                ("viewowner", Text),
                ("definition", Text),
            ])?,
        ),
        (
            "pg_matviews",
            empty(&[
                ("schemaname", Text),
                ("matviewname", Text),
                ("matviewowner", Text),
                ("definition", Text),
            ])?,
        ),
        (
            "pg_sequence",
            empty(&[
                ("seqrelid", Oid),
                ("seqtypid", Oid),
                ("seqstart", Oid),
                ("seqincrement", Oid),
            ])?,
        ),
        (
            "pg_proc",
            empty(&[
                ("oid", Oid),
                ("proname", Text),
                ("pronamespace", Oid),
                ("proowner", Oid),
                ("prokind", Text),
                ("prorettype", Oid),
            ])?,
        ),
        (
            "pg_stats",
            empty(&[
                ("schemaname", Text),
                ("tablename", Text),
                ("attname", Text),
                ("null_frac", Float4),
            ])?,
        ),
    ])
}

/// One column of one of the session's tables.
struct Column<'a> {
    table_oid: i64,
    table: &'a str,
    number: i16,
    field: &'a Field,
    /// The expression of a computed column.
    computed: Option<&'a str>,
}

/// The catalog relations of `snapshot`: (schema, name, rows), sorted.
pub(crate) fn tables(
    snapshot: &Snapshot,
) -> Result<Vec<(&'static str, &'static str, RecordBatch)>, SqlError> {
    let names: Vec<&str> = snapshot.tables.iter().map(|t| t.name.as_str()).collect();
    let n = names.len();
    let oids = || (0..n).map(table_oid);
    let columns: Vec<Column> = snapshot
        .tables
        .iter()
        .enumerate()
        .flat_map(|(i, table)| {
            table
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(move |(c, f)| Column {
                    table_oid: table_oid(i),
                    table: table.name.as_str(),
                    number: c as i16 + 1,
                    field: f.as_ref(),
                    computed: table
                        .computed
                        .iter()
                        .find(|(name, _)| name == f.name())
                        .map(|(_, expr)| expr.as_str()),
                })
        })
        .collect();
    let m = columns.len();
    let column_types: Vec<(i64, i32)> = columns
        .iter()
        .map(|c| column_type(c.field.data_type()))
        .collect();
    let type_of = |oid: i64| type_by_oid(oid).unwrap_or(&TYPES[7]);
    let defaults: Vec<&Column> = columns.iter().filter(|c| c.computed.is_some()).collect();
    let d = defaults.len();
    let descriptions = descriptions(snapshot);
    let t = TYPES.len();
    let ns = NAMESPACES.len();
    let user = snapshot.user.as_str();
    let mut out = vec![
        (
            "pg_catalog",
            "pg_namespace",
            batch(vec![
                ("oid", ints(NAMESPACES.iter().map(|(oid, _, _)| *oid))),
                ("nspname", strings(NAMESPACES.iter().map(|(_, name, _)| *name))),
                ("nspowner", ints(vec![OWNER_OID; ns])),
                ("nspacl", null_lists(ns)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_database",
            batch(vec![
                ("oid", ints([DATABASE_OID])),
                ("datname", strings([DATABASE])),
                ("datdba", ints([OWNER_OID])),
                ("encoding", int32s([UTF8_ENCODING])),
                ("datlocprovider", strings(["c"])),
                ("datistemplate", bools(1, false)),
                ("datallowconn", bools(1, true)),
                ("datconnlimit", int32s([-1])),
                ("dattablespace", ints([DEFAULT_TABLESPACE_OID])),
                ("datcollate", strings(["C"])),
                ("datctype", strings(["C"])),
                ("daticulocale", nulls(1)),
                ("daticurules", nulls(1)),
                ("datcollversion", nulls(1)),
                ("datacl", null_lists(1)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_tablespace",
            batch(vec![
                ("oid", ints([DEFAULT_TABLESPACE_OID, GLOBAL_TABLESPACE_OID])),
                ("spcname", strings(["pg_default", "pg_global"])),
                ("spcowner", ints([OWNER_OID; 2])),
                ("spcacl", null_lists(2)),
                ("spcoptions", null_lists(2)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_class",
            batch(vec![
                ("oid", ints(oids())),
                ("relname", strings(names.iter().copied())),
                ("relnamespace", ints(vec![PUBLIC_OID; n])),
                ("reltype", ints(vec![0; n])),
                ("reloftype", ints(vec![0; n])),
                ("relowner", ints(vec![OWNER_OID; n])),
                ("relam", ints(vec![HEAP_OID; n])),
                ("relfilenode", ints(vec![0; n])),
                ("reltablespace", ints(vec![0; n])),
                ("relpages", int32s(vec![0; n])),
                ("reltuples", Arc::new(Float32Array::from(vec![-1.0; n]))),
                ("relallvisible", int32s(vec![0; n])),
                ("reltoastrelid", ints(vec![0; n])),
                ("relhasindex", bools(n, false)),
                ("relisshared", bools(n, false)),
                ("relpersistence", strings(vec!["p"; n])),
                ("relkind", strings(vec!["r"; n])),
                (
                    "relnatts",
                    int16s(snapshot.tables.iter().map(|t| t.schema.fields().len() as i16)),
                ),
                ("relchecks", int16s(vec![0; n])),
                ("relhasrules", bools(n, false)),
                ("relhastriggers", bools(n, false)),
                ("relhassubclass", bools(n, false)),
                ("relrowsecurity", bools(n, false)),
                ("relforcerowsecurity", bools(n, false)),
                ("relispopulated", bools(n, true)),
                ("relreplident", strings(vec!["d"; n])),
                ("relispartition", bools(n, false)),
                ("relrewrite", ints(vec![0; n])),
                ("relacl", null_lists(n)),
                ("reloptions", null_lists(n)),
                ("relpartbound", nulls(n)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_tables",
            batch(vec![
                ("schemaname", strings(vec!["public"; n])),
                ("tablename", strings(names.iter().copied())),
                ("tableowner", strings(vec![user; n])),
                ("tablespace", nulls(n)),
                ("hasindexes", bools(n, false)),
                ("hasrules", bools(n, false)),
                ("hastriggers", bools(n, false)),
                ("rowsecurity", bools(n, false)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_type",
            batch(vec![
                ("oid", ints(TYPES.iter().map(|ty| i64::from(ty.ty.oid())))),
                ("typname", strings(TYPES.iter().map(|ty| ty.ty.name()))),
                ("typnamespace", ints(vec![PG_CATALOG_OID; t])),
                ("typowner", ints(vec![OWNER_OID; t])),
                ("typlen", int16s(TYPES.iter().map(|ty| ty.len))),
                ("typbyval", bools(t, false)),
                ("typtype", strings(vec!["b"; t])),
                ("typcategory", strings(TYPES.iter().map(|ty| ty.category))),
                ("typisdefined", bools(t, true)),
                ("typdelim", strings(vec![","; t])),
                ("typrelid", ints(vec![0; t])),
                ("typelem", ints(vec![0; t])),
                ("typarray", ints(vec![0; t])),
                ("typstorage", strings(TYPES.iter().map(|ty| ty.storage))),
                ("typnotnull", bools(t, false)),
                ("typbasetype", ints(vec![0; t])),
                ("typtypmod", int32s(vec![-1; t])),
                ("typndims", int32s(vec![0; t])),
                ("typcollation", ints(TYPES.iter().map(|ty| ty.collation))),
                ("typdefault", nulls(t)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_attribute",
            batch(vec![
                ("attrelid", ints(columns.iter().map(|c| c.table_oid))),
                ("attname", strings(columns.iter().map(|c| c.field.name().as_str()))),
                ("atttypid", ints(column_types.iter().map(|(oid, _)| *oid))),
                ("attstattarget", int16s(vec![-1; m])),
                ("attlen", int16s(column_types.iter().map(|(oid, _)| type_of(*oid).len))),
                ("attnum", int16s(columns.iter().map(|c| c.number))),
                ("attndims", int16s(vec![0; m])),
                ("atttypmod", int32s(column_types.iter().map(|(_, m)| *m))),
                (
                    "attstorage",
                    strings(column_types.iter().map(|(oid, _)| type_of(*oid).storage)),
                ),
                ("attcompression", strings(vec![""; m])),
                (
                    "attnotnull",
                    Arc::new(BooleanArray::from_iter(
                        columns.iter().map(|c| Some(!c.field.is_nullable())),
                    )),
                ),
                (
                    "atthasdef",
                    Arc::new(BooleanArray::from_iter(
                        columns.iter().map(|c| Some(c.computed.is_some())),
                    )),
                ),
                ("atthasmissing", bools(m, false)),
                ("attidentity", strings(vec![""; m])),
                (
                    "attgenerated",
                    strings(columns.iter().map(|c| if c.computed.is_some() { "s" } else { "" })),
                ),
                ("attisdropped", bools(m, false)),
                ("attislocal", bools(m, true)),
                ("attinhcount", int16s(vec![0; m])),
                (
                    "attcollation",
                    ints(column_types.iter().map(|(oid, _)| type_of(*oid).collation)),
                ),
                ("attacl", null_lists(m)),
                ("attoptions", null_lists(m)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_attrdef",
            batch(vec![
                ("oid", ints((0..d as i64).map(|i| FIRST_ATTRDEF_OID + i))),
                ("adrelid", ints(defaults.iter().map(|c| c.table_oid))),
                ("adnum", int16s(defaults.iter().map(|c| c.number))),
                // Weir keeps expressions as SQL text: `pg_get_expr` shows it.
                ("adbin", strings(defaults.iter().filter_map(|c| c.computed))),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_description",
            batch(vec![
                ("objoid", ints(descriptions.iter().map(|d| d.0))),
                ("classoid", ints(descriptions.iter().map(|d| d.1))),
                ("objsubid", int32s(descriptions.iter().map(|d| d.2))),
                ("description", strings(descriptions.iter().map(|d| d.3.as_str()))),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_collation",
            batch(vec![
                (
                    "oid",
                    ints([DEFAULT_COLLATION_OID, C_COLLATION_OID, POSIX_COLLATION_OID]),
                ),
                ("collname", strings(["default", "C", "POSIX"])),
                ("collnamespace", ints([PG_CATALOG_OID; 3])),
                ("collowner", ints([OWNER_OID; 3])),
                ("collprovider", strings(["d", "c", "c"])),
                ("collisdeterministic", bools(3, true)),
                ("collencoding", int32s([-1; 3])),
                ("collcollate", texts([None, Some("C".into()), Some("POSIX".into())])),
                ("collctype", texts([None, Some("C".into()), Some("POSIX".into())])),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_am",
            batch(vec![
                ("oid", ints([HEAP_OID])),
                ("amname", strings(["heap"])),
                ("amhandler", ints([0])),
                ("amtype", strings(["t"])),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_roles",
            batch(vec![
                ("oid", ints([OWNER_OID])),
                ("rolname", strings([user])),
                ("rolsuper", bools(1, true)),
                ("rolinherit", bools(1, true)),
                ("rolcreaterole", bools(1, true)),
                ("rolcreatedb", bools(1, true)),
                ("rolcanlogin", bools(1, true)),
                ("rolreplication", bools(1, false)),
                ("rolconnlimit", int32s([-1])),
                ("rolbypassrls", bools(1, true)),
                ("rolconfig", null_lists(1)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_settings",
            {
                let settings = snapshot.settings.all();
                batch(vec![
                    ("name", strings(settings.iter().map(|(k, _)| *k))),
                    ("setting", strings(settings.iter().map(|(_, v)| *v))),
                ])?
            },
        ),
        (
            "information_schema",
            "schemata",
            batch(vec![
                ("catalog_name", strings([DATABASE; 3])),
                ("schema_name", strings(NAMESPACES.iter().map(|(_, name, _)| *name))),
                ("schema_owner", strings([user; 3])),
            ])?,
        ),
        (
            "information_schema",
            "tables",
            batch(vec![
                ("table_catalog", strings(vec![DATABASE; n])),
                ("table_schema", strings(vec!["public"; n])),
                ("table_name", strings(names.iter().copied())),
                ("table_type", strings(vec!["BASE TABLE"; n])),
            ])?,
        ),
        (
            "information_schema",
            "columns",
            batch(vec![
                ("table_catalog", strings(vec![DATABASE; m])),
                ("table_schema", strings(vec!["public"; m])),
                ("table_name", strings(columns.iter().map(|c| c.table))),
                ("column_name", strings(columns.iter().map(|c| c.field.name().as_str()))),
                ("ordinal_position", int32s(columns.iter().map(|c| i32::from(c.number)))),
                ("column_default", nulls(m)),
                (
                    "is_nullable",
                    strings(
                        columns
                            .iter()
                            .map(|c| if c.field.is_nullable() { "YES" } else { "NO" }),
                    ),
                ),
                (
                    "data_type",
                    strings(columns.iter().map(|c| pg_type_name(c.field.data_type()))),
                ),
                (
                    "is_generated",
                    strings(
                        columns
                            .iter()
                            .map(|c| if c.computed.is_some() { "ALWAYS" } else { "NEVER" }),
                    ),
                ),
                (
                    "generation_expression",
                    texts(columns.iter().map(|c| c.computed.map(str::to_string))),
                ),
            ])?,
        ),
    ];
    for (name, rows) in empty_relations()? {
        out.push(("pg_catalog", name, rows));
    }
    out.sort_by_key(|(schema, name, _)| (*schema, *name));
    Ok(out)
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
            of(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
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
