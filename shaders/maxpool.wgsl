// K×K max-pooling with stride K over channels-last x[B,H,W,C] (see `Pool2dSpec` in src/ops.rs).
//
// maxpool_forward: x[B,H,W,C] -> y[B,OH,OW,C], idx[B,OH,OW,C] (u32 flat index into x of the
//   maximum), OH = H/K and OW = W/K (floor). The window is scanned in row-major (ky, kx) order
//   and a value replaces the best so far only if it is larger, or it is NaN and the best is
//   not: the first maximum wins ties and NaN propagates.
// maxpool_backward: dy[B,OH,OW,C], idx -> dx[B,H,W,C]. Windows do not overlap, so each input
//   element looks at its own window only: dx = dy there if that window's idx is this element,
//   else 0 (also 0 in the rows/columns past OH·K, OW·K). With apply_mask, dx = 0 wherever
//   mask[B,H,W,C] is not > 0 (the ReLU below).

struct ForwardParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    oh: u32,
    ow: u32,
}

struct BackwardParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    oh: u32,
    ow: u32,
    apply_mask: u32,
}

@group(0) @binding(0) var<uniform> pf: ForwardParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx_out: array<u32>;

@group(0) @binding(4) var<uniform> pb: BackwardParams;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> idx_in: array<u32>;
@group(0) @binding(7) var<storage, read> mask: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

// NaN test on the bits: compilers may assume `v != v` is false.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// One invocation per output element.
@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= pf.batch * pf.oh * pf.ow * pf.c) {
        return;
    }
    let c = o % pf.c;
    let ox = (o / pf.c) % pf.ow;
    let oy = (o / (pf.c * pf.ow)) % pf.oh;
    let b = o / (pf.c * pf.ow * pf.oh);
    let first = ((b * pf.h + oy * pf.k) * pf.w + ox * pf.k) * pf.c + c;
    var best_i = first;
    var best = x[first];
    for (var ky = 0u; ky < pf.k; ky++) {
        for (var kx = 0u; kx < pf.k; kx++) {
            let i = first + (ky * pf.w + kx) * pf.c;
            let v = x[i];
            if (!is_nan(best) && (is_nan(v) || v > best)) {
                best = v;
                best_i = i;
            }
        }
    }
    y[o] = best;
    idx_out[o] = best_i;
}

// One invocation per window: it writes the whole K×K block of dx under its window (dy at the
// window's maximum, 0 elsewhere); the last window of a row or column also zeroes the input
// rows/columns past OH·K / OW·K that no window covers. Decomposing the index once per window,
// not once per input element, saves the integer divisions CPU adapters run lane by lane.
@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= pb.batch * pb.oh * pb.ow * pb.c) {
        return;
    }
    let c = o % pb.c;
    let ox = (o / pb.c) % pb.ow;
    let oy = (o / (pb.c * pb.ow)) % pb.oh;
    let b = o / (pb.c * pb.ow * pb.oh);
    let y_end = select(oy * pb.k + pb.k, pb.h, oy + 1u == pb.oh);
    let x_end = select(ox * pb.k + pb.k, pb.w, ox + 1u == pb.ow);
    let at = idx_in[o];
    let g = dy[o];
    for (var yy = oy * pb.k; yy < y_end; yy++) {
        for (var xx = ox * pb.k; xx < x_end; xx++) {
            let i = ((b * pb.h + yy) * pb.w + xx) * pb.c + c;
            var d = 0.0;
            if (i == at) {
                d = g;
            }
            if (pb.apply_mask != 0u && !(mask[i] > 0.0)) {
                d = 0.0;
            }
            dx[i] = d;
        }
    }
}
