//! The GPU path agrees with the CPU reference (f64) for every op and every built-in net, and
//! the fused inference program agrees with the per-op one.

use alexnet::models::{AlexNet, AlexNetMini, AlexNetTorchvision};
use alexnet::plan::Target;
use alexnet::runtime::reference;
use alexnet::{alexnet, Plan, Session};
use alexnet_tests::{gpu_with, he_weights, random_input, rel_err};

const TOL: f64 = 1e-4;

/// Runs `plan` on the GPU and the CPU: the inspect program (one kernel per op) activation by
/// activation, and the inference program (fused, buffers reused) by its logits and
/// probabilities, against the reference and against the inspect program; with both kernel
/// variants (GPU and CPU), whatever the adapter.
fn check_all_activations(plan: &Plan, batch: usize, capacity: u32) {
    for target in alexnet_tests::targets(plan) {
        check_activations_with(plan, batch, capacity, target);
    }
}

fn check_activations_with(plan: &Plan, batch: usize, capacity: u32, target: Target) {
    let gpu = gpu_with(plan, target);
    let name = format!("{} ({} kernels)", plan.name, target.as_str());
    let weights = he_weights(plan, 7);
    let input = random_input(plan, batch, 11);
    let mut inspect = Session::inspect(&gpu, plan, capacity).unwrap();
    inspect.load_weights(&weights).unwrap();
    let want = reference::activations(plan, &weights, &input, batch);
    // The inspect program keeps its last pass's activations: every activation is checked on
    // the images that fit one pass, then the whole batch through its logits.
    let fit = batch.min(inspect.capacity() as usize);
    let per_image = input.len() / batch;
    let want_fit = if fit < batch {
        reference::activations(plan, &weights, &input[..fit * per_image], fit)
    } else {
        want.clone()
    };
    inspect.forward(&input[..fit * per_image], fit).unwrap();
    for (i, a) in plan.activations.iter().enumerate() {
        let got = inspect.read_activation(i as u32, fit).unwrap();
        let err = rel_err(&got, &want_fit[i]);
        assert!(
            err < TOL,
            "{}: activation `{}` differs by {err:e}",
            name,
            a.name
        );
    }
    let per_op = inspect.forward(&input, batch).unwrap();
    let logits = &want[plan.logits_activation as usize];
    let probs = reference::forward(plan, &weights, &input, batch).probs;
    let probs64: Vec<f64> = probs.iter().map(|&p| f64::from(p)).collect();
    let mut fused = Session::new(&gpu, plan, capacity).unwrap();
    fused.load_weights(&weights).unwrap();
    let out = fused.forward(&input, batch).unwrap();
    for (what, out) in [("per-op", &per_op), ("fused", &out)] {
        let err = rel_err(&out.logits, logits);
        assert!(
            err < TOL,
            "{}: {what} logits differ from the reference by {err:e}",
            name
        );
        assert!(
            rel_err(&out.probs, &probs64) < TOL,
            "{}: {what} probabilities differ",
            name
        );
    }
    let per_op64: Vec<f64> = per_op.logits.iter().map(|&v| f64::from(v)).collect();
    let err = rel_err(&out.logits, &per_op64);
    assert!(
        err < 1e-5,
        "{}: fused logits differ from the per-op program's by {err:e}",
        name
    );
}

alexnet! {
    /// Every op at sizes that are not multiples of the workgroup size, with odd padding,
    /// groups, floor rounding, no-bias layers and softmax.
    OddShapes {
        input: [3, 19, 23],
        max_batch: 8,
        c1: conv(6, k = 3, s = 2, p = 1, floor) -> relu -> lrn(n = 3, alpha = 0.5, beta = 0.75, k = 1) -> maxpool(k = 3, s = 1, p = 1),
        c2: conv(8, k = 2, groups = 2, bias = false, floor) -> maxpool(k = 2, s = 2, floor),
        fc: linear(13, bias = false) -> relu -> dropout(0.25),
        out: linear(5) -> softmax,
    }
}

alexnet! {
    /// A binding limit of 2 KiB forces weight splits and micro-batches on a tiny net.
    Split {
        input: [2, 9, 9],
        max_batch: 16,
        binding_limit: 2048,
        c1: conv(7, k = 3) -> relu -> maxpool(k = 3, s = 2),
        c2: conv(12, k = 3, p = 1) -> relu,
        fc: linear(37) -> relu,
        fc2: linear(30),
        out: linear(3),
    }
}

alexnet! {
    /// 17 images of 512×512 make a relu dispatch of 69,632 workgroups of 64: more than
    /// 65,535, so it must run as a 2-D dispatch.
    Wide {
        input: [1, 512, 512],
        max_batch: 17,
        r: relu -> maxpool(k = 3, s = 2, p = 1, floor),
        fc: linear(3),
    }
}

/// Declares the `Straddle` net with a fusion setting: fused blocks whose LRN channel windows
/// and overlapping pooling windows straddle the kernel's tiles: more channels than one tile,
/// odd channel counts and spatial sizes, groups whose boundary falls inside a tile, padded
/// pooling, pool before LRN, a block without ReLU, and a 256 KiB binding limit, so that a
/// batch of 5 crosses the micro-batch.
macro_rules! straddle {
    ($name:ident, $fusion:ident) => {
        alexnet! {
            $name {
                input: [4, 23, 19],
                max_batch: 6,
                binding_limit: 262144,
                fusion: $fusion,
                a: conv(70, k = 3, p = 1, groups = 2) -> relu -> lrn(n = 5, alpha = 0.5, beta = 0.75, k = 1) -> maxpool(k = 3, s = 2, p = 1),
                b: conv(66, k = 3, p = 1, groups = 2) -> maxpool(k = 2, s = 2) -> lrn(n = 3, alpha = 0.3, beta = 0.75, k = 2),
                c: conv(9, k = 3) -> relu -> maxpool(k = 2, s = 1),
                d: conv(13, k = 1) -> lrn(n = 5, alpha = 0.2, beta = 0.6, k = 1),
                fc: linear(7) -> relu,
                out: linear(5) -> softmax,
            }
        }
    };
}

straddle!(Straddle, on);
straddle!(StraddleUnfused, off);
straddle!(StraddleEpilogue, epilogue);

/// Names of the kernels a program dispatches.
fn dispatched(plan: &Plan, program: &alexnet::plan::Program) -> Vec<String> {
    program
        .dispatches()
        .map(|k| plan.kernels[k as usize].name.to_string())
        .collect()
}

#[test]
fn fused_blocks_agree_across_tile_group_and_image_borders() {
    let plan = &Straddle::PLAN;
    assert!(
        plan.micro_batch < 5,
        "the binding limit should cut a batch of 5, got {}",
        plan.micro_batch
    );
    assert_eq!(
        dispatched(plan, &plan.inference),
        [
            "a_fused_fwd",
            "b_fused_fwd",
            "c_fused_fwd",
            "d_fused_fwd",
            "fc_fused_fwd",
            "out_fused_fwd"
        ]
    );
    for name in ["a_fused_fwd", "b_fused_fwd"] {
        let k = plan.kernels.iter().find(|k| k.name == name).unwrap();
        let alexnet::plan::Algo::ConvBlock { channels, .. } = k.algo else {
            panic!("{name} is not a conv block: {:?}", k.algo)
        };
        assert!(
            channels < 66,
            "{name}: its channels should need more than one tile"
        );
    }
    check_all_activations(plan, 5, 5);
    check_all_activations(plan, 2, 2);
}

#[test]
fn fusion_off_and_epilogue_give_the_same_logits() {
    let (on, off, epilogue) = (
        &Straddle::PLAN,
        &StraddleUnfused::PLAN,
        &StraddleEpilogue::PLAN,
    );
    assert_eq!(
        dispatched(epilogue, &epilogue.inference),
        [
            "a_fused_fwd",
            "a_lrn_fwd",
            "a_maxpool_fwd",
            "b_fwd",
            "b_maxpool_fwd",
            "b_lrn_fwd",
            "c_fused_fwd",
            "c_maxpool_fwd",
            "d_fwd",
            "d_lrn_fwd",
            "fc_fused_fwd",
            "out_fused_fwd",
        ]
    );
    assert_eq!(
        (on.fusion, off.fusion),
        (alexnet::plan::Fusion::Blocks, alexnet::plan::Fusion::Off)
    );
    assert_eq!(
        dispatched(off, &off.inference),
        dispatched(off, &off.inspect)
    );
    assert!(
        off.kernels.iter().all(|k| k.covers.len() == 1),
        "no kernel of an unfused plan covers several nodes"
    );
    let gpu = alexnet_tests::gpu(on);
    let weights = he_weights(on, 3);
    let input = random_input(on, 3, 5);
    let run = |plan: &Plan| {
        let mut s = Session::new(&gpu, plan, 3).unwrap();
        s.load_weights(&weights).unwrap();
        s.forward(&input, 3).unwrap().logits
    };
    let unfused: Vec<f64> = run(off).iter().map(|&v| f64::from(v)).collect();
    for (what, plan) in [("block-fused", on), ("epilogue-fused", epilogue)] {
        let err = rel_err(&run(plan), &unfused);
        assert!(err < 1e-5, "{what} and unfused logits differ by {err:e}");
    }
}

#[test]
fn dispatches_past_65535_workgroups_agree() {
    let plan = &Wide::PLAN;
    let relu = plan
        .kernels
        .iter()
        .find(|k| k.name == "r_relu_fwd")
        .unwrap();
    assert!(relu.threads_per_image * 17 / 64 > 65_535);
    check_all_activations(plan, 17, 17);
}

#[test]
fn every_op_agrees_at_odd_sizes() {
    check_all_activations(&OddShapes::PLAN, 3, 8);
}

#[test]
fn split_weights_and_micro_batches_agree() {
    let plan = &Split::PLAN;
    assert!(
        plan.micro_batch < 16,
        "the 2 KiB limit should cut batches, got {}",
        plan.micro_batch
    );
    assert!(plan.param("c1.weight").unwrap().parts.len() == 1);
    assert!(
        plan.param("fc.weight").unwrap().parts.len() > 1,
        "fc.weight should be split"
    );
    // An unsplit conv and the parts of a split one (each inside the one group) are GEMMs.
    assert!(
        plan.param("c2.weight").unwrap().parts.len() > 1,
        "c2.weight should be split"
    );
    let algo = |name: &str| plan.kernels.iter().find(|k| k.name == name).unwrap().algo;
    assert!(matches!(algo("c1_fwd"), alexnet::plan::Algo::Gemm(_)));
    assert!(matches!(algo("c2_fwd_part0"), alexnet::plan::Algo::Gemm(_)));
    assert!(matches!(algo("c2_fwd_part1"), alexnet::plan::Algo::Gemm(_)));
    check_all_activations(plan, 16, 16);
    check_all_activations(plan, 2, 16);
}

#[test]
fn mini_agrees() {
    check_all_activations(&AlexNetMini::PLAN, 5, 8);
}

#[test]
fn torchvision_agrees() {
    // The adapter's own variant only: the big nets are slow on a software adapter, and every
    // GEMM instance of both variants runs in the small nets above.
    check_activations_with(
        &AlexNetTorchvision::PLAN,
        1,
        1,
        alexnet_tests::gpu(&AlexNetTorchvision::PLAN).target,
    );
}

#[test]
fn paper_net_agrees() {
    check_activations_with(
        &AlexNet::PLAN,
        2,
        2,
        alexnet_tests::gpu(&AlexNet::PLAN).target,
    );
}
