//! One launcher per WGSL entry point. Each checks shapes against buffer sizes, fetches its
//! cached pipeline and returns a [`Launch`] covering the output with `div_ceil(n, WG)`
//! workgroups. Launches are reusable: training builds them once and replays them every step.

use super::context::{grid_1d, GpuContext, Launch};
use crate::error::LimitUse;
pub use crate::ops::{
    col2im_terms, Epilogue, MatmulAlgo, MatmulSpec, MatmulTile, MetricsAcc, SgdParams,
    PADDING_LABEL,
};
use crate::{Error, Result};
use wgpu::Buffer;

const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
const BIAS_WGSL: &str = include_str!("../../shaders/bias.wgsl");
const SOFTMAX_XENT_WGSL: &str = include_str!("../../shaders/softmax_xent.wgsl");
const SGD_WGSL: &str = include_str!("../../shaders/sgd.wgsl");
const METRICS_WGSL: &str = include_str!("../../shaders/metrics.wgsl");
const GATHER_WGSL: &str = include_str!("../../shaders/gather.wgsl");

/// Workgroup sizes; they must match the `WG` constants in the shaders.
const WG_ELEMENTWISE: u32 = 256;
const WG_ROWS: u32 = 64;

/// Every shader the crate can build, as (name, WGSL source), including each matmul variant.
/// Used to validate and cross-compile all of them without a GPU.
pub fn all_shader_sources() -> Vec<(String, String)> {
    let mut out = vec![
        ("bias".to_string(), BIAS_WGSL.to_string()),
        ("softmax_xent".to_string(), SOFTMAX_XENT_WGSL.to_string()),
        ("sgd".to_string(), SGD_WGSL.to_string()),
        ("metrics".to_string(), METRICS_WGSL.to_string()),
        ("gather".to_string(), GATHER_WGSL.to_string()),
    ];
    // Every variant that needs no optional capability (subgroup tiles need SUBGROUP; see
    // `subgroup_shader_sources`), at a shape without and one with vec4 loads.
    let portable = MatmulTile::CANDIDATES
        .iter()
        .filter(|t| t.algo != MatmulAlgo::Subgroup);
    out.extend(matmul_sources(portable));
    out.extend(layer_shader_sources());
    out
}

/// The subgroup matmul variants (validate with the SUBGROUP capability).
pub fn subgroup_shader_sources() -> Vec<(String, String)> {
    let sg = MatmulTile::CANDIDATES
        .iter()
        .filter(|t| t.algo == MatmulAlgo::Subgroup);
    matmul_sources(sg)
}

fn matmul_sources<'a>(tiles: impl Iterator<Item = &'a MatmulTile>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for tile in tiles {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for epi in Epilogue::ALL {
                for dim in [1, 4] {
                    let spec = MatmulSpec {
                        trans_a: ta,
                        trans_b: tb,
                        epilogue: epi,
                        ..MatmulSpec::new(dim, dim, dim)
                    };
                    let key = spec.key(tile);
                    if !out.iter().any(|(k, _)| *k == key) {
                        out.push((key, matmul_source(&spec, tile)));
                    }
                }
            }
        }
    }
    out
}

fn need(kernel: &str, what: &str, buf: &Buffer, elems: usize) -> Result<()> {
    let bytes = (elems * 4) as u64;
    if buf.size() < bytes {
        return Err(Error::KernelShape {
            kernel: kernel.to_string(),
            reason: format!(
                "buffer `{what}` holds {} elements, the shape needs {elems}",
                buf.size() / 4
            ),
        });
    }
    Ok(())
}

fn nonzero(kernel: &str, dims: &[(&str, usize)]) -> Result<()> {
    for (name, d) in dims {
        if *d == 0 || *d > u32::MAX as usize {
            return Err(Error::KernelShape {
                kernel: kernel.to_string(),
                reason: format!("{name} = {d} must be in 1..=4294967295"),
            });
        }
    }
    Ok(())
}

/// f32 as a uniform word.
fn f(x: f32) -> u32 {
    x.to_bits()
}

// ---------------------------------------------------------------------------------------------
// matmul

impl Epilogue {
    fn code(self) -> u32 {
        match self {
            Epilogue::None => 0,
            Epilogue::Bias => 1,
            Epilogue::BiasRelu => 2,
            Epilogue::ReluMask => 3,
        }
    }
}

impl MatmulTile {
    /// The default on `ctx`: [`MatmulTile::DEFAULT_CPU_SUBGROUP`] or
    /// [`MatmulTile::DEFAULT_CPU`] on CPU adapters, else [`MatmulTile::DEFAULT`].
    pub fn default_for(ctx: &GpuContext) -> MatmulTile {
        if ctx.info.device_type != wgpu::DeviceType::Cpu {
            MatmulTile::DEFAULT
        } else if MatmulTile::DEFAULT_CPU_SUBGROUP.available(ctx) {
            MatmulTile::DEFAULT_CPU_SUBGROUP
        } else {
            MatmulTile::DEFAULT_CPU
        }
    }

    /// Why this tile cannot run on `ctx`, if it cannot.
    pub fn unavailable(&self, ctx: &GpuContext) -> Option<String> {
        let l = &ctx.limits;
        if self.algo != MatmulAlgo::Tiled
            && (![4, 8].contains(&self.tm) || ![4, 8, 16].contains(&self.tn) || self.wg_x != 8)
        {
            return Some(format!(
                "tile {self}: direct tiles need 8 lanes, TM 4|8, TN 4|8|16"
            ));
        }
        if self.algo == MatmulAlgo::Subgroup {
            if !ctx.device.features().contains(wgpu::Features::SUBGROUP) {
                return Some(format!("tile {self}: the device has no SUBGROUP feature"));
            }
            if ctx.info.subgroup_min_size < 8 {
                return Some(format!(
                    "tile {self}: subgroups may be as small as {}",
                    ctx.info.subgroup_min_size
                ));
            }
        }
        if self.wg_x * self.wg_y > l.max_compute_invocations_per_workgroup
            || self.wg_x > l.max_compute_workgroup_size_x
            || self.wg_y > l.max_compute_workgroup_size_y
        {
            return Some(format!("tile {self}: workgroup too large"));
        }
        if self.shared_bytes() > l.max_compute_workgroup_storage_size {
            return Some(format!("tile {self}: too much workgroup memory"));
        }
        if self.storage_buffers() > l.max_storage_buffers_per_shader_stage {
            return Some(format!("tile {self}: too many storage buffers"));
        }
        None
    }

    /// Whether this tile can run on `ctx`.
    pub fn available(&self, ctx: &GpuContext) -> bool {
        self.unavailable(ctx).is_none()
    }

    /// Why this tile must not run `spec` on `ctx`, if it must not: [`Self::unavailable`],
    /// or a product the device is known to get wrong with it. Mesa's llvmpipe-based drivers
    /// (lavapipe on Vulkan, llvmpipe on GL) return wrong sums (Vulkan) or leave outputs
    /// unwritten (GL) from the workgroup-memory tiles once K passes a few ten thousand
    /// (first failures measured at K = 32,768 for wg8x8, 40,000 for the 64×64 default and
    /// 65,536 for wg16x16_r1x1; every other variant exact there; TESTING.md), which lenet5's
    /// and cnn's first weight gradients (K = 78,400) reach. Past
    /// [`LLVMPIPE_TILED_MAX_K`] those tiles are refused there.
    pub fn unsupported_for(&self, ctx: &GpuContext, spec: &MatmulSpec) -> Option<String> {
        if let Some(why) = self.unavailable(ctx) {
            return Some(why);
        }
        let llvmpipe = ctx.info.name.to_ascii_lowercase().contains("llvmpipe")
            || ctx.info.driver.to_ascii_lowercase().contains("llvmpipe");
        if self.algo == MatmulAlgo::Tiled && llvmpipe && spec.k > LLVMPIPE_TILED_MAX_K {
            return Some(format!(
                "tile {self}: llvmpipe miscomputes workgroup-memory tiles at K > \
                 {LLVMPIPE_TILED_MAX_K} (K = {})",
                spec.k
            ));
        }
        None
    }
}

/// The longest K the workgroup-memory tiles are trusted with on llvmpipe-based drivers (half
/// the shortest K measured to fail; see [`MatmulTile::unsupported_for`]).
pub const LLVMPIPE_TILED_MAX_K: usize = 16_384;

/// The product as the kernel sees it (see `shaders/matmul.wgsl`): C'[m,n] = L[m,k]·R[k,n].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KernelView {
    m: usize,
    n: usize,
    /// L stored [k, m].
    trans_l: bool,
    /// R stored [n, k].
    trans_r: bool,
    /// L / R may be read as vec4 (direct tiles only).
    vec_l: bool,
    vec_r: bool,
}

impl MatmulSpec {
    fn view(&self, tile: &MatmulTile) -> KernelView {
        let (m, n, trans_l, trans_r) = if tile.swap {
            (self.n, self.m, !self.trans_b, !self.trans_a)
        } else {
            (self.m, self.n, self.trans_a, self.trans_b)
        };
        let direct = tile.algo != MatmulAlgo::Tiled;
        // A vec4 along the contiguous dimension needs that dimension (the row stride) to be a
        // multiple of 4, so every vec4 is 16-byte aligned and never straddles two rows.
        let stride_l = if trans_l { m } else { self.k };
        let stride_r = if trans_r { self.k } else { n };
        let vec_l = direct && stride_l.is_multiple_of(4);
        let vec_r = direct && stride_r.is_multiple_of(4);
        KernelView {
            m,
            n,
            trans_l,
            trans_r,
            vec_l,
            vec_r,
        }
    }

    /// Whether `tile` reads the left / right operand of the kernel as vec4 (direct tiles, when
    /// the contiguous dimension is a multiple of 4); otherwise it loads scalars.
    pub fn vec4_loads(&self, tile: &MatmulTile) -> (bool, bool) {
        let v = self.view(tile);
        (v.vec_l, v.vec_r)
    }

    /// The pipeline-cache key: everything `matmul_source` depends on.
    pub fn key(&self, tile: &MatmulTile) -> String {
        let v = self.view(tile);
        format!(
            "matmul_{}{}_{:?}_{tile}{}{}",
            if self.trans_a { "t" } else { "n" },
            if self.trans_b { "t" } else { "n" },
            self.epilogue,
            if v.vec_l { "_vl" } else { "" },
            if v.vec_r { "_vr" } else { "" },
        )
        .to_lowercase()
    }
}

/// WGSL for one matmul variant: the constants and the subgroup helpers, then
/// `shaders/matmul.wgsl`.
pub fn matmul_source(spec: &MatmulSpec, tile: &MatmulTile) -> String {
    let v = spec.view(tile);
    let mut s = format!(
        "const WG_X: u32 = {}u;\nconst WG_Y: u32 = {}u;\nconst TM: u32 = {}u;\nconst TN: u32 = {}u;\n\
         const BK: u32 = {}u;\nconst TRANS_A: bool = {};\nconst TRANS_B: bool = {};\n\
         const EPILOGUE: u32 = {}u;\nconst SWAP: bool = {};\nconst VL: bool = {};\n\
         const VR: bool = {};\nconst SUBGROUP: bool = {};\n",
        tile.wg_x,
        tile.wg_y,
        tile.tm,
        tile.tn,
        tile.bk,
        v.trans_l,
        v.trans_r,
        spec.epilogue.code(),
        tile.swap,
        v.vec_l,
        v.vec_r,
        tile.algo == MatmulAlgo::Subgroup,
    );
    for lane in 0..8 {
        // subgroupBroadcast needs a constant lane, hence one function per lane. Without
        // SUBGROUP they are never called, and the module needs no subgroup capability.
        let body = if tile.algo == MatmulAlgo::Subgroup {
            format!("subgroupBroadcast(v, {lane}u)")
        } else {
            "v".to_string()
        };
        s += &format!("fn sg_lane{lane}(v: vec4<f32>) -> vec4<f32> {{ return {body}; }}\n");
    }
    s + MATMUL_WGSL
}

/// C = op(A)·op(B) with the spec's epilogue. `aux` is the bias \[N\] or the mask \[M,N\].
pub fn matmul(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    tile: &MatmulTile,
    a: &Buffer,
    b: &Buffer,
    aux: Option<&Buffer>,
    c: &Buffer,
) -> Result<Launch> {
    let name = spec.key(tile);
    nonzero(&name, &[("M", spec.m), ("N", spec.n), ("K", spec.k)])?;
    need(&name, "A", a, spec.m * spec.k)?;
    need(&name, "B", b, spec.k * spec.n)?;
    need(&name, "C", c, spec.m * spec.n)?;
    let aux = match (spec.epilogue, aux) {
        (Epilogue::None, _) => &ctx.dummy,
        (Epilogue::Bias | Epilogue::BiasRelu, Some(bias)) => {
            need(&name, "bias", bias, spec.n)?;
            bias
        }
        (Epilogue::ReluMask, Some(mask)) => {
            need(&name, "mask", mask, spec.m * spec.n)?;
            mask
        }
        (e, None) => {
            return Err(Error::KernelShape {
                kernel: name.to_string(),
                reason: format!("epilogue {e:?} needs an aux buffer"),
            })
        }
    };
    ctx.check_limit(
        "max_compute_workgroup_storage_size",
        ctx.limits.max_compute_workgroup_storage_size as u64,
        tile.shared_bytes() as u64,
        &LimitUse::Kernel(format!("matmul tile {tile}")),
    )?;
    ctx.check_limit(
        "max_compute_invocations_per_workgroup",
        ctx.limits.max_compute_invocations_per_workgroup as u64,
        (tile.wg_x * tile.wg_y) as u64,
        &LimitUse::Kernel(format!("matmul tile {tile}")),
    )?;
    if let Some(why) = tile.unsupported_for(ctx, spec) {
        return Err(Error::Unsupported {
            what: format!("matmul tile {tile}"),
            reason: format!("{why} on {}", ctx.describe()),
        });
    }
    let entry = match tile.algo {
        MatmulAlgo::Tiled => "matmul",
        MatmulAlgo::Direct | MatmulAlgo::Subgroup => "matmul_direct",
    };
    let pipeline = ctx.pipeline(&name, || matmul_source(spec, tile), entry)?;
    let v = spec.view(tile);
    // A storage buffer, not a uniform one: see the note on `params` in the shader.
    let params = ctx.upload(
        "matmul params",
        &[
            v.m as u32,
            v.n as u32,
            spec.k as u32,
            spec.accumulate as u32,
        ],
    );
    let groups = [
        (v.n as u32).div_ceil(tile.bn()),
        (v.m as u32).div_ceil(tile.bm()),
        1,
    ];
    // The kernel's left operand is A, or B with `swap`.
    let (l, r) = if tile.swap { (b, a) } else { (a, b) };
    let mut bindings = vec![(0, &params), (1, l), (2, r), (3, aux), (4, c)];
    if tile.algo != MatmulAlgo::Tiled {
        bindings.push((5, if v.vec_l { l } else { &ctx.dummy }));
        bindings.push((6, if v.vec_r { r } else { &ctx.dummy }));
    }
    ctx.launch(&name, pipeline, &bindings, groups)
}

// ---------------------------------------------------------------------------------------------
// bias

/// db\[O\] = Σ_B dY\[B,O\]
pub fn bias_backward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    dy: &Buffer,
    dbias: &Buffer,
) -> Result<Launch> {
    nonzero("bias_backward", &[("B", rows), ("O", cols)])?;
    need("bias_backward", "dy", dy, rows * cols)?;
    need("bias_backward", "dbias", dbias, cols)?;
    let params = ctx.uniform("bias_backward", &[rows as u32, cols as u32]);
    if rows <= BIAS_SERIAL_MAX_ROWS {
        // Short columns: one invocation each, a plain serial sum (cheapest for minibatches).
        let name = "bias_backward_serial";
        let pipeline = ctx.pipeline(name, || BIAS_WGSL.into(), name)?;
        return ctx.launch(
            name,
            pipeline,
            &[(0, &params), (4, dy), (5, dbias)],
            grid_1d(cols, WG_ELEMENTWISE),
        );
    }
    // Long columns: one workgroup each, strided partial sums and a tree.
    let name = "bias_backward";
    let pipeline = ctx.pipeline(name, || BIAS_WGSL.into(), name)?;
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (4, dy), (5, dbias)],
        grid_1d(cols, 1),
    )
}

/// Up to this many rows `bias_backward` sums each column serially in one invocation; beyond,
/// a workgroup per column reduces it as a tree (see `bias.wgsl`).
pub const BIAS_SERIAL_MAX_ROWS: usize = 4096;

/// The longest chain of additions behind each `bias_backward` output for `rows` rows, which
/// bounds its rounding error by γ of this.
pub fn bias_backward_depth(rows: usize) -> usize {
    if rows <= BIAS_SERIAL_MAX_ROWS {
        rows
    } else {
        rows.div_ceil(WG_ELEMENTWISE as usize) + 8
    }
}

// ---------------------------------------------------------------------------------------------
// softmax + cross-entropy

/// logits\[B,C\], labels\[B\] -> probs\[B,C\], loss\[B\]
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_forward(
    ctx: &GpuContext,
    rows: usize,
    classes: usize,
    logits: &Buffer,
    labels: &Buffer,
    probs: &Buffer,
    loss: &Buffer,
    smoothing: f32,
) -> Result<Launch> {
    let name = "softmax_xent_forward";
    nonzero(name, &[("B", rows), ("C", classes)])?;
    need(name, "logits", logits, rows * classes)?;
    need(name, "labels", labels, rows)?;
    need(name, "probs", probs, rows * classes)?;
    need(name, "loss", loss, rows)?;
    let pipeline = ctx.pipeline(name, || SOFTMAX_XENT_WGSL.into(), name)?;
    let params = ctx.uniform(name, &[rows as u32, classes as u32, 0, f(smoothing)]);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (1, logits),
            (2, labels),
            (3, probs),
            (4, loss),
        ],
        grid_1d(rows, WG_ROWS),
    )
}

/// dlogits\[B,C\] = (probs − onehot(labels)) · scale
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_backward(
    ctx: &GpuContext,
    rows: usize,
    classes: usize,
    scale: f32,
    probs: &Buffer,
    labels: &Buffer,
    dlogits: &Buffer,
    smoothing: f32,
) -> Result<Launch> {
    let name = "softmax_xent_backward";
    nonzero(name, &[("B", rows), ("C", classes)])?;
    need(name, "probs", probs, rows * classes)?;
    need(name, "labels", labels, rows)?;
    need(name, "dlogits", dlogits, rows * classes)?;
    let pipeline = ctx.pipeline(name, || SOFTMAX_XENT_WGSL.into(), name)?;
    let params = ctx.uniform(name, &[rows as u32, classes as u32, f(scale), f(smoothing)]);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (2, labels), (5, probs), (6, dlogits)],
        grid_1d(rows * classes, WG_ROWS),
    )
}

// ---------------------------------------------------------------------------------------------
// sgd

/// g ← g + λw; v ← μv + g; w ← w − α·(v, or g + μv with Nesterov) over `n` elements, α
/// `hp.lr` or, with `lr_table` = (sched, step), sched\[min(step, len − 1)\].
#[allow(clippy::too_many_arguments)]
pub fn sgd_update(
    ctx: &GpuContext,
    n: usize,
    hp: SgdParams,
    w: &Buffer,
    g: &Buffer,
    v: &Buffer,
    lr_table: Option<(&Buffer, &Buffer)>,
) -> Result<Launch> {
    let name = if lr_table.is_some() {
        "sgd_update_sched"
    } else {
        "sgd_update"
    };
    nonzero(name, &[("n", n)])?;
    need(name, "w", w, n)?;
    need(name, "g", g, n)?;
    need(name, "v", v, n)?;
    let steps = match lr_table {
        Some((sched, step)) => {
            need(name, "sched", sched, 1)?;
            need(name, "step", step, 1)?;
            (sched.size() / 4).min(u32::MAX as u64) as u32
        }
        None => 0,
    };
    let pipeline = ctx.pipeline(name, || SGD_WGSL.into(), name)?;
    let params = ctx.uniform(
        name,
        &[
            n as u32,
            f(hp.lr),
            f(hp.momentum),
            f(hp.l2),
            hp.nesterov as u32,
            steps,
        ],
    );
    let mut bindings = vec![(0, &params), (1, w), (2, g), (3, v)];
    if let Some((sched, step)) = lr_table {
        bindings.extend([(4, sched), (5, step)]);
    }
    ctx.launch(name, pipeline, &bindings, grid_1d(n, WG_ELEMENTWISE))
}

// ---------------------------------------------------------------------------------------------
// metrics

/// acc += (Σ loss, #argmax == label, #rows) over non-padding rows.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_metrics(
    ctx: &GpuContext,
    rows: usize,
    classes: usize,
    scores: &Buffer,
    labels: &Buffer,
    loss: &Buffer,
    acc: &Buffer,
) -> Result<Launch> {
    let name = "accumulate_metrics";
    nonzero(name, &[("B", rows), ("C", classes)])?;
    need(name, "scores", scores, rows * classes)?;
    need(name, "labels", labels, rows)?;
    need(name, "loss", loss, rows)?;
    need(name, "acc", acc, 4)?;
    let pipeline = ctx.pipeline(name, || METRICS_WGSL.into(), name)?;
    let params = ctx.uniform(name, &[rows as u32, classes as u32]);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, scores), (3, labels), (4, loss), (5, acc)],
        [1, 1, 1],
    )
}

// ---------------------------------------------------------------------------------------------
// gather

/// One contiguous run of samples in its own buffer (pixels packed four to a u32).
pub struct Shard {
    /// The samples' pixels, four bytes to a u32, sample after sample.
    pub images: Buffer,
    /// First sample held.
    pub start: usize,
    /// Samples held.
    pub count: usize,
}

/// The dataset resident on the GPU: pixels as bytes, split into shards that each fit one
/// storage binding, and labels as u32.
pub struct GpuDataset {
    /// The pixels, in runs of whole samples that each fit one storage binding.
    pub shards: Vec<Shard>,
    /// One u32 class index per sample.
    pub labels: Buffer,
    /// Samples held.
    pub samples: usize,
    /// Values per sample.
    pub pixels: usize,
    /// How the values are stored.
    pub kind: crate::ops::FeatureType,
}

impl GpuDataset {
    /// Upload `images` (`samples × pixels` bytes) and `labels`. Shards hold at most
    /// `max_shard_bytes` of pixels (default: the adapter's storage binding and buffer limits).
    pub fn upload(
        ctx: &GpuContext,
        images: &[u8],
        kind: crate::ops::FeatureType,
        labels: &[u32],
        pixels: usize,
        max_shard_bytes: Option<u64>,
    ) -> Result<Self> {
        let samples = labels.len();
        nonzero("dataset", &[("samples", samples), ("pixels", pixels)])?;
        let sample_bytes = pixels * kind.size();
        if images.len() != samples * sample_bytes {
            return Err(Error::KernelShape {
                kernel: "dataset".into(),
                reason: format!(
                    "{} image bytes for {samples} samples of {pixels} values of {} bytes",
                    images.len(),
                    kind.size()
                ),
            });
        }
        let limit = max_shard_bytes.unwrap_or(
            ctx.limits
                .max_storage_buffer_binding_size
                .min(ctx.limits.max_buffer_size),
        );
        // Whole samples per shard, rounded so the packed words end on a sample boundary.
        let per_shard = (limit as usize / sample_bytes) & !3;
        if per_shard == 0 {
            ctx.check_limit(
                "max_storage_buffer_binding_size",
                limit,
                4 * sample_bytes as u64,
                &LimitUse::Dataset("one binding must hold at least four images".into()),
            )?;
        }
        let shards = (0..samples)
            .step_by(per_shard.max(1))
            .map(|start| {
                let count = per_shard.min(samples - start);
                let bytes = &images[start * sample_bytes..(start + count) * sample_bytes];
                Shard {
                    images: ctx.upload("images", &pack_bytes(bytes)),
                    start,
                    count,
                }
            })
            .collect();
        Ok(GpuDataset {
            shards,
            labels: ctx.upload("labels", labels),
            samples,
            pixels,
            kind,
        })
    }
}

/// x\[B,P\] = images[order[cursor + b]] / 255, y\[B\] = labels[order[cursor + b]] for
/// cursor + b < `len` (the order entries in use), padding rows after: one launch per shard,
/// each writing the rows whose sample it holds.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    ctx: &GpuContext,
    rows: usize,
    len: usize,
    data: &GpuDataset,
    order: &Buffer,
    cursor: &Buffer,
    x: &Buffer,
    y: &Buffer,
    augment: Option<(&crate::ops::GatherAugment, &Buffer)>,
    normalize: Option<(usize, &Buffer)>,
) -> Result<Vec<Launch>> {
    let name = "gather";
    nonzero(
        name,
        &[("B", rows), ("P", data.pixels), ("N", data.samples)],
    )?;
    if len > data.samples {
        return Err(Error::KernelShape {
            kernel: name.to_string(),
            reason: format!(
                "{len} order entries in use but the dataset has {} samples",
                data.samples
            ),
        });
    }
    need(name, "order", order, len)?;
    need(name, "x", x, rows * data.pixels)?;
    need(name, "y", y, rows)?;
    need(name, "labels", &data.labels, data.samples)?;
    let aug = match augment {
        Some((a, step)) => {
            need(name, "step", step, 1)?;
            if a.h * a.w * a.c != data.pixels || a.c == 0 || a.w == 0 {
                return Err(Error::KernelShape {
                    kernel: name.to_string(),
                    reason: format!(
                        "augmenting {}x{}x{} images, but the dataset's samples hold {} values",
                        a.h, a.w, a.c, data.pixels
                    ),
                });
            }
            [
                1,
                a.augment.crop as u32,
                a.augment.flip as u32,
                a.w as u32,
                a.c as u32,
                a.seed,
            ]
        }
        None => [0, 0, 0, 1, 1, 0],
    };
    // Augmentation off reads no step: the cursor stands in for the binding.
    let step = augment.map_or(cursor, |a| a.1);
    // Normalisation off reads no table: the labels stand in for it.
    let (norm_channels, norm) = match normalize {
        Some((c, table)) => {
            if c == 0 || !data.pixels.is_multiple_of(c) {
                return Err(Error::KernelShape {
                    kernel: name.to_string(),
                    reason: format!(
                        "normalising {c} channels, but the dataset's samples hold {} values",
                        data.pixels
                    ),
                });
            }
            need(name, "normalisation table", table, 2 * c)?;
            (c as u32, table)
        }
        None => (0, &data.labels),
    };
    let pipeline = ctx.pipeline(name, || GATHER_WGSL.into(), name)?;
    data.shards
        .iter()
        .map(|shard| {
            need(
                name,
                "images",
                &shard.images,
                (shard.count * data.pixels * data.kind.size()).div_ceil(4),
            )?;
            let mut words = vec![
                rows as u32,
                data.pixels as u32,
                len as u32,
                shard.start as u32,
                shard.count as u32,
                (data.kind == crate::ops::FeatureType::F32) as u32,
            ];
            words.extend(aug);
            words.push(norm_channels);
            let params = ctx.uniform(name, &words);
            ctx.launch(
                name,
                pipeline.clone(),
                &[
                    (0, &params),
                    (1, &shard.images),
                    (2, &data.labels),
                    (3, order),
                    (4, cursor),
                    (5, x),
                    (6, y),
                    (8, step),
                    (9, norm),
                ],
                grid_1d(rows * data.pixels, WG_ELEMENTWISE),
            )
        })
        .collect()
}

/// cursor += B
pub fn advance(ctx: &GpuContext, rows: usize, cursor: &Buffer) -> Result<Launch> {
    let name = "advance";
    let pipeline = ctx.pipeline(name, || GATHER_WGSL.into(), name)?;
    let params = ctx.uniform(name, &[rows as u32, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]);
    ctx.launch(name, pipeline, &[(0, &params), (7, cursor)], [1, 1, 1])
}

/// Pack bytes four to a u32 (little-endian), as `gather.wgsl` reads them.
pub fn pack_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// conv2d: im2col / col2im

pub use crate::ops::{
    AdamParams, AvgPool2dSpec, BatchNormSpec, Conv2dSpec, DropoutSpec, Pool2dSpec,
};

const CONV2D_WGSL: &str = include_str!("../../shaders/conv2d.wgsl");
const MAXPOOL_WGSL: &str = include_str!("../../shaders/maxpool.wgsl");
const AVGPOOL_WGSL: &str = include_str!("../../shaders/avgpool.wgsl");
const ADAM_WGSL: &str = include_str!("../../shaders/adam.wgsl");
const DROPOUT_WGSL: &str = include_str!("../../shaders/dropout.wgsl");
const BATCHNORM_WGSL: &str = include_str!("../../shaders/batchnorm.wgsl");
const ADD_WGSL: &str = include_str!("../../shaders/add.wgsl");
const DECAY_WGSL: &str = include_str!("../../shaders/decay.wgsl");

/// The shaders of the convolution, pooling and Adam kernels, as (name, WGSL source).
fn layer_shader_sources() -> Vec<(String, String)> {
    vec![
        ("conv2d".to_string(), CONV2D_WGSL.to_string()),
        ("maxpool".to_string(), MAXPOOL_WGSL.to_string()),
        ("avgpool".to_string(), AVGPOOL_WGSL.to_string()),
        ("adam".to_string(), ADAM_WGSL.to_string()),
        ("dropout".to_string(), DROPOUT_WGSL.to_string()),
        ("batchnorm".to_string(), BATCHNORM_WGSL.to_string()),
        ("add".to_string(), ADD_WGSL.to_string()),
        ("decay".to_string(), DECAY_WGSL.to_string()),
    ]
}

/// `Im2colParams` in `conv2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
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

/// `Col2imParams` in `conv2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Col2imParams {
    geometry: Im2colParams,
    apply_mask: u32,
}

/// A Pod params struct as uniform words.
fn uniform_of<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, params: &T) -> Buffer {
    ctx.uniform(label, bytemuck::cast_slice(std::slice::from_ref(params)))
}

/// Check a convolution's dimensions (all nonzero, the kernel fits the padded input, every
/// buffer size within u32) and return its geometry for the shaders.
fn conv_geometry(kernel: &str, spec: &Conv2dSpec) -> Result<Im2colParams> {
    let s = spec;
    nonzero(
        kernel,
        &[
            ("B", s.batch),
            ("C", s.c_in),
            ("H", s.h),
            ("W", s.w),
            ("K", s.k),
            ("stride", s.stride),
        ],
    )?;
    let (oh, ow) = (s.out_h(), s.out_w());
    if oh == 0 || ow == 0 {
        return Err(Error::KernelShape {
            kernel: kernel.to_string(),
            reason: format!(
                "a {k}x{k} kernel does not fit the {h}x{w} input padded by {p} (output {oh}x{ow})",
                k = s.k,
                h = s.h,
                w = s.w,
                p = s.pad
            ),
        });
    }
    nonzero(
        kernel,
        &[
            ("B·H·W·C", s.input_len()),
            ("B·OH·OW·C·K·K", s.col_rows() * s.col_cols()),
            ("pad", s.pad.max(1)),
        ],
    )?;
    Ok(Im2colParams {
        batch: s.batch as u32,
        c: s.c_in as u32,
        h: s.h as u32,
        w: s.w as u32,
        k: s.k as u32,
        stride: s.stride as u32,
        pad: s.pad as u32,
        oh: oh as u32,
        ow: ow as u32,
    })
}

/// cols[B·OH·OW, C·K·K] = im2col(x\[B,H,W,C\]) (see `shaders/conv2d.wgsl`).
pub fn im2col(ctx: &GpuContext, spec: &Conv2dSpec, x: &Buffer, cols: &Buffer) -> Result<Launch> {
    let name = "im2col";
    let params = conv_geometry(name, spec)?;
    let n = spec.col_rows() * spec.col_cols();
    need(name, "x", x, spec.input_len())?;
    need(name, "cols", cols, n)?;
    let pipeline = ctx.pipeline(name, || CONV2D_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    // One invocation per (row, channel); each writes K·K columns.
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (2, cols)],
        grid_1d(spec.col_rows() * spec.c_in, WG_ELEMENTWISE),
    )
}

/// dx\[B,H,W,C\] = col2im(dcols[B·OH·OW, C·K·K]), zero where `mask` (x's shape) is not > 0.
pub fn col2im(
    ctx: &GpuContext,
    spec: &Conv2dSpec,
    dcols: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "col2im";
    let geometry = conv_geometry(name, spec)?;
    need(name, "dcols", dcols, spec.col_rows() * spec.col_cols())?;
    need(name, "dx", dx, spec.input_len())?;
    if let Some(m) = mask {
        need(name, "mask", m, spec.input_len())?;
    }
    let pipeline = ctx.pipeline(name, || CONV2D_WGSL.into(), name)?;
    let params = uniform_of(
        ctx,
        name,
        &Col2imParams {
            geometry,
            apply_mask: mask.is_some() as u32,
        },
    );
    ctx.launch(
        name,
        pipeline,
        &[
            (3, &params),
            (4, dcols),
            (5, mask.unwrap_or(&ctx.dummy)),
            (6, dx),
        ],
        grid_1d(spec.input_len(), WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// maxpool

/// `ForwardParams` in `maxpool.wgsl` (`BackwardParams` adds `apply_mask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    batch: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    oh: u32,
    ow: u32,
}

/// `BackwardParams` in `maxpool.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolBackwardParams {
    geometry: PoolParams,
    apply_mask: u32,
}

fn pool_geometry(kernel: &str, spec: &Pool2dSpec) -> Result<PoolParams> {
    let s = spec;
    nonzero(
        kernel,
        &[
            ("B", s.batch),
            ("C", s.c),
            ("H", s.h),
            ("W", s.w),
            ("K", s.k),
        ],
    )?;
    if s.out_h() == 0 || s.out_w() == 0 {
        return Err(Error::KernelShape {
            kernel: kernel.to_string(),
            reason: format!(
                "a {k}x{k} window does not fit the {h}x{w} input",
                k = s.k,
                h = s.h,
                w = s.w
            ),
        });
    }
    nonzero(kernel, &[("B·H·W·C", s.input_len())])?;
    Ok(PoolParams {
        batch: s.batch as u32,
        c: s.c as u32,
        h: s.h as u32,
        w: s.w as u32,
        k: s.k as u32,
        oh: s.out_h() as u32,
        ow: s.out_w() as u32,
    })
}

/// y\[B,OH,OW,C\], idx\[B,OH,OW,C\] (u32) = max-pool of x\[B,H,W,C\] (see `shaders/maxpool.wgsl`).
pub fn maxpool_forward(
    ctx: &GpuContext,
    spec: &Pool2dSpec,
    x: &Buffer,
    y: &Buffer,
    idx: &Buffer,
) -> Result<Launch> {
    let name = "maxpool_forward";
    let params = pool_geometry(name, spec)?;
    need(name, "x", x, spec.input_len())?;
    need(name, "y", y, spec.output_len())?;
    need(name, "idx", idx, spec.output_len())?;
    let pipeline = ctx.pipeline(name, || MAXPOOL_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (2, y), (3, idx)],
        grid_1d(spec.output_len(), WG_ELEMENTWISE),
    )
}

/// dx\[B,H,W,C\] = dy at each window's recorded maximum, else 0; zero where `mask` is not > 0.
pub fn maxpool_backward(
    ctx: &GpuContext,
    spec: &Pool2dSpec,
    dy: &Buffer,
    idx: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "maxpool_backward";
    let geometry = pool_geometry(name, spec)?;
    need(name, "dy", dy, spec.output_len())?;
    need(name, "idx", idx, spec.output_len())?;
    need(name, "dx", dx, spec.input_len())?;
    if let Some(m) = mask {
        need(name, "mask", m, spec.input_len())?;
    }
    let pipeline = ctx.pipeline(name, || MAXPOOL_WGSL.into(), name)?;
    let params = uniform_of(
        ctx,
        name,
        &PoolBackwardParams {
            geometry,
            apply_mask: mask.is_some() as u32,
        },
    );
    ctx.launch(
        name,
        pipeline,
        &[
            (4, &params),
            (5, dy),
            (6, idx),
            (7, mask.unwrap_or(&ctx.dummy)),
            (8, dx),
        ],
        grid_1d(spec.output_len(), WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// avgpool

/// `Params` in `avgpool.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AvgPoolParams {
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

fn avgpool_params(kernel: &str, spec: &AvgPool2dSpec, apply_mask: bool) -> Result<AvgPoolParams> {
    let s = spec;
    nonzero(
        kernel,
        &[
            ("B", s.batch),
            ("C", s.c),
            ("H", s.h),
            ("W", s.w),
            ("KH", s.kh),
            ("KW", s.kw),
        ],
    )?;
    if s.out_h() == 0 || s.out_w() == 0 {
        return Err(Error::KernelShape {
            kernel: kernel.to_string(),
            reason: format!(
                "a {}x{} window does not fit the {}x{} input",
                s.kh, s.kw, s.h, s.w
            ),
        });
    }
    nonzero(kernel, &[("B·H·W·C", s.input_len())])?;
    Ok(AvgPoolParams {
        batch: s.batch as u32,
        c: s.c as u32,
        h: s.h as u32,
        w: s.w as u32,
        kh: s.kh as u32,
        kw: s.kw as u32,
        oh: s.out_h() as u32,
        ow: s.out_w() as u32,
        apply_mask: apply_mask as u32,
    })
}

/// y\[B,OH,OW,C\] = the mean of each KH×KW window of x\[B,H,W,C\] (see `shaders/avgpool.wgsl`).
pub fn avgpool_forward(
    ctx: &GpuContext,
    spec: &AvgPool2dSpec,
    x: &Buffer,
    y: &Buffer,
) -> Result<Launch> {
    let name = "avgpool_forward";
    let params = avgpool_params(name, spec, false)?;
    need(name, "x", x, spec.input_len())?;
    need(name, "y", y, spec.output_len())?;
    let pipeline = ctx.pipeline(name, || AVGPOOL_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (2, y)],
        grid_1d(spec.output_len(), WG_ELEMENTWISE),
    )
}

/// dx\[B,H,W,C\] = dy of the element's window / (KH·KW), 0 past the last whole window; zero
/// where `mask` is not > 0.
pub fn avgpool_backward(
    ctx: &GpuContext,
    spec: &AvgPool2dSpec,
    dy: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "avgpool_backward";
    let params = avgpool_params(name, spec, mask.is_some())?;
    need(name, "dy", dy, spec.output_len())?;
    need(name, "dx", dx, spec.input_len())?;
    if let Some(m) = mask {
        need(name, "mask", m, spec.input_len())?;
    }
    let pipeline = ctx.pipeline(name, || AVGPOOL_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (3, dy),
            (4, mask.unwrap_or(&ctx.dummy)),
            (5, dx),
        ],
        grid_1d(spec.output_len(), WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// dropout

/// `Params` in `dropout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    n: u32,
    cols: u32,
    row0: u32,
    seed: u32,
    layer: u32,
    threshold: u32,
    scale: f32,
    apply_mask: u32,
}

fn dropout_params(kernel: &str, spec: &DropoutSpec, apply_mask: bool) -> Result<DropoutParams> {
    nonzero(
        kernel,
        &[("B", spec.rows), ("F", spec.cols), ("B·F", spec.len())],
    )?;
    Ok(DropoutParams {
        n: spec.len() as u32,
        cols: spec.cols as u32,
        // The global element index wraps in u32 in the shader and in the twin alike.
        row0: spec.row0 as u32,
        seed: spec.seed,
        layer: spec.layer,
        threshold: spec.threshold(),
        scale: spec.scale(),
        apply_mask: apply_mask as u32,
    })
}

/// y\[B,F\] = x·scale where the element is kept at the step in `step`, else 0 (see
/// `shaders/dropout.wgsl`).
pub fn dropout_forward(
    ctx: &GpuContext,
    spec: &DropoutSpec,
    step: &Buffer,
    x: &Buffer,
    y: &Buffer,
) -> Result<Launch> {
    let name = "dropout_forward";
    let params = dropout_params(name, spec, false)?;
    need(name, "step", step, 1)?;
    need(name, "x", x, spec.len())?;
    need(name, "y", y, spec.len())?;
    let pipeline = ctx.pipeline(name, || DROPOUT_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (2, y), (3, step)],
        grid_1d(spec.len(), WG_ELEMENTWISE),
    )
}

/// dx\[B,F\] = dy·scale where the forward pass kept the element, else 0; zero where `mask` is
/// not > 0.
pub fn dropout_backward(
    ctx: &GpuContext,
    spec: &DropoutSpec,
    step: &Buffer,
    dy: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "dropout_backward";
    let params = dropout_params(name, spec, mask.is_some())?;
    need(name, "step", step, 1)?;
    need(name, "dy", dy, spec.len())?;
    need(name, "dx", dx, spec.len())?;
    if let Some(m) = mask {
        need(name, "mask", m, spec.len())?;
    }
    let pipeline = ctx.pipeline(name, || DROPOUT_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (3, step),
            (4, dy),
            (5, mask.unwrap_or(&ctx.dummy)),
            (6, dx),
        ],
        grid_1d(spec.len(), WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// batchnorm

/// `Params` in `batchnorm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct BatchNormParams {
    rows: u32,
    c: u32,
    per_sample: u32,
    classes: u32,
    momentum: f32,
    eps: f32,
    relu: u32,
    apply_mask: u32,
}

fn batchnorm_params(
    kernel: &str,
    spec: &BatchNormSpec,
    apply_mask: bool,
) -> Result<BatchNormParams> {
    nonzero(
        kernel,
        &[
            ("B", spec.batch),
            ("P", spec.per_sample),
            ("C", spec.c),
            ("R·C", spec.len()),
            ("classes", spec.classes),
        ],
    )?;
    Ok(BatchNormParams {
        rows: spec.rows() as u32,
        c: spec.c as u32,
        per_sample: spec.per_sample as u32,
        classes: spec.classes as u32,
        momentum: spec.momentum,
        eps: spec.eps,
        relu: spec.relu as u32,
        apply_mask: apply_mask as u32,
    })
}

/// One workgroup per channel: [C, 1, 1], or two dimensions past the per-dimension limit.
fn per_channel(c: usize) -> [u32; 3] {
    if c <= 65535 {
        [c as u32, 1, 1]
    } else {
        [65535, c.div_ceil(65535) as u32, 1]
    }
}

/// Training statistics and the running statistics' update (see `shaders/batchnorm.wgsl`).
pub fn batchnorm_stats(
    ctx: &GpuContext,
    spec: &BatchNormSpec,
    x: &Buffer,
    labels: &Buffer,
    running: &Buffer,
    stats: &Buffer,
) -> Result<Launch> {
    let name = "batchnorm_stats";
    let params = batchnorm_params(name, spec, false)?;
    need(name, "x", x, spec.len())?;
    need(name, "labels", labels, spec.batch)?;
    need(name, "running", running, spec.stats_len())?;
    need(name, "stats", stats, spec.stats_len())?;
    let pipeline = ctx.pipeline(name, || BATCHNORM_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (2, labels), (3, running), (4, stats)],
        per_channel(spec.c),
    )
}

/// Evaluation statistics from the running ones.
pub fn batchnorm_eval_stats(
    ctx: &GpuContext,
    spec: &BatchNormSpec,
    running: &Buffer,
    stats: &Buffer,
) -> Result<Launch> {
    let name = "batchnorm_eval_stats";
    let params = batchnorm_params(name, spec, false)?;
    need(name, "running", running, spec.stats_len())?;
    need(name, "stats", stats, spec.stats_len())?;
    let pipeline = ctx.pipeline(name, || BATCHNORM_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (4, stats), (16, running)],
        grid_1d(spec.c, WG_ELEMENTWISE),
    )
}

/// y = ((x − mean)·istd)·γ + β (ReLU if `spec.relu`).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_apply(
    ctx: &GpuContext,
    spec: &BatchNormSpec,
    x: &Buffer,
    stats: &Buffer,
    w: &Buffer,
    b: &Buffer,
    y: &Buffer,
) -> Result<Launch> {
    let name = "batchnorm_apply";
    let params = batchnorm_params(name, spec, false)?;
    need(name, "x", x, spec.len())?;
    need(name, "stats", stats, spec.stats_len())?;
    need(name, "w", w, spec.c)?;
    need(name, "b", b, spec.c)?;
    need(name, "y", y, spec.len())?;
    let pipeline = ctx.pipeline(name, || BATCHNORM_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, x), (5, stats), (6, w), (7, b), (8, y)],
        grid_1d(spec.len(), WG_ELEMENTWISE),
    )
}

/// dγ, dβ and the input gradient's coefficients.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    ctx: &GpuContext,
    spec: &BatchNormSpec,
    x: &Buffer,
    labels: &Buffer,
    stats: &Buffer,
    w: &Buffer,
    dy: &Buffer,
    dw: &Buffer,
    db: &Buffer,
    coef: &Buffer,
) -> Result<Launch> {
    let name = "batchnorm_backward";
    let params = batchnorm_params(name, spec, false)?;
    need(name, "x", x, spec.len())?;
    need(name, "labels", labels, spec.batch)?;
    need(name, "stats", stats, spec.stats_len())?;
    need(name, "w", w, spec.c)?;
    need(name, "dy", dy, spec.len())?;
    need(name, "dw", dw, spec.c)?;
    need(name, "db", db, spec.c)?;
    need(name, "coef", coef, spec.coef_len())?;
    let pipeline = ctx.pipeline(name, || BATCHNORM_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (1, x),
            (2, labels),
            (5, stats),
            (6, w),
            (9, dy),
            (10, dw),
            (11, db),
            (12, coef),
        ],
        per_channel(spec.c),
    )
}

/// dx from dy, the forward pass's input and stats, and [`batchnorm_backward`]'s coef.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_input_grad(
    ctx: &GpuContext,
    spec: &BatchNormSpec,
    x: &Buffer,
    labels: &Buffer,
    stats: &Buffer,
    coef: &Buffer,
    dy: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "batchnorm_input_grad";
    let params = batchnorm_params(name, spec, mask.is_some())?;
    need(name, "x", x, spec.len())?;
    need(name, "labels", labels, spec.batch)?;
    need(name, "stats", stats, spec.stats_len())?;
    need(name, "coef", coef, spec.coef_len())?;
    need(name, "dy", dy, spec.len())?;
    need(name, "dx", dx, spec.len())?;
    if let Some(m) = mask {
        need(name, "mask", m, spec.len())?;
    }
    let pipeline = ctx.pipeline(name, || BATCHNORM_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (1, x),
            (2, labels),
            (5, stats),
            (9, dy),
            (13, coef),
            (14, mask.unwrap_or(&ctx.dummy)),
            (15, dx),
        ],
        grid_1d(spec.len(), WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// adam

/// `Params` in `adam.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamShaderParams {
    n: u32,
    steps: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    l2: f32,
}

/// One Adam update of `n` parameters (see `shaders/adam.wgsl`). `sched` holds
/// [`AdamParams::schedule`] pairs for t = 1, 2, … (at least one); `step` (u32) the number of
/// updates already done, advanced by the caller with [`advance`] once per training step.
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    ctx: &GpuContext,
    n: usize,
    hp: AdamParams,
    w: &Buffer,
    g: &Buffer,
    m: &Buffer,
    v: &Buffer,
    sched: &Buffer,
    step: &Buffer,
) -> Result<Launch> {
    let name = "adam_update";
    nonzero(name, &[("n", n)])?;
    need(name, "w", w, n)?;
    need(name, "g", g, n)?;
    need(name, "m", m, n)?;
    need(name, "v", v, n)?;
    need(name, "sched", sched, 2)?;
    need(name, "step", step, 1)?;
    let steps = (sched.size() / 8).min(u32::MAX as u64) as u32;
    let pipeline = ctx.pipeline(name, || ADAM_WGSL.into(), name)?;
    let params = uniform_of(
        ctx,
        name,
        &AdamShaderParams {
            n: n as u32,
            steps,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            l2: hp.l2,
        },
    );
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (1, w),
            (2, g),
            (3, m),
            (4, v),
            (5, sched),
            (6, step),
        ],
        grid_1d(n, WG_ELEMENTWISE),
    )
}

// ---------------------------------------------------------------------------------------------
// add (residual blocks)

/// `Params` in `add.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    n: u32,
    relu: u32,
    apply_mask: u32,
    accumulate: u32,
}

fn add_params(kernel: &str, len: usize, relu: bool, mask: bool, acc: bool) -> Result<AddParams> {
    nonzero(kernel, &[("n", len)])?;
    Ok(AddParams {
        n: len as u32,
        relu: relu as u32,
        apply_mask: mask as u32,
        accumulate: acc as u32,
    })
}

/// y\[n\] = a + b, then max(0, ·) when `relu` (see `shaders/add.wgsl`).
pub fn add_forward(
    ctx: &GpuContext,
    len: usize,
    relu: bool,
    a: &Buffer,
    b: &Buffer,
    y: &Buffer,
) -> Result<Launch> {
    let name = "add_forward";
    let params = add_params(name, len, relu, false, false)?;
    need(name, "a", a, len)?;
    need(name, "b", b, len)?;
    need(name, "y", y, len)?;
    let pipeline = ctx.pipeline(name, || ADD_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, a), (2, b), (3, y)],
        grid_1d(len, WG_ELEMENTWISE),
    )
}

/// dx\[n\] = dy where `mask` > 0 (everywhere without one), else 0; added to dx when
/// `accumulate`.
pub fn add_backward(
    ctx: &GpuContext,
    len: usize,
    accumulate: bool,
    dy: &Buffer,
    mask: Option<&Buffer>,
    dx: &Buffer,
) -> Result<Launch> {
    let name = "add_backward";
    let params = add_params(name, len, false, mask.is_some(), accumulate)?;
    need(name, "dy", dy, len)?;
    need(name, "dx", dx, len)?;
    if let Some(m) = mask {
        need(name, "mask", m, len)?;
    }
    let pipeline = ctx.pipeline(name, || ADD_WGSL.into(), name)?;
    let params = uniform_of(ctx, name, &params);
    ctx.launch(
        name,
        pipeline,
        &[
            (0, &params),
            (4, dy),
            (5, mask.unwrap_or(&ctx.dummy)),
            (6, dx),
        ],
        grid_1d(len, WG_ELEMENTWISE),
    )
}

// decoupled weight decay

/// w ← w·factors\[min(step, len − 1)\] over `n` elements (see `shaders/decay.wgsl`).
pub fn decay_update(
    ctx: &GpuContext,
    n: usize,
    w: &Buffer,
    factors: &Buffer,
    step: &Buffer,
) -> Result<Launch> {
    let name = "decay_update";
    nonzero(name, &[("n", n)])?;
    need(name, "w", w, n)?;
    need(name, "factors", factors, 1)?;
    need(name, "step", step, 1)?;
    let steps = (factors.size() / 4).min(u32::MAX as u64) as u32;
    let pipeline = ctx.pipeline(name, || DECAY_WGSL.into(), name)?;
    let params = ctx.uniform(name, &[n as u32, steps]);
    ctx.launch(
        name,
        pipeline,
        &[(0, &params), (1, w), (2, factors), (3, step)],
        grid_1d(n, WG_ELEMENTWISE),
    )
}
