//! The CPU reference interpreter: runs a plan's nodes in f64, straight from their definitions.
//!
//! It shares nothing with the kernels but the plan, so agreement between the two is evidence
//! about both. Slow by design (plain loops); use small batches.

use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{NodeOp, Plan};

/// Every activation of one forward pass, in f64, image-major.
pub fn activations(plan: &Plan, weights: &Weights, input: &[f32], batch: usize) -> Vec<Vec<f64>> {
    let params: Vec<Vec<f64>> = weights
        .tensors
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v)).collect())
        .collect();
    activations_f64(
        plan,
        &params,
        input.iter().map(|&v| f64::from(v)).collect(),
        batch,
    )
}

/// [`activations`] with f64 parameters and input, for gradient checks by finite differences.
pub fn activations_f64(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    batch: usize,
) -> Vec<Vec<f64>> {
    activations_train(plan, params, input, batch, None)
}

/// Dropout masks of one training step: the run's seed and the step (see
/// [`alexnet_plan::dropout_keep`]). `None` is inference: dropout is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutMasks {
    pub seed: u32,
    pub step: u32,
}

/// Dropout's factor for element `index` of stream `d`: 0 or `1 / (1 - p)`.
fn dropout_factor(d: &alexnet_plan::DropoutNode, masks: DropoutMasks, index: usize) -> f64 {
    if alexnet_plan::dropout_keep(masks.seed, masks.step, d.stream, index as u32, d.p) {
        1.0 / (1.0 - f64::from(d.p))
    } else {
        0.0
    }
}

/// [`activations_f64`] of a training step, dropout applied with `masks` when given.
pub fn activations_train(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    batch: usize,
    masks: Option<DropoutMasks>,
) -> Vec<Vec<f64>> {
    forward_trace(plan, params, input, batch, masks).0
}

/// The forward pass, and for each node that works in place (`input == output`) the value
/// its activation held before it ran.
fn forward_trace(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    batch: usize,
    masks: Option<DropoutMasks>,
) -> (Vec<Vec<f64>>, Vec<Option<Vec<f64>>>) {
    let mut before = vec![None; plan.nodes.len()];
    let mut acts: Vec<Vec<f64>> = plan
        .activations
        .iter()
        .map(|a| vec![0.0; a.elems_per_image() as usize * batch])
        .collect();
    acts[plan.input_activation as usize] = input;
    let w = |i: u32| -> Vec<f64> { params[i as usize].clone() };
    for (index, node) in plan.nodes.iter().enumerate() {
        let x = &acts[node.input as usize];
        let y = match node.op {
            NodeOp::Conv(c) => {
                let (wt, b) = (w(c.weight), c.bias.map(w));
                let (icg, ocg) = (
                    (c.in_channels / c.groups) as usize,
                    (c.out_channels / c.groups) as usize,
                );
                let (ih, iw, oh, ow, k) = (
                    c.in_h as usize,
                    c.in_w as usize,
                    c.out_h as usize,
                    c.out_w as usize,
                    c.kernel as usize,
                );
                let (ic, oc) = (c.in_channels as usize, c.out_channels as usize);
                let mut y = vec![0.0; batch * oc * oh * ow];
                for n in 0..batch {
                    for o in 0..oc {
                        let g = o / ocg;
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                                for icl in 0..icg {
                                    let xc = n * ic + g * icg + icl;
                                    for ky in 0..k {
                                        let iy =
                                            (oy * c.stride as usize + ky) as isize - c.pad as isize;
                                        if iy < 0 || iy >= ih as isize {
                                            continue;
                                        }
                                        for kx in 0..k {
                                            let ix = (ox * c.stride as usize + kx) as isize
                                                - c.pad as isize;
                                            if ix < 0 || ix >= iw as isize {
                                                continue;
                                            }
                                            acc += x[(xc * ih + iy as usize) * iw + ix as usize]
                                                * wt[((o * icg + icl) * k + ky) * k + kx];
                                        }
                                    }
                                }
                                y[((n * oc + o) * oh + oy) * ow + ox] = acc;
                            }
                        }
                    }
                }
                y
            }
            NodeOp::Linear(l) => {
                let (wt, b) = (w(l.weight), l.bias.map(w));
                let (inf, outf) = (l.in_features as usize, l.out_features as usize);
                let mut y = vec![0.0; batch * outf];
                for n in 0..batch {
                    for o in 0..outf {
                        let dot: f64 = x[n * inf..(n + 1) * inf]
                            .iter()
                            .zip(&wt[o * inf..(o + 1) * inf])
                            .map(|(a, b)| a * b)
                            .sum();
                        y[n * outf + o] = dot + b.as_ref().map_or(0.0, |b| b[o]);
                    }
                }
                y
            }
            NodeOp::Relu => x.iter().map(|&v| v.max(0.0)).collect(),
            NodeOp::Lrn(l) => {
                let (ch, hw, size) = (l.channels as usize, (l.h * l.w) as usize, l.size as usize);
                let mut y = vec![0.0; x.len()];
                for n in 0..batch {
                    for c in 0..ch {
                        let lo = c.saturating_sub((size - 1) / 2);
                        let hi = (c + size / 2).min(ch - 1);
                        for p in 0..hw {
                            let sum: f64 =
                                (lo..=hi).map(|j| x[(n * ch + j) * hw + p].powi(2)).sum();
                            let i = (n * ch + c) * hw + p;
                            y[i] = x[i]
                                / (f64::from(l.k) + f64::from(l.alpha) * sum)
                                    .powf(f64::from(l.beta));
                        }
                    }
                }
                y
            }
            NodeOp::MaxPool(p) => {
                let (ih, iw, oh, ow) = (
                    p.in_h as usize,
                    p.in_w as usize,
                    p.out_h as usize,
                    p.out_w as usize,
                );
                let mut y = vec![f64::NEG_INFINITY; batch * p.channels as usize * oh * ow];
                for nc in 0..batch * p.channels as usize {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best = f64::NEG_INFINITY;
                            for ky in 0..p.kernel as usize {
                                for kx in 0..p.kernel as usize {
                                    let iy =
                                        (oy * p.stride as usize + ky) as isize - p.pad as isize;
                                    let ix =
                                        (ox * p.stride as usize + kx) as isize - p.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < ih
                                        && (ix as usize) < iw
                                    {
                                        best =
                                            best.max(x[(nc * ih + iy as usize) * iw + ix as usize]);
                                    }
                                }
                            }
                            y[(nc * oh + oy) * ow + ox] = best;
                        }
                    }
                }
                y
            }
            NodeOp::Dropout(d) => match masks {
                Some(m) => x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v * dropout_factor(&d, m, i))
                    .collect(),
                None => x.clone(),
            },
            NodeOp::Softmax => {
                let classes = x.len() / batch;
                let mut y = Vec::with_capacity(x.len());
                for row in x.chunks(classes) {
                    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    y.extend(e.iter().map(|v| v / s));
                }
                y
            }
        };
        if node.input == node.output {
            before[index] = Some(std::mem::replace(&mut acts[node.output as usize], y));
        } else {
            acts[node.output as usize] = y;
        }
    }
    (acts, before)
}

/// Logits and probabilities of `input` (a batch of images, NCHW).
pub fn forward(plan: &Plan, weights: &Weights, input: &[f32], batch: usize) -> Output {
    let acts = activations(plan, weights, input, batch);
    let logits: Vec<f32> = acts[plan.logits_activation as usize]
        .iter()
        .map(|&v| v as f32)
        .collect();
    let classes = plan.classes() as usize;
    let probs = match plan.probs_activation {
        Some(p) => acts[p as usize].iter().map(|&v| v as f32).collect(),
        None => softmax_rows(&logits, classes),
    };
    Output {
        batch,
        classes,
        logits,
        probs,
    }
}

/// Mean softmax cross-entropy of the logits against `labels`, and its gradient.
pub fn cross_entropy(logits: &[f64], labels: &[usize], classes: usize) -> (f64, Vec<f64>) {
    let batch = labels.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; logits.len()];
    for (n, &label) in labels.iter().enumerate() {
        let row = &logits[n * classes..(n + 1) * classes];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - m).exp()).sum();
        loss += sum.ln() + m - row[label];
        for c in 0..classes {
            let p = (row[c] - m).exp() / sum;
            grad[n * classes + c] = (p - if c == label { 1.0 } else { 0.0 }) / batch as f64;
        }
    }
    (loss / batch as f64, grad)
}

/// Loss and gradients of one batch: mean softmax cross-entropy of the logits (a final softmax
/// node is folded into the loss), dropout off.
#[derive(Clone, Debug)]
pub struct Gradients {
    pub loss: f64,
    /// One gradient per parameter, in the plan's order.
    pub params: Vec<Vec<f64>>,
    /// Gradient with respect to the input batch.
    pub input: Vec<f64>,
}

/// Backpropagates the cross-entropy loss through every node, in f64.
///
/// Max-pool sends each gradient to the first maximum of its window in row-major order, so
/// ties are broken deterministically. LRN differentiates the paper's formula with its raw alpha.
pub fn backward(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    labels: &[usize],
    batch: usize,
) -> Gradients {
    backward_train(plan, params, input, labels, batch, None)
}

/// [`backward`] of a training step whose dropout uses `masks`.
pub fn backward_train(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    labels: &[usize],
    batch: usize,
    masks: Option<DropoutMasks>,
) -> Gradients {
    trace(plan, params, input, labels, batch, masks).0
}

/// Every tensor of one training step, for checking kernels one at a time
/// ([`crate::selftest`]): a kernel's inputs are set from here and its outputs compared.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Every activation after the forward pass (in-place nodes applied).
    pub activations: Vec<Vec<f64>>,
    /// Every activation's gradient after the backward pass (the input's is in
    /// [`Gradients::input`]).
    pub grads: Vec<Vec<f64>>,
    /// Per node working in place, its activation before it ran.
    pub act_before: Vec<Option<Vec<f64>>>,
    /// Per node working in place, its activation's gradient before its backward ran.
    pub grad_before: Vec<Option<Vec<f64>>>,
    /// Per-image cross-entropy.
    pub losses: Vec<f64>,
}

/// [`backward_train`], keeping every intermediate tensor in a [`Trace`].
pub fn trace(
    plan: &Plan,
    params: &[Vec<f64>],
    input: Vec<f64>,
    labels: &[usize],
    batch: usize,
    masks: Option<DropoutMasks>,
) -> (Gradients, Trace) {
    let (acts, act_before) = forward_trace(plan, params, input, batch, masks);
    let mut grad_before = vec![None; plan.nodes.len()];
    let classes = plan.classes() as usize;
    let (loss, dlogits) = cross_entropy(&acts[plan.logits_activation as usize], labels, classes);
    let mut grads: Vec<Vec<f64>> = acts.iter().map(|a| vec![0.0; a.len()]).collect();
    let mut dparams: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    grads[plan.logits_activation as usize] = dlogits;
    for (index, node) in plan.nodes.iter().enumerate().rev() {
        if matches!(node.op, NodeOp::Softmax) && Some(node.output) == plan.probs_activation {
            continue;
        }
        let (x, y) = (&acts[node.input as usize], &acts[node.output as usize]);
        let dy = grads[node.output as usize].clone();
        let mut dx = vec![0.0; x.len()];
        match node.op {
            NodeOp::Conv(c) => {
                let wt = &params[c.weight as usize];
                let (icg, ocg) = (
                    (c.in_channels / c.groups) as usize,
                    (c.out_channels / c.groups) as usize,
                );
                let (ih, iw, oh, ow, k) = (
                    c.in_h as usize,
                    c.in_w as usize,
                    c.out_h as usize,
                    c.out_w as usize,
                    c.kernel as usize,
                );
                let (ic, oc, s, p) = (
                    c.in_channels as usize,
                    c.out_channels as usize,
                    c.stride as usize,
                    c.pad as isize,
                );
                let mut dw = vec![0.0; wt.len()];
                let mut db = vec![0.0; oc];
                for n in 0..batch {
                    for o in 0..oc {
                        let g = o / ocg;
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let d = dy[((n * oc + o) * oh + oy) * ow + ox];
                                db[o] += d;
                                for icl in 0..icg {
                                    let xc = n * ic + g * icg + icl;
                                    for ky in 0..k {
                                        let iy = (oy * s + ky) as isize - p;
                                        if iy < 0 || iy >= ih as isize {
                                            continue;
                                        }
                                        for kx in 0..k {
                                            let ix = (ox * s + kx) as isize - p;
                                            if ix < 0 || ix >= iw as isize {
                                                continue;
                                            }
                                            let xi = (xc * ih + iy as usize) * iw + ix as usize;
                                            let wi = ((o * icg + icl) * k + ky) * k + kx;
                                            dw[wi] += d * x[xi];
                                            dx[xi] += d * wt[wi];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                dparams[c.weight as usize] = dw;
                if let Some(b) = c.bias {
                    dparams[b as usize] = db;
                }
            }
            NodeOp::Linear(l) => {
                let wt = &params[l.weight as usize];
                let (inf, outf) = (l.in_features as usize, l.out_features as usize);
                let mut dw = vec![0.0; wt.len()];
                let mut db = vec![0.0; outf];
                for n in 0..batch {
                    for o in 0..outf {
                        let d = dy[n * outf + o];
                        db[o] += d;
                        for i in 0..inf {
                            dw[o * inf + i] += d * x[n * inf + i];
                            dx[n * inf + i] += d * wt[o * inf + i];
                        }
                    }
                }
                dparams[l.weight as usize] = dw;
                if let Some(b) = l.bias {
                    dparams[b as usize] = db;
                }
            }
            NodeOp::Relu => {
                for i in 0..x.len() {
                    dx[i] = if x[i] > 0.0 { dy[i] } else { 0.0 };
                }
            }
            NodeOp::Lrn(l) => {
                let (ch, hw, size) = (l.channels as usize, (l.h * l.w) as usize, l.size as usize);
                let (alpha, beta, kb) = (f64::from(l.alpha), f64::from(l.beta), f64::from(l.k));
                let window =
                    |c: usize| (c.saturating_sub((size - 1) / 2), (c + size / 2).min(ch - 1));
                for n in 0..batch {
                    for pix in 0..hw {
                        let at = |c: usize| (n * ch + c) * hw + pix;
                        let denom: Vec<f64> = (0..ch)
                            .map(|c| {
                                let (lo, hi) = window(c);
                                kb + alpha * (lo..=hi).map(|j| x[at(j)].powi(2)).sum::<f64>()
                            })
                            .collect();
                        for c in 0..ch {
                            // y_c = x_c * D_c^-beta, and D_c depends on x_j for every j in c's window.
                            dx[at(c)] += dy[at(c)] * denom[c].powf(-beta);
                            let (lo, hi) = window(c);
                            let common = -2.0
                                * alpha
                                * beta
                                * dy[at(c)]
                                * x[at(c)]
                                * denom[c].powf(-beta - 1.0);
                            for j in lo..=hi {
                                dx[at(j)] += common * x[at(j)];
                            }
                        }
                    }
                }
            }
            NodeOp::MaxPool(pl) => {
                let (ih, iw, oh, ow) = (
                    pl.in_h as usize,
                    pl.in_w as usize,
                    pl.out_h as usize,
                    pl.out_w as usize,
                );
                for nc in 0..batch * pl.channels as usize {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best: Option<(f64, usize)> = None;
                            for ky in 0..pl.kernel as usize {
                                for kx in 0..pl.kernel as usize {
                                    let iy =
                                        (oy * pl.stride as usize + ky) as isize - pl.pad as isize;
                                    let ix =
                                        (ox * pl.stride as usize + kx) as isize - pl.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < ih
                                        && (ix as usize) < iw
                                    {
                                        let i = (nc * ih + iy as usize) * iw + ix as usize;
                                        if best.is_none_or(|(v, _)| x[i] > v) {
                                            best = Some((x[i], i));
                                        }
                                    }
                                }
                            }
                            if let Some((_, i)) = best {
                                dx[i] += dy[(nc * oh + oy) * ow + ox];
                            }
                        }
                    }
                }
            }
            NodeOp::Dropout(d) => {
                for i in 0..dx.len() {
                    dx[i] = dy[i] * masks.map_or(1.0, |m| dropout_factor(&d, m, i));
                }
            }
            NodeOp::Softmax => {
                // A softmax inside the network: dx = y * (dy - sum(dy * y)) per image.
                let classes = x.len() / batch;
                for n in 0..batch {
                    let r = n * classes..(n + 1) * classes;
                    let dot: f64 = dy[r.clone()]
                        .iter()
                        .zip(&y[r.clone()])
                        .map(|(a, b)| a * b)
                        .sum();
                    for i in r {
                        dx[i] = y[i] * (dy[i] - dot);
                    }
                }
            }
        }
        // Views share activations, so gradients flowing into one add up; an in-place node
        // (dropout) replaces the gradient it read.
        if node.input == node.output {
            grad_before[index] = Some(std::mem::replace(&mut grads[node.input as usize], dx));
        } else {
            for (acc, d) in grads[node.input as usize].iter_mut().zip(dx) {
                *acc += d;
            }
        }
    }
    let input = std::mem::take(&mut grads[plan.input_activation as usize]);
    let losses = (0..batch)
        .map(|n| {
            cross_entropy(
                &acts[plan.logits_activation as usize][n * classes..(n + 1) * classes],
                &labels[n..=n],
                classes,
            )
            .0
        })
        .collect();
    let trace = Trace {
        activations: acts,
        grads,
        act_before,
        grad_before,
        losses,
    };
    (
        Gradients {
            loss,
            params: dparams,
            input,
        },
        trace,
    )
}
