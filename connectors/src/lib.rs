//! `weir-connectors`: the sources and sinks Weir ships with.
//!
//! Each connector implements the engine's [`Connector`] trait and is found by
//! name (`'connector' = '…'` in a table's `WITH (…)` options) in a
//! [`ConnectorRegistry`]. The entry point is [`default_registry`] (or
//! [`register_all`] to add them to an existing registry).
//!
//! ```text
//!   datagen ────┐                                                      ┌─> filesystem (csv | json | parquet | debezium-json)
//!   nexmark ────┼─> Source::poll_batch ─> engine ─> Sink::write_batch ─┼─> print
//!   filesystem ─┘                                                      └─> blackhole
//! ```
//!
//! | connector    | reads | writes | bounded                                   |
//! |--------------|-------|--------|-------------------------------------------|
//! | `datagen`    | yes   |        | with `number-of-rows` or a sequence field |
//! | `nexmark`    | yes   |        | with `nexmark.event.num`                  |
//! | `filesystem` | yes   | yes    | always                                    |
//! | `kafka`      | yes   | yes    | with `scan.bounded.mode`                  |
//! | `upsert-kafka` | yes | yes    | with `scan.bounded.mode`                  |
//! | `print`      |       | yes    |                                           |
//! | `blackhole`  |       | yes    |                                           |
//!
//! Option names follow Flink's where Flink has the connector, RisingWave's for
//! Nexmark. Every source splits its data among the subtasks of the scan so
//! that the union over subtasks is the whole table, and emits batches with
//! exactly the projected schema.
//!
//! Sinks that take updating input (a changelog, see
//! [`weir_engine::changelog`]) say so through
//! [`weir_engine::Connector::accepts_updates`]: `print`, `blackhole`, and
//! `filesystem` and `kafka` with `'format' = 'debezium-json'`. Those two
//! also read `debezium-json` as a changelog
//! ([`weir_engine::Connector::produces_updates`], [`debezium`]). So does
//! `upsert-kafka` ([`kafka::upsert`]), whose records are upserts keyed by
//! the table's primary key: its source emits an upsert stream that the
//! planner normalizes ([`weir_engine::Connector::upsert_key`]).

use std::sync::Arc;

use weir_engine::ConnectorRegistry;

pub mod blackhole;
pub mod datagen;
pub mod debezium;
pub mod filesystem;
pub mod kafka;
pub mod nexmark;
pub mod print;
mod util;

pub use blackhole::BlackholeConnector;
pub use datagen::DatagenConnector;
pub use filesystem::FilesystemConnector;
pub use kafka::KafkaConnector;
pub use kafka::upsert::UpsertKafkaConnector;
pub use nexmark::NexmarkConnector;
pub use print::PrintConnector;

/// Adds every connector of this crate to `registry`.
pub fn register_all(registry: &mut ConnectorRegistry) {
    registry.register(Arc::new(DatagenConnector));
    registry.register(Arc::new(NexmarkConnector));
    registry.register(Arc::new(FilesystemConnector));
    registry.register(Arc::new(KafkaConnector));
    registry.register(Arc::new(UpsertKafkaConnector));
    registry.register(Arc::new(PrintConnector));
    registry.register(Arc::new(BlackholeConnector));
}

/// A registry holding every connector of this crate.
pub fn default_registry() -> ConnectorRegistry {
    let mut registry = ConnectorRegistry::new();
    register_all(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_every_connector() {
        let registry = default_registry();
        assert_eq!(
            registry.names(),
            [
                "blackhole",
                "datagen",
                "filesystem",
                "kafka",
                "nexmark",
                "print",
                "upsert-kafka"
            ]
        );
        let err = registry.get("datagn").unwrap_err().to_string();
        assert!(err.contains("did you mean 'datagen'"), "{err}");
    }
}
