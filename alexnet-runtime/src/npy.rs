//! `.npy` input tensors, labels and logits files.
//!
//! Hostile files are refused before anything is allocated from what their header claims: the
//! header must be a sane length, and the data it describes must fit in the file.

use crate::error::{Error, Result};
use alexnet_plan::Plan;
use std::io::{Read, Seek};
use std::path::Path;

/// The longest `.npy` header accepted (numpy writes well under 1 KiB).
const MAX_HEADER: u64 = 1 << 16;

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Opens `path` as a `.npy` file whose header length is sane, returning the parsed file and the
/// file's length in bytes.
fn open(path: &Path) -> Result<(npyz::NpyFile<std::io::BufReader<std::fs::File>>, u64)> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    // Magic, version, then a 2-byte (v1) or 4-byte (v2, v3) header length.
    let mut prefix = [0u8; 12];
    let got = file.read(&mut prefix).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if got < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Err(err(path, "not a .npy file (no \\x93NUMPY magic)"));
    }
    let header = match prefix[6] {
        1 => u64::from(u16::from_le_bytes([prefix[8], prefix[9]])),
        2 | 3 if got == 12 => u64::from(u32::from_le_bytes([
            prefix[8], prefix[9], prefix[10], prefix[11],
        ])),
        v => return Err(err(path, format!("unsupported .npy version {v}"))),
    };
    if header > MAX_HEADER || header > len {
        return Err(err(
            path,
            format!("header of {header} bytes is longer than the file or {MAX_HEADER} bytes"),
        ));
    }
    // The shape, checked before npyz multiplies it out: its elements must fit in the file.
    let start = if prefix[6] == 1 { 10 } else { 12 };
    let mut text = vec![0u8; header as usize];
    file.seek(std::io::SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut text))
        .map_err(|_| err(path, "truncated header"))?;
    let text = String::from_utf8_lossy(&text);
    let shape: Option<Vec<u64>> = text.split_once("'shape'").and_then(|(_, rest)| {
        let inner = rest.split_once('(')?.1.split_once(')')?.0;
        inner
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.trim_end_matches('L').parse().ok())
            .collect()
    });
    let shape = shape.ok_or_else(|| {
        err(
            path,
            "not a valid .npy file: the header has no readable shape",
        )
    })?;
    fits(path, &shape, 1, len)?;
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| err(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(err(
            path,
            "Fortran-order arrays are not supported (save with C order)",
        ));
    }
    Ok((npy, len))
}

/// Checks that `elems` values of `width` bytes fit in a file of `len` bytes.
fn fits(path: &Path, shape: &[u64], width: u64, len: u64) -> Result<()> {
    let bytes = shape.iter().try_fold(width, |a, &d| a.checked_mul(d));
    match bytes {
        Some(b) if b <= len => Ok(()),
        _ => Err(err(
            path,
            format!("shape {shape:?} needs more data than the file's {len} bytes hold"),
        )),
    }
}

/// Reads an input batch: `[N, C, H, W]` or `[C, H, W]`, f32 or f64, C order, all finite.
pub fn read_input(path: &Path, plan: &Plan) -> Result<(Vec<f32>, usize)> {
    let (npy, len) = open(path)?;
    let shape: Vec<u64> = npy.shape().to_vec();
    let [c, h, w] = plan.input.map(u64::from);
    let batch = match shape.as_slice() {
        [n, sc, sh, sw] if [*sc, *sh, *sw] == [c, h, w] => *n,
        [sc, sh, sw] if [*sc, *sh, *sw] == [c, h, w] => 1,
        _ => {
            return Err(err(
                path,
                format!(
                    "shape {shape:?}, but {} takes [N, {c}, {h}, {w}] or [{c}, {h}, {w}]",
                    plan.name
                ),
            ))
        }
    };
    if batch == 0 {
        return Err(err(path, "the batch is empty"));
    }
    let truncated = |e: std::io::Error| err(path, format!("truncated or unreadable data: {e}"));
    let descr = npy.dtype().descr();
    let data: Vec<f32> = match descr.as_str() {
        "'<f4'" => {
            fits(path, &shape, 4, len)?;
            npy.into_vec::<f32>().map_err(truncated)?
        }
        "'<f8'" => {
            fits(path, &shape, 8, len)?;
            npy.into_vec::<f64>()
                .map_err(truncated)?
                .into_iter()
                .map(|v| v as f32)
                .collect()
        }
        other => {
            return Err(err(
                path,
                format!(
                    "dtype {other} is not supported (expected little-endian float32 or float64)"
                ),
            ))
        }
    };
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        return Err(err(path, format!("value {bad} is not finite")));
    }
    Ok((data, batch as usize))
}

/// Writes `data` as a float32 array of shape `[rows, cols]`, atomically.
pub fn write_2d(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    use npyz::WriterBuilder;
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(&mut bytes)
        .begin_nd()
        .map_err(io)?;
    writer.extend(data.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)?;
    crate::weights::write_atomic(path, &bytes)
}

/// Reads class labels: a 1-D array of integers (any width, signed or not), each below `classes`.
pub fn read_labels(path: &Path, classes: u32) -> Result<Vec<u32>> {
    let (npy, len) = open(path)?;
    let shape = npy.shape().to_vec();
    if shape.len() != 1 {
        return Err(err(
            path,
            format!("shape {shape:?}, but labels are one-dimensional [N]"),
        ));
    }
    let descr = npy.dtype().descr();
    let trunc = |e: std::io::Error| err(path, format!("truncated or unreadable data: {e}"));
    let kind = descr
        .trim_matches('\'')
        .trim_start_matches(['<', '|', '='])
        .to_string();
    let width = match kind.as_str() {
        "i8" => 8,
        "i4" | "u4" => 4,
        "u1" | "i1" => 1,
        _ => return Err(err(path, format!("dtype {descr} is not supported for labels (expected little-endian int64, int32, int8, uint8 or uint32)"))),
    };
    fits(path, &shape, width, len)?;
    let values: Vec<i64> = match kind.as_str() {
        "i8" => npy.into_vec::<i64>().map_err(trunc)?,
        "i4" => npy
            .into_vec::<i32>()
            .map_err(trunc)?
            .into_iter()
            .map(i64::from)
            .collect(),
        "u1" => npy
            .into_vec::<u8>()
            .map_err(trunc)?
            .into_iter()
            .map(i64::from)
            .collect(),
        "i1" => npy
            .into_vec::<i8>()
            .map_err(trunc)?
            .into_iter()
            .map(i64::from)
            .collect(),
        _ => npy
            .into_vec::<u32>()
            .map_err(trunc)?
            .into_iter()
            .map(i64::from)
            .collect(),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v)
                .ok()
                .filter(|&l| l < classes)
                .ok_or_else(|| {
                    err(
                        path,
                        format!("label {v} of image {i} is not one of the {classes} classes"),
                    )
                })
        })
        .collect()
}
