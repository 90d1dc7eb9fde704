//! The IR: a closed, typed op graph over `petgraph::stable_graph::StableDiGraph`.
//!
//! Every node carries its op, source layer and span, the device it runs on and (after
//! `passes::shapes`) the shape of one image's output. Graph inputs and outputs are nodes
//! (`Op::Input`, `Op::Output`). `passes::autodiff` adds the backward graph (`Op::Loss`,
//! `Op::Grad`, `Op::Sgd`); fused ops will be further `Op` variants; every
//! `match` on `Op` is exhaustive so that adding one breaks the build wherever it must be handled.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use proc_macro2::Span;
use std::fmt::{self, Write};

pub use alexnet_plan::{ExchangeKind, Place};

/// A node of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub NodeIndex);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// Convolution attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub out_channels: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    pub groups: u32,
    pub bias: bool,
    pub floor: bool,
}

/// Local response normalisation attributes (the paper's raw alpha).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    pub size: u32,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

/// Max pooling attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool {
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    pub floor: bool,
}

/// Fully connected attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub out_features: u32,
    pub bias: bool,
}

/// Dropout attributes (identity at inference).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
}

/// Everything a node can compute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// The input batch, `[C, H, W]` per image.
    Input {
        shape: [u32; 3],
    },
    Conv(Conv),
    Relu,
    Lrn(Lrn),
    MaxPool(MaxPool),
    /// `[C, H, W]` to `[C*H*W]`; inserted before the first linear layer.
    Flatten,
    Linear(Linear),
    Dropout(Dropout),
    Softmax,
    /// The network's result.
    Output,
    /// Softmax cross-entropy of the logits against the labels (a final softmax is folded in);
    /// its value is the gradient of the logits. Added by `passes::autodiff`, like the rest.
    Loss,
    /// A gradient of the forward node `of`, with respect to its input or a parameter.
    Grad {
        of: NodeId,
        wrt: Wrt,
    },
    /// The optimiser's update of a parameter of `of`, from its gradient.
    Sgd {
        of: NodeId,
        wrt: Wrt,
    },
}

/// What a gradient is taken with respect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrt {
    Input,
    Weight,
    Bias,
}

impl Wrt {
    pub fn as_str(self) -> &'static str {
        match self {
            Wrt::Input => "input",
            Wrt::Weight => "weight",
            Wrt::Bias => "bias",
        }
    }
}

impl Op {
    /// Short mnemonic used in dumps and kernel names.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv(_) => "conv",
            Op::Relu => "relu",
            Op::Lrn(_) => "lrn",
            Op::MaxPool(_) => "maxpool",
            Op::Flatten => "flatten",
            Op::Linear(_) => "linear",
            Op::Dropout(_) => "dropout",
            Op::Softmax => "softmax",
            Op::Output => "output",
            Op::Loss => "loss",
            Op::Grad { .. } => "grad",
            Op::Sgd { .. } => "sgd",
        }
    }

    /// Attributes in the stable textual form used by the dump.
    pub fn attrs(&self) -> String {
        match self {
            Op::Input { shape } => format!("{{shape {}}}", dims(shape)),
            Op::Conv(c) => {
                let mut s = format!(
                    "{{out {} k{} s{} p{}",
                    c.out_channels, c.kernel, c.stride, c.pad
                );
                if c.groups != 1 {
                    let _ = write!(s, " g{}", c.groups);
                }
                if !c.bias {
                    s.push_str(" nobias");
                }
                if c.floor {
                    s.push_str(" floor");
                }
                s + "}"
            }
            Op::Lrn(l) => format!(
                "{{n{} alpha {:e} beta {} k {}}}",
                l.size, l.alpha, l.beta, l.k
            ),
            Op::MaxPool(p) => format!(
                "{{k{} s{} p{}{}}}",
                p.kernel,
                p.stride,
                p.pad,
                if p.floor { " floor" } else { "" }
            ),
            Op::Linear(l) => format!(
                "{{out {}{}}}",
                l.out_features,
                if l.bias { "" } else { " nobias" }
            ),
            Op::Dropout(d) => format!("{{p {}}}", d.p),
            Op::Grad { of, wrt } | Op::Sgd { of, wrt } => format!("{{{} of {of}}}", wrt.as_str()),
            Op::Relu | Op::Flatten | Op::Softmax | Op::Output | Op::Loss => String::new(),
        }
    }

    /// Whether the op owns learnable parameters.
    pub fn has_params(&self) -> bool {
        match self {
            Op::Conv(_) | Op::Linear(_) => true,
            Op::Input { .. }
            | Op::Relu
            | Op::Lrn(_)
            | Op::MaxPool(_)
            | Op::Flatten
            | Op::Dropout(_)
            | Op::Softmax
            | Op::Output
            | Op::Loss
            | Op::Grad { .. }
            | Op::Sgd { .. } => false,
        }
    }

    /// Whether the op belongs to training (added by `passes::autodiff`).
    pub fn is_training(&self) -> bool {
        matches!(self, Op::Loss | Op::Grad { .. } | Op::Sgd { .. })
    }
}

/// `[a,b,c]` without spaces.
pub fn dims(d: &[u32]) -> String {
    let parts: Vec<String> = d.iter().map(u32::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// One node.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// Source layer name (`input` and `output` for the graph's ends).
    pub layer: String,
    /// Parameter name prefix (`#[weights = ...]`, else the layer name).
    pub param_prefix: String,
    /// Where in the DSL the op was written.
    pub span: Span,
    /// Where its output lives (set by `passes::place`).
    pub place: Place,
    /// Output shape of one image; set by `passes::shapes`.
    pub shape: Option<Vec<u32>>,
}

/// The graph of one network.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub g: StableDiGraph<Node, ()>,
    /// Devices the network is declared for.
    pub devices: u32,
    /// The forward transfers between devices that `passes::place` found.
    pub exchanges: Vec<Exchange>,
}

/// One forward transfer between the two devices: `node` reads what `to` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub node: NodeId,
    pub to: u32,
    pub kind: ExchangeKind,
    pub bytes_per_image: u64,
}

impl Graph {
    pub fn add(&mut self, node: Node) -> NodeId {
        NodeId(self.g.add_node(node))
    }

    pub fn connect(&mut self, from: NodeId, to: NodeId) {
        self.g.add_edge(from.0, to.0, ());
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    /// Producers of `id`'s inputs, in a stable order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| NodeId(e.source()))
            .collect();
        v.sort();
        v
    }

    /// Nodes in a deterministic topological order (ties by node index).
    pub fn topo(&self) -> Vec<NodeId> {
        let mut indegree: std::collections::BTreeMap<NodeId, usize> = self
            .g
            .node_indices()
            .map(|n| {
                (
                    NodeId(n),
                    self.g.edges_directed(n, Direction::Incoming).count(),
                )
            })
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            let mut next: Vec<NodeId> = self
                .g
                .edges_directed(n.0, Direction::Outgoing)
                .map(|e| NodeId(e.target()))
                .collect();
            next.sort();
            for m in next {
                let d = indegree.get_mut(&m).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(m);
                }
            }
        }
        order
    }

    /// Graphviz DOT, one box per node, labelled like the dump.
    pub fn to_dot(&self, name: &str) -> String {
        let mut s = format!(
            "digraph {name} {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n"
        );
        for id in self.topo() {
            let n = self.node(id);
            let shape = n.shape.as_deref().map(dims).unwrap_or_default();
            let _ = writeln!(
                s,
                "  n{} [label=\"{}: {} {}\\n{} @{}\"];",
                id.0.index(),
                n.layer,
                n.op.mnemonic(),
                n.op.attrs().replace('"', "'"),
                shape,
                n.place.label()
            );
        }
        for id in self.topo() {
            for src in self.inputs(id) {
                // A cross-device edge is red and says what crosses, per image.
                let crossing: Vec<String> = self
                    .exchanges
                    .iter()
                    .filter(|e| e.node == id && !self.node(src).op.is_training())
                    .map(|e| format!("{} B/img to dev{}", e.bytes_per_image, e.to))
                    .collect();
                if crossing.is_empty() {
                    let _ = writeln!(s, "  n{} -> n{};", src.0.index(), id.0.index());
                } else {
                    let _ = writeln!(
                        s,
                        "  n{} -> n{} [color=red, style=dashed, label=\"{}\"];",
                        src.0.index(),
                        id.0.index(),
                        crossing.join("\\n")
                    );
                }
            }
        }
        s.push_str("}\n");
        s
    }
}

/// The stable one-line-per-node dump:
/// `%3 = conv %2 {out 96 k11 s4 p0} -> [N,96,55,55] @dev0 ; conv1`; on two devices a node's
/// place is `@towers` (half its channels on each) or `@both`, followed by what it receives
/// from the other device per image: `@towers <gather 86528B->dev0> <gather 86528B->dev1>`.
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.topo() {
            let n = self.node(id);
            write!(f, "{id} = {}", n.op.mnemonic())?;
            for src in self.inputs(id) {
                write!(f, " {src}")?;
            }
            let attrs = n.op.attrs();
            if !attrs.is_empty() {
                write!(f, " {attrs}")?;
            }
            if let Some(shape) = &n.shape {
                // Parameters and their gradients have no batch dimension.
                let per_batch = !matches!(
                    n.op,
                    Op::Grad {
                        wrt: Wrt::Weight | Wrt::Bias,
                        ..
                    } | Op::Sgd { .. }
                );
                let mut full = if per_batch {
                    vec!["N".to_string()]
                } else {
                    Vec::new()
                };
                full.extend(shape.iter().map(u32::to_string));
                write!(f, " -> [{}]", full.join(","))?;
            }
            write!(f, " @{}", n.place.label())?;
            for e in self.exchanges.iter().filter(|e| e.node == id) {
                let kind = match e.kind {
                    ExchangeKind::Gather => "gather".to_string(),
                    ExchangeKind::Halo { channels } => format!("halo {channels}ch"),
                    ExchangeKind::Whole => "whole".to_string(),
                };
                write!(f, " <{kind} {}B->dev{}>", e.bytes_per_image, e.to)?;
            }
            writeln!(f, " ; {}", n.layer)?;
        }
        Ok(())
    }
}
