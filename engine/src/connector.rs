//! The connector interface: [`Source`]s and [`Sink`]s, created per subtask by
//! a [`Connector`] that the SQL layer finds by name in a [`ConnectorRegistry`].
//! The engine knows no concrete connector; `weir-connectors` implements them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::message::CheckpointId;
use crate::operator::TaskInfo;

/// The key of a field's metadata that marks a `METADATA` column; the value
/// is the connector's metadata key (`timestamp`, `partition`, …). A
/// `VIRTUAL` column also has `weir.metadata.virtual` = `true`.
pub const METADATA_FIELD_KEY: &str = "weir.metadata";

/// A table's `WITH (…)` options, keys as written (case-sensitive, like Flink).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorOptions(BTreeMap<String, String>);

impl ConnectorOptions {
    /// Options from key/value pairs.
    pub fn new(options: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(options.into_iter().collect())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| Error::invalid_option(key, format!("missing required option '{key}'")))
    }

    /// The value of `key` parsed, with an error naming the key and value.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.trim().parse::<T>().map_err(|e| {
                    Error::invalid_option(key, format!("option '{key}' = '{v}' is invalid: {e}"))
                })
            })
            .transpose()
    }

    /// A boolean option (`true`/`false`, case-insensitive).
    pub fn parse_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Error::invalid_option(
                    key,
                    format!("option '{key}' = '{v}' must be 'true' or 'false'"),
                )),
            })
            .transpose()
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Rejects keys that `allowed` does not accept, suggesting the closest allowed key.
    pub fn check_keys(
        &self,
        connector: &str,
        allowed: &[&str],
        allowed_prefix: impl Fn(&str) -> bool,
    ) -> Result<()> {
        for key in self.keys() {
            if key == "connector"
                || key == LATE_RECORDS_SINK_OPTION
                || allowed.contains(&key)
                || allowed_prefix(key)
            {
                continue;
            }
            let suggestion = crate::suggest::closest(key, allowed.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            return Err(Error::invalid_option(
                key,
                format!(
                    "unknown option '{key}' for connector '{connector}'{suggestion}; valid options: {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// The table option naming the sink table that takes the rows of this
/// table an operator refuses as late (every connector accepts it; the
/// session's `table.exec.late-records.sink` is the default).
pub const LATE_RECORDS_SINK_OPTION: &str = "late-records.sink";

/// A table as connectors see it: name, physical columns, primary key and options.
#[derive(Debug, Clone)]
pub struct TableDescriptor {
    /// The table's name.
    pub name: String,
    /// The columns the connector reads or writes (computed columns excluded).
    pub schema: SchemaRef,
    /// `PRIMARY KEY (…) NOT ENFORCED`: the key's columns, in key order
    /// (empty when the table declares none). Not checked by Weir, as in
    /// Flink; an upsert connector keys its records by it.
    pub primary_key: Vec<String>,
    /// The `WITH (…)` options.
    pub options: ConnectorOptions,
}

impl TableDescriptor {
    /// A table without a primary key.
    pub fn new(name: impl Into<String>, schema: SchemaRef, options: ConnectorOptions) -> Self {
        Self {
            name: name.into(),
            schema,
            primary_key: Vec::new(),
            options,
        }
    }

    /// The indices of the primary key's columns in [`TableDescriptor::schema`].
    pub fn primary_key_indices(&self) -> Result<Vec<usize>> {
        self.primary_key
            .iter()
            .map(|name| {
                self.schema.index_of(name).map_err(|_| {
                    Error::Config(format!(
                        "table '{}': primary key column '{name}' is not a physical column",
                        self.name
                    ))
                })
            })
            .collect()
    }
}

/// What a [`Source`] has for the runtime.
#[derive(Debug)]
pub enum SourcePoll {
    /// A batch of rows.
    Batch(RecordBatch),
    /// Nothing now; poll again after about this long (rate limits, no new data).
    Idle(Duration),
    /// A bounded source is exhausted.
    Finished,
}

/// One subtask of a source. The runtime polls it; between polls it is at a
/// consistent position, which is where checkpoints record it.
#[async_trait]
pub trait Source: Send {
    /// The next batch. Must not wait long: return [`SourcePoll::Idle`] instead.
    /// Must be cancel-safe: the runtime drops the future when a checkpoint
    /// barrier is due, and the position must then be where it was.
    async fn poll_batch(&mut self) -> Result<SourcePoll>;

    /// The source's position, to store in a checkpoint (none by default).
    fn snapshot_position(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// The split (e.g. Kafka partition) the batch just returned came from,
    /// for a source whose batches each hold one split's records: watermarks
    /// are then generated per split, and the slowest split holds them back.
    fn batch_split(&self) -> Option<u32> {
        None
    }

    /// Records this subtask skipped as bad (a connector's bad-record policy),
    /// for the `weir_source_bad_records_total` counter.
    fn bad_records(&self) -> u64 {
        0
    }

    /// Rewinds to a position taken by [`Source::snapshot_position`].
    fn restore_position(&mut self, _position: &[u8]) -> Result<()> {
        Err(Error::Config(
            "this source cannot be restored from a checkpoint".into(),
        ))
    }
}

/// One subtask of a sink.
#[async_trait]
pub trait Sink: Send {
    /// Writes a batch.
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()>;

    /// A checkpoint barrier passed: make what was written so far durable but
    /// not yet visible (two-phase commit, phase one).
    async fn pre_commit(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// The checkpoint completed everywhere: make the writes of it and of
    /// every earlier checkpoint visible. Idempotent.
    async fn commit(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// What the sink keeps in a checkpoint after [`Sink::pre_commit`]: the
    /// pre-committed writes not yet committed, so a restore can commit them.
    fn snapshot_state(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Restores from a checkpoint: `states` are what [`Sink::snapshot_state`]
    /// returned in the subtasks assigned to this one. Writes they describe
    /// belong to a completed checkpoint and must be committed (idempotently:
    /// a crash may have come after some of them were).
    fn restore_state(&mut self, states: Vec<Vec<u8>>) -> Result<()> {
        if states.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(
                "this sink cannot be restored from a checkpoint".into(),
            ))
        }
    }

    /// The input ended: flush and make everything visible.
    async fn finish(&mut self) -> Result<()>;
}

/// A kind of connector (`'connector' = 'name'`): validates options and
/// creates sources and sinks.
pub trait Connector: fmt::Debug + Send + Sync {
    /// The name used in `'connector' = '…'`.
    fn name(&self) -> &str;

    /// The schema the connector defines for a table, if it defines one (e.g.
    /// the Nexmark tables); `None` when the DDL must declare columns.
    fn defined_schema(&self, _options: &ConnectorOptions) -> Result<Option<SchemaRef>> {
        Ok(None)
    }

    /// The keys of the `METADATA` columns this connector reads or writes
    /// (Flink's `ts TIMESTAMP(3) METADATA FROM 'timestamp'`); none by default.
    fn metadata_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks a source table's options; an error names the bad option.
    fn validate_source(&self, _table: &TableDescriptor) -> Result<()> {
        Err(Error::Config(format!(
            "connector '{}' cannot be read from",
            self.name()
        )))
    }

    /// Checks a sink table's options.
    fn validate_sink(&self, _table: &TableDescriptor) -> Result<()> {
        Err(Error::Config(format!(
            "connector '{}' cannot be written to",
            self.name()
        )))
    }

    /// True when a sink table takes updating input (`-U`, `+U`, `-D`
    /// rows), as a changelog format or an upsert connector does.
    fn accepts_updates(&self, _table: &TableDescriptor) -> bool {
        false
    }

    /// True when a source table's rows are changes (a CDC format such as
    /// `debezium-json`): its sources then emit the projected columns plus
    /// the row-kind column last (see [`crate::changelog`]).
    fn produces_updates(&self, _table: &TableDescriptor) -> bool {
        false
    }

    /// The key of a source table whose rows are upserts (Flink's
    /// `upsert-kafka`): each row is the latest version of its key, a
    /// deletion carries only the key. Its sources emit an upsert stream
    /// ([`crate::changelog::upsert_schema`]), and the planner puts a
    /// `ChangelogNormalize` keyed by these columns after them, which turns
    /// it into a retract changelog. `None` (the default) for other sources.
    fn upsert_key(&self, _table: &TableDescriptor) -> Option<Vec<String>> {
        None
    }

    /// True when the table's source ends by itself.
    fn is_bounded(&self, _table: &TableDescriptor) -> bool {
        false
    }

    /// Where a sink table's rows go, for people (`/data/out`, `topic
    /// 'totals'`); `None` when the connector's name says it all.
    fn output_location(&self, _table: &TableDescriptor) -> Option<String> {
        None
    }

    /// Creates one subtask of a source producing the `projection` of the table's columns.
    fn create_source(
        &self,
        _table: &TableDescriptor,
        _projection: Option<&[usize]>,
        _task: &TaskInfo,
    ) -> Result<Box<dyn Source>> {
        Err(Error::Config(format!(
            "connector '{}' cannot be read from",
            self.name()
        )))
    }

    /// Creates one subtask of a sink.
    fn create_sink(&self, _table: &TableDescriptor, _task: &TaskInfo) -> Result<Box<dyn Sink>> {
        Err(Error::Config(format!(
            "connector '{}' cannot be written to",
            self.name()
        )))
    }
}

/// Connectors by name.
#[derive(Debug, Clone, Default)]
pub struct ConnectorRegistry {
    connectors: HashMap<String, Arc<dyn Connector>>,
}

impl ConnectorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a connector.
    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.connectors
            .insert(connector.name().to_string(), connector);
    }

    /// The connector called `name`, or an error with a suggestion.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Connector>> {
        if let Some(c) = self.connectors.get(name) {
            return Ok(Arc::clone(c));
        }
        let mut names: Vec<&str> = self.connectors.keys().map(String::as_str).collect();
        names.sort_unstable();
        let suggestion = crate::suggest::closest(name, names.iter().copied())
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Err(Error::invalid_option(
            "connector",
            format!(
                "unknown connector '{name}'{suggestion}; available: {}",
                names.join(", ")
            ),
        ))
    }

    /// Names of the registered connectors.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.connectors.keys().cloned().collect();
        names.sort();
        names
    }
}
