//! A session: one plan's buffers, pipelines and bind groups on one device, and its forward pass.
//!
//! Everything is created once in [`Session::new`]; `forward` only writes the input, records
//! the plan's dispatches and reads the logits back, so repeated inference allocates nothing on
//! the GPU. A batch larger than the session's capacity (at most the plan's micro-batch, which
//! keeps every binding under the device limit) runs as several chunks.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{Binding, NodeOp, Plan, Role, Uniforms};

/// A plan made ready to run on one device.
pub struct Session<'g> {
    gpu: &'g Gpu,
    plan: Plan,
    capacity: u32,
    activations: Vec<wgpu::Buffer>,
    params: Vec<Vec<wgpu::Buffer>>,
    uniform: wgpu::Buffer,
    /// Pipeline and bind group of each kernel of the plan this session runs, by kernel index.
    pipes: Vec<Option<(wgpu::ComputePipeline, wgpu::BindGroup)>>,
    staging: wgpu::Buffer,
    has_weights: bool,
    training: Option<Training>,
}

/// The buffers only training needs.
struct Training {
    param_grads: Vec<Vec<wgpu::Buffer>>,
    momentum: Vec<Vec<wgpu::Buffer>>,
    labels: wgpu::Buffer,
    loss: wgpu::Buffer,
}

/// Hyper-parameters and counters of one optimiser step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig {
    /// Learning rate ε.
    pub lr: f32,
    /// Momentum (the paper's 0.9).
    pub momentum: f32,
    /// Weight decay (the paper's 0.0005).
    pub decay: f32,
    /// Run seed: with `step`, it fixes the dropout masks.
    pub seed: u32,
    /// Step number (0 for the first step).
    pub step: u32,
    /// Whether dropout is applied (off makes a step comparable with any implementation).
    pub dropout: bool,
}

impl StepConfig {
    /// The paper's recipe: ε = 0.01, momentum 0.9, weight decay 0.0005, dropout on.
    pub fn paper(seed: u32, step: u32) -> StepConfig {
        StepConfig { lr: 0.01, momentum: 0.9, decay: 0.0005, seed, step, dropout: true }
    }
}

/// What one training step measured, before the update.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f64,
    /// Per-image loss.
    pub losses: Vec<f32>,
    /// Logits of the batch (with dropout as applied), image-major.
    pub logits: Vec<f32>,
}

fn storage(gpu: &Gpu, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC | extra,
        mapped_at_creation: false,
    })
}

/// One buffer per part of every parameter.
fn param_buffers(gpu: &Gpu, plan: &Plan, suffix: &str) -> Vec<Vec<wgpu::Buffer>> {
    plan.params
        .iter()
        .map(|p| {
            let label = format!("{}{suffix}", p.name);
            p.parts.iter().map(|part| storage(gpu, &label, u64::from(part.rows) * p.row_elems() * 4, wgpu::BufferUsages::empty())).collect()
        })
        .collect()
}

impl<'g> Session<'g> {
    /// Prepares `plan` to run batches of up to `capacity` images per GPU pass (inference).
    pub fn new(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        Self::open(gpu, plan, capacity, false)
    }

    /// Prepares `plan` for inference and training: gradients, momentum (zero), labels.
    pub fn for_training(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        Self::open(gpu, plan, capacity, true)
    }

    fn open(gpu: &'g Gpu, plan: &Plan, capacity: u32, train: bool) -> Result<Session<'g>> {
        let capacity = capacity.clamp(1, plan.micro_batch.max(1));
        let classes = u64::from(plan.classes());
        gpu.checked("creating buffers and pipelines", || {
            let per_batch = |a: &alexnet_plan::Activation| a.elems_per_image() * u64::from(capacity) * 4;
            let activations: Vec<wgpu::Buffer> =
                plan.activations.iter().map(|a| storage(gpu, &a.name, per_batch(a), wgpu::BufferUsages::empty())).collect();
            let params = param_buffers(gpu, plan, "");
            // Gradients of activations: only those some kernel binds.
            let grads: Vec<Option<wgpu::Buffer>> = plan
                .activations
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let used = train && plan.kernels.iter().any(|k| k.bindings.iter().any(|b| matches!(*b, Binding::Grad { index, .. } if index as usize == i)));
                    used.then(|| storage(gpu, &format!("d {}", a.name), per_batch(a), wgpu::BufferUsages::empty()))
                })
                .collect();
            let training = train.then(|| Training {
                param_grads: param_buffers(gpu, plan, " grad"),
                momentum: param_buffers(gpu, plan, " momentum"),
                labels: storage(gpu, "labels", u64::from(capacity) * 4, wgpu::BufferUsages::empty()),
                loss: storage(gpu, "loss", u64::from(capacity) * 4, wgpu::BufferUsages::empty()),
            });
            let uniform = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: Uniforms::SIZE as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: (2 * classes + 1) * u64::from(capacity) * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut pipes = Vec::new();
            for k in plan.kernels.iter() {
                if !train && k.role != Role::Forward {
                    pipes.push(None);
                    continue;
                }
                let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&k.name),
                    source: wgpu::ShaderSource::Wgsl(k.wgsl.clone()),
                });
                let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&k.name),
                    layout: None,
                    module: &module,
                    entry_point: Some(&k.entry_point),
                    compilation_options: Default::default(),
                    cache: None,
                });
                let t = training.as_ref();
                let entries: Vec<wgpu::BindGroupEntry> = k
                    .bindings
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let buffer = match *b {
                            Binding::Uniform => &uniform,
                            Binding::Activation { index, .. } => &activations[index as usize],
                            Binding::Param { index, part } | Binding::ParamMut { index, part } => &params[index as usize][part as usize],
                            Binding::Grad { index, .. } => grads[index as usize].as_ref().expect("allocated for every bound gradient"),
                            Binding::ParamGrad { index, part, .. } => &t.expect("training").param_grads[index as usize][part as usize],
                            Binding::Momentum { index, part } => &t.expect("training").momentum[index as usize][part as usize],
                            Binding::Labels => &t.expect("training").labels,
                            Binding::Loss => &t.expect("training").loss,
                        };
                        wgpu::BindGroupEntry { binding: i as u32, resource: buffer.as_entire_binding() }
                    })
                    .collect();
                let group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&k.name),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                pipes.push(Some((pipeline, group)));
            }
            Session { gpu, plan: plan.clone(), capacity, activations, params, uniform, pipes, staging, has_weights: false, training }
        })
    }

    /// Images per GPU pass.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Uploads `weights`; on a mismatch nothing on the GPU changes.
    pub fn load_weights(&mut self, weights: &Weights) -> Result<()> {
        weights.check(&self.plan)?;
        write_params(self.gpu, &self.plan, &weights.tensors, &self.params);
        self.has_weights = true;
        Ok(())
    }

    /// Checks a batch's size and input length against the plan.
    fn check_input(&self, input: &[f32], batch: usize) -> Result<()> {
        let max = self.plan.max_batch as usize;
        if batch == 0 || batch > max {
            return Err(Error::Batch { batch, max });
        }
        let per_image = self.plan.input_elems();
        if input.len() != batch * per_image {
            let [c, h, w] = self.plan.input;
            return Err(Error::InputLength { got: input.len(), expected: batch * per_image, batch, shape: format!("[{c}, {h}, {w}]") });
        }
        Ok(())
    }

    /// Runs the network on `batch` images (NCHW `f32`), returning logits and probabilities.
    pub fn forward(&mut self, input: &[f32], batch: usize) -> Result<Output> {
        if !self.has_weights {
            return Err(Error::NoWeights);
        }
        self.check_input(input, batch)?;
        let per_image = self.plan.input_elems();
        let classes = self.plan.classes() as usize;
        let mut logits = Vec::with_capacity(batch * classes);
        let mut probs = Vec::with_capacity(batch * classes);
        for (chunk_index, chunk) in input.chunks(self.capacity as usize * per_image).enumerate() {
            let n = chunk.len() / per_image;
            let (l, p) = self.run_chunk(chunk, n).map_err(|e| match e {
                Error::Gpu { what, message } => Error::Gpu { what: format!("{what} (chunk {chunk_index})"), message },
                other => other,
            })?;
            logits.extend(l);
            probs.extend(p);
        }
        Ok(Output { batch, classes, logits, probs })
    }

    fn run_chunk(&mut self, input: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let gpu = self.gpu;
        let classes = self.plan.classes() as u64;
        let half = classes * u64::from(self.capacity) * 4;
        let bytes = classes * n as u64 * 4;
        let index = gpu.checked("running the forward pass", || {
            gpu.queue.write_buffer(&self.activations[self.plan.input_activation as usize], 0, bytemuck::cast_slice(input));
            let uniforms = Uniforms { batch: n as u32, ..Uniforms::default() };
            gpu.queue.write_buffer(&self.uniform, 0, &uniforms.to_bytes());
            let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
            self.record(&mut encoder, n, |k| k.role == Role::Forward);
            encoder.copy_buffer_to_buffer(&self.activations[self.plan.logits_activation as usize], 0, &self.staging, 0, bytes);
            if let Some(p) = self.plan.probs_activation {
                encoder.copy_buffer_to_buffer(&self.activations[p as usize], 0, &self.staging, half, bytes);
            }
            gpu.queue.submit([encoder.finish()])
        })?;
        gpu.wait(index)?;
        let logits = self.read_staging(0, bytes)?;
        let probs = match self.plan.probs_activation {
            Some(_) => self.read_staging(half, bytes)?,
            None => softmax_rows(&logits, classes as usize),
        };
        Ok((logits, probs))
    }

    /// Records, in one compute pass, every kernel that `run` accepts, in plan order.
    fn record(&self, encoder: &mut wgpu::CommandEncoder, n: usize, run: impl Fn(&alexnet_plan::Kernel) -> bool) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("plan"), timestamp_writes: None });
        let max_x = self.plan.limits.max_compute_workgroups_per_dimension;
        for (k, pipe) in self.plan.kernels.iter().zip(&self.pipes) {
            let Some((pipeline, group)) = pipe.as_ref().filter(|_| run(k)) else { continue };
            let groups = k.workgroups(n as u64);
            let x = groups.min(u64::from(max_x)) as u32;
            let y = groups.div_ceil(u64::from(x)) as u32;
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// One optimiser step on a batch: forward (dropout as `config` says), softmax
    /// cross-entropy against `labels`, backward, and the paper's SGD update of every
    /// parameter. A batch larger than the capacity runs as micro-batches whose gradients add
    /// up before the one update, so the result does not depend on the capacity.
    pub fn train_step(&mut self, input: &[f32], labels: &[u32], batch: usize, config: &StepConfig) -> Result<StepOutput> {
        let training = self.training.as_ref().ok_or(Error::NotTraining)?;
        if !self.has_weights {
            return Err(Error::NoWeights);
        }
        self.check_input(input, batch)?;
        let per_image = self.plan.input_elems();
        if labels.len() != batch {
            return Err(Error::LabelCount { labels: labels.len(), batch });
        }
        let classes = self.plan.classes();
        if let Some((image, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::Label { image, label, classes });
        }
        let gpu = self.gpu;
        let cap = self.capacity as usize;
        let chunks = batch.div_ceil(cap);
        let (mut losses, mut logits) = (Vec::with_capacity(batch), Vec::with_capacity(batch * classes as usize));
        for c in 0..chunks {
            let (first, n) = (c * cap, cap.min(batch - c * cap));
            let last = c + 1 == chunks;
            let uniforms = Uniforms {
                batch: n as u32,
                step: config.step,
                seed: config.seed,
                image0: first as u32,
                accumulate: u32::from(c > 0),
                lr: config.lr,
                momentum: config.momentum,
                decay: config.decay,
                grad_scale: 1.0 / batch as f32,
            };
            let logit_bytes = u64::from(classes) * n as u64 * 4;
            let loss_at = 2 * u64::from(classes) * u64::from(self.capacity) * 4;
            let index = gpu.checked("running a training step", || {
                gpu.queue.write_buffer(&self.activations[self.plan.input_activation as usize], 0, bytemuck::cast_slice(&input[first * per_image..(first + n) * per_image]));
                gpu.queue.write_buffer(&training.labels, 0, bytemuck::cast_slice(&labels[first..first + n]));
                gpu.queue.write_buffer(&self.uniform, 0, &uniforms.to_bytes());
                let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
                let dropout = |k: &alexnet_plan::Kernel| matches!(self.plan.nodes[k.node as usize].op, NodeOp::Dropout(_));
                self.record(&mut encoder, n, |k| match k.role {
                    Role::Forward | Role::Loss => true,
                    // Without dropout, its masks are skipped forward and backward.
                    Role::Dropout | Role::Backward(_) => config.dropout || !dropout(k),
                    Role::Update => last,
                });
                encoder.copy_buffer_to_buffer(&self.activations[self.plan.logits_activation as usize], 0, &self.staging, 0, logit_bytes);
                encoder.copy_buffer_to_buffer(&training.loss, 0, &self.staging, loss_at, n as u64 * 4);
                gpu.queue.submit([encoder.finish()])
            })?;
            gpu.wait(index)?;
            logits.extend(self.read_staging(0, logit_bytes)?);
            losses.extend(self.read_staging(loss_at, n as u64 * 4)?);
        }
        let loss = losses.iter().map(|&l| f64::from(l)).sum::<f64>() / batch as f64;
        Ok(StepOutput { loss, losses, logits })
    }

    /// Times every kernel of one training step (or of a forward pass, for an inference
    /// session) on its own: each is submitted alone and waited for, so the times include a
    /// submission's overhead. The batch must fit the capacity. For finding hot kernels.
    pub fn profile(&mut self, input: &[f32], labels: &[u32], batch: usize) -> Result<Vec<(String, f64)>> {
        if batch == 0 || batch > self.capacity as usize || input.len() != batch * self.plan.input_elems() {
            return Err(Error::Batch { batch, max: self.capacity as usize });
        }
        let gpu = self.gpu;
        let uniforms = Uniforms { batch: batch as u32, lr: 0.0, momentum: 0.0, grad_scale: 1.0 / batch as f32, ..Uniforms::default() };
        gpu.queue.write_buffer(&self.activations[self.plan.input_activation as usize], 0, bytemuck::cast_slice(input));
        if let Some(t) = &self.training {
            gpu.queue.write_buffer(&t.labels, 0, bytemuck::cast_slice(labels));
        }
        gpu.queue.write_buffer(&self.uniform, 0, &uniforms.to_bytes());
        let mut times = Vec::new();
        for (i, k) in self.plan.kernels.iter().enumerate() {
            if self.pipes[i].is_none() {
                continue;
            }
            let start = std::time::Instant::now();
            let index = gpu.checked("profiling", || {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                self.record(&mut encoder, batch, |other| std::ptr::eq(other, k));
                gpu.queue.submit([encoder.finish()])
            })?;
            gpu.wait(index)?;
            times.push((k.name.to_string(), start.elapsed().as_secs_f64()));
        }
        Ok(times)
    }

    /// Copies a list of part buffers of every parameter back into whole tensors.
    fn read_params(&self, buffers: &[Vec<wgpu::Buffer>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(buffers.len());
        for (p, bufs) in self.plan.params.iter().zip(buffers) {
            let mut t = Vec::with_capacity(p.elems() as usize);
            for (part, buf) in p.parts.iter().zip(bufs) {
                t.extend(read_whole(self.gpu, buf, u64::from(part.rows) * p.row_elems() * 4)?);
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The weights now on the GPU.
    pub fn read_weights(&self) -> Result<Weights> {
        Ok(Weights { tensors: self.read_params(&self.params)? })
    }

    /// The optimiser's momentum, one tensor per parameter.
    pub fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
        self.read_params(&self.training.as_ref().ok_or(Error::NotTraining)?.momentum)
    }

    /// The gradients of the last training step, one tensor per parameter.
    pub fn read_param_grads(&self) -> Result<Vec<Vec<f32>>> {
        self.read_params(&self.training.as_ref().ok_or(Error::NotTraining)?.param_grads)
    }

    /// Sets the momentum (as read by [`Session::read_momentum`]); checked like weights.
    pub fn write_momentum(&mut self, momentum: &[Vec<f32>]) -> Result<()> {
        let training = self.training.as_ref().ok_or(Error::NotTraining)?;
        Weights { tensors: momentum.to_vec() }.check(&self.plan)?;
        write_params(self.gpu, &self.plan, momentum, &training.momentum);
        Ok(())
    }

    /// Maps `bytes` of the staging buffer at `offset` and copies them out.
    fn read_staging(&self, offset: u64, bytes: u64) -> Result<Vec<f32>> {
        read_buffer(self.gpu, &self.staging, offset, bytes)
    }

    /// Reads the first `batch` images of activation `index` after a forward pass (for tests
    /// and debugging; it allocates a staging buffer).
    pub fn read_activation(&self, index: u32, batch: usize) -> Result<Vec<f32>> {
        let a = &self.plan.activations[index as usize];
        read_whole(self.gpu, &self.activations[index as usize], a.elems_per_image() * batch as u64 * 4)
    }
}

/// Uploads whole tensors into their part buffers.
fn write_params(gpu: &Gpu, plan: &Plan, tensors: &[Vec<f32>], buffers: &[Vec<wgpu::Buffer>]) {
    for ((p, t), bufs) in plan.params.iter().zip(tensors).zip(buffers) {
        let row = p.row_elems() as usize;
        for (part, buf) in p.parts.iter().zip(bufs) {
            let start = part.start as usize * row;
            let end = start + part.rows as usize * row;
            gpu.queue.write_buffer(buf, 0, bytemuck::cast_slice(&t[start..end]));
        }
    }
}

/// Copies the first `bytes` of a storage buffer back through a temporary staging buffer.
fn read_whole(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    let submission = gpu.queue.submit([encoder.finish()]);
    gpu.wait(submission)?;
    read_buffer(gpu, &staging, 0, bytes)
}

/// Maps a MAP_READ buffer range, waits (bounded) and copies it out as `f32`.
fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<f32>> {
    let slice = buffer.slice(offset..offset + bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    match gpu.device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(gpu.timeout) }) {
        Ok(_) => {}
        Err(wgpu::PollError::Timeout) => return Err(Error::Timeout(gpu.timeout)),
        Err(e) => return Err(Error::Poll(e.to_string())),
    }
    match rx.try_recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Gpu { what: "reading results back".into(), message: e.to_string() }),
        Err(_) => return Err(Error::Timeout(gpu.timeout)),
    }
    let data = {
        let view = slice.get_mapped_range().map_err(|e| Error::Gpu { what: "reading results back".into(), message: e.to_string() })?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    buffer.unmap();
    Ok(data)
}
