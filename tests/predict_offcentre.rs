//! `wgtrain predict` on pictures that are not MNIST-shaped: a digit drawn small and anywhere
//! on a large white canvas reads as the same digit centred, because `data::image` prepares
//! every picture as MNIST's creators prepared theirs (crop to the ink, fit 20×20 keeping the
//! aspect, centre of mass at the centre).

mod common;

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use wgtrain::data::image::digit_input;

const SAMPLE: &str = "assets/mnist-sample";

/// The committed sample's test split.
fn test_set() -> wgtrain::data::Dataset {
    wgtrain::data::load_dir(Path::new(SAMPLE)).unwrap().test
}

fn digit(set: &wgtrain::data::Dataset, i: usize) -> GrayImage {
    let wgtrain::data::SampleShape::Image { c: 1, h, w } = set.shape else {
        panic!("MNIST samples are grayscale images")
    };
    GrayImage::from_raw(w as u32, h as u32, set.sample(i).to_vec()).unwrap()
}

/// `wgtrain predict --json` on `files`: the top class of each, in order.
fn predict(model: &Path, files: &[PathBuf]) -> Vec<u64> {
    let mut cmd = common::wgtrain_command();
    cmd.args(["predict", "--model", model.to_str().unwrap(), "--json"]);
    cmd.args(files);
    let out = cmd.output().expect("run wgtrain predict");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), files.len());
    preds
        .iter()
        .map(|p| p["top"][0]["class"].as_u64().unwrap())
        .collect()
}

/// MNIST's own digits are already prepared: every test digit of the sample passes through the
/// preprocessing unchanged, so a model trained on MNIST sees in `predict` exactly what it saw
/// in training.
#[test]
fn mnist_test_digits_pass_through_unchanged() {
    let test = test_set();
    for i in 0..test.n {
        let want: Vec<f32> = test.sample(i).iter().map(|&v| v as f32 / 255.0).collect();
        let got = digit_input(&digit(&test, i), 28, 28).unwrap();
        assert!(got == want, "test digit {i} changed");
    }
}

/// The first 12 test digits that the model classifies right when centred (the 28×28 MNIST
/// picture), each pasted twice on a 200×150 white canvas as dark ink, scaled to 36–60 pixels
/// (ink 26–43 pixels tall) at a random position in a corner quarter of the canvas: `predict`
/// gives every one of them the true label. Before the preprocessing cropped and centred, these
/// pictures were squeezed whole into 28×28 and read as noise. Measured: all 24 right for each
/// of the seeds 1–12 (`WGTRAIN_SEED=n`), in about a second after the build.
#[test]
fn digits_small_and_off_centre_on_a_large_canvas_read_as_when_centred() {
    let seed = common::seed("predict_offcentre");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    // The model of tests/cli.rs's predict test: 784-128-10, Adam, 10 epochs on the sample,
    // 87–88% test accuracy, trained with the run's seed.
    let train = common::wgtrain_command()
        .args([
            "train",
            "--arch",
            "784-128-10",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--epochs",
            "10",
            "--seed",
            &seed.to_string(),
            "--device",
            "cpu",
            "--data-dir",
            SAMPLE,
            "--quiet",
            "--out",
            model.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );

    let test = test_set();
    let centred: Vec<PathBuf> = (0..60)
        .map(|i| {
            let p = dir.path().join(format!("centred_{i}.png"));
            digit(&test, i).save(&p).unwrap();
            p
        })
        .collect();
    let classes = predict(&model, &centred);
    let picked: Vec<usize> = (0..centred.len())
        .filter(|&i| classes[i] == test.labels[i] as u64)
        .take(12)
        .collect();
    assert_eq!(picked.len(), 12, "the model gets too few of 60 right");

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (cw, ch) = (200u32, 150u32);
    let mut files = Vec::new();
    let mut where_ = Vec::new();
    for &i in &picked {
        let mut pen = digit(&test, i);
        image::imageops::invert(&mut pen);
        for quarter in [rng.random_range(0..4u32), rng.random_range(0..4u32)] {
            let s = rng.random_range(36..=60u32);
            let pen = image::imageops::resize(&pen, s, s, FilterType::CatmullRom);
            // Anywhere inside one quarter of the canvas: never near its centre.
            let (qx, qy) = ((quarter % 2) * cw / 2, (quarter / 2) * ch / 2);
            let x = qx + rng.random_range(0..=cw / 2 - s);
            let y = qy + rng.random_range(0..=ch / 2 - s);
            let mut canvas = GrayImage::from_pixel(cw, ch, Luma([255]));
            image::imageops::replace(&mut canvas, &pen, x as i64, y as i64);
            let p = dir.path().join(format!("offcentre_{i}_{x}_{y}_{s}.png"));
            canvas.save(&p).unwrap();
            files.push(p);
            where_.push((i, x, y, s));
        }
    }
    let got = predict(&model, &files);
    let wrong: Vec<String> = where_
        .iter()
        .zip(&got)
        .filter(|((i, ..), &c)| c != test.labels[*i] as u64)
        .map(|((i, x, y, s), c)| {
            format!(
                "test digit {i} (a {}) as {s} px at ({x}, {y}) read as {c}",
                test.labels[*i]
            )
        })
        .collect();
    eprintln!(
        "digits {picked:?}: {} of {} off-centre pictures right",
        files.len() - wrong.len(),
        files.len()
    );
    // A digit rescaled from 28 px to 36–60 px and back is not the same picture: a thin 9 can
    // close into a 4 (1 of 24 under one of 14 seeds tried). At most 2 of 24 may differ; the old
    // resize-only preprocessing got 0 of 24 right.
    assert!(wrong.len() <= 2, "seed {seed}: {wrong:#?}");
}
