// Batch normalisation over channels-last x[R,C] (R = B·P rows, P rows per sample), per
// channel, PyTorch's BatchNorm2d/BatchNorm1d semantics (see `BatchNormSpec` in src/ops.rs).
// A row whose sample's label is >= classes (padding) counts nowhere.
//
// batchnorm_stats (one workgroup per channel): mean and biased variance (two passes) over the
//   valid rows, each thread a strided partial sum, then a tree; stats = [mean C | istd C | n]
//   with istd = 1/sqrt(var + eps); running = [mean C | var C | batches] moves by the momentum
//   towards the mean and the unbiased variance var·n/(n − 1) (var when n = 1); with n = 0
//   stats are [0 | 1/sqrt(eps) | 0] and running is left alone; channel 0 adds 1 to batches.
// batchnorm_eval_stats (one invocation per channel): stats from the running statistics.
// batchnorm_apply (one invocation per element): y = ((x − mean)·istd)·γ + β, ReLU if asked.
// batchnorm_backward (one workgroup per channel): dγ = Σ dy·x̂, dβ = Σ dy over the valid
//   rows; coef = [γ·istd | dβ/n | dγ/n] (0 for the last two when n = 0).
// batchnorm_input_grad (one invocation per element): dx = coef0·(dy − coef1 − x̂·coef2) on
//   valid rows, 0 on padding rows and, with apply_mask, wherever mask is not > 0.

struct Params {
    rows: u32,
    c: u32,
    per_sample: u32,
    classes: u32,
    momentum: f32,
    eps: f32,
    relu: u32,
    apply_mask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> running: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read> w: array<f32>;
@group(0) @binding(7) var<storage, read> b: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read_write> dw: array<f32>;
@group(0) @binding(11) var<storage, read_write> db: array<f32>;
@group(0) @binding(12) var<storage, read_write> coef_out: array<f32>;
@group(0) @binding(13) var<storage, read> coef: array<f32>;
@group(0) @binding(14) var<storage, read> mask: array<f32>;
@group(0) @binding(15) var<storage, read_write> dx: array<f32>;
@group(0) @binding(16) var<storage, read> running_in: array<f32>;

const WG: u32 = 256u;

var<workgroup> part: array<f32, 256>;
var<workgroup> part2: array<f32, 256>;

fn valid(r: u32) -> bool {
    return labels[r / p.per_sample] < p.classes;
}

// Tree sum of part (and part2) over the workgroup; the result lands in part[0] (part2[0]).
fn reduce2(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            part[lid] += part[lid + s];
            part2[lid] += part2[lid + s];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn batchnorm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup: every invocation returns or none does.
    if (ch >= p.c) {
        return;
    }
    var sum = 0.0;
    var count = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        if (valid(r)) {
            sum += x[r * p.c + ch];
            count += 1.0;
        }
    }
    part[lid] = sum;
    part2[lid] = count;
    reduce2(lid);
    let total = part[0];
    // A uniform value (it decides a return before the next barrier).
    let n = workgroupUniformLoad(&part2[0]);
    if (n == 0.0) {
        if (lid == 0u) {
            stats_out[ch] = 0.0;
            stats_out[p.c + ch] = 1.0 / sqrt(p.eps);
            if (ch == 0u) {
                stats_out[2u * p.c] = 0.0;
            }
        }
        return;
    }
    let mean = total / n;
    var sq = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        if (valid(r)) {
            let d = x[r * p.c + ch] - mean;
            sq += d * d;
        }
    }
    part[lid] = sq;
    part2[lid] = 0.0;
    reduce2(lid);
    if (lid == 0u) {
        let v = part[0] / n;
        stats_out[ch] = mean;
        stats_out[p.c + ch] = 1.0 / sqrt(v + p.eps);
        var unbiased = v;
        if (n > 1.0) {
            unbiased = v * (n / (n - 1.0));
        }
        let m = p.momentum;
        running[ch] = (1.0 - m) * running[ch] + m * mean;
        running[p.c + ch] = (1.0 - m) * running[p.c + ch] + m * unbiased;
        if (ch == 0u) {
            stats_out[2u * p.c] = n;
            running[2u * p.c] += 1.0;
        }
    }
}

@compute @workgroup_size(WG)
fn batchnorm_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = gid.x + gid.y * nwg.x * WG;
    if (ch >= p.c) {
        return;
    }
    stats_out[ch] = running_in[ch];
    stats_out[p.c + ch] = 1.0 / sqrt(running_in[p.c + ch] + p.eps);
    if (ch == 0u) {
        stats_out[2u * p.c] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn batchnorm_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.rows * p.c) {
        return;
    }
    let ch = i % p.c;
    var v = (x[i] - stats[ch]) * stats[p.c + ch] * w[ch] + b[ch];
    if (p.relu != 0u && !(v > 0.0)) {
        v = 0.0;
    }
    y[i] = v;
}

@compute @workgroup_size(WG)
fn batchnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x + wid.y * nwg.x;
    if (ch >= p.c) {
        return;
    }
    let mean = stats[ch];
    let istd = stats[p.c + ch];
    var sg = 0.0;
    var sb = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        if (valid(r)) {
            let i = r * p.c + ch;
            let g = dy[i];
            sg += g * ((x[i] - mean) * istd);
            sb += g;
        }
    }
    part[lid] = sg;
    part2[lid] = sb;
    reduce2(lid);
    if (lid == 0u) {
        let n = stats[2u * p.c];
        dw[ch] = part[0];
        db[ch] = part2[0];
        coef_out[ch] = w[ch] * istd;
        var a = 0.0;
        var c2 = 0.0;
        if (n > 0.0) {
            a = part2[0] / n;
            c2 = part[0] / n;
        }
        coef_out[p.c + ch] = a;
        coef_out[2u * p.c + ch] = c2;
    }
}

@compute @workgroup_size(WG)
fn batchnorm_input_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.rows * p.c) {
        return;
    }
    let ch = i % p.c;
    var d = 0.0;
    if (valid(i / p.c) && (p.apply_mask == 0u || mask[i] > 0.0)) {
        let xhat = (x[i] - stats[ch]) * stats[p.c + ch];
        d = coef[ch] * (dy[i] - coef[p.c + ch] - xhat * coef[2u * p.c + ch]);
    }
    dx[i] = d;
}
