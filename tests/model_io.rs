//! Model and checkpoint files: round trips, the on-disk layout, and rejection of bad files.

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use wgtrain::model::io::{load_tensors, save_tensors, Checkpoint, Metadata, CHECKPOINT_FORMAT};
use wgtrain::model::{Arch, Dense, Mlp};
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
fn model(a: &str, seed: u64) -> Mlp {
    let mut m = Mlp::init_uniform(&arch(a), 0.1, seed);
    for (l, d) in m.layers.iter_mut().enumerate() {
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
    let err = Mlp::load(path).expect_err("file should be rejected");
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
    let (back, got) = Mlp::load(&p).unwrap();
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
    assert_eq!(md["format"], "wgtrain-mlp-v1");
    assert_eq!(md["activation"], "relu");
    assert_eq!(md["output"], "softmax");
    assert_eq!(md["seed"], "2");

    // Row-major [out, in]: element [1, 2] of layer 0 is the 1*6+2'th float of its data.
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let start = obj["layers.0.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + n + start + 4 * (6 + 2);
    let v = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(v, m.layers[0].weight[[1, 2]]);

    // And the reference implementation reads it.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("layers.1.weight").unwrap().shape(), &[3, 4]);
}

#[test]
fn pytorch_style_file_without_metadata_loads() {
    let d = Dir::new();
    let p = d.path("torch.safetensors");
    write_entries(&p, &layer_entries(&[5, 4, 2]), None);
    let (m, extra) = Mlp::load(&p).unwrap();
    assert_eq!(m.arch, arch("5-4-2"));
    assert!(extra.is_empty());
    assert_eq!(m.layers[0].weight[[0, 3]], 1.5);
    assert_eq!(m.layers[1].bias[1], 0.5);
}

#[test]
fn column_major_weights_are_saved_in_logical_order() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    let mut m = model("4-3", 3);
    // A Fortran-layout array with the same logical contents.
    let w = m.layers[0].weight.clone();
    let f = Array2::from_shape_fn((4, 3), |(i, o)| w[[o, i]]).reversed_axes();
    assert!(f.as_slice().is_none());
    m.layers[0].weight = f;
    m.save(&p, &Metadata::new()).unwrap();
    assert_eq!(Mlp::load(&p).unwrap().0.layers[0].weight, w);
}

#[test]
fn nan_values_are_kept() {
    let d = Dir::new();
    let p = d.path("nan.safetensors");
    let mut m = model("3-2", 4);
    m.layers[0].weight[[1, 2]] = f32::NAN;
    m.layers[0].bias[0] = f32::INFINITY;
    m.save(&p, &Metadata::new()).unwrap();
    let back = Mlp::load(&p).unwrap().0;
    assert!(back.layers[0].weight[[1, 2]].is_nan());
    assert_eq!(back.layers[0].bias[0], f32::INFINITY);
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
    let err = Mlp::load(d.path("absent.safetensors")).unwrap_err();
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
            "metadata says arch `3-5-2` but the tensors are 3-4-2",
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
    m.layers[1].bias = Array1::zeros(5);
    let err = m.save(d.path("m"), &Metadata::new()).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    m.layers.pop();
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
    assert!(matches!(err, Error::InvalidArg { name: "--arch", .. }));
    assert_eq!(
        err.to_string(),
        "invalid argument --arch: 784-512-10 disagrees with model file x.safetensors (784-256-10)"
    );
}

fn checkpoint() -> Checkpoint {
    let m = model("12-5-3", 9);
    let velocity = m
        .layers
        .iter()
        .map(|l| Dense {
            weight: l.weight.mapv(|w| w * 0.5 + 0.01),
            bias: l.bias.mapv(|b| b - 1.0),
        })
        .collect();
    Checkpoint {
        model: m,
        velocity,
        epoch: 3,
        meta: meta(&[("lr", "0.05"), ("momentum", "0.9"), ("seed", "9")]),
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
    assert_eq!(h["__metadata__"]["epoch"], "3");
    assert_eq!(
        h["optimizer.velocity.0.weight"]["shape"],
        serde_json::json!([5, 12])
    );
    assert_eq!(
        h["optimizer.velocity.1.bias"]["shape"],
        serde_json::json!([3])
    );
}

#[test]
fn checkpoint_loads_as_a_model() {
    let d = Dir::new();
    let p = d.path("ckpt.safetensors");
    let c = checkpoint();
    c.save(&p).unwrap();
    let (m, extra) = Mlp::load(&p).unwrap();
    assert_eq!(m, c.model);
    assert_eq!(extra.get("epoch").map(String::as_str), Some("3"));
    assert_eq!(extra.get("lr").map(String::as_str), Some("0.05"));
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

#[test]
fn broken_checkpoints_are_rejected() {
    let d = Dir::new();
    let ck = [("format", CHECKPOINT_FORMAT), ("epoch", "2")];
    let velocity = |sizes: &[usize]| -> Vec<Entry> {
        layer_entries(sizes)
            .into_iter()
            .map(|(n, dt, s, b)| {
                (
                    format!("optimizer.velocity.{}", &n["layers.".len()..]),
                    dt,
                    s,
                    b,
                )
            })
            .collect()
    };
    // (file name, tensors, metadata, expected error text)
    type Case<'a> = (&'a str, Vec<Entry>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        (
            "no_velocity",
            layer_entries(&[3, 2]),
            &ck,
            "optimizer velocity has 0 layers",
        ),
        (
            "wrong_velocity",
            [layer_entries(&[3, 2]), velocity(&[4, 2])].concat(),
            &ck,
            "optimizer velocity layer 0",
        ),
        (
            "no_epoch",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT)],
            "no `epoch`",
        ),
        (
            "bad_epoch",
            [layer_entries(&[3, 2]), velocity(&[3, 2])].concat(),
            &[("format", CHECKPOINT_FORMAT), ("epoch", "-1")],
            "epoch `-1`",
        ),
        (
            "stray",
            {
                let mut e = [layer_entries(&[3, 2]), velocity(&[3, 2])].concat();
                e.push(("optimizer.adam.m".into(), Dtype::F32, vec![1], f32_bytes(1)));
                e
            },
            &ck,
            "unexpected tensors `optimizer.adam.m`",
        ),
    ];
    for (name, entries, m, want) in cases {
        let p = d.path(&format!("{name}.safetensors"));
        write_entries(&p, &entries, Some(m));
        let msg = Checkpoint::load(&p).unwrap_err().to_string();
        assert!(msg.contains(want) && msg.contains(name), "{name}: {msg}");
    }

    let mut c = checkpoint();
    c.velocity.pop();
    assert!(matches!(c.save(d.path("x")).unwrap_err(), Error::Shape(_)));
}

#[test]
fn overwriting_keeps_a_complete_file_and_no_temp_files() {
    let d = Dir::new();
    let p = d.path("m.safetensors");
    model("8-4-2", 1).save(&p, &Metadata::new()).unwrap();
    model("8-6-2", 2).save(&p, &Metadata::new()).unwrap();
    assert_eq!(Mlp::load(&p).unwrap().0.arch, arch("8-6-2"));
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
        let _ = Mlp::load(&p);
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
        prop_assert!(Mlp::load(&p).is_err());
    }

    #[test]
    fn mutated_files_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let d = Dir::new();
        let p = d.path("m.safetensors");
        let mut bytes = checkpoint_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        std::fs::write(&p, &bytes).unwrap();
        let _ = Mlp::load(&p);
        let _ = Checkpoint::load(&p);
        bytes.truncate(cut.index(bytes.len()));
        std::fs::write(&p, &bytes).unwrap();
        prop_assert!(Mlp::load(&p).is_err());
    }
}
