//! Algorithm choice: the one place that decides how each kernel computes, and what it costs.
//!
//! Every tile and workgroup size of the generated WGSL follows from the [`Algo`] value chosen
//! here (codegen reads it; it never infers a decision back from dispatch sizes). The choice is
//! per kernel kind and shape today; per-device variants will be further values of the same type.

use alexnet_plan::{
    Algo, Binding, ConvNode, Cost, Dispatch, Extent, GemmTile, Kernel, LrnNode, Node, NodeOp,
    Param, Part, Plan, PoolNode, Role, Staging, Target, Variant, Wrt,
};
use std::borrow::Cow;

/// GPU tile of the GEMMs over channels × pixels (convolutions and their gradients) and of
/// linear weight gradients: 256 invocations, workgroup memory.
pub const CONV_GEMM: GemmTile = GemmTile::shared(64, 64, 16);

/// GPU tile of the linear products whose columns are images (forward, input gradient): few
/// columns, so a narrower tile keeps more workgroups busy at small batches.
pub const LINEAR_GEMM: GemmTile = GemmTile::shared(32, 32, 16);

/// CPU tile of the GEMMs over channels × pixels and of linear weight gradients: 4 × 4
/// invocations of 8 × 16 register blocks, no workgroup memory (a software adapter runs
/// invocations as SIMD lanes and barriers as coroutine switches, and its caches are large).
/// A software adapter gathers every load lane by lane, so the block is as large as pays: on
/// lavapipe (2-core AMD EPYC, AVX2) the conv GEMMs ran at 0.7 GFLOP/s with 2 × 4 blocks, 1.4
/// with 4 × 8, 1.9 with 8 × 8 and 2.4 with 8 × 16 (accumulators spill to the stack, which
/// costs less than the gathers they save).
pub const CPU_GEMM: GemmTile = GemmTile::registers(32, 64, 8, 16);

/// The [`Target::CpuSubgroup`] tile of the same GEMMs: 4 × 32 register blocks whose 32
/// columns the 8 lanes of a subgroup share (each loads 4 of them), so per reduction step an
/// invocation loads 4 + 4 operands for 128 multiply-adds where an 8 × 16 block loads 8 + 16.
/// Measured on lavapipe (2-core AMD EPYC, AVX2), the Mini net's conv3 forward: see README.
pub const CPU_SUBGROUP_GEMM: GemmTile = GemmTile::subgroup(32, 64, 4, 32, Target::SUBGROUP_LANES);

/// CPU tile of the linear products whose columns are images (forward and input gradient): 8
/// invocations of 16 × 8 blocks, all reading the same 8 images. A software adapter gathers
/// the weights lane by lane (each lane has its own rows) while the images' loads are the same
/// in every lane, so each weight load should serve as many images as the registers hold: 8
/// (a batch-8 step reads each weight once) times 16 rows. On lavapipe (2-core AMD EPYC, AVX2)
/// the paper's fc6 forward at batch 8 went from 262 ms per part with 4 × 4 blocks of 4 images
/// to 209 with 4 × 8 and 122 with 16 × 8; its input gradient (whose reduction steps from one
/// weight row to the next, so a lane's 16 features are 4 vec4s of one row) from 205 with
/// 16 × 4 blocks to 124–138 with 16 × 8.
pub const CPU_LINEAR_GEMM: GemmTile = GemmTile::registers(128, 8, 16, 8);

/// Workgroups a GPU form aims for where its output alone gives too few (conv weight
/// gradients, whose outputs are the weights): a discrete GPU has about a hundred compute units
/// (an H100 132), each running two 256-invocation workgroups at once.
const GPU_WORKGROUPS: u64 = 256;

/// The most slices a weight gradient's reduction is cut into: each slice writes a whole
/// partial gradient, which the slice sum reads back.
const MAX_SLICES: u32 = 32;

/// How many slices the reduction of a conv's weight gradient over weight part `part` is cut
/// into (the batch's output rows, a contiguous run of them per slice), so that its GPU form
/// runs about [`GPU_WORKGROUPS`] workgroups: the paper's conv1 gradient is 6 tiles of 64 × 64
/// per tower, each reducing 55 × 55 pixels of every image. Each slice writes its partial
/// gradient to scratch ([`alexnet_plan::Tensor::Partials`]) and a second kernel adds them in
/// slice order, so training stays deterministic without atomics. At most the conv's output
/// rows, so that a single image gives every slice a row; 1 (no split) where the output tiles
/// are enough, or the part is no GEMM instance. The partial gradients together stay within
/// `binding_limit` bytes (the target's storage binding limit), since one binding holds them.
pub fn weight_gradient_slices(c: &ConvNode, part: Part, binding_limit: u64) -> u32 {
    let Some((_, groups, rows)) = conv_part(c, part) else {
        return 1;
    };
    let cols = c.in_channels / c.groups * c.kernel * c.kernel;
    let tiles = u64::from(groups)
        * u64::from(rows.div_ceil(CONV_GEMM.m))
        * u64::from(cols.div_ceil(CONV_GEMM.n));
    let part_bytes = u64::from(part.rows) * u64::from(cols) * 4;
    GPU_WORKGROUPS
        .div_ceil(tiles)
        .min(u64::from(MAX_SLICES.min(c.out_h)))
        .min(binding_limit / part_bytes.max(1))
        .max(1) as u32
}

/// Workgroups a CPU tile aims for when the columns do not grow with the batch (weight
/// gradients): enough to keep the threads of a software adapter on a usual CPU busy.
const CPU_WORKGROUPS: u64 = 8;

/// The cost of re-reading operands: a workgroup streams its TM rows of A and TN columns of B
/// through the reduction, so a tile's traffic per output is `1/TM + 1/TN`, weighted by this
/// against its multiply-adds (fitted on lavapipe, 2-core AMD EPYC: a 16×16 tile of the Mini
/// net's conv4 weight gradient took 1.14× as long as a 32×64 one for 28% less padded work).
const CPU_REREAD: f64 = 11.0;

/// The CPU tile of a GEMM over channels × pixels or a linear weight gradient: [`CPU_GEMM`]'s
/// 8 × 16 register blocks (the fastest measured on lavapipe), in the workgroup shape with the
/// least estimated time: padded rows and columns computed in vain, operands re-read by
/// smaller tiles, and, where the columns are fixed (weight gradients, whose batch is the
/// reduction), too few workgroups to spread over the CPU's threads (the Mini net's conv1
/// weight gradient, 32 × 25, is one 32 × 64 tile, a single thread's work, unless its reduction
/// is split into `slices`, each a workgroup per tile). Workgroups keep at
/// least 8 invocations, a software adapter's SIMD width.
/// `block` gives the register block and staging ([`CPU_GEMM`] or [`CPU_SUBGROUP_GEMM`]); a
/// subgroup tile's rows hold whole subgroups.
fn cpu_tile(groups: u32, rows: u32, columns: Columns, slices: u32, block: GemmTile) -> GemmTile {
    let mut best = (f64::INFINITY, block);
    let heights: &[u32] = if block.lanes() > 1 {
        &[64, 32]
    } else {
        &[32, 16, 8]
    };
    for &m in heights {
        for n in [64, 32, 16, 8] {
            let tile = GemmTile { m, n, ..block };
            if tile.threads() < 8
                || m % block.rm != 0
                || n % block.rn != 0
                || (m / block.rm) % block.lanes() != 0
            {
                continue;
            }
            let row_tiles = u64::from(groups) * u64::from(rows.div_ceil(m));
            let (work, workgroups) = match columns {
                // Columns grow with the batch: only the rows' padding differs between shapes.
                Columns::PerImage(_) if n != block.n => continue,
                Columns::PerImage(_) => (row_tiles * u64::from(m), CPU_WORKGROUPS),
                Columns::Fixed(cols) => {
                    let col_tiles = cols.div_ceil(u64::from(n));
                    (
                        row_tiles * u64::from(m) * col_tiles * u64::from(n),
                        row_tiles * col_tiles * u64::from(slices),
                    )
                }
            };
            let reread = 1.0 + CPU_REREAD * (1.0 / f64::from(m) + 1.0 / f64::from(n));
            // Larger tiles first, replaced only by a strictly better one.
            let time = work as f64 * reread / workgroups.min(CPU_WORKGROUPS) as f64;
            if time < best.0 {
                best = (time, tile);
            }
        }
    }
    // 2-row blocks make 16-row tiles, at 1.5× the loads per multiply-add, where 4-row blocks
    // would waste half of every tile (groups of at most 16 rows: the Mini net's conv2 input
    // gradient, 16 input channels per group, ran at half the GFLOP/s of its other GEMMs), or
    // where a subgroup tile's fixed columns fit one workgroup, leaving the adapter's other
    // threads idle (the Mini net's conv1 weight gradient, 32 × 25): twice the workgroups.
    if block.lanes() > 1 && block.rm == 4 {
        let tile = best.1;
        let lone = match columns {
            Columns::Fixed(cols) => {
                u64::from(groups)
                    * u64::from(rows.div_ceil(tile.m))
                    * cols.div_ceil(u64::from(tile.n))
                    * u64::from(slices)
                    == 1
                    && rows > 16
            }
            Columns::PerImage(_) => false,
        };
        if rows <= 16 || lone {
            return GemmTile {
                m: tile.m / 2,
                rm: 2,
                ..tile
            };
        }
    }
    best.1
}

/// Invocations per workgroup of per-element and row-reducing kernels.
pub const WORKGROUP: u32 = 64;

/// One invocation per element written.
pub const PER_ELEMENT: Algo = Algo::PerElement { threads: WORKGROUP };

/// The tiles a fused conv block may use: both hold 4,096 outputs, the most that fits the
/// WebGPU default of 16 KiB of workgroup memory.
const BLOCK_TILES: [GemmTile; 2] = [GemmTile::shared(64, 64, 16), GemmTile::shared(32, 128, 16)];

/// How the columns of a GEMM instance grow: with the batch (`per_image` columns per image) or
/// not at all (weight gradients: `fixed` columns, the batch being the reduction).
#[derive(Clone, Copy)]
enum Columns {
    PerImage(u64),
    Fixed(u64),
}

/// The GEMM shape of a conv or linear kernel: groups, rows per group, columns, reduction
/// length, and whether its columns are images of a linear layer; `None` when the kernel is
/// not a GEMM instance (a conv split into weight parts, whose parts may cut a group; a strided
/// conv's input gradient; a bias).
fn gemm_shape(
    nodes: &[Node],
    params: &[Param],
    kernel: &Kernel,
) -> Option<(u32, u32, Columns, Extent, bool)> {
    let node = &nodes[kernel.node as usize];
    let rows = kernel_part(params, kernel)?.rows;
    let fixed = |v: u32| Extent::fixed(u64::from(v));
    match (node.op, kernel.role) {
        (NodeOp::Conv(c), Role::Forward) => {
            let (_, groups, rows) = conv_part(&c, kernel_part(params, kernel)?)?;
            Some((
                groups,
                rows,
                Columns::PerImage(u64::from(c.out_h * c.out_w)),
                fixed(c.in_channels / c.groups * c.kernel * c.kernel),
                false,
            ))
        }
        (NodeOp::Conv(c), Role::Backward(Wrt::Input)) if c.stride == 1 && c.pad < c.kernel => {
            // A weight part's kernel reduces over its own dy channels and writes (or adds to)
            // only its groups' dx channels, so every part of the weight must be a GEMM: an
            // invocation-per-output part writes every channel.
            let weight = kernel.bindings.iter().find_map(|b| match *b {
                Binding::Param { index, .. } if params[index as usize].shape.len() > 1 => {
                    Some(&params[index as usize])
                }
                _ => None,
            })?;
            if weight.parts.iter().any(|&p| conv_part(&c, p).is_none()) {
                return None;
            }
            let (_, groups, dy_rows) = conv_part(&c, kernel_part(params, kernel)?)?;
            Some((
                groups,
                c.in_channels / c.groups,
                Columns::PerImage(u64::from(c.in_h * c.in_w)),
                fixed(dy_rows * c.kernel * c.kernel),
                false,
            ))
        }
        (NodeOp::Conv(c), Role::Backward(Wrt::Weight)) => {
            let (_, groups, rows) = conv_part(&c, kernel_part(params, kernel)?)?;
            Some((
                groups,
                rows,
                Columns::Fixed(u64::from(c.in_channels / c.groups * c.kernel * c.kernel)),
                Extent::per_image(u64::from(c.out_h * c.out_w)),
                false,
            ))
        }
        (NodeOp::Linear(l), Role::Forward) => {
            Some((1, rows, Columns::PerImage(1), fixed(l.in_features), true))
        }
        (NodeOp::Linear(l), Role::Backward(Wrt::Input)) => {
            Some((1, l.in_features, Columns::PerImage(1), fixed(rows), true))
        }
        (NodeOp::Linear(l), Role::Backward(Wrt::Weight)) => Some((
            1,
            rows,
            Columns::Fixed(u64::from(l.in_features)),
            Extent::per_image(1),
            false,
        )),
        _ => None,
    }
}

/// The weight part a conv or linear kernel binds.
pub(crate) fn kernel_part(params: &[Param], kernel: &Kernel) -> Option<Part> {
    kernel
        .bindings
        .iter()
        .filter_map(Binding::param_part)
        .find(|&(index, _)| params[index as usize].shape.len() > 1)
        .map(|(index, part)| params[index as usize].parts[part as usize])
}

/// A conv forward kernel over weight part `part` as a grouped GEMM: its first group, its
/// groups and the rows of each. A part is a GEMM instance when it is whole groups (a tower
/// of a grouped conv whose groups line up with the towers) or lies inside one group (a
/// tower of an ungrouped conv, or a part the storage limit cut); `None` when it straddles
/// a group boundary.
pub(crate) fn conv_part(c: &ConvNode, part: Part) -> Option<(u32, u32, u32)> {
    let per_group = c.out_channels / c.groups;
    if part.start.is_multiple_of(per_group) && part.rows.is_multiple_of(per_group) {
        Some((part.start / per_group, part.rows / per_group, per_group))
    } else if part.start / per_group == (part.start + part.rows - 1) / per_group {
        Some((part.start / per_group, 1, part.rows))
    } else {
        None
    }
}

/// Whether the GEMM `kernel` of a convolution's patches (forward, input gradient) steps the
/// kernel's columns in its loop with `tile` instead of unrolling them (`codegen::gemm`,
/// `Walk::Patch`): the subgroup form does, unless its loop would then reach [`LOOP_LIMIT`].
pub fn patch_steps_kx(plan: &Plan, kernel: &Kernel, tile: GemmTile) -> bool {
    gemm_shape(&plan.nodes, &plan.params, kernel)
        .is_some_and(|(_, _, _, depth, _)| steps_kx(tile, depth.at(u64::from(plan.micro_batch))))
}

/// [`patch_steps_kx`] for a patch reduction of `depth` steps (channels × K × K, the same at
/// every batch).
fn steps_kx(tile: GemmTile, depth: u64) -> bool {
    tile.lanes() > 1 && depth < LOOP_LIMIT
}

/// Loop iterations one invocation runs at `batch` images, all its loops together (Mesa counts
/// them in one limiter per shader): a GEMM's reduction, or the innermost pooling-window loop
/// of a channel scan summed over its channels; `None` for kernels whose loops are short. What
/// must stay under [`LOOP_LIMIT`].
pub fn loop_iterations(plan: &Plan, kernel: &Kernel, batch: u64) -> Option<u64> {
    match kernel.algo {
        Algo::Gemm(tile) => {
            let (_, _, _, depth, _) = gemm_shape(&plan.nodes, &plan.params, kernel)?;
            let depth = depth.at(batch);
            let unroll = u64::from(crate::codegen::UNROLL);
            // The most output rows of the batch one slice of a conv weight gradient reduces.
            let rows_per_slice =
                |c: ConvNode| (batch * u64::from(c.out_h)).div_ceil(u64::from(kernel.slices()));
            // The registers-only body walks a convolution in its own coordinates (`codegen::gemm`).
            Some(
                match (
                    tile.staging,
                    plan.nodes[kernel.node as usize].op,
                    kernel.role,
                ) {
                    // One iteration per (channel, kernel row), or per (channel, kernel row,
                    // kernel column).
                    (
                        Staging::Registers | Staging::Subgroup { .. },
                        NodeOp::Conv(c),
                        Role::Forward | Role::Backward(Wrt::Input),
                    ) => {
                        if steps_kx(tile, depth) {
                            depth
                        } else {
                            depth / u64::from(c.kernel)
                        }
                    }
                    // One per (image, output row), plus, inside each, one per UNROLL pixels of the
                    // row: the limit counts the iterations of all of an invocation's loops together.
                    (
                        Staging::Registers | Staging::Subgroup { .. },
                        NodeOp::Conv(c),
                        Role::Backward(Wrt::Weight),
                    ) => rows_per_slice(c) * (1 + u64::from(c.out_w) / unroll),
                    (Staging::Registers | Staging::Subgroup { .. }, ..) => depth / unroll + unroll,
                    // A slice of a split conv weight gradient reduces its own output rows.
                    (Staging::Workgroup, NodeOp::Conv(c), Role::Backward(Wrt::Weight)) => {
                        (rows_per_slice(c) * u64::from(c.out_w)).div_ceil(u64::from(tile.k))
                    }
                    (Staging::Workgroup, ..) => depth.div_ceil(u64::from(tile.k)),
                },
            )
        }
        // One iteration per channel (and LRN window's edge): the pool windows inside are
        // unrolled (`codegen::training::lrn_scan`).
        Algo::ChannelScan { .. } => {
            kernel
                .covers
                .iter()
                .find_map(|&n| match plan.nodes[n as usize].op {
                    NodeOp::Lrn(l) => Some(u64::from(l.channels + l.size)),
                    _ => None,
                })
        }
        // A conv bias: per image one iteration per WG of its pixels (or vec4s of them), or,
        // where an image has fewer, one per WG of the batch's; a linear bias: one per WG
        // images (`codegen::training::bias_reduce`).
        Algo::RowReduce { threads } => {
            let wg = u64::from(threads);
            Some(
                match (
                    crate::codegen::conv_bias_walk(plan, kernel),
                    plan.nodes[kernel.node as usize].op,
                ) {
                    (Some((width, per_image)), NodeOp::Conv(c)) => {
                        let hw = u64::from(c.out_h * c.out_w / width);
                        if per_image {
                            batch * (1 + hw.div_ceil(wg))
                        } else {
                            (batch * hw).div_ceil(wg)
                        }
                    }
                    _ => batch.div_ceil(wg),
                },
            )
        }
        Algo::PerElement { .. }
        | Algo::PoolTile { .. }
        | Algo::SliceSum { .. }
        | Algo::Vec4 { .. }
        | Algo::PerImage { .. }
        | Algo::ConvBlock { .. } => None,
    }
}

/// Loop iterations one invocation may run on Mesa's software rasterisers before they end the
/// loop silently (`LP_MAX_TGSI_LOOP_ITERATIONS`); see `codegen::UNROLL`.
pub const LOOP_LIMIT: u64 = 65_535;

/// The algorithm, workgroup size, invocations per image and dispatch of a GEMM instance with
/// `tile`.
fn gemm_form(
    tile: GemmTile,
    groups: u32,
    rows: u32,
    columns: Columns,
    slices: u32,
) -> (Algo, u32, u64, Dispatch) {
    let m_tiles = groups * rows.div_ceil(tile.m);
    match columns {
        Columns::PerImage(pixels) => (
            Algo::Gemm(tile),
            tile.threads(),
            pixels,
            Dispatch::Tiles {
                m_tiles,
                pixels,
                tile_pixels: tile.n,
            },
        ),
        Columns::Fixed(cols) => {
            // Every slice of a split reduction runs the whole grid of output tiles.
            let tiles = u64::from(m_tiles) * cols.div_ceil(u64::from(tile.n)) * u64::from(slices);
            (
                Algo::Gemm(tile),
                tile.threads(),
                tiles * u64::from(tile.threads()),
                Dispatch::Fixed,
            )
        }
    }
}

/// Chooses the algorithm of every conv and linear kernel that is not a fused block: a GEMM
/// instance with a workgroup-memory tile for GPUs and a register-only variant for CPU adapters
/// where the kernel is GEMM-shaped, bias gradients as tree reductions. The runtime picks the
/// variant per adapter (`Plan::for_target`).
pub fn choose(nodes: &[Node], params: &[Param], kernel: &mut Kernel) {
    // Fused blocks, per-image kernels and slice sums are chosen where they are made.
    if matches!(
        kernel.algo,
        Algo::ConvBlock { .. } | Algo::PerImage { .. } | Algo::SliceSum { .. }
    ) {
        return;
    }
    // An update reads and writes four elements per invocation where the part's size allows.
    if kernel.role == Role::Update && kernel.threads_per_image % 4 == 0 {
        kernel.algo = Algo::Vec4 { threads: WORKGROUP };
        kernel.workgroup_size = WORKGROUP;
        kernel.threads_per_image /= 4;
        return;
    }
    // An LRN on its own walks each pixel's channels (`codegen::lrn_scan_body`): every input is
    // loaded once instead of once per window it falls in.
    if let (NodeOp::Lrn(l), Role::Forward, 1) = (
        nodes[kernel.node as usize].op,
        kernel.role,
        kernel.covers.len(),
    ) {
        kernel.algo = Algo::ChannelScan {
            threads: WORKGROUP,
            side: 1,
        };
        kernel.workgroup_size = WORKGROUP;
        kernel.threads_per_image = u64::from(l.h) * u64::from(l.w);
        return;
    }
    if kernel.role == Role::Backward(Wrt::Bias) {
        let rows = kernel.threads_per_image;
        kernel.algo = Algo::RowReduce { threads: WORKGROUP };
        kernel.workgroup_size = WORKGROUP;
        kernel.threads_per_image = rows * u64::from(WORKGROUP);
        return;
    }
    let Some((groups, rows, columns, _, linear)) = gemm_shape(nodes, params, kernel) else {
        return;
    };
    // A linear product over images has a few columns (the batch) and no subgroup form: its
    // `CpuSubgroup` kernel is its `Cpu` one.
    let slices = kernel.slices();
    let (gpu, cpu, subgroup) = match (linear, columns) {
        (true, Columns::PerImage(_)) => (LINEAR_GEMM, CPU_LINEAR_GEMM, None),
        _ => (
            CONV_GEMM,
            cpu_tile(groups, rows, columns, slices, CPU_GEMM),
            Some(cpu_tile(groups, rows, columns, slices, CPU_SUBGROUP_GEMM)),
        ),
    };
    (
        kernel.algo,
        kernel.workgroup_size,
        kernel.threads_per_image,
        kernel.dispatch,
    ) = gemm_form(gpu, groups, rows, columns, slices);
    let variant = |target: Target, tile: GemmTile| {
        let (algo, workgroup_size, threads_per_image, dispatch) =
            gemm_form(tile, groups, rows, columns, slices);
        Variant::scheduled(target, algo, workgroup_size, threads_per_image, dispatch)
    };
    let mut variants = vec![variant(Target::Cpu, cpu)];
    variants.extend(subgroup.map(|tile| variant(Target::CpuSubgroup, tile)));
    kernel.variants = Cow::Owned(variants);
}

/// The post-conv ops a fused conv block applies, in order.
#[derive(Clone, Copy, Debug)]
pub enum Post {
    Lrn(LrnNode),
    Pool(PoolNode),
}

/// The cheapest conv-block tiling of `conv` followed by `post`, with the number of workgroups
/// per image; `None` when no tile can hold the LRN's channel halo and one pooling window.
pub fn conv_block(conv: &ConvNode, post: &[Post]) -> Option<(Algo, u32)> {
    let (lo, hi) = post
        .iter()
        .find_map(|p| match p {
            Post::Lrn(l) => Some(((l.size - 1) / 2, l.size / 2)),
            Post::Pool(_) => None,
        })
        .unwrap_or((0, 0));
    let pool = post.iter().find_map(|p| match p {
        Post::Pool(p) => Some(*p),
        Post::Lrn(_) => None,
    });
    let (out_h, out_w) = pool.map_or((conv.out_h, conv.out_w), |p| (p.out_h, p.out_w));
    let mut best: Option<(u64, Algo, u32)> = None;
    for tile in BLOCK_TILES {
        let Some(channels) = tile.m.checked_sub(lo + hi).filter(|&c| c > 0) else {
            continue;
        };
        let channel_tiles = conv.out_channels.div_ceil(channels);
        for out_rows in 1..=out_h.min(16) {
            for out_cols in 1..=out_w.min(16) {
                // Conv outputs under `out_rows × out_cols` pooled outputs, halo included.
                let (rows, cols) = match pool {
                    Some(p) => (
                        (out_rows - 1) * p.stride + p.kernel,
                        (out_cols - 1) * p.stride + p.kernel,
                    ),
                    None => (out_rows, out_cols),
                };
                if rows * cols > tile.n {
                    continue;
                }
                let spatial = out_h.div_ceil(out_rows) * out_w.div_ceil(out_cols);
                let workgroups = channel_tiles * spatial;
                // Work is a whole tile per workgroup, whatever part of it is used.
                let work = u64::from(workgroups) * u64::from(tile.m) * u64::from(tile.n);
                let algo = Algo::ConvBlock {
                    tile,
                    rows,
                    cols,
                    out_rows,
                    out_cols,
                    channels,
                };
                if best.as_ref().is_none_or(|(w, _, _)| work < *w) {
                    best = Some((work, algo, workgroups));
                }
            }
        }
    }
    best.map(|(_, algo, workgroups)| (algo, workgroups))
}

/// FLOPs and bytes of one dispatch of `kernel`: bytes from its bindings (each tensor once),
/// FLOPs from the nodes it covers and its role (a multiply-add counts two).
pub fn cost(plan: &Plan, kernel: &Kernel) -> Cost {
    let (mut read, mut written) = (Extent::default(), Extent::default());
    for b in kernel.bindings.iter() {
        let Some(t) = b.tensor() else { continue };
        let size = plan.tensor_size(t);
        if b.writes() {
            written = written.plus(size);
        }
        if b.reads() {
            read = read.plus(size);
        }
    }
    Cost {
        flops: flops(plan, kernel),
        read,
        written,
    }
}

fn flops(plan: &Plan, kernel: &Kernel) -> Extent {
    let elems = |a: u32| plan.activations[a as usize].elems_per_image();
    let part_rows = kernel.bindings.iter().find_map(|b| {
        let (index, part) = b.param_part()?;
        let p = &plan.params[index as usize];
        Some((u64::from(p.parts[part as usize].rows), p.row_elems()))
    });
    if kernel.role == Role::Update {
        return Extent::fixed(part_rows.map_or(0, |(r, e)| 6 * r * e));
    }
    // A slice sum adds every slice's partial gradient.
    if let Algo::SliceSum { .. } = kernel.algo {
        return Extent::fixed(part_rows.map_or(0, |(r, e)| r * e) * u64::from(kernel.slices()));
    }
    let mut total = Extent::default();
    for &n in kernel.covers.iter() {
        let node = &plan.nodes[n as usize];
        let out = elems(node.output);
        let per_image = match (node.op, kernel.role) {
            (NodeOp::Conv(c), Role::Forward | Role::Backward(Wrt::Input | Wrt::Weight)) => {
                let rows = part_rows.map_or(u64::from(c.out_channels), |(r, _)| r);
                let macs = rows
                    * u64::from(c.out_h * c.out_w)
                    * u64::from(c.in_channels / c.groups)
                    * u64::from(c.kernel * c.kernel);
                match kernel.algo {
                    // GEMM kernels compute whole tiles: channel tiles padded to the tile's rows.
                    // A weight part's kernel computes its own rows: whole groups, or a piece of one.
                    Algo::Gemm(tile) if kernel.role == Role::Forward => {
                        let (groups, per_group) = kernel_part(&plan.params, kernel)
                            .and_then(|p| conv_part(&c, p))
                            .map_or((c.groups, c.out_channels / c.groups), |(_, g, r)| (g, r));
                        let rows = u64::from(groups * per_group.div_ceil(tile.m) * tile.m);
                        2 * rows
                            * u64::from(c.out_h * c.out_w)
                            * u64::from(c.in_channels / c.groups)
                            * u64::from(c.kernel * c.kernel)
                    }
                    // A fused block computes whole tiles, halos included.
                    Algo::ConvBlock { tile, .. } => {
                        let workgroups = match kernel.dispatch {
                            Dispatch::PerImage { workgroups } => u64::from(workgroups),
                            _ => 0,
                        };
                        2 * workgroups
                            * u64::from(tile.m * tile.n)
                            * u64::from(c.in_channels / c.groups)
                            * u64::from(c.kernel * c.kernel)
                    }
                    _ => 2 * macs,
                }
            }
            (NodeOp::Linear(l), Role::Forward | Role::Backward(Wrt::Input | Wrt::Weight)) => {
                2 * part_rows.map_or(u64::from(l.out_features), |(r, _)| r)
                    * u64::from(l.in_features)
            }
            (NodeOp::Conv(_) | NodeOp::Linear(_), Role::Backward(Wrt::Bias)) => out,
            (NodeOp::Lrn(l), _) => out * (2 * u64::from(l.size) + 4),
            (NodeOp::MaxPool(p), _) => out * u64::from(p.kernel * p.kernel),
            (NodeOp::Softmax, _) => 4 * out,
            (NodeOp::Relu | NodeOp::Dropout(_), _) => out,
            (NodeOp::Conv(_) | NodeOp::Linear(_), Role::Dropout | Role::Loss | Role::Update) => 0,
        };
        total = total.plus(Extent::per_image(per_image));
    }
    if kernel.role == Role::Loss {
        total = total.plus(Extent::per_image(4 * u64::from(plan.classes())));
    }
    // Parameter gradients reduce over the batch: their work grows with it, like the rest.
    total
}
