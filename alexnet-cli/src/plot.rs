//! The PNG of a run's curves: loss on the left (every step's, from `steps.jsonl`, and each
//! epoch's mean), accuracies on the right (one point per epoch, from `metrics.jsonl`), drawn
//! with plotters.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Where the font for labels comes from (Debian's `fonts-dejavu-core`), unless `ALEXNET_FONT`.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the label font once; `None` says why there is none.
fn font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = std::env::var("ALEXNET_FONT").unwrap_or_else(|_| FONT.to_string());
            let bytes = std::fs::read(&path).map_err(|e| {
                format!("no font at {path} ({e}); install fonts-dejavu-core or set ALEXNET_FONT")
            })?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| format!("{path} is not a TrueType/OpenType font"))
        })
        .clone()
}

/// One epoch's numbers, as `metrics.jsonl` holds them.
struct Point {
    epoch: f64,
    loss: Option<f64>,
    train: Option<f64>,
    val: Option<f64>,
    test: Option<f64>,
}

/// Every step's loss from `steps.jsonl` (one `{"step", "epoch", "loss"}` line per step, the
/// epoch fractional), as points of a curve over epochs.
fn step_losses(path: &Path) -> Result<Vec<(f64, Option<f64>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut points = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let epoch = v["epoch"]
            .as_f64()
            .with_context(|| format!("{}:{}: no epoch", path.display(), n + 1))?;
        points.push((epoch, v["loss"].as_f64()));
    }
    Ok(points)
}

/// Reads `metrics` (and `steps`, when given) and writes the plot to `out`. Returns
/// `Ok(false)` (after saying why) when no font is available: the run goes on without a plot.
pub fn plot(metrics: &Path, steps: Option<&Path>, out: &Path) -> Result<bool> {
    if let Err(why) = font() {
        eprintln!("warning: no plot: {why}");
        return Ok(false);
    }
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let mut points = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", metrics.display(), n + 1))?;
        points.push(Point {
            epoch: v["epoch"]
                .as_f64()
                .with_context(|| format!("{}:{}: no epoch", metrics.display(), n + 1))?,
            loss: v["train_loss"].as_f64(),
            train: v["train_acc"].as_f64(),
            val: v["val_acc"].as_f64(),
            test: v["test_top1"].as_f64(),
        });
    }
    let (w, h) = (1000u32, 420u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("drawing: {e:?}"))?;
        let (left, right) = root.split_horizontally(w / 2);
        let per_step = match steps {
            Some(path) => step_losses(path)?,
            None => Vec::new(),
        };
        let last = points
            .iter()
            .map(|p| p.epoch)
            .chain(per_step.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let max_loss = points
            .iter()
            .filter_map(|p| p.loss)
            .chain(per_step.iter().filter_map(|p| p.1))
            .fold(0.1, f64::max)
            * 1.1;
        let mut losses = vec![(
            "epoch mean",
            RED,
            points.iter().map(|p| (p.epoch, p.loss)).collect(),
        )];
        if !per_step.is_empty() {
            losses.insert(0, ("each step", RGBColor(240, 160, 160), per_step));
        }
        draw(&left, "training loss", last, max_loss, &losses)?;
        let series = [
            (
                "train",
                RED,
                points.iter().map(|p| (p.epoch, p.train)).collect(),
            ),
            (
                "validation",
                BLUE,
                points.iter().map(|p| (p.epoch, p.val)).collect(),
            ),
            (
                "test top-1",
                GREEN,
                points.iter().map(|p| (p.epoch, p.test)).collect(),
            ),
        ];
        draw(&right, "accuracy", last, 1.0, &series)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing: {e:?}"))?;
    }
    let img = image::RgbImage::from_raw(w, h, pixels).expect("the buffer has w*h*3 bytes");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .context("encoding the plot")?;
    alexnet::runtime::weights::write_atomic(out, png.get_ref())?;
    Ok(true)
}

type Series = (&'static str, RGBColor, Vec<(f64, Option<f64>)>);

fn draw(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    epochs: f64,
    top: f64,
    series: &[Series],
) -> Result<()> {
    let e = |e| anyhow::anyhow!("drawing: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..epochs, 0.0..top)
        .map_err(e)?;
    chart.configure_mesh().x_desc("epoch").draw().map_err(e)?;
    for (name, colour, points) in series {
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|&(x, y)| y.map(|y| (x, y)))
            .collect();
        // No legend entry for a series without points (no validation set, say).
        if line.is_empty() {
            continue;
        }
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        // Markers where points are few (one per epoch); a per-step curve is a line.
        if line.len() <= 100 {
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}
