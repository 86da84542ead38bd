//! Which checks each family runs: [`run_family`] launches the WGSL kernels on a
//! [`GpuContext`] ([`super::kernels`]), [`run_backend_family`] runs ops on any [`Backend`]
//! ([`super::ops`]), on the shapes of [`super::shapes`].

use super::coverage;
use super::kernels::{
    check_adam, check_avgpool, check_bias, check_conv2d, check_gather, check_matmul, check_maxpool,
    check_metrics, check_relu, check_sgd, check_softmax, check_softmax_extremes,
};
use super::ops::{
    check_adam_op, check_avgpool_op, check_bias_op, check_conv2d_layer_op, check_conv2d_op,
    check_gather_op, check_matmul_op, check_maxpool_op, check_metrics_op, check_sgd_op,
    check_softmax_op, Cursor,
};
use super::shapes::{
    adam_cases, avgpool_shapes, conv2d_layer_shapes, conv2d_preset_shapes, conv2d_shapes,
    maxpool_preset_shapes, maxpool_shapes, ADAM_TEST_MAX, GATHER_SHAPES, MATMUL_SHAPES,
    PRESET_LAYERS, ROW_SHAPES,
};
use crate::backend::Backend;
use crate::gpu::kernels::{Epilogue, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use crate::ops::Conv2dSpec;
use crate::oracle::{
    fail_nonfinite, softmax_extreme_logits, softmax_logits, Check, Family, Inputs, PoolInput,
    SGD_PARAMS,
};
use crate::Result;

/// Run every check of `family` (one of [`Family::ALL`]) with inputs from `seed`.
pub fn run_family(ctx: &GpuContext, family: Family, seed: u64) -> Result<Vec<Check>> {
    run_family_with(ctx, family, seed, true)
}

/// [`run_family`], with or without the presets' full-size layers (conv2d and maxpool at batch
/// 100; the test suite leaves them to `wgtrain verify` where they are slow).
pub fn run_family_with(
    ctx: &GpuContext,
    family: Family,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut inp = Inputs::new(seed);
    let mut out = Vec::new();
    match family {
        Family::Matmul => {
            // The portable default and this adapter's default on every shape and transpose.
            let mut main = vec![MatmulTile::DEFAULT];
            let own = MatmulTile::default_for(ctx);
            if own != MatmulTile::DEFAULT && own.available(ctx) {
                main.push(own);
            }
            for tile in &main {
                for &(m, n, k) in MATMUL_SHAPES {
                    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                        let spec = MatmulSpec {
                            trans_a: ta,
                            trans_b: tb,
                            ..MatmulSpec::new(m, n, k)
                        };
                        out.push(check_matmul(ctx, &mut inp, &spec, tile)?);
                    }
                }
            }
            // Every variant the adapter can run (the autotuner may pick any of them), in
            // every combination training, evaluation or bench launches (read from the
            // programs: coverage::launched_combos), on shapes crossing every edge of its tile.
            let combos = coverage::launched_combos()?;
            for tile in MatmulTile::CANDIDATES.iter().filter(|t| t.available(ctx)) {
                for &shape in &coverage::tile_edge_shapes(tile) {
                    for &c in &combos {
                        let spec = coverage::spec_of(c, shape);
                        out.push(check_matmul(ctx, &mut inp, &spec, tile)?);
                    }
                }
                // All transposes, epilogues and accumulation on a few awkward shapes.
                for &(m, n, k) in &[(1, 1, 1), (7, 13, 257), (65, 63, 17), (100, 512, 784)] {
                    if !main.contains(tile) {
                        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)]
                        {
                            let spec = MatmulSpec {
                                trans_a: ta,
                                trans_b: tb,
                                ..MatmulSpec::new(m, n, k)
                            };
                            out.push(check_matmul(ctx, &mut inp, &spec, tile)?);
                        }
                    }
                    for epi in Epilogue::ALL {
                        let spec = MatmulSpec {
                            epilogue: epi,
                            trans_b: true,
                            ..MatmulSpec::new(m, n, k)
                        };
                        out.push(check_matmul(ctx, &mut inp, &spec, tile)?);
                    }
                    let acc = MatmulSpec {
                        accumulate: true,
                        epilogue: Epilogue::ReluMask,
                        trans_a: true,
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.push(check_matmul(ctx, &mut inp, &acc, tile)?);
                }
            }
            // The real products of every preset's training step and evaluation, on the
            // portable default and this adapter's default.
            if presets {
                for (label, spec) in coverage::all_preset_products()? {
                    for tile in &main {
                        if let Some(why) = tile.unsupported_for(ctx, &spec) {
                            log::warn!("verify: {label} not checked on {tile}: {why}");
                            continue;
                        }
                        let mut c = check_matmul(ctx, &mut inp, &spec, tile)?;
                        c.shape = label.clone();
                        out.push(c);
                    }
                }
            }
        }
        Family::Bias => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_bias(ctx, &mut inp, r, c)?);
            }
        }
        Family::Relu => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_relu(ctx, &mut inp, r, c)?);
            }
        }
        Family::SoftmaxXent => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_softmax(ctx, &mut inp, r, c)?);
            }
            out.extend(check_softmax_extremes(ctx, &mut inp)?);
        }
        Family::Sgd => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_sgd(ctx, &mut inp, r * c)?);
            }
        }
        Family::Metrics => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_metrics(ctx, &mut inp, r, c)?);
            }
        }
        Family::Gather => {
            for &(samples, pixels, rows) in GATHER_SHAPES {
                out.extend(check_gather(ctx, &mut inp, samples, pixels, rows, None)?);
                // The same split into about three shards, as a dataset beyond one binding is.
                let shard = ((samples / 3).max(4) * pixels) as u64;
                out.extend(check_gather(
                    ctx,
                    &mut inp,
                    samples,
                    pixels,
                    rows,
                    Some(shard),
                )?);
            }
        }
        Family::Conv2d => {
            for spec in conv2d_shapes() {
                out.extend(check_conv2d(ctx, &mut inp, &spec, "")?);
            }
            if presets {
                for (label, spec) in conv2d_preset_shapes() {
                    out.extend(check_conv2d(ctx, &mut inp, &spec, &format!("{label} "))?);
                }
            }
        }
        Family::Maxpool => {
            let inputs = [PoolInput::Uniform, PoolInput::Quantised, PoolInput::Relu];
            for (i, spec) in maxpool_shapes().iter().enumerate() {
                out.extend(check_maxpool(ctx, &mut inp, spec, inputs[i % 3], "")?);
                if i % 4 == 1 {
                    out.extend(check_maxpool(ctx, &mut inp, spec, PoolInput::Nan, "")?);
                }
            }
            if presets {
                for (label, spec) in maxpool_preset_shapes() {
                    for input in [PoolInput::Quantised, PoolInput::Relu] {
                        let label = format!("{label} ");
                        out.extend(check_maxpool(ctx, &mut inp, &spec, input, &label)?);
                    }
                }
            }
        }
        Family::Avgpool => {
            let inputs = [PoolInput::Uniform, PoolInput::Relu];
            for (i, spec) in avgpool_shapes().iter().enumerate() {
                out.extend(check_avgpool(ctx, &mut inp, spec, inputs[i % 2], "")?);
                if i % 4 == 1 {
                    out.extend(check_avgpool(ctx, &mut inp, spec, PoolInput::Nan, "")?);
                }
            }
        }
        Family::Adam => {
            // The cnn preset's 3.2M-weight layer only with the presets (slow in debug builds).
            for case in adam_cases()
                .iter()
                .filter(|c| presets || c.n <= ADAM_TEST_MAX)
            {
                out.extend(check_adam(ctx, &mut inp, case)?);
            }
        }
    }
    Ok(out)
}

/// Run every check of op family `family` (one of [`Family::OPS`]; [`Family::Relu`], which has no op, is refused) on `backend` with inputs from
/// `seed`; `presets` adds the presets' full-size layers (slow on a debug build). Blocks for
/// the device; a web page uses [`run_backend_family_async`].
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
    let inp = &mut inp;
    let be = backend;
    let mut out = Vec::new();
    match family {
        Family::Matmul => {
            // Every shape in every transpose combination, the epilogue turning with both so
            // that each (transposes, epilogue) pair meets several shapes.
            let trans = [(false, false), (false, true), (true, false), (true, true)];
            for (i, &(m, n, k)) in MATMUL_SHAPES.iter().enumerate() {
                for (j, &(ta, tb)) in trans.iter().enumerate() {
                    let spec = MatmulSpec {
                        trans_a: ta,
                        trans_b: tb,
                        epilogue: Epilogue::ALL[(i + j) % 4],
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            // Accumulation, with every epilogue and transpose, on a few awkward shapes.
            for (i, &(m, n, k)) in [(1, 1, 1), (7, 13, 257), (65, 63, 17), (100, 512, 784)]
                .iter()
                .enumerate()
            {
                for (j, epi) in Epilogue::ALL.into_iter().enumerate() {
                    let (ta, tb) = trans[(i + j) % 4];
                    let spec = MatmulSpec {
                        trans_a: ta,
                        trans_b: tb,
                        epilogue: epi,
                        accumulate: true,
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            // Every combination training, evaluation or bench launches on every shape but
            // the 1000³ one (coverage::launched_combos, read from the programs).
            for c in coverage::launched_combos()? {
                for &shape in MATMUL_SHAPES.iter().filter(|s| s.0 * s.1 * s.2 < 1 << 28) {
                    let spec = coverage::spec_of(c, shape);
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            if presets {
                for (label, spec) in coverage::all_preset_products()? {
                    for mut c in check_matmul_op(be, inp, &spec).await? {
                        c.shape = label.clone();
                        out.push(c);
                    }
                }
            }
        }
        Family::Bias => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_bias_op(be, inp, r, c, "").await?);
            }
            if presets {
                for (label, rows, o, _) in PRESET_LAYERS {
                    out.extend(check_bias_op(be, inp, rows, o, &format!("{label} ")).await?);
                }
            }
        }
        Family::SoftmaxXent => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                let logits = softmax_logits(inp, r, c);
                out.extend(check_softmax_op(be, inp, &logits, format!("{r}x{c}")).await?);
            }
            let extreme = softmax_extreme_logits();
            let mut checks = check_softmax_op(be, inp, &extreme, "extremes 6x3".into()).await?;
            fail_nonfinite(&mut checks);
            out.extend(checks);
        }
        Family::Sgd => {
            for (i, &(r, c)) in ROW_SHAPES.iter().enumerate() {
                out.extend(check_sgd_op(be, inp, r * c, SGD_PARAMS[i % SGD_PARAMS.len()]).await?);
            }
        }
        Family::Metrics => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_metrics_op(be, inp, r, c).await?);
            }
        }
        Family::Gather => {
            for &(samples, pixels, rows) in GATHER_SHAPES {
                for cursor in [Cursor::NearEnd, Cursor::StartTwice, Cursor::AtEnd] {
                    out.extend(check_gather_op(be, inp, samples, pixels, rows, cursor).await?);
                }
            }
        }
        Family::Conv2d => {
            for spec in conv2d_shapes() {
                out.extend(check_conv2d_op(be, inp, &spec, "").await?);
            }
            for (i, spec) in conv2d_layer_shapes().iter().enumerate() {
                out.extend(check_conv2d_layer_op(be, inp, spec, false, "").await?);
                if spec.w >= spec.k.max(2) && i % 2 == 0 {
                    out.extend(check_conv2d_layer_op(be, inp, spec, true, "").await?);
                }
            }
            if presets {
                for (label, spec) in conv2d_preset_shapes() {
                    out.extend(check_conv2d_op(be, inp, &spec, &format!("{label} ")).await?);
                }
                for (label, c_out) in [("lenet5 conv1", 6), ("cnn conv1", 32)] {
                    let spec = Conv2dSpec {
                        c_out,
                        ..conv2d_preset_shapes()[0].1
                    };
                    let label = format!("{label} ");
                    out.extend(check_conv2d_layer_op(be, inp, &spec, false, &label).await?);
                }
            }
        }
        Family::Maxpool => {
            let inputs = [PoolInput::Uniform, PoolInput::Quantised, PoolInput::Relu];
            for (i, spec) in maxpool_shapes().iter().enumerate() {
                out.extend(check_maxpool_op(be, inp, spec, inputs[i % 3], "").await?);
                if i % 4 == 1 {
                    out.extend(check_maxpool_op(be, inp, spec, PoolInput::Nan, "").await?);
                }
            }
            if presets {
                for (label, spec) in maxpool_preset_shapes() {
                    for input in [PoolInput::Quantised, PoolInput::Relu] {
                        let label = format!("{label} ");
                        out.extend(check_maxpool_op(be, inp, &spec, input, &label).await?);
                    }
                }
            }
        }
        Family::Avgpool => {
            let inputs = [PoolInput::Uniform, PoolInput::Relu];
            for (i, spec) in avgpool_shapes().iter().enumerate() {
                out.extend(check_avgpool_op(be, inp, spec, inputs[i % 2], "").await?);
                if i % 4 == 1 {
                    out.extend(check_avgpool_op(be, inp, spec, PoolInput::Nan, "").await?);
                }
            }
        }
        Family::Adam => {
            for case in adam_cases()
                .iter()
                .filter(|c| presets || c.n <= ADAM_TEST_MAX)
            {
                out.extend(check_adam_op(be, inp, case).await?);
            }
        }
        Family::Relu => {
            return Err(crate::Error::InvalidSetting {
                setting: crate::error::Setting::Kernel,
                reason: format!(
                    "relu has no op of its own (ReLU is a matmul epilogue, checked with matmul); \
                     the op families are {:?}",
                    Family::OPS.map(Family::name)
                ),
            })
        }
    }
    Ok(out)
}
