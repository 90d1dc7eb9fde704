//! `.npy` input tensors and logits files.

use alexnet::Plan;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads an input batch: `[N, C, H, W]` or `[C, H, W]`, f32 or f64, C order.
pub fn read_input(path: &Path, plan: &Plan) -> Result<(Vec<f32>, usize)> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-order arrays are not supported (save with C order)", path.display());
    }
    let shape: Vec<u64> = npy.shape().to_vec();
    let [c, h, w] = plan.input.map(u64::from);
    let batch = match shape.as_slice() {
        [n, sc, sh, sw] if [*sc, *sh, *sw] == [c, h, w] => *n as usize,
        [sc, sh, sw] if [*sc, *sh, *sw] == [c, h, w] => 1,
        _ => bail!("{}: shape {:?}, but {} takes [N, {c}, {h}, {w}] or [{c}, {h}, {w}]", path.display(), shape, plan.name),
    };
    if batch == 0 {
        bail!("{}: the batch is empty", path.display());
    }
    let type_str = npy.dtype().descr();
    let data: Vec<f32> = match type_str.as_str() {
        "'<f4'" => npy.into_vec::<f32>().with_context(|| format!("{}: truncated or unreadable data", path.display()))?,
        "'<f8'" => npy.into_vec::<f64>().with_context(|| format!("{}: truncated or unreadable data", path.display()))?.into_iter().map(|v| v as f32).collect(),
        other => bail!("{}: dtype {other} is not supported (expected little-endian float32 or float64)", path.display()),
    };
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        bail!("{}: value {bad} is not finite", path.display());
    }
    Ok((data, batch))
}

/// Writes `data` as a float32 array of shape `[rows, cols]`, atomically.
pub fn write_2d(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut writer = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[rows as u64, cols as u64]).writer(&mut bytes).begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
    }
    alexnet::runtime::weights::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads class labels: a 1-D array of integers (any width, signed or not), each below `classes`.
pub fn read_labels(path: &Path, classes: u32) -> Result<Vec<u32>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    if npy.shape().len() != 1 {
        bail!("{}: shape {:?}, but labels are one-dimensional [N]", path.display(), npy.shape());
    }
    let descr = npy.dtype().descr();
    let trunc = |e| anyhow::Error::new(e).context(format!("{}: truncated or unreadable data", path.display()));
    let values: Vec<i64> = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "i8" => npy.into_vec::<i64>().map_err(trunc)?,
        "i4" => npy.into_vec::<i32>().map_err(trunc)?.into_iter().map(i64::from).collect(),
        "u1" => npy.into_vec::<u8>().map_err(trunc)?.into_iter().map(i64::from).collect(),
        "i1" => npy.into_vec::<i8>().map_err(trunc)?.into_iter().map(i64::from).collect(),
        "u4" => npy.into_vec::<u32>().map_err(trunc)?.into_iter().map(i64::from).collect(),
        _ => bail!("{}: dtype {descr} is not supported for labels (expected little-endian int64, int32, int8, uint8 or uint32)", path.display()),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| u32::try_from(v).ok().filter(|&l| l < classes).with_context(|| format!("{}: label {v} of image {i} is not one of the {classes} classes", path.display())))
        .collect()
}
