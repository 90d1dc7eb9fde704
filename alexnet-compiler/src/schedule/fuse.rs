//! Fusion: groups the forward chain of each layer into the kernels inference runs.
//!
//! A scheduling decision over chains of nodes, written as a table of slice patterns; the IR,
//! the CPU reference and autodiff stay per-op. Training and the inspect program keep one
//! kernel per op (backward reads the intermediate activations); inference runs the groups.
//! Dropout is the identity at inference, so a group covers it without computing anything.
//! Fusion never crosses a layer, so a group is at most one layer's block.

use alexnet_plan::{Fusion, Node, NodeOp, Target};

/// One kernel's worth of forward nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    /// A convolution, then optionally ReLU, then LRN and max-pool in either order (each
    /// optional), in one kernel. `post` lists the LRN/pool nodes in order.
    ConvBlock {
        conv: u32,
        relu: Option<u32>,
        post: Vec<u32>,
        dropouts: Vec<u32>,
    },
    /// A linear layer with ReLU in its epilogue.
    LinearRelu {
        linear: u32,
        relu: u32,
        dropouts: Vec<u32>,
    },
    /// A linear layer and the softmax over its outputs, one workgroup per image.
    LinearSoftmax {
        linear: u32,
        softmax: u32,
        dropouts: Vec<u32>,
    },
    /// An op on its own.
    Single(u32),
    /// Nodes that compute nothing at inference (dropout).
    Identity(u32),
}

impl Group {
    /// The nodes the group covers, in order.
    pub fn covers(&self) -> Vec<u32> {
        let mut v = match self {
            Group::ConvBlock {
                conv,
                relu,
                post,
                dropouts,
            } => {
                let mut v = vec![*conv];
                v.extend(relu);
                v.extend(post);
                v.extend(dropouts);
                v
            }
            Group::LinearRelu {
                linear,
                relu,
                dropouts,
            } => [vec![*linear, *relu], dropouts.clone()].concat(),
            Group::LinearSoftmax {
                linear,
                softmax,
                dropouts,
            } => [vec![*linear, *softmax], dropouts.clone()].concat(),
            Group::Single(n) | Group::Identity(n) => vec![*n],
        };
        v.sort_unstable();
        v
    }
}

/// Groups `nodes` (the plan's forward nodes, in order) for inference as `fusion` says.
pub fn fuse(nodes: &[Node], fusion: Fusion) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let layer = &nodes[i].layer;
        let end = i + nodes[i..].iter().take_while(|n| &n.layer == layer).count();
        groups.extend(fuse_layer(nodes, i as u32, end as u32, fusion));
        i = end;
    }
    groups
}

/// The groups of one layer's nodes `start..end`.
fn fuse_layer(nodes: &[Node], start: u32, end: u32, fusion: Fusion) -> Vec<Group> {
    // Dropout computes nothing at inference: it joins whatever group precedes it.
    let (ops, dropouts): (Vec<u32>, Vec<u32>) =
        (start..end).partition(|&n| !matches!(nodes[n as usize].op, NodeOp::Dropout(_)));
    if fusion == Fusion::Off {
        let mut groups: Vec<Group> = ops.into_iter().map(Group::Single).collect();
        groups.extend(dropouts.into_iter().map(Group::Identity));
        return groups;
    }
    let op = |n: &u32| nodes[*n as usize].op;
    let kinds: Vec<NodeOp> = ops.iter().map(op).collect();
    let group = match (kinds.as_slice(), ops.as_slice()) {
        ([NodeOp::Conv(_), NodeOp::Relu, rest @ ..], [conv, relu, post @ ..])
            if block_tail(rest) =>
        {
            Some(Group::ConvBlock {
                conv: *conv,
                relu: Some(*relu),
                post: post.to_vec(),
                dropouts: dropouts.clone(),
            })
        }
        ([NodeOp::Conv(_), rest @ ..], [conv, post @ ..])
            if block_tail(rest) && !rest.is_empty() =>
        {
            Some(Group::ConvBlock {
                conv: *conv,
                relu: None,
                post: post.to_vec(),
                dropouts: dropouts.clone(),
            })
        }
        ([NodeOp::Linear(_), NodeOp::Relu], [linear, relu]) => Some(Group::LinearRelu {
            linear: *linear,
            relu: *relu,
            dropouts: dropouts.clone(),
        }),
        ([NodeOp::Linear(_), NodeOp::Softmax], [linear, softmax]) => Some(Group::LinearSoftmax {
            linear: *linear,
            softmax: *softmax,
            dropouts: dropouts.clone(),
        }),
        _ => None,
    };
    match group {
        // Epilogue fusion keeps conv + ReLU and leaves LRN and pooling to kernels of their own,
        // so no tile recomputes its neighbours' halos.
        Some(Group::ConvBlock {
            conv,
            relu,
            post,
            dropouts,
        }) if fusion == Fusion::Epilogue && !post.is_empty() => {
            let mut groups = match relu {
                Some(relu) => vec![Group::ConvBlock {
                    conv,
                    relu: Some(relu),
                    post: Vec::new(),
                    dropouts: Vec::new(),
                }],
                None => vec![Group::Single(conv)],
            };
            groups.extend(post.into_iter().map(Group::Single));
            groups.extend(dropouts.into_iter().map(Group::Identity));
            groups
        }
        Some(g) => vec![g],
        None => {
            let mut groups: Vec<Group> = ops.into_iter().map(Group::Single).collect();
            groups.extend(dropouts.into_iter().map(Group::Identity));
            groups
        }
    }
}

/// The fusion of the inference program for `target` adapters, when the declaration asks for
/// `fusion`. Software adapters (lavapipe, llvmpipe) run a conv block's recomputed halos as
/// extra arithmetic on the same few cores and gain nothing from the traffic it saves (the
/// caches hold the intermediate tensors): the paper's conv1/conv2/conv5 blocks took 1.6-2.4×
/// as long as their conv + ReLU GEMM and separate LRN and pool kernels there. So they get the
/// epilogue fusion; GPUs keep what was declared.
pub fn for_target(fusion: Fusion, target: Target) -> Fusion {
    match (fusion, target) {
        (Fusion::Blocks, Target::Cpu | Target::CpuSubgroup) => Fusion::Epilogue,
        (fusion, Target::Gpu | Target::Cpu | Target::CpuSubgroup) => fusion,
    }
}

/// What may follow conv (+ ReLU) in one block: nothing, LRN, max-pool, or both in either order.
fn block_tail(ops: &[NodeOp]) -> bool {
    matches!(
        ops,
        [] | [NodeOp::Lrn(_)]
            | [NodeOp::MaxPool(_)]
            | [NodeOp::Lrn(_), NodeOp::MaxPool(_)]
            | [NodeOp::MaxPool(_), NodeOp::Lrn(_)]
    )
}

/// The dropout a linear kernel covering `covers` applies in its epilogue: the one dropout
/// after the linear layer's ReLU (`linear -> relu -> dropout`, the paper's fc6 and fc7).
/// A dropout before the linear layer (torchvision's) masks an input another kernel wrote, and
/// stays a kernel of its own.
pub fn epilogue_dropout(nodes: &[Node], covers: &[u32]) -> Option<u32> {
    let op = |n: &u32| nodes[*n as usize].op;
    let first = covers
        .iter()
        .find(|n| !matches!(op(n), NodeOp::Dropout(_)))?;
    let relu = covers.iter().find(|n| op(n) == NodeOp::Relu)?;
    let after: Vec<u32> = covers
        .iter()
        .copied()
        .filter(|n| n > relu && matches!(op(n), NodeOp::Dropout(_)))
        .collect();
    match (op(first), after.as_slice()) {
        (NodeOp::Linear(_), [dropout]) => Some(*dropout),
        _ => None,
    }
}

/// The chains whose input gradients training computes in one kernel. After a conv (with
/// `fusion: on`): an optional ReLU, then LRN, max-pool or both, LRN first, so every gradient
/// the chain passes through is at the conv's resolution and one invocation can walk a pixel's
/// channels. After a linear layer (with any fusion): its ReLU and the dropout in its epilogue
/// (`epilogue_dropout`). Each chain lists its nodes in forward order. A chain with a dropout
/// inside it, or of a single op, is left to the per-op kernels.
/// `groups` are `fuse(nodes, fusion)`.
pub fn backward_chains(nodes: &[Node], groups: &[Group], fusion: Fusion) -> Vec<Vec<u32>> {
    if fusion == Fusion::Off {
        return Vec::new();
    }
    groups
        .iter()
        .filter_map(|group| match group {
            Group::LinearRelu { relu, .. } => {
                epilogue_dropout(nodes, &group.covers()).map(|dropout| vec![*relu, dropout])
            }
            Group::ConvBlock { .. } if fusion != Fusion::Blocks => None,
            Group::ConvBlock {
                relu,
                post,
                dropouts,
                ..
            } => {
                let chain: Vec<u32> = relu.iter().chain(post.iter()).copied().collect();
                let tail: Vec<NodeOp> = post.iter().map(|&n| nodes[n as usize].op).collect();
                let lrn_first = matches!(
                    tail.as_slice(),
                    [NodeOp::Lrn(_)] | [NodeOp::MaxPool(_)] | [NodeOp::Lrn(_), NodeOp::MaxPool(_)]
                );
                let last = *chain.last()?;
                (lrn_first && chain.len() > 1 && dropouts.iter().all(|&d| d > last))
                    .then_some(chain)
            }
            Group::LinearSoftmax { .. } | Group::Single(_) | Group::Identity(_) => None,
        })
        .collect()
}
