//! The memory plan: where every tensor of a program lives.
//!
//! Liveness is taken over the program's steps: a tensor is live from the first step that
//! touches it to the last (inputs the host writes from before the first step, outputs the host
//! reads until after the last). Tensors whose lifetimes do not overlap share a buffer, chosen
//! greedily in order of first use (best fit by size). Parameters, their gradients and momentum
//! persist across steps, so each gets a buffer of its own and is never aliased. Buffers never
//! mix devices. It does not split or pack tensors at offsets (every offset is zero today); a
//! placement's offset is there for when it does.

use alexnet_plan::{Buffer, Extent, Placement, Plan, Program, Step, Tensor};
use std::collections::BTreeMap;

/// Whether tensors may share buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Non-overlapping lifetimes share buffers.
    Share,
    /// Every tensor in a buffer of its own (the inspect program, for reading any back).
    Never,
}

/// Lifetime of one tensor: first and last step index (inclusive) and its device.
#[derive(Clone, Copy, Debug)]
pub struct Life {
    pub first: usize,
    pub last: usize,
    pub device: u32,
}

/// The lifetime of every tensor `steps` touch. `inputs` are live from before step 0 and
/// `outputs` until after the last step.
pub fn liveness(
    plan: &Plan,
    steps: &[Step],
    inputs: &[Tensor],
    outputs: &[Tensor],
) -> BTreeMap<Tensor, Life> {
    let mut lives: BTreeMap<Tensor, Life> = BTreeMap::new();
    let mut touch = |t: Tensor, i: usize, device: u32| {
        let life = lives.entry(t).or_insert(Life {
            first: i,
            last: i,
            device,
        });
        life.first = life.first.min(i);
        life.last = life.last.max(i);
    };
    for (i, step) in steps.iter().enumerate() {
        // Step 0 is reserved for the host's uploads; steps count from 1.
        let i = i + 1;
        match *step {
            Step::Dispatch(k) => {
                let kernel = &plan.kernels[k as usize];
                let device = plan.nodes[kernel.node as usize].device;
                for t in kernel.bindings.iter().filter_map(|b| b.tensor()) {
                    touch(t, i, device);
                }
            }
            // A two-device program's exchange reads or writes the tensor on its own device.
            Step::Exchange { tensor, .. } => touch(tensor, i, 0),
        }
    }
    let end = steps.len() + 1;
    for t in inputs {
        touch(*t, 0, 0);
    }
    for t in outputs {
        touch(*t, end, 0);
    }
    lives
}

/// A program of `steps` with its buffers and placements.
pub fn program(
    plan: &Plan,
    steps: Vec<Step>,
    inputs: &[Tensor],
    outputs: &[Tensor],
    reuse: Reuse,
) -> Program {
    let lives = liveness(plan, &steps, inputs, outputs);
    let mut order: Vec<(&Tensor, &Life)> = lives.iter().collect();
    order.sort_by_key(|(t, l)| (l.first, **t));
    let mut buffers: Vec<Buffer> = Vec::new();
    // For each shareable buffer: the last step of its latest tenant.
    let mut busy_until: Vec<Option<usize>> = Vec::new();
    let mut placements = Vec::new();
    for (&tensor, life) in order {
        let size = plan.tensor_size(tensor);
        let name = tensor_name(plan, tensor);
        let shareable = reuse == Reuse::Share && !tensor.is_state();
        let free = (0..buffers.len()).filter(|&b| {
            buffers[b].device == life.device
                && busy_until[b].is_some_and(|until| until < life.first)
        });
        // Best fit: the smallest buffer that already holds the tensor, else the largest.
        let fits = |b: &usize| {
            buffers[*b].size.per_image >= size.per_image && buffers[*b].size.fixed >= size.fixed
        };
        let candidates: Vec<usize> = if shareable {
            free.collect()
        } else {
            Vec::new()
        };
        let chosen = candidates
            .iter()
            .copied()
            .filter(fits)
            .min_by_key(|&b| (buffers[b].size.per_image, buffers[b].size.fixed, b))
            .or_else(|| {
                candidates.iter().copied().max_by_key(|&b| {
                    (
                        buffers[b].size.per_image,
                        buffers[b].size.fixed,
                        std::cmp::Reverse(b),
                    )
                })
            });
        let buffer = match chosen {
            Some(b) => {
                buffers[b].size = buffers[b].size.max(size);
                buffers[b].name = format!("{} | {name}", buffers[b].name).into();
                busy_until[b] = Some(life.last);
                b
            }
            None => {
                buffers.push(Buffer {
                    name: name.into(),
                    device: life.device,
                    size,
                });
                busy_until.push(shareable.then_some(life.last));
                buffers.len() - 1
            }
        };
        placements.push(Placement {
            tensor,
            buffer: buffer as u32,
            offset: Extent::default(),
            size,
        });
    }
    placements.sort_by_key(|p| p.tensor);
    Program {
        steps: steps.into(),
        buffers: buffers.into(),
        placements: placements.into(),
    }
}

/// A readable name for a tensor: `conv1.relu`, `d conv1.relu`, `fc6.weight[1] grad`.
pub fn tensor_name(plan: &Plan, tensor: Tensor) -> String {
    let part = |index: u32, part: u32| {
        let p = &plan.params[index as usize];
        if p.parts.len() == 1 {
            p.name.to_string()
        } else {
            format!("{}[{part}]", p.name)
        }
    };
    match tensor {
        Tensor::Activation(i) => plan.activations[i as usize].name.to_string(),
        Tensor::Grad(i) => format!("d {}", plan.activations[i as usize].name),
        Tensor::Param { index, part: p } => part(index, p),
        Tensor::ParamGrad { index, part: p } => format!("{} grad", part(index, p)),
        Tensor::Momentum { index, part: p } => format!("{} momentum", part(index, p)),
        Tensor::Labels => "labels".into(),
        Tensor::Loss => "loss".into(),
        Tensor::Partials {
            index,
            part: p,
            slices,
        } => format!("{} grad x{slices} partials", part(index, p)),
    }
}
