//! Errors of the runtime: every user mistake and device failure as a value, never a panic.

use std::path::PathBuf;
use std::time::Duration;

/// Anything that can go wrong opening a device, loading weights or running a plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found for backends {backends} (on Linux, install mesa-vulkan-drivers and libvulkan1 for a software Vulkan device)")]
    NoAdapter { backends: String },
    #[error(
        "adapter index {index} is out of range: {count} adapter(s) found (see `alexnet devices`)"
    )]
    AdapterIndex { index: usize, count: usize },
    #[error("unknown backend `{0}` (expected one of vulkan, gl, metal, dx12)")]
    UnknownBackend(String),
    #[error("unknown kernel variant `{0}` (expected gpu, cpu or cpu-sg8)")]
    UnknownVariant(String),
    #[error("adapter `{adapter}` cannot run the `{variant}` kernel variant: {why}")]
    VariantUnsupported {
        adapter: String,
        variant: &'static str,
        why: String,
    },
    #[error("adapter `{adapter}` cannot meet the plan: {limit} needs {needed}, the adapter offers {available}")]
    Limit {
        adapter: String,
        limit: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("cannot open a device on adapter `{adapter}`: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("GPU error while {what}: {message}")]
    Gpu { what: String, message: String },
    #[error("timed out after {0:?} waiting for the GPU (raise ALEXNET_GPU_TIMEOUT_SECS for slow software devices)")]
    Timeout(Duration),
    #[error("the device `{adapter}` was lost ({reason}); restart the program (with --resume when training)")]
    DeviceLost { adapter: String, reason: String },
    #[error("cannot move data between devices: {0}")]
    Transfer(String),
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
    #[error("{}: {message}", path.display())]
    WeightsFile { path: PathBuf, message: String },
    #[error("{}: the weights do not match {model}:\n  {}", path.display(), problems.join("\n  "))]
    WeightsMismatch {
        path: PathBuf,
        model: String,
        problems: Vec<String>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("batch size {batch} is outside 1..={max}")]
    Batch { batch: usize, max: usize },
    #[error("input holds {got} values, but a batch of {batch} images of {shape} needs {expected}")]
    InputLength {
        got: usize,
        expected: usize,
        batch: usize,
        shape: String,
    },
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Npy { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    #[error("the session holds no weights yet: load or initialise them first")]
    NoWeights,
    #[error("`{plan}` has no two-device {}program: it needs `devices: 2` and every conv and linear layer split into towers (none pinned with `#[device = N]`)", if *training { "training " } else { "" })]
    NoTowers { plan: String, training: bool },
    #[error("the session was opened for inference; open it with `Session::for_training` to train")]
    NotTraining,
    #[error("label {label} of image {image} is outside the model's {classes} classes")]
    Label {
        image: usize,
        label: u32,
        classes: u32,
    },
    #[error("{labels} labels for a batch of {batch} images")]
    LabelCount { labels: usize, batch: usize },
    #[error("`{tensor}` is not kept by this session's program (open it with `Session::inspect` to read every activation)")]
    NotKept { tensor: String },
    #[error("training diverged at step {step}: {what}")]
    NonFinite { step: u32, what: String },
}

/// Result alias of the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;
