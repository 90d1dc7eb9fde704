//! AlexNet-style convolutional networks, compiled to WGSL at build time and run on wgpu.
//!
//! ```
//! alexnet::alexnet! {
//!     /// A small net for 28×28 grey images.
//!     pub Tiny {
//!         input: [1, 28, 28],
//!         max_batch: 64,
//!         conv1: conv(16, k = 5, p = 2) -> relu -> maxpool(k = 2, s = 2),
//!         fc: linear(10) -> softmax,
//!     }
//! }
//!
//! // Everything was compiled and validated at build time.
//! assert_eq!(*Tiny::PLAN.param("conv1.weight").unwrap().shape, [16, 1, 5, 5]);
//! assert_eq!(Tiny::PLAN.kernels[0].name, "conv1_fwd");
//! assert!(Tiny::PLAN.ir.contains("maxpool %2 {k2 s2 p0} -> [N,16,14,14]"));
//! ```
//!
//! # Syntax
//!
//! - `input: [C, H, W]` (required); `devices: 1 | 2` (default 1); `max_batch: N` (default 128);
//!   `binding_limit: BYTES`, the target's largest storage binding (default WebGPU's 128 MiB);
//!   `dispatch_gflop: N`, the most work one dispatch may do (default 32 GFLOP, well inside a
//!   desktop GPU's 2 s watchdog): larger batches run as several passes of the micro-batch.
//! - `name: op -> op -> ...` declares a layer. Ops:
//!   `conv(out, k = K, s = 1, p = 0, groups = 1, bias = true, floor)`, `relu`,
//!   `lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2)`, `maxpool(k = K, s = K, p = 0, floor)`,
//!   `linear(out, bias = true)`, `dropout(p)` (identity at inference), `softmax`.
//! - A flatten is implied before the first `linear`.
//! - **LRN alpha is the paper's**: `b = a / (k + alpha * Σ a²)^beta` over `n` channels.
//!   ONNX, PyTorch and Caffe divide alpha by `n`; to port their models write `alpha = theirs / n`.
//! - A kernel that does not tile its input exactly is an error; `floor` accepts PyTorch's
//!   rounding, which drops the remainder.
//! - `devices: 2` splits every conv and linear layer into two towers, half the channels and
//!   weights on each device (the paper's split): grouped convs with an even number of groups
//!   read their own tower, other layers gather the other tower's half, LRN borrows the
//!   boundary channels its window reaches, so the result is the one-device result. A layer
//!   that cannot be halved is an error unless `#[device = N]` before it puts it on one device.
//!   The split is planned and reported (`Plan::exchanges`) and runs on two devices
//!   (`Plan::towers` for inference, `Plan::tower_training` for a training step;
//!   `alexnet::TowerSession`), or on one device, which runs both towers.
//! - `#[weights = "features.0"]` before a layer names its parameters `features.0.weight` and
//!   `features.0.bias` (default: `conv1.weight`, `conv1.bias`).
//! - Parameters are initialised as in the paper: N(0, 0.01²) weights; biases 1 in the 2nd,
//!   4th and 5th conv layers and the hidden linear layers, 0 elsewhere (the output layer's too).

// Lets the built-in models use the same `::alexnet::__private` path as user code.
extern crate self as alexnet;

pub use alexnet_macros::alexnet;
pub use alexnet_plan as plan;
pub use alexnet_runtime as runtime;
pub use alexnet_runtime::{
    ExchangeStats, Gpu, GpuOptions, Output, Runner, Session, TowerSession, Weights,
};
pub use plan::Plan;

pub mod models;

/// A network compiled by `alexnet!`.
pub trait Model {
    /// Its execution plan.
    const PLAN: &'static Plan;
}

/// Items that generated code names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use alexnet_plan::*;
}
