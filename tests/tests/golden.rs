//! Snapshots of what the compiler emits for the built-in models: the IR dumps (insta) and the
//! WGSL in `shaders/`, which this test rewrites and then fails when it was stale, so every
//! codegen change arrives as a reviewable diff.

use alexnet::models::BUILTIN;
use std::path::PathBuf;

#[test]
fn ir_dumps() {
    for (name, plan) in BUILTIN {
        insta::assert_snapshot!(format!("ir_{name}"), plan.ir);
    }
}

#[test]
fn dot_graph_of_mini() {
    insta::assert_snapshot!("dot_alexnet-mini", alexnet::models::AlexNetMini::PLAN.dot);
}

/// The paper's two towers exchange, per image and each way, the other tower's half of what
/// conv3, fc6, fc7 and fc8 read whole (121,344 bytes, from the paper's topology), the two boundary
/// channels each LRN's window reaches across the towers, and device 0 gathers the logits'
/// other half for softmax. Every figure is recomputed here from the plan's shapes.
#[test]
fn the_paper_towers_exchange_what_the_shapes_say() {
    use alexnet::plan::{ExchangeKind, NodeOp, Place};
    let plan = &alexnet::models::AlexNet::PLAN;
    let output = |layer: &str| {
        plan.layers
            .iter()
            .find(|l| l.name == layer)
            .unwrap()
            .output
            .iter()
            .map(|&d| u64::from(d))
            .product::<u64>()
    };
    let half = |layer: &str| 4 * output(layer) / 2;
    let gathers: Vec<(&str, u32, u64)> = plan
        .exchanges
        .iter()
        .filter(|e| e.kind == ExchangeKind::Gather && e.reader != "fc8.softmax")
        .map(|e| (&*e.reader, e.to, e.bytes_per_image))
        .collect();
    let mut expect = Vec::new();
    for (reader, from) in [
        ("conv3.conv", "conv2"),
        ("fc6.linear", "conv5"),
        ("fc7.linear", "fc6"),
        ("fc8.linear", "fc7"),
    ] {
        expect.extend([(reader, 0, half(from)), (reader, 1, half(from))]);
    }
    assert_eq!(gathers, expect);
    let each_way: u64 = gathers.iter().filter(|g| g.1 == 0).map(|g| g.2).sum();
    assert_eq!(
        each_way, 121_344,
        "about 121 KB per image each way, as the paper's topology gives"
    );

    let mut halos_each_way = 0;
    for layer in ["conv1", "conv2"] {
        let lrn = plan.nodes.iter().find_map(|n| match n.op {
            NodeOp::Lrn(l) if n.layer == layer => Some(l),
            _ => None,
        });
        let lrn = lrn.unwrap();
        // The window c-2..=c+2 reaches two channels across the boundary either way.
        let halo = 2 * u64::from(lrn.h) * u64::from(lrn.w) * 4;
        halos_each_way += halo;
        let reader = format!("{layer}.lrn");
        let halos: Vec<_> = plan
            .exchanges
            .iter()
            .filter(|e| e.reader == reader)
            .map(|e| (e.to, e.kind, e.bytes_per_image))
            .collect();
        assert_eq!(
            halos,
            [
                (0, ExchangeKind::Halo { channels: 2 }, halo),
                (1, ExchangeKind::Halo { channels: 2 }, halo)
            ]
        );
    }
    let softmax: Vec<_> = plan
        .exchanges
        .iter()
        .filter(|e| e.reader == "fc8.softmax")
        .map(|e| (e.to, e.bytes_per_image))
        .collect();
    let logits_half = 4 * u64::from(plan.classes()) / 2;
    assert_eq!(softmax, [(0, logits_half)]);
    assert_eq!(
        plan.received_per_image(0),
        each_way + halos_each_way + logits_half
    );
    assert_eq!(plan.received_per_image(1), each_way + halos_each_way);
    assert_eq!((halos_each_way, logits_half), (24_200 + 5_832, 2_000));

    // Every layer is split; each device holds half the weights.
    assert!(plan.layers.iter().all(|l| l.place == Place::Towers));
    assert_eq!(
        (plan.params_on(0), plan.params_on(1)),
        (60_965_224 / 2, 60_965_224 / 2)
    );
    // The one-device nets exchange nothing.
    for other in [
        &alexnet::models::AlexNetMini::PLAN,
        &alexnet::models::AlexNetTorchvision::PLAN,
    ] {
        assert!(
            other.exchanges.is_empty() && other.layers.iter().all(|l| l.place == Place::Device(0))
        );
    }
}

#[test]
fn plan_facts_of_the_paper_net() {
    let plan = &alexnet::models::AlexNet::PLAN;
    assert_eq!(plan.param_count(), 60_965_224);
    assert_eq!(plan.macs(), 724_406_816);
    let macs: Vec<u64> = plan
        .layers
        .iter()
        .map(|l| (l.macs as f64 / 1e5).round() as u64)
        .collect();
    assert_eq!(macs, [1054, 2239, 1495, 1121, 748, 377, 168, 41]);
    let sizes: Vec<u32> = plan
        .activations
        .iter()
        .filter(|a| a.shape.len() == 3)
        .map(|a| a.shape[1])
        .collect();
    assert_eq!(
        sizes,
        [227, 55, 55, 55, 27, 27, 27, 27, 13, 13, 13, 13, 13, 13, 13, 6]
    );
    let w = plan.param("conv1.weight").unwrap();
    assert_eq!(
        (&*w.shape, w.layout),
        (&[96, 3, 11, 11][..], alexnet::plan::Layout::Oihw)
    );
    let fc6 = plan.param("fc6.weight").unwrap();
    assert_eq!(&*fc6.shape, &[4096, 9216]);
    // 144 MiB does not fit WebGPU's 128 MiB binding limit: two halves.
    assert_eq!(fc6.parts.len(), 2);
    assert!(fc6
        .parts
        .iter()
        .all(|p| u64::from(p.rows) * fc6.row_elems() * 4 <= 128 << 20));
    // conv1's output at batch 128 is ~142 MiB, which cuts batches to 115 images; each tower's
    // weight part is a kernel of half a layer's work, within the 32 GFLOP dispatch budget at
    // that batch (see the test below).
    assert_eq!(plan.micro_batch, 115);
    let biases: Vec<(String, f32)> = plan
        .params
        .iter()
        .filter_map(|p| match p.init {
            alexnet::plan::Init::Constant { value } => Some((p.name.to_string(), value)),
            alexnet::plan::Init::Normal { .. } => None,
        })
        .collect();
    let ones: Vec<&str> = biases
        .iter()
        .filter(|(_, v)| *v == 1.0)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        ones,
        [
            "conv2.bias",
            "conv4.bias",
            "conv5.bias",
            "fc6.bias",
            "fc7.bias"
        ]
    );
}

#[test]
fn every_dispatch_of_the_paper_net_at_batch_128_fits_the_watchdog_budget() {
    // Declared for two towers, every conv is two weight parts, each a kernel of half the
    // layer's work, and memory sets the pass; declared for one device, conv2 is one kernel of
    // the whole layer's work, and the budget cuts the pass further.
    for (plan, budget_cuts) in [
        (&alexnet::models::AlexNet::PLAN, false),
        (&PaperOneDevice::PLAN, true),
    ] {
        let budget = plan.limits.max_dispatch_flops;
        assert_eq!(budget, 32_000_000_000);
        // A batch of 128 runs as passes of the micro-batch; every dispatch of a pass, in every
        // program and kernel variant, stays within the budget.
        let pass = u64::from(plan.micro_batch);
        assert!(pass < 128);
        for k in plan.kernels.iter() {
            let costs = std::iter::once((alexnet::plan::Target::Gpu, k.cost))
                .chain(k.variants.iter().map(|v| (v.target, v.cost)));
            for (target, cost) in costs {
                let flops = cost.flops.at(pass);
                assert!(
                    flops <= budget,
                    "`{}` ({}) does {flops} FLOPs at {pass} images",
                    k.name,
                    target.as_str()
                );
            }
        }
        // Where the budget cuts the batch, one more image puts the heaviest dispatch over it.
        let (heaviest, flops) = plan.heaviest_dispatch(pass).unwrap();
        let over = plan.heaviest_dispatch(pass + 1).unwrap().1 > budget;
        assert!(
            flops <= budget && over == budget_cuts,
            "`{}`: {flops} at {pass} images",
            heaviest.name
        );
        // conv2 is the paper's heaviest layer (224 M multiply-adds an image): the heaviest
        // dispatch is one of its kernels, forward or backward.
        assert_eq!(heaviest.layer, "conv2", "{}", heaviest.name);
    }
    assert!(PaperOneDevice::PLAN.micro_batch < alexnet::models::AlexNet::PLAN.micro_batch);
}

alexnet::alexnet! {
    /// The paper's net declared for one device: no towers, so every block fuses.
    PaperOneDevice {
        input: [3, 227, 227],
        max_batch: 128,
        conv1: conv(96, k = 11, s = 4) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        conv2: conv(256, k = 5, p = 2, groups = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        conv3: conv(384, k = 3, p = 1) -> relu,
        conv4: conv(384, k = 3, p = 1, groups = 2) -> relu,
        conv5: conv(256, k = 3, p = 1, groups = 2) -> relu -> maxpool(k = 3, s = 2),
        fc6: linear(4096) -> relu -> dropout(0.5),
        fc7: linear(4096) -> relu -> dropout(0.5),
        fc8: linear(1000) -> softmax,
    }
}

/// On one device the paper's layers run a kernel per block, in a planned memory.
#[test]
fn paper_net_on_one_device_runs_a_kernel_per_block_in_a_planned_memory() {
    let plan = &PaperOneDevice::PLAN;
    assert!(plan.towers.is_none());
    let names: Vec<&str> = plan
        .inference
        .dispatches()
        .map(|k| &*plan.kernels[k as usize].name)
        .collect();
    assert_eq!(
        names,
        [
            "conv1_fused_fwd",
            "conv2_fused_fwd",
            "conv3_fused_fwd",
            "conv4_fused_fwd",
            "conv5_fused_fwd",
            "fc6_fused_fwd_part0",
            "fc6_fused_fwd_part1",
            "fc7_fused_fwd",
            "fc8_fused_fwd",
        ]
    );
    let covers = |name: &str| {
        let k = plan.kernels.iter().find(|k| k.name == name).unwrap();
        k.covers
            .iter()
            .map(|&n| plan.nodes[n as usize].op.name())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        covers("conv1_fused_fwd"),
        ["conv", "relu", "lrn", "maxpool"]
    );
    assert_eq!(covers("conv5_fused_fwd"), ["conv", "relu", "maxpool"]);
    assert_eq!(covers("fc8_fused_fwd"), ["linear", "softmax"]);
    check_memory(plan);
}

/// Declared for two devices, every conv and linear layer of the paper's net is two weight
/// parts, one per tower, each its own GEMM kernel (one device runs both); LRN and max-pool
/// run on their own, as the towers exchange an LRN's boundary channels before it.
#[test]
fn paper_net_runs_a_kernel_per_tower_in_a_planned_memory() {
    use alexnet::plan::Algo;
    let plan = &alexnet::models::AlexNet::PLAN;
    let names: Vec<&str> = plan
        .inference
        .dispatches()
        .map(|k| &*plan.kernels[k as usize].name)
        .collect();
    let mut want = Vec::new();
    for layer in [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
    ] {
        let kernel = if layer == "fc8" {
            "fc8_fwd".to_string()
        } else {
            format!("{layer}_fused_fwd")
        };
        want.extend([format!("{kernel}_part0"), format!("{kernel}_part1")]);
        match layer {
            "conv1" | "conv2" => {
                want.extend([format!("{layer}_lrn_fwd"), format!("{layer}_maxpool_fwd")])
            }
            "conv5" => want.push("conv5_maxpool_fwd".into()),
            "fc8" => want.push("fc8_softmax_fwd".into()),
            _ => {}
        }
    }
    assert_eq!(names, want);
    for k in plan
        .inference
        .dispatches()
        .map(|k| &plan.kernels[k as usize])
        .filter(|k| k.name.contains("_part"))
    {
        assert!(
            matches!(k.algo, Algo::Gemm(_)),
            "{} is {}",
            k.name,
            k.algo.describe()
        );
    }
    for p in plan.params.iter() {
        assert_eq!(p.parts.len(), 2, "{}: one part per tower", p.name);
    }
    check_memory(plan);
}

fn check_memory(plan: &alexnet::Plan) {
    // Today's total activation bytes at batch 128: every activation in its own buffer.
    let all_activations: u64 = plan
        .activations
        .iter()
        .map(|a| a.elems_per_image() * 4 * 128)
        .sum();
    let pass = u64::from(plan.micro_batch);
    let state: u64 = plan
        .inference
        .placements
        .iter()
        .filter(|p| p.tensor.is_state())
        .map(|p| p.size.at(pass))
        .sum();
    let activations = plan.inference.memory(0, pass) - state;
    assert!(
        activations < all_activations / 2,
        "inference activations {activations} B, all activations {all_activations} B"
    );
    // Weights are never shared, and training keeps gradients and momentum apart from them.
    assert_eq!(state, plan.param_count() * 4);
    let training_state: u64 = plan
        .training
        .placements
        .iter()
        .filter(|p| p.tensor.is_state())
        .map(|p| p.size.at(pass))
        .sum();
    assert_eq!(training_state, 3 * plan.param_count() * 4);
}

#[test]
fn software_adapters_run_the_paper_blocks_as_gemms_and_their_own_lrn_and_pool() {
    use alexnet::plan::{Algo, Fusion, Target};
    let plan = &PaperOneDevice::PLAN;
    assert_eq!(plan.inference_variants.len(), 1);
    let cpu = plan.for_target(Target::Cpu);
    assert_eq!(cpu.fusion, Fusion::Epilogue);
    let names: Vec<&str> = cpu
        .inference
        .dispatches()
        .map(|k| &*cpu.kernels[k as usize].name)
        .collect();
    assert_eq!(
        names,
        [
            "conv1_epilogue_fwd",
            "conv1_lrn_fwd",
            "conv1_maxpool_fwd",
            "conv2_epilogue_fwd",
            "conv2_lrn_fwd",
            "conv2_maxpool_fwd",
            "conv3_fused_fwd",
            "conv4_fused_fwd",
            "conv5_epilogue_fwd",
            "conv5_maxpool_fwd",
            "fc6_fused_fwd_part0",
            "fc6_fused_fwd_part1",
            "fc7_fused_fwd",
            "fc8_fused_fwd",
        ]
    );
    // Every conv runs as the GEMM generator's registers-only instance: no block recomputes halos.
    for k in cpu.inference.dispatches().map(|k| &cpu.kernels[k as usize]) {
        assert!(
            !matches!(k.algo, Algo::ConvBlock { .. }),
            "{} is a conv block on cpu adapters",
            k.name
        );
    }
    // Training shares the conv + ReLU kernels, and GPUs keep the declared blocks.
    let training: Vec<&str> = plan
        .training
        .dispatches()
        .map(|k| &*plan.kernels[k as usize].name)
        .collect();
    assert!(training.contains(&"conv1_epilogue_fwd"), "{training:?}");
    assert_eq!(plan.for_target(Target::Gpu).inference, plan.inference);
    // A plan that already fuses only epilogues has nothing to vary.
    let epilogue = alexnet_compiler::compile_str("E { input: [1, 8, 8], fusion: epilogue, c: conv(4, k = 3) -> relu -> maxpool(k = 2, s = 2), fc: linear(3) }").unwrap().plan;
    assert!(epilogue.inference_variants.is_empty());
}

#[test]
fn torchvision_names_and_count() {
    let plan = &alexnet::models::AlexNetTorchvision::PLAN;
    assert_eq!(plan.param_count(), 61_100_840);
    let names: Vec<&str> = plan.params.iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        [
            "features.0.weight",
            "features.0.bias",
            "features.3.weight",
            "features.3.bias",
            "features.6.weight",
            "features.6.bias",
            "features.8.weight",
            "features.8.bias",
            "features.10.weight",
            "features.10.bias",
            "classifier.1.weight",
            "classifier.1.bias",
            "classifier.4.weight",
            "classifier.4.bias",
            "classifier.6.weight",
            "classifier.6.bias",
        ]
    );
}

#[test]
fn compile_is_deterministic() {
    let src = "pub N { input: [3, 227, 227], conv1: conv(96, k = 11, s = 4) -> relu -> maxpool(k = 3, s = 2), fc: linear(10) -> softmax }";
    let a = alexnet_compiler::compile_str(src).unwrap().plan;
    let b = alexnet_compiler::compile_str(src).unwrap().plan;
    assert_eq!(a, b);
}

#[test]
fn golden_shaders_are_fresh() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut stale = Vec::new();
    for (name, plan) in BUILTIN {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut expected: Vec<String> = Vec::new();
        for (file, wgsl) in plan.kernels.iter().flat_map(|k| k.sources()) {
            let path = dir.join(&file);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(wgsl) {
                std::fs::write(&path, wgsl.as_bytes()).unwrap();
                stale.push(path.display().to_string());
            }
            expected.push(file);
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            if !expected.contains(&file) {
                std::fs::remove_file(&path).unwrap();
                stale.push(format!("{} (removed)", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "shaders/ was stale and has been rewritten; review and commit:\n{}",
        stale.join("\n")
    );
}
