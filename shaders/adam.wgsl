// Adam with PyTorch's semantics (torch.optim.Adam, foreach=False, amsgrad=False), in the same
// order of operations, for update number t:
//   g ← g + λ·w                      (weight_decay; λ = 0 for biases)
//   m ← lerp(m, g, 1 − β1)           (PyTorch's lerp: m + wt·(g − m) for wt < 0.5)
//   v ← β2·v + (1 − β2)·g·g
//   denom ← √v / bc2_sqrt + ε
//   w ← w − step_size·(m / denom)
// step_size = lr/(1 − β1ᵗ) and bc2_sqrt = √(1 − β2ᵗ) come from `sched` (pairs computed on the
// host in f64 by `AdamParams::schedule`, pair t − 1 for update t). `step` holds the number of
// updates already done (t − 1); the engine advances it once per training step, after every
// parameter's update, so this kernel only reads it. Past the end of `sched` the last pair is
// used (the bias corrections converge to [lr, 1]).

struct Params {
    n: u32,
    // Pairs in `sched`.
    steps: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    l2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> sched: array<f32>;
@group(0) @binding(6) var<storage, read> step: array<u32>;

const WG: u32 = 256u;

fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if (abs(weight) < 0.5) {
        return start + weight * diff;
    }
    return end - diff * (1.0 - weight);
}

@compute @workgroup_size(WG)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    let t = min(step[0], p.steps - 1u);
    let step_size = sched[2u * t];
    let bc2_sqrt = sched[2u * t + 1u];
    let wi = w[i];
    let gi = g[i] + p.l2 * wi;
    let mi = lerp(m[i], gi, 1.0 - p.beta1);
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / bc2_sqrt + p.eps;
    w[i] = wi - step_size * (mi / denom);
}
