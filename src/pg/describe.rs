//! The result columns of a statement, known before it runs — what a
//! Postgres client's `Describe` of a prepared statement asks for.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_sql::{Outcome, SqlError, Statement};

use crate::{Backend, Engine, Executed};

/// The one column of `EXPLAIN` output over the wire.
pub(crate) const PLAN_COLUMN: &str = "QUERY PLAN";

impl Engine {
    /// The columns `sql` returns, planned without starting a job; `None`
    /// for a statement that returns no rows (`CREATE TABLE`, `INSERT` …).
    /// Statements that change something are not run.
    pub async fn describe(&mut self, sql: &str) -> Result<Option<SchemaRef>, SqlError> {
        if let Backend::Cluster { client, .. } = &self.backend {
            let client = client.clone();
            self.sync_catalog(&client).await?;
        }
        let rewritten = weir_sql::flink_syntax::rewrite_flink_windows(sql);
        Ok(match weir_sql::parse_statement(&rewritten)? {
            Statement::Query(_)
            | Statement::ShowTables
            | Statement::Describe(_)
            | Statement::Set(None) => match self.session.execute(sql).await? {
                // Dropping the plan starts nothing. An updating result
                // goes out as its final rows, without the kinds.
                Outcome::Query(plan) => Some(weir_engine::changelog::data_schema(&plan.schema)),
                Outcome::Rows(batch) => Some(batch.schema()),
                _ => None,
            },
            // Listing jobs changes nothing: run it for its columns.
            Statement::ShowJobs => match self.execute(sql).await? {
                Executed::Rows(batch) => Some(batch.schema()),
                _ => None,
            },
            Statement::Explain { .. } => Some(Arc::new(Schema::new(vec![Field::new(
                PLAN_COLUMN,
                DataType::Utf8,
                false,
            )]))),
            _ => None,
        })
    }
}
