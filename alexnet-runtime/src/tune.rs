//! Picks the kernel variants an adapter runs a plan with, by measuring them on first use.
//!
//! The compiler emits every kernel in a form for GPUs and one for software adapters (and,
//! where fusion pays differently, an inference program of each), and a third form for
//! software adapters with 8-lane subgroups and 64-bit integers (`cpu-sg8`: subgroup GEMMs,
//! 64-bit loads), measured only where the device runs it. Which runs faster is a
//! property of the adapter and its driver, so [`Gpu::tune`] runs the plan's program for the
//! mode once in each [`Target`]'s variants and keeps the faster. The choice is cached, keyed
//! by adapter, backend, driver, the plan's kernels and the mode, so a later run of the same
//! plan on the same adapter and driver reuses it without measuring (and a resumed training run
//! keeps the kernels it started with). A forced variant (`--variant`, `ALEXNET_VARIANT`) is
//! never measured.
//!
//! The cache is one text file, `variants.tsv`, in `ALEXNET_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/alexnet`, else `$HOME/.cache/alexnet`; it is written atomically. A cache
//! that cannot be read is no entry, one that cannot be written is left as it is (with a
//! warning in the log): it only saves time. Processes that measure at once may each write
//! their line; one of them is kept, and the others measure again next time.
//!
//! The guess by adapter kind stays unless another variant is more than [`SWITCH_MARGIN`]
//! times faster (best of [`PASSES`] passes each), so noise does not flip a clear default.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::session::{Mode, Session, StepConfig};
use crate::weights::Weights;
use alexnet_plan::{Plan, Target};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Instant;

/// Images per pass when measuring: enough to fill a few workgroups, few enough that the
/// paper's net measures in seconds on a software adapter.
const MEASURE_BATCH: u32 = 2;

/// Timed passes per variant (after a warm-up); the fastest counts.
const PASSES: usize = 3;

/// How much faster than the adapter kind's guess another variant must be to replace it.
const SWITCH_MARGIN: f64 = 1.1;

/// What [`Gpu::tune`] decided and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuned {
    /// The variants sessions on the device now run.
    pub target: Target,
    pub how: How,
}

/// How a [`Tuned`] choice was made.
#[derive(Clone, Debug, PartialEq)]
pub enum How {
    /// Asked for (`--variant`, `ALEXNET_VARIANT`).
    Forced,
    /// Read from the cache file.
    Cached(PathBuf),
    /// Measured now: seconds of one pass in each variant that ran, and the cache written (if any).
    Measured {
        seconds: Vec<(Target, f64)>,
        cache: Option<PathBuf>,
    },
}

impl Gpu {
    /// Sets [`Gpu::target`] to the faster variant of `plan`'s `mode` program on this adapter,
    /// from the cache or by measuring each (see the module documentation).
    pub fn tune(&mut self, plan: &Plan, mode: Mode) -> Result<Tuned> {
        self.tune_with_cache(plan, mode, cache_path())
    }

    /// [`Gpu::tune`] with the cache file at `path` (`None`: measure, cache nothing).
    pub fn tune_with_cache(
        &mut self,
        plan: &Plan,
        mode: Mode,
        path: Option<PathBuf>,
    ) -> Result<Tuned> {
        if self.forced {
            return Ok(Tuned {
                target: self.target,
                how: How::Forced,
            });
        }
        let key = cache_key(self, plan, mode);
        // A cached choice this device cannot run (a cache shared between machines) is
        // measured again.
        let cached = |p: &PathBuf| lookup(p, &key).filter(|&t| self.runs(t));
        if let Some((p, target)) = path.as_ref().and_then(|p| Some((p, cached(p)?))) {
            self.target = target;
            return Ok(Tuned {
                target,
                how: How::Cached(p.clone()),
            });
        }
        // A variant that fails to run (a driver that rejects one form) is left out; only
        // when none runs, or the device is lost, is that an error.
        let guess = self.target;
        let mut seconds = Vec::new();
        let mut failure = None;
        let runnable: Vec<Target> = Target::ALL.into_iter().filter(|&t| self.runs(t)).collect();
        for target in runnable {
            self.target = target;
            match measure(self, plan, mode) {
                Ok(s) => seconds.push((target, s)),
                Err(e) => {
                    tracing::warn!(variant = target.as_str(), error = %e, "a kernel variant does not run on this adapter");
                    self.alive()?;
                    failure = Some(e);
                }
            }
        }
        self.target = guess;
        let time_of = |t: Target| seconds.iter().find(|s| s.0 == t).map(|s| s.1);
        let fastest = seconds
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(t, s)| (t, s));
        let best = match (fastest, time_of(guess)) {
            (None, _) => return Err(failure.expect("no variant ran, so one failed")),
            // The guess stays unless another variant is clearly faster: one pass each is
            // noisy, and the choice is kept for good.
            (Some((t, s)), Some(g)) if t != guess && s < g / SWITCH_MARGIN => t,
            (Some(_), Some(_)) => guess,
            (Some((t, _)), None) => t,
        };
        self.target = best;
        let cache = path.filter(|p| match store(p, &key, best, &seconds) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot write the kernel-variant cache");
                false
            }
        });
        Ok(Tuned {
            target: best,
            how: How::Measured { seconds, cache },
        })
    }
}

/// Seconds of one pass of `plan`'s `mode` program in `gpu.target`'s variants, after one
/// warm-up pass (pipelines compiled, buffers touched), on a fixed input and the paper's
/// initialisation.
fn measure(gpu: &Gpu, plan: &Plan, mode: Mode) -> Result<f64> {
    let batch = MEASURE_BATCH.min(plan.micro_batch.max(1));
    let mut session = Session::open(gpu, plan, batch, mode)?;
    session.load_weights(&Weights::init(plan, 0))?;
    let n = batch as usize;
    let input: Vec<f32> = (0..n * plan.input_elems())
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let labels: Vec<u32> = (0..batch).map(|i| i % plan.classes()).collect();
    let pass = |session: &mut Session| -> Result<f64> {
        let start = Instant::now();
        match mode {
            Mode::Training => {
                drop(session.train_step(&input, &labels, n, &StepConfig::paper(0, 0))?)
            }
            Mode::Inference | Mode::Inspect => drop(session.forward(&input, n)?),
        }
        Ok(start.elapsed().as_secs_f64())
    };
    pass(&mut session)?;
    let mut best = f64::INFINITY;
    for _ in 0..PASSES {
        best = best.min(pass(&mut session)?);
    }
    Ok(best)
}

/// Adapter, backend, driver, the plan's name and a fingerprint of its kernels, and the mode:
/// one line of the cache. Tabs and newlines in driver strings become spaces.
fn cache_key(gpu: &Gpu, plan: &Plan, mode: Mode) -> String {
    let info = gpu.adapter.get_info();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    plan.ir.hash(&mut h);
    for k in plan.kernels.iter() {
        for (name, wgsl) in k.sources() {
            name.hash(&mut h);
            wgsl.hash(&mut h);
        }
    }
    let key = format!(
        "{} {:?} {} {} {} {:016x} {:?}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        plan.name,
        h.finish(),
        mode
    );
    key.replace(['\t', '\n', '\r'], " ")
}

/// `variants.tsv` in the cache folder, or `None` when no folder can be named.
fn cache_path() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("ALEXNET_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("alexnet")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("alexnet")))?;
    Some(dir.join("variants.tsv"))
}

/// The target cached for `key`; a missing, unreadable or malformed file or line is no entry.
fn lookup(path: &std::path::Path, key: &str) -> Option<Target> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(k, _)| *k == key)
        .and_then(|(_, rest)| Target::parse(rest.split('\t').next()?))
}

/// Adds (or replaces) `key`'s line, keeping the others, through an atomic write.
fn store(
    path: &std::path::Path,
    key: &str,
    target: Target,
    seconds: &[(Target, f64)],
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // A file that exists but cannot be read is left alone rather than replaced by one line.
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(crate::Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut text: String = old
        .lines()
        .filter(|l| l.split_once('\t').is_some_and(|(k, _)| k != key))
        .map(|l| format!("{l}\n"))
        .collect();
    let timings: Vec<String> = seconds
        .iter()
        .map(|(t, s)| format!("{}={:.4}s", t.as_str(), s))
        .collect();
    text.push_str(&format!(
        "{key}\t{}\t{}\n",
        target.as_str(),
        timings.join(" ")
    ));
    crate::weights::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_other_entries_and_ignores_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("variants.tsv");
        assert_eq!(lookup(&path, "a"), None, "no file is no entry");
        store(
            &path,
            "a",
            Target::Cpu,
            &[(Target::Gpu, 2.0), (Target::Cpu, 1.0)],
        )
        .unwrap();
        store(&path, "b", Target::Gpu, &[]).unwrap();
        assert_eq!(
            (lookup(&path, "a"), lookup(&path, "b")),
            (Some(Target::Cpu), Some(Target::Gpu))
        );
        store(&path, "a", Target::Gpu, &[]).unwrap();
        assert_eq!(
            (lookup(&path, "a"), lookup(&path, "b")),
            (Some(Target::Gpu), Some(Target::Gpu))
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        std::fs::write(&path, "garbage without a tab\nc\tnot-a-target\nd\tcpu\t\n").unwrap();
        assert_eq!(
            (
                lookup(&path, "c"),
                lookup(&path, "d"),
                lookup(&path, "garbage without a tab")
            ),
            (None, Some(Target::Cpu), None)
        );
    }
}
