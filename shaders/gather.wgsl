// Minibatch gather from the dataset resident on the GPU, and the cursor that walks it.
//
// gather: images (u8, 4 per u32, scaled to [0,1]; or f32 bits, used as they are), labels_all[N],
//   order[N], cursor -> x[B,P], y[B]
//   Row b takes sample order[cursor + b]. Rows at or past `samples` (the order entries in use:
//   the whole dataset, or a data-parallel rank's share of it) get zeros and the padding label
//   0xffffffff, which the loss and metrics kernels ignore. Each launch covers
//   one shard of the images and writes only the rows whose sample that shard holds.
// advance: cursor += B, so consecutive steps need no upload from the host.

struct Params {
    rows: u32,
    pixels: u32,
    // Order entries in use (≤ the dataset's samples).
    samples: u32,
    // Samples shard_start .. shard_start + shard_count live in this `images` buffer; datasets
    // larger than one binding are split, one launch per shard.
    shard_start: u32,
    shard_count: u32,
    // 1: the images buffer holds f32 values (bit patterns), 0: bytes packed four to a word.
    f32_features: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels_all: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<storage, read> cursor: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<u32>;

@group(0) @binding(7) var<storage, read_write> cursor_rw: array<u32>;

const WG: u32 = 256u;
const PADDING: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.rows * p.pixels) {
        return;
    }
    let b = idx / p.pixels;
    let f = idx % p.pixels;
    let pos = cursor[0] + b;
    if (pos >= p.samples) {
        x[idx] = 0.0;
        if (f == 0u) {
            y[b] = PADDING;
        }
        return;
    }
    let sample = order[pos];
    // Unsigned wrap-around makes samples before the shard fail this test too.
    if (sample - p.shard_start >= p.shard_count) {
        return;
    }
    let value = (sample - p.shard_start) * p.pixels + f;
    if (p.f32_features != 0u) {
        x[idx] = bitcast<f32>(images[value]);
    } else {
        let word = images[value / 4u];
        let v = (word >> (8u * (value % 4u))) & 0xffu;
        x[idx] = f32(v) / 255.0;
    }
    if (f == 0u) {
        y[b] = labels_all[sample];
    }
}

@compute @workgroup_size(1)
fn advance() {
    cursor_rw[0] += p.rows;
}
