//! Scheduling: turns a valid graph into the execution plan, less the WGSL.
//!
//! It names activations and parameters (PyTorch style: `conv1.weight`, or the layer's
//! `#[weights]` prefix), makes flatten and inference-time dropout views of their input rather
//! than copies, and counts parameters and multiply-adds per layer. Then, in this order:
//! one kernel per forward op ([`schedule`]), the training kernels ([`training`]), the fused
//! inference kernels ([`fuse`]), each kernel's algorithm and cost ([`algo`]), and the three
//! programs with their memory plans ([`memory`]); [`verify`] checks the result.

pub mod algo;
pub mod budget;
pub mod fuse;
pub mod memory;
pub mod towers;
pub mod training;
pub mod verify;

use crate::ir::{Graph, Node as IrNode, NodeId, Op};
use crate::valid::GraphInfo;
use alexnet_plan as plan;
use algo::PER_ELEMENT;
use fuse::Group;
use memory::Reuse;
use plan::{Step, Tensor};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The device of every node in the one-device programs; a `devices: 2` plan's per-device
/// inference programs are `towers`'.
const EXECUTION_DEVICE: u32 = 0;

/// Standard deviation of the paper's weight initialisation.
const INIT_STD: f32 = 0.01;

/// Builds the plan of `graph`; kernels get their WGSL from `codegen`.
pub fn schedule(
    graph: &Graph,
    info: &GraphInfo,
    name: &str,
    doc: &str,
    fusion: plan::Fusion,
) -> plan::Plan {
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

    for &id in info
        .order
        .iter()
        .filter(|&&id| !graph.node(id).op.is_training())
    {
        let node = graph.node(id);
        let shape = node.shape.clone().expect("valid graphs are shaped");
        let src = graph.inputs(id).first().copied();
        let in_act = src.map(|s| act_of[&s]);
        let in_shape: Vec<u32> = src
            .and_then(|s| graph.node(s).shape.clone())
            .unwrap_or_default();
        let layer = layer_stats(&mut layers, &node.layer);
        if node.op.has_params() || layer.params == 0 {
            layer.place = node.place;
        }
        let new_activation = |activations: &mut Vec<plan::Activation>,
                              layer: &mut plan::LayerStats,
                              suffix: &str| {
            activations.push(plan::Activation {
                name: format!("{}.{suffix}", node.layer).into(),
                shape: shape.clone().into(),
            });
            let bytes = 4 * shape.iter().map(|&d| u64::from(d)).product::<u64>();
            layer.activation_bytes += bytes;
            for (device, on) in layer.activation_bytes_on.iter_mut().enumerate() {
                *on += node.place.share(bytes, device as u32);
            }
            (activations.len() - 1) as u32
        };
        let op = match node.op {
            Op::Input { .. } => {
                activations.push(plan::Activation {
                    name: "input".into(),
                    shape: shape.clone().into(),
                });
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
                let op = plan::NodeOp::Dropout(plan::DropoutNode {
                    p: d.p,
                    stream: dropouts,
                    elems,
                });
                dropouts += 1;
                node_of.insert(id, nodes.len() as u32);
                nodes.push(plan::Node {
                    layer: node.layer.clone().into(),
                    op,
                    input: a,
                    output: a,
                    device: EXECUTION_DEVICE,
                });
                let k = kernel(
                    &nodes,
                    (nodes.len() - 1) as u32,
                    format!("{}_dropout", node.layer),
                    u64::from(elems),
                    plan::Role::Dropout,
                    vec![
                        plan::Binding::Uniform,
                        plan::Binding::Activation {
                            index: a,
                            write: true,
                        },
                    ],
                );
                kernels.push(k);
                continue;
            }
            Op::Loss | Op::Grad { .. } | Op::Sgd { .. } => {
                unreachable!("training ops are filtered out")
            }
            Op::Conv(c) => {
                convs_seen += 1;
                // The paper sets biases to 1 in conv2, conv4 and conv5 (and the hidden FC layers).
                let bias_one = matches!(convs_seen, 2 | 4 | 5);
                let (weight, bias) = add_params(
                    &mut params,
                    node,
                    &info.parts[&id],
                    &shape_conv(c, &in_shape),
                    bias_one,
                    c.bias,
                );
                let (oh, ow) = (shape[1], shape[2]);
                layer.params += params[weight as usize].elems()
                    + bias.map_or(0, |b| params[b as usize].elems());
                layer.macs += u64::from(c.out_channels)
                    * u64::from(oh * ow)
                    * u64::from(in_shape[0] / c.groups)
                    * u64::from(c.kernel * c.kernel);
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
                let (weight, bias) = add_params(
                    &mut params,
                    node,
                    &info.parts[&id],
                    &[l.out_features, in_shape[0]],
                    true,
                    l.bias,
                );
                layer.params += params[weight as usize].elems()
                    + bias.map_or(0, |b| params[b as usize].elems());
                layer.macs += u64::from(l.out_features) * u64::from(in_shape[0]);
                plan::NodeOp::Linear(plan::LinearNode {
                    in_features: in_shape[0],
                    out_features: l.out_features,
                    weight,
                    bias,
                })
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
        nodes.push(plan::Node {
            layer: node.layer.clone().into(),
            op,
            input: in_act.expect("ops have an input"),
            output: out,
            device: EXECUTION_DEVICE,
        });
        let covers = [node_index];
        kernels.extend(kernels_for(
            &nodes,
            &covers,
            &params,
            &format!("{}_fwd", node.layer),
            shape.iter().map(|&d| u64::from(d)).product(),
        ));
    }
    // The paper's constant-1 biases are the hidden layers': the output layer's start at 0.
    let output_bias = nodes.iter().rev().find_map(|n| {
        if let plan::NodeOp::Linear(l) = n.op {
            Some(l.bias)
        } else {
            None
        }
    });
    if let Some(Some(b)) = output_bias {
        params[b as usize].init = plan::Init::Constant { value: 0.0 };
    }
    kernels.extend(training::training_kernels(
        graph, info, &nodes, &params, &node_of, &act_of, logits,
    ));
    let per_op = kernels.len();
    let groups = fuse::fuse(&nodes, fusion);
    let mut inference_steps = Vec::new();
    let mut ir = graph.to_string();
    let _ = writeln!(ir, "# inference kernels (fusion {}):", fusion.as_str());
    let ir_id: BTreeMap<u32, NodeId> = node_of.iter().map(|(&id, &n)| (n, id)).collect();
    for group in &groups {
        for planned in group_kernels(group, &nodes, &params, "fused_fwd") {
            inference_steps.extend(
                resolve(planned, &mut kernels, per_op)
                    .into_iter()
                    .map(|k| Step::Dispatch(k as u32)),
            );
        }
    }
    // Software adapters get an inference program of their own where they fuse less (see
    // `fuse::for_target`); built before training's, which then reuses its kernels.
    let mut variant_steps: Vec<(plan::Target, plan::Fusion, Vec<Step>)> = Vec::new();
    for target in plan::Target::ALL {
        let target_fusion = fuse::for_target(fusion, target);
        // A target that falls back to another with the same fusion runs that one's program
        // (`Plan::for_target`), its kernels in their own forms where they have one.
        let inherits = target
            .fallback()
            .is_some_and(|t| fuse::for_target(fusion, t) == target_fusion);
        if target_fusion == fusion || inherits {
            continue;
        }
        let mut steps = Vec::new();
        for group in &fuse::fuse(&nodes, target_fusion) {
            for planned in group_kernels(group, &nodes, &params, "epilogue_fwd") {
                steps.extend(
                    resolve(planned, &mut kernels, per_op)
                        .into_iter()
                        .map(|k| Step::Dispatch(k as u32)),
                );
            }
        }
        variant_steps.push((target, target_fusion, steps));
    }
    let mut training_steps = training_steps(&mut kernels, per_op, &nodes, &params, &groups, fusion);
    let mut inspect_steps: Vec<Step> = (0..per_op as u32)
        .filter(|&k| kernels[k as usize].role == plan::Role::Forward)
        .map(Step::Dispatch)
        .collect();
    for k in &mut kernels {
        algo::choose(&nodes, &params, k);
    }
    // Listed once the algorithms are chosen, so the dump says what runs: each program's
    // kernels in the form its target runs.
    let list = |ir: &mut String, steps: &[Step], target: plan::Target| {
        for k in steps.iter().filter_map(|s| {
            if let Step::Dispatch(k) = *s {
                Some(kernels[k as usize].for_target(target))
            } else {
                None
            }
        }) {
            let covered: Vec<String> = k
                .covers
                .iter()
                .map(|n| format!("{} {}", ir_id[n], nodes[*n as usize].op.name()))
                .collect();
            let _ = writeln!(
                ir,
                "#   {} = {} ; {}",
                k.name,
                covered.join(" + "),
                k.algo.describe()
            );
        }
    };
    list(&mut ir, &inference_steps, plan::Target::Gpu);
    for (target, target_fusion, steps) in &variant_steps {
        let _ = writeln!(
            ir,
            "# inference kernels on {} adapters (fusion {}):",
            target.as_str(),
            target_fusion.as_str()
        );
        list(&mut ir, steps, *target);
    }
    let split = |steps: &[Step], pass| {
        towers::towers(
            graph,
            &nodes,
            &params,
            &kernels,
            &node_of,
            &act_of,
            &activations,
            steps,
            pass,
        )
    };
    let tower_plan = split(&inference_steps, towers::Pass::Inference);
    // Training splits only where inference does.
    let tower_training = tower_plan
        .as_ref()
        .and_then(|_| split(&training_steps, towers::Pass::Training { logits }));
    for (what, split) in [("inference", &tower_plan), ("training", &tower_training)] {
        let Some((steps, exchanges)) = split else {
            continue;
        };
        for (device, steps) in steps.iter().enumerate() {
            let _ = writeln!(ir, "# two-device {what}, device {device}:");
            for step in steps {
                match *step {
                    Step::Dispatch(k) => {
                        let _ = writeln!(ir, "#   {}", kernels[k as usize].name);
                    }
                    Step::Exchange { index, tensor } => {
                        let e = &exchanges[index as usize];
                        let name = match tensor {
                            Tensor::Activation(a) => activations[a as usize].name.to_string(),
                            Tensor::Grad(a) => format!("d {}", activations[a as usize].name),
                            t => format!("{t:?}"),
                        };
                        let _ = writeln!(ir, "#   exchange {index}: {name} bytes {}..{} of each image, dev{} -> dev{}", e.offset, e.offset + e.bytes, e.from, e.to);
                    }
                }
            }
        }
    }
    let (mut tower_steps, tower_exchanges) = match tower_plan {
        Some((steps, exchanges)) => (Some(steps), exchanges),
        None => (None, Vec::new()),
    };
    let (mut tower_training_steps, tower_training_exchanges) = match tower_training {
        Some((steps, exchanges)) => (Some(steps), exchanges),
        None => (None, Vec::new()),
    };
    let mut programs: Vec<&mut Vec<Step>> = vec![
        &mut inference_steps,
        &mut training_steps,
        &mut inspect_steps,
    ];
    programs.extend(variant_steps.iter_mut().map(|(_, _, steps)| steps));
    programs.extend(tower_steps.iter_mut().flat_map(|s| s.iter_mut()));
    programs.extend(tower_training_steps.iter_mut().flat_map(|s| s.iter_mut()));
    prune(&mut kernels, &mut programs);
    let mut plan = plan::Plan {
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
        fusion,
        inference: empty_program(),
        inference_variants: Cow::Borrowed(&[]),
        training: empty_program(),
        inspect: empty_program(),
        towers: None,
        tower_training: None,
        input_activation,
        logits_activation: logits,
        probs_activation: probs,
        layers: layers.into(),
        exchanges: graph
            .exchanges
            .iter()
            .map(|e| plan::Exchange {
                reader: crate::passes::place::reader(graph, e.node).into(),
                to: e.to,
                kind: e.kind,
                bytes_per_image: e.bytes_per_image,
            })
            .collect::<Vec<_>>()
            .into(),
        limits: info.target.limits,
        ir: ir.into(),
        dot: graph.to_dot(name).into(),
    };
    let costs: Vec<(plan::Cost, Vec<plan::Cost>)> = plan
        .kernels
        .iter()
        .map(|k| {
            (
                algo::cost(&plan, k),
                k.variants
                    .iter()
                    .map(|v| algo::cost(&plan, &k.for_target(v.target)))
                    .collect(),
            )
        })
        .collect();
    let mut kernels = plan.kernels.to_vec();
    for (k, (cost, variant_costs)) in kernels.iter_mut().zip(costs) {
        k.cost = cost;
        let mut variants = k.variants.to_vec();
        for (v, c) in variants.iter_mut().zip(variant_costs) {
            v.cost = c;
        }
        k.variants = variants.into();
    }
    plan.kernels = kernels.into();
    let [(_, _, inf_in, inf_out), (_, _, train_in, train_out), _] = programs_io(&plan);
    plan.inference = memory::program(&plan, inference_steps, &inf_in, &inf_out, Reuse::Share);
    plan.training = memory::program(&plan, training_steps, &train_in, &train_out, Reuse::Share);
    plan.inspect = memory::program(&plan, inspect_steps, &inf_in, &inf_out, Reuse::Never);
    let variants: Vec<plan::ProgramVariant> = variant_steps
        .into_iter()
        .map(|(target, fusion, steps)| plan::ProgramVariant {
            target,
            fusion,
            program: memory::program(&plan, steps, &inf_in, &inf_out, Reuse::Share),
        })
        .collect();
    plan.inference_variants = variants.into();
    // Each device's program of a split: device 0 takes the host's inputs and returns the
    // outputs; device 1 takes the input image only.
    let tower_programs = |steps: [Vec<Step>; 2],
                          exchanges: Vec<plan::TowerExchange>,
                          inputs: &[Tensor],
                          outputs: &[Tensor]| {
        let programs: Vec<plan::Program> = steps
            .into_iter()
            .enumerate()
            .map(|(device, steps)| {
                let (inputs, outputs) = if device == 0 {
                    (inputs, outputs)
                } else {
                    (&inf_in[..], &[][..])
                };
                let mut program = memory::program(&plan, steps, inputs, outputs, Reuse::Share);
                let mut buffers = program.buffers.to_vec();
                for b in &mut buffers {
                    b.device = device as u32;
                }
                program.buffers = buffers.into();
                program
            })
            .collect();
        plan::Towers {
            programs: programs.into(),
            exchanges: exchanges.into(),
        }
    };
    let towers = tower_steps.map(|steps| tower_programs(steps, tower_exchanges, &inf_in, &inf_out));
    let tower_training = tower_training_steps
        .map(|steps| tower_programs(steps, tower_training_exchanges, &train_in, &train_out));
    plan.towers = towers;
    plan.tower_training = tower_training;
    plan
}

/// Drops the kernels no program runs (per-op kernels that fusion replaced everywhere) and
/// renumbers the steps, so the plan lists, compiles and ships only what runs.
fn prune(kernels: &mut Vec<plan::Kernel>, programs: &mut [&mut Vec<Step>]) {
    let used: std::collections::BTreeSet<u32> = programs
        .iter()
        .flat_map(|steps| steps.iter())
        .filter_map(|s| match *s {
            Step::Dispatch(k) => Some(k),
            Step::Exchange { .. } => None,
        })
        .collect();
    let index: BTreeMap<u32, u32> = used
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new as u32))
        .collect();
    let mut old = 0u32;
    kernels.retain(|_| {
        old += 1;
        used.contains(&(old - 1))
    });
    for steps in programs.iter_mut() {
        for step in steps.iter_mut() {
            if let Step::Dispatch(k) = step {
                *k = index[k];
            }
        }
    }
}

fn empty_program() -> plan::Program {
    plan::Program {
        steps: Cow::Borrowed(&[]),
        buffers: Cow::Borrowed(&[]),
        placements: Cow::Borrowed(&[]),
    }
}

/// Each program with the tensors the host writes before it runs and reads after:
/// inference, training, inspect.
pub fn programs_io(
    plan: &plan::Plan,
) -> [(&'static str, &plan::Program, Vec<Tensor>, Vec<Tensor>); 3] {
    let input = vec![Tensor::Activation(plan.input_activation)];
    let mut outputs = vec![Tensor::Activation(plan.logits_activation)];
    outputs.extend(plan.probs_activation.map(Tensor::Activation));
    let train_in = [input.clone(), vec![Tensor::Labels]].concat();
    let train_out = [outputs.clone(), vec![Tensor::Loss]].concat();
    [
        ("inference", &plan.inference, input.clone(), outputs.clone()),
        ("training", &plan.training, train_in, train_out),
        ("inspect", &plan.inspect, input, outputs),
    ]
}

/// The training program's steps: the forward pass with ReLU in the epilogue of every conv and
/// linear kernel whose own output no backward kernel reads (so that tensor is never written),
/// other ops one kernel each and dropout masks after their producer; then the loss, the
/// backward kernels and the updates in the order `training::training_kernels` gave them.
/// Kernels it needs beyond the first `per_op` are appended to `kernels`, reusing an identical
/// inference kernel where there is one.
fn training_steps(
    kernels: &mut Vec<plan::Kernel>,
    per_op: usize,
    nodes: &[plan::Node],
    params: &[plan::Param],
    groups: &[Group],
    fusion: plan::Fusion,
) -> Vec<Step> {
    use plan::Role;
    let backward_reads: std::collections::BTreeSet<u32> = kernels[..per_op]
        .iter()
        .filter(|k| !matches!(k.role, Role::Forward | Role::Dropout))
        .flat_map(|k| k.bindings.iter())
        .filter_map(|b| match *b {
            plan::Binding::Activation {
                index,
                write: false,
            } => Some(index),
            _ => None,
        })
        .collect();
    let per_op_of = |kernels: &[plan::Kernel], node: u32, role: Role| -> Vec<usize> {
        (0..per_op)
            .filter(|&k| kernels[k].role == role && kernels[k].covers[..] == [node])
            .collect()
    };
    let mut steps = Vec::new();
    // `fusion: off` means one kernel per op everywhere, training included.
    let training_fusion = if fusion == plan::Fusion::Off {
        plan::Fusion::Off
    } else {
        plan::Fusion::Epilogue
    };
    for group in fuse::fuse(nodes, training_fusion) {
        let producer = match &group {
            Group::ConvBlock {
                conv: n,
                relu: Some(_),
                ..
            }
            | Group::LinearRelu { linear: n, .. } => Some(*n),
            Group::ConvBlock { relu: None, .. }
            | Group::LinearSoftmax { .. }
            | Group::Single(_)
            | Group::Identity(_) => None,
        };
        let covers = group.covers();
        let fusable = producer.is_some_and(|n| !backward_reads.contains(&nodes[n as usize].output));
        let planned = if fusable {
            group_kernels(&group, nodes, params, "train_fwd")
        } else {
            covers
                .iter()
                .filter(|&&n| !matches!(nodes[n as usize].op, plan::NodeOp::Dropout(_)))
                .map(|&n| Planned::PerOp(n))
                .collect()
        };
        // Dropout runs in place at its position in the chain: before the group's first op
        // (torchvision's dropout before fc6) or after its last.
        let first_op = covers
            .iter()
            .copied()
            .find(|&n| !matches!(nodes[n as usize].op, plan::NodeOp::Dropout(_)))
            .unwrap_or(u32::MAX);
        let dropouts = |before: bool| {
            covers
                .iter()
                .copied()
                .filter(move |&n| (n < first_op) == before)
        };
        for n in dropouts(true) {
            steps.extend(
                per_op_of(kernels, n, Role::Dropout)
                    .into_iter()
                    .map(|k| Step::Dispatch(k as u32)),
            );
        }
        for p in planned {
            steps.extend(
                resolve(p, kernels, per_op)
                    .into_iter()
                    .map(|k| Step::Dispatch(k as u32)),
            );
        }
        // A dropout in a linear kernel's epilogue needs no kernel of its own.
        let in_epilogue = if fusable {
            fuse::epilogue_dropout(nodes, &covers)
        } else {
            None
        };
        for n in dropouts(false).filter(|&n| Some(n) != in_epilogue) {
            steps.extend(
                per_op_of(kernels, n, Role::Dropout)
                    .into_iter()
                    .map(|k| Step::Dispatch(k as u32)),
            );
        }
    }
    let mut backward: Vec<usize> = (0..per_op)
        .filter(|&k| !matches!(kernels[k].role, Role::Forward | Role::Dropout))
        .collect();
    // A ReLU / LRN / max-pool chain's input gradients run as one kernel, where the chain's
    // first per-op gradient kernel ran.
    for chain in fuse::backward_chains(nodes, groups, fusion) {
        let per_op_grads: Vec<usize> = backward
            .iter()
            .enumerate()
            .filter(|&(_, &k)| {
                kernels[k].role == Role::Backward(plan::Wrt::Input)
                    && kernels[k].covers.len() == 1
                    && chain.contains(&kernels[k].covers[0])
            })
            .map(|(at, _)| at)
            .collect();
        let Some(&at) = per_op_grads.first() else {
            continue;
        };
        backward[at] = resolve(
            Planned::New(training::chain_kernel(nodes, &chain)),
            kernels,
            per_op,
        )[0];
        for &gone in per_op_grads[1..].iter().rev() {
            backward.remove(gone);
        }
    }
    steps.extend(backward.into_iter().map(|k| Step::Dispatch(k as u32)));
    steps
}

/// The kernel indices a planned kernel runs as: a per-op node's forward kernels (one per weight
/// part), or a new kernel — appended, unless an identical one (name aside) is already there.
fn resolve(planned: Planned, kernels: &mut Vec<plan::Kernel>, per_op: usize) -> Vec<usize> {
    match planned {
        Planned::New(k) => {
            let same = |o: &plan::Kernel| {
                o.covers == k.covers
                    && o.bindings == k.bindings
                    && o.algo == k.algo
                    && o.dispatch == k.dispatch
                    && o.threads_per_image == k.threads_per_image
                    && o.role == k.role
            };
            match (per_op..kernels.len()).find(|&i| same(&kernels[i])) {
                Some(i) => vec![i],
                None => {
                    kernels.push(k);
                    vec![kernels.len() - 1]
                }
            }
        }
        Planned::PerOp(node) => (0..per_op)
            .filter(|&k| kernels[k].role == plan::Role::Forward && kernels[k].covers[..] == [node])
            .collect(),
    }
}

/// A kernel of a fused group: a new one, or the per-op forward kernel of a node.
enum Planned {
    New(plan::Kernel),
    PerOp(u32),
}

/// The inference kernels of one fusion group.
fn group_kernels(
    group: &Group,
    nodes: &[plan::Node],
    params: &[plan::Param],
    suffix: &str,
) -> Vec<Planned> {
    let covers = group.covers();
    let base = |n: u32| format!("{}_{suffix}", nodes[n as usize].layer);
    let new = |ks: Vec<plan::Kernel>| ks.into_iter().map(Planned::New).collect::<Vec<_>>();
    match group {
        Group::Single(n) => vec![Planned::PerOp(*n)],
        Group::Identity(_) => Vec::new(),
        Group::LinearRelu { linear, .. } => {
            new(kernels_for(nodes, &covers, params, &base(*linear), 0))
        }
        Group::LinearSoftmax {
            linear, softmax, ..
        } => {
            let plan::NodeOp::Linear(l) = nodes[*linear as usize].op else {
                unreachable!("the pattern matched a linear node")
            };
            if params[l.weight as usize].parts.len() > 1 {
                return vec![Planned::PerOp(*linear), Planned::PerOp(*softmax)];
            }
            let mut bindings = vec![
                plan::Binding::Uniform,
                activation(nodes[*linear as usize].input, false),
                plan::Binding::Param {
                    index: l.weight,
                    part: 0,
                },
            ];
            bindings.extend(l.bias.map(|b| plan::Binding::Param { index: b, part: 0 }));
            bindings.push(activation(nodes[*linear as usize].output, true));
            bindings.push(activation(nodes[*softmax as usize].output, true));
            let mut k = kernel(
                nodes,
                *linear,
                base(*linear),
                1,
                plan::Role::Forward,
                bindings,
            );
            k.covers = covers.into();
            k.algo = plan::Algo::PerImage {
                threads: algo::WORKGROUP * 4,
            };
            k.workgroup_size = k.algo.threads();
            k.dispatch = plan::Dispatch::PerImage { workgroups: 1 };
            vec![Planned::New(k)]
        }
        Group::ConvBlock {
            conv, relu, post, ..
        } => {
            let plan::NodeOp::Conv(c) = nodes[*conv as usize].op else {
                unreachable!("the pattern matched a conv node")
            };
            let split = params[c.weight as usize].parts.len() > 1;
            let posts: Vec<algo::Post> = post
                .iter()
                .map(|&n| match nodes[n as usize].op {
                    plan::NodeOp::Lrn(l) => algo::Post::Lrn(l),
                    plan::NodeOp::MaxPool(p) => algo::Post::Pool(p),
                    op => unreachable!("a conv block holds no {}", op.name()),
                })
                .collect();
            let block = if split || posts.is_empty() {
                None
            } else {
                algo::conv_block(&c, &posts)
            };
            if let Some((algo, workgroups)) = block {
                let last = *post.last().expect("a block with a tail");
                let mut bindings = vec![
                    plan::Binding::Uniform,
                    activation(nodes[*conv as usize].input, false),
                    plan::Binding::Param {
                        index: c.weight,
                        part: 0,
                    },
                ];
                bindings.extend(c.bias.map(|b| plan::Binding::Param { index: b, part: 0 }));
                bindings.push(activation(nodes[last as usize].output, true));
                let mut k = kernel(nodes, *conv, base(*conv), 0, plan::Role::Forward, bindings);
                k.covers = covers.into();
                k.algo = algo;
                k.workgroup_size = algo.threads();
                k.dispatch = plan::Dispatch::PerImage { workgroups };
                return vec![Planned::New(k)];
            }
            // No block tiling fits (or the weight is split): conv with its ReLU, then the rest.
            let mut out = match relu {
                Some(r) => new(kernels_for(nodes, &[*conv, *r], params, &base(*conv), 0)),
                None => vec![Planned::PerOp(*conv)],
            };
            out.extend(post.iter().map(|&n| Planned::PerOp(n)));
            out
        }
    }
}

fn activation(index: u32, write: bool) -> plan::Binding {
    plan::Binding::Activation { index, write }
}

fn shape_conv(c: crate::ir::Conv, in_shape: &[u32]) -> Vec<u32> {
    vec![c.out_channels, in_shape[0] / c.groups, c.kernel, c.kernel]
}

/// The stats entry of `layer`, created on first use so layers keep declaration order.
fn layer_stats<'a>(layers: &'a mut Vec<plan::LayerStats>, layer: &str) -> &'a mut plan::LayerStats {
    if layers.last().is_none_or(|l| l.name != layer) {
        layers.push(plan::LayerStats {
            name: layer.to_string().into(),
            output: Cow::Borrowed(&[]),
            params: 0,
            macs: 0,
            activation_bytes: 0,
            place: plan::Place::Device(0),
            activation_bytes_on: [0; 2],
        });
    }
    layers.last_mut().expect("just pushed")
}

/// Appends the weight (and bias) of a conv or linear node; returns their indices.
fn add_params(
    params: &mut Vec<plan::Param>,
    node: &IrNode,
    ranges: &[(u32, u32)],
    shape: &[u32],
    bias_one: bool,
    has_bias: bool,
) -> (u32, Option<u32>) {
    let parts: Vec<plan::Part> = ranges
        .iter()
        .map(|&(start, rows)| plan::Part { start, rows })
        .collect();
    let layout = if shape.len() == 4 {
        plan::Layout::Oihw
    } else {
        plan::Layout::Oi
    };
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
        init: plan::Init::Constant {
            value: if bias_one { 1.0 } else { 0.0 },
        },
        parts: parts.into(),
    });
    (weight, Some((params.len() - 1) as u32))
}

/// The forward kernels of the chain `covers` (an op, or a conv/linear op and its ReLU): one
/// per weight part for conv and linear, else one. They read the first node's input and write
/// the last node's output; `base` is the kernel name (`conv1_fwd`).
fn kernels_for(
    nodes: &[plan::Node],
    covers: &[u32],
    params: &[plan::Param],
    base: &str,
    out_elems: u64,
) -> Vec<plan::Kernel> {
    // Dropout in a fused group computes nothing at inference: the chain is the rest.
    let computing: Vec<u32> = covers
        .iter()
        .copied()
        .filter(|&n| !matches!(nodes[n as usize].op, plan::NodeOp::Dropout(_)))
        .collect();
    let (index, last) = (computing[0], computing[computing.len() - 1]);
    let (first, last) = (&nodes[index as usize], &nodes[last as usize]);
    let kernel = |name: String, threads: u64, bindings: Vec<plan::Binding>| plan::Kernel {
        covers: covers.to_vec().into(),
        ..kernel(nodes, index, name, threads, plan::Role::Forward, bindings)
    };
    let (weight, bias, per_row) = match first.op {
        plan::NodeOp::Conv(c) => (c.weight, c.bias, u64::from(c.out_h * c.out_w)),
        plan::NodeOp::Linear(l) => (l.weight, l.bias, 1),
        plan::NodeOp::Relu
        | plan::NodeOp::Lrn(_)
        | plan::NodeOp::MaxPool(_)
        | plan::NodeOp::Softmax => {
            let name = format!("{}_{}_fwd", first.layer, first.op.name());
            let threads = if matches!(first.op, plan::NodeOp::Softmax) {
                1
            } else {
                out_elems
            };
            return vec![kernel(
                name,
                threads,
                vec![
                    plan::Binding::Uniform,
                    activation(first.input, false),
                    activation(last.output, true),
                ],
            )];
        }
        plan::NodeOp::Dropout(_) => unreachable!("dropout is scheduled in place"),
    };
    let parts = &params[weight as usize].parts;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let name = if parts.len() == 1 {
                base.to_string()
            } else {
                format!("{base}_part{i}")
            };
            let mut bindings = vec![
                plan::Binding::Uniform,
                activation(first.input, false),
                plan::Binding::Param {
                    index: weight,
                    part: i as u32,
                },
            ];
            if let Some(b) = bias {
                bindings.push(plan::Binding::Param {
                    index: b,
                    part: i as u32,
                });
            }
            bindings.push(activation(last.output, true));
            // `algo::choose` makes it a GEMM instance; a conv split into parts, which may cut
            // through a group, keeps one invocation per output.
            kernel(name, u64::from(part.rows) * per_row, bindings)
        })
        .collect()
}

/// A kernel of node `index` with one invocation per element (per image, or in all for
/// parameter kernels), WGSL still to be written.
pub(crate) fn kernel(
    nodes: &[plan::Node],
    index: u32,
    name: String,
    threads: u64,
    role: plan::Role,
    bindings: Vec<plan::Binding>,
) -> plan::Kernel {
    let fixed = matches!(
        role,
        plan::Role::Update | plan::Role::Backward(plan::Wrt::Weight | plan::Wrt::Bias)
    );
    plan::Kernel {
        name: name.into(),
        layer: nodes[index as usize].layer.clone(),
        node: index,
        covers: vec![index].into(),
        algo: PER_ELEMENT,
        cost: plan::Cost::default(),
        wgsl: Cow::Borrowed(""),
        entry_point: "main".into(),
        workgroup_size: PER_ELEMENT.threads(),
        threads_per_image: threads,
        dispatch: if fixed {
            plan::Dispatch::Fixed
        } else {
            plan::Dispatch::PerInvocation
        },
        bindings: bindings.into(),
        role,
        variants: Cow::Borrowed(&[]),
    }
}
