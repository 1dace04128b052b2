//! Weir's integration tests: one test binary, one module per area.
//!
//! - `slt`: the sqllogictest corpus under `tests/slt/`, at parallelism 1 and 4.
//! - `cdc`: changelogs (`debezium-json`) written and read back through files.
//! - `oracle`: every window and aggregate query of the corpus against DataFusion batch SQL.
//! - `explain`: snapshots of EXPLAIN output and of the main error messages.
//! - `cli`: the `weir` binary, run as a user runs it.
//! - `run`: `weir run`: whole-script planning, LIMIT, the end-of-run summary, Ctrl-C, checkpoints.
//! - `shell`: `weir sql` with scripts, and in a real terminal (tmux).
//! - `cluster`: a coordinator and worker processes of the `weir` binary on 127.0.0.x.
//! - `pg`: the coordinator's Postgres wire protocol server, driven by `psql` and `tokio-postgres`.
//! - `kafka`: Kafka brokers (librdkafka's mock cluster in `weir-kafka-mock`, and tansu) and clients.

mod cdc;
mod changelog;
mod cli;
mod cluster;
mod common;
mod explain;
mod kafka;
mod nexmark;
mod oracle;
mod pg;
mod run;
mod shell;
mod slt;
