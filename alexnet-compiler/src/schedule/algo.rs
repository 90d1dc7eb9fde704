//! Algorithm choice: the one place that decides how each kernel computes, and what it costs.
//!
//! Every tile and workgroup size of the generated WGSL follows from the [`Algo`] value chosen
//! here (codegen reads it; it never infers a decision back from dispatch sizes). The choice is
//! per kernel kind and shape today; per-device variants will be further values of the same type.

use alexnet_plan::{Algo, Binding, ConvNode, Cost, Dispatch, Extent, GemmTile, Kernel, LrnNode, NodeOp, Plan, PoolNode, Role, Wrt};

/// The tile of every implicit-GEMM convolution kernel (forward, input and weight gradients).
pub const CONV_GEMM: GemmTile = GemmTile { m: 64, n: 64, k: 16 };

/// Invocations per workgroup of per-element and row-reducing kernels.
pub const WORKGROUP: u32 = 64;

/// One invocation per element written.
pub const PER_ELEMENT: Algo = Algo::PerElement { threads: WORKGROUP };

/// The tiles a fused conv block may use: both hold 4,096 outputs, the most that fits the
/// WebGPU default of 16 KiB of workgroup memory.
const BLOCK_TILES: [GemmTile; 2] = [GemmTile { m: 64, n: 64, k: 16 }, GemmTile { m: 32, n: 128, k: 16 }];

/// A tiled-GEMM dispatch over `channels` output rows per group and `pixels` columns per image.
pub fn gemm_dispatch(tile: GemmTile, groups: u32, rows_per_group: u32, pixels: u64) -> Dispatch {
    Dispatch::Tiles { m_tiles: groups * rows_per_group.div_ceil(tile.m), pixels, tile_pixels: tile.n }
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
        let Some(channels) = tile.m.checked_sub(lo + hi).filter(|&c| c > 0) else { continue };
        let channel_tiles = conv.out_channels.div_ceil(channels);
        for out_rows in 1..=out_h.min(16) {
            for out_cols in 1..=out_w.min(16) {
                // Conv outputs under `out_rows × out_cols` pooled outputs, halo included.
                let (rows, cols) = match pool {
                    Some(p) => ((out_rows - 1) * p.stride + p.kernel, (out_cols - 1) * p.stride + p.kernel),
                    None => (out_rows, out_cols),
                };
                if rows * cols > tile.n {
                    continue;
                }
                let spatial = out_h.div_ceil(out_rows) * out_w.div_ceil(out_cols);
                let workgroups = channel_tiles * spatial;
                // Work is a whole tile per workgroup, whatever part of it is used.
                let work = u64::from(workgroups) * u64::from(tile.m) * u64::from(tile.n);
                let algo = Algo::ConvBlock { tile, rows, cols, out_rows, out_cols, channels };
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
    Cost { flops: flops(plan, kernel), read, written }
}

fn flops(plan: &Plan, kernel: &Kernel) -> Extent {
    let elems = |a: u32| plan.activations[a as usize].elems_per_image();
    let part_rows = kernel.bindings.iter().find_map(|b| match *b {
        Binding::Param { index, part } | Binding::ParamMut { index, part } | Binding::ParamGrad { index, part, .. } => {
            let p = &plan.params[index as usize];
            Some((u64::from(p.parts[part as usize].rows), p.row_elems()))
        }
        _ => None,
    });
    if kernel.role == Role::Update {
        return Extent::fixed(part_rows.map_or(0, |(r, e)| 6 * r * e));
    }
    let mut total = Extent::default();
    for &n in kernel.covers.iter() {
        let node = &plan.nodes[n as usize];
        let out = elems(node.output);
        let per_image = match (node.op, kernel.role) {
            (NodeOp::Conv(c), Role::Forward | Role::Backward(Wrt::Input | Wrt::Weight)) => {
                let rows = part_rows.map_or(u64::from(c.out_channels), |(r, _)| r);
                let macs = rows * u64::from(c.out_h * c.out_w) * u64::from(c.in_channels / c.groups) * u64::from(c.kernel * c.kernel);
                match kernel.algo {
                    // Tiled kernels compute whole tiles: channel tiles padded to the tile's rows.
                    Algo::TiledGemm(tile) if kernel.role == Role::Forward => {
                        let rows = u64::from(c.groups * (c.out_channels / c.groups).div_ceil(tile.m) * tile.m);
                        2 * rows * u64::from(c.out_h * c.out_w) * u64::from(c.in_channels / c.groups) * u64::from(c.kernel * c.kernel)
                    }
                    // A fused block computes whole tiles, halos included.
                    Algo::ConvBlock { tile, .. } => {
                        let workgroups = match kernel.dispatch {
                            Dispatch::PerImage { workgroups } => u64::from(workgroups),
                            _ => 0,
                        };
                        2 * workgroups * u64::from(tile.m * tile.n) * u64::from(c.in_channels / c.groups) * u64::from(c.kernel * c.kernel)
                    }
                    _ => 2 * macs,
                }
            }
            (NodeOp::Linear(l), Role::Forward | Role::Backward(Wrt::Input | Wrt::Weight)) => {
                2 * part_rows.map_or(u64::from(l.out_features), |(r, _)| r) * u64::from(l.in_features)
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
