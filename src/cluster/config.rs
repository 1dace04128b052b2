//! Cluster configuration: a TOML file, then `WEIR_<SECTION>_<KEY>`
//! environment variables, then command-line flags, each overriding the last.
//!
//! ```toml
//! [coordinator]
//! listen = "0.0.0.0:7070"
//! heartbeat_timeout_ms = 5000
//!
//! [worker]
//! coordinator = "10.0.0.1:7070"
//! slots = 4
//!
//! [exchange]
//! credit_bytes = 2097152
//! ```
//! `WEIR_WORKER_SLOTS=8` overrides `[worker] slots`; `WEIR_CONFIG` names
//! the file when `--config` is not given.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_engine::exchange::ExchangeConfig;

use super::ClusterError;

/// Every setting of a coordinator or worker process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[coordinator]`: the coordinator process.
    pub coordinator: CoordinatorConfig,
    /// `[worker]`: a worker process.
    pub worker: WorkerConfig,
    /// `[exchange]`: the data plane between workers.
    pub exchange: ExchangeSettings,
}

/// `[coordinator]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address of the control plane (gRPC) that workers and clients reach.
    pub listen: String,
    /// How often workers heartbeat.
    pub heartbeat_interval_ms: u64,
    /// A worker silent for this long (or whose session breaks) is lost, and
    /// its jobs fail.
    pub heartbeat_timeout_ms: u64,
    /// Parallelism of jobs that set none.
    pub default_parallelism: u32,
    /// Where to serve Prometheus metrics (`GET /metrics`); empty: nowhere.
    pub metrics_listen: String,
    /// Where to serve the Postgres wire protocol (`psql -h HOST -p PORT`);
    /// empty: nowhere.
    pub pg_listen: String,
    /// The password Postgres clients authenticate with (SCRAM-SHA-256);
    /// empty: every client is trusted.
    pub pg_password: String,
    /// Where jobs store checkpoints unless they `SET 'execution.checkpointing.dir'`:
    /// `file:///…` (shared by the processes of one host) or `s3://bucket/prefix`.
    /// Empty: `file://` + the system temporary directory + `/weir-checkpoints`.
    pub checkpoint_dir: String,
    /// Checkpoint interval of jobs that set none
    /// (`SET 'execution.checkpointing.interval'`); 0 turns checkpoints off.
    pub checkpoint_interval_ms: u64,
    /// Completed checkpoints kept per job (`execution.checkpointing.num-retained`).
    pub checkpoints_retained: u32,
    /// Restarts a job may make after failures (`restart-strategy.fixed-delay.attempts`).
    pub restart_attempts: u32,
    /// Wait before a restart (`restart-strategy.fixed-delay.delay`).
    pub restart_delay_ms: u64,
    /// Where the coordinator keeps job definitions, so that a restarted
    /// coordinator resumes its jobs; empty: nowhere (jobs are forgotten).
    pub state_dir: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 5_000,
            default_parallelism: 1,
            metrics_listen: String::new(),
            pg_listen: String::new(),
            pg_password: String::new(),
            checkpoint_dir: String::new(),
            checkpoint_interval_ms: 10_000,
            checkpoints_retained: 3,
            restart_attempts: 10,
            restart_delay_ms: 500,
            state_dir: String::new(),
        }
    }
}

impl CoordinatorConfig {
    /// The checkpoint URL jobs use by default.
    pub fn checkpoint_url(&self) -> String {
        match self.checkpoint_dir.trim() {
            "" => format!(
                "file://{}",
                std::env::temp_dir().join("weir-checkpoints").display()
            ),
            dir if dir.contains("://") => dir.to_string(),
            dir => format!("file://{dir}"),
        }
    }
}

/// `[worker]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The coordinator's address.
    pub coordinator: String,
    /// Address of this worker's data plane (Arrow Flight); port 0 picks one.
    pub listen: String,
    /// Unique name of the worker; empty means `worker-<listen address>`.
    pub id: String,
    /// Subtask slots: how many parallel slices of jobs this worker runs.
    pub slots: u32,
    /// How long to keep trying to reach the coordinator at start.
    pub connect_timeout_ms: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`); empty: nowhere.
    pub metrics_listen: String,
    /// Local directory of the worker's RocksDB state; empty: a directory
    /// named after the worker in the system temporary directory.
    pub state_dir: String,
    /// RocksDB block cache shared by the worker's jobs, in MiB.
    pub state_block_cache_mb: u64,
    /// RocksDB write buffers (memtables) shared by the worker's jobs, in MiB.
    pub state_write_buffer_mb: u64,
    /// Keyed state each stateful operator subtask keeps in memory, in KiB;
    /// past it the state is spilled to RocksDB as runs.
    pub state_operator_memory_kb: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            coordinator: "127.0.0.1:7070".into(),
            listen: "127.0.0.1:0".into(),
            id: String::new(),
            slots: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2),
            connect_timeout_ms: 10_000,
            metrics_listen: String::new(),
            state_dir: String::new(),
            state_block_cache_mb: 64,
            state_write_buffer_mb: 64,
            state_operator_memory_kb: 64 << 10,
        }
    }
}

/// `[exchange]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeSettings {
    /// Credit window per channel in bytes: data a sender may have in flight.
    pub credit_bytes: u64,
    /// Batches queued per channel at the receiving subtask.
    pub channel_capacity: usize,
    /// How long to try to connect to a peer worker.
    pub connect_timeout_ms: u64,
}

impl Default for ExchangeSettings {
    fn default() -> Self {
        let d = ExchangeConfig::default();
        Self {
            credit_bytes: d.credit_bytes,
            channel_capacity: d.channel_capacity,
            connect_timeout_ms: d.connect_timeout.as_millis() as u64,
        }
    }
}

impl ExchangeSettings {
    /// The engine's data-plane settings.
    pub fn to_exchange_config(&self) -> ExchangeConfig {
        ExchangeConfig {
            credit_bytes: self.credit_bytes.max(1),
            channel_capacity: self.channel_capacity.max(1),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
    }
}

impl ClusterConfig {
    /// Reads the file (or `$WEIR_CONFIG`, or nothing), then applies
    /// `WEIR_<SECTION>_<KEY>` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, ClusterError> {
        let env_file = std::env::var_os("WEIR_CONFIG");
        let file = file.or(env_file.as_deref().map(Path::new));
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ClusterError::Config(format!("cannot read {}: {e}", path.display()))
            })?,
            None => String::new(),
        };
        let origin = file.map_or("defaults".to_string(), |p| p.display().to_string());
        Self::from_toml_and_env(&text, &origin, |k| std::env::var(k).ok())
    }

    /// Parses TOML text, then applies overrides from `env`.
    pub fn from_toml_and_env(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClusterError> {
        let parsed: ClusterConfig =
            toml::from_str(text).map_err(|e| ClusterError::Config(format!("{origin}: {e}")))?;
        let mut table = toml::Table::try_from(&parsed)
            .map_err(|e| ClusterError::Config(format!("cannot represent the config: {e}")))?;
        for (section, values) in table.iter_mut() {
            let Some(values) = values.as_table_mut() else {
                continue;
            };
            for (key, value) in values.iter_mut() {
                let var = format!("WEIR_{section}_{key}").to_uppercase();
                if let Some(raw) = env(&var) {
                    *value = env_value(value, &raw).ok_or_else(|| {
                        ClusterError::Config(format!(
                            "{var}={raw}: not a valid {}",
                            value.type_str()
                        ))
                    })?;
                }
            }
        }
        table
            .try_into()
            .map_err(|e: toml::de::Error| ClusterError::Config(format!("environment: {e}")))
    }

    /// The settings as TOML, every key present (for `--help` and docs).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// An environment value typed like the setting it overrides.
fn env_value(current: &toml::Value, raw: &str) -> Option<toml::Value> {
    Some(match current {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let text = "[worker]\nslots = 3\ncoordinator = \"10.0.0.1:7070\"\n";
        let config = ClusterConfig::from_toml_and_env(text, "test.toml", |k| {
            (k == "WEIR_WORKER_SLOTS").then(|| "8".to_string())
        })
        .unwrap();
        assert_eq!(config.worker.slots, 8);
        assert_eq!(config.worker.coordinator, "10.0.0.1:7070");
        assert_eq!(config.coordinator, CoordinatorConfig::default());
    }

    #[test]
    fn bad_settings_are_named() {
        let err = ClusterConfig::from_toml_and_env("[worker]\nslotz = 3\n", "w.toml", |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.toml") && err.contains("slotz"), "{err}");
        let err = ClusterConfig::from_toml_and_env("", "-", |k| {
            (k == "WEIR_EXCHANGE_CREDIT_BYTES").then(|| "lots".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("WEIR_EXCHANGE_CREDIT_BYTES=lots"), "{err}");
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = ClusterConfig::default();
        let again = ClusterConfig::from_toml_and_env(&config.to_toml(), "-", |_| None).unwrap();
        assert_eq!(config, again);
    }
}
