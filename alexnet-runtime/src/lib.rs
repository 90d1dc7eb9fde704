//! The alexnet runtime: executes a compiled [`Plan`] on a wgpu device, and the CPU reference
//! interpreter that runs the same plan in f64 to check it.
//!
//! It never builds shader text: every kernel arrives in the plan, generated and validated at
//! build time. Code map: `gpu` (adapter choice, device with the plan's limits), `session`
//! (buffers, pipelines, forward, training steps), `train` (data order, schedules,
//! checkpoints), `trainer` (the training loop as a library type), `weights` (initialisation, safetensors), `reference` (CPU), `selftest` (every kernel alone against it),
//! `exchange` (moving tensors between two devices through mapped staging), `towers` (a plan's
//! two-device programs), `runner` (one trait over one- and two-device sessions),
//! `data` (image decoding and the paper's preprocessing), `idx` (MNIST-style datasets).

pub mod data;
pub mod error;
pub mod exchange;
pub mod folder;
pub mod gpu;
pub mod idx;
pub mod npy;
pub mod reference;
pub mod runner;
pub mod selftest;
pub mod session;
pub mod towers;
pub mod train;
pub mod trainer;
pub mod tune;
pub mod weights;

pub use alexnet_plan::Plan;
pub use error::{Error, Result};
pub use gpu::{AdapterSummary, Gpu, GpuOptions};
pub use runner::Runner;
pub use session::{Mode, Profile, Session, StepConfig, StepOutput};
pub use towers::{ExchangeStats, TowerSession};
pub use weights::Weights;

/// Logits and probabilities of a batch, image-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub batch: usize,
    pub classes: usize,
    pub logits: Vec<f32>,
    pub probs: Vec<f32>,
}

impl Output {
    /// Logits of image `i`.
    pub fn logits_of(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }

    /// Probabilities of image `i`.
    pub fn probs_of(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }

    /// The `k` most probable classes of image `i`, best first, ties to the lower index.
    pub fn top_k(&self, i: usize, k: usize) -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = self.probs_of(i).iter().copied().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

/// Softmax of each row of `logits`, computed in f64.
pub fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(classes) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| (v / s) as f32));
    }
    out
}
