// Fused softmax + cross-entropy, numerically stable, and its gradient.
//
// softmax_xent_forward:  logits[B,C], labels[B] -> probs[B,C], loss[B]
//   p = exp(z - max z) / Σ exp(z - max z);  loss = log Σ exp(z - max z) + (max z - z[y])
//   Subtracting the row max keeps every exp argument ≤ 0, so nothing overflows for logits
//   like [1000, 0] and a row of -1000s gives p = 1/C.
//   With label smoothing ε > 0 (PyTorch's CrossEntropyLoss(label_smoothing=ε)), the target is
//   (1 − ε)·onehot(y) + ε/C and loss = (1 − ε)·ℓ_y + (ε/C)·Σ_c ℓ_c with ℓ_c = −log p_c
//   = log Σ exp(z − max z) + (max z − z_c). ε = 0 takes the plain path, unchanged.
// softmax_xent_backward: dlogits[B,C] = (p - target) · scale, scale = 1/(rows counted),
//   target = onehot(y), or (1 − ε)·onehot(y) + ε/C with smoothing.
//
// A label ≥ C marks a padding row (the tail of the last evaluation batch): its loss and
// gradient are 0.

struct Params {
    rows: u32,
    classes: u32,
    scale: f32,
    smoothing: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

@group(0) @binding(5) var<storage, read> probs_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

const WG: u32 = 64u;

// One invocation per row: C is small (10 for MNIST), so a row fits one invocation's loop.
@compute @workgroup_size(WG)
fn softmax_xent_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * WG;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.classes;
    var m = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        m = max(m, logits[base + c]);
    }
    var s = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        let e = exp(logits[base + c] - m);
        probs[base + c] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var c = 0u; c < p.classes; c++) {
        probs[base + c] *= inv;
    }
    let y = labels[row];
    if (y < p.classes) {
        let lse = log(s);
        let ly = lse + (m - logits[base + y]);
        if (p.smoothing == 0.0) {
            loss[row] = ly;
        } else {
            var all = 0.0;
            for (var c = 0u; c < p.classes; c++) {
                all += lse + (m - logits[base + c]);
            }
            loss[row] = (1.0 - p.smoothing) * ly + (p.smoothing / f32(p.classes)) * all;
        }
    } else {
        loss[row] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn softmax_xent_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.rows * p.classes) {
        return;
    }
    let row = idx / p.classes;
    let c = idx % p.classes;
    let y = labels[row];
    if (y >= p.classes) {
        dlogits[idx] = 0.0;
        return;
    }
    if (p.smoothing == 0.0) {
        let onehot = select(0.0, 1.0, c == y);
        dlogits[idx] = (probs_in[idx] - onehot) * p.scale;
    } else {
        let smoothed = select(0.0, 1.0 - p.smoothing, c == y) + p.smoothing / f32(p.classes);
        dlogits[idx] = (probs_in[idx] - smoothed) * p.scale;
    }
}
