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
fn window(len: u32, kernel: u32, stride: u32, pad: u32, floor: bool, axis: &str) -> Result<u32, String> {
    let padded = len + 2 * pad;
    if kernel > padded {
        return Err(format!("kernel {kernel} is larger than the padded {axis} {padded}"));
    }
    let span = padded - kernel;
    if span % stride != 0 && !floor {
        let mut fix = Vec::new();
        let bigger = (len + 1..len + stride + 1).find(|l| (l + 2 * pad - kernel) % stride == 0);
        if let Some(l) = bigger {
            fix.push(format!("use {l}"));
        }
        if let Some(p) = (0..kernel).find(|p| (len + 2 * p).checked_sub(kernel).is_some_and(|s| s % stride == 0)) {
            if p != pad {
                fix.push(format!("pad {p}"));
            }
        }
        fix.push("add `floor` to drop the remainder".into());
        let pad_text = if pad > 0 { format!(" and padding {pad}") } else { String::new() };
        return Err(format!("kernel {kernel} with stride {stride}{pad_text} does not tile {axis} {len} ({})", fix.join(", or ")));
    }
    Ok(span / stride + 1)
}

/// Infers the shape of every node.
pub fn infer(graph: &mut Graph) -> Result<(), Errors> {
    let mut sink = Sink::default();
    for id in graph.topo() {
        let input: Option<Vec<u32>> = graph.inputs(id).first().and_then(|&src| graph.node(src).shape.clone());
        let node = graph.node(id);
        let layer = node.layer.clone();
        let span = node.span;
        let shape: Option<Vec<u32>> = match (node.op, input.as_deref()) {
            (Op::Input { shape }, _) => Some(shape.to_vec()),
            (_, None) => None,
            (Op::Conv(c), Some(&[ch, h, w])) => {
                let mut ok = true;
                if ch % c.groups != 0 {
                    sink.push(span, format!("{layer}: groups {} do not divide the {ch} input channels", c.groups));
                    ok = false;
                }
                if c.out_channels % c.groups != 0 {
                    sink.push(span, format!("{layer}: groups {} do not divide the {} output channels", c.groups, c.out_channels));
                    ok = false;
                }
                let oh = window(h, c.kernel, c.stride, c.pad, c.floor, "height");
                let ow = window(w, c.kernel, c.stride, c.pad, c.floor, "width");
                match (oh, ow) {
                    (Ok(oh), Ok(ow)) if ok => Some(vec![c.out_channels, oh, ow]),
                    (oh, ow) => {
                        for e in [oh.err(), ow.err()].into_iter().flatten() {
                            sink.push(span, format!("{layer}: {e}"));
                        }
                        None
                    }
                }
            }
            (Op::MaxPool(p), Some(&[ch, h, w])) => {
                match (window(h, p.kernel, p.stride, p.pad, p.floor, "height"), window(w, p.kernel, p.stride, p.pad, p.floor, "width")) {
                    (Ok(oh), Ok(ow)) => Some(vec![ch, oh, ow]),
                    (oh, ow) => {
                        for e in [oh.err(), ow.err()].into_iter().flatten() {
                            sink.push(span, format!("{layer}: {e}"));
                        }
                        None
                    }
                }
            }
            (Op::Lrn(_), Some(s @ &[_, _, _])) => Some(s.to_vec()),
            (Op::Conv(_) | Op::MaxPool(_) | Op::Lrn(_), Some(other)) => {
                sink.push(span, format!("{layer}: `{}` needs a [C, H, W] input, got {}", node.op.mnemonic(), dims(other)));
                None
            }
            (Op::Flatten, Some(s)) => Some(vec![s.iter().product()]),
            (Op::Linear(l), Some(&[_])) => Some(vec![l.out_features]),
            (Op::Linear(_), Some(other)) => {
                sink.push(span, format!("{layer}: `linear` needs a flat input, got {}", dims(other)));
                None
            }
            (Op::Relu | Op::Dropout(_) | Op::Softmax | Op::Output, Some(s)) => Some(s.to_vec()),
        };
        graph.node_mut(id).shape = shape;
    }
    sink.finish(())
}
