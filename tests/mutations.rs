//! Mutation evidence: deliberately broken kernels must fail the checks, at the shapes where
//! the fault shows, so that a future loosening of a tolerance is caught. Each mutant is the
//! reference backend (the twins) with one fault applied to the outputs of the op it breaks —
//! the faults of issue 12 (a dropped k-term, a skipped last row of a tile, zeroed small
//! probabilities, a wrong ReLU-mask polarity, a missing bias, an off-by-one gather) and one
//! for every other kernel family (bias gradient, SGD, Adam, metrics, im2col, col2im,
//! max-pooling). For each,
//! the sound backend passes the same check on the same inputs (so the fault, not the data,
//! fails it) and the broken one fails exactly the output it spoils.

mod common;

use ndarray::Array2;
use wgtrain::backend::reference::ReferenceBackend;
use wgtrain::backend::{Backend, EngineKind, ProgramId};
use wgtrain::data::Dataset;
use wgtrain::ops::SgdParams;
use wgtrain::ops::{BufId, DataId, Epilogue, MatmulSpec, Op};
use wgtrain::verify::ops::{
    check_adam_op, check_bias_op, check_conv2d_op, check_decay_op, check_gather_op,
    check_matmul_op, check_maxpool_op, check_metrics_op, check_sgd_op, check_softmax_op, Cursor,
    TableAt,
};
use wgtrain::verify::{self, Check, Inputs};
use wgtrain::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// C = A·B without the last term of every dot product (k = K − 1).
    DroppedKTerm,
    /// The last row of C left at zero, as a kernel that skips a tile's remainder row.
    SkippedLastRow,
    /// Probabilities below 10⁻⁶ set to zero.
    ZeroedSmallProbabilities,
    /// The ReLU mask keeps the product where mask ≤ 0 instead of > 0.
    MaskPolarity,
    /// The bias epilogue without the bias.
    MissingBias,
    /// Each minibatch row gets the next row's pixels (the last row keeps its own); the
    /// samples have this many pixels.
    GatherOffByOne(usize),
    /// The bias gradient without the last row of dy.
    BiasGradDropsLastRow,
    /// SGD without momentum: v' = g + λw, w' = w − α·v'.
    SgdWithoutMomentum,
    /// Adam's first moment not updated.
    AdamFrozenMoment,
    /// The metrics count one row fewer.
    MetricsMissLastRow,
    /// Every cols row shifted by one column.
    Im2colOffByOne,
    /// The masked col2im ignores its mask.
    Col2imIgnoresMask,
    /// Every max-pooling index one element too far.
    MaxPoolIndexOffByOne,
    /// SGD with Nesterov momentum steps by v like plain momentum: w' = w − α·v'.
    NesterovIgnored,
    /// The softmax gradient ignores label smoothing: (p − onehot)·scale.
    SmoothingIgnored,
    /// AdamW's decay skipped (the weights left as they were).
    DecaySkipped,
}

/// The reference backend with `fault` applied after every program it runs.
struct Mutant {
    inner: ReferenceBackend,
    fault: Fault,
    programs: Vec<Vec<Op>>,
    /// What the buffers an op writes held before the run (for faults that undo an update).
    before: std::collections::HashMap<BufId, Vec<u32>>,
    /// Each buffer's length in words.
    sizes: std::collections::HashMap<BufId, usize>,
}

fn f32s(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

fn words(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

impl Mutant {
    fn new(fault: Fault) -> Self {
        Mutant {
            inner: ReferenceBackend::new(),
            fault,
            programs: Vec::new(),
            before: Default::default(),
            sizes: Default::default(),
        }
    }

    fn read_f32(&mut self, b: BufId, n: usize) -> Result<Vec<f32>> {
        Ok(f32s(&self.inner.read(b, n)?))
    }

    /// op(A) as [M, K] and op(B) as [K, N].
    fn operands(&mut self, spec: &MatmulSpec, a: BufId, b: BufId) -> Result<[Array2<f32>; 2]> {
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let av = self.read_f32(a, m * k)?;
        let bv = self.read_f32(b, k * n)?;
        let a = if spec.trans_a {
            Array2::from_shape_vec((k, m), av).unwrap().reversed_axes()
        } else {
            Array2::from_shape_vec((m, k), av).unwrap()
        };
        let b = if spec.trans_b {
            Array2::from_shape_vec((n, k), bv).unwrap().reversed_axes()
        } else {
            Array2::from_shape_vec((k, n), bv).unwrap()
        };
        Ok([a, b])
    }

    /// The words of `b` before the run.
    fn old(&self, b: BufId) -> Vec<u32> {
        self.before[&b].clone()
    }

    fn spoil(&mut self, op: &Op, program: &[Op]) -> Result<()> {
        match (*op, self.fault) {
            (Op::BiasBackward { rows, cols, dy, db }, Fault::BiasGradDropsLastRow) => {
                let last = self.read_f32(dy, rows * cols)?[(rows - 1) * cols..].to_vec();
                let mut d = self.read_f32(db, cols)?;
                d.iter_mut().zip(&last).for_each(|(d, l)| *d -= l);
                self.inner.write(db, &words(&d))
            }
            (Op::Sgd { n, hp, w, g, v, .. }, Fault::SgdWithoutMomentum) => {
                let (w0, g) = (f32s(&self.old(w)[..n]), self.read_f32(g, n)?);
                let v2: Vec<f32> = (0..n).map(|i| g[i] + hp.l2 * w0[i]).collect();
                let w2: Vec<f32> = (0..n).map(|i| w0[i] - hp.lr * v2[i]).collect();
                self.inner.write(v, &words(&v2))?;
                self.inner.write(w, &words(&w2))
            }
            (Op::Sgd { n, hp, w, v, .. }, Fault::NesterovIgnored) if hp.nesterov => {
                let (w0, v2) = (f32s(&self.old(w)[..n]), self.read_f32(v, n)?);
                let w2: Vec<f32> = (0..n).map(|i| w0[i] - hp.lr * v2[i]).collect();
                self.inner.write(w, &words(&w2))
            }
            (
                Op::SoftmaxXentBackward {
                    rows,
                    classes,
                    scale,
                    probs,
                    labels,
                    dlogits,
                    smoothing,
                },
                Fault::SmoothingIgnored,
            ) if smoothing > 0.0 => {
                let p = self.read_f32(probs, rows * classes)?;
                let y = self.inner.read(labels, rows)?;
                let d: Vec<f32> = (0..rows * classes)
                    .map(|i| {
                        let (r, c) = (i / classes, i % classes);
                        if y[r] as usize >= classes {
                            0.0
                        } else {
                            (p[i] - (c == y[r] as usize) as u8 as f32) * scale
                        }
                    })
                    .collect();
                self.inner.write(dlogits, &words(&d))
            }
            (Op::Decay { n, w, .. }, Fault::DecaySkipped) => {
                let w0 = self.old(w)[..n].to_vec();
                self.inner.write(w, &w0)
            }
            (Op::Adam { n, m, .. }, Fault::AdamFrozenMoment) => {
                let m0 = self.old(m)[..n].to_vec();
                self.inner.write(m, &m0)
            }
            (Op::Metrics { acc, .. }, Fault::MetricsMissLastRow) => {
                let mut a = self.inner.read(acc, 4)?;
                a[2] = a[2].wrapping_sub(1);
                self.inner.write(acc, &a)
            }
            (Op::Im2col { spec, cols, .. }, Fault::Im2colOffByOne) => {
                let width = spec.col_cols();
                let mut c = self.inner.read(cols, spec.col_rows() * width)?;
                for row in c.chunks_exact_mut(width) {
                    row.rotate_left(1);
                }
                self.inner.write(cols, &c)
            }
            (
                Op::Col2im {
                    spec,
                    dcols,
                    mask: Some(_),
                    dx,
                },
                Fault::Col2imIgnoresMask,
            ) => {
                let unmasked = program.iter().find_map(|o| match *o {
                    Op::Col2im {
                        dcols: d,
                        mask: None,
                        dx,
                        ..
                    } if d == dcols => Some(dx),
                    _ => None,
                });
                let plain = self
                    .inner
                    .read(unmasked.expect("an unmasked col2im"), spec.input_len())?;
                self.inner.write(dx, &plain)
            }
            (Op::MaxPoolForward { spec, idx, .. }, Fault::MaxPoolIndexOffByOne) => {
                let mut i = self.inner.read(idx, spec.output_len())?;
                i.iter_mut().for_each(|v| *v += 1);
                self.inner.write(idx, &i)
            }
            (Op::Matmul { spec, a, b, c, .. }, Fault::DroppedKTerm) => {
                let [a, b] = self.operands(&spec, a, b)?;
                let mut cv = self.read_f32(c, spec.m * spec.n)?;
                for i in 0..spec.m {
                    for j in 0..spec.n {
                        cv[i * spec.n + j] -= a[[i, spec.k - 1]] * b[[spec.k - 1, j]];
                    }
                }
                self.inner.write(c, &words(&cv))
            }
            (Op::Matmul { spec, c, .. }, Fault::SkippedLastRow) => {
                let row = vec![0.0f32; spec.n];
                let mut cv = self.read_f32(c, spec.m * spec.n)?;
                cv[(spec.m - 1) * spec.n..].copy_from_slice(&row);
                self.inner.write(c, &words(&cv))
            }
            (
                Op::Matmul {
                    spec,
                    a,
                    b,
                    aux: Some(mask),
                    c,
                },
                Fault::MaskPolarity,
            ) if spec.epilogue == Epilogue::ReluMask => {
                let [a, b] = self.operands(&spec, a, b)?;
                let mask = self.read_f32(mask, spec.m * spec.n)?;
                let product = a.dot(&b);
                let flipped: Vec<f32> = product
                    .iter()
                    .zip(&mask)
                    .map(|(&p, &m)| if m > 0.0 { 0.0 } else { p })
                    .collect();
                self.inner.write(c, &words(&flipped))
            }
            (
                Op::Matmul {
                    spec,
                    aux: Some(bias),
                    c,
                    ..
                },
                Fault::MissingBias,
            ) if spec.epilogue == Epilogue::Bias => {
                let bias = self.read_f32(bias, spec.n)?;
                let mut cv = self.read_f32(c, spec.m * spec.n)?;
                for (i, v) in cv.iter_mut().enumerate() {
                    *v -= bias[i % spec.n];
                }
                self.inner.write(c, &words(&cv))
            }
            (
                Op::SoftmaxXentForward {
                    rows,
                    classes,
                    probs,
                    ..
                },
                Fault::ZeroedSmallProbabilities,
            ) => {
                let mut p = self.read_f32(probs, rows * classes)?;
                p.iter_mut().filter(|v| **v < 1e-6).for_each(|v| *v = 0.0);
                self.inner.write(probs, &words(&p))
            }
            (Op::Gather { rows, x, .. }, Fault::GatherOffByOne(pixels)) if rows > 1 => {
                let xv = self.inner.read(x, rows * pixels)?;
                let mut shifted = xv.clone();
                shifted[..(rows - 1) * pixels].copy_from_slice(&xv[pixels..]);
                self.inner.write(x, &shifted)
            }
            _ => Ok(()),
        }
    }
}

impl Backend for Mutant {
    fn describe(&self) -> String {
        format!("{:?} mutant of {}", self.fault, self.inner.describe())
    }
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    fn adapter(&self) -> (String, String) {
        self.inner.adapter()
    }
    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        let b = self.inner.alloc(label, words)?;
        self.sizes.insert(b, words);
        Ok(b)
    }
    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.inner.write(buf, data)
    }
    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        self.inner.read(buf, words)
    }
    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.inner.dataset(d)
    }
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let p = self.inner.prepare(ops)?;
        self.programs.resize(p.0 + 1, Vec::new());
        self.programs[p.0] = ops.to_vec();
        Ok(p)
    }
    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let ops = self.programs[program.0].clone();
        for _ in 0..repeat {
            self.before.clear();
            for op in &ops {
                for b in op.buffers().1 {
                    let words = self.inner.read(b, self.sizes[&b])?;
                    self.before.insert(b, words);
                }
            }
            self.inner.run(program, 1)?;
            for op in &ops {
                self.spoil(op, &ops)?;
            }
        }
        Ok(())
    }
}

/// Failing checks as "kernel shape".
fn failing(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.pass())
        .map(|c| format!("{} {}", c.kernel, c.shape))
        .collect()
}

/// Run `check` on the sound reference backend and on the mutant with the same seed: the
/// first must pass, the second must fail, and every failing check's kernel name must start
/// with `spoiled` (the output the fault touches).
fn caught(
    fault: Fault,
    spoiled: &str,
    check: impl Fn(&mut dyn Backend, &mut Inputs) -> Result<Vec<Check>>,
) {
    let seed = common::seed(&format!("{fault:?}"));
    let sound = check(&mut ReferenceBackend::new(), &mut Inputs::new(seed)).unwrap();
    assert!(
        failing(&sound).is_empty(),
        "{fault:?}: the sound backend fails {:?}",
        failing(&sound)
    );
    let broken = check(&mut Mutant::new(fault), &mut Inputs::new(seed)).unwrap();
    let bad = failing(&broken);
    eprintln!("{fault:?}: caught by {bad:?}");
    assert!(
        !bad.is_empty(),
        "{fault:?} passed every check (seed {seed})"
    );
    assert!(
        bad.iter().all(|b| b.starts_with(spoiled)),
        "{fault:?}: unexpected failures {bad:?}"
    );
}

/// A product on one of the verified shapes whose K is small enough that one term exceeds
/// γ_K·Σ|a·b| (for K ≈ 10⁴ a single dropped term of size ≤ 1 is within rounding of the
/// 10⁴-term sum: that fault shows only at shorter K).
#[test]
fn a_dropped_k_term_fails_the_matmul_check() {
    for (m, n, k) in [(15, 17, 9), (7, 13, 257), (100, 512, 784)] {
        caught(Fault::DroppedKTerm, "matmul", |be, inp| {
            pollster::block_on(check_matmul_op(be, inp, &MatmulSpec::new(m, n, k)))
        });
    }
}

#[test]
fn a_skipped_last_row_fails_the_matmul_check() {
    for (m, n, k) in [(65, 63, 17), (2, 3, 4099)] {
        caught(Fault::SkippedLastRow, "matmul", |be, inp| {
            pollster::block_on(check_matmul_op(be, inp, &MatmulSpec::new(m, n, k)))
        });
    }
}

#[test]
fn a_flipped_relu_mask_fails_the_matmul_check() {
    caught(Fault::MaskPolarity, "matmul", |be, inp| {
        let spec = MatmulSpec {
            epilogue: Epilogue::ReluMask,
            ..MatmulSpec::new(100, 512, 10)
        };
        pollster::block_on(check_matmul_op(be, inp, &spec))
    });
}

#[test]
fn a_missing_bias_fails_the_matmul_check() {
    caught(Fault::MissingBias, "matmul", |be, inp| {
        let spec = MatmulSpec {
            trans_b: true,
            epilogue: Epilogue::Bias,
            ..MatmulSpec::new(100, 10, 512)
        };
        pollster::block_on(check_matmul_op(be, inp, &spec))
    });
}

/// Logits in [−8, 8] over 1000 classes give probabilities down to e⁻¹⁶ ≈ 10⁻⁷; zeroing those
/// below 10⁻⁶ stays within the old absolute tolerance ((C + 8)·2u ≈ 1.2·10⁻⁴) and must fail
/// the relative one.
#[test]
fn zeroed_small_probabilities_fail_the_softmax_check() {
    caught(
        Fault::ZeroedSmallProbabilities,
        "softmax_xent",
        |be, inp| {
            let logits = verify::softmax_logits(inp, 13, 1000);
            pollster::block_on(check_softmax_op(be, inp, &logits, 0.0, "13x1000".into()))
        },
    );
}

#[test]
fn nesterov_ignored_fails_the_sgd_check() {
    caught(Fault::NesterovIgnored, "sgd_update w", |be, inp| {
        pollster::block_on(check_sgd_op(
            be,
            inp,
            1000,
            wgtrain::oracle::SGD_PARAMS[3],
            None,
        ))
    });
}

#[test]
fn label_smoothing_ignored_in_the_gradient_fails_the_softmax_check() {
    caught(
        Fault::SmoothingIgnored,
        "softmax_xent_backward",
        |be, inp| {
            let logits = verify::softmax_logits(inp, 13, 10);
            pollster::block_on(check_softmax_op(be, inp, &logits, 0.1, "13x10".into()))
        },
    );
}

#[test]
fn a_skipped_weight_decay_fails_the_decay_check() {
    caught(Fault::DecaySkipped, "decay_update w", |be, inp| {
        pollster::block_on(check_decay_op(be, inp, 1000, TableAt::PastEnd))
    });
}

#[test]
fn an_off_by_one_gather_fails_the_gather_check() {
    caught(Fault::GatherOffByOne(13), "gather x", |be, inp| {
        pollster::block_on(check_gather_op(be, inp, 257, 13, 100, Cursor::NearEnd))
    });
}

#[test]
fn a_bias_gradient_without_the_last_row_fails_the_bias_check() {
    caught(Fault::BiasGradDropsLastRow, "bias_backward", |be, inp| {
        pollster::block_on(check_bias_op(be, inp, 100, 512, ""))
    });
}

#[test]
fn sgd_without_momentum_fails_the_sgd_check() {
    caught(Fault::SgdWithoutMomentum, "sgd_update", |be, inp| {
        pollster::block_on(check_sgd_op(
            be,
            inp,
            1000,
            SgdParams {
                lr: 0.05,
                momentum: 0.9,
                l2: 1e-3,
                nesterov: false,
            },
            None,
        ))
    });
}

#[test]
fn a_frozen_adam_moment_fails_the_adam_check() {
    caught(Fault::AdamFrozenMoment, "adam_update", |be, inp| {
        pollster::block_on(check_adam_op(be, inp, &verify::adam_cases()[1]))
    });
}

#[test]
fn metrics_missing_a_row_fail_the_metrics_check() {
    caught(
        Fault::MetricsMissLastRow,
        "accumulate_metrics counts",
        |be, inp| pollster::block_on(check_metrics_op(be, inp, 100, 10)),
    );
}

#[test]
fn an_off_by_one_im2col_fails_the_im2col_check() {
    caught(Fault::Im2colOffByOne, "im2col", |be, inp| {
        pollster::block_on(check_conv2d_op(be, inp, &verify::conv2d_shapes()[16], ""))
    });
}

#[test]
fn a_col2im_ignoring_its_mask_fails_the_masked_check() {
    caught(Fault::Col2imIgnoresMask, "col2im masked", |be, inp| {
        pollster::block_on(check_conv2d_op(be, inp, &verify::conv2d_shapes()[16], ""))
    });
}

#[test]
fn an_off_by_one_pooling_index_fails_the_maxpool_check() {
    caught(
        Fault::MaxPoolIndexOffByOne,
        "maxpool_forward idx",
        |be, inp| {
            let spec = verify::maxpool_shapes()[1];
            pollster::block_on(check_maxpool_op(
                be,
                inp,
                &spec,
                verify::PoolInput::Uniform,
                "",
            ))
        },
    );
}
