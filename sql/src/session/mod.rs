//! A SQL session: the catalog, `SET` configuration, and planning of each
//! statement into something to show or a job to run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::sync::mpsc;
use tracing::warn;
use weir_engine::ConnectorRegistry;
use weir_engine::graph::{LogicalGraph, NodeKind, PhysicalGraph};
use weir_engine::operator::{ChannelSinkNode, SinkNode};
use weir_engine::suggest::closest;

use crate::catalog::StreamTable;
use crate::error::{Construct, Result, SqlError};
use crate::lowering::{Lowered, Lowering, cast_to_sink};
use crate::statement::{Statement, keyword_position, parse_statement, word_position};
use crate::view::SharedViews;
use crate::window_tvf::{SharedTables, WindowFunction, WindowRelationNamer, WindowTableFunction};

mod ddl;
mod late_rows;
mod streaming;
mod views;

pub(crate) use streaming::CDC_EVENTS_DUPLICATE_KEY;
pub use streaming::{RuntimeMode, StreamingConfig};

/// The `SET` key for the default parallelism of jobs (Flink's name).
pub const PARALLELISM_KEY: &str = "parallelism.default";
/// The `SET` key naming the next job (Flink's name).
pub const JOB_NAME_KEY: &str = "pipeline.name";

/// A planned job, ready to deploy.
#[derive(Debug)]
pub struct JobPlan {
    /// The job's name.
    pub name: String,
    /// The deployable graph.
    pub graph: PhysicalGraph,
    /// True when every source ends by itself.
    pub bounded: bool,
    /// Where its rows go.
    pub output: JobOutput,
}

/// Where a job's rows go, for people (the end-of-run summary, `weir job`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutput {
    /// Into a sink table.
    Table {
        /// The table's name.
        table: String,
        /// Its connector.
        connector: String,
        /// Where the connector puts the rows (a path, a topic), if it says.
        location: Option<String>,
    },
    /// Back to the caller: the rows of a bare `SELECT`.
    Caller,
}

impl std::fmt::Display for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobOutput::Table {
                table,
                connector,
                location: Some(location),
            } => write!(f, "table '{table}' ({connector}: {location})"),
            JobOutput::Table {
                table, connector, ..
            } => write!(f, "table '{table}' ({connector})"),
            JobOutput::Caller => f.write_str("the console"),
        }
    }
}

/// A planned bare `SELECT`: a job whose rows come back through `rows`.
#[derive(Debug)]
pub struct QueryPlan {
    /// The job.
    pub job: JobPlan,
    /// The result schema.
    pub schema: SchemaRef,
    /// Where result batches arrive while the job runs.
    pub rows: mpsc::Receiver<RecordBatch>,
}

/// What a statement produced.
#[derive(Debug)]
pub enum Outcome {
    /// A confirmation (`CREATE TABLE`, `SET` …).
    Message(String),
    /// `EXPLAIN` output.
    Explain(String),
    /// A small result computed at once (`SHOW TABLES`, `DESCRIBE`, `SET`).
    Rows(RecordBatch),
    /// `INSERT INTO`: a job to run.
    Job(JobPlan),
    /// A bare `SELECT`: a job whose rows the caller reads.
    Query(QueryPlan),
    /// `SHOW JOBS`, `STOP JOB`, `CANCEL JOB`: for whoever runs the jobs.
    Control(JobControl),
}

/// A statement about running jobs, answered by whoever runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobControl {
    /// `SHOW JOBS`.
    List,
    /// `STOP JOB 'id'`: stop gracefully.
    Stop(String),
    /// `CANCEL JOB 'id'`: cancel at once.
    Cancel(String),
}

/// A SQL session over a connector registry.
pub struct Session {
    ctx: SessionContext,
    tables: SharedTables,
    views: SharedViews,
    views_created: u64,
    registry: ConnectorRegistry,
    settings: BTreeMap<String, String>,
    default_parallelism: usize,
    jobs_planned: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Session {
    /// A session whose tables use the connectors of `registry`.
    pub fn new(registry: ConnectorRegistry) -> Self {
        let mut config = SessionConfig::new().with_target_partitions(1);
        config.options_mut().sql_parser.collect_spans = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(vec![])
            .with_relation_planners(vec![Arc::new(WindowRelationNamer)])
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::functions::register(&ctx);
        let tables: SharedTables = Arc::new(RwLock::new(HashMap::new()));
        let views: SharedViews = Arc::default();
        for (name, f) in [
            ("tumble", WindowFunction::Tumble),
            ("hop", WindowFunction::Hop),
            ("cumulate", WindowFunction::Cumulate),
            ("session", WindowFunction::Session),
        ] {
            ctx.register_udtf(
                name,
                Arc::new(WindowTableFunction::new(
                    f,
                    Arc::clone(&tables),
                    Arc::clone(&views),
                )),
            );
        }
        Self {
            ctx,
            tables,
            views,
            views_created: 0,
            registry,
            settings: BTreeMap::new(),
            default_parallelism: 1,
            jobs_planned: 0,
        }
    }

    /// Sets the parallelism jobs get when no `SET 'parallelism.default'` says otherwise.
    pub fn set_default_parallelism(&mut self, parallelism: usize) {
        self.default_parallelism = parallelism.max(1);
    }

    /// The parallelism the next job gets.
    pub fn parallelism(&self) -> Result<usize> {
        match self.settings.get(PARALLELISM_KEY) {
            Some(v) => parse_parallelism(v),
            None => Ok(self.default_parallelism),
        }
    }

    /// The `SET` configuration.
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.settings
    }

    /// Names of the declared tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = tables.keys().cloned().collect();
        names.sort();
        names
    }

    /// A declared table.
    pub fn table(&self, name: &str) -> Result<Arc<StreamTable>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(name) {
            return Ok(Arc::clone(t));
        }
        Err(SqlError::UnknownTable {
            name: name.to_string(),
            suggestion: closest(name, tables.keys().map(String::as_str)).map(str::to_string),
            position: None,
        })
    }

    /// Plans one statement (without its `;`).
    pub async fn execute(&mut self, sql: &str) -> Result<Outcome> {
        let rewritten = crate::flink_syntax::rewrite_flink_windows(sql);
        let sql = rewritten.as_str();
        let statement = parse_statement(sql)?;
        self.execute_statement(statement, sql)
            .await
            .map_err(|e| locate_unsupported(e, sql))
    }

    async fn execute_statement(&mut self, statement: Statement, sql: &str) -> Result<Outcome> {
        match statement {
            Statement::CreateTable(create) => {
                let outcome = self.create_table(create)?;
                self.refresh_views(false).await;
                Ok(outcome)
            }
            Statement::DropTable { name, if_exists } => self.drop_table(name, if_exists).await,
            Statement::CreateView(create) => self.create_view(create, sql).await,
            Statement::DropView { name, if_exists } => self.drop_view(name, if_exists).await,
            Statement::ShowViews => self.show_views(),
            Statement::ShowCreateView(name) => self.show_create_view(&name),
            Statement::Set(None) => {
                let keys: Vec<&str> = self.settings.keys().map(String::as_str).collect();
                let values: Vec<&str> = self.settings.values().map(String::as_str).collect();
                Ok(Outcome::Rows(string_batch(&[
                    ("key", keys),
                    ("value", values),
                ])?))
            }
            Statement::Set(Some((key, value))) => {
                if key == PARALLELISM_KEY {
                    parse_parallelism(&value)?;
                } else if streaming::STREAMING_KEYS.contains(&key.as_str()) {
                    streaming::check_setting(&key, &value)?;
                } else if !KNOWN_SETTINGS.contains(&key.as_str()) {
                    let known = KNOWN_SETTINGS
                        .iter()
                        .chain(streaming::STREAMING_KEYS)
                        .copied();
                    let hint = closest(&key, known)
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    warn!(
                        "'{key}' is not a setting Weir uses{hint}; it is stored but has no effect"
                    );
                }
                self.settings.insert(key.clone(), value.clone());
                Ok(Outcome::Message(format!("Set '{key}' = '{value}'.")))
            }
            Statement::Reset(key) => {
                self.settings.remove(&key);
                Ok(Outcome::Message(format!("Reset '{key}'.")))
            }
            Statement::ShowTables => self.show_tables(),
            Statement::Describe(name) => self.describe(&name).map(Outcome::Rows),
            Statement::ShowJobs => Ok(Outcome::Control(JobControl::List)),
            Statement::StopJob { id, cancel: false } => Ok(Outcome::Control(JobControl::Stop(id))),
            Statement::StopJob { id, cancel: true } => Ok(Outcome::Control(JobControl::Cancel(id))),
            Statement::Insert {
                table,
                query,
                query_start,
            } => {
                let job = self
                    .plan_insert(&table, &query)
                    .await
                    .map_err(|e| e.offset_by(query_start.line - 1, query_start.column - 1))?;
                Ok(Outcome::Job(job))
            }
            Statement::Query(query) => match self.constant_query(&query).await? {
                Some(rows) => Ok(Outcome::Rows(rows)),
                None => Ok(Outcome::Query(self.plan_select(&query).await?)),
            },
            Statement::Explain { dot, statement } => {
                let graph = match *statement {
                    Statement::Insert {
                        table,
                        query,
                        query_start,
                    } => {
                        self.plan_insert(&table, &query)
                            .await
                            .map_err(|e| e.offset_by(query_start.line - 1, query_start.column - 1))?
                            .graph
                    }
                    Statement::Query(query) => self.plan_select(&query).await?.job.graph,
                    _ => {
                        return Err(SqlError::plan(
                            "EXPLAIN takes an INSERT INTO or a SELECT statement",
                        ));
                    }
                };
                let _ = sql;
                Ok(Outcome::Explain(if dot {
                    graph.to_dot()
                } else {
                    graph.to_string()
                }))
            }
        }
    }

    /// Plans a query with DataFusion and lowers it into `graph`.
    /// Lowers `sql` into `graph`, with the sinks of its late rows; `into`
    /// is the table the query writes, if any.
    async fn lower_query(
        &self,
        sql: &str,
        graph: &mut LogicalGraph,
        into: Option<&str>,
    ) -> Result<Lowered> {
        let state = self.ctx.state();
        let logical = crate::group_window::logical_plan(&state, sql)
            .await
            .map_err(|e| self.explain_missing_table(e))?;
        let physical = state.create_physical_plan(&logical).await?;
        let config = StreamingConfig::from_settings(&self.settings)?;
        let mut lowering = Lowering::new(graph).with_streaming(config);
        let lowered = lowering.lower(&physical)?;
        let late_rows = lowering.late_rows_outputs().to_vec();
        self.connect_late_rows(graph, &late_rows, into)?;
        Ok(lowered)
    }

    /// A query that reads no table (`SELECT 1 + 1`, `VALUES …`), answered
    /// at once as a database would; `None` for a query over tables.
    async fn constant_query(&self, sql: &str) -> Result<Option<RecordBatch>> {
        use datafusion::common::tree_node::TreeNode;
        use datafusion::logical_expr::LogicalPlan;
        let state = self.ctx.state();
        let logical = crate::group_window::logical_plan(&state, sql)
            .await
            .map_err(|e| self.explain_missing_table(e))?;
        let reads_tables = logical.exists(|node| Ok(matches!(node, LogicalPlan::TableScan(_))))?;
        if reads_tables {
            return Ok(None);
        }
        let schema: SchemaRef = Arc::new(logical.schema().as_arrow().clone());
        let batches = self
            .ctx
            .execute_logical_plan(logical)
            .await?
            .collect()
            .await?;
        let schema = batches.first().map_or(schema, RecordBatch::schema);
        Ok(Some(arrow::compute::concat_batches(&schema, &batches)?))
    }

    /// DataFusion names a missing table by its full path and suggests
    /// nothing; say which table is missing and which one is close.
    fn explain_missing_table(&self, error: datafusion::error::DataFusionError) -> SqlError {
        let converted = SqlError::from(error);
        let SqlError::Plan { message, position } = &converted else {
            return converted;
        };
        let Some(rest) = message.strip_prefix("table '") else {
            return converted;
        };
        let Some(name) = rest.strip_suffix("' not found") else {
            return converted;
        };
        let name = name.rsplit('.').next().unwrap_or(name);
        self.missing_relation(name, *position)
    }

    fn job_name(&mut self, default: String) -> String {
        self.jobs_planned += 1;
        self.settings
            .get(JOB_NAME_KEY)
            .cloned()
            .unwrap_or_else(|| format!("{default}-{}", self.jobs_planned))
    }

    fn finish_job(&self, name: String, graph: LogicalGraph, output: JobOutput) -> Result<JobPlan> {
        let unbounded = graph.nodes().iter().find_map(|n| match &n.kind {
            NodeKind::Source(s) if !s.is_bounded() => Some(s.table().name.clone()),
            _ => None,
        });
        let bounded = unbounded.is_none();
        if let Some(table) = unbounded
            && StreamingConfig::from_settings(&self.settings)?.runtime_mode == RuntimeMode::Batch
        {
            return Err(SqlError::Config(format!(
                "'{}' is 'batch', but table '{table}' is unbounded; read bounded tables, or SET it to 'streaming' or 'automatic'",
                streaming::RUNTIME_MODE_KEY
            )));
        }
        for node in graph.nodes() {
            if let NodeKind::Source(s) = &node.kind {
                let table = self.table(&s.table().name)?;
                table
                    .connector
                    .validate_source(s.table())
                    .map_err(|e| with_context(e.into(), &format!("table '{}'", s.table().name)))?;
            }
        }
        let graph = PhysicalGraph::from_logical(graph, self.parallelism()?)?;
        Ok(JobPlan {
            name,
            graph,
            bounded,
            output,
        })
    }

    async fn plan_insert(&mut self, table_name: &str, query: &str) -> Result<JobPlan> {
        let table = self.table(table_name)?;
        let mut graph = LogicalGraph::new();
        let mut lowered = self
            .lower_query(query, &mut graph, Some(table_name))
            .await?;
        let mut descriptor = table.descriptor.clone();
        if table.declared_columns {
            if let Some(cast) = cast_to_sink(&lowered.schema, &table.descriptor.schema, table_name)?
            {
                let schema = weir_engine::OperatorFactory::output_schema(&cast);
                let node = graph.add_operator(Arc::new(cast), None);
                graph.connect(lowered.node, node, weir_engine::EdgeKind::Forward)?;
                lowered = Lowered { node, schema };
            }
        } else {
            descriptor.schema = weir_engine::changelog::data_schema(&lowered.schema);
        }
        table
            .connector
            .validate_sink(&descriptor)
            .map_err(|e| with_context(e.into(), &format!("table '{table_name}'")))?;
        if lowered.changelog_mode().is_updating() && !table.connector.accepts_updates(&descriptor) {
            return Err(sink_takes_no_updates(
                table_name,
                table.connector.name(),
                &descriptor,
            ));
        }
        // Flink's `sink.parallelism`: the sink runs at its own parallelism,
        // fed round-robin.
        let sink_parallelism: Option<usize> = descriptor
            .options
            .parse("sink.parallelism")
            .map_err(|e| with_context(e.into(), &format!("table '{table_name}'")))?;
        if sink_parallelism.is_some() && lowered.changelog_mode().is_updating() {
            return Err(SqlError::Plan {
                message: format!(
                    "table '{table_name}': 'sink.parallelism' is not supported for a query that \
                     produces updates yet (a rebalance would reorder the changes of a key)"
                ),
                position: None,
            });
        }
        if sink_parallelism == Some(0) {
            return Err(SqlError::Plan {
                message: format!("table '{table_name}': 'sink.parallelism' must be at least 1"),
                position: None,
            });
        }
        let output = JobOutput::Table {
            table: table_name.to_string(),
            connector: table.connector.name().to_string(),
            location: table.connector.output_location(&descriptor),
        };
        let sink = graph.add_operator(
            Arc::new(SinkNode::new(Arc::clone(&table.connector), descriptor)),
            sink_parallelism,
        );
        let edge = match sink_parallelism {
            Some(_) => weir_engine::EdgeKind::Rebalance,
            None => weir_engine::EdgeKind::Forward,
        };
        graph.connect(lowered.node, sink, edge)?;
        let name = self.job_name(format!("insert-into-{table_name}"));
        self.finish_job(name, graph, output)
    }

    async fn plan_select(&mut self, query: &str) -> Result<QueryPlan> {
        let mut graph = LogicalGraph::new();
        let lowered = self.lower_query(query, &mut graph, None).await?;
        let (tx, rx) = mpsc::channel(16);
        let sink = graph.add_operator(Arc::new(ChannelSinkNode::new(tx, "console")), None);
        graph.connect(lowered.node, sink, weir_engine::EdgeKind::Forward)?;
        let name = self.job_name("select".into());
        Ok(QueryPlan {
            job: self.finish_job(name, graph, JobOutput::Caller)?,
            schema: lowered.schema,
            rows: rx,
        })
    }
}

/// Settings Weir reads (anything else is stored and reported by `SET`).
const KNOWN_SETTINGS: &[&str] = &[
    PARALLELISM_KEY,
    JOB_NAME_KEY,
    "execution.checkpointing.interval",
    "execution.checkpointing.dir",
    "execution.checkpointing.num-retained",
    "restart-strategy.type",
    "restart-strategy.fixed-delay.attempts",
    "restart-strategy.fixed-delay.delay",
    "restart-strategy.exponential-delay.initial-backoff",
    "restart-strategy.exponential-delay.max-backoff",
    "restart-strategy.exponential-delay.backoff-multiplier",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff",
    "table.exec.source.idle-timeout",
    "sql-client.execution.result-mode",
];

/// A `parallelism.default` value: a positive integer.
fn parse_parallelism(value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            SqlError::Config(format!(
                "'{PARALLELISM_KEY}' must be a positive integer, not '{value}'"
            ))
        })
}

/// The error for an updating query into a sink that takes only inserts.
fn sink_takes_no_updates(
    table: &str,
    connector: &str,
    descriptor: &weir_engine::TableDescriptor,
) -> SqlError {
    let format = descriptor
        .options
        .get("format")
        .map(|f| format!(", format '{f}'"))
        .unwrap_or_default();
    SqlError::Plan {
        message: format!(
            "table '{table}' (connector '{connector}'{format}) takes only inserts, but the query \
             produces updates: its GROUP BY over an unbounded stream changes rows it already \
             emitted. Write it to a table that takes a changelog: 'format' = 'debezium-json' \
             (filesystem, kafka), 'connector' = 'upsert-kafka' (with a PRIMARY KEY) or \
             'connector' = 'print'; or aggregate over windows, whose rows are final"
        ),
        position: None,
    }
}

pub(super) fn with_context(error: SqlError, context: &str) -> SqlError {
    match error {
        SqlError::Plan { message, position } => SqlError::Plan {
            message: format!("{context}: {message}"),
            position,
        },
        SqlError::UnknownColumn { message, position } => SqlError::UnknownColumn {
            message: format!("{context}: {message}"),
            position,
        },
        SqlError::Engine(weir_engine::Error::Config(m))
        | SqlError::Engine(weir_engine::Error::InvalidOption { message: m, .. })
        | SqlError::Config(m) => SqlError::Config(format!("{context}: {m}")),
        other => other,
    }
}

/// Points an unsupported-construct error that has no position at its
/// construct in the statement `sql`. Done once for the whole statement,
/// whichever step of planning found the construct.
fn locate_unsupported(error: SqlError, sql: &str) -> SqlError {
    let SqlError::Unsupported {
        message,
        position: None,
        construct: Some(construct),
    } = error
    else {
        return error;
    };
    let position = match &construct {
        Construct::Keyword(keyword) => keyword_position(sql, *keyword),
        Construct::Word(word) => word_position(sql, word),
    };
    SqlError::Unsupported {
        message,
        position,
        construct: Some(construct),
    }
}

pub(super) fn string_batch(columns: &[(&str, Vec<&str>)]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, _)| Field::new(*name, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns
        .iter()
        .map(|(_, values)| Arc::new(StringArray::from(values.clone())) as ArrayRef)
        .collect();
    Ok(RecordBatch::try_new(schema, arrays)?)
}
