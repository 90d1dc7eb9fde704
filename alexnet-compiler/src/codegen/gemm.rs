//! The one GEMM generator: every convolution (forward, input gradient, weight gradient) and
//! every linear product (forward, input gradient, weight gradient) is an instance of it.
//!
//! An instance is three small WGSL functions over a grouped GEMM `C[g] = A[g] · B[g]`:
//! `load_a(g, m, k)` and `load_b(g, k, n)` (the loaders: conv weights, flipped and transposed
//! for the input gradient; image patches read in place, i.e. implicit im2col; dense rows;
//! upstream gradients) and `store(g, m, n, v)` (the epilogue: bias, ReLU, accumulation into a
//! gradient). The generator writes `main` from the kernel's [`GemmTile`]: which output block each
//! invocation owns, how the operands are staged (workgroup memory or registers only), the loop
//! over the reduction, and the guards at the edges. Loaders are only called with `m < rows` and
//! `n < cols` and `k < depth`, so they need no guards of their own beyond padding.

use super::writer::Writer;
use alexnet_plan::{Algo, ConvNode, GemmTile, Kernel, NodeOp, Plan, Role, Staging, Wrt};

/// The components of a `vec4`, in order.
const XYZW: [&str; 4] = ["x", "y", "z", "w"];

/// Reduction steps unrolled into one loop iteration by the register-only tile.
///
/// Mesa's software rasterisers (lavapipe, llvmpipe) end loops silently once an invocation
/// has run about 65,535 iterations of them in all (`LP_MAX_TGSI_LOOP_ITERATIONS`: one
/// limiter per shader, which neither re-entering a loop nor another loop resets), so a
/// reduction must take fewer iterations than that: the flat register-only loop takes
/// `depth / UNROLL`, a conv's patch walk one per (channel, kernel row), its weight-gradient
/// walk one per (image, output row) plus one per UNROLL pixels of each row (the paper's conv1
/// at 36 images: 36 · 55 · 7 = 13,860), the staged loop `depth / TK`, with its loads and
/// multiply-adds unrolled. `schedule::algo::loop_iterations` counts them; the count is kept
/// under `LOOP_LIMIT` for every GEMM of a plan at its micro-batch (`schedule::budget`,
/// checked by `schedule::verify`).
pub const UNROLL: u32 = 8;

/// The sizes of one GEMM instance, as WGSL expressions.
struct Shape {
    /// Independent GEMMs (conv groups), a constant expression.
    groups: &'static str,
    /// Rows per group (M), a constant expression.
    rows: String,
    /// Columns (N), an expression that may read `params.batch`.
    cols: &'static str,
    /// Reduction length (K), an expression that may read `params.batch`.
    depth: &'static str,
    /// How the registers-only body walks the reduction.
    walk: Walk,
}

/// How the registers-only body walks the reduction and reads its operands.
///
/// On a CPU adapter every index computation of the inner loop is paid per element (lavapipe
/// runs invocations as SIMD lanes and cannot tell that an index is the same in all of them),
/// so the convolution instances walk their reduction in its natural coordinates with each
/// column's share computed once: about twice as fast as `load_a`/`load_b` per element,
/// measured on lavapipe. The workgroup-memory body always uses the loaders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// `k = 0..depth`, `UNROLL` steps per iteration, `load_a(g, m, k)` and `load_b(g, k, n)`.
    Flat,
    /// A linear layer's forward on a CPU adapter: A's rows (`w`) and B's columns (`x`) are both
    /// contiguous along the reduction, so both are read as `vec4`s (their bindings are
    /// `array<vec4<f32>>`, see [`vec4_rows`]): a software adapter then loads 16 bytes per lane
    /// where it gathered 4 one by one, and the layer is bound by its weight traffic.
    Rows4,
    /// A linear layer's input gradient on a CPU adapter: an invocation's RM rows (input
    /// features) are consecutive in each weight row, so A is RM / 4 `vec4`s per reduction
    /// step, and B (`dy`) is contiguous along the reduction, so it is read 4 steps at a time
    /// (bindings `w` and `dy` are `array<vec4<f32>>`, see [`vec4_walk`]). A weight row is
    /// IN floats apart from the next, so each step starts a new stretch of memory: the wider
    /// the stretch a SIMD group reads there, the fewer cache lines and pages it misses.
    Cols4,
    /// A linear layer's weight gradient in the subgroup form: a lane's 4 rows are consecutive
    /// in dy's rows and its subgroup's 32 columns are 8 `vec4`s of x's rows, one per lane,
    /// broadcast; dW is stored 4 columns at a time (`dy`, `x`, `dw` are `array<vec4<f32>>`).
    Dense4,
    /// A convolution's patches (forward, input gradient): columns are output pixels, the
    /// reduction is (channel, ky, kx) of `input`. Per column the image's channel base and
    /// the window's corner are computed once; the loop walks (channel, ky) with kx unrolled,
    /// or, with `steps_kx` (the subgroup form), (channel, ky, kx) one step per iteration: its 4 × 32 block
    /// makes a body of 128 multiply-adds per step already, and the smaller loop ran the Mini
    /// net's patch GEMMs 6–7% faster on lavapipe with Mesa 22.3 and 1.5–2.5× with Mesa 25 (2-core
    /// AMD EPYC, `bench --train --kernels`, alternated), and compiles faster;
    /// A is `w[wrow(g, m, ci, ky) ± kx]` (`flipped`: minus, the input gradient's flipped kernel).
    /// `base` is the group's first channel of `input` and `channels` how many it reads (a
    /// weight part's kernel reads its own groups, or its own dy channels).
    Patch {
        input: &'static str,
        flipped: bool,
        kernel: u32,
        base: &'static str,
        channels: &'static str,
        /// Step kx in the loop ([`crate::schedule::algo::patch_steps_kx`]).
        steps_kx: bool,
    },
    /// A convolution's weight gradient: columns are weights (channel, ky, kx), the reduction
    /// is the batch's output pixels. Per column the input offset of its tap is computed once;
    /// the loop walks (image, output row) with the row's pixels unrolled in steps of
    /// `UNROLL` (the remainder written out: OW is a constant).
    /// `group` and `first + g * rows + m` are the group's index and row m's dy channel in
    /// the whole conv. `split`: the walk covers only its slice's rows, `t0..t1`.
    Pixels {
        width: u32,
        group: &'static str,
        rows: &'static str,
        first: &'static str,
        split: bool,
    },
}

/// Writes the GEMM kernel of `kernel` (its constants are declared): the instance's loaders and
/// epilogue, then `main` for `tile`. `relu` applies ReLU in a forward epilogue.
pub fn gemm(
    w: &mut Writer,
    plan: &Plan,
    kernel: &Kernel,
    tile: GemmTile,
    has_bias: bool,
    relu: bool,
) {
    let node = &plan.nodes[kernel.node as usize];
    let act = |v: &str| {
        if relu {
            format!("max({v}, 0.0)")
        } else {
            v.to_string()
        }
    };
    let bias = |at: &str| {
        if has_bias {
            format!(" + b[{at}]")
        } else {
            String::new()
        }
    };
    w.line("");
    // A conv kernel over one weight part (a tower, or a piece the storage limit cut) is the
    // GEMM of the part's groups: its weight rows are numbered from the part's first, which is
    // output channel ROW0, and its groups from G0.
    let part = crate::schedule::algo::kernel_part(&plan.params, kernel)
        .filter(|_| weight_parts(plan, kernel) > 1);
    let conv_split = match (node.op, part) {
        (NodeOp::Conv(c), Some(p)) => {
            crate::schedule::algo::conv_part(&c, p).map(|g| (p, g, c.out_channels / c.groups))
        }
        _ => None,
    };
    let split = conv_split.is_some();
    let slices = kernel.slices();
    let (groups, ocg, group, oc0) = match conv_split {
        Some((part, (g0, groups, rows), per_group)) => {
            w.line("// The weight part's first group, its groups and the (original) output channels of each.")
                .const_u32("G0", g0.into())
                .const_u32("PG", groups.into())
                .const_u32("PM", rows.into());
            if kernel.role == Role::Backward(Wrt::Input) {
                w.line("// The part's first dy channel; whether an earlier part of its group wrote dx already.")
                    .const_u32("DY0", part.start.into())
                    .line(format!("const PART_ACCUM: bool = {};", part.start % per_group != 0));
            }
            ("PG", "PM", "(G0 + g)", "ROW0 + ")
        }
        None => ("GROUPS", "OCG", "g", ""),
    };
    let steps_kx = crate::schedule::algo::patch_steps_kx(plan, kernel, tile);
    let shape = match (node.op, kernel.role) {
        (NodeOp::Conv(c), Role::Forward) => {
            w.line("// A: the weights, one row per output channel of the group, K*K*ICG columns.");
            // Only the registers-only patch walk addresses weight rows.
            if tile.staging != Staging::Workgroup {
                w.line("// wrow is (ci, ky, kx = 0).");
                w.open("fn wrow(g: u32, m: u32, ci: u32, ky: u32) -> u32")
                    .line(format!(
                        "return ((g * {ocg} + m) * ICG + ci) * K * K + ky * K;"
                    ))
                    .close();
            }
            w.open("fn load_a(g: u32, m: u32, k: u32) -> f32")
                .line(format!("return w[(g * {ocg} + m) * ICG * K * K + k];"))
                .close();
            let x_base = if split { "(G0 + g) * ICG" } else { "g * ICG" };
            patch_loader(w, "x", x_base);
            let store = w.open("fn store(g: u32, m: u32, n: u32, v: f32)");
            if split {
                store
                    .line(format!("let row = g * {ocg} + m;"))
                    .line("let oc = ROW0 + row;");
                store.line(format!(
                    "y[((n / (OH * OW)) * OC + oc) * OH * OW + n % (OH * OW)] = {};",
                    act(&format!("v{}", bias("row")))
                ));
            } else {
                store.line("let oc = g * OCG + m;");
                store.line(format!(
                    "y[((n / (OH * OW)) * OC + oc) * OH * OW + n % (OH * OW)] = {};",
                    act(&format!("v{}", bias("oc")))
                ));
            }
            store.close();
            Shape {
                groups,
                rows: ocg.into(),
                cols: "params.batch * OH * OW",
                depth: "ICG * K * K",
                walk: Walk::Patch {
                    input: "x",
                    flipped: false,
                    kernel: c.kernel,
                    base: x_base,
                    channels: "ICG",
                    steps_kx,
                },
            }
        }
        (NodeOp::Conv(c), Role::Backward(Wrt::Input)) => {
            // The constants describe the convolution computing dx (see `kernel_wgsl`): ICG
            // counts the original output channels of a group, OCG its input channels.
            w.line("// A: the weight of (dy channel k / (K*K) of group g, x channel m), flipped in space; wrow is (ci, ky, kx = 0),");
            w.line("// and kx steps backwards from it.");
            // A weight part's kernel reduces over the part's dy channels only (PM of each of
            // its PG groups, from DY0) and adds to what an earlier part of the group wrote.
            let (dy_per_group, dy_base) = if split {
                ("PM", "DY0 + g * PM")
            } else {
                ("ICG", "g * ICG")
            };
            w.open("fn wrow(g: u32, m: u32, ci: u32, ky: u32) -> u32").line(format!("return ((g * {dy_per_group} + ci) * OCG + m) * K * K + (K - 1u - ky) * K + K - 1u;")).close();
            w.open("fn load_a(g: u32, m: u32, k: u32) -> f32")
                .line("return w[wrow(g, m, k / (K * K), (k / K) % K) - k % K];")
                .close();
            patch_loader(w, "dy", dy_base);
            let store = w.open("fn store(g: u32, m: u32, n: u32, v: f32)");
            if split {
                store.line("let at = ((n / (OH * OW)) * OC + (G0 + g) * OCG + m) * OH * OW + n % (OH * OW);").line("dx[at] = select(v, dx[at] + v, PART_ACCUM);");
            } else {
                store.line(
                    "dx[((n / (OH * OW)) * OC + g * OCG + m) * OH * OW + n % (OH * OW)] = v;",
                );
            }
            store.close();
            let depth = if split { "PM * K * K" } else { "ICG * K * K" };
            Shape {
                groups,
                rows: "OCG".into(),
                cols: "params.batch * OH * OW",
                depth,
                walk: Walk::Patch {
                    input: "dy",
                    flipped: true,
                    kernel: c.kernel,
                    base: dy_base,
                    channels: dy_per_group,
                    steps_kx,
                },
            }
        }
        (NodeOp::Conv(c), Role::Backward(Wrt::Weight)) => {
            if slices > 1 {
                w.line("// Slice `slice` of the reduction over the batch's output rows writes its partial gradient at slice_base.")
                    .const_u32("SLICES", slices.into())
                    .line("// Elements of one partial gradient (the weight part's).")
                    .line("const PART: u32 = ROWS * ICG * K * K;")
                    .line("var<private> slice_base: u32;");
            }
            w.line("// A: dy of output channel m of the group at batch pixel k.");
            w.open("fn load_a(g: u32, m: u32, k: u32) -> f32").line(format!("return dy[((k / (OH * OW)) * OC + {oc0}g * {ocg} + m) * OH * OW + k % (OH * OW)];")).close();
            w.line("// B: the input under weight column n (channel, ky, kx) at batch pixel k; zero in the padding.");
            w.open("fn load_b(g: u32, k: u32, n: u32) -> f32")
                .line("let pix = k % (OH * OW);")
                .line("let iy = i32((pix / OW) * S + (n / K) % K) - i32(PAD);")
                .line("let ix = i32((pix % OW) * S + n % K) - i32(PAD);")
                .open("if (iy < 0 || iy >= i32(IH) || ix < 0 || ix >= i32(IW))")
                .line("return 0.0;")
                .close()
                .line(format!("return x[(((k / (OH * OW)) * IC + {group} * ICG + n / (K * K)) * IH + u32(iy)) * IW + u32(ix)];"))
                .close();
            let store = w
                .open("fn store(g: u32, m: u32, n: u32, v: f32)")
                .line(format!("let at = (g * {ocg} + m) * ICG * K * K + n;"));
            if slices > 1 {
                store.line("dwp[slice_base + at] = v;");
            } else {
                store.line(super::accumulate("at", "dw"));
            }
            store.close();
            Shape {
                groups,
                rows: ocg.into(),
                cols: "ICG * K * K",
                depth: "params.batch * OH * OW",
                walk: Walk::Pixels {
                    width: c.out_w,
                    group,
                    rows: ocg,
                    first: oc0,
                    split: slices > 1,
                },
            }
        }
        (NodeOp::Linear(_), Role::Forward) => {
            let rows4 = vec4_walk(plan, kernel) == Some(Vec4Walk::Rows);
            if rows4 {
                w.line("// A: the part's weight rows; B: the images, one column each; both read 4 features at a time.");
            } else {
                w.line("// A: the part's weight rows; B: the images, one column each.");
                w.open("fn load_a(g: u32, m: u32, k: u32) -> f32")
                    .line("return w[m * IN + k];")
                    .close();
                w.open("fn load_b(g: u32, k: u32, n: u32) -> f32")
                    .line("return x[n * IN + k];")
                    .close();
            }
            let value = act(&format!("v{}", bias("m")));
            match crate::schedule::fuse::epilogue_dropout(&plan.nodes, &kernel.covers) {
                Some(d) => {
                    let NodeOp::Dropout(d) = plan.nodes[d as usize].op else {
                        unreachable!("epilogue_dropout names a dropout")
                    };
                    w.line("// The dropout after ReLU, applied when training with dropout on (params.dropout).");
                    super::dropout_consts(w, &d);
                    super::training::mix32(w);
                    // A branch, not a select: inference (dropout off) skips the hash.
                    w.open("fn store(g: u32, m: u32, n: u32, v: f32)")
                        .line("let at = n * OUT + ROW0 + m;")
                        .line(format!("var a = {value};"))
                        .open("if (params.dropout == 1u)")
                        .line("a = select(0.0, a * SCALE, keep(at));")
                        .close()
                        .line("y[at] = a;")
                        .close();
                }
                None => {
                    w.open("fn store(g: u32, m: u32, n: u32, v: f32)")
                        .line(format!("y[n * OUT + ROW0 + m] = {value};"))
                        .close();
                }
            }
            Shape {
                groups: "1u",
                rows: "ROWS".into(),
                cols: "params.batch",
                depth: "IN",
                walk: if rows4 { Walk::Rows4 } else { Walk::Flat },
            }
        }
        (NodeOp::Linear(_), Role::Backward(Wrt::Input)) => {
            let cols4 = vec4_walk(plan, kernel) == Some(Vec4Walk::Cols);
            if cols4 {
                w.line("// dx = dy · W: A is the part's weight transposed (row m = input feature), B is dy of the part's rows;");
                w.line("// an invocation's 4 rows of A are one vec4 of a weight row, B is read 4 rows of the part at a time.");
            } else {
                w.line("// dx = dy · W: A is the part's weight transposed (row m = input feature), B is dy of the part's rows.");
                w.open("fn load_a(g: u32, m: u32, k: u32) -> f32")
                    .line("return w[k * IN + m];")
                    .close();
                w.open("fn load_b(g: u32, k: u32, n: u32) -> f32")
                    .line("return dy[n * OUT + ROW0 + k];")
                    .close();
            }
            w.open("fn store(g: u32, m: u32, n: u32, v: f32)")
                .line("let at = n * IN + m;")
                .line("// Later weight parts add to the first's.")
                .line("dx[at] = select(v, dx[at] + v, ACCUM);")
                .close();
            Shape {
                groups: "1u",
                rows: "IN".into(),
                cols: "params.batch",
                depth: "ROWS",
                walk: if cols4 { Walk::Cols4 } else { Walk::Flat },
            }
        }
        (NodeOp::Linear(_), Role::Backward(Wrt::Weight)) => {
            let dense = vec4_walk(plan, kernel) == Some(Vec4Walk::Dense);
            if dense {
                w.line("// dW = dyᵀ · x over the batch: A is dy of the part's rows, B the inputs, both read as vec4s");
                w.line("// (a lane's 4 rows, 4 consecutive columns), and dW written 4 columns at a time.");
                w.open("fn store4(m: u32, n: u32, v: vec4<f32>)")
                    .line("let at = (m * IN + n) / 4u;")
                    .line(super::accumulate("at", "dw"))
                    .close();
            } else {
                w.line("// dW = dyᵀ · x over the batch: A is dy of the part's rows, B the inputs.");
                w.open("fn load_a(g: u32, m: u32, k: u32) -> f32")
                    .line("return dy[k * OUT + ROW0 + m];")
                    .close();
                w.open("fn load_b(g: u32, k: u32, n: u32) -> f32")
                    .line("return x[k * IN + n];")
                    .close();
                w.open("fn store(g: u32, m: u32, n: u32, v: f32)")
                    .line("let at = m * IN + n;")
                    .line(super::accumulate("at", "dw"))
                    .close();
            }
            Shape {
                groups: "1u",
                rows: "ROWS".into(),
                cols: "IN",
                depth: "params.batch",
                walk: if dense { Walk::Dense4 } else { Walk::Flat },
            }
        }
        (op, role) => unreachable!("no GEMM instance for {role:?} of {}", op.name()),
    };
    decls(w, tile, &shape);
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    // A subgroup tile places its invocations by subgroup and lane, the others by index.
    let place = if tile.lanes() > 1 {
        "@builtin(subgroup_id) sgid: u32, @builtin(subgroup_invocation_id) lane: u32"
    } else {
        "@builtin(local_invocation_index) lid: u32"
    };
    w.open(format!("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, {place})"));
    w.line(
        "// The workgroup's tile; uniform across it, so the early return precedes every barrier.",
    );
    if slices > 1 {
        w.line("// Every slice runs the whole grid of output tiles.")
            .line("let flat = wid.y * nwg.x + wid.x;")
            .line(format!(
                "let tile = flat % (GROUPS_ * MT * (({} + TN - 1u) / TN));",
                shape.cols
            ))
            .line(format!(
                "let slice = flat / (GROUPS_ * MT * (({} + TN - 1u) / TN));",
                shape.cols
            ));
    } else {
        w.line("let tile = wid.y * nwg.x + wid.x;");
    }
    w.line("let tm = tile % (GROUPS_ * MT);")
        .line("let n0 = (tile / (GROUPS_ * MT)) * TN;")
        .line(format!("let cols = {};", shape.cols));
    if slices > 1 {
        w.open("if (slice >= SLICES)").line("return;").close();
        w.line("slice_base = slice * PART;")
            .line(
                "// The slice's output rows (image, row) of the batch, t0..t1, in contiguous runs.",
            )
            .line("let t0 = (slice * params.batch * OH) / SLICES;")
            .line("let t1 = ((slice + 1u) * params.batch * OH) / SLICES;");
    }
    // The walks of the conv kernels count their own loops; only the staged and flat loops read depth.
    let start = if slices > 1 && tile.staging == Staging::Workgroup {
        w.line("let kb = t0 * OW;").line("let depth = t1 * OW;");
        "kb"
    } else {
        if tile.staging == Staging::Workgroup || matches!(shape.walk, Walk::Flat | Walk::Dense4) {
            w.line(format!("let depth = {};", shape.depth));
        }
        "0u"
    };
    w.open("if (n0 >= cols)")
        .line("return;")
        .close()
        .line("let g = tm / MT;")
        .line("let m0 = (tm % MT) * TM;");
    if tile.lanes() > 1 {
        w.line("// Subgroup (sx, sy) holds rows sy * SG * RM.. and columns sx * RN.. of the tile; its lane")
            .line("// `lane` holds RM of those rows and all RN columns, and loads RN / SG of the columns.")
            .line("let sx = sgid % TX;")
            .line("let sy = sgid / TX;")
            .line("let rb = m0 + (sy * SG + lane) * RM;")
            .line("let nb = n0 + sx * RN;");
    } else {
        w.line("let tx = lid % TX;").line("let ty = lid / TX;");
    }
    match tile.staging {
        Staging::Workgroup => shared_body(w, tile, start),
        Staging::Registers | Staging::Subgroup { .. } => register_body(w, tile, shape.walk),
    }
    w.close();
}

/// B of a convolution: the input patch element `k` (channel, ky, kx) under output pixel `n` of
/// the batch, read in place from `input`; zero in the padding.
fn patch_loader(w: &mut Writer, input: &str, base: &str) {
    w.line("// B: the input under output pixel n of the batch at patch element k (channel, ky, kx); zero in the padding.");
    w.open("fn load_b(g: u32, k: u32, n: u32) -> f32")
        .line("let pix = n % (OH * OW);")
        .line("let iy = i32((pix / OW) * S + (k / K) % K) - i32(PAD);")
        .line("let ix = i32((pix % OW) * S + k % K) - i32(PAD);")
        .open("if (iy < 0 || iy >= i32(IH) || ix < 0 || ix >= i32(IW))")
        .line("return 0.0;")
        .close()
        .line(format!("return {input}[(((n / (OH * OW)) * IC + {base} + k / (K * K)) * IH + u32(iy)) * IW + u32(ix)];"))
        .close();
}

/// Tile constants, all from `tile`, and the workgroup memory of a staged tile.
fn decls(w: &mut Writer, tile: GemmTile, shape: &Shape) {
    w.line("");
    w.line(format!(
        "// GEMM tile: {} rows x {} columns per workgroup, a {}x{} block per invocation.",
        tile.m, tile.n, tile.rm, tile.rn
    ))
    .const_u32("TM", tile.m.into())
    .const_u32("TN", tile.n.into())
    .const_u32("TK", tile.k.into())
    .const_u32("RM", tile.rm.into())
    .const_u32("RN", tile.rn.into())
    .line(if tile.lanes() > 1 {
        "// Subgroups across the tile's columns."
    } else {
        "// Invocations across the tile's columns."
    })
    .line("const TX: u32 = TN / RN;")
    .line(format!("const GROUPS_: u32 = {};", shape.groups))
    .line(format!("const ROWS_: u32 = {};", shape.rows))
    .line("// Row tiles per group.")
    .line("const MT: u32 = (ROWS_ + TM - 1u) / TM;")
    .line("// Reduction steps per iteration of the register-only loop.")
    .const_u32("UNROLL", UNROLL.into());
    if tile.lanes() > 1 {
        w.line("// Lanes of a subgroup, which share B's columns.")
            .const_u32("SG", tile.lanes().into());
    }
    if tile.staging == Staging::Workgroup {
        w.line("// A's [TK][TM] slice, then B's [TK][TN] slice.")
            .line("const B0: u32 = TK * TM;")
            .line(format!(
                "var<workgroup> smem: array<f32, {}>;",
                tile.k * (tile.m + tile.n)
            ));
    }
}

/// Workgroup-memory staging: the workgroup loads TK-deep slices of A and B (consecutive
/// invocations read consecutive k of A and consecutive columns of B), then each invocation
/// multiplies its 4×4 block out of workgroup memory.
/// The reduction runs from `start` to `depth`.
fn shared_body(w: &mut Writer, tile: GemmTile, start: &str) {
    debug_assert_eq!(
        (tile.rm, tile.rn),
        (4, 4),
        "the staged tile's inner loop is written for 4x4 blocks"
    );
    let threads = tile.threads();
    super::acc_decls(w);
    w.line("// Loads and multiply-adds are unrolled: the only loop steps TK at a time (see LOOP_LIMIT).");
    w.open(format!("for (var k0 = {start}; k0 < depth; k0 += TK)"));
    for r in 0..tile.k * tile.m / threads {
        w.open("")
            .line(format!("let e = lid + {r}u * WG;"))
            .line("let mm = e / TK;")
            .line("let kk = e % TK;")
            .line("var v = 0.0;")
            .open("if (m0 + mm < ROWS_ && k0 + kk < depth)")
            .line("v = load_a(g, m0 + mm, k0 + kk);")
            .close()
            .line("smem[kk * TM + mm] = v;")
            .close();
    }
    for r in 0..tile.k * tile.n / threads {
        w.open("")
            .line(format!("let e = lid + {r}u * WG;"))
            .line("let kk = e / TN;")
            .line("let nn = e % TN;")
            .line("var v = 0.0;")
            .open("if (n0 + nn < cols && k0 + kk < depth)")
            .line("v = load_b(g, k0 + kk, n0 + nn);")
            .close()
            .line("smem[B0 + kk * TN + nn] = v;")
            .close();
    }
    w.line("workgroupBarrier();");
    for kk in 0..tile.k {
        super::fma_step(w, &format!("{kk}u"));
    }
    w.line("workgroupBarrier();");
    w.close();
    for i in 0..4 {
        for j in 0..4 {
            w.open(format!(
                "if (m0 + ty * 4u + {i}u < ROWS_ && n0 + tx * 4u + {j}u < cols)"
            ))
            .line(format!(
                "store(g, m0 + ty * 4u + {i}u, n0 + tx * 4u + {j}u, acc{i}{j});"
            ))
            .close();
        }
    }
}

/// Registers only: each invocation reads its own operands and keeps an RM×RN block in named
/// variables. Its rows are consecutive (so the invocations of a SIMD group share A's loads)
/// and its columns TX apart (so neighbouring invocations read neighbouring B elements).
/// Rows and columns past the edge are clamped to the last one, computed and not stored, which
/// keeps the inner loop free of branches.
///
/// With [`Staging::Subgroup`] the lanes of a subgroup share the block's RN columns: lane l
/// loads B at columns `l + t * SG` (`c{t}`, t < RN / SG; every per-column quantity below is
/// per loaded column) and block column j is lane `j % SG`'s load `t = j / SG`, broadcast.
fn register_body(w: &mut Writer, tile: GemmTile, walk: Walk) {
    let shared = tile.lanes() > 1;
    let row = |i: u32| {
        if shared {
            format!("rb + {i}u")
        } else {
            format!("m0 + ty * RM + {i}u")
        }
    };
    let col = |j: u32| {
        if shared {
            format!("nb + {j}u")
        } else {
            format!("n0 + tx + {j}u * TX")
        }
    };
    for i in 0..tile.rm {
        w.line(format!("let r{i} = min({}, ROWS_ - 1u);", row(i)));
    }
    let loads = tile.rn / tile.lanes();
    for j in 0..loads {
        let at = if shared {
            format!("nb + lane + {j}u * SG")
        } else {
            col(j)
        };
        w.line(format!("let c{j} = min({at}, cols - 1u);"));
    }
    match walk {
        Walk::Flat => {}
        Walk::Cols4 => {
            w.line("// The invocation's rows 4g.. as vec4 g of a weight row; column j's first vec4 of dy.");
            for g in 0..tile.rm / 4 {
                w.line(format!(
                    "let ra{g} = min(m0 + ty * RM + {}u, ROWS_ - 4u) / 4u;",
                    4 * g
                ));
            }
            for j in 0..loads {
                w.line(format!("let cb{j} = (c{j} * OUT + ROW0) / 4u;"));
            }
        }
        Walk::Dense4 => {
            w.line(
                "// The lane's 4 rows as a vec4 of a dy row; its 4 columns as a vec4 of an x row.",
            )
            .line("let ra = ROW0 / 4u + min(rb, ROWS_ - 4u) / 4u;")
            .line("let cb = min(nb + lane * 4u, cols - 4u) / 4u;");
        }
        Walk::Rows4 => {
            w.line("// Row i's and column j's first vec4.");
            for i in 0..tile.rm {
                w.line(format!("let ra{i} = r{i} * (IN / 4u);"));
            }
            for j in 0..loads {
                w.line(format!("let cb{j} = c{j} * (IN / 4u);"));
            }
        }
        Walk::Patch { base, .. } => {
            w.line("// Column j: its image's first input channel of the group, and its window's top-left corner.");
            for j in 0..loads {
                w.line(format!("let p{j} = c{j} % (OH * OW);"))
                    .line(format!(
                        "let base{j} = i32(((c{j} / (OH * OW)) * IC + {base}) * IH * IW);"
                    ))
                    .line(format!("let cy{j} = i32((p{j} / OW) * S) - i32(PAD);"))
                    .line(format!("let cx{j} = i32((p{j} % OW) * S) - i32(PAD);"));
            }
        }
        Walk::Pixels {
            group, rows, first, ..
        } => {
            w.line("// Row i: its dy channel; column j (channel, ky, kx): its tap's offset from an output pixel's window.");
            for i in 0..tile.rm {
                w.line(format!("let ra{i} = ({first}g * {rows} + r{i}) * OH * OW;"));
            }
            for j in 0..loads {
                w.line(format!("let dy{j} = i32((c{j} / K) % K) - i32(PAD);"))
                    .line(format!("let dx{j} = i32(c{j} % K) - i32(PAD);"))
                    .line(format!("let off{j} = i32(({group} * ICG + c{j} / (K * K)) * IH * IW) + dy{j} * i32(IW) + dx{j};"));
            }
        }
    }
    for i in 0..tile.rm {
        for j in 0..tile.rn {
            w.line(format!("var acc{i}_{j} = 0.0;"));
        }
    }
    match walk {
        Walk::Flat => {
            w.line("// UNROLL steps of the reduction per iteration, then the rest one by one (see LOOP_LIMIT).");
            w.line("var k = 0u;");
            w.open("for (; k + UNROLL <= depth; k += UNROLL)");
            for u in 0..UNROLL {
                flat_step(w, tile, &format!("k + {u}u"));
            }
            w.close();
            w.open("for (; k < depth; k++)");
            flat_step(w, tile, "k");
            w.close();
        }
        Walk::Cols4 => {
            let step = |w: &mut Writer, q: &str| {
                w.open("");
                for j in 0..tile.rn {
                    w.line(format!("let b{j} = dy[cb{j} + {q}];"));
                }
                for kk in 0..4 {
                    for g in 0..tile.rm / 4 {
                        w.line(format!(
                            "let a{kk}_{g} = w[(({q}) * 4u + {kk}u) * (IN / 4u) + ra{g}];"
                        ));
                    }
                }
                for kk in 0..4 {
                    for i in 0..tile.rm {
                        for j in 0..tile.rn {
                            w.line(format!(
                                "acc{i}_{j} += a{kk}_{}.{} * b{j}.{};",
                                i / 4,
                                XYZW[(i % 4) as usize],
                                XYZW[kk]
                            ));
                        }
                    }
                }
                w.close();
            };
            let per = UNROLL / 4;
            w.line(format!("// {per} vec4 steps of the reduction per iteration, then the rest one by one (see LOOP_LIMIT)."))
                .line("var q = 0u;");
            w.open(format!("for (; q + {per}u <= ROWS / 4u; q += {per}u)"));
            for u in 0..per {
                step(w, &format!("q + {u}u"));
            }
            w.close();
            w.open("for (; q < ROWS / 4u; q++)");
            step(w, "q");
            w.close();
        }
        Walk::Dense4 => {
            let step = |w: &mut Writer, k: &str| {
                w.open("")
                    .line(format!("let a = dy[({k}) * (OUT / 4u) + ra];"))
                    .line(format!("let v = x[({k}) * (IN / 4u) + cb];"));
                for l in 0..tile.lanes() {
                    w.line(format!("let s{l} = subgroupBroadcast(v, {l}u);"));
                }
                for i in 0..tile.rm {
                    for j in 0..tile.rn {
                        w.line(format!(
                            "acc{i}_{j} += a.{} * s{}.{};",
                            XYZW[i as usize],
                            j / 4,
                            XYZW[(j % 4) as usize]
                        ));
                    }
                }
                w.close();
            };
            w.line("// UNROLL steps of the reduction per iteration, then the rest one by one (see LOOP_LIMIT).");
            w.line("var k = 0u;");
            w.open("for (; k + UNROLL <= depth; k += UNROLL)");
            for u in 0..UNROLL {
                step(w, &format!("k + {u}u"));
            }
            w.close();
            w.open("for (; k < depth; k++)");
            step(w, "k");
            w.close();
        }
        Walk::Rows4 => {
            debug_assert!(!shared, "a linear forward over images has no subgroup form");
            let step = |w: &mut Writer, q: &str| {
                w.open("");
                for i in 0..tile.rm {
                    w.line(format!("let a{i} = w[ra{i} + {q}];"));
                }
                for j in 0..tile.rn {
                    w.line(format!("let b{j} = x[cb{j} + {q}];"));
                }
                for i in 0..tile.rm {
                    for j in 0..tile.rn {
                        w.line(format!("acc{i}_{j} += dot(a{i}, b{j});"));
                    }
                }
                w.close();
            };
            let per = UNROLL / 4;
            w.line(format!("// {per} vec4 steps of the reduction per iteration, then the rest one by one (see LOOP_LIMIT)."))
                .line("var q = 0u;");
            w.open(format!("for (; q + {per}u <= IN / 4u; q += {per}u)"));
            for u in 0..per {
                step(w, &format!("q + {u}u"));
            }
            w.close();
            w.open("for (; q < IN / 4u; q++)");
            step(w, "q");
            w.close();
        }
        Walk::Patch {
            input,
            flipped,
            kernel,
            channels,
            steps_kx,
            ..
        } => {
            // Either one iteration per (channel, ky) with kx unrolled, or one per (channel, ky,
            // kx); each step of kx is (its u32 for A, its i32 for B's column).
            let (bound, kxs) = if steps_kx {
                w.line("// One iteration per (input channel, kernel row, kernel column).");
                ("K * K", vec![("kx".to_string(), "i32(kx)".to_string())])
            } else {
                w.line("// One iteration per (input channel, kernel row); the kernel's columns are unrolled.");
                let kxs = (0..kernel).map(|kx| (format!("{kx}u"), format!("{kx}")));
                ("K", kxs.collect())
            };
            w.open(format!("for (var q = 0u; q < {channels} * {bound}; q++)"));
            if steps_kx {
                w.line("let ci = q / (K * K);")
                    .line("let ky = (q / K) % K;")
                    .line("let kx = q % K;");
            } else {
                w.line("let ci = q / K;").line("let ky = q % K;");
            }
            for i in 0..tile.rm {
                w.line(format!("let wr{i} = wrow(g, r{i}, ci, ky);"));
            }
            for j in 0..loads {
                w.line(format!("let iy{j} = cy{j} + i32(ky);"))
                    .line(format!("let in{j} = iy{j} >= 0 && iy{j} < i32(IH);"))
                    .line(format!(
                        "let row{j} = base{j} + i32(ci * IH * IW) + iy{j} * i32(IW) + cx{j};"
                    ));
            }
            // Padding reads nothing that is used: a negative index is clamped to 0, one past the end is
            // bounds-checked by naga, and the value is selected away.
            for (ku, ki) in &kxs {
                w.open("");
                let a = |i: u32| format!("w[wr{i} {} {ku}]", if flipped { "-" } else { "+" });
                let b = |j: u32| {
                    format!("select(0.0, {input}[u32(max(row{j} + {ki}, 0))], in{j} && cx{j} + {ki} >= 0 && cx{j} + {ki} < i32(IW))")
                };
                fma_block(w, tile, a, b);
                w.close();
            }
            w.close();
        }
        Walk::Pixels { width, split, .. } => {
            w.line("// One iteration per (image, output row); the row's pixels are unrolled UNROLL at a time.");
            w.open(if split {
                "for (var t = t0; t < t1; t++)"
            } else {
                "for (var t = 0u; t < params.batch * OH; t++)"
            })
            .line("let img = t / OH;")
            .line("let oy = t % OH;")
            .line("let xb = i32(img * IC * IH * IW + oy * S * IW);")
            .line("let ab = img * OC * OH * OW + oy * OW;");
            for j in 0..loads {
                w.line(format!("let row{j} = xb + off{j};"))
                    .line(format!("let iy{j} = i32(oy * S) + dy{j};"))
                    .line(format!("let in{j} = iy{j} >= 0 && iy{j} < i32(IH);"));
            }
            let step = |w: &mut Writer, ox: &str| {
                w.open("");
                let a = |i: u32| format!("dy[ab + ra{i} + {ox}]");
                let b = |j: u32| {
                    format!("select(0.0, x[u32(max(row{j} + i32(({ox}) * S), 0))], in{j} && i32(({ox}) * S) + dx{j} >= 0 && i32(({ox}) * S) + dx{j} < i32(IW))")
                };
                fma_block(w, tile, a, b);
                w.close();
            };
            let whole = width - width % UNROLL;
            if whole > 0 {
                w.open("for (var ox = 0u; ox < OW - OW % UNROLL; ox += UNROLL)");
                for u in 0..UNROLL {
                    step(w, &format!("ox + {u}u"));
                }
                w.close();
            }
            for ox in whole..width {
                step(w, &format!("{ox}u"));
            }
            w.close();
        }
    }
    if walk == Walk::Dense4 {
        // The columns come 4 at a time and the matrix's width divides by 4, so a vec4 is
        // wholly inside or wholly past the edge.
        for i in 0..tile.rm {
            for q in 0..tile.rn / 4 {
                let v: Vec<String> = (0..4).map(|c| format!("acc{i}_{}", q * 4 + c)).collect();
                w.open(format!("if ({} < ROWS_ && {} < cols)", row(i), col(q * 4)))
                    .line(format!(
                        "store4(r{i}, {}, vec4<f32>({}));",
                        col(q * 4),
                        v.join(", ")
                    ))
                    .close();
            }
        }
        return;
    }
    for i in 0..tile.rm {
        for j in 0..tile.rn {
            // A stored column is inside the matrix, so a shared block's needs no clamp.
            let at = if shared { col(j) } else { format!("c{j}") };
            w.open(format!("if ({} < ROWS_ && {} < cols)", row(i), col(j)))
                .line(format!("store(g, r{i}, {at}, acc{i}_{j});"))
                .close();
        }
    }
}

/// The linear products a CPU form reads 4 floats at a time, where every operand is contiguous
/// along the direction read and the sizes divide by 4: a software adapter gathers each load
/// lane by lane, so a `vec4` costs one gather where four scalars cost four.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Vec4Walk {
    /// Forward: A's rows (`w`) and B's columns (`x`) along the reduction ([`Walk::Rows4`]).
    Rows,
    /// Input gradient: A (`w` transposed) across an invocation's 4 rows, B (`dy`) along the
    /// reduction ([`Walk::Cols4`]).
    Cols,
    /// Weight gradient in the subgroup form: A (`dy`) across a lane's 4 rows, B (`x`) across
    /// 4 of the subgroup's columns, and the gradient (`dw`) stored 4 columns at a time
    /// ([`Walk::Dense4`]).
    Dense,
}

impl Vec4Walk {
    /// The bindings read or written as `array<vec4<f32>>`.
    pub fn bindings(self) -> &'static [&'static str] {
        match self {
            Vec4Walk::Rows => &["x", "w"],
            Vec4Walk::Cols => &["w", "dy"],
            Vec4Walk::Dense => &["dy", "x", "dw"],
        }
    }
}

/// Whether `kernel` is a linear product with a `vec4` form, and which.
pub fn vec4_walk(plan: &Plan, kernel: &Kernel) -> Option<Vec4Walk> {
    let (NodeOp::Linear(l), Algo::Gemm(tile)) = (plan.nodes[kernel.node as usize].op, kernel.algo)
    else {
        return None;
    };
    let part =
        crate::schedule::algo::kernel_part(&plan.params, kernel).unwrap_or(alexnet_plan::Part {
            start: 0,
            rows: l.out_features,
        });
    let by4 = |v: u32| v % 4 == 0;
    let dense = by4(l.in_features) && by4(l.out_features) && by4(part.start) && by4(part.rows);
    match (kernel.role, tile.staging) {
        (Role::Forward, Staging::Registers) if by4(l.in_features) => Some(Vec4Walk::Rows),
        (Role::Backward(Wrt::Input), Staging::Registers) if dense && tile.rm % 4 == 0 => {
            Some(Vec4Walk::Cols)
        }
        (Role::Backward(Wrt::Weight), Staging::Subgroup { lanes })
            if dense && tile.rm == 4 && tile.rn == 4 * lanes =>
        {
            Some(Vec4Walk::Dense)
        }
        _ => None,
    }
}

/// How many parts the weight a kernel binds is split into.
fn weight_parts(plan: &Plan, kernel: &Kernel) -> usize {
    kernel
        .bindings
        .iter()
        .filter_map(alexnet_plan::Binding::param_part)
        .find(|&(index, _)| plan.params[index as usize].shape.len() > 1)
        .map_or(1, |(index, _)| plan.params[index as usize].parts.len())
}

/// One step of the flat reduction at `k` for every element of an invocation's register block.
fn flat_step(w: &mut Writer, tile: GemmTile, k: &str) {
    w.open("");
    fma_block(
        w,
        tile,
        |i| format!("load_a(g, r{i}, {k})"),
        |j| format!("load_b(g, {k}, c{j})"),
    );
    w.close();
}

/// Reads A's `a(i)` for every row and B's `b(j)` for every column of the register block, then
/// adds their products to the accumulators.
///
/// With [`Staging::Subgroup`], `b(t)` is the lane's load at its column `c{t}`, and block
/// column j is lane `j % SG`'s load `j / SG`.
fn fma_block(w: &mut Writer, tile: GemmTile, a: impl Fn(u32) -> String, b: impl Fn(u32) -> String) {
    for i in 0..tile.rm {
        w.line(format!("let a{i} = {};", a(i)));
    }
    let lanes = tile.lanes();
    if lanes > 1 {
        for t in 0..tile.rn / lanes {
            w.line(format!("let v{t} = {};", b(t)));
        }
        for j in 0..tile.rn {
            w.line(format!(
                "let b{j} = subgroupBroadcast(v{}, {}u);",
                j / lanes,
                j % lanes
            ));
        }
    } else {
        for j in 0..tile.rn {
            w.line(format!("let b{j} = {};", b(j)));
        }
    }
    for i in 0..tile.rm {
        for j in 0..tile.rn {
            w.line(format!("acc{i}_{j} += a{i} * b{j};"));
        }
    }
}

/// The convolution computing a stride-1 conv's input gradient: dy's channels in, x's
/// channels out, padding K - 1 - pad.
pub fn input_gradient_conv(c: &ConvNode) -> ConvNode {
    ConvNode {
        in_channels: c.out_channels,
        in_h: c.out_h,
        in_w: c.out_w,
        out_channels: c.in_channels,
        out_h: c.in_h,
        out_w: c.in_w,
        pad: c.kernel - 1 - c.pad,
        ..*c
    }
}
