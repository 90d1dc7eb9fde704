//! Helpers shared by the workspace's integration tests.

use alexnet::Plan;

// The self-test's helpers, shared so tests and `alexnet selftest` judge kernels alike.
pub use alexnet::runtime::selftest::{he_weights, random_input, rel_err};

/// Opens the default adapter for `plan` (lavapipe in CI).
pub fn gpu(plan: &Plan) -> alexnet::Gpu {
    alexnet::Gpu::open(&alexnet::GpuOptions::default(), plan)
        .expect("a GPU adapter (CI installs lavapipe)")
}

/// Opens the default adapter for `plan`, running the kernel variants for `target` whatever
/// the adapter's kind, so both variants of every kernel are tested on one machine.
pub fn gpu_with(plan: &Plan, target: alexnet::plan::Target) -> alexnet::Gpu {
    let options = alexnet::GpuOptions {
        variant: Some(target),
        ..Default::default()
    };
    alexnet::Gpu::open(&options, plan).expect("a GPU adapter (CI installs lavapipe)")
}
