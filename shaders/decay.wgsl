// Decoupled weight decay, AdamW's first half (torch.optim.AdamW: param.mul_(1 − lr·wd)):
//   w ← w·f,  f = factors[min(step, steps − 1)]
// The factors 1 − lr_t·λ of updates t = 1, 2, … are computed on the host in f64 and rounded
// once (PyTorch computes the scalar in a Python float); `step` holds the number of updates
// already done, advanced by the engine once per training step after every update.

struct Params {
    n: u32,
    steps: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> factors: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn decay_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) {
        return;
    }
    w[i] = w[i] * factors[min(step[0], p.steps - 1u)];
}
