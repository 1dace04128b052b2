//! `pg_catalog` and `information_schema`, and the functions tools call
//! (`version()`, `current_database()`, `current_user` …): DataFusion batch
//! SQL over small in-memory tables built from the session's tables.
//!
//! The same context also types the `$n` parameters of prepared statements:
//! the session's tables are registered in it (empty), so DataFusion infers
//! what `WHERE k = $1` wants.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int16Array, Int32Array, Int64Array};
use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::tokenizer::Token;
use pgwire::api::Type;
use weir_sql::SqlError;

use super::compat::{PgSettings, SERVER_VERSION};
use super::encode::{pg_type, pg_type_name};
use super::error::{Failure, sql_error};
use super::text::{strip_pg_catalog, tokens};

/// The database name clients see.
pub(crate) const DATABASE: &str = "weir";
const OWNER_OID: i64 = 10;
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13_000;
const FIRST_TABLE_OID: i64 = 16_400;

/// The catalog tables served, for the error about the others.
const SERVED: &str = "pg_namespace, pg_database, pg_class, pg_tables, pg_type, pg_attribute, \
                      pg_am, pg_roles, information_schema.tables, information_schema.columns, \
                      information_schema.schemata";

/// Functions answered by the catalog context rather than the engine.
const FUNCTIONS: [&str; 9] = [
    "version",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "pg_backend_pid",
    "pg_get_userbyid",
    "pg_table_is_visible",
    "obj_description",
];

/// What the catalog is built from: the session's tables and the
/// connection's user and parameters.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Table name and schema, in name order.
    pub(crate) tables: Vec<(String, SchemaRef)>,
    /// The connected user.
    pub(crate) user: String,
    /// The connection's Postgres parameters.
    pub(crate) settings: PgSettings,
}

/// True when `sql` asks about the catalog (names `pg_catalog`,
/// `information_schema`, a `pg_…` relation that is not one of the
/// session's tables, or a catalog function).
pub(crate) fn is_catalog_query(sql: &str, table_names: &[String]) -> bool {
    let Some(tokens) = tokens(sql) else {
        return false;
    };
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    significant.iter().enumerate().any(|(i, t)| {
        let Token::Word(w) = t else {
            return false;
        };
        let name = w.value.to_ascii_lowercase();
        let called = matches!(significant.get(i + 1), Some(Token::LParen));
        name == "pg_catalog"
            || name == "information_schema"
            || (name.starts_with("pg_") && !table_names.iter().any(|t| t == &w.value))
            || (called && FUNCTIONS.contains(&name.as_str()))
            || (w.quote_style.is_none()
                && ["current_user", "session_user", "current_catalog"].contains(&name.as_str()))
    })
}

/// True when `sql` is a `SELECT` without `FROM` (`SELECT 1`, `SELECT
/// version()`): answered at once, without a job.
pub(crate) fn is_constant_select(sql: &str) -> bool {
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    match statements.as_slice() {
        [Statement::Query(q)] => match q.body.as_ref() {
            SetExpr::Select(s) => s.from.is_empty() && q.with.is_none(),
            _ => false,
        },
        _ => false,
    }
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn nulls(n: usize) -> ArrayRef {
    Arc::new(StringArray::from(vec![None::<&str>; n]))
}

fn ints(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

fn bools(n: usize, value: bool) -> ArrayRef {
    Arc::new(BooleanArray::from(vec![value; n]))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, SqlError> {
    RecordBatch::try_from_iter(columns).map_err(SqlError::from)
}

/// The Postgres types `pg_type` lists: oid, name, length, category.
fn types() -> Vec<(Type, i16, &'static str)> {
    vec![
        (Type::BOOL, 1, "B"),
        (Type::BYTEA, -1, "U"),
        (Type::CHAR, 1, "S"),
        (Type::NAME, 64, "S"),
        (Type::INT8, 8, "N"),
        (Type::INT2, 2, "N"),
        (Type::INT4, 4, "N"),
        (Type::TEXT, -1, "S"),
        (Type::OID, 4, "N"),
        (Type::FLOAT4, 4, "N"),
        (Type::FLOAT8, 8, "N"),
        (Type::UNKNOWN, -2, "X"),
        (Type::VARCHAR, -1, "S"),
        (Type::DATE, 4, "D"),
        (Type::TIME, 8, "D"),
        (Type::TIMESTAMP, 8, "D"),
        (Type::TIMESTAMPTZ, 8, "D"),
        (Type::NUMERIC, -1, "N"),
    ]
}

/// The catalog tables of `snapshot`: (schema, name, rows).
fn tables(snapshot: &Snapshot) -> Result<Vec<(&'static str, &'static str, RecordBatch)>, SqlError> {
    let names: Vec<&str> = snapshot.tables.iter().map(|(n, _)| n.as_str()).collect();
    let n = names.len();
    let oids = || (0..n as i64).map(|i| FIRST_TABLE_OID + i);
    let columns: Vec<(i64, &str, i64, &arrow::datatypes::Field)> = snapshot
        .tables
        .iter()
        .enumerate()
        .flat_map(|(i, (name, schema))| {
            schema.fields().iter().enumerate().map(move |(c, f)| {
                (
                    FIRST_TABLE_OID + i as i64,
                    name.as_str(),
                    c as i64 + 1,
                    f.as_ref(),
                )
            })
        })
        .collect();
    let m = columns.len();
    let types = types();
    let t = types.len();
    let mut out = vec![
        (
            "pg_catalog",
            "pg_namespace",
            batch(vec![
                (
                    "oid",
                    ints([PG_CATALOG_OID, PUBLIC_OID, INFORMATION_SCHEMA_OID]),
                ),
                (
                    "nspname",
                    strings(["pg_catalog", "public", "information_schema"]),
                ),
                ("nspowner", ints([OWNER_OID; 3])),
                ("nspacl", nulls(3)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_database",
            batch(vec![
                ("oid", ints([16_384])),
                ("datname", strings([DATABASE])),
                ("datdba", ints([OWNER_OID])),
                ("encoding", Arc::new(Int32Array::from(vec![6]))),
                ("datcollate", strings(["C"])),
                ("datctype", strings(["C"])),
                ("datistemplate", bools(1, false)),
                ("datallowconn", bools(1, true)),
                ("datconnlimit", Arc::new(Int32Array::from(vec![-1]))),
                ("datacl", nulls(1)),
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
                ("relowner", ints(vec![OWNER_OID; n])),
                ("relam", ints(vec![2; n])),
                ("relkind", strings(vec!["r"; n])),
                (
                    "relnatts",
                    Arc::new(Int16Array::from_iter_values(
                        snapshot.tables.iter().map(|(_, s)| s.fields().len() as i16),
                    )),
                ),
                ("relhasindex", bools(n, false)),
                ("relpersistence", strings(vec!["p"; n])),
                ("reltuples", Arc::new(Float64Array::from(vec![-1.0; n]))),
                ("relpages", Arc::new(Int32Array::from(vec![0; n]))),
                ("relhasrules", bools(n, false)),
                ("relhastriggers", bools(n, false)),
                ("relrowsecurity", bools(n, false)),
                ("relispartition", bools(n, false)),
                ("relacl", nulls(n)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_tables",
            batch(vec![
                ("schemaname", strings(vec!["public"; n])),
                ("tablename", strings(names.iter().copied())),
                ("tableowner", strings(vec![snapshot.user.as_str(); n])),
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
                (
                    "oid",
                    ints(types.iter().map(|(ty, _, _)| i64::from(ty.oid()))),
                ),
                ("typname", strings(types.iter().map(|(ty, _, _)| ty.name()))),
                ("typnamespace", ints(vec![PG_CATALOG_OID; t])),
                ("typowner", ints(vec![OWNER_OID; t])),
                (
                    "typlen",
                    Arc::new(Int16Array::from_iter_values(
                        types.iter().map(|(_, l, _)| *l),
                    )),
                ),
                ("typtype", strings(vec!["b"; t])),
                ("typcategory", strings(types.iter().map(|(_, _, c)| *c))),
                ("typelem", ints(vec![0; t])),
                ("typarray", ints(vec![0; t])),
                ("typrelid", ints(vec![0; t])),
                ("typbasetype", ints(vec![0; t])),
                ("typtypmod", Arc::new(Int32Array::from(vec![-1; t]))),
                ("typnotnull", bools(t, false)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_attribute",
            batch(vec![
                ("attrelid", ints(columns.iter().map(|c| c.0))),
                (
                    "attname",
                    strings(columns.iter().map(|c| c.3.name().as_str())),
                ),
                (
                    "atttypid",
                    ints(
                        columns
                            .iter()
                            .map(|c| i64::from(pg_type(c.3.data_type()).oid())),
                    ),
                ),
                (
                    "attnum",
                    Arc::new(Int16Array::from_iter_values(
                        columns.iter().map(|c| c.2 as i16),
                    )),
                ),
                ("atttypmod", Arc::new(Int32Array::from(vec![-1; m]))),
                (
                    "attnotnull",
                    Arc::new(BooleanArray::from_iter(
                        columns.iter().map(|c| Some(!c.3.is_nullable())),
                    )),
                ),
                ("attisdropped", bools(m, false)),
                ("atthasdef", bools(m, false)),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_am",
            batch(vec![
                ("oid", ints([2])),
                ("amname", strings(["heap"])),
                ("amtype", strings(["t"])),
            ])?,
        ),
        (
            "pg_catalog",
            "pg_roles",
            batch(vec![
                ("oid", ints([OWNER_OID])),
                ("rolname", strings([snapshot.user.as_str()])),
                ("rolsuper", bools(1, true)),
                ("rolcanlogin", bools(1, true)),
            ])?,
        ),
        (
            "information_schema",
            "schemata",
            batch(vec![
                ("catalog_name", strings([DATABASE; 3])),
                (
                    "schema_name",
                    strings(["pg_catalog", "public", "information_schema"]),
                ),
                ("schema_owner", strings([snapshot.user.as_str(); 3])),
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
                ("table_name", strings(columns.iter().map(|c| c.1))),
                (
                    "column_name",
                    strings(columns.iter().map(|c| c.3.name().as_str())),
                ),
                (
                    "ordinal_position",
                    Arc::new(Int32Array::from_iter_values(
                        columns.iter().map(|c| c.2 as i32),
                    )),
                ),
                ("column_default", nulls(m)),
                (
                    "is_nullable",
                    strings(
                        columns
                            .iter()
                            .map(|c| if c.3.is_nullable() { "YES" } else { "NO" }),
                    ),
                ),
                (
                    "data_type",
                    strings(columns.iter().map(|c| pg_type_name(c.3.data_type()))),
                ),
            ])?,
        ),
    ];
    out.sort_by_key(|(schema, name, _)| (*schema, *name));
    Ok(out)
}

/// A function answering the same value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: String,
    signature: Signature,
    value: Option<String>,
    boolean: bool,
}

impl Constant {
    fn text(name: &str, value: Option<String>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name: name.into(),
            signature: Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                Volatility::Stable,
            ),
            value,
            boolean: false,
        })
    }

    fn truth(name: &str) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name: name.into(),
            signature: Signature::any(1, Volatility::Stable),
            value: None,
            boolean: true,
        })
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(if self.boolean {
            DataType::Boolean
        } else {
            DataType::Utf8
        })
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(if self.boolean {
            ScalarValue::Boolean(Some(true))
        } else {
            ScalarValue::Utf8(self.value.clone())
        }))
    }
}

/// A DataFusion context with the catalog tables, the session's tables
/// (empty) and the catalog functions.
pub(crate) fn context(snapshot: &Snapshot) -> Result<SessionContext, SqlError> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_default_catalog_and_schema("datafusion", "public");
    let ctx = SessionContext::new_with_config(config);
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| SqlError::Internal("the catalog context has no default catalog".into()))?;
    catalog.register_schema("information_schema", Arc::new(MemorySchemaProvider::new()))?;
    for (schema, name, rows) in tables(snapshot)? {
        let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
        if schema == "pg_catalog" {
            // Queries lose their `pg_catalog.` qualifiers (Postgres finds
            // catalog relations unqualified too).
            ctx.register_table(TableReference::bare(name), Arc::new(table))?;
        } else {
            ctx.register_table(TableReference::partial(schema, name), Arc::new(table))?;
        }
    }
    for (name, schema) in &snapshot.tables {
        let empty = MemTable::try_new(Arc::clone(schema), vec![vec![]])?;
        ctx.register_table(TableReference::bare(name.as_str()), Arc::new(empty))?;
    }
    let setting = |k: &str| snapshot.settings.get(k).map(str::to_string);
    for udf in [
        Constant::text(
            "version",
            Some(format!(
                "PostgreSQL {SERVER_VERSION} (Weir {}) on {}-linux, compiled by rustc, 64-bit",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            )),
        ),
        Constant::text("current_database", Some(DATABASE.into())),
        Constant::text("current_catalog", Some(DATABASE.into())),
        Constant::text("current_schema", Some("public".into())),
        Constant::text("current_user", Some(snapshot.user.clone())),
        Constant::text("session_user", Some(snapshot.user.clone())),
        Constant::text("pg_get_userbyid", Some(snapshot.user.clone())),
        Constant::text("obj_description", None),
        Constant::text("pg_encoding_to_char", Some("UTF8".into())),
        Constant::text("pg_backend_pid", Some(std::process::id().to_string())),
        Constant::text("current_setting", setting("search_path")),
        Constant::truth("pg_table_is_visible"),
    ] {
        ctx.register_udf(udf);
    }
    Ok(ctx)
}

fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// An error about an unknown catalog relation says which ones exist.
fn catalog_error(error: SqlError, sql: &str) -> Failure {
    let mut info = sql_error(&error, sql);
    info.message = info.message.replace("datafusion.public.", "");
    if info.code == "42P01" || info.message.contains("not found") {
        info.code = "42P01".into();
        info.hint = Some(format!("Weir's Postgres server answers {SERVED}"));
    }
    info
}

/// Runs a catalog query: its schema and rows.
pub(crate) async fn query(
    snapshot: &Snapshot,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), Failure> {
    let ctx = context(snapshot).map_err(|e| sql_error(&e, sql))?;
    let rewritten = strip_pg_catalog(sql);
    let frame = ctx
        .sql_with_options(&rewritten, options())
        .await
        .map_err(|e| catalog_error(e.into(), sql))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|e| catalog_error(e.into(), sql))?;
    Ok((schema, batches))
}

/// The result schema of a catalog query, without running it.
pub(crate) async fn describe(snapshot: &Snapshot, sql: &str) -> Result<SchemaRef, Failure> {
    let ctx = context(snapshot).map_err(|e| sql_error(&e, sql))?;
    let frame = ctx
        .sql_with_options(&strip_pg_catalog(sql), options())
        .await
        .map_err(|e| catalog_error(e.into(), sql))?;
    Ok(Arc::new(frame.schema().as_arrow().clone()))
}

/// The Postgres types of the `$1 … $count` parameters of `sql`, as far as
/// DataFusion can tell; text where it cannot.
pub(crate) async fn parameter_types(snapshot: &Snapshot, sql: &str, count: usize) -> Vec<Type> {
    let mut found: HashMap<String, Option<DataType>> = HashMap::new();
    if let Ok(ctx) = context(snapshot)
        && let Ok(plan) = ctx
            .state()
            .create_logical_plan(&strip_pg_catalog(sql))
            .await
        && let Ok(types) = plan.get_parameter_types()
    {
        found = types;
    }
    (1..=count)
        .map(|i| match found.get(&format!("${i}")) {
            Some(Some(t)) => pg_type(t),
            _ => Type::TEXT,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn snapshot() -> Snapshot {
        Snapshot {
            tables: vec![(
                "t".into(),
                Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("name", DataType::Utf8, true),
                ])),
            )],
            user: "alice".into(),
            settings: PgSettings::default(),
        }
    }

    fn text(batches: &[RecordBatch]) -> String {
        arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string()
    }

    #[test]
    fn routing() {
        let tables = vec!["t".to_string(), "pg_events".to_string()];
        assert!(is_catalog_query(
            "SELECT * FROM pg_catalog.pg_class",
            &tables
        ));
        assert!(is_catalog_query("select version()", &tables));
        assert!(is_catalog_query("SELECT current_user", &tables));
        assert!(is_catalog_query(
            "SELECT * FROM information_schema.tables",
            &tables
        ));
        assert!(!is_catalog_query("SELECT version FROM t", &tables));
        assert!(!is_catalog_query("SELECT * FROM pg_events", &tables));
        assert!(is_constant_select("SELECT 1"));
        assert!(!is_constant_select("SELECT * FROM t"));
    }

    #[tokio::test]
    async fn catalog_queries() {
        let s = snapshot();
        let (_, rows) = query(
            &s,
            "SELECT current_database(), current_user, current_schema()",
        )
        .await
        .unwrap();
        assert!(text(&rows).contains("| weir "), "{}", text(&rows));
        assert!(text(&rows).contains("alice"));
        let (_, rows) = query(
            &s,
            "SELECT table_name, column_name, data_type FROM information_schema.columns \
             ORDER BY ordinal_position",
        )
        .await
        .unwrap();
        let shown = text(&rows);
        assert!(
            shown.contains("| t          | id          | bigint    |"),
            "{shown}"
        );
        assert!(
            shown.contains("| t          | name        | text      |"),
            "{shown}"
        );
        // psql's \dt
        let (_, rows) = query(
            &s,
            "SELECT n.nspname as \"Schema\", c.relname as \"Name\", \
             CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\", \
             pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" \
             FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam \
             WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' \
             AND n.nspname !~ '^pg_toast' AND n.nspname <> 'information_schema' \
             AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2;",
        )
        .await
        .unwrap();
        let shown = text(&rows);
        assert!(
            shown.contains("| public | t    | table | alice |"),
            "{shown}"
        );
        let err = query(&s, "SELECT * FROM pg_catalog.pg_nope")
            .await
            .unwrap_err();
        assert_eq!(err.code, "42P01");
        assert!(err.hint.unwrap().contains("pg_class"));
        let types = parameter_types(&s, "SELECT * FROM t WHERE id = $1 AND name = $2", 2).await;
        assert_eq!(types, vec![Type::INT8, Type::TEXT]);
        let schema = describe(&s, "SELECT oid, relname FROM pg_class")
            .await
            .unwrap();
        assert_eq!(schema.field(1).name(), "relname");
    }
}
