//! Validation: checks the shaped graph against itself and the target, and gates codegen.
//!
//! Structural checks (one input, one output, every node shaped, a chain with no cycle) are
//! internal invariants; a failure is a compiler bug. Target checks are the user's concern and
//! point at the layer: a parameter is split along its rows into parts that each fit the
//! storage binding limit, a batch is cut into micro-batches so that every activation binding
//! fits, and a tensor that cannot fit even then is an error. It changes nothing in the graph.

use crate::error::{Errors, Sink};
use crate::ir::{Graph, NodeId, Op, Place};
use crate::schedule::algo::WORKGROUP;
use alexnet_plan::Limits;
use std::collections::BTreeMap;

/// What the target offers and what the user asked for.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub limits: Limits,
    pub max_batch: u32,
}

/// Facts codegen needs, available only for a valid graph.
#[derive(Clone, Debug)]
pub struct GraphInfo {
    /// Nodes in execution order.
    pub order: Vec<NodeId>,
    /// Rows per weight part of each conv/linear node, as `(start, rows)` ranges.
    pub parts: BTreeMap<NodeId, Vec<(u32, u32)>>,
    /// Largest batch whose bindings and dispatches all fit the target.
    pub micro_batch: u32,
    pub target: Target,
}

/// Bytes of `elems` f32 values.
fn bytes(elems: u64) -> u64 {
    elems.saturating_mul(4)
}

/// Validates `graph` for `target`.
pub fn validate(graph: &Graph, target: Target) -> Result<GraphInfo, Errors> {
    let mut sink = Sink::default();
    let order = graph.topo();
    assert_eq!(
        order.len(),
        graph.g.node_count(),
        "internal compiler error: the IR has a cycle"
    );
    let inputs = order
        .iter()
        .filter(|&&id| matches!(graph.node(id).op, Op::Input { .. }))
        .count();
    let outputs = order
        .iter()
        .filter(|&&id| matches!(graph.node(id).op, Op::Output))
        .count();
    assert!(
        inputs == 1 && outputs == 1,
        "internal compiler error: the IR needs one input and one output"
    );

    let limit = target.limits.max_storage_buffer_binding_size;
    let mut micro_batch = target.max_batch;
    let mut parts = BTreeMap::new();
    for &id in &order {
        let node = graph.node(id);
        let shape = node
            .shape
            .as_ref()
            .expect("internal compiler error: shapes ran before validation");
        // Saturating: a declaration with absurd sizes must reach the error below, not overflow.
        let per_image = bytes(
            shape
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(u64::from(d))),
        );
        // Views, in-place dropout and the output node bind nothing of their own; gradients
        // have the size of what they differentiate, so they fit wherever it fits.
        let owns_binding = match node.op {
            Op::Flatten
            | Op::Dropout(_)
            | Op::Output
            | Op::Loss
            | Op::Grad { .. }
            | Op::Sgd { .. } => false,
            Op::Input { .. }
            | Op::Conv(_)
            | Op::Relu
            | Op::Lrn(_)
            | Op::MaxPool(_)
            | Op::Linear(_)
            | Op::Softmax => true,
        };
        if !owns_binding {
            continue;
        }
        if per_image > limit {
            let what = match node.op {
                Op::Input { .. } => "one input image".to_string(),
                op => format!("the {} output of one image", op.mnemonic()),
            };
            sink.push(
                node.span,
                format!(
                    "{}: {what} takes {per_image} bytes, more than the target's storage binding limit of {limit} bytes even after splitting the batch",
                    node.layer
                ),
            );
            continue;
        }
        micro_batch = micro_batch.min((limit / per_image).min(u64::from(u32::MAX)) as u32);
        // Kernels run an invocation per output element (linear: a workgroup per output), in a
        // dispatch of up to 2-D of max-per-dimension workgroups.
        let max_groups = u64::from(target.limits.max_compute_workgroups_per_dimension).pow(2);
        // Linear layers run a workgroup per output feature instead.
        let per_image_groups = match node.op {
            Op::Linear(_) => per_image / 4,
            _ => (per_image / 4).div_ceil(u64::from(WORKGROUP)),
        }
        .max(1);
        micro_batch =
            micro_batch.min((max_groups / per_image_groups).min(u64::from(u32::MAX)) as u32);

        let (rows, row_elems, what) = match node.op {
            Op::Conv(c) => {
                let input = graph
                    .inputs(id)
                    .first()
                    .map(|&s| graph.node(s).shape.clone().unwrap_or_default())
                    .unwrap_or_default();
                let ch = input.first().copied().unwrap_or(1);
                (
                    c.out_channels,
                    u64::from(ch / c.groups) * u64::from(c.kernel) * u64::from(c.kernel),
                    "weight",
                )
            }
            Op::Linear(l) => {
                let input = graph
                    .inputs(id)
                    .first()
                    .map(|&s| graph.node(s).shape.clone().unwrap_or_default())
                    .unwrap_or_default();
                (
                    l.out_features,
                    u64::from(input.first().copied().unwrap_or(1)),
                    "weight",
                )
            }
            Op::Input { .. }
            | Op::Relu
            | Op::Lrn(_)
            | Op::MaxPool(_)
            | Op::Flatten
            | Op::Dropout(_)
            | Op::Softmax
            | Op::Output
            | Op::Loss
            | Op::Grad { .. }
            | Op::Sgd { .. } => continue,
        };
        let row_bytes = bytes(row_elems);
        if row_bytes > limit {
            sink.push(
                node.span,
                format!(
                    "{}: one row of the {what} takes {row_bytes} bytes, more than the target's storage binding limit of {limit} bytes even after splitting",
                    node.layer
                ),
            );
            continue;
        }
        // A layer split into towers (`devices: 2`) has each tower's rows in parts of their own,
        // so every part lives on one device; `place` has checked that the rows halve.
        let towers = if node.place == Place::Towers && rows.is_multiple_of(2) {
            2
        } else {
            1
        };
        let tower_rows = rows / towers;
        let rows_per_part = (limit / row_bytes).min(u64::from(tower_rows)) as u32;
        let count = tower_rows.div_ceil(rows_per_part);
        // Equal parts, so a split weight reads as "two halves" rather than "full and remainder".
        let even = tower_rows.div_ceil(count);
        let ranges = (0..towers)
            .flat_map(|t| {
                (0..count)
                    .map(move |i| (t * tower_rows + i * even, even.min(tower_rows - i * even)))
            })
            .collect();
        parts.insert(id, ranges);
    }
    if micro_batch == 0 {
        micro_batch = 1;
    }
    sink.finish(GraphInfo {
        order,
        parts,
        micro_batch,
        target,
    })
}
