//! The WGSL kernels on a [`GpuContext`]: each check uploads seeded random inputs, poisons every
//! output buffer with NaN (so an element the kernel never writes fails), launches the kernel and
//! hands the read-back outputs to the [oracle](crate::oracle).

use crate::gpu::autotune::check_matmul_async;
use crate::gpu::kernels::{self, MatmulSpec, MatmulTile, MetricsAcc};
use crate::gpu::GpuContext;
use crate::ops::{AvgPool2dSpec, Conv2dSpec, Pool2dSpec};
use crate::oracle::{
    adam_compare, adam_inputs, adam_schedule_table, adam_shape, argmax_compare, avgpool_compare,
    avgpool_inputs, avgpool_shape, bias_add_compare, bias_backward_compare, compare_u32,
    conv2d_compare, conv2d_inputs, conv2d_shape, fail_nonfinite, maxpool_compare, maxpool_inputs,
    maxpool_shape, metrics_compare, metrics_inputs, relu_compare, sgd_compare, sgd_inputs,
    softmax_compare, softmax_extreme_logits, softmax_logits, AdamCase, Check, Family, GatherData,
    Inputs, PoolInput, GATHER_Y_POISON, METRICS_START, SGD_PARAMS,
};
use crate::Result;
use ndarray::Array2;

/// Check one matmul variant on one shape (the autotuner's check,
/// [`crate::gpu::autotune::check_matmul_async`], waited for).
pub fn check_matmul(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Check> {
    crate::util::wait_for("matmul check", check_matmul_async(ctx, inp, spec, tile))
}

/// bias_add and bias_backward on [rows, cols].
pub fn check_bias(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
) -> Result<Vec<Check>> {
    let x = inp.matrix(rows, cols);
    let b = inp.matrix(1, cols).into_shape_with_order(cols).unwrap();
    let xb = ctx.upload("x", x.as_slice().unwrap());
    let bb = ctx.upload("b", b.as_slice().unwrap());
    let yb = ctx.poisoned("y", rows * cols);
    let dbb = ctx.poisoned("db", cols);
    let l1 = kernels::bias_add(ctx, rows, cols, &xb, &bb, &yb)?;
    let l2 = kernels::bias_backward(ctx, rows, cols, &xb, &dbb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, rows * cols)?;
    let db: Vec<f32> = ctx.read("db", &dbb, cols)?;
    let shape = format!("{rows}x{cols}");
    Ok(vec![
        bias_add_compare(&x, &b, &y, shape.clone()),
        bias_backward_compare(&x, &db, kernels::bias_backward_depth(rows), shape),
    ])
}

/// relu_forward and relu_backward on [rows, cols].
pub fn check_relu(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
) -> Result<Vec<Check>> {
    let n = rows * cols;
    let x = inp.matrix(rows, cols);
    let dy = inp.matrix(rows, cols);
    let xb = ctx.upload("x", x.as_slice().unwrap());
    let dyb = ctx.upload("dy", dy.as_slice().unwrap());
    let yb = ctx.poisoned("y", n);
    let dxb = ctx.poisoned("dx", n);
    let l1 = kernels::relu_forward(ctx, n, &xb, &yb)?;
    let l2 = kernels::relu_backward(ctx, n, &yb, &dyb, &dxb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, n)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n)?;
    Ok(relu_compare(&x, &dy, &y, &dx, format!("{rows}x{cols}")))
}

/// softmax_xent_forward and _backward on given logits (some labels are padding).
pub fn check_softmax_on(
    ctx: &GpuContext,
    inp: &mut Inputs,
    logits: &Array2<f32>,
    shape: String,
) -> Result<Vec<Check>> {
    let (rows, classes) = logits.dim();
    let labels = inp.labels(rows, classes, true);
    let scale = 1.0 / rows as f32;
    let zb = ctx.upload("logits", logits.as_slice().unwrap());
    let lb = ctx.upload("labels", labels.as_slice().unwrap());
    let pb = ctx.poisoned("probs", rows * classes);
    let lossb = ctx.poisoned("loss", rows);
    let db = ctx.poisoned("dlogits", rows * classes);
    let l1 = kernels::softmax_xent_forward(ctx, rows, classes, &zb, &lb, &pb, &lossb)?;
    let l2 = kernels::softmax_xent_backward(ctx, rows, classes, scale, &pb, &lb, &db)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let p: Vec<f32> = ctx.read("probs", &pb, rows * classes)?;
    let loss: Vec<f32> = ctx.read("loss", &lossb, rows)?;
    let d: Vec<f32> = ctx.read("dlogits", &db, rows * classes)?;
    Ok(softmax_compare(
        logits, &labels, scale, &p, &loss, &d, shape,
    ))
}

/// softmax + cross-entropy on random logits in [-8, 8].
pub fn check_softmax(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let logits = softmax_logits(inp, rows, classes);
    check_softmax_on(ctx, inp, &logits, format!("{rows}x{classes}"))
}

/// Rows that overflow a naive softmax: [1000, 0], all −1000, [−1000, 0, 1000], huge spreads.
pub fn check_softmax_extremes(ctx: &GpuContext, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut checks = check_softmax_on(ctx, inp, &softmax_extreme_logits(), "extremes 6x3".into())?;
    fail_nonfinite(&mut checks);
    Ok(checks)
}

/// One SGD step on `n` parameters.
pub fn check_sgd(ctx: &GpuContext, inp: &mut Inputs, n: usize) -> Result<Vec<Check>> {
    let hp = SGD_PARAMS[0];
    let [w, g, v] = sgd_inputs(inp, n);
    let (wb, gb, vb) = (
        ctx.upload("w", &w),
        ctx.upload("g", &g),
        ctx.upload("v", &v),
    );
    let l = kernels::sgd_update(ctx, n, hp, &wb, &gb, &vb)?;
    ctx.submit(&[&l], 1)?;
    let w_gpu: Vec<f32> = ctx.read("w", &wb, n)?;
    let v_gpu: Vec<f32> = ctx.read("v", &vb, n)?;
    Ok(sgd_compare(
        hp,
        [&w, &g, &v],
        &w_gpu,
        &v_gpu,
        format!("{n}"),
    ))
}

/// argmax and metric accumulation on [rows, classes].
pub fn check_metrics(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let (scores, labels, loss) = metrics_inputs(inp, rows, classes);
    let start = METRICS_START;
    let sb = ctx.upload("scores", scores.as_slice().unwrap());
    let lb = ctx.upload("labels", labels.as_slice().unwrap());
    let lossb = ctx.upload("loss", loss.as_slice().unwrap());
    let pb = ctx.upload("pred", &vec![u32::MAX; rows]);
    let accb = ctx.upload("acc", &[start]);
    let l1 = kernels::argmax(ctx, rows, classes, &sb, &pb)?;
    let l2 = kernels::accumulate_metrics(ctx, rows, classes, &sb, &lb, &lossb, &accb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let pred: Vec<u32> = ctx.read("pred", &pb, rows)?;
    let acc: Vec<MetricsAcc> = ctx.read("acc", &accb, 1)?;
    let shape = format!("{rows}x{classes}");
    let mut out = vec![argmax_compare(&scores, &pred, shape.clone())];
    // 256 strided partial sums and an 8-level tree.
    let depth = rows.div_ceil(256) + 8;
    out.extend(metrics_compare(
        &scores, &labels, &loss, start, acc[0], depth, shape,
    ));
    Ok(out)
}

/// Minibatch gather of `rows` samples of `pixels` bytes from a random dataset, running past
/// its end so padding rows are exercised too, then `advance`. `shard_bytes` splits the images
/// into several buffers, as for a dataset larger than one binding.
pub fn check_gather(
    ctx: &GpuContext,
    inp: &mut Inputs,
    samples: usize,
    pixels: usize,
    rows: usize,
    shard_bytes: Option<u64>,
) -> Result<Vec<Check>> {
    // The sharded dataset also uses only part of its order, as a data-parallel rank does.
    let len = match shard_bytes {
        Some(_) => samples - samples / 3,
        None => samples,
    };
    let d = GatherData::new(inp, samples, pixels, rows, len);
    let data = kernels::GpuDataset::upload(ctx, &d.images, &d.labels, pixels, shard_bytes)?;
    let ob = ctx.upload("order", &d.order);
    let cb = ctx.upload("cursor", &[d.start as u32]);
    let xb = ctx.poisoned("x", rows * pixels);
    let yb = ctx.upload("y", &vec![GATHER_Y_POISON; rows]);
    let mut launches = kernels::gather(ctx, rows, d.len, &data, &ob, &cb, &xb, &yb)?;
    launches.push(kernels::advance(ctx, rows, &cb)?);
    ctx.submit(&launches.iter().collect::<Vec<_>>(), 1)?;
    let x: Vec<f32> = ctx.read("x", &xb, rows * pixels)?;
    let y: Vec<u32> = ctx.read("y", &yb, rows)?;
    let cursor: Vec<u32> = ctx.read("cursor", &cb, 1)?;
    let shape = format!(
        "{rows}x{pixels} of {samples} ({len} in use) in {} shard(s)",
        data.shards.len()
    );
    Ok(d.compare(pixels, rows, &x, &y, cursor[0], shape))
}

/// im2col, col2im and col2im with a ReLU mask on one geometry.
pub fn check_conv2d(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &Conv2dSpec,
    label: &str,
) -> Result<Vec<Check>> {
    let (rows, ncols) = (spec.col_rows(), spec.col_cols());
    let n_in = spec.input_len();
    let [x, dcols, mask] = conv2d_inputs(inp, spec);
    let xb = ctx.upload("x", &x);
    let db = ctx.upload("dcols", &dcols);
    let mb = ctx.upload("mask", &mask);
    let cb = ctx.poisoned("cols", rows * ncols);
    let dxb = ctx.poisoned("dx", n_in);
    let dxmb = ctx.poisoned("dx masked", n_in);
    let l1 = kernels::im2col(ctx, spec, &xb, &cb)?;
    let l2 = kernels::col2im(ctx, spec, &db, None, &dxb)?;
    let l3 = kernels::col2im(ctx, spec, &db, Some(&mb), &dxmb)?;
    ctx.submit(&[&l1, &l2, &l3], 1)?;
    let cols: Vec<f32> = ctx.read("cols", &cb, rows * ncols)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n_in)?;
    let dxm: Vec<f32> = ctx.read("dx masked", &dxmb, n_in)?;
    Ok(conv2d_compare(
        spec,
        [&x, &dcols, &mask],
        [&cols, &dx, &dxm],
        conv2d_shape(spec, label),
    ))
}

/// maxpool_forward (y and idx) then maxpool_backward on its idx, with and without a mask.
pub fn check_maxpool(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &Pool2dSpec,
    input: PoolInput,
    label: &str,
) -> Result<Vec<Check>> {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let [x, dy, mask] = maxpool_inputs(inp, spec, input);
    let xb = ctx.upload("x", &x);
    let dyb = ctx.upload("dy", &dy);
    let mb = ctx.upload("mask", &mask);
    let yb = ctx.poisoned("y", n_out);
    let ib = ctx.upload("idx", &vec![u32::MAX; n_out]);
    let dxb = ctx.poisoned("dx", n_in);
    let dxmb = ctx.poisoned("dx masked", n_in);
    let l1 = kernels::maxpool_forward(ctx, spec, &xb, &yb, &ib)?;
    let l2 = kernels::maxpool_backward(ctx, spec, &dyb, &ib, None, &dxb)?;
    let l3 = kernels::maxpool_backward(ctx, spec, &dyb, &ib, Some(&mb), &dxmb)?;
    ctx.submit(&[&l1, &l2, &l3], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, n_out)?;
    let idx: Vec<u32> = ctx.read("idx", &ib, n_out)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n_in)?;
    let dxm: Vec<f32> = ctx.read("dx masked", &dxmb, n_in)?;
    Ok(maxpool_compare(
        spec,
        [&x, &dy, &mask],
        &y,
        &idx,
        [&dx, &dxm],
        maxpool_shape(spec, input, label),
    ))
}

/// avgpool_forward, then avgpool_backward without and with a mask.
pub fn check_avgpool(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &AvgPool2dSpec,
    input: PoolInput,
    label: &str,
) -> Result<Vec<Check>> {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let [x, dy, mask] = avgpool_inputs(inp, spec, input);
    let xb = ctx.upload("x", &x);
    let dyb = ctx.upload("dy", &dy);
    let mb = ctx.upload("mask", &mask);
    let yb = ctx.poisoned("y", n_out);
    let dxb = ctx.poisoned("dx", n_in);
    let dxmb = ctx.poisoned("dx masked", n_in);
    let l1 = kernels::avgpool_forward(ctx, spec, &xb, &yb)?;
    let l2 = kernels::avgpool_backward(ctx, spec, &dyb, None, &dxb)?;
    let l3 = kernels::avgpool_backward(ctx, spec, &dyb, Some(&mb), &dxmb)?;
    ctx.submit(&[&l1, &l2, &l3], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, n_out)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n_in)?;
    let dxm: Vec<f32> = ctx.read("dx masked", &dxmb, n_in)?;
    Ok(avgpool_compare(
        spec,
        [&x, &dy, &mask],
        &y,
        [&dx, &dxm],
        avgpool_shape(spec, input, label),
    ))
}

/// One Adam update against the exact f64 evaluation and the f32 twin.
pub fn check_adam(ctx: &GpuContext, inp: &mut Inputs, case: &AdamCase) -> Result<Vec<Check>> {
    let (n, hp) = (case.n, case.hp);
    let [w, g, m, v] = adam_inputs(inp, n);
    let (wb, gb, mb, vb) = (
        ctx.upload("w", &w),
        ctx.upload("g", &g),
        ctx.upload("m", &m),
        ctx.upload("v", &v),
    );
    let sb = ctx.upload("sched", &adam_schedule_table(hp));
    let stb = ctx.upload("step", &[(case.t - 1) as u32]);
    let l = kernels::adam_update(ctx, n, hp, &wb, &gb, &mb, &vb, &sb, &stb)?;
    ctx.submit(&[&l], 1)?;
    let w_gpu: Vec<f32> = ctx.read("w", &wb, n)?;
    let m_gpu: Vec<f32> = ctx.read("m", &mb, n)?;
    let v_gpu: Vec<f32> = ctx.read("v", &vb, n)?;
    let step_after: Vec<u32> = ctx.read("step", &stb, 1)?;
    let shape = adam_shape(case);
    let mut out = adam_compare(case, [&w, &g, &m, &v], [&w_gpu, &m_gpu, &v_gpu], &shape);
    out.push(compare_u32(
        Family::Adam,
        "adam_update step (read only)",
        shape,
        &step_after,
        &[(case.t - 1) as u32],
    ));
    Ok(out)
}
