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
    /// C = A·B + bias[N]
    Bias,
    /// C = max(A·B + bias[N], 0)
    BiasRelu,
    /// C = A·B where aux[M,N] > 0, else 0 (ReLU backward through the layer below).
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

/// Shape and flavour of one product C[M,N] = op(A)[M,K]·op(B)[K,N].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored as [K, M].
    pub trans_a: bool,
    /// B is stored as [N, K].
    pub trans_b: bool,
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

/// Hyperparameters of one SGD update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    pub lr: f32,
    pub momentum: f32,
    /// L2 coefficient λ (0 for biases).
    pub l2: f32,
}

/// The metrics accumulator as laid out in `metrics.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MetricsAcc {
    pub loss_sum: f32,
    pub correct: u32,
    pub seen: u32,
    pub nonfinite: u32,
}

/// The label value that marks a padding row (see `gather.wgsl`).
pub const PADDING_LABEL: u32 = u32::MAX;

/// A 2-D convolution over channels-last activations x[B,H,W,C] with weights w[O, C·K·K]
/// (PyTorch's [O,C,K,K] flattened) and bias[O], zero padding `pad` on every side, stride
/// `stride`. The engine runs it as im2col + the tuned matmul: cols[B·OH·OW, C·K·K] with column
/// index c·K·K + ky·K + kx, then y[B·OH·OW, O] = cols·wᵀ, which is y[B,OH,OW,O] channels-last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// B
    pub batch: usize,
    /// C: input channels.
    pub c_in: usize,
    /// H, W: input height and width.
    pub h: usize,
    pub w: usize,
    /// O: output channels.
    pub c_out: usize,
    /// K: the kernel is K×K.
    pub k: usize,
    pub stride: usize,
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
    /// Elements of the input x[B,H,W,C].
    pub fn input_len(&self) -> usize {
        self.batch * self.h * self.w * self.c_in
    }
    /// Elements of the output y[B,OH,OW,O].
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

/// Max-pooling K×K with stride K over channels-last x[B,H,W,C] → y[B,H/K,W/K,C] (floor, as
/// PyTorch's default), remembering in idx[B,OH,OW,C] the flat index into x of each window's
/// maximum (the first one in row-major window order on ties; NaN wins, as in PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl Pool2dSpec {
    pub fn out_h(&self) -> usize {
        self.h.checked_div(self.k).unwrap_or(0)
    }
    pub fn out_w(&self) -> usize {
        self.w.checked_div(self.k).unwrap_or(0)
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.h * self.w * self.c
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.c
    }
}

/// Hyperparameters of one Adam update, with PyTorch's `torch.optim.Adam` semantics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
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
    /// x[B,P] = images[order[cursor + b]] / 255, y[B] = labels[order[cursor + b]] for
    /// cursor + b < `len`; rows at or past `len` are padding (zeros and [`PADDING_LABEL`]).
    /// `len` ≤ the dataset's samples: the order entries in use (a data-parallel rank's share).
    Gather {
        data: DataId,
        rows: usize,
        len: usize,
        order: BufId,
        cursor: BufId,
        x: BufId,
        y: BufId,
    },
    /// cursor += by (a u32 counter).
    Advance { cursor: BufId, by: usize },
    /// C = op(A)·op(B) with the epilogue; `aux` is the bias [N] or the mask [M,N].
    Matmul {
        spec: MatmulSpec,
        a: BufId,
        b: BufId,
        aux: Option<BufId>,
        c: BufId,
    },
    /// db[O] = Σ_B dy[B,O]
    BiasBackward {
        rows: usize,
        cols: usize,
        dy: BufId,
        db: BufId,
    },
    /// cols[B·OH·OW, C·K·K] from x[B,H,W,C].
    Im2col {
        spec: Conv2dSpec,
        x: BufId,
        cols: BufId,
    },
    /// dx[B,H,W,C] = Σ of the dcols entries im2col copied from each element, zero where
    /// mask ≤ 0.
    Col2im {
        spec: Conv2dSpec,
        dcols: BufId,
        mask: Option<BufId>,
        dx: BufId,
    },
    /// y, idx from x (see [`Pool2dSpec`]).
    MaxPoolForward {
        spec: Pool2dSpec,
        x: BufId,
        y: BufId,
        idx: BufId,
    },
    /// dx = dy at each window's maximum, else 0; zero where mask ≤ 0.
    MaxPoolBackward {
        spec: Pool2dSpec,
        dy: BufId,
        idx: BufId,
        mask: Option<BufId>,
        dx: BufId,
    },
    /// logits[B,C], labels[B] → probs[B,C], loss[B].
    SoftmaxXentForward {
        rows: usize,
        classes: usize,
        logits: BufId,
        labels: BufId,
        probs: BufId,
        loss: BufId,
    },
    /// dlogits[B,C] = (probs − onehot(labels))·scale.
    SoftmaxXentBackward {
        rows: usize,
        classes: usize,
        scale: f32,
        probs: BufId,
        labels: BufId,
        dlogits: BufId,
    },
    /// acc += (Σ loss, #correct, #rows) over non-padding rows (acc is a [`MetricsAcc`]).
    Metrics {
        rows: usize,
        classes: usize,
        probs: BufId,
        labels: BufId,
        loss: BufId,
        acc: BufId,
    },
    /// SGD with momentum over n elements.
    Sgd {
        n: usize,
        hp: SgdParams,
        w: BufId,
        g: BufId,
        v: BufId,
    },
    /// Adam over n elements; `sched` holds [`AdamParams::schedule`] pairs, `step` the number of
    /// updates done (a u32 counter advanced once per training step).
    Adam {
        n: usize,
        hp: AdamParams,
        w: BufId,
        g: BufId,
        m: BufId,
        v: BufId,
        sched: BufId,
        step: BufId,
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
                ..
            } => (vec![order, cursor], vec![x, y]),
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
            Op::Sgd { w, g, v, .. } => (vec![g], vec![w, v]),
            Op::Adam {
                w,
                g,
                m,
                v,
                sched,
                step,
                ..
            } => (vec![g, sched, step], vec![w, m, v]),
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
