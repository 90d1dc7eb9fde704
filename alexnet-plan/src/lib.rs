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
    /// Every GPU kernel of the plan; the programs say which run, in which order.
    pub kernels: Cow<'static, [Kernel]>,
    /// How much of each layer's chain inference fuses: as declared (`fusion:`), or in the
    /// program [`Plan::for_target`] chose.
    pub fusion: Fusion,
    /// The forward pass with fused kernels and a memory plan that reuses buffers, as a
    /// session on a [`Target::Gpu`] adapter runs it.
    pub inference: Program,
    /// The forward pass for other kinds of adapter where it differs from [`Plan::inference`]
    /// (other kernels, its own memory plan); [`Plan::for_target`] swaps it in.
    pub inference_variants: Cow<'static, [ProgramVariant]>,
    /// A training step (forward, loss, backward, update) with its own memory plan.
    pub training: Program,
    /// The forward pass with one kernel per op and every activation in its own buffer, so each
    /// can be read back after a run (tests, debugging, `alexnet selftest`-style checks).
    pub inspect: Program,
    /// The forward pass split over two devices, for a `devices: 2` plan whose layers all halve
    /// into towers (`None` otherwise): the inference program's kernels, each weight part's on
    /// the device that holds it, with the exchanges of [`Plan::exchanges`] between them.
    pub towers: Option<Towers>,
    /// A training step split over two devices the same way (`None` where [`Plan::towers`] is,
    /// or where the backward pass cannot be split): forward as in [`Plan::towers`], the loss
    /// on device 0, each weight part's gradients and update on its device, and the exchanges
    /// the backward pass needs between them.
    pub tower_training: Option<Towers>,
    /// Activation that receives the input batch.
    pub input_activation: u32,
    /// Activation holding the logits (the input of a final softmax, or the last output).
    pub logits_activation: u32,
    /// Activation holding probabilities, when the network ends in softmax.
    pub probs_activation: Option<u32>,
    /// Per-layer statistics for `alexnet info`.
    pub layers: Cow<'static, [LayerStats]>,
    /// What a `devices: 2` plan's towers exchange in the forward pass (empty on one device);
    /// the backward pass returns the gradient of each in the opposite direction.
    pub exchanges: Cow<'static, [Exchange]>,
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
    /// Floating-point operations one dispatch may do: a budget for the watchdogs of desktop
    /// GPUs (Windows resets a GPU whose work runs over 2 s; macOS and Linux desktop drivers
    /// have similar timeouts). The compiler cuts the micro-batch until every dispatch fits.
    pub max_dispatch_flops: u64,
}

impl Limits {
    /// WebGPU's default limits, which every conformant adapter meets, and a dispatch budget of
    /// [`Limits::DEFAULT_DISPATCH_FLOPS`].
    pub const WEBGPU_DEFAULT: Limits = Limits {
        max_storage_buffer_binding_size: 128 << 20,
        max_compute_workgroups_per_dimension: 65_535,
        max_storage_buffers_per_shader_stage: 8,
        max_compute_invocations_per_workgroup: 256,
        max_dispatch_flops: Self::DEFAULT_DISPATCH_FLOPS,
    };

    /// 32 GFLOP: 0.32 s at 100 GFLOP/s (what a laptop's integrated GPU sustains on kernels
    /// like these), a sixth of a 2 s watchdog.
    pub const DEFAULT_DISPATCH_FLOPS: u64 = 32_000_000_000;
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

impl NodeOp {
    /// The op's name in kernel names, dumps and reports (`conv`, `maxpool`).
    pub fn name(&self) -> &'static str {
        match self {
            NodeOp::Conv(_) => "conv",
            NodeOp::Relu => "relu",
            NodeOp::Lrn(_) => "lrn",
            NodeOp::MaxPool(_) => "maxpool",
            NodeOp::Linear(_) => "linear",
            NodeOp::Softmax => "softmax",
            NodeOp::Dropout(_) => "dropout",
        }
    }
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
    /// 1 when dropout masks apply (a training step with dropout on), 0 otherwise: a kernel
    /// with dropout in its epilogue runs in training and at inference, like PyTorch's
    /// train and eval modes.
    pub dropout: u32,
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
            self.dropout,
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
    /// Index of the node it computes in [`Plan::nodes`] (for a fused kernel, the first).
    pub node: u32,
    /// Every node of [`Plan::nodes`] it computes, in order: one, or a fused chain.
    pub covers: Cow<'static, [u32]>,
    /// How it computes them; every tile and workgroup constant of its WGSL derives from this.
    pub algo: Algo,
    /// Arithmetic and memory traffic of one dispatch.
    pub cost: Cost,
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
    /// The same kernel compiled for other kinds of adapter (same bindings, same results up to
    /// rounding); the fields above are its form for [`Target::Gpu`]. See [`Plan::for_target`].
    pub variants: Cow<'static, [Variant]>,
}

/// The kind of adapter a kernel variant is tuned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Discrete and integrated GPUs: workgroup-memory tiles, many workgroups.
    Gpu,
    /// Software adapters on the CPU (lavapipe, llvmpipe, WARP, SwiftShader): register blocks
    /// read straight from the caches, no workgroup memory, no barriers.
    Cpu,
    /// Software adapters whose subgroups are exactly [`Target::SUBGROUP_LANES`] SIMD lanes
    /// (lavapipe on AVX2, and on AVX-512 at its default 256 bits) and which have 64-bit
    /// integers: [`Target::Cpu`]'s kernels, but the GEMMs share the columns of their operand
    /// B across a subgroup ([`Staging::Subgroup`]), and every kernel reads its `vec4` arrays
    /// as pairs of 64-bit words ([`Target::wide_loads`]). Needs subgroup operations and
    /// 64-bit integers; kernels without such a form run their `Cpu` form.
    CpuSubgroup,
}

impl Target {
    /// Every target, in the order variants are emitted.
    pub const ALL: [Target; 3] = [Target::Gpu, Target::Cpu, Target::CpuSubgroup];

    /// The subgroup size the [`Target::CpuSubgroup`] kernels are written for.
    pub const SUBGROUP_LANES: u32 = 8;

    /// `gpu`, `cpu` or `cpu-sg8`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Target::Gpu => "gpu",
            Target::Cpu => "cpu",
            Target::CpuSubgroup => "cpu-sg8",
        }
    }

    /// Parses `gpu`, `cpu` or `cpu-sg8` (any case).
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// The target whose forms a kernel runs when it has none of this target's own: `Cpu`
    /// for `CpuSubgroup` (only its GEMMs differ); the kernel's primary (GPU) form otherwise.
    pub const fn fallback(&self) -> Option<Target> {
        match self {
            Target::CpuSubgroup => Some(Target::Cpu),
            Target::Gpu | Target::Cpu => None,
        }
    }

    /// Whether this target's kernels read their `vec4<f32>` arrays as `vec2<u64>`s (and so
    /// need 64-bit integers): a software adapter that loads a buffer lane by lane pays per
    /// component, so a 16-byte load takes two steps instead of four.
    pub const fn wide_loads(&self) -> bool {
        matches!(self, Target::CpuSubgroup)
    }

    /// The subgroup size this target's kernels need the adapter to have (min = max), if any.
    pub const fn subgroup_lanes(&self) -> Option<u32> {
        match self {
            Target::CpuSubgroup => Some(Target::SUBGROUP_LANES),
            Target::Gpu | Target::Cpu => None,
        }
    }
}

/// Another compiled form of a kernel: what differs between targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub target: Target,
    pub algo: Algo,
    pub cost: Cost,
    pub wgsl: Cow<'static, str>,
    pub workgroup_size: u32,
    pub threads_per_image: u64,
    pub dispatch: Dispatch,
}

impl Variant {
    /// A variant as scheduling chooses it: its algorithm and dispatch shape; the cost and the
    /// WGSL are filled in later (`algo::cost`, codegen), as for the kernel's own form.
    pub fn scheduled(
        target: Target,
        algo: Algo,
        workgroup_size: u32,
        threads_per_image: u64,
        dispatch: Dispatch,
    ) -> Variant {
        Variant {
            target,
            algo,
            cost: Cost::default(),
            wgsl: Cow::Borrowed(""),
            workgroup_size,
            threads_per_image,
            dispatch,
        }
    }
}

/// Where a GEMM's operands wait between loads and multiply-adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    /// The workgroup loads `k`-deep slices of both operands into workgroup memory, then every
    /// invocation reads them from there (two barriers per slice).
    Workgroup,
    /// Every invocation loads its own operands from the buffers (the caches do the sharing);
    /// no workgroup memory, no barriers.
    Registers,
    /// As `Registers`, but the invocations of a subgroup of `lanes` share the columns of B:
    /// each loads `rn / lanes` of the block's `rn` columns and receives the others by
    /// `subgroupBroadcast`. On a software adapter, which gathers every load lane by lane, a
    /// broadcast is a register shuffle: B's loads per multiply-add fall `lanes`-fold. The
    /// lanes of a subgroup hold consecutive `rm`-row blocks of the same `rn` columns, so
    /// `m / rm` is a multiple of `lanes`.
    Subgroup { lanes: u32 },
}

/// The tile of a GEMM kernel: a workgroup computes `m` rows × `n` columns of the output; each
/// invocation holds an `rm × rn` block of it in registers, so a workgroup has
/// `(m / rm) * (n / rn)` invocations. With [`Staging::Workgroup`] the reduction steps `k` at
/// a time through workgroup memory; with [`Staging::Registers`] `k` is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub rm: u32,
    pub rn: u32,
    pub staging: Staging,
}

impl GemmTile {
    /// A workgroup-memory tile with 4×4 register blocks.
    pub const fn shared(m: u32, n: u32, k: u32) -> GemmTile {
        GemmTile {
            m,
            n,
            k,
            rm: 4,
            rn: 4,
            staging: Staging::Workgroup,
        }
    }

    /// A registers-only tile of `rm × rn` blocks.
    pub const fn registers(m: u32, n: u32, rm: u32, rn: u32) -> GemmTile {
        GemmTile {
            m,
            n,
            k: 1,
            rm,
            rn,
            staging: Staging::Registers,
        }
    }

    /// A registers-only tile of `rm × rn` blocks whose `rn` columns a subgroup of `lanes`
    /// invocations shares ([`Staging::Subgroup`]).
    pub const fn subgroup(m: u32, n: u32, rm: u32, rn: u32, lanes: u32) -> GemmTile {
        GemmTile {
            m,
            n,
            k: 1,
            rm,
            rn,
            staging: Staging::Subgroup { lanes },
        }
    }

    /// Invocations sharing B's columns: `lanes` for a subgroup tile, else 1.
    pub const fn lanes(&self) -> u32 {
        match self.staging {
            Staging::Subgroup { lanes } => lanes,
            Staging::Workgroup | Staging::Registers => 1,
        }
    }

    /// Invocations of one workgroup.
    pub const fn threads(&self) -> u32 {
        (self.m / self.rm) * (self.n / self.rn)
    }
}

/// How a kernel computes its nodes. Chosen in one place (the compiler's `schedule::algo`);
/// codegen derives every tile size and workgroup size from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// One invocation per element written, each gathering what it reads.
    PerElement { threads: u32 },
    /// One invocation per four consecutive elements, read and written as `vec4`s (the
    /// optimiser's update of a parameter part whose size is a multiple of 4): a software
    /// adapter loads 16 bytes per lane where it gathered 4 floats one by one.
    Vec4 { threads: u32 },
    /// One workgroup per output row (an output feature of an image), its invocations
    /// striding over the reduction and summing as a tree.
    RowReduce { threads: u32 },
    /// One workgroup per image (softmax, and a linear layer fused with its softmax).
    PerImage { threads: u32 },
    /// One invocation per `side × side` pixels of an image, walking their channels in order
    /// with a sliding window (an LRN forward, each input loaded once, `side` 1; the fused
    /// backward of ReLU, LRN and max-pool: each channel's pool gradient and LRN denominator is
    /// computed once and reused by its LRN neighbours, `side` a multiple of the pool's stride,
    /// whose tile's pixels share the loads of the patch under their windows).
    ChannelScan { threads: u32, side: u32 },
    /// One invocation per channel and tile of a max-pool's input (the pool's stride squared):
    /// the fused backward of ReLU and max-pool loads the patch under the windows that can
    /// cover the tile once and shares it between the tile's pixels.
    PoolTile { threads: u32 },
    /// A GEMM (conv as implicit GEMM over image patches, linear layers over the batch, and
    /// their gradients), tiled as the tile says.
    Gemm(GemmTile),
    /// The second stage of a weight gradient whose reduction was split into slices: one
    /// invocation per `width` consecutive elements (1, or 4 read and written as `vec4`s) adds
    /// the slices' partial gradients ([`Tensor::Partials`]) in slice order and writes, or
    /// adds to, the gradient.
    SliceSum { threads: u32, width: u32 },
    /// A fused conv block: each workgroup computes a GEMM tile over `rows × cols` conv outputs
    /// of one image and `tile.m` channels, halos included, keeps it in workgroup memory, and
    /// applies ReLU, LRN and max-pool there before writing `out_rows × out_cols` outputs of
    /// `channels` channels (the rest of the tile is the LRN's channel halo).
    ConvBlock {
        tile: GemmTile,
        rows: u32,
        cols: u32,
        out_rows: u32,
        out_cols: u32,
        channels: u32,
    },
}

impl Algo {
    /// Invocations per workgroup.
    pub const fn threads(&self) -> u32 {
        match *self {
            Algo::PerElement { threads }
            | Algo::Vec4 { threads }
            | Algo::RowReduce { threads }
            | Algo::PerImage { threads }
            | Algo::ChannelScan { threads, .. }
            | Algo::PoolTile { threads }
            | Algo::SliceSum { threads, .. } => threads,
            Algo::Gemm(tile) | Algo::ConvBlock { tile, .. } => tile.threads(),
        }
    }

    /// A short description for reports: `tiled-gemm 64x64x16`.
    pub fn describe(&self) -> String {
        match *self {
            Algo::PerElement { threads } => format!("per-element wg{threads}"),
            Algo::Vec4 { threads } => format!("per-vec4 wg{threads}"),
            Algo::RowReduce { threads } => format!("row-reduce wg{threads}"),
            Algo::PerImage { threads } => format!("per-image wg{threads}"),
            Algo::ChannelScan { threads, side: 1 } => format!("channel-scan wg{threads}"),
            Algo::ChannelScan { threads, side } => {
                format!("channel-scan wg{threads} tile {side}x{side}")
            }
            Algo::PoolTile { threads } => format!("pool-tile wg{threads}"),
            Algo::SliceSum { threads, width } => {
                format!("slice-sum wg{threads} width {width}")
            }
            Algo::Gemm(t) => match t.staging {
                Staging::Workgroup => format!(
                    "gemm {}x{}x{} block {}x{} workgroup-memory",
                    t.m, t.n, t.k, t.rm, t.rn
                ),
                Staging::Registers => {
                    format!("gemm {}x{} block {}x{} registers", t.m, t.n, t.rm, t.rn)
                }
                Staging::Subgroup { lanes } => format!(
                    "gemm {}x{} block {}x{} registers, B shared by {lanes} lanes",
                    t.m, t.n, t.rm, t.rn
                ),
            },
            Algo::ConvBlock {
                tile: t,
                rows,
                cols,
                out_rows,
                out_cols,
                channels,
            } => {
                format!(
                    "conv-block {}x{}x{} patch {rows}x{cols} -> {channels}ch {out_rows}x{out_cols}",
                    t.m, t.n, t.k
                )
            }
        }
    }
}

/// Bytes (or operations) that grow with the batch: `per_image * batch + fixed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    pub per_image: u64,
    pub fixed: u64,
}

impl Extent {
    /// An extent of `bytes` per image.
    pub const fn per_image(bytes: u64) -> Extent {
        Extent {
            per_image: bytes,
            fixed: 0,
        }
    }

    /// An extent of `bytes` whatever the batch.
    pub const fn fixed(bytes: u64) -> Extent {
        Extent {
            per_image: 0,
            fixed: bytes,
        }
    }

    /// The value at `batch` images (saturating: absurd declarations reach the checks that
    /// refuse them instead of overflowing).
    pub const fn at(&self, batch: u64) -> u64 {
        self.per_image
            .saturating_mul(batch)
            .saturating_add(self.fixed)
    }

    /// Component-wise sum.
    pub const fn plus(self, other: Extent) -> Extent {
        Extent {
            per_image: self.per_image + other.per_image,
            fixed: self.fixed + other.fixed,
        }
    }

    /// Component-wise maximum: large enough for either at every batch.
    pub fn max(self, other: Extent) -> Extent {
        Extent {
            per_image: self.per_image.max(other.per_image),
            fixed: self.fixed.max(other.fixed),
        }
    }
}

/// Arithmetic and memory traffic of one kernel dispatch, as functions of the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations (a multiply-add counts two), halo recomputation included.
    pub flops: Extent,
    /// Bytes of the tensors it binds for reading (each counted once).
    pub read: Extent,
    /// Bytes of the tensors it writes.
    pub written: Extent,
}

/// A tensor that lives on the GPU, named by what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tensor {
    /// Activation `index` of [`Plan::activations`].
    Activation(u32),
    /// The gradient of activation `index`.
    Grad(u32),
    /// One part of a parameter.
    Param { index: u32, part: u32 },
    /// The gradient of one part of a parameter.
    ParamGrad { index: u32, part: u32 },
    /// The momentum of one part of a parameter.
    Momentum { index: u32, part: u32 },
    /// The batch's labels, one `u32` per image.
    Labels,
    /// The per-image loss, one `f32` per image.
    Loss,
    /// Scratch of a weight gradient whose reduction over the batch is split into `slices`
    /// pieces (`schedule::algo::weight_gradient_slices`): `slices` partial gradients of one
    /// part of parameter `index`, one after another. The GEMM writes them; a
    /// [`Algo::SliceSum`] kernel adds them in slice order into the gradient, so the sum is
    /// deterministic without atomics. Lives only between those two kernels.
    Partials { index: u32, part: u32, slices: u32 },
}

impl Tensor {
    /// Whether the tensor persists across steps (parameters, their gradients, momentum): such
    /// tensors get buffers of their own and are never aliased with anything.
    pub fn is_state(&self) -> bool {
        match self {
            Tensor::Param { .. } | Tensor::ParamGrad { .. } | Tensor::Momentum { .. } => true,
            Tensor::Activation(_)
            | Tensor::Grad(_)
            | Tensor::Labels
            | Tensor::Loss
            | Tensor::Partials { .. } => false,
        }
    }

    /// Whether the tensor is a kernel's scratch, read only by the kernel right after the one
    /// that wrote it (partial gradients): nothing outside the plan reads or compares it.
    pub fn is_scratch(&self) -> bool {
        matches!(self, Tensor::Partials { .. })
    }
}

/// A GPU buffer of a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// A label for debuggers: the tensors it holds.
    pub name: Cow<'static, str>,
    /// The device that owns it (0 or 1).
    pub device: u32,
    /// Bytes, as a function of the session's batch capacity.
    pub size: Extent,
}

/// Where a tensor lives in a program: a byte range of one of its buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub tensor: Tensor,
    /// Index in [`Program::buffers`].
    pub buffer: u32,
    /// Offset in the buffer.
    pub offset: Extent,
    /// Bytes of the tensor.
    pub size: Extent,
}

/// One step of a program.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Runs kernel `index` of [`Plan::kernels`].
    Dispatch(u32),
    /// This device's part in exchange `index` of [`Towers::exchanges`] (two-device programs
    /// only): it sends or receives a range of `tensor`.
    Exchange { index: u32, tensor: Tensor },
}

/// A plan's two towers, one program per device: the forward pass ([`Plan::towers`]) or a
/// training step ([`Plan::tower_training`]).
///
/// Each device keeps every activation whole in its own memory but computes only its tower's
/// output channels of each conv and linear layer (the weight parts it holds); channel-wise ops
/// run over the whole tensor on each device where their output is needed, and are correct for
/// the channels that device computed. The devices meet at the exchanges, in order: every
/// [`Step::Exchange`] appears in both programs, and each runs its steps up to the next one
/// before the transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct Towers {
    /// Device 0's program, then device 1's; every buffer of program `d` is on device `d`.
    pub programs: Cow<'static, [Program]>,
    pub exchanges: Cow<'static, [TowerExchange]>,
}

/// One transfer between the towers: the same byte range of every image's slice of `tensor`,
/// from its buffer on `from` to its buffer on `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TowerExchange {
    pub tensor: Tensor,
    pub from: u32,
    pub to: u32,
    /// Where the range starts in an image's slice, in bytes.
    pub offset: u64,
    /// Bytes per image.
    pub bytes: u64,
}

impl Towers {
    /// Bytes per image the exchanges move to `device`.
    pub fn received_per_image(&self, device: u32) -> u64 {
        self.exchanges
            .iter()
            .filter(|e| e.to == device)
            .map(|e| e.bytes)
            .sum()
    }
}

/// An ordered list of steps and the memory they run in.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub steps: Cow<'static, [Step]>,
    pub buffers: Cow<'static, [Buffer]>,
    /// Every tensor a step touches, sorted by tensor.
    pub placements: Cow<'static, [Placement]>,
}

impl Program {
    /// Where `tensor` lives, if the program uses it.
    pub fn placement(&self, tensor: Tensor) -> Option<&Placement> {
        self.placements
            .binary_search_by(|p| p.tensor.cmp(&tensor))
            .ok()
            .map(|i| &self.placements[i])
    }

    /// Bytes of every buffer of `device` at `batch` images: what a session allocates.
    pub fn memory(&self, device: u32, batch: u64) -> u64 {
        self.buffers
            .iter()
            .filter(|b| b.device == device)
            .map(|b| b.size.at(batch))
            .sum()
    }

    /// Kernels dispatched, in order.
    pub fn dispatches(&self) -> impl Iterator<Item = u32> + '_ {
        self.steps.iter().filter_map(|s| match *s {
            Step::Dispatch(k) => Some(k),
            Step::Exchange { .. } => None,
        })
    }
}

/// A program compiled for another kind of adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramVariant {
    pub target: Target,
    /// The fusion its kernels were grouped with.
    pub fusion: Fusion,
    pub program: Program,
}

/// How much inference fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// One kernel per op.
    Off,
    /// ReLU in conv and linear epilogues and softmax with its linear layer: nothing is
    /// recomputed. LRN and max-pool stay kernels of their own.
    Epilogue,
    /// One kernel per layer block: conv + ReLU + LRN + max-pool in one kernel that recomputes
    /// the halos its tiles share, plus the epilogue fusions.
    Blocks,
}

impl Fusion {
    /// The DSL's name of the setting.
    pub fn as_str(self) -> &'static str {
        match self {
            Fusion::Off => "off",
            Fusion::Epilogue => "epilogue",
            Fusion::Blocks => "on",
        }
    }
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
    Tiles {
        m_tiles: u32,
        pixels: u64,
        tile_pixels: u32,
    },
    /// `batch * workgroups` workgroups: a fixed number per image.
    PerImage { workgroups: u32 },
    /// `ceil(threads_per_image / workgroup_size)` workgroups whatever the batch (kernels over
    /// parameters: weight gradients, optimiser updates).
    Fixed,
}

impl Kernel {
    /// This kernel in its form for `target`.
    pub fn for_target(&self, target: Target) -> Kernel {
        match self.variants.iter().find(|v| v.target == target) {
            None => match target.fallback() {
                Some(t) => self.for_target(t),
                None => self.clone(),
            },
            Some(v) => Kernel {
                algo: v.algo,
                cost: v.cost,
                wgsl: v.wgsl.clone(),
                workgroup_size: v.workgroup_size,
                threads_per_image: v.threads_per_image,
                dispatch: v.dispatch,
                variants: Cow::Borrowed(&[]),
                ..self.clone()
            },
        }
    }

    /// Every compiled form of the kernel as (file name, WGSL): `NAME.wgsl` for its GPU form,
    /// `NAME.TARGET.wgsl` for each variant (`conv1_fwd.cpu.wgsl`).
    pub fn sources(&self) -> Vec<(String, &str)> {
        let mut out = vec![(format!("{}.wgsl", self.name), &*self.wgsl)];
        out.extend(self.variants.iter().map(|v| {
            (
                format!("{}.{}.wgsl", self.name, v.target.as_str()),
                &*v.wgsl,
            )
        }));
        out
    }

    /// How many slices of a split weight gradient the kernel handles: those of the partial
    /// gradients ([`Tensor::Partials`]) it writes (the GEMM) or adds up (the slice sum), else 1.
    pub fn slices(&self) -> u32 {
        self.bindings
            .iter()
            .find_map(|b| match *b {
                Binding::Partials { slices, .. } => Some(slices),
                _ => None,
            })
            .unwrap_or(1)
    }

    /// Workgroups of one dispatch over `batch` images.
    pub fn workgroups(&self, batch: u64) -> u64 {
        match self.dispatch {
            Dispatch::PerInvocation => {
                (self.threads_per_image * batch).div_ceil(u64::from(self.workgroup_size))
            }
            Dispatch::Tiles {
                m_tiles,
                pixels,
                tile_pixels,
            } => u64::from(m_tiles) * (batch * pixels).div_ceil(u64::from(tile_pixels)),
            Dispatch::PerImage { workgroups } => u64::from(workgroups) * batch,
            Dispatch::Fixed => self
                .threads_per_image
                .div_ceil(u64::from(self.workgroup_size)),
        }
    }
}

impl Binding {
    /// The tensor a binding refers to (none for the uniform block).
    pub fn tensor(&self) -> Option<Tensor> {
        match *self {
            Binding::Uniform => None,
            Binding::Activation { index, .. } => Some(Tensor::Activation(index)),
            Binding::Param { index, part } | Binding::ParamMut { index, part } => {
                Some(Tensor::Param { index, part })
            }
            Binding::Grad { index, .. } => Some(Tensor::Grad(index)),
            Binding::ParamGrad { index, part, .. } => Some(Tensor::ParamGrad { index, part }),
            Binding::Momentum { index, part } => Some(Tensor::Momentum { index, part }),
            Binding::Labels => Some(Tensor::Labels),
            Binding::Loss => Some(Tensor::Loss),
            Binding::Partials {
                index,
                part,
                slices,
                ..
            } => Some(Tensor::Partials {
                index,
                part,
                slices,
            }),
        }
    }

    /// The parameter part (parameter index, part) the binding refers to: a part's weights,
    /// gradient, momentum or partial gradients.
    pub fn param_part(&self) -> Option<(u32, u32)> {
        match *self {
            Binding::Param { index, part }
            | Binding::ParamMut { index, part }
            | Binding::ParamGrad { index, part, .. }
            | Binding::Momentum { index, part }
            | Binding::Partials { index, part, .. } => Some((index, part)),
            Binding::Uniform
            | Binding::Activation { .. }
            | Binding::Grad { .. }
            | Binding::Labels
            | Binding::Loss => None,
        }
    }

    /// Whether the kernel reads what the binding holds on entry: read-only bindings, and the
    /// optimiser's read-modify-write of weights and momentum.
    pub fn reads(&self) -> bool {
        !self.writes() || matches!(self, Binding::ParamMut { .. } | Binding::Momentum { .. })
    }

    /// Whether the kernel writes through it.
    pub fn writes(&self) -> bool {
        match *self {
            Binding::Activation { write, .. }
            | Binding::Grad { write, .. }
            | Binding::ParamGrad { write, .. }
            | Binding::Partials { write, .. } => write,
            Binding::ParamMut { .. } | Binding::Momentum { .. } | Binding::Loss => true,
            Binding::Uniform | Binding::Param { .. } | Binding::Labels => false,
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
    /// The partial gradients of a split weight-gradient reduction ([`Tensor::Partials`]).
    Partials {
        index: u32,
        part: u32,
        slices: u32,
        write: bool,
    },
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
    /// Where its parameters live (its conv or linear op's placement; for a layer without
    /// parameters, its last op's).
    pub place: Place,
    /// Of `activation_bytes`, what each device writes when the towers run on two devices.
    pub activation_bytes_on: [u64; 2],
}

/// Where a layer's output and parameters live on a `devices: 2` plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// All of it on one device.
    Device(u32),
    /// All of it on every device (the input image, uploaded to each).
    Both,
    /// The paper's two towers: device `d` holds output channels (or features)
    /// `[d·C/2, (d+1)·C/2)` and the weight rows (and bias entries) that compute them.
    Towers,
}

impl Place {
    /// How the IR dump and DOT graph write it: `dev0`, `both`, `towers`.
    pub fn label(self) -> String {
        match self {
            Place::Device(d) => format!("dev{d}"),
            Place::Both => "both".into(),
            Place::Towers => "towers".into(),
        }
    }

    /// The share of a tensor of `total` elements (or bytes) so placed that `device` holds.
    pub fn share(self, total: u64, device: u32) -> u64 {
        match self {
            Place::Device(d) => {
                if d == device {
                    total
                } else {
                    0
                }
            }
            Place::Both => total,
            Place::Towers => total / 2,
        }
    }
}

/// Why a device receives a tensor from the other in the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Half of the input, held by the other device: the other tower's half of an input read
    /// whole (conv3, the linear layers, softmax, the logits, a `#[device = N]` layer), or the
    /// half a tower computes on when its input lives whole on the other device.
    Gather,
    /// The other tower's `channels` channels nearest the tower boundary, which a cross-channel
    /// LRN's window reaches across it.
    Halo { channels: u32 },
    /// The whole input, which lives on the other device (next to a `#[device = N]` layer).
    Whole,
}

/// One forward transfer between the devices of a `devices: 2` plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The op that reads what is received: `conv3.conv`, `fc8.softmax`, `output`.
    pub reader: Cow<'static, str>,
    /// The device that receives.
    pub to: u32,
    pub kind: ExchangeKind,
    /// Bytes per image.
    pub bytes_per_image: u64,
}

impl Plan {
    /// The kernel whose dispatch does the most floating-point operations at `batch` images (in
    /// any variant), and that count: what [`Limits::max_dispatch_flops`] bounds at the
    /// micro-batch.
    pub fn heaviest_dispatch(&self, batch: u64) -> Option<(&Kernel, u64)> {
        self.kernels
            .iter()
            .map(|k| {
                (
                    k,
                    std::iter::once(k.cost)
                        .chain(k.variants.iter().map(|v| v.cost))
                        .map(|c| c.flops.at(batch))
                        .max()
                        .unwrap_or(0),
                )
            })
            .max_by_key(|&(_, flops)| flops)
    }

    /// This plan with every kernel in its form for `target` (its variant for that target where
    /// it has one) and the inference program compiled for that target (where there is one);
    /// what a session on an adapter of that kind runs.
    pub fn for_target(&self, target: Target) -> Plan {
        let mut plan = self.clone();
        let kernels: Vec<Kernel> = self.kernels.iter().map(|k| k.for_target(target)).collect();
        plan.kernels = kernels.into();
        let program = |t: Target| self.inference_variants.iter().find(|v| v.target == t);
        if let Some(v) = program(target).or_else(|| target.fallback().and_then(program)) {
            plan.inference = v.program.clone();
            plan.fusion = v.fusion;
        }
        // The kernels keep one form now: choosing again (for another target) must not pair
        // another target's program with them.
        plan.inference_variants = Cow::Borrowed(&[]);
        plan
    }

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

    /// Bytes of `tensor`, as a function of the batch.
    pub fn tensor_size(&self, tensor: Tensor) -> Extent {
        let part = |index: u32, part: u32| {
            let p = &self.params[index as usize];
            Extent::fixed(u64::from(p.parts[part as usize].rows) * p.row_elems() * 4)
        };
        match tensor {
            Tensor::Activation(i) | Tensor::Grad(i) => {
                Extent::per_image(self.activations[i as usize].elems_per_image() * 4)
            }
            Tensor::Param { index, part: p }
            | Tensor::ParamGrad { index, part: p }
            | Tensor::Momentum { index, part: p } => part(index, p),
            Tensor::Labels | Tensor::Loss => Extent::per_image(4),
            Tensor::Partials {
                index,
                part: p,
                slices,
            } => Extent::fixed(part(index, p).fixed * u64::from(slices)),
        }
    }

    /// Learnable parameters held by `device` when the plan's towers run on two devices.
    pub fn params_on(&self, device: u32) -> u64 {
        self.layers
            .iter()
            .map(|l| l.place.share(l.params, device))
            .sum()
    }

    /// Bytes of activations per image that `device` writes when the towers run on two devices.
    pub fn activation_bytes_on(&self, device: u32) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                l.activation_bytes_on
                    .get(device as usize)
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Bytes per image that `device` receives from the other in a forward pass.
    pub fn received_per_image(&self, device: u32) -> u64 {
        self.exchanges
            .iter()
            .filter(|e| e.to == device)
            .map(|e| e.bytes_per_image)
            .sum()
    }

    /// Looks a parameter up by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}
