//! Hostile files never panic and never allocate unboundedly: a corpus test and a time-boxed
//! mutation fuzzer for every reader of user files (safetensors weights and checkpoints, `.npy`
//! inputs and labels, IDX datasets, images) and for the DSL compiler.
//!
//! The corpus is `tests/corpus/KIND/` (written by `tests/corpus/make.py`): `valid-*` files must
//! load, every other file must be refused with an error naming the file. The fuzzer mutates the
//! corpus (bit flips, interesting integers, truncation, splices) for `ALEXNET_FUZZ_SECS` seconds
//! per reader (default 10) from a seed printed at the start (`ALEXNET_FUZZ_SEED` repeats a run;
//! the default seed is fixed, `ALEXNET_FUZZ_SEED=random` draws one).
//! Every input runs with a per-allocation cap: a reader asking for more than `ALLOC_CAP` bytes
//! at once aborts the test. A panicking input is saved under `target/fuzz-crashes/`; add it to
//! the corpus with the fix.

use alexnet::runtime::train::Checkpoint;
use alexnet::runtime::{data, idx, npy, Weights};
use alexnet::{alexnet, Plan};
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest single allocation a reader may make for an input of this corpus's size.
const ALLOC_CAP: usize = 160 << 20;

thread_local! {
    static CAPPED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, refusing (so aborting on) any single allocation above
/// [`ALLOC_CAP`] on a thread running a reader.
struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP && CAPPED.with(Cell::get) {
            eprintln!(
                "a reader asked for {} bytes at once (cap {ALLOC_CAP})",
                layout.size()
            );
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP && CAPPED.with(Cell::get) {
            eprintln!("a reader asked to grow a buffer to {new_size} bytes (cap {ALLOC_CAP})");
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

alexnet! {
    /// The net the corpus's weights, checkpoints and inputs are for.
    Tiny {
        input: [1, 6, 6],
        c: conv(2, k = 3) -> relu,
        fc: linear(3),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Safetensors,
    Npy,
    Idx,
    Images,
    Dsl,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Safetensors,
        Kind::Npy,
        Kind::Idx,
        Kind::Images,
        Kind::Dsl,
    ];

    fn dir(self) -> &'static str {
        match self {
            Kind::Safetensors => "safetensors",
            Kind::Npy => "npy",
            Kind::Idx => "idx",
            Kind::Images => "images",
            Kind::Dsl => "dsl",
        }
    }

    /// Runs every reader of this kind on `path`, with allocations capped; `Ok` when one
    /// accepted it, else every error's text (each must name the file).
    fn read(self, path: &Path) -> Result<(), Vec<String>> {
        let plan: &Plan = &Tiny::PLAN;
        CAPPED.with(|c| c.set(true));
        let results: Vec<Result<(), String>> = match self {
            Kind::Safetensors => vec![
                Weights::load(plan, path)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Checkpoint::load(plan, path)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            ],
            Kind::Npy => vec![
                npy::read_input(path, plan)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                npy::read_labels(path, plan.classes())
                    .map(drop)
                    .map_err(|e| e.to_string()),
            ],
            Kind::Idx => vec![
                idx::read_images(path).map(drop).map_err(|e| e.to_string()),
                idx::read_labels(path).map(drop).map_err(|e| e.to_string()),
            ],
            Kind::Images => vec![data::load_image(path, plan)
                .map(drop)
                .map_err(|e| e.to_string())],
            Kind::Dsl => {
                let source = std::fs::read(path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // The compiler's errors carry spans, not the file: the CLI adds it.
                vec![alexnet_compiler::compile_str(&source)
                    .map(drop)
                    .map_err(|e| {
                        format!(
                            "{}: {}",
                            path.display(),
                            e.0.first().map(|e| e.to_string()).unwrap_or_default()
                        )
                    })]
            }
        };
        CAPPED.with(|c| c.set(false));
        if results.iter().any(Result::is_ok) {
            Ok(())
        } else {
            Err(results.into_iter().filter_map(Result::err).collect())
        }
    }
}

fn corpus(kind: Kind) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(kind.dir());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_is_read_or_refused_with_an_error_naming_it() {
    let mut counts = Vec::new();
    for kind in Kind::ALL {
        let files = corpus(kind);
        assert!(
            files.len() >= 8,
            "{}: only {} corpus files",
            kind.dir(),
            files.len()
        );
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy();
            match kind.read(path) {
                Ok(()) => assert!(name.starts_with("valid-"), "{}: accepted", path.display()),
                Err(errors) => {
                    assert!(
                        !name.starts_with("valid-"),
                        "{}: refused: {errors:?}",
                        path.display()
                    );
                    for e in &errors {
                        assert!(
                            e.contains(&*path.to_string_lossy()),
                            "the error does not name the file: {e}"
                        );
                    }
                }
            }
        }
        counts.push(format!("{} {}", files.len(), kind.dir()));
    }
    println!("corpus: {}", counts.join(", "));
}

#[test]
fn corpus_errors_say_what_is_wrong() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let refused = |kind: &str, file: &str| -> String {
        Kind::ALL
            .iter()
            .find(|k| k.dir() == kind)
            .unwrap()
            .read(&dir.join(kind).join(file))
            .unwrap_err()
            .join(" | ")
    };
    let cases = [
        ("safetensors", "nan-filled.safetensors", "element 0 is NaN"),
        (
            "safetensors",
            "wrong-shape.safetensors",
            "has shape [32, 3], expected [3, 32]",
        ),
        (
            "safetensors",
            "header-length-huge.safetensors",
            "not a valid safetensors file",
        ),
        (
            "safetensors",
            "checkpoint-bad-metadata.safetensors",
            "checkpoint metadata `epoch` = `one` is not a number",
        ),
        ("npy", "shape-lies.npy", "needs more data than the file's"),
        (
            "npy",
            "header-length-huge.npy",
            "header of 4294967295 bytes is longer than the file",
        ),
        ("npy", "nan-filled.npy", "value 0 is not finite"),
        (
            "npy",
            "labels-out-of-range.npy",
            "label 99 of image 1 is not one of the 3 classes",
        ),
        (
            "idx",
            "claims-16-gib.idx.gz",
            "claims more than the 1073741824-byte limit",
        ),
        (
            "idx",
            "bomb-longer-than-header.idx.gz",
            "holds more bytes of data, but its header [10, 28, 28] says 7840",
        ),
        ("idx", "corrupt-gzip.idx.gz", "corrupt gzip data"),
        ("images", "bomb-16384x16384.png", "cannot decode"),
        ("images", "bomb-wide-but-thin-data.png", "cannot decode"),
        (
            "dsl",
            "unclosed-brace.alexnet",
            "cannot read the declaration",
        ),
        (
            "npy",
            "fuzz-shape-product-overflow.npy",
            "needs more data than the file",
        ),
        (
            "dsl",
            "fuzz-shape-overflow.alexnet",
            "storage binding limit",
        ),
    ];
    for (kind, file, want) in cases {
        let got = refused(kind, file);
        assert!(
            got.contains(want),
            "{kind}/{file}: `{got}` does not say `{want}`"
        );
    }
}

/// One mutation of `input`, drawing from `seeds` for splices.
fn mutate(rng: &mut impl Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: [u64; 9] = [
        0,
        1,
        0x7f,
        0xff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        1 << 40,
        u64::MAX,
    ];
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = rng.random();
            }
            2 if len > 0 => input.truncate(rng.random_range(0..len)),
            3 if len >= 8 => {
                let (v, width) = (
                    INTERESTING[rng.random_range(0..INTERESTING.len())],
                    [1usize, 2, 4, 8][rng.random_range(0..4)],
                );
                let i = rng.random_range(0..=len - width);
                let bytes = if rng.random() {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                input[i..i + width].copy_from_slice(if rng.random() {
                    &bytes[..width]
                } else {
                    &bytes[8 - width..]
                });
            }
            4 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                input.splice(i..i, bytes);
            }
            5 if len > 1 => {
                // Duplicate a chunk (repeated headers, doubled tokens).
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len.min(a + 64));
                let chunk = input[a..=b].to_vec();
                input.splice(a..a, chunk);
            }
            _ => {
                // Splice: this input's head, another seed's tail.
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
}

fn fuzz(kind: Kind) {
    let secs: u64 = std::env::var("ALEXNET_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // A fixed seed by default, so a CI run is repeatable (how far it gets depends only on the
    // machine's speed); `ALEXNET_FUZZ_SEED=random` explores new inputs on every run.
    let seed: u64 = match std::env::var("ALEXNET_FUZZ_SEED").as_deref() {
        Ok("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        Ok(v) => v.parse().unwrap_or_else(|_| {
            panic!("ALEXNET_FUZZ_SEED must be a number or `random`, not `{v}`")
        }),
        Err(_) => 0x0a1e_c5e7,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let seeds: Vec<Vec<u8>> = corpus(kind)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| b.len() < 1 << 20)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
    // Keep the file's extension: images are recognised by content, but the name shows in errors.
    let ext = corpus(kind)[0]
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.path().join(format!("input.{ext}"));
    let (start, budget) = (Instant::now(), Duration::from_secs(secs));
    let (mut runs, mut accepted) = (0u64, 0u64);
    while start.elapsed() < budget {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        std::fs::write(&path, &input).unwrap();
        match std::panic::catch_unwind(|| kind.read(&path)) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(errors)) => {
                for e in errors {
                    assert!(
                        e.contains(&*path.to_string_lossy()),
                        "{}: an error does not name the file: {e}",
                        kind.dir()
                    );
                }
            }
            Err(panic) => {
                CAPPED.with(|c| c.set(false));
                std::fs::create_dir_all(&crashes).unwrap();
                let saved = crashes.join(format!("{}-{seed}-{runs}.{ext}", kind.dir()));
                std::fs::write(&saved, &input).unwrap();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{}: input {runs} of seed {seed} panicked ({message}); saved to {}",
                    kind.dir(),
                    saved.display()
                );
            }
        }
        runs += 1;
    }
    println!(
        "fuzz {}: {runs} inputs in {secs} s ({accepted} accepted), seed {seed}",
        kind.dir()
    );
    assert!(runs > 0);
}

#[test]
fn fuzz_safetensors() {
    fuzz(Kind::Safetensors);
}

#[test]
fn fuzz_npy() {
    fuzz(Kind::Npy);
}

#[test]
fn fuzz_idx() {
    fuzz(Kind::Idx);
}

#[test]
fn fuzz_images() {
    fuzz(Kind::Images);
}

#[test]
fn fuzz_dsl() {
    fuzz(Kind::Dsl);
}
