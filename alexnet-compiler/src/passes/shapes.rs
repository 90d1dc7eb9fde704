//! Shape inference: sets every node's per-image output shape, or reports why it cannot.
//!
//! Errors point at the op and name the layer: a kernel that does not tile its input (unless
//! the op says `floor`), groups that do not divide the channels, a kernel larger than its
//! padded input, an op given a tensor of the wrong rank. All are collected. It does not check
//! device limits (that is `valid`).

use crate::error::{Errors, Sink};
use crate::ir::{dims, Graph, Op};

/// Window arithmetic shared by conv and max-pool: the output length along one axis, or a
/// message saying why there is none.
fn window(
    len: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    floor: bool,
    axis: &str,
) -> Result<u32, String> {
    // In u64: a declared size near u32::MAX plus its padding must be an error, not an overflow.
    let (len64, kernel64, stride64, pad64) = (
        u64::from(len),
        u64::from(kernel),
        u64::from(stride.max(1)),
        u64::from(pad),
    );
    let padded = len64 + 2 * pad64;
    if kernel64 > padded {
        return Err(format!(
            "kernel {kernel} is larger than the padded {axis} {padded}"
        ));
    }
    let span = padded - kernel64;
    if !span.is_multiple_of(stride64) && !floor {
        let mut fix = Vec::new();
        let bigger = (len64 + 1..len64 + stride64 + 1)
            .find(|l| (l + 2 * pad64 - kernel64).is_multiple_of(stride64));
        if let Some(l) = bigger {
            fix.push(format!("use {l}"));
        }
        if let Some(p) = (0..kernel64).find(|p| {
            (len64 + 2 * p)
                .checked_sub(kernel64)
                .is_some_and(|s| s % stride64 == 0)
        }) {
            if p != pad64 {
                fix.push(format!("pad {p}"));
            }
        }
        fix.push("add `floor` to drop the remainder".into());
        let pad_text = if pad > 0 {
            format!(" and padding {pad}")
        } else {
            String::new()
        };
        return Err(format!(
            "kernel {kernel} with stride {stride}{pad_text} does not tile {axis} {len} ({})",
            fix.join(", or ")
        ));
    }
    u32::try_from(span / stride64 + 1).map_err(|_| {
        format!(
            "the output {axis} {} does not fit in 32 bits",
            span / stride64 + 1
        )
    })
}

/// Output size of a square window over `[h, w]`; reports a failure on both axes once when
/// the input is square. A window that does not tile still yields PyTorch's floored size, so
/// later layers can report their own errors in the same build.
/// `quiet` suppresses the report when the input size is itself the fallback of an earlier
/// error. Returns the size and whether it is such a fallback.
#[allow(clippy::too_many_arguments)]
fn window2(
    sink: &mut Sink,
    span: proc_macro2::Span,
    layer: &str,
    h: u32,
    w: u32,
    k: u32,
    s: u32,
    p: u32,
    floor: bool,
    quiet: bool,
) -> Option<((u32, u32), bool)> {
    let oh = window(
        h,
        k,
        s,
        p,
        floor,
        if h == w { "height and width" } else { "height" },
    );
    let ow = window(w, k, s, p, floor, "width");
    let fallback = |len: u32| {
        (u64::from(len) + 2 * u64::from(p))
            .checked_sub(u64::from(k))
            .and_then(|d| u32::try_from(d / u64::from(s.max(1)) + 1).ok())
    };
    match (oh, ow) {
        (Ok(oh), Ok(ow)) => Some(((oh, ow), false)),
        _ if quiet => Some(((fallback(h)?, fallback(w)?), true)),
        (oh, ow) => {
            let mut errs = vec![oh.err()];
            if h != w {
                errs.push(ow.err());
            }
            for e in errs.into_iter().flatten() {
                sink.push(span, format!("{layer}: {e}"));
            }
            Some(((fallback(h)?, fallback(w)?), true))
        }
    }
}

/// Infers the shape of every node.
pub fn infer(graph: &mut Graph) -> Result<(), Errors> {
    let mut sink = Sink::default();
    // Nodes whose size is a fallback after a tiling error: their successors stay quiet.
    let mut fallback = std::collections::BTreeSet::new();
    for id in graph.topo() {
        let quiet = graph.inputs(id).iter().any(|i| fallback.contains(i));
        let mut approx = quiet;
        let input: Option<Vec<u32>> = graph
            .inputs(id)
            .first()
            .and_then(|&src| graph.node(src).shape.clone());
        let node = graph.node(id);
        let layer = node.layer.clone();
        let span = node.span;
        let shape: Option<Vec<u32>> = match (node.op, input.as_deref()) {
            (Op::Input { shape }, _) => Some(shape.to_vec()),
            (_, None) => None,
            (Op::Conv(c), Some(&[ch, h, w])) => {
                if ch % c.groups != 0 {
                    sink.push(
                        span,
                        format!(
                            "{layer}: groups {} do not divide the {ch} input channels",
                            c.groups
                        ),
                    );
                }
                if c.out_channels % c.groups != 0 {
                    sink.push(
                        span,
                        format!(
                            "{layer}: groups {} do not divide the {} output channels",
                            c.groups, c.out_channels
                        ),
                    );
                }
                window2(
                    &mut sink, span, &layer, h, w, c.kernel, c.stride, c.pad, c.floor, quiet,
                )
                .map(|((oh, ow), a)| {
                    approx |= a;
                    vec![c.out_channels, oh, ow]
                })
            }
            (Op::MaxPool(p), Some(&[ch, h, w])) => window2(
                &mut sink, span, &layer, h, w, p.kernel, p.stride, p.pad, p.floor, quiet,
            )
            .map(|((oh, ow), a)| {
                approx |= a;
                vec![ch, oh, ow]
            }),
            (Op::Lrn(_), Some(s @ &[_, _, _])) => Some(s.to_vec()),
            (Op::Conv(_) | Op::MaxPool(_) | Op::Lrn(_), Some(other)) => {
                sink.push(
                    span,
                    format!(
                        "{layer}: `{}` needs a [C, H, W] input, got {}",
                        node.op.mnemonic(),
                        dims(other)
                    ),
                );
                None
            }
            (Op::Flatten, Some(s)) => match s.iter().try_fold(1u32, |a, &d| a.checked_mul(d)) {
                Some(n) => Some(vec![n]),
                None => {
                    sink.push(
                        span,
                        format!(
                            "{layer}: flattening {} gives more than {} features",
                            dims(s),
                            u32::MAX
                        ),
                    );
                    None
                }
            },
            (Op::Linear(l), Some(&[_])) => Some(vec![l.out_features]),
            (Op::Linear(_), Some(other)) => {
                sink.push(
                    span,
                    format!("{layer}: `linear` needs a flat input, got {}", dims(other)),
                );
                None
            }
            (Op::Relu | Op::Dropout(_) | Op::Softmax | Op::Output, Some(s)) => Some(s.to_vec()),
            // The backward graph is added after this pass, shaped by `passes::autodiff`.
            (Op::Loss | Op::Grad { .. } | Op::Sgd { .. }, Some(_)) => node.shape.clone(),
        };
        if approx {
            fallback.insert(id);
        }
        graph.node_mut(id).shape = shape;
    }
    sink.finish(())
}
