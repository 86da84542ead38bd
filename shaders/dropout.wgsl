// Inverted dropout over x[B,F] (see `DropoutSpec` in src/ops.rs). The mask is not stored:
// element i of this engine's x is global element (row0 + i / F)·F + i % F of the minibatch, and
// it is kept when the top 24 bits of a counter-based hash of (seed, step, layer, element) are
// ≥ threshold = round(p·2^24). The hash is `mix32`/`dropout_keep` in src/ops.rs, the same u32
// operations (multiplication wraps in both), so every backend draws the same mask.
//
// dropout_forward: y = x·scale where kept, else 0 (scale = 1/(1−p) rounded once to f32).
// dropout_backward: dx = dy·scale where kept, else 0; with apply_mask, dx = 0 wherever
//   mask[B,F] is not > 0 (the ReLU below).

struct Params {
    n: u32,
    cols: u32,
    row0: u32,
    seed: u32,
    layer: u32,
    threshold: u32,
    scale: f32,
    apply_mask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn keep(i: u32) -> bool {
    let global = (p.row0 + i / p.cols) * p.cols + i % p.cols;
    let key = mix32(mix32(mix32(p.seed) ^ step[0]) ^ p.layer);
    return (mix32(mix32(key ^ global)) >> 8u) >= p.threshold;
}

// One invocation per element.
@compute @workgroup_size(WG)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    var v = 0.0;
    if (keep(i)) {
        v = x[i] * p.scale;
    }
    y[i] = v;
}

@compute @workgroup_size(WG)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    var d = 0.0;
    if (keep(i) && (p.apply_mask == 0u || mask[i] > 0.0)) {
        d = dy[i] * p.scale;
    }
    dx[i] = d;
}
