//! The training loop: the paper's SGD recipe over a labelled image set, with checkpoints
//! that resume bit for bit.
//!
//! Everything random is a pure function of the run's seed: the data order of epoch `e` is a
//! ChaCha8 shuffle seeded by `(seed, e)`, a horizontal flip of image `i` in epoch `e` is a
//! hash of `(seed, e, i)`, and dropout masks are hashes of `(seed, step)` on the GPU. So a
//! checkpoint needs only the weights, the momentum and a few counters to continue exactly
//! where a run stopped. Batches are prepared on a worker thread ahead of the GPU.

use crate::error::{Error, Result};
use crate::folder::{
    base_side, centre_view, load_square, ten_views, tensor, train_view, ImageFolder, Pca,
};
use crate::runner::Runner;
use crate::session::StepConfig;
use crate::weights::{write_atomic, Weights};
use alexnet_plan::{mix32, Plan, Target};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::Path;

/// Labelled images as the training loop reads them.
pub trait Source: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn label(&self, i: usize) -> u32;
    /// Appends the training view of image `i` in `epoch` of a run seeded `seed` (augmented
    /// when `augment`).
    fn train_input(
        &self,
        i: usize,
        seed: u32,
        epoch: u32,
        augment: bool,
        out: &mut Vec<f32>,
    ) -> Result<()>;
    /// Appends evaluation view `view` (below [`Source::views`]; 0 is the plain one) of image `i`.
    fn eval_input(&self, i: usize, view: usize, out: &mut Vec<f32>) -> Result<()>;
    /// How many evaluation views multi-crop evaluation averages.
    fn views(&self) -> usize {
        1
    }
}

/// A labelled image set held in memory, preprocessed to the network's input.
pub struct Dataset {
    /// Elements of one image (`C*H*W`).
    pub image_elems: usize,
    /// Image width, for flips.
    pub width: usize,
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, optionally mirrored left to right, appended to `out`.
    fn push_image(&self, i: usize, flip: bool, out: &mut Vec<f32>) {
        let img = &self.images[i * self.image_elems..(i + 1) * self.image_elems];
        if !flip {
            out.extend_from_slice(img);
            return;
        }
        for row in img.chunks(self.width) {
            out.extend(row.iter().rev());
        }
    }

    /// The first `n` images (or all).
    pub fn take(mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.images.truncate(n * self.image_elems);
        self.labels.truncate(n);
        self
    }

    /// Splits off the last `n` images (a validation set).
    pub fn split_off(&mut self, n: usize) -> Dataset {
        let keep = self.len() - n.min(self.len());
        Dataset {
            image_elems: self.image_elems,
            width: self.width,
            images: self.images.split_off(keep * self.image_elems),
            labels: self.labels.split_off(keep),
        }
    }

    /// Fashion-MNIST's `split` for a 1×28×28 network, preprocessed as [`crate::data`] does.
    pub fn from_idx(split: &crate::idx::Split, plan: &Plan, path: &Path) -> Result<Dataset> {
        let imgs = &split.images;
        if plan.input != [1, imgs.rows as u32, imgs.cols as u32] {
            return Err(Error::Dataset {
                path: path.to_path_buf(),
                message: format!(
                    "images are 1×{}×{}, but {} takes {:?}",
                    imgs.rows, imgs.cols, plan.name, plan.input
                ),
            });
        }
        if plan.classes() < 10 {
            return Err(Error::Dataset {
                path: path.to_path_buf(),
                message: format!("10 classes, but {} has {}", plan.name, plan.classes()),
            });
        }
        Ok(Dataset {
            image_elems: imgs.rows * imgs.cols,
            width: imgs.cols,
            images: imgs
                .pixels
                .iter()
                .map(|&p| crate::data::grey_pixel(p))
                .collect(),
            labels: split.labels.iter().map(|&l| u32::from(l)).collect(),
        })
    }
}

impl Source for Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    fn train_input(
        &self,
        i: usize,
        seed: u32,
        epoch: u32,
        augment: bool,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.push_image(i, augment && flips(seed, epoch, i), out);
        Ok(())
    }

    /// View 1 is the mirror image.
    fn eval_input(&self, i: usize, view: usize, out: &mut Vec<f32>) -> Result<()> {
        self.push_image(i, view == 1, out);
        Ok(())
    }

    fn views(&self) -> usize {
        2
    }
}

/// Images of an [`ImageFolder`], decoded and augmented as they are read.
pub struct FolderSet<'p> {
    pub folder: ImageFolder,
    pub plan: &'p Plan,
    /// Side of the square images are first brought to.
    pub base: u32,
    /// Colour noise, from the training set.
    pub pca: Option<Pca>,
}

impl<'p> FolderSet<'p> {
    /// A 3-channel square-input network over `folder`.
    pub fn new(folder: ImageFolder, plan: &'p Plan, pca: Option<Pca>) -> Result<FolderSet<'p>> {
        let [c, h, w] = plan.input;
        if c != 3 || h != w {
            return Err(Error::Dataset {
                path: folder.root.clone(),
                message: format!(
                    "image folders feed 3-channel square inputs, but {} takes {:?}",
                    plan.name, plan.input
                ),
            });
        }
        if folder.classes.len() > plan.classes() as usize {
            return Err(Error::Dataset {
                path: folder.root.clone(),
                message: format!(
                    "{} classes, but {} has {}",
                    folder.classes.len(),
                    plan.name,
                    plan.classes()
                ),
            });
        }
        Ok(FolderSet {
            folder,
            plan,
            base: base_side(h),
            pca,
        })
    }

    /// Moves every `every`-th image (spread over the classes) into a second set.
    pub fn split_every(&mut self, count: usize) -> FolderSet<'p> {
        let every = (self.folder.files.len() / count.max(1)).max(1);
        let mut index = 0;
        let mut held = Vec::new();
        self.folder.files.retain(|f| {
            index += 1;
            let take = index % every == 0 && held.len() < count;
            if take {
                held.push(f.clone());
            }
            !take
        });
        FolderSet {
            folder: ImageFolder {
                files: held,
                ..self.folder.clone()
            },
            plan: self.plan,
            base: self.base,
            pca: self.pca,
        }
    }
}

impl Source for FolderSet<'_> {
    fn len(&self) -> usize {
        self.folder.files.len()
    }

    fn label(&self, i: usize) -> u32 {
        self.folder.files[i].1
    }

    fn train_input(
        &self,
        i: usize,
        seed: u32,
        epoch: u32,
        augment: bool,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let square = load_square(&self.folder.files[i].0, self.base)?;
        let side = self.plan.input[1];
        let view = if augment {
            train_view(seed, epoch, i, self.base, side, self.pca.as_ref())
        } else {
            centre_view(self.base, side)
        };
        tensor(&square, view, self.plan, out);
        Ok(())
    }

    /// The paper's ten crops; view 0 is the centre.
    fn eval_input(&self, i: usize, view: usize, out: &mut Vec<f32>) -> Result<()> {
        let square = load_square(&self.folder.files[i].0, self.base)?;
        let views = ten_views(self.base, self.plan.input[1]);
        tensor(&square, views[(view + 4) % 10], self.plan, out);
        Ok(())
    }

    fn views(&self) -> usize {
        10
    }
}

/// How the learning rate changes.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Divide by 10 at the start of each listed epoch (1-based).
    Steps(Vec<u32>),
    /// The paper's: divide by 10 when the validation error has not improved for `patience`
    /// epochs.
    Plateau { patience: u32 },
}

/// Hyper-parameters of a run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: u32,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub decay: f32,
    pub seed: u32,
    pub schedule: Schedule,
    /// The paper's augmentation: random horizontal flips, and for image folders random
    /// crops and PCA colour noise.
    pub flip: bool,
    /// Save a checkpoint every this many steps (and at the end of every epoch).
    pub save_every: u32,
}

/// Where a run is: everything besides weights and momentum that resuming needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Epoch being run (0-based).
    pub epoch: u32,
    /// Batches of that epoch already done.
    pub batch_in_epoch: u32,
    /// Optimiser steps done in all.
    pub step: u32,
    pub lr: f32,
    pub seed: u32,
    /// Best validation error so far, and epochs since it improved.
    pub best_val_error: f64,
    pub bad_epochs: u32,
    /// Sum of the per-image losses, and images classified right, over the batches of this
    /// epoch done so far: checkpointed, so an epoch resumed after a kill reports the same
    /// training loss and accuracy as one run straight through.
    pub epoch_loss_sum: f64,
    pub epoch_correct: u64,
    /// The adapter and kernel variants the run trains with: a resumed run on the same adapter
    /// keeps them (the variants round differently), whatever a new measurement would pick.
    pub kernels: Option<(String, Target)>,
}

impl TrainState {
    pub fn new(options: &TrainOptions) -> TrainState {
        TrainState {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            lr: options.lr,
            seed: options.seed,
            best_val_error: f64::INFINITY,
            bad_epochs: 0,
            epoch_loss_sum: 0.0,
            epoch_correct: 0,
            kernels: None,
        }
    }

    fn to_metadata(&self, plan: &Plan) -> HashMap<String, String> {
        let mut meta = HashMap::from([
            ("model".to_string(), plan.name.to_string()),
            ("epoch".to_string(), self.epoch.to_string()),
            (
                "batch_in_epoch".to_string(),
                self.batch_in_epoch.to_string(),
            ),
            ("step".to_string(), self.step.to_string()),
            // Bit patterns, so the learning rate and error survive exactly.
            ("lr_bits".to_string(), self.lr.to_bits().to_string()),
            ("lr".to_string(), self.lr.to_string()),
            ("seed".to_string(), self.seed.to_string()),
            (
                "best_val_error_bits".to_string(),
                self.best_val_error.to_bits().to_string(),
            ),
            ("bad_epochs".to_string(), self.bad_epochs.to_string()),
            (
                "epoch_loss_sum_bits".to_string(),
                self.epoch_loss_sum.to_bits().to_string(),
            ),
            ("epoch_correct".to_string(), self.epoch_correct.to_string()),
        ]);
        if let Some((adapter, target)) = &self.kernels {
            meta.insert("adapter".to_string(), adapter.clone());
            meta.insert("variant".to_string(), target.as_str().to_string());
        }
        meta
    }

    fn from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<TrainState> {
        let get = |key: &str| -> Result<u64> {
            let v = meta.get(key).ok_or_else(|| Error::WeightsFile {
                path: path.to_path_buf(),
                message: format!("not a checkpoint: no `{key}` in its metadata"),
            })?;
            v.parse().map_err(|_| Error::WeightsFile {
                path: path.to_path_buf(),
                message: format!("checkpoint metadata `{key}` = `{v}` is not a number"),
            })
        };
        Ok(TrainState {
            epoch: get("epoch")? as u32,
            batch_in_epoch: get("batch_in_epoch")? as u32,
            step: get("step")? as u32,
            lr: f32::from_bits(get("lr_bits")? as u32),
            seed: get("seed")? as u32,
            best_val_error: f64::from_bits(get("best_val_error_bits")?),
            bad_epochs: get("bad_epochs")? as u32,
            // Checkpoints from before these were kept resume mid-epoch with partial sums.
            epoch_loss_sum: f64::from_bits(get("epoch_loss_sum_bits").unwrap_or(0)),
            epoch_correct: get("epoch_correct").unwrap_or(0),
            kernels: meta
                .get("adapter")
                .zip(meta.get("variant").and_then(|v| Target::parse(v)))
                .map(|(a, t)| (a.clone(), t)),
        })
    }
}

/// Weights, momentum and state: what `--resume` continues from.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub weights: Weights,
    pub momentum: Vec<Vec<f32>>,
    pub state: TrainState,
}

/// Prefix of momentum tensors in a checkpoint.
const MOMENTUM: &str = "momentum.";

impl Checkpoint {
    /// Writes a safetensors file: the parameters under their names, the momentum under
    /// `momentum.<name>`, the state in the metadata; atomically (temporary file, fsync, rename).
    pub fn save(&self, plan: &Plan, path: &Path) -> Result<()> {
        let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (p, (w, m)) in plan
            .params
            .iter()
            .zip(self.weights.tensors.iter().zip(&self.momentum))
        {
            let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            bytes.push((
                p.name.to_string(),
                shape.clone(),
                bytemuck::cast_slice(w).to_vec(),
            ));
            bytes.push((
                format!("{MOMENTUM}{}", p.name),
                shape,
                bytemuck::cast_slice(m).to_vec(),
            ));
        }
        let views = bytes.iter().map(|(name, shape, b)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .expect("sizes come from the plan"),
            )
        });
        let data =
            safetensors::serialize(views, Some(self.state.to_metadata(plan))).map_err(|e| {
                Error::WeightsFile {
                    path: path.to_path_buf(),
                    message: format!("cannot serialise: {e}"),
                }
            })?;
        write_atomic(path, &data)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`], checking every tensor.
    pub fn load(plan: &Plan, path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::WeightsFile {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        let state =
            TrainState::from_metadata(meta.metadata().as_ref().unwrap_or(&HashMap::new()), path)?;
        let file =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::WeightsFile {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
        let mut problems = Vec::new();
        let mut read = |name: &str, want: &[u32]| -> Vec<f32> {
            match file.tensor(name) {
                Ok(v)
                    if v.dtype() == safetensors::Dtype::F32
                        && v.shape()
                            .iter()
                            .map(|&d| d as u64)
                            .eq(want.iter().map(|&d| u64::from(d))) =>
                {
                    let t: Vec<f32> = v
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if let Some(i) = t.iter().position(|v| !v.is_finite()) {
                        problems.push(format!(
                            "`{name}` element {i} is {} (a checkpoint must be finite)",
                            t[i]
                        ));
                    }
                    t
                }
                Ok(v) => {
                    problems.push(format!(
                        "`{name}` is {:?} {:?}, expected F32 {want:?}",
                        v.dtype(),
                        v.shape()
                    ));
                    Vec::new()
                }
                Err(_) => {
                    problems.push(format!("missing tensor `{name}` {want:?}"));
                    Vec::new()
                }
            }
        };
        let mut weights = Vec::new();
        let mut momentum = Vec::new();
        for p in plan.params.iter() {
            weights.push(read(&p.name, &p.shape));
            momentum.push(read(&format!("{MOMENTUM}{}", p.name), &p.shape));
        }
        if !problems.is_empty() {
            return Err(Error::WeightsMismatch {
                path: path.to_path_buf(),
                model: plan.name.to_string(),
                problems,
            });
        }
        Ok(Checkpoint {
            weights: Weights { tensors: weights },
            momentum,
            state,
        })
    }
}

/// Whether image `i` is mirrored in epoch `epoch` of a run seeded `seed`.
pub fn flips(seed: u32, epoch: u32, i: usize) -> bool {
    mix32(i as u32 ^ mix32(epoch ^ mix32(seed ^ 0x5eed_f11b))) & 1 == 1
}

/// The order of the training images in epoch `epoch`.
pub fn epoch_order(seed: u32, epoch: u32, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64((u64::from(seed) << 32) | u64::from(epoch));
    order.shuffle(&mut rng);
    order
}

/// One prepared batch.
pub struct Batch {
    pub input: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Builds the inputs of `indices` on all cores.
fn build(
    data: &dyn Source,
    indices: &[usize],
    each: impl Fn(&dyn Source, usize, &mut Vec<f32>) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(indices.len().max(1));
    let chunk = indices.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<f32>>> = std::thread::scope(|s| {
        let each = &each;
        let handles: Vec<_> = indices
            .chunks(chunk)
            .map(|ids| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for &i in ids {
                        each(data, i, &mut out)?;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("preprocessing does not panic"))
            .collect()
    });
    let mut input = Vec::new();
    for p in parts {
        input.extend(p?);
    }
    Ok(input)
}

/// The batches of one epoch from batch `start` on, decoded and augmented on worker threads
/// that stay up to four batches ahead of the GPU. The last partial batch is dropped so every
/// step has the same size.
pub fn epoch_batches<'d>(
    scope: &'d std::thread::Scope<'d, '_>,
    data: &'d dyn Source,
    options: &TrainOptions,
    epoch: u32,
    start: u32,
) -> std::sync::mpsc::Receiver<Result<Batch>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let (seed, batch, augment) = (options.seed, options.batch, options.flip);
    scope.spawn(move || {
        let order = epoch_order(seed, epoch, data.len());
        for chunk in order.chunks_exact(batch).skip(start as usize) {
            let input = build(data, chunk, |d, i, out| {
                d.train_input(i, seed, epoch, augment, out)
            });
            let labels = chunk.iter().map(|&i| data.label(i)).collect();
            if tx.send(input.map(|input| Batch { input, labels })).is_err() {
                return;
            }
        }
    });
    rx
}

/// Top-1 and top-5 accuracy of `session` on `data`, in batches of `batch`; with
/// `multi_view`, the softmax is averaged over the source's views (the paper's ten crops).
pub fn evaluate(
    session: &mut dyn Runner,
    data: &dyn Source,
    batch: usize,
    multi_view: bool,
    mut progress: impl FnMut(usize),
) -> Result<(f64, f64)> {
    let (mut top1, mut top5) = (0usize, 0usize);
    let views = if multi_view { data.views() } else { 1 };
    let ids: Vec<usize> = (0..data.len()).collect();
    for chunk in ids.chunks(batch) {
        let mut probs: Vec<f64> = Vec::new();
        let mut classes = 0;
        for view in 0..views {
            let input = build(data, chunk, |d, i, out| d.eval_input(i, view, out))?;
            let out = session.forward(&input, chunk.len())?;
            classes = out.classes;
            probs.resize(out.probs.len(), 0.0);
            probs
                .iter_mut()
                .zip(&out.probs)
                .for_each(|(a, &p)| *a += f64::from(p));
        }
        for (k, &i) in chunk.iter().enumerate() {
            let label = data.label(i) as usize;
            let mut ranked: Vec<(usize, f64)> = probs[k * classes..(k + 1) * classes]
                .iter()
                .copied()
                .enumerate()
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            top1 += usize::from(ranked[0].0 == label);
            top5 += usize::from(ranked.iter().take(5).any(|(c, _)| *c == label));
        }
        progress(chunk.len());
    }
    let n = data.len().max(1) as f64;
    Ok((top1 as f64 / n, top5 as f64 / n))
}

/// Checks a step's loss; on NaN or infinity, names the first parameter whose gradient is not
/// finite (or says the loss itself overflowed).
pub fn check_finite(session: &dyn Runner, plan: &Plan, loss: f64, step: u32) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    let grads = session.read_param_grads()?;
    let culprit = plan
        .params
        .iter()
        .zip(&grads)
        .find(|(_, g)| g.iter().any(|v| !v.is_finite()));
    let what = match culprit {
        Some((p, _)) => format!(
            "loss is {loss}; the gradient of `{}` (layer {}) holds NaN or infinity",
            p.name, p.layer
        ),
        None => format!("loss is {loss} (the logits overflowed); every gradient is finite"),
    };
    Err(Error::NonFinite { step, what })
}

impl TrainState {
    /// Applies the schedule at the end of an epoch with validation error `val_error` (`None`
    /// without a validation set, which leaves a plateau schedule's rate as it is); returns
    /// whether the learning rate was divided.
    pub fn end_epoch(&mut self, schedule: &Schedule, val_error: Option<f64>) -> bool {
        self.epoch += 1;
        self.batch_in_epoch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_correct = 0;
        let divide = match schedule {
            Schedule::Steps(at) => at.contains(&(self.epoch + 1)),
            Schedule::Plateau { .. } if val_error.is_none() => false,
            Schedule::Plateau { patience } => {
                let val_error = val_error.unwrap_or(f64::INFINITY);
                if val_error < self.best_val_error {
                    self.best_val_error = val_error;
                    self.bad_epochs = 0;
                    false
                } else {
                    self.bad_epochs += 1;
                    if self.bad_epochs >= *patience {
                        self.bad_epochs = 0;
                        true
                    } else {
                        false
                    }
                }
            }
        };
        if divide {
            self.lr /= 10.0;
        }
        divide
    }

    /// The step's configuration.
    pub fn step_config(&self, options: &TrainOptions) -> StepConfig {
        StepConfig {
            lr: self.lr,
            momentum: options.momentum,
            decay: options.decay,
            seed: self.seed,
            step: self.step,
            dropout: true,
        }
    }
}
