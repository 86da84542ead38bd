//! What the verification must cover, derived from what can run: the matrix products the
//! training step and the evaluation of every preset launch (read from the programs the
//! engine itself prepares, not listed by hand), the (transposes, epilogue, accumulate)
//! combinations among them and `bench`'s, and for each matmul variant the shapes that cross
//! every edge of its tile.

use crate::backend::{Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::gpu::kernels::{Epilogue, MatmulSpec, MatmulTile};
use crate::model::{Model, Preset};
use crate::ops::{AvgPool2dSpec, BufId, Conv2dSpec, DataId, Op, Pool2dSpec};
use crate::train::{Engine, TrainConfig};
use crate::Result;
use std::cell::RefCell;
use std::rc::Rc;

/// A backend that runs nothing: it hands out buffer ids and keeps the programs the engine
/// prepares (in a list the caller shares), so their ops can be read.
#[derive(Default)]
struct Recorder {
    buffers: usize,
    programs: Rc<RefCell<Vec<Vec<Op>>>>,
}

impl Backend for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }
    fn adapter(&self) -> (String, String) {
        ("recorder".into(), "none".into())
    }
    fn alloc(&mut self, _label: &str, _words: usize) -> Result<BufId> {
        self.buffers += 1;
        Ok(BufId(self.buffers - 1))
    }
    fn write(&mut self, _buf: BufId, _data: &[u32]) -> Result<()> {
        Ok(())
    }
    fn read(&mut self, _buf: BufId, words: usize) -> Result<Vec<u32>> {
        Ok(vec![0; words])
    }
    fn dataset(&mut self, _d: &Dataset) -> Result<DataId> {
        Ok(DataId(0))
    }
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let mut programs = self.programs.borrow_mut();
        programs.push(ops.to_vec());
        Ok(ProgramId(programs.len() - 1))
    }
    fn run(&mut self, _program: ProgramId, _repeat: usize) -> Result<()> {
        Ok(())
    }
}

/// Every distinct matrix product of the programs the engine prepares for `preset` at
/// its batch of 100 (the training step and both evaluations), in program order.
pub fn preset_products(preset: Preset) -> Result<Vec<MatmulSpec>> {
    program_products(&TrainConfig::preset(preset))
}

/// Every op of the programs the engine prepares for the run `cfg` (the training step and both
/// evaluations), in program order, recorded without running anything.
pub fn program_ops(cfg: &TrainConfig) -> Result<Vec<Op>> {
    // The one blank sample below has no spread to normalise by: `auto`'s values do not change
    // the ops, so any stand in for them.
    let mut cfg = cfg.clone();
    if cfg.normalize == crate::ops::Normalize::Auto {
        cfg.normalize = crate::ops::Normalize::Values {
            mean: vec![0.0],
            std: vec![1.0],
        };
    }
    let cfg = &cfg;
    let model = Model::init_uniform(&cfg.arch, 0.07, 1);
    let len = cfg.arch.input_len();
    let shape = crate::data::SampleShape::from(cfg.arch.input);
    let one = Dataset::new(shape, vec![0; len], vec![0])?;
    let rec = Recorder::default();
    let programs = Rc::clone(&rec.programs);
    Engine::new(Box::new(rec), cfg, &model, None, &one, Some(&one))?;
    let ops = programs.borrow().concat();
    Ok(ops)
}

/// Every distinct matrix product of the programs the engine prepares for the run `cfg` (the
/// training step and both evaluations), in program order: what a web page starts (each on its
/// checked default) before preparing them
/// ([`crate::backend::gpu::GpuBackend::start_in_background_async`]).
pub fn program_products(cfg: &TrainConfig) -> Result<Vec<MatmulSpec>> {
    let mut out: Vec<MatmulSpec> = Vec::new();
    for op in program_ops(cfg)? {
        if let Op::Matmul { spec, .. } = op {
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
    }
    Ok(out)
}

/// The products of every preset, labelled "preset m×n×k".
pub fn all_preset_products() -> Result<Vec<(String, MatmulSpec)>> {
    let mut out = Vec::new();
    for preset in Preset::ALL {
        let name = preset.name();
        for spec in preset_products(preset)? {
            out.push((format!("{name} {}x{}x{}", spec.m, spec.n, spec.k), spec));
        }
    }
    Ok(out)
}

/// What `pick` reads from the ops of every preset's programs (at its batch of 100), each
/// distinct value once, labelled with the presets that launch it (`lenet5/cnn`), in
/// [`Preset::ALL`]'s and program order. Verification's full-size checks of every family come
/// from here, so a layer added to a preset is checked at its real shape with no list to update.
pub fn preset_ops<T: PartialEq>(pick: impl Fn(&Op) -> Option<T>) -> Result<Vec<(String, T)>> {
    let mut out: Vec<(String, T)> = Vec::new();
    for preset in Preset::ALL {
        for op in program_ops(&TrainConfig::preset(preset))? {
            let Some(v) = pick(&op) else { continue };
            match out.iter_mut().find(|(_, o)| *o == v) {
                Some((label, _)) => {
                    if !label.split('/').any(|p| p == preset.name()) {
                        label.push('/');
                        label.push_str(preset.name());
                    }
                }
                None => out.push((preset.name().to_string(), v)),
            }
        }
    }
    Ok(out)
}

/// The presets' convolutions as their im2col (whose shape does not depend on the output
/// channels, set to 1 here so presets sharing a first layer share it), from [`preset_ops`].
pub fn preset_im2col() -> Result<Vec<(String, Conv2dSpec)>> {
    preset_ops(|op| match op {
        Op::Im2col { spec, .. } => Some(Conv2dSpec { c_out: 1, ..*spec }),
        _ => None,
    })
}

/// The presets' whole convolution layers with one input channel (the CPU engine's direct
/// kernels), from [`preset_ops`].
pub fn preset_single_channel_convolutions() -> Result<Vec<(String, Conv2dSpec)>> {
    preset_ops(|op| match op {
        Op::Im2col { spec, .. } if spec.c_in == 1 => Some(*spec),
        _ => None,
    })
}

/// The presets' whole stride-1 convolution layers with several input channels (the CPU
/// engine's implicit-GEMM kernels), from [`preset_ops`], at a batch of at most 8 (the f64
/// oracle of `cnn`'s second layer at batch 100 alone would be 6 GFLOP; the kernels' work per
/// image does not depend on the batch).
pub fn preset_multi_channel_convolutions() -> Result<Vec<(String, Conv2dSpec)>> {
    preset_ops(|op| match op {
        Op::Im2col { spec, .. } if spec.c_in > 1 && spec.stride == 1 => Some(Conv2dSpec {
            batch: spec.batch.min(8),
            ..*spec
        }),
        _ => None,
    })
}

/// The presets' max-pooling layers, from [`preset_ops`].
pub fn preset_maxpools() -> Result<Vec<(String, Pool2dSpec)>> {
    preset_ops(|op| match op {
        Op::MaxPoolForward { spec, .. } => Some(*spec),
        _ => None,
    })
}

/// The presets' average-pooling layers, from [`preset_ops`].
pub fn preset_avgpools() -> Result<Vec<(String, AvgPool2dSpec)>> {
    preset_ops(|op| match op {
        Op::AvgPoolForward { spec, .. } => Some(*spec),
        _ => None,
    })
}

/// The presets' bias gradients as (rows, columns), from [`preset_ops`].
pub fn preset_bias_sums() -> Result<Vec<(String, (usize, usize))>> {
    preset_ops(|op| match op {
        Op::BiasBackward { rows, cols, .. } => Some((*rows, *cols)),
        _ => None,
    })
}

/// (trans_a, trans_b, epilogue, accumulate) of a product.
pub type Combo = (bool, bool, Epilogue, bool);

/// The combination of `spec`.
pub fn combo(spec: &MatmulSpec) -> Combo {
    (spec.trans_a, spec.trans_b, spec.epilogue, spec.accumulate)
}

/// The product of shape (M, N, K) in combination `c`.
pub fn spec_of(c: Combo, (m, n, k): (usize, usize, usize)) -> MatmulSpec {
    let (trans_a, trans_b, epilogue, accumulate) = c;
    MatmulSpec {
        trans_a,
        trans_b,
        epilogue,
        accumulate,
        ..MatmulSpec::new(m, n, k)
    }
}

/// Every combination that training, evaluation or `bench` launches: those of the presets'
/// programs, plus `bench`'s square products (plain NN).
pub fn launched_combos() -> Result<Vec<Combo>> {
    let mut out = vec![combo(&MatmulSpec::new(1, 1, 1))];
    for (_, spec) in all_preset_products()? {
        if !out.contains(&combo(&spec)) {
            out.push(combo(&spec));
        }
    }
    Ok(out)
}

/// (M, N, K) shapes that cross every edge of `tile`'s workgroup block: remainders 1 and
/// block − 1 in M and in N (the block's extent along M is its rows, or its columns when the
/// tile is swapped), single rows and columns, and K with remainders 1 and BK − 1 past one,
/// two and three steps of BK (the depth K advances by per step).
pub fn tile_edge_shapes(tile: &MatmulTile) -> Vec<(usize, usize, usize)> {
    let (rows, cols, bk) = (tile.bm() as usize, tile.bn() as usize, tile.bk as usize);
    let (bm, bn) = if tile.swap {
        (cols, rows)
    } else {
        (rows, cols)
    };
    vec![
        (bm + 1, bn + 1, bk + 1),
        (2 * bm - 1, 2 * bn - 1, 3 * bk - 1),
        (1, bn - 1, 2 * bk + 1),
        (bm - 1, 1, 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presets_launch_forward_weight_gradient_and_input_gradient_products() {
        let lenet = preset_products(Preset::Lenet5).unwrap();
        // conv 1 forward (im2col rows × 6 channels × 25 taps), its weight gradient, and the
        // dense input gradient through the ReLU mask.
        let fwd = MatmulSpec {
            trans_b: true,
            epilogue: Epilogue::BiasRelu,
            ..MatmulSpec::new(78_400, 6, 25)
        };
        let dw = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(6, 25, 78_400)
        };
        assert!(lenet.contains(&fwd) && lenet.contains(&dw), "{lenet:?}");
        let combos = launched_combos().unwrap();
        for c in [
            (false, true, Epilogue::BiasRelu, false),
            (false, true, Epilogue::Bias, false),
            (true, false, Epilogue::None, false),
            (false, false, Epilogue::ReluMask, false),
            (false, false, Epilogue::None, false),
        ] {
            assert!(combos.contains(&c), "{c:?} missing from {combos:?}");
        }
    }

    #[test]
    fn edge_shapes_leave_remainders_one_and_block_minus_one_in_every_dimension() {
        for tile in MatmulTile::CANDIDATES {
            let shapes = tile_edge_shapes(&tile);
            let (rows, cols) = (tile.bm() as usize, tile.bn() as usize);
            let (bm, bn) = if tile.swap {
                (cols, rows)
            } else {
                (rows, cols)
            };
            let bk = tile.bk as usize;
            let rem = |v: usize, b: usize| v % b;
            for (dim, b) in [(0, bm), (1, bn)] {
                let rems: Vec<usize> = shapes.iter().map(|s| rem([s.0, s.1][dim], b)).collect();
                assert!(rems.contains(&1) || b == 1, "{tile}: {rems:?}");
                assert!(rems.contains(&(b - 1)) || b <= 2, "{tile}: {rems:?}");
            }
            assert!(
                shapes.iter().any(|s| s.2 > 2 * bk && s.2 % bk != 0),
                "{tile}"
            );
        }
    }
}
