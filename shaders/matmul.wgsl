// Tiled matmul with a fused epilogue: C[M,N] = op(A)[M,K] · op(B)[K,N] (+ bias, ReLU, ReLU mask).
//
// Every product of a dense layer's forward and backward pass is one instance, so no host-side
// transposes are needed (weights W are [O, I], PyTorch layout):
//   forward      Y[B,O]  = X[B,I] · Wᵀ           TRANS_B, epilogue bias (+ ReLU)
//   input grad   dX[B,I] = dY[B,O] · W[O,I]       plain,   epilogue ReLU mask of the previous layer
//   weight grad  dW[O,I] = dYᵀ[O,B] · X[B,I]      TRANS_A
//
// The host prepends the tile constants (WG_X, WG_Y, TM, TN, BK) and the flags (TRANS_A, TRANS_B,
// EPILOGUE), so each variant is its own pipeline with all loops of constant trip count.
// A workgroup computes a BM×BN block (BM = WG_Y·TM, BN = WG_X·TN); each invocation keeps a TM×TN
// register block. Rows/columns of an invocation are interleaved (stride WG_Y / WG_X) so that
// neighbouring invocations touch neighbouring addresses in workgroup memory and in C.

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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
// bias [N] for EPI_BIAS*, activations [M,N] for EPI_RELU_MASK, unused otherwise
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

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
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<f32, TM * TN>;
    for (var t = 0u; t < TM * TN; t++) {
        acc[t] = 0.0;
    }

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
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
            let idx = i * p.n + j;
            var v = acc[r * TN + s];
            if (EPILOGUE == EPI_BIAS || EPILOGUE == EPI_BIAS_RELU) {
                v += aux[j];
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
    }
}
