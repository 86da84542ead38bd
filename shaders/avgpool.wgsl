// KH×KW average pooling with stride (KH, KW) over channels-last x[B,H,W,C] (see
// `AvgPool2dSpec` in src/ops.rs); with KH = H and KW = W it is global average pooling.
//
// avgpool_forward: x[B,H,W,C] -> y[B,OH,OW,C], OH = H/KH and OW = W/KW (floor): each window's
//   sum in row-major (ky, kx) order from zero, divided by KH·KW.
// avgpool_backward: dy[B,OH,OW,C] -> dx[B,H,W,C]: dy of the element's window divided by KH·KW,
//   0 in the rows/columns past OH·KH, OW·KW. With apply_mask, dx = 0 wherever mask[B,H,W,C] is
//   not > 0 (the ReLU below).

struct Params {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    apply_mask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

// One invocation per output element.
@compute @workgroup_size(WG)
fn avgpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= p.batch * p.oh * p.ow * p.c) {
        return;
    }
    let c = o % p.c;
    let ox = (o / p.c) % p.ow;
    let oy = (o / (p.c * p.ow)) % p.oh;
    let b = o / (p.c * p.ow * p.oh);
    let first = ((b * p.h + oy * p.kh) * p.w + ox * p.kw) * p.c + c;
    var sum = 0.0;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            sum += x[first + (ky * p.w + kx) * p.c];
        }
    }
    y[o] = sum / f32(p.kh * p.kw);
}

// One invocation per window: it writes the whole KH×KW block of dx under its window; the last
// window of a row or column also zeroes the input rows/columns past OH·KH / OW·KW.
@compute @workgroup_size(WG)
fn avgpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= p.batch * p.oh * p.ow * p.c) {
        return;
    }
    let c = o % p.c;
    let ox = (o / p.c) % p.ow;
    let oy = (o / (p.c * p.ow)) % p.oh;
    let b = o / (p.c * p.ow * p.oh);
    let y_end = select(oy * p.kh + p.kh, p.h, oy + 1u == p.oh);
    let x_end = select(ox * p.kw + p.kw, p.w, ox + 1u == p.ow);
    let g = dy[o] / f32(p.kh * p.kw);
    for (var yy = oy * p.kh; yy < y_end; yy++) {
        for (var xx = ox * p.kw; xx < x_end; xx++) {
            let i = ((b * p.h + yy) * p.w + xx) * p.c + c;
            var d = 0.0;
            if (yy < (oy + 1u) * p.kh && xx < (ox + 1u) * p.kw) {
                d = g;
            }
            if (p.apply_mask != 0u && !(mask[i] > 0.0)) {
                d = 0.0;
            }
            dx[i] = d;
        }
    }
}
