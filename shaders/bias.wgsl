// The bias gradient (the bias add is the matmul epilogue).
//
// bias_backward: db[O]  = Σ_B dY[B,O]   (column sums)

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbias: array<f32>;

// Short columns (B ≤ 4096, e.g. minibatches): one invocation per column, adjacent invocations
// reading adjacent addresses of each row.
@compute @workgroup_size(WG)
fn bias_backward_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let col = gid.x + gid.y * nwg.x * WG;
    if (col >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += dy[r * p.cols + col];
    }
    dbias[col] = s;
}

var<workgroup> partial: array<f32, WG>;

// Long columns: one workgroup per column: each invocation sums a strided slice of the rows, then a tree
// reduction in workgroup memory. Besides being parallel in B, this keeps every loop short
// (lavapipe was seen to return wrong sums from a single invocation looping over > 65536 rows)
// and the rounding error at γ_(B/WG + log2 WG) instead of γ_B.
@compute @workgroup_size(WG)
fn bias_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let col = wg.x + wg.y * nwg.x;
    // `col` is uniform across the workgroup, so every invocation reaches the barriers.
    var s = 0.0;
    if (col < p.cols) {
        for (var r = li; r < p.rows; r += WG) {
            s += dy[r * p.cols + col];
        }
    }
    partial[li] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    if (li == 0u && col < p.cols) {
        dbias[col] = partial[0];
    }
}
