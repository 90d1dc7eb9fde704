//! WGSL of the training kernels: dropout masks, the loss, every gradient and the update.
//!
//! GEMM-shaped gradients (conv and linear, by input and weight) are instances of the GEMM
//! generator (`gemm.rs`); bias gradients are tree reductions, a workgroup per channel. The rest
//! run one invocation per element they write, gathering what they need. No two invocations
//! write the same address and no atomics are needed: results are deterministic, which makes a
//! training run reproducible bit for bit. A later micro-batch adds to a parameter's gradient
//! (`params.accumulate`).

use super::writer::Writer;
use alexnet_plan::{Algo, Binding, Dispatch, Kernel, LrnNode, NodeOp, Plan, PoolNode, Role, Wrt};

/// Writes `main` of a training kernel; the op's constants are already declared.
pub fn body(w: &mut Writer, plan: &Plan, kernel: &Kernel) {
    let node = &plan.nodes[kernel.node as usize];
    if matches!(node.op, NodeOp::Dropout(_)) {
        mix32(w);
    }
    if let (NodeOp::Lrn(_), Role::Backward(Wrt::Input)) = (node.op, kernel.role) {
        lrn_denominator(w);
    }
    if let Algo::RowReduce { threads } = kernel.algo {
        w.line("// Partial sums of the workgroup's invocations, reduced as a tree.");
        w.line(format!("var<workgroup> partial: array<f32, {threads}>;"));
    }
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)");
    if let (Algo::RowReduce { .. }, Role::Backward(Wrt::Bias)) = (kernel.algo, kernel.role) {
        bias_reduce(w, plan, kernel);
        w.close();
        return;
    }
    w.line("let i = flat_index(wid, nwg, lid, WG);");
    let total = if kernel.dispatch == Dispatch::Fixed {
        "THREADS"
    } else {
        "params.batch * THREADS"
    };
    w.open(format!("if (i >= {total})")).line("return;").close();
    match (kernel.role, node.op) {
        (Role::Dropout, _) => {
            w.line("y[i] = select(0.0, y[i] * SCALE, keep(i));");
        }
        (Role::Backward(_), NodeOp::Dropout(_)) => {
            w.line("// The forward mask, recomputed from the same counter.");
            w.line("dx[i] = select(0.0, dx[i] * SCALE, keep(i));");
        }
        (Role::Loss, _) => loss(w),
        (Role::Update, _) => {
            // Per element, or per vec4 of four (`Algo::Vec4`: p, g and m are vec4 arrays).
            w.line("// v <- momentum * v - decay * lr * w - lr * dL/dw;  w <- w + v")
                .line("let w0 = p[i];")
                .line("let v = params.momentum * m[i] - params.decay * params.lr * w0 - params.lr * g[i];")
                .line("m[i] = v;")
                .line("p[i] = w0 + v;");
        }
        (Role::Backward(Wrt::Input), NodeOp::Conv(_)) => conv_input(w),
        (Role::Backward(Wrt::Weight), NodeOp::Conv(_)) => conv_weight(w),
        (Role::Backward(Wrt::Input), NodeOp::Relu) => {
            w.line("dx[i] = select(0.0, dy[i], x[i] > 0.0);");
        }
        (Role::Backward(Wrt::Input), NodeOp::Lrn(_)) => lrn_input(w),
        (Role::Backward(Wrt::Input), NodeOp::MaxPool(_)) => pool_input(w),
        (Role::Backward(Wrt::Input), NodeOp::Softmax) => softmax_input(w),
        (role, op) => unreachable!("no training kernel {role:?} for {op:?}"),
    }
    w.close();
}

/// The second stage of a split weight gradient (`Algo::SliceSum`): element (or vec4) `i` of
/// the gradient is the sum of the slices' partial gradients, added in slice order so that
/// every run gives the same bits; a later micro-batch adds it to the gradient.
pub fn slice_sum(w: &mut Writer, kernel: &Kernel) {
    w.line("// Partial gradients, one after another, THREADS elements (or vec4s) each.")
        .const_u32("SLICES", kernel.slices().into())
        .line("")
        .line("@compute @workgroup_size(WG)")
        .open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)")
        .line("let i = flat_index(wid, nwg, lid, WG);")
        .open("if (i >= THREADS)")
        .line("return;")
        .close()
        .line("var v = dwp[i];")
        .open("for (var s = 1u; s < SLICES; s++)")
        .line("v += dwp[s * THREADS + i];")
        .close()
        .line("// A branch, not a select: the gradient is read only when a later micro-batch adds to it.")
        .line(super::accumulate("i", "dw"))
        .close();
}

/// The dropout hash (`alexnet_plan::mix32`) and the keep decision of element `i`.
pub(crate) fn mix32(w: &mut Writer) {
    w.line("")
        .open("fn mix32(v: u32) -> u32")
        .line("var x = v;")
        .line("x ^= x >> 16u;")
        .line("x *= 0x7feb352du;")
        .line("x ^= x >> 15u;")
        .line("x *= 0x846ca68bu;")
        .line("x ^= x >> 16u;")
        .line("return x;")
        .close()
        .line("")
        .line("// Element i of this pass is element (image0 * ELEMS + i) of the whole batch.")
        .open("fn keep(i: u32) -> bool")
        .line("let h = mix32((params.image0 * ELEMS + i) ^ mix32(STREAM ^ mix32(params.step ^ mix32(params.seed))));")
        .line("return (h >> 8u) >= THRESHOLD;")
        .close();
}

fn loss(w: &mut Writer) {
    w.line("let base = i * CLASSES;")
        .line("let label = labels[i];")
        .line("var mx = x[base];");
    w.open("for (var c = 1u; c < CLASSES; c++)")
        .line("mx = max(mx, x[base + c]);")
        .close();
    w.line("var sum = 0.0;");
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("sum += exp(x[base + c] - mx);")
        .close();
    w.line("loss[i] = log(sum) + mx - x[base + label];");
    w.line("// d(mean loss)/d logit = (softmax - one-hot) / images in the whole batch.");
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("let p = exp(x[base + c] - mx) / sum;")
        .line("dx[base + c] = (p - select(0.0, 1.0, c == label)) * params.grad_scale;")
        .close();
}

fn store_input_grad(w: &mut Writer) {
    w.open("if (ACCUM)")
        .line("dx[i] = dx[i] + acc;")
        .close()
        .open("else")
        .line("dx[i] = acc;")
        .close();
}

fn store_param_grad(w: &mut Writer, name: &str) {
    // Read only when a later micro-batch adds to it.
    w.open("if (params.accumulate == 1u)")
        .line(format!("{name}[i] = {name}[i] + acc;"))
        .close()
        .open("else")
        .line(format!("{name}[i] = acc;"))
        .close();
}

/// dx[n, c, iy, ix] = sum over the outputs whose window covers (iy, ix) of dy * w.
fn conv_input(w: &mut Writer) {
    w.line("let n = i / THREADS;")
        .line("let r = i % THREADS;")
        .line("let c = r / (IH * IW);")
        .line("let iy = (r / IW) % IH;")
        .line("let ix = r % IW;")
        .line("let g = c / ICG;")
        .line("let icl = c % ICG;")
        .line("// Output channels of c's group within this weight part.")
        .line("let o_lo = max(g * OCG, ROW0);")
        .line("let o_hi = min((g + 1u) * OCG, ROW0 + ROWS);")
        .line("var acc = 0.0;");
    w.open("for (var ky = 0u; ky < K; ky++)")
        .line("let ty = i32(iy + PAD) - i32(ky);")
        .open("if (ty < 0 || ty % i32(S) != 0 || u32(ty) / S >= OH)")
        .line("continue;")
        .close()
        .line("let oy = u32(ty) / S;");
    w.open("for (var kx = 0u; kx < K; kx++)")
        .line("let tx = i32(ix + PAD) - i32(kx);")
        .open("if (tx < 0 || tx % i32(S) != 0 || u32(tx) / S >= OW)")
        .line("continue;")
        .close()
        .line("let ox = u32(tx) / S;");
    w.open("for (var o = o_lo; o < o_hi; o++)")
        .line("acc += dy[((n * OC + o) * OH + oy) * OW + ox] * w[(((o - ROW0) * ICG + icl) * K + ky) * K + kx];")
        .close();
    w.close().close();
    store_input_grad(w);
}

/// dw[o, icl, ky, kx] = sum over images and output pixels of dy * x.
fn conv_weight(w: &mut Writer) {
    w.line("let o = ROW0 + i / (ICG * K * K);")
        .line("let icl = (i / (K * K)) % ICG;")
        .line("let ky = (i / K) % K;")
        .line("let kx = i % K;")
        .line("let c = (o / OCG) * ICG + icl;")
        .line("var acc = 0.0;");
    w.open("for (var n = 0u; n < params.batch; n++)")
        .line("var part = 0.0;");
    w.open("for (var oy = 0u; oy < OH; oy++)")
        .line("let iy = i32(oy * S + ky) - i32(PAD);")
        .open("if (iy < 0 || iy >= i32(IH))")
        .line("continue;")
        .close();
    w.open("for (var ox = 0u; ox < OW; ox++)")
        .line("let ix = i32(ox * S + kx) - i32(PAD);")
        .open("if (ix < 0 || ix >= i32(IW))")
        .line("continue;")
        .close()
        .line("part += dy[((n * OC + o) * OH + oy) * OW + ox] * x[((n * IC + c) * IH + u32(iy)) * IW + u32(ix)];");
    w.close().close();
    w.line("acc += part;");
    w.close();
    store_param_grad(w, "dw");
}

/// A bias gradient as a parallel reduction: a workgroup per channel (of this part), its
/// invocations striding over the batch's pixels and summing as a tree, in a fixed order, so
/// the result is the same on every run.
/// How a conv bias gradient walks dy: `width` values per load (4 where each image's pixels of
/// a channel are whole `vec4`s: a software adapter loads 4 values per lane where it gathered
/// one), and `per_image`, image by image along a channel's contiguous pixels (no division per
/// load) where an image has at least a workgroup's worth of loads, else one walk over the
/// whole batch's (which keeps the lanes of small late layers busy). `None` for other kernels.
pub fn conv_bias_walk(plan: &Plan, kernel: &Kernel) -> Option<(u32, bool)> {
    match (
        plan.nodes[kernel.node as usize].op,
        kernel.algo,
        kernel.role,
    ) {
        (NodeOp::Conv(c), Algo::RowReduce { threads }, Role::Backward(Wrt::Bias)) => {
            let hw = c.out_h * c.out_w;
            let width = if hw % 4 == 0 { 4 } else { 1 };
            Some((width, hw / width >= threads))
        }
        _ => None,
    }
}

/// A bias gradient, a workgroup per channel: each invocation sums a stride of the channel's
/// dy over the batch (a conv's as [`conv_bias_walk`] says), then the workgroup's tree.
fn bias_reduce(w: &mut Writer, plan: &Plan, kernel: &Kernel) {
    w.line("let o = wid.y * nwg.x + wid.x;")
        .line("// Uniform across the workgroup, so the early return precedes every barrier.")
        .open("if (o >= ROWS)")
        .line("return;")
        .close()
        .line("var acc = 0.0;");
    let Some((width, per_image)) = conv_bias_walk(plan, kernel) else {
        w.open("for (var n = lid; n < params.batch; n += WG)")
            .line("acc += dy[n * OUT + ROW0 + o];")
            .close();
        return tree_sum(w);
    };
    let (ty, zero, sum) = if width == 4 {
        (
            "vec4<f32>",
            "vec4<f32>(0.0)",
            "(acc_.x + acc_.y) + (acc_.z + acc_.w)",
        )
    } else {
        ("f32", "0.0", "acc_")
    };
    w.line(format!("let hw = OH * OW / {width}u;"))
        .line(format!("var acc_: {ty} = {zero};"));
    if per_image {
        w.line("// Image by image along the channel's contiguous pixels: no division per load.")
            .open("for (var n = 0u; n < params.batch; n++)")
            .line("let base = (n * OC + ROW0 + o) * hw;")
            .open("for (var q = lid; q < hw; q += WG)")
            .line("acc_ += dy[base + q];")
            .close()
            .close();
    } else {
        w.line("// Fewer pixels than lanes: one walk over the whole batch's keeps the lanes busy.")
            .open("for (var q = lid; q < params.batch * hw; q += WG)")
            .line("acc_ += dy[((q / hw) * OC + ROW0 + o) * hw + q % hw];")
            .close();
    }
    w.line(format!("acc = {sum};"));
    tree_sum(w);
}

/// The workgroup's tree over its invocations' sums `acc`; invocation 0 stores (or adds) it.
fn tree_sum(w: &mut Writer) {
    w.line("partial[lid] = acc;").line("workgroupBarrier();");
    w.open("for (var s = WG / 2u; s > 0u; s = s / 2u)")
        .open("if (lid < s)")
        .line("partial[lid] += partial[lid + s];")
        .close()
        .line("workgroupBarrier();")
        .close();
    w.open("if (lid == 0u)")
        .line("let v = partial[0];")
        .open("if (params.accumulate == 1u)")
        .line("db[o] = db[o] + v;")
        .close()
        .open("else")
        .line("db[o] = v;")
        .close()
        .close();
}

/// `k + alpha * sum of squares` over channel j's window, at image n and pixel pix.
fn lrn_denominator(w: &mut Writer) {
    w.line("")
        .open("fn denominator(n: u32, j: u32, pix: u32) -> f32")
        .line("let lo = select(0u, j - LO, j >= LO);")
        .line("let hi = min(C - 1u, j + HI);")
        .line("var sum = 0.0;")
        .open("for (var m = lo; m <= hi; m++)")
        .line("let a = x[(n * C + m) * HW + pix];")
        .line("sum += a * a;")
        .close()
        .line("return KBIAS + ALPHA * sum;")
        .close();
}

/// y_j = x_j * D_j^-beta with D_j over j's window, so
/// dx_c = dy_c * D_c^-beta - 2 alpha beta x_c * sum over j whose window holds c of dy_j x_j D_j^(-beta-1),
/// with D^(-beta-1) computed as D^-beta / D, as the chain kernel does.
fn lrn_input(w: &mut Writer) {
    w.line("let n = i / (C * HW);")
        .line("let c = (i / HW) % C;")
        .line("let pix = i % HW;")
        .line("var acc = dy[i] * pow(denominator(n, c, pix), -BETA);")
        .line("// Channels j with c in [j - LO, j + HI].")
        .line("let lo = select(0u, c - HI, c >= HI);")
        .line("let hi = min(C - 1u, c + LO);")
        .line("var cross = 0.0;");
    w.open("for (var j = lo; j <= hi; j++)")
        .line("let at = (n * C + j) * HW + pix;")
        .line("let d = denominator(n, j, pix);")
        .line("cross += dy[at] * x[at] * (pow(d, -BETA) / d);")
        .close();
    w.line("dx[i] = acc - 2.0 * ALPHA * BETA * x[i] * cross;");
}

/// Each output's gradient goes to the first maximum of its window in row-major order (the
/// reference's tie rule); an input gathers from every window that covers it.
fn pool_input(w: &mut Writer) {
    w.line("let nc = i / (IH * IW);")
        .line("let iy = (i / IW) % IH;")
        .line("let ix = i % IW;");
    pool_gather(w, "x");
    w.line("dx[i] = acc;");
}

/// `acc` = the gradient of max-pool input (nc, iy, ix): the sum of the output gradients `dy`
/// of the windows whose first maximum in `x` it is.
fn pool_gather(w: &mut Writer, x: &str) {
    w.line("let xbase = nc * IH * IW;")
        .line("// Outputs whose window [o * S - PAD, o * S - PAD + K) covers the input.")
        .line("let oy_lo = select(0u, (iy + PAD + S - K) / S, iy + PAD + 1u >= K);")
        .line("let oy_hi = min((iy + PAD) / S, OH - 1u);")
        .line("let ox_lo = select(0u, (ix + PAD + S - K) / S, ix + PAD + 1u >= K);")
        .line("let ox_hi = min((ix + PAD) / S, OW - 1u);")
        .line("var acc = 0.0;");
    w.open("for (var oy = oy_lo; oy <= oy_hi; oy++)");
    w.open("for (var ox = ox_lo; ox <= ox_hi; ox++)")
        .line("var best = 0.0;")
        .line("var arg = 0xffffffffu;");
    w.open("for (var ky = 0u; ky < K; ky++)")
        .line("let wy = i32(oy * S + ky) - i32(PAD);")
        .open("if (wy < 0 || wy >= i32(IH))")
        .line("continue;")
        .close();
    w.open("for (var kx = 0u; kx < K; kx++)")
        .line("let wx = i32(ox * S + kx) - i32(PAD);")
        .open("if (wx < 0 || wx >= i32(IW))")
        .line("continue;")
        .close()
        .line("let at = u32(wy) * IW + u32(wx);")
        .line(format!("let v = {x}[xbase + at];"))
        .open("if (arg == 0xffffffffu || v > best)")
        .line("best = v;")
        .line("arg = at;")
        .close();
    w.close().close();
    w.open("if (arg == iy * IW + ix)")
        .line("acc += dy[(nc * OH + oy) * OW + ox];")
        .close();
    w.close().close();
}

/// The input gradient of a ReLU / LRN / max-pool chain after a conv, in one kernel: the same
/// arithmetic as the per-op kernels in the same order, without storing the gradients between
/// the ops. `x` is ReLU's output (= LRN's input when both are there), `xp` the pool's input
/// when that is another tensor. With an LRN, an invocation walks one pixel's channels in
/// order, keeping the last SIZE channels' terms in a ring, so each channel's pool gradient
/// and LRN denominator is computed once; without, an invocation computes one element.
pub fn chain_input(w: &mut Writer, plan: &Plan, kernel: &Kernel) {
    let ops: Vec<NodeOp> = kernel
        .covers
        .iter()
        .map(|&n| plan.nodes[n as usize].op)
        .collect();
    let relu = ops.contains(&NodeOp::Relu);
    let lrn = ops.iter().find_map(|op| {
        if let NodeOp::Lrn(l) = op {
            Some(*l)
        } else {
            None
        }
    });
    let pool = ops.iter().find_map(|op| {
        if let NodeOp::MaxPool(p) = op {
            Some(*p)
        } else {
            None
        }
    });
    let dropout = ops.iter().find_map(|op| {
        if let NodeOp::Dropout(d) = op {
            Some(*d)
        } else {
            None
        }
    });
    let reads = kernel
        .bindings
        .iter()
        .filter(|b| matches!(b, Binding::Activation { write: false, .. }))
        .count();
    let pool_x = if reads > 1 { "xp" } else { "x" };
    match (lrn, pool) {
        (Some(l), _) => {
            super::lrn_consts(w, &l);
            w.line("// Channels whose terms the ring keeps.")
                .const_u32("SIZE", l.size.into());
        }
        (None, Some(p)) => {
            w.const_u32("C", p.channels.into())
                .const_u32("HW", u64::from(p.in_h) * u64::from(p.in_w));
        }
        (None, None) => {
            let d = dropout.expect("a backward chain holds an LRN, a max-pool or a dropout");
            w.line("// ReLU's output, masked in place by the dropout: dx = dy * SCALE where it is positive.");
            w.const_u32("C", d.elems.into()).const_u32("HW", 1);
            super::dropout_scale(w, &d);
        }
    }
    if let Some(p) = &pool {
        super::pool_window_consts(w, p);
    }
    let scaled = |v: &str| {
        if dropout.is_some() {
            format!("{v} * select(1.0, SCALE, params.dropout == 1u)")
        } else {
            v.to_string()
        }
    };
    let mask = |v: &str, at: &str| {
        if relu {
            format!("select(0.0, {}, x[{at}] > 0.0)", scaled(v))
        } else {
            scaled(v)
        }
    };
    let tiled = matches!(kernel.algo, Algo::PoolTile { .. });
    if lrn.is_none() && !tiled {
        w.line("");
        w.line(if pool.is_some() {
            "// The gradient of the pool's input at image n, channel c, pixel pix."
        } else {
            "// The gradient of the chain's output at image n, channel c, pixel pix."
        });
        w.open("fn grad(n: u32, c: u32, pix: u32) -> f32");
        match pool {
            Some(_) => {
                w.line("let nc = n * C + c;")
                    .line("let iy = pix / IW;")
                    .line("let ix = pix % IW;");
                pool_gather(w, pool_x);
                w.line("return acc;");
            }
            None => {
                w.line("return dy[(n * C + c) * HW + pix];");
            }
        }
        w.close();
    }
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)");
    w.line("let i = flat_index(wid, nwg, lid, WG);");
    w.open("if (i >= params.batch * THREADS)")
        .line("return;")
        .close();
    if let (true, Some(p)) = (tiled, &pool) {
        pool_chain_tile(w, p, pool_x, &mask);
        w.close();
        return;
    }
    if lrn.is_none() {
        w.line("let n = i / (C * HW);")
            .line("let c = (i / HW) % C;")
            .line("let g = grad(n, c, i % HW);");
        w.line(format!("dx[i] = {};", mask("g", "i")));
        w.close();
        return;
    }
    let Algo::ChannelScan { side, .. } = kernel.algo else {
        unreachable!("`chain_kernel` makes every LRN chain a channel scan")
    };
    lrn_scan(
        w,
        relu,
        pool.as_ref(),
        pool_x,
        lrn.expect("an LRN chain"),
        side,
    );
    w.close();
}

/// For a tile of `side × side` input pixels of pool `p` (a multiple of its stride): the windows
/// per dimension that can cover the tile, (side + kernel - 2) / stride + 1, and the side of
/// the patch of the pool's input those windows read.
fn scan_tile(p: &PoolNode, side: u32) -> (u32, u32) {
    let windows = (side + p.kernel - 2) / p.stride + 1;
    (windows, (windows - 1) * p.stride + p.kernel)
}

/// The channel walk of an LRN chain. An invocation covers a tile of `side × side` pixels (a
/// multiple of the pool's stride, or one pixel without a pool) and walks their channels in
/// order. Per channel it loads the patch of the pool's input under every window that can cover the tile once, finds
/// each window's first maximum (row-major, as the reference breaks ties) without branches, and
/// adds the window's output gradient to the tile pixel that holds it; neighbouring tile pixels
/// share the loads, which a per-pixel walk repeats up to K * K times. Then, per pixel, named
/// registers slide over the channels: `a*` holds the LRN's input at j - LO ..= j + HI (zero
/// outside), `t*` the terms t_m = g_m x_m D_m^(-beta-1) at j - LO - HI ..= j, `u*` the terms
/// u_m = g_m D_m^-beta at j - LO ..= j; channel c = j - LO is then complete. The sums run in
/// the reference order (zeros for channels outside add nothing), and D^(-beta-1) is
/// D^-beta / D: one `pow` per element.
fn lrn_scan(
    w: &mut Writer,
    relu: bool,
    pool: Option<&PoolNode>,
    pool_x: &str,
    lrn: LrnNode,
    side: u32,
) {
    let size = lrn.size;
    let lo = (size - 1) / 2;
    let (windows, patch) = pool.map_or((0, 0), |p| scan_tile(p, side));
    let pixels: Vec<(u32, u32)> = (0..side)
        .flat_map(|r| (0..side).map(move |c| (r, c)))
        .collect();
    w.line("let n = i / THREADS;");
    if pool.is_some() {
        w.line("// THREADS is tiles per image (`schedule::training::chain_kernel`).");
        tile_pixels(w, "i % THREADS", side, windows);
    } else {
        w.line("let pix0 = i % HW;").line("let in0 = true;");
    }
    let zero = |w: &mut Writer, names: &[String]| {
        let decls: Vec<String> = names.iter().map(|n| format!("var {n} = 0.0;")).collect();
        w.line(decls.join(" "));
    };
    for k in 0..pixels.len() {
        w.line(format!("let base{k} = n * C * HW + pix{k};"));
        // Before channel 0: a_m holds channel m - LO - 1.
        let mut decls = Vec::new();
        for m in 0..size {
            let channel = i64::from(m) - i64::from(lo) - 1;
            if channel >= 0 && channel < i64::from(lrn.channels) {
                decls.push(format!("var a{m}_{k} = x[base{k} + {channel}u * HW];"));
            } else {
                decls.push(format!("var a{m}_{k} = 0.0;"));
            }
        }
        w.line(decls.join(" "));
        zero(
            w,
            &(0..size).map(|m| format!("t{m}_{k}")).collect::<Vec<_>>(),
        );
        zero(
            w,
            &(0..=lo).map(|m| format!("u{m}_{k}")).collect::<Vec<_>>(),
        );
    }
    w.open("for (var j = 0u; j < C + LO; j++)");
    let grads: Vec<String> = (0..pixels.len()).map(|k| format!("g{k}")).collect();
    zero(w, &grads);
    w.open("if (j < C)");
    match pool {
        Some(p) => pool_tile(w, pool_x, p.stride, side, windows, patch),
        None => {
            w.line("g0 = dy[(n * C + j) * HW + pix0];");
        }
    }
    w.close();
    let last = size - 1;
    for k in 0..pixels.len() {
        let shift = |w: &mut Writer, ring: &str, len: u32| {
            let moves: Vec<String> = (0..len - 1)
                .map(|m| format!("{ring}{m}_{k} = {ring}{}_{k};", m + 1))
                .collect();
            w.line(moves.join(" "));
        };
        w.block();
        shift(w, "a", size);
        w.line(format!(
            "a{last}_{k} = select(0.0, x[base{k} + min(j + HI, C - 1u) * HW], j + HI < C);"
        ));
        shift(w, "t", size);
        if lo > 0 {
            shift(w, "u", lo + 1);
        }
        w.line(format!("t{last}_{k} = 0.0;"))
            .line(format!("u{lo}_{k} = 0.0;"));
        let squares: Vec<String> = (0..size)
            .map(|m| format!(" + a{m}_{k} * a{m}_{k}"))
            .collect();
        w.open("if (j < C)")
            .line(format!(
                "let d = KBIAS + ALPHA * (0.0{});",
                squares.join("")
            ))
            .line("let p = pow(d, -BETA);")
            .line(format!("u{lo}_{k} = g{k} * p;"))
            .line(format!("t{last}_{k} = g{k} * a{lo}_{k} * (p / d);"))
            .close();
        let terms: Vec<String> = (0..size).map(|m| format!(" + t{m}_{k}")).collect();
        let v = "u0_K - 2.0 * ALPHA * BETA * a0_K * (0.0TERMS)"
            .replace("TERMS", &terms.join(""))
            .replace("_K", &format!("_{k}"));
        let v = if relu {
            format!("select(0.0, {v}, a0_{k} > 0.0)")
        } else {
            v
        };
        w.open(format!("if (j >= LO && in{k})"))
            .line(format!("dx[base{k} + (j - LO) * HW] = {v};"))
            .close();
        w.close();
    }
    w.close();
}

/// The tile `t` (row-major over the pool's input) of `side` x `side` pixels: its corner, the
/// range of pool windows that cover it, and per pixel k its index `pix{k}` (clamped) and
/// whether it is in the image (`in{k}`).
fn tile_pixels(w: &mut Writer, t: &str, side: u32, windows: u32) {
    w.line(format!(
        "// Tiles of {side} x {side} input pixels; the windows that can cover one, {windows} per dimension."
    ))
    .line(format!("const SIDE: u32 = {side}u;"))
    .line("let across = (IW + SIDE - 1u) / SIDE;")
    .line(format!("let ty = ({t}) / across;"))
    .line(format!("let tx = ({t}) % across;"))
    .line("let y0 = ty * SIDE;")
    .line("let x0 = tx * SIDE;")
    .line("let oy_lo = select(0u, (y0 + PAD + S - K) / S, y0 + PAD + 1u >= K);")
    .line("let oy_hi = min((y0 + SIDE - 1u + PAD) / S, OH - 1u);")
    .line("let ox_lo = select(0u, (x0 + PAD + S - K) / S, x0 + PAD + 1u >= K);")
    .line("let ox_hi = min((x0 + SIDE - 1u + PAD) / S, OW - 1u);");
    for r in 0..side {
        for c in 0..side {
            let k = r * side + c;
            w.line(format!("let in{k} = y0 + {r}u < IH && x0 + {c}u < IW;"))
                .line(format!(
                    "let pix{k} = min(y0 + {r}u, IH - 1u) * IW + min(x0 + {c}u, IW - 1u);"
                ));
        }
    }
}

/// A ReLU / max-pool chain without an LRN, an invocation per (image, channel, tile): the pool
/// gradient of the tile's pixels from one load of the patch under its windows, then each
/// pixel's ReLU mask (`mask(g, at)`).
fn pool_chain_tile(w: &mut Writer, p: &PoolNode, x: &str, mask: &dyn Fn(&str, &str) -> String) {
    let side = p.stride;
    let (windows, patch) = scan_tile(p, side);
    w.line("// Tiles per image and channel.")
        .line("const TILES: u32 = THREADS / C;")
        .line("let n = i / THREADS;")
        .line("let j = (i / TILES) % C;");
    tile_pixels(w, "i % TILES", side, windows);
    let grads: Vec<String> = (0..side * side)
        .map(|k| format!("var g{k} = 0.0;"))
        .collect();
    w.line(grads.join(" "));
    pool_tile(w, x, p.stride, side, windows, patch);
    for k in 0..side * side {
        w.open(format!("if (in{k})"))
            .line(format!("let at = (n * C + j) * HW + pix{k};"))
            .line(format!("dx[at] = {};", mask(&format!("g{k}"), "at")))
            .close();
    }
}

/// The pool's input gradient at the tile's pixels of channel j, into g0.. (row-major).
fn pool_tile(w: &mut Writer, x: &str, stride: u32, side: u32, windows: u32, patch: u32) {
    w.line("let xbase = (n * C + j) * IH * IW;")
        .line("let dbase = (n * C + j) * OH * OW;");
    w.line("// The patch under the windows, each element loaded once (clamped; ok* says whether it is in the image).");
    for r in 0..patch {
        w.line(format!("let py{r} = i32(oy_lo * S + {r}u) - i32(PAD);"))
            .line(format!("let oky{r} = py{r} >= 0 && py{r} < i32(IH);"))
            .line(format!(
                "let ry{r} = u32(clamp(py{r}, 0, i32(IH) - 1)) * IW;"
            ));
    }
    for c in 0..patch {
        w.line(format!("let px{c} = i32(ox_lo * S + {c}u) - i32(PAD);"))
            .line(format!("let okx{c} = px{c} >= 0 && px{c} < i32(IW);"))
            .line(format!("let cx{c} = u32(clamp(px{c}, 0, i32(IW) - 1));"));
    }
    for r in 0..patch {
        for c in 0..patch {
            w.line(format!("let v{r}_{c} = {x}[xbase + ry{r} + cx{c}];"));
        }
    }
    let k = patch - (windows - 1) * stride;
    for wy in 0..windows {
        for wx in 0..windows {
            w.block()
                .line(format!("let oy = oy_lo + {wy}u;"))
                .line(format!("let ox = ox_lo + {wx}u;"))
                .line("let live = oy <= oy_hi && ox <= ox_hi;")
                .line("var best = 0.0;")
                .line("var found = false;")
                .line("var arg = 0xffffffffu;");
            for ky in 0..k {
                for kx in 0..k {
                    let (r, c) = (wy * stride + ky, wx * stride + kx);
                    w.line(format!(
                        "let take{ky}_{kx} = oky{r} && okx{c} && (!found || v{r}_{c} > best);"
                    ))
                    .line(format!("best = select(best, v{r}_{c}, take{ky}_{kx});"))
                    .line(format!("arg = select(arg, ry{r} + cx{c}, take{ky}_{kx});"))
                    .line(format!("found = found || (oky{r} && okx{c});"));
                }
            }
            w.line(
                "let d = select(0.0, dy[dbase + min(oy, OH - 1u) * OW + min(ox, OW - 1u)], live);",
            );
            for k in 0..side * side {
                w.line(format!("g{k} += select(0.0, d, live && arg == pix{k});"));
            }
            w.close();
        }
    }
}

/// A softmax inside the network: dx = y * (dy - sum(dy * y)), y recomputed from x.
fn softmax_input(w: &mut Writer) {
    w.line("let base = i * CLASSES;").line("var mx = x[base];");
    w.open("for (var c = 1u; c < CLASSES; c++)")
        .line("mx = max(mx, x[base + c]);")
        .close();
    w.line("var sum = 0.0;").line("var dot = 0.0;");
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("let e = exp(x[base + c] - mx);")
        .line("sum += e;")
        .line("dot += dy[base + c] * e;")
        .close();
    w.line("dot = dot / sum;");
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("dx[base + c] = exp(x[base + c] - mx) / sum * (dy[base + c] - dot);")
        .close();
}
