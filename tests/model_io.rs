//! Model and checkpoint files: round trips, the on-disk layout, and rejection of bad files.

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use wgtrain::error::Setting;
use wgtrain::model::io::{
    load_tensors, save_tensors, Checkpoint, Metadata, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_V1,
    MODEL_FORMAT, MODEL_FORMAT_V1,
};
use wgtrain::model::{Arch, Model, Param};
use wgtrain::Error;

fn arch(s: &str) -> Arch {
    Arch::parse(s).unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A small model with non-zero biases, so bias mix-ups would show.
fn model(a: &str, seed: u64) -> Model {
    let mut m = Model::init_uniform(&arch(a), 0.1, seed);
    for (l, d) in m.params.iter_mut().enumerate() {
        d.bias = Array1::from_shape_fn(d.bias.len(), |j| (l * 100 + j) as f32 * 0.01 - 0.3);
    }
    m
}

/// The JSON header of a safetensors file, parsed independently of the library under test.
fn header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// Write a safetensors file with the reference implementation: (name, dtype, shape, raw bytes).
fn write_raw(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<&[(&str, &str)]>,
) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let metadata: Option<HashMap<String, String>> = metadata.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    let bytes =
        safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), metadata).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}

/// A tensor for `write_entries`: name, dtype, shape, raw little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// F32 `layers.{i}.weight|bias` for widths `sizes`, as `write_raw` wants them.
fn layer_entries(sizes: &[usize]) -> Vec<Entry> {
    let mut v = Vec::new();
    for (l, w) in sizes.windows(2).enumerate() {
        let (i, o) = (w[0], w[1]);
        v.push((
            format!("layers.{l}.weight"),
            Dtype::F32,
            vec![o, i],
            f32_bytes(o * i),
        ));
        v.push((
            format!("layers.{l}.bias"),
            Dtype::F32,
            vec![o],
            f32_bytes(o),
        ));
    }
    v
}

fn write_entries(path: &Path, entries: &[Entry], m: Option<&[(&str, &str)]>) {
    let borrowed: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = entries
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_raw(path, &borrowed, m);
}

/// Load as a model and return the one-line error, checking it names the file.
fn load_err(path: &Path) -> String {
    let err = Model::load(path).expect_err("file should be rejected");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    assert!(
        msg.contains(&*path.file_name().unwrap().to_string_lossy()),
        "error does not name the file: {msg}"
    );
    msg
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn model_round_trip() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    let m = model("20-7-5-3", 1);
    let extra = meta(&[("seed", "1"), ("lr", "0.1"), ("note", "héllo \"quoted\"")]);
    m.save(&p, &extra).unwrap();
    let (back, got) = Model::load(&p).unwrap();
    assert_eq!(back, m);
    assert_eq!(got, extra);
    assert_eq!(
        d.names(),
        vec!["m.safetensors"],
        "no temp files left behind"
    );
}

#[test]
fn saving_is_deterministic() {
    let d = Dir::new();
    let m = model("30-8-4", 7);
    let extra = meta(&[("b", "2"), ("a", "1"), ("c", "3")]);
    m.save(d.path("a"), &extra).unwrap();
    m.save(d.path("b"), &extra).unwrap();
    assert_eq!(
        std::fs::read(d.path("a")).unwrap(),
        std::fs::read(d.path("b")).unwrap()
    );
}

#[test]
fn file_uses_pytorch_linear_layout() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    let m = model("6-4-3", 2);
    m.save(&p, &meta(&[("seed", "2")])).unwrap();

    let h = header(&p);
    let obj = h.as_object().unwrap();
    let mut names: Vec<&String> = obj.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    assert_eq!(
        names,
        [
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight"
        ]
    );
    let shape = |n: &str| obj[n]["shape"].clone();
    assert_eq!(
        shape("layers.0.weight"),
        serde_json::json!([4, 6]),
        "[out, in]"
    );
    assert_eq!(shape("layers.0.bias"), serde_json::json!([4]));
    assert_eq!(shape("layers.1.weight"), serde_json::json!([3, 4]));
    assert_eq!(shape("layers.1.bias"), serde_json::json!([3]));
    for n in names {
        assert_eq!(obj[n]["dtype"], "F32");
    }
    let md = &obj["__metadata__"];
    assert_eq!(md["arch"], "6-4-3");
    assert_eq!(md["format"], MODEL_FORMAT);
    assert_eq!(MODEL_FORMAT, "wgtrain-model-v2");
    assert_eq!(md["activation"], "relu");
    assert_eq!(md["output"], "softmax");
    assert_eq!(md["seed"], "2");

    // Row-major [out, in]: element [1, 2] of layer 0 is the 1*6+2'th float of its data.
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let start = obj["layers.0.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + n + start + 4 * (6 + 2);
    let v = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(v, m.params[0].weight[[1, 2]]);

    // And the reference implementation reads it.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("layers.1.weight").unwrap().shape(), &[3, 4]);
}

#[test]
fn pytorch_style_file_without_metadata_loads() {
    let d = Dir::new();
    let p = d.path("torch.safetensors");
    write_entries(&p, &layer_entries(&[5, 4, 2]), None);
    let (m, extra) = Model::load(&p).unwrap();
    assert_eq!(m.arch, arch("5-4-2"));
    assert!(extra.is_empty());
    assert_eq!(m.params[0].weight[[0, 3]], 1.5);
    assert_eq!(m.params[1].bias[1], 0.5);
}

#[test]
fn column_major_weights_are_saved_in_logical_order() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    let mut m = model("4-3", 3);
    // A Fortran-layout array with the same logical contents.
    let w = m.params[0].weight.clone();
    let f = Array2::from_shape_fn((4, 3), |(i, o)| w[[o, i]]).reversed_axes();
    assert!(f.as_slice().is_none());
    m.params[0].weight = f.into_dyn();
    m.save(&p, &Metadata::new()).unwrap();
    assert_eq!(Model::load(&p).unwrap().0.params[0].weight, w);
}

#[test]
fn nan_and_inf_files_are_refused() {
    let d = Dir::new();
    let cases: [(&str, f32, &str); 3] = [
        ("nan", f32::NAN, "NaN"),
        ("inf", f32::INFINITY, "inf"),
        ("neginf", f32::NEG_INFINITY, "-inf"),
    ];
    for (name, v, shown) in cases {
        // A conv net: the bad value sits in the second conv's weight.
        let p = d.path(&format!("{name}.safetensors"));
        let mut m = model("1x8x8-c2k3-m2-c3k2-4", 4);
        m.params[1].weight[[2, 1, 0, 1]] = v;
        m.save(&p, &Metadata::new()).unwrap();
        let msg = load_err(&p);
        assert!(
            msg.contains(&format!(
                "tensor `layers.1.weight` holds {shown} at [2, 1, 0, 1]"
            )),
            "{msg}"
        );
        assert!(matches!(
            Model::load(&p).unwrap_err(),
            Error::BadModel { .. }
        ));

        // A bias of an MLP.
        let q = d.path(&format!("{name}_bias.safetensors"));
        let mut m = model("3-2", 4);
        m.params[0].bias[1] = v;
        m.save(&q, &Metadata::new()).unwrap();
        assert!(load_err(&q).contains("tensor `layers.0.bias`"));

        // And in memory.
        let e = m.check_finite("the model").unwrap_err().to_string();
        assert!(e.contains("tensor `layers.0.bias`"), "{e}");
    }
}

#[test]
fn low_level_tensors_round_trip() {
    let d = Dir::new();
    let p = d.path("t.safetensors");
    let a = [1.5f32, -2.0, 3.25];
    let b = [7.0f32];
    let c: [f32; 0] = [];
    let m = meta(&[("k", "v")]);
    save_tensors(
        &p,
        &[
            ("a", &[3], &a),
            ("odd", &[1, 1], &b),
            ("empty", &[0, 5], &c),
        ],
        &m,
    )
    .unwrap();
    let (t, got) = load_tensors(&p).unwrap();
    assert_eq!(got, m);
    assert_eq!(t["a"], (vec![3], a.to_vec()));
    assert_eq!(t["odd"], (vec![1, 1], b.to_vec()));
    assert_eq!(t["empty"], (vec![0, 5], vec![]));

    let bad = save_tensors(&p, &[("a", &[2], &a)], &m)
        .unwrap_err()
        .to_string();
    assert!(bad.contains("shape [2]"), "{bad}");
    assert_eq!(load_tensors(&p).unwrap().0.len(), 3, "old file untouched");
}

#[test]
fn garbage_and_truncated_files_are_rejected() {
    let d = Dir::new();
    let p = d.path("bad.safetensors");
    for junk in [
        &b""[..],
        b"abc",
        b"\x08\0\0\0\0\0\0\0{}      ",
        b"not a model file at all",
    ] {
        std::fs::write(&p, junk).unwrap();
        load_err(&p);
    }
    std::fs::write(&p, u64::MAX.to_le_bytes()).unwrap();
    assert!(load_err(&p).contains("implausible"));

    let good = d.path("good.safetensors");
    model("10-6-3", 5)
        .save(&good, &meta(&[("x", "y")]))
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in (0..bytes.len()).step_by(7) {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let msg = load_err(&p);
        assert!(
            msg.contains("truncated") || msg.contains("not a safetensors file"),
            "cut at {cut}: {msg}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4]);
    std::fs::write(&p, &longer).unwrap();
    assert!(load_err(&p).contains("trailing"));
}

#[test]
fn missing_file_is_an_io_error() {
    let d = Dir::new();
    let err = Model::load(d.path("absent.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.safetensors"));
}

#[test]
fn other_dtypes_are_rejected() {
    let d = Dir::new();
    for (dtype, width, name) in [
        (Dtype::F64, 8, "F64"),
        (Dtype::I32, 4, "I32"),
        (Dtype::F16, 2, "F16"),
    ] {
        let p = d.path(&format!("{name}.safetensors"));
        let mut e = layer_entries(&[3, 2]);
        e[0] = (
            "layers.0.weight".into(),
            dtype,
            vec![2, 3],
            vec![0; 6 * width],
        );
        write_entries(&p, &e, None);
        let msg = load_err(&p);
        assert!(msg.contains(name) && msg.contains("only F32"), "{msg}");
    }
}

#[test]
fn structural_problems_are_rejected() {
    let d = Dir::new();
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "missing_bias",
            layer_entries(&[3, 2])
                .into_iter()
                .filter(|e| e.0 != "layers.0.bias")
                .collect(),
            "missing tensor `layers.0.bias`",
        ),
        (
            "gap",
            layer_entries(&[3, 2, 2, 2])
                .into_iter()
                .filter(|e| !e.0.starts_with("layers.1."))
                .collect(),
            "missing tensor `layers.1.weight`",
        ),
        (
            "no_layers",
            vec![("fc1.weight".into(), Dtype::F32, vec![2, 3], f32_bytes(6))],
            "no `layers.0.weight`",
        ),
        (
            "broken_chain",
            {
                let mut e = layer_entries(&[3, 4, 2]);
                e[2] = (
                    "layers.1.weight".into(),
                    Dtype::F32,
                    vec![2, 5],
                    f32_bytes(10),
                );
                e
            },
            "do not chain",
        ),
        (
            "bias_len",
            {
                let mut e = layer_entries(&[3, 2]);
                e[1] = ("layers.0.bias".into(), Dtype::F32, vec![3], f32_bytes(3));
                e
            },
            "expected [2]",
        ),
        (
            "weight_1d",
            {
                let mut e = layer_entries(&[3, 2]);
                e[0] = ("layers.0.weight".into(), Dtype::F32, vec![6], f32_bytes(6));
                e
            },
            "expected [out, in]",
        ),
        (
            "weight_3d",
            {
                let mut e = layer_entries(&[3, 2]);
                e[0] = (
                    "layers.0.weight".into(),
                    Dtype::F32,
                    vec![2, 3, 1],
                    f32_bytes(6),
                );
                e
            },
            "expected [out, in]",
        ),
        ("zero_width", layer_entries(&[3, 0, 2]), "layer width 0"),
        (
            "extra_kind",
            {
                let mut e = layer_entries(&[3, 2]);
                e.push((
                    "layers.0.running_mean".into(),
                    Dtype::F32,
                    vec![2],
                    f32_bytes(2),
                ));
                e
            },
            "unexpected tensor `layers.0.running_mean`",
        ),
        (
            "leading_zero",
            {
                let mut e = layer_entries(&[3, 2]);
                e.push((
                    "layers.00.weight".into(),
                    Dtype::F32,
                    vec![2, 3],
                    f32_bytes(6),
                ));
                e
            },
            "unexpected tensor `layers.00.weight`",
        ),
        (
            "foreign",
            {
                let mut e = layer_entries(&[3, 2]);
                e.push(("embedding".into(), Dtype::F32, vec![2], f32_bytes(2)));
                e
            },
            "unexpected tensors `embedding`",
        ),
    ];
    for (name, entries, want) in cases {
        let p = d.path(&format!("{name}.safetensors"));
        write_entries(&p, &entries, None);
        let msg = load_err(&p);
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

#[test]
fn metadata_problems_are_rejected() {
    let d = Dir::new();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("arch", "3-5-2")],
            "metadata says arch `3-5-2` but tensor `layers.0.weight` has shape [4, 3] where arch 3-5-2 needs [5, 3] (the tensors are 3-4-2)",
        ),
        (&[("arch", "garbage")], "metadata says arch `garbage`"),
        (&[("format", "keras-h5")], "unsupported format `keras-h5`"),
        (
            &[("activation", "tanh")],
            "activation `tanh` is not supported",
        ),
        (
            &[("output", "sigmoid")],
            "output `sigmoid` is not supported",
        ),
    ];
    for (i, (m, want)) in cases.iter().enumerate() {
        let p = d.path(&format!("meta{i}.safetensors"));
        write_entries(&p, &layer_entries(&[3, 4, 2]), Some(m));
        let msg = load_err(&p);
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn inconsistent_model_is_not_saved() {
    let d = Dir::new();
    let mut m = model("4-3-2", 1);
    m.params[1].bias = Array1::zeros(5);
    let err = m.save(d.path("m"), &Metadata::new()).unwrap_err();
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    assert!(err.to_string().contains("`layers.1.bias`"), "{err}");
    m.params.pop();
    assert!(m.save(d.path("m"), &Metadata::new()).is_err());
    assert!(d.names().is_empty());
}

#[test]
fn check_compatible_names_both_architectures() {
    let m = model("784-256-10", 1);
    m.check_compatible(&arch("784-256-10"), Path::new("x.safetensors"))
        .unwrap();
    let err = m
        .check_compatible(&arch("784-512-10"), Path::new("x.safetensors"))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidSetting {
            setting: Setting::Arch,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "invalid argument network: 784-512-10 disagrees with model file x.safetensors (784-256-10)"
    );
}

/// `params` with every value changed, so slot mix-ups would show.
fn shifted(params: &[Param], by: f32) -> Vec<Param> {
    params
        .iter()
        .map(|p| Param {
            weight: p.weight.mapv(|w| w * 0.5 + by),
            bias: p.bias.mapv(|b| b - by),
        })
        .collect()
}

fn checkpoint() -> Checkpoint {
    let m = model("12-5-3", 9);
    let velocity = shifted(&m.params, 0.01);
    Checkpoint {
        model: m,
        slots: vec![("velocity".into(), velocity)],
        run: json!({"epoch": 3, "step": 17, "config": {"lr": 0.05, "momentum": 0.9, "seed": 9, "shuffle": true}}),
    }
}

#[test]
fn checkpoint_round_trip() {
    let d = Dir::new();
    let p = d.path("ckpt.safetensors");
    let c = checkpoint();
    c.save(&p).unwrap();
    assert_eq!(Checkpoint::load(&p).unwrap(), c);

    let h = header(&p);
    assert_eq!(h["__metadata__"]["format"], CHECKPOINT_FORMAT);
    assert_eq!(CHECKPOINT_FORMAT, "wgtrain-checkpoint-v2");
    let run: serde_json::Value =
        serde_json::from_str(h["__metadata__"]["run"].as_str().unwrap()).unwrap();
    assert_eq!(run, c.run);
    assert_eq!(
        h["optimizer.velocity.0.weight"]["shape"],
        serde_json::json!([5, 12])
    );
    assert_eq!(
        h["optimizer.velocity.1.bias"]["shape"],
        serde_json::json!([3])
    );

    // Deterministic bytes.
    let q = d.path("again.safetensors");
    c.save(&q).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
}

#[test]
fn adam_checkpoint_of_a_conv_net_round_trips() {
    let d = Dir::new();
    let p = d.path("adam.safetensors");
    let m = Model::init_pytorch(&arch(Arch::preset("lenet5").unwrap()), 5);
    // Slots in a non-sorted order, and no momentum: the order is kept.
    let c = Checkpoint {
        slots: vec![
            ("adam.v".into(), shifted(&m.params, 0.25)),
            ("adam.m".into(), shifted(&m.params, -0.5)),
        ],
        model: m,
        run: json!({"optimizer": "adam", "t": 1200, "betas": [0.9, 0.999]}),
    };
    c.save(&p).unwrap();
    let back = Checkpoint::load(&p).unwrap();
    assert_eq!(back, c);
    let h = header(&p);
    assert_eq!(
        h["optimizer.adam.m.1.weight"]["shape"],
        serde_json::json!([16, 6, 5, 5])
    );
    assert_eq!(
        h["optimizer.adam.v.4.bias"]["shape"],
        serde_json::json!([10])
    );

    // A checkpoint without optimizer state (plain SGD) is fine too.
    let plain = Checkpoint {
        slots: vec![],
        ..c.clone()
    };
    plain.save(&p).unwrap();
    assert_eq!(Checkpoint::load(&p).unwrap(), plain);

    // Slot names must be unique and usable in tensor names.
    for bad in ["", "a..b", "x y", ".m", "velocity"] {
        let mut c = c.clone();
        c.slots.push((bad.into(), shifted(&c.model.params, 1.0)));
        if bad == "velocity" {
            c.slots.push((bad.into(), shifted(&c.model.params, 1.0)));
        }
        let e = c.save(d.path("bad.safetensors")).unwrap_err().to_string();
        assert!(e.contains("cannot write optimizer slot"), "{bad:?}: {e}");
    }
    // A slot shaped unlike the model is not saved.
    let mut c = c.clone();
    c.slots[1].1[2].bias = Array1::zeros(3);
    let e = c.save(d.path("bad.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Weights { .. }), "{e}");
    assert!(e.to_string().contains("`optimizer.adam.m.2.bias`"), "{e}");
}

#[test]
fn checkpoint_loads_as_a_model() {
    let d = Dir::new();
    let p = d.path("ckpt.safetensors");
    let c = checkpoint();
    c.save(&p).unwrap();
    let (m, extra) = Model::load(&p).unwrap();
    assert_eq!(m, c.model);
    let run: serde_json::Value = serde_json::from_str(&extra["run"]).unwrap();
    assert_eq!(run, c.run);
    assert!(!extra.contains_key("format") && !extra.contains_key("slots"));
}

#[test]
fn model_file_is_not_a_checkpoint() {
    let d = Dir::new();
    let p = d.path("model.safetensors");
    model("4-2", 1).save(&p, &Metadata::new()).unwrap();
    let msg = Checkpoint::load(&p).unwrap_err().to_string();
    assert!(
        msg.contains("not a checkpoint") && msg.contains("model.safetensors"),
        "{msg}"
    );

    let q = d.path("bare.safetensors");
    write_entries(&q, &layer_entries(&[4, 2]), None);
    assert!(Checkpoint::load(&q)
        .unwrap_err()
        .to_string()
        .contains("not a checkpoint"));
}

/// `layer_entries(sizes)` renamed to `optimizer.{slot}.*`.
fn slot_entries(slot: &str, sizes: &[usize]) -> Vec<Entry> {
    layer_entries(sizes)
        .into_iter()
        .map(|(n, dt, s, b)| {
            (
                format!("optimizer.{slot}.{}", &n["layers.".len()..]),
                dt,
                s,
                b,
            )
        })
        .collect()
}

/// `entries` with the F32 value at `index` of tensor `name` replaced by `v`.
fn poison(mut entries: Vec<Entry>, name: &str, index: usize, v: f32) -> Vec<Entry> {
    let e = entries.iter_mut().find(|e| e.0 == name).unwrap();
    e.3[4 * index..4 * index + 4].copy_from_slice(&v.to_le_bytes());
    entries
}

#[test]
fn broken_checkpoints_are_rejected() {
    let d = Dir::new();
    let v1 = [("format", CHECKPOINT_FORMAT_V1), ("epoch", "2")];
    let v2 = [
        ("format", CHECKPOINT_FORMAT),
        ("run", "{\"epoch\":2}"),
        ("slots", "[\"velocity\"]"),
    ];
    let velocity = |sizes: &[usize]| slot_entries("velocity", sizes);
    // (file name, tensors, metadata, expected error text)
    type Case<'a> = (&'a str, Vec<Entry>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        (
            "no_velocity",
            layer_entries(&[3, 2]),
            &v1,
            "missing tensor `optimizer.velocity.0.weight`",
        ),
        (
            "wrong_velocity",
            [layer_entries(&[3, 2]), velocity(&[4, 2])].concat(),
            &v1,
            "tensor `optimizer.velocity.0.weight` has shape [2, 4] where the model needs [2, 3]",
        ),
        (
            "no_epoch",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT_V1)],
            "no `epoch`",
        ),
        (
            "bad_epoch",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT_V1), ("epoch", "-1")],
            "epoch `-1`",
        ),
        (
            "stray",
            {
                let mut e = [layer_entries(&[3, 2]), velocity(&[3, 2])].concat();
                e.push(("optimizer.adam.m".into(), Dtype::F32, vec![1], f32_bytes(1)));
                e
            },
            &v1,
            "unexpected tensors `optimizer.adam.m`",
        ),
        (
            "v2_no_velocity",
            layer_entries(&[3, 2]),
            &v2,
            "missing tensor `optimizer.velocity.0.weight`",
        ),
        (
            "v2_wrong_velocity",
            [layer_entries(&[3, 2]), velocity(&[3, 4])].concat(),
            &v2,
            "tensor `optimizer.velocity.0.weight` has shape [4, 3] where the model needs [2, 3]",
        ),
        (
            "v2_wrong_bias",
            {
                let mut e = [layer_entries(&[3, 2]), velocity(&[3, 2])].concat();
                e[3] = (
                    "optimizer.velocity.0.bias".into(),
                    Dtype::F32,
                    vec![3],
                    f32_bytes(3),
                );
                e
            },
            &v2,
            "tensor `optimizer.velocity.0.bias` has shape [3] where the model needs [2]",
        ),
        (
            "v2_extra_layer",
            [layer_entries(&[3, 2]), velocity(&[3, 2, 2])].concat(),
            &v2,
            "unexpected tensors `optimizer.velocity.1.bias`, `optimizer.velocity.1.weight`",
        ),
        (
            "v2_unlisted_slot",
            [
                layer_entries(&[3, 2]),
                velocity(&[3, 2]),
                slot_entries("adam.m", &[3, 2]),
            ]
            .concat(),
            &v2,
            "unexpected tensors `optimizer.adam.m.0.bias`",
        ),
        (
            "v2_no_run",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT)],
            "no `run` metadata",
        ),
        (
            "v2_bad_run",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT), ("run", "{epoch: 2")],
            "`run` metadata is not valid JSON",
        ),
        (
            "v2_bad_slots",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[
                ("format", CHECKPOINT_FORMAT),
                ("run", "{}"),
                ("slots", "velocity"),
            ],
            "`slots` metadata \"velocity\" is not a JSON list of names",
        ),
        (
            "v2_nan_slot",
            poison(
                [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
                "optimizer.velocity.0.weight",
                4,
                f32::NAN,
            ),
            &v2,
            "tensor `optimizer.velocity.0.weight` holds NaN at [1, 1]",
        ),
        (
            "v2_inf_slot",
            poison(
                [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
                "optimizer.velocity.0.bias",
                1,
                f32::INFINITY,
            ),
            &v2,
            "tensor `optimizer.velocity.0.bias` holds inf at [1]",
        ),
        (
            "v1_inf_slot",
            poison(
                [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
                "optimizer.velocity.0.bias",
                0,
                f32::NEG_INFINITY,
            ),
            &v1,
            "tensor `optimizer.velocity.0.bias` holds -inf at [0]",
        ),
        (
            "v2_nan_model",
            poison(
                [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
                "layers.0.weight",
                0,
                f32::NAN,
            ),
            &v2,
            "tensor `layers.0.weight` holds NaN at [0, 0]",
        ),
    ];
    for (name, entries, m, want) in cases {
        let p = d.path(&format!("{name}.safetensors"));
        write_entries(&p, &entries, Some(m));
        let err = Checkpoint::load(&p).unwrap_err();
        assert!(matches!(err, Error::BadModel { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains(want) && msg.contains(name), "{name}: {msg}");
    }
    // A NaN in optimizer state also keeps the file from loading as a model.
    let p = d.path("v2_nan_slot.safetensors");
    assert!(load_err(&p).contains("optimizer.velocity.0.weight"));

    let mut c = checkpoint();
    c.slots[0].1.pop();
    assert!(matches!(
        c.save(d.path("x")).unwrap_err(),
        Error::Weights { .. }
    ));
}

#[test]
fn old_v1_files_still_load() {
    let d = Dir::new();
    // A model file as wgtrain-mlp-v1 wrote it.
    let p = d.path("old_model.safetensors");
    let old_meta: &[(&str, &str)] = &[
        ("format", MODEL_FORMAT_V1),
        ("arch", "5-4-2"),
        ("activation", "relu"),
        ("output", "softmax"),
        ("seed", "3"),
        ("lr", "0.05"),
    ];
    write_entries(&p, &layer_entries(&[5, 4, 2]), Some(old_meta));
    let (m, extra) = Model::load(&p).unwrap();
    assert_eq!(m.arch, arch("5-4-2"));
    assert!(m.arch.is_mlp());
    assert_eq!(m.params[0].weight[[1, 2]], 3.5);
    assert_eq!(extra, meta(&[("seed", "3"), ("lr", "0.05")]));
    // Saving it again writes the new format, same tensors.
    let q = d.path("resaved.safetensors");
    m.save(&q, &extra).unwrap();
    assert_eq!(header(&q)["__metadata__"]["format"], MODEL_FORMAT);
    assert_eq!(Model::load(&q).unwrap(), (m, extra));

    // A checkpoint as wgtrain-checkpoint-v1 wrote it: hyperparameters as strings.
    let c = d.path("old_ckpt.safetensors");
    let ck_meta: &[(&str, &str)] = &[
        ("format", CHECKPOINT_FORMAT_V1),
        ("arch", "5-4-2"),
        ("activation", "relu"),
        ("output", "softmax"),
        ("epoch", "3"),
        ("step", "120"),
        ("lr", "0.05"),
        ("momentum", "0.9"),
        ("l2", "0"),
        ("batch_size", "100"),
        ("epochs", "10"),
        ("seed", "18446744073709551615"),
        ("shuffle", "false"),
        ("device", "lavapipe (Vulkan)"),
    ];
    write_entries(
        &c,
        &[
            layer_entries(&[5, 4, 2]),
            slot_entries("velocity", &[5, 4, 2]),
        ]
        .concat(),
        Some(ck_meta),
    );
    let ck = Checkpoint::load(&c).unwrap();
    assert_eq!(ck.model.arch, arch("5-4-2"));
    assert_eq!(ck.slots.len(), 1);
    assert_eq!(ck.slots[0].0, "velocity");
    assert_eq!(ck.slots[0].1, ck.model.params);
    assert_eq!(
        ck.run,
        json!({
            "epoch": 3, "step": 120, "lr": 0.05, "momentum": 0.9, "l2": 0, "batch_size": 100,
            "epochs": 10, "seed": u64::MAX, "shuffle": false, "device": "lavapipe (Vulkan)"
        })
    );
    // The old files had no step before a certain version: it reads as 0.
    write_entries(
        &c,
        &[
            layer_entries(&[5, 4, 2]),
            slot_entries("velocity", &[5, 4, 2]),
        ]
        .concat(),
        Some(&[("format", CHECKPOINT_FORMAT_V1), ("epoch", "1")]),
    );
    assert_eq!(
        Checkpoint::load(&c).unwrap().run,
        json!({"epoch": 1, "step": 0})
    );
    // And an old checkpoint loads as a model, with its metadata as strings.
    let (_, extra) = Model::load(&c).unwrap();
    assert_eq!(extra, meta(&[("epoch", "1")]));
}

#[test]
fn conv_nets_round_trip_bit_exact() {
    let d = Dir::new();
    for (name, seed) in [("lenet5", 1u64), ("cnn", 2)] {
        let a = arch(Arch::preset(name).unwrap());
        let mut m = Model::init_pytorch(&a, seed);
        // Awkward values: subnormals, -0, extremes.
        m.params[0].weight[[0, 0, 0, 0]] = f32::MIN_POSITIVE / 4.0;
        m.params[0].weight[[0, 0, 0, 1]] = -0.0;
        m.params[1].bias[0] = f32::MAX;
        let p = d.path(&format!("{name}.safetensors"));
        m.save(&p, &meta(&[("seed", "1")])).unwrap();
        let (back, extra) = Model::load(&p).unwrap();
        assert_eq!(back.arch, a);
        assert_eq!(extra, meta(&[("seed", "1")]));
        for (x, y) in m.params.iter().zip(&back.params) {
            assert_eq!(x.weight.shape(), y.weight.shape());
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x.weight), bits(&y.weight), "{name}");
            assert_eq!(x.bias, y.bias);
        }
        let h = header(&p);
        assert_eq!(h["__metadata__"]["arch"], Arch::preset(name).unwrap());
        let shapes = a.param_shapes();
        for (i, (w, o)) in shapes.iter().enumerate() {
            assert_eq!(h[format!("layers.{i}.weight")]["shape"], json!(w));
            assert_eq!(h[format!("layers.{i}.bias")]["shape"], json!([o]));
        }
        assert_eq!(
            h["layers.0.weight"]["shape"],
            json!([if name == "cnn" { 32 } else { 6 }, 1, 5, 5])
        );
    }
}

#[test]
fn tensor_disagreeing_with_arch_is_refused() {
    let d = Dir::new();
    let a = "1x8x8-c2k3-m2-c3k2-4";
    let base = |m: &Model| -> Vec<Entry> {
        let mut v = Vec::new();
        for (i, p) in m.params.iter().enumerate() {
            let bytes = |a: &[f32]| a.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            v.push((
                format!("layers.{i}.weight"),
                Dtype::F32,
                p.weight.shape().to_vec(),
                bytes(p.weight.as_slice().unwrap()),
            ));
            v.push((
                format!("layers.{i}.bias"),
                Dtype::F32,
                vec![p.bias.len()],
                bytes(p.bias.as_slice().unwrap()),
            ));
        }
        v
    };
    let m = model(a, 1);
    let md: &[(&str, &str)] = &[("arch", a)];
    // The well-formed file loads.
    let ok = d.path("ok.safetensors");
    write_entries(&ok, &base(&m), Some(md));
    assert_eq!(Model::load(&ok).unwrap().0, m);

    type Case = (&'static str, Vec<Entry>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "kernel",
            {
                let mut e = base(&m);
                e[2] = ("layers.1.weight".into(), Dtype::F32, vec![3, 2, 3, 3], f32_bytes(54));
                e
            },
            "tensor `layers.1.weight` has shape [3, 2, 3, 3] where arch 1x8x8-c2k3-m2-c3k2-4 needs [3, 2, 2, 2]",
        ),
        (
            "flatten",
            {
                let mut e = base(&m);
                e[4] = ("layers.2.weight".into(), Dtype::F32, vec![4, 10], f32_bytes(40));
                e
            },
            "tensor `layers.2.weight` has shape [4, 10] where arch 1x8x8-c2k3-m2-c3k2-4 needs [4, 12]",
        ),
        (
            "bias",
            {
                let mut e = base(&m);
                e[1] = ("layers.0.bias".into(), Dtype::F32, vec![3], f32_bytes(3));
                e
            },
            "tensor `layers.0.bias` has shape [3] where arch 1x8x8-c2k3-m2-c3k2-4 needs [2]",
        ),
        (
            "missing_layer",
            base(&m).into_iter().filter(|e| !e.0.starts_with("layers.2.")).collect(),
            "missing tensor `layers.2.weight`",
        ),
        (
            "extra_layer",
            {
                let mut e = base(&m);
                e.push(("layers.3.weight".into(), Dtype::F32, vec![4, 4], f32_bytes(16)));
                e.push(("layers.3.bias".into(), Dtype::F32, vec![4], f32_bytes(4)));
                e
            },
            "unexpected tensor `layers.3.weight`",
        ),
    ];
    for (name, entries, want) in cases {
        let p = d.path(&format!("{name}.safetensors"));
        write_entries(&p, &entries, Some(md));
        let msg = load_err(&p);
        assert!(msg.contains(want), "{name}: {msg}");
    }
    // Without `arch` metadata, a conv net cannot be rebuilt from shapes.
    let p = d.path("no_arch.safetensors");
    write_entries(&p, &base(&m), None);
    assert!(load_err(&p).contains("needs `arch` metadata"));
    // An impossible arch in the metadata.
    let p = d.path("bad_arch.safetensors");
    write_entries(&p, &base(&m), Some(&[("arch", "1x8x8-c2k9-m2-c3k2-4")]));
    let msg = load_err(&p);
    assert!(
        msg.contains("metadata says arch `1x8x8-c2k9-m2-c3k2-4`, which is not a possible network")
            && msg.contains("layer 1 `c2k9`"),
        "{msg}"
    );
}

#[test]
fn arch_strings_round_trip() {
    for (name, s) in [
        ("seed-small", "784-10-10-10"),
        ("seed-large", "784-512-512-512-10"),
        ("lenet5", "1x28x28-c6k5p2-m2-c16k5-m2-120-84-10"),
        ("cnn", "1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10"),
    ] {
        assert_eq!(Arch::preset(name), Some(s));
        let a = arch(s);
        assert_eq!(a.to_string(), s);
        assert_eq!(arch(&a.to_string()), a);
        assert_eq!(a.input_len(), 784);
        assert_eq!(a.classes(), 10);
        assert_eq!(a.is_mlp(), !s.contains('c'));
        assert_eq!(a.shapes().unwrap().len(), a.layers.len() + 1);
    }
    let a = arch("3x16x16-c8k3s2p1-10");
    assert_eq!(a.to_string(), "3x16x16-c8k3s2p1-10");
    assert_eq!(arch("3x16x16-c8k3p1s2-10"), a, "suffixes in any order");
    assert_eq!(
        a.param_shapes(),
        vec![(vec![8, 3, 3, 3], 8), (vec![10, 8 * 8 * 8], 10)]
    );
    assert_eq!(a.n_params(), 8 * 27 + 8 + 10 * 512 + 10);
    // Defaults are not printed.
    assert_eq!(arch("1x28x28-c4k3s1p0-10").to_string(), "1x28x28-c4k3-10");
    // Old width lists still parse.
    assert_eq!(arch("784,512,10"), arch("784-512-10"));
    assert_eq!(arch("784x10"), arch("784-10"));
}

#[test]
fn impossible_nets_are_refused_naming_the_layer() {
    for (s, want) in [
        (
            "1x28x28-c6k5-m2-c16k20-10",
            "layer 3 `c16k20`: 20x20 kernel is larger than its input 6x12x12 padded to 12x12",
        ),
        (
            "1x28x28-m4-m4-m4-10",
            "layer 3 `m4`: 4x4 pooling of its input 1x1x1 gives zero size",
        ),
        (
            "784-c6k5-10",
            "layer 1 `c6k5`: a convolution needs an image, but the input gives a flat 784",
        ),
        (
            "1x28x28-120-c6k5-10",
            "layer 2 `c6k5`: a convolution needs an image, but layer 1 `120` gives a flat 120",
        ),
        (
            "1x28x28-c6k5-m2",
            "layer 2 `m2`: the last layer must be dense",
        ),
        ("784-abc-10", "`abc` in `784-abc-10` is not a layer"),
    ] {
        let err = Arch::parse(s).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidSetting {
                    setting: Setting::Arch,
                    ..
                } | Error::Network { .. }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(!msg.contains('\n') && msg.contains(want), "{s}: {msg}");
    }
}

#[test]
fn init_uniform_matches_the_old_mlp_stream() {
    // What Mlp::init_uniform drew for 784-10-10-10, seed 1: per layer an [O, I] array filled
    // row-major with random_range(-scale..=scale) from one ChaCha8 stream.
    let m = Model::init_uniform(&arch("784-10-10-10"), 0.07, 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let first: Vec<f32> = (0..5).map(|_| rng.random_range(-0.07f32..=0.07)).collect();
    let got: Vec<f32> = m.params[0].weight.iter().take(5).copied().collect();
    assert_eq!(got, first);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for (p, (o, i)) in m.params.iter().zip([(10, 784), (10, 10), (10, 10)]) {
        let old = Array2::from_shape_simple_fn((o, i), || rng.random_range(-0.07f32..=0.07));
        assert_eq!(p.weight, old.into_dyn());
        assert_eq!(p.bias, Array1::<f32>::zeros(o));
    }
    assert_eq!(m.params[2].weight.dim(), IxDyn(&[10, 10]));
}

#[test]
fn overwriting_keeps_a_complete_file_and_no_temp_files() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    model("8-4-2", 1).save(&p, &Metadata::new()).unwrap();
    model("8-6-2", 2).save(&p, &Metadata::new()).unwrap();
    assert_eq!(Model::load(&p).unwrap().0.arch, arch("8-6-2"));
    assert_eq!(d.names(), vec!["m.safetensors"]);

    let err = model("8-2", 1)
        .save(
            d.path("missing_dir").join("m.safetensors"),
            &Metadata::new(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("missing_dir"), "{err}");
}

/// A valid checkpoint file's bytes, saved once (saving fsyncs, which is slow to repeat).
fn checkpoint_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let d = Dir::new();
        let p = d.path("c.safetensors");
        checkpoint().save(&p).unwrap();
        std::fs::read(&p).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let d = Dir::new();
        let p = d.path("r.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let _ = Model::load(&p);
        let _ = Checkpoint::load(&p);
    }

    #[test]
    fn random_headers_never_panic(header in "\\{[ -~]{0,120}\\}", tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let d = Dir::new();
        let p = d.path("h.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&tail);
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(Model::load(&p).is_err());
    }

    #[test]
    fn mutated_files_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let d = Dir::new();
        let p = d.path("m.safetensors");
        let mut bytes = checkpoint_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        std::fs::write(&p, &bytes).unwrap();
        let _ = Model::load(&p);
        let _ = Checkpoint::load(&p);
        bytes.truncate(cut.index(bytes.len()));
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(Model::load(&p).is_err());
    }
}

#[test]
fn checkpoint_without_slot_list_finds_its_slots() {
    let d = Dir::new();
    let p = d.path("noslots.safetensors");
    write_entries(
        &p,
        &[
            layer_entries(&[3, 2]),
            slot_entries("adam.v", &[3, 2]),
            slot_entries("adam.m", &[3, 2]),
        ]
        .concat(),
        Some(&[("format", CHECKPOINT_FORMAT), ("run", "{\"t\":5}")]),
    );
    let c = Checkpoint::load(&p).unwrap();
    let names: Vec<&str> = c.slots.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["adam.m", "adam.v"]);
    assert_eq!(c.run, json!({"t": 5}));
}
