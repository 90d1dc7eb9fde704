//! A session: one plan's buffers, pipelines and bind groups on one device, and its forward pass.
//!
//! Everything is created once in [`Session::new`]; `forward` only writes the input, records
//! the plan's dispatches and reads the logits back, so repeated inference allocates nothing on
//! the GPU. A batch larger than the session's capacity (at most the plan's micro-batch, which
//! keeps every binding under the device limit) runs as several chunks.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::{softmax_rows, Output, Weights};
use alexnet_plan::{Binding, Plan};
use wgpu::util::DeviceExt;

/// A plan made ready to run on one device.
pub struct Session<'g> {
    gpu: &'g Gpu,
    plan: Plan,
    capacity: u32,
    activations: Vec<wgpu::Buffer>,
    params: Vec<Vec<wgpu::Buffer>>,
    uniform: wgpu::Buffer,
    pipelines: Vec<wgpu::ComputePipeline>,
    bind_groups: Vec<wgpu::BindGroup>,
    staging: wgpu::Buffer,
    has_weights: bool,
}

fn storage(gpu: &Gpu, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC | extra,
        mapped_at_creation: false,
    })
}

impl<'g> Session<'g> {
    /// Prepares `plan` to run batches of up to `capacity` images per GPU pass.
    pub fn new(gpu: &'g Gpu, plan: &Plan, capacity: u32) -> Result<Session<'g>> {
        let capacity = capacity.clamp(1, plan.micro_batch.max(1));
        let classes = u64::from(plan.classes());
        gpu.checked("creating buffers and pipelines", || {
            let activations: Vec<wgpu::Buffer> = plan
                .activations
                .iter()
                .map(|a| storage(gpu, &a.name, a.elems_per_image() * u64::from(capacity) * 4, wgpu::BufferUsages::empty()))
                .collect();
            let params: Vec<Vec<wgpu::Buffer>> = plan
                .params
                .iter()
                .map(|p| p.parts.iter().map(|part| storage(gpu, &p.name, u64::from(part.rows) * p.row_elems() * 4, wgpu::BufferUsages::empty())).collect())
                .collect();
            let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &[0u8; 16],
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: 2 * classes * u64::from(capacity) * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut pipelines = Vec::new();
            let mut bind_groups = Vec::new();
            for k in plan.kernels.iter() {
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
                let entries: Vec<wgpu::BindGroupEntry> = k
                    .bindings
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource: match *b {
                            Binding::Uniform => uniform.as_entire_binding(),
                            Binding::Activation { index, .. } => activations[index as usize].as_entire_binding(),
                            Binding::Param { index, part } => params[index as usize][part as usize].as_entire_binding(),
                        },
                    })
                    .collect();
                bind_groups.push(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&k.name),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                }));
                pipelines.push(pipeline);
            }
            Session { gpu, plan: plan.clone(), capacity, activations, params, uniform, pipelines, bind_groups, staging, has_weights: false }
        })
    }

    /// Images per GPU pass.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Uploads `weights`; on a mismatch nothing on the GPU changes.
    pub fn load_weights(&mut self, weights: &Weights) -> Result<()> {
        weights.check(&self.plan)?;
        for ((p, t), bufs) in self.plan.params.iter().zip(&weights.tensors).zip(&self.params) {
            let row = p.row_elems() as usize;
            for (part, buf) in p.parts.iter().zip(bufs) {
                let start = part.start as usize * row;
                let end = start + part.rows as usize * row;
                self.gpu.queue.write_buffer(buf, 0, bytemuck::cast_slice(&t[start..end]));
            }
        }
        self.has_weights = true;
        Ok(())
    }

    /// Runs the network on `batch` images (NCHW `f32`), returning logits and probabilities.
    pub fn forward(&mut self, input: &[f32], batch: usize) -> Result<Output> {
        if !self.has_weights {
            return Err(Error::NoWeights);
        }
        let max = self.plan.max_batch as usize;
        if batch == 0 || batch > max {
            return Err(Error::Batch { batch, max });
        }
        let per_image = self.plan.input_elems();
        if input.len() != batch * per_image {
            let [c, h, w] = self.plan.input;
            return Err(Error::InputLength { got: input.len(), expected: batch * per_image, batch, shape: format!("[{c}, {h}, {w}]") });
        }
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
            gpu.queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(&[n as u32, 0, 0, 0]));
            let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
                let max_x = self.plan.limits.max_compute_workgroups_per_dimension;
                for ((k, pipeline), group) in self.plan.kernels.iter().zip(&self.pipelines).zip(&self.bind_groups) {
                    let groups = k.workgroups(n as u64);
                    let x = groups.min(u64::from(max_x)) as u32;
                    let y = groups.div_ceil(u64::from(x)) as u32;
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, group, &[]);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
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

    /// Maps `bytes` of the staging buffer at `offset` and copies them out.
    fn read_staging(&self, offset: u64, bytes: u64) -> Result<Vec<f32>> {
        read_buffer(self.gpu, &self.staging, offset, bytes)
    }

    /// Reads the first `batch` images of activation `index` after a forward pass (for tests
    /// and debugging; it allocates a staging buffer).
    pub fn read_activation(&self, index: u32, batch: usize) -> Result<Vec<f32>> {
        let a = &self.plan.activations[index as usize];
        let bytes = a.elems_per_image() * batch as u64 * 4;
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("activation readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.activations[index as usize], 0, &staging, 0, bytes);
        let submission = self.gpu.queue.submit([encoder.finish()]);
        self.gpu.wait(submission)?;
        read_buffer(self.gpu, &staging, 0, bytes)
    }
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
