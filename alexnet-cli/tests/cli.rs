//! The `alexnet` binary end to end: every subcommand, and clear errors for bad input.

use std::path::Path;
use std::process::{Command, Output};

/// The binary, with a kernel-variant cache of the test's own: a test's runs reuse its first
/// measurement, and tests running at once never see each other's.
fn cmd() -> Command {
    thread_local!(static CACHE: tempfile::TempDir = tempfile::tempdir().unwrap());
    let mut c = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    c.env("ALEXNET_CACHE_DIR", CACHE.with(|d| d.path().to_path_buf()))
        .env_remove("ALEXNET_VARIANT");
    c
}

fn alexnet(args: &[&str]) -> Output {
    cmd().args(args).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn compile_names_conv1_and_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("paper224.alexnet");
    std::fs::write(
        &file,
        "/// The paper's net at 224.\npub Paper224 {\n    input: [3, 224, 224],\n    conv1: conv(96, k = 11, s = 4) -> relu,\n    fc: linear(10),\n}\n",
    )
    .unwrap();
    let out = alexnet(&["compile", p(&file)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("paper224.alexnet:4:12: error: conv1: kernel 11 with stride 4 does not tile height and width 224 (use 227"), "{err}");
}

#[test]
fn compile_emits_ir_wgsl_and_dot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.alexnet");
    std::fs::write(&file, "pub Tiny { input: [1, 8, 8], c: conv(4, k = 3) -> relu -> maxpool(k = 2, s = 2), fc: linear(3) -> softmax }").unwrap();
    let ir = stdout(&alexnet(&["compile", p(&file), "--emit", "ir"]));
    assert!(
        ir.contains("%1 = conv %0 {out 4 k3 s1 p0} -> [N,4,6,6] @dev0 ; c"),
        "{ir}"
    );
    let wgsl = stdout(&alexnet(&["compile", p(&file), "--emit", "wgsl"]));
    assert!(
        wgsl.contains("// c_fwd: conv 3x3")
            && wgsl.contains("const WG: u32 = 256u;")
            && wgsl.contains("@compute @workgroup_size(WG)"),
        "{wgsl}"
    );
    // Inference runs the conv block fused: conv + relu + maxpool in one kernel.
    assert!(
        wgsl.contains("// c_fused_fwd: fused conv + relu + maxpool"),
        "{wgsl}"
    );
    assert!(
        ir.contains("#   c_fused_fwd = %1 conv + %2 relu + %3 maxpool ; conv-block"),
        "{ir}"
    );
    let dot = stdout(&alexnet(&["compile", p(&file), "--emit", "dot"]));
    assert!(dot.starts_with("digraph Tiny {"), "{dot}");
}

#[test]
fn info_graph_and_shaders() {
    let info = stdout(&alexnet(&["info", "--model", "alexnet"]));
    assert!(
        info.contains("60965224") && info.contains("724.4"),
        "{info}"
    );
    assert!(
        // The towers run each weight part as a kernel of its own, with LRN and pool apart (a
        // halo is exchanged between them); a one-device net keeps its blocks (below). Each
        // conv weight part's gradient has a slice sum after it (10 kernels).
        info.contains("fusion on: 139 kernels in all, 22 dispatches per forward pass"),
        "{info}"
    );
    assert!(info.contains("device 0 inference"), "{info}");
    // Software adapters have a program (and a memory plan) of their own.
    assert!(
        info.contains("on cpu adapters: fusion epilogue, 22 dispatches per forward pass"),
        "{info}"
    );
    assert!(info.contains("device 0 inference (cpu)"), "{info}");
    // The paper's planned towers: what each device holds and receives per image.
    assert!(info.contains("conv3    towers (half each)   each device receives half the input (86.5 KB/img) for conv3.conv"), "{info}");
    assert!(
        info.contains("device 1: 30482612 parameters")
            && info.contains("receives 151.4 KB/img forward"),
        "{info}"
    );
    assert!(
        info.contains("inference and training run on two devices")
            && info.contains("device 1 tower training"),
        "{info}"
    );
    assert!(
        !info.contains("device 1 inference "),
        "a one-device program places nothing on device 1: {info}"
    );
    let mini = alexnet(&["info", "--model", "alexnet-mini"]);
    assert!(
        mini.status.success() && stdout(&mini).contains("device 0 inference"),
        "{}",
        stderr(&mini)
    );
    assert!(
        !stdout(&mini).contains("two-device split"),
        "a one-device net has no split to report"
    );
    let kernels = stdout(&alexnet(&[
        "info",
        "--model",
        "alexnet",
        "--batch",
        "8",
        "--kernels",
    ]));
    let conv1 = kernels
        .lines()
        .find(|l| l.starts_with("conv1_fused_fwd_part1"))
        .unwrap_or_else(|| panic!("{kernels}"));
    assert!(
        conv1.contains("conv1.conv+conv1.relu") && conv1.contains("gemm 64x64x16"),
        "{conv1}"
    );
    assert!(
        kernels.contains("inference kernels at batch 8")
            && kernels.contains("fc8_linear_bwd_w_part1"),
        "{kernels}"
    );
    let kernels = stdout(&alexnet(&[
        "info",
        "--model",
        "alexnet-torchvision",
        "--batch",
        "8",
        "--kernels",
    ]));
    let conv1 = kernels
        .lines()
        .find(|l| l.starts_with("conv1_fused_fwd"))
        .unwrap_or_else(|| panic!("{kernels}"));
    assert!(
        conv1.contains("conv1.conv+conv1.relu+conv1.maxpool")
            && conv1.contains("conv-block 64x64x16"),
        "{conv1}"
    );
    let bad_batch = alexnet(&["info", "--model", "alexnet", "--batch", "129"]);
    assert!(
        stderr(&bad_batch).contains("--batch must be in 1..=128"),
        "{}",
        stderr(&bad_batch)
    );
    let graph = stdout(&alexnet(&["graph", "--model", "alexnet-torchvision"]));
    assert!(
        graph.contains("conv %0 {out 64 k11 s4 p2 floor} -> [N,64,55,55]"),
        "{graph}"
    );
    let paper = stdout(&alexnet(&[
        "graph", "--model", "alexnet", "--format", "dot",
    ]));
    assert!(
        paper.contains("@towers")
            && paper.contains("[color=red, style=dashed, label=\"86528 B/img to dev0"),
        "{paper}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = alexnet(&["shaders", "--model", "alexnet-mini", "--out", p(dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("conv1_fwd.wgsl").exists());
    let bad = alexnet(&["info", "--model", "vgg"]);
    assert!(stderr(&bad).contains("unknown model `vgg` (expected one of alexnet, alexnet-torchvision, alexnet-mini, or a FILE.alexnet declaration)"));
    // A declaration file works wherever a model name does, its fusion setting included.
    let file = dir.path().join("tiny.alexnet");
    std::fs::write(&file, "pub Tiny { input: [1, 8, 8], fusion: epilogue, c: conv(4, k = 3) -> relu -> maxpool(k = 2, s = 2), fc: linear(3) }").unwrap();
    let tiny = stdout(&alexnet(&["info", "--model", p(&file), "--kernels"]));
    assert!(
        tiny.contains("fusion epilogue: ")
            && tiny.contains("c_fused_fwd")
            && tiny.contains("c_maxpool_fwd"),
        "{tiny}"
    );
}

#[test]
fn init_then_infer_on_npy_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("mini.safetensors");
    let out = alexnet(&[
        "init",
        "--model",
        "alexnet-mini",
        "--seed",
        "3",
        "--out",
        p(&w),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A [2, 1, 28, 28] float32 tensor.
    let x = dir.path().join("x.npy");
    let values: Vec<f32> = (0..2 * 784)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut wr = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[2, 1, 28, 28])
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        wr.extend(values.iter().copied()).unwrap();
        wr.finish().unwrap();
    }
    std::fs::write(&x, bytes).unwrap();
    let y = dir.path().join("y.npy");
    // On a headless machine (no XDG_RUNTIME_DIR), opening the GPU prints no Wayland noise.
    let out = cmd()
        .args([
            "infer",
            "--model",
            "alexnet-mini",
            "--weights",
            p(&w),
            p(&x),
            "--save-logits",
            p(&y),
        ])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("XDG_RUNTIME_DIR"),
        "{}",
        stderr(&out)
    );
    let npy = npyz::NpyFile::new(std::fs::File::open(&y).unwrap()).unwrap();
    assert_eq!(npy.shape(), &[2, 10]);
    // Each image's first line is the softmax of its saved logits' top class, by name.
    let logits: Vec<f32> = npy.into_vec().unwrap();
    let names = [
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
    let text = stdout(&out);
    for (i, row) in logits.chunks(10).enumerate() {
        let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let sum: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
        let want = format!("{:>6.2}%  {:>4}  {}", 100.0 / sum, best, names[best]);
        let header = format!("x.npy[{i}]:");
        let first = text.lines().skip_while(|l| !l.ends_with(&header)).nth(1);
        assert_eq!(first.map(str::trim), Some(want.trim()), "{text}");
    }

    // Two PNG images give the top classes of each.
    let img = dir.path().join("shirt.png");
    image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 5 + y) as u8]))
        .save(&img)
        .unwrap();
    let out = alexnet(&[
        "infer",
        "--model",
        "alexnet-mini",
        "--weights",
        p(&w),
        "--top",
        "3",
        p(&img),
        p(&img),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("shirt.png:").count(), 2);
}

/// `--devices 0,0` opens the one adapter twice and runs the paper's towers on the two
/// logical devices: the logits are one device's, bit for bit; what cannot run on two is
/// refused with a message.
#[test]
fn infer_runs_the_paper_towers_on_two_logical_devices_as_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let values: Vec<f32> = (0..3 * 227 * 227)
        .map(|i| ((i * 53) % 211) as f32 - 105.0)
        .collect();
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut wr = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[1, 3, 227, 227])
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        wr.extend(values.iter().copied()).unwrap();
        wr.finish().unwrap();
    }
    std::fs::write(&x, bytes).unwrap();
    let (one, two) = (dir.path().join("one.npy"), dir.path().join("two.npy"));
    let out = alexnet(&[
        "infer",
        "--model",
        "alexnet",
        "--variant",
        "cpu",
        p(&x),
        "--save-logits",
        p(&one),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = alexnet(&[
        "infer",
        "--model",
        "alexnet",
        "--variant",
        "cpu",
        "--devices",
        "0,0",
        p(&x),
        "--save-logits",
        p(&two),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("on two devices"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&two).unwrap(),
        "two logical devices give one device's logits"
    );
    // A training step on two devices, timed with what its exchanges moved.
    let out = alexnet(&[
        "bench",
        "--model",
        "alexnet",
        "--variant",
        "cpu",
        "--devices",
        "0,0",
        "--train",
        "--batch",
        "1",
        "--iters",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(
        line.contains("batch 1 on two devices")
            && line.contains("per training step")
            && line.contains("in exchanges moving"),
        "{line}"
    );
    for (args, want) in [
        (
            &["infer", "--model", "alexnet", "--devices", "0", p(&x)][..],
            "--devices takes two adapter indices",
        ),
        (
            &["infer", "--model", "alexnet", "--devices", "0,7", p(&x)][..],
            "adapter index 7 is out of range",
        ),
        (
            &["bench", "--model", "alexnet-mini", "--devices", "0,0"][..],
            "AlexNetMini has no two-device program",
        ),
        (
            &[
                "bench",
                "--model",
                "alexnet",
                "--devices",
                "0,0",
                "--kernels",
            ][..],
            "--kernels run on one device",
        ),
        (
            &["train", "--model", "alexnet-mini", "--devices", "0,0"][..],
            "AlexNetMini has no two-device training program",
        ),
    ] {
        let out = alexnet(args);
        assert!(
            !out.status.success() && stderr(&out).contains(want),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("photo.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let out = alexnet(&["infer", "--model", "alexnet-mini", p(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("photo.jpg: cannot decode"),
        "{}",
        stderr(&out)
    );

    let npy = dir.path().join("bad.npy");
    std::fs::write(&npy, b"garbage").unwrap();
    let err = stderr(&alexnet(&["infer", "--model", "alexnet-mini", p(&npy)]));
    assert!(err.contains("bad.npy: not a .npy file"), "{err}");

    let shaped = dir.path().join("shape.npy");
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut wr = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[3, 5])
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        wr.extend(std::iter::repeat_n(0.0f32, 15)).unwrap();
        wr.finish().unwrap();
    }
    std::fs::write(&shaped, &bytes).unwrap();
    let err = stderr(&alexnet(&["infer", "--model", "alexnet-mini", p(&shaped)]));
    assert!(
        err.contains("shape [3, 5], but AlexNetMini takes [N, 1, 28, 28]"),
        "{err}"
    );

    let truncated = dir.path().join("truncated.npy");
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut wr = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[1, 1, 28, 28])
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        wr.extend(std::iter::repeat_n(0.0f32, 784)).unwrap();
        wr.finish().unwrap();
    }
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let err = stderr(&alexnet(&[
        "infer",
        "--model",
        "alexnet-mini",
        p(&truncated),
    ]));
    assert!(
        err.contains("truncated.npy: truncated or unreadable data"),
        "{err}"
    );

    let weights = dir.path().join("w.safetensors");
    std::fs::write(&weights, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let err = stderr(&alexnet(&[
        "infer",
        "--model",
        "alexnet-mini",
        "--weights",
        p(&weights),
        p(&shaped),
    ]));
    assert!(
        err.contains("shape [3, 5]"),
        "inputs are checked before weights: {err}"
    );
    let img = dir.path().join("ok.png");
    image::GrayImage::new(28, 28).save(&img).unwrap();
    let err = stderr(&alexnet(&[
        "infer",
        "--model",
        "alexnet-mini",
        "--weights",
        p(&weights),
        p(&img),
    ]));
    assert!(
        err.contains("w.safetensors") && err.contains("missing tensor `conv1.weight`"),
        "{err}"
    );

    let missing = stderr(&alexnet(&["compile", "/nonexistent/net.alexnet"]));
    assert!(
        missing.contains("reading /nonexistent/net.alexnet"),
        "{missing}"
    );
}

#[test]
fn devices_lists_an_adapter() {
    let out = alexnet(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("[0] "), "{}", stdout(&out));
    let bad = alexnet(&["devices", "--backend", "glide"]);
    assert!(stderr(&bad).contains("unknown backend `glide`"));
}

#[test]
fn selftest_prints_a_table_and_names_a_broken_shader() {
    let out = alexnet(&["selftest", "--model", "alexnet-mini"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let row = text
        .lines()
        .find(|l| l.starts_with("fc7_sgd_w "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("training") && row.contains("update") && row.contains(" ok "),
        "{row}"
    );
    assert!(text.contains("kernel checks passed"), "{text}");

    // A hand-edited shader (as a user optimising one would write it) with a bug.
    let dir = tempfile::tempdir().unwrap();
    assert!(
        alexnet(&["shaders", "--model", "alexnet-mini", "--out", p(dir.path())])
            .status
            .success()
    );
    // Every form of it, whichever the adapter runs (`cpu-sg8` reads its vec4 arrays as
    // 64-bit words, so its store packs the value).
    for (file, from, to) in [
        ("fc7_sgd_w.wgsl", "m[i] = v;", "m[i] = v * 1.5;"),
        ("fc7_sgd_w.cpu.wgsl", "m[i] = v;", "m[i] = v * 1.5;"),
        (
            "fc7_sgd_w.cpu-sg8.wgsl",
            "m[i] = pack_f32x4(v);",
            "m[i] = pack_f32x4(v * 1.5);",
        ),
    ] {
        let path = dir.path().join(file);
        if let Ok(wgsl) = std::fs::read_to_string(&path) {
            assert!(wgsl.contains(from), "{file} has no `{from}`");
            std::fs::write(&path, wgsl.replace(from, to)).unwrap();
        }
    }
    let out = alexnet(&[
        "selftest",
        "--model",
        "alexnet-mini",
        "--shaders",
        p(dir.path()),
    ]);
    assert!(!out.status.success());
    let (text, err) = (stdout(&out), stderr(&out));
    let row = text
        .lines()
        .find(|l| l.starts_with("fc7_sgd_w "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("FAIL") && row.contains("momentum of fc7.weight"),
        "{row}"
    );
    assert!(
        err.contains("1 of ") && err.contains("kernel checks failed: fc7_sgd_w"),
        "{err}"
    );

    let out = alexnet(&[
        "selftest",
        "--model",
        "alexnet-mini",
        "--shaders",
        "/nonexistent-shaders",
    ]);
    assert!(
        stderr(&out).contains("/nonexistent-shaders: not a folder of WGSL files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_times_hand_edited_shaders_and_names_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        alexnet(&["shaders", "--model", "alexnet-mini", "--out", p(dir.path())])
            .status
            .success()
    );
    let bench = [
        "bench",
        "--model",
        "alexnet-mini",
        "--batch",
        "2",
        "--iters",
        "1",
        "--shaders",
        p(dir.path()),
    ];
    let out = alexnet(&bench);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("kernels replaced from {}", dir.path().display())),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("median"), "{}", stdout(&out));

    // What is timed is the files' WGSL: a broken one stops the run, naming its kernel.
    std::fs::write(dir.path().join("fc8_fused_fwd.wgsl"), "fn main( {").unwrap();
    let out = alexnet(&bench);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("fc8_fused_fwd"), "{}", stderr(&out));
}

#[test]
fn kernel_variants_are_measured_once_then_cached() {
    let cache = tempfile::tempdir().unwrap();
    let bench = |variant: Option<&str>| {
        let mut c = cmd();
        c.env("ALEXNET_CACHE_DIR", cache.path()).args([
            "bench",
            "--model",
            "alexnet-mini",
            "--batch",
            "2",
            "--iters",
            "1",
        ]);
        if let Some(v) = variant {
            c.env("ALEXNET_VARIANT", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let first = bench(None);
    let err = stderr(&first);
    let chosen = err
        .split("kernel variants: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("nothing measured: {err}"));
    assert!(
        err.contains("measured on this adapter, best pass of each: gpu ") && err.contains(", cpu "),
        "{err}"
    );
    assert!(
        stdout(&first).contains(&format!("{chosen} kernels")),
        "{}",
        stdout(&first)
    );
    let table = std::fs::read_to_string(cache.path().join("variants.tsv")).unwrap();
    assert!(
        table.lines().count() == 1
            && table.contains("AlexNetMini")
            && table.contains(&format!("\t{chosen}\t")),
        "{table}"
    );
    // The second run reads the choice instead of measuring, and runs it.
    let second = bench(None);
    assert!(!stderr(&second).contains("measured"), "{}", stderr(&second));
    assert!(
        stdout(&second).contains(&format!("{chosen} kernels")),
        "{}",
        stdout(&second)
    );
    // A forced variant is never measured.
    let forced = bench(Some("gpu"));
    assert!(
        !stderr(&forced).contains("measured") && stdout(&forced).contains("gpu kernels"),
        "{}",
        stdout(&forced)
    );
}
