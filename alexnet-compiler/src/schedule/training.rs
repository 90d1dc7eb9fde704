//! The training kernels: the loss, every gradient `passes::autodiff` added, and the updates.
//!
//! One kernel per gradient node (per weight part for conv and linear); `algo::choose` later
//! makes the GEMM-shaped ones GEMM instances. The loss comes first,
//! then the gradients in the graph's order, then every update (an update overwrites weights
//! that the gradients read).

use super::kernel;
use crate::ir::{Graph, NodeId, Op, Wrt};
use crate::valid::GraphInfo;
use alexnet_plan as plan;
use std::collections::BTreeMap;

/// The kernels of the backward graph that `passes::autodiff` added: the loss, then the
/// gradients in the graph's order, then every update (updates overwrite weights that the
/// gradients read). Conv and linear kernels run per weight part; an input gradient's later
/// parts add to the first's.
pub fn training_kernels(
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
    for &id in info
        .order
        .iter()
        .filter(|&&id| graph.node(id).op.is_training())
    {
        let (of, wrt, update) = match graph.node(id).op {
            Op::Loss => {
                // Named after no layer: the loss belongs to the whole network.
                let producer = nodes
                    .iter()
                    .rposition(|n| n.output == logits && !matches!(n.op, plan::NodeOp::Dropout(_)));
                let index = producer.or(nodes.len().checked_sub(1)).unwrap_or(0) as u32;
                let bindings = vec![
                    B::Uniform,
                    B::Activation {
                        index: logits,
                        write: false,
                    },
                    B::Labels,
                    B::Grad {
                        index: logits,
                        write: true,
                    },
                    B::Loss,
                ];
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
        let op = node.op.name();
        let (input, output) = (node.input, node.output);
        let in_elems = graph
            .inputs(of)
            .first()
            .and_then(|&s| graph.node(s).shape.as_ref())
            .map_or(1, |s| s.iter().map(|&d| u64::from(d)).product());
        debug_assert_eq!(act_of.get(&graph.inputs(of)[0]), Some(&input));
        let param = match (node.op, wrt) {
            (plan::NodeOp::Conv(c), Wrt::Weight) => Some(c.weight),
            (plan::NodeOp::Linear(l), Wrt::Weight) => Some(l.weight),
            (
                plan::NodeOp::Conv(plan::ConvNode { bias, .. })
                | plan::NodeOp::Linear(plan::LinearNode { bias, .. }),
                Wrt::Bias,
            ) => bias,
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
                            let bindings = vec![
                                B::Uniform,
                                B::Grad {
                                    index: output,
                                    write: false,
                                },
                                B::Param { index: w, part },
                                B::Grad {
                                    index: input,
                                    write: true,
                                },
                            ];
                            backward.push(kernel(nodes, index, name, in_elems, role, bindings));
                        }
                    }
                    None if matches!(node.op, plan::NodeOp::Dropout(_)) => {
                        let bindings = vec![
                            B::Uniform,
                            B::Grad {
                                index: output,
                                write: true,
                            },
                        ];
                        backward.push(kernel(
                            nodes,
                            index,
                            format!("{layer}_dropout_bwd_x"),
                            in_elems,
                            role,
                            bindings,
                        ));
                    }
                    None => {
                        let threads = if matches!(node.op, plan::NodeOp::Softmax) {
                            1
                        } else {
                            in_elems
                        };
                        // ReLU's gradient needs only the sign of its output (the same as its
                        // input's), so the conv or linear output before it need not be kept.
                        let read = if node.op == plan::NodeOp::Relu {
                            output
                        } else {
                            input
                        };
                        let bindings = vec![
                            B::Uniform,
                            B::Activation {
                                index: read,
                                write: false,
                            },
                            B::Grad {
                                index: output,
                                write: false,
                            },
                            B::Grad {
                                index: input,
                                write: true,
                            },
                        ];
                        backward.push(kernel(
                            nodes,
                            index,
                            format!("{layer}_{op}_bwd_x"),
                            threads,
                            role,
                            bindings,
                        ));
                    }
                }
            }
            (Some(p), _) => {
                let param = &params[p as usize];
                for (part, range) in param.parts.iter().enumerate() {
                    let part = part as u32;
                    let elems = u64::from(range.rows) * param.row_elems();
                    if update {
                        let name =
                            part_name(format!("{layer}_sgd_{short}"), part, param.parts.len());
                        let bindings = vec![
                            B::Uniform,
                            B::ParamMut { index: p, part },
                            B::ParamGrad {
                                index: p,
                                part,
                                write: false,
                            },
                            B::Momentum { index: p, part },
                        ];
                        updates.push(kernel(
                            nodes,
                            index,
                            name,
                            elems,
                            plan::Role::Update,
                            bindings,
                        ));
                    } else {
                        let name =
                            part_name(format!("{layer}_{op}_bwd_{short}"), part, param.parts.len());
                        let role = plan::Role::Backward(plan_wrt);
                        // A conv weight gradient with too few output tiles for a GPU is split
                        // over the batch's output rows: its slices write partial gradients
                        // that a second kernel adds in order.
                        let slices = match (node.op, wrt) {
                            (plan::NodeOp::Conv(c), Wrt::Weight) => {
                                super::algo::weight_gradient_slices(
                                    &c,
                                    *range,
                                    info.target.limits.max_storage_buffer_binding_size,
                                )
                            }
                            _ => 1,
                        };
                        let grad = B::ParamGrad {
                            index: p,
                            part,
                            write: true,
                        };
                        let partials = |write: bool| B::Partials {
                            index: p,
                            part,
                            slices,
                            write,
                        };
                        let mut bindings = vec![B::Uniform];
                        if wrt == Wrt::Weight {
                            bindings.push(B::Activation {
                                index: input,
                                write: false,
                            });
                        }
                        bindings.push(B::Grad {
                            index: output,
                            write: false,
                        });
                        bindings.push(if slices > 1 { partials(true) } else { grad });
                        let sum_name = format!("{name}_sum");
                        backward.push(kernel(nodes, index, name, elems, role, bindings));
                        if slices > 1 {
                            let name = sum_name;
                            let width = if elems % 4 == 0 { 4 } else { 1 };
                            let bindings = vec![B::Uniform, partials(false), grad];
                            let mut k = kernel(nodes, index, name, elems / width, role, bindings);
                            k.algo = plan::Algo::SliceSum {
                                threads: super::algo::WORKGROUP,
                                width: width as u32,
                            };
                            k.workgroup_size = k.algo.threads();
                            backward.push(k);
                        }
                    }
                }
            }
            (None, _) => unreachable!("a parameter gradient of a node without that parameter"),
        }
    }
    backward.extend(updates);
    backward
}

/// The input-gradient kernel of a ReLU / LRN / max-pool or ReLU / dropout chain
/// (`fuse::backward_chains`): it reads what the chain's per-op gradient kernels read (ReLU's
/// output, LRN's input, the pool's input; each tensor once) and the gradient of the chain's
/// output, and writes the gradient of its input, so the gradients between the ops are never
/// stored. With an LRN it walks each pixel's channels (`Algo::ChannelScan`), a tile of the
/// pool's stride squared per invocation where there is a pool, and, in its CPU variant, twice
/// the stride squared ([`CPU_SCAN_TILE`]); with a max-pool and no LRN it runs an invocation per
/// channel and tile of the pool's stride squared (`Algo::PoolTile`); otherwise an invocation
/// per element.
pub fn chain_kernel(nodes: &[plan::Node], chain: &[u32]) -> plan::Kernel {
    use plan::Binding as B;
    let (first, last) = (
        &nodes[chain[0] as usize],
        &nodes[chain[chain.len() - 1] as usize],
    );
    let mut reads: Vec<u32> = Vec::new();
    let mut shape = None;
    for &n in chain {
        let node = &nodes[n as usize];
        let (read, dims) = match node.op {
            plan::NodeOp::Relu => (node.output, None),
            plan::NodeOp::Lrn(l) => (node.input, Some((l.channels, l.h, l.w, true))),
            plan::NodeOp::MaxPool(p) => (node.input, Some((p.channels, p.in_h, p.in_w, false))),
            // In place on ReLU's output, which holds the mask (zero where dropped).
            plan::NodeOp::Dropout(d) => (node.input, Some((d.elems, 1, 1, false))),
            op => unreachable!("a backward chain holds no {}", op.name()),
        };
        if !reads.contains(&read) {
            reads.push(read);
        }
        shape = shape.or(dims);
    }
    let (channels, h, w, lrn) =
        shape.expect("a backward chain holds an LRN, a max-pool or a dropout");
    let mut bindings = vec![B::Uniform];
    bindings.extend(reads.iter().map(|&index| B::Activation {
        index,
        write: false,
    }));
    bindings.push(B::Grad {
        index: last.output,
        write: false,
    });
    bindings.push(B::Grad {
        index: first.input,
        write: true,
    });
    let pixels = u64::from(h) * u64::from(w);
    // With an LRN, an invocation per pixel, or per tile of the pool's stride squared.
    let pool_stride = chain.iter().find_map(|&n| match nodes[n as usize].op {
        plan::NodeOp::MaxPool(p) => Some(p.stride),
        _ => None,
    });
    let tiles = |side: u32| u64::from(h.div_ceil(side)) * u64::from(w.div_ceil(side));
    let threads = match (lrn, pool_stride) {
        (true, stride) => tiles(stride.unwrap_or(1)),
        (false, Some(stride)) => u64::from(channels) * tiles(stride),
        (false, None) => u64::from(channels) * pixels,
    };
    let mut k = kernel(
        nodes,
        chain[0],
        format!("{}_block_bwd_x", first.layer),
        threads,
        plan::Role::Backward(plan::Wrt::Input),
        bindings,
    );
    k.covers = chain.to_vec().into();
    if lrn {
        let scan = |side: u32| plan::Algo::ChannelScan {
            threads: super::algo::WORKGROUP,
            side,
        };
        k.algo = scan(pool_stride.unwrap_or(1));
        k.workgroup_size = k.algo.threads();
        if let Some(stride) = pool_stride {
            let side = CPU_SCAN_TILE * stride;
            k.variants = vec![plan::Variant::scheduled(
                plan::Target::Cpu,
                scan(side),
                k.workgroup_size,
                tiles(side),
                k.dispatch,
            )]
            .into();
        }
    } else if pool_stride.is_some() {
        k.algo = plan::Algo::PoolTile {
            threads: super::algo::WORKGROUP,
        };
        k.workgroup_size = k.algo.threads();
    }
    k
}

/// The tile side, in pool strides, of an LRN chain's CPU variant. A GPU form covers the
/// stride squared per invocation (the paper's conv1: 2 × 2 pixels, which the 3 × 3 windows
/// at stride 2 read as a 5 × 5 patch per channel) to keep many invocations in flight; a
/// software adapter, which gathers every load lane by lane, does better sharing a larger
/// patch: 4 × 4 pixels read a 7 × 7 patch, 3.1 loads per pixel instead of 6.25. On lavapipe
/// (2-core AMD EPYC) the Mini net's conv1 / conv2 chains at batch 128 went from 128 / 71 ms
/// to 86 / 50.
pub const CPU_SCAN_TILE: u32 = 2;

/// `base`, or `base_partI` when a parameter has several parts.
fn part_name(base: String, part: u32, parts: usize) -> String {
    if parts == 1 {
        base
    } else {
        format!("{base}_part{part}")
    }
}
