// Accuracy / loss accumulation, so metrics stay on the GPU until an epoch ends.
//
// accumulate_metrics: scores[B,C], labels[B], loss[B] -> acc += (Σ loss, #correct, #rows)
//   Rows whose label is ≥ C are padding and are not counted. One workgroup does the whole
//   batch and is the only writer of `acc`, so no atomics are needed; dispatches run in order.

struct Params {
    rows: u32,
    classes: u32,
}

struct Acc {
    loss_sum: f32,
    correct: u32,
    seen: u32,
    // Number of batches whose loss sum was NaN or ±Inf (divergence check).
    nonfinite: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;

@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> acc: Acc;

const WG: u32 = 256u;

// The first maximum of a row wins, like numpy.
fn row_argmax(row: u32) -> u32 {
    let base = row * p.classes;
    var best = 0u;
    var best_v = scores[base];
    for (var c = 1u; c < p.classes; c++) {
        let v = scores[base + c];
        if (v > best_v) {
            best_v = v;
            best = c;
        }
    }
    return best;
}

var<workgroup> red_loss: array<f32, WG>;
var<workgroup> red_correct: array<u32, WG>;
var<workgroup> red_seen: array<u32, WG>;

@compute @workgroup_size(WG)
fn accumulate_metrics(@builtin(local_invocation_index) li: u32) {
    var l = 0.0;
    var ok = 0u;
    var seen = 0u;
    for (var row = li; row < p.rows; row += WG) {
        let y = labels[row];
        if (y < p.classes) {
            l += loss[row];
            seen += 1u;
            ok += select(0u, 1u, row_argmax(row) == y);
        }
    }
    red_loss[li] = l;
    red_correct[li] = ok;
    red_seen[li] = seen;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red_loss[li] += red_loss[li + stride];
            red_correct[li] += red_correct[li + stride];
            red_seen[li] += red_seen[li + stride];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let s = red_loss[0];
        // NaN != NaN; an infinite sum is caught by the magnitude test.
        if (s != s || abs(s) > 3.0e38) {
            acc.nonfinite += 1u;
        }
        acc.loss_sum += s;
        acc.correct += red_correct[0];
        acc.seen += red_seen[0];
    }
}
