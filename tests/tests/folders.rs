//! ImageNet-style image folders: scanning, unreadable files, the paper's crops, flips and PCA
//! colour noise, ten-crop views, and training from a folder on the GPU.

use alexnet::runtime::folder::{
    base_side, centre_view, load_square, ten_views, tensor, train_view, ImageFolder, Pca, View,
};
use alexnet::runtime::train::{self, FolderSet, Schedule, Source, TrainOptions};
use alexnet::runtime::StepConfig;
use alexnet::{alexnet, Session};
use alexnet_tests::gpu;
use std::path::Path;

alexnet! {
    /// A tiny 3-channel classifier for folder tests.
    Colours {
        input: [3, 32, 32],
        max_batch: 8,
        c1: conv(4, k = 5, s = 3) -> relu -> maxpool(k = 3, s = 2, floor),
        fc: linear(2),
    }
}

/// `root/red/*.png` and `root/blue/*.png`, 6 each, with texture so crops differ, plus a
/// truncated JPEG in `blue`.
fn make_folder(root: &Path) {
    for (class, colour) in [("red", [200u8, 40, 40]), ("blue", [30u8, 60, 210])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..6u32 {
            let img = image::RgbImage::from_fn(40 + i * 3, 48, |x, y| {
                let t = ((x * 7 + y * 13 + i * 5) % 40) as u8;
                image::Rgb([
                    colour[0].saturating_add(t),
                    colour[1].saturating_add(t / 2),
                    colour[2].saturating_sub(t),
                ])
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        root.join("blue").join("broken.jpg"),
        [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F'],
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), "not a class").unwrap();
}

#[test]
fn scanning_skips_or_refuses_unreadable_images() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let folder = ImageFolder::scan(dir.path()).unwrap();
    assert_eq!(folder.classes, ["blue", "red"]);
    assert_eq!(folder.files.len(), 13);
    let err = folder.clone().check(true).unwrap_err().to_string();
    assert!(
        err.contains("broken.jpg") && err.contains("1 of 13 unreadable"),
        "{err}"
    );
    let mut lenient = folder.clone();
    let skipped = lenient.check(false).unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].0.ends_with("blue/broken.jpg"));
    assert_eq!(lenient.files.len(), 12);
    let empty = tempfile::tempdir().unwrap();
    assert!(ImageFolder::scan(empty.path())
        .unwrap_err()
        .to_string()
        .contains("no images"));
}

#[test]
fn crops_flips_and_colour_noise_follow_the_paper() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let mut folder = ImageFolder::scan(dir.path()).unwrap();
    folder.check(false).unwrap();
    assert_eq!(
        (base_side(227), base_side(224), base_side(32)),
        (256, 256, 37)
    );
    let square = load_square(&folder.files[0].0, 37).unwrap();
    assert_eq!(square.dimensions(), (37, 37));

    // PCA of red and blue images: the main axis runs between the two colours.
    let pca = Pca::of(&folder, 37, 64).unwrap();
    let main = (0..3)
        .max_by(|&a, &b| pca.eigenvalues[a].total_cmp(&pca.eigenvalues[b]))
        .unwrap();
    let v: Vec<f32> = (0..3).map(|r| pca.eigenvectors[r][main]).collect();
    assert!(
        v[0] * v[2] < 0.0 && v[0].abs() > 0.5 && v[2].abs() > 0.5,
        "main component {v:?}"
    );
    let norm: f32 = v.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);

    // Views are pure functions of (seed, epoch, image) and stay inside the square.
    let a = train_view(7, 2, 3, 37, 32, Some(&pca));
    assert_eq!(a, train_view(7, 2, 3, 37, 32, Some(&pca)));
    assert_ne!(a, train_view(7, 3, 3, 37, 32, Some(&pca)));
    for i in 0..50 {
        let v = train_view(1, 0, i, 37, 32, None);
        assert!(v.x0 <= 5 && v.y0 <= 5 && v.shift == [0.0; 3]);
    }
    let views = ten_views(37, 32);
    assert_eq!(
        (
            views[0].x0,
            views[0].y0,
            views[3].x0,
            views[3].y0,
            views[4].x0
        ),
        (0, 0, 5, 5, 2)
    );
    assert!(views[5..].iter().all(|v| v.flip) && views[..5].iter().all(|v| !v.flip));
    assert_eq!(centre_view(37, 32), views[4]);

    // A mirrored crop is the crop read right to left; the colour shift adds to every pixel.
    let plan = &Colours::PLAN;
    let (mut plain, mut flipped, mut shifted) = (Vec::new(), Vec::new(), Vec::new());
    let view = View {
        x0: 2,
        y0: 1,
        flip: false,
        shift: [0.0; 3],
    };
    tensor(&square, view, plan, &mut plain);
    tensor(&square, View { flip: true, ..view }, plan, &mut flipped);
    tensor(
        &square,
        View {
            shift: [3.0, -2.0, 1.0],
            ..view
        },
        plan,
        &mut shifted,
    );
    for ch in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let at = |xx: usize| ch * 1024 + y * 32 + xx;
                assert_eq!(plain[at(x)], flipped[at(31 - x)]);
                assert!((shifted[at(x)] - plain[at(x)] - [3.0, -2.0, 1.0][ch]).abs() < 1e-4);
            }
        }
    }
    let p = square.get_pixel(2, 1).0;
    assert_eq!(
        plain[0],
        f32::from(p[0]) - alexnet::runtime::data::IMAGENET_MEAN_255[0]
    );
}

#[test]
fn training_from_an_image_folder_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let plan = &Colours::PLAN;
    let mut folder = ImageFolder::scan(dir.path()).unwrap();
    folder.check(false).unwrap();
    let pca = Pca::of(&folder, base_side(32), 16).unwrap();
    let data = FolderSet::new(folder, plan, Some(pca)).unwrap();
    // Raw 0–255 pixels (minus the mean), as the paper feeds them, need a small step.
    let options = TrainOptions {
        epochs: 1,
        batch: 8,
        lr: 1e-6,
        momentum: 0.9,
        decay: 0.0005,
        seed: 3,
        schedule: Schedule::Plateau { patience: 2 },
        flip: true,
        save_every: 100,
    };
    let gpu = gpu(plan);
    let mut session = Session::for_training(&gpu, plan, 8).unwrap();
    session
        .load_weights(&alexnet::Weights::init(plan, 1))
        .unwrap();
    let mut losses = Vec::new();
    for epoch in 0..30 {
        std::thread::scope(|s| {
            for batch in train::epoch_batches(s, &data, &options, epoch, 0).iter() {
                let batch = batch.unwrap();
                let config = StepConfig {
                    step: losses.len() as u32,
                    ..StepConfig::paper(3, 0)
                };
                let config = StepConfig {
                    lr: options.lr,
                    ..config
                };
                losses.push(
                    session
                        .train_step(&batch.input, &batch.labels, 8, &config)
                        .unwrap()
                        .loss,
                );
            }
        });
    }
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.5 * losses[0], "the loss did not fall: {losses:?}");
    // Ten-crop evaluation averages the softmax of every view of every image: the same top-1
    // as averaging here, image by image, over views that really differ.
    assert_eq!(data.views(), 10);
    let (top1, _) = train::evaluate(&mut session, &data, 8, true, |_| {}).unwrap();
    let (mut correct, mut distinct) = (0, 0);
    for i in 0..data.len() {
        // Ten views in two batches of five (the net takes at most 8).
        let mut probs = Vec::new();
        for views in [0..5, 5..10] {
            let mut input = Vec::new();
            for view in views {
                data.eval_input(i, view, &mut input).unwrap();
            }
            probs.extend(session.forward(&input, 5).unwrap().probs);
        }
        let mut mean = [0.0f64; 2];
        for view in probs.chunks(2) {
            mean[0] += f64::from(view[0]);
            mean[1] += f64::from(view[1]);
        }
        let best = usize::from(mean[1] > mean[0]);
        correct += usize::from(best == data.label(i) as usize);
        distinct += usize::from(probs[2..].chunks(2).any(|p| p != &probs[..2]));
    }
    assert_eq!(
        top1,
        correct as f64 / data.len() as f64,
        "ten-crop top-1 differs from the views' average"
    );
    assert_eq!(
        distinct,
        data.len(),
        "every image's ten views should give different probabilities"
    );
}
