//! Two-device execution of a `devices: 2` plan's towers: a program's kernels placed on the
//! device that holds their weight part, and the exchanges `passes::place` decided turned into
//! transfers between the two programs (the inference program, or a training step).
//!
//! Every device keeps each activation whole (so the kernels are the one-device program's,
//! unchanged, and a two-device run computes bit for bit what one device computes) but
//! writes only the channels its tower computes. A conv or linear kernel runs where its
//! weight part is; a kernel without weights (ReLU, LRN, max-pool) runs on each device its
//! output is placed on, over the whole tensor, and is right for the channels that device
//! holds: the exchange before a reader brings in what it reads of the other tower (half an
//! input read whole, an LRN's boundary channels, the logits), so nothing else is read.
//!
//! A training step adds, on the way back:
//! - the loss on device 0 (which gathered the logits), then device 1's half of the logits'
//!   gradient to device 1;
//! - an input gradient that several weight parts add up (conv3 and the linear layers read
//!   their whole input): device 0's parts write it, the whole partial sum goes to device 1,
//!   device 1's parts add theirs to it exactly as they would on one device, and device 0
//!   gets its tower's half of the sum back. (A grouped conv whose parts are whole groups
//!   writes disjoint channels: nothing moves.)
//! - an LRN's gradient reads the window around each channel twice over (the gradient of
//!   channel c needs the denominators of c's neighbours, which need theirs): before it, each
//!   device receives `LO + HI` boundary channels of the LRN's input and `LO` (device 0) or
//!   `HI` (device 1) of every other tensor it reads;
//! - every weight part's gradients, momentum and update stay on its device.

use crate::ir::{ExchangeKind, Graph, NodeId, Op, Place};
use alexnet_plan::{self as plan, Step, Tensor, TowerExchange};
use std::collections::BTreeMap;

/// Which program is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Inference,
    /// A training step whose loss reads activation `logits`.
    Training {
        logits: u32,
    },
}

/// The steps of device 0's and device 1's programs and the exchanges between them; `None`
/// when the plan is not split into towers throughout (one device, or a layer pinned whole to
/// a device with `#[device = N]`, which two-device execution does not lower yet), or when a
/// kernel does not fit the scheme above.
#[allow(clippy::too_many_arguments)]
pub fn towers(
    graph: &Graph,
    nodes: &[plan::Node],
    params: &[plan::Param],
    kernels: &[plan::Kernel],
    node_of: &BTreeMap<NodeId, u32>,
    act_of: &BTreeMap<NodeId, u32>,
    activations: &[plan::Activation],
    steps: &[Step],
    pass: Pass,
) -> Option<([Vec<Step>; 2], Vec<TowerExchange>)> {
    if graph.devices != 2 {
        return None;
    }
    let mut place_of: BTreeMap<u32, Place> = BTreeMap::new();
    for (&id, &n) in node_of {
        let place = graph.node(id).place;
        // Two-device execution lowers only towers (and the gathered softmax and logits).
        let op = graph.node(id).op;
        if matches!(op, Op::Conv(_) | Op::Linear(_)) && place != Place::Towers
            || place == Place::Device(1)
        {
            return None;
        }
        place_of.insert(n, place);
    }
    if !graph
        .topo()
        .iter()
        .any(|&id| matches!(graph.node(id).op, Op::Conv(_) | Op::Linear(_)))
    {
        return None;
    }
    // What each reader needs moved in before it runs: (reader's plan node, or None for the
    // logits the host reads), with the tensor and the range.
    let mut pending: Vec<(Option<u32>, TowerExchange)> = Vec::new();
    for e in &graph.exchanges {
        let reader = graph.node(e.node);
        let (node, tensor) = match reader.op {
            Op::Output => (None, act_of[graph.inputs(e.node).first()?]),
            _ => (
                Some(node_of[&e.node]),
                nodes[node_of[&e.node] as usize].input,
            ),
        };
        let shape = &activations[tensor as usize].shape;
        let channels = u64::from(*shape.first()?);
        let per_channel = 4 * shape[1..].iter().map(|&d| u64::from(d)).product::<u64>();
        let whole = channels * per_channel;
        let (from, to) = (1 - e.to, e.to);
        let (offset, bytes) = match e.kind {
            ExchangeKind::Gather => (u64::from(from) * whole / 2, whole / 2),
            ExchangeKind::Halo { channels: halo } => {
                let halo = u64::from(halo) * per_channel;
                (if to == 0 { whole / 2 } else { whole / 2 - halo }, halo)
            }
            ExchangeKind::Whole => return None,
        };
        // What `place` reported is what moves.
        if bytes != e.bytes_per_image || !channels.is_multiple_of(2) {
            return None;
        }
        pending.push((
            node,
            TowerExchange {
                tensor: Tensor::Activation(tensor),
                from,
                to,
                offset,
                bytes,
            },
        ));
    }
    // Bytes per image of one channel of activation `a` (or its gradient), and its channels.
    let channel = |a: u32| -> Option<(u64, u64)> {
        let shape = &activations[a as usize].shape;
        Some((
            4 * shape[1..].iter().map(|&d| u64::from(d)).product::<u64>(),
            u64::from(*shape.first()?),
        ))
    };
    // Channels `first..first + count` of `tensor` (activation `a` or its gradient), from `from`.
    let range =
        |tensor: Tensor, a: u32, first: u64, count: u64, from: u32| -> Option<TowerExchange> {
            let (per_channel, _) = channel(a)?;
            (count > 0).then_some(TowerExchange {
                tensor,
                from,
                to: 1 - from,
                offset: first * per_channel,
                bytes: count * per_channel,
            })
        };
    let mut programs: [Vec<Step>; 2] = [Vec::new(), Vec::new()];
    let mut exchanges = Vec::new();
    let mut exchange = |programs: &mut [Vec<Step>; 2], e: TowerExchange| {
        let index = exchanges.len() as u32;
        exchanges.push(e);
        for p in programs.iter_mut() {
            p.push(Step::Exchange {
                index,
                tensor: e.tensor,
            });
        }
    };
    for step in steps {
        let Step::Dispatch(k) = *step else {
            return None;
        };
        let kernel = &kernels[k as usize];
        let writes = |t: Tensor| {
            kernel
                .bindings
                .iter()
                .any(|b| b.writes() && b.tensor() == Some(t))
        };
        if let Pass::Training { logits } = pass {
            if kernel.role == plan::Role::Loss {
                // The loss reads the logits whole, on device 0.
                let mut i = 0;
                while i < pending.len() {
                    if pending[i].1.tensor == Tensor::Activation(logits) {
                        exchange(&mut programs, pending.remove(i).1);
                    } else {
                        i += 1;
                    }
                }
            }
        }
        let mut i = 0;
        while i < pending.len() {
            if pending[i].0.is_some_and(|n| kernel.covers.contains(&n)) {
                // A tensor made inside a fused kernel cannot be exchanged before it runs.
                if writes(pending[i].1.tensor) {
                    return None;
                }
                exchange(&mut programs, pending.remove(i).1);
            } else {
                i += 1;
            }
        }
        // The weight part whose device runs the kernel: the conv or linear kernels, their
        // gradients and the updates.
        let part = kernel.bindings.iter().find_map(|b| {
            let (index, part) = b.param_part()?;
            Some((index, part, params[index as usize].parts.len() as u32))
        });
        let devices: Vec<u32> = match part {
            Some((_, part, parts)) if parts.is_multiple_of(2) => vec![part / (parts / 2)],
            Some(_) => return None,
            None if kernel.role == plan::Role::Loss => vec![0],
            None => match kernel.covers.iter().find_map(|n| match place_of.get(n) {
                Some(Place::Device(d)) => Some(*d),
                _ => None,
            }) {
                Some(d) => vec![d],
                None => vec![0, 1],
            },
        };
        let backward_input = kernel.role == plan::Role::Backward(plan::Wrt::Input);
        // An LRN's gradient: the boundary channels of everything it reads.
        if let (true, Some(lrn)) = (
            backward_input,
            kernel
                .covers
                .iter()
                .find(|&&n| matches!(nodes[n as usize].op, plan::NodeOp::Lrn(_))),
        ) {
            let plan::NodeOp::Lrn(l) = nodes[*lrn as usize].op else {
                unreachable!()
            };
            let (lo, hi) = (u64::from((l.size - 1) / 2), u64::from(l.size / 2));
            for b in kernel.bindings.iter() {
                let (tensor, a, wide) = match *b {
                    plan::Binding::Activation {
                        index,
                        write: false,
                    } => (
                        Tensor::Activation(index),
                        index,
                        index == nodes[*lrn as usize].input,
                    ),
                    plan::Binding::Grad {
                        index,
                        write: false,
                    } => (Tensor::Grad(index), index, false),
                    _ => continue,
                };
                let (_, channels) = channel(a)?;
                if !channels.is_multiple_of(2) {
                    return None;
                }
                let half = channels / 2;
                let (to0, to1) = if wide { (lo + hi, lo + hi) } else { (lo, hi) };
                let (to0, to1) = (to0.min(half), to1.min(half));
                exchange(&mut programs, range(tensor, a, half, to0, 1)?);
                exchange(&mut programs, range(tensor, a, half - to1, to1, 0)?);
            }
        }
        // An input gradient summed over weight parts on both devices: device 0's sum goes to
        // device 1 before device 1's first part adds to it, and device 0's tower's half of
        // the total comes back after its last.
        let summed = match (backward_input, part) {
            (true, Some((w, part, parts))) => {
                let grad = kernel.bindings.iter().find_map(|b| match *b {
                    plan::Binding::Grad { index, write: true } => Some(index),
                    _ => None,
                })?;
                let disjoint = disjoint_groups(nodes, params, kernel, w, part);
                (!disjoint).then_some((grad, part, parts))
            }
            _ => None,
        };
        if let Some((grad, part, parts)) = summed {
            if part == parts / 2 {
                let (_, channels) = channel(grad)?;
                exchange(
                    &mut programs,
                    range(Tensor::Grad(grad), grad, 0, channels, 0)?,
                );
            }
        }
        for &d in &devices {
            programs[d as usize].push(Step::Dispatch(k));
        }
        if let (Pass::Training { logits }, plan::Role::Loss) = (pass, kernel.role) {
            // Device 1's half of the logits' gradient, for its part of the last layer.
            let (_, classes) = channel(logits)?;
            if !classes.is_multiple_of(2) {
                return None;
            }
            exchange(
                &mut programs,
                range(Tensor::Grad(logits), logits, classes / 2, classes / 2, 0)?,
            );
        }
        if let Some((grad, part, parts)) = summed {
            if part + 1 == parts {
                let (_, channels) = channel(grad)?;
                if !channels.is_multiple_of(2) {
                    return None;
                }
                exchange(
                    &mut programs,
                    range(Tensor::Grad(grad), grad, 0, channels / 2, 1)?,
                );
            }
        }
    }
    // The logits, where no softmax read them on device 0.
    for (node, e) in std::mem::take(&mut pending) {
        if node.is_some() || pass != Pass::Inference {
            return None;
        }
        exchange(&mut programs, e);
    }
    Some((programs, exchanges))
}

/// Whether an input-gradient kernel of weight part `part` writes only its own groups' input
/// channels in every variant, adding to nothing: a grouped conv's GEMM over whole groups.
fn disjoint_groups(
    nodes: &[plan::Node],
    params: &[plan::Param],
    kernel: &plan::Kernel,
    weight: u32,
    part: u32,
) -> bool {
    let plan::NodeOp::Conv(c) = nodes[kernel.node as usize].op else {
        return false;
    };
    let range = params[weight as usize].parts[part as usize];
    let per_group = c.out_channels / c.groups;
    let whole = c.groups > 1
        && range.start.is_multiple_of(per_group)
        && range.rows.is_multiple_of(per_group);
    let gemm = std::iter::once(kernel.algo)
        .chain(kernel.variants.iter().map(|v| v.algo))
        .all(|a| matches!(a, plan::Algo::Gemm(_)));
    whole && gemm
}
