// SGD with momentum and L2 regularisation, PyTorch semantics (torch.optim.SGD, dampening 0):
//   g ← g + λ·w;  v ← μ·v + g;  w ← w − α·v
// λ is passed as 0 for biases. With v starting at 0 the first step gives v = g, as in PyTorch.

struct Params {
    n: u32,
    lr: f32,
    momentum: f32,
    l2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n) {
        return;
    }
    let wi = w[idx];
    let gi = g[idx] + p.l2 * wi;
    let vi = p.momentum * v[idx] + gi;
    v[idx] = vi;
    w[idx] = wi - p.lr * vi;
}
