//! Placement: decides which device runs each node.
//!
//! With one device everything runs on device 0. Splitting a two-device network's channels
//! (the paper's two towers) is not implemented yet: such a network is placed whole on device 0,
//! which computes the same result, and `devices: 2` is kept on the graph for that later pass.

use crate::ir::Graph;

/// Assigns a device to every node.
pub fn place(graph: &mut Graph) {
    for id in graph.topo() {
        graph.node_mut(id).device = 0;
    }
}
