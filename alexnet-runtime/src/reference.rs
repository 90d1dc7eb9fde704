//! The CPU reference interpreter: runs a plan's nodes in f64, straight from their definitions.
//!
//! It shares nothing with the kernels but the plan, so agreement between the two is evidence
//! about both. Slow by design (plain loops); use small batches.

use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{NodeOp, Plan};

/// Every activation of one forward pass, in f64, image-major.
pub fn activations(plan: &Plan, weights: &Weights, input: &[f32], batch: usize) -> Vec<Vec<f64>> {
    let mut acts: Vec<Vec<f64>> = plan.activations.iter().map(|a| vec![0.0; a.elems_per_image() as usize * batch]).collect();
    acts[plan.input_activation as usize] = input.iter().map(|&v| f64::from(v)).collect();
    let w = |i: u32| -> Vec<f64> { weights.tensors[i as usize].iter().map(|&v| f64::from(v)).collect() };
    for node in plan.nodes.iter() {
        let x = &acts[node.input as usize];
        let y = match node.op {
            NodeOp::Conv(c) => {
                let (wt, b) = (w(c.weight), c.bias.map(w));
                let (icg, ocg) = ((c.in_channels / c.groups) as usize, (c.out_channels / c.groups) as usize);
                let (ih, iw, oh, ow, k) = (c.in_h as usize, c.in_w as usize, c.out_h as usize, c.out_w as usize, c.kernel as usize);
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
                                        let iy = (oy * c.stride as usize + ky) as isize - c.pad as isize;
                                        if iy < 0 || iy >= ih as isize {
                                            continue;
                                        }
                                        for kx in 0..k {
                                            let ix = (ox * c.stride as usize + kx) as isize - c.pad as isize;
                                            if ix < 0 || ix >= iw as isize {
                                                continue;
                                            }
                                            acc += x[(xc * ih + iy as usize) * iw + ix as usize] * wt[((o * icg + icl) * k + ky) * k + kx];
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
                        let dot: f64 = x[n * inf..(n + 1) * inf].iter().zip(&wt[o * inf..(o + 1) * inf]).map(|(a, b)| a * b).sum();
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
                            let sum: f64 = (lo..=hi).map(|j| x[(n * ch + j) * hw + p].powi(2)).sum();
                            let i = (n * ch + c) * hw + p;
                            y[i] = x[i] / (f64::from(l.k) + f64::from(l.alpha) * sum).powf(f64::from(l.beta));
                        }
                    }
                }
                y
            }
            NodeOp::MaxPool(p) => {
                let (ih, iw, oh, ow) = (p.in_h as usize, p.in_w as usize, p.out_h as usize, p.out_w as usize);
                let mut y = vec![f64::NEG_INFINITY; batch * p.channels as usize * oh * ow];
                for nc in 0..batch * p.channels as usize {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best = f64::NEG_INFINITY;
                            for ky in 0..p.kernel as usize {
                                for kx in 0..p.kernel as usize {
                                    let iy = (oy * p.stride as usize + ky) as isize - p.pad as isize;
                                    let ix = (ox * p.stride as usize + kx) as isize - p.pad as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                        best = best.max(x[(nc * ih + iy as usize) * iw + ix as usize]);
                                    }
                                }
                            }
                            y[(nc * oh + oy) * ow + ox] = best;
                        }
                    }
                }
                y
            }
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
        acts[node.output as usize] = y;
    }
    acts
}

/// Logits and probabilities of `input` (a batch of images, NCHW).
pub fn forward(plan: &Plan, weights: &Weights, input: &[f32], batch: usize) -> Output {
    let acts = activations(plan, weights, input, batch);
    let logits: Vec<f32> = acts[plan.logits_activation as usize].iter().map(|&v| v as f32).collect();
    let classes = plan.classes() as usize;
    let probs = match plan.probs_activation {
        Some(p) => acts[p as usize].iter().map(|&v| v as f32).collect(),
        None => softmax_rows(&logits, classes),
    };
    Output { batch, classes, logits, probs }
}
