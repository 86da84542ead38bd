//! Which checks each family runs, on any [`Backend`] ([`run_backend_family`]), with the op
//! checks of [`super::ops`] on the shapes of [`super::shapes`]: one function per family.
//!
//! On the GPU backend every product runs a pinned matmul variant
//! ([`crate::backend::gpu::GpuBackend::pin_matmul_tile`]), named in its checks: the adapter's
//! default ([`MatmulTile::default_for`]) for the checks every backend runs, and in the matmul
//! family also every variant the adapter can run (the autotuner may pick any of them) over the
//! edges of its tile. Verification never autotunes; the autotuner checks its own choices.

use super::coverage;
use super::ops::{
    check_adam_op, check_add_op, check_avgpool_op, check_batchnorm_op, check_bias_op,
    check_conv2d_layer_op, check_conv2d_op, check_decay_op, check_dropout_op, check_gather_augment,
    check_gather_kind, check_gather_normalize, check_gather_op, check_maxpool_op, check_metrics_op,
    check_sgd_op, check_softmax_op, run_matmul_op, Cursor, TableAt,
};
use super::shapes::{
    adam_cases, avgpool_shapes, batchnorm_shapes, conv2d_layer_shapes, conv2d_shapes,
    dropout_shapes, maxpool_shapes, ADAM_TEST_MAX, ADD_SHAPES, GATHER_SHAPES, MATMUL_SHAPES,
    ROW_SHAPES,
};
use crate::backend::Backend;
use crate::gpu::kernels::{Epilogue, MatmulSpec, MatmulTile};
use crate::ops::{Augment, FeatureType, SampleShape};
use crate::oracle::{
    fail_nonfinite, softmax_extreme_logits, softmax_logits, Check, Family, Inputs, MatmulData,
    MatmulReference, PoolInput, SGD_PARAMS,
};
use crate::Result;

/// Run every check of `family` on `backend` with inputs from `seed`; `presets` adds the
/// presets' full-size layers (slow on a debug build; the test suite leaves most of them to
/// `wgtrain verify`). Blocks for the device; a web page uses [`run_backend_family_async`].
pub fn run_backend_family(
    backend: &mut dyn Backend,
    family: Family,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    crate::util::wait_for(
        "kernel checks",
        run_backend_family_async(backend, family, seed, presets),
    )
}

/// [`run_backend_family`] without blocking: every read-back waits for the device
/// asynchronously (the checks on the browser's thread).
pub async fn run_backend_family_async(
    backend: &mut dyn Backend,
    family: Family,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut inp = Inputs::new(seed);
    let (be, inp) = (backend, &mut inp);
    // The variant of every product outside the matmul family's sweep: the adapter default.
    let own = be.as_gpu().map(|gpu| MatmulTile::default_for(gpu.ctx()));
    pin(be, own);
    let out = match family {
        Family::Matmul => matmul(be, inp, own, presets).await,
        Family::Bias => bias(be, inp, presets).await,
        Family::SoftmaxXent => softmax_xent(be, inp).await,
        Family::Sgd => sgd(be, inp).await,
        Family::Metrics => metrics(be, inp).await,
        Family::Gather => gather(be, inp).await,
        Family::Conv2d => conv2d(be, inp, own, presets).await,
        Family::Maxpool => maxpool(be, inp, presets).await,
        Family::Avgpool => avgpool(be, inp, presets).await,
        Family::Adam => adam(be, inp, presets).await,
        Family::Dropout => dropout(be, inp).await,
        Family::Batchnorm => batchnorm(be, inp).await,
        Family::Add => add(be, inp).await,
    };
    pin(be, None);
    out
}

/// On the GPU backend, run the products of programs prepared from now on with `tile` (`None`:
/// the autotuner's choice); nothing elsewhere.
fn pin(be: &mut dyn Backend, tile: Option<MatmulTile>) {
    if let Some(gpu) = be.as_gpu() {
        gpu.pin_matmul_tile(tile);
    }
}

/// One draw of inputs for `spec`, its f64 reference made once ([`MatmulReference`]), run with
/// each of `tiles` pinned in turn (on the GPU backend) and the tile named in the checks.
/// Sharing the draw is what keeps checking 13 variants on the same shapes affordable: the
/// reference of a 1000³ product costs more than the launch.
async fn products(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &MatmulSpec,
    tiles: &[Option<MatmulTile>],
) -> Result<Vec<Check>> {
    let d = MatmulData::new(inp, spec);
    let reference = MatmulReference::new(spec, &d);
    let mut out = Vec::new();
    for &tile in tiles {
        pin(be, tile);
        let mut checks = run_matmul_op(be, spec, &d, &reference).await?;
        for c in &mut checks {
            c.tile = tile;
        }
        out.extend(checks);
    }
    Ok(out)
}

/// [`products`] on one tile (or none: the backend's own choice).
async fn product(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &MatmulSpec,
    tile: Option<MatmulTile>,
) -> Result<Vec<Check>> {
    products(be, inp, spec, &[tile]).await
}

/// Why `tile` must not run `spec` on the GPU backend `be`, if it must not.
fn unsupported(be: &mut dyn Backend, tile: &MatmulTile, spec: &MatmulSpec) -> Option<String> {
    be.as_gpu()
        .and_then(|gpu| tile.unsupported_for(gpu.ctx(), spec))
}

/// The four transpose combinations.
const TRANS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Awkward shapes every variant meets with every transpose, epilogue and accumulation.
const AWKWARD: [(usize, usize, usize); 4] =
    [(1, 1, 1), (7, 13, 257), (65, 63, 17), (100, 512, 784)];

/// Matrix products. On every backend (on the GPU with the adapter default `own`): accumulation
/// with every epilogue and transpose. On the CPU backends: every shape in every transpose
/// combination, the epilogue turning with both; every combination training, evaluation or
/// bench launches; the presets' products. On the GPU backend instead every variant the adapter
/// can run, each pinned in turn: the two defaults on every shape and transpose, every variant
/// in every launched combination over the edges of its tile and on awkward shapes, the
/// presets' products on the two defaults.
async fn matmul(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    own: Option<MatmulTile>,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    // Accumulation, with every epilogue and transpose, on a few awkward shapes.
    for (i, &(m, n, k)) in AWKWARD.iter().enumerate() {
        for (j, epi) in Epilogue::ALL.into_iter().enumerate() {
            let (ta, tb) = TRANS[(i + j) % 4];
            let spec = MatmulSpec {
                trans_a: ta,
                trans_b: tb,
                epilogue: epi,
                accumulate: true,
                ..MatmulSpec::new(m, n, k)
            };
            out.extend(product(be, inp, &spec, own).await?);
        }
    }
    let combos = coverage::launched_combos()?;
    let Some(own) = own else {
        // Every shape in every transpose combination, the epilogue turning with both so that
        // each (transposes, epilogue) pair meets several shapes.
        for (i, &(m, n, k)) in MATMUL_SHAPES.iter().enumerate() {
            for (j, &(ta, tb)) in TRANS.iter().enumerate() {
                let spec = MatmulSpec {
                    trans_a: ta,
                    trans_b: tb,
                    epilogue: Epilogue::ALL[(i + j) % 4],
                    ..MatmulSpec::new(m, n, k)
                };
                out.extend(product(be, inp, &spec, None).await?);
            }
        }
        // Every combination training, evaluation or bench launches on every shape but the
        // 1000³ one (coverage::launched_combos, read from the programs).
        for &c in &combos {
            for &shape in MATMUL_SHAPES.iter().filter(|s| s.0 * s.1 * s.2 < 1 << 28) {
                let spec = coverage::spec_of(c, shape);
                out.extend(product(be, inp, &spec, None).await?);
            }
        }
        if presets {
            for (label, spec) in coverage::all_preset_products()? {
                for mut c in product(be, inp, &spec, None).await? {
                    c.shape = label.clone();
                    out.push(c);
                }
            }
        }
        return Ok(out);
    };
    // The GPU backend: the portable default and the adapter's default on every shape in every
    // transpose; every variant the adapter can run on shapes crossing every edge of its tile in
    // every launched combination (covering the CPU backends' shapes and combinations).
    let ctx = be.as_gpu().expect("the GPU backend").ctx();
    let mut main = vec![MatmulTile::DEFAULT];
    if own != MatmulTile::DEFAULT && own.available(ctx) {
        main.push(own);
    }
    let candidates: Vec<MatmulTile> = MatmulTile::CANDIDATES
        .into_iter()
        .filter(|t| t.available(ctx))
        .collect();
    let main_tiles: Vec<Option<MatmulTile>> = main.iter().copied().map(Some).collect();
    for &(m, n, k) in MATMUL_SHAPES {
        for (ta, tb) in TRANS {
            let spec = MatmulSpec {
                trans_a: ta,
                trans_b: tb,
                ..MatmulSpec::new(m, n, k)
            };
            out.extend(products(be, inp, &spec, &main_tiles).await?);
        }
    }
    // Every variant the adapter can run (the autotuner may pick any of them), in every
    // combination training, evaluation or bench launches, on shapes crossing every edge of
    // its tile.
    for &tile in &candidates {
        for &shape in &coverage::tile_edge_shapes(&tile) {
            for &c in &combos {
                let spec = coverage::spec_of(c, shape);
                out.extend(product(be, inp, &spec, Some(tile)).await?);
            }
        }
    }
    // All transposes (beyond the two defaults, which met them above), epilogues and
    // accumulation on a few awkward shapes, one draw per case for every variant.
    let every: Vec<Option<MatmulTile>> = candidates.iter().copied().map(Some).collect();
    let others: Vec<Option<MatmulTile>> = candidates
        .iter()
        .filter(|t| !main.contains(t))
        .copied()
        .map(Some)
        .collect();
    for &(m, n, k) in &AWKWARD {
        for (ta, tb) in TRANS {
            let spec = MatmulSpec {
                trans_a: ta,
                trans_b: tb,
                ..MatmulSpec::new(m, n, k)
            };
            out.extend(products(be, inp, &spec, &others).await?);
        }
        for epi in Epilogue::ALL {
            let spec = MatmulSpec {
                epilogue: epi,
                trans_b: true,
                ..MatmulSpec::new(m, n, k)
            };
            out.extend(products(be, inp, &spec, &every).await?);
        }
        let acc = MatmulSpec {
            accumulate: true,
            epilogue: Epilogue::ReluMask,
            trans_a: true,
            ..MatmulSpec::new(m, n, k)
        };
        out.extend(products(be, inp, &acc, &every).await?);
    }
    // The real products of every preset's training step and evaluation, on the portable
    // default and the adapter's default.
    if presets {
        for (label, spec) in coverage::all_preset_products()? {
            let mut tiles = Vec::new();
            for &tile in &main {
                match unsupported(be, &tile, &spec) {
                    Some(why) => log::warn!("verify: {label} not checked on {tile}: {why}"),
                    None => tiles.push(Some(tile)),
                }
            }
            if tiles.is_empty() {
                continue;
            }
            for mut c in products(be, inp, &spec, &tiles).await? {
                c.shape = label.clone();
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The bias gradient (column sums) on every row shape, and the presets' dense layers.
async fn bias(be: &mut dyn Backend, inp: &mut Inputs, presets: bool) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for &(r, c) in ROW_SHAPES {
        out.extend(check_bias_op(be, inp, r, c, "").await?);
    }
    if presets {
        for (label, (rows, o)) in coverage::preset_bias_sums()? {
            out.extend(check_bias_op(be, inp, rows, o, &format!("{label} ")).await?);
        }
    }
    Ok(out)
}

/// Softmax with cross-entropy on random logits up to 1000 classes, and on logits that
/// overflow a naive softmax (which must also come out finite).
async fn softmax_xent(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for (i, &(r, c)) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000).enumerate() {
        let logits = softmax_logits(inp, r, c);
        out.extend(check_softmax_op(be, inp, &logits, 0.0, format!("{r}x{c}")).await?);
        // Label smoothing on the same logits, ε turning.
        let eps = [0.1, 0.3, 1.0][i % 3];
        out.extend(check_softmax_op(be, inp, &logits, eps, format!("{r}x{c}")).await?);
    }
    let extreme = softmax_extreme_logits();
    for eps in [0.0, 0.1] {
        let mut checks = check_softmax_op(be, inp, &extreme, eps, "extremes 6x3".into()).await?;
        fail_nonfinite(&mut checks);
        out.extend(checks);
    }
    Ok(out)
}

/// SGD on every row shape's element count, the hyperparameters turning, at a fixed learning
/// rate and (every other shape) read from a schedule's table inside and past its end.
async fn sgd(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for (i, &(r, c)) in ROW_SHAPES.iter().enumerate() {
        let hp = SGD_PARAMS[i % SGD_PARAMS.len()];
        out.extend(check_sgd_op(be, inp, r * c, hp, None).await?);
        let at = [TableAt::Inside, TableAt::PastEnd][i / 2 % 2];
        if i % 2 == 0 {
            out.extend(check_sgd_op(be, inp, r * c, hp, Some(at)).await?);
        }
    }
    Ok(out)
}

/// The metrics accumulation on row shapes up to 1000 classes.
async fn metrics(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
        out.extend(check_metrics_op(be, inp, r, c).await?);
    }
    Ok(out)
}

/// The gather and the cursor's advance from three cursors on every gather shape; on the GPU
/// backend also from near the end of part of the order on the dataset split into about three
/// shards, as one larger than a binding is.
async fn gather(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for &(samples, pixels, rows) in GATHER_SHAPES {
        for cursor in [Cursor::NearEnd, Cursor::StartTwice, Cursor::AtEnd] {
            out.extend(check_gather_op(be, inp, samples, pixels, rows, cursor).await?);
        }
        // f32 values, read as they are: from the start (twice) and into the padding.
        for cursor in [Cursor::NearEnd, Cursor::StartTwice] {
            let f32s = check_gather_kind(be, inp, samples, pixels, rows, cursor, FeatureType::F32);
            out.extend(f32s.await?);
        }
        for kind in [FeatureType::U8, FeatureType::F32] {
            let Some(gpu) = be.as_gpu() else { break };
            let shard = ((samples / 3).max(4) * pixels * kind.size()) as u64;
            gpu.pin_dataset_shards(Some(shard));
            let cursor = Cursor::NearEndOfPart;
            let checks = check_gather_kind(be, inp, samples, pixels, rows, cursor, kind);
            let checks = checks.await;
            be.as_gpu()
                .expect("the GPU backend")
                .pin_dataset_shards(None);
            for mut c in checks? {
                c.shape = format!("{} in shards of {shard} bytes", c.shape);
                out.push(c);
            }
        }
    }
    // The training augmentation: fixed geometries (RGB, a padding beyond the width and the
    // height, a one-row image) and random ones, bytes and f32, into the padding rows and from
    // the start twice.
    let mut geometries: Vec<(usize, [usize; 3], usize, Augment)> = vec![
        (
            37,
            [3, 5, 7],
            13,
            Augment {
                crop: 2,
                flip: true,
            },
        ),
        (
            20,
            [1, 4, 3],
            9,
            Augment {
                crop: 5,
                flip: true,
            },
        ),
        (
            50,
            [3, 8, 8],
            64,
            Augment {
                crop: 4,
                flip: false,
            },
        ),
        (
            11,
            [2, 1, 6],
            7,
            Augment {
                crop: 0,
                flip: true,
            },
        ),
    ];
    for _ in 0..4 {
        let mut r = |n: u64| (inp.next_u64() % n) as usize;
        let (c, h, w) = ([1, 3, 4][r(3)], 1 + r(10), 1 + r(10));
        let augment = Augment {
            crop: 1 + r(w as u64 + 2),
            flip: r(2) == 1,
        };
        geometries.push((5 + r(40), [c, h, w], 1 + r(40), augment));
    }
    for (samples, [c, h, w], rows, augment) in geometries.iter().copied() {
        let shape = SampleShape::Image { c, h, w };
        for kind in [FeatureType::U8, FeatureType::F32] {
            for cursor in [Cursor::NearEnd, Cursor::StartTwice] {
                let checks =
                    check_gather_augment(be, inp, samples, shape, rows, cursor, kind, augment);
                out.extend(checks.await?);
            }
        }
    }
    // The normalisation: flat samples (one channel) and every augmentation geometry's images,
    // with and without the augmentation (its zero padding is normalised too), bytes and f32,
    // into the padding rows.
    for &(samples, pixels, rows) in GATHER_SHAPES {
        for kind in [FeatureType::U8, FeatureType::F32] {
            let shape = SampleShape::Flat(pixels);
            let cursor = Cursor::NearEnd;
            let checks = check_gather_normalize(be, inp, samples, shape, rows, cursor, kind, None);
            out.extend(checks.await?);
        }
    }
    for (samples, [c, h, w], rows, augment) in geometries {
        let shape = SampleShape::Image { c, h, w };
        for kind in [FeatureType::U8, FeatureType::F32] {
            for augment in [None, Some(augment)] {
                let cursor = Cursor::NearEnd;
                let checks =
                    check_gather_normalize(be, inp, samples, shape, rows, cursor, kind, augment);
                out.extend(checks.await?);
            }
        }
    }
    Ok(out)
}

/// im2col and col2im (with and without a mask) on every geometry, whole convolution layers
/// (with infinities on every other one that allows them), and the presets' layers.
async fn conv2d(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    own: Option<MatmulTile>,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let layer = |checks: Vec<Check>, out: &mut Vec<Check>| {
        out.extend(checks.into_iter().map(|mut c| {
            c.tile = own;
            c
        }))
    };
    for spec in conv2d_shapes() {
        out.extend(check_conv2d_op(be, inp, &spec, "").await?);
    }
    for (i, spec) in conv2d_layer_shapes().iter().enumerate() {
        layer(
            check_conv2d_layer_op(be, inp, spec, false, "").await?,
            &mut out,
        );
        if spec.w >= spec.k.max(2) && i % 2 == 0 {
            layer(
                check_conv2d_layer_op(be, inp, spec, true, "").await?,
                &mut out,
            );
        }
    }
    if presets {
        for (label, spec) in coverage::preset_im2col()? {
            out.extend(check_conv2d_op(be, inp, &spec, &format!("{label} ")).await?);
        }
        let layers = coverage::preset_single_channel_convolutions()?
            .into_iter()
            .chain(coverage::preset_multi_channel_convolutions()?);
        for (label, spec) in layers {
            let label = format!("{label} ");
            layer(
                check_conv2d_layer_op(be, inp, &spec, false, &label).await?,
                &mut out,
            );
        }
    }
    Ok(out)
}

/// Max-pooling forward and backward on every geometry (uniform, quantised with ties, ReLU
/// outputs with zero ties, and NaN inputs on every fourth), and the presets' layers.
async fn maxpool(be: &mut dyn Backend, inp: &mut Inputs, presets: bool) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let inputs = [PoolInput::Uniform, PoolInput::Quantised, PoolInput::Relu];
    for (i, spec) in maxpool_shapes().iter().enumerate() {
        out.extend(check_maxpool_op(be, inp, spec, inputs[i % 3], "").await?);
        if i % 4 == 1 {
            out.extend(check_maxpool_op(be, inp, spec, PoolInput::Nan, "").await?);
        }
    }
    if presets {
        for (label, spec) in coverage::preset_maxpools()? {
            for input in [PoolInput::Quantised, PoolInput::Relu] {
                let label = format!("{label} ");
                out.extend(check_maxpool_op(be, inp, &spec, input, &label).await?);
            }
        }
    }
    Ok(out)
}

/// Average pooling on K×K and global windows, uniform and ReLU'd inputs, NaN and ±∞ in some;
/// the presets' layers (none of today's presets pools by averaging).
async fn avgpool(be: &mut dyn Backend, inp: &mut Inputs, presets: bool) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let inputs = [PoolInput::Uniform, PoolInput::Relu];
    for (i, spec) in avgpool_shapes().iter().enumerate() {
        out.extend(check_avgpool_op(be, inp, spec, inputs[i % 2], "").await?);
        if i % 4 == 1 {
            out.extend(check_avgpool_op(be, inp, spec, PoolInput::Nan, "").await?);
        }
    }
    if presets {
        for (label, spec) in coverage::preset_avgpools()? {
            let label = format!("{label} ");
            out.extend(check_avgpool_op(be, inp, &spec, PoolInput::Relu, &label).await?);
        }
    }
    Ok(out)
}

/// Dropout on every shape (no preset has a dropout layer).
async fn dropout(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for spec in dropout_shapes() {
        out.extend(check_dropout_op(be, inp, &spec).await?);
    }
    Ok(out)
}

/// Batch normalisation on every shape (no preset has one).
async fn batchnorm(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for spec in batchnorm_shapes() {
        out.extend(check_batchnorm_op(be, inp, &spec).await?);
    }
    Ok(out)
}

/// Adam on every case; the cnn preset's 3.2M-weight layer only with the presets.
async fn adam(be: &mut dyn Backend, inp: &mut Inputs, presets: bool) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for case in adam_cases()
        .iter()
        .filter(|c| presets || c.n <= ADAM_TEST_MAX)
    {
        out.extend(check_adam_op(be, inp, case).await?);
    }
    // AdamW's decoupled decay on every row shape's element count.
    for (i, &(r, c)) in ROW_SHAPES.iter().enumerate() {
        let at = [TableAt::Inside, TableAt::PastEnd][i % 2];
        out.extend(check_decay_op(be, inp, r * c, at).await?);
    }
    Ok(out)
}

/// The residual join on every length.
async fn add(be: &mut dyn Backend, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for len in ADD_SHAPES {
        out.extend(check_add_op(be, inp, len).await?);
    }
    Ok(out)
}
