// Minibatch gather from the dataset resident on the GPU, and the cursor that walks it.
//
// gather: images (u8, 4 per u32, scaled to [0,1]; or f32 bits, used as they are), labels_all[N],
//   order[N], cursor -> x[B,P], y[B]
//   Row b takes sample order[cursor + b]. Rows at or past `samples` (the order entries in use:
//   the whole dataset, or a data-parallel rank's share of it) get zeros and the padding label
//   0xffffffff, which the loss and metrics kernels ignore. Each launch covers
//   one shard of the images and writes only the rows whose sample that shard holds.
//   With augmentation on (`augment` != 0, training only), value f of row b is read from the
//   sample cropped and flipped as `GatherAugment::source` in src/ops.rs says, with the sample's
//   draw from `augment_draw` (the same u32 hash: seed, step[0], a salt, the sample index), so
//   every backend gathers the same bits. With normalisation on (`norm_channels` = C != 0),
//   every value of a sample row (an augmentation's zero padding included) then becomes
//   (v - mean[f % C]) * inv_std[f % C]; padding rows stay zeros.
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
    // Augmentation: 1 on; crop padding P; 1: random flip; the image's width and channels
    // (pixels = H·W·C, channels last); the run's folded seed.
    augment: u32,
    pad: u32,
    flip: u32,
    width: u32,
    channels: u32,
    seed: u32,
    // Normalisation: its channel count C (0: off); `norm` holds C means then C reciprocal
    // standard deviations.
    norm_channels: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels_all: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<storage, read> cursor: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<u32>;

@group(0) @binding(7) var<storage, read_write> cursor_rw: array<u32>;
// The training-step counter (any one-word buffer when augmentation is off).
@group(0) @binding(8) var<storage, read> step: array<u32>;
// The normalisation table (any buffer when normalisation is off).
@group(0) @binding(9) var<storage, read> norm: array<f32>;

const WG: u32 = 256u;
const PADDING: u32 = 0xffffffffu;
const AUGMENT_SALT: u32 = 0x61756721u;

fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// The index within the sample that value f of the augmented sample reads, or 0xffffffff for
// zero padding.
fn augment_source(sample: u32, f: u32) -> u32 {
    let base = mix32(mix32(mix32(mix32(p.seed) ^ step[0]) ^ AUGMENT_SALT) ^ sample);
    let span = 2u * p.pad + 1u;
    let dy = i32(mix32(base ^ 1u) % span) - i32(p.pad);
    let dx = i32(mix32(base ^ 2u) % span) - i32(p.pad);
    let flipped = p.flip != 0u && (mix32(base ^ 3u) >> 31u) == 1u;
    let c = p.channels;
    let w = p.width;
    let h = p.pixels / (c * w);
    let ch = f % c;
    let col = (f / c) % w;
    let row = f / (c * w);
    var xs = col;
    if (flipped) {
        xs = w - 1u - col;
    }
    let sy = i32(row) + dy;
    let sx = i32(xs) + dx;
    if (sy < 0 || sy >= i32(h) || sx < 0 || sx >= i32(w)) {
        return PADDING;
    }
    return (u32(sy) * w + u32(sx)) * c + ch;
}

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
    var src = f;
    if (p.augment != 0u) {
        src = augment_source(sample, f);
    }
    if (f == 0u) {
        y[b] = labels_all[sample];
    }
    var v = 0.0;
    if (src != PADDING) {
        let value = (sample - p.shard_start) * p.pixels + src;
        if (p.f32_features != 0u) {
            v = bitcast<f32>(images[value]);
        } else {
            let word = images[value / 4u];
            let byte = (word >> (8u * (value % 4u))) & 0xffu;
            v = f32(byte) / 255.0;
        }
    }
    // (v - mean) * (1 / std): each operation correctly rounded, as `ops::normalized`.
    if (p.norm_channels != 0u) {
        let ch = f % p.norm_channels;
        v = (v - norm[ch]) * norm[p.norm_channels + ch];
    }
    x[idx] = v;
}

@compute @workgroup_size(1)
fn advance() {
    cursor_rw[0] += p.rows;
}
