//! One client connection: its [`Engine`], its Postgres parameters, and the
//! simple and extended query protocols on top of them.
//!
//! Each statement goes to the first of these that takes it:
//! 1. [`compat`](super::compat): `SET`/`SHOW` of Postgres parameters,
//!    transaction statements;
//! 2. [`catalog`](super::catalog): `pg_catalog`, `information_schema` and
//!    `SELECT` without `FROM`;
//! 3. the engine: DDL, `INSERT INTO` (a job, answered at once with its id
//!    in a notice), queries (rows streamed while the job runs), `SHOW JOBS` …

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::sink::{Sink, SinkExt};
use futures::stream;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::NoticeResponse;
use weir_sql::{SqlError, Statement};

use super::catalog::{self, CatalogTable, Snapshot};
use super::compat::{self, Compat, PgSettings};
use super::describe::PLAN_COLUMN;
use super::encode::{encode_batch, fields, with_format};
use super::error::{Failure, char_index, error_info, sql_error, user};
use super::params;
use super::rows::{Probe, job_rows};
use crate::{Engine, Executed};

/// The state of one client connection.
pub(crate) struct Connection {
    engine: tokio::sync::Mutex<Engine>,
    settings: Mutex<PgSettings>,
    probe: Option<Arc<Probe>>,
}

/// A prepared statement: its text, parameter types and result columns.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    sql: String,
    params: Vec<Type>,
    /// The result columns (in the text format); `None`: no rows.
    fields: Option<Vec<FieldInfo>>,
}

/// The simple and extended query handlers of a connection.
pub(crate) struct QueryHandler {
    conn: Arc<Connection>,
    parser: Arc<Parser>,
}

/// Prepares statements for the extended protocol.
pub(crate) struct Parser {
    conn: Arc<Connection>,
}

impl QueryHandler {
    /// The handlers of a new connection running statements on `engine`.
    pub(crate) fn new(engine: Engine, probe: Option<Probe>) -> Self {
        let conn = Arc::new(Connection {
            engine: tokio::sync::Mutex::new(engine),
            settings: Mutex::new(PgSettings::default()),
            probe: probe.map(Arc::new),
        });
        Self {
            parser: Arc::new(Parser {
                conn: Arc::clone(&conn),
            }),
            conn,
        }
    }
}

fn user_of<C: ClientInfo>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_else(|| "weir".into())
}

/// The command tag of a statement the engine answered with a message.
fn tag_of(sql: &str) -> &'static str {
    match weir_sql::parse_statement(&weir_sql::flink_syntax::rewrite_flink_windows(sql)) {
        Ok(Statement::CreateTable(_)) => "CREATE TABLE",
        Ok(Statement::DropTable { .. }) => "DROP TABLE",
        Ok(Statement::Set(_)) => "SET",
        Ok(Statement::Reset(_)) => "RESET",
        Ok(Statement::StopJob { cancel: false, .. }) => "STOP JOB",
        Ok(Statement::StopJob { cancel: true, .. }) => "CANCEL JOB",
        _ => "OK",
    }
}

fn notice(message: String) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new(
        "NOTICE".into(),
        "00000".into(),
        message,
    )))
}

/// Rows computed at once as a query response.
fn rows_response(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    format: &Format,
) -> PgWireResult<Response> {
    let fields = Arc::new(fields(schema, format));
    let mut rows = Vec::new();
    for batch in batches {
        rows.extend(encode_batch(batch, &fields, batch.num_rows())?);
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows.into_iter().map(Ok)),
    )))
}

fn internal(e: PgWireError) -> Failure {
    match e {
        PgWireError::UserError(info) => info,
        other => error_info("XX000", other.to_string()),
    }
}

impl Connection {
    /// The session's tables (after catching up with the cluster's catalog),
    /// the user and the parameters.
    async fn snapshot(&self, engine: &mut Engine, user: &str) -> Result<Snapshot, SqlError> {
        engine.refresh_catalog().await?;
        let session = engine.session();
        let mut tables: Vec<CatalogTable> = session
            .table_names()
            .into_iter()
            .filter_map(|name| Some(CatalogTable::of(session.table(&name).ok()?.as_ref())))
            .chain(
                session
                    .view_names()
                    .into_iter()
                    .filter_map(|name| Some(CatalogTable::of_view(&session.view(&name)?))),
            )
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Snapshot {
            tables,
            user: user.to_string(),
            settings,
        })
    }

    /// Runs one statement. `described`: the columns announced when it was
    /// prepared; `notices` collects messages for the client.
    async fn run(
        &self,
        sql: &str,
        user: &str,
        format: &Format,
        described: Option<&[FieldInfo]>,
        notices: &mut Vec<String>,
    ) -> Result<Response, Failure> {
        let compat = {
            let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
            compat::answer(sql, &mut settings)
        };
        match compat {
            Some(Ok(Compat::Done(tag))) => return Ok(Response::Execution(Tag::new(tag))),
            Some(Ok(Compat::Rows(batch))) => {
                return rows_response(std::slice::from_ref(&batch), &batch.schema(), format)
                    .map_err(internal);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let mut engine = self.engine.lock().await;
        let snapshot = self
            .snapshot(&mut engine, user)
            .await
            .map_err(|e| sql_error(&e, sql))?;
        let names = snapshot.table_names();
        let is_catalog = catalog::is_catalog_query(sql, &names);
        if is_catalog || catalog::is_constant_select(sql) {
            match catalog::query(&snapshot, sql).await {
                Ok((schema, batches)) => {
                    return rows_response(&batches, &schema, format).map_err(internal);
                }
                Err(e) if is_catalog => return Err(e),
                // Not the catalog's: perhaps the engine's (its functions).
                Err(_) => {}
            }
        }
        let executed = engine.execute(sql).await.map_err(|e| sql_error(&e, sql))?;
        drop(engine);
        let fields_of = |schema: &SchemaRef| -> Arc<Vec<FieldInfo>> {
            Arc::new(match described {
                Some(d) if d.len() == schema.fields().len() => with_format(d, format),
                _ => fields(schema, format),
            })
        };
        match executed {
            Executed::Explain(text) => {
                let lines: ArrayRef = Arc::new(StringArray::from_iter_values(text.lines()));
                let batch = RecordBatch::try_from_iter([(PLAN_COLUMN, lines)])
                    .map_err(|e| error_info("XX000", e.to_string()))?;
                let fields = fields_of(&batch.schema());
                let rows = encode_batch(&batch, &fields, batch.num_rows()).map_err(internal)?;
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(rows.into_iter().map(Ok)),
                )))
            }
            Executed::Text(text) => {
                let tag = tag_of(sql);
                if tag.ends_with("JOB") && !text.is_empty() {
                    notices.push(text);
                }
                Ok(Response::Execution(Tag::new(tag)))
            }
            Executed::Rows(batch) => {
                let fields = fields_of(&batch.schema());
                let rows = encode_batch(&batch, &fields, batch.num_rows()).map_err(internal)?;
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(rows.into_iter().map(Ok)),
                )))
            }
            Executed::Job(job) => {
                notices.push(match job.id() {
                    Some(id) => format!("job {id} started ({})", job.name()),
                    None => format!("job '{}' started", job.name()),
                });
                for warning in job.warnings() {
                    notices.push(format!("warning: job '{}': {warning}", job.name()));
                }
                // The pipeline runs on; this connection does not follow it.
                job.detach();
                Ok(Response::Execution(
                    Tag::new("INSERT").with_oid(0).with_rows(0),
                ))
            }
            Executed::Query { job, rows, schema } => {
                let updating = weir_engine::ChangelogMode::of(&schema).is_updating();
                let fields = fields_of(&weir_engine::changelog::data_schema(&schema));
                let stream = job_rows(job, rows, updating, Arc::clone(&fields), self.probe.clone());
                Ok(Response::Query(QueryResponse::new(fields, stream)))
            }
        }
    }

    /// Prepares `sql`: its parameter types (the client's, else inferred)
    /// and its result columns, without running it.
    async fn prepare(
        &self,
        sql: &str,
        user: &str,
        client_types: &[Option<Type>],
    ) -> Result<Prepared, Failure> {
        let count = params::count(sql).max(client_types.len());
        let mut engine = self.engine.lock().await;
        let snapshot = self
            .snapshot(&mut engine, user)
            .await
            .map_err(|e| sql_error(&e, sql))?;
        let inferred = catalog::parameter_types(&snapshot, sql, count).await;
        let params: Vec<Type> = (0..count)
            .map(|i| {
                client_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .unwrap_or_else(|| inferred[i].clone())
            })
            .collect();
        let planned = params::with_samples(sql, &params);
        let compat = {
            let mut settings = self
                .settings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            compat::answer(&planned, &mut settings)
        };
        let text = Format::UnifiedText;
        let fields = match compat {
            Some(Ok(Compat::Rows(batch))) => Some(fields(&batch.schema(), &text)),
            Some(Ok(Compat::Done(_))) => None,
            Some(Err(e)) => return Err(e),
            None => {
                let names = snapshot.table_names();
                let is_catalog = catalog::is_catalog_query(sql, &names);
                let from_catalog = if is_catalog || catalog::is_constant_select(&planned) {
                    match catalog::describe(&snapshot, &planned).await {
                        Ok(schema) => Some(schema),
                        Err(e) if is_catalog => return Err(e),
                        Err(_) => None,
                    }
                } else {
                    None
                };
                match from_catalog {
                    Some(schema) => Some(fields(&schema, &text)),
                    None => engine
                        .describe(&planned)
                        .await
                        .map_err(|e| sql_error(&e, sql))?
                        .map(|schema| fields(&schema, &text)),
                }
            }
        };
        drop(engine);
        Ok(Prepared {
            sql: sql.to_string(),
            params,
            fields,
        })
    }
}

impl Engine {
    /// Catches up with the cluster's shared catalog (a no-op in-process).
    pub(crate) async fn refresh_catalog(&mut self) -> Result<(), SqlError> {
        if let crate::Backend::Cluster { client, .. } = &self.backend {
            let client = client.clone();
            self.sync_catalog(&client).await?;
        }
        Ok(())
    }
}

async fn send_notices<C>(client: &mut C, notices: Vec<String>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for n in notices {
        client.feed(notice(n)).await?;
    }
    Ok(())
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match weir_sql::split_statements(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(sql_error(&e, query))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let user = user_of(client);
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let mut notices = Vec::new();
            let result = self
                .conn
                .run(
                    &statement.text,
                    &user,
                    &Format::UnifiedText,
                    None,
                    &mut notices,
                )
                .await;
            send_notices(client, notices).await?;
            match result {
                Ok(response) => responses.push(response),
                Err(mut info) => {
                    // The position counts from the start of the whole query.
                    if let Some(p) = info
                        .position
                        .as_deref()
                        .and_then(|p| p.parse::<usize>().ok())
                    {
                        let start = char_index(
                            query,
                            weir_sql::Position {
                                line: statement.start.line,
                                column: statement.start.column,
                            },
                        );
                        info.position = Some((start + p - 1).to_string());
                    }
                    responses.push(Response::Error(info));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = sql.trim_end().trim_end_matches(';').trim_end();
        self.conn
            .prepare(sql, &user_of(client), types)
            .await
            .map(Some)
            .map_err(user)
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement.params.clone())
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &statement.fields {
            Some(f) => with_format(f, format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let types: Vec<Type> = (0..prepared.params.len().max(portal.parameters.len()))
            .map(|i| {
                portal
                    .statement
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| prepared.params.get(i).cloned())
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let sql = params::bind(&prepared.sql, &types, &portal.parameters, |i| {
            portal.parameter_format.is_binary(i)
        })
        .map_err(user)?;
        let mut notices = Vec::new();
        let result = self
            .conn
            .run(
                &sql,
                &user_of(client),
                &portal.result_column_format,
                prepared.fields.as_deref(),
                &mut notices,
            )
            .await;
        send_notices(client, notices).await?;
        result.map_err(user)
    }
}
