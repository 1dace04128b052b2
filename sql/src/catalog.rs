//! The catalog: tables declared with `CREATE TABLE`, their connectors,
//! computed columns and watermarks, and how DataFusion sees them (a
//! [`TableProvider`] whose scan is a [`StreamScanExec`] marker that the
//! lowering turns into a source chain).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session as DfSession;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use weir_engine::operator::WindowKind;
use weir_engine::{Connector, TableDescriptor};

/// A computed column: `name AS expr`.
#[derive(Debug, Clone)]
pub struct ComputedColumn {
    /// Column name.
    pub name: String,
    /// The expression as written.
    pub sql: String,
    /// The planned expression over the physical columns.
    pub expr: Expr,
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// The event-time column.
    pub column: String,
    /// The expression as written.
    pub sql: String,
    /// The planned expression over all columns.
    pub expr: Expr,
}

/// A table in the catalog.
#[derive(Debug, Clone)]
pub struct StreamTable {
    /// What the connector reads or writes (physical columns only).
    pub descriptor: TableDescriptor,
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// Columns computed after reading.
    pub computed: Vec<ComputedColumn>,
    /// The watermark declaration.
    pub watermark: Option<WatermarkSpec>,
    /// Physical then computed columns.
    pub schema: SchemaRef,
    /// False when the DDL declared no columns (a sink that takes the query's schema).
    pub declared_columns: bool,
}

impl StreamTable {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// Number of physical columns.
    pub fn physical_len(&self) -> usize {
        self.descriptor.schema.fields().len()
    }

    /// Whether column `index` is a processing-time attribute: a computed
    /// column `name AS PROCTIME()`.
    pub fn is_processing_time(&self, index: usize) -> bool {
        index
            .checked_sub(self.physical_len())
            .and_then(|i| self.computed.get(i))
            .is_some_and(|c| {
                matches!(&c.expr, Expr::ScalarFunction(f) if f.name() == crate::functions::PROCTIME)
            })
    }

    /// The schema with the [`WINDOW_COLUMNS`] (of the time column's type) appended.
    pub fn windowed_schema(&self, time_type: &DataType) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(window_fields(time_type));
        Arc::new(Schema::new(fields))
    }
}

/// The columns a window table function appends, as in Flink: the window's
/// bounds and `window_time`, its last millisecond (`window_end - 1`).
pub const WINDOW_COLUMNS: [&str; 3] = ["window_start", "window_end", "window_time"];

/// The [`WINDOW_COLUMNS`] of a window over a time column of `time_type`.
pub fn window_fields(time_type: &DataType) -> Vec<Field> {
    WINDOW_COLUMNS
        .iter()
        .map(|name| Field::new(*name, time_type.clone(), false))
        .collect()
}

/// A window table function applied to a table.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Tumble, hop or session, with sizes.
    pub kind: WindowKind,
    /// Index of the time column in the table's schema.
    pub time_column: usize,
}

/// How DataFusion sees a stream table, or a window function over one.
#[derive(Debug, Clone)]
pub struct StreamTableProvider {
    table: Arc<StreamTable>,
    window: Option<WindowSpec>,
    schema: SchemaRef,
}

impl StreamTableProvider {
    /// A plain table.
    pub fn new(table: Arc<StreamTable>) -> Self {
        let schema = Arc::clone(&table.schema);
        Self {
            table,
            window: None,
            schema,
        }
    }

    /// The table read.
    pub fn table(&self) -> &Arc<StreamTable> {
        &self.table
    }

    /// True when a window table function applies to the table.
    pub fn is_windowed(&self) -> bool {
        self.window.is_some()
    }

    /// The table with window columns.
    pub fn windowed(table: Arc<StreamTable>, window: WindowSpec) -> Self {
        let time_type = table.schema.field(window.time_column).data_type().clone();
        let schema = table.windowed_schema(&time_type);
        Self {
            table,
            window: Some(window),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for StreamTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StreamScanExec::new(
            Arc::clone(&self.table),
            self.window.clone(),
            Arc::clone(&self.schema),
            projection.cloned(),
        )?))
    }
}

/// Marks where a stream table is read in a DataFusion physical plan. It is
/// never executed by DataFusion: the lowering replaces it with a source chain.
#[derive(Debug)]
pub struct StreamScanExec {
    /// The table.
    pub table: Arc<StreamTable>,
    /// The window function applied, if any.
    pub window: Option<WindowSpec>,
    /// Indices into the (windowed) table schema, or all.
    pub projection: Option<Vec<usize>>,
    /// The unprojected (windowed) schema.
    pub full_schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl StreamScanExec {
    fn new(
        table: Arc<StreamTable>,
        window: Option<WindowSpec>,
        full_schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(full_schema.project(p)?),
            None => Arc::clone(&full_schema),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            table,
            window,
            projection,
            full_schema,
            properties,
        })
    }
}

impl DisplayAs for StreamScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamScanExec: {}", self.table.name())
    }
}

impl ExecutionPlan for StreamScanExec {
    fn name(&self) -> &str {
        "StreamScanExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        datafusion::common::internal_err!(
            "a stream scan runs on the Weir engine, not in DataFusion"
        )
    }
}
