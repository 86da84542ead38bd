//! Backend-neutral op descriptions: shapes, epilogues, optimiser hyperparameters, the metrics
//! layout, and [`Op`], one step of a program that a backend either records as prepared GPU
//! launches or executes with the CPU twins. Nothing here knows about wgpu or ndarray.
//!
//! Shapes use one alphabet: B batch rows, I inputs, O outputs, C channels, H height, W width,
//! K kernel side, M/N/K for a matrix product.

/// What happens to each output element of a matrix product after the dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// C = A·B
    None,
    /// C = A·B + bias\[N\]
    Bias,
    /// C = max(A·B + bias\[N\], 0)
    BiasRelu,
    /// C = A·B where aux\[M,N\] > 0, else 0 (ReLU backward through the layer below).
    ReluMask,
}

impl Epilogue {
    /// All epilogues.
    pub const ALL: [Epilogue; 4] = [
        Epilogue::None,
        Epilogue::Bias,
        Epilogue::BiasRelu,
        Epilogue::ReluMask,
    ];
}

/// Shape and flavour of one product C\[M,N\] = op(A)\[M,K\]·op(B)\[K,N\].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    /// M: rows of C and of op(A).
    pub m: usize,
    /// N: columns of C and of op(B).
    pub n: usize,
    /// K: the summed dimension (columns of op(A), rows of op(B)).
    pub k: usize,
    /// A is stored as [K, M].
    pub trans_a: bool,
    /// B is stored as [N, K].
    pub trans_b: bool,
    /// What is applied to each element of C after the dot product.
    pub epilogue: Epilogue,
    /// C += result.
    pub accumulate: bool,
}

impl MatmulSpec {
    /// Plain C = A·B.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        MatmulSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            epilogue: Epilogue::None,
            accumulate: false,
        }
    }

    /// Floating-point operations: 2·M·N·K.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Which algorithm (entry point of `shaders/matmul.wgsl`) a tile runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MatmulAlgo {
    /// `matmul`: K stepped through workgroup-memory tiles. The right choice on GPUs.
    Tiled,
    /// `matmul_direct`: 4×4 register blocks straight from global memory, vec4 loads where the
    /// layout allows, no workgroup memory and no barriers. For CPU adapters (llvmpipe), where
    /// barriers split the SIMD loop and workgroup memory is no faster than global memory.
    Direct,
    /// `matmul_direct` with the right operand's loads shared by the 8 lanes of a subgroup through
    /// `subgroupBroadcast`. Needs the device feature SUBGROUP and subgroups of at least 8.
    Subgroup,
}

/// One matmul variant. For [`MatmulAlgo::Tiled`], a WG_X×WG_Y workgroup covers (WG_Y·TM)×(WG_X·TN)
/// outputs, each invocation a TM×TN register block, K stepped BK at a time through workgroup
/// memory. For `Direct`/`Subgroup`, WG_X invocations (lanes) each own TM rows and WG_Y column
/// blocks of TN columns, so a workgroup covers (WG_X·TM)×(WG_Y·TN); TM ∈ {4, 8}, TN ∈ {4, 8, 16}.
/// With `swap` the kernel computes Cᵀ = op(B)ᵀ·op(A)ᵀ, so "rows" above run along N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MatmulTile {
    /// How the product is computed.
    pub algo: MatmulAlgo,
    /// Workgroup width WG_X (invocations).
    pub wg_x: u32,
    /// Workgroup height WG_Y (invocations).
    pub wg_y: u32,
    /// Output rows per invocation, TM.
    pub tm: u32,
    /// Output columns per invocation (or per column block), TN.
    pub tn: u32,
    /// K step through workgroup memory, BK (`Tiled` only).
    pub bk: u32,
    /// Compute Cᵀ = op(B)ᵀ·op(A)ᵀ, so the tile's rows run along N.
    pub swap: bool,
}

impl MatmulTile {
    /// Workgroup-memory tile.
    pub const fn tiled(wg_x: u32, wg_y: u32, tm: u32, tn: u32, bk: u32) -> Self {
        MatmulTile {
            algo: MatmulAlgo::Tiled,
            wg_x,
            wg_y,
            tm,
            tn,
            bk,
            swap: false,
        }
    }

    /// Direct tile: 8 lanes × TM rows by `wg_y` × TN columns per workgroup.
    pub const fn direct(wg_y: u32, tm: u32, tn: u32) -> Self {
        MatmulTile {
            algo: MatmulAlgo::Direct,
            wg_x: 8,
            wg_y,
            tm,
            tn,
            bk: 4,
            swap: false,
        }
    }

    /// Subgroup tile: one subgroup of 8 lanes × TM rows by TN columns per workgroup.
    pub const fn subgroup(tm: u32, tn: u32) -> Self {
        MatmulTile {
            algo: MatmulAlgo::Subgroup,
            wg_x: 8,
            wg_y: 1,
            tm,
            tn,
            bk: 4,
            swap: false,
        }
    }

    /// The same tile computing Cᵀ = op(B)ᵀ·op(A)ᵀ.
    pub const fn swapped(self) -> Self {
        MatmulTile { swap: true, ..self }
    }

    /// The portable default (used when autotuning is off and nothing better is known): 64×64
    /// outputs per workgroup of 256 invocations, 4×4 each, through workgroup memory.
    pub const DEFAULT: MatmulTile = MatmulTile::tiled(16, 16, 4, 4, 16);

    /// The default on CPU adapters (llvmpipe, SwiftShader, WARP) without subgroups: a direct
    /// 8×8 tile, about 8× faster there than [`MatmulTile::DEFAULT`].
    pub const DEFAULT_CPU: MatmulTile = MatmulTile::direct(1, 8, 8);

    /// The default on CPU adapters with subgroups: 8 lanes × 8 rows by 16 shared columns, about
    /// twice as fast again as [`MatmulTile::DEFAULT_CPU`].
    pub const DEFAULT_CPU_SUBGROUP: MatmulTile = MatmulTile::subgroup(8, 16);

    /// Every variant: what the autotuner times (those [`available`](Self::available) on the
    /// device) and what `verify` checks. Within each algorithm, the more often fastest first
    /// (the autotuner tries them in this order).
    pub const CANDIDATES: [MatmulTile; 13] = [
        MatmulTile::DEFAULT,
        // Small workgroup with a taller register block: less workgroup memory traffic.
        MatmulTile::tiled(8, 8, 4, 4, 8),
        // A plain 16×16 tile, one output per invocation.
        MatmulTile::tiled(16, 16, 1, 1, 16),
        MatmulTile::DEFAULT_CPU,
        // Two column blocks per workgroup: 64×32 outputs.
        MatmulTile::direct(2, 8, 16),
        MatmulTile::direct(1, 8, 16),
        // Swapped: the tile's long side along M, for narrow N (e.g. 10 classes).
        MatmulTile::direct(1, 8, 8).swapped(),
        MatmulTile::direct(1, 4, 16).swapped(),
        MatmulTile::DEFAULT_CPU_SUBGROUP,
        MatmulTile::subgroup(8, 16).swapped(),
        MatmulTile::subgroup(4, 16).swapped(),
        MatmulTile::subgroup(4, 16),
        // Cheap to compile; fine for tiny products.
        MatmulTile::subgroup(4, 4).swapped(),
    ];

    /// Rows of C' (C, or Cᵀ with `swap`) per workgroup.
    pub fn bm(&self) -> u32 {
        match self.algo {
            MatmulAlgo::Tiled => self.wg_y * self.tm,
            _ => self.wg_x * self.tm,
        }
    }
    /// Columns of C' per workgroup.
    pub fn bn(&self) -> u32 {
        match self.algo {
            MatmulAlgo::Tiled => self.wg_x * self.tn,
            _ => self.wg_y * self.tn,
        }
    }
    /// Workgroup memory used, bytes.
    pub fn shared_bytes(&self) -> u32 {
        match self.algo {
            MatmulAlgo::Tiled => 4 * self.bk * (self.bm() + self.bn()),
            _ => 0,
        }
    }
    /// Storage buffers bound.
    pub(crate) fn storage_buffers(&self) -> u32 {
        match self.algo {
            MatmulAlgo::Tiled => 5,
            _ => 7,
        }
    }
}

impl std::fmt::Display for MatmulTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.algo {
            MatmulAlgo::Tiled => write!(
                f,
                "wg{}x{}_r{}x{}_k{}",
                self.wg_x, self.wg_y, self.tm, self.tn, self.bk
            )?,
            MatmulAlgo::Direct => write!(
                f,
                "direct_wg{}x{}_r{}x{}",
                self.wg_x, self.wg_y, self.tm, self.tn
            )?,
            MatmulAlgo::Subgroup => write!(
                f,
                "sg_wg{}x{}_r{}x{}",
                self.wg_x, self.wg_y, self.tm, self.tn
            )?,
        }
        if self.swap {
            write!(f, "_swap")?;
        }
        Ok(())
    }
}

/// Hyperparameters of one SGD update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    /// Learning rate α.
    pub lr: f32,
    /// Momentum μ (0: plain SGD).
    pub momentum: f32,
    /// L2 coefficient λ (0 for biases).
    pub l2: f32,
    /// Nesterov momentum (PyTorch's `SGD(nesterov=True)`): the step is g + μ·v instead of v.
    pub nesterov: bool,
}

/// A per-update table of f32 values (learning rates, decay factors) and the u32 counter of
/// updates done that indexes it: update t (1-based) reads entry t − 1; past the end the last
/// entry serves. The tables are computed on the host once per run (see `train::engine::optim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTable {
    /// f32 entries, one per update (at least one).
    pub table: BufId,
    /// u32 counter: updates done (the index of the entry used).
    pub step: BufId,
}

/// The metrics accumulator as laid out in `metrics.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MetricsAcc {
    /// Σ of the per-row cross-entropy losses over the rows seen.
    pub loss_sum: f32,
    /// Rows whose argmax (the first maximum) equals the label.
    pub correct: u32,
    /// Non-padding rows accumulated (label < C).
    pub seen: u32,
    /// Launches whose batch loss sum was NaN or infinite.
    pub nonfinite: u32,
}

/// The label value that marks a padding row (see `gather.wgsl`).
pub const PADDING_LABEL: u32 = u32::MAX;

/// A 2-D convolution over channels-last activations x\[B,H,W,C\] with weights w[O, C·K·K]
/// (PyTorch's \[O,C,K,K\] flattened) and bias\[O\], zero padding `pad` on every side, stride
/// `stride`. The engine runs it as im2col + the tuned matmul: cols[B·OH·OW, C·K·K] with column
/// index c·K·K + ky·K + kx, then y[B·OH·OW, O] = cols·wᵀ, which is y\[B,OH,OW,O\] channels-last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// B
    pub batch: usize,
    /// C: input channels.
    pub c_in: usize,
    /// H: input height.
    pub h: usize,
    /// W: input width.
    pub w: usize,
    /// O: output channels.
    pub c_out: usize,
    /// K: the kernel is K×K.
    pub k: usize,
    /// Step between kernel positions, in input pixels, along both axes.
    pub stride: usize,
    /// Zero padding added on each of the four sides, in pixels.
    pub pad: usize,
}

impl Conv2dSpec {
    /// Output height OH = (H + 2·pad − K) / stride + 1 (0 if the kernel does not fit).
    pub fn out_h(&self) -> usize {
        out_side(self.h, self.k, self.stride, self.pad)
    }
    /// Output width OW.
    pub fn out_w(&self) -> usize {
        out_side(self.w, self.k, self.stride, self.pad)
    }
    /// Rows of the im2col matrix: B·OH·OW.
    pub fn col_rows(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }
    /// Columns of the im2col matrix: C·K·K.
    pub fn col_cols(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Elements of the input x\[B,H,W,C\].
    pub fn input_len(&self) -> usize {
        self.batch * self.h * self.w * self.c_in
    }
    /// Elements of the output y\[B,OH,OW,O\].
    pub fn output_len(&self) -> usize {
        self.col_rows() * self.c_out
    }
    /// Multiply-adds ×2 of the forward pass.
    pub fn flops(&self) -> f64 {
        2.0 * self.col_rows() as f64 * self.col_cols() as f64 * self.c_out as f64
    }
}

fn out_side(side: usize, k: usize, stride: usize, pad: usize) -> usize {
    let padded = side + 2 * pad;
    if k == 0 || stride == 0 || k > padded {
        0
    } else {
        (padded - k) / stride + 1
    }
}

/// The most terms any col2im output sums: ⌈K/s⌉² (its rounding error is within γ of this).
pub fn col2im_terms(spec: &Conv2dSpec) -> usize {
    spec.k.div_ceil(spec.stride.max(1)).pow(2)
}

/// Max-pooling K×K with stride K over channels-last x\[B,H,W,C\] → y[B,H/K,W/K,C] (floor, as
/// PyTorch's default), remembering in idx\[B,OH,OW,C\] the flat index into x of each window's
/// maximum (the first one in row-major window order on ties; NaN wins, as in PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    /// B
    pub batch: usize,
    /// C: channels (unchanged by pooling).
    pub c: usize,
    /// H: input height.
    pub h: usize,
    /// W: input width.
    pub w: usize,
    /// K: the window is K×K and the stride K.
    pub k: usize,
}

impl Pool2dSpec {
    /// Output height OH = H / K, rounded down (0 if K is 0).
    pub fn out_h(&self) -> usize {
        self.h.checked_div(self.k).unwrap_or(0)
    }
    /// Output width OW = W / K, rounded down (0 if K is 0).
    pub fn out_w(&self) -> usize {
        self.w.checked_div(self.k).unwrap_or(0)
    }
    /// Elements of the input x\[B,H,W,C\].
    pub fn input_len(&self) -> usize {
        self.batch * self.h * self.w * self.c
    }
    /// Elements of the output y\[B,OH,OW,C\] (and of idx).
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.c
    }
}

/// Average pooling over KH×KW windows with stride (KH, KW) over channels-last x\[B,H,W,C\] →
/// y\[B,OH,OW,C\], OH = H/KH and OW = W/KW (floor, no padding), as PyTorch's
/// `nn.AvgPool2d(k)` (KH = KW = k) and, with KH = H and KW = W, global average pooling
/// (`nn.AdaptiveAvgPool2d(1)` then a flatten: y\[B,1,1,C\] is y\[B,C\] channels-last). Each
/// output is the window's sum in row-major (ky, kx) order divided by KH·KW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AvgPool2dSpec {
    /// B
    pub batch: usize,
    /// C: channels (unchanged by pooling).
    pub c: usize,
    /// H: input height.
    pub h: usize,
    /// W: input width.
    pub w: usize,
    /// KH: window height and vertical stride.
    pub kh: usize,
    /// KW: window width and horizontal stride.
    pub kw: usize,
}

impl AvgPool2dSpec {
    /// Output height OH = H / KH, rounded down (0 if KH is 0).
    pub fn out_h(&self) -> usize {
        self.h.checked_div(self.kh).unwrap_or(0)
    }
    /// Output width OW = W / KW, rounded down (0 if KW is 0).
    pub fn out_w(&self) -> usize {
        self.w.checked_div(self.kw).unwrap_or(0)
    }
    /// Terms each output averages: KH·KW.
    pub fn window(&self) -> usize {
        self.kh * self.kw
    }
    /// Elements of the input x\[B,H,W,C\].
    pub fn input_len(&self) -> usize {
        self.batch * self.h * self.w * self.c
    }
    /// Elements of the output y\[B,OH,OW,C\].
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.c
    }
}

/// Inverted dropout over x\[B, F\] (any activation viewed as B rows of F values): each
/// element is kept with probability 1 − p and scaled by 1 / (1 − p), or dropped to 0.
///
/// The mask is not stored: it is a pure function of (seed, training step, layer, element)
/// ([`dropout_keep`]), recomputed by the backward pass and identical on every backend, and
/// the element index is the *global* minibatch row times F plus the column, so a data-parallel
/// rank (whose rows start at `row0`) draws exactly the bits one process would. With p = 0
/// every element is kept and scaled by 1: y = x exactly (evaluation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSpec {
    /// B: rows.
    pub rows: usize,
    /// F: values per row.
    pub cols: usize,
    /// Drop probability p, 0 ≤ p < 1.
    pub p: f32,
    /// The run's seed, folded to 32 bits ([`fold_seed`]).
    pub seed: u32,
    /// The layer's place in the network (a different mask per layer).
    pub layer: u32,
    /// The global minibatch row of row 0.
    pub row0: usize,
}

impl DropoutSpec {
    /// Elements of x, y, dy and dx: B·F.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// An element is kept when the top 24 bits of its hash are ≥ this: round(p·2²⁴).
    pub fn threshold(&self) -> u32 {
        (self.p as f64 * 16_777_216.0).round() as u32
    }
    /// The factor a kept element is multiplied by: 1 / (1 − p), rounded once to f32.
    pub fn scale(&self) -> f32 {
        (1.0 / (1.0 - self.p as f64)) as f32
    }
    /// Whether element `i` (0-based within this engine's x) is kept at training step `step`.
    pub fn keep(&self, step: u32, i: usize) -> bool {
        let (r, j) = (i / self.cols.max(1), i % self.cols.max(1));
        let global = ((self.row0 + r) as u32)
            .wrapping_mul(self.cols as u32)
            .wrapping_add(j as u32);
        dropout_keep(self.seed, step, self.layer, global, self.threshold())
    }
}

/// Batch normalisation over x\[R, C\]: R = B·P rows (P = H·W positions per sample for a
/// convolution's channels-last output, 1 for a dense layer's), C channels (or features),
/// normalised per channel as PyTorch's `BatchNorm2d`/`BatchNorm1d`.
///
/// Training ([`Op::BatchNormStats`]): mean and biased variance over the rows of the samples
/// whose label is < `classes` (a padding row of a last partial minibatch counts nowhere),
/// n of them; stats = [mean C | 1/√(var + ε) C | n]; the running statistics
/// [mean C | var C | batches 1] move by `momentum` towards the batch mean and the *unbiased*
/// variance var·n/(n − 1) (var itself when n = 1; nothing moves when n = 0), and the batch
/// count adds 1. Evaluation ([`Op::BatchNormEvalStats`]): stats from the running statistics.
/// [`Op::BatchNormApply`]: y = ((x − mean)·istd)·γ + β, then a ReLU when `relu`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormSpec {
    /// B: samples.
    pub batch: usize,
    /// P: rows per sample (H·W after a convolution, 1 after a dense layer).
    pub per_sample: usize,
    /// C: channels (features).
    pub c: usize,
    /// Classes: a sample whose label is ≥ this is padding.
    pub classes: usize,
    /// Running-statistics momentum (PyTorch's 0.1).
    pub momentum: f32,
    /// ε added to the variance (PyTorch's 1e-5).
    pub eps: f32,
    /// Whether a ReLU follows (applied by [`Op::BatchNormApply`]).
    pub relu: bool,
}

impl BatchNormSpec {
    /// R = B·P rows.
    pub fn rows(&self) -> usize {
        self.batch * self.per_sample
    }
    /// Elements of x, y, dy and dx: R·C.
    pub fn len(&self) -> usize {
        self.rows() * self.c
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Words of the stats and of the running-statistics buffers: 2C + 1.
    pub fn stats_len(&self) -> usize {
        2 * self.c + 1
    }
    /// Words of the backward coefficients: 3C ([γ·istd | Σdy/n | Σdy·x̂/n]).
    pub fn coef_len(&self) -> usize {
        3 * self.c
    }
}

/// A 64-bit seed folded to the 32 bits the dropout hash takes.
pub fn fold_seed(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// A bijective 32-bit mixer with good avalanche (Wellons' "lowbias32"); the same integer ops
/// in `shaders/dropout.wgsl`.
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The dropout decision for element `index` of layer `layer` at step `step`: its counter-based
/// hash's top 24 bits (uniform in 0..2²⁴) ≥ `threshold` keeps it.
pub fn dropout_keep(seed: u32, step: u32, layer: u32, index: u32, threshold: u32) -> bool {
    dropout_keep_keyed(dropout_key(seed, step, layer), index, threshold)
}

/// The part of [`dropout_keep`]'s hash shared by every element of a layer at a step.
pub fn dropout_key(seed: u32, step: u32, layer: u32) -> u32 {
    mix32(mix32(mix32(seed) ^ step) ^ layer)
}

/// [`dropout_keep`] from the layer's [`dropout_key`].
#[inline(always)]
pub fn dropout_keep_keyed(key: u32, index: u32, threshold: u32) -> bool {
    (mix32(mix32(key ^ index)) >> 8) >= threshold
}

/// Training-time augmentation of image samples, done by the gather (never in evaluation):
/// a random crop with zero padding `crop` (the sample shifted by (dy, dx), each uniform in
/// \[−crop, crop\], zeros where it leaves the image; torchvision's
/// `RandomCrop(size, padding=crop)`), then, when `flip`, a horizontal flip with probability 1/2.
/// Written `crop:4,flip`, `crop:4`, `flip` or `off` ([`Augment::parse`], `Display`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Augment {
    /// Zero padding P of the random crop (0: no crop).
    pub crop: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// No augmentation.
    pub const OFF: Augment = Augment {
        crop: 0,
        flip: false,
    };

    /// Whether nothing is done.
    pub fn is_off(&self) -> bool {
        self.crop == 0 && !self.flip
    }

    /// Parse a comma-separated list of `crop:P` and `flip`, or `off`/`none`
    /// (Err: the reason, one line).
    pub fn parse(s: &str) -> std::result::Result<Augment, String> {
        let mut a = Augment::OFF;
        let (mut crop_seen, mut flip_seen) = (false, false);
        for part in s.split(',').map(str::trim) {
            match part {
                "off" | "none" if s.trim() == part => return Ok(Augment::OFF),
                "flip" if !flip_seen => {
                    flip_seen = true;
                    a.flip = true;
                }
                _ => match part.strip_prefix("crop:") {
                    Some(p) if !crop_seen => {
                        crop_seen = true;
                        let ok = |p: &usize| (1..=4096).contains(p);
                        a.crop = p.parse().ok().filter(ok).ok_or_else(|| {
                            format!(
                                "`{part}`: the crop's padding must be a whole number of \
                                 pixels from 1 to 4096"
                            )
                        })?;
                    }
                    _ if part == "flip" || part.starts_with("crop:") => {
                        return Err(format!("`{part}` is given twice in `{s}`"))
                    }
                    _ => {
                        return Err(format!(
                            "`{part}` is not an augmentation: give crop:P (a random crop with \
                             zero padding P), flip (a random horizontal flip), both separated \
                             by a comma, or off"
                        ))
                    }
                },
            }
        }
        Ok(a)
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.crop, self.flip) {
            (0, false) => f.write_str("off"),
            (0, true) => f.write_str("flip"),
            (p, false) => write!(f, "crop:{p}"),
            (p, true) => write!(f, "crop:{p},flip"),
        }
    }
}

/// What the training gather does to each sample of a minibatch: [`Augment`] on images of
/// H×W×C (channels last), with per-sample draws from the counter-based hash of (seed, training
/// step, dataset sample index) ([`augment_draw`]) — the same on every backend and on every
/// data-parallel rank, and redrawn identically by a resumed run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatherAugment {
    /// What is done.
    pub augment: Augment,
    /// Image height H.
    pub h: usize,
    /// Image width W.
    pub w: usize,
    /// Channels C (innermost).
    pub c: usize,
    /// The run's seed, folded to 32 bits ([`fold_seed`]).
    pub seed: u32,
    /// u32 training-step counter (one word).
    pub step: BufId,
}

/// One sample's augmentation: its shift and whether it is flipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Rows shifted: output row y reads input row y + dy.
    pub dy: i32,
    /// Columns shifted: output column x reads input column x' + dx, x' = x or W − 1 − x.
    pub dx: i32,
    /// Mirrored left to right.
    pub flip: bool,
}

/// Kept apart from the dropout layers' keys (which fold in a layer index).
const AUGMENT_SALT: u32 = 0x6175_6721;

/// The draw for dataset sample `sample` at training step `step`: base = hash of (seed, step,
/// salt, sample); dy = mix32(base ^ 1) mod (2P + 1) − P, dx likewise from base ^ 2, flip = the
/// top bit of mix32(base ^ 3). `shaders/gather.wgsl` does the same u32 operations.
pub fn augment_draw(a: Augment, seed: u32, step: u32, sample: u32) -> AugmentDraw {
    let base = mix32(mix32(mix32(mix32(seed) ^ step) ^ AUGMENT_SALT) ^ sample);
    let span = 2 * a.crop as u32 + 1;
    let shift = |k: u32| (mix32(base ^ k) % span) as i32 - a.crop as i32;
    AugmentDraw {
        dy: shift(1),
        dx: shift(2),
        flip: a.flip && (mix32(base ^ 3) >> 31) == 1,
    }
}

impl GatherAugment {
    /// Where value `f` (of H·W·C) of the augmented sample comes from in the original one, or
    /// None where the shifted image is zero padding.
    pub fn source(&self, d: AugmentDraw, f: usize) -> Option<usize> {
        let (c, w) = (self.c, self.w);
        let ch = f % c;
        let x = (f / c) % w;
        let y = f / (c * w);
        let xs = if d.flip { w - 1 - x } else { x };
        let sy = y as i64 + d.dy as i64;
        let sx = xs as i64 + d.dx as i64;
        if sy < 0 || sy >= self.h as i64 || sx < 0 || sx >= w as i64 {
            return None;
        }
        Some((sy as usize * w + sx as usize) * c + ch)
    }
}

/// Per-channel normalisation of the samples, `(x − mean) / std`, applied by the gather to
/// every minibatch (training and evaluation) after the bytes' scaling to \[0, 1\] and after the
/// augmentation (whose zero padding is normalised as a black pixel is). Written `off`, `auto`
/// (the training set's own mean and standard deviation per channel, resolved to values when a
/// run starts) or `MEAN/STD` with one value each for every channel or one per channel,
/// comma-separated (`0.2860/0.3530`, `0.4914,0.4822,0.4465/0.247,0.243,0.261`)
/// ([`Normalize::parse`], `Display`). Flat samples have one channel.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// The values as they are (the default).
    #[default]
    Off,
    /// The training set's per-channel mean and population standard deviation.
    Auto,
    /// Given values: `mean` and `std` of equal length, 1 or the channel count.
    Values {
        /// Subtracted from each channel.
        mean: Vec<f32>,
        /// Divides each channel (> 0).
        std: Vec<f32>,
    },
}

impl Normalize {
    /// Whether nothing is done.
    pub fn is_off(&self) -> bool {
        *self == Normalize::Off
    }

    /// Parse `off`, `auto` or `MEAN/STD` (comma-separated lists of one value or one per
    /// channel); Err: the reason, one line.
    pub fn parse(s: &str) -> std::result::Result<Normalize, String> {
        match s.trim() {
            "off" | "none" => return Ok(Normalize::Off),
            "auto" => return Ok(Normalize::Auto),
            _ => {}
        }
        let Some((m, d)) = s.split_once('/') else {
            return Err(format!(
                "`{s}` is not a normalisation: give auto (the training set's mean and standard \
                 deviation per channel), MEAN/STD (e.g. 0.286/0.353, or one value per channel: \
                 0.49,0.48,0.45/0.25,0.24,0.26) or off"
            ));
        };
        let list = |t: &str, what: &str| -> std::result::Result<Vec<f32>, String> {
            t.split(',')
                .map(|v| {
                    v.trim().parse::<f32>().map_err(|_| {
                        format!("`{}` in `{s}` is not a number (the {what})", v.trim())
                    })
                })
                .collect()
        };
        let n = Normalize::Values {
            mean: list(m, "mean")?,
            std: list(d, "standard deviation")?,
        };
        n.check()?;
        Ok(n)
    }

    /// Given values must be finite, the standard deviations > 0, as many of each; Err: the
    /// reason, one line.
    pub fn check(&self) -> std::result::Result<(), String> {
        let Normalize::Values { mean, std } = self else {
            return Ok(());
        };
        if mean.is_empty() || mean.len() != std.len() {
            return Err(format!(
                "{} means but {} standard deviations: give as many of each (one, or one per \
                 channel)",
                mean.len(),
                std.len()
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {m} is not a finite number"));
        }
        if let Some(d) = std.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
            return Err(format!(
                "standard deviation {d} must be a finite number > 0"
            ));
        }
        Ok(())
    }

    /// The table the gather reads for `channels` channels: C means then C reciprocals of the
    /// standard deviations (rounded once to f32; the gather multiplies by them); None when off.
    /// Err (the reason) for `auto` (resolve it first) or a value count that is neither 1 nor
    /// `channels`.
    pub fn table(&self, channels: usize) -> std::result::Result<Option<Vec<f32>>, String> {
        match self {
            Normalize::Off => Ok(None),
            Normalize::Auto => Err("auto must be resolved against the training set".into()),
            Normalize::Values { mean, std } => {
                self.check()?;
                if mean.len() != 1 && mean.len() != channels {
                    return Err(format!(
                        "{} values each, but the samples have {channels} channel{}: give one \
                         value each or one per channel",
                        mean.len(),
                        if channels == 1 { "" } else { "s" }
                    ));
                }
                let at = |v: &[f32], c: usize| v[if v.len() == 1 { 0 } else { c }];
                let mut t: Vec<f32> = (0..channels).map(|c| at(mean, c)).collect();
                t.extend((0..channels).map(|c| (1.0 / at(std, c) as f64) as f32));
                Ok(Some(t))
            }
        }
    }

    /// The per-channel mean and population standard deviation (f64 sums, rounded once) of the
    /// values of `features` (`kind`, `channels` innermost), bytes taken as the gather scales
    /// them (b / 255 in f32). Err (the reason) when there are no values or a channel is
    /// constant (its standard deviation 0 would divide by zero).
    pub fn auto(
        features: &[u8],
        kind: FeatureType,
        channels: usize,
    ) -> std::result::Result<Normalize, String> {
        let c = channels.max(1);
        let values = features.len() / kind.size();
        if values == 0 || !values.is_multiple_of(c) {
            return Err(format!(
                "no values to compute a mean from ({values} values in {c} channels)"
            ));
        }
        let value = |i: usize| -> f64 {
            match kind {
                FeatureType::U8 => (features[i] as f32 / 255.0) as f64,
                FeatureType::F32 => {
                    f32::from_le_bytes(features[4 * i..4 * i + 4].try_into().expect("four bytes"))
                        as f64
                }
            }
        };
        let per = (values / c) as f64;
        let mut sum = vec![0.0f64; c];
        for i in 0..values {
            sum[i % c] += value(i);
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / per).collect();
        let mut sq = vec![0.0f64; c];
        for i in 0..values {
            let d = value(i) - mean[i % c];
            sq[i % c] += d * d;
        }
        let std: Vec<f64> = sq.iter().map(|s| (s / per).sqrt()).collect();
        if let Some(k) = std.iter().position(|&d| !(d > 0.0 && d.is_finite())) {
            return Err(format!(
                "channel {k} of the training samples is constant (standard deviation 0): give \
                 MEAN/STD values instead of auto"
            ));
        }
        Ok(Normalize::Values {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.iter().map(|&d| d as f32).collect(),
        })
    }
}

impl std::fmt::Display for Normalize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        match self {
            Normalize::Off => f.write_str("off"),
            Normalize::Auto => f.write_str("auto"),
            Normalize::Values { mean, std } => write!(f, "{}/{}", list(mean), list(std)),
        }
    }
}

/// What the gather normalises with: value f of a sample (channel f mod `channels`) becomes
/// `(v − table[ch]) · table[channels + ch]` ([`normalized`]), in training and evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatherNormalize {
    /// Channels C (innermost; 1 for flat samples).
    pub channels: usize,
    /// f32 \[2C\]: the means, then the reciprocals of the standard deviations
    /// ([`Normalize::table`]).
    pub table: BufId,
}

/// `(v − mean) · inv_std` in f32, as `shaders/gather.wgsl` computes it (each operation
/// correctly rounded, no fused multiply-add).
#[inline]
pub fn normalized(v: f32, mean: f32, inv_std: f32) -> f32 {
    (v - mean) * inv_std
}

/// Hyperparameters of one Adam update, with PyTorch's `torch.optim.Adam` semantics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Learning rate α (the base rate; a schedule scales it per update).
    pub lr: f32,
    /// β1: decay of the first-moment (mean) estimate m.
    pub beta1: f32,
    /// β2: decay of the second-moment estimate v.
    pub beta2: f32,
    /// ε added to √v̂ in the denominator.
    pub eps: f32,
    /// L2 coefficient λ added to the gradient (0 for biases), like PyTorch's weight_decay.
    pub l2: f32,
}

impl AdamParams {
    /// The per-step constants of update number `t` (1-based), computed in f64 as PyTorch does
    /// in Python floats and rounded once: [lr / (1 − β1ᵗ), √(1 − β2ᵗ)].
    pub fn schedule(&self, t: usize) -> [f32; 2] {
        self.schedule_at(t, self.lr as f64)
    }

    /// [`AdamParams::schedule`] with the learning rate of update `t` given (a schedule's).
    pub fn schedule_at(&self, t: usize, lr: f64) -> [f32; 2] {
        let t = t.max(1) as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        [(lr / bc1) as f32, bc2.sqrt() as f32]
    }
}

/// A buffer of 32-bit words owned by a backend (f32 or u32, as the op using it says).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufId(pub usize);

/// A dataset resident in a backend (pixels as bytes, labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataId(pub usize);

/// One operation of a program. A program (a list of ops) is written once against these
/// descriptions; the GPU backend prepares each op as a launch and replays them, the CPU backend
/// executes each with its CPU twin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// x\[B,P\] = images[order[cursor + b]] / 255, y\[B\] = labels[order[cursor + b]] for
    /// cursor + b < `len`; rows at or past `len` are padding (zeros and [`PADDING_LABEL`]).
    /// `len` ≤ the dataset's samples: the order entries in use (a data-parallel rank's share).
    Gather {
        /// The resident dataset read.
        data: DataId,
        /// B: rows written to x and y.
        rows: usize,
        /// Order entries in use; rows from `cursor + b ≥ len` on are padding.
        len: usize,
        /// u32 sample indices into the dataset, in visiting order.
        order: BufId,
        /// u32 counter: the position in `order` of row 0.
        cursor: BufId,
        /// Output f32 x\[B,P\], P pixels per sample, scaled to [0, 1].
        x: BufId,
        /// Output u32 labels y\[B\].
        y: BufId,
        /// Training-time augmentation (None: the samples as they are, as in evaluation).
        augment: Option<GatherAugment>,
        /// Per-channel normalisation after the scaling and the augmentation (None: off).
        normalize: Option<GatherNormalize>,
    },
    /// cursor += by (a u32 counter).
    Advance {
        /// The u32 counter incremented.
        cursor: BufId,
        /// The increment.
        by: usize,
    },
    /// C = op(A)·op(B) with the epilogue; `aux` is the bias \[N\] or the mask \[M,N\].
    Matmul {
        /// Shape, transposes, epilogue and accumulation.
        spec: MatmulSpec,
        /// A: \[M,K\], or \[K,M\] if `spec.trans_a`.
        a: BufId,
        /// B: \[K,N\], or \[N,K\] if `spec.trans_b`.
        b: BufId,
        /// Bias \[N\] (Bias, BiasRelu), mask \[M,N\] (ReluMask), none otherwise.
        aux: Option<BufId>,
        /// Output C\[M,N\].
        c: BufId,
    },
    /// db\[O\] = Σ_B dy\[B,O\]
    BiasBackward {
        /// B: rows of dy.
        rows: usize,
        /// O: columns of dy, elements of db.
        cols: usize,
        /// Gradient with respect to the layer's output, dy\[B,O\].
        dy: BufId,
        /// Output bias gradient db\[O\].
        db: BufId,
    },
    /// cols[B·OH·OW, C·K·K] from x\[B,H,W,C\].
    Im2col {
        /// The convolution whose columns are built.
        spec: Conv2dSpec,
        /// Input x\[B,H,W,C\].
        x: BufId,
        /// Output cols[B·OH·OW, C·K·K].
        cols: BufId,
    },
    /// dx\[B,H,W,C\] = Σ of the dcols entries im2col copied from each element, zero where
    /// mask ≤ 0.
    Col2im {
        /// The convolution whose columns are folded back.
        spec: Conv2dSpec,
        /// Gradient of the columns, dcols[B·OH·OW, C·K·K].
        dcols: BufId,
        /// Optional \[B,H,W,C\] activation of the layer below; where ≤ 0, dx is 0 (its ReLU).
        mask: Option<BufId>,
        /// Output dx\[B,H,W,C\].
        dx: BufId,
    },
    /// y, idx from x (see [`Pool2dSpec`]).
    MaxPoolForward {
        /// The pooling.
        spec: Pool2dSpec,
        /// Input x\[B,H,W,C\].
        x: BufId,
        /// Output y\[B,OH,OW,C\].
        y: BufId,
        /// Output u32 idx\[B,OH,OW,C\]: flat index into x of each maximum.
        idx: BufId,
    },
    /// dx = dy at each window's maximum, else 0; zero where mask ≤ 0.
    MaxPoolBackward {
        /// The pooling.
        spec: Pool2dSpec,
        /// Gradient of the output, dy\[B,OH,OW,C\].
        dy: BufId,
        /// The forward pass's u32 idx\[B,OH,OW,C\].
        idx: BufId,
        /// Optional \[B,H,W,C\] activation of the layer below; where ≤ 0, dx is 0 (its ReLU).
        mask: Option<BufId>,
        /// Output dx\[B,H,W,C\].
        dx: BufId,
    },
    /// y = the mean of each window of x (see [`AvgPool2dSpec`]).
    AvgPoolForward {
        /// The pooling.
        spec: AvgPool2dSpec,
        /// Input x\[B,H,W,C\].
        x: BufId,
        /// Output y\[B,OH,OW,C\].
        y: BufId,
    },
    /// dx = dy of the element's window / (KH·KW), 0 past the last whole window; zero where
    /// mask ≤ 0.
    AvgPoolBackward {
        /// The pooling.
        spec: AvgPool2dSpec,
        /// Gradient of the output, dy\[B,OH,OW,C\].
        dy: BufId,
        /// Optional \[B,H,W,C\] activation of the layer below; where ≤ 0, dx is 0 (its ReLU).
        mask: Option<BufId>,
        /// Output dx\[B,H,W,C\].
        dx: BufId,
    },
    /// y = x·scale where kept, else 0 (see [`DropoutSpec`]).
    DropoutForward {
        /// The dropout.
        spec: DropoutSpec,
        /// u32 training-step counter (one word) seeding the mask.
        step: BufId,
        /// Input x\[B,F\].
        x: BufId,
        /// Output y\[B,F\].
        y: BufId,
    },
    /// dx = dy·scale where the forward pass kept the element, else 0; zero where mask ≤ 0.
    DropoutBackward {
        /// The dropout.
        spec: DropoutSpec,
        /// u32 training-step counter, as the forward pass read it.
        step: BufId,
        /// Gradient of the output, dy\[B,F\].
        dy: BufId,
        /// Optional \[B,F\] activation of the layer below; where ≤ 0, dx is 0 (its ReLU).
        mask: Option<BufId>,
        /// Output dx\[B,F\].
        dx: BufId,
    },
    /// Training: stats = the batch's [mean | 1/√(var + ε) | n] over non-padding rows, and the
    /// running statistics updated in place (see [`BatchNormSpec`]).
    BatchNormStats {
        /// The normalisation.
        spec: BatchNormSpec,
        /// Input x\[R,C\].
        x: BufId,
        /// u32 labels\[B\]; ≥ classes marks a padding sample.
        labels: BufId,
        /// Running statistics [mean C | var C | batches 1], updated in place.
        running: BufId,
        /// Output stats [mean C | istd C | n 1].
        stats: BufId,
    },
    /// Evaluation: stats = [running mean | 1/√(running var + ε) | 0].
    BatchNormEvalStats {
        /// The normalisation.
        spec: BatchNormSpec,
        /// Running statistics [mean C | var C | batches 1].
        running: BufId,
        /// Output stats [mean C | istd C | n 1].
        stats: BufId,
    },
    /// y = ((x − mean)·istd)·γ + β (ReLU when `spec.relu`).
    BatchNormApply {
        /// The normalisation.
        spec: BatchNormSpec,
        /// Input x\[R,C\].
        x: BufId,
        /// Stats [mean C | istd C | n 1].
        stats: BufId,
        /// γ\[C\].
        w: BufId,
        /// β\[C\].
        b: BufId,
        /// Output y\[R,C\].
        y: BufId,
    },
    /// Parameter gradients over non-padding rows: dγ = Σ dy·x̂, dβ = Σ dy (x̂ = (x −
    /// mean)·istd), and coef = [γ·istd | dβ/n | dγ/n] for [`Op::BatchNormInputGrad`].
    BatchNormBackward {
        /// The normalisation.
        spec: BatchNormSpec,
        /// The forward pass's input x\[R,C\].
        x: BufId,
        /// u32 labels\[B\].
        labels: BufId,
        /// The forward pass's stats.
        stats: BufId,
        /// γ\[C\].
        w: BufId,
        /// Gradient w.r.t. the output (the ReLU already applied), dy\[R,C\].
        dy: BufId,
        /// Output dγ\[C\].
        dw: BufId,
        /// Output dβ\[C\].
        db: BufId,
        /// Output coef\[3C\].
        coef: BufId,
    },
    /// dx = γ·istd·(dy − dβ/n − x̂·dγ/n) on non-padding rows, 0 on padding rows (PyTorch's
    /// batch-statistics gradient); zero where mask ≤ 0.
    BatchNormInputGrad {
        /// The normalisation.
        spec: BatchNormSpec,
        /// The forward pass's input x\[R,C\].
        x: BufId,
        /// u32 labels\[B\].
        labels: BufId,
        /// The forward pass's stats.
        stats: BufId,
        /// [`Op::BatchNormBackward`]'s coef.
        coef: BufId,
        /// dy\[R,C\].
        dy: BufId,
        /// Optional \[R,C\] activation of the layer below; where ≤ 0, dx is 0 (its ReLU).
        mask: Option<BufId>,
        /// Output dx\[R,C\].
        dx: BufId,
    },
    /// logits\[B,C\], labels\[B\] → probs\[B,C\], loss\[B\].
    SoftmaxXentForward {
        /// B
        rows: usize,
        /// C: classes.
        classes: usize,
        /// Input logits\[B,C\].
        logits: BufId,
        /// u32 labels\[B\] (≥ C, e.g. [`PADDING_LABEL`], for a padding row).
        labels: BufId,
        /// Output softmax probabilities probs\[B,C\].
        probs: BufId,
        /// Output per-row cross-entropy loss\[B\].
        loss: BufId,
        /// Label smoothing ε (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`): the target is
        /// (1 − ε)·onehot + ε/C, so loss = (1 − ε)·(−log p_y) + ε/C·Σ_c(−log p_c). 0: plain
        /// cross-entropy.
        smoothing: f32,
    },
    /// dlogits\[B,C\] = (probs − onehot(labels))·scale.
    SoftmaxXentBackward {
        /// B
        rows: usize,
        /// C: classes.
        classes: usize,
        /// Factor applied to every gradient (the engine's: 1 / the global batch size).
        scale: f32,
        /// The forward pass's probs\[B,C\].
        probs: BufId,
        /// u32 labels\[B\].
        labels: BufId,
        /// Output dlogits\[B,C\].
        dlogits: BufId,
        /// Label smoothing ε: dlogits = (probs − (1 − ε)·onehot − ε/C)·scale (0: none).
        smoothing: f32,
    },
    /// acc += (Σ loss, #correct, #rows) over non-padding rows (acc is a [`MetricsAcc`]).
    Metrics {
        /// B
        rows: usize,
        /// C: classes; a label ≥ C marks a padding row.
        classes: usize,
        /// Scores probs\[B,C\] whose argmax is the prediction.
        probs: BufId,
        /// u32 labels\[B\].
        labels: BufId,
        /// Per-row loss\[B\].
        loss: BufId,
        /// The [`MetricsAcc`] (4 words) updated in place.
        acc: BufId,
    },
    /// SGD with momentum over n elements.
    Sgd {
        /// Elements updated.
        n: usize,
        /// Learning rate, momentum, L2.
        hp: SgdParams,
        /// Parameters w\[n\], updated in place.
        w: BufId,
        /// Gradient g\[n\].
        g: BufId,
        /// Momentum buffer v\[n\], updated in place.
        v: BufId,
        /// A learning-rate schedule: update t uses this table's lr instead of `hp.lr`
        /// (None: `hp.lr` throughout).
        lr_table: Option<StepTable>,
    },
    /// Adam over n elements; `sched` holds [`AdamParams::schedule`] pairs, `step` the number of
    /// updates done (a u32 counter advanced once per training step).
    Adam {
        /// Elements updated.
        n: usize,
        /// β1, β2, ε, L2 (the learning rate comes from `sched`).
        hp: AdamParams,
        /// Parameters w\[n\], updated in place.
        w: BufId,
        /// Gradient g\[n\].
        g: BufId,
        /// First moment m\[n\], updated in place.
        m: BufId,
        /// Second moment v\[n\], updated in place.
        v: BufId,
        /// f32 [`AdamParams::schedule`] pairs of updates 1, 2, …; past the end, the last serves.
        sched: BufId,
        /// u32 counter: updates done, which is the index of the pair in `sched` used.
        step: BufId,
    },
    /// y = a + b element by element, then max(0, ·) when `relu` (a residual block's join).
    AddForward {
        /// Elements of each buffer (B × per-sample values).
        len: usize,
        /// Whether a ReLU follows the sum.
        relu: bool,
        /// The first summand a\[len\] (a block's last layer).
        a: BufId,
        /// The second summand b\[len\] (the skip path).
        b: BufId,
        /// Output y\[len\].
        y: BufId,
    },
    /// dx = dy where mask > 0 (everywhere without a mask), else 0; with `accumulate`, added
    /// to dx instead of overwriting it: an add's gradient passing to one of its summands, and
    /// an activation's gradient summed over its two readers.
    AddBackward {
        /// Elements of each buffer.
        len: usize,
        /// Whether dx is added to (updated in place) rather than written.
        accumulate: bool,
        /// Gradient dy\[len\].
        dy: BufId,
        /// Optional \[len\] activation of the layer below; where ≤ 0, nothing passes (its ReLU).
        mask: Option<BufId>,
        /// Output (or accumulator) dx\[len\].
        dx: BufId,
    },
    /// Decoupled weight decay over n elements (AdamW's first half, PyTorch's
    /// `param.mul_(1 − lr·weight_decay)`): w ← w·f, f the `factors` entry of this update.
    Decay {
        /// Elements updated.
        n: usize,
        /// Parameters w\[n\], scaled in place.
        w: BufId,
        /// The factors 1 − lr_t·λ of updates 1, 2, … (computed in f64, rounded once).
        factors: StepTable,
    },
}

impl Op {
    /// The buffers this op reads, and the buffers it writes (an accumulator it updates in
    /// place — the cursor, the metrics, C of an accumulating product — counts as written).
    pub fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        match *self {
            Op::Gather {
                order,
                cursor,
                x,
                y,
                augment,
                normalize,
                ..
            } => (
                [order, cursor]
                    .into_iter()
                    .chain(augment.map(|a| a.step))
                    .chain(normalize.map(|n| n.table))
                    .collect(),
                vec![x, y],
            ),
            Op::Advance { cursor, .. } => (vec![], vec![cursor]),
            Op::Matmul { a, b, aux, c, .. } => {
                (std::iter::once(a).chain([b]).chain(aux).collect(), vec![c])
            }
            Op::BiasBackward { dy, db, .. } => (vec![dy], vec![db]),
            Op::Im2col { x, cols, .. } => (vec![x], vec![cols]),
            Op::Col2im {
                dcols, mask, dx, ..
            } => (std::iter::once(dcols).chain(mask).collect(), vec![dx]),
            Op::MaxPoolForward { x, y, idx, .. } => (vec![x], vec![y, idx]),
            Op::MaxPoolBackward {
                dy, idx, mask, dx, ..
            } => ([dy, idx].into_iter().chain(mask).collect(), vec![dx]),
            Op::AvgPoolForward { x, y, .. } => (vec![x], vec![y]),
            Op::AvgPoolBackward { dy, mask, dx, .. } => {
                (std::iter::once(dy).chain(mask).collect(), vec![dx])
            }
            Op::BatchNormStats {
                x,
                labels,
                running,
                stats,
                ..
            } => (vec![x, labels], vec![running, stats]),
            Op::BatchNormEvalStats { running, stats, .. } => (vec![running], vec![stats]),
            Op::BatchNormApply {
                x, stats, w, b, y, ..
            } => (vec![x, stats, w, b], vec![y]),
            Op::BatchNormBackward {
                x,
                labels,
                stats,
                w,
                dy,
                dw,
                db,
                coef,
                ..
            } => (vec![x, labels, stats, w, dy], vec![dw, db, coef]),
            Op::BatchNormInputGrad {
                x,
                labels,
                stats,
                coef,
                dy,
                mask,
                dx,
                ..
            } => (
                [x, labels, stats, coef, dy]
                    .into_iter()
                    .chain(mask)
                    .collect(),
                vec![dx],
            ),
            Op::DropoutForward { step, x, y, .. } => (vec![step, x], vec![y]),
            Op::DropoutBackward {
                step, dy, mask, dx, ..
            } => ([step, dy].into_iter().chain(mask).collect(), vec![dx]),
            Op::SoftmaxXentForward {
                logits,
                labels,
                probs,
                loss,
                ..
            } => (vec![logits, labels], vec![probs, loss]),
            Op::SoftmaxXentBackward {
                probs,
                labels,
                dlogits,
                ..
            } => (vec![probs, labels], vec![dlogits]),
            Op::Metrics {
                probs,
                labels,
                loss,
                acc,
                ..
            } => (vec![probs, labels, loss], vec![acc]),
            Op::Sgd {
                w, g, v, lr_table, ..
            } => {
                let mut reads = vec![g];
                reads.extend(lr_table.iter().flat_map(|t| [t.table, t.step]));
                (reads, vec![w, v])
            }
            Op::Adam {
                w,
                g,
                m,
                v,
                sched,
                step,
                ..
            } => (vec![g, sched, step], vec![w, m, v]),
            Op::AddForward { a, b, y, .. } => (vec![a, b], vec![y]),
            Op::AddBackward { dy, mask, dx, .. } => {
                ([dy].into_iter().chain(mask).collect(), vec![dx])
            }
            Op::Decay { w, factors, .. } => (vec![factors.table, factors.step], vec![w]),
        }
    }

    /// Whether every buffer this op writes is distinct from the others it writes and from
    /// every buffer it reads (no op of the engine aliases; a backend may rely on it).
    pub fn is_alias_free(&self) -> bool {
        let (reads, writes) = self.buffers();
        writes
            .iter()
            .enumerate()
            .all(|(i, w)| !reads.contains(w) && !writes[i + 1..].contains(w))
    }
}

impl std::fmt::Display for MatmulSpec {
    /// `M×N×K`, the transposes of A and B, and the epilogue when there is one:
    /// e.g. `100x512x784 NT BiasRelu`, `512x784x100 TN`, `1024x1024x1024 NN +=`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |x: bool| if x { 'T' } else { 'N' };
        write!(
            f,
            "{}x{}x{} {}{}",
            self.m,
            self.n,
            self.k,
            t(self.trans_a),
            t(self.trans_b)
        )?;
        if self.epilogue != Epilogue::None {
            write!(f, " {:?}", self.epilogue)?;
        }
        if self.accumulate {
            write!(f, " +=")?;
        }
        Ok(())
    }
}

impl Op {
    /// The op's name in reports (`wgtrain bench`), snake case: `matmul`, `maxpool_forward`, …
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gather { .. } => "gather",
            Op::Advance { .. } => "advance",
            Op::Matmul { .. } => "matmul",
            Op::BiasBackward { .. } => "bias_backward",
            Op::Im2col { .. } => "im2col",
            Op::Col2im { .. } => "col2im",
            Op::MaxPoolForward { .. } => "maxpool_forward",
            Op::MaxPoolBackward { .. } => "maxpool_backward",
            Op::AvgPoolForward { .. } => "avgpool_forward",
            Op::AvgPoolBackward { .. } => "avgpool_backward",
            Op::BatchNormStats { .. } => "batchnorm_stats",
            Op::BatchNormEvalStats { .. } => "batchnorm_eval_stats",
            Op::BatchNormApply { .. } => "batchnorm_apply",
            Op::BatchNormBackward { .. } => "batchnorm_backward",
            Op::BatchNormInputGrad { .. } => "batchnorm_input_grad",
            Op::DropoutForward { .. } => "dropout_forward",
            Op::DropoutBackward { .. } => "dropout_backward",
            Op::SoftmaxXentForward { .. } => "softmax_xent_forward",
            Op::SoftmaxXentBackward { .. } => "softmax_xent_backward",
            Op::Metrics { .. } => "metrics",
            Op::Sgd { .. } => "sgd",
            Op::Adam { .. } => "adam",
            Op::AddForward { .. } => "add_forward",
            Op::AddBackward { .. } => "add_backward",
            Op::Decay { .. } => "decay",
        }
    }

    /// What sizes the op's work, without its buffers or hyperparameters, for reports: two ops
    /// with the same [`name`](Op::name) and shape do the same work on buffers of the same
    /// sizes. E.g. `100x512x784 NT BiasRelu` (a product, see [`MatmulSpec`]'s `Display`),
    /// `100x28x28x1 k5 s1 p2 o6` (a convolution's x\[B,H,W,C\], kernel, stride, padding and
    /// output channels), `100x28x28x6 k2` (a pooling; `ReluMask` after a gradient zeroed
    /// through the ReLU below), `100x10` (rows × columns or classes),
    /// `n=401920` (an update), `100 of 60000` (a gather's rows and order entries in use).
    pub fn shape(&self) -> String {
        let conv = |s: &Conv2dSpec| {
            format!(
                "{}x{}x{}x{} k{} s{} p{} o{}",
                s.batch, s.h, s.w, s.c_in, s.k, s.stride, s.pad, s.c_out
            )
        };
        let pool = |s: &Pool2dSpec| format!("{}x{}x{}x{} k{}", s.batch, s.h, s.w, s.c, s.k);
        let avg =
            |s: &AvgPool2dSpec| format!("{}x{}x{}x{} k{}x{}", s.batch, s.h, s.w, s.c, s.kh, s.kw);
        let masked = |m: &Option<BufId>| if m.is_some() { " ReluMask" } else { "" };
        let bn = |s: &BatchNormSpec| format!("{}x{}x{}", s.batch, s.per_sample, s.c);
        match self {
            Op::Gather { rows, len, .. } => format!("{rows} of {len}"),
            Op::Advance { by, .. } => format!("by {by}"),
            Op::Matmul { spec, .. } => spec.to_string(),
            Op::BiasBackward { rows, cols, .. } => format!("{rows}x{cols}"),
            Op::Im2col { spec, .. } => conv(spec),
            Op::Col2im { spec, mask, .. } => conv(spec) + masked(mask),
            Op::MaxPoolForward { spec, .. } => pool(spec),
            Op::MaxPoolBackward { spec, mask, .. } => pool(spec) + masked(mask),
            Op::AvgPoolForward { spec, .. } => avg(spec),
            Op::AvgPoolBackward { spec, mask, .. } => avg(spec) + masked(mask),
            Op::BatchNormStats { spec, .. }
            | Op::BatchNormEvalStats { spec, .. }
            | Op::BatchNormBackward { spec, .. } => bn(spec),
            Op::BatchNormApply { spec, .. } => bn(spec) + if spec.relu { " Relu" } else { "" },
            Op::BatchNormInputGrad { spec, mask, .. } => bn(spec) + masked(mask),
            Op::DropoutForward { spec, .. } => format!("{}x{} p{}", spec.rows, spec.cols, spec.p),
            Op::DropoutBackward { spec, mask, .. } => {
                format!("{}x{} p{}", spec.rows, spec.cols, spec.p) + masked(mask)
            }
            Op::SoftmaxXentForward { rows, classes, .. }
            | Op::SoftmaxXentBackward { rows, classes, .. }
            | Op::Metrics { rows, classes, .. } => format!("{rows}x{classes}"),
            Op::Sgd { n, .. } | Op::Adam { n, .. } | Op::Decay { n, .. } => format!("n={n}"),
            Op::AddForward { len, relu, .. } => {
                format!("n={len}") + if *relu { " Relu" } else { "" }
            }
            Op::AddBackward {
                len,
                accumulate,
                mask,
                ..
            } => format!("n={len}") + masked(mask) + if *accumulate { " +=" } else { "" },
        }
    }
}

/// What one sample is: a flat vector of features, or an image of `c` channels, `h` rows and
/// `w` columns (described C×H×W, as the user and PyTorch write it; held channels-last, see
/// `data::Dataset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleShape {
    /// This many values per sample.
    Flat(usize),
    /// An image.
    Image {
        /// Channels C.
        c: usize,
        /// Height H (rows).
        h: usize,
        /// Width W (columns).
        w: usize,
    },
}

impl SampleShape {
    /// Values per sample.
    pub fn len(self) -> usize {
        match self {
            SampleShape::Flat(n) => n,
            SampleShape::Image { c, h, w } => c * h * w,
        }
    }

    /// Whether a sample holds no values.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// A single-channel `h × w` image (MNIST's shape).
    pub fn gray(h: usize, w: usize) -> Self {
        SampleShape::Image { c: 1, h, w }
    }
}

impl std::fmt::Display for SampleShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleShape::Flat(n) => write!(f, "{n}"),
            SampleShape::Image { c, h, w } => write!(f, "{c}x{h}x{w}"),
        }
    }
}

/// How a dataset's feature bytes hold its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FeatureType {
    /// One byte a value, 0 to 255, scaled to [0, 1] when gathered (image pixels).
    #[default]
    U8,
    /// Four bytes a value, a little-endian `f32` used as it is.
    F32,
}

impl FeatureType {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            FeatureType::U8 => 1,
            FeatureType::F32 => 4,
        }
    }
}
