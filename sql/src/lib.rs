//! `weir-sql`: Weir's SQL layer.
//!
//! A [`Session`] holds the catalog (tables declared with Flink-style
//! `CREATE TABLE … WITH (…)`) and the `SET` configuration. Each statement is
//! parsed ([`statement`]), Flink's legacy group windows are rewritten to
//! window table functions ([`group_window`]), queries are planned by
//! DataFusion with Weir's tables, window table functions (`TUMBLE`, `HOP`,
//! `CUMULATE`, `SESSION`) and Flink-compatible functions, and the physical
//! plan is lowered ([`lowering`]) to a `weir_engine` dataflow graph:
//!
//! ```text
//! SQL text ─> Statement ─> DataFusion LogicalPlan ─> ExecutionPlan ─> LogicalGraph ─> PhysicalGraph
//! ```

pub mod catalog;
pub mod error;
pub mod flink_syntax;
pub mod functions;
pub mod group_window;
pub mod lowering;
mod messages;
pub mod session;
pub mod statement;
pub mod types;
pub mod view;
pub mod window_tvf;

pub use error::{Construct, Position, Result, SqlError};
pub use session::{JobControl, JobOutput, JobPlan, Outcome, QueryPlan, Session};
pub use statement::{
    CreateTable, CreateView, PrimaryKey, Statement, StatementText, parse_statement,
    split_statements,
};
