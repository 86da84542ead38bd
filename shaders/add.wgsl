// The join of a residual block and its gradient (see `Op::AddForward`/`Op::AddBackward` in
// src/ops.rs). Element-wise; one invocation per element. Both are exact in f32: a single
// correctly rounded addition (forward, and backward when accumulating) or a copy.
//
// add_forward:  y = a + b, then max(0, ·) when relu.
// add_backward: dx = dy where mask > 0 (everywhere without apply_mask), else 0; with
//               accumulate, dx += that instead (an activation read by two layers sums the
//               gradients both pass down).

struct Params {
    n: u32,
    relu: u32,
    apply_mask: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn add_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    var v = a[i] + b[i];
    if (p.relu != 0u) {
        v = max(v, 0.0);
    }
    y[i] = v;
}

@compute @workgroup_size(WG)
fn add_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    var d = 0.0;
    if (p.apply_mask == 0u || mask[i] > 0.0) {
        d = dy[i];
    }
    if (p.accumulate != 0u) {
        d = dx[i] + d;
    }
    dx[i] = d;
}
