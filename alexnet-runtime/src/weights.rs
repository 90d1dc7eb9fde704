//! Parameters on the host: the paper's initialisation, and safetensors load and save.
//!
//! Loading checks every name, shape and dtype against the plan and reports all mismatches in
//! one error before anything reaches the GPU. Saving is atomic: a temporary file in the same
//! folder, fsync, then rename, so a crash never leaves a half-written file under the name.

use crate::error::{Error, Result};
use alexnet_plan::{Init, Plan};
use rand::SeedableRng;
use rand_distr::Distribution;
use std::io::Write;
use std::path::Path;

/// One `f32` tensor per parameter of a plan, in the plan's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub tensors: Vec<Vec<f32>>,
}

impl Weights {
    /// The paper's initialisation: weights from N(0, 0.01²), biases 1 or 0 as the plan says.
    /// The same seed gives the same weights on every machine (ChaCha8 stream per tensor).
    pub fn init(plan: &Plan, seed: u64) -> Weights {
        let tensors = plan
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| match p.init {
                Init::Constant { value } => vec![value; p.elems() as usize],
                Init::Normal { std } => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(i as u64);
                    let normal = rand_distr::Normal::new(0.0f32, std)
                        .expect("a positive standard deviation");
                    (0..p.elems()).map(|_| normal.sample(&mut rng)).collect()
                }
            })
            .collect();
        Weights { tensors }
    }

    /// He (Kaiming) initialisation for ReLU nets: weights from N(0, 2 / fan-in), biases 0.
    /// The paper's N(0, 0.01²) suits AlexNet's layer sizes; on small nets such as
    /// `AlexNetMini` it leaves the signal so weak that learning takes many epochs to start.
    pub fn init_he(plan: &Plan, seed: u64) -> Weights {
        let tensors = plan
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.shape.len() == 1 {
                    return vec![0.0; p.elems() as usize];
                }
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64);
                let std = (2.0 / p.row_elems() as f32).sqrt();
                let normal =
                    rand_distr::Normal::new(0.0f32, std).expect("a positive standard deviation");
                (0..p.elems()).map(|_| normal.sample(&mut rng)).collect()
            })
            .collect();
        Weights { tensors }
    }

    /// Reads a safetensors file and checks it against `plan`.
    pub fn load(plan: &Plan, path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors(plan, &bytes, path)
    }

    /// Parses safetensors bytes (`path` names them in errors).
    pub fn from_safetensors(plan: &Plan, bytes: &[u8], path: &Path) -> Result<Weights> {
        let file =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::WeightsFile {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        let mut problems = Vec::new();
        let mut tensors = Vec::with_capacity(plan.params.len());
        for p in plan.params.iter() {
            let want: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            match file.tensor(&p.name) {
                Err(_) => problems.push(format!("missing tensor `{}` {:?}", p.name, want)),
                Ok(view) => {
                    if view.dtype() != safetensors::Dtype::F32 {
                        problems.push(format!(
                            "`{}` has dtype {:?}, expected F32",
                            p.name,
                            view.dtype()
                        ));
                    } else if view.shape() != want.as_slice() {
                        problems.push(format!(
                            "`{}` has shape {:?}, expected {:?} ({})",
                            p.name,
                            view.shape(),
                            want,
                            p.layout.as_str()
                        ));
                    } else {
                        let t: Vec<f32> = view
                            .data()
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        if let Some(i) = t.iter().position(|v| !v.is_finite()) {
                            problems.push(format!(
                                "`{}` element {i} is {} (weights must be finite)",
                                p.name, t[i]
                            ));
                        }
                        tensors.push(t);
                    }
                }
            }
        }
        let mut extra: Vec<String> = file
            .names()
            .into_iter()
            .filter(|n| plan.param(n).is_none())
            .map(|n| format!("unexpected tensor `{n}`"))
            .collect();
        extra.sort();
        problems.extend(extra);
        if !problems.is_empty() {
            return Err(Error::WeightsMismatch {
                path: path.to_path_buf(),
                model: plan.name.to_string(),
                problems,
            });
        }
        Ok(Weights { tensors })
    }

    /// Serialises to safetensors bytes with the plan's names and shapes.
    pub fn to_safetensors(&self, plan: &Plan) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|t| bytemuck::cast_slice::<f32, u8>(t).to_vec())
            .collect();
        let views = plan.params.iter().zip(&bytes).map(|(p, b)| {
            let shape = p.shape.iter().map(|&d| d as usize).collect();
            (
                p.name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, b)
                    .expect("sizes come from the plan"),
            )
        });
        let meta = std::collections::HashMap::from([("model".to_string(), plan.name.to_string())]);
        safetensors::serialize(views, Some(meta)).expect("f32 tensors with plan shapes serialise")
    }

    /// Writes a safetensors file atomically.
    pub fn save(&self, plan: &Plan, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_safetensors(plan))
    }

    /// Checks that every tensor has the length `plan` expects.
    pub fn check(&self, plan: &Plan) -> Result<()> {
        let mut problems = Vec::new();
        if self.tensors.len() != plan.params.len() {
            problems.push(format!(
                "{} tensors, expected {}",
                self.tensors.len(),
                plan.params.len()
            ));
        }
        for (t, p) in self.tensors.iter().zip(plan.params.iter()) {
            if t.len() as u64 != p.elems() {
                problems.push(format!(
                    "`{}` holds {} values, expected {}",
                    p.name,
                    t.len(),
                    p.elems()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::WeightsMismatch {
                path: "<memory>".into(),
                model: plan.name.to_string(),
                problems,
            })
        }
    }
}

/// Removes the temporary files (`.NAME.tmpPID`) that [`write_atomic`] calls cut short by a
/// crash left in `dir`. Only for a folder no other process is writing to.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stale = name.starts_with('.')
            && name
                .rsplit_once(".tmp")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale {
            std::fs::remove_file(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, then fsyncs the
/// folder. A crash at any point leaves either the old file or the new one, whole.
///
/// `ALEXNET_WRITE_DELAY_MS` (a fault-injection hook for crash tests) pauses that long between
/// the two halves of the temporary file, so a test can kill a process in mid-write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("the path names no file")))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        std::env::var("ALEXNET_WRITE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
    });
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        match delay {
            Some(ms) => {
                let (first, rest) = bytes.split_at(bytes.len() / 2);
                f.write_all(first)?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                f.write_all(rest)?;
            }
            None => f.write_all(bytes)?,
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
