//! Autodiff: appends the backward graph of the training step to the forward graph.
//!
//! The forward graph is a chain, so reverse mode is a walk from the output to the input:
//! `loss` (softmax cross-entropy of the logits against the labels; a final softmax is folded
//! into it) starts the gradient, then every op gets a `grad` node per tensor it reads (its
//! input and its parameters) and every parameter an `sgd` node. Each `grad` node reads the
//! upstream gradient and the forward node it differentiates (an edge from each), so the
//! dump and the DOT graph show what backward depends on. No gradient flows into the input
//! image: nothing would read it. Flatten is a view and needs none. Shapes are set here: a
//! gradient has the shape of what it differentiates.

use crate::ir::{Graph, Node, NodeId, Op, Wrt};

/// Adds the backward graph of `graph` (which must be shaped).
pub fn differentiate(graph: &mut Graph) {
    let order: Vec<NodeId> = graph
        .topo()
        .into_iter()
        .filter(|&id| !graph.node(id).op.is_training())
        .collect();
    let output = *order
        .iter()
        .find(|&&id| matches!(graph.node(id).op, Op::Output))
        .expect("a graph has an output");
    let mut at = graph.inputs(output)[0];
    // A final softmax is folded into the loss, which starts from the logits.
    if matches!(graph.node(at).op, Op::Softmax) {
        at = graph.inputs(at)[0];
    }
    let logits_shape = graph.node(at).shape.clone();
    let mut upstream = add(graph, at, "loss", Op::Loss, logits_shape, &[at]);
    // The loss reads the logits where the network's result is gathered.
    graph.node_mut(upstream).place = graph.node(output).place;
    loop {
        let node = graph.node(at).clone();
        let Some(&input) = graph.inputs(at).first() else {
            break;
        };
        let feeds_image = matches!(graph.node(input).op, Op::Input { .. })
            || (matches!(graph.node(input).op, Op::Flatten)
                && matches!(graph.node(graph.inputs(input)[0]).op, Op::Input { .. }));
        let params = match node.op {
            Op::Conv(c) => {
                let in_ch = graph.node(input).shape.as_ref().map_or(1, |s| s[0]);
                vec![(
                    Wrt::Weight,
                    vec![c.out_channels, in_ch / c.groups, c.kernel, c.kernel],
                )]
                .into_iter()
                .chain(c.bias.then(|| (Wrt::Bias, vec![c.out_channels])))
                .collect()
            }
            Op::Linear(l) => {
                let in_f = graph.node(input).shape.as_ref().map_or(1, |s| s[0]);
                vec![(Wrt::Weight, vec![l.out_features, in_f])]
                    .into_iter()
                    .chain(l.bias.then(|| (Wrt::Bias, vec![l.out_features])))
                    .collect()
            }
            Op::Flatten => {
                at = input;
                continue;
            }
            Op::Relu | Op::Lrn(_) | Op::MaxPool(_) | Op::Dropout(_) | Op::Softmax => Vec::new(),
            Op::Input { .. } | Op::Output | Op::Loss | Op::Grad { .. } | Op::Sgd { .. } => break,
        };
        let grads: Vec<(Wrt, NodeId, Vec<u32>)> = params
            .into_iter()
            .map(|(wrt, shape)| {
                (
                    wrt,
                    add(
                        graph,
                        at,
                        &node.layer,
                        Op::Grad { of: at, wrt },
                        Some(shape.clone()),
                        &[upstream, at],
                    ),
                    shape,
                )
            })
            .collect();
        let input_grad = (!feeds_image).then(|| {
            let shape = graph.node(input).shape.clone();
            add(
                graph,
                at,
                &node.layer,
                Op::Grad {
                    of: at,
                    wrt: Wrt::Input,
                },
                shape,
                &[upstream, at],
            )
        });
        // An update overwrites a weight that the input gradient reads, so it comes after it.
        for (wrt, grad, shape) in grads {
            let after: Vec<NodeId> = std::iter::once(grad).chain(input_grad).collect();
            add(
                graph,
                at,
                &node.layer,
                Op::Sgd { of: at, wrt },
                Some(shape),
                &after,
            );
        }
        match input_grad {
            Some(g) => upstream = g,
            None => break,
        }
        at = input;
    }
}

/// Adds a node of `layer` placed as `of`, reading `from`.
fn add(
    graph: &mut Graph,
    of: NodeId,
    layer: &str,
    op: Op,
    shape: Option<Vec<u32>>,
    from: &[NodeId],
) -> NodeId {
    let src = graph.node(of);
    let node = Node {
        op,
        layer: layer.to_string(),
        param_prefix: src.param_prefix.clone(),
        span: src.span,
        place: src.place,
        shape,
    };
    let id = graph.add(node);
    for &f in from {
        graph.connect(f, id);
    }
    id
}
