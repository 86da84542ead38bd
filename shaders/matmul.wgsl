// Matmul with a fused epilogue: C[M,N] = op(A)[M,K] · op(B)[K,N] (+ bias, ReLU, ReLU mask).
//
// Every product of a dense layer's forward and backward pass is one instance, so no host-side
// transposes are needed (weights W are [O, I], PyTorch layout):
//   forward      Y[B,O]  = X[B,I] · Wᵀ           TRANS_B, epilogue bias (+ ReLU)
//   input grad   dX[B,I] = dY[B,O] · W[O,I]       plain,   epilogue ReLU mask of the previous layer
//   weight grad  dW[O,I] = dYᵀ[O,B] · X[B,I]      TRANS_A
//
// The host (`matmul_source` in src/gpu/kernels.rs) prepends every constant, so each variant is its
// own pipeline with loops of constant trip count and dead branches removed:
//   WG_X, WG_Y, TM, TN, BK   the tile (see each entry point)
//   TRANS_A, TRANS_B         storage of the left/right operand (below)
//   EPILOGUE                 EPI_* below
//   SWAP                     the kernel computes Cᵀ = op(B)ᵀ·op(A)ᵀ (see below)
//   VL, VR                   the left/right operand may be read as vec4 (alignment holds)
//   SUBGROUP                 matmul_direct shares right-operand loads across 8 subgroup lanes
// plus the functions sg_lane0 .. sg_lane7 (subgroupBroadcast from lane i, or a stub that is
// never called when SUBGROUP is false, so the module needs the subgroup capability only then).
//
// In kernel terms the product is always C'[m,n] = L[m,k] · R[k,n] with p.m, p.n, p.k its sizes:
//   L is stored [m,k] (TRANS_A false) or [k,m] (TRANS_A true), bound at binding 1 (and 5),
//   R is stored [k,n] (TRANS_B false) or [n,k] (TRANS_B true), bound at binding 2 (and 6).
// Without SWAP, L = A, R = B, C' = C. With SWAP the host binds B as L and A as R, swaps M and N
// and maps the flags (TRANS_A' = !TRANS_B, TRANS_B' = !TRANS_A), and C'[m,n] is stored at C[n,m];
// that lets the tile's long side run along either dimension of C.
//
// Two algorithms:
//   matmul         workgroup-memory tiles: a WG_X×WG_Y workgroup computes a BM×BN block
//                  (BM = WG_Y·TM, BN = WG_X·TN), each invocation a TM×TN register block, K
//                  stepped BK at a time through workgroup memory. Suits GPUs.
//   matmul_direct  no workgroup memory and no barriers: each invocation accumulates TM×TN
//                  (TM ∈ {4, 8}, TN ∈ {4, 8, 16}) in 4×4 register blocks (mat4x4) straight from
//                  global memory, K four at a time, with vec4 loads where VL/VR allow. The code
//                  is written out per 4×4 block (no register arrays indexed in loops), because
//                  CPU drivers such as llvmpipe run invocations as SIMD lanes and turn such
//                  arrays into per-lane gathers. With SUBGROUP, the 8 lanes of a subgroup own
//                  different rows and the same columns: each lane loads 1/8 of the right
//                  operand's 4×TN chunk and subgroupBroadcast hands it to the others, which cuts
//                  the loads (one scalar loop per lane on llvmpipe) by 8 on that side.
//
// Bounds: every global read is guarded in WGSL: rows/columns past the edge read a clamped (valid)
// element and are never stored; k past K reads 0 on both operands.

const BM: u32 = WG_Y * TM;
const BN: u32 = WG_X * TN;
const THREADS: u32 = WG_X * WG_Y;

// EPILOGUE values
const EPI_NONE: u32 = 0u;
const EPI_BIAS: u32 = 1u;
const EPI_BIAS_RELU: u32 = 2u;
const EPI_RELU_MASK: u32 = 3u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // 1: C += result instead of C = result
    accumulate: u32,
}

// The sizes come in a read-only storage buffer, copied once into `p` by each entry point. (Not a
// uniform buffer: lavapipe "inlines" uniform values that steer loops into a shader variant it
// recompiles whenever they change, which made identical launches 2-3x slower depending on which
// shape a pipeline first ran with.)
@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
// bias [N] for EPI_BIAS*, activations [M,N] for EPI_RELU_MASK, unused otherwise
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// The same buffers as bindings 1 and 2 viewed as vec4 (matmul_direct only; a 16-byte dummy is
// bound when VL / VR is false, and those branches are dead).
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

// Epilogue and store of C'[i, j] (i < p.m, j < p.n).
fn store(i: u32, j: u32, acc: f32) {
    var row = i;
    var col = j;
    var cols = p.n;
    if (SWAP) {
        row = j;
        col = i;
        cols = p.m;
    }
    let idx = row * cols + col;
    var v = acc;
    if (EPILOGUE == EPI_BIAS || EPILOGUE == EPI_BIAS_RELU) {
        v += aux[col];
    }
    if (EPILOGUE == EPI_BIAS_RELU) {
        v = max(v, 0.0);
    }
    if (EPILOGUE == EPI_RELU_MASK) {
        v = select(0.0, v, aux[idx] > 0.0);
    }
    if (p.accumulate != 0u) {
        v += c[idx];
    }
    c[idx] = v;
}

// ---------------------------------------------------------------------------------------------
// matmul: workgroup-memory tiles

// k-major tiles: a_tile[kk * BM + i], b_tile[kk * BN + j]
var<workgroup> a_tile: array<f32, BK * BM>;
var<workgroup> b_tile: array<f32, BK * BN>;

fn load_a(i: u32, kk: u32) -> f32 {
    if (i >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[kk * p.m + i];
    }
    return a[i * p.k + kk];
}

fn load_b(kk: u32, j: u32) -> f32 {
    if (kk >= p.k || j >= p.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[j * p.k + kk];
    }
    return b[kk * p.n + j];
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    p = params;
    // Rows/columns of an invocation are interleaved (stride WG_Y / WG_X) so that neighbouring
    // invocations touch neighbouring addresses in workgroup memory and in C.
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<f32, TM * TN>;
    for (var t = 0u; t < TM * TN; t++) {
        acc[t] = 0.0;
    }

    // `params.k`, not the private copy: the loop holds barriers, so its condition must be
    // uniform in WGSL's uniformity analysis (storage reads are; private variables are not).
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // Cooperative loads; the element order follows the memory layout so that consecutive
        // invocations read consecutive addresses.
        for (var e = li; e < BM * BK; e += THREADS) {
            var i: u32;
            var kk: u32;
            if (TRANS_A) {
                i = e % BM;
                kk = e / BM;
            } else {
                kk = e % BK;
                i = e / BK;
            }
            a_tile[kk * BM + i] = load_a(row0 + i, k0 + kk);
        }
        for (var e = li; e < BN * BK; e += THREADS) {
            var j: u32;
            var kk: u32;
            if (TRANS_B) {
                kk = e % BK;
                j = e / BK;
            } else {
                j = e % BN;
                kk = e / BN;
            }
            b_tile[kk * BN + j] = load_b(k0 + kk, col0 + j);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TN>;
            for (var r = 0u; r < TM; r++) {
                av[r] = a_tile[kk * BM + lid.y + r * WG_Y];
            }
            for (var s = 0u; s < TN; s++) {
                bv[s] = b_tile[kk * BN + lid.x + s * WG_X];
            }
            for (var r = 0u; r < TM; r++) {
                for (var s = 0u; s < TN; s++) {
                    acc[r * TN + s] = fma(av[r], bv[s], acc[r * TN + s]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < TM; r++) {
        let i = row0 + lid.y + r * WG_Y;
        if (i >= p.m) {
            continue;
        }
        for (var s = 0u; s < TN; s++) {
            let j = col0 + lid.x + s * WG_X;
            if (j >= p.n) {
                continue;
            }
            store(i, j, acc[r * TN + s]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// matmul_direct: register blocks straight from global memory

// L(i, k) with i clamped into range and 0 for k ≥ K (branch-free, so SIMD lanes stay together).
fn ld_l(i: u32, k: u32) -> f32 {
    let ii = min(i, p.m - 1u);
    let kk = min(k, p.k - 1u);
    var v: f32;
    if (TRANS_A) {
        v = a[kk * p.m + ii];
    } else {
        v = a[ii * p.k + kk];
    }
    return select(0.0, v, k < p.k);
}

// R(k, j), likewise.
fn ld_r(k: u32, j: u32) -> f32 {
    let jj = min(j, p.n - 1u);
    let kk = min(k, p.k - 1u);
    var v: f32;
    if (TRANS_B) {
        v = b[jj * p.k + kk];
    } else {
        v = b[kk * p.n + jj];
    }
    return select(0.0, v, k < p.k);
}

// One 4-vector of L along its contiguous dimension:
//   TRANS_A false: L(i, k0 .. k0+3)   (u picks row i + u)
//   TRANS_A true:  L(i .. i+3, k0 + u)
// i and k0 are multiples of 4.
fn piece_l(i: u32, k0: u32, u: u32) -> vec4<f32> {
    if (TRANS_A) {
        let k = k0 + u;
        if (VL) {
            // p.m % 4 == 0: the group i..i+3 is all in range or all out (then clamped).
            let kk = min(k, p.k - 1u);
            let v = a4[(kk * p.m + min(i, p.m - 4u)) / 4u];
            return select(vec4<f32>(0.0), v, k < p.k);
        }
        return vec4<f32>(ld_l(i, k), ld_l(i + 1u, k), ld_l(i + 2u, k), ld_l(i + 3u, k));
    }
    let r = i + u;
    if (VL) {
        // p.k % 4 == 0: k0 .. k0+3 are all in range.
        return a4[(min(r, p.m - 1u) * p.k + k0) / 4u];
    }
    return vec4<f32>(ld_l(r, k0), ld_l(r, k0 + 1u), ld_l(r, k0 + 2u), ld_l(r, k0 + 3u));
}

// One 4-vector of R along its contiguous dimension:
//   TRANS_B false: R(k0 + u, j .. j+3)
//   TRANS_B true:  R(k0 .. k0+3, j + u)
fn piece_r(k0: u32, j: u32, u: u32) -> vec4<f32> {
    if (TRANS_B) {
        let col = j + u;
        if (VR) {
            return b4[(min(col, p.n - 1u) * p.k + k0) / 4u];
        }
        return vec4<f32>(ld_r(k0, col), ld_r(k0 + 1u, col), ld_r(k0 + 2u, col), ld_r(k0 + 3u, col));
    }
    let k = k0 + u;
    if (VR) {
        let kk = min(k, p.k - 1u);
        let v = b4[(kk * p.n + min(j, p.n - 4u)) / 4u];
        return select(vec4<f32>(0.0), v, k < p.k);
    }
    return vec4<f32>(ld_r(k, j), ld_r(k, j + 1u), ld_r(k, j + 2u), ld_r(k, j + 3u));
}

// 4×4 blocks as mat4x4, column index first:
//   L block  lb[r] = L(i + r, k0 .. k0+3)
//   R block  rb[q] = R(k0 + q, j .. j+3)
//   C block  cb[r] = C'(i + r, j .. j+3),  so  cb += rb * lb.
fn block_l(u0: vec4<f32>, u1: vec4<f32>, u2: vec4<f32>, u3: vec4<f32>) -> mat4x4<f32> {
    let m = mat4x4<f32>(u0, u1, u2, u3);
    if (TRANS_A) {
        return transpose(m);
    }
    return m;
}

fn block_r(u0: vec4<f32>, u1: vec4<f32>, u2: vec4<f32>, u3: vec4<f32>) -> mat4x4<f32> {
    let m = mat4x4<f32>(u0, u1, u2, u3);
    if (TRANS_B) {
        return transpose(m);
    }
    return m;
}

fn frag_l(i: u32, k0: u32) -> mat4x4<f32> {
    return block_l(piece_l(i, k0, 0u), piece_l(i, k0, 1u), piece_l(i, k0, 2u), piece_l(i, k0, 3u));
}

fn frag_r(k0: u32, j: u32) -> mat4x4<f32> {
    return block_r(piece_r(k0, j, 0u), piece_r(k0, j, 1u), piece_r(k0, j, 2u), piece_r(k0, j, 3u));
}

fn store_block(cb: mat4x4<f32>, i: u32, j: u32) {
    for (var r = 0u; r < 4u; r++) {
        if (i + r >= p.m) {
            break;
        }
        let row = cb[r];
        for (var s = 0u; s < 4u; s++) {
            if (j + s < p.n) {
                store(i + r, j + s, row[s]);
            }
        }
    }
}

// Lanes along x own rows (TM each, contiguous); y picks the column block (TN columns). With
// SUBGROUP, WG_X is 8 and one workgroup row of 8 invocations shares its columns. The
// accumulators are eight named 4×4 blocks, c<r><t> covering rows 4r.. and columns 4t.. of the
// invocation's TM×TN; constant conditions drop the blocks a tile does not use.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_direct(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    p = params;
    let row0 = (wg.y * WG_X + lid.x) * TM;
    let col0 = (wg.x * WG_Y + lid.y) * TN;
    // With SUBGROUP, piece π = 4t + u of the right operand's 4×TN chunk (t: 4-column block,
    // u: piece within it) is loaded by lane π % 8 in load π / 8 and broadcast to the others.
    let lane = lid.x;
    let pi0 = lane % TN;
    let pi1 = (lane + 8u) % TN;

    var c00 = mat4x4<f32>();
    var c01 = mat4x4<f32>();
    var c02 = mat4x4<f32>();
    var c03 = mat4x4<f32>();
    var c10 = mat4x4<f32>();
    var c11 = mat4x4<f32>();
    var c12 = mat4x4<f32>();
    var c13 = mat4x4<f32>();

    // `params.k` keeps the loop uniform (see `matmul`): subgroupBroadcast needs that too.
    for (var k0 = 0u; k0 < params.k; k0 += 4u) {
        var r0: mat4x4<f32>;
        var r1: mat4x4<f32>;
        var r2: mat4x4<f32>;
        var r3: mat4x4<f32>;
        if (SUBGROUP) {
            let q0 = piece_r(k0, col0 + 4u * (pi0 / 4u), pi0 % 4u);
            r0 = block_r(sg_lane0(q0), sg_lane1(q0), sg_lane2(q0), sg_lane3(q0));
            if (TN > 4u) {
                r1 = block_r(sg_lane4(q0), sg_lane5(q0), sg_lane6(q0), sg_lane7(q0));
            }
            if (TN > 8u) {
                let q1 = piece_r(k0, col0 + 4u * (pi1 / 4u), pi1 % 4u);
                r2 = block_r(sg_lane0(q1), sg_lane1(q1), sg_lane2(q1), sg_lane3(q1));
                r3 = block_r(sg_lane4(q1), sg_lane5(q1), sg_lane6(q1), sg_lane7(q1));
            }
        } else {
            r0 = frag_r(k0, col0);
            if (TN > 4u) {
                r1 = frag_r(k0, col0 + 4u);
            }
            if (TN > 8u) {
                r2 = frag_r(k0, col0 + 8u);
                r3 = frag_r(k0, col0 + 12u);
            }
        }
        let l0 = frag_l(row0, k0);
        c00 += r0 * l0;
        if (TN > 4u) {
            c01 += r1 * l0;
        }
        if (TN > 8u) {
            c02 += r2 * l0;
            c03 += r3 * l0;
        }
        if (TM > 4u) {
            let l1 = frag_l(row0 + 4u, k0);
            c10 += r0 * l1;
            if (TN > 4u) {
                c11 += r1 * l1;
            }
            if (TN > 8u) {
                c12 += r2 * l1;
                c13 += r3 * l1;
            }
        }
    }

    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    store_block(c00, row0, col0);
    if (TN > 4u) {
        store_block(c01, row0, col0 + 4u);
    }
    if (TN > 8u) {
        store_block(c02, row0, col0 + 8u);
        store_block(c03, row0, col0 + 12u);
    }
    if (TM > 4u) {
        store_block(c10, row0 + 4u, col0);
        if (TN > 4u) {
            store_block(c11, row0 + 4u, col0 + 4u);
        }
        if (TN > 8u) {
            store_block(c12, row0 + 4u, col0 + 8u);
            store_block(c13, row0 + 4u, col0 + 12u);
        }
    }
}
