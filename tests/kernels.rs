//! Every kernel against its CPU twin, on every adapter present, on fresh random inputs, through
//! the GPU backend (every matmul variant pinned in turn). The shapes and tolerances live in
//! `wgtrain::verify` (shared with `wgtrain verify`).

mod common;

use wgtrain::backend::gpu::GpuBackend;
use wgtrain::backend::{Backend, EngineKind, ProgramId};
use wgtrain::gpu::kernels::{MatmulSpec, MatmulTile};
use wgtrain::ops::{BufId, DataId, Op};
use wgtrain::verify::ops::{check_matmul_op, check_softmax_op};
use wgtrain::verify::{self, Check, Family};

fn assert_all_pass(test: &str, adapter: &str, checks: &[Check]) {
    assert!(!checks.is_empty(), "{test}: no checks ran");
    let worst = checks.iter().map(|c| c.worst).fold(0.0f64, f64::max);
    let max_abs = checks.iter().map(|c| c.max_abs).fold(0.0f64, f64::max);
    eprintln!(
        "{test} on {adapter}: {} checks, max abs error {max_abs:.3e}, worst error/tolerance {worst:.3}",
        checks.len()
    );
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.pass())
        .map(|c| {
            format!(
                "{} {}: {} bad of {}, max abs {:.3e}",
                c.name(),
                c.shape,
                c.bad,
                c.elements,
                c.max_abs
            )
        })
        .collect();
    assert!(bad.is_empty(), "{test} on {adapter}: {}", bad.join("; "));
}

fn family(fam: Family) {
    let name = fam.name();
    let seed = common::seed(name);
    for ctx in common::contexts(name) {
        let mut be = GpuBackend::new(ctx);
        let checks = verify::run_backend_family(&mut be, fam, seed, true).expect("kernel launch");
        assert_all_pass(name, &be.describe(), &checks);
    }
}

/// Like [`family`] without the presets' batch-100 layers (those run in `wgtrain verify`).
fn family_without_presets(fam: Family) {
    let name = fam.name();
    let seed = common::seed(name);
    for ctx in common::contexts(name) {
        let t = std::time::Instant::now();
        let mut be = GpuBackend::new(ctx);
        let checks = verify::run_backend_family(&mut be, fam, seed, false).expect("kernel launch");
        eprintln!(
            "{name} on {}: {:.2} s",
            be.describe(),
            t.elapsed().as_secs_f64()
        );
        assert_all_pass(name, &be.describe(), &checks);
    }
}

#[test]
fn im2col_and_col2im_match_cpu_with_padding_strides_and_masks() {
    family_without_presets(Family::Conv2d);
}

#[test]
fn maxpool_matches_cpu_including_ties_and_nan() {
    family_without_presets(Family::Maxpool);
}

#[test]
fn avgpool_matches_cpu_on_square_global_and_ragged_windows_and_nan() {
    family_without_presets(Family::Avgpool);
}

#[test]
fn dropout_masks_match_the_twin_bit_for_bit_with_offsets_and_relu_masks() {
    family_without_presets(Family::Dropout);
}

#[test]
fn batchnorm_ops_match_the_twin_with_padding_rows_and_relu() {
    family_without_presets(Family::Batchnorm);
}

#[test]
fn residual_add_and_its_gradient_match_the_twin_exactly_across_workgroup_edges() {
    family_without_presets(Family::Add);
}

#[test]
fn adam_update_matches_exact_and_f32_twin() {
    family_without_presets(Family::Adam);
}

#[test]
fn conv_and_pool_shapes_that_cannot_work_are_refused_with_a_message() {
    use wgtrain::gpu::kernels::{self, Conv2dSpec, Pool2dSpec};
    for ctx in common::contexts("conv_pool_shapes") {
        let a = ctx.upload("a", &[1.0f32; 64]);
        let b = ctx.poisoned("b", 64);
        // A 5×5 kernel on a 2×2 input padded by 1 (4×4) has no output.
        let spec = Conv2dSpec {
            batch: 1,
            c_in: 1,
            h: 2,
            w: 2,
            c_out: 1,
            k: 5,
            stride: 1,
            pad: 1,
        };
        let e = kernels::im2col(&ctx, &spec, &a, &b)
            .err()
            .expect("must be refused");
        let msg = e.to_string();
        assert!(
            msg.contains("im2col") && msg.contains("5x5") && msg.contains("2x2"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
        // Too small a dx buffer for col2im.
        let spec = Conv2dSpec {
            h: 8,
            w: 8,
            k: 3,
            ..spec
        };
        let e = kernels::col2im(&ctx, &spec, &b, None, &a)
            .err()
            .expect("must be refused");
        assert!(e.to_string().contains("holds 64 elements"), "{e}");
        // Pooling windows larger than the input; a zero batch.
        let pool = Pool2dSpec {
            batch: 1,
            c: 1,
            h: 3,
            w: 8,
            k: 4,
        };
        let e = kernels::maxpool_forward(&ctx, &pool, &a, &b, &b)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("maxpool_forward"), "{e}");
        let pool = Pool2dSpec { batch: 0, ..pool };
        let e = kernels::maxpool_backward(&ctx, &pool, &a, &a, None, &b)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("B = 0"), "{e}");
    }
}

#[test]
fn matmul_matches_cpu_on_all_shapes_and_transposes() {
    family(Family::Matmul);
}

#[test]
fn bias_backward_matches_cpu() {
    family(Family::Bias);
}

#[test]
fn softmax_xent_matches_cpu_including_extreme_logits() {
    family(Family::SoftmaxXent);
}

#[test]
fn sgd_update_matches_cpu() {
    family(Family::Sgd);
}

#[test]
fn metrics_match_cpu() {
    family(Family::Metrics);
}

#[test]
fn gather_matches_cpu_and_pads_past_the_end() {
    family(Family::Gather);
}

#[test]
fn softmax_of_huge_logits_is_finite_and_exact() {
    let seed = common::seed("softmax_extremes");
    for ctx in common::contexts("softmax_extremes") {
        let mut inp = verify::Inputs::new(seed);
        let logits = wgtrain::oracle::softmax_extreme_logits();
        let mut be = GpuBackend::new(ctx);
        let checks = pollster::block_on(check_softmax_op(
            &mut be,
            &mut inp,
            &logits,
            0.0,
            "extremes 6x3".into(),
        ))
        .unwrap();
        for c in &checks {
            assert!(c.pass() && c.max_abs.is_finite(), "{c:?}");
        }
    }
}

#[test]
fn unwritten_output_is_caught_by_nan_poison() {
    // A product with K = 0 is refused; emulate a kernel that skips elements by comparing a
    // poisoned buffer that nothing wrote: the comparison must fail.
    let c = verify::compare(
        Family::Matmul,
        "poison",
        "2".into(),
        &[f32::NAN, 1.0],
        &[1.0, 1.0],
        |_| (1.0, 1.0),
    );
    assert_eq!(c.bad, 1);
    assert!(!c.pass());
}

/// A backend that computes like `inner` but, after every plain product (no transposes, no
/// epilogue, no accumulation), takes one term out of the dot product behind C[0,0]: the term of
/// median magnitude, as a kernel that skips one k would. Everything else it passes through.
struct DropsOneTerm {
    inner: Box<dyn Backend>,
    programs: std::collections::HashMap<usize, Vec<Op>>,
    /// |dropped term| per product run, for the report.
    dropped: Vec<f32>,
}

impl DropsOneTerm {
    fn new(inner: Box<dyn Backend>) -> Self {
        DropsOneTerm {
            inner,
            programs: Default::default(),
            dropped: Vec::new(),
        }
    }

    fn floats(&mut self, buf: BufId, n: usize) -> wgtrain::Result<Vec<f32>> {
        Ok(self
            .inner
            .read(buf, n)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }
}

impl Backend for DropsOneTerm {
    fn describe(&self) -> String {
        format!("{}, dropping one term", self.inner.describe())
    }
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    fn adapter(&self) -> (String, String) {
        self.inner.adapter()
    }
    fn alloc(&mut self, label: &str, words: usize) -> wgtrain::Result<BufId> {
        self.inner.alloc(label, words)
    }
    fn write(&mut self, buf: BufId, data: &[u32]) -> wgtrain::Result<()> {
        self.inner.write(buf, data)
    }
    fn read(&mut self, buf: BufId, words: usize) -> wgtrain::Result<Vec<u32>> {
        self.inner.read(buf, words)
    }
    fn dataset(&mut self, d: &wgtrain::data::Dataset) -> wgtrain::Result<DataId> {
        self.inner.dataset(d)
    }
    fn prepare(&mut self, ops: &[Op]) -> wgtrain::Result<ProgramId> {
        let p = self.inner.prepare(ops)?;
        self.programs.insert(p.0, ops.to_vec());
        Ok(p)
    }
    fn run(&mut self, program: ProgramId, repeat: usize) -> wgtrain::Result<()> {
        self.inner.run(program, repeat)?;
        for op in self.programs[&program.0].clone() {
            let Op::Matmul { spec, a, b, c, .. } = op else {
                continue;
            };
            let plain = MatmulSpec::new(spec.m, spec.n, spec.k);
            if spec != plain {
                continue;
            }
            // Row 0 of A [M,K] times column 0 of B [K,N].
            let (n, k) = (spec.n, spec.k);
            let a = self.floats(a, k)?;
            let b = self.floats(b, k * n)?;
            let mut terms: Vec<f32> = (0..k).map(|j| a[j] * b[j * n]).collect();
            terms.sort_by(|x, y| x.abs().total_cmp(&y.abs()));
            let t = terms[k / 2];
            let c0 = self.floats(c, 1)?[0];
            self.inner.write(c, &[(c0 - t).to_bits()])?;
            self.dropped.push(t.abs());
        }
        Ok(())
    }
}

#[test]
fn matmul_tolerance_catches_a_dot_product_missing_one_term() {
    // The real check (`verify::ops::check_matmul_op`: the matmul bound γ_K·(|A|·|B|) + 2u·|C|
    // of `wgtrain::verify`) on a product whose C[0,0] lacks one of its K = 257 terms. For
    // inputs uniform in [-1, 1], Σ|a_k·b_k| ≈ K/4, so the bound is ≈ γ_K·K/4 ≈ K²u/4 ≈ 1e-3,
    // while the median |a_k·b_k| is ≈ 0.19: the missing term is ~190 times the tolerance. The
    // same check without the fault must pass, on the reference twins and on every adapter.
    use wgtrain::backend::reference::ReferenceBackend;
    let seed = common::seed("dropped_term");
    let spec = MatmulSpec::new(7, 13, 257);
    let mut backends: Vec<Box<dyn Fn() -> Box<dyn Backend>>> =
        vec![Box::new(|| Box::new(ReferenceBackend::new()))];
    for i in 0..common::contexts("dropped_term").len() {
        backends.push(Box::new(move || {
            Box::new(GpuBackend::new(
                common::contexts("dropped_term").swap_remove(i),
            ))
        }));
    }
    for make in &backends {
        let mut good = make();
        let name = good.describe();
        let ok = pollster::block_on(check_matmul_op(
            good.as_mut(),
            &mut verify::Inputs::new(seed),
            &spec,
        ))
        .unwrap();
        assert!(ok.iter().all(|c| c.pass()), "{name}: {ok:?}");
        let mut bad = DropsOneTerm::new(make());
        let checks = pollster::block_on(check_matmul_op(
            &mut bad,
            &mut verify::Inputs::new(seed),
            &spec,
        ))
        .unwrap();
        let (c, untouched) = (&checks[0], &checks[1]);
        eprintln!(
            "{name}: dropped |term| {:.3e}: {} bad of {}, error/tolerance {:.1} (clean run {:.3})",
            bad.dropped[0], c.bad, c.elements, c.worst, ok[0].worst
        );
        assert_eq!(bad.dropped.len(), 1, "{name}: the fault ran once");
        assert_eq!(
            c.bad, 1,
            "{name}: exactly C[0,0] is out of tolerance: {c:?}"
        );
        assert!(untouched.pass(), "{name}: {untouched:?}");
    }
}

#[test]
fn impossible_shapes_are_refused_with_a_message() {
    for ctx in common::contexts("impossible_shapes") {
        let a = ctx.upload("a", &[1.0f32; 4]);
        let b = ctx.upload("b", &[1.0f32; 4]);
        let c = ctx.poisoned("c", 4);
        let zero = MatmulSpec::new(0, 2, 2);
        let tile = MatmulTile::DEFAULT;
        let e = wgtrain::gpu::kernels::matmul(&ctx, &zero, &tile, &a, &b, None, &c)
            .err()
            .expect("M = 0 must be refused");
        assert!(e.to_string().contains("M = 0"), "{e}");
        let big = MatmulSpec::new(3, 3, 3);
        let e = wgtrain::gpu::kernels::matmul(&ctx, &big, &tile, &a, &b, None, &c)
            .err()
            .expect("buffers too small must be refused");
        assert!(e.to_string().contains("holds 4 elements"), "{e}");
    }
}

#[test]
fn wgpu_validation_error_names_the_kernel_instead_of_aborting() {
    for ctx in common::contexts("validation_error") {
        // A buffer without STORAGE usage bound as a storage buffer is a validation error.
        let not_storage = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("not storage"),
            size: 64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let x = ctx.upload("x", &[1.0f32; 16]);
        let e = wgtrain::gpu::kernels::bias_backward(&ctx, 4, 4, &x, &not_storage)
            .err()
            .expect("binding a non-storage buffer must fail");
        let msg = e.to_string();
        assert!(
            msg.contains("bias_backward") && msg.contains(&ctx.info.name),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
        // The context stays usable afterwards.
        let y = ctx.poisoned("y", 4);
        let l = wgtrain::gpu::kernels::bias_backward(&ctx, 4, 4, &x, &y).unwrap();
        ctx.submit(&[&l], 1).unwrap();
        assert_eq!(ctx.read::<f32>("y", &y, 4).unwrap(), vec![4.0; 4]);
    }
}

#[test]
fn work_beyond_the_adapter_limits_is_refused_naming_the_limit() {
    for ctx in common::contexts("limits") {
        let have = ctx.limits.max_storage_buffer_binding_size;
        let need = have + 4;
        let e = ctx
            .check(
                &wgtrain::gpu::context::Needs {
                    max_buffer: 0,
                    max_binding: need,
                },
                &wgtrain::error::LimitUse::Buffer("x".into()),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_storage_buffer_binding_size") && e.contains("4 short"),
            "{e}"
        );
        assert!(
            e.contains("buffer `x`: use a smaller batch size or a smaller network"),
            "{e}"
        );
    }
}

#[test]
fn required_adapters_are_parsed_and_a_missing_backend_is_named_in_one_line() {
    use common::{check_required, parse_required, Required};
    use wgpu::Backend::{Gl, Vulkan};
    assert_eq!(parse_required(None), Ok(Required::Nothing));
    assert_eq!(parse_required(Some("0")), Ok(Required::Nothing));
    assert_eq!(parse_required(Some("1")), Ok(Required::Any));
    let both = parse_required(Some("vulkan, GL")).unwrap();
    assert_eq!(check_required(&[Vulkan, Gl], &both), Ok(()));
    assert_eq!(check_required(&[Gl, Vulkan, Vulkan], &both), Ok(()));
    for found in [&[Vulkan][..], &[Vulkan, Vulkan]] {
        let e = check_required(found, &both).unwrap_err();
        assert!(
            e.contains("no GPU adapter on gl") && e.contains("=vulkan,gl"),
            "{e}"
        );
        assert!(
            e.contains("found on: vulkan") && !e.contains("(lavapipe"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = check_required(&[Gl], &both).unwrap_err();
    assert!(
        e.contains("no GPU adapter on vulkan (lavapipe") && e.contains("found on: gl"),
        "{e}"
    );
    assert!(!e.contains("(llvmpipe"), "{e}");
    let e = check_required(&[], &both).unwrap_err();
    assert!(
        e.contains("vulkan (lavapipe") && e.contains("gl (llvmpipe") && e.contains("none"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(check_required(&[], &Required::Any).is_err());
    assert!(check_required(&[Gl], &Required::Any).is_ok());
    assert!(check_required(&[], &Required::Nothing).is_ok());
    for typo in ["vulkan,gll", "yes", "all", "vulkan,"] {
        let e = parse_required(Some(typo)).unwrap_err();
        assert!(
            e.contains(common::REQUIRE_ENV) && e.contains("not a backend"),
            "{e}"
        );
    }
}
