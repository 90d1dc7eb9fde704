//! Placement: decides where every node's output lives, and what the devices exchange.
//!
//! With one device everything is on device 0. With `devices: 2` the network is split as the
//! paper split it, into two towers: every conv and linear layer computes half its output
//! channels (features) on each device, with the weight rows (and bias entries) that compute
//! them, and every op that works channel by channel (ReLU, dropout, max-pool, flatten)
//! follows its input. What a tower reads that the other one holds is an [`Exchange`]:
//! - a grouped conv whose groups line up with the towers (an even number of groups) reads
//!   only its own tower's half of the input (the paper's conv2, conv4, conv5);
//! - a conv with one group and every linear layer read the whole input, so each tower gathers
//!   the other's half (conv3, fc6, fc7, fc8: 121,344 bytes per image each way in the paper);
//! - a cross-channel LRN's window (channels `c - (size-1)/2 ..= c + size/2`) reaches across
//!   the tower boundary, so device 0 receives the first `size / 2` channels of device 1's
//!   half and device 1 the last `(size - 1) / 2` of device 0's: the two-device result is the
//!   one-device result, not the paper's per-GPU normalisation;
//! - softmax, and logits without one, are gathered on device 0;
//! - the input image is uploaded to both devices (`Place::Both`), so conv1 exchanges nothing.
//!
//! A layer that cannot be halved (an odd channel count, groups that straddle the towers) is a
//! spanned error, unless the declaration puts it whole on one device with `#[device = N]`;
//! then it gathers what it reads on that device. The backward pass returns the gradient of
//! every exchanged tensor the opposite way, so its traffic mirrors the forward's.
//!
//! `schedule::towers` lowers this for inference and for a training step (one program per
//! device, these exchanges between them, and in training their gradients the other way);
//! the IR dump, the DOT graph and `alexnet info` report it.

use crate::error::{Error, Errors};
use crate::ir::{Exchange, ExchangeKind, Graph, NodeId, Op, Place};
use std::collections::BTreeMap;

/// What an op needs of its input, wherever the input lives.
enum Needs {
    /// Each device only the channels it computes (channel-wise ops, aligned grouped convs).
    OwnChannels,
    /// Every channel on every device that computes part of it.
    Whole,
    /// Its own channels and, for each receiving device, that many of the other tower's
    /// channels next to the boundary.
    Halo { channels: [u32; 2] },
}

/// Places every forward node of a shaped graph; `pinned` maps layer names to the device
/// `#[device = N]` puts them on. Records the exchanges on the graph.
pub fn place(graph: &mut Graph, pinned: &BTreeMap<String, u32>) -> Result<(), Errors> {
    graph.exchanges.clear();
    if graph.devices < 2 {
        for id in graph.topo() {
            graph.node_mut(id).place = Place::Device(0);
        }
        return Ok(());
    }
    let mut errors = Vec::new();
    for id in graph.topo() {
        let node = graph.node(id).clone();
        let input = graph.inputs(id).first().copied();
        let in_place = input.map_or(Place::Both, |i| graph.node(i).place);
        let in_shape = input
            .and_then(|i| graph.node(i).shape.clone())
            .unwrap_or_default();
        let pin = pinned.get(&node.layer).copied();
        let halves = |count: u32, what: &str, errors: &mut Vec<Error>| {
            if !count.is_multiple_of(2) {
                errors.push(Error::new(
                    node.span,
                    format!(
                        "{}: {count} {what} cannot be split into two towers (with `devices: 2` each device computes half of every layer): declare an even number, or put the layer on one device with `#[device = 0]`",
                        node.layer
                    ),
                ));
            }
            Place::Towers
        };
        let (natural, needs) = match node.op {
            Op::Input { .. } => (Place::Both, Needs::OwnChannels),
            Op::Conv(c) => {
                let place = match pin {
                    Some(d) => Place::Device(d),
                    None => halves(c.out_channels, "output channels", &mut errors),
                };
                let needs = if c.groups == 1 || place != Place::Towers {
                    Needs::Whole
                } else if c.groups.is_multiple_of(2) || !c.out_channels.is_multiple_of(2) {
                    // (An odd channel count is already the error to fix.)
                    Needs::OwnChannels
                } else {
                    errors.push(Error::new(
                        node.span,
                        format!(
                            "{}: its {} groups straddle the two towers (with `devices: 2` each device computes half the output channels): a grouped conv needs an even number of groups, or put the layer on one device with `#[device = 0]`",
                            node.layer, c.groups
                        ),
                    ));
                    Needs::Whole
                };
                (place, needs)
            }
            Op::Linear(l) => (
                pin.map_or_else(
                    || halves(l.out_features, "output features", &mut errors),
                    Place::Device,
                ),
                Needs::Whole,
            ),
            Op::Relu | Op::Dropout(_) | Op::MaxPool(_) | Op::Flatten => {
                (in_place, Needs::OwnChannels)
            }
            Op::Lrn(l) => {
                let half = in_shape.first().copied().unwrap_or(0) / 2;
                (
                    in_place,
                    Needs::Halo {
                        channels: [(l.size / 2).min(half), ((l.size - 1) / 2).min(half)],
                    },
                )
            }
            // Probabilities and logits are wanted whole, on one device.
            Op::Softmax | Op::Output => (
                if in_place == Place::Towers {
                    Place::Device(0)
                } else {
                    in_place
                },
                Needs::Whole,
            ),
            Op::Loss | Op::Grad { .. } | Op::Sgd { .. } => continue,
        };
        let place = match (pin, node.op) {
            (Some(d), op) if !matches!(op, Op::Input { .. } | Op::Output) => Place::Device(d),
            _ => natural,
        };
        graph.node_mut(id).place = place;
        // Saturating: absurd shapes reach `valid`'s limit errors instead of overflowing here.
        let bytes = in_shape
            .iter()
            .fold(4u64, |b, &d| b.saturating_mul(u64::from(d)));
        let per_channel = bytes / u64::from(in_shape.first().copied().unwrap_or(1).max(1));
        for (to, kind, bytes) in receives(place, in_place, &needs, bytes, per_channel) {
            graph.exchanges.push(Exchange {
                node: id,
                to,
                kind,
                bytes_per_image: bytes,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Errors(errors))
    }
}

/// What each device receives so that an op placed at `place` can read an input of `bytes`
/// (per image) placed at `input`.
fn receives(
    place: Place,
    input: Place,
    needs: &Needs,
    bytes: u64,
    per_channel: u64,
) -> Vec<(u32, ExchangeKind, u64)> {
    match (place, input) {
        // Whatever it needs is where it runs.
        (_, Place::Both) | (Place::Both, _) => Vec::new(),
        (Place::Device(d), Place::Device(e)) if d == e => Vec::new(),
        (Place::Device(d), Place::Device(_)) => vec![(d, ExchangeKind::Whole, bytes)],
        (Place::Device(d), Place::Towers) => vec![(d, ExchangeKind::Gather, bytes / 2)],
        // The device without the input receives it whole, or the half its tower computes on.
        (Place::Towers, Place::Device(e)) => match needs {
            Needs::Whole => vec![(1 - e, ExchangeKind::Whole, bytes)],
            Needs::OwnChannels | Needs::Halo { .. } => {
                vec![(1 - e, ExchangeKind::Gather, bytes / 2)]
            }
        },
        (Place::Towers, Place::Towers) => match *needs {
            Needs::OwnChannels => Vec::new(),
            Needs::Whole => (0..2)
                .map(|to| (to, ExchangeKind::Gather, bytes / 2))
                .collect(),
            Needs::Halo { channels } => (0..2u32)
                .filter(|&to| channels[to as usize] > 0)
                .map(|to| {
                    let channels = channels[to as usize];
                    (
                        to,
                        ExchangeKind::Halo { channels },
                        u64::from(channels).saturating_mul(per_channel),
                    )
                })
                .collect(),
        },
    }
}

/// The readable name of the node an exchange feeds: `conv3.conv`, `fc8.softmax`, `output`.
pub fn reader(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    match node.op {
        Op::Output => "output".into(),
        op => format!("{}.{}", node.layer, op.mnemonic()),
    }
}
