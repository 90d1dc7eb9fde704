//! The execution plan: the one data structure the compiler writes and the runtime reads.
//!
//! It sits in its own dependency-free crate so that the compiler need not know wgpu and the
//! runtime need not know the compiler. Every sequence and string is a `Cow<'static, _>`, so the
//! `alexnet!` macro can write a plan as a `const` (borrowed) and a program can build one at run
//! time (owned) — the CLI's `compile FILE` does.
//!
//! Layout conventions: activations are NCHW `f32`; conv weights OIHW, linear weights
//! `[out, in]` (PyTorch's). A parameter whose bytes exceed the target's storage binding limit
//! is split along its first dimension into [`Part`]s, each its own GPU buffer and dispatch.

use std::borrow::Cow;

/// A compiled network: what runs, in which order, on which buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The network's type name, as written in the DSL.
    pub name: Cow<'static, str>,
    /// The doc comment written above the network.
    pub doc: Cow<'static, str>,
    /// Input shape of one image, `[C, H, W]`.
    pub input: [u32; 3],
    /// Devices the network was declared for (1 or 2).
    pub devices: u32,
    /// Largest batch the plan accepts.
    pub max_batch: u32,
    /// Largest batch that fits every binding under [`Limits`]; larger batches run in chunks.
    pub micro_batch: u32,
    /// Activation tensors, each sized per image.
    pub activations: Cow<'static, [Activation]>,
    /// Learnable parameters in declaration order.
    pub params: Cow<'static, [Param]>,
    /// The forward graph in execution order, one entry per computing op.
    pub nodes: Cow<'static, [Node]>,
    /// GPU kernels in dispatch order.
    pub kernels: Cow<'static, [Kernel]>,
    /// Activation that receives the input batch.
    pub input_activation: u32,
    /// Activation holding the logits (the input of a final softmax, or the last output).
    pub logits_activation: u32,
    /// Activation holding probabilities, when the network ends in softmax.
    pub probs_activation: Option<u32>,
    /// Per-layer statistics for `alexnet info`.
    pub layers: Cow<'static, [LayerStats]>,
    /// The device limits this plan was compiled against.
    pub limits: Limits,
    /// The IR dump, one line per node.
    pub ir: Cow<'static, str>,
    /// The IR as a Graphviz DOT graph.
    pub dot: Cow<'static, str>,
}

/// Device limits a plan was checked against at compile time and that the runtime re-checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest storage buffer binding, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest workgroup count in one dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Storage buffers one kernel binds.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Invocations per workgroup the kernels use.
    pub max_compute_invocations_per_workgroup: u32,
}

impl Limits {
    /// WebGPU's default limits, which every conformant adapter meets.
    pub const WEBGPU_DEFAULT: Limits = Limits {
        max_storage_buffer_binding_size: 128 << 20,
        max_compute_workgroups_per_dimension: 65_535,
        max_storage_buffers_per_shader_stage: 8,
        max_compute_invocations_per_workgroup: 256,
    };
}

/// One activation tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    /// Name, from the node that writes it (`conv1.relu`).
    pub name: Cow<'static, str>,
    /// Shape of one image's slice, e.g. `[96, 55, 55]`.
    pub shape: Cow<'static, [u32]>,
}

impl Activation {
    /// Elements per image.
    pub fn elems_per_image(&self) -> u64 {
        self.shape.iter().map(|&d| u64::from(d)).product()
    }
}

/// Memory layout of a parameter, named as PyTorch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Conv weight `[out, in/groups, kh, kw]`.
    Oihw,
    /// Linear weight `[out, in]`.
    Oi,
    /// Bias `[out]`.
    O,
}

impl Layout {
    /// The layout's conventional name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Oihw => "OIHW",
            Layout::Oi => "OI",
            Layout::O => "O",
        }
    }
}

/// How a parameter is initialised (the paper's scheme is the default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Zero-mean normal with this standard deviation.
    Normal { std: f32 },
    /// Every element equal to this value.
    Constant { value: f32 },
}

/// A learnable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Full name, e.g. `conv1.weight` or `features.0.weight`.
    pub name: Cow<'static, str>,
    /// The layer that owns it.
    pub layer: Cow<'static, str>,
    /// Shape in `layout` order.
    pub shape: Cow<'static, [u32]>,
    /// Memory layout.
    pub layout: Layout,
    /// Initialisation scheme.
    pub init: Init,
    /// Row ranges along the first dimension; each part is its own GPU buffer.
    pub parts: Cow<'static, [Part]>,
}

impl Param {
    /// Total number of elements.
    pub fn elems(&self) -> u64 {
        self.shape.iter().map(|&d| u64::from(d)).product()
    }

    /// Elements in one row (one index of the first dimension).
    pub fn row_elems(&self) -> u64 {
        self.shape[1..].iter().map(|&d| u64::from(d)).product()
    }
}

/// A range of rows of a parameter's first dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// First row.
    pub start: u32,
    /// Number of rows.
    pub rows: u32,
}

/// One computing op of the forward graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Source layer name.
    pub layer: Cow<'static, str>,
    /// What it computes.
    pub op: NodeOp,
    /// Activation read.
    pub input: u32,
    /// Activation written.
    pub output: u32,
    /// Device that runs it.
    pub device: u32,
}

/// A computing op with every shape resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NodeOp {
    /// 2-D convolution, NCHW input, OIHW weight.
    Conv(ConvNode),
    /// `max(x, 0)`.
    Relu,
    /// Local response normalisation across channels, with the paper's raw alpha:
    /// `b = a / (k + alpha * sum(a^2))^beta` over `size` neighbouring channels.
    Lrn(LrnNode),
    /// Max pooling; padded positions never win.
    MaxPool(PoolNode),
    /// `y = W x + b` over the flattened input.
    Linear(LinearNode),
    /// Softmax over the features of each image.
    Softmax,
    /// Inverted dropout, in place (`input == output`): at training each element is kept with
    /// probability `1 - p` and scaled by `1 / (1 - p)`; at inference it is the identity and
    /// runs no kernel. The mask is [`dropout_keep`] of the step's seed, so backward recomputes
    /// it instead of storing it.
    Dropout(DropoutNode),
}

/// A resolved dropout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutNode {
    /// Probability of dropping an element.
    pub p: f32,
    /// Which dropout of the network this is (0, 1, ...), so that each draws its own mask.
    pub stream: u32,
    /// Elements per image.
    pub elems: u32,
}

/// The counter-based hash behind dropout masks (Wellons' `lowbias32`), the same in WGSL.
pub const fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The integer threshold of a dropout probability: an element is kept when the top 24 bits
/// of its hash are at least this.
pub fn dropout_threshold(p: f32) -> u32 {
    (f64::from(p) * f64::from(1u32 << 24)).ceil() as u32
}

/// Whether dropout stream `stream` keeps element `index` (image-major over the whole batch)
/// at training step `step` of a run seeded with `seed`. A pure function of its arguments, so
/// a run is reproducible and resumable, and backward recomputes the forward mask.
pub fn dropout_keep(seed: u32, step: u32, stream: u32, index: u32, p: f32) -> bool {
    let h = mix32(index ^ mix32(stream ^ mix32(step ^ mix32(seed))));
    (h >> 8) >= dropout_threshold(p)
}

/// The uniform block every kernel binds. `batch` is the images in this pass; the rest matter
/// only when training.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Uniforms {
    pub batch: u32,
    /// Optimiser step, for dropout masks.
    pub step: u32,
    /// Run seed, for dropout masks.
    pub seed: u32,
    /// Index of this pass's first image in the whole batch (micro-batches).
    pub image0: u32,
    /// 1 when weight gradients add to those of an earlier micro-batch, else 0.
    pub accumulate: u32,
    /// Learning rate ε.
    pub lr: f32,
    /// Momentum (the paper's 0.9).
    pub momentum: f32,
    /// Weight decay (the paper's 0.0005).
    pub decay: f32,
    /// `1 / images in the whole batch`: the loss is the batch mean.
    pub grad_scale: f32,
}

impl Uniforms {
    /// Bytes of the uniform buffer.
    pub const SIZE: usize = 48;

    /// The block as WGSL lays it out (`struct Params` in every kernel).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let words = [
            self.batch,
            self.step,
            self.seed,
            self.image0,
            self.accumulate,
            self.lr.to_bits(),
            self.momentum.to_bits(),
            self.decay.to_bits(),
            self.grad_scale.to_bits(),
            0,
            0,
            0,
        ];
        let mut out = [0u8; Self::SIZE];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// A resolved convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvNode {
    pub in_channels: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub out_channels: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    pub groups: u32,
    /// Index of the weight in [`Plan::params`].
    pub weight: u32,
    /// Index of the bias in [`Plan::params`].
    pub bias: Option<u32>,
}

/// A resolved local response normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnNode {
    pub channels: u32,
    pub h: u32,
    pub w: u32,
    /// Channels summed over, centred on the output channel.
    pub size: u32,
    /// The paper's alpha, applied to the raw sum (ONNX's alpha is `alpha * size`).
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

/// A resolved max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolNode {
    pub channels: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
}

/// A resolved fully connected layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearNode {
    pub in_features: u32,
    pub out_features: u32,
    pub weight: u32,
    pub bias: Option<u32>,
}

/// A generated compute shader and the buffers it binds.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Unique name, from the layer (`conv1_fwd`, `fc6_fwd_part1`).
    pub name: Cow<'static, str>,
    /// Source layer.
    pub layer: Cow<'static, str>,
    /// Index of the node it computes in [`Plan::nodes`].
    pub node: u32,
    /// WGSL source, validated by naga at build time.
    pub wgsl: Cow<'static, str>,
    /// Entry point in `wgsl`.
    pub entry_point: Cow<'static, str>,
    /// Invocations per workgroup (1-D).
    pub workgroup_size: u32,
    /// Invocations per image; a per-invocation dispatch covers `batch * threads_per_image`, a
    /// fixed one `threads_per_image` in all.
    pub threads_per_image: u64,
    /// How the workgroup count follows from the batch size.
    pub dispatch: Dispatch,
    /// Bindings of group 0, in binding-index order.
    pub bindings: Cow<'static, [Binding]>,
    /// When the kernel runs.
    pub role: Role,
}

/// What a gradient is taken with respect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrt {
    Input,
    Weight,
    Bias,
}

/// When a kernel runs. Inference runs only `Forward` kernels; a training step runs every
/// kernel in plan order: `Forward` with `Dropout` interleaved, then `Loss`, `Backward` and
/// last `Update` (an update overwrites weights that backward reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The forward pass.
    Forward,
    /// Dropout masks, only when training.
    Dropout,
    /// Softmax cross-entropy: per-image loss and the gradient of the logits.
    Loss,
    /// The gradient of the node's input or of one of its parameters.
    Backward(Wrt),
    /// The optimiser step of one parameter part.
    Update,
}

/// How many workgroups a kernel's dispatch needs for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// `ceil(batch * threads_per_image / workgroup_size)` workgroups.
    PerInvocation,
    /// Output tiles: `m_tiles` channel tiles times `ceil(batch * pixels / tile_pixels)`
    /// pixel tiles, one workgroup each.
    Tiles { m_tiles: u32, pixels: u64, tile_pixels: u32 },
    /// `ceil(threads_per_image / workgroup_size)` workgroups whatever the batch (kernels over
    /// parameters: weight gradients, optimiser updates).
    Fixed,
}

impl Kernel {
    /// Workgroups of one dispatch over `batch` images.
    pub fn workgroups(&self, batch: u64) -> u64 {
        match self.dispatch {
            Dispatch::PerInvocation => (self.threads_per_image * batch).div_ceil(u64::from(self.workgroup_size)),
            Dispatch::Tiles { m_tiles, pixels, tile_pixels } => u64::from(m_tiles) * (batch * pixels).div_ceil(u64::from(tile_pixels)),
            Dispatch::Fixed => self.threads_per_image.div_ceil(u64::from(self.workgroup_size)),
        }
    }
}

/// What one binding of a kernel refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The uniform block `{ batch: u32 }`.
    Uniform,
    /// An activation, read-only or written.
    Activation { index: u32, write: bool },
    /// One part of a parameter (read-only).
    Param { index: u32, part: u32 },
    /// One part of a parameter, updated by the optimiser.
    ParamMut { index: u32, part: u32 },
    /// The gradient of an activation.
    Grad { index: u32, write: bool },
    /// The gradient of one part of a parameter.
    ParamGrad { index: u32, part: u32, write: bool },
    /// The momentum of one part of a parameter (read and written).
    Momentum { index: u32, part: u32 },
    /// The batch's labels, one `u32` per image.
    Labels,
    /// The per-image loss, one `f32` per image.
    Loss,
}

/// Statistics of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    pub name: Cow<'static, str>,
    /// Output shape of one image.
    pub output: Cow<'static, [u32]>,
    /// Learnable parameters.
    pub params: u64,
    /// Multiply-adds per image in the forward pass.
    pub macs: u64,
    /// Bytes of activations the layer writes per image.
    pub activation_bytes: u64,
}

impl Plan {
    /// Total learnable parameters.
    pub fn param_count(&self) -> u64 {
        self.params.iter().map(Param::elems).sum()
    }

    /// Total forward multiply-adds per image.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Number of classes (features of the logits).
    pub fn classes(&self) -> u32 {
        self.activations[self.logits_activation as usize].elems_per_image() as u32
    }

    /// Elements of one input image.
    pub fn input_elems(&self) -> usize {
        self.input.iter().map(|&d| d as usize).product()
    }

    /// Kernels of one role, in dispatch order.
    pub fn kernels_of(&self, role: Role) -> impl Iterator<Item = &Kernel> {
        self.kernels.iter().filter(move |k| k.role == role)
    }

    /// Looks a parameter up by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}
