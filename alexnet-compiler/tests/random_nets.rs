//! Property tests: random small declarations, valid or not, compile to naga-valid WGSL or to
//! spanned errors, and never panic; and every memory plan of a valid one is sound.

use rand::{Rng, SeedableRng};

fn random_op(rng: &mut impl Rng) -> String {
    let n = |rng: &mut dyn rand::RngCore, lo: u32, hi: u32| rng.random_range(lo..=hi);
    match rng.random_range(0..9) {
        0 => format!(
            "conv({}, k = {}, s = {}, p = {}, groups = {})",
            n(rng, 0, 12),
            n(rng, 0, 6),
            n(rng, 0, 3),
            n(rng, 0, 3),
            n(rng, 1, 4)
        ),
        1 => format!("conv({}, k = {}, floor)", n(rng, 1, 8), n(rng, 1, 5)),
        2 => "relu".into(),
        3 => format!(
            "lrn(n = {}, alpha = 1e-4, beta = 0.75, k = 2)",
            n(rng, 1, 7)
        ),
        4 => format!(
            "maxpool(k = {}, s = {}, p = {})",
            n(rng, 1, 4),
            n(rng, 1, 3),
            n(rng, 0, 2)
        ),
        5 => format!("maxpool(k = {}, s = 2, floor)", n(rng, 1, 3)),
        6 => format!("linear({})", n(rng, 0, 20)),
        7 => format!("dropout({}.{})", n(rng, 0, 1), n(rng, 0, 9)),
        _ => [
            "softmax",
            "tanh",
            "conv(3, q = 1)",
            "linear(4, bias = false)",
        ][rng.random_range(0..4)]
        .into(),
    }
}

#[test]
fn random_declarations_never_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2012);
    let (mut ok, mut failed) = (0, 0);
    for case in 0..400 {
        let devices = if rng.random_range(0..3) == 0 { 2 } else { 1 };
        let mut src = format!(
            "pub Net{case} {{ input: [{}, {}, {}], devices: {devices}, max_batch: {},",
            rng.random_range(0..4),
            rng.random_range(1..24),
            rng.random_range(1..24),
            rng.random_range(1..9)
        );
        for layer in 0..rng.random_range(1..5) {
            let ops: Vec<String> = (0..rng.random_range(1..4))
                .map(|_| random_op(&mut rng))
                .collect();
            // Sometimes a layer is pinned to a device (2 is out of range).
            let pin = if rng.random_range(0..5) == 0 {
                format!(" #[device = {}]", rng.random_range(0..3))
            } else {
                String::new()
            };
            src.push_str(&format!("{pin} l{layer}: {},", ops.join(" -> ")));
        }
        src.push('}');
        match std::panic::catch_unwind(|| alexnet_compiler::compile_str(&src)) {
            Err(_) => panic!("the compiler panicked on:\n{src}"),
            Ok(Ok(compiled)) => {
                ok += 1;
                check_memory_plans(&compiled.plan, &src);
                // Towers split every parameter between the devices; nothing is held twice.
                let plan = &compiled.plan;
                assert_eq!(
                    plan.params_on(0) + plan.params_on(1),
                    plan.param_count(),
                    "{src}"
                );
                assert!(
                    plan.exchanges
                        .iter()
                        .all(|e| e.to < plan.devices && e.bytes_per_image > 0),
                    "{src}"
                );
                // Where the forward pass splits, so does a training step.
                assert_eq!(
                    plan.towers.is_some(),
                    plan.tower_training.is_some(),
                    "{src}"
                );
                for k in compiled.plan.kernels.iter() {
                    alexnet_compiler::codegen::validate_wgsl(&k.name, &k.wgsl).unwrap();
                }
            }
            Ok(Err(errors)) => {
                failed += 1;
                assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    assert!(
                        !e.message.is_empty() && !e.message.ends_with('.'),
                        "bad message {:?} for:\n{src}",
                        e.message
                    );
                    assert!(
                        !e.message.contains("internal compiler error"),
                        "{}\n{src}",
                        e.message
                    );
                }
            }
        }
    }
    // Both outcomes must occur, or the generator is not exercising the compiler.
    assert!(ok > 20 && failed > 20, "{ok} compiled, {failed} failed");
}

/// No two tensors that share bytes are live at once (checked independently of the compiler's
/// own verifier, from the program's steps), and no program's memory exceeds the sum of its
/// tensors.
fn check_memory_plans(plan: &alexnet_compiler::plan::Plan, src: &str) {
    use alexnet_compiler::plan::{Step, Tensor};
    use std::collections::BTreeMap;
    let variants = plan
        .inference_variants
        .iter()
        .map(|v| ("inference variant", &v.program));
    let towers = plan
        .towers
        .iter()
        .chain(plan.tower_training.iter())
        .flat_map(|t| t.programs.iter())
        .map(|p| ("tower", p));
    for (name, program) in [
        ("inference", &plan.inference),
        ("training", &plan.training),
        ("inspect", &plan.inspect),
    ]
    .into_iter()
    .chain(variants)
    .chain(towers)
    {
        // First and last step touching each tensor; the host's inputs and outputs are live
        // before the first step and after the last.
        let mut life: BTreeMap<Tensor, (usize, usize)> = BTreeMap::new();
        for (i, step) in program.steps.iter().enumerate() {
            let touched: Vec<Tensor> = match *step {
                Step::Dispatch(k) => plan.kernels[k as usize]
                    .bindings
                    .iter()
                    .filter_map(|b| b.tensor())
                    .collect(),
                Step::Exchange { tensor, .. } => vec![tensor],
            };
            for t in touched {
                let e = life.entry(t).or_insert((i + 1, i + 1));
                e.1 = i + 1;
            }
        }
        let end = program.steps.len() + 1;
        life.entry(Tensor::Activation(plan.input_activation))
            .and_modify(|e| e.0 = 0);
        // Device 1's tower programs return nothing to the host.
        let returns = !program.buffers.iter().any(|b| b.device == 1);
        for out in [Some(plan.logits_activation), plan.probs_activation]
            .into_iter()
            .flatten()
            .filter(|_| returns)
        {
            life.entry(Tensor::Activation(out))
                .and_modify(|e| e.1 = end);
        }
        for (i, a) in program.placements.iter().enumerate() {
            for b in &program.placements[i + 1..] {
                if a.buffer != b.buffer {
                    continue;
                }
                let (la, lb) = (life[&a.tensor], life[&b.tensor]);
                assert!(
                    la.1 < lb.0 || lb.1 < la.0,
                    "{name}: {:?} {la:?} and {:?} {lb:?} share a buffer while live:\n{src}",
                    a.tensor,
                    b.tensor
                );
                assert!(
                    !a.tensor.is_state() && !b.tensor.is_state(),
                    "{name}: a parameter-like tensor is aliased:\n{src}"
                );
            }
        }
        for batch in [1, u64::from(plan.micro_batch)] {
            let sum: u64 = program.placements.iter().map(|p| p.size.at(batch)).sum();
            assert!(
                program.memory(0, batch) <= sum,
                "{name}: the plan's memory exceeds the sum of its tensors:\n{src}"
            );
        }
    }
}
