//! `alexnet train`, `eval` and `step`.

use crate::{plan_of, EvalArgs, InitKind, StepArgs, TrainArgs};
use alexnet::runtime::folder::{ImageFolder, Pca};
use alexnet::runtime::idx::{FashionMnist, FASHION_MNIST_DIR};
use alexnet::runtime::npy;
use alexnet::runtime::train::{
    self, Checkpoint, Dataset, FolderSet, Schedule, Source, TrainOptions, TrainState,
};
use alexnet::runtime::trainer::{Epoch, EpochReport, Trainer};
use alexnet::runtime::{Mode, StepConfig};
use alexnet::{Gpu, Plan, Runner, Session, TowerSession, Weights};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Fashion-MNIST folder named by `--dataset`.
fn dataset_dir(name: &str) -> PathBuf {
    if name == "fashion-mnist" {
        std::env::var_os("ALEXNET_FASHION_MNIST")
            .map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), PathBuf::from)
    } else {
        PathBuf::from(name)
    }
}

fn load(plan: &Plan, name: &str) -> Result<(Dataset, Dataset)> {
    let dir = dataset_dir(name);
    let data = FashionMnist::load(&dir)?;
    Ok((
        Dataset::from_idx(&data.train, plan, &dir)?,
        Dataset::from_idx(&data.test, plan, &dir)?,
    ))
}

/// Whether `--dataset` names Fashion-MNIST (the package, or a folder of IDX files).
fn is_idx(name: &str) -> bool {
    let dir = dataset_dir(name);
    name == "fashion-mnist"
        || ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
            .iter()
            .any(|f| dir.join(f).exists())
}

/// Scans an image folder, reporting (or with `strict`, refusing) unreadable images.
fn scan_folder(dir: &Path, strict: bool) -> Result<ImageFolder> {
    let mut folder = ImageFolder::scan(dir)?;
    eprintln!(
        "checking {} images in {} classes under {}",
        folder.files.len(),
        folder.classes.len(),
        dir.display()
    );
    for (path, why) in folder.check(strict)? {
        eprintln!("warning: skipping {}: {why}", path.display());
    }
    if folder.files.is_empty() {
        bail!("{}: no readable images", dir.display());
    }
    Ok(folder)
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Appends one line to OUT/metrics.jsonl.
fn log_metrics(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

/// One epoch's line of OUT/metrics.jsonl.
fn metrics_line(report: &EpochReport) -> String {
    let (test_top1, test_top5) = report.test.unwrap_or((f64::NAN, f64::NAN));
    serde_json::json!({
        "epoch": report.epoch,
        "step": report.step,
        "lr": format!("{}", report.lr).parse::<f64>().unwrap_or(f64::NAN),
        "train_loss": report.train_loss,
        "train_acc": report.train_accuracy,
        "val_acc": report.val_top1,
        "test_top1": test_top1,
        "test_top5": test_top5,
        "images_per_s": report.images_per_s,
        "epoch_seconds": report.seconds,
    })
    .to_string()
}

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Holds OUT/.lock for the run, so a second `alexnet train` on the same folder stops with a
/// clear error instead of interleaving its checkpoints with this one's. The OS releases the
/// lock when the process ends, however it ends (a killed run leaves no stale lock).
fn lock_out(out: &Path) -> Result<std::fs::File> {
    let path = out.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("{}: another `alexnet train` is writing to this folder (it holds {}); wait for it to finish or choose another --out", out.display(), path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Drops the lines of a JSON-lines log whose `key` is above `max` (steps or epochs run after the
/// checkpoint a run resumes from, which it runs again), so each is recorded once.
fn truncate_jsonl(path: &Path, key: &str, max: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v[key].as_u64())
                .is_some_and(|v| v <= max)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(alexnet::runtime::weights::write_atomic(
        path,
        kept.as_bytes(),
    )?)
}

/// Training, validation and (optional) test images.
type Splits = (Box<dyn Source>, Box<dyn Source>, Option<Box<dyn Source>>);

pub fn train(args: &TrainArgs) -> Result<()> {
    let plan = plan_of(&args.model)?;
    if args.batch == 0 || args.batch > plan.max_batch as usize {
        bail!(
            "--batch must be in 1..={} for {}",
            plan.max_batch,
            plan.name
        );
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let _lock = lock_out(&args.out)?;
    // The lock is held, so temporaries here are what killed runs left.
    alexnet::runtime::weights::remove_stale_temporaries(&args.out)?;
    let (train_set, val_set, test_set): Splits = if is_idx(&args.dataset) {
        let (mut train_set, mut test_set) = load(plan, &args.dataset)?;
        if let Some(n) = args.eval_limit {
            test_set = test_set.take(n);
        }
        if let Some(n) = args.limit {
            train_set = train_set.take(n + args.val);
        }
        let val_set = train_set.split_off(args.val);
        (
            Box::new(train_set),
            Box::new(val_set),
            Some(Box::new(test_set)),
        )
    } else {
        let mut folder = scan_folder(&dataset_dir(&args.dataset), args.strict)?;
        if let Some(n) = args.limit {
            folder.files.truncate(n + args.val);
        }
        let base = alexnet::runtime::folder::base_side(plan.input[1]);
        let pca = Pca::of(&folder, base, 256)?;
        let pca_path = args.out.join("pca.txt");
        let text = format!("# RGB covariance of the training images (0-255): eigenvalues, then eigenvectors as columns\n{:?}\n{:?}\n", pca.eigenvalues, pca.eigenvectors);
        alexnet::runtime::weights::write_atomic(&pca_path, text.as_bytes())?;
        let mut train_set = FolderSet::new(folder, plan, Some(pca))?;
        let val_set = train_set.split_every(args.val);
        let test_set = match &args.test_dir {
            Some(dir) => {
                let mut test = scan_folder(dir, args.strict)?;
                if let Some(n) = args.eval_limit {
                    test.files.truncate(n);
                }
                Some(Box::new(FolderSet::new(test, plan, None)?) as Box<dyn Source>)
            }
            None => None,
        };
        (Box::new(train_set), Box::new(val_set), test_set)
    };
    if val_set.len() == 0 && args.lr_steps.is_empty() {
        bail!("--val 0 holds out no validation images, and the default learning-rate schedule divides the rate when the validation error stops improving: give --lr-steps (e.g. --lr-steps 6,8), or hold out images with --val N");
    }
    if train_set.len() < args.batch {
        bail!("{} training images (after holding out {} for validation) is fewer than one batch of {}", train_set.len(), val_set.len(), args.batch);
    }
    let options = TrainOptions {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        momentum: args.momentum,
        decay: args.decay,
        seed: args.seed,
        schedule: if args.lr_steps.is_empty() {
            Schedule::Plateau {
                patience: args.patience,
            }
        } else {
            Schedule::Steps(args.lr_steps.clone())
        },
        flip: !args.no_flip,
        save_every: args.save_every.max(1),
    };
    let ckpt_path = args.out.join("checkpoint.safetensors");
    let metrics = args.out.join("metrics.jsonl");
    let steps_log = args.out.join("steps.jsonl");
    let weights_path = args.out.join("weights.safetensors");
    let (weights, momentum, state) = if args.resume {
        let c = Checkpoint::load(plan, &ckpt_path)
            .with_context(|| "--resume needs the checkpoint of an earlier run in --out")?;
        if c.state.seed != args.seed {
            bail!(
                "{}: the run used seed {}, but --seed is {}",
                ckpt_path.display(),
                c.state.seed,
                args.seed
            );
        }
        eprintln!(
            "resuming at epoch {}, step {} (lr {})",
            c.state.epoch + 1,
            c.state.step,
            c.state.lr
        );
        // Lines written after the checkpoint (by the run that was then stopped or killed) are
        // written again as the run repeats that work.
        truncate_jsonl(&steps_log, "step", u64::from(c.state.step))?;
        truncate_jsonl(&metrics, "epoch", u64::from(c.state.epoch))?;
        (c.weights, Some(c.momentum), c.state)
    } else {
        let _ = std::fs::remove_file(&metrics);
        let _ = std::fs::remove_file(&steps_log);
        let weights = match args.init {
            InitKind::Paper => Weights::init(plan, u64::from(args.seed)),
            InitKind::He => Weights::init_he(plan, u64::from(args.seed)),
        };
        (weights, None, TrainState::new(&options))
    };
    // One device, or the towers on two (`--devices`).
    let towers = args
        .towers
        .open(&args.device, plan, Mode::Training, state.kernels.as_ref())?;
    let one = match towers {
        Some(_) => None,
        None => Some(crate::open_tuned(
            &args.device,
            plan,
            Mode::Training,
            state.kernels.as_ref(),
        )?),
    };
    let gpu = one
        .as_ref()
        .or(towers.as_ref().map(|t| &t[0]))
        .expect("one device or two");
    let mut state = state;
    state.kernels = Some((gpu.adapter_name(), gpu.target));
    let on = match &towers {
        Some([a, b]) => format!("two devices ({} | {})", a.describe(), b.describe()),
        None => gpu.describe(),
    };
    eprintln!(
        "training {} on {on} — {} training, {} validation, {} test images; batch {}, lr {}",
        plan.name,
        train_set.len(),
        val_set.len(),
        test_set.as_ref().map_or(0, |t| t.len()),
        args.batch,
        state.lr
    );
    let mut session: Box<dyn Runner> = match &towers {
        Some([a, b]) => Box::new(TowerSession::for_training([a, b], plan, args.batch as u32)?),
        None => Box::new(Session::for_training(gpu, plan, args.batch as u32)?),
    };
    session.load_weights(&weights)?;
    if let Some(m) = &momentum {
        session.write_momentum(m)?;
    }
    let per_epoch = (train_set.len() / args.batch) as u32;
    let run_start = Instant::now();
    let mut trainer = Trainer::new(
        session.as_mut(),
        plan,
        options.clone(),
        state,
        ckpt_path.clone(),
        args.max_steps,
    );
    // A bar on a terminal; in a log or a pipe (where a bar is not drawn), a plain line for the
    // first step, then every PLAIN_EVERY, and at the end of each epoch.
    let plain = !std::io::stderr().is_terminal();
    let mut last_line: Option<Instant> = None;
    let mut saved_at = None;
    let mut step_lines = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&steps_log)
        .with_context(|| format!("opening {}", steps_log.display()))?;
    while !trainer.finished() {
        let epoch = trainer.state().epoch;
        let progress = bar(
            u64::from(per_epoch),
            "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
        );
        progress.set_prefix(format!("epoch {}/{}", epoch + 1, options.epochs));
        progress.set_position(u64::from(trainer.state().batch_in_epoch));
        let mut logged = Ok(());
        let outcome = trainer.run_epoch(
            train_set.as_ref(),
            val_set.as_ref(),
            test_set.as_deref(),
            |s| {
                let message = format!(
                    "loss {:.4} acc {:.1}% {:.0} img/s",
                    s.loss,
                    100.0 * s.accuracy,
                    s.images_per_s
                );
                if plain
                    && (last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY)
                        || s.batch_in_epoch == per_epoch)
                {
                    eprintln!(
                        "epoch {}/{} step {}/{per_epoch}: {message}",
                        epoch + 1,
                        options.epochs,
                        s.batch_in_epoch
                    );
                    last_line = Some(Instant::now());
                }
                progress.set_message(message);
                progress.set_position(u64::from(s.batch_in_epoch));
                let at =
                    f64::from(epoch) + f64::from(s.batch_in_epoch) / f64::from(per_epoch.max(1));
                let line = serde_json::json!({ "step": s.step, "epoch": at, "loss": s.batch_loss });
                if logged.is_ok() {
                    logged = writeln!(step_lines, "{line}")
                        .with_context(|| format!("writing {}", steps_log.display()));
                }
            },
            // Written before the epoch's checkpoint: see `Trainer::run_epoch`.
            |report| log_metrics(&metrics, &metrics_line(report)),
        )?;
        logged?;
        let report = match outcome {
            Epoch::Stopped => {
                progress.abandon();
                eprintln!(
                    "stopped at step {} (--max-steps); {} continues with --resume",
                    trainer.state().step,
                    ckpt_path.display()
                );
                return Ok(());
            }
            Epoch::Done(report) => report,
        };
        progress.finish();
        // "epoch 3: validation 61.20%, test top-1 60.10% top-5 95.00%; learning rate now 0.001"
        let mut results = Vec::new();
        if let Some(v) = report.val_top1 {
            results.push(format!("validation {:.2}%", 100.0 * v));
        }
        if let Some((top1, top5)) = report.test {
            results.push(format!(
                "test top-1 {:.2}% top-5 {:.2}%",
                100.0 * top1,
                100.0 * top5
            ));
        }
        if results.is_empty() {
            results.push("no validation or test images".into());
        }
        eprintln!(
            "epoch {}: {}{}",
            report.epoch,
            results.join(", "),
            if report.lr_divided {
                format!("; learning rate now {}", trainer.state().lr)
            } else {
                String::new()
            }
        );
        trainer
            .session()
            .read_weights()?
            .save(plan, &weights_path)?;
        saved_at = Some(trainer.state().step);
        crate::plot::plot(&metrics, Some(&steps_log), &args.out.join("curves.png"))?;
    }
    // A run stopped after its last checkpoint but before writing its weights (killed, say)
    // resumes as finished: its weights are the checkpoint's.
    if saved_at != Some(trainer.state().step) {
        eprintln!("the checkpoint is of a finished run; writing its weights and curves");
        trainer
            .session()
            .read_weights()?
            .save(plan, &weights_path)?;
        crate::plot::plot(&metrics, Some(&steps_log), &args.out.join("curves.png"))?;
    }
    eprintln!(
        "done in {:.0} s: weights in {}, metrics in {} (curves in curves.png)",
        run_start.elapsed().as_secs_f64(),
        weights_path.display(),
        metrics.display()
    );
    Ok(())
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let plan = plan_of(&args.model)?;
    if args.batch == 0 || args.batch > plan.max_batch as usize {
        bail!(
            "--batch must be in 1..={} for {}",
            plan.max_batch,
            plan.name
        );
    }
    let weights = Weights::load(plan, &args.weights)?;
    let test: Box<dyn Source> = if is_idx(&args.dataset) {
        let (_, mut test) = load(plan, &args.dataset)?;
        if let Some(n) = args.limit {
            test = test.take(n);
        }
        Box::new(test)
    } else {
        let mut folder = scan_folder(&dataset_dir(&args.dataset), args.strict)?;
        if let Some(n) = args.limit {
            folder.files.truncate(n);
        }
        Box::new(FolderSet::new(folder, plan, None)?)
    };
    let gpu = crate::open_tuned(&args.device, plan, Mode::Inference, None)?;
    let mut session = Session::new(&gpu, plan, args.batch as u32)?;
    session.load_weights(&weights)?;
    let progress = bar(
        test.len() as u64,
        "evaluating [{bar:30}] {pos}/{len} ETA {eta}",
    );
    let start = Instant::now();
    let (top1, top5) = train::evaluate(
        &mut session,
        test.as_ref(),
        args.batch,
        args.ten_crop,
        |n| progress.inc(n as u64),
    )?;
    progress.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} on {} test images{}: top-1 {:.2}%, top-5 {:.2}% ({:.0} images/s on {})",
        plan.name,
        test.len(),
        if args.ten_crop {
            format!(" ({} views each, softmax averaged)", test.views())
        } else {
            String::new()
        },
        100.0 * top1,
        100.0 * top5,
        test.len() as f64 / secs,
        gpu.describe()
    );
    if args.show > 0 {
        let n = args.show.min(test.len()).min(plan.max_batch as usize);
        let mut input = Vec::new();
        for i in 0..n {
            test.eval_input(i, 0, &mut input)?;
        }
        let out = session.forward(&input, n)?;
        let names = crate::labels(plan, None)?;
        for i in 0..n {
            let (class, p) = out.top_k(i, 1)[0];
            let truth = test.label(i) as usize;
            let mark = if class == truth { "✓" } else { "✗" };
            println!(
                "  test image {i:>4}: {mark} {:<12} {:>5.1}%  (true: {})",
                names[class],
                100.0 * p,
                names[truth]
            );
        }
    }
    Ok(())
}

pub fn step(args: &StepArgs) -> Result<()> {
    let plan = plan_of(&args.model)?;
    let weights = Weights::load(plan, &args.weights)?;
    let (input, batch) = npy::read_input(&args.input, plan)?;
    let labels = npy::read_labels(&args.labels, plan.classes())?;
    if labels.len() != batch {
        bail!(
            "{}: {} labels for the {batch} images of {}",
            args.labels.display(),
            labels.len(),
            args.input.display()
        );
    }
    if batch > plan.max_batch as usize {
        bail!(
            "{}: {batch} images, but {} takes at most {} per step",
            args.input.display(),
            plan.name,
            plan.max_batch
        );
    }
    let gpu = Gpu::open(&args.device.options(), plan)?;
    let mut session = Session::for_training(&gpu, plan, batch as u32)?;
    session.load_weights(&weights)?;
    let config = StepConfig {
        lr: args.lr,
        momentum: 0.9,
        decay: args.decay,
        seed: 0,
        step: 0,
        dropout: false,
    };
    let out = session.train_step(&input, &labels, batch, &config)?;
    session.read_weights()?.save(plan, &args.out)?;
    println!(
        "loss {:.6} before the step; wrote the updated weights to {}",
        out.loss,
        args.out.display()
    );
    Ok(())
}
