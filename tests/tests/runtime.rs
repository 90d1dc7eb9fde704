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
    let fc6 = plan.params.iter().position(|p| p.name == "fc6.weight").unwrap();
    let t = &w.tensors[fc6];
    let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64;
    let std = (t.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / t.len() as f64).sqrt();
    assert!(mean.abs() < 1e-3 && (std - 0.01).abs() < 5e-4, "mean {mean}, std {std}");
    let conv1_bias = plan.params.iter().position(|p| p.name == "conv1.bias").unwrap();
    let conv2_bias = plan.params.iter().position(|p| p.name == "conv2.bias").unwrap();
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
    assert!(err.contains("missing tensor `conv1.weight` [32, 1, 5, 5]"), "{err}");
    assert!(err.contains("missing tensor `fc8.bias` [10]"), "{err}");
    assert!(err.contains("unexpected tensor `features.0.weight`"), "{err}");
    assert!(err.starts_with(&path.display().to_string()), "{err}");

    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = Weights::load(mini, &path).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    let err = Weights::load(mini, &dir.path().join("absent.safetensors")).unwrap_err().to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

/// A safetensors file with `plan`'s names but one element per tensor (wrong shapes).
fn small_file(plan: &alexnet::Plan) -> Vec<u8> {
    let data = [0u8; 4];
    let views = plan.params.iter().map(|p| (p.name.to_string(), safetensors_view(&data)));
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
    assert!(err.contains("`conv1.weight` has shape [1], expected [32, 1, 5, 5] (OIHW)"), "{err}");
    assert!(err.contains("`fc6.weight` has shape [1], expected [256, 576] (OI)"), "{err}");
}

#[test]
fn bad_weights_leave_the_gpu_untouched() {
    let plan = &AlexNetMini::PLAN;
    let gpu = gpu(plan);
    let mut session = Session::new(&gpu, plan, 2).unwrap();
    let input = random_input(plan, 2, 3);
    assert!(matches!(session.forward(&input, 2), Err(alexnet::runtime::Error::NoWeights)));
    session.load_weights(&he_weights(plan, 1)).unwrap();
    let before = session.forward(&input, 2).unwrap();
    let mut bad = he_weights(plan, 2);
    bad.tensors[3].pop();
    let err = session.load_weights(&bad).unwrap_err().to_string();
    assert!(err.contains(&*plan.params[3].name), "the error should name the short tensor: {err}");
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
