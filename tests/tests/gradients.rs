//! The CPU reference's backward pass agrees with f64 central finite differences for every op
//! kind: strided, padded and grouped convolutions, ReLU, LRN (the paper's alpha), overlapping
//! max-pool, linear layers, dropout (with its training masks) and softmax folded into
//! cross-entropy.

use alexnet::models::AlexNetMini;
use alexnet::runtime::reference::{
    activations_train, backward, backward_train, cross_entropy, DropoutMasks,
};
use alexnet::{alexnet, Plan};
use rand::{Rng, SeedableRng};

alexnet! {
    GradNet {
        input: [2, 9, 8],
        max_batch: 4,
        c1: conv(4, k = 3, s = 2, p = 1, floor) -> relu -> lrn(n = 3, alpha = 0.5, beta = 0.75, k = 1) -> maxpool(k = 2, s = 1),
        c2: conv(6, k = 2, p = 1, groups = 2) -> maxpool(k = 3, s = 2, p = 1, floor) -> relu,
        fc1: linear(7) -> relu -> dropout(0.5),
        fc2: linear(3) -> softmax,
    }
}

fn random(plan: &Plan, batch: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let params = plan
        .params
        .iter()
        .map(|p| {
            let scale = if p.shape.len() > 1 {
                (3.0 / p.row_elems() as f64).sqrt()
            } else {
                0.2
            };
            (0..p.elems())
                .map(|_| rng.random_range(-scale..scale))
                .collect()
        })
        .collect();
    let input = (0..batch * plan.input_elems())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels = (0..batch)
        .map(|_| rng.random_range(0..plan.classes() as usize))
        .collect();
    (params, input, labels)
}

/// Dropout on, with fixed masks: the loss is then a smooth function of the parameters.
const MASKS: Option<DropoutMasks> = Some(DropoutMasks { seed: 3, step: 1 });

fn loss(plan: &Plan, params: &[Vec<f64>], input: &[f64], labels: &[usize]) -> f64 {
    let acts = activations_train(plan, params, input.to_vec(), labels.len(), MASKS);
    cross_entropy(
        &acts[plan.logits_activation as usize],
        labels,
        plan.classes() as usize,
    )
    .0
}

/// Checks `per_tensor` random coordinates of every parameter and of the input.
fn check(plan: &Plan, batch: usize, per_tensor: usize) {
    let (params, input, labels) = random(plan, batch, 5);
    let grads = backward_train(plan, &params, input.clone(), &labels, batch, MASKS);
    assert!((grads.loss - loss(plan, &params, &input, &labels)).abs() < 1e-12);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let h = 1e-6;
    let close = |fd: f64, an: f64, what: &str| {
        let err = (fd - an).abs() / fd.abs().max(an.abs()).max(1e-6);
        assert!(
            err < 1e-5,
            "{}: {what}: finite difference {fd:e}, backward {an:e}",
            plan.name
        );
    };
    for (t, p) in plan.params.iter().enumerate() {
        for _ in 0..per_tensor {
            let i = rng.random_range(0..params[t].len());
            let (mut up, mut down) = (params.clone(), params.clone());
            up[t][i] += h;
            down[t][i] -= h;
            let fd =
                (loss(plan, &up, &input, &labels) - loss(plan, &down, &input, &labels)) / (2.0 * h);
            close(fd, grads.params[t][i], &format!("{}[{i}]", p.name));
        }
    }
    for _ in 0..per_tensor {
        let i = rng.random_range(0..input.len());
        let (mut up, mut down) = (input.clone(), input.clone());
        up[i] += h;
        down[i] -= h;
        let fd =
            (loss(plan, &params, &up, &labels) - loss(plan, &params, &down, &labels)) / (2.0 * h);
        close(fd, grads.input[i], &format!("input[{i}]"));
    }
}

#[test]
fn every_op_matches_finite_differences() {
    check(&GradNet::PLAN, 3, 12);
}

#[test]
fn mini_matches_finite_differences() {
    check(&AlexNetMini::PLAN, 2, 2);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    alexnet! {
        Ties { input: [1, 2, 2], max_batch: 1, p: maxpool(k = 2, s = 2), fc: linear(2, bias = false) }
    }
    let plan = &Ties::PLAN;
    let params = vec![vec![1.0, -1.0]];
    let grads = backward(plan, &params, vec![0.5; 4], &[0], 1);
    // All four inputs tie: only the first in row-major order receives the gradient.
    assert!(
        grads.input[0] != 0.0 && grads.input[1..].iter().all(|&g| g == 0.0),
        "{:?}",
        grads.input
    );
}
