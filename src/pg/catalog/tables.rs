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
use arrow::datatypes::{DataType, Field};
use weir_sql::SqlError;

use super::types::{C_COLLATION_OID, DEFAULT_COLLATION_OID, TYPES, column_type, type_by_oid};
use super::{CatalogTable, DATABASE, Snapshot, empty};
use crate::pg::encode::pg_type_name;

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
            && let Some(position) = table
                .schema
                .fields()
                .iter()
                .position(|f| f.name() == column)
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
    // pg_tables lists tables only; views are in pg_class (relkind 'v').
    let base: Vec<&str> = snapshot
        .tables
        .iter()
        .filter(|t| !t.view)
        .map(|t| t.name.as_str())
        .collect();
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
                (
                    "nspname",
                    strings(NAMESPACES.iter().map(|(_, name, _)| *name)),
                ),
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
                (
                    "relkind",
                    strings(
                        snapshot
                            .tables
                            .iter()
                            .map(|t| if t.view { "v" } else { "r" }),
                    ),
                ),
                (
                    "relnatts",
                    int16s(
                        snapshot
                            .tables
                            .iter()
                            .map(|t| t.schema.fields().len() as i16),
                    ),
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
                ("schemaname", strings(vec!["public"; base.len()])),
                ("tablename", strings(base.iter().copied())),
                ("tableowner", strings(vec![user; base.len()])),
                ("tablespace", nulls(base.len())),
                ("hasindexes", bools(base.len(), false)),
                ("hasrules", bools(base.len(), false)),
                ("hastriggers", bools(base.len(), false)),
                ("rowsecurity", bools(base.len(), false)),
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
                (
                    "attname",
                    strings(columns.iter().map(|c| c.field.name().as_str())),
                ),
                ("atttypid", ints(column_types.iter().map(|(oid, _)| *oid))),
                ("attstattarget", int16s(vec![-1; m])),
                (
                    "attlen",
                    int16s(column_types.iter().map(|(oid, _)| type_of(*oid).len)),
                ),
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
                    strings(
                        columns
                            .iter()
                            .map(|c| if c.computed.is_some() { "s" } else { "" }),
                    ),
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
                (
                    "description",
                    strings(descriptions.iter().map(|d| d.3.as_str())),
                ),
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
                (
                    "collcollate",
                    texts([None, Some("C".into()), Some("POSIX".into())]),
                ),
                (
                    "collctype",
                    texts([None, Some("C".into()), Some("POSIX".into())]),
                ),
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
                ("rolvaliduntil", nulls(1)),
                ("rolbypassrls", bools(1, true)),
                ("rolconfig", null_lists(1)),
            ])?,
        ),
        ("pg_catalog", "pg_settings", {
            let settings = snapshot.settings.all();
            batch(vec![
                ("name", strings(settings.iter().map(|(k, _)| *k))),
                ("setting", strings(settings.iter().map(|(_, v)| *v))),
            ])?
        }),
        (
            "information_schema",
            "schemata",
            batch(vec![
                ("catalog_name", strings([DATABASE; 3])),
                (
                    "schema_name",
                    strings(NAMESPACES.iter().map(|(_, name, _)| *name)),
                ),
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
                (
                    "table_type",
                    strings(snapshot.tables.iter().map(
                        |t| {
                            if t.view { "VIEW" } else { "BASE TABLE" }
                        },
                    )),
                ),
            ])?,
        ),
        (
            "information_schema",
            "columns",
            batch(vec![
                ("table_catalog", strings(vec![DATABASE; m])),
                ("table_schema", strings(vec!["public"; m])),
                ("table_name", strings(columns.iter().map(|c| c.table))),
                (
                    "column_name",
                    strings(columns.iter().map(|c| c.field.name().as_str())),
                ),
                (
                    "ordinal_position",
                    int32s(columns.iter().map(|c| i32::from(c.number))),
                ),
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
                    strings(columns.iter().map(|c| {
                        if c.computed.is_some() {
                            "ALWAYS"
                        } else {
                            "NEVER"
                        }
                    })),
                ),
                (
                    "generation_expression",
                    texts(columns.iter().map(|c| c.computed.map(str::to_string))),
                ),
            ])?,
        ),
    ];
    for (name, rows) in empty::relations()? {
        out.push(("pg_catalog", name, rows));
    }
    out.sort_by_key(|(schema, name, _)| (*schema, *name));
    Ok(out)
}
