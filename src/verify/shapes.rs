//! What the checks run on: the shapes of every family and the Adam cases. Used by the checks of
//! [`super::dispatch`]; the presets' full-size layers are read from their programs
//! ([`super::coverage::preset_ops`]), not listed here.

use crate::model::Preset;
use crate::ops::{AdamParams, AvgPool2dSpec, BatchNormSpec, Conv2dSpec, DropoutSpec, Pool2dSpec};
use crate::oracle::{AdamCase, ADAM_SCHEDULE_LEN};
use crate::train::TrainConfig;

/// The matmul shapes (M, N, K) every variant is checked on: 1, smaller than a tile, exact tile
/// multiples, primes, K ≫ M·N, the MNIST MLP's products, and one ≥ 1000³.
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 7),
    (3, 5, 2),
    (15, 17, 9),
    (16, 16, 16),
    (64, 64, 64),
    (128, 64, 32),
    (65, 63, 17),
    (7, 13, 257),
    (13, 7, 1),
    (31, 1000, 1),
    (2, 3, 4099),
    (5, 3, 10007),
    (1, 512, 784),
    (257, 1, 3),
    (100, 512, 784),
    (100, 10, 512),
    (100, 512, 512),
    (512, 784, 100),
    (100, 784, 512),
    (10, 512, 100),
    (1000, 1000, 1000),
];

/// Shapes for the element-wise families: 1, primes, tile non-multiples, MLP shapes, large.
pub const ROW_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 10),
    (2, 3),
    (7, 13),
    (13, 7),
    (31, 1),
    (64, 64),
    (65, 17),
    (100, 10),
    (100, 512),
    (100, 784),
    (255, 257),
    (1000, 10),
    (1, 100_003),
    (1000, 1000),
    (3, 70_001),
    (70_001, 3),
    (10_000, 10),
    (256, 256),
    (97, 101),
];

/// Gather checks as (samples in the dataset, pixels per sample, rows per minibatch): one of
/// everything, odd sizes, MNIST's shapes (the whole training set at batch 1 and 100), minibatches
/// of one more, one less and as many rows as samples, and minibatches running past the end.
pub const GATHER_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 4),
    (10, 784, 7),
    (257, 13, 100),
    (1000, 784, 100),
    (60_000, 784, 100),
    (5, 3, 20),
    (2, 1, 1),
    (1, 784, 100),
    (99, 784, 100),
    (100, 784, 100),
    (101, 784, 100),
    (7, 1, 13),
    (60_000, 784, 1),
    (33, 17, 32),
    (64, 64, 64),
    (3, 1000, 2),
    (500, 3, 499),
    (12, 28, 5),
    (31, 784, 31),
    (10_000, 784, 250),
    (4, 4, 3),
];

/// A convolution's input geometry (what im2col/col2im depend on): B, C, H, W, K, stride, pad.
fn conv(
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Conv2dSpec {
    Conv2dSpec {
        batch,
        c_in,
        h,
        w,
        c_out: 1,
        k,
        stride,
        pad,
    }
}

/// im2col/col2im shapes: batch 1, 1 and 3 channels, 1×1, 3×3 and 5×5 kernels, even kernels,
/// stride 2 and 3, stride > K (inputs no window reads), padding 1–3, odd sizes, kernels as
/// large as the padded input.
pub fn conv2d_shapes() -> Vec<Conv2dSpec> {
    vec![
        conv(1, 1, 1, 1, 1, 1, 0),
        conv(1, 1, 5, 5, 3, 1, 0),
        conv(2, 3, 7, 7, 3, 1, 1),
        conv(1, 3, 8, 8, 3, 2, 1),
        conv(2, 1, 9, 7, 5, 2, 2),
        conv(3, 3, 6, 5, 1, 1, 0),
        conv(2, 3, 5, 5, 1, 2, 0),
        conv(1, 1, 3, 3, 5, 1, 1),
        conv(2, 3, 4, 6, 8, 1, 2),
        conv(1, 3, 11, 13, 5, 3, 2),
        conv(2, 2, 7, 7, 3, 3, 0),
        conv(1, 1, 6, 6, 2, 4, 0),
        conv(2, 4, 7, 9, 4, 2, 3),
        conv(1, 2, 5, 5, 3, 1, 2),
        conv(3, 1, 10, 10, 7, 2, 3),
        conv(1, 5, 5, 5, 5, 1, 0),
        conv(2, 3, 28, 28, 5, 1, 2),
        conv(1, 3, 1, 9, 1, 1, 0),
        conv(4, 2, 13, 3, 3, 2, 1),
        conv(1, 1, 2, 2, 4, 1, 1),
    ]
}

fn pool(batch: usize, c: usize, h: usize, w: usize, k: usize) -> Pool2dSpec {
    Pool2dSpec { batch, c, h, w, k }
}

/// Max-pooling shapes: K = 1 (identity), 2, 3, 4 and 5, floors (H or W not a multiple of K),
/// one window, batch 1, odd sizes.
pub fn maxpool_shapes() -> Vec<Pool2dSpec> {
    vec![
        pool(1, 1, 1, 1, 1),
        pool(1, 1, 2, 2, 2),
        pool(1, 1, 5, 5, 2),
        pool(2, 3, 7, 9, 3),
        pool(3, 2, 6, 6, 1),
        pool(2, 4, 8, 8, 4),
        pool(1, 3, 5, 7, 5),
        pool(2, 5, 13, 11, 2),
        pool(1, 1, 4, 4, 4),
        pool(3, 3, 9, 9, 3),
        pool(2, 2, 10, 3, 3),
        pool(1, 7, 6, 6, 2),
        pool(4, 1, 3, 3, 2),
        pool(1, 16, 15, 15, 4),
        pool(2, 1, 31, 17, 2),
        pool(1, 2, 2, 8, 2),
        pool(2, 6, 28, 28, 2),
        pool(1, 3, 11, 4, 2),
        pool(5, 2, 7, 7, 7),
        pool(1, 64, 14, 14, 2),
    ]
}

fn avg(batch: usize, c: usize, h: usize, w: usize, kh: usize, kw: usize) -> AvgPool2dSpec {
    AvgPool2dSpec {
        batch,
        c,
        h,
        w,
        kh,
        kw,
    }
}

/// Average-pooling shapes: K×K windows as [`maxpool_shapes`] (identity, floors, one window,
/// odd sizes), and global windows (KH = H, KW = W) from 1×1 to 28×28, square and not.
pub fn avgpool_shapes() -> Vec<AvgPool2dSpec> {
    let mut v: Vec<AvgPool2dSpec> = maxpool_shapes()
        .iter()
        .map(|p| avg(p.batch, p.c, p.h, p.w, p.k, p.k))
        .collect();
    for (b, c, h, w) in [
        (1, 1, 1, 1),
        (2, 3, 2, 2),
        (3, 5, 7, 7),
        (2, 16, 5, 3),
        (1, 64, 8, 8),
        (4, 2, 1, 9),
        (2, 7, 28, 28),
        (1, 300, 4, 4),
    ] {
        v.push(avg(b, c, h, w, h, w));
    }
    v
}

/// Adam cases larger than this run only with the presets (see [`super::run_backend_family`]).
pub const ADAM_TEST_MAX: usize = 200_000;

/// Adam cases: 1 element, around one workgroup (255–257), odd sizes and primes, every preset's
/// parameter tensors read from its network (cnn's 3136×1024 layer, 3.2M weights, and the other
/// tensors over [`ADAM_TEST_MAX`] run only with the presets),
/// L2 on weights and 0 on biases, t = 1, 2, 10, the schedule's last entry and beyond it
/// (clamped to it), and β1 < 0.5 (PyTorch's other lerp form) with a larger ε and learning rate.
pub fn adam_cases() -> Vec<AdamCase> {
    let torch = AdamParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        l2: 0.0,
    };
    let wd = AdamParams { l2: 1e-2, ..torch };
    let odd = AdamParams {
        lr: 0.05,
        beta1: 0.3,
        beta2: 0.9,
        eps: 1e-4,
        l2: 5e-4,
    };
    let mut sizes = vec![1, 2, 7, 255, 256, 257, 1000, 4099, 65_537, 100_003];
    for preset in Preset::ALL {
        for (w, b) in TrainConfig::preset(preset).arch.param_shapes() {
            for n in [w.iter().product(), b] {
                if !sizes.contains(&n) {
                    sizes.push(n);
                }
            }
        }
    }
    sizes.push(33);
    let ts = [1, 2, 10, ADAM_SCHEDULE_LEN, 1000];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| AdamCase {
            n,
            t: ts[i % ts.len()],
            hp: match i % 4 {
                0 | 2 => wd,
                1 => torch,
                _ => odd,
            },
        })
        .collect()
}

/// Layer geometries for [`super::ops::check_conv2d_layer_op`]: every im2col shape with 1–17 output
/// channels (one, several and a partial group of the CPU engine's 8), and one-channel stride-1
/// layers (its direct kernels) whose OW is 1, 15, 16, 17, 31 and 33 (vector edges of 8 and 16
/// lanes) with kernels 1–7 and padding 0–3.
pub fn conv2d_layer_shapes() -> Vec<Conv2dSpec> {
    let outs = [1, 6, 8, 9, 17];
    let mut v: Vec<Conv2dSpec> = conv2d_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Conv2dSpec {
            c_out: outs[i % outs.len()],
            ..s
        })
        .collect();
    // (batch, H, W, K, pad, O): OW = W + 2·pad − K + 1.
    for (batch, h, w, k, pad, c_out) in [
        (2, 5, 5, 5, 0, 3),
        (1, 7, 15, 1, 0, 9),
        (2, 6, 20, 5, 0, 6),
        (1, 9, 13, 3, 2, 16),
        (3, 4, 27, 7, 3, 1),
        (2, 11, 31, 3, 1, 17),
        (1, 3, 33, 3, 1, 8),
        (2, 28, 28, 5, 2, 6),
    ] {
        v.push(Conv2dSpec {
            batch,
            c_in: 1,
            h,
            w,
            c_out,
            k,
            stride: 1,
            pad,
        });
    }
    v
}

/// Dropout shapes: one element, rows and columns crossing the 256-invocation workgroup and the
/// CPU engine's chunk, p from 0 (the identity) to 0.9, a data-parallel row offset, a large
/// seed and layer.
pub fn dropout_shapes() -> Vec<DropoutSpec> {
    let d = |rows, cols, p, seed, layer, row0| DropoutSpec {
        rows,
        cols,
        p,
        seed,
        layer,
        row0,
    };
    vec![
        d(1, 1, 0.5, 1, 0, 0),
        d(3, 85, 0.25, 7, 1, 0),
        d(100, 64, 0.3, 1, 5, 0),
        d(17, 257, 0.0, 3, 2, 0),
        d(50, 64, 0.5, 0xdead_beef, 7, 50),
        d(9, 4099, 0.9, 42, 3, 2),
        d(128, 300, 0.1, u32::MAX, u32::MAX, 1000),
    ]
}

/// Batch-normalisation shapes (B samples × P rows each × C channels): dense (P = 1) and
/// convolution outputs, one sample (n ≤ 1), rows crossing the 256-invocation workgroup and the
/// CPU engine's chunk, many channels, with and without the ReLU, and x large enough that the
/// CPU engine splits its sums into runs of samples (13 of them into 7 runs of 2 and 1).
pub fn batchnorm_shapes() -> Vec<BatchNormSpec> {
    let s = |batch, per_sample, c, relu| BatchNormSpec {
        batch,
        per_sample,
        c,
        classes: 10,
        momentum: 0.1,
        eps: 1e-5,
        relu,
    };
    vec![
        s(1, 1, 3, false),
        s(7, 1, 5, true),
        s(4, 49, 3, false),
        s(3, 100, 2, true),
        s(2, 1, 300, false),
        s(10, 196, 16, true),
        s(100, 1, 64, false),
        s(33, 9, 7, true),
        // Past the CPU engine's 2·16 Ki values: its sums split into runs of samples.
        s(40, 49, 32, true),
        s(13, 400, 8, false),
    ]
}

/// Add (residual join) lengths: one element, around the 256-invocation workgroup, past the
/// CPU engine's 16 Ki chunk, and odd sizes between.
pub const ADD_SHAPES: [usize; 7] = [1, 255, 256, 257, 1000, 16_385, 70_001];
