//! Helpers shared by the workspace's integration tests.

use alexnet::Plan;

// The self-test's helpers, shared so tests and `alexnet selftest` judge kernels alike.
pub use alexnet::runtime::selftest::{he_weights, random_input, rel_err};

/// Opens the default adapter for `plan` (lavapipe in CI).
pub fn gpu(plan: &Plan) -> alexnet::Gpu {
    alexnet::Gpu::open(&alexnet::GpuOptions::default(), plan)
        .expect("a GPU adapter (CI installs lavapipe)")
}

/// The kernel variants the default adapter can run: `gpu` and `cpu` always, `cpu-sg8` where
/// its subgroups are 8 lanes (lavapipe; `runtime::lavapipe_runs_every_variant` checks that
/// CI's adapter runs them all, so no variant goes untested there).
pub fn targets(plan: &Plan) -> Vec<alexnet::plan::Target> {
    let gpu = gpu_with(plan, alexnet::plan::Target::Cpu);
    alexnet::plan::Target::ALL
        .into_iter()
        .filter(|&t| gpu.runs(t))
        .collect()
}

/// Opens the default adapter for `plan`, running the kernel variants for `target` whatever
/// the adapter's kind, so every variant of every kernel is tested on one machine.
pub fn gpu_with(plan: &Plan, target: alexnet::plan::Target) -> alexnet::Gpu {
    let options = alexnet::GpuOptions {
        variant: Some(target),
        ..Default::default()
    };
    alexnet::Gpu::open(&options, plan).expect("a GPU adapter (CI installs lavapipe)")
}
