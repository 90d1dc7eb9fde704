//! IDX files (MNIST, Fashion-MNIST), plain or gzipped, read with every header field checked.
//!
//! Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`
//! (`/usr/share/datasets/fashion-mnist/*-ubyte.gz`); [`FashionMnist::load`] takes that folder.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` installs the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Grey images, row-major, one byte per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Dataset { path: path.to_path_buf(), message: message.into() }
}

/// Reads the whole file, gunzipping when it starts with gzip's magic bytes.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| err(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the header `0 0 0x08 ndim` and `ndim` big-endian sizes; returns sizes and payload.
fn parse<'a>(path: &Path, bytes: &'a [u8], ndim: u8) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 + 4 * usize::from(ndim);
    let truncated = || err(path, format!("truncated: {} bytes, shorter than the {header}-byte IDX header", bytes.len()));
    if bytes.len() < 4 {
        return Err(truncated());
    }
    if bytes[0..2] != [0, 0] || bytes[2] != 0x08 {
        return Err(err(path, format!("not an unsigned-byte IDX file (magic {:02x?})", &bytes[0..4])));
    }
    if bytes[3] != ndim {
        return Err(err(path, format!("has {} dimensions, expected {ndim}", bytes[3])));
    }
    if bytes.len() < header {
        return Err(truncated());
    }
    let dims: Vec<usize> = bytes[4..header].chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| err(path, "sizes overflow"))?;
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(err(path, format!("holds {} bytes of data, but its header {dims:?} says {expected}", payload.len())));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file (3 dimensions: count, rows, cols).
pub fn read_images(path: &Path) -> Result<Images> {
    let bytes = read_bytes(path)?;
    let (dims, payload) = parse(path, &bytes, 3)?;
    Ok(Images { count: dims[0], rows: dims[1], cols: dims[2], pixels: payload.to_vec() })
}

/// Reads an IDX label file (1 dimension).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    let (_, payload) = parse(path, &bytes, 1)?;
    Ok(payload.to_vec())
}

/// One split of a labelled image set.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Images,
    pub labels: Vec<u8>,
}

/// Fashion-MNIST's training and test splits.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    pub train: Split,
    pub test: Split,
}

impl FashionMnist {
    /// Loads `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` from `dir`, checking that
    /// counts match and labels are below 10.
    pub fn load(dir: &Path) -> Result<FashionMnist> {
        let split = |prefix: &str| -> Result<Split> {
            let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
            let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
            let images = read_images(&images_path)?;
            let labels = read_labels(&labels_path)?;
            if images.count != labels.len() {
                return Err(err(&labels_path, format!("{} labels for {} images in {}", labels.len(), images.count, images_path.display())));
            }
            if let Some(i) = labels.iter().position(|&l| l >= 10) {
                return Err(err(&labels_path, format!("label {} of image {i} is not a Fashion-MNIST class (0-9)", labels[i])));
            }
            Ok(Split { images, labels })
        };
        Ok(FashionMnist { train: split("train")?, test: split("t10k")? })
    }
}

/// `dir/name.gz` or `dir/name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| err(dir, format!("no {name}[.gz] here (install the Debian package dataset-fashion-mnist, or pass its folder)")))
}
