//! Two-device execution of `devices: 2` plans, inference and training: one adapter opened
//! twice is two logical devices that share nothing, so the split runs and is checked on any
//! machine.

use alexnet::models::AlexNet;
use alexnet::plan::{Step, Tensor};
use alexnet::runtime::train::{Checkpoint, TrainOptions, TrainState};
use alexnet::runtime::StepConfig;
use alexnet::{alexnet, Runner, Session, TowerSession, Weights};
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

alexnet! {
    /// The other orders of a block: pool before LRN, an LRN straight after a conv (without
    /// ReLU) and one of size 4 (an uneven window), no bias, linear layers without ReLU.
    OtherTowers {
        input: [2, 18, 16],
        devices: 2,
        max_batch: 4,
        conv1: conv(8, k = 3) -> relu -> maxpool(k = 2, s = 2) -> lrn(n = 3, alpha = 1e-3, beta = 0.75, k = 1),
        conv2: conv(12, k = 3, p = 1, groups = 2, bias = false) -> lrn(n = 4, alpha = 2e-3, beta = 0.5, k = 2) -> relu,
        conv3: conv(4, k = 1) -> relu -> maxpool(k = 3, s = 2, floor),
        fc6: linear(6) -> dropout(0.5),
        fc7: linear(4),
    }
}

/// Runs `plan` on one device and on two logical devices of the same adapter.
fn one_and_two(
    plan: &alexnet::Plan,
    weights: &Weights,
    input: &[f32],
    batch: usize,
) -> (alexnet::Output, alexnet::Output, alexnet::ExchangeStats) {
    let (a, b) = (gpu(plan), gpu(plan));
    let mut one = Session::new(&a, plan, batch as u32).unwrap();
    one.load_weights(weights).unwrap();
    let mut two = TowerSession::new([&a, &b], plan, batch as u32).unwrap();
    two.load_weights(weights).unwrap();
    let two_out = two.forward(input, batch).unwrap();
    (
        one.forward(input, batch).unwrap(),
        two_out,
        two.exchange_stats(),
    )
}

#[test]
fn small_towers_on_two_devices_match_one_device_and_the_reference() {
    let plan = &SmallTowers::PLAN;
    let towers = plan
        .towers
        .as_ref()
        .expect("a devices: 2 plan split into towers throughout has a two-device program");
    // conv1's halo both ways, conv3's and fc6's inputs both ways, fc7's input both ways and
    // the logits' other half to device 0 (before its softmax).
    assert_eq!(towers.exchanges.len(), 9, "{:#?}", towers.exchanges);
    // Every weight part is on the device of its tower: device 0 holds the first half of the rows.
    for (d, program) in towers.programs.iter().enumerate() {
        for p in program.placements.iter() {
            if let Tensor::Param { index, part } = p.tensor {
                let param = &plan.params[index as usize];
                assert_eq!(
                    param.parts[part as usize].start < param.shape[0] / 2,
                    d == 0,
                    "{} part {part} on device {d}",
                    param.name
                );
            }
        }
    }
    let weights = he_weights(plan, 3);
    // 5 images: more than one, and not a power of two.
    let input = random_input(plan, 5, 11);
    let (one, two, stats) = one_and_two(plan, &weights, &input, 5);
    assert_eq!(
        two.logits, one.logits,
        "the same kernels on the same data give the same bits"
    );
    assert_eq!(two.probs, one.probs);
    let reference = alexnet::runtime::reference::forward(plan, &weights, &input, 5);
    for (got, want) in [
        (&two.logits, &reference.logits),
        (&two.probs, &reference.probs),
    ] {
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{got:?} vs the reference {want:?}"
            );
        }
    }
    // What moved is what the plan says, for each of the 5 images.
    for (from, moved) in stats.bytes.iter().enumerate() {
        assert_eq!(
            *moved,
            5 * towers.received_per_image(1 - from as u32),
            "bytes sent by device {from}"
        );
    }
}

#[test]
fn paper_net_exchanges_what_its_shapes_say_and_runs_on_two_devices_bit_for_bit() {
    let plan = &AlexNet::PLAN;
    let towers = plan
        .towers
        .as_ref()
        .expect("the paper's net runs as two towers");
    // Forward exchange per image, each way, from the shapes: conv3's input half 128×13×13,
    // fc6's 4,608 features, fc7's and fc8's 2,048 each (floats); conv1's and conv2's LRN
    // halos are 2 channels of 55×55 and 27×27; device 0 gathers the other 500 logits.
    let gathers = 4 * (128 * 13 * 13 + 4608 + 2048 + 2048);
    let halos = 4 * 2 * (55 * 55 + 27 * 27);
    assert_eq!(
        gathers, 121_344,
        "the issue's figure: about 121 KB each way"
    );
    assert_eq!(towers.received_per_image(1), gathers + halos);
    assert_eq!(towers.received_per_image(0), gathers + halos + 4 * 500);
    assert_eq!(
        plan.received_per_image(0),
        towers.received_per_image(0),
        "the placement's report and the program agree"
    );
    // Each device runs about half the conv and linear kernels' work.
    let dispatches = |d: usize| {
        towers.programs[d]
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Dispatch(_)))
            .count()
    };
    assert!(
        dispatches(0) > 10 && dispatches(1) > 10,
        "{} and {} dispatches",
        dispatches(0),
        dispatches(1)
    );

    let weights = Weights::init(plan, 5);
    let input = random_input(plan, 2, 6);
    let (one, two, stats) = one_and_two(plan, &weights, &input, 2);
    assert_eq!(
        two.logits, one.logits,
        "two logical devices compute what one computes, bit for bit"
    );
    assert_eq!(two.probs, one.probs);
    assert_eq!(
        stats.bytes,
        [
            2 * towers.received_per_image(1),
            2 * towers.received_per_image(0)
        ]
    );
}

#[test]
fn a_plan_without_towers_is_refused_with_an_error() {
    let plan = &alexnet::models::AlexNetMini::PLAN;
    assert!(plan.towers.is_none());
    let (a, b) = (gpu(plan), gpu(plan));
    let err = TowerSession::new([&a, &b], plan, 2)
        .err()
        .expect("no towers to run")
        .to_string();
    assert!(
        err.contains("has no two-device program") && err.contains("devices: 2"),
        "{err}"
    );
}

/// Labels of `batch` images, spread over the classes.
fn labels(plan: &alexnet::Plan, batch: usize, seed: u32) -> Vec<u32> {
    (0..batch as u32)
        .map(|i| (i * 7 + seed) % plan.classes())
        .collect()
}

/// What a run of training steps leaves: every step's loss and logits, then the last step's
/// gradients, and the momentum and weights after it.
#[derive(Debug, PartialEq)]
struct Trained {
    steps: Vec<(f64, Vec<f32>)>,
    grads: Vec<Vec<f32>>,
    momentum: Vec<Vec<f32>>,
    weights: Weights,
}

/// `steps` paper-recipe steps (dropout on) of `runner` on one batch, from step `first`.
fn train(
    runner: &mut dyn Runner,
    input: &[f32],
    labels: &[u32],
    first: u32,
    steps: u32,
) -> Trained {
    let batch = labels.len();
    let steps = (first..first + steps)
        .map(|step| {
            let out = runner
                .train_step(input, labels, batch, &StepConfig::paper(9, step))
                .unwrap();
            (out.loss, out.logits)
        })
        .collect();
    Trained {
        steps,
        grads: runner.read_param_grads().unwrap(),
        momentum: runner.read_momentum().unwrap(),
        weights: runner.read_weights().unwrap(),
    }
}

#[test]
fn small_towers_train_on_two_devices_as_on_one() {
    let plan = &SmallTowers::PLAN;
    let towers = plan
        .tower_training
        .as_ref()
        .expect("a plan whose forward splits has a two-device training step");
    // Each weight part's gradient and momentum live on the device of its tower, and only there.
    for (d, program) in towers.programs.iter().enumerate() {
        for p in program.placements.iter() {
            if let Tensor::Param { index, part }
            | Tensor::ParamGrad { index, part }
            | Tensor::Momentum { index, part } = p.tensor
            {
                let param = &plan.params[index as usize];
                assert_eq!(
                    param.parts[part as usize].start < param.shape[0] / 2,
                    d == 0,
                    "{:?} of {} on device {d}",
                    p.tensor,
                    param.name
                );
            }
        }
        // The loss (and the labels it reads) only on device 0.
        assert_eq!(program.placement(Tensor::Labels).is_some(), d == 0);
    }
    let (a, b) = (gpu(plan), gpu(plan));
    let weights = he_weights(plan, 4);
    // 5 images in micro-batches of 2: gradients add up over three passes before the update.
    let (input, labels) = (random_input(plan, 5, 12), labels(plan, 5, 1));
    let mut one = Session::for_training(&a, plan, 2).unwrap();
    one.load_weights(&weights).unwrap();
    let mut two = TowerSession::for_training([&a, &b], plan, 2).unwrap();
    two.load_weights(&weights).unwrap();
    let want = train(&mut one, &input, &labels, 0, 3);
    let got = train(&mut two, &input, &labels, 0, 3);
    assert_ne!(got.weights, weights, "the steps changed the weights");
    assert_eq!(
        got, want,
        "the one-device kernels on the same data, split over two devices, give the same bits"
    );
    // A forward pass of the training session agrees with an inference session on two devices.
    let mut infer = TowerSession::new([&a, &b], plan, 5).unwrap();
    infer.load_weights(&got.weights).unwrap();
    assert_eq!(
        two.forward(&input, 5).unwrap().logits,
        infer.forward(&input, 5).unwrap().logits
    );
}

#[test]
fn other_block_orders_train_on_two_devices_as_on_one() {
    let plan = &OtherTowers::PLAN;
    assert!(plan.tower_training.is_some(), "every layer halves");
    let (a, b) = (gpu(plan), gpu(plan));
    let weights = he_weights(plan, 6);
    let (input, labels) = (random_input(plan, 3, 13), labels(plan, 3, 2));
    let mut one = Session::for_training(&a, plan, 3).unwrap();
    one.load_weights(&weights).unwrap();
    let mut two = TowerSession::for_training([&a, &b], plan, 3).unwrap();
    two.load_weights(&weights).unwrap();
    assert_eq!(
        train(&mut two, &input, &labels, 0, 2),
        train(&mut one, &input, &labels, 0, 2)
    );
}

#[test]
fn paper_net_training_step_at_batch_2_on_two_devices_matches_one() {
    let plan = &AlexNet::PLAN;
    let towers = plan
        .tower_training
        .as_ref()
        .expect("the paper's net trains as two towers");
    // The backward pass sends back, at least, the gradient of every tensor the forward pass
    // gathered whole (conv3's input, fc6's, fc7's, fc8's), and device 1's half of the logits'.
    let grads = towers
        .exchanges
        .iter()
        .filter(|e| matches!(e.tensor, Tensor::Grad(_)))
        .count();
    assert!(grads >= 2 * 4 + 1, "{:#?}", towers.exchanges);
    let (a, b) = (gpu(plan), gpu(plan));
    let weights = Weights::init(plan, 7);
    let (input, labels) = (random_input(plan, 2, 8), labels(plan, 2, 3));
    let mut one = Session::for_training(&a, plan, 2).unwrap();
    one.load_weights(&weights).unwrap();
    let want = train(&mut one, &input, &labels, 0, 1);
    drop(one);
    let mut two = TowerSession::for_training([&a, &b], plan, 2).unwrap();
    two.load_weights(&weights).unwrap();
    let got = train(&mut two, &input, &labels, 0, 1);
    assert_eq!(got, want, "two logical devices train as one, bit for bit");
}

#[test]
fn a_two_device_checkpoint_resumes_on_one_device_and_back() {
    let plan = &SmallTowers::PLAN;
    let (a, b) = (gpu(plan), gpu(plan));
    let (input, labels) = (random_input(plan, 4, 21), labels(plan, 4, 2));
    let start = he_weights(plan, 5);
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        epochs: 1,
        batch: 4,
        lr: 0.01,
        momentum: 0.9,
        decay: 0.0005,
        seed: 9,
        schedule: alexnet::runtime::train::Schedule::Steps(vec![]),
        flip: false,
        save_every: 1,
    };
    // Trains steps `first..first + steps` on `runner` from the checkpoint at `from` (or the
    // start), then saves to `to`.
    let leg = |runner: &mut dyn Runner,
               from: Option<&std::path::Path>,
               to: &std::path::Path,
               first: u32,
               steps: u32| {
        match from {
            Some(path) => {
                let c = Checkpoint::load(plan, path).unwrap();
                runner.load_weights(&c.weights).unwrap();
                runner.write_momentum(&c.momentum).unwrap();
            }
            None => runner.load_weights(&start).unwrap(),
        }
        let trained = train(runner, &input, &labels, first, steps);
        Checkpoint {
            weights: trained.weights.clone(),
            momentum: trained.momentum.clone(),
            state: TrainState::new(&options),
        }
        .save(plan, to)
        .unwrap();
        trained
    };
    let path = |name: &str| dir.path().join(name);
    let two = || TowerSession::for_training([&a, &b], plan, 4).unwrap();
    let one = || Session::for_training(&a, plan, 4).unwrap();
    // Four steps straight on two devices, twice: the same seed gives the same run.
    let straight = leg(&mut two(), None, &path("straight.safetensors"), 0, 4);
    assert_eq!(
        straight,
        leg(&mut two(), None, &path("again.safetensors"), 0, 4),
        "two runs with one seed differ"
    );
    // Two steps on two devices, two more on one device from the checkpoint.
    leg(&mut two(), None, &path("half.safetensors"), 0, 2);
    let resumed = leg(
        &mut one(),
        Some(&path("half.safetensors")),
        &path("one.safetensors"),
        2,
        2,
    );
    assert_eq!(
        resumed.weights, straight.weights,
        "a two-device checkpoint resumed on one device"
    );
    assert_eq!(resumed.momentum, straight.momentum);
    // And back: two steps on one device, two on two.
    leg(&mut one(), None, &path("half1.safetensors"), 0, 2);
    let back = leg(
        &mut two(),
        Some(&path("half1.safetensors")),
        &path("two.safetensors"),
        2,
        2,
    );
    assert_eq!(
        back.weights, straight.weights,
        "a one-device checkpoint resumed on two devices"
    );
}
