//! Every kernel of a plan checked on its own against the CPU reference: what a user runs when
//! a new driver (or a hand-edited shader) gives strange results.
//!
//! The reference ([`reference::trace`]) computes every tensor of one training step in f64. Each
//! kernel then runs alone on the device: the tensors it reads are set from the reference as
//! they stand just before it in the step, the tensors it only writes are filled with NaN (so
//! an element it fails to write shows), and what it wrote is compared with the reference just
//! after it. An error therefore names the kernel that made it, not the first kernel downstream
//! that read a wrong input. Kernels that write the same tensor in turn (a layer's weight parts,
//! the later ones adding to the first's input gradient) run and are judged together.

use crate::error::Result;
use crate::reference::{self, DropoutMasks, Trace};
use crate::session::{Mode, Session};
use crate::{Gpu, Weights};
use alexnet_plan::{Binding, Kernel, Plan, Role, Tensor, Uniforms};
use rand::{Rng, SeedableRng};

/// Relative error allowed for forward kernels (of the largest reference magnitude).
pub const FORWARD_TOLERANCE: f64 = 1e-4;
/// Relative error allowed for the loss, gradient and update kernels.
pub const BACKWARD_TOLERANCE: f64 = 1e-3;

/// How to run the self-test.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Images per check (small: the reference is plain f64 loops).
    pub batch: usize,
    /// Seed of the weights, input, labels and momentum.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { batch: 2, seed: 1 }
    }
}

/// The verdict on one kernel (or on kernels that write one tensor in turn).
#[derive(Clone, Debug)]
pub struct Check {
    /// The kernels, in the order they ran.
    pub kernels: Vec<String>,
    /// The program they were run from.
    pub mode: Mode,
    /// What they compute: forward, dropout, loss, backward or update.
    pub role: &'static str,
    /// Largest relative error over the tensors they wrote (infinite for NaN or infinity where
    /// the reference is finite).
    pub error: f64,
    /// The tensor with that error.
    pub worst: String,
    /// The error allowed.
    pub tolerance: f64,
}

impl Check {
    /// Whether the error is within the tolerance.
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }

    /// The kernels' names joined with ` + `.
    pub fn name(&self) -> String {
        self.kernels.join(" + ")
    }
}

/// Weights scaled by fan-in (He initialisation), so activations stay O(1) through deep nets
/// and a comparison is not dominated by biases, as it would be with the paper's N(0, 0.01²).
pub fn he_weights(plan: &Plan, seed: u64) -> Weights {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors = plan
        .params
        .iter()
        .map(|p| {
            let fan_in = if p.shape.len() > 1 {
                p.row_elems() as f32
            } else {
                1.0
            };
            let scale = if p.shape.len() > 1 {
                (6.0 / fan_in).sqrt()
            } else {
                0.1
            };
            (0..p.elems())
                .map(|_| rng.random_range(-scale..scale))
                .collect()
        })
        .collect();
    Weights { tensors }
}

/// A random input batch in [-1, 1).
pub fn random_input(plan: &Plan, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..batch * plan.input_elems())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

/// Largest difference relative to the reference's largest magnitude; infinite where `got`
/// is NaN or infinite and the reference is not.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let mut worst = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let g = f64::from(g);
        if !g.is_finite() && w.is_finite() {
            return f64::INFINITY;
        }
        worst = worst.max((g - w).abs());
    }
    worst / scale
}

/// The reference's tensors of one training step and the state before it.
struct Reference<'p> {
    plan: &'p Plan,
    params: Vec<Vec<f64>>,
    momentum: Vec<Vec<f64>>,
    labels: Vec<u32>,
    trace: Trace,
    grads: Vec<Vec<f64>>,
    lr: f64,
    mom: f64,
    decay: f64,
}

/// Where in the step a value is taken: before a kernel runs or after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    Before,
    After,
}

impl Reference<'_> {
    /// The slice of parameter `index` that part `part` holds.
    fn part(&self, values: &[f64], index: u32, part: u32) -> Vec<f64> {
        let p = &self.plan.params[index as usize];
        let row = p.row_elems() as usize;
        let part = p.parts[part as usize];
        values[part.start as usize * row..(part.start + part.rows) as usize * row].to_vec()
    }

    /// The momentum after the paper's update of parameter `index`.
    fn new_momentum(&self, index: u32) -> Vec<f64> {
        let i = index as usize;
        self.momentum[i]
            .iter()
            .zip(&self.params[i])
            .zip(&self.grads[i])
            .map(|((m, w), g)| self.mom * m - self.decay * self.lr * w - self.lr * g)
            .collect()
    }

    /// In-place nodes working on activation `index`, in node order.
    fn in_place(&self, index: u32) -> impl Iterator<Item = usize> + '_ {
        self.plan
            .nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.input == index && n.output == index)
            .map(|(j, _)| j)
    }

    /// The value of `tensor` before or after a kernel covering nodes `lo..=hi` in `role`.
    fn value(
        &self,
        tensor: Tensor,
        role: Role,
        lo: usize,
        hi: usize,
        when: When,
    ) -> Option<Vec<f64>> {
        Some(match tensor {
            Tensor::Activation(i) => {
                // Forward: an in-place node still ahead holds the value from before it.
                let forward = matches!(role, Role::Forward | Role::Dropout);
                let ahead = |j: &usize| {
                    if when == When::Before {
                        *j >= lo
                    } else {
                        *j > hi
                    }
                };
                match self.in_place(i).find(|j| forward && ahead(j)) {
                    Some(j) => self.trace.act_before[j].clone()?,
                    None => self.trace.activations[i as usize].clone(),
                }
            }
            Tensor::Grad(i) => {
                // Backward runs the nodes in reverse: an in-place node not yet reached holds
                // the gradient from before it.
                let ahead = |j: &usize| {
                    if when == When::Before {
                        *j <= hi
                    } else {
                        *j < lo
                    }
                };
                match self
                    .in_place(i)
                    .filter(|j| matches!(role, Role::Backward(_)) && ahead(j))
                    .last()
                {
                    Some(j) => self.trace.grad_before[j].clone()?,
                    None => self.trace.grads[i as usize].clone(),
                }
            }
            Tensor::Param { index, part } => {
                let w = &self.params[index as usize];
                match when {
                    When::Before => self.part(w, index, part),
                    When::After => {
                        let v = self.new_momentum(index);
                        let updated: Vec<f64> = w.iter().zip(&v).map(|(w, v)| w + v).collect();
                        self.part(&updated, index, part)
                    }
                }
            }
            Tensor::ParamGrad { index, part } => {
                self.part(&self.grads[index as usize], index, part)
            }
            Tensor::Momentum { index, part } => match when {
                When::Before => self.part(&self.momentum[index as usize], index, part),
                When::After => self.part(&self.new_momentum(index), index, part),
            },
            // Judged by the slice sum that adds them up.
            Tensor::Labels | Tensor::Partials { .. } => return None,
            Tensor::Loss => self.trace.losses.clone(),
        })
    }

    fn describe(&self, tensor: Tensor) -> String {
        let act = |i: u32| self.plan.activations[i as usize].name.to_string();
        let param = |i: u32, part: u32| {
            let p = &self.plan.params[i as usize];
            if p.parts.len() > 1 {
                format!("{} (part {part})", p.name)
            } else {
                p.name.to_string()
            }
        };
        match tensor {
            Tensor::Activation(i) => act(i),
            Tensor::Grad(i) => format!("∂{}", act(i)),
            Tensor::Param { index, part } => param(index, part),
            Tensor::ParamGrad { index, part } => format!("∂{}", param(index, part)),
            Tensor::Momentum { index, part } => format!("momentum of {}", param(index, part)),
            Tensor::Labels => "labels".into(),
            Tensor::Loss => "loss".into(),
            Tensor::Partials { index, part, .. } => {
                format!("partial ∂{}", param(index, part))
            }
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Forward => "forward",
        Role::Dropout => "dropout",
        Role::Loss => "loss",
        Role::Backward(_) => "backward",
        Role::Update => "update",
    }
}

/// Tensors a kernel writes that hold a batch's values (not state).
fn written(kernel: &Kernel) -> impl Iterator<Item = Tensor> + '_ {
    kernel
        .bindings
        .iter()
        .filter(|b| b.writes())
        .filter_map(Binding::tensor)
}

/// Checks every kernel that `plan`'s inference, inspect and training programs dispatch, in its
/// variant for `gpu`, calling `progress(done, total, name)` before each.
pub fn run(
    gpu: &Gpu,
    plan: &Plan,
    options: &Options,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<Check>> {
    // The programs this adapter's sessions run (software adapters have an inference program
    // of their own).
    let plan = &plan.for_target(gpu.target);
    let batch = options.batch.clamp(1, plan.micro_batch.max(1) as usize);
    let seed = options.seed;
    let weights = he_weights(plan, seed);
    let input = random_input(plan, batch, seed + 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 2);
    let labels: Vec<u32> = (0..batch)
        .map(|_| rng.random_range(0..plan.classes()))
        .collect();
    let momentum: Vec<Vec<f64>> = plan
        .params
        .iter()
        .map(|p| {
            (0..p.elems())
                .map(|_| rng.random_range(-0.01..0.01))
                .collect()
        })
        .collect();
    let params: Vec<Vec<f64>> = weights
        .tensors
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let masks = DropoutMasks {
        seed: seed as u32,
        step: 3,
    };
    let labels_usize: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let (gradients, trace) = reference::trace(
        plan,
        &params,
        input.iter().map(|&v| f64::from(v)).collect(),
        &labels_usize,
        batch,
        Some(masks),
    );
    let mut trace = trace;
    trace.grads[plan.input_activation as usize] = gradients.input;
    let reference = Reference {
        plan,
        params,
        momentum,
        labels,
        trace,
        grads: gradients.params,
        lr: 0.01,
        mom: 0.9,
        decay: 0.0005,
    };
    let uniforms = Uniforms {
        batch: batch as u32,
        step: masks.step,
        seed: masks.seed,
        image0: 0,
        accumulate: 0,
        lr: reference.lr as f32,
        momentum: reference.mom as f32,
        decay: reference.decay as f32,
        grad_scale: 1.0 / batch as f32,
        dropout: 1,
    };

    // Units: kernels that write one batch tensor in turn run together; each unit once, from
    // the first program that dispatches it.
    let modes = [Mode::Inference, Mode::Inspect, Mode::Training];
    let mut seen = vec![false; plan.kernels.len()];
    let mut units: Vec<(Mode, Vec<u32>)> = Vec::new();
    for mode in modes {
        let program = Session::program_of(plan, mode);
        let first = units.len();
        for k in program.dispatches() {
            let kernel = &plan.kernels[k as usize];
            // A kernel that reads a unit's scratch (a slice sum) is judged with it.
            let reads_scratch =
                |t: Tensor| t.is_scratch() && kernel.bindings.iter().any(|b| b.tensor() == Some(t));
            let shares = |u: &(Mode, Vec<u32>)| {
                u.1.iter().any(|&o| {
                    written(&plan.kernels[o as usize]).any(|t| {
                        (!t.is_state() && written(kernel).any(|w| w == t)) || reads_scratch(t)
                    })
                })
            };
            match units[first..].iter_mut().find(|u| shares(u)) {
                Some(unit) => unit.1.push(k),
                None => units.push((mode, vec![k])),
            }
        }
        units.retain(|(m, ks)| *m != mode || ks.iter().any(|&k| !seen[k as usize]));
        for (_, ks) in &units[first.min(units.len())..] {
            for &k in ks {
                seen[k as usize] = true;
            }
        }
    }

    let total = units.len();
    let mut checks = Vec::with_capacity(total);
    let mut done = 0;
    for mode in modes {
        let mine: Vec<&Vec<u32>> = units
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, ks)| ks)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let session = Session::open(gpu, plan, batch as u32, mode)?;
        let plan = session.plan();
        for ks in mine {
            let kernels: Vec<&Kernel> = ks.iter().map(|&k| &plan.kernels[k as usize]).collect();
            let names: Vec<String> = kernels.iter().map(|k| k.name.to_string()).collect();
            progress(done, total, &names.join(" + "));
            done += 1;
            let covered: Vec<usize> = kernels.iter().flat_map(|k| applied(plan, k)).collect();
            let (lo, hi) = (
                covered.iter().copied().min().unwrap_or(0),
                covered.iter().copied().max().unwrap_or(0),
            );
            let role = kernels[0].role;
            let tolerance = if kernels.iter().all(|k| k.role == Role::Forward) {
                FORWARD_TOLERANCE
            } else {
                BACKWARD_TOLERANCE
            };
            // Inputs: whatever a kernel may read that no earlier kernel of the unit wrote.
            let mut written_so_far: Vec<Tensor> = Vec::new();
            let mut outputs: Vec<Tensor> = Vec::new();
            for k in &kernels {
                for b in k.bindings.iter() {
                    let Some(t) = b.tensor() else { continue };
                    if !written_so_far.contains(&t) {
                        let bytes: Vec<u8> = if t == Tensor::Labels {
                            bytemuck::cast_slice(&reference.labels).to_vec()
                        } else if b.writes() && !reads_on_entry(plan, k, b) {
                            let elems = plan.tensor_size(t).at(batch as u64) as usize / 4;
                            bytemuck::cast_slice(&vec![f32::NAN; elems]).to_vec()
                        } else {
                            let v = reference
                                .value(t, k.role, lo, hi, When::Before)
                                .unwrap_or_default();
                            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                            bytemuck::cast_slice(&v).to_vec()
                        };
                        session.write_tensor(t, &bytes)?;
                    }
                    if b.writes() {
                        written_so_far.push(t);
                        if !outputs.contains(&t) {
                            outputs.push(t);
                        }
                    }
                }
            }
            session.run_kernels(ks, batch, &uniforms)?;
            let (mut error, mut worst) = (0.0f64, String::new());
            for t in outputs.into_iter().filter(|t| !t.is_scratch()) {
                let got = session.read_tensor(t, batch)?;
                let want = reference
                    .value(t, role, lo, hi, When::After)
                    .unwrap_or_default();
                let e = rel_err(&got, &want);
                if e > error || worst.is_empty() || e.is_nan() {
                    error = if e.is_nan() { f64::INFINITY } else { e };
                    worst = reference.describe(t);
                }
            }
            checks.push(Check {
                kernels: names,
                mode,
                role: role_name(role),
                error,
                worst,
                tolerance,
            });
        }
    }
    Ok(checks)
}

/// The nodes kernel `k` applies. A fused forward kernel lists a dropout before its linear
/// layer (torchvision's) among the nodes it covers, but the dropout is a kernel of its own
/// when training and the identity otherwise: the fused kernel reads its output.
fn applied<'k>(plan: &'k Plan, k: &'k Kernel) -> impl Iterator<Item = usize> + 'k {
    let in_place = |n: &u32| plan.nodes[*n as usize].input == plan.nodes[*n as usize].output;
    let leading = if k.role == Role::Forward && !k.covers.iter().all(in_place) {
        k.covers.iter().take_while(|n| in_place(n)).count()
    } else {
        0
    };
    k.covers[leading..].iter().map(|&n| n as usize)
}

/// Whether kernel `k` reads binding `b` on entry although it writes it: read-modify-write
/// bindings, an in-place node's activation and gradient, and gradients a later weight part
/// adds to.
fn reads_on_entry(plan: &Plan, k: &Kernel, b: &Binding) -> bool {
    if b.reads() {
        return true;
    }
    let in_place = |index: u32| {
        applied(plan, k).any(|n| plan.nodes[n].input == index && plan.nodes[n].output == index)
    };
    match *b {
        Binding::Activation { index, .. } | Binding::Grad { index, .. } => in_place(index),
        _ => false,
    }
}
