//! Scheduling: turns a valid graph into the execution plan, less the WGSL.
//!
//! It names activations and parameters (PyTorch style: `conv1.weight`, or the layer's
//! `#[weights]` prefix), makes flatten and inference-time dropout views of their input rather
//! than copies, orders the kernels, and counts parameters and multiply-adds per layer.
//! Each op writes its own activation; reusing memory across ops is a later pass.

use crate::ir::{Graph, Node as IrNode, NodeId, Op, Wrt};
use crate::valid::{GraphInfo, WORKGROUP};
use alexnet_plan as plan;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Output channels and output pixels of one tiled-conv workgroup (each side of its tile).
pub const CONV_TILE: u32 = 64;
/// Invocations of a tiled-conv workgroup: 16×16, each computing 4×4 outputs.
pub const CONV_TILE_THREADS: u32 = 256;

/// Standard deviation of the paper's weight initialisation.
const INIT_STD: f32 = 0.01;

/// Builds the plan of `graph`; kernels get their WGSL from `codegen`.
pub fn schedule(graph: &Graph, info: &GraphInfo, name: &str, doc: &str) -> plan::Plan {
    let mut activations: Vec<plan::Activation> = Vec::new();
    let mut params: Vec<plan::Param> = Vec::new();
    let mut nodes: Vec<plan::Node> = Vec::new();
    let mut kernels: Vec<plan::Kernel> = Vec::new();
    let mut layers: Vec<plan::LayerStats> = Vec::new();
    let mut act_of: BTreeMap<NodeId, u32> = BTreeMap::new();
    let mut input_activation = 0;
    let mut logits = 0;
    let mut probs = None;
    let mut convs_seen = 0u32;
    let mut dropouts = 0u32;
    // Plan node of each forward IR node that computes.
    let mut node_of: BTreeMap<NodeId, u32> = BTreeMap::new();

    for &id in info.order.iter().filter(|&&id| !graph.node(id).op.is_training()) {
        let node = graph.node(id);
        let shape = node.shape.clone().expect("valid graphs are shaped");
        let src = graph.inputs(id).first().copied();
        let in_act = src.map(|s| act_of[&s]);
        let in_shape: Vec<u32> = src.and_then(|s| graph.node(s).shape.clone()).unwrap_or_default();
        let layer = layer_stats(&mut layers, &node.layer);
        let new_activation = |activations: &mut Vec<plan::Activation>, layer: &mut plan::LayerStats, suffix: &str| {
            activations.push(plan::Activation { name: format!("{}.{suffix}", node.layer).into(), shape: shape.clone().into() });
            layer.activation_bytes += 4 * shape.iter().map(|&d| u64::from(d)).product::<u64>();
            (activations.len() - 1) as u32
        };
        let op = match node.op {
            Op::Input { .. } => {
                activations.push(plan::Activation { name: "input".into(), shape: shape.clone().into() });
                input_activation = (activations.len() - 1) as u32;
                act_of.insert(id, input_activation);
                layers.pop();
                continue;
            }
            Op::Output => {
                logits = in_act.expect("output has an input");
                if let Some(last) = nodes.last() {
                    if matches!(last.op, plan::NodeOp::Softmax) && last.output == logits {
                        probs = Some(logits);
                        logits = last.input;
                    }
                }
                layers.pop();
                continue;
            }
            Op::Flatten => {
                act_of.insert(id, in_act.expect("views have an input"));
                layer.output = shape.clone().into();
                continue;
            }
            Op::Dropout(d) => {
                // In place: it runs only when training, and backward recomputes its mask.
                let a = in_act.expect("dropout has an input");
                act_of.insert(id, a);
                layer.output = shape.clone().into();
                let elems = shape.iter().product();
                let op = plan::NodeOp::Dropout(plan::DropoutNode { p: d.p, stream: dropouts, elems });
                dropouts += 1;
                node_of.insert(id, nodes.len() as u32);
                nodes.push(plan::Node { layer: node.layer.clone().into(), op, input: a, output: a, device: node.device });
                let k = kernel(&nodes, (nodes.len() - 1) as u32, format!("{}_dropout", node.layer), u64::from(elems), plan::Role::Dropout, vec![
                    plan::Binding::Uniform,
                    plan::Binding::Activation { index: a, write: true },
                ]);
                kernels.push(k);
                continue;
            }
            Op::Loss | Op::Grad { .. } | Op::Sgd { .. } => unreachable!("training ops are filtered out"),
            Op::Conv(c) => {
                convs_seen += 1;
                // The paper sets biases to 1 in conv2, conv4 and conv5 (and the FC layers).
                let bias_one = matches!(convs_seen, 2 | 4 | 5);
                let (weight, bias) = add_params(&mut params, node, &info.parts[&id], &shape_conv(c, &in_shape), bias_one, c.bias);
                let (oh, ow) = (shape[1], shape[2]);
                layer.params += params[weight as usize].elems() + bias.map_or(0, |b| params[b as usize].elems());
                layer.macs += u64::from(c.out_channels) * u64::from(oh * ow) * u64::from(in_shape[0] / c.groups) * u64::from(c.kernel * c.kernel);
                plan::NodeOp::Conv(plan::ConvNode {
                    in_channels: in_shape[0],
                    in_h: in_shape[1],
                    in_w: in_shape[2],
                    out_channels: c.out_channels,
                    out_h: oh,
                    out_w: ow,
                    kernel: c.kernel,
                    stride: c.stride,
                    pad: c.pad,
                    groups: c.groups,
                    weight,
                    bias,
                })
            }
            Op::Linear(l) => {
                let (weight, bias) = add_params(&mut params, node, &info.parts[&id], &[l.out_features, in_shape[0]], true, l.bias);
                layer.params += params[weight as usize].elems() + bias.map_or(0, |b| params[b as usize].elems());
                layer.macs += u64::from(l.out_features) * u64::from(in_shape[0]);
                plan::NodeOp::Linear(plan::LinearNode { in_features: in_shape[0], out_features: l.out_features, weight, bias })
            }
            Op::Relu => plan::NodeOp::Relu,
            Op::Softmax => plan::NodeOp::Softmax,
            Op::Lrn(l) => plan::NodeOp::Lrn(plan::LrnNode {
                channels: shape[0],
                h: shape[1],
                w: shape[2],
                size: l.size,
                alpha: l.alpha,
                beta: l.beta,
                k: l.k,
            }),
            Op::MaxPool(p) => plan::NodeOp::MaxPool(plan::PoolNode {
                channels: shape[0],
                in_h: in_shape[1],
                in_w: in_shape[2],
                out_h: shape[1],
                out_w: shape[2],
                kernel: p.kernel,
                stride: p.stride,
                pad: p.pad,
            }),
        };
        let out = new_activation(&mut activations, layer, node.op.mnemonic());
        layer.output = shape.clone().into();
        act_of.insert(id, out);
        let node_index = nodes.len() as u32;
        node_of.insert(id, node_index);
        nodes.push(plan::Node { layer: node.layer.clone().into(), op, input: in_act.expect("ops have an input"), output: out, device: node.device });
        kernels.extend(kernels_for(&nodes[node_index as usize], node_index, &params, &shape));
    }
    kernels.extend(training_kernels(graph, info, &nodes, &params, &node_of, &act_of, logits));
    plan::Plan {
        name: name.to_string().into(),
        doc: doc.to_string().into(),
        input: match graph.node(info.order[0]).op {
            Op::Input { shape } => shape,
            _ => unreachable!("the first node in topological order is the input"),
        },
        devices: graph.devices,
        max_batch: info.target.max_batch,
        micro_batch: info.micro_batch,
        activations: activations.into(),
        params: params.into(),
        nodes: nodes.into(),
        kernels: kernels.into(),
        input_activation,
        logits_activation: logits,
        probs_activation: probs,
        layers: layers.into(),
        limits: info.target.limits,
        ir: graph.to_string().into(),
        dot: graph.to_dot(name).into(),
    }
}

fn shape_conv(c: crate::ir::Conv, in_shape: &[u32]) -> Vec<u32> {
    vec![c.out_channels, in_shape[0] / c.groups, c.kernel, c.kernel]
}

/// The stats entry of `layer`, created on first use so layers keep declaration order.
fn layer_stats<'a>(layers: &'a mut Vec<plan::LayerStats>, layer: &str) -> &'a mut plan::LayerStats {
    if layers.last().is_none_or(|l| l.name != layer) {
        layers.push(plan::LayerStats { name: layer.to_string().into(), output: Cow::Borrowed(&[]), params: 0, macs: 0, activation_bytes: 0 });
    }
    layers.last_mut().expect("just pushed")
}

/// Appends the weight (and bias) of a conv or linear node; returns their indices.
fn add_params(params: &mut Vec<plan::Param>, node: &IrNode, ranges: &[(u32, u32)], shape: &[u32], bias_one: bool, has_bias: bool) -> (u32, Option<u32>) {
    let parts: Vec<plan::Part> = ranges.iter().map(|&(start, rows)| plan::Part { start, rows }).collect();
    let layout = if shape.len() == 4 { plan::Layout::Oihw } else { plan::Layout::Oi };
    params.push(plan::Param {
        name: format!("{}.weight", node.param_prefix).into(),
        layer: node.layer.clone().into(),
        shape: shape.to_vec().into(),
        layout,
        init: plan::Init::Normal { std: INIT_STD },
        parts: parts.clone().into(),
    });
    let weight = (params.len() - 1) as u32;
    if !has_bias {
        return (weight, None);
    }
    params.push(plan::Param {
        name: format!("{}.bias", node.param_prefix).into(),
        layer: node.layer.clone().into(),
        shape: vec![shape[0]].into(),
        layout: plan::Layout::O,
        init: plan::Init::Constant { value: if bias_one { 1.0 } else { 0.0 } },
        parts: parts.into(),
    });
    (weight, Some((params.len() - 1) as u32))
}

/// The kernels computing `node`: one per weight part for conv and linear, else one.
fn kernels_for(node: &plan::Node, index: u32, params: &[plan::Param], out_shape: &[u32]) -> Vec<plan::Kernel> {
    let out_elems: u64 = out_shape.iter().map(|&d| u64::from(d)).product();
    let act = |a: u32, write: bool| plan::Binding::Activation { index: a, write };
    let nodes = std::slice::from_ref(node);
    let kernel = |name: String, threads: u64, bindings: Vec<plan::Binding>| {
        plan::Kernel { node: index, ..kernel(nodes, 0, name, threads, plan::Role::Forward, bindings) }
    };
    let (weight, bias, per_row) = match node.op {
        plan::NodeOp::Conv(c) => (c.weight, c.bias, u64::from(c.out_h * c.out_w)),
        // A workgroup per output feature (see codegen's linear kernel).
        plan::NodeOp::Linear(l) => (l.weight, l.bias, u64::from(WORKGROUP)),
        plan::NodeOp::Relu | plan::NodeOp::Lrn(_) | plan::NodeOp::MaxPool(_) => {
            let name = format!("{}_{}_fwd", node.layer, op_name(&node.op));
            return vec![kernel(name, out_elems, vec![plan::Binding::Uniform, act(node.input, false), act(node.output, true)])];
        }
        plan::NodeOp::Softmax => {
            let name = format!("{}_softmax_fwd", node.layer);
            return vec![kernel(name, 1, vec![plan::Binding::Uniform, act(node.input, false), act(node.output, true)])];
        }
        plan::NodeOp::Dropout(_) => unreachable!("dropout is scheduled in place"),
    };
    let parts = &params[weight as usize].parts;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let name = if parts.len() == 1 { format!("{}_fwd", node.layer) } else { format!("{}_fwd_part{i}", node.layer) };
            let mut bindings = vec![plan::Binding::Uniform, act(node.input, false), plan::Binding::Param { index: weight, part: i as u32 }];
            if let Some(b) = bias {
                bindings.push(plan::Binding::Param { index: b, part: i as u32 });
            }
            bindings.push(act(node.output, true));
            let mut k = kernel(name, u64::from(part.rows) * per_row, bindings);
            // An unsplit conv runs as tiled implicit GEMM (see codegen); a split one, whose
            // parts may cut through a group, keeps one invocation per output.
            if let (plan::NodeOp::Conv(c), 1) = (node.op, parts.len()) {
                k.workgroup_size = CONV_TILE_THREADS;
                k.dispatch = plan::Dispatch::Tiles {
                    m_tiles: c.groups * (c.out_channels / c.groups).div_ceil(CONV_TILE),
                    pixels: u64::from(c.out_h * c.out_w),
                    tile_pixels: CONV_TILE,
                };
            }
            k
        })
        .collect()
}

/// The op's name in kernel names.
pub fn op_name(op: &plan::NodeOp) -> &'static str {
    match op {
        plan::NodeOp::Conv(_) => "conv",
        plan::NodeOp::Relu => "relu",
        plan::NodeOp::Lrn(_) => "lrn",
        plan::NodeOp::MaxPool(_) => "maxpool",
        plan::NodeOp::Linear(_) => "linear",
        plan::NodeOp::Softmax => "softmax",
        plan::NodeOp::Dropout(_) => "dropout",
    }
}

/// A kernel of node `index` with one invocation per element (per image, or in all for
/// parameter kernels), WGSL still to be written.
fn kernel(nodes: &[plan::Node], index: u32, name: String, threads: u64, role: plan::Role, bindings: Vec<plan::Binding>) -> plan::Kernel {
    let fixed = matches!(role, plan::Role::Update | plan::Role::Backward(plan::Wrt::Weight | plan::Wrt::Bias));
    plan::Kernel {
        name: name.into(),
        layer: nodes[index as usize].layer.clone(),
        node: index,
        wgsl: Cow::Borrowed(""),
        entry_point: "main".into(),
        workgroup_size: WORKGROUP,
        threads_per_image: threads,
        dispatch: if fixed { plan::Dispatch::Fixed } else { plan::Dispatch::PerInvocation },
        bindings: bindings.into(),
        role,
    }
}

/// The kernels of the backward graph that `passes::autodiff` added: the loss, then the
/// gradients in the graph's order, then every update (updates overwrite weights that the
/// gradients read). Conv and linear kernels run per weight part; an input gradient's later
/// parts add to the first's.
fn training_kernels(
    graph: &Graph,
    info: &GraphInfo,
    nodes: &[plan::Node],
    params: &[plan::Param],
    node_of: &BTreeMap<NodeId, u32>,
    act_of: &BTreeMap<NodeId, u32>,
    logits: u32,
) -> Vec<plan::Kernel> {
    use plan::Binding as B;
    let mut backward = Vec::new();
    let mut updates = Vec::new();
    for &id in info.order.iter().filter(|&&id| graph.node(id).op.is_training()) {
        let (of, wrt, update) = match graph.node(id).op {
            Op::Loss => {
                // Named after no layer: the loss belongs to the whole network.
                let producer = nodes.iter().rposition(|n| n.output == logits && !matches!(n.op, plan::NodeOp::Dropout(_)));
                let index = producer.or(nodes.len().checked_sub(1)).unwrap_or(0) as u32;
                let bindings = vec![B::Uniform, B::Activation { index: logits, write: false }, B::Labels, B::Grad { index: logits, write: true }, B::Loss];
                let mut k = kernel(nodes, index, "loss".into(), 1, plan::Role::Loss, bindings);
                k.layer = "loss".into();
                backward.push(k);
                continue;
            }
            Op::Grad { of, wrt } => (of, wrt, false),
            Op::Sgd { of, wrt } => (of, wrt, true),
            op => unreachable!("{} is not a training op", op.mnemonic()),
        };
        let index = node_of[&of];
        let node = &nodes[index as usize];
        let layer = &node.layer;
        let op = op_name(&node.op);
        let (input, output) = (node.input, node.output);
        let in_elems = graph.inputs(of).first().and_then(|&s| graph.node(s).shape.as_ref()).map_or(1, |s| s.iter().map(|&d| u64::from(d)).product());
        debug_assert_eq!(act_of.get(&graph.inputs(of)[0]), Some(&input));
        let param = match (node.op, wrt) {
            (plan::NodeOp::Conv(c), Wrt::Weight) => Some(c.weight),
            (plan::NodeOp::Linear(l), Wrt::Weight) => Some(l.weight),
            (plan::NodeOp::Conv(plan::ConvNode { bias, .. }) | plan::NodeOp::Linear(plan::LinearNode { bias, .. }), Wrt::Bias) => bias,
            _ => None,
        };
        let plan_wrt = match wrt {
            Wrt::Input => plan::Wrt::Input,
            Wrt::Weight => plan::Wrt::Weight,
            Wrt::Bias => plan::Wrt::Bias,
        };
        let short = match wrt {
            Wrt::Input => "x",
            Wrt::Weight => "w",
            Wrt::Bias => "b",
        };
        match (param, wrt) {
            (None, Wrt::Input) => {
                let weight = match node.op {
                    plan::NodeOp::Conv(c) => Some(c.weight),
                    plan::NodeOp::Linear(l) => Some(l.weight),
                    _ => None,
                };
                let role = plan::Role::Backward(plan::Wrt::Input);
                match weight {
                    Some(w) => {
                        let parts = &params[w as usize].parts;
                        for part in 0..parts.len() as u32 {
                            let name = part_name(format!("{layer}_{op}_bwd_x"), part, parts.len());
                            let bindings =
                                vec![B::Uniform, B::Grad { index: output, write: false }, B::Param { index: w, part }, B::Grad { index: input, write: true }];
                            let mut k = kernel(nodes, index, name, in_elems, role, bindings);
                            // Stride 1 with an unsplit weight: a convolution of dy, tiled like the forward
                            // pass, when a group's input channels fill at least half a 64-row tile.
                            if let (plan::NodeOp::Conv(c), 1) = (node.op, parts.len()) {
                                let icg = c.in_channels / c.groups;
                                if c.stride == 1 && c.pad < c.kernel && icg >= CONV_TILE / 2 {
                                    k.workgroup_size = CONV_TILE_THREADS;
                                    k.dispatch = plan::Dispatch::Tiles {
                                        m_tiles: c.groups * icg.div_ceil(CONV_TILE),
                                        pixels: u64::from(c.in_h * c.in_w),
                                        tile_pixels: CONV_TILE,
                                    };
                                }
                            }
                            backward.push(k);
                        }
                    }
                    None if matches!(node.op, plan::NodeOp::Dropout(_)) => {
                        let bindings = vec![B::Uniform, B::Grad { index: output, write: true }];
                        backward.push(kernel(nodes, index, format!("{layer}_dropout_bwd_x"), in_elems, role, bindings));
                    }
                    None => {
                        let threads = if matches!(node.op, plan::NodeOp::Softmax) { 1 } else { in_elems };
                        let bindings = vec![
                            B::Uniform,
                            B::Activation { index: input, write: false },
                            B::Grad { index: output, write: false },
                            B::Grad { index: input, write: true },
                        ];
                        backward.push(kernel(nodes, index, format!("{layer}_{op}_bwd_x"), threads, role, bindings));
                    }
                }
            }
            (Some(p), _) => {
                let param = &params[p as usize];
                for (part, range) in param.parts.iter().enumerate() {
                    let part = part as u32;
                    let elems = u64::from(range.rows) * param.row_elems();
                    if update {
                        let name = part_name(format!("{layer}_sgd_{short}"), part, param.parts.len());
                        let bindings = vec![
                            B::Uniform,
                            B::ParamMut { index: p, part },
                            B::ParamGrad { index: p, part, write: false },
                            B::Momentum { index: p, part },
                        ];
                        updates.push(kernel(nodes, index, name, elems, plan::Role::Update, bindings));
                    } else {
                        let name = part_name(format!("{layer}_{op}_bwd_{short}"), part, param.parts.len());
                        let mut bindings = vec![B::Uniform];
                        if wrt == Wrt::Weight {
                            bindings.push(B::Activation { index: input, write: false });
                        }
                        bindings.push(B::Grad { index: output, write: false });
                        bindings.push(B::ParamGrad { index: p, part, write: true });
                        let mut k = kernel(nodes, index, name, elems, plan::Role::Backward(plan_wrt), bindings);
                        // An unsplit conv weight's gradient is a GEMM of dy with the input patches,
                        // reduced over the batch's pixels: a 256-invocation workgroup per 64×64 tile.
                        if let (plan::NodeOp::Conv(c), Wrt::Weight, 1) = (node.op, wrt, param.parts.len()) {
                            let tiles = c.groups * (c.out_channels / c.groups).div_ceil(CONV_TILE) * param.row_elems().div_ceil(u64::from(CONV_TILE)) as u32;
                            k.workgroup_size = CONV_TILE_THREADS;
                            k.threads_per_image = u64::from(tiles) * u64::from(CONV_TILE_THREADS);
                        }
                        backward.push(k);
                    }
                }
            }
            (None, _) => unreachable!("a parameter gradient of a node without that parameter"),
        }
    }
    backward.extend(updates);
    backward
}

/// `base`, or `base_partI` when a parameter has several parts.
fn part_name(base: String, part: u32, parts: usize) -> String {
    if parts == 1 {
        base
    } else {
        format!("{base}_part{part}")
    }
}
