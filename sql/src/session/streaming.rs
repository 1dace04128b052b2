//! The `SET` keys that shape how a query runs as a stream, with Flink's
//! names: the runtime mode, mini-batching, the state TTL and whether
//! changelog sources may repeat change events; and where late rows go.

use std::collections::BTreeMap;

use weir_engine::operator::MiniBatch;
use weir_engine::suggest::closest;
use weir_engine::time::parse_duration_ms;

use crate::error::{Result, SqlError};

/// `execution.runtime-mode`.
pub const RUNTIME_MODE_KEY: &str = "execution.runtime-mode";
/// `table.exec.mini-batch.enabled`.
pub const MINI_BATCH_ENABLED_KEY: &str = "table.exec.mini-batch.enabled";
/// `table.exec.mini-batch.allow-latency`.
pub const MINI_BATCH_LATENCY_KEY: &str = "table.exec.mini-batch.allow-latency";
/// `table.exec.mini-batch.size`.
pub const MINI_BATCH_SIZE_KEY: &str = "table.exec.mini-batch.size";
/// `table.exec.state.ttl`.
pub const STATE_TTL_KEY: &str = "table.exec.state.ttl";
/// `table.exec.source.cdc-events-duplicate`: changelog sources may repeat
/// change events (at-least-once CDC), so the planner deduplicates them by
/// the table's primary key with a `ChangelogNormalize`, as Flink does.
pub const CDC_EVENTS_DUPLICATE_KEY: &str = "table.exec.source.cdc-events-duplicate";
/// `table.exec.late-records.sink`: the sink table for rows that windows
/// refuse as late (Weir's; Flink drops them).
pub const LATE_RECORDS_SINK_KEY: &str = "table.exec.late-records.sink";

/// The keys this module reads.
pub const STREAMING_KEYS: &[&str] = &[
    RUNTIME_MODE_KEY,
    MINI_BATCH_ENABLED_KEY,
    MINI_BATCH_LATENCY_KEY,
    MINI_BATCH_SIZE_KEY,
    STATE_TTL_KEY,
    CDC_EVENTS_DUPLICATE_KEY,
    LATE_RECORDS_SINK_KEY,
];

/// How results are produced (`execution.runtime-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeMode {
    /// As a stream: a `GROUP BY` without a window emits a changelog of
    /// updates, even over a bounded table.
    Streaming,
    /// Final results only: every table must be bounded, and a `GROUP BY`
    /// emits its rows once, at the end of input.
    Batch,
    /// Batch when every table the aggregate reads is bounded, streaming
    /// otherwise (Flink's `AUTOMATIC`; Weir's default).
    #[default]
    Automatic,
}

/// The streaming settings of a session, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamingConfig {
    /// `execution.runtime-mode`.
    pub runtime_mode: RuntimeMode,
    /// `table.exec.mini-batch.*`, when enabled.
    pub mini_batch: Option<MiniBatch>,
    /// `table.exec.state.ttl` in ms (`None`: state is kept forever).
    pub state_ttl_ms: Option<i64>,
    /// `table.exec.source.cdc-events-duplicate`: a changelog source is
    /// followed by a `ChangelogNormalize` keyed by its primary key.
    pub cdc_events_duplicate: bool,
    /// `table.exec.late-records.sink`: the table late rows go to, unless
    /// the table read says otherwise (`None`: they are dropped).
    pub late_records_sink: Option<String>,
}

fn config_error(message: String) -> SqlError {
    SqlError::Config(message)
}

/// Parses one `SET` value of [`STREAMING_KEYS`] (the others pass).
pub fn check_setting(key: &str, value: &str) -> Result<()> {
    let mut settings = BTreeMap::new();
    settings.insert(key.to_string(), value.to_string());
    if key.starts_with("table.exec.mini-batch.") && key != MINI_BATCH_ENABLED_KEY {
        // Checked alone: the other mini-batch keys may come later.
        return match key {
            MINI_BATCH_LATENCY_KEY => positive_duration(key, value).map(|_| ()),
            MINI_BATCH_SIZE_KEY => positive_size(value).map(|_| ()),
            _ => Ok(()),
        };
    }
    if key == MINI_BATCH_ENABLED_KEY {
        return parse_bool(key, value).map(|_| ());
    }
    StreamingConfig::from_settings(&settings).map(|_| ())
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(config_error(format!(
            "'{key}' must be 'true' or 'false', not '{value}'"
        ))),
    }
}

fn positive_duration(key: &str, value: &str) -> Result<i64> {
    let ms = parse_duration_ms(key, value)?;
    if ms <= 0 {
        return Err(config_error(format!(
            "'{key}' must be a positive duration ('1 s', '500 ms'), not '{value}'"
        )));
    }
    Ok(ms)
}

fn positive_size(value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            config_error(format!(
                "'{MINI_BATCH_SIZE_KEY}' must be a positive number of rows, not '{value}'"
            ))
        })
}

impl StreamingConfig {
    /// Reads the settings; a bad value is an error naming its key.
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self> {
        let runtime_mode = match settings.get(RUNTIME_MODE_KEY) {
            None => RuntimeMode::default(),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "streaming" => RuntimeMode::Streaming,
                "batch" => RuntimeMode::Batch,
                "automatic" => RuntimeMode::Automatic,
                other => {
                    let modes = ["streaming", "batch", "automatic"];
                    let hint = closest(other, modes)
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    return Err(config_error(format!(
                        "'{RUNTIME_MODE_KEY}' = '{v}' is not a runtime mode{hint}; use 'streaming', 'batch' or 'automatic'"
                    )));
                }
            },
        };
        let enabled = settings
            .get(MINI_BATCH_ENABLED_KEY)
            .map(|v| parse_bool(MINI_BATCH_ENABLED_KEY, v))
            .transpose()?
            .unwrap_or(false);
        let mini_batch = if enabled {
            let latency = settings.get(MINI_BATCH_LATENCY_KEY).ok_or_else(|| {
                config_error(format!(
                    "'{MINI_BATCH_ENABLED_KEY}' is true but '{MINI_BATCH_LATENCY_KEY}' is not set (as in Flink, both it and '{MINI_BATCH_SIZE_KEY}' are needed)"
                ))
            })?;
            let size = settings.get(MINI_BATCH_SIZE_KEY).ok_or_else(|| {
                config_error(format!(
                    "'{MINI_BATCH_ENABLED_KEY}' is true but '{MINI_BATCH_SIZE_KEY}' is not set (as in Flink, both it and '{MINI_BATCH_LATENCY_KEY}' are needed)"
                ))
            })?;
            Some(MiniBatch {
                allow_latency_ms: positive_duration(MINI_BATCH_LATENCY_KEY, latency)?,
                size: positive_size(size)?,
            })
        } else {
            None
        };
        let state_ttl_ms = settings
            .get(STATE_TTL_KEY)
            .map(|v| parse_duration_ms(STATE_TTL_KEY, v))
            .transpose()?
            .filter(|&ms| ms > 0);
        let cdc_events_duplicate = settings
            .get(CDC_EVENTS_DUPLICATE_KEY)
            .map(|v| parse_bool(CDC_EVENTS_DUPLICATE_KEY, v))
            .transpose()?
            .unwrap_or(false);
        let late_records_sink = settings
            .get(LATE_RECORDS_SINK_KEY)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        Ok(Self {
            runtime_mode,
            mini_batch,
            state_ttl_ms,
            cdc_events_duplicate,
            late_records_sink,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<StreamingConfig> {
        StreamingConfig::from_settings(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_flinks_keys() {
        let c = config(&[
            (RUNTIME_MODE_KEY, "STREAMING"),
            (MINI_BATCH_ENABLED_KEY, "true"),
            (MINI_BATCH_LATENCY_KEY, "2 s"),
            (MINI_BATCH_SIZE_KEY, "5000"),
            (STATE_TTL_KEY, "1 h"),
            (CDC_EVENTS_DUPLICATE_KEY, "TRUE"),
        ])
        .unwrap();
        assert_eq!(c.runtime_mode, RuntimeMode::Streaming);
        assert_eq!(
            c.mini_batch,
            Some(MiniBatch {
                allow_latency_ms: 2000,
                size: 5000
            })
        );
        assert_eq!(c.state_ttl_ms, Some(3_600_000));
        assert!(c.cdc_events_duplicate);
        assert_eq!(config(&[]).unwrap(), StreamingConfig::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = config(&[(RUNTIME_MODE_KEY, "streamin")]).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 'streaming'"),
            "{err}"
        );
        let err = config(&[(MINI_BATCH_ENABLED_KEY, "true")]).unwrap_err();
        assert!(err.to_string().contains(MINI_BATCH_LATENCY_KEY), "{err}");
        let err = check_setting(MINI_BATCH_SIZE_KEY, "0").unwrap_err();
        assert!(err.to_string().contains("positive number of rows"), "{err}");
        let err = check_setting(CDC_EVENTS_DUPLICATE_KEY, "yes").unwrap_err();
        assert!(
            err.to_string()
                .contains("'table.exec.source.cdc-events-duplicate' must be 'true' or 'false'"),
            "{err}"
        );
    }
}
