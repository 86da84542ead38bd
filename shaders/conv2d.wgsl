// im2col and its adjoint col2im, for a convolution run as im2col + matmul over channels-last
// activations x[B,H,W,C] (see `Conv2dSpec` in src/ops.rs).
//
// im2col: x[B,H,W,C] -> cols[B·OH·OW, C·K·K]
//   row r = (b·OH + oy)·OW + ox, column j = c·K·K + ky·K + kx holds
//   x[b, oy·s + ky − pad, ox·s + kx − pad, c], or 0 in the zero padding.
// col2im: dcols[B·OH·OW, C·K·K] -> dx[B,H,W,C]
//   dx = the sum of every dcols entry that im2col copied from that element, gathered (no
//   atomics): for each (ky, kx), oy = (y + pad − ky)/s when that divides and is in range, the
//   same for ox. Summed in ascending (ky, kx) order, at most ⌈K/s⌉² terms. With apply_mask,
//   dx = 0 wherever mask[B,H,W,C] is not > 0 (the ReLU below).

struct Im2colParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
}

struct Col2imParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    apply_mask: u32,
}

@group(0) @binding(0) var<uniform> pi: Im2colParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;

@group(0) @binding(3) var<uniform> pc: Col2imParams;
@group(0) @binding(4) var<storage, read> dcols: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

// One invocation per (row of cols, input channel): it writes that channel's K·K consecutive
// columns. Decomposing the index costs integer divisions, which CPU adapters (lavapipe) run
// lane by lane; doing it once per K·K outputs instead of once per output made this kernel 3x
// faster there: 49.6 → 15.8 ms per lenet5 step (see BENCHMARKS.md).
@compute @workgroup_size(WG)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    if (t >= pi.batch * pi.oh * pi.ow * pi.c) {
        return;
    }
    let c = t % pi.c;
    let r = t / pi.c;
    let ox = r % pi.ow;
    let q = r / pi.ow;
    let oy = q % pi.oh;
    let b = q / pi.oh;
    let kk = pi.k * pi.k;
    var o = r * pi.c * kk + c * kk;
    for (var ky = 0u; ky < pi.k; ky += 1u) {
        // Unsigned: a position in the top/left padding wraps around to a huge value and fails
        // the bounds test like one in the bottom/right padding.
        let iy = oy * pi.stride + ky - pi.pad;
        let row = (b * pi.h + iy) * pi.w;
        for (var kx = 0u; kx < pi.k; kx += 1u) {
            let ix = ox * pi.stride + kx - pi.pad;
            var v = 0.0;
            if (iy < pi.h && ix < pi.w) {
                v = x[(row + ix) * pi.c + c];
            }
            cols[o] = v;
            o += 1u;
        }
    }
}

// One invocation per element of dx.
@compute @workgroup_size(WG)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= pc.batch * pc.h * pc.w * pc.c) {
        return;
    }
    let c = idx % pc.c;
    let xx = (idx / pc.c) % pc.w;
    let y = (idx / (pc.c * pc.w)) % pc.h;
    let b = idx / (pc.c * pc.w * pc.h);
    let kk = pc.k * pc.k;
    let ncols = pc.c * kk;
    // Padded coordinates: output oy reads padded row oy·s + ky, so ky ≡ y + pad (mod s).
    let py = y + pc.pad;
    let px = xx + pc.pad;
    var s = 0.0;
    // oy steps down by one as ky steps up by s: one division per axis, not one per term.
    let ky0 = py % pc.stride;
    let kx0 = px % pc.stride;
    var oy = (py - ky0) / pc.stride;
    for (var ky = ky0; ky < pc.k && ky <= py; ky += pc.stride) {
        if (oy < pc.oh) {
            var ox = (px - kx0) / pc.stride;
            for (var kx = kx0; kx < pc.k && kx <= px; kx += pc.stride) {
                if (ox < pc.ow) {
                    let r = (b * pc.oh + oy) * pc.ow + ox;
                    s += dcols[r * ncols + c * kk + ky * pc.k + kx];
                }
                ox -= 1u;
            }
        }
        oy -= 1u;
    }
    if (pc.apply_mask != 0u && !(mask[idx] > 0.0)) {
        s = 0.0;
    }
    dx[idx] = s;
}
