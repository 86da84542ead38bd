// SGD with momentum and L2 regularisation, PyTorch semantics (torch.optim.SGD, dampening 0):
//   g ← g + λ·w;  v ← μ·v + g;  d ← v (or g + μ·v with nesterov=True);  w ← w − α·d
// λ is passed as 0 for parameters outside the decay's scope (biases by default). With v
// starting at 0 the first step gives v = g, as in PyTorch.
//
// sgd_update uses the fixed α of Params; sgd_update_sched reads α of update t from `sched`
// (learning rates computed on the host, entry t − 1 for update t; `step` holds the number of
// updates already done, advanced by the engine once per training step; past the end of
// `sched` the last entry serves).

struct Params {
    n: u32,
    lr: f32,
    momentum: f32,
    l2: f32,
    nesterov: u32,
    // Entries in `sched` (sgd_update_sched only).
    steps: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> sched: array<f32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;

const WG: u32 = 256u;

fn update(idx: u32, lr: f32) {
    let wi = w[idx];
    let gi = g[idx] + p.l2 * wi;
    let vi = p.momentum * v[idx] + gi;
    v[idx] = vi;
    if (p.nesterov != 0u) {
        w[idx] = wi - lr * (gi + p.momentum * vi);
    } else {
        w[idx] = wi - lr * vi;
    }
}

@compute @workgroup_size(WG)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n) {
        return;
    }
    update(idx, p.lr);
}

@compute @workgroup_size(WG)
fn sgd_update_sched(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n) {
        return;
    }
    update(idx, sched[min(step[0], p.steps - 1u)]);
}
