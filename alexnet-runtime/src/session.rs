//! A session: one program of a plan, its buffers, pipelines and bind groups on one device.
//!
//! Everything is created once in [`Session::new`]: the buffers exactly as the program's memory
//! plan lists them (sized for the session's capacity), and every binding as the byte range of
//! its tensor's placement. `forward` only writes the input, records the program's steps and
//! reads the logits back, so repeated inference allocates nothing on the GPU. A batch larger
//! than the session's capacity (at most the plan's micro-batch, which keeps every binding
//! under the device limit) runs as several chunks.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{Kernel, NodeOp, Plan, Program, Role, Step, Tensor, Uniforms};

/// Which program of the plan a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fused forward kernels, buffers reused across layers.
    Inference,
    /// Training steps (and forward passes with the training kernels).
    Training,
    /// One kernel per op, every activation kept for reading back.
    Inspect,
}

/// A plan made ready to run on one device.
pub struct Session<'g> {
    gpu: &'g Gpu,
    plan: Plan,
    mode: Mode,
    capacity: u32,
    /// The program's buffers, in its order.
    buffers: Vec<wgpu::Buffer>,
    uniform: wgpu::Buffer,
    /// Pipeline and bind group of each kernel of the plan this session runs, by kernel index.
    pipes: Vec<Option<(wgpu::ComputePipeline, wgpu::BindGroup)>>,
    staging: wgpu::Buffer,
    has_weights: bool,
    /// The tower device whose program of [`Plan::towers`] this session runs, if any.
    tower: Option<u32>,
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
        StepConfig {
            lr: 0.01,
            momentum: 0.9,
            decay: 0.0005,
            seed,
            step,
            dropout: true,
        }
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

impl<'g> Session<'g> {
    /// Prepares `plan` to run batches of up to `capacity` images per GPU pass (inference).
    pub fn new(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        Self::open(gpu, plan, capacity, Mode::Inference)
    }

    /// Prepares `plan` for inference and training: gradients, momentum (zero), labels.
    pub fn for_training(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        Self::open(gpu, plan, capacity, Mode::Training)
    }

    /// Prepares `plan`'s inspect program: one kernel per op and every activation in its own
    /// buffer, so [`Session::read_activation`] can read any of them after a forward pass.
    pub fn inspect(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        Self::open(gpu, plan, capacity, Mode::Inspect)
    }

    /// The program a mode runs.
    pub(crate) fn program_of(plan: &Plan, mode: Mode) -> &Program {
        match mode {
            Mode::Inference => &plan.inference,
            Mode::Training => &plan.training,
            Mode::Inspect => &plan.inspect,
        }
    }

    pub(crate) fn program(&self) -> &Program {
        match self
            .tower
            .and_then(|d| Some(&Self::towers_of(&self.plan, self.mode)?.programs[d as usize]))
        {
            Some(program) => program,
            None => Self::program_of(&self.plan, self.mode),
        }
    }

    /// The two-device programs of a mode: [`Plan::towers`] or [`Plan::tower_training`].
    pub(crate) fn towers_of(plan: &Plan, mode: Mode) -> Option<&alexnet_plan::Towers> {
        match mode {
            Mode::Inference => plan.towers.as_ref(),
            Mode::Training => plan.tower_training.as_ref(),
            Mode::Inspect => None,
        }
    }

    /// Opens `plan`'s program for `mode`, allocating exactly its buffers at `capacity` images.
    pub fn open(gpu: &'g Gpu, plan: &Plan, capacity: u32, mode: Mode) -> Result<Session<'g>> {
        Self::open_program(gpu, plan, capacity, mode, None)
    }

    /// Opens tower `device`'s program of a two-device plan on `gpu`: inference, or training.
    pub(crate) fn open_tower(
        gpu: &'g Gpu,
        plan: &Plan,
        capacity: u32,
        device: u32,
        mode: Mode,
    ) -> Result<Session<'g>> {
        Self::open_program(gpu, plan, capacity, mode, Some(device))
    }

    fn open_program(
        gpu: &'g Gpu,
        plan: &Plan,
        capacity: u32,
        mode: Mode,
        tower: Option<u32>,
    ) -> Result<Session<'g>> {
        // Every kernel in its variant for this adapter's kind.
        let plan = &plan.for_target(gpu.target);
        let capacity = capacity.clamp(1, plan.micro_batch.max(1));
        let classes = u64::from(plan.classes());
        let program = match (tower, Self::towers_of(plan, mode)) {
            (Some(d), Some(towers)) => &towers.programs[d as usize],
            (Some(_), None) => {
                return Err(Error::NoTowers {
                    plan: plan.name.to_string(),
                    training: mode == Mode::Training,
                })
            }
            (None, _) => Self::program_of(plan, mode),
        };
        // Each buffer and each kernel in an error scope of its own, so that an out-of-memory
        // error names the buffer and a shader the driver rejects names its kernel.
        let mut buffers = Vec::with_capacity(program.buffers.len());
        for b in program.buffers.iter() {
            let size = b.size.at(u64::from(capacity)).max(16).next_multiple_of(4);
            buffers.push(gpu.checked(
                &format!("creating buffer `{}` ({size} bytes)", b.name),
                || {
                    gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&b.name),
                        size,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                },
            )?);
        }
        let (uniform, staging) =
            gpu.checked("creating the uniform and read-back buffers", || {
                let uniform = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: Uniforms::SIZE as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: staging_size(classes, readback_rows(plan, capacity, mode)),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (uniform, staging)
            })?;
        let mut pipes: Vec<Option<(wgpu::ComputePipeline, wgpu::BindGroup)>> =
            plan.kernels.iter().map(|_| None).collect();
        for k in program.dispatches() {
            let kernel = &plan.kernels[k as usize];
            pipes[k as usize] = Some(gpu.checked(
                &format!("creating kernel `{}`", kernel.name),
                || {
                    let module = gpu
                        .device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(&kernel.name),
                            source: wgpu::ShaderSource::Wgsl(kernel.wgsl.clone()),
                        });
                    let pipeline =
                        gpu.device
                            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                                label: Some(&kernel.name),
                                layout: None,
                                module: &module,
                                entry_point: Some(&kernel.entry_point),
                                compilation_options: Default::default(),
                                cache: None,
                            });
                    let entries: Vec<wgpu::BindGroupEntry> = kernel
                        .bindings
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let resource = match b.tensor() {
                                None => uniform.as_entire_binding(),
                                Some(t) => {
                                    let (buffer, offset, size) =
                                        slot(program, &buffers, t, capacity)
                                            .expect("the plan places every bound tensor");
                                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer,
                                        offset,
                                        size: wgpu::BufferSize::new(size.max(4)),
                                    })
                                }
                            };
                            wgpu::BindGroupEntry {
                                binding: i as u32,
                                resource,
                            }
                        })
                        .collect();
                    let group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&kernel.name),
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &entries,
                    });
                    (pipeline, group)
                },
            )?);
        }
        Ok(Session {
            gpu,
            plan: plan.clone(),
            mode,
            capacity,
            buffers,
            uniform,
            pipes,
            staging,
            has_weights: false,
            tower,
        })
    }

    /// The buffer, byte offset and byte size of `tensor` in this session.
    pub(crate) fn slot(&self, tensor: Tensor) -> Option<(&wgpu::Buffer, u64, u64)> {
        slot(self.program(), &self.buffers, tensor, self.capacity)
    }

    /// Like [`Session::slot`], for tensors every session of its mode holds.
    pub(crate) fn held(&self, tensor: Tensor) -> Result<(&wgpu::Buffer, u64, u64)> {
        self.slot(tensor).ok_or_else(|| Error::NotKept {
            tensor: format!("{tensor:?}"),
        })
    }

    /// Bytes of GPU memory the session's buffers take.
    pub fn memory(&self) -> u64 {
        self.buffers.iter().map(|b| b.size()).sum()
    }

    /// The plan this session runs, every kernel in its variant for the adapter.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Images per GPU pass.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Uploads `weights`; on a mismatch nothing on the GPU changes.
    pub fn load_weights(&mut self, weights: &Weights) -> Result<()> {
        weights.check(&self.plan)?;
        self.write_params(&weights.tensors, |index, part| Tensor::Param {
            index,
            part,
        })?;
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
            return Err(Error::InputLength {
                got: input.len(),
                expected: batch * per_image,
                batch,
                shape: format!("[{c}, {h}, {w}]"),
            });
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
            let (l, p) = self
                .run_chunk(chunk, n)
                .map_err(|e| self.blame(e, n, &format!(" (chunk {chunk_index})")))?;
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

    fn run_chunk(&mut self, input: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let gpu = self.gpu;
        let classes = self.plan.classes() as u64;
        let half = staging_half(classes, self.capacity);
        let bytes = classes * n as u64 * 4;
        let (input_buf, input_at, _) = self.held(Tensor::Activation(self.plan.input_activation))?;
        let (logits_buf, logits_at, _) =
            self.held(Tensor::Activation(self.plan.logits_activation))?;
        let probs = self
            .plan
            .probs_activation
            .map(|p| self.held(Tensor::Activation(p)))
            .transpose()?;
        let index = gpu.checked("running the forward pass", || {
            gpu.queue
                .write_buffer(input_buf, input_at, bytemuck::cast_slice(input));
            let uniforms = Uniforms {
                batch: n as u32,
                ..Uniforms::default()
            };
            gpu.queue
                .write_buffer(&self.uniform, 0, &uniforms.to_bytes());
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("forward"),
                });
            self.record(&mut encoder, n, |k| k.role == Role::Forward);
            encoder.copy_buffer_to_buffer(logits_buf, logits_at, &self.staging, 0, bytes);
            if let Some((probs_buf, probs_at, _)) = probs {
                encoder.copy_buffer_to_buffer(probs_buf, probs_at, &self.staging, half, bytes);
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

    /// Records the program's steps whose kernels `run` accepts, in order, in one compute pass.
    fn record(&self, encoder: &mut wgpu::CommandEncoder, n: usize, run: impl Fn(&Kernel) -> bool) {
        self.record_steps(encoder, &self.program().steps, n, run);
    }

    /// Records the dispatches of `steps` whose kernels `run` accepts in one compute pass;
    /// exchanges are the caller's (see `towers`).
    pub(crate) fn record_steps(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        steps: &[Step],
        n: usize,
        run: impl Fn(&Kernel) -> bool,
    ) {
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for step in steps {
            let Step::Dispatch(k) = *step else { continue };
            if self.pipes[k as usize].is_none() || !run(&self.plan.kernels[k as usize]) {
                continue;
            }
            let pass = pass.get_or_insert_with(|| {
                encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("plan"),
                        timestamp_writes: None,
                    })
                    .forget_lifetime()
            });
            self.dispatch(pass, k, n);
        }
    }

    /// Writes the uniforms of a forward pass over `n` images.
    pub(crate) fn write_forward_uniforms(&self, n: usize) {
        self.write_uniforms(&Uniforms {
            batch: n as u32,
            ..Uniforms::default()
        });
    }

    pub(crate) fn write_uniforms(&self, uniforms: &Uniforms) {
        self.gpu
            .queue
            .write_buffer(&self.uniform, 0, &uniforms.to_bytes());
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    pub(crate) fn has_weights(&self) -> bool {
        self.has_weights
    }

    /// The uniforms of micro-batch `c` of `chunks`, `first` images into a step over `batch`.
    pub(crate) fn step_uniforms(
        config: &StepConfig,
        n: usize,
        first: usize,
        c: usize,
        batch: usize,
    ) -> Uniforms {
        Uniforms {
            batch: n as u32,
            step: config.step,
            seed: config.seed,
            image0: first as u32,
            accumulate: u32::from(c > 0),
            lr: config.lr,
            momentum: config.momentum,
            decay: config.decay,
            grad_scale: 1.0 / batch as f32,
            dropout: u32::from(config.dropout),
        }
    }

    /// Checks a training batch: the session's mode, weights, input and labels.
    pub(crate) fn check_step(&self, input: &[f32], labels: &[u32], batch: usize) -> Result<()> {
        if self.mode != Mode::Training {
            return Err(Error::NotTraining);
        }
        if !self.has_weights {
            return Err(Error::NoWeights);
        }
        self.check_input(input, batch)?;
        if labels.len() != batch {
            return Err(Error::LabelCount {
                labels: labels.len(),
                batch,
            });
        }
        let classes = self.plan.classes();
        if let Some((image, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::Label {
                image,
                label,
                classes,
            });
        }
        Ok(())
    }

    /// Adds to a GPU error from running the program which kernel the device rejects: each
    /// dispatch is recorded alone in an error scope of its own (never submitted) until one
    /// fails validation. Other errors pass unchanged.
    fn blame(&self, error: Error, n: usize, context: &str) -> Error {
        let Error::Gpu { what, message } = error else {
            return error;
        };
        let device = &self.gpu.device;
        for k in self.program().dispatches() {
            let name = &self.plan.kernels[k as usize].name;
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let mut encoder = device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(name) });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(name),
                    timestamp_writes: None,
                });
                self.dispatch(&mut pass, k, n);
            }
            drop(encoder.finish());
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Error::Gpu {
                    what: format!("{what}{context}, in kernel `{name}`"),
                    message: e.to_string(),
                };
            }
        }
        Error::Gpu {
            what: format!("{what}{context}"),
            message,
        }
    }

    /// Records kernel `k` over `n` images: a 2-D dispatch once the workgroups pass the
    /// per-dimension limit.
    fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, k: u32, n: usize) {
        let Some((pipeline, group)) = self.pipes[k as usize].as_ref() else {
            return;
        };
        let groups = self.plan.kernels[k as usize].workgroups(n as u64);
        let x = groups.min(u64::from(
            self.plan.limits.max_compute_workgroups_per_dimension,
        )) as u32;
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(x, groups.div_ceil(u64::from(x)) as u32, 1);
    }

    /// One optimiser step on a batch: forward (dropout as `config` says), softmax
    /// cross-entropy against `labels`, backward, and the paper's SGD update of every
    /// parameter. A batch larger than the capacity runs as micro-batches whose gradients add
    /// up before the one update, so the result does not depend on the capacity.
    pub fn train_step(
        &mut self,
        input: &[f32],
        labels: &[u32],
        batch: usize,
        config: &StepConfig,
    ) -> Result<StepOutput> {
        self.check_step(input, labels, batch)?;
        let per_image = self.plan.input_elems();
        let classes = self.plan.classes();
        let gpu = self.gpu;
        let cap = self.capacity as usize;
        let chunks = batch.div_ceil(cap);
        // Every micro-batch is submitted behind the previous one without waiting (the queue
        // applies each one's input, label and uniform writes in order, after the work before
        // it) and copies its logits and losses to its own rows of the read-back buffer, so a
        // step waits once and maps once.
        let loss_at = staging_half(
            u64::from(classes),
            readback_rows(&self.plan, self.capacity, self.mode),
        );
        let mut submitted = None;
        for c in 0..chunks {
            let (first, n) = (c * cap, cap.min(batch - c * cap));
            let last = c + 1 == chunks;
            let uniforms = Self::step_uniforms(config, n, first, c, batch);
            let logit_bytes = u64::from(classes) * n as u64 * 4;
            let (input_buf, input_at, _) =
                self.held(Tensor::Activation(self.plan.input_activation))?;
            let (labels_buf, labels_at, _) = self.held(Tensor::Labels)?;
            let (logits_buf, logits_at, _) =
                self.held(Tensor::Activation(self.plan.logits_activation))?;
            let (loss_buf, loss_buf_at, _) = self.held(Tensor::Loss)?;
            let index = gpu
                .checked("running a training step", || {
                    gpu.queue.write_buffer(
                        input_buf,
                        input_at,
                        bytemuck::cast_slice(&input[first * per_image..(first + n) * per_image]),
                    );
                    gpu.queue.write_buffer(
                        labels_buf,
                        labels_at,
                        bytemuck::cast_slice(&labels[first..first + n]),
                    );
                    gpu.queue
                        .write_buffer(&self.uniform, 0, &uniforms.to_bytes());
                    let mut encoder =
                        gpu.device
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                label: Some("train step"),
                            });
                    self.record(&mut encoder, n, |k| {
                        runs_in_step(&self.plan.nodes, k, config, last)
                    });
                    encoder.copy_buffer_to_buffer(
                        logits_buf,
                        logits_at,
                        &self.staging,
                        u64::from(classes) * first as u64 * 4,
                        logit_bytes,
                    );
                    encoder.copy_buffer_to_buffer(
                        loss_buf,
                        loss_buf_at,
                        &self.staging,
                        loss_at + first as u64 * 4,
                        n as u64 * 4,
                    );
                    gpu.queue.submit([encoder.finish()])
                })
                .map_err(|e| self.blame(e, n, &format!(" (micro-batch {c})")))?;
            submitted = Some(index);
        }
        if let Some(index) = submitted {
            gpu.wait(index)?;
        }
        let logits = self.read_staging(0, u64::from(classes) * batch as u64 * 4)?;
        let losses = self.read_staging(loss_at, batch as u64 * 4)?;
        let loss = losses.iter().map(|&l| f64::from(l)).sum::<f64>() / batch as f64;
        Ok(StepOutput {
            loss,
            losses,
            logits,
        })
    }

    /// Times every kernel of the session's program on its own, over a batch of any size the
    /// plan accepts (a batch above the capacity runs chunk by chunk and the chunks' times add
    /// up). With the adapter's timestamp queries the times are the GPU's; otherwise each
    /// kernel is submitted alone and timed by the wall clock, submission overhead included.
    /// For finding hot kernels; updates run with a zero learning rate.
    pub fn profile(&mut self, input: &[f32], labels: &[u32], batch: usize) -> Result<Profile> {
        self.check_input(input, batch)?;
        let gpu = self.gpu;
        let per_image = self.plan.input_elems();
        let timer = Timer::new(gpu);
        let dispatches: Vec<u32> = self.program().dispatches().collect();
        let mut seconds = vec![0.0; dispatches.len()];
        let cap = self.capacity as usize;
        for first in (0..batch).step_by(cap) {
            let n = cap.min(batch - first);
            let uniforms = Uniforms {
                batch: n as u32,
                lr: 0.0,
                momentum: 0.0,
                grad_scale: 1.0 / batch as f32,
                ..Uniforms::default()
            };
            let (input_buf, input_at, _) =
                self.held(Tensor::Activation(self.plan.input_activation))?;
            gpu.queue.write_buffer(
                input_buf,
                input_at,
                bytemuck::cast_slice(&input[first * per_image..(first + n) * per_image]),
            );
            if let (Some((labels_buf, labels_at, _)), Some(l)) =
                (self.slot(Tensor::Labels), labels.get(first..first + n))
            {
                gpu.queue
                    .write_buffer(labels_buf, labels_at, bytemuck::cast_slice(l));
            }
            gpu.queue
                .write_buffer(&self.uniform, 0, &uniforms.to_bytes());
            for (slot, &k) in seconds.iter_mut().zip(&dispatches) {
                *slot += timer.time(gpu, |pass| self.dispatch(pass, k, n))?;
            }
        }
        Ok(Profile {
            kernels: dispatches.into_iter().zip(seconds).collect(),
            gpu_timestamps: timer.queries.is_some(),
        })
    }

    /// Reads every part of every parameter-shaped tensor (`which(index, part)`) back into
    /// whole tensors.
    fn read_params(&self, which: impl Fn(u32, u32) -> Tensor) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(self.plan.params.len());
        for (index, p) in self.plan.params.iter().enumerate() {
            let mut t = Vec::with_capacity(p.elems() as usize);
            for part in 0..p.parts.len() as u32 {
                let (buf, at, bytes) = self.held(which(index as u32, part))?;
                t.extend(read_range(self.gpu, buf, at, bytes)?);
            }
            out.push(t);
        }
        Ok(out)
    }

    /// Uploads whole tensors into the parts of a parameter-shaped tensor.
    fn write_params(&self, tensors: &[Vec<f32>], which: impl Fn(u32, u32) -> Tensor) -> Result<()> {
        for (index, (p, t)) in self.plan.params.iter().zip(tensors).enumerate() {
            let row = p.row_elems() as usize;
            for (i, part) in p.parts.iter().enumerate() {
                // A tower's program holds only the parts of its device.
                let tensor = which(index as u32, i as u32);
                let (buf, at, _) = match self.tower {
                    Some(_) => match self.slot(tensor) {
                        Some(slot) => slot,
                        None => continue,
                    },
                    None => self.held(tensor)?,
                };
                let start = part.start as usize * row;
                let end = start + part.rows as usize * row;
                self.gpu
                    .queue
                    .write_buffer(buf, at, bytemuck::cast_slice(&t[start..end]));
            }
        }
        Ok(())
    }

    /// The weights now on the GPU.
    pub fn read_weights(&self) -> Result<Weights> {
        Ok(Weights {
            tensors: self.read_params(|index, part| Tensor::Param { index, part })?,
        })
    }

    /// The optimiser's momentum, one tensor per parameter.
    pub fn read_momentum(&self) -> Result<Vec<Vec<f32>>> {
        self.training_only()?;
        self.read_params(|index, part| Tensor::Momentum { index, part })
    }

    /// The gradients of the last training step, one tensor per parameter.
    pub fn read_param_grads(&self) -> Result<Vec<Vec<f32>>> {
        self.training_only()?;
        self.read_params(|index, part| Tensor::ParamGrad { index, part })
    }

    /// Sets the momentum (as read by [`Session::read_momentum`]); checked like weights.
    pub fn write_momentum(&mut self, momentum: &[Vec<f32>]) -> Result<()> {
        self.training_only()?;
        Weights {
            tensors: momentum.to_vec(),
        }
        .check(&self.plan)?;
        self.write_params(momentum, |index, part| Tensor::Momentum { index, part })
    }

    /// Overwrites `tensor` (all of it, for the session's capacity) with `bytes`.
    pub(crate) fn write_tensor(&self, tensor: Tensor, bytes: &[u8]) -> Result<()> {
        let (buf, at, size) = self.held(tensor)?;
        let bytes = &bytes[..bytes.len().min(size as usize)];
        self.gpu.queue.write_buffer(buf, at, bytes);
        Ok(())
    }

    /// Reads `tensor` for `batch` images.
    pub(crate) fn read_tensor(&self, tensor: Tensor, batch: usize) -> Result<Vec<f32>> {
        let (buf, at, _) = self.held(tensor)?;
        read_range(
            self.gpu,
            buf,
            at,
            self.plan.tensor_size(tensor).at(batch as u64),
        )
    }

    /// Runs `kernels` alone, in order, over `batch` images with `uniforms`, and waits; an
    /// error names the kernels.
    pub(crate) fn run_kernels(
        &self,
        kernels: &[u32],
        batch: usize,
        uniforms: &Uniforms,
    ) -> Result<()> {
        let gpu = self.gpu;
        let names: Vec<&str> = kernels
            .iter()
            .map(|&k| &*self.plan.kernels[k as usize].name)
            .collect();
        let index = gpu.checked(&format!("running kernel `{}`", names.join("` + `")), || {
            gpu.queue
                .write_buffer(&self.uniform, 0, &uniforms.to_bytes());
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("kernels"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&names.join(" + ")),
                    timestamp_writes: None,
                });
                for &k in kernels {
                    self.dispatch(&mut pass, k, batch);
                }
            }
            gpu.queue.submit([encoder.finish()])
        })?;
        gpu.wait(index)
    }

    fn training_only(&self) -> Result<()> {
        if self.mode == Mode::Training {
            Ok(())
        } else {
            Err(Error::NotTraining)
        }
    }

    /// Maps `bytes` of the staging buffer at `offset` and copies them out.
    fn read_staging(&self, offset: u64, bytes: u64) -> Result<Vec<f32>> {
        read_buffer(self.gpu, &self.staging, offset, bytes)
    }

    /// Reads the first `batch` images of activation `index` after a forward pass (for tests
    /// and debugging; it allocates a staging buffer). Every activation is kept only by an
    /// [`Session::inspect`] session; others keep the input and the outputs.
    pub fn read_activation(&self, index: u32, batch: usize) -> Result<Vec<f32>> {
        let a = self
            .plan
            .activations
            .get(index as usize)
            .ok_or_else(|| Error::NotKept {
                tensor: format!("activation {index}"),
            })?;
        let keeps_all = self.mode == Mode::Inspect;
        let is_io = index == self.plan.input_activation
            || index == self.plan.logits_activation
            || Some(index) == self.plan.probs_activation;
        if !keeps_all && !is_io {
            return Err(Error::NotKept {
                tensor: a.name.to_string(),
            });
        }
        let (buf, at, _) = self.held(Tensor::Activation(index))?;
        read_range(self.gpu, buf, at, a.elems_per_image() * batch as u64 * 4)
    }
}

/// Whether a training step's micro-batch runs `k`: updates only after the last micro-batch
/// (`last`); without dropout its masks are skipped forward and backward.
pub(crate) fn runs_in_step(
    nodes: &[alexnet_plan::Node],
    k: &Kernel,
    config: &StepConfig,
    last: bool,
) -> bool {
    let dropout = matches!(nodes[k.node as usize].op, NodeOp::Dropout(_));
    match k.role {
        Role::Forward | Role::Loss => true,
        Role::Dropout | Role::Backward(_) => config.dropout || !dropout,
        Role::Update => last,
    }
}

/// The buffer, offset and size of `tensor` in `program` at `capacity` images.
fn slot<'b>(
    program: &Program,
    buffers: &'b [wgpu::Buffer],
    tensor: Tensor,
    capacity: u32,
) -> Option<(&'b wgpu::Buffer, u64, u64)> {
    let p = program.placement(tensor)?;
    let batch = u64::from(capacity);
    Some((
        &buffers[p.buffer as usize],
        p.offset.at(batch),
        p.size.at(batch),
    ))
}

/// Bytes of each of the two logits-sized slots of the read-back staging buffer (logits, then
/// probabilities or per-image losses), rounded up so that every slot starts where wgpu can map
/// it (`MAP_ALIGNMENT`; an odd class count at an odd capacity would not).
fn staging_half(classes: u64, capacity: u32) -> u64 {
    (classes * u64::from(capacity) * 4).next_multiple_of(wgpu::MAP_ALIGNMENT)
}

/// Bytes of a read-back buffer for `rows` images: logits in the first half, probabilities
/// (a forward pass) or losses (a training step) in the second.
fn staging_size(classes: u64, rows: u32) -> u64 {
    2 * staging_half(classes, rows)
}

/// Images whose results the read-back buffer holds: a forward pass reads each chunk back
/// before the next, a training step reads the whole batch (every micro-batch) at once.
fn readback_rows(plan: &Plan, capacity: u32, mode: Mode) -> u32 {
    match mode {
        Mode::Training => capacity.max(plan.max_batch),
        Mode::Inference | Mode::Inspect => capacity,
    }
}

/// Copies `bytes` of a storage buffer at `offset` back as `f32`.
pub(crate) fn read_range(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<Vec<f32>> {
    Ok(bytemuck::pod_collect_to_vec(
        &gpu.read_bytes(buffer, offset, bytes)?,
    ))
}

/// Maps a MAP_READ buffer range and copies it out as `f32`.
fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<f32>> {
    Ok(bytemuck::pod_collect_to_vec(
        &gpu.map_read(buffer, offset, bytes)?,
    ))
}

/// Per-kernel times of one batch, from [`Session::profile`].
#[derive(Clone, Debug)]
pub struct Profile {
    /// Kernel index in the plan and seconds, in program order.
    pub kernels: Vec<(u32, f64)>,
    /// Whether the times come from GPU timestamps (else from the wall clock).
    pub gpu_timestamps: bool,
}

/// Times one compute pass at a time: by GPU timestamps when the device has them.
struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
}

impl Timer {
    fn new(gpu: &Gpu) -> Timer {
        let queries = gpu
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps readback"),
                    size: 16,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (set, resolve, read)
            });
        Timer { queries }
    }

    /// Seconds that the pass `record` fills takes.
    fn time(&self, gpu: &Gpu, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let start = std::time::Instant::now();
        let index = gpu.checked("profiling", || {
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let timestamp_writes =
                    self.queries
                        .as_ref()
                        .map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(0),
                            end_of_pass_write_index: Some(1),
                        });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("profile"),
                    timestamp_writes,
                });
                record(&mut pass);
            }
            if let Some((set, resolve, read)) = &self.queries {
                encoder.resolve_query_set(set, 0..2, resolve, 0);
                encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
            }
            gpu.queue.submit([encoder.finish()])
        })?;
        gpu.wait(index)?;
        let wall = start.elapsed().as_secs_f64();
        let Some((_, _, read)) = &self.queries else {
            return Ok(wall);
        };
        let words = read_buffer(gpu, read, 0, 16)?;
        let ticks: Vec<u64> = words
            .chunks(2)
            .map(|w| u64::from(w[0].to_bits()) | (u64::from(w[1].to_bits()) << 32))
            .collect();
        Ok(ticks[1].saturating_sub(ticks[0]) as f64
            * f64::from(gpu.queue.get_timestamp_period())
            * 1e-9)
    }
}
