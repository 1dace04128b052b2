//! `pg_catalog` and `information_schema`, and the functions tools call
//! (`version()`, `current_database()`, `format_type()` …): DataFusion batch
//! SQL over small in-memory tables built from the session's tables, so
//! that psql's `\d`, `\l`, `\dn` and drivers' catalog queries work.
//!
//! A query goes through three steps: its `pg_catalog.` qualifiers go
//! ([`strip_pg_catalog`]), the Postgres constructs DataFusion lacks are
//! rewritten on the parsed statement ([`rewrite`]), and DataFusion plans
//! and runs it. A query DataFusion cannot plan that reads a relation Weir
//! serves empty has no rows ([`shape`]); its columns are named as Postgres
//! names them, and so are those of every answer.
//!
//! The same context also types the `$n` parameters of prepared statements:
//! the session's tables are registered in it (empty), so DataFusion infers
//! what `WHERE k = $1` wants.

mod empty;
mod functions;
mod rewrite;
mod shape;
mod tables;
mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::common::config::Dialect;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::tokenizer::Token;
use pgwire::api::Type;
use weir_sql::SqlError;
use weir_sql::catalog::StreamTable;

use super::compat::PgSettings;
use super::encode::pg_type;
use super::error::{Failure, sql_error};
use super::text::{strip_pg_catalog, tokens};

/// The database name clients see.
pub(crate) const DATABASE: &str = "weir";

/// The catalog tables served, for the error about the others.
const SERVED: &str = "pg_namespace, pg_database, pg_class, pg_tables, pg_type, pg_attribute, \
                      pg_attrdef, pg_description, pg_collation, pg_tablespace, pg_am, pg_roles, \
                      pg_settings, information_schema.tables, information_schema.columns, \
                      information_schema.schemata, and empty pg_index, pg_constraint, \
                      pg_inherits, pg_trigger, pg_policy, pg_rewrite …";

/// Casts to these types make a statement a catalog query.
const REG_TYPES: [&str; 4] = ["regclass", "regtype", "regnamespace", "regrole"];

/// One of the session's tables, as the catalog shows it.
#[derive(Debug, Clone)]
pub(crate) struct CatalogTable {
    /// The table's name.
    pub(crate) name: String,
    /// Physical then computed columns.
    pub(crate) schema: SchemaRef,
    /// The computed columns: name and expression as written.
    pub(crate) computed: Vec<(String, String)>,
    /// The watermark: its column and expression as written.
    pub(crate) watermark: Option<(String, String)>,
    /// A view (`relkind` 'v'), not a table.
    pub(crate) view: bool,
}

impl CatalogTable {
    /// What the catalog shows of `table`.
    pub(crate) fn of(table: &StreamTable) -> Self {
        Self {
            name: table.name().to_string(),
            schema: Arc::clone(&table.schema),
            computed: table
                .computed
                .iter()
                .map(|c| (c.name.clone(), c.sql.clone()))
                .collect(),
            watermark: table
                .watermark
                .as_ref()
                .map(|w| (w.column.clone(), w.sql.clone())),
            view: false,
        }
    }

    /// What the catalog shows of a view: its columns (none while its query
    /// does not plan).
    pub(crate) fn of_view(view: &weir_sql::view::View) -> Self {
        Self {
            name: view.name().to_string(),
            schema: view.schema().unwrap_or_else(|| Arc::new(Schema::empty())),
            computed: Vec::new(),
            watermark: None,
            view: true,
        }
    }
}

/// What the catalog is built from: the session's tables and the
/// connection's user and parameters.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The session's tables, in name order.
    pub(crate) tables: Vec<CatalogTable>,
    /// The connected user.
    pub(crate) user: String,
    /// The connection's Postgres parameters.
    pub(crate) settings: PgSettings,
}

impl Snapshot {
    /// The names of the session's tables.
    pub(crate) fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }
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
            || (called && functions::NAMES.contains(&name.as_str()))
            || (w.quote_style.is_none() && REG_TYPES.contains(&name.as_str()))
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

/// A DataFusion context with the catalog tables, the session's tables
/// (empty) and the catalog functions; and the catalog relations that have
/// no rows.
fn context(snapshot: &Snapshot) -> Result<(SessionContext, HashSet<String>), SqlError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_default_catalog_and_schema("datafusion", "public");
    config.options_mut().sql_parser.dialect = Dialect::PostgreSQL;
    let ctx = SessionContext::new_with_config(config);
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| SqlError::Internal("the catalog context has no default catalog".into()))?;
    catalog.register_schema("information_schema", Arc::new(MemorySchemaProvider::new()))?;
    let mut empty = HashSet::new();
    for (schema, name, rows) in tables::tables(snapshot)? {
        let is_empty = rows.num_rows() == 0;
        let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
        let reference = if schema == "pg_catalog" {
            // Queries lose their `pg_catalog.` qualifiers (Postgres finds
            // catalog relations unqualified too).
            ctx.register_table(TableReference::bare(name), Arc::new(table))?;
            name.to_string()
        } else {
            ctx.register_table(TableReference::partial(schema, name), Arc::new(table))?;
            format!("{schema}.{name}")
        };
        if is_empty {
            empty.insert(reference);
        }
    }
    for table in &snapshot.tables {
        let rows = MemTable::try_new(Arc::clone(&table.schema), vec![vec![]])?;
        ctx.register_table(TableReference::bare(table.name.as_str()), Arc::new(rows))?;
    }
    for udf in functions::functions(&Arc::new(snapshot.clone())) {
        ctx.register_udf(udf);
    }
    Ok((ctx, empty))
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

/// How a planned catalog query answers.
enum Answer {
    /// Run this plan.
    Run(Arc<dyn ExecutionPlan>),
    /// No rows, with these columns.
    Empty(SchemaRef),
}

/// A catalog query ready to run, and its columns' Postgres names.
struct Planned {
    ctx: SessionContext,
    answer: Answer,
    names: Option<Vec<String>>,
}

impl Planned {
    /// `schema` with the columns named as Postgres names them.
    fn renamed(&self, schema: &SchemaRef) -> SchemaRef {
        match &self.names {
            Some(names) if names.len() == schema.fields().len() => Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .zip(names)
                    .map(|(f, name)| f.as_ref().clone().with_name(name))
                    .collect::<Vec<Field>>(),
            )),
            _ => Arc::clone(schema),
        }
    }

    fn schema(&self) -> SchemaRef {
        match &self.answer {
            Answer::Run(plan) => self.renamed(&plan.schema()),
            Answer::Empty(schema) => Arc::clone(schema),
        }
    }
}

/// The parsed statement of `sql` (without `pg_catalog.` qualifiers).
fn parse(ctx: &SessionContext, sql: &str) -> Result<DfStatement, SqlError> {
    Ok(ctx
        .state()
        .sql_to_statement(&strip_pg_catalog(sql), &Dialect::PostgreSQL)?)
}

/// `statement` with its Postgres constructs rewritten.
fn rewritten(statement: &DfStatement) -> DfStatement {
    match statement {
        DfStatement::Statement(s) => {
            let mut s = s.as_ref().clone();
            rewrite::rewrite(&mut s);
            DfStatement::Statement(Box::new(s))
        }
        other => other.clone(),
    }
}

/// Plans a catalog query.
async fn plan(snapshot: &Snapshot, sql: &str) -> Result<Planned, Failure> {
    let (ctx, empty) = context(snapshot).map_err(|e| sql_error(&e, sql))?;
    let statement = parse(&ctx, sql).map_err(|e| catalog_error(e, sql))?;
    let original = match &statement {
        DfStatement::Statement(s) => Some(s.as_ref()),
        _ => None,
    };
    let names = original.and_then(shape::column_names);
    let state = ctx.state();
    let attempt = async {
        let logical = state.statement_to_plan(rewritten(&statement)).await?;
        options().verify_plan(&logical)?;
        state.create_physical_plan(&logical).await
    }
    .await;
    let answer = match attempt {
        Ok(plan) => Answer::Run(plan),
        Err(e) => match (original, &names) {
            // Whatever DataFusion could not plan, no row would come out.
            (Some(s), Some(names)) if shape::reads_nothing(s, &|r| empty.contains(r)) => {
                Answer::Empty(Arc::new(Schema::new(
                    names
                        .iter()
                        .map(|n| Field::new(n, DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                )))
            }
            _ => return Err(catalog_error(e.into(), sql)),
        },
    };
    Ok(Planned { ctx, answer, names })
}

/// Runs a catalog query: its schema and rows.
pub(crate) async fn query(
    snapshot: &Snapshot,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), Failure> {
    let planned = plan(snapshot, sql).await?;
    let schema = planned.schema();
    let Answer::Run(physical) = &planned.answer else {
        return Ok((schema, vec![]));
    };
    let batches = datafusion::physical_plan::collect(Arc::clone(physical), planned.ctx.task_ctx())
        .await
        .map_err(|e| catalog_error(e.into(), sql))?;
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| catalog_error(SqlError::from(e), sql))?;
    Ok((schema, batches))
}

/// The result schema of a catalog query, without running it.
pub(crate) async fn describe(snapshot: &Snapshot, sql: &str) -> Result<SchemaRef, Failure> {
    Ok(plan(snapshot, sql).await?.schema())
}

/// The Postgres types of the `$1 … $count` parameters of `sql`, as far as
/// DataFusion can tell; text where it cannot.
pub(crate) async fn parameter_types(snapshot: &Snapshot, sql: &str, count: usize) -> Vec<Type> {
    let mut found: HashMap<String, Option<DataType>> = HashMap::new();
    if let Ok((ctx, _)) = context(snapshot)
        && let Ok(statement) = parse(&ctx, sql)
        && let Ok(plan) = ctx.state().statement_to_plan(rewritten(&statement)).await
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
    use arrow::array::Array;

    fn snapshot() -> Snapshot {
        Snapshot {
            tables: vec![CatalogTable {
                name: "t".into(),
                schema: Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("name", DataType::Utf8, true),
                ])),
                computed: vec![],
                watermark: None,
                view: false,
            }],
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

    /// The rows of `batches`, each as its values' text joined by `|`.
    fn rows(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                let values: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            arrow::util::display::array_value_to_string(c, r).unwrap()
                        }
                    })
                    .collect();
                out.push(values.join("|"));
            }
        }
        out
    }

    /// psql 16's hidden queries (`tests/pg/psql16.sql`), with their labels.
    fn psql16() -> Vec<(String, String)> {
        include_str!("../../../tests/pg/psql16.sql")
            .replace("'16385'", "'16400'")
            .split("\n-- psql: ")
            .skip(1)
            .filter_map(|s| {
                let (label, sql) = s.split_once('\n')?;
                Some((label.to_string(), sql.trim().to_string()))
            })
            .collect()
    }

    #[tokio::test]
    async fn psql_describe_queries() {
        let mut s = snapshot();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("doubled", DataType::Int64, true),
        ]));
        s.tables[0] = CatalogTable {
            name: "t".into(),
            schema,
            computed: vec![("doubled".into(), "id * 2".into())],
            watermark: Some(("ts".into(), "ts - INTERVAL '5' SECOND".into())),
            view: false,
        };
        let mut answers = Vec::new();
        for (label, sql) in psql16() {
            let (_, batches) = query(&s, &sql)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e:?}\n{sql}"));
            answers.push((label, rows(&batches)));
        }
        let answer = |label: &str, nth: usize| {
            answers
                .iter()
                .filter(|(l, _)| l == label)
                .nth(nth)
                .map(|(_, rows)| rows.clone())
                .unwrap_or_default()
        };
        assert_eq!(answer("\\d", 0), ["public|t|table|alice"]);
        assert_eq!(answer("\\d t", 0), ["16400|public|t"]);
        assert_eq!(
            answer("\\d t", 1),
            ["0|r|false|false|false|false|false|false|false||0||p|d|heap"]
        );
        assert_eq!(
            answer("\\d t", 2),
            [
                "id|bigint|NULL|true|NULL||",
                "price|numeric(10,2)|NULL|false|NULL||",
                "ts|timestamp(3) without time zone|NULL|false|NULL||",
                "doubled|bigint|id * 2|false|NULL||s",
            ]
        );
        // Policies, statistics, publications, parents and partitions: none.
        for nth in 3..8 {
            assert_eq!(answer("\\d t", nth), Vec::<String>::new(), "{nth}");
        }
        assert_eq!(
            answer("\\d+ t", 2)[2],
            "ts|timestamp(3) without time zone|NULL|false|NULL|||p||NULL|\
             watermark: ts - INTERVAL '5' SECOND"
        );
        assert_eq!(
            answer("\\l", 0),
            ["weir|alice|UTF8|libc|C|C|NULL|NULL|NULL"]
        );
        assert_eq!(
            answer("\\dn+", 0),
            ["public|alice|NULL|standard public schema"]
        );
        assert_eq!(answer("\\d nosuch", 0), Vec::<String>::new());
    }
}
