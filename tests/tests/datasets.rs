//! IDX reading: the real Fashion-MNIST from Debian's package, and every malformed-file case.

use alexnet::runtime::idx::{read_images, read_labels, FashionMnist, FASHION_MNIST_DIR};
use std::io::Write;
use std::path::Path;

#[test]
fn reads_the_real_fashion_mnist() {
    let data = FashionMnist::load(Path::new(FASHION_MNIST_DIR))
        .expect("scripts/setup.sh installs dataset-fashion-mnist");
    assert_eq!(
        (
            data.train.images.count,
            data.train.images.rows,
            data.train.images.cols
        ),
        (60_000, 28, 28)
    );
    assert_eq!(data.test.images.count, 10_000);
    // Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    for (split, per_class) in [(&data.train, 6_000), (&data.test, 1_000)] {
        let mut counts = [0usize; 10];
        split.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [per_class; 10]);
    }
    // Images are real pictures, not blank: every one has ink.
    assert!((0..100).all(|i| data.test.images.image(i).iter().any(|&p| p > 128)));
    // The mean pixel that preprocessing subtracts is the training set's.
    let mean = data
        .train
        .images
        .pixels
        .iter()
        .map(|&p| f64::from(p))
        .sum::<f64>()
        / data.train.images.pixels.len() as f64
        / 255.0;
    assert!(
        (mean - f64::from(alexnet::runtime::data::FASHION_MNIST_MEAN)).abs() < 5e-5,
        "mean pixel {mean}"
    );
}

fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend(payload);
    v
}

#[test]
fn plain_and_gzipped_files_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    std::fs::write(dir.path().join("plain"), &bytes).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    std::fs::write(dir.path().join("zipped.gz"), gz.finish().unwrap()).unwrap();
    let a = read_images(&dir.path().join("plain")).unwrap();
    assert_eq!(a, read_images(&dir.path().join("zipped.gz")).unwrap());
    assert_eq!(a.image(1), &[7, 8, 9, 10, 11, 12]);
}

#[test]
fn malformed_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = read_images(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        e
    };
    assert!(case("short", &[0, 0, 8]).contains("truncated"));
    assert!(case(
        "magic",
        &idx(&[1, 1, 1], &[0])[..]
            .iter()
            .enumerate()
            .map(|(i, &b)| if i == 2 { 0x0d } else { b })
            .collect::<Vec<_>>()
    )
    .contains("not an unsigned-byte IDX file"));
    assert!(case("dims", &idx(&[1, 1], &[0])).contains("has 2 dimensions, expected 3"));
    assert!(case("cut", &idx(&[2, 2, 2], &[0; 7]))
        .contains("holds 7 bytes of data, but its header [2, 2, 2] says 8"));
    assert!(case("gz", &[0x1f, 0x8b, 1, 2, 3]).contains("corrupt gzip data"));
    let labels = dir.path().join("labels");
    std::fs::write(&labels, idx(&[3], &[1, 2, 3])).unwrap();
    assert_eq!(read_labels(&labels).unwrap(), [1, 2, 3]);
}

#[test]
fn mismatched_splits_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("train-images-idx3-ubyte", idx(&[2, 1, 1], &[0, 0]));
    write("train-labels-idx1-ubyte", idx(&[3], &[0, 1, 2]));
    let e = FashionMnist::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("3 labels for 2 images"), "{e}");
    write("train-labels-idx1-ubyte", idx(&[2], &[0, 12]));
    write("t10k-images-idx3-ubyte", idx(&[1, 1, 1], &[0]));
    write("t10k-labels-idx1-ubyte", idx(&[1], &[0]));
    let e = FashionMnist::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("label 12 of image 1 is not a Fashion-MNIST class"),
        "{e}"
    );
    let e = FashionMnist::load(&dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("install the Debian package dataset-fashion-mnist"),
        "{e}"
    );
}
