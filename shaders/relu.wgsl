// ReLU and its gradient, element-wise over any shape.
//
// relu_forward:  Y[B,O]  = max(X[B,O], 0)
// relu_backward: dX[B,O] = dY[B,O] · 1[Y > 0]   (uses the output: Y > 0 exactly where X > 0)

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@group(0) @binding(3) var<storage, read> y_in: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n) {
        return;
    }
    y[idx] = max(x[idx], 0.0);
}

@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n) {
        return;
    }
    dx[idx] = select(0.0, dy[idx], y_in[idx] > 0.0);
}
