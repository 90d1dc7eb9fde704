//! Checks the plan's invariants after scheduling and the memory plan.
//!
//! A failure is a compiler bug, reported as an internal error naming the program and tensor.
//! It checks, for every program: each step names a kernel that exists, whose workgroup size
//! matches its algorithm in every variant, whose reduction loops stay under the software
//! adapters' loop limit, and whose tensors are
//! placed; every placement lies inside its buffer; two tensors that share bytes are never
//! live at once; every binding fits the target's binding limit at the micro-batch; and every
//! tensor a step reads was written by an earlier step, unless the host provides it.

use super::memory::{liveness, tensor_name};
use alexnet_plan::{Plan, Program, Step, Target, Tensor};

/// Verifies every program of `plan`.
pub fn verify(plan: &Plan) -> Result<(), String> {
    for (name, program, inputs, outputs) in super::programs_io(plan) {
        verify_program(plan, program, &inputs, &outputs).map_err(|e| format!("program `{name}`: {e}"))?;
        if name == "inference" {
            for v in plan.inference_variants.iter() {
                verify_program(plan, &v.program, &inputs, &outputs).map_err(|e| format!("program `inference` for {} adapters: {e}", v.target.as_str()))?;
            }
        }
    }
    Ok(())
}

fn verify_program(plan: &Plan, program: &Program, inputs: &[Tensor], outputs: &[Tensor]) -> Result<(), String> {
    for k in program.dispatches() {
        let kernel = plan.kernels.get(k as usize).ok_or_else(|| format!("a step runs missing kernel {k}"))?;
        for target in Target::ALL {
            let kernel = kernel.for_target(target);
            if kernel.workgroup_size != kernel.algo.threads() {
                return Err(format!(
                    "kernel `{}` ({}) has workgroup size {} but its algorithm uses {}",
                    kernel.name,
                    target.as_str(),
                    kernel.workgroup_size,
                    kernel.algo.threads()
                ));
            }
            let iterations = super::algo::loop_iterations(plan, &kernel, u64::from(plan.micro_batch)).unwrap_or(0);
            if iterations >= super::algo::LOOP_LIMIT {
                return Err(format!(
                    "kernel `{}` ({}) loops {iterations} times per invocation at the micro-batch, over the {} software adapters allow",
                    kernel.name,
                    target.as_str(),
                    super::algo::LOOP_LIMIT
                ));
            }
        }
    }
    let batch = u64::from(plan.micro_batch);
    let limit = plan.limits.max_storage_buffer_binding_size;
    for p in program.placements.iter() {
        let buffer = program.buffers.get(p.buffer as usize).ok_or_else(|| format!("`{}` is placed in a missing buffer", tensor_name(plan, p.tensor)))?;
        let end = p.offset.plus(p.size);
        if end.per_image > buffer.size.per_image || end.fixed > buffer.size.fixed {
            return Err(format!("`{}` runs past the end of buffer {}", tensor_name(plan, p.tensor), p.buffer));
        }
        if p.size.at(batch) > limit {
            return Err(format!("`{}` takes {} bytes at the micro-batch, over the binding limit {limit}", tensor_name(plan, p.tensor), p.size.at(batch)));
        }
    }
    let lives = liveness(plan, &program.steps, inputs, outputs);
    // Tensors sharing bytes of one buffer must not be live at once.
    for (i, a) in program.placements.iter().enumerate() {
        for b in &program.placements[i + 1..] {
            let overlap_bytes = a.buffer == b.buffer && ranges_overlap(a, b);
            let (la, lb) = (lives[&a.tensor], lives[&b.tensor]);
            if overlap_bytes && la.first <= lb.last && lb.first <= la.last {
                return Err(format!(
                    "`{}` (steps {}..={}) and `{}` (steps {}..={}) share buffer {} while both are live",
                    tensor_name(plan, a.tensor),
                    la.first,
                    la.last,
                    tensor_name(plan, b.tensor),
                    lb.first,
                    lb.last,
                    a.buffer
                ));
            }
        }
    }
    let mut written: std::collections::BTreeSet<Tensor> = inputs.iter().copied().collect();
    for (i, step) in program.steps.iter().enumerate() {
        match *step {
            Step::Dispatch(k) => {
                let kernel = plan.kernels.get(k as usize).ok_or_else(|| format!("step {i} runs missing kernel {k}"))?;
                for b in kernel.bindings.iter() {
                    let Some(t) = b.tensor() else { continue };
                    if program.placement(t).is_none() {
                        return Err(format!("kernel `{}` binds `{}`, which has no placement", kernel.name, tensor_name(plan, t)));
                    }
                    // A write-binding of a tensor that is also read (accumulating gradients,
                    // in-place dropout) reads only what an earlier step wrote, checked below.
                    if b.reads() && !t.is_state() && !written.contains(&t) {
                        return Err(format!("kernel `{}` (step {i}) reads `{}` before any step writes it", kernel.name, tensor_name(plan, t)));
                    }
                }
                for b in kernel.bindings.iter().filter(|b| b.writes()) {
                    written.extend(b.tensor());
                }
            }
            Step::Copy { from, to, .. } => {
                if !written.contains(&from) && !from.is_state() {
                    return Err(format!("step {i} copies `{}` before any step writes it", tensor_name(plan, from)));
                }
                written.insert(to);
            }
        }
    }
    // Every forward pass reads every part of every weight: a missing one is a kernel not run.
    for (index, p) in plan.params.iter().enumerate() {
        for part in 0..p.parts.len() as u32 {
            if program.placement(Tensor::Param { index: index as u32, part }).is_none() {
                return Err(format!("no step reads part {part} of `{}`", p.name));
            }
        }
    }
    for t in outputs {
        if !written.contains(t) {
            return Err(format!("output `{}` is never written", tensor_name(plan, *t)));
        }
    }
    Ok(())
}

/// Whether two placements' byte ranges overlap at some batch (offsets and sizes are linear in
/// the batch, so checking batch 1 and a large batch covers every batch in between).
fn ranges_overlap(a: &alexnet_plan::Placement, b: &alexnet_plan::Placement) -> bool {
    [1u64, 1 << 20].iter().any(|&n| {
        let (a0, a1) = (a.offset.at(n), a.offset.plus(a.size).at(n));
        let (b0, b1) = (b.offset.at(n), b.offset.plus(b.size).at(n));
        a0 < b1 && b0 < a1
    })
}
