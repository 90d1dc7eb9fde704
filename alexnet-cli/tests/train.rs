//! `alexnet train`, `eval` and `step` end to end on real Fashion-MNIST (the Debian package
//! `dataset-fashion-mnist`, which `.ci/run` installs).

use std::path::Path;
use std::process::{Command, Output};

/// The binary, with a kernel-variant cache of the test's own: a test's runs reuse its first
/// measurement, and tests running at once never see each other's.
fn cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    c.env("ALEXNET_CACHE_DIR", cache_dir())
        .env_remove("ALEXNET_VARIANT");
    c
}

fn cache_dir() -> std::path::PathBuf {
    thread_local!(static CACHE: tempfile::TempDir = tempfile::tempdir().unwrap());
    CACHE.with(|d| d.path().to_path_buf())
}

fn alexnet(args: &[&str]) -> Output {
    cmd().args(args).output().expect("the binary runs")
}

fn ok(o: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "failed:\n{out}\n{err}");
    format!("{out}{err}")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// 8 steps of 32 on 256 training images, evaluated on 64 held-out and 64 test images.
const SMALL: [&str; 12] = [
    "--limit",
    "256",
    "--val",
    "64",
    "--eval-limit",
    "64",
    "--batch",
    "32",
    "--epochs",
    "1",
    "--seed",
    "5",
];

/// `--val 0` holds out nothing: the epoch reports no validation accuracy (null in
/// metrics.jsonl, none printed), and the plateau schedule, which needs one, is refused.
#[test]
fn training_without_a_validation_set_reports_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = SMALL.to_vec();
    args[3] = "0";
    let refused = alexnet(&[&["train", "--out", p(dir.path())][..], &args].concat());
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("give --lr-steps"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = ok(&alexnet(
        &[
            &["train", "--out", p(dir.path()), "--lr-steps", "2"][..],
            &args,
        ]
        .concat(),
    ));
    assert!(out.contains("epoch 1: test top-1 "), "{out}");
    assert!(!out.contains("validation 0.00%"), "{out}");
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(metrics.trim()).unwrap();
    assert!(
        line["val_acc"].is_null() && line["test_top1"].as_f64().is_some(),
        "{metrics}"
    );
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let full = ok(&alexnet(&[&["train", "--out", p(&a)][..], &SMALL].concat()));
    // stderr is a pipe here: plain progress lines, not a bar that is never drawn.
    assert!(
        full.contains("epoch 1/1 step 1/8: loss") && full.contains("epoch 1/1 step 8/8: loss"),
        "{full}"
    );
    let stopped = ok(&alexnet(
        &[&["train", "--out", p(&b), "--max-steps", "3"][..], &SMALL].concat(),
    ));
    assert!(stopped.contains("stopped at step 3"), "{stopped}");
    assert!(b.join("checkpoint.safetensors").exists() && !b.join("weights.safetensors").exists());
    // The resume keeps the kernel variants the run started with, even with the measurement
    // cache gone.
    let chosen = full
        .split("kernel variants: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{full}"))
        .to_string();
    std::fs::remove_file(cache_dir().join("variants.tsv")).unwrap();
    let resumed = ok(&alexnet(
        &[&["train", "--out", p(&b), "--resume"][..], &SMALL].concat(),
    ));
    assert!(resumed.contains("resuming at epoch 1, step 3"), "{resumed}");
    assert!(
        resumed.contains(&format!(
            "kernel variants: {chosen} (those the run started with on "
        )),
        "{resumed}"
    );
    let (wa, wb) = (
        std::fs::read(a.join("weights.safetensors")).unwrap(),
        std::fs::read(b.join("weights.safetensors")).unwrap(),
    );
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run's"
    );
    // Every step's loss, once each, the same after a resume as without one.
    let steps = std::fs::read_to_string(a.join("steps.jsonl")).unwrap();
    let numbers: Vec<u64> = steps
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>(), "{steps}");
    assert_eq!(
        steps,
        std::fs::read_to_string(b.join("steps.jsonl")).unwrap()
    );
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    assert!(
        metrics.contains("\"epoch\":1,")
            && metrics.contains("\"step\":8,")
            && metrics.contains("\"test_top1\":0."),
        "{metrics}"
    );
    let curves = image::open(a.join("curves.png")).expect("a PNG of the curves");
    assert_eq!((curves.width(), curves.height()), (1000, 420));

    // The trained weights load for evaluation, which shows predictions.
    let eval = ok(&alexnet(&[
        "eval",
        "--weights",
        p(&a.join("weights.safetensors")),
        "--show",
        "3",
        "--limit",
        "100",
    ]));
    assert!(
        eval.contains("on 100 test images: top-1") && eval.contains("test image    2:"),
        "{eval}"
    );
}

/// SIGKILL at pseudo-random moments, with a checkpoint written every step and every write
/// paused halfway so that many kills land during a write, then `--resume` (or a fresh start
/// before the first checkpoint) until the run ends: every resume loads a whole checkpoint, and
/// the weights and the per-step losses equal an uninterrupted run's.
///
/// The kill moments follow the run's own progress, not the wall clock, so they land alike on
/// a fast machine and on a slow one (a debug build under the validation layer takes seconds to
/// start): most runs are killed a random 0–3 steps after their first step line, a random
/// 0–149 ms into the step (each step's checkpoint write pauses 100 ms, so many kills land in
/// a write); one in six is killed while it starts, at a random point of the previous start's
/// measured duration.
#[test]
fn killed_at_random_moments_and_resumed_equals_uninterrupted() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // 256 steps of 2 images: enough that 50 kills land before the run ends.
    let run = [
        "--limit",
        "576",
        "--val",
        "64",
        "--eval-limit",
        "64",
        "--batch",
        "2",
        "--epochs",
        "1",
        "--seed",
        "9",
        "--save-every",
        "1",
    ];
    ok(&alexnet(&[&["train", "--out", p(&a)][..], &run].concat()));
    // A fixed LCG: the kill points are the same on every run of the test.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let (mut kills, mut resumes, mut in_writes, mut startup_kills) = (0, 0, 0, 0);
    let mut resumed_at = Vec::new();
    let temporaries = |dir: &Path| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".tmp"))
            })
            .count()
        })
    };
    let steps_logged = |dir: &Path| {
        std::fs::read(dir.join("steps.jsonl"))
            .map_or(0, |t| t.iter().filter(|&&c| c == b'\n').count())
    };
    // Spawn to first step line, as last measured (a first guess until then).
    let mut startup = Duration::from_secs(1);
    let finished = loop {
        let resume = b.join("checkpoint.safetensors").exists();
        let mut args = vec!["train", "--out", p(&b)];
        args.extend(run);
        if resume {
            args.push("--resume");
            resumes += 1;
        }
        // Every atomic write pauses mid-file, so many kills land inside a write.
        let spawned = Instant::now();
        let mut child = cmd()
            .args(&args)
            .env("ALEXNET_WRITE_DELAY_MS", "100")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // stderr line by line, as it comes: the first step line says the run is training.
        let (lines, received) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        // When to kill: after `steps` more logged steps than at the first step line, plus
        // `offset`; or at `offset` after the spawn (a kill while it starts); never after 50 kills.
        let (during_startup, steps, offset) = if kills >= 50 {
            (false, u64::MAX, Duration::ZERO)
        } else if kills > 0 && random(6) == 0 {
            let at = random(startup.as_millis() as u64 + 1);
            (true, 0, Duration::from_millis(at))
        } else {
            (false, random(4), Duration::from_millis(random(150)))
        };
        let mut text = String::new();
        let mut trained_from: Option<usize> = None;
        let mut reached: Option<Instant> = None;
        let exited = loop {
            while let Ok(line) = received.try_recv() {
                if trained_from.is_none() && line.starts_with("epoch 1/1 step ") {
                    trained_from = Some(steps_logged(&b));
                    startup = spawned.elapsed();
                }
                text.push_str(&line);
                text.push('\n');
            }
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if reached.is_none()
                && (during_startup
                    || trained_from.is_some_and(|from| {
                        steps_logged(&b) as u64 >= (from as u64).saturating_add(steps)
                    }))
            {
                reached = Some(if during_startup {
                    spawned
                } else {
                    Instant::now()
                });
            }
            if reached.is_some_and(|t| t.elapsed() >= offset) {
                break None;
            }
            assert!(
                spawned.elapsed() < Duration::from_secs(600),
                "a run hung after {kills} kills:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        if exited.is_none() {
            child.kill().unwrap();
        }
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(line) = received.try_recv() {
            text.push_str(&line);
            text.push('\n');
        }
        if let Some(status) = exited {
            assert!(
                status.success(),
                "a run after {kills} kills failed:\n{text}"
            );
            break kills;
        }
        kills += 1;
        startup_kills += usize::from(during_startup);
        // A write cut short leaves its temporary file (the next run removes it).
        in_writes += usize::from(temporaries(&b) > 0);
        if let Some(step) = text
            .split("resuming at epoch 1, step ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
        {
            resumed_at.push(step.parse::<u32>().unwrap());
        }
    };
    eprintln!(
        "{finished} kills ({in_writes} during a checkpoint write, {startup_kills} while starting), \
         {resumes} resumes, at steps {resumed_at:?}"
    );
    assert!(
        finished >= 50 && resumes > 0 && in_writes > 0 && startup_kills > 0,
        "{finished} kills ({in_writes} during a write, {startup_kills} while starting), {resumes} resumes"
    );
    // A kill never loses a step already checkpointed, and leaves no temporary behind a run.
    assert!(
        resumed_at.windows(2).all(|w| w[0] <= w[1]),
        "resumed at steps {resumed_at:?}"
    );
    assert_eq!(
        temporaries(&b),
        0,
        "stale temporary files in {}",
        b.display()
    );
    let (wa, wb) = (
        std::fs::read(a.join("weights.safetensors")).unwrap(),
        std::fs::read(b.join("weights.safetensors")).unwrap(),
    );
    assert!(
        wa == wb,
        "after {finished} kills the weights differ from the uninterrupted run's"
    );
    let steps = |dir: &Path| std::fs::read_to_string(dir.join("steps.jsonl")).unwrap();
    assert_eq!(
        steps(&a),
        steps(&b),
        "after {finished} kills the per-step losses differ"
    );
    // The epoch's record is there once, with the numbers of the uninterrupted run (its
    // training loss and accuracy cover the whole epoch, not the part after the last resume);
    // only the timings differ.
    let metrics = |dir: &Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                assert!(
                    o.remove("images_per_s").is_some() && o.remove("epoch_seconds").is_some(),
                    "{l}"
                );
                v
            })
            .collect()
    };
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma.len(), 1);
    assert_eq!(ma, mb, "after {finished} kills the epoch's metrics differ");
    assert!(b.join("curves.png").exists());
}

/// A write that fails for lack of space (here: files capped at 1 MiB with `ulimit -f`, so the
/// 2.7 MB checkpoint fails with EFBIG as a full disk fails with ENOSPC) stops training with
/// an error naming the file, and leaves the previous checkpoint whole and resumable.
#[test]
fn a_failed_checkpoint_write_is_a_clear_error_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    ok(&alexnet(
        &[&["train", "--out", p(&out), "--max-steps", "2"][..], &SMALL].concat(),
    ));
    let checkpoint = out.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    // SIGXFSZ ignored, so the write returns an error instead of killing the process.
    let capped = Command::new("bash")
        .env("ALEXNET_CACHE_DIR", cache_dir())
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_alexnet"),
        ])
        .args(
            [
                &["train", "--out", p(&out), "--resume", "--save-every", "1"][..],
                &SMALL,
            ]
            .concat(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&capped.stderr);
    assert!(
        !capped.status.success() && err.contains("checkpoint.safetensors: File too large"),
        "{err}"
    );
    assert!(
        std::fs::read(&checkpoint).unwrap() == before,
        "the failed save changed the checkpoint"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp")),
        "a temporary file was left: {names:?}"
    );
    let resumed = ok(&alexnet(
        &[&["train", "--out", p(&out), "--resume"][..], &SMALL].concat(),
    ));
    assert!(resumed.contains("resuming at epoch 1, step 2"), "{resumed}");
}

#[test]
fn training_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = alexnet(&[
        "train",
        "--dataset",
        p(dir.path()),
        "--out",
        p(&dir.path().join("r")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("no images: expected <class>/<image>.jpg|png sub-folders"),
        "{err}"
    );
    let idx = dir.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    std::fs::write(idx.join("train-images-idx3-ubyte"), [0u8, 0, 8, 3]).unwrap();
    let out = alexnet(&[
        "train",
        "--dataset",
        p(&idx),
        "--out",
        p(&dir.path().join("r")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no train-labels-idx1-ubyte[.gz] here"),
        "{err}"
    );
    let out = alexnet(&[
        "train",
        "--model",
        "alexnet",
        "--out",
        p(&dir.path().join("r")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("images are 1×28×28, but AlexNet takes [3, 227, 227]"),
        "{err}"
    );
    // A second run on a folder a running one holds is refused.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let held = std::fs::File::create(busy.join(".lock")).unwrap();
    held.try_lock().unwrap();
    let out = alexnet(&["train", "--out", p(&busy)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another `alexnet train` is writing to this folder"),
        "{err}"
    );
    drop(held);
    let out = alexnet(&["train", "--resume", "--out", p(&dir.path().join("none"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--resume needs the checkpoint"),
        "{err}"
    );
}

#[test]
fn one_sgd_step_from_the_command_line() {
    use alexnet::runtime::reference;
    let plan = alexnet::models::by_name("alexnet-mini").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Fan-in-scaled weights from a fixed LCG, so max-pool windows hold no near-ties.
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let tensors = plan.params.iter().map(|p| {
        let scale = if p.shape.len() > 1 {
            (6.0 / p.row_elems() as f32).sqrt()
        } else {
            0.1
        };
        (0..p.elems()).map(|_| next() * scale).collect()
    });
    let weights = alexnet::Weights {
        tensors: tensors.collect(),
    };
    let w = dir.path().join("w.safetensors");
    weights.save(plan, &w).unwrap();
    let input: Vec<f32> = (0..2 * 784)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.286)
        .collect();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy(
        &x,
        "<f4",
        &[2, 1, 28, 28],
        &input
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    write_npy(
        &y,
        "<i8",
        &[2],
        &[3i64, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let out = dir.path().join("w2.safetensors");
    let text = ok(&alexnet(&[
        "step",
        "--model",
        "alexnet-mini",
        "--weights",
        p(&w),
        "--input",
        p(&x),
        "--labels",
        p(&y),
        "--lr",
        "0.1",
        "--out",
        p(&out),
    ]));

    // The reference's step: w - lr * (decay * w + dL/dw), from zero momentum, dropout off.
    let params: Vec<Vec<f64>> = weights
        .tensors
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let grads = reference::backward(
        plan,
        &params,
        input.iter().map(|&v| f64::from(v)).collect(),
        &[3, 7],
        2,
    );
    assert!(
        text.contains(&format!("loss {:.4}", grads.loss)),
        "{text} vs reference loss {}",
        grads.loss
    );
    let updated = alexnet::Weights::load(plan, &out).unwrap();
    for (i, p) in plan.params.iter().enumerate() {
        // Compare the change itself, which is small next to the weights.
        let want: Vec<f64> = params[i]
            .iter()
            .zip(&grads.params[i])
            .map(|(w, g)| -0.1 * (0.0005 * w + g))
            .collect();
        let got: Vec<f64> = updated.tensors[i]
            .iter()
            .zip(&weights.tensors[i])
            .map(|(&a, &b)| f64::from(a) - f64::from(b))
            .collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(
            err < 1e-3,
            "the step of `{}` differs from the reference's by {err:e}",
            p.name
        );
    }

    write_npy(
        &y,
        "<i8",
        &[2],
        &[3i64, 12]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let bad = alexnet(&[
        "step",
        "--model",
        "alexnet-mini",
        "--weights",
        p(&w),
        "--input",
        p(&x),
        "--labels",
        p(&y),
        "--out",
        p(&out),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("label 12 of image 1 is not one of the 10 classes"),
        "{err}"
    );
}

/// A version 1.0 .npy file.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn strict_refuses_unreadable_images_before_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        image::RgbImage::from_pixel(300, 260, image::Rgb([9, 99, 199]))
            .save(dir.path().join(class).join("ok.png"))
            .unwrap();
    }
    std::fs::write(dir.path().join("dog/truncated.jpg"), [0xff, 0xd8, 0xff]).unwrap();
    let out = alexnet(&[
        "train",
        "--model",
        "alexnet-torchvision",
        "--dataset",
        p(dir.path()),
        "--strict",
        "--out",
        p(&dir.path().join("run")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("truncated.jpg: unreadable image (1 of 3 unreadable"),
        "{err}"
    );
    assert!(!dir.path().join("run/checkpoint.safetensors").exists());
}

#[test]
fn divergence_stops_training_and_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = alexnet(&[
        "train",
        "--init",
        "he",
        "--lr",
        "1e9",
        "--limit",
        "96",
        "--val",
        "32",
        "--eval-limit",
        "32",
        "--batch",
        "32",
        "--out",
        p(&run),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("training diverged at step"),
        "{err}"
    );
    assert!(
        err.contains("the gradient of `") || err.contains("the logits overflowed"),
        "{err}"
    );
    assert!(!run.join("weights.safetensors").exists());
}
