//! WGSL of the fused inference kernels: a conv block (conv + bias + ReLU + LRN and max-pool
//! in either order) and a linear layer with its softmax.
//!
//! A conv block's workgroup owns one image, `VC` output channels and an `QR × QC` tile of the
//! block's output. It computes the conv over a `PR × PC` patch (the pooling windows' spatial
//! halo) and `TM` channels (the LRN's channel halo) as the tiled GEMM, rows drawn from as many
//! conv groups as the tile touches, then runs the post-ops in workgroup memory, each a phase
//! between barriers, and writes only the tile's own outputs. Out-of-range channels hold zero
//! (they add nothing to an LRN sum); out-of-range pixels never win a pooling window; so every
//! tile, group and image border gives exactly the per-op result.

use super::writer::Writer;
use super::{acc_decls, fma_block, lrn_consts, tiled_conv_decls};
use alexnet_plan::{Algo, Kernel, NodeOp, Plan};

/// Writes the constants and `main` of a fused conv block.
pub fn conv_block(w: &mut Writer, plan: &Plan, kernel: &Kernel, has_bias: bool, relu: bool) {
    let Algo::ConvBlock {
        tile,
        rows,
        cols,
        out_rows,
        out_cols,
        channels,
    } = kernel.algo
    else {
        unreachable!("a conv block kernel")
    };
    let node = &plan.nodes[kernel.node as usize];
    let NodeOp::Conv(_) = node.op else {
        unreachable!("a conv block starts with its conv")
    };
    let post: Vec<NodeOp> = kernel
        .covers
        .iter()
        .map(|&n| plan.nodes[n as usize].op)
        .filter(|op| matches!(op, NodeOp::Lrn(_) | NodeOp::MaxPool(_)))
        .collect();
    let last = &plan.activations[plan.nodes[*kernel
        .covers
        .iter()
        .rev()
        .find(|&&n| !matches!(plan.nodes[n as usize].op, NodeOp::Dropout(_)))
        .expect("a covered node") as usize]
        .output as usize];
    let (fh, fw) = (last.shape[1], last.shape[2]);
    let mut lo = 0;
    for op in &post {
        match op {
            NodeOp::Lrn(l) => {
                lrn_consts(w, l);
                lo = (l.size - 1) / 2;
            }
            NodeOp::MaxPool(p) => {
                w.line("// Max pooling over the conv (or LRN) output.")
                    .const_u32("PK", p.kernel.into())
                    .const_u32("PS", p.stride.into())
                    .const_u32("PPAD", p.pad.into());
            }
            other => unreachable!("a conv block holds no {other:?}"),
        }
    }
    let pool = post.iter().any(|op| matches!(op, NodeOp::MaxPool(_)));
    w.line(
        "// The tile: VC output channels after a channel halo of CLO, the block's QR x QC outputs,",
    )
    .line("// and the PR x PC conv outputs they need.")
    .const_u32("VC", channels.into())
    .const_u32("CLO", lo.into())
    .const_u32("PR", rows.into())
    .const_u32("PC", cols.into())
    .const_u32("QR", out_rows.into())
    .const_u32("QC", out_cols.into())
    .line("// The block's output, per image.")
    .const_u32("FH", fh.into())
    .const_u32("FW", fw.into())
    .line("const QTW: u32 = (FW + QC - 1u) / QC;")
    .line("const SPATIAL: u32 = ((FH + QR - 1u) / QR) * QTW;")
    .line("const CTILES: u32 = (OC + VC - 1u) / VC;")
    .line("// Elements of the TM x TN plane each invocation carries through a phase.")
    .line("const PER: u32 = TM * TN / WG;");
    tiled_conv_decls(w, tile, tile.m * tile.n);
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)");
    w.line(
        "// The workgroup's tile; uniform across it, so the early return precedes every barrier.",
    )
    .line("let tile = wid.y * nwg.x + wid.x;")
    .open("if (tile >= params.batch * CTILES * SPATIAL)")
    .line("return;")
    .close()
    .line("let n = tile / (CTILES * SPATIAL);")
    .line("let ct = (tile / SPATIAL) % CTILES;")
    .line("let st = tile % SPATIAL;")
    .line("let qy0 = (st / QTW) * QR;")
    .line("let qx0 = (st % QTW) * QC;")
    .line("// Layer channel of tile row 0 (negative inside the LRN's halo below channel 0).")
    .line("let c_first = i32(ct * VC) - i32(CLO);");
    if pool {
        w.line("let py0 = i32(qy0 * PS) - i32(PPAD);")
            .line("let px0 = i32(qx0 * PS) - i32(PPAD);");
    } else {
        w.line("let py0 = i32(qy0);").line("let px0 = i32(qx0);");
    }
    w.line("let tx = lid % TX;")
        .line("let ty = lid / TX;")
        .line("let ktotal = ICG * K * K;")
        .line("let g_lo = u32(clamp(c_first, 0, i32(OC) - 1)) / OCG;")
        .line("let g_hi = u32(clamp(c_first + i32(TM) - 1, 0, i32(OC) - 1)) / OCG;");
    acc_decls(w);
    w.line("// Rows of the tile may belong to two groups: each group's rows get their own pass.");
    w.open("for (var g = g_lo; g <= g_hi; g++)");
    w.open("for (var k0 = 0u; k0 < ktotal; k0 += TK)");
    w.open("for (var r = 0u; r < TK * TM / WG; r++)")
        .line("let e = lid + r * WG;")
        .line("let mm = e / TK;")
        .line("let kk = e % TK;")
        .line("let oc = c_first + i32(mm);")
        .line("let k = k0 + kk;")
        .line("var v = 0.0;")
        .open("if (oc >= 0 && oc < i32(OC) && u32(oc) / OCG == g && k < ktotal)")
        .line("v = w[u32(oc) * ktotal + k];")
        .close()
        .line("smem[kk * TM + mm] = v;")
        .close();
    w.open("for (var r = 0u; r < TK * TN / WG; r++)")
        .line("let e = lid + r * WG;")
        .line("let kk = e / TN;")
        .line("let nn = e % TN;")
        .line("let k = k0 + kk;")
        .line("let oy = py0 + i32(nn / PC);")
        .line("let ox = px0 + i32(nn % PC);")
        .line("var v = 0.0;")
        .open(
            "if (nn < PR * PC && oy >= 0 && oy < i32(OH) && ox >= 0 && ox < i32(OW) && k < ktotal)",
        )
        .line("let ic = k / (K * K);")
        .line("let iy = oy * i32(S) + i32((k / K) % K) - i32(PAD);")
        .line("let ix = ox * i32(S) + i32(k % K) - i32(PAD);")
        .open("if (iy >= 0 && iy < i32(IH) && ix >= 0 && ix < i32(IW))")
        .line("v = x[((n * IC + g * ICG + ic) * IH + u32(iy)) * IW + u32(ix)];")
        .close()
        .close()
        .line("smem[B0 + kk * TN + nn] = v;")
        .close();
    w.line("workgroupBarrier();");
    fma_block(w);
    w.line("workgroupBarrier();");
    w.close().close();
    w.line("// Epilogue into the plane: bias and ReLU; channels outside the layer hold zero.");
    for i in 0..4 {
        w.line(format!("let oc{i} = c_first + i32(ty * 4u + {i}u);"));
        w.line(format!("let in{i} = oc{i} >= 0 && oc{i} < i32(OC);"));
        let bias = if has_bias {
            w.line(format!("let b{i} = b[u32(clamp(oc{i}, 0, i32(OC) - 1))];"));
            format!(" + b{i}")
        } else {
            String::new()
        };
        for j in 0..4 {
            let v = if relu {
                format!("max(acc{i}{j}{bias}, 0.0)")
            } else {
                format!("acc{i}{j}{bias}")
            };
            w.line(format!(
                "smem[(ty * 4u + {i}u) * TN + tx * 4u + {j}u] = select(0.0, {v}, in{i});"
            ));
        }
    }
    w.line("workgroupBarrier();");
    w.line(format!(
        "var vals: array<f32, {}>;",
        tile.m * tile.n / tile.threads()
    ));
    // The plane's width and size in positions: the conv patch until a pool shrinks it.
    let (mut width, mut plane) = ("PC", "p < PR * PC");
    for op in &post {
        match op {
            NodeOp::Lrn(_) => {
                w.line("// LRN across the tile's rows (channels), at every position of the plane.");
                phase(w, plane, |w| {
                    w.line("let lo = select(0u, m - LO, m >= LO);")
                        .line("let hi = min(TM - 1u, m + HI);")
                        .line("var sum = 0.0;")
                        .open("for (var j = lo; j <= hi; j++)")
                        .line("let a = smem[j * TN + p];")
                        .line("sum += a * a;")
                        .close()
                        .line("v = smem[m * TN + p] / pow(KBIAS + ALPHA * sum, BETA);");
                });
            }
            NodeOp::MaxPool(_) => {
                w.line(
                    "// Max-pool each row from the PR x PC patch to QR x QC; padding never wins.",
                );
                phase(w, "p < QR * QC", |w| {
                    w.line("let qr = p / QC;")
                        .line("let qc = p % QC;")
                        .line("var best = -3.4028235e38;")
                        .line("var hit = false;")
                        .open("for (var ky = 0u; ky < PK; ky++)")
                        .open("for (var kx = 0u; kx < PK; kx++)")
                        .line("let pr = qr * PS + ky;")
                        .line("let pc = qc * PS + kx;")
                        .line("let oy = py0 + i32(pr);")
                        .line("let ox = px0 + i32(pc);")
                        .open("if (pr < PR && pc < PC && oy >= 0 && oy < i32(OH) && ox >= 0 && ox < i32(OW))")
                        .line("best = max(best, smem[m * TN + pr * PC + pc]);")
                        .line("hit = true;")
                        .close()
                        .close()
                        .close()
                        .line("v = select(0.0, best, hit);");
                });
                (width, plane) = ("QC", "p < QR * QC");
            }
            other => unreachable!("a conv block holds no {other:?}"),
        }
    }
    let (out_r, out_c) = if pool { ("QR", "QC") } else { ("PR", "PC") };
    w.line("// Only the tile's own channels and positions are written.");
    w.open("for (var q = 0u; q < PER; q++)")
        .line("let e = lid + q * WG;")
        .line("let m = e / TN;")
        .line("let p = e % TN;")
        .line("let oc = c_first + i32(m);")
        .line(format!("let fy = qy0 + p / {width};"))
        .line(format!("let fx = qx0 + p % {width};"))
        .open(format!("if (p < {out_r} * {out_c} && m >= CLO && m < CLO + VC && oc < i32(OC) && fy < FH && fx < FW)"))
        .line("y[((n * OC + u32(oc)) * FH + fy) * FW + fx] = smem[m * TN + p];")
        .close()
        .close();
    w.close();
}

/// One post-op phase: every invocation computes `v` for its PER plane elements (`m`, `p`)
/// where `cond` holds, then all write back after a barrier.
fn phase(w: &mut Writer, cond: &str, body: impl FnOnce(&mut Writer)) {
    w.open("for (var q = 0u; q < PER; q++)")
        .line("let e = lid + q * WG;")
        .line("let m = e / TN;")
        .line("let p = e % TN;")
        .line("var v = 0.0;");
    w.open(format!("if ({cond})"));
    body(w);
    w.close().line("vals[q] = v;").close();
    w.line("workgroupBarrier();");
    w.open("for (var q = 0u; q < PER; q++)")
        .line("smem[lid + q * WG] = vals[q];")
        .close();
    w.line("workgroupBarrier();");
}

/// A linear layer and the softmax of its outputs: a workgroup per image. Each invocation
/// computes outputs `lid, lid + WG, …` (partial sums per 64 inputs, so rounding stays near
/// the tree reduction's), then the workgroup reduces the maximum and the sum of exponentials.
pub fn linear_softmax(w: &mut Writer, has_bias: bool, threads: u32) {
    w.line(format!("var<workgroup> red: array<f32, {threads}>;"));
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.open("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32)");
    w.line(
        "// The workgroup's image; uniform across it, so the early return precedes every barrier.",
    )
    .line("let n = wid.y * nwg.x + wid.x;")
    .open("if (n >= params.batch)")
    .line("return;")
    .close()
    .line("var m = -3.4028235e38;");
    w.open("for (var o = lid; o < OUT; o += WG)")
        .line(if has_bias {
            "var acc = b[o];"
        } else {
            "var acc = 0.0;"
        })
        .open("for (var k0 = 0u; k0 < IN; k0 += 64u)")
        .line("var part = 0.0;")
        .open("for (var k = k0; k < min(IN, k0 + 64u); k++)")
        .line("part += x[n * IN + k] * w[o * IN + k];")
        .close()
        .line("acc += part;")
        .close()
        .line("y[n * OUT + o] = acc;")
        .line("m = max(m, acc);")
        .close();
    reduce(w, "max");
    w.line("let top = red[0];")
        .line("workgroupBarrier();")
        .line("var sum = 0.0;");
    w.open("for (var o = lid; o < OUT; o += WG)")
        .line("sum += exp(y[n * OUT + o] - top);")
        .close();
    w.line("m = sum;");
    reduce(w, "add");
    w.line("let total = red[0];");
    w.open("for (var o = lid; o < OUT; o += WG)")
        .line("probs[n * OUT + o] = exp(y[n * OUT + o] - top) / total;")
        .close();
    w.close();
}

/// A tree reduction of `m` over the workgroup into `red[0]` (`max` or `add`).
fn reduce(w: &mut Writer, how: &str) {
    let combine = if how == "max" {
        "red[lid] = max(red[lid], red[lid + s]);"
    } else {
        "red[lid] = red[lid] + red[lid + s];"
    };
    w.line("red[lid] = m;").line("workgroupBarrier();");
    w.open("for (var s = WG / 2u; s > 0u; s = s / 2u)")
        .open("if (lid < s)")
        .line(combine)
        .close()
        .line("workgroupBarrier();")
        .close();
}
