//! Gradients of the whole step, against an independent f64 oracle.
//!
//! The oracle below runs a network in PyTorch's layout (NCHW activations, the direct
//! convolution `cpu::conv2d::conv2d_nchw` and its gradient, plain dense products) in f64. It
//! shares no code with the engine's step (channels-last, im2col + matmul, programs of ops):
//! 1. the oracle's backward matches central finite differences of its own loss in f64;
//! 2. the engine's gradients (CPU backend and every GPU adapter, f32) match the oracle's on the
//!    same f32 inputs, for a conv net with every layer type and for an MLP.

mod common;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use wgtrain::cpu::conv2d::{conv2d_nchw, conv2d_nchw_backward, nchw_to_nhwc, nhwc_to_nchw};
use wgtrain::cpu::maxpool::{maxpool_backward, maxpool_forward};
use wgtrain::cpu::softmax_xent::{softmax_xent_backward, softmax_xent_forward};
use wgtrain::data::Dataset;
use wgtrain::model::{Arch, LayerSpec, Model, Param, Shape};
use wgtrain::nn::conv2d::Conv;
use wgtrain::ops::{fold_seed, Conv2dSpec, DropoutSpec, Pool2dSpec};
use wgtrain::train::{Engine, TrainConfig};
use wgtrain::verify::{Inputs, U};

/// Padded conv, max pooling, strided conv, flatten, two dense layers.
const CONV_ARCH: &str = "1x8x8-c3k3p1-m2-c4k3s2p1-5-3";
/// Average pooling with a ragged edge (7×7 → 3×3: row and column 6 get no gradient) above a
/// ReLU, and global average pooling into the dense layers.
const AVG_ARCH: &str = "1x7x7-c3k3p1-a2-c4k3p1-g-5-3";
/// 1×1 convolutions, one above a ReLU layer and one above pooling: no im2col or col2im, the
/// input gradient one product, with the ReLU mask fused into it or without one (paths of
/// their own in `nn::conv2d`).
const CONV_1X1_ARCH: &str = "1x8x8-c3k3p1-c4k1-m2-c4k1-5-3";
const MLP_ARCH: &str = "6-5-4-3";
/// Batch normalisation after a convolution (per channel over B·H·W) and after a dense layer
/// (per feature over B), each taking over the ReLU, and dropout (the engine's fixed mask of
/// step 0) before the last layer.
const BN_ARCH: &str = "1x6x6-c3k3p1-b-m2-6-b-d0.5-4";
/// A residual block whose main path changes channels and stride (conv → BN → ReLU → conv →
/// BN), so its skip path is projected (1×1 convolution, stride 2, and BN), after a ReLU layer
/// whose output both paths read: the engine sums their gradients.
const RES_PROJ_ARCH: &str = "1x6x6-c3k3p1-r(c4k3s2p1-b-c4k3p1-b)-g-3";
/// Identity residual blocks without BatchNorm: the first reads a ReLU output (the skip
/// path's gradient masked by it), the second a join's output, then pooling and dense layers.
const RES_ID_ARCH: &str = "1x6x6-c3k3p1-r(c3k3p1-c3k3p1)-r(c3k1)-m2-5-3";
const B: usize = 4;

/// Parameters in f64, PyTorch layout.
type P64 = Vec<(Vec<f64>, Vec<f64>)>;

struct Oracle {
    arch: Arch,
    shapes: Vec<Shape>,
    /// Per layer: the activation it reads (0: the input, j + 1: layer j's output) and, for a
    /// residual join, the skip path's; worked out here from the joins, not with the library's
    /// wiring.
    wires: Vec<(usize, Option<usize>)>,
    /// The shape into each layer.
    ins: Vec<Shape>,
}

fn image(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Image { c, h, w } => (c, h, w),
        Shape::Flat(_) => panic!("not an image"),
    }
}

impl Oracle {
    fn new(arch: &str) -> Self {
        let arch = Arch::parse(arch).unwrap();
        let shapes = arch.shapes().unwrap();
        let mut wires: Vec<(usize, Option<usize>)> =
            (0..arch.layers.len()).map(|l| (l, None)).collect();
        for (a, l) in arch.layers.iter().enumerate() {
            if let LayerSpec::Residual(r) = *l {
                // Main path, then (projected) a 1×1 convolution and a BatchNorm, then the join.
                let proj = if r.project { 2 } else { 0 };
                let start = a - r.main - proj;
                if r.project {
                    wires[a - 2].0 = start;
                    wires[a] = (start + r.main, Some(a));
                } else {
                    wires[a] = (a, Some(start));
                }
            }
        }
        let ins = wires.iter().map(|w| shapes[w.0]).collect();
        Oracle {
            arch,
            shapes,
            wires,
            ins,
        }
    }

    /// Whether layer `l`'s output is a summand of a residual join (which has the ReLU).
    fn feeds_add(&self, l: usize) -> bool {
        self.wires
            .iter()
            .enumerate()
            .any(|(a, w)| w.1.is_some() && (w.0 == l + 1 || w.1 == Some(a) && a == l + 1))
    }

    fn conv(&self, l: usize) -> Conv2dSpec {
        let (c, h, w) = image(self.ins[l]);
        let LayerSpec::Conv(Conv {
            out,
            k,
            stride,
            pad,
        }) = self.arch.layers[l]
        else {
            unreachable!()
        };
        Conv2dSpec {
            batch: B,
            c_in: c,
            h,
            w,
            c_out: out,
            k,
            stride,
            pad,
        }
    }

    fn pool(&self, l: usize) -> Pool2dSpec {
        let (c, h, w) = image(self.ins[l]);
        let LayerSpec::MaxPool(m) = self.arch.layers[l] else {
            unreachable!()
        };
        Pool2dSpec {
            batch: B,
            c,
            h,
            w,
            k: m.k,
        }
    }

    /// (C, H, W, KH, KW) of an average pooling, global or K×K, written here in NCHW from the
    /// definition (PyTorch's `nn.AvgPool2d`, `nn.AdaptiveAvgPool2d(1)`), not with the twin.
    fn avg(&self, l: usize) -> (usize, usize, usize, usize, usize) {
        let (c, h, w) = image(self.ins[l]);
        match self.arch.layers[l] {
            LayerSpec::AvgPool(a) => (c, h, w, a.k, a.k),
            LayerSpec::GlobalAvgPool(_) => (c, h, w, h, w),
            _ => unreachable!(),
        }
    }

    /// y\[B,C,OH,OW\] = the mean of each KH×KW window of x\[B,C,H,W\] (with `dy`, the
    /// gradient: dx gets dy / (KH·KW) over its window, 0 past the last whole window).
    fn avg_forward(&self, l: usize, x: &[f64]) -> Vec<f64> {
        let (c, h, w, kh, kw) = self.avg(l);
        let (oh, ow) = (h / kh, w / kw);
        let mut y = vec![0.0; B * c * oh * ow];
        for (o, v) in y.iter_mut().enumerate() {
            let (ox, oy, bc) = (o % ow, (o / ow) % oh, o / (ow * oh));
            for ky in 0..kh {
                for kx in 0..kw {
                    *v += x[(bc * h + oy * kh + ky) * w + ox * kw + kx];
                }
            }
            *v /= (kh * kw) as f64;
        }
        y
    }

    fn avg_backward(&self, l: usize, dy: &[f64]) -> Vec<f64> {
        let (c, h, w, kh, kw) = self.avg(l);
        let (oh, ow) = (h / kh, w / kw);
        let mut dx = vec![0.0; B * c * h * w];
        for (o, &g) in dy.iter().enumerate() {
            let (ox, oy, bc) = (o % ow, (o / ow) % oh, o / (ow * oh));
            for ky in 0..kh {
                for kx in 0..kw {
                    dx[(bc * h + oy * kh + ky) * w + ox * kw + kx] = g / (kh * kw) as f64;
                }
            }
        }
        dx
    }

    fn relu(&self, l: usize) -> bool {
        // Written out, not `relu_flags`: convolutions and dense layers have one, pooling and
        // dropout not; a BatchNorm takes the one of the layer before it.
        // dropout not; a BatchNorm takes the one of the layer before it; a residual join has
        // its block's, and the two outputs it adds have none.
        let n = self.arch.layers.len();
        let bn = |l: usize| matches!(self.arch.layers.get(l), Some(LayerSpec::BatchNorm(_)));
        l + 1 < n
            && !self.feeds_add(l)
            && match self.arch.layers[l] {
                LayerSpec::Conv(_) | LayerSpec::Dense(_) => !bn(l + 1),
                LayerSpec::BatchNorm(_) | LayerSpec::Residual(_) => true,
                _ => false,
            }
    }

    /// (channels C, positions per channel and sample P) of a batch normalisation, NCHW.
    fn bn(&self, l: usize) -> (usize, usize) {
        match self.ins[l] {
            Shape::Image { c, h, w } => (c, h * w),
            Shape::Flat(n) => (n, 1),
        }
    }

    /// Training-mode batch normalisation from its definition (PyTorch's, biased variance), in
    /// NCHW: (y, x̂, 1/√(var + ε) per channel).
    fn bn_forward(
        &self,
        l: usize,
        x: &[f64],
        g: &[f64],
        b: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (c, pos) = self.bn(l);
        let at = |bi: usize, ch: usize, k: usize| (bi * c + ch) * pos + k;
        let n = (B * pos) as f64;
        let (mut y, mut xhat, mut istd) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; c]);
        for ch in 0..c {
            let idx: Vec<usize> = (0..B)
                .flat_map(|bi| (0..pos).map(move |k| at(bi, ch, k)))
                .collect();
            let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / n;
            let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / n;
            istd[ch] = 1.0 / (var + 1e-5).sqrt();
            for &i in &idx {
                xhat[i] = (x[i] - mean) * istd[ch];
                y[i] = xhat[i] * g[ch] + b[ch];
            }
        }
        (y, xhat, istd)
    }

    /// The gradient of [`Oracle::bn_forward`]: (dx, dγ, dβ).
    fn bn_backward(
        &self,
        l: usize,
        dy: &[f64],
        xhat: &[f64],
        istd: &[f64],
        g: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (c, pos) = self.bn(l);
        let at = |bi: usize, ch: usize, k: usize| (bi * c + ch) * pos + k;
        let n = (B * pos) as f64;
        let (mut dx, mut dg, mut db) = (vec![0.0; dy.len()], vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let idx: Vec<usize> = (0..B)
                .flat_map(|bi| (0..pos).map(move |k| at(bi, ch, k)))
                .collect();
            dg[ch] = idx.iter().map(|&i| dy[i] * xhat[i]).sum();
            db[ch] = idx.iter().map(|&i| dy[i]).sum();
            for &i in &idx {
                dx[i] = g[ch] * istd[ch] * (dy[i] - db[ch] / n - xhat[i] * dg[ch] / n);
            }
        }
        (dx, dg, db)
    }

    /// The engine's dropout mask at training step 0 (the engine's `gradients` runs at the step
    /// counter's start): a flat input, so NCHW and channels-last coincide.
    fn dropout_mask(&self, l: usize) -> (Vec<bool>, f64) {
        let LayerSpec::Dropout(d) = self.arch.layers[l] else {
            unreachable!()
        };
        let Shape::Flat(f) = self.ins[l] else {
            panic!("the oracle's dropout takes a flat input")
        };
        let spec = DropoutSpec {
            rows: B,
            cols: f,
            p: d.p(),
            seed: fold_seed(TrainConfig::lecture(self.arch.clone()).seed),
            layer: l as u32,
            row0: 0,
        };
        (
            (0..B * f).map(|i| spec.keep(0, i)).collect(),
            spec.scale() as f64,
        )
    }

    /// Mean loss and the gradients of every parameter.
    fn loss_and_grads(&self, p: &P64, x: &[f64], labels: &Array1<u32>) -> (f64, P64) {
        let n = self.arch.layers.len();
        let mut acts = vec![x.to_vec()];
        let mut pool_idx = vec![Vec::new(); n];
        let mut bn_saved = vec![(Vec::new(), Vec::new()); n];
        let mut pi = 0;
        let mut pidx = vec![usize::MAX; n];
        for l in 0..n {
            let input = &acts[self.wires[l].0];
            let mut y = match self.arch.layers[l] {
                LayerSpec::Residual(_) => {
                    let skip = &acts[self.wires[l].1.unwrap()];
                    input.iter().zip(skip).map(|(a, b)| a + b).collect()
                }
                LayerSpec::Conv(_) => {
                    pidx[l] = pi;
                    pi += 1;
                    conv2d_nchw(input, &p[pidx[l]].0, &p[pidx[l]].1, &self.conv(l))
                }
                LayerSpec::AvgPool(_) | LayerSpec::GlobalAvgPool(_) => self.avg_forward(l, input),
                LayerSpec::BatchNorm(_) => {
                    pidx[l] = pi;
                    pi += 1;
                    let (y, xhat, istd) = self.bn_forward(l, input, &p[pidx[l]].0, &p[pidx[l]].1);
                    bn_saved[l] = (xhat, istd);
                    y
                }
                LayerSpec::Dropout(_) => {
                    let (keep, scale) = self.dropout_mask(l);
                    input
                        .iter()
                        .zip(keep)
                        .map(|(&v, k)| if k { v * scale } else { 0.0 })
                        .collect()
                }
                LayerSpec::MaxPool(_) => {
                    let s = self.pool(l);
                    let nhwc = nchw_to_nhwc(input, B, s.h, s.w, s.c);
                    let (y, idx) = maxpool_forward(&nhwc, &s);
                    pool_idx[l] = idx;
                    nhwc_to_nchw(&y, B, s.out_h(), s.out_w(), s.c)
                }
                LayerSpec::Dense(d) => {
                    let out = d.out;
                    pidx[l] = pi;
                    pi += 1;
                    let i = self.ins[l].len();
                    let xm = Array2::from_shape_vec((B, i), input.clone()).unwrap();
                    let w = Array2::from_shape_vec((out, i), p[pidx[l]].0.clone()).unwrap();
                    let mut y = xm.dot(&w.t());
                    for mut row in y.rows_mut() {
                        row += &Array1::from(p[pidx[l]].1.clone());
                    }
                    y.into_raw_vec_and_offset().0
                }
            };
            if self.relu(l) {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            acts.push(y);
        }
        let classes = self.shapes[n].len();
        let logits = Array2::from_shape_vec((B, classes), acts[n].clone()).unwrap();
        let (probs, loss) = softmax_xent_forward(logits.view(), labels.view(), 0.0);
        // The gradient of each activation, summed over the layers that read it.
        let mut gacts: Vec<Vec<f64>> = acts.iter().map(|a| vec![0.0; a.len()]).collect();
        gacts[n] = softmax_xent_backward(probs.view(), labels.view(), 1.0 / B as f64, 0.0)
            .into_raw_vec_and_offset()
            .0;
        let mut grads: P64 = p
            .iter()
            .map(|(w, b)| (vec![0.0; w.len()], vec![0.0; b.len()]))
            .collect();
        for l in (0..n).rev() {
            let mut g = std::mem::take(&mut gacts[l + 1]);
            if self.relu(l) {
                for (gv, &a) in g.iter_mut().zip(&acts[l + 1]) {
                    if a <= 0.0 {
                        *gv = 0.0;
                    }
                }
            }
            let (src, skip) = self.wires[l];
            let x = &acts[src];
            let dx: Vec<f64> = match self.arch.layers[l] {
                LayerSpec::Residual(_) => {
                    let s = skip.unwrap();
                    for (a, v) in gacts[s].iter_mut().zip(&g) {
                        *a += v;
                    }
                    g.clone()
                }
                LayerSpec::Conv(_) => {
                    let (dx, dw, db) = conv2d_nchw_backward(x, &p[pidx[l]].0, &g, &self.conv(l));
                    grads[pidx[l]] = (dw, db);
                    dx
                }
                LayerSpec::AvgPool(_) | LayerSpec::GlobalAvgPool(_) => self.avg_backward(l, &g),
                LayerSpec::BatchNorm(_) => {
                    let (xhat, istd) = &bn_saved[l];
                    let (dx, dg, db) = self.bn_backward(l, &g, xhat, istd, &p[pidx[l]].0);
                    grads[pidx[l]] = (dg, db);
                    dx
                }
                LayerSpec::Dropout(_) => {
                    let (keep, scale) = self.dropout_mask(l);
                    g.iter()
                        .zip(keep)
                        .map(|(&v, k)| if k { v * scale } else { 0.0 })
                        .collect()
                }
                LayerSpec::MaxPool(_) => {
                    let s = self.pool(l);
                    let dy = nchw_to_nhwc(&g, B, s.out_h(), s.out_w(), s.c);
                    let dx = maxpool_backward(&dy, &pool_idx[l], &s, None);
                    nhwc_to_nchw(&dx, B, s.h, s.w, s.c)
                }
                LayerSpec::Dense(d) => {
                    let out = d.out;
                    let i = self.ins[l].len();
                    let xm = Array2::from_shape_vec((B, i), x.clone()).unwrap();
                    let dy = Array2::from_shape_vec((B, out), g.clone()).unwrap();
                    let w = Array2::from_shape_vec((out, i), p[pidx[l]].0.clone()).unwrap();
                    grads[pidx[l]] = (
                        dy.t().dot(&xm).into_raw_vec_and_offset().0,
                        dy.sum_axis(ndarray::Axis(0)).to_vec(),
                    );
                    dy.dot(&w).into_raw_vec_and_offset().0
                }
            };
            for (a, v) in gacts[src].iter_mut().zip(&dx) {
                *a += v;
            }
        }
        (loss.sum() / B as f64, grads)
    }
}

/// Random f32-representable parameters, inputs and labels for `arch`.
fn problem(o: &Oracle, seed: u64) -> (P64, Vec<f64>, Array1<u32>) {
    let mut inp = Inputs::new(seed);
    let p = o
        .arch
        .param_shapes()
        .iter()
        .map(|(ws, bn)| {
            let n: usize = ws.iter().product();
            let w = inp
                .uniform(n, -0.5, 0.5)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let b = inp
                .uniform(*bn, -0.2, 0.2)
                .iter()
                .map(|&v| v as f64)
                .collect();
            (w, b)
        })
        .collect();
    let x = inp
        .uniform(B * o.arch.input_len(), -1.0, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    (p, x, inp.labels(B, o.arch.classes(), false))
}

fn fd_check(arch: &str, test: &str) {
    let seed = common::seed(test);
    let o = Oracle::new(arch);
    let (p, x, labels) = problem(&o, seed);
    let (_, grads) = o.loss_and_grads(&p, &x, &labels);
    // h balances truncation O(h²) against cancellation O(ε/h) in f64.
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for (i, (w, b)) in p.iter().enumerate() {
        for k in 0..w.len() + b.len() {
            let probe = |delta: f64| {
                let mut q = p.clone();
                if k < w.len() {
                    q[i].0[k] += delta;
                } else {
                    q[i].1[k - w.len()] += delta;
                }
                o.loss_and_grads(&q, &x, &labels).0
            };
            let fd = (probe(h) - probe(-h)) / (2.0 * h);
            let an = if k < w.len() {
                grads[i].0[k]
            } else {
                grads[i].1[k - w.len()]
            };
            let err = (fd - an).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-7 + 1e-5 * an.abs(),
                "{arch}: param {i} element {k}: finite difference {fd:.9e} vs backward {an:.9e}"
            );
        }
    }
    eprintln!("{arch}: largest |fd − backward| = {worst:.3e}");
}

#[test]
fn conv_net_oracle_backward_matches_central_differences_in_f64() {
    fd_check(CONV_ARCH, "gradcheck_fd_conv");
}

#[test]
fn avg_pool_net_oracle_backward_matches_central_differences_in_f64() {
    fd_check(AVG_ARCH, "gradcheck_fd_avg");
}

#[test]
fn batchnorm_and_dropout_net_oracle_backward_matches_central_differences_in_f64() {
    fd_check(BN_ARCH, "gradcheck_fd_bn");
}

#[test]
fn residual_projection_net_oracle_backward_matches_central_differences_in_f64() {
    fd_check(RES_PROJ_ARCH, "gradcheck_fd_res_proj");
}

#[test]
fn residual_identity_net_oracle_backward_matches_central_differences_in_f64() {
    fd_check(RES_ID_ARCH, "gradcheck_fd_res_id");
}

#[test]
fn mlp_oracle_backward_matches_central_differences_in_f64() {
    fd_check(MLP_ARCH, "gradcheck_fd_mlp");
}

/// The engine's gradients on `arch` (CPU backend and every adapter) against the oracle.
fn engine_check(arch: &str, test: &str) {
    let seed = common::seed(test);
    let o = Oracle::new(arch);
    // Per parameterised layer: whether a BatchNorm follows it.
    let before_bn: Vec<bool> = o
        .arch
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.has_params())
        .map(|(k, _)| matches!(o.arch.layers.get(k + 1), Some(LayerSpec::BatchNorm(_))))
        .collect();
    // Some draws leave a layer with (almost) no gradient (its ReLUs dead on these 4 rows):
    // nothing to check there. Draw again from the next seed until every tensor has one (the
    // bias a BatchNorm cancels aside), so the check never passes vacuously nor fails on luck.
    let big = |v: &[f64]| v.iter().fold(0.0f64, |a, b| a.max(b.abs())) > 1e-3;
    let (p, x, labels, want) = (0..100u64)
        .map(|k| {
            let (p, x, labels) = problem(&o, seed.wrapping_add(k));
            let (_, want) = o.loss_and_grads(&p, &x, &labels);
            (p, x, labels, want)
        })
        .find(|(_, _, _, want)| {
            want.iter()
                .enumerate()
                .all(|(i, (w, b))| big(w) && (before_bn[i] || big(b)))
        })
        .expect("a draw with a gradient in every tensor within 100 seeds");
    let model = Model::new(
        o.arch.clone(),
        p.iter()
            .zip(o.arch.param_shapes())
            .map(|((w, b), (ws, _))| Param {
                weight: ArrayD::from_shape_vec(IxDyn(&ws), w.iter().map(|&v| v as f32).collect())
                    .unwrap(),
                bias: Array1::from(b.iter().map(|&v| v as f32).collect::<Vec<_>>()),
            })
            .collect(),
    );
    // The engine takes channels-last input; C = 1 here, so NCHW and NHWC coincide.
    assert!(matches!(o.shapes[0], Shape::Flat(_)) || image(o.shapes[0]).0 == 1);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut cfg = TrainConfig::lecture(o.arch.clone());
    cfg.batch = B;
    let px = o.arch.input_len();
    let shape = wgtrain::data::SampleShape::from(o.arch.input);
    let data = Dataset::new(shape, vec![0; B * px], vec![0; B]).unwrap();
    let mut engines = vec![Engine::cpu(&cfg, &model, None, &data, None).unwrap()];
    for ctx in common::contexts(test) {
        engines.push(Engine::gpu(ctx, &cfg, &model, None, &data, None).unwrap());
    }
    // Each gradient is a chain of at most 5 stages (one per layer, softmax first), each a sum
    // of at most n = 256 products (conv weight gradients sum over B·OH·OW = 4·64 positions) in
    // f32: γ_n·Σ|terms| per stage (Higham §3.1). Bounding Σ|terms| by the tensor's largest
    // magnitude and allowing the 5 stages and softmax's few ULP gives 8·n·u·scale.
    let n_max = 256.0;
    for e in &mut engines {
        let name = e.device();
        let got = e.gradients(&x32, labels.as_slice().unwrap()).unwrap();
        for (i, g) in got.iter().enumerate() {
            for (what, gv, wv) in [
                (
                    "weight",
                    g.weight.iter().copied().collect::<Vec<_>>(),
                    &want[i].0,
                ),
                ("bias", g.bias.to_vec(), &want[i].1),
            ] {
                // The bias of a layer a BatchNorm follows has gradient 0 exactly (the
                // normalisation cancels it); the engine's is the f32 sum of BN's input
                // gradient over the rows, rounding noise γ_n·Σ|dx| with Σ|dx| of the order
                // of the weight gradient's largest magnitude (|x| ≤ 1 here): check it at
                // that scale.
                let cancelled = what == "bias" && before_bn[i];
                let own = wv.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                let scale = if cancelled {
                    want[i].0.iter().fold(0.0f64, |a, b| a.max(b.abs()))
                } else {
                    own.max(1e-3)
                };
                let tol = 8.0 * n_max * U * scale;
                assert!(
                    scale > 1e-3,
                    "{name}: param {i} {what}: a gradient to check"
                );
                if cancelled {
                    assert!(
                        own < 1e-12,
                        "{name}: param {i} bias: the oracle's is not 0 ({own})"
                    );
                }
                for (k, (&a, &b)) in gv.iter().zip(wv.iter()).enumerate() {
                    let err = (a as f64 - b).abs();
                    assert!(
                        err <= tol,
                        "{name}: {arch} param {i} {what}[{k}]: engine {a:e} oracle {b:e} (err {err:.3e}, tol {tol:.3e})"
                    );
                }
            }
        }
        eprintln!("{name}: {arch} gradients match the f64 oracle");
    }
}

#[test]
fn conv_net_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(CONV_ARCH, "gradcheck_engine_conv");
}

#[test]
fn one_by_one_conv_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(CONV_1X1_ARCH, "gradcheck_engine_conv_1x1");
}

#[test]
fn avg_pool_net_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(AVG_ARCH, "gradcheck_engine_avg");
}

#[test]
fn batchnorm_and_dropout_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(BN_ARCH, "gradcheck_engine_bn");
}

#[test]
fn residual_projection_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(RES_PROJ_ARCH, "gradcheck_engine_res_proj");
}

#[test]
fn residual_identity_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(RES_ID_ARCH, "gradcheck_engine_res_id");
}

#[test]
fn mlp_engine_gradients_match_the_f64_oracle_on_every_backend() {
    engine_check(MLP_ARCH, "gradcheck_engine_mlp");
}
