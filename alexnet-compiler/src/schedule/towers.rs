//! Two-device execution of a `devices: 2` plan's towers: the inference program's kernels
//! placed on the device that holds their weight part, and the exchanges `passes::place`
//! decided turned into transfers between the two programs.
//!
//! Every device keeps each activation whole (so the kernels are the one-device program's,
//! unchanged, and a two-device run computes bit for bit what one device computes) but
//! writes only the channels its tower computes. A conv or linear kernel runs where its
//! weight part is; a kernel without weights (ReLU, LRN, max-pool) runs on each device its
//! output is placed on, over the whole tensor, and is right for the channels that device
//! holds: the exchange before a reader brings in what it reads of the other tower (half an
//! input read whole, an LRN's boundary channels, the logits), so nothing else is read.

use crate::ir::{ExchangeKind, Graph, NodeId, Op, Place};
use alexnet_plan::{self as plan, Step, Tensor, TowerExchange};
use std::collections::BTreeMap;

/// The steps of device 0's and device 1's programs and the exchanges between them; `None`
/// when the plan is not split into towers throughout (one device, or a layer pinned whole to
/// a device with `#[device = N]`, which two-device execution does not lower yet).
pub fn towers(
    graph: &Graph,
    nodes: &[plan::Node],
    params: &[plan::Param],
    kernels: &[plan::Kernel],
    node_of: &BTreeMap<NodeId, u32>,
    act_of: &BTreeMap<NodeId, u32>,
    activations: &[plan::Activation],
    steps: &[Step],
) -> Option<([Vec<Step>; 2], Vec<TowerExchange>)> {
    if graph.devices != 2 {
        return None;
    }
    let mut place_of: BTreeMap<u32, Place> = BTreeMap::new();
    for (&id, &n) in node_of {
        let place = graph.node(id).place;
        // Two-device execution lowers only towers (and the gathered softmax and logits).
        let op = graph.node(id).op;
        if matches!(op, Op::Conv(_) | Op::Linear(_)) && place != Place::Towers || place == Place::Device(1) {
            return None;
        }
        place_of.insert(n, place);
    }
    if !graph.topo().iter().any(|&id| matches!(graph.node(id).op, Op::Conv(_) | Op::Linear(_))) {
        return None;
    }
    // What each reader needs moved in before it runs: (reader's plan node, or None for the
    // logits the host reads), with the tensor and the range.
    let mut pending: Vec<(Option<u32>, TowerExchange)> = Vec::new();
    for e in &graph.exchanges {
        let reader = graph.node(e.node);
        let (node, tensor) = match reader.op {
            Op::Output => (None, act_of[graph.inputs(e.node).first()?]),
            _ => (Some(node_of[&e.node]), nodes[node_of[&e.node] as usize].input),
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
        pending.push((node, TowerExchange { tensor: Tensor::Activation(tensor), from, to, offset, bytes }));
    }
    let mut programs: [Vec<Step>; 2] = [Vec::new(), Vec::new()];
    let mut exchanges = Vec::new();
    let mut exchange = |programs: &mut [Vec<Step>; 2], e: TowerExchange| {
        let index = exchanges.len() as u32;
        exchanges.push(e);
        for p in programs.iter_mut() {
            p.push(Step::Exchange { index, tensor: e.tensor });
        }
    };
    for step in steps {
        let Step::Dispatch(k) = *step else { return None };
        let kernel = &kernels[k as usize];
        let mut i = 0;
        while i < pending.len() {
            if pending[i].0.is_some_and(|n| kernel.covers.contains(&n)) {
                exchange(&mut programs, pending.remove(i).1);
            } else {
                i += 1;
            }
        }
        let weight_part = kernel.bindings.iter().find_map(|b| match *b {
            plan::Binding::Param { index, part } if params[index as usize].shape.len() > 1 => Some((part, params[index as usize].parts.len() as u32)),
            _ => None,
        });
        let devices: Vec<u32> = match weight_part {
            Some((part, parts)) if parts.is_multiple_of(2) => vec![part / (parts / 2)],
            Some(_) => return None,
            None => match kernel.covers.iter().find_map(|n| match place_of.get(n) {
                Some(Place::Device(d)) => Some(*d),
                _ => None,
            }) {
                Some(d) => vec![d],
                None => vec![0, 1],
            },
        };
        for d in devices {
            programs[d as usize].push(Step::Dispatch(k));
        }
    }
    // The logits, where no softmax read them on device 0.
    for (node, e) in std::mem::take(&mut pending) {
        if node.is_some() {
            return None;
        }
        exchange(&mut programs, e);
    }
    Some((programs, exchanges))
}
