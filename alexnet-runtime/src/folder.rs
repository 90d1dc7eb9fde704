//! ImageNet-style image folders (`root/<class>/*.{jpg,jpeg,png}`) and the paper's
//! preprocessing and augmentation of 3-channel images.
//!
//! Every image is resized so its shorter side is 256 (for inputs of 224 and up; smaller
//! inputs scale that by input/224) and centre-cropped square, as the paper does. Training
//! takes a random input-sized crop of that square, mirrored half the time, with the paper's
//! PCA colour noise: `[p1 p2 p3][α1λ1 α2λ2 α3λ3]ᵀ` added to every pixel, `αi ~ N(0, 0.1²)`
//! drawn per image and epoch, `p`/`λ` the eigenvectors/values of the training set's RGB
//! covariance. The mean pixel is subtracted. Evaluation takes the centre crop, or the paper's
//! ten crops (four corners and centre, and their mirrors). Crops, flips and noise are pure
//! functions of (seed, epoch, image), so a resumed run sees the same images.

use crate::data::{decode, IMAGENET_MEAN_255};
use crate::error::{Error, Result};
use alexnet_plan::{mix32, Plan};
use image::imageops::FilterType;
use image::RgbImage;
use rand::SeedableRng;
use rand_distr::Distribution;
use std::path::{Path, PathBuf};

/// A scanned folder: class names in sorted order and every image with its label.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub files: Vec<(PathBuf, u32)>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

impl ImageFolder {
    /// Lists `root/<class>/*.{jpg,jpeg,png}`; classes are the sub-folders in sorted order.
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        let io = |source| Error::Io {
            path: root.to_path_buf(),
            source,
        };
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|source| Error::Io {
                    path: dir.clone(),
                    source,
                })?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_image(p))
                .collect();
            images.sort();
            files.extend(images.into_iter().map(|p| (p, label as u32)));
        }
        if files.is_empty() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                message: "no images: expected <class>/<image>.jpg|png sub-folders".into(),
            });
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            files,
        })
    }

    /// Decodes every image once (on all cores). With `strict`, the first unreadable one is an
    /// error; otherwise unreadable images are dropped and returned with the reason.
    pub fn check(&mut self, strict: bool) -> Result<Vec<(PathBuf, String)>> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = self.files.len().div_ceil(threads).max(1);
        let bad: Vec<(usize, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .files
                .chunks(chunk)
                .enumerate()
                .map(|(c, files)| {
                    s.spawn(move || {
                        files
                            .iter()
                            .enumerate()
                            .filter_map(|(i, (p, _))| {
                                decode(p).err().map(|e| (c * chunk + i, e.to_string()))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("decoding does not panic"))
                .collect()
        });
        if strict {
            if let Some((i, why)) = bad.first() {
                return Err(Error::Dataset {
                    path: self.files[*i].0.clone(),
                    message: format!("unreadable image ({} of {} unreadable; without --strict they are skipped): {why}", bad.len(), self.files.len()),
                });
            }
        }
        let skipped = bad
            .iter()
            .map(|(i, why)| (self.files[*i].0.clone(), why.clone()))
            .collect();
        let drop: std::collections::BTreeSet<usize> = bad.iter().map(|(i, _)| *i).collect();
        let mut index = 0;
        self.files.retain(|_| {
            index += 1;
            !drop.contains(&(index - 1))
        });
        Ok(skipped)
    }
}

/// Side of the square every image is first brought to, for a network input of `side`.
pub fn base_side(side: u32) -> u32 {
    if side >= 224 {
        256
    } else {
        (side * 256).div_ceil(224)
    }
}

/// Decodes `path`, resizes its shorter side to `base` and crops the centre square.
pub fn load_square(path: &Path, base: u32) -> Result<RgbImage> {
    let rgb = decode(path)?.to_rgb8();
    let (w, h) = rgb.dimensions();
    let scale = base as f32 / w.min(h) as f32;
    let (rw, rh) = (
        ((w as f32 * scale).round() as u32).max(base),
        ((h as f32 * scale).round() as u32).max(base),
    );
    let resized = image::imageops::resize(&rgb, rw, rh, FilterType::Triangle);
    Ok(
        image::imageops::crop_imm(&resized, (rw - base) / 2, (rh - base) / 2, base, base)
            .to_image(),
    )
}

/// The principal components of the training set's RGB covariance (pixels in 0–255).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pca {
    pub eigenvalues: [f32; 3],
    /// Eigenvectors as columns: `eigenvectors[row][component]`.
    pub eigenvectors: [[f32; 3]; 3],
}

impl Pca {
    /// From every pixel of up to `sample` images (evenly spaced) of `folder`.
    pub fn of(folder: &ImageFolder, base: u32, sample: usize) -> Result<Pca> {
        let step = (folder.files.len() / sample.max(1)).max(1);
        let (mut sum, mut outer, mut n) = ([0f64; 3], [[0f64; 3]; 3], 0f64);
        for (path, _) in folder.files.iter().step_by(step).take(sample) {
            for p in load_square(path, base)?.pixels() {
                let v = p.0.map(f64::from);
                for a in 0..3 {
                    sum[a] += v[a];
                    for b in 0..3 {
                        outer[a][b] += v[a] * v[b];
                    }
                }
                n += 1.0;
            }
        }
        let cov = nalgebra::Matrix3::from_fn(|a, b| outer[a][b] / n - sum[a] * sum[b] / (n * n));
        let eig = nalgebra::SymmetricEigen::new(cov);
        Ok(Pca {
            eigenvalues: [0, 1, 2].map(|i| eig.eigenvalues[i].max(0.0) as f32),
            eigenvectors: [0, 1, 2].map(|r| [0, 1, 2].map(|c| eig.eigenvectors[(r, c)] as f32)),
        })
    }

    /// The RGB shift of one image: `P [α1λ1, α2λ2, α3λ3]ᵀ`.
    pub fn shift(&self, alphas: [f32; 3]) -> [f32; 3] {
        [0, 1, 2].map(|r| {
            (0..3)
                .map(|c| self.eigenvectors[r][c] * alphas[c] * self.eigenvalues[c])
                .sum()
        })
    }
}

/// How one training view of an image is taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub x0: u32,
    pub y0: u32,
    pub flip: bool,
    pub shift: [f32; 3],
}

/// The random view of image `i` in `epoch` of a run seeded `seed`.
pub fn train_view(
    seed: u32,
    epoch: u32,
    i: usize,
    base: u32,
    side: u32,
    pca: Option<&Pca>,
) -> View {
    let key = mix32(i as u32 ^ mix32(epoch ^ mix32(seed ^ 0xc0ff_ee00)));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from(key));
    let range = base - side + 1;
    let r = |bits: u32| mix32(key ^ bits);
    let normal = rand_distr::Normal::new(0.0f32, 0.1).expect("a positive standard deviation");
    View {
        x0: r(1) % range,
        y0: r(2) % range,
        flip: r(3) & 1 == 1,
        shift: pca.map_or([0.0; 3], |p| {
            p.shift([
                normal.sample(&mut rng),
                normal.sample(&mut rng),
                normal.sample(&mut rng),
            ])
        }),
    }
}

/// The paper's ten test views of a `base` square: four corners and the centre, and mirrors.
pub fn ten_views(base: u32, side: u32) -> [View; 10] {
    let (e, c) = (base - side, (base - side) / 2);
    let corners = [(0, 0), (e, 0), (0, e), (e, e), (c, c)];
    std::array::from_fn(|k| {
        let (x0, y0) = corners[k % 5];
        View {
            x0,
            y0,
            flip: k >= 5,
            shift: [0.0; 3],
        }
    })
}

/// The centre view.
pub fn centre_view(base: u32, side: u32) -> View {
    ten_views(base, side)[4]
}

/// Crops, mirrors, shifts the colour of and normalises a square as `plan` takes it (NCHW).
pub fn tensor(square: &RgbImage, view: View, plan: &Plan, out: &mut Vec<f32>) {
    let [_, h, w] = plan.input;
    let torchvision = plan.name == "AlexNetTorchvision";
    let start = out.len();
    out.resize(start + (3 * h * w) as usize, 0.0);
    for y in 0..h {
        for x in 0..w {
            let sx = if view.flip {
                view.x0 + w - 1 - x
            } else {
                view.x0 + x
            };
            let p = square.get_pixel(sx, view.y0 + y).0;
            for ch in 0..3 {
                let v = f32::from(p[ch]) + view.shift[ch];
                let norm = if torchvision {
                    (v / 255.0 - crate::data::TORCHVISION_MEAN[ch])
                        / crate::data::TORCHVISION_STD[ch]
                } else {
                    v - IMAGENET_MEAN_255[ch]
                };
                out[start + (ch as u32 * h * w + y * w + x) as usize] = norm;
            }
        }
    }
}
