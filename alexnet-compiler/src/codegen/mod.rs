//! Codegen: writes the WGSL of every kernel in the plan and validates it with naga.
//!
//! One generator per op kind, parameterised by the op's resolved shapes, which are baked in as
//! `const`s; only the batch size is a run-time value (the `Params` uniform). Every kernel runs
//! one invocation per output element (softmax: per image) over a flat index taken from a 2-D
//! dispatch. Output is deterministic. A naga failure is an internal compiler error naming the
//! kernel, never the user's fault.

mod block;
mod gemm;

pub use gemm::UNROLL;
mod training;
pub(crate) use training::conv_bias_walk;
mod wide;
mod writer;

use crate::error::{Error, Errors};
use crate::valid::GraphInfo;
use alexnet_plan::{
    Algo, Binding, ConvNode, DropoutNode, GemmTile, Kernel, LinearNode, LrnNode, NodeOp, Plan,
    PoolNode, Role, Target, Variant, Wrt,
};
use proc_macro2::Span;
use writer::Writer;

const PRELUDE: &str = include_str!("prelude.wgsl");

/// Fills in the WGSL of every kernel of `plan` and validates it. `GraphInfo` can only come
/// from `valid::validate`, so requiring it keeps codegen from running on an unchecked graph.
pub fn generate(plan: &mut Plan, _validated: &GraphInfo) -> Result<(), Errors> {
    let mut kernels = plan.kernels.to_vec();
    for kernel in &mut kernels {
        let wgsl = kernel_wgsl(plan, kernel);
        let mut variants = kernel.variants.to_vec();
        for v in &mut variants {
            let wgsl = kernel_wgsl(plan, &kernel.for_target(v.target));
            v.wgsl = match v.target.wide_loads() {
                true => wide::widen(&wgsl).unwrap_or(wgsl),
                false => wgsl,
            }
            .into();
        }
        kernel.wgsl = wgsl.into();
        kernel.variants = variants.into();
        // A target with 64-bit loads whose kernel has no form of its own runs the form it
        // falls back to, with its vec4 arrays read as 64-bit words where it has any.
        let mut variants = kernel.variants.to_vec();
        for target in Target::ALL.into_iter().filter(Target::wide_loads) {
            if variants.iter().any(|v| v.target == target) {
                continue;
            }
            let base = kernel.for_target(target);
            if let Some(wgsl) = wide::widen(&base.wgsl) {
                variants.push(Variant {
                    target,
                    algo: base.algo,
                    cost: base.cost,
                    wgsl: wgsl.into(),
                    workgroup_size: base.workgroup_size,
                    threads_per_image: base.threads_per_image,
                    dispatch: base.dispatch,
                });
            }
        }
        validate_wgsl(&kernel.name, &kernel.wgsl)?;
        for v in &variants {
            validate_wgsl(
                &format!("{} ({} variant)", kernel.name, v.target.as_str()),
                &v.wgsl,
            )?;
        }
        kernel.variants = variants.into();
    }
    plan.kernels = kernels.into();
    Ok(())
}

/// Parses and validates one kernel with naga.
pub fn validate_wgsl(name: &str, wgsl: &str) -> Result<(), Errors> {
    let ice = |what: String| {
        Errors(vec![Error::new(
            Span::call_site(),
            format!("internal compiler error: kernel `{name}` is not valid WGSL ({what}); please report it with this shader:\n{wgsl}"),
        )])
    };
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| ice(e.emit_to_string(wgsl)))?;
    // Subgroup operations only where a kernel reads its subgroup lane (the `cpu-sg8` GEMMs,
    // which the runtime runs only on adapters that have them). Naga takes them without WGSL's
    // `enable subgroups;`, which it does not parse yet.
    let subgroups = wgsl.contains("@builtin(subgroup_invocation_id)");
    // 64-bit integers only where a kernel reads 64-bit words (`wide::widen`), which the
    // runtime runs only on adapters that have them.
    let int64 = match wgsl.contains("array<vec2<u64>>") {
        true => naga::valid::Capabilities::SHADER_INT64,
        false => naga::valid::Capabilities::empty(),
    };
    let (capabilities, stages, operations) = if subgroups {
        (
            naga::valid::Capabilities::SUBGROUP,
            naga::valid::ShaderStages::COMPUTE,
            naga::valid::SubgroupOperationSet::BASIC | naga::valid::SubgroupOperationSet::BALLOT,
        )
    } else {
        (
            naga::valid::Capabilities::empty(),
            naga::valid::ShaderStages::empty(),
            naga::valid::SubgroupOperationSet::empty(),
        )
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities | int64)
        .subgroup_stages(stages)
        .subgroup_operations(operations)
        .validate(&module)
        .map_err(|e| ice(format!("{e:?}")))?;
    Ok(())
}

fn kernel_wgsl(plan: &Plan, kernel: &Kernel) -> String {
    let node = &plan.nodes[kernel.node as usize];
    let mut w = Writer::default();
    let what = match &node.op {
        NodeOp::Conv(c) => format!(
            "conv {}x{} stride {} pad {} groups {}",
            c.kernel, c.kernel, c.stride, c.pad, c.groups
        ),
        NodeOp::Linear(l) => format!("linear {} -> {}", l.in_features, l.out_features),
        NodeOp::Relu => "relu".into(),
        NodeOp::Lrn(l) => format!(
            "lrn n {} alpha {:?} (paper's raw alpha) beta {:?} k {:?}",
            l.size, l.alpha, l.beta, l.k
        ),
        NodeOp::MaxPool(p) => format!(
            "maxpool {}x{} stride {} pad {}",
            p.kernel, p.kernel, p.stride, p.pad
        ),
        NodeOp::Softmax => "softmax".into(),
        NodeOp::Dropout(d) => format!("inverted dropout p {:?}, stream {}", d.p, d.stream),
    };
    // A fused kernel names every op it covers.
    let what = match kernel.covers.len() {
        1 => what,
        _ => {
            let ops: Vec<&str> = kernel
                .covers
                .iter()
                .map(|&n| plan.nodes[n as usize].op.name())
                .collect();
            format!("fused {} ({what})", ops.join(" + "))
        }
    };
    let what = match kernel.role {
        Role::Forward => what,
        Role::Dropout => format!("{what}, training forward"),
        Role::Loss => {
            "softmax cross-entropy of the logits: per-image loss and the logits' gradient".into()
        }
        Role::Backward(Wrt::Input) => format!("gradient of the input of {what}"),
        Role::Backward(Wrt::Weight) => format!("gradient of the weight of {what}"),
        Role::Backward(Wrt::Bias) => format!("gradient of the bias of {what}"),
        Role::Update => "SGD with momentum and weight decay, the paper's rule".into(),
    };
    w.line(format!(
        "// {}: {what}, layer `{}`",
        kernel.name, kernel.layer
    ));
    w.line(format!("// Algorithm: {}.", kernel.algo.describe()));
    w.line("// Generated by alexnet-compiler at build time; do not edit.");
    if let Algo::Gemm(t) = kernel.algo {
        if t.lanes() > 1 {
            w.line(format!(
                "// Uses subgroup operations: needs subgroups of exactly {} lanes.",
                t.lanes()
            ));
        }
    }
    w.raw(PRELUDE);
    w.line("");
    w.const_u32("WG", u64::from(kernel.algo.threads()));
    w.const_u32("THREADS", kernel.threads_per_image);
    let mut names: Vec<&str> = Vec::new();
    let vec4 = match gemm::vec4_walk(plan, kernel) {
        Some(walk) => walk.bindings(),
        None if training::conv_bias_walk(plan, kernel).is_some_and(|(width, _)| width == 4) => {
            &["dy"][..]
        }
        None => &[][..],
    };
    for (i, b) in kernel.bindings.iter().enumerate() {
        let is_bias = |index: u32| plan.params[index as usize].shape.len() == 1;
        let (read, write) = (
            "var<storage, read>".to_string(),
            "var<storage, read_write>".to_string(),
        );
        let (decl, name) = match *b {
            Binding::Uniform => ("var<uniform>".to_string(), "params"),
            Binding::Activation { write: false, .. } => (read, "x"),
            Binding::Activation { write: true, .. } => (write, "y"),
            Binding::Param { index, .. } => (read, if is_bias(index) { "b" } else { "w" }),
            Binding::ParamMut { .. } => (write, "p"),
            Binding::Grad { write: false, .. } => (read, "dy"),
            Binding::Grad { write: true, .. } => (write, "dx"),
            Binding::ParamGrad { write: false, .. } => (read, "g"),
            Binding::ParamGrad {
                index, write: true, ..
            } => (write, if is_bias(index) { "db" } else { "dw" }),
            Binding::Momentum { .. } => (write, "m"),
            Binding::Labels => (read, "labels"),
            Binding::Loss => (write, "loss"),
            Binding::Partials { write: true, .. } => (write, "dwp"),
            Binding::Partials { write: false, .. } => (read, "dwp"),
        };
        // A kernel fused with its softmax writes the logits (`y`) and the probabilities; a
        // fused ReLU / LRN / max-pool gradient reads LRN's input (`x`) and the pool's (`xp`).
        let name = match name {
            "y" if names.contains(&"y") => "probs",
            "x" if names.contains(&"x") => "xp",
            _ => name,
        };
        let ty = match name {
            "params" => "Params",
            "labels" => "array<u32>",
            _ if vec4.contains(&name) => "array<vec4<f32>>",
            "p" | "g" | "m" if matches!(kernel.algo, Algo::Vec4 { .. }) => "array<vec4<f32>>",
            "dwp" | "dw" if matches!(kernel.algo, Algo::SliceSum { width: 4, .. }) => {
                "array<vec4<f32>>"
            }
            _ => "array<f32>",
        };
        names.push(name);
        w.line(format!("@group(0) @binding({i}) {decl} {name}: {ty};"));
    }
    let part = kernel.bindings.iter().find_map(|b| {
        let (index, part) = b.param_part()?;
        Some((plan.params[index as usize].parts[part as usize], part))
    });
    if kernel.role == Role::Backward(Wrt::Input) && kernel.covers.len() > 1 {
        training::chain_input(&mut w, plan, kernel);
        return w.finish();
    }
    if let Algo::SliceSum { .. } = kernel.algo {
        training::slice_sum(&mut w, kernel);
        return w.finish();
    }
    let row0 = part.map(|(p, _)| p.start);
    let has_bias = names.contains(&"b");
    match &node.op {
        // A GEMM input gradient is a convolution of dy with the flipped, transposed weights:
        // its constants describe that convolution.
        NodeOp::Conv(c)
            if kernel.role == Role::Backward(Wrt::Input)
                && matches!(kernel.algo, Algo::Gemm(_)) =>
        {
            w.line("// The convolution computing dx: dy's channels in, x's channels out, stride 1, padding K - 1 - pad.");
            conv_consts(&mut w, &gemm::input_gradient_conv(c), 0)
        }
        NodeOp::Conv(c) => conv_consts(&mut w, c, row0.unwrap_or(0)),
        NodeOp::Linear(l) => linear_consts(&mut w, l, row0.unwrap_or(0)),
        NodeOp::Lrn(l) => lrn_consts(&mut w, l),
        NodeOp::MaxPool(p) => pool_consts(&mut w, p),
        NodeOp::Softmax => {
            w.const_u32(
                "CLASSES",
                plan.activations[node.input as usize].elems_per_image(),
            );
        }
        NodeOp::Dropout(d) => dropout_consts(&mut w, d),
        NodeOp::Relu => {}
    }
    // `algo::choose` makes a kernel a GEMM exactly where it has a GEMM instance.
    let gemm_tile = if let Algo::Gemm(tile) = kernel.algo {
        Some(tile)
    } else {
        None
    };
    if let Some((range, index)) = part {
        w.line("// Rows of the weight part this kernel covers; later parts add to the first's input gradient.")
            .const_u32("ROWS", range.rows.into())
            .line(format!("const ACCUM: bool = {};", index > 0));
    }
    // A net that is only a softmax has its loss named after it: CLASSES is already declared.
    if kernel.role == Role::Loss && node.op != NodeOp::Softmax {
        w.const_u32(
            "CLASSES",
            plan.activations[plan.logits_activation as usize].elems_per_image(),
        );
    }
    // ReLU fused into a conv or linear kernel's epilogue.
    let relu = kernel.covers.len() > 1
        && kernel
            .covers
            .iter()
            .any(|&n| plan.nodes[n as usize].op == NodeOp::Relu);
    if let Some(tile) = gemm_tile {
        gemm::gemm(&mut w, plan, kernel, tile, has_bias, relu);
        return w.finish();
    }
    if kernel.role != Role::Forward {
        training::body(&mut w, plan, kernel);
        return w.finish();
    }
    if let Algo::ConvBlock { .. } = kernel.algo {
        block::conv_block(&mut w, plan, kernel, has_bias, relu);
        return w.finish();
    }
    if let Algo::PerImage { threads } = kernel.algo {
        if matches!(node.op, NodeOp::Linear(_)) {
            block::linear_softmax(&mut w, has_bias, threads);
            return w.finish();
        }
    }
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)");
    w.line("let i = flat_index(wid, nwg, lid, WG);");
    w.open("if (i >= params.batch * THREADS)")
        .line("return;")
        .close();
    let act = |v: &str| {
        if relu {
            format!("max({v}, 0.0)")
        } else {
            v.to_string()
        }
    };
    match &node.op {
        NodeOp::Conv(_) => conv_body(&mut w, has_bias, &act),
        NodeOp::Linear(_) => {
            unreachable!("linear layers run as GEMM instances or fused with their softmax")
        }
        NodeOp::Relu => {
            w.line("y[i] = max(x[i], 0.0);");
        }
        NodeOp::Lrn(l) => {
            // `algo::choose` makes every LRN forward a channel scan; its dispatch is per pixel.
            assert!(
                matches!(kernel.algo, Algo::ChannelScan { .. }),
                "LRN forward `{}` must be a channel scan",
                kernel.name
            );
            lrn_scan_body(&mut w, l)
        }
        NodeOp::MaxPool(_) => pool_body(&mut w),
        NodeOp::Softmax => softmax_body(&mut w),
        NodeOp::Dropout(_) => unreachable!("dropout runs only when training"),
    }
    w.close();
    w.finish()
}

/// The store of `v` into `grad[at]` of a gradient that micro-batches accumulate: written by
/// the first, added to by the later ones. A branch, not a select: the gradient is read only
/// when a later micro-batch adds to it (a software adapter loads both operands of a select).
pub(crate) fn accumulate(at: &str, grad: &str) -> String {
    format!("if (params.accumulate == 1u) {{ {grad}[{at}] = {grad}[{at}] + v; }} else {{ {grad}[{at}] = v; }}")
}

pub(crate) fn dropout_consts(w: &mut Writer, d: &DropoutNode) {
    w.const_u32("ELEMS", d.elems.into())
        .const_u32("STREAM", d.stream.into())
        .line("// Kept when the top 24 bits of the element's hash are at least THRESHOLD (= ceil(p * 2^24)).")
        .const_u32("THRESHOLD", alexnet_plan::dropout_threshold(d.p).into());
    dropout_scale(w, d);
}

/// The scale of kept elements, all a dropout's gradient needs besides ReLU's masked output.
pub(crate) fn dropout_scale(w: &mut Writer, d: &DropoutNode) {
    w.line("// Inverted dropout: kept elements are scaled by 1 / (1 - p) at training, so inference is the identity.")
        .const_f32("SCALE", if d.p < 1.0 { 1.0 / (1.0 - d.p) } else { 0.0 });
}

pub(crate) fn conv_consts(w: &mut Writer, c: &ConvNode, row0: u32) {
    w.const_u32("IC", c.in_channels.into())
        .const_u32("IH", c.in_h.into())
        .const_u32("IW", c.in_w.into())
        .const_u32("OC", c.out_channels.into())
        .const_u32("OH", c.out_h.into())
        .const_u32("OW", c.out_w.into())
        .const_u32("K", c.kernel.into())
        .const_u32("S", c.stride.into())
        .const_u32("PAD", c.pad.into())
        .const_u32("ICG", (c.in_channels / c.groups).into())
        .const_u32("OCG", (c.out_channels / c.groups).into())
        .const_u32("GROUPS", c.groups.into())
        .line("// First output channel this kernel computes (weights are split by rows).")
        .const_u32("ROW0", row0.into());
}

fn conv_body(w: &mut Writer, has_bias: bool, act: &dyn Fn(&str) -> String) {
    w.line("let n = i / THREADS;")
        .line("let r = i % THREADS;")
        .line("let local_oc = r / (OH * OW);")
        .line("let pix = r % (OH * OW);")
        .line("let oy = pix / OW;")
        .line("let ox = pix % OW;")
        .line("let oc = ROW0 + local_oc;")
        .line("let ic0 = (oc / OCG) * ICG;")
        .line(if has_bias {
            "var acc = b[local_oc];"
        } else {
            "var acc = 0.0;"
        });
    // One partial sum per input channel keeps f32 rounding from growing with ICG * K * K.
    w.open("for (var icl = 0u; icl < ICG; icl++)")
        .line("let xbase = (n * IC + ic0 + icl) * IH * IW;")
        .line("let wbase = (local_oc * ICG + icl) * K * K;")
        .line("var part = 0.0;");
    window_loops(
        w,
        "part += x[xbase + u32(iy) * IW + u32(ix)] * w[wbase + ky * K + kx];",
    );
    w.line("acc += part;");
    w.close();
    w.line(format!(
        "y[(n * OC + oc) * OH * OW + pix] = {};",
        act("acc")
    ));
}

/// Tile sizes and workgroup memory of a tiled GEMM, all from `tile`. The weight tile
/// `[TK][TM]` sits at the start of `smem` and the input-patch tile `[TK][TN]` after it;
/// `plane` more floats are reserved for a fused kernel's epilogue, which reuses the memory.
pub(crate) fn tiled_conv_decls(w: &mut Writer, tile: GemmTile, plane: u32) {
    w.line(
        "// Implicit GEMM: a workgroup computes TM output channels x TN output pixels, stepping",
    )
    .line("// through the ICG*K*K reduction TK at a time; an invocation holds a 4x4 block.")
    .const_u32("TM", tile.m.into())
    .const_u32("TN", tile.n.into())
    .const_u32("TK", tile.k.into())
    .line("// Invocations across the tile's columns.")
    .line("const TX: u32 = TN / 4u;")
    .line("// Channel tiles per group.")
    .line("const MT: u32 = (OCG + TM - 1u) / TM;")
    .line("// Where the input-patch tile starts in workgroup memory.")
    .line("const B0: u32 = TK * TM;")
    .line(format!(
        "var<workgroup> smem: array<f32, {}>;",
        (tile.k * (tile.m + tile.n)).max(plane)
    ));
}

/// The 4×4 register block of one invocation of a tiled GEMM, zeroed.
pub(crate) fn acc_decls(w: &mut Writer) {
    for i in 0..4 {
        for j in 0..4 {
            w.line(format!("var acc{i}{j} = 0.0;"));
        }
    }
}

/// The inner loop of every tiled GEMM: a 4×4 register block of `acc{i}{j}` from the weight
/// and patch tiles in `smem`.
pub(crate) fn fma_block(w: &mut Writer) {
    w.open("for (var kk = 0u; kk < TK; kk++)");
    fma_body(w, "kk");
    w.close();
}

/// One step `kk` of the reduction out of workgroup memory, in a block of its own.
pub(crate) fn fma_step(w: &mut Writer, kk: &str) {
    w.open("");
    fma_body(w, kk);
    w.close();
}

fn fma_body(w: &mut Writer, kk: &str) {
    for i in 0..4 {
        w.line(format!("let a{i} = smem[{kk} * TM + ty * 4u + {i}u];"));
    }
    for j in 0..4 {
        w.line(format!("let b{j} = smem[B0 + {kk} * TN + tx * 4u + {j}u];"));
    }
    for i in 0..4 {
        for j in 0..4 {
            w.line(format!("acc{i}{j} += a{i} * b{j};"));
        }
    }
}

/// The K×K window of output pixel (oy, ox) over a padded input, skipping padding, with
/// `statement` innermost (it sees `ky`, `kx`, `iy`, `ix`). Shared by conv and max-pool.
fn window_loops(w: &mut Writer, statement: &str) {
    w.open("for (var ky = 0u; ky < K; ky++)")
        .line("let iy = i32(oy * S + ky) - i32(PAD);")
        .open("if (iy < 0 || iy >= i32(IH))")
        .line("continue;")
        .close();
    w.open("for (var kx = 0u; kx < K; kx++)")
        .line("let ix = i32(ox * S + kx) - i32(PAD);")
        .open("if (ix < 0 || ix >= i32(IW))")
        .line("continue;")
        .close()
        .line(statement);
    w.close().close();
}

fn linear_consts(w: &mut Writer, l: &LinearNode, row0: u32) {
    w.const_u32("IN", l.in_features.into())
        .const_u32("OUT", l.out_features.into())
        .line("// First output feature this kernel computes (weights are split by rows).")
        .const_u32("ROW0", row0.into());
}

pub(crate) fn lrn_consts(w: &mut Writer, l: &LrnNode) {
    w.const_u32("C", l.channels.into())
        .const_u32("HW", u64::from(l.h) * u64::from(l.w))
        .line("// Window [c - LO, c + HI], as ONNX and PyTorch centre it.")
        .const_u32("LO", ((l.size - 1) / 2).into())
        .const_u32("HI", (l.size / 2).into())
        .line("// The paper's alpha, applied to the raw sum of squares (ONNX's alpha / size).")
        .const_f32("ALPHA", l.alpha)
        .const_f32("BETA", l.beta)
        .const_f32("KBIAS", l.k);
}

/// LRN forward as a channel scan: an invocation per (image, pixel) walks the channels with the
/// window's values in named registers `r0..` (`r{LO}` is channel c, zero outside the channels),
/// so each input is loaded once, not once per window it falls in. The squares are summed
/// from the window's lowest channel up, as the per-element form does.
fn lrn_scan_body(w: &mut Writer, l: &LrnNode) {
    let (lo, hi) = ((l.size - 1) / 2, l.size / 2);
    let size = lo + hi + 1;
    w.line("let n = i / HW;")
        .line("let pix = i % HW;")
        .line("let base = n * C * HW + pix;");
    for j in 0..size - 1 {
        // r_j is channel j - LO at c = 0: known at compile time to lie inside or outside.
        match j.checked_sub(lo).filter(|&ch| ch < l.channels) {
            Some(ch) => w.line(format!("var r{j} = x[base + {ch}u * HW];")),
            None => w.line(format!("var r{j} = 0.0;")),
        };
    }
    let last = size - 1;
    w.open("for (var c = 0u; c < C; c++)")
        .line(format!(
            "let r{last} = select(0.0, x[base + min(c + HI, C - 1u) * HW], c + HI < C);"
        ))
        .line("var sum = 0.0;");
    for j in 0..size {
        w.line(format!("sum += r{j} * r{j};"));
    }
    w.line(format!(
        "y[base + c * HW] = r{lo} / pow(KBIAS + ALPHA * sum, BETA);"
    ));
    for j in 0..size - 1 {
        w.line(format!("r{j} = r{};", j + 1));
    }
    w.close();
}

fn pool_consts(w: &mut Writer, p: &PoolNode) {
    w.const_u32("C", p.channels.into());
    pool_window_consts(w, p);
}

/// A max-pool's input and output sizes and window, less its channels.
pub(crate) fn pool_window_consts(w: &mut Writer, p: &PoolNode) {
    w.const_u32("IH", p.in_h.into())
        .const_u32("IW", p.in_w.into())
        .const_u32("OH", p.out_h.into())
        .const_u32("OW", p.out_w.into())
        .const_u32("K", p.kernel.into())
        .const_u32("S", p.stride.into())
        .const_u32("PAD", p.pad.into());
}

fn pool_body(w: &mut Writer) {
    w.line("let nc = i / (OH * OW);")
        .line("let pix = i % (OH * OW);")
        .line("let oy = pix / OW;")
        .line("let ox = pix % OW;")
        .line("let xbase = nc * IH * IW;")
        .line("// Padding is smaller than half the kernel, so every window holds a real element.")
        .line("var best = -3.4028235e38;");
    window_loops(w, "best = max(best, x[xbase + u32(iy) * IW + u32(ix)]);");
    w.line("y[i] = best;");
}

fn softmax_body(w: &mut Writer) {
    w.line("let base = i * CLASSES;").line("var m = x[base];");
    w.open("for (var c = 1u; c < CLASSES; c++)")
        .line("m = max(m, x[base + c]);")
        .close();
    w.line("var sum = 0.0;");
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("let e = exp(x[base + c] - m);")
        .line("y[base + c] = e;")
        .line("sum += e;")
        .close();
    w.open("for (var c = 0u; c < CLASSES; c++)")
        .line("y[base + c] = y[base + c] / sum;")
        .close();
}
