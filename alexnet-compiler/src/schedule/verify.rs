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
use alexnet_plan::{Plan, Program, Step, Target, Tensor, Towers};

/// Verifies every program of `plan`.
pub fn verify(plan: &Plan) -> Result<(), String> {
    for (name, program, inputs, outputs) in super::programs_io(plan) {
        verify_program(plan, program, &inputs, &outputs, None)
            .map_err(|e| format!("program `{name}`: {e}"))?;
        if name == "inference" {
            for v in plan.inference_variants.iter() {
                verify_program(plan, &v.program, &inputs, &outputs, None).map_err(|e| {
                    format!(
                        "program `inference` for {} adapters: {e}",
                        v.target.as_str()
                    )
                })?;
            }
            if let Some(towers) = &plan.towers {
                verify_towers(plan, "inference", towers, &inputs, &outputs, &inputs)?;
            }
        }
        if let (Some(towers), "training") = (&plan.tower_training, name) {
            let image = [Tensor::Activation(plan.input_activation)];
            verify_towers(plan, "training", towers, &inputs, &outputs, &image)?;
        }
    }
    Ok(())
}

/// The two-device programs: each as a program of its own (device 1 takes `inputs1` and returns
/// nothing), every buffer on its device, the same exchanges in the same order in both, and
/// every weight part on exactly one device.
fn verify_towers(
    plan: &Plan,
    name: &str,
    towers: &Towers,
    inputs: &[Tensor],
    outputs: &[Tensor],
    inputs1: &[Tensor],
) -> Result<(), String> {
    if towers.programs.len() != 2 {
        return Err(format!(
            "the towers have {} programs, not 2",
            towers.programs.len()
        ));
    }
    let mut holders = std::collections::BTreeMap::new();
    for (device, program) in towers.programs.iter().enumerate() {
        let device = device as u32;
        let (inputs, outputs) = if device == 0 {
            (inputs, outputs)
        } else {
            (inputs1, &[][..])
        };
        verify_program(plan, program, inputs, outputs, Some((towers, device)))
            .map_err(|e| format!("program `{name}` on tower device {device}: {e}"))?;
        if let Some(b) = program.buffers.iter().find(|b| b.device != device) {
            return Err(format!(
                "buffer `{}` of device {device}'s program is on device {}",
                b.name, b.device
            ));
        }
        let marks: Vec<u32> = program
            .steps
            .iter()
            .filter_map(|s| {
                if let Step::Exchange { index, .. } = *s {
                    Some(index)
                } else {
                    None
                }
            })
            .collect();
        if marks != (0..towers.exchanges.len() as u32).collect::<Vec<_>>() {
            return Err(format!("device {device}'s program takes part in exchanges {marks:?}, not each of the {} in order", towers.exchanges.len()));
        }
        for p in program.placements.iter() {
            if let Tensor::Param { index, part } = p.tensor {
                *holders.entry((index, part)).or_insert(0) += 1;
            }
        }
    }
    for (index, p) in plan.params.iter().enumerate() {
        for part in 0..p.parts.len() as u32 {
            match holders.get(&(index as u32, part)) {
                Some(1) => {}
                n => {
                    return Err(format!(
                        "part {part} of `{}` is on {} tower devices, not one",
                        p.name,
                        n.copied().unwrap_or(0)
                    ))
                }
            }
        }
    }
    Ok(())
}

fn verify_program(
    plan: &Plan,
    program: &Program,
    inputs: &[Tensor],
    outputs: &[Tensor],
    tower: Option<(&Towers, u32)>,
) -> Result<(), String> {
    for k in program.dispatches() {
        let kernel = plan
            .kernels
            .get(k as usize)
            .ok_or_else(|| format!("a step runs missing kernel {k}"))?;
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
            let iterations =
                super::algo::loop_iterations(plan, &kernel, u64::from(plan.micro_batch))
                    .unwrap_or(0);
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
        let buffer = program.buffers.get(p.buffer as usize).ok_or_else(|| {
            format!(
                "`{}` is placed in a missing buffer",
                tensor_name(plan, p.tensor)
            )
        })?;
        let end = p.offset.plus(p.size);
        if end.per_image > buffer.size.per_image || end.fixed > buffer.size.fixed {
            return Err(format!(
                "`{}` runs past the end of buffer {}",
                tensor_name(plan, p.tensor),
                p.buffer
            ));
        }
        if p.size.at(batch) > limit {
            return Err(format!(
                "`{}` takes {} bytes at the micro-batch, over the binding limit {limit}",
                tensor_name(plan, p.tensor),
                p.size.at(batch)
            ));
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
                let kernel = plan
                    .kernels
                    .get(k as usize)
                    .ok_or_else(|| format!("step {i} runs missing kernel {k}"))?;
                for b in kernel.bindings.iter() {
                    let Some(t) = b.tensor() else { continue };
                    if program.placement(t).is_none() {
                        return Err(format!(
                            "kernel `{}` binds `{}`, which has no placement",
                            kernel.name,
                            tensor_name(plan, t)
                        ));
                    }
                    // A write-binding of a tensor that is also read (accumulating gradients,
                    // in-place dropout) reads only what an earlier step wrote, checked below.
                    if b.reads() && !t.is_state() && !written.contains(&t) {
                        return Err(format!(
                            "kernel `{}` (step {i}) reads `{}` before any step writes it",
                            kernel.name,
                            tensor_name(plan, t)
                        ));
                    }
                }
                for b in kernel.bindings.iter().filter(|b| b.writes()) {
                    written.extend(b.tensor());
                }
            }
            Step::Exchange { index, tensor } => {
                let Some((towers, device)) = tower else {
                    return Err(format!("step {i} is an exchange in a one-device program"));
                };
                let e = towers
                    .exchanges
                    .get(index as usize)
                    .ok_or_else(|| format!("step {i} takes part in missing exchange {index}"))?;
                if e.tensor != tensor || program.placement(tensor).is_none() {
                    return Err(format!("step {i} exchanges `{}`, which is not exchange {index}'s tensor or has no placement", tensor_name(plan, tensor)));
                }
                let per_image = plan.tensor_size(tensor).per_image;
                if e.from == e.to
                    || e.from.max(e.to) > 1
                    || e.bytes == 0
                    || e.offset + e.bytes > per_image
                {
                    return Err(format!("exchange {index} ({e:?}) does not move a range of `{}` between the two devices", tensor_name(plan, tensor)));
                }
                if e.from == device && !written.contains(&tensor) {
                    return Err(format!(
                        "step {i} sends `{}` before any step writes it",
                        tensor_name(plan, tensor)
                    ));
                }
                if e.to == device {
                    written.insert(tensor);
                }
            }
        }
    }
    // Every forward pass reads every part of every weight: a missing one is a kernel not run
    // (on two devices, `verify_towers` checks that each part is on one of them).
    for (index, p) in plan.params.iter().enumerate().filter(|_| tower.is_none()) {
        for part in 0..p.parts.len() as u32 {
            if program
                .placement(Tensor::Param {
                    index: index as u32,
                    part,
                })
                .is_none()
            {
                return Err(format!("no step reads part {part} of `{}`", p.name));
            }
        }
    }
    for t in outputs {
        if !written.contains(t) {
            return Err(format!(
                "output `{}` is never written",
                tensor_name(plan, *t)
            ));
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
