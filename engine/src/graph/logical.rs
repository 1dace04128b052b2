//! The logical dataflow graph: operators and the edges between them, as a
//! plan lowers to it.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::connector::{Connector, Source, TableDescriptor};
use crate::error::{Error, Result};
use crate::operator::{OperatorFactory, TaskInfo};

/// Index of a node in its [`LogicalGraph`].
pub type NodeId = usize;

/// A source table in the graph.
#[derive(Debug, Clone)]
pub struct SourceNode {
    connector: Arc<dyn Connector>,
    table: TableDescriptor,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl SourceNode {
    /// Reads the `projection` of `table`'s columns through `connector`.
    pub fn new(
        connector: Arc<dyn Connector>,
        table: TableDescriptor,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let mut schema = match &projection {
            Some(p) => Arc::new(table.schema.project(p)?),
            None => Arc::clone(&table.schema),
        };
        if let Some(key) = connector.upsert_key(&table) {
            let key: Vec<usize> = key
                .iter()
                .map(|k| {
                    schema.index_of(k).map_err(|_| {
                        Error::internal(format!(
                            "table '{}': the upsert key column '{k}' is not read by the source",
                            table.name
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            schema = crate::changelog::upsert_schema(&schema, &key);
        } else if connector.produces_updates(&table) {
            schema = crate::changelog::updating_schema(&schema);
        }
        Ok(Self {
            connector,
            table,
            projection,
            schema,
        })
    }

    /// The schema of the batches the source emits.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The table read.
    pub fn table(&self) -> &TableDescriptor {
        &self.table
    }

    /// True when the source ends by itself.
    pub fn is_bounded(&self) -> bool {
        self.connector.is_bounded(&self.table)
    }

    /// Creates one subtask of the source.
    pub fn create(&self, task: &TaskInfo) -> Result<Box<dyn Source>> {
        self.connector
            .create_source(&self.table, self.projection.as_deref(), task)
    }
}

impl fmt::Display for SourceNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source: {} ({})", self.table.name, self.connector.name())?;
        if self.projection.is_some() {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            write!(f, " columns=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

/// What a node does.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Reads a table.
    Source(SourceNode),
    /// Transforms its input (sinks are operators that emit nothing).
    Operator(Arc<dyn OperatorFactory>),
}

impl NodeKind {
    /// The schema of what the node emits.
    pub fn output_schema(&self) -> SchemaRef {
        match self {
            NodeKind::Source(s) => s.output_schema(),
            NodeKind::Operator(o) => o.output_schema(),
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKind::Source(s) => s.fmt(f),
            NodeKind::Operator(o) => o.fmt(f),
        }
    }
}

/// A node of the logical graph.
#[derive(Debug, Clone)]
pub struct LogicalNode {
    /// Its index.
    pub id: NodeId,
    /// What it does.
    pub kind: NodeKind,
    /// Its parallelism, or `None` for the job's default.
    pub parallelism: Option<usize>,
}

/// How rows travel along an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    /// Subtask `i` to subtask `i` (same parallelism); chained when possible.
    Forward,
    /// By the hash of these columns (of the upstream schema), through key groups.
    Hash(Vec<usize>),
    /// Every row to every downstream subtask.
    Broadcast,
    /// Whole batches round-robin.
    Rebalance,
}

impl EdgeKind {
    /// A description naming the key columns in `schema`.
    pub fn describe(&self, schema: &SchemaRef) -> String {
        match self {
            EdgeKind::Forward => "Forward".into(),
            EdgeKind::Hash(cols) => {
                let names: Vec<String> = cols
                    .iter()
                    .map(|&c| {
                        schema
                            .fields()
                            .get(c)
                            .map_or_else(|| format!("#{c}"), |f| f.name().clone())
                    })
                    .collect();
                format!("Hash({})", names.join(", "))
            }
            EdgeKind::Broadcast => "Broadcast".into(),
            EdgeKind::Rebalance => "Rebalance".into(),
        }
    }
}

/// Which of a node's outputs an edge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputPort {
    /// What the operator emits.
    #[default]
    Main,
    /// Rows the operator refused because they came behind the watermark
    /// (see [`LateRows`](crate::operator::LateRows)).
    LateRows,
}

impl fmt::Display for OutputPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputPort::Main => "main",
            OutputPort::LateRows => "late rows",
        })
    }
}

/// An edge of the logical graph.
#[derive(Debug, Clone)]
pub struct LogicalEdge {
    /// Upstream node.
    pub from: NodeId,
    /// Downstream node.
    pub to: NodeId,
    /// How rows travel.
    pub kind: EdgeKind,
    /// Which of the upstream node's outputs it carries. Watermarks,
    /// barriers and the end of the stream go along every edge.
    pub port: OutputPort,
    /// Which input of the downstream node it is, in the order the node's
    /// inputs were connected: a join's left input is 0, its right 1.
    pub input: usize,
}

/// Operators and edges, as a query lowers to them.
#[derive(Debug, Clone, Default)]
pub struct LogicalGraph {
    nodes: Vec<LogicalNode>,
    edges: Vec<LogicalEdge>,
    /// What the user should know about the job before it runs (a join
    /// whose state grows without bound).
    warnings: Vec<String>,
}

impl LogicalGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source; returns its id.
    pub fn add_source(&mut self, source: SourceNode, parallelism: Option<usize>) -> NodeId {
        self.add_node(NodeKind::Source(source), parallelism)
    }

    /// Adds an operator; returns its id.
    pub fn add_operator(
        &mut self,
        operator: Arc<dyn OperatorFactory>,
        parallelism: Option<usize>,
    ) -> NodeId {
        self.add_node(NodeKind::Operator(operator), parallelism)
    }

    fn add_node(&mut self, kind: NodeKind, parallelism: Option<usize>) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(LogicalNode {
            id,
            kind,
            parallelism,
        });
        id
    }

    /// Connects two nodes.
    pub fn connect(&mut self, from: NodeId, to: NodeId, kind: EdgeKind) -> Result<()> {
        self.connect_port(from, OutputPort::Main, to, kind)
    }

    /// Connects output `port` of `from` to `to`.
    pub fn connect_port(
        &mut self,
        from: NodeId,
        port: OutputPort,
        to: NodeId,
        kind: EdgeKind,
    ) -> Result<()> {
        if from >= self.nodes.len() || to >= self.nodes.len() || from == to {
            return Err(Error::internal(format!("bad edge {from} -> {to}")));
        }
        if let EdgeKind::Hash(cols) = &kind {
            let width = self.nodes[from].kind.output_schema().fields().len();
            if let Some(bad) = cols.iter().find(|&&c| c >= width) {
                return Err(Error::internal(format!(
                    "hash key column {bad} out of range"
                )));
            }
        }
        let input = self.edges.iter().filter(|e| e.to == to).count();
        self.edges.push(LogicalEdge {
            from,
            to,
            kind,
            port,
            input,
        });
        Ok(())
    }

    /// Notes a warning for whoever submits the job.
    pub fn warn(&mut self, warning: impl Into<String>) {
        let warning = warning.into();
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// The warnings noted while the graph was built.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every node.
    pub fn nodes(&self) -> &[LogicalNode] {
        &self.nodes
    }

    /// Every edge.
    pub fn edges(&self) -> &[LogicalEdge] {
        &self.edges
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &LogicalNode {
        &self.nodes[id]
    }

    /// Edges into `id`.
    pub fn inputs(&self, id: NodeId) -> impl Iterator<Item = &LogicalEdge> {
        self.edges.iter().filter(move |e| e.to == id)
    }

    /// Edges out of `id`.
    pub fn outputs(&self, id: NodeId) -> impl Iterator<Item = &LogicalEdge> {
        self.edges.iter().filter(move |e| e.from == id)
    }

    /// Sets a node's parallelism.
    pub fn set_parallelism(&mut self, id: NodeId, parallelism: Option<usize>) {
        self.nodes[id].parallelism = parallelism;
    }
}
