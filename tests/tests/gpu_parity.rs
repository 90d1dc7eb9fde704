//! The GPU path agrees with the CPU reference (f64) for every op and every built-in net.

use alexnet::models::{AlexNet, AlexNetMini, AlexNetTorchvision};
use alexnet::runtime::reference;
use alexnet::{alexnet, Plan, Session};
use alexnet_tests::{gpu, he_weights, random_input, rel_err};

const TOL: f64 = 1e-4;

/// Runs `plan` on the GPU and the CPU; checks every activation, logits and probabilities.
fn check_all_activations(plan: &Plan, batch: usize, capacity: u32) {
    let gpu = gpu(plan);
    let weights = he_weights(plan, 7);
    let input = random_input(plan, batch, 11);
    let mut session = Session::new(&gpu, plan, capacity).unwrap();
    session.load_weights(&weights).unwrap();
    let out = session.forward(&input, batch).unwrap();
    let want = reference::activations(plan, &weights, &input, batch);
    if batch as u32 <= session.capacity() {
        for (i, a) in plan.activations.iter().enumerate() {
            let got = session.read_activation(i as u32, batch).unwrap();
            let err = rel_err(&got, &want[i]);
            assert!(err < TOL, "{}: activation `{}` differs by {err:e}", plan.name, a.name);
        }
    }
    let logits = &want[plan.logits_activation as usize];
    let err = rel_err(&out.logits, logits);
    assert!(err < TOL, "{}: logits differ by {err:e}", plan.name);
    let probs = reference::forward(plan, &weights, &input, batch).probs;
    let probs64: Vec<f64> = probs.iter().map(|&p| f64::from(p)).collect();
    assert!(rel_err(&out.probs, &probs64) < TOL, "{}: probabilities differ", plan.name);
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

#[test]
fn dispatches_past_65535_workgroups_agree() {
    let plan = &Wide::PLAN;
    let relu = plan.kernels.iter().find(|k| k.name == "r_relu_fwd").unwrap();
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
    assert!(plan.micro_batch < 16, "the 2 KiB limit should cut batches, got {}", plan.micro_batch);
    assert!(plan.param("c1.weight").unwrap().parts.len() == 1);
    assert!(plan.param("fc.weight").unwrap().parts.len() > 1, "fc.weight should be split");
    // An unsplit conv runs tiled; a split one keeps an invocation per output.
    assert!(plan.param("c2.weight").unwrap().parts.len() > 1, "c2.weight should be split");
    let dispatch = |name: &str| plan.kernels.iter().find(|k| k.name == name).unwrap().dispatch;
    assert!(matches!(dispatch("c1_fwd"), alexnet::plan::Dispatch::Tiles { .. }));
    assert!(matches!(dispatch("c2_fwd_part0"), alexnet::plan::Dispatch::PerInvocation));
    check_all_activations(plan, 16, 16);
    check_all_activations(plan, 2, 16);
}

#[test]
fn mini_agrees() {
    check_all_activations(&AlexNetMini::PLAN, 5, 8);
}

#[test]
fn torchvision_agrees() {
    check_all_activations(&AlexNetTorchvision::PLAN, 1, 1);
}

#[test]
fn paper_net_agrees() {
    check_all_activations(&AlexNet::PLAN, 2, 2);
}
