//! Lowering: turns the AST into the IR graph, one node per op, chained in declaration order.
//!
//! It inserts the implicit flatten before the first linear layer and checks what needs only
//! the layer structure (one parameterised op per layer, so parameter names stay unique).
//! Shapes are left unset for `passes::shapes`; every node starts on device 0 (`passes::place`
//! splits them). Its errors
//! do not stop compilation before shape inference, which still has a well-formed graph.

use crate::error::Error;
use crate::front::{NetDef, OpKind};
use crate::ir::{self, Graph, Node, Op};

/// Builds the graph of `net`, with any structural errors.
pub fn lower(net: &NetDef) -> (Graph, Vec<Error>) {
    let mut errors = Vec::new();
    let mut graph = Graph {
        devices: net.devices,
        ..Graph::default()
    };
    let mut prev = graph.add(Node {
        op: Op::Input { shape: net.input },
        layer: "input".into(),
        param_prefix: "input".into(),
        span: net.input_span,
        place: ir::Place::Device(0),
        shape: None,
    });
    let mut flattened = false;
    for layer in &net.layers {
        let name = layer.name.to_string();
        let prefix = layer.weights.clone().unwrap_or_else(|| name.clone());
        let mut with_params = 0;
        for op in &layer.ops {
            let lowered = match op.kind {
                OpKind::Conv(c) => Op::Conv(c),
                OpKind::Relu => Op::Relu,
                OpKind::Lrn(l) => Op::Lrn(l),
                OpKind::MaxPool(p) => Op::MaxPool(p),
                OpKind::Linear(l) => Op::Linear(l),
                OpKind::Dropout { p } => Op::Dropout(ir::Dropout { p }),
                OpKind::Softmax => Op::Softmax,
            };
            if lowered.has_params() {
                with_params += 1;
                if with_params == 2 {
                    errors.push(Error::new(op.span, format!("{name}: a layer holds at most one `conv` or `linear` (split it into two layers)")));
                }
            }
            if matches!(lowered, Op::Linear(_)) && !flattened {
                flattened = true;
                let flat = graph.add(Node {
                    op: Op::Flatten,
                    layer: name.clone(),
                    param_prefix: prefix.clone(),
                    span: op.span,
                    place: ir::Place::Device(0),
                    shape: None,
                });
                graph.connect(prev, flat);
                prev = flat;
            }
            let id = graph.add(Node {
                op: lowered,
                layer: name.clone(),
                param_prefix: prefix.clone(),
                span: op.span,
                place: ir::Place::Device(0),
                shape: None,
            });
            graph.connect(prev, id);
            prev = id;
        }
    }
    let out = graph.add(Node {
        op: Op::Output,
        layer: "output".into(),
        param_prefix: "output".into(),
        span: net.name.span(),
        place: ir::Place::Device(0),
        shape: None,
    });
    graph.connect(prev, out);
    (graph, errors)
}
