//! A dense layer y = x·Wᵀ + b (ReLU optional), W \[O,I\] as PyTorch's `nn.Linear`. After a
//! convolution or pooling block its input is the channels-last image viewed as [B, H·W·C].

use super::{Io, Layer};
use crate::model::Shape;
use crate::ops::{Epilogue, MatmulSpec, Op};

/// A dense layer over a batch of rows (see the module docs).
pub struct Dense {
    batch: usize,
    i: usize,
    o: usize,
    relu: bool,
    /// (C, H, W) when the input is an image: the flatten is a view of channels-last data, so
    /// the weight's columns are stored in H,W,C order inside the engine.
    image: Option<(usize, usize, usize)>,
}

impl Dense {
    /// A layer from `input` (flattened) to `out` outputs over `batch` rows, ReLU fused if `relu`.
    pub fn new(input: Shape, out: usize, batch: usize, relu: bool) -> Self {
        let image = match input {
            Shape::Image { c, h, w } if c > 1 => Some((c, h, w)),
            _ => None,
        };
        Dense {
            batch,
            i: input.len(),
            o: out,
            relu,
            image,
        }
    }

    /// Permute each row's columns between C,H,W and H,W,C order.
    fn permute(&self, w: Vec<f32>, to_engine: bool) -> Vec<f32> {
        let Some((c, h, wd)) = self.image else {
            return w;
        };
        let mut out = vec![0.0; w.len()];
        for (src_row, dst_row) in w.chunks(self.i).zip(out.chunks_mut(self.i)) {
            for ci in 0..c {
                for p in 0..h * wd {
                    let chw = ci * h * wd + p;
                    let hwc = p * c + ci;
                    if to_engine {
                        dst_row[hwc] = src_row[chw];
                    } else {
                        dst_row[chw] = src_row[hwc];
                    }
                }
            }
        }
        out
    }
}

impl Layer for Dense {
    fn param_lens(&self) -> Option<(usize, usize)> {
        Some((self.o * self.i, self.o))
    }

    fn relu(&self) -> bool {
        self.relu
    }

    fn forward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("dense parameters");
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_b: true,
                epilogue: if self.relu {
                    Epilogue::BiasRelu
                } else {
                    Epilogue::Bias
                },
                ..MatmulSpec::new(self.batch, self.o, self.i)
            },
            a: io.x,
            b: p.w,
            aux: Some(p.b),
            c: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("dense parameters");
        // dW[O,I] = dYᵀ·X, db[O] = Σ_B dY
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_a: true,
                ..MatmulSpec::new(self.o, self.i, self.batch)
            },
            a: io.dy,
            b: io.x,
            aux: None,
            c: p.dw,
        });
        ops.push(Op::BiasBackward {
            rows: self.batch,
            cols: self.o,
            dy: io.dy,
            db: p.db,
        });
        if let Some(dx) = io.dx {
            // dX[B,I] = dY·W, masked by the ReLU of the layer below
            ops.push(Op::Matmul {
                spec: MatmulSpec {
                    epilogue: if io.mask.is_some() {
                        Epilogue::ReluMask
                    } else {
                        Epilogue::None
                    },
                    ..MatmulSpec::new(self.batch, self.i, self.o)
                },
                a: io.dy,
                b: p.w,
                aux: io.mask,
                c: dx,
            });
        }
    }

    fn weight_to_engine(&self, w: Vec<f32>) -> Vec<f32> {
        self.permute(w, true)
    }

    fn weight_from_engine(&self, w: Vec<f32>) -> Vec<f32> {
        self.permute(w, false)
    }
}
