//! Runtime behaviour: weights files, error paths that must leave the GPU untouched, batch
//! limits. Memory over many runs is `memory.rs`'s.

use alexnet::models::AlexNetMini;
use alexnet::{Session, Weights};
use alexnet_tests::{gpu, he_weights, random_input};

#[test]
fn safetensors_round_trip_is_exact() {
    let plan = &AlexNetMini::PLAN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let w = Weights::init(plan, 42);
    w.save(plan, &path).unwrap();
    assert_eq!(Weights::load(plan, &path).unwrap(), w);
    // The same seed gives the same weights; another seed does not.
    assert_eq!(Weights::init(plan, 42), w);
    assert_ne!(Weights::init(plan, 43), w);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn paper_initialisation_statistics() {
    let plan = &AlexNetMini::PLAN;
    let w = Weights::init(plan, 1);
    let fc6 = plan
        .params
        .iter()
        .position(|p| p.name == "fc6.weight")
        .unwrap();
    let t = &w.tensors[fc6];
    let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64;
    let std = (t
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / t.len() as f64)
        .sqrt();
    assert!(
        mean.abs() < 1e-3 && (std - 0.01).abs() < 5e-4,
        "mean {mean}, std {std}"
    );
    let conv1_bias = plan
        .params
        .iter()
        .position(|p| p.name == "conv1.bias")
        .unwrap();
    let conv2_bias = plan
        .params
        .iter()
        .position(|p| p.name == "conv2.bias")
        .unwrap();
    assert!(w.tensors[conv1_bias].iter().all(|&v| v == 0.0));
    assert!(w.tensors[conv2_bias].iter().all(|&v| v == 1.0));
}

#[test]
fn mismatched_file_lists_every_problem() {
    let mini = &AlexNetMini::PLAN;
    let other = &alexnet::models::AlexNetTorchvision::PLAN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.safetensors");
    // A file for another model: every expected tensor is missing, every present one unexpected.
    let mut small = Weights::init(other, 0);
    small.tensors.iter_mut().for_each(|t| t.truncate(0));
    let bytes = small_file(other);
    std::fs::write(&path, bytes).unwrap();
    let err = Weights::load(mini, &path).unwrap_err().to_string();
    assert!(
        err.contains("missing tensor `conv1.weight` [32, 1, 5, 5]"),
        "{err}"
    );
    assert!(err.contains("missing tensor `fc8.bias` [10]"), "{err}");
    assert!(
        err.contains("unexpected tensor `features.0.weight`"),
        "{err}"
    );
    assert!(err.starts_with(&path.display().to_string()), "{err}");

    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = Weights::load(mini, &path).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    let err = Weights::load(mini, &dir.path().join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

/// A safetensors file with `plan`'s names but one element per tensor (wrong shapes).
fn small_file(plan: &alexnet::Plan) -> Vec<u8> {
    let data = [0u8; 4];
    let views = plan
        .params
        .iter()
        .map(|p| (p.name.to_string(), safetensors_view(&data)));
    safetensors::serialize(views, None).unwrap()
}

fn safetensors_view(data: &[u8]) -> safetensors::tensor::TensorView<'_> {
    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], data).unwrap()
}

#[test]
fn wrong_shapes_and_dtypes_are_named() {
    let plan = &AlexNetMini::PLAN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, small_file(plan)).unwrap();
    let err = Weights::load(plan, &path).unwrap_err().to_string();
    assert!(
        err.contains("`conv1.weight` has shape [1], expected [32, 1, 5, 5] (OIHW)"),
        "{err}"
    );
    assert!(
        err.contains("`fc6.weight` has shape [1], expected [256, 576] (OI)"),
        "{err}"
    );
}

#[test]
fn bad_weights_leave_the_gpu_untouched() {
    let plan = &AlexNetMini::PLAN;
    let gpu = gpu(plan);
    let mut session = Session::new(&gpu, plan, 2).unwrap();
    let input = random_input(plan, 2, 3);
    assert!(matches!(
        session.forward(&input, 2),
        Err(alexnet::runtime::Error::NoWeights)
    ));
    session.load_weights(&he_weights(plan, 1)).unwrap();
    let before = session.forward(&input, 2).unwrap();
    let mut bad = he_weights(plan, 2);
    bad.tensors[3].pop();
    let err = session.load_weights(&bad).unwrap_err().to_string();
    assert!(
        err.contains(&*plan.params[3].name),
        "the error should name the short tensor: {err}"
    );
    assert_eq!(session.forward(&input, 2).unwrap(), before);
}

#[test]
fn batch_and_input_length_are_checked() {
    let plan = &AlexNetMini::PLAN;
    let gpu = gpu(plan);
    let mut session = Session::new(&gpu, plan, 4).unwrap();
    session.load_weights(&he_weights(plan, 1)).unwrap();
    let err = session.forward(&[0.0; 10], 1).unwrap_err().to_string();
    assert!(err.contains("needs 784"), "{err}");
    let err = session.forward(&[], 0).unwrap_err().to_string();
    assert!(err.contains("outside 1..=256"), "{err}");
    // A batch above the session's capacity runs in chunks with the same result per image.
    let input = random_input(plan, 7, 5);
    let all = session.forward(&input, 7).unwrap();
    let first = session.forward(&input[..784], 1).unwrap();
    assert_eq!(all.logits_of(0), first.logits_of(0));
}

/// One adapter opened twice is two logical devices that share nothing: a link moves strided
/// regions (as an LRN's boundary channels of each image are) from one to the other through
/// mapped staging, exactly, and refuses regions it cannot move with an error, not a panic.
#[test]
fn two_logical_devices_exchange_regions_through_staging() {
    use alexnet::runtime::exchange::{Link, Region};
    use wgpu::util::DeviceExt;
    let plan = &AlexNetMini::PLAN;
    let (a, b) = (gpu(plan), gpu(plan));
    let values: Vec<f32> = (0..1024).map(|i| i as f32 * 0.5 - 7.0).collect();
    let src = a
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sender"),
            contents: bytemuck::cast_slice(&values),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let dst = b
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("receiver"),
            contents: bytemuck::cast_slice(&vec![0f32; 1024]),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        });
    // Two "images" of 512 floats: each sends its floats 100..164 to the same place on `b`.
    let regions: Vec<Region> = (0..2u64)
        .map(|img| Region {
            src_offset: (img * 512 + 100) * 4,
            dst_offset: (img * 512 + 100) * 4,
            bytes: 64 * 4,
        })
        .collect();
    let link = Link::new(&a, 4096).unwrap();
    assert_eq!(link.transfer(&a, &src, &b, &dst, &regions).unwrap(), 512);
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&b.read_bytes(&dst, 0, 4096).unwrap());
    for (i, (&g, &v)) in got.iter().zip(&values).enumerate() {
        let moved = (100..164).contains(&(i % 512));
        assert_eq!(g, if moved { v } else { 0.0 }, "float {i}");
    }
    // A second transfer reuses the staging buffer.
    let back = [Region {
        src_offset: 0,
        dst_offset: 0,
        bytes: 16,
    }];
    assert_eq!(link.transfer(&a, &src, &b, &dst, &back).unwrap(), 16);
    assert_eq!(
        bytemuck::pod_collect_to_vec::<u8, f32>(&b.read_bytes(&dst, 0, 16).unwrap()),
        values[..4]
    );

    let message = |r: &[Region]| {
        link.transfer(&a, &src, &b, &dst, r)
            .unwrap_err()
            .to_string()
    };
    assert!(message(&[Region {
        src_offset: 2,
        dst_offset: 0,
        bytes: 4
    }])
    .contains("not 4-byte aligned"));
    assert!(message(&[Region {
        src_offset: 4092,
        dst_offset: 0,
        bytes: 8
    }])
    .contains("lies outside"));
    assert!(message(&[
        Region {
            src_offset: 0,
            dst_offset: 0,
            bytes: 4096
        },
        Region {
            src_offset: 0,
            dst_offset: 0,
            bytes: 4
        }
    ])
    .contains("exceed the link's 4096-byte staging buffer"));
}

alexnet::alexnet! {
    /// Three classes: at an odd capacity the logits fill 12·capacity bytes, which is not a
    /// place wgpu can map from, so the probabilities' read-back slot must be padded.
    OddClasses {
        input: [1, 4, 4],
        fc: linear(3) -> softmax,
    }
}

#[test]
fn an_odd_class_count_at_an_odd_capacity_reads_back() {
    let plan = &OddClasses::PLAN;
    let gpu = gpu(plan);
    let weights = he_weights(plan, 4);
    let input = random_input(plan, 3, 5);
    let mut session = Session::new(&gpu, plan, 3).unwrap();
    session.load_weights(&weights).unwrap();
    let out = session.forward(&input, 3).unwrap();
    let reference = alexnet::runtime::reference::forward(plan, &weights, &input, 3);
    for (got, want) in [
        (&out.logits, &reference.logits),
        (&out.probs, &reference.probs),
    ] {
        assert_eq!(got.len(), 9);
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{got:?} vs the reference {want:?}"
            );
        }
    }
}

/// CI's adapter, lavapipe, runs every kernel variant, `cpu-sg8` included (8-lane subgroups
/// with subgroup operations), so the tests that loop over `alexnet_tests::targets` check all
/// of them there.
#[test]
fn lavapipe_runs_every_variant() {
    let plan = &alexnet::models::AlexNetMini::PLAN;
    let gpu = alexnet_tests::gpu(plan);
    if !gpu.adapter_name().starts_with("llvmpipe") {
        return;
    }
    assert_eq!(alexnet_tests::targets(plan), alexnet::plan::Target::ALL);
    let forced = alexnet::Gpu::open(
        &alexnet::GpuOptions {
            variant: Some(alexnet::plan::Target::CpuSubgroup),
            ..Default::default()
        },
        plan,
    )
    .unwrap();
    assert_eq!(forced.target, alexnet::plan::Target::CpuSubgroup);
}
