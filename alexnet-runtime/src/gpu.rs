//! Adapter choice and device creation.
//!
//! Backends come from `GpuOptions::backend` or `ALEXNET_BACKEND` (vulkan, gl, metal, dx12),
//! the adapter from `GpuOptions::adapter` or `ALEXNET_ADAPTER` (an index into
//! `alexnet devices`). Without either, a real GPU is preferred over a software one, and
//! Vulkan (lavapipe) over GL (llvmpipe). The device is opened with exactly the limits a plan
//! needs, re-checked against what the adapter offers, and with subgroup operations where it
//! has them. Kernels run in their variant for the adapter's kind ([`Target::CpuSubgroup`] on
//! software adapters with 8-lane subgroups, else [`Target::Cpu`] there, [`Target::Gpu`]
//! elsewhere) unless `GpuOptions::variant` or `ALEXNET_VARIANT` (gpu, cpu, cpu-sg8) says
//! otherwise; [`Gpu::tune`] replaces that guess by a measurement (see [`crate::tune`]).

use crate::error::{Error, Result};
use alexnet_plan::{Plan, Target};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backend name: vulkan, gl, metal or dx12; `None` reads `ALEXNET_BACKEND`, else all.
    pub backend: Option<String>,
    /// Index into the adapters of that backend; `None` reads `ALEXNET_ADAPTER`, else the best.
    pub adapter: Option<usize>,
    /// Kernel variants to run; `None` reads `ALEXNET_VARIANT`, else follows the adapter's kind.
    pub variant: Option<Target>,
}

/// What `alexnet devices` shows of one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

/// An open device and its queue.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// How long any wait on the GPU may last.
    pub timeout: Duration,
    /// The kernel variants sessions on this device run.
    pub target: Target,
    /// Whether `target` was asked for (`GpuOptions::variant`, `ALEXNET_VARIANT`), so that
    /// [`Gpu::tune`] keeps it.
    pub forced: bool,
    /// Why the device was lost, once it has been (set by wgpu's device-lost callback).
    lost: Arc<Mutex<Option<String>>>,
}

/// The variant `chosen` or `ALEXNET_VARIANT` names, and whether one did; else the guess for
/// an adapter of kind `device_type`.
fn target_for(chosen: Option<Target>, device_type: wgpu::DeviceType) -> Result<(Target, bool)> {
    if let Some(t) = chosen {
        return Ok((t, true));
    }
    match std::env::var("ALEXNET_VARIANT")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(v) => Target::parse(&v)
            .map(|t| (t, true))
            .ok_or(Error::UnknownVariant(v)),
        None => Ok((
            if device_type == wgpu::DeviceType::Cpu {
                Target::Cpu
            } else {
                Target::Gpu
            },
            false,
        )),
    }
}

fn parse_backends(name: Option<&str>) -> Result<wgpu::Backends> {
    Ok(match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("all") => {
            wgpu::Backends::VULKAN
                | wgpu::Backends::GL
                | wgpu::Backends::METAL
                | wgpu::Backends::DX12
        }
        Some("vulkan") => wgpu::Backends::VULKAN,
        Some("gl") | Some("gles") | Some("opengl") => wgpu::Backends::GL,
        Some("metal") => wgpu::Backends::METAL,
        Some("dx12") => wgpu::Backends::DX12,
        Some(other) => return Err(Error::UnknownBackend(other.to_string())),
    })
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, backend)
}

/// Adapters of the chosen backends, best first (the order `alexnet devices` numbers).
/// With no backend chosen and `all` false, GL is tried only when no Vulkan, Metal or DX12
/// adapter exists, which keeps EGL (and its warnings) out of the common case.
fn adapters(options: &GpuOptions, all: bool) -> Result<(Vec<wgpu::Adapter>, wgpu::Backends)> {
    let env_backend = std::env::var("ALEXNET_BACKEND").ok();
    let chosen = options
        .backend
        .as_deref()
        .or(env_backend.as_deref())
        .filter(|b| !b.is_empty());
    let backends = parse_backends(chosen)?;
    let enumerate = |backends: wgpu::Backends| {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        // WGPU_VALIDATION and WGPU_DEBUG override the build's defaults (the Vulkan validation
        // run of the tests turns debug info off; see scripts/test.sh).
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);
        let mut list = pollster::block_on(instance.enumerate_adapters(backends));
        list.sort_by_key(|a| rank(&a.get_info()));
        list
    };
    if chosen.is_none() && !all {
        let primary = enumerate(backends - wgpu::Backends::GL);
        if !primary.is_empty() {
            return Ok((primary, backends - wgpu::Backends::GL));
        }
    }
    Ok((enumerate(backends), backends))
}

/// Describes every adapter the options can reach.
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<AdapterSummary>> {
    let (list, _) = adapters(options, true)?;
    Ok(list
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let l = a.limits();
            AdapterSummary {
                index,
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_buffer_size: l.max_buffer_size,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            }
        })
        .collect())
}

/// Largest binding a session of `plan` with `capacity` images per chunk makes, in bytes.
pub fn largest_binding(plan: &Plan, capacity: u32) -> u64 {
    let acts = plan
        .activations
        .iter()
        .map(|a| a.elems_per_image() * u64::from(capacity) * 4);
    let params = plan.params.iter().flat_map(|p| {
        p.parts
            .iter()
            .map(move |part| u64::from(part.rows) * p.row_elems() * 4)
    });
    acts.chain(params).max().unwrap_or(4).max(16)
}

/// Whether `device` (of `adapter`) can run `target`'s kernels.
fn runs(adapter: &wgpu::Adapter, device: &wgpu::Device, target: Target) -> bool {
    lacks(adapter, device, target).is_none()
}

/// What `device` lacks to run `target`'s kernels (for the error of a forced variant), if
/// anything.
fn lacks(adapter: &wgpu::Adapter, device: &wgpu::Device, target: Target) -> Option<String> {
    let features = device.features();
    if target.wide_loads() && !features.contains(wgpu::Features::SHADER_INT64) {
        return Some(
            "its kernels read 64-bit words; the adapter has no 64-bit integers".to_string(),
        );
    }
    let lanes = target.subgroup_lanes()?;
    let info = adapter.get_info();
    if !features.contains(wgpu::Features::SUBGROUP) {
        return Some("the adapter has no subgroup operations".to_string());
    }
    (info.subgroup_min_size != lanes || info.subgroup_max_size != lanes).then(|| {
        format!(
            "its kernels need {lanes}-lane subgroups; the adapter's are {}..={} lanes",
            info.subgroup_min_size, info.subgroup_max_size
        )
    })
}

/// `NAME (Backend)`: how errors and checkpoints name an adapter.
fn adapter_name(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?})", info.name, info.backend)
}

impl Gpu {
    /// Opens the best (or the chosen) adapter with the limits `plan` needs.
    pub fn open(options: &GpuOptions, plan: &Plan) -> Result<Gpu> {
        let (list, backends) = adapters(
            options,
            options.adapter.is_some() || std::env::var_os("ALEXNET_ADAPTER").is_some(),
        )?;
        let env_index = std::env::var("ALEXNET_ADAPTER")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        let adapter = match options.adapter.or(env_index) {
            Some(index) => list.get(index).cloned().ok_or(Error::AdapterIndex {
                index,
                count: list.len(),
            })?,
            None => list.first().cloned().ok_or_else(|| Error::NoAdapter {
                backends: format!("{backends:?}"),
            })?,
        };
        let info = adapter.get_info();
        let (target, forced) = target_for(options.variant, info.device_type)?;
        let name = adapter_name(&info);
        let offered = adapter.limits();
        let binding = largest_binding(plan, plan.micro_batch);
        // Storage buffers of the kernel that binds the most (a linear layer fused with its
        // softmax binds five).
        let storage = plan
            .kernels
            .iter()
            .map(|k| k.bindings.iter().filter(|b| b.tensor().is_some()).count() as u64)
            .max()
            .unwrap_or(1)
            .max(4);
        let needs: [(&'static str, u64, u64); 4] = [
            (
                "max_storage_buffer_binding_size",
                binding,
                offered.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", binding, offered.max_buffer_size),
            (
                "max_compute_workgroups_per_dimension",
                u64::from(plan.limits.max_compute_workgroups_per_dimension),
                u64::from(offered.max_compute_workgroups_per_dimension),
            ),
            (
                "max_storage_buffers_per_shader_stage",
                storage,
                u64::from(offered.max_storage_buffers_per_shader_stage),
            ),
        ];
        for (limit, needed, available) in needs {
            if needed > available {
                return Err(Error::Limit {
                    adapter: name,
                    limit,
                    needed,
                    available,
                });
            }
        }
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffer_binding_size = binding.max(
            limits
                .max_storage_buffer_binding_size
                .min(offered.max_storage_buffer_binding_size),
        );
        limits.max_buffer_size = binding.max(limits.max_buffer_size.min(offered.max_buffer_size));
        limits.max_compute_workgroups_per_dimension =
            plan.limits.max_compute_workgroups_per_dimension;
        limits.max_storage_buffers_per_shader_stage = (storage as u32).max(
            limits
                .max_storage_buffers_per_shader_stage
                .min(offered.max_storage_buffers_per_shader_stage),
        );
        // Timestamps, where the adapter has them, let `alexnet bench --kernels` time kernels on the GPU;
        // subgroup operations let the `cpu-sg8` kernels share loads between SIMD lanes, and
        // 64-bit integers let them load 8 bytes per lane and step (`Target::wide_loads`).
        let required_features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SUBGROUP
                | wgpu::Features::SHADER_INT64);
        let desc = wgpu::DeviceDescriptor {
            label: Some("alexnet"),
            required_limits: limits,
            required_features,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: name.clone(),
                message: e.to_string(),
            }
        })?;
        let timeout = std::env::var("ALEXNET_GPU_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        // A software adapter's guess is its subgroup variant where it has one (1.6-2× the
        // plain CPU kernels' speed on lavapipe); measuring (`Gpu::tune`) may still differ.
        let target = match target {
            Target::Cpu if !forced && runs(&adapter, &device, Target::CpuSubgroup) => {
                Target::CpuSubgroup
            }
            t => t,
        };
        if let Some(why) = lacks(&adapter, &device, target) {
            return Err(Error::VariantUnsupported {
                adapter: name,
                variant: target.as_str(),
                why,
            });
        }
        tracing::info!(adapter = %name, variant = target.as_str(), "opened device");
        let lost = Arc::new(Mutex::new(None));
        let record = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = record.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        Ok(Gpu {
            adapter,
            device,
            queue,
            timeout: Duration::from_secs(timeout),
            target,
            forced,
            lost,
        })
    }

    /// Whether this device can run `target`'s kernels: [`Target::CpuSubgroup`] needs
    /// subgroup operations with subgroups of exactly its lane count, and 64-bit integers.
    pub fn runs(&self, target: Target) -> bool {
        runs(&self.adapter, &self.device, target)
    }

    /// Name and backend of the adapter (`llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)`).
    pub fn adapter_name(&self) -> String {
        adapter_name(&self.adapter.get_info())
    }

    /// Name, backend and kind of the adapter, and the kernel variants it runs.
    pub fn describe(&self) -> String {
        let info = self.adapter.get_info();
        format!(
            "{} ({:?}, {:?}, {} kernels)",
            info.name,
            info.backend,
            info.device_type,
            self.target.as_str()
        )
    }

    /// An error if the device has been lost (a driver reset, a removed GPU, a hang).
    pub fn alive(&self) -> Result<()> {
        match self.lost.lock().map(|l| l.clone()) {
            Ok(Some(reason)) => Err(Error::DeviceLost {
                adapter: self.describe(),
                reason,
            }),
            _ => Ok(()),
        }
    }

    /// `error`, unless the device has been lost, which explains it better. (A destroyed device
    /// reports its loss from wgpu's maintenance, which a non-blocking poll runs.)
    pub fn lost_or(&self, error: Error) -> Error {
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.alive().err().unwrap_or(error)
    }

    /// Waits, at most `self.timeout`, for `submission` to finish.
    pub fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(self.timeout),
        }) {
            Ok(_) => self.alive(),
            // A lost device is the better explanation of a failed wait.
            Err(wgpu::PollError::Timeout) => Err(self.lost_or(Error::Timeout(self.timeout))),
            Err(e) => Err(self.lost_or(Error::Poll(e.to_string()))),
        }
    }

    /// Copies `bytes` of a buffer (COPY_SRC) at `offset` back through a temporary staging
    /// buffer. The range must be 4-byte aligned and inside the buffer (else an error).
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        check_range(buffer, offset, bytes, wgpu::COPY_BUFFER_ALIGNMENT)?;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.checked("allocating a read-back buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let submission = self.checked("copying a buffer for read-back", || {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
            self.queue.submit([encoder.finish()])
        })?;
        self.wait(submission)?;
        self.map_read(&staging, 0, bytes)
    }

    /// Maps a MAP_READ buffer range (offset 8-byte aligned, size 4-byte aligned, inside the
    /// buffer), waits (bounded) for it, copies it out and unmaps, on failure too, so a reused
    /// buffer is never left mapped or pending.
    pub fn map_read(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        check_range(buffer, offset, bytes, wgpu::MAP_ALIGNMENT)?;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let slice = buffer.slice(offset..offset + bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let waited = match self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.timeout),
        }) {
            Ok(_) => self.alive(),
            Err(wgpu::PollError::Timeout) => Err(self.lost_or(Error::Timeout(self.timeout))),
            Err(e) => Err(self.lost_or(Error::Poll(e.to_string()))),
        };
        let outcome = rx.try_recv();
        if let Err(e) = waited {
            // A map still pending is cancelled; a failed one left the buffer unmapped.
            if !matches!(outcome, Ok(Err(_))) {
                buffer.unmap();
            }
            return Err(e);
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::Gpu {
                    what: "reading results back".into(),
                    message: e.to_string(),
                })
            }
            Err(_) => {
                buffer.unmap();
                return Err(Error::Timeout(self.timeout));
            }
        }
        let data = slice
            .get_mapped_range()
            .map(|view| view.to_vec())
            .map_err(|e| Error::Gpu {
                what: "reading results back".into(),
                message: e.to_string(),
            });
        buffer.unmap();
        data
    }

    /// Runs `f` inside an error scope and turns any validation or out-of-memory error into
    /// an [`Error::Gpu`] naming `what`.
    pub fn checked<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.alive()?;
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let value = f();
        let errors = [
            pollster::block_on(oom.pop()),
            pollster::block_on(validation.pop()),
        ];
        self.alive()?;
        match errors.into_iter().flatten().next() {
            Some(e) => Err(Error::Gpu {
                what: what.to_string(),
                message: e.to_string(),
            }),
            None => Ok(value),
        }
    }
}

/// Why `bytes` at `offset` of a `size`-byte buffer cannot be copied or mapped, if they cannot:
/// the offset must be a multiple of `offset_align`, the length of 4, and the range inside.
pub(crate) fn range_fault(offset: u64, bytes: u64, size: u64, offset_align: u64) -> Option<String> {
    if !offset.is_multiple_of(offset_align) || !bytes.is_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT) {
        return Some(format!(
            "is not {offset_align}-byte aligned (lengths must be multiples of 4)"
        ));
    }
    if !offset.checked_add(bytes).is_some_and(|end| end <= size) {
        return Some(format!("lies outside the {size}-byte buffer"));
    }
    None
}

/// An error unless `offset..offset + bytes` of `buffer` can be read back (see [`range_fault`]).
fn check_range(buffer: &wgpu::Buffer, offset: u64, bytes: u64, offset_align: u64) -> Result<()> {
    match range_fault(offset, bytes, buffer.size(), offset_align) {
        None => Ok(()),
        Some(fault) => Err(Error::Gpu {
            what: "reading a buffer back".into(),
            message: format!("{bytes} bytes at offset {offset} {fault}"),
        }),
    }
}
