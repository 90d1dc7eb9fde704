//! Helpers shared by the workspace's integration tests.

use alexnet::{Plan, Weights};
use rand::{Rng, SeedableRng};

/// Weights scaled by fan-in (He initialisation), so activations stay O(1) through deep nets
/// and a comparison is not dominated by biases, as it would be with the paper's N(0, 0.01²).
pub fn he_weights(plan: &Plan, seed: u64) -> Weights {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors = plan
        .params
        .iter()
        .map(|p| {
            let fan_in = if p.shape.len() > 1 { p.row_elems() as f32 } else { 1.0 };
            let scale = if p.shape.len() > 1 { (6.0 / fan_in).sqrt() } else { 0.1 };
            (0..p.elems()).map(|_| rng.random_range(-scale..scale)).collect()
        })
        .collect();
    Weights { tensors }
}

/// A random input batch in [-1, 1).
pub fn random_input(plan: &Plan, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..batch * plan.input_elems()).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Largest difference relative to the reference's largest magnitude.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max) / scale
}

/// Opens the default adapter for `plan` (lavapipe in CI).
pub fn gpu(plan: &Plan) -> alexnet::Gpu {
    alexnet::Gpu::open(&alexnet::GpuOptions::default(), plan).expect("a GPU adapter (CI installs lavapipe)")
}

/// Opens the default adapter for `plan`, running the kernel variants for `target` whatever
/// the adapter's kind, so both variants of every kernel are tested on one machine.
pub fn gpu_with(plan: &Plan, target: alexnet::plan::Target) -> alexnet::Gpu {
    let options = alexnet::GpuOptions { variant: Some(target), ..Default::default() };
    alexnet::Gpu::open(&options, plan).expect("a GPU adapter (CI installs lavapipe)")
}
