//! Two-device execution of `devices: 2` plans: one adapter opened twice is two logical
//! devices that share nothing, so the split runs and is checked on any machine.

use alexnet::models::AlexNet;
use alexnet::plan::{Step, Tensor};
use alexnet::{alexnet, Session, TowerSession, Weights};
use alexnet_tests::{gpu, he_weights, random_input};

alexnet! {
    /// Every case of the split at small sizes: conv1's LRN reaches across the towers (a halo),
    /// conv2's groups line up with the towers (no exchange), conv3 and the linear layers read
    /// both halves, and the softmax reads the logits gathered on device 0.
    pub SmallTowers {
        input: [3, 19, 19],
        devices: 2,
        max_batch: 8,
        conv1: conv(12, k = 3, s = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        conv2: conv(16, k = 3, p = 1, groups = 2) -> relu,
        conv3: conv(8, k = 3, p = 1) -> relu,
        fc6: linear(10) -> relu -> dropout(0.5),
        fc7: linear(6) -> softmax,
    }
}

/// Runs `plan` on one device and on two logical devices of the same adapter.
fn one_and_two(plan: &alexnet::Plan, weights: &Weights, input: &[f32], batch: usize) -> (alexnet::Output, alexnet::Output, alexnet::ExchangeStats) {
    let (a, b) = (gpu(plan), gpu(plan));
    let mut one = Session::new(&a, plan, batch as u32).unwrap();
    one.load_weights(weights).unwrap();
    let mut two = TowerSession::new([&a, &b], plan, batch as u32).unwrap();
    two.load_weights(weights).unwrap();
    let two_out = two.forward(input, batch).unwrap();
    (one.forward(input, batch).unwrap(), two_out, two.exchange_stats())
}

#[test]
fn small_towers_on_two_devices_match_one_device_and_the_reference() {
    let plan = &SmallTowers::PLAN;
    let towers = plan.towers.as_ref().expect("a devices: 2 plan split into towers throughout has a two-device program");
    // conv1's halo both ways, conv3's and fc6's inputs both ways, fc7's input both ways and
    // the logits' other half to device 0 (before its softmax).
    assert_eq!(towers.exchanges.len(), 9, "{:#?}", towers.exchanges);
    // Every weight part is on the device of its tower: device 0 holds the first half of the rows.
    for (d, program) in towers.programs.iter().enumerate() {
        for p in program.placements.iter() {
            if let Tensor::Param { index, part } = p.tensor {
                let param = &plan.params[index as usize];
                assert_eq!(param.parts[part as usize].start < param.shape[0] / 2, d == 0, "{} part {part} on device {d}", param.name);
            }
        }
    }
    let weights = he_weights(plan, 3);
    // 5 images: more than one, and not a power of two.
    let input = random_input(plan, 5, 11);
    let (one, two, stats) = one_and_two(plan, &weights, &input, 5);
    assert_eq!(two.logits, one.logits, "the same kernels on the same data give the same bits");
    assert_eq!(two.probs, one.probs);
    let reference = alexnet::runtime::reference::forward(plan, &weights, &input, 5);
    for (got, want) in [(&two.logits, &reference.logits), (&two.probs, &reference.probs)] {
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{got:?} vs the reference {want:?}");
        }
    }
    // What moved is what the plan says, for each of the 5 images.
    for (from, moved) in stats.bytes.iter().enumerate() {
        assert_eq!(*moved, 5 * towers.received_per_image(1 - from as u32), "bytes sent by device {from}");
    }
}

#[test]
fn paper_net_exchanges_what_its_shapes_say_and_runs_on_two_devices_bit_for_bit() {
    let plan = &AlexNet::PLAN;
    let towers = plan.towers.as_ref().expect("the paper's net runs as two towers");
    // Forward exchange per image, each way, from the shapes: conv3's input half 128×13×13,
    // fc6's 4,608 features, fc7's and fc8's 2,048 each (floats); conv1's and conv2's LRN
    // halos are 2 channels of 55×55 and 27×27; device 0 gathers the other 500 logits.
    let gathers = 4 * (128 * 13 * 13 + 4608 + 2048 + 2048);
    let halos = 4 * 2 * (55 * 55 + 27 * 27);
    assert_eq!(gathers, 121_344, "the issue's figure: about 121 KB each way");
    assert_eq!(towers.received_per_image(1), gathers + halos);
    assert_eq!(towers.received_per_image(0), gathers + halos + 4 * 500);
    assert_eq!(plan.received_per_image(0), towers.received_per_image(0), "the placement's report and the program agree");
    // Each device runs about half the conv and linear kernels' work.
    let dispatches = |d: usize| towers.programs[d].steps.iter().filter(|s| matches!(s, Step::Dispatch(_))).count();
    assert!(dispatches(0) > 10 && dispatches(1) > 10, "{} and {} dispatches", dispatches(0), dispatches(1));

    let weights = Weights::init(plan, 5);
    let input = random_input(plan, 2, 6);
    let (one, two, stats) = one_and_two(plan, &weights, &input, 2);
    assert_eq!(two.logits, one.logits, "two logical devices compute what one computes, bit for bit");
    assert_eq!(two.probs, one.probs);
    assert_eq!(stats.bytes, [2 * towers.received_per_image(1), 2 * towers.received_per_image(0)]);
}

#[test]
fn a_plan_without_towers_is_refused_with_an_error() {
    let plan = &alexnet::models::AlexNetMini::PLAN;
    assert!(plan.towers.is_none());
    let (a, b) = (gpu(plan), gpu(plan));
    let err = TowerSession::new([&a, &b], plan, 2).err().expect("no towers to run").to_string();
    assert!(err.contains("has no two-device program") && err.contains("devices: 2"), "{err}");
}
