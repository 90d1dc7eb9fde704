//! IDX files (MNIST, Fashion-MNIST), plain or gzipped, read with every header field checked.
//!
//! Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`
//! (`/usr/share/datasets/fashion-mnist/*-ubyte.gz`); [`FashionMnist::load`] takes that folder.

use crate::error::{Error, Result};
use std::io::{BufRead, Read};
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
    Error::Dataset {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The most data an IDX file may hold, uncompressed (Fashion-MNIST's largest holds 47 MB).
pub const MAX_BYTES: usize = 1 << 30;

/// Reads an IDX file of `ndim` dimensions, gunzipping when it starts with gzip's magic bytes:
/// the header `0 0 0x08 ndim` and `ndim` big-endian sizes, then exactly the bytes they make.
/// The header is checked before the data is read, so a file (or a gzip bomb) whose header
/// claims more than [`MAX_BYTES`] is refused without allocating it, and the data is read
/// through a limit, so a stream longer than its header says is refused too.
fn read_idx(path: &Path, ndim: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let corrupt = |e: std::io::Error| {
        if gz {
            err(path, format!("corrupt gzip data: {e}"))
        } else {
            io(e)
        }
    };
    let header = 4 + 4 * usize::from(ndim);
    let mut head = Vec::with_capacity(header);
    (&mut reader)
        .take(header as u64)
        .read_to_end(&mut head)
        .map_err(corrupt)?;
    let truncated = || {
        err(
            path,
            format!(
                "truncated: {} bytes, shorter than the {header}-byte IDX header",
                head.len()
            ),
        )
    };
    if head.len() < 4 {
        return Err(truncated());
    }
    if head[0..2] != [0, 0] || head[2] != 0x08 {
        return Err(err(
            path,
            format!("not an unsigned-byte IDX file (magic {:02x?})", &head[0..4]),
        ));
    }
    if head[3] != ndim {
        return Err(err(
            path,
            format!("has {} dimensions, expected {ndim}", head[3]),
        ));
    }
    if head.len() < header {
        return Err(truncated());
    }
    let dims: Vec<usize> = head[4..header]
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_BYTES);
    let expected = expected.ok_or_else(|| {
        err(
            path,
            format!("header {dims:?} claims more than the {MAX_BYTES}-byte limit"),
        )
    })?;
    let mut payload = Vec::new();
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(corrupt)?;
    if payload.len() != expected {
        let got = if payload.len() > expected {
            "more".to_string()
        } else {
            payload.len().to_string()
        };
        return Err(err(
            path,
            format!("holds {got} bytes of data, but its header {dims:?} says {expected}"),
        ));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file (3 dimensions: count, rows, cols).
pub fn read_images(path: &Path) -> Result<Images> {
    let (dims, pixels) = read_idx(path, 3)?;
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX label file (1 dimension).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, 1)?.1)
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
                return Err(err(
                    &labels_path,
                    format!(
                        "{} labels for {} images in {}",
                        labels.len(),
                        images.count,
                        images_path.display()
                    ),
                ));
            }
            if let Some(i) = labels.iter().position(|&l| l >= 10) {
                return Err(err(
                    &labels_path,
                    format!(
                        "label {} of image {i} is not a Fashion-MNIST class (0-9)",
                        labels[i]
                    ),
                ));
            }
            Ok(Split { images, labels })
        };
        Ok(FashionMnist {
            train: split("train")?,
            test: split("t10k")?,
        })
    }
}

/// `dir/name.gz` or `dir/name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| err(dir, format!("no {name}[.gz] here (install the Debian package dataset-fashion-mnist, or pass its folder)")))
}
