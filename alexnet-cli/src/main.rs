//! The `alexnet` command: inspect built-in models, compile DSL files, initialise weights,
//! train, evaluate and run inference on any wgpu adapter.

mod plot;
mod train;

use alexnet::runtime::{data, gpu::list_adapters, npy, tune::How, Mode};
use alexnet::{Gpu, GpuOptions, Plan, Session, TowerSession, Weights};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Compile-time graph compiler and wgpu runtime for AlexNet-style networks.
#[derive(Parser)]
#[command(name = "alexnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their backends and key limits.
    Devices(DeviceArgs),
    /// Classify images (JPEG/PNG) or run a raw .npy tensor through a model.
    Infer(InferArgs),
    /// Write the paper's random initialisation of a model to a safetensors file.
    Init {
        #[arg(long, value_parser = model_name)]
        model: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model's WGSL kernels, one file per kernel and variant (NAME.wgsl for GPUs, NAME.cpu.wgsl for software adapters).
    Shaders {
        #[arg(long, value_parser = model_name)]
        model: String,
        /// Folder to write into (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a model's IR as text or Graphviz DOT.
    Graph {
        #[arg(long, value_parser = model_name)]
        model: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Compile a DSL file (the body of an `alexnet!{...}`) and print its IR, WGSL or DOT.
    Compile {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Emit::Ir)]
        emit: Emit,
    },
    /// Parameters, multiply-adds and activations per layer, the memory plan's GPU memory, and
    /// (with --kernels) every kernel with the nodes it covers, its algorithm, FLOPs and bytes.
    Info {
        #[arg(long, value_parser = model_name)]
        model: String,
        /// Batch at which memory, FLOPs and bytes are reported.
        #[arg(long, default_value_t = 128)]
        batch: u64,
        /// List the kernels of the inference and training programs.
        #[arg(long)]
        kernels: bool,
    },
    /// Train a model on Fashion-MNIST with the paper's SGD recipe, with checkpoints.
    Train(TrainArgs),
    /// Top-1 and top-5 accuracy of trained weights on the Fashion-MNIST test set.
    Eval(EvalArgs),
    /// Apply one SGD step (dropout off, zero momentum) to given weights on a given batch and
    /// save the result, for comparison with any other implementation.
    Step(StepArgs),
    /// Time forward passes on the GPU (median of several runs).
    Bench {
        #[arg(long, value_parser = model_name)]
        model: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Time whole training steps instead of forward passes.
        #[arg(long)]
        train: bool,
        /// Also time every kernel on its own, slowest first.
        #[arg(long)]
        kernels: bool,
        /// Run the forward pass with one kernel per op (the plan's inspect program) instead
        /// of the fused inference program, for comparison.
        #[arg(long, conflicts_with = "train")]
        unfused: bool,
        /// Folder of WGSL files named as `alexnet shaders --out` writes them (NAME.wgsl,
        /// NAME.cpu.wgsl): time these instead of the built-in kernels (check them first with
        /// `alexnet selftest --shaders`).
        #[arg(long)]
        shaders: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        towers: TowerArgs,
    },
    /// Run every kernel of a model alone on the adapter against the CPU reference (f64) and
    /// print a table; exits non-zero naming each kernel that is wrong. Run it when a new driver
    /// gives strange results, or to check a hand-edited shader (--shaders).
    Selftest {
        #[arg(long, value_parser = model_name)]
        model: String,
        /// Images per check (the reference is plain f64 loops: keep it small).
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Seed of the random weights, input, labels and momentum.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Folder of WGSL files named as `alexnet shaders --out` writes them (NAME.wgsl,
        /// NAME.cpu.wgsl); each replaces the compiled form of the same name.
        #[arg(long)]
        shaders: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// Backend: vulkan, gl, metal or dx12 (env ALEXNET_BACKEND; default: all, best first).
    #[arg(long, env = "ALEXNET_BACKEND")]
    backend: Option<String>,
    /// Adapter index as listed by `alexnet devices` (env ALEXNET_ADAPTER).
    #[arg(long, env = "ALEXNET_ADAPTER")]
    adapter: Option<usize>,
    /// Kernel variants: gpu, cpu or cpu-sg8 (env ALEXNET_VARIANT; default: measured on first use).
    #[arg(long, env = "ALEXNET_VARIANT", value_parser = variant_name)]
    variant: Option<alexnet::plan::Target>,
}

fn variant_name(s: &str) -> std::result::Result<alexnet::plan::Target, String> {
    alexnet::plan::Target::parse(s)
        .ok_or_else(|| format!("unknown kernel variant `{s}` (expected gpu, cpu or cpu-sg8)"))
}

impl DeviceArgs {
    fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend.clone(),
            adapter: self.adapter,
            variant: self.variant,
        }
    }
}

#[derive(Args, Clone)]
struct TowerArgs {
    /// Run a two-tower (`devices: 2`) model on two devices: two adapter indices as
    /// `alexnet devices` lists them, e.g. `0,1`, or `0,0` for one adapter opened twice
    /// (default: one device runs both towers).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    devices: Option<Vec<usize>>,
}

impl TowerArgs {
    /// The two devices `--devices` names, for `mode` (inference or training), with device
    /// 0's kernel variants chosen as on one device (or kept, as `keep` says) and used on both,
    /// so the two compute what one would.
    fn open(
        &self,
        device: &DeviceArgs,
        plan: &Plan,
        mode: Mode,
        keep: Option<&(String, alexnet::plan::Target)>,
    ) -> Result<Option<[Gpu; 2]>> {
        let Some(indices) = &self.devices else {
            return Ok(None);
        };
        let [a, b] = indices[..] else {
            bail!("--devices takes two adapter indices, e.g. `0,1` (or `0,0` for one adapter opened twice); got {indices:?}")
        };
        let (towers, what) = match mode {
            Mode::Training => (&plan.tower_training, "training "),
            _ => (&plan.towers, ""),
        };
        if towers.is_none() {
            bail!("--devices: {} has no two-device {what}program (it needs `devices: 2` with every conv and linear layer split into towers); run it on one device", plan.name);
        }
        let on = |index: usize| DeviceArgs {
            adapter: Some(index),
            ..device.clone()
        };
        let mut first = open_tuned(&on(a), plan, mode, keep)?;
        let mut second = Gpu::open(&on(b).options(), plan)?;
        // Both run device 0's variant where device 1 runs it too, else the nearest variant it
        // falls back to that both run (the GPU form runs everywhere). A forced variant that
        // device 1 lacks has already failed to open it.
        let mut target = Some(first.target);
        while let Some(t) = target.filter(|&t| !(first.runs(t) && second.runs(t))) {
            target = t.fallback();
        }
        let target = target.unwrap_or(alexnet::plan::Target::Gpu);
        if target != first.target {
            eprintln!(
                "--devices: adapter {b} cannot run the {} kernels adapter {a} chose; both run the {} kernels",
                first.target.as_str(),
                target.as_str()
            );
        }
        first.target = target;
        second.target = target;
        Ok(Some([first, second]))
    }
}

#[derive(Args)]
struct InferArgs {
    #[arg(long, value_parser = model_name)]
    model: String,
    /// Weights in safetensors (default: the paper's random initialisation, seed 0).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Images, or one .npy tensor of shape [N, C, H, W] or [C, H, W] (f32 or f64).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Write the logits, shape [N, classes], to this .npy file.
    #[arg(long)]
    save_logits: Option<PathBuf>,
    /// One label per line (`id<TAB>name` or `name`); default: ImageNet or Fashion-MNIST names.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    towers: TowerArgs,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_parser = model_name, default_value = "alexnet-mini")]
    model: String,
    /// `fashion-mnist` (the Debian package's folder), a folder holding its IDX files, or an
    /// ImageNet-style folder `DIR/<class>/*.{jpg,png}` (random crops, flips, PCA colour noise).
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Test images for an image-folder dataset (same layout), evaluated after each epoch.
    #[arg(long)]
    test_dir: Option<PathBuf>,
    /// Fail before the first step if any image cannot be read (default: report and skip it).
    #[arg(long)]
    strict: bool,
    #[arg(long, default_value_t = 10)]
    epochs: u32,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Initial learning rate ε (the paper's 0.01).
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, default_value_t = 0.0005)]
    decay: f32,
    /// Seed of the initialisation, data order, flips and dropout masks.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Initialisation: the paper's N(0, 0.01²) with its biases of 1, or He's N(0, 2/fan-in)
    /// (learns much sooner on small nets).
    #[arg(long, value_enum, default_value_t = InitKind::Paper)]
    init: InitKind,
    /// Divide the learning rate by 10 at these epochs (e.g. `--lr-steps 30,60`); default:
    /// when the validation error has not improved for `--patience` epochs, as the paper did.
    #[arg(long, value_delimiter = ',')]
    lr_steps: Vec<u32>,
    #[arg(long, default_value_t = 2)]
    patience: u32,
    /// Training images held out for validation.
    #[arg(long, default_value_t = 5000)]
    val: usize,
    /// Train on only the first N training images (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on only the first N test images after each epoch.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Turn off random horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Checkpoint every N steps (and at every epoch's end).
    #[arg(long, default_value_t = 200)]
    save_every: u32,
    /// Output folder: checkpoint.safetensors, weights.safetensors, metrics.jsonl, curves.png.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in all (the checkpoint then resumes the rest).
    #[arg(long)]
    max_steps: Option<u32>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    towers: TowerArgs,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long, value_parser = model_name, default_value = "alexnet-mini")]
    model: String,
    #[arg(long)]
    weights: PathBuf,
    /// `fashion-mnist`, a folder of its IDX files, or an image folder `DIR/<class>/*`.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Average the softmax over the paper's ten crops (image folders) or the image and its
    /// mirror (Fashion-MNIST).
    #[arg(long)]
    ten_crop: bool,
    /// Fail if any image cannot be read (default: report and skip it).
    #[arg(long)]
    strict: bool,
    /// Print predictions for the first N test images.
    #[arg(long, default_value_t = 0)]
    show: usize,
    /// Evaluate on only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct StepArgs {
    #[arg(long, value_parser = model_name)]
    model: String,
    /// Weights in safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// Input batch, .npy [N, C, H, W].
    #[arg(long)]
    input: PathBuf,
    /// Labels, .npy [N] of integers.
    #[arg(long)]
    labels: PathBuf,
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    #[arg(long, default_value_t = 0.0005)]
    decay: f32,
    /// Where to write the updated weights.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InitKind {
    Paper,
    He,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ir,
    Wgsl,
    Dot,
}

/// A built-in model's name, or the path of a `.alexnet` declaration (compiled when used).
fn model_name(name: &str) -> Result<String, String> {
    if alexnet::models::by_name(name).is_some() || name.ends_with(".alexnet") {
        return Ok(name.to_string());
    }
    let names: Vec<&str> = alexnet::models::BUILTIN.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "unknown model `{name}` (expected one of {}, or a FILE.alexnet declaration)",
        names.join(", ")
    ))
}

/// The plan of a built-in model, or of a declaration file compiled now (its errors rendered
/// with line and column, as `alexnet compile` does).
fn plan_of(name: &str) -> Result<&'static Plan> {
    if let Some(plan) = alexnet::models::by_name(name) {
        return Ok(plan);
    }
    let source = std::fs::read_to_string(name).with_context(|| format!("reading {name}"))?;
    match alexnet_compiler::compile_str(&source) {
        // The CLI runs one model per process, so the plan lives as long as the process.
        Ok(compiled) => Ok(Box::leak(Box::new(compiled.plan))),
        Err(errors) => {
            eprint!("{}", errors.render(name));
            bail!("{} error(s) in {name}", errors.0.len())
        }
    }
}

fn main() {
    quiet_headless_wayland();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALEXNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("alexnet_runtime=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Mesa's software Vulkan driver links libwayland, which prints "error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment." on a headless machine as soon as the GPU is opened.
/// No display is ever used here, so when the variable is unset it is pointed at a path that
/// holds no Wayland socket: the driver's probe then fails quietly. Called first in `main`,
/// before any thread exists, so changing the environment races with nothing.
fn quiet_headless_wayland() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|v| v.is_empty()) {
        std::env::set_var(
            "XDG_RUNTIME_DIR",
            std::env::temp_dir().join("alexnet-no-display"),
        );
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices(args) => devices(&args),
        Command::Infer(args) => infer(&args),
        Command::Init { model, seed, out } => {
            let plan = plan_of(&model)?;
            Weights::init(plan, seed).save(plan, &out)?;
            println!(
                "wrote {} ({} parameters, seed {seed}) to {}",
                plan.name,
                plan.param_count(),
                out.display()
            );
            Ok(())
        }
        Command::Shaders { model, out } => shaders(plan_of(&model)?, out.as_deref()),
        Command::Graph { model, format } => {
            let plan = plan_of(&model)?;
            print!(
                "{}",
                if matches!(format, GraphFormat::Text) {
                    &plan.ir
                } else {
                    &plan.dot
                }
            );
            Ok(())
        }
        Command::Compile { file, emit } => compile(&file, emit),
        Command::Info {
            model,
            batch,
            kernels,
        } => info(plan_of(&model)?, batch, kernels),
        Command::Bench {
            model,
            batch,
            iters,
            train,
            kernels,
            unfused,
            shaders,
            device,
            towers,
        } => {
            let mode = if train {
                Mode::Training
            } else if unfused {
                Mode::Inspect
            } else {
                Mode::Inference
            };
            let plan = replace_shaders(plan_of(&model)?, shaders.as_deref())?;
            if towers.devices.is_some() {
                if mode == Mode::Inspect || kernels {
                    bail!("--devices times the two-device forward pass or training step (--train): --unfused and --kernels run on one device");
                }
                return bench_towers(&plan, batch, iters, mode, &device, &towers);
            }
            bench(&plan, batch, iters, mode, kernels, &device)
        }
        Command::Selftest {
            model,
            batch,
            seed,
            shaders,
            device,
        } => selftest(plan_of(&model)?, batch, seed, shaders.as_deref(), &device),
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => train::eval(&args),
        Command::Step(args) => train::step(&args),
    }
}

fn devices(args: &DeviceArgs) -> Result<()> {
    let list = list_adapters(&args.options())?;
    if list.is_empty() {
        bail!("no GPU adapters found (on Linux: apt-get install mesa-vulkan-drivers libvulkan1)");
    }
    for a in list {
        println!(
            "[{}] {} — {} {} ({})",
            a.index, a.name, a.backend, a.device_type, a.driver
        );
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, {} workgroups/dim, {} invocations/workgroup",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroups_per_dimension,
            a.max_compute_invocations_per_workgroup
        );
    }
    Ok(())
}

fn shaders(plan: &Plan, out: Option<&Path>) -> Result<()> {
    match out {
        None => {
            for (_, wgsl) in plan.kernels.iter().flat_map(|k| k.sources()) {
                println!("{wgsl}");
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut files = 0;
            for (file, wgsl) in plan.kernels.iter().flat_map(|k| k.sources()) {
                let path = dir.join(file);
                std::fs::write(&path, wgsl.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                files += 1;
            }
            println!(
                "wrote {} kernels ({files} files with their CPU variants) to {}",
                plan.kernels.len(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn compile(file: &Path, emit: Emit) -> Result<()> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match alexnet_compiler::compile_str(&source) {
        Ok(compiled) => {
            match emit {
                Emit::Ir => print!("{}", compiled.plan.ir),
                Emit::Dot => print!("{}", compiled.plan.dot),
                Emit::Wgsl => compiled
                    .plan
                    .kernels
                    .iter()
                    .for_each(|k| println!("{}", k.wgsl)),
            }
            Ok(())
        }
        Err(errors) => {
            eprint!("{}", errors.render(&file.display().to_string()));
            bail!("{} error(s) in {}", errors.0.len(), file.display())
        }
    }
}

/// The two-device split `passes::place` planned: where each layer lives, what each device
/// holds, and what the devices exchange per image.
fn towers(plan: &Plan, batch: u64) {
    let place = |p: alexnet::plan::Place| match p {
        alexnet::plan::Place::Device(d) => format!("device {d}"),
        alexnet::plan::Place::Both => "both devices".to_string(),
        alexnet::plan::Place::Towers => "towers (half each)".to_string(),
    };
    match &plan.towers {
        Some(_) => println!("two-device split ({} on two devices with `--devices A,B`):", if plan.tower_training.is_some() { "inference and training run" } else { "inference runs; training runs on one device" }),
        None => println!("two-device split (planned; this plan has no two-device program: a layer is pinned to one device):"),
    }
    for l in plan.layers.iter() {
        let mine: Vec<&alexnet::plan::Exchange> = plan
            .exchanges
            .iter()
            .filter(|e| e.reader.split_once('.').map(|(layer, _)| layer) == Some(&*l.name))
            .collect();
        let mut received = Vec::new();
        for (i, e) in mine.iter().enumerate() {
            let kind = match e.kind {
                alexnet::plan::ExchangeKind::Gather => "half the input".to_string(),
                alexnet::plan::ExchangeKind::Halo { channels } => {
                    format!("{channels} boundary channels")
                }
                alexnet::plan::ExchangeKind::Whole => "the whole input".to_string(),
            };
            // The towers' symmetric exchanges read as one.
            let twin = mine.iter().position(|o| {
                o.reader == e.reader
                    && o.kind == e.kind
                    && o.bytes_per_image == e.bytes_per_image
                    && o.to != e.to
            });
            match twin {
                Some(j) if j < i => continue,
                Some(_) => received.push(format!(
                    "each device receives {kind} ({:.1} KB/img) for {}",
                    e.bytes_per_image as f64 / 1e3,
                    e.reader
                )),
                None => received.push(format!(
                    "device {} receives {kind} ({:.1} KB/img) for {}",
                    e.to,
                    e.bytes_per_image as f64 / 1e3,
                    e.reader
                )),
            }
        }
        println!(
            "  {:<8} {:<20} {}",
            l.name,
            place(l.place),
            received.join("; ")
        );
    }
    for e in plan.exchanges.iter().filter(|e| e.reader == "output") {
        println!(
            "  {:<8} {:<20} device {} receives half the logits ({:.1} KB/img)",
            "output",
            format!("device {}", e.to),
            e.to,
            e.bytes_per_image as f64 / 1e3
        );
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    for device in 0..2 {
        println!(
            "  device {device}: {} parameters ({:.1} MiB; ×3 when training, with gradients and momentum), {:.1} MiB of activations at batch {batch}, receives {:.1} KB/img forward{}",
            plan.params_on(device),
            mib(plan.params_on(device) * 4),
            mib(plan.activation_bytes_on(device) * batch),
            plan.received_per_image(device) as f64 / 1e3,
            // The backward pass returns summed input gradients and the LRN gradients' halos.
            plan.tower_training.as_ref().map_or(String::new(), |t| format!(
                ", {:.1} KB/img in a training step",
                t.received_per_image(device) as f64 / 1e3
            ))
        );
    }
}

fn info(plan: &Plan, batch: u64, kernels: bool) -> Result<()> {
    if batch == 0 || batch > u64::from(plan.max_batch) {
        bail!("--batch must be in 1..={}", plan.max_batch);
    }
    println!(
        "{} — input {:?}, {} device(s), max batch {} (micro-batch {})",
        plan.name, plan.input, plan.devices, plan.max_batch, plan.micro_batch
    );
    println!(
        "{:<8} {:>18} {:>14} {:>12} {:>14}",
        "layer", "output", "parameters", "M mult-adds", "act. KiB/img"
    );
    for l in plan.layers.iter() {
        let shape = format!("{:?}", l.output);
        println!(
            "{:<8} {:>18} {:>14} {:>12.1} {:>14.1}",
            l.name,
            shape,
            l.params,
            l.macs as f64 / 1e6,
            l.activation_bytes as f64 / 1024.0
        );
    }
    let act: u64 = plan.layers.iter().map(|l| l.activation_bytes).sum();
    println!(
        "{:<8} {:>18} {:>14} {:>12.1} {:>14.1}",
        "total",
        "",
        plan.param_count(),
        plan.macs() as f64 / 1e6,
        act as f64 / 1024.0
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "fusion {}: {} kernels in all, {} dispatches per forward pass; weights {:.1} MiB (f32)",
        plan.fusion.as_str(),
        plan.kernels.len(),
        plan.inference.dispatches().count(),
        mib(plan.param_count() * 4)
    );
    for v in plan.inference_variants.iter() {
        println!(
            "  on {} adapters: fusion {}, {} dispatches per forward pass",
            v.target.as_str(),
            v.fusion.as_str(),
            v.program.dispatches().count()
        );
    }
    // A session runs at most a micro-batch at a time; larger batches reuse its buffers.
    let pass = batch.min(u64::from(plan.micro_batch));
    if let Some((kernel, flops)) = plan.heaviest_dispatch(pass) {
        println!(
            "heaviest dispatch at {pass} images per pass: `{}`, {:.2} GFLOP (budget {:.1} GFLOP per dispatch)",
            kernel.name,
            flops as f64 / 1e9,
            plan.limits.max_dispatch_flops as f64 / 1e9
        );
    }
    println!("GPU memory at batch {batch} ({pass} images per pass), from the memory plan:");
    for device in 0..plan.devices {
        let mut programs = vec![
            ("inference".to_string(), &plan.inference),
            ("training".to_string(), &plan.training),
        ];
        programs.extend(
            plan.inference_variants
                .iter()
                .map(|v| (format!("inference ({})", v.target.as_str()), &v.program)),
        );
        // On two devices each runs its tower's program (every activation whole, its own weight parts).
        programs.extend(
            plan.towers
                .iter()
                .map(|t| ("tower inference".to_string(), &t.programs[device as usize])),
        );
        programs.extend(
            plan.tower_training
                .iter()
                .map(|t| ("tower training".to_string(), &t.programs[device as usize])),
        );
        // Only the programs that place something on this device.
        programs.retain(|(_, p)| p.buffers.iter().any(|b| b.device == device));
        if programs.is_empty() {
            println!("  device {device}: nothing placed (this plan has no two-device program)");
            continue;
        }
        for (name, program) in programs {
            let on_device =
                |p: &&alexnet::plan::Placement| program.buffers[p.buffer as usize].device == device;
            let state: u64 = program
                .placements
                .iter()
                .filter(on_device)
                .filter(|p| p.tensor.is_state())
                .map(|p| p.size.at(pass))
                .sum();
            let unplanned: u64 = program
                .placements
                .iter()
                .filter(on_device)
                .filter(|p| !p.tensor.is_state())
                .map(|p| p.size.at(pass))
                .sum();
            println!(
                "  device {device} {name:<15} {:>9.1} MiB in {:>3} buffers: {:>8.1} MiB parameters/gradients/momentum, {:>8.1} MiB activations (without reuse {:.1} MiB)",
                mib(program.memory(device, pass)),
                program.buffers.iter().filter(|b| b.device == device).count(),
                mib(state),
                mib(program.memory(device, pass) - state),
                mib(unplanned)
            );
        }
    }
    if plan.devices == 2 {
        towers(plan, batch);
    }
    if kernels {
        use alexnet::plan::Target;
        // Each program's kernels in their form for the adapters that run it.
        let variants: Vec<(String, &alexnet::plan::Program, Target)> = plan
            .inference_variants
            .iter()
            .map(|v| {
                (
                    format!("inference on {} adapters", v.target.as_str()),
                    &v.program,
                    v.target,
                )
            })
            .collect();
        let programs = [
            ("inference".to_string(), &plan.inference, Target::Gpu),
            ("training".to_string(), &plan.training, Target::Gpu),
        ];
        for (name, program, target) in programs.into_iter().chain(variants) {
            println!("\n{name} kernels at batch {pass} (per pass):");
            println!(
                "{:<26} {:<40} {:<44} {:>9} {:>9} {:>9}",
                "kernel", "covers", "algorithm", "MFLOP", "MB read", "MB write"
            );
            for k in program.dispatches() {
                let k = &plan.kernels[k as usize].for_target(target);
                let covers: Vec<String> = k
                    .covers
                    .iter()
                    .map(|&n| {
                        format!(
                            "{}.{}",
                            plan.nodes[n as usize].layer,
                            plan.nodes[n as usize].op.name()
                        )
                    })
                    .collect();
                println!(
                    "{:<26} {:<40} {:<44} {:>9.1} {:>9.2} {:>9.2}",
                    k.name,
                    covers.join("+"),
                    k.algo.describe(),
                    k.cost.flops.at(pass) as f64 / 1e6,
                    k.cost.read.at(pass) as f64 / 1e6,
                    k.cost.written.at(pass) as f64 / 1e6
                );
            }
        }
    }
    Ok(())
}

/// Opens the adapter `device` names for `plan` and picks the kernel variants its `mode`
/// program runs fastest with: measured on first use, then cached per adapter, driver and
/// plan (`alexnet::runtime::tune`); `--variant` skips the measurement.
/// `keep` (a resumed run's adapter and variants) wins on that adapter unless `--variant` is given.
pub(crate) fn open_tuned(
    device: &DeviceArgs,
    plan: &Plan,
    mode: Mode,
    keep: Option<&(String, alexnet::plan::Target)>,
) -> Result<Gpu> {
    let mut gpu = Gpu::open(&device.options(), plan)?;
    if let Some((adapter, target)) =
        keep.filter(|(adapter, target)| {
            !gpu.forced && *adapter == gpu.adapter_name() && gpu.runs(*target)
        })
    {
        eprintln!(
            "kernel variants: {} (those the run started with on {adapter})",
            target.as_str()
        );
        gpu.target = *target;
        return Ok(gpu);
    }
    let tuned = gpu.tune(plan, mode)?;
    if let How::Measured { seconds, cache } = &tuned.how {
        let times: Vec<String> = seconds
            .iter()
            .map(|(t, s)| format!("{} {:.1} ms", t.as_str(), s * 1e3))
            .collect();
        let cached = cache
            .as_ref()
            .map(|c| format!("; cached in {}", c.display()))
            .unwrap_or_default();
        eprintln!(
            "kernel variants: {} (measured on this adapter, best pass of each: {}{cached})",
            tuned.target.as_str(),
            times.join(", ")
        );
    }
    Ok(gpu)
}

/// Labels for the model's classes, from `--labels` or the built-in lists.
fn labels(plan: &Plan, path: Option<&Path>) -> Result<Vec<String>> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading labels {}", p.display()))?
        }
        None if plan.classes() == 1000 => include_str!("../data/imagenet_classes.txt").to_string(),
        None if plan.classes() == 10 => FASHION_MNIST.join("\n"),
        None => (0..plan.classes())
            .map(|i| format!("class {i}"))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split_once('\t').map_or(l, |(_, name)| name).to_string())
        .collect();
    if names.len() != plan.classes() as usize {
        bail!(
            "{} labels for a model with {} classes",
            names.len(),
            plan.classes()
        );
    }
    Ok(names)
}

/// Fashion-MNIST's class names, in label order.
const FASHION_MNIST: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn infer(args: &InferArgs) -> Result<()> {
    let plan = plan_of(&args.model)?;
    let is_npy = args.inputs.len() == 1
        && args.inputs[0]
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let (input, batch, names) = if is_npy {
        let (data, batch) = npy::read_input(&args.inputs[0], plan)?;
        let names = (0..batch)
            .map(|i| format!("{}[{i}]", args.inputs[0].display()))
            .collect();
        (data, batch, names)
    } else {
        let mut data = Vec::new();
        for path in &args.inputs {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
            {
                bail!("{}: a .npy input must be the only input", path.display());
            }
            data.extend(data::load_image(path, plan)?);
        }
        (
            data,
            args.inputs.len(),
            args.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        )
    };
    if batch > plan.max_batch as usize {
        bail!(
            "{batch} inputs, but {} takes at most {} per run",
            plan.name,
            plan.max_batch
        );
    }
    let weights = match &args.weights {
        Some(path) => Weights::load(plan, path)?,
        None => {
            eprintln!("note: no --weights given; using the paper's random initialisation (seed 0)");
            Weights::init(plan, 0)
        }
    };
    let labels = labels(plan, args.labels.as_deref())?;
    let out = match args
        .towers
        .open(&args.device, plan, Mode::Inference, None)?
    {
        Some(gpus) => {
            eprintln!(
                "running {} on two devices: {} and {}",
                plan.name,
                gpus[0].describe(),
                gpus[1].describe()
            );
            let mut session = TowerSession::new([&gpus[0], &gpus[1]], plan, batch as u32)?;
            session.load_weights(&weights)?;
            session.forward(&input, batch)?
        }
        None => {
            let gpu = open_tuned(&args.device, plan, Mode::Inference, None)?;
            eprintln!("running {} on {}", plan.name, gpu.describe());
            let mut session = Session::new(&gpu, plan, batch as u32)?;
            session.load_weights(&weights)?;
            session.forward(&input, batch)?
        }
    };
    for (i, name) in names.iter().enumerate() {
        println!("{name}:");
        for (class, p) in out.top_k(i, args.top) {
            println!("  {:>6.2}%  {:>4}  {}", p * 100.0, class, labels[class]);
        }
    }
    if let Some(path) = &args.save_logits {
        npy::write_2d(path, &out.logits, batch, out.classes)?;
        eprintln!(
            "wrote logits [{batch}, {}] to {}",
            out.classes,
            path.display()
        );
    }
    Ok(())
}

/// `plan` with each kernel form that `dir` holds a file for (`NAME.wgsl`, `NAME.TARGET.wgsl`)
/// replaced by that file's WGSL; the names replaced, in kernel order.
fn with_shaders(plan: &Plan, dir: &Path) -> Result<(Plan, Vec<String>)> {
    if !dir.is_dir() {
        bail!("{}: not a folder of WGSL files", dir.display());
    }
    let mut plan = plan.clone();
    let mut replaced = Vec::new();
    for kernel in plan.kernels.to_mut() {
        let name = kernel.name.to_string();
        let mut read = |file: String| -> Result<Option<String>> {
            let path = dir.join(&file);
            if !path.exists() {
                return Ok(None);
            }
            replaced.push(file);
            Ok(Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ))
        };
        if let Some(wgsl) = read(format!("{name}.wgsl"))? {
            kernel.wgsl = wgsl.into();
        }
        for v in kernel.variants.to_mut() {
            if let Some(wgsl) = read(format!("{name}.{}.wgsl", v.target.as_str()))? {
                v.wgsl = wgsl.into();
            }
        }
    }
    if replaced.is_empty() {
        bail!(
            "{}: no file names a kernel of {} (see `alexnet shaders --model {} --out DIR`)",
            dir.display(),
            plan.name,
            plan.name
        );
    }
    Ok((plan, replaced))
}

/// `plan`, with its kernels replaced from `dir` when one is given (saying which on stderr).
fn replace_shaders(plan: &Plan, dir: Option<&Path>) -> Result<Plan> {
    let Some(dir) = dir else {
        return Ok(plan.clone());
    };
    let (plan, replaced) = with_shaders(plan, dir)?;
    let list = if replaced.len() <= 8 {
        replaced.join(", ")
    } else {
        format!("{} files", replaced.len())
    };
    eprintln!("kernels replaced from {}: {list}", dir.display());
    Ok(plan)
}

fn selftest(
    plan: &Plan,
    batch: usize,
    seed: u64,
    shaders: Option<&Path>,
    device: &DeviceArgs,
) -> Result<()> {
    if batch == 0 || batch > plan.max_batch as usize {
        bail!("--batch must be in 1..={}", plan.max_batch);
    }
    let plan = replace_shaders(plan, shaders)?;
    let gpu = Gpu::open(&device.options(), &plan)?;
    println!(
        "{} on {}: every kernel alone against the CPU reference (f64), batch {batch}",
        plan.name,
        gpu.describe()
    );
    let bar = indicatif::ProgressBar::new(0);
    let options = alexnet::runtime::selftest::Options { batch, seed };
    let checks = alexnet::runtime::selftest::run(&gpu, &plan, &options, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    let width = checks
        .iter()
        .map(|c| c.name().len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:<9} {:<8} {:>10} {:>9}  {:<4}  worst tensor",
        "kernel", "program", "role", "max error", "tolerance", ""
    );
    for c in &checks {
        let program = match c.mode {
            Mode::Inference => "inference",
            Mode::Training => "training",
            Mode::Inspect => "inspect",
        };
        let verdict = if c.passed() { "ok" } else { "FAIL" };
        println!(
            "{:<width$}  {program:<9} {:<8} {:>10.2e} {:>9.0e}  {verdict:<4}  {}",
            c.name(),
            c.role,
            c.error,
            c.tolerance,
            c.worst
        );
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.name())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} kernel checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        );
    }
    println!("all {} kernel checks passed", checks.len());
    Ok(())
}

/// Times the two-device forward pass or training step (`mode`): the median, and how much of
/// it the exchanges took.
fn bench_towers(
    plan: &Plan,
    batch: usize,
    iters: usize,
    mode: Mode,
    device: &DeviceArgs,
    towers: &TowerArgs,
) -> Result<()> {
    if batch == 0 || batch > plan.max_batch as usize {
        bail!("--batch must be in 1..={}", plan.max_batch);
    }
    let train = mode == Mode::Training;
    let gpus = towers
        .open(device, plan, mode, None)?
        .expect("--devices was given");
    let gpus = [&gpus[0], &gpus[1]];
    let mut session = if train {
        TowerSession::for_training(gpus, plan, batch as u32)?
    } else {
        TowerSession::new(gpus, plan, batch as u32)?
    };
    session.load_weights(&Weights::init(plan, 0))?;
    let input = vec![0.5f32; batch * plan.input_elems()];
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % plan.classes()).collect();
    let config = alexnet::runtime::StepConfig::paper(0, 0);
    let run = |session: &mut TowerSession| -> Result<()> {
        if train {
            session.train_step(&input, &labels, batch, &config)?;
        } else {
            session.forward(&input, batch)?;
        }
        Ok(())
    };
    run(&mut session)?;
    let bar = indicatif::ProgressBar::new(iters as u64);
    let mut runs = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = std::time::Instant::now();
        run(&mut session)?;
        runs.push((start.elapsed().as_secs_f64(), session.exchange_stats()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, stats) = runs[runs.len() / 2];
    let memory = session.memory();
    println!(
        "{} batch {batch} on two devices ({} | {}): median {:.3} ms per {} ({:.1} images/s), of which {:.3} ms in exchanges moving {:.1} KB 0→1 and {:.1} KB 1→0; GPU memory {:.1} + {:.1} MiB",
        plan.name,
        gpus[0].describe(),
        gpus[1].describe(),
        median * 1e3,
        if train { "training step" } else { "forward" },
        batch as f64 / median,
        stats.time.as_secs_f64() * 1e3,
        stats.bytes[0] as f64 / 1e3,
        stats.bytes[1] as f64 / 1e3,
        memory[0] as f64 / f64::from(1 << 20),
        memory[1] as f64 / f64::from(1 << 20)
    );
    Ok(())
}

fn bench(
    plan: &Plan,
    batch: usize,
    iters: usize,
    mode: Mode,
    kernels: bool,
    device: &DeviceArgs,
) -> Result<()> {
    let train = mode == Mode::Training;
    if batch == 0 || batch > plan.max_batch as usize {
        bail!("--batch must be in 1..={}", plan.max_batch);
    }
    let gpu = open_tuned(device, plan, mode, None)?;
    let mut session = Session::open(&gpu, plan, batch as u32, mode)?;
    session.load_weights(&Weights::init(plan, 0))?;
    let input = vec![0.5f32; batch * plan.input_elems()];
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % plan.classes()).collect();
    let config = alexnet::runtime::StepConfig::paper(0, 0);
    let run = |session: &mut Session| -> Result<()> {
        if train {
            session.train_step(&input, &labels, batch, &config)?;
        } else {
            session.forward(&input, batch)?;
        }
        Ok(())
    };
    run(&mut session)?;
    if kernels {
        let profile = session.profile(&input, &labels, batch)?;
        let mut times = profile.kernels.clone();
        let total: f64 = times.iter().map(|t| t.1).sum();
        times.sort_by(|a, b| b.1.total_cmp(&a.1));
        let clock = if profile.gpu_timestamps {
            "GPU timestamps"
        } else {
            "wall clock per submission (the adapter has no timestamp queries)"
        };
        println!("per-kernel times at batch {batch}, by {clock}:");
        println!(
            "{:<28} {:>10} {:>7} {:>9} {:>9}  algorithm",
            "kernel", "ms", "share", "GFLOP/s", "GB/s"
        );
        // A kernel runs once per pass of at most a micro-batch; its cost is per pass.
        let pass = (batch as u64).min(u64::from(session.capacity()));
        let passes = (batch as u64).div_ceil(pass) as f64;
        for (k, t) in &times {
            // The kernel as this adapter runs it (its variant for the adapter's kind).
            let kernel = &session.plan().kernels[*k as usize];
            let flops = kernel.cost.flops.at(pass) as f64 * passes;
            let bytes = (kernel.cost.read.at(pass) + kernel.cost.written.at(pass)) as f64 * passes;
            println!(
                "{:<28} {:>10.3} {:>6.1}% {:>9.2} {:>9.2}  {}",
                kernel.name,
                t * 1e3,
                100.0 * t / total,
                flops / t / 1e9,
                bytes / t / 1e9,
                kernel.algo.describe()
            );
        }
    }
    let bar = indicatif::ProgressBar::new(iters as u64);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = std::time::Instant::now();
        run(&mut session)?;
        times.push(start.elapsed().as_secs_f64());
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // A training step does about three forward passes' work (forward, input and weight gradients).
    let (what, passes) = match mode {
        Mode::Training => ("training step".to_string(), 3.0),
        Mode::Inference => (
            format!("forward (fusion {})", session.plan().fusion.as_str()),
            1.0,
        ),
        Mode::Inspect => (
            "forward (one kernel per op, every activation kept)".to_string(),
            1.0,
        ),
    };
    let gflops = passes * 2.0 * plan.macs() as f64 * batch as f64 / median / 1e9;
    println!(
        "{} batch {batch} on {}: median {:.3} ms per {what} ({:.1} images/s, {:.1} GFLOP/s of the net's own work; GPU memory {:.1} MiB)",
        plan.name,
        gpu.describe(),
        median * 1e3,
        batch as f64 / median,
        gflops,
        session.memory() as f64 / f64::from(1 << 20)
    );
    Ok(())
}
