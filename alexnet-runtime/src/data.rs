//! Images in, tensors out: decoding with limits and the preprocessing each model expects.
//!
//! - 3-channel nets (the paper's and torchvision's): shorter side resized to 256, centre
//!   256×256 crop, then the centre input-sized patch (227 or 224), as the paper tests.
//!   The paper's net subtracts the mean pixel in 0–255 (ImageNet's per-channel mean stands in
//!   for the per-pixel mean image, which needs the training set); torchvision's
//!   (`AlexNetTorchvision`, 224 input) scales to 0–1 and normalises with its mean and std.
//! - 1-channel nets (`AlexNetMini`): luma, resized to the input size, scaled to 0–1, minus
//!   Fashion-MNIST's mean pixel, exactly as `train` feeds them.

use crate::error::{Error, Result};
use alexnet_plan::Plan;
use image::imageops::FilterType;
use std::path::Path;

/// ImageNet's mean pixel, RGB, in 0–255.
pub const IMAGENET_MEAN_255: [f32; 3] = [123.675, 116.28, 103.53];
/// torchvision's normalisation.
pub const TORCHVISION_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const TORCHVISION_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Fashion-MNIST's mean pixel in 0–1 over its 60,000 training images (the paper subtracts
/// the training set's mean; `tests/datasets.rs` recomputes it).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;

/// A grey pixel as 1-channel nets take it: scaled to 0–1, mean subtracted.
pub fn grey_pixel(v: u8) -> f32 {
    f32::from(v) / 255.0 - FASHION_MNIST_MEAN
}

/// Decodes an image file with size and memory limits.
pub fn decode(path: &Path) -> Result<image::DynamicImage> {
    let err = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let mut reader =
        image::ImageReader::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    reader = reader
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(err(
            "not a recognised image format (expected JPEG or PNG)".into()
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    // A decoded image may take 128 MiB (a 7,000 × 6,000 RGB photo); a file whose header claims
    // more is refused before anything is allocated (decompression bombs).
    limits.max_alloc = Some(128 << 20);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| err(format!("cannot decode: {e}")))
}

/// Decodes and preprocesses one image for `plan`: `C*H*W` values, NCHW.
pub fn load_image(path: &Path, plan: &Plan) -> Result<Vec<f32>> {
    let img = decode(path)?;
    let [c, h, w] = plan.input;
    match c {
        1 => {
            let grey = img.to_luma8();
            let small = image::imageops::resize(&grey, w, h, FilterType::Triangle);
            Ok(small.pixels().map(|p| grey_pixel(p.0[0])).collect())
        }
        3 => {
            let rgb = img.to_rgb8();
            let (iw, ih) = rgb.dimensions();
            let scale = 256.0 / iw.min(ih) as f32;
            let (rw, rh) = (
                ((iw as f32 * scale).round() as u32).max(256),
                ((ih as f32 * scale).round() as u32).max(256),
            );
            let resized = image::imageops::resize(&rgb, rw, rh, FilterType::Triangle);
            let (x0, y0) = ((rw - w.min(rw)) / 2, (rh - h.min(rh)) / 2);
            let crop = image::imageops::crop_imm(&resized, x0, y0, w.min(rw), h.min(rh)).to_image();
            let torchvision = plan.name == "AlexNetTorchvision";
            let mut out = vec![0.0; (3 * w * h) as usize];
            for (x, y, p) in crop.enumerate_pixels() {
                for ch in 0..3 {
                    let v = f32::from(p.0[ch]);
                    let norm = if torchvision {
                        (v / 255.0 - TORCHVISION_MEAN[ch]) / TORCHVISION_STD[ch]
                    } else {
                        v - IMAGENET_MEAN_255[ch]
                    };
                    out[(ch as u32 * h * w + y * w + x) as usize] = norm;
                }
            }
            Ok(out)
        }
        other => Err(Error::Image {
            path: path.to_path_buf(),
            message: format!("the model takes {other}-channel input; images give 1 or 3 channels"),
        }),
    }
}
