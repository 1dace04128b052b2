//! The physical graph: every node's parallelism resolved and chains of
//! forward edges fused into vertices, each deployed as `parallelism` tasks.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use arrow::datatypes::Schema;

use super::logical::{EdgeKind, LogicalGraph, NodeId, NodeKind, OutputPort};
use crate::changelog::ChangelogMode;
use crate::error::{Error, Result};
use crate::partition::DEFAULT_MAX_KEY_GROUPS;

/// Index of a vertex in its [`PhysicalGraph`].
pub type VertexId = usize;

/// A chain of nodes run by the same task, head first.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// Its index.
    pub id: VertexId,
    /// The logical nodes it runs, head first.
    pub nodes: Vec<NodeId>,
    /// Number of subtasks.
    pub parallelism: usize,
}

/// An edge between vertices.
#[derive(Debug, Clone)]
pub struct PhysicalEdge {
    /// Upstream vertex.
    pub from: VertexId,
    /// Downstream vertex.
    pub to: VertexId,
    /// How rows travel (a forward edge between different parallelisms becomes a rebalance).
    pub kind: EdgeKind,
    /// Which output of the upstream vertex's last node it carries.
    pub port: OutputPort,
    /// Which input of the downstream vertex's head node it is (see
    /// [`super::LogicalEdge::input`]).
    pub input: usize,
}

/// The deployable graph.
#[derive(Debug, Clone)]
pub struct PhysicalGraph {
    logical: LogicalGraph,
    vertices: Vec<Vertex>,
    edges: Vec<PhysicalEdge>,
    max_key_groups: u32,
}

impl PhysicalGraph {
    /// Resolves parallelism (`default_parallelism` where a node has none)
    /// and chains forward edges.
    pub fn from_logical(logical: LogicalGraph, default_parallelism: usize) -> Result<Self> {
        let default_parallelism = default_parallelism.max(1);
        // A node fed forward by an updating stream runs at its input's
        // parallelism: a rebalance would reorder the changes of a key.
        let mut resolved: Vec<usize> = Vec::with_capacity(logical.nodes().len());
        for node in logical.nodes() {
            let mut inputs = logical.inputs(node.id);
            let inherited = match (inputs.next(), inputs.next()) {
                (Some(edge), None)
                    if edge.kind == EdgeKind::Forward
                        && edge.from < resolved.len()
                        && ChangelogMode::of(&logical.node(edge.from).kind.output_schema())
                            .is_updating() =>
                {
                    Some(resolved[edge.from])
                }
                _ => None,
            };
            resolved.push(
                node.parallelism
                    .or(inherited)
                    .unwrap_or(default_parallelism)
                    .max(1),
            );
        }
        let parallelism = |id: NodeId| resolved[id];
        let mut vertex_of: Vec<VertexId> = Vec::with_capacity(logical.nodes().len());
        let mut vertices: Vec<Vertex> = Vec::new();
        for node in logical.nodes() {
            let inputs: Vec<_> = logical.inputs(node.id).collect();
            if inputs.iter().any(|e| e.from >= node.id) {
                return Err(Error::internal(
                    "logical graph nodes are not in topological order",
                ));
            }
            if matches!(node.kind, NodeKind::Source(_)) != inputs.is_empty() {
                return Err(Error::internal(format!(
                    "node {} ({}) has {} inputs",
                    node.id,
                    node.kind,
                    inputs.len()
                )));
            }
            let chain_to = match inputs.as_slice() {
                [edge]
                    if edge.kind == EdgeKind::Forward
                        && edge.port == OutputPort::Main
                        && parallelism(edge.from) == parallelism(node.id)
                        && logical.outputs(edge.from).count() == 1 =>
                {
                    Some(vertex_of[edge.from])
                }
                _ => None,
            };
            match chain_to {
                Some(v) => {
                    vertices[v].nodes.push(node.id);
                    vertex_of.push(v);
                }
                None => {
                    let id = vertices.len();
                    vertices.push(Vertex {
                        id,
                        nodes: vec![node.id],
                        parallelism: parallelism(node.id),
                    });
                    vertex_of.push(id);
                }
            }
        }
        let edges = logical
            .edges()
            .iter()
            .filter(|e| vertex_of[e.from] != vertex_of[e.to])
            .map(|e| {
                let (from, to) = (vertex_of[e.from], vertex_of[e.to]);
                let kind = match &e.kind {
                    EdgeKind::Forward if vertices[from].parallelism != vertices[to].parallelism => {
                        EdgeKind::Rebalance
                    }
                    other => other.clone(),
                };
                PhysicalEdge {
                    from,
                    to,
                    kind,
                    port: e.port,
                    input: e.input,
                }
            })
            .collect();
        Ok(Self {
            logical,
            vertices,
            edges,
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
        })
    }

    /// Sets the number of key groups (the most subtasks a keyed operator can have).
    pub fn with_max_key_groups(mut self, max_key_groups: u32) -> Self {
        self.max_key_groups = max_key_groups.max(1);
        self
    }

    /// The number of key groups.
    pub fn max_key_groups(&self) -> u32 {
        self.max_key_groups
    }

    /// The logical graph it was built from.
    pub fn logical(&self) -> &LogicalGraph {
        &self.logical
    }

    /// Every vertex, upstream first.
    pub fn vertices(&self) -> &[Vertex] {
        &self.vertices
    }

    /// The vertex of the job's own output: the one running the graph's last
    /// node, as the job's sink is added after everything it reads (side
    /// outputs' sinks, such as late rows', come before it).
    pub fn output_vertex(&self) -> Option<&Vertex> {
        let last = self.logical.nodes().len().checked_sub(1)?;
        self.vertices.iter().find(|v| v.nodes.contains(&last))
    }

    /// Every edge.
    pub fn edges(&self) -> &[PhysicalEdge] {
        &self.edges
    }

    /// A vertex's name: its nodes' names joined by `->`.
    pub fn vertex_name(&self, id: VertexId) -> String {
        self.vertices[id]
            .nodes
            .iter()
            .map(|&n| match &self.logical.node(n).kind {
                NodeKind::Source(s) => format!("Source[{}]", s.table().name),
                NodeKind::Operator(o) => o.name().to_string(),
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    fn edge_label(&self, edge: &PhysicalEdge) -> String {
        let tail = *self.vertices[edge.from].nodes.last().unwrap_or(&0);
        match edge.port {
            OutputPort::Main => edge
                .kind
                .describe(&self.logical.node(tail).kind.output_schema()),
            // The side output's schema is not the node's: name the port.
            port => format!(
                "{} ({port})",
                edge.kind.describe(&Arc::new(Schema::empty()))
            ),
        }
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph weir {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for v in &self.vertices {
            let label: Vec<String> = v
                .nodes
                .iter()
                .map(|&n| escape_dot(&self.logical.node(n).kind.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "  v{} [label=\"{}\\nparallelism={}\"];",
                v.id,
                label.join("\\n"),
                v.parallelism
            );
        }
        for e in &self.edges {
            let _ = writeln!(
                out,
                "  v{} -> v{} [label=\"{}\"];",
                e.from,
                e.to,
                escape_dot(&self.edge_label(e))
            );
        }
        out.push_str("}\n");
        out
    }
}

fn escape_dot(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl fmt::Display for PhysicalGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.vertices {
            writeln!(f, "Vertex {} (parallelism {}):", v.id, v.parallelism)?;
            for e in self.edges.iter().filter(|e| e.to == v.id) {
                writeln!(f, "  <- Vertex {} via {}", e.from, self.edge_label(e))?;
            }
            for &n in &v.nodes {
                let kind = &self.logical.node(n).kind;
                let mode = ChangelogMode::of(&kind.output_schema());
                if mode.is_updating() {
                    writeln!(f, "  {kind}  [changelog: {mode}]")?;
                } else {
                    writeln!(f, "  {kind}")?;
                }
            }
        }
        Ok(())
    }
}
