//! Training on the GPU: every backward kernel and the SGD update agree with the CPU
//! reference's f64 backward pass (itself checked against finite differences in
//! `gradients.rs`), runs are reproducible bit for bit, resuming equals not stopping, and the
//! loss falls on real Fashion-MNIST images.

use alexnet::models::{AlexNet, AlexNetMini};
use alexnet::plan::Target;
use alexnet::runtime::reference::{backward_train, DropoutMasks};
use alexnet::runtime::{selftest, StepConfig, Weights};
use alexnet::{alexnet, Plan, Session};
use alexnet_tests::{gpu, gpu_with, he_weights, random_input, rel_err};
use rand::{Rng, SeedableRng};

const TOL: f64 = 1e-3;

alexnet! {
    /// Every op with a backward kernel, at odd sizes: strided, padded, grouped and bias-free
    /// convs, LRN, overlapping padded pools, dropout after ReLU, an inner softmax.
    Every {
        input: [3, 15, 13],
        max_batch: 8,
        c1: conv(6, k = 3, s = 2, p = 1, floor) -> relu -> lrn(n = 3, alpha = 0.5, beta = 0.75, k = 1) -> maxpool(k = 3, s = 1, p = 1),
        c2: conv(8, k = 2, groups = 2, bias = false, floor) -> maxpool(k = 3, s = 2, floor) -> relu,
        fc: linear(13, bias = false) -> relu -> dropout(0.5),
        mid: linear(9) -> softmax,
        out: linear(5) -> softmax,
    }
}

alexnet! {
    /// A 2 KiB binding limit splits weights into parts (c2 into three, cutting through a
    /// group) and batches into micro-batches.
    SplitTrain {
        input: [2, 9, 9],
        max_batch: 16,
        binding_limit: 2048,
        c1: conv(8, k = 3) -> relu -> maxpool(k = 3, s = 2),
        c2: conv(30, k = 3, p = 1, groups = 2) -> relu -> dropout(0.3),
        fc: linear(37) -> relu,
        out: linear(3),
    }
}

alexnet! {
    /// Two towers: every conv and linear weight is split in two parts (one per device), so
    /// each conv product (forward, weight and input gradient) is a GEMM over a weight part:
    /// half of c1's and c2's one group (c2's second part adds to the first's input
    /// gradient), two of c3's four groups (each part writes its own).
    TowerTrain {
        input: [3, 11, 11],
        devices: 2,
        max_batch: 8,
        c1: conv(8, k = 3, p = 1) -> relu -> lrn(n = 3, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        c2: conv(12, k = 3, p = 1) -> relu,
        c3: conv(8, k = 3, p = 1, groups = 4) -> relu,
        fc: linear(6) -> softmax,
    }
}

alexnet! {
    /// A conv whose weight gradient has enough output tiles for a GPU (512 rows x 2,304
    /// columns: 288 tiles of 64 x 64) runs it as one GEMM; the next conv's (7 x 4,608: 72
    /// tiles) is split over the batch's output rows into 3 slices, one per output row of an
    /// image, and summed by a second kernel.
    WideGrad {
        input: [256, 3, 3],
        max_batch: 8,
        wide: conv(512, k = 3, p = 1) -> relu,
        narrow: conv(7, k = 3, p = 1) -> relu,
        out: linear(5),
    }
}

alexnet! {
    /// Every chain whose input gradients run as one kernel, at odd sizes: ReLU + LRN + an
    /// overlapping padded pool over a channel count the LRN window does not divide, LRN + pool
    /// without ReLU, ReLU + an LRN of even size (an asymmetric window), ReLU + a pool after a
    /// grouped conv; and a pool before an LRN, which keeps a kernel per op.
    Chains {
        input: [3, 13, 11],
        max_batch: 8,
        a: conv(7, k = 3, p = 1) -> relu -> lrn(n = 5, alpha = 0.5, beta = 0.75, k = 1) -> maxpool(k = 3, s = 2, p = 1),
        b: conv(6, k = 3) -> lrn(n = 3, alpha = 0.4, beta = 0.75, k = 2) -> maxpool(k = 2, s = 1),
        c: conv(5, k = 1) -> relu -> lrn(n = 4, alpha = 0.3, beta = 0.6, k = 1),
        e: conv(6, k = 1) -> maxpool(k = 2, s = 1) -> lrn(n = 3, alpha = 0.2, beta = 0.75, k = 1),
        d: conv(8, k = 1, groups = 2) -> relu -> maxpool(k = 2, s = 1),
        out: linear(4),
    }
}

fn labels(plan: &Plan, batch: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..batch)
        .map(|_| rng.random_range(0..plan.classes()))
        .collect()
}

fn to_f64(t: &[Vec<f32>]) -> Vec<Vec<f64>> {
    t.iter()
        .map(|v| v.iter().map(|&x| f64::from(x)).collect())
        .collect()
}

/// One GPU step from `weights` against the reference: loss, every parameter gradient, and
/// the updated weights and momentum by the paper's rule (starting from zero momentum).
fn check_step(plan: &Plan, weights: &Weights, batch: usize, capacity: u32, dropout: bool) {
    for target in alexnet_tests::targets(plan) {
        check_step_with(plan, weights, batch, capacity, dropout, target);
    }
}

/// `check_step` with the kernel variants for `target`, whatever the adapter.
fn check_step_with(
    plan: &Plan,
    weights: &Weights,
    batch: usize,
    capacity: u32,
    dropout: bool,
    target: Target,
) {
    let gpu = gpu_with(plan, target);
    let name = format!("{} ({} kernels)", plan.name, target.as_str());
    let input = random_input(plan, batch, 21);
    let labels = labels(plan, batch, 22);
    let mut session = Session::for_training(&gpu, plan, capacity).unwrap();
    session.load_weights(weights).unwrap();
    let config = StepConfig {
        lr: 0.05,
        momentum: 0.9,
        decay: 0.0005,
        seed: 77,
        step: 3,
        dropout,
    };
    let out = session.train_step(&input, &labels, batch, &config).unwrap();

    let masks = dropout.then_some(DropoutMasks { seed: 77, step: 3 });
    let params = to_f64(&weights.tensors);
    let labels_usize: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let want = backward_train(
        plan,
        &params,
        input.iter().map(|&v| f64::from(v)).collect(),
        &labels_usize,
        batch,
        masks,
    );
    let loss_err = (out.loss - want.loss).abs() / want.loss.abs().max(1e-6);
    assert!(
        loss_err < TOL,
        "{}: loss {} vs reference {}",
        name,
        out.loss,
        want.loss
    );

    let grads = session.read_param_grads().unwrap();
    let momentum = session.read_momentum().unwrap();
    let updated = session.read_weights().unwrap();
    let bad: Vec<String> = plan
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| (p, rel_err(&grads[i], &want.params[i])))
        .filter(|(_, err)| err.is_nan() || *err >= TOL)
        .map(|(p, err)| format!("{} by {err:e}", p.name))
        .collect();
    assert!(
        bad.is_empty(),
        "{}: gradients differ: {}",
        name,
        bad.join(", ")
    );
    for (i, p) in plan.params.iter().enumerate() {
        let (lr, decay) = (f64::from(config.lr), f64::from(config.decay));
        let v: Vec<f64> = params[i]
            .iter()
            .zip(&want.params[i])
            .map(|(w, g)| -decay * lr * w - lr * g)
            .collect();
        let w: Vec<f64> = params[i].iter().zip(&v).map(|(w, v)| w + v).collect();
        let err = rel_err(&momentum[i], &v);
        assert!(
            err < TOL,
            "{}: momentum of `{}` differs by {err:e}",
            name,
            p.name
        );
        let err = rel_err(&updated.tensors[i], &w);
        assert!(
            err < TOL,
            "{}: updated `{}` differs by {err:e}",
            name,
            p.name
        );
    }
}

#[test]
fn every_backward_kernel_matches_the_reference() {
    let plan = &Every::PLAN;
    check_step(plan, &he_weights(plan, 6), 3, 8, false);
    check_step(plan, &he_weights(plan, 5), 5, 8, true);
}

#[test]
fn fused_chain_gradients_match_the_reference() {
    let plan = &Chains::PLAN;
    let backward: Vec<&str> = plan
        .training
        .dispatches()
        .map(|k| &plan.kernels[k as usize])
        .filter(|k| k.role == alexnet::plan::Role::Backward(alexnet::plan::Wrt::Input))
        .map(|k| &*k.name)
        .collect();
    assert_eq!(
        backward,
        [
            "out_linear_bwd_x",
            "d_block_bwd_x",
            "d_conv_bwd_x",
            "e_lrn_bwd_x",
            "e_maxpool_bwd_x",
            "e_conv_bwd_x",
            "c_block_bwd_x",
            "c_conv_bwd_x",
            "b_block_bwd_x",
            "b_conv_bwd_x",
            "a_block_bwd_x"
        ]
    );
    let scan = |name: &str| plan.kernels.iter().find(|k| k.name == name).map(|k| k.algo);
    assert!(matches!(
        scan("a_block_bwd_x"),
        Some(alexnet::plan::Algo::ChannelScan { .. })
    ));
    assert!(matches!(
        scan("d_block_bwd_x"),
        Some(alexnet::plan::Algo::PoolTile { .. })
    ));
    // An LRN chain's tile is the pool's stride squared; its software-adapter variant's, twice
    // the stride squared (a's pool: 4 x 4 pixels of a 13 x 11 map, tiles cut by its edges;
    // b's, stride 1: 2 x 2). check_step runs both forms.
    let side = |name: &str, target: Target| {
        let k = plan.kernels.iter().find(|k| k.name == name).unwrap();
        match k.for_target(target).algo {
            alexnet::plan::Algo::ChannelScan { side, .. } => side,
            algo => panic!("{name} is {algo:?}"),
        }
    };
    assert_eq!(side("a_block_bwd_x", Target::Gpu), 2);
    assert_eq!(side("a_block_bwd_x", Target::Cpu), 4);
    assert_eq!(side("b_block_bwd_x", Target::Cpu), 2);
    // The per-op kernels the chains replaced are not in the plan at all.
    assert_eq!(scan("a_lrn_bwd_x"), None);
    check_step(plan, &he_weights(plan, 4), 5, 8, false);
}

#[test]
fn split_weights_and_micro_batches_accumulate_gradients() {
    let plan = &SplitTrain::PLAN;
    assert!(plan.micro_batch < 16, "the 2 KiB limit should cut batches");
    assert!(plan.param("fc.weight").unwrap().parts.len() > 1);
    assert!(plan.param("c2.weight").unwrap().parts.len() > 1);
    check_step(plan, &he_weights(plan, 8), 16, 16, true);
}

/// The slices a kernel's partial gradients hold, if it writes any.
fn slices_written(kernel: &alexnet::plan::Kernel) -> Option<u32> {
    kernel.bindings.iter().find_map(|b| match *b {
        alexnet::plan::Binding::Partials {
            slices,
            write: true,
            ..
        } => Some(slices),
        _ => None,
    })
}

#[test]
fn conv_weight_gradients_split_where_output_tiles_are_few() {
    // The paper's conv1 gradient is 6 tiles per tower: 32 slices (at most the 55 output rows),
    // each summed by the kernel right after it.
    let plan = &AlexNet::PLAN;
    let steps: Vec<&alexnet::plan::Kernel> = plan
        .training
        .dispatches()
        .map(|k| &plan.kernels[k as usize])
        .collect();
    for part in 0..2 {
        let name = format!("conv1_conv_bwd_w_part{part}");
        let at = steps.iter().position(|k| k.name == name).unwrap();
        assert_eq!(slices_written(steps[at]), Some(32), "{name}");
        assert_eq!(steps[at + 1].name, format!("{name}_sum"));
        assert!(matches!(
            steps[at + 1].algo,
            alexnet::plan::Algo::SliceSum { width: 4, .. }
        ));
        assert_eq!(steps[at].workgroups(1), 6 * 32);
    }
    let plan = &WideGrad::PLAN;
    let kernel = |name: &str| plan.kernels.iter().find(|k| k.name == name);
    assert_eq!(slices_written(kernel("wide_conv_bwd_w").unwrap()), None);
    assert!(kernel("wide_conv_bwd_w_sum").is_none());
    assert_eq!(
        slices_written(kernel("narrow_conv_bwd_w").unwrap()),
        Some(3)
    );
    assert!(kernel("narrow_conv_bwd_w_sum").is_some());
    // Every's c1 (6 x 27, 8 output rows) is split into 8 slices.
    let every = &Every::PLAN;
    let c1 = every
        .kernels
        .iter()
        .find(|k| k.name == "c1_conv_bwd_w")
        .unwrap();
    assert_eq!(slices_written(c1), Some(8));
    check_step(plan, &he_weights(plan, 12), 3, 8, false);
    selftest_passes(plan);
}

#[test]
fn mini_step_matches_the_reference() {
    let plan = &AlexNetMini::PLAN;
    // Dropout runs in fc6's and fc7's epilogues and in their ReLU's gradient kernel.
    let names: Vec<&str> = plan
        .training
        .dispatches()
        .map(|k| &*plan.kernels[k as usize].name)
        .collect();
    assert!(
        names.contains(&"fc6_block_bwd_x") && !names.iter().any(|n| n.contains("dropout")),
        "{names:?}"
    );
    check_step(plan, &he_weights(plan, 9), 4, 8, true);
}

/// He-scaled weights, as in the forward parity tests: under the paper's N(0, 0.01²) most
/// signals are bias-dominated and max-pool windows hold near-ties that f32 and f64 resolve to
/// different arg-maxes, which is a property of max-pool, not of the kernels.
#[test]
fn paper_alexnet_step_at_batch_2_matches_the_reference() {
    let plan = &AlexNet::PLAN;
    check_step_with(plan, &he_weights(plan, 1), 2, 2, false, gpu(plan).target);
}

/// Runs `steps` steps of Mini from the same start, optionally stopping after `stop` steps
/// and continuing in a fresh session from the weights and momentum read back.
fn run(steps: u32, stop: Option<u32>) -> Weights {
    let plan = &AlexNetMini::PLAN;
    let gpu = gpu(plan);
    let batch = 6;
    let input = random_input(plan, batch, 1);
    let labels = labels(plan, batch, 2);
    let mut session = Session::for_training(&gpu, plan, 8).unwrap();
    session.load_weights(&he_weights(plan, 3)).unwrap();
    for step in 0..steps {
        if Some(step) == stop {
            let (weights, momentum) = (
                session.read_weights().unwrap(),
                session.read_momentum().unwrap(),
            );
            session = Session::for_training(&gpu, plan, 8).unwrap();
            session.load_weights(&weights).unwrap();
            session.write_momentum(&momentum).unwrap();
        }
        session
            .train_step(&input, &labels, batch, &StepConfig::paper(42, step))
            .unwrap();
    }
    session.read_weights().unwrap()
}

#[test]
fn same_seed_same_weights_and_resume_is_exact() {
    let straight = run(3, None);
    assert_eq!(straight, run(3, None), "two runs with one seed differ");
    assert_eq!(
        straight,
        run(3, Some(2)),
        "stopping and resuming changed the weights"
    );
    assert_ne!(straight, run(2, None), "a step changed nothing");
}

#[test]
fn bad_labels_and_inference_sessions_are_errors() {
    let plan = &AlexNetMini::PLAN;
    let gpu = gpu(plan);
    let input = random_input(plan, 2, 1);
    let mut session = Session::for_training(&gpu, plan, 2).unwrap();
    session.load_weights(&he_weights(plan, 1)).unwrap();
    let err = session
        .train_step(&input, &[3, 10], 2, &StepConfig::paper(1, 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 10 of image 1") && err.contains("10 classes"),
        "{err}"
    );
    let err = session
        .train_step(&input, &[3], 2, &StepConfig::paper(1, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 labels for a batch of 2"), "{err}");
    let mut infer = Session::new(&gpu, plan, 2).unwrap();
    infer.load_weights(&he_weights(plan, 1)).unwrap();
    let err = infer
        .train_step(&input, &[1, 2], 2, &StepConfig::paper(1, 0))
        .unwrap_err();
    assert!(matches!(err, alexnet::runtime::Error::NotTraining), "{err}");
}

#[test]
fn loss_decreases_on_real_fashion_mnist() {
    use alexnet::runtime::idx::{FashionMnist, FASHION_MNIST_DIR};
    use alexnet::runtime::train::Dataset;
    let plan = &AlexNetMini::PLAN;
    let dir = std::path::Path::new(FASHION_MNIST_DIR);
    let data = FashionMnist::load(dir).expect("scripts/setup.sh installs dataset-fashion-mnist");
    let train = Dataset::from_idx(&data.train, plan, dir).unwrap().take(64);
    let gpu = gpu(plan);
    let mut session = Session::for_training(&gpu, plan, 32).unwrap();
    session.load_weights(&Weights::init_he(plan, 0)).unwrap();
    let mut losses = Vec::new();
    for step in 0..12u32 {
        let half = (step % 2) as usize * 32;
        let input = &train.images[half * 784..(half + 32) * 784];
        let out = session
            .train_step(
                input,
                &train.labels[half..half + 32],
                32,
                &StepConfig::paper(0, step),
            )
            .unwrap();
        losses.push(out.loss);
    }
    // Dropout makes single steps noisy; three-step means fall by about 0.35 here.
    let (first, last) = (
        losses[..3].iter().sum::<f64>() / 3.0,
        losses[9..].iter().sum::<f64>() / 3.0,
    );
    assert!(last < first - 0.2, "the loss did not fall: {losses:?}");
}

/// `alexnet selftest`'s check: every kernel of every program, alone, in both variants.
fn selftest_passes(plan: &alexnet::Plan) {
    for target in alexnet_tests::targets(plan) {
        let gpu = gpu_with(plan, target);
        let checks =
            selftest::run(&gpu, plan, &selftest::Options::default(), |_, _, _| {}).unwrap();
        let bad: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| format!("{} ({:e} in {})", c.name(), c.error, c.worst))
            .collect();
        assert!(
            bad.is_empty(),
            "{} ({} kernels): {}",
            plan.name,
            target.as_str(),
            bad.join(", ")
        );
        // Every kernel any program of this kind of adapter dispatches was checked.
        let targeted = plan.for_target(target);
        for program in [&targeted.inference, &targeted.inspect, &targeted.training] {
            for k in program.dispatches() {
                let name = &targeted.kernels[k as usize].name;
                assert!(
                    checks.iter().any(|c| c.kernels.iter().any(|n| n == name)),
                    "{}: `{name}` was not checked",
                    plan.name
                );
            }
        }
    }
}

#[test]
fn selftest_passes_every_kernel_of_the_test_nets() {
    selftest_passes(&Every::PLAN);
    selftest_passes(&SplitTrain::PLAN);
    let towers = &TowerTrain::PLAN;
    for name in [
        "c1_conv_bwd_w_part0",
        "c2_conv_bwd_x_part1",
        "c3_conv_bwd_x_part1",
        "c3_conv_bwd_w_part1",
    ] {
        let kernel = towers
            .kernels
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("no kernel `{name}`"));
        assert!(
            matches!(kernel.algo, alexnet::plan::Algo::Gemm(_)),
            "`{name}` is {}",
            kernel.algo.describe()
        );
    }
    selftest_passes(towers);
    selftest_passes(&Chains::PLAN);
    selftest_passes(&AlexNetMini::PLAN);
}

/// `plan` with `from` replaced by `to` in the WGSL that `target` runs of kernel `name`.
fn inject(plan: &alexnet::Plan, name: &str, target: Target, from: &str, to: &str) -> alexnet::Plan {
    let mut plan = plan.clone();
    let kernel = plan
        .kernels
        .to_mut()
        .iter_mut()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no kernel `{name}`"));
    let wgsl = match kernel
        .variants
        .to_mut()
        .iter_mut()
        .find(|v| v.target == target)
    {
        Some(v) => &mut v.wgsl,
        None => &mut kernel.wgsl,
    };
    assert!(wgsl.contains(from), "`{name}` has no `{from}` to replace");
    *wgsl = wgsl.replace(from, to).into();
    plan
}

/// An SGD update's store of the new momentum `value`, as `target`'s form writes it: packed
/// into 64-bit words where the target reads its vec4 arrays so (`Target::wide_loads`).
fn store_m(target: Target, value: &str) -> String {
    match target.wide_loads() {
        true => format!("m[i] = pack_f32x4({value});"),
        false => format!("m[i] = {value};"),
    }
}

#[test]
fn selftest_names_exactly_the_kernels_a_fault_was_injected_into() {
    let gpu = gpu(&AlexNetMini::PLAN);
    let target = gpu.target;
    // A wrong momentum update, and a ReLU gradient that stops halfway (the rest stays NaN).
    let plan = inject(
        &AlexNetMini::PLAN,
        "fc7_sgd_w",
        target,
        &store_m(target, "v"),
        &store_m(target, "v * 1.5"),
    );
    let plan = inject(
        &plan,
        "conv4_relu_bwd_x",
        target,
        "if (i >= params.batch * THREADS) {",
        "if (i >= params.batch * THREADS / 2u) {",
    );
    let checks = selftest::run(&gpu, &plan, &selftest::Options::default(), |_, _, _| {}).unwrap();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.name())
        .collect();
    assert_eq!(failed, ["conv4_relu_bwd_x", "fc7_sgd_w"]);
    let relu = checks
        .iter()
        .find(|c| c.name() == "conv4_relu_bwd_x")
        .unwrap();
    assert!(
        relu.error.is_infinite() && relu.worst == "∂conv4.conv",
        "{relu:?}"
    );
    let sgd = checks.iter().find(|c| c.name() == "fc7_sgd_w").unwrap();
    assert!(
        sgd.error > 0.1 && sgd.worst == "momentum of fc7.weight",
        "{sgd:?}"
    );
}

#[test]
fn a_shader_the_driver_rejects_is_an_error_naming_its_kernel() {
    let gpu = gpu(&AlexNetMini::PLAN);
    let plan = inject(
        &AlexNetMini::PLAN,
        "conv3_sgd_b",
        gpu.target,
        &store_m(gpu.target, "v"),
        "m[i] = undefined_name;",
    );
    let err = match Session::for_training(&gpu, &plan, 2) {
        Ok(_) => panic!("an invalid shader opened"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        matches!(err, alexnet::runtime::Error::Gpu { .. })
            && text.contains("creating kernel `conv3_sgd_b`"),
        "{text}"
    );
}

#[test]
fn a_dispatch_the_device_rejects_is_an_error_naming_its_kernel() {
    let gpu = gpu(&AlexNetMini::PLAN);
    // A plan whose conv4 ReLU gradient claims more invocations than a 2-D dispatch can hold.
    let mut plan = AlexNetMini::PLAN.for_target(gpu.target);
    let kernel = plan
        .kernels
        .to_mut()
        .iter_mut()
        .find(|k| k.name == "conv4_relu_bwd_x")
        .unwrap();
    assert_eq!(kernel.dispatch, alexnet::plan::Dispatch::PerInvocation);
    kernel.threads_per_image = 1 << 40;
    let mut session = Session::for_training(&gpu, &plan, 2).unwrap();
    session.load_weights(&he_weights(&plan, 1)).unwrap();
    let input = random_input(&plan, 2, 2);
    let err = session
        .train_step(&input, &[0, 1], 2, &StepConfig::paper(1, 0))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("running a training step (micro-batch 0), in kernel `conv4_relu_bwd_x`"),
        "{text}"
    );
    // The session stays usable for a correct program afterwards: the error left nothing behind.
    let mut good = Session::for_training(&gpu, &AlexNetMini::PLAN, 2).unwrap();
    good.load_weights(&he_weights(&plan, 1)).unwrap();
    assert!(good
        .train_step(&input, &[0, 1], 2, &StepConfig::paper(1, 0))
        .unwrap()
        .loss
        .is_finite());
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    let gpu = gpu(&AlexNetMini::PLAN);
    let mut session = Session::for_training(&gpu, &AlexNetMini::PLAN, 2).unwrap();
    session
        .load_weights(&he_weights(&AlexNetMini::PLAN, 1))
        .unwrap();
    let input = random_input(&AlexNetMini::PLAN, 2, 2);
    gpu.device.destroy();
    let err = session
        .train_step(&input, &[0, 1], 2, &StepConfig::paper(1, 0))
        .unwrap_err();
    assert!(
        matches!(err, alexnet::runtime::Error::DeviceLost { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("was lost (Destroyed"), "{err}");
    assert!(matches!(
        session.forward(&input, 2),
        Err(alexnet::runtime::Error::DeviceLost { .. })
    ));
}

#[test]
fn a_wait_longer_than_the_timeout_is_an_error() {
    let mut gpu = gpu(&AlexNetMini::PLAN);
    // No wait may last at all: a 64-image training step (seconds on lavapipe, and far more
    // than nothing anywhere) cannot finish in time.
    gpu.timeout = std::time::Duration::ZERO;
    let mut session = Session::for_training(&gpu, &AlexNetMini::PLAN, 64).unwrap();
    session
        .load_weights(&he_weights(&AlexNetMini::PLAN, 1))
        .unwrap();
    let input = random_input(&AlexNetMini::PLAN, 64, 2);
    let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
    let err = session
        .train_step(&input, &labels, 64, &StepConfig::paper(1, 0))
        .unwrap_err();
    assert!(matches!(err, alexnet::runtime::Error::Timeout(_)), "{err}");
    assert!(
        err.to_string().contains("raise ALEXNET_GPU_TIMEOUT_SECS"),
        "{err}"
    );
}
