//! Dataflow graphs: the [`LogicalGraph`] a plan lowers to, and the
//! [`PhysicalGraph`] the runtime deploys (parallelism resolved, forward
//! edges chained into one task).

mod logical;
mod physical;

pub use logical::{
    EdgeKind, LogicalEdge, LogicalGraph, LogicalNode, NodeId, NodeKind, OutputPort, SourceNode,
};
pub use physical::{PhysicalEdge, PhysicalGraph, Vertex, VertexId};
