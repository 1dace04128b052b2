//! `weir-engine`: Weir's dataflow runtime.
//!
//! A job is a [`LogicalGraph`] of operators (built by `weir-sql` from a query,
//! or by hand through this API), turned into a [`PhysicalGraph`] (parallelism
//! resolved, forward edges chained) and deployed by the [`LocalRuntime`] as
//! one task per subtask. [`Message`]s flow along bounded channels: record
//! batches, watermarks, checkpoint barriers, end of stream.
//!
//! ```text
//!   Source ─> WatermarkGenerator ─> Projection ──Hash(key)──> WindowAggregate ─> Sink
//!   └────────── one chained task ──────────────┘             └── one task ──────────┘
//! ```
//!
//! Keyed state lives in memory up to a per-subtask budget; past it,
//! operators spill it into the job's RocksDB instance
//! ([`operator::StateSpill`]), which checkpoints snapshot and upload
//! incrementally ([`state`]).
//!
//! The engine knows nothing of SQL or of concrete connectors: it defines the
//! [`Connector`], [`Source`] and [`Sink`] traits and the operators; the
//! `weir-sql` and `weir-connectors` crates build on them.

pub mod changelog;
pub mod clock;
pub mod connector;
pub mod error;
pub mod exchange;
pub mod graph;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod partition;
pub mod runtime;
pub mod state;
pub mod suggest;
pub mod testing;
pub mod time;
pub mod types;

pub use changelog::ChangelogMode;
pub use connector::{
    Connector, ConnectorOptions, ConnectorRegistry, LATE_RECORDS_SINK_OPTION, Sink, Source,
    SourcePoll, TableDescriptor,
};
pub use error::{Error, ErrorDomain, Result};
pub use graph::{EdgeKind, LogicalGraph, OutputPort, PhysicalGraph};
pub use message::{CheckpointBarrier, CheckpointId, Message, RowKind, Watermark};
pub use operator::{Collector, Operator, OperatorContext, OperatorFactory, TaskInfo};
pub use runtime::{
    CheckpointEvent, CheckpointSetup, Deployment, JobHandle, LocalRuntime, RuntimeConfig,
    TaskSnapshot,
};
pub use types::{sql_type_name, sql_type_names_in};
