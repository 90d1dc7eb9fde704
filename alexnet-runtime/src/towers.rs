//! Inference and training over two devices: a `devices: 2` plan's towers (`Plan::towers`,
//! `Plan::tower_training`), one session per device, meeting at the plan's exchanges.
//!
//! Each device runs its own program on its own queue: its tower's conv and linear kernels
//! with the weight parts it holds, and the channel-wise kernels its output channels need.
//! Between two exchanges each device's dispatches go in one submission, both submitted
//! before either waits, so the devices compute at the same time; an exchange moves the
//! same byte range of every image's slice of a tensor from one device's buffer to the
//! other's through a mapped staging buffer ([`Link`]). The devices may be two adapters or
//! one adapter opened twice (two logical devices): what runs is the one-device inference
//! program's kernels on the same data, so the logits equal one device's bit for bit when
//! both devices are of the same kind. A training step runs the one-device training
//! program's kernels the same way (each weight part's gradient, momentum and update on its
//! device), so its weights, momentum and gradients equal one device's; weights and momentum
//! read back whole, and a checkpoint written from two devices resumes on one and back.

use crate::error::{Error, Result};
use crate::exchange::{Link, Region};
use crate::gpu::Gpu;
use crate::session::{read_range, runs_in_step, Mode, Session, StepConfig, StepOutput};
use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{Kernel, Plan, Role, Step, Tensor, TowerExchange};
use std::time::{Duration, Instant};

/// A plan's towers made ready to run on two devices.
pub struct TowerSession<'g> {
    sessions: [Session<'g>; 2],
    /// The staging link out of each device.
    links: [Link; 2],
    exchanges: Vec<TowerExchange>,
    /// Where each exchange sits in each device's program.
    marks: [Vec<usize>; 2],
    stats: ExchangeStats,
}

/// What the exchanges of the last forward pass moved and how long they took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Bytes moved from device 0 to 1 and from 1 to 0.
    pub bytes: [u64; 2],
    /// Wall time of the transfers once the sender's work is done: the copy into staging,
    /// the mapping, and the writes into the receiver's queue.
    pub time: Duration,
}

impl<'g> TowerSession<'g> {
    /// Prepares `plan`'s two-device program on `gpus` (device 0, device 1) for batches of up
    /// to `capacity` images per pass.
    pub fn new(gpus: [&'g Gpu; 2], plan: &Plan, capacity: u32) -> Result<TowerSession<'g>> {
        Self::open(gpus, plan, capacity, Mode::Inference)
    }

    /// Prepares `plan`'s two-device training step (and forward passes with its kernels):
    /// each device's weight parts, their gradients and momentum (zero).
    pub fn for_training(
        gpus: [&'g Gpu; 2],
        plan: &Plan,
        capacity: u32,
    ) -> Result<TowerSession<'g>> {
        Self::open(gpus, plan, capacity, Mode::Training)
    }

    fn open(
        gpus: [&'g Gpu; 2],
        plan: &Plan,
        capacity: u32,
        mode: Mode,
    ) -> Result<TowerSession<'g>> {
        let towers = Session::towers_of(plan, mode).ok_or_else(|| Error::NoTowers {
            plan: plan.name.to_string(),
            training: mode == Mode::Training,
        })?;
        let sessions = [
            Session::open_tower(gpus[0], plan, capacity, 0, mode)?,
            Session::open_tower(gpus[1], plan, capacity, 1, mode)?,
        ];
        let capacity = u64::from(sessions[0].capacity());
        let exchanges = towers.exchanges.to_vec();
        let mark = |d: usize| -> Vec<usize> {
            let steps = &towers.programs[d].steps;
            let mut marks = vec![0; exchanges.len()];
            for (at, s) in steps.iter().enumerate() {
                if let Step::Exchange { index, .. } = *s {
                    marks[index as usize] = at;
                }
            }
            marks
        };
        let marks = [mark(0), mark(1)];
        let largest = |from: u32| {
            exchanges
                .iter()
                .filter(|e| e.from == from)
                .map(|e| e.bytes * capacity)
                .max()
                .unwrap_or(4)
        };
        let links = [
            Link::new(gpus[0], largest(0))?,
            Link::new(gpus[1], largest(1))?,
        ];
        Ok(TowerSession {
            sessions,
            links,
            exchanges,
            marks,
            stats: ExchangeStats::default(),
        })
    }

    /// The plan, every kernel in its form for device 0's adapter.
    pub fn plan(&self) -> &Plan {
        self.sessions[0].plan()
    }

    /// Images per pass.
    pub fn capacity(&self) -> u32 {
        self.sessions[0].capacity()
    }

    /// Bytes of GPU memory each device's buffers take.
    pub fn memory(&self) -> [u64; 2] {
        [self.sessions[0].memory(), self.sessions[1].memory()]
    }

    /// What the exchanges of the last forward pass moved, and their time.
    pub fn exchange_stats(&self) -> ExchangeStats {
        self.stats
    }

    /// Uploads each device's weight parts of `weights`.
    pub fn load_weights(&mut self, weights: &Weights) -> Result<()> {
        for s in &mut self.sessions {
            s.load_weights(weights)?;
        }
        Ok(())
    }

    /// Runs the network on `batch` images (NCHW `f32`) over both devices.
    pub fn forward(&mut self, input: &[f32], batch: usize) -> Result<Output> {
        if !self.sessions.iter().all(Session::has_weights) {
            return Err(Error::NoWeights);
        }
        let plan = self.sessions[0].plan();
        let max = plan.max_batch as usize;
        if batch == 0 || batch > max {
            return Err(Error::Batch { batch, max });
        }
        let per_image = plan.input_elems();
        if input.len() != batch * per_image {
            let [c, h, w] = plan.input;
            return Err(Error::InputLength {
                got: input.len(),
                expected: batch * per_image,
                batch,
                shape: format!("[{c}, {h}, {w}]"),
            });
        }
        let classes = plan.classes() as usize;
        self.stats = ExchangeStats::default();
        let (mut logits, mut probs) = (
            Vec::with_capacity(batch * classes),
            Vec::with_capacity(batch * classes),
        );
        for chunk in input.chunks(self.capacity() as usize * per_image) {
            let (l, p) = self.run_chunk(chunk, chunk.len() / per_image)?;
            logits.extend(l);
            probs.extend(p);
        }
        Ok(Output {
            batch,
            classes,
            logits,
            probs,
        })
    }

    /// Logits and probabilities of `n` images.
    fn run_chunk(&mut self, input: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.upload(input, None)?;
        for s in &self.sessions {
            s.gpu()
                .checked("writing the uniforms", || s.write_forward_uniforms(n))?;
        }
        // A training program's forward pass: its backward exchanges move gradients nothing
        // computed, so they are skipped.
        self.run(
            n,
            |k| k.role == Role::Forward,
            |e| matches!(e.tensor, Tensor::Activation(_)),
        )?;
        let s = &self.sessions[0];
        let logits = s.read_tensor(Tensor::Activation(s.plan().logits_activation), n)?;
        let probs = match s
            .plan()
            .probs_activation
            .filter(|&p| s.slot(Tensor::Activation(p)).is_some())
        {
            Some(p) => s.read_tensor(Tensor::Activation(p), n)?,
            None => softmax_rows(&logits, s.plan().classes() as usize),
        };
        Ok((logits, probs))
    }

    /// Writes a chunk's input on both devices and its labels on device 0.
    fn upload(&self, input: &[f32], labels: Option<&[u32]>) -> Result<()> {
        let plan = self.sessions[0].plan();
        let input_tensor = Tensor::Activation(plan.input_activation);
        for (d, s) in self.sessions.iter().enumerate() {
            let (buf, at, _) = s.held(input_tensor)?;
            s.gpu().checked("uploading the input", || {
                s.gpu()
                    .queue
                    .write_buffer(buf, at, bytemuck::cast_slice(input))
            })?;
            if let (0, Some(labels)) = (d, labels) {
                let (buf, at, _) = s.held(Tensor::Labels)?;
                s.gpu().checked("uploading the labels", || {
                    s.gpu()
                        .queue
                        .write_buffer(buf, at, bytemuck::cast_slice(labels))
                })?;
            }
        }
        Ok(())
    }

    /// Runs both programs over `n` images: the kernels `run` accepts, and the exchanges
    /// `exchange` accepts, each device's steps between two exchanges in one submission. When
    /// it returns, both devices are done.
    fn run(
        &mut self,
        n: usize,
        run: impl Fn(&Kernel) -> bool,
        exchange: impl Fn(&TowerExchange) -> bool,
    ) -> Result<()> {
        let mut cursor = [0usize; 2];
        for i in 0..self.exchanges.len() {
            for d in 0..2 {
                let end = self.marks[d][i];
                self.submit(d, cursor[d], end, n, &run)?;
                cursor[d] = end + 1;
            }
            if exchange(&self.exchanges[i]) {
                self.exchange(i, n)?;
            }
        }
        for d in 0..2 {
            let end = self.sessions[d].program().steps.len();
            self.submit(d, cursor[d], end, n, &run)?;
        }
        // Device 1's queue may still run what follows its last exchange (its updates, in a
        // training step): wait for it, so the pass is over when this returns.
        let other = self.sessions[1].gpu();
        let last = other.checked("finishing device 1's tower", || other.queue.submit([]))?;
        other.wait(last)
    }

    /// One optimiser step on a batch over both devices, as [`Session::train_step`] runs it
    /// on one: micro-batches of up to the capacity whose gradients add up before the update.
    pub fn train_step(
        &mut self,
        input: &[f32],
        labels: &[u32],
        batch: usize,
        config: &StepConfig,
    ) -> Result<StepOutput> {
        self.sessions[0].check_step(input, labels, batch)?;
        if !self.sessions[1].has_weights() {
            return Err(Error::NoWeights);
        }
        let per_image = self.plan().input_elems();
        let classes = self.plan().classes() as usize;
        let cap = self.capacity() as usize;
        let chunks = batch.div_ceil(cap);
        self.stats = ExchangeStats::default();
        let (mut losses, mut logits) = (
            Vec::with_capacity(batch),
            Vec::with_capacity(batch * classes),
        );
        for c in 0..chunks {
            let (first, n) = (c * cap, cap.min(batch - c * cap));
            let last = c + 1 == chunks;
            self.upload(
                &input[first * per_image..(first + n) * per_image],
                Some(&labels[first..first + n]),
            )?;
            let uniforms = Session::step_uniforms(config, n, first, c, batch);
            for s in &self.sessions {
                s.gpu()
                    .checked("writing the uniforms", || s.write_uniforms(&uniforms))?;
            }
            let nodes = self.plan().nodes.clone();
            self.run(n, |k| runs_in_step(&nodes, k, config, last), |_| true)?;
            let s = &self.sessions[0];
            logits.extend(s.read_tensor(Tensor::Activation(s.plan().logits_activation), n)?);
            losses.extend(s.read_tensor(Tensor::Loss, n)?);
        }
        let loss = losses.iter().map(|&l| f64::from(l)).sum::<f64>() / batch as f64;
        Ok(StepOutput {
            loss,
            losses,
            logits,
        })
    }
    /// Submits device `d`'s steps `from..to` over `n` images (nothing when there are none).
    fn submit(
        &self,
        d: usize,
        from: usize,
        to: usize,
        n: usize,
        run: &impl Fn(&Kernel) -> bool,
    ) -> Result<()> {
        let s = &self.sessions[d];
        let steps = &s.program().steps[from..to];
        if !steps
            .iter()
            .any(|st| matches!(*st, Step::Dispatch(k) if run(&s.plan().kernels[k as usize])))
        {
            return Ok(());
        }
        let gpu = s.gpu();
        gpu.checked(&format!("running device {d}'s tower"), || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tower"),
                });
            s.record_steps(&mut encoder, steps, n, run);
            gpu.queue.submit([encoder.finish()]);
        })
    }

    /// Reads every part of every parameter-shaped tensor (`which(index, part)`) from the
    /// device that holds it, into whole tensors.
    fn read_params(&self, which: impl Fn(u32, u32) -> Tensor) -> Result<Vec<Vec<f32>>> {
        let plan = self.plan();
        let mut out = Vec::with_capacity(plan.params.len());
        for (index, p) in plan.params.iter().enumerate() {
            let mut t = Vec::with_capacity(p.elems() as usize);
            for part in 0..p.parts.len() as u32 {
                let tensor = which(index as u32, part);
                let (s, (buf, at, bytes)) = self
                    .sessions
                    .iter()
                    .find_map(|s| Some((s, s.slot(tensor)?)))
                    .ok_or_else(|| Error::NotKept {
                        tensor: format!("{tensor:?}"),
                    })?;
                t.extend(read_range(s.gpu(), buf, at, bytes)?);
            }
            out.push(t);
        }
        Ok(out)
    }

    fn training_only(&self) -> Result<()> {
        if self.sessions[0].mode() == Mode::Training {
            Ok(())
        } else {
            Err(Error::NotTraining)
        }
    }

    /// The weights now on the two devices, whole.
    pub fn read_weights(&self) -> Result<Weights> {
        Ok(Weights {
            tensors: self.read_params(|index, part| Tensor::Param { index, part })?,
        })
    }

    /// The optimiser's momentum, one whole tensor per parameter.
    pub fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
        self.training_only()?;
        self.read_params(|index, part| Tensor::Momentum { index, part })
    }

    /// The gradients of the last training step, one whole tensor per parameter.
    pub fn read_param_grads(&self) -> Result<Vec<Vec<f32>>> {
        self.training_only()?;
        self.read_params(|index, part| Tensor::ParamGrad { index, part })
    }

    /// Sets the momentum (whole tensors, as [`TowerSession::read_momentum`] gives them): each
    /// device takes its parts.
    pub fn write_momentum(&mut self, momentum: &[Vec<f32>]) -> Result<()> {
        for s in &mut self.sessions {
            s.write_momentum(momentum)?;
        }
        Ok(())
    }

    /// Moves exchange `i`'s range of every image of the chunk.
    fn exchange(&mut self, i: usize, n: usize) -> Result<()> {
        let e = self.exchanges[i];
        let (from, to) = (
            &self.sessions[e.from as usize],
            &self.sessions[e.to as usize],
        );
        let missing = || Error::NotKept {
            tensor: format!("{:?} (exchange {i})", e.tensor),
        };
        let (src, src_at, _) = from.slot(e.tensor).ok_or_else(missing)?;
        let (dst, dst_at, _) = to.slot(e.tensor).ok_or_else(missing)?;
        let per_image = from.plan().tensor_size(e.tensor).per_image;
        let regions: Vec<Region> = (0..n as u64)
            .map(|img| Region {
                src_offset: src_at + img * per_image + e.offset,
                dst_offset: dst_at + img * per_image + e.offset,
                bytes: e.bytes,
            })
            .collect();
        // The sender's work first, so the time below is the transfer's own.
        let idle = from.gpu().checked("waiting for the sending tower", || {
            from.gpu().queue.submit([])
        })?;
        from.gpu().wait(idle)?;
        let start = Instant::now();
        let moved =
            self.links[e.from as usize].transfer(from.gpu(), src, to.gpu(), dst, &regions)?;
        self.stats.time += start.elapsed();
        self.stats.bytes[e.from as usize] += moved;
        Ok(())
    }
}
