//! Conv2d as im2col + the tuned matmul: cols[B·OH·OW, C·K·K] = im2col(x), then
//! y[B·OH·OW, O] = cols·Wᵀ + b (ReLU fused), which is y\[B,OH,OW,O\] channels-last. W is
//! PyTorch's \[O,C,K,K\] read as [O, C·K·K], whose column order im2col follows.
//!
//! Why im2col: every FLOP then runs in the matmul the autotuner already picks per adapter and
//! shape (see BENCHMARKS.md for the measured rates); the price is the cols buffer
//! (B·OH·OW·C·K·K words, 63 MB for the `cnn` preset's second convolution at batch 100). The
//! CPU engine fuses these ops back into direct or cache-friendly kernels where the program
//! allows (`backend/cpu.rs`); the ops stay the one description of the layer.

use super::{Io, Layer};
use crate::backend::Backend;
use crate::ops::{BufId, Conv2dSpec, Epilogue, MatmulSpec, Op};
use crate::Result;

/// A convolution layer over a batch (see the module docs), with its im2col buffers.
pub struct Conv2d {
    spec: Conv2dSpec,
    relu: bool,
    /// None when im2col would be the identity (1×1 kernel, stride 1, no padding).
    cols: Option<BufId>,
    dcols: Option<BufId>,
}

impl Conv2d {
    /// The layer `spec` (ReLU fused if `relu`), allocating its cols and dcols buffers on `be`
    /// unless im2col is the identity; fails if the device cannot hold them.
    pub fn new(spec: Conv2dSpec, relu: bool, be: &mut dyn Backend) -> Result<Self> {
        let identity = spec.k == 1 && spec.stride == 1 && spec.pad == 0;
        let n = spec.col_rows() * spec.col_cols();
        let (cols, dcols) = if identity {
            (None, None)
        } else {
            (
                Some(be.alloc("conv cols", n)?),
                Some(be.alloc("conv dcols", n)?),
            )
        };
        Ok(Conv2d {
            spec,
            relu,
            cols,
            dcols,
        })
    }

    fn gemm(&self) -> (usize, usize, usize) {
        (self.spec.col_rows(), self.spec.c_out, self.spec.col_cols())
    }
}

impl Layer for Conv2d {
    fn param_lens(&self) -> Option<(usize, usize)> {
        Some((self.spec.c_out * self.spec.col_cols(), self.spec.c_out))
    }

    fn relu(&self) -> bool {
        self.relu
    }

    fn forward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("conv parameters");
        let cols = match self.cols {
            Some(cols) => {
                ops.push(Op::Im2col {
                    spec: self.spec,
                    x: io.x,
                    cols,
                });
                cols
            }
            None => io.x,
        };
        let (m, n, k) = self.gemm();
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_b: true,
                epilogue: if self.relu {
                    Epilogue::BiasRelu
                } else {
                    Epilogue::Bias
                },
                ..MatmulSpec::new(m, n, k)
            },
            a: cols,
            b: p.w,
            aux: Some(p.b),
            c: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("conv parameters");
        let (m, n, k) = self.gemm();
        // dW[O, C·K·K] = dYᵀ·cols, db[O] = Σ over B·OH·OW rows of dY
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_a: true,
                ..MatmulSpec::new(n, k, m)
            },
            a: io.dy,
            b: self.cols.unwrap_or(io.x),
            aux: None,
            c: p.dw,
        });
        ops.push(Op::BiasBackward {
            rows: m,
            cols: n,
            dy: io.dy,
            db: p.db,
        });
        let Some(dx) = io.dx else { return };
        // dcols[B·OH·OW, C·K·K] = dY·W, then summed back onto the input positions.
        let (target, epilogue, aux) = match self.dcols {
            Some(dcols) => (dcols, Epilogue::None, None),
            // 1×1: dcols is dx itself, masked in the matmul.
            None if io.mask.is_some() => (dx, Epilogue::ReluMask, io.mask),
            None => (dx, Epilogue::None, None),
        };
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                epilogue,
                ..MatmulSpec::new(m, k, n)
            },
            a: io.dy,
            b: p.w,
            aux,
            c: target,
        });
        if let Some(dcols) = self.dcols {
            ops.push(Op::Col2im {
                spec: self.spec,
                dcols,
                mask: io.mask,
                dx,
            });
        }
    }
}
