//! The CPU backend op by op against the f64 oracle (`wgtrain verify --device cpu`), and proof
//! that the op-level checker fails a backend that gets one element wrong, leaves one unwritten,
//! writes past an output or clobbers an input.

mod common;

use wgtrain::backend::cpu::CpuBackend;
use wgtrain::backend::gpu::GpuBackend;
use wgtrain::backend::reference::ReferenceBackend;
use wgtrain::backend::{Backend, EngineKind, ProgramId};
use wgtrain::data::Dataset;
use wgtrain::ops::{BufId, DataId, Epilogue, MatmulSpec, Op};
use wgtrain::verify::{self, ops::check_matmul_op, Check, Family, Inputs};
use wgtrain::Result;

fn failures(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.pass())
        .map(|c| {
            format!(
                "{} {}: {} bad of {}, max abs {:.3e}, err/tol {:.3}",
                c.name(),
                c.shape,
                c.bad,
                c.elements,
                c.max_abs,
                c.worst
            )
        })
        .collect()
}

/// Where [`all_families_pass`] runs each family.
enum Backends {
    /// A fresh backend per family (the CPU ones never free a buffer).
    Fresh(fn() -> Box<dyn Backend>),
    /// One backend for all families (a GPU context opens its adapter once).
    Shared(Box<dyn Backend>),
}

/// Every op family, all checks passing.
fn all_families_pass(name: &str, mut backends: Backends) {
    let seed = common::seed(name);
    let mut bad = Vec::new();
    for fam in Family::ALL {
        let t = std::time::Instant::now();
        let mut fresh;
        let be: &mut dyn Backend = match &mut backends {
            Backends::Fresh(make) => {
                fresh = make();
                fresh.as_mut()
            }
            Backends::Shared(be) => be.as_mut(),
        };
        let checks = verify::run_backend_family(be, fam, seed, false)
            .unwrap_or_else(|e| panic!("{name} {fam}: {e} (seed {seed})"));
        assert!(!checks.is_empty(), "{name} {fam}: no checks ran");
        let worst = checks
            .iter()
            .filter(|c| c.pass())
            .map(|c| c.worst)
            .fold(0.0f64, f64::max);
        eprintln!(
            "{name} {fam} on {}: {} checks in {:.2} s, worst error/tolerance {worst:.3}",
            be.describe(),
            checks.len(),
            t.elapsed().as_secs_f64()
        );
        bad.extend(failures(&checks).into_iter().map(|f| format!("{fam}: {f}")));
    }
    assert!(
        bad.is_empty(),
        "{name}, seed {seed} (replay with WGTRAIN_SEED={seed}):\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_op_family_passes_on_the_cpu_backend() {
    all_families_pass(
        "cpu backend",
        Backends::Fresh(|| Box::new(CpuBackend::new())),
    );
}

/// The twin interpreter the fast backend replaced: the checks do not depend on which runs.
#[test]
fn every_op_family_passes_on_the_reference_backend() {
    all_families_pass(
        "reference backend",
        Backends::Fresh(|| Box::new(ReferenceBackend::new())),
    );
}

/// The GPU backend (prepared launches, every matmul variant pinned in turn) on every adapter,
/// one backend for all families; `tests/kernels.rs` runs each family on a fresh one:
/// `cargo test --test verify_ops -- --ignored`.
#[test]
#[ignore]
fn every_op_family_passes_on_the_gpu_backend() {
    for ctx in common::contexts("gpu backend") {
        all_families_pass(
            "gpu backend",
            Backends::Shared(Box::new(GpuBackend::new(ctx))),
        );
    }
}

/// How [`Faulty`] spoils the products it runs.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Adds 1e-3 to one element of C.
    OffByOne,
    /// Leaves the last element of C as it was before the run (NaN-poisoned).
    Unwritten,
    /// Writes one word past the end of C.
    PastTheEnd,
    /// Overwrites the first element of A.
    ClobbersInput,
}

/// The CPU backend with one fault in every Matmul.
struct Faulty {
    inner: CpuBackend,
    fault: Fault,
    /// The product of each prepared program, if it has one.
    products: Vec<Option<(MatmulSpec, BufId, BufId)>>,
}

impl Backend for Faulty {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    fn adapter(&self) -> (String, String) {
        self.inner.adapter()
    }
    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        self.inner.alloc(label, words)
    }
    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.inner.write(buf, data)
    }
    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        self.inner.read(buf, words)
    }
    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.inner.dataset(d)
    }
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let p = self.inner.prepare(ops)?;
        let product = ops.iter().find_map(|op| match *op {
            Op::Matmul { spec, a, c, .. } => Some((spec, a, c)),
            _ => None,
        });
        self.products.resize(p.0 + 1, None);
        self.products[p.0] = product;
        Ok(p)
    }
    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let Some((spec, a, c)) = self.products[program.0] else {
            return self.inner.run(program, repeat);
        };
        let len = spec.m * spec.n;
        let before = self.inner.read(c, len)?;
        self.inner.run(program, repeat)?;
        let mut after = self.inner.read(c, len + 1)?;
        match self.fault {
            Fault::OffByOne => {
                let i = len / 2;
                after[i] = (f32::from_bits(after[i]) + 1e-3).to_bits();
                self.inner.write(c, &after)
            }
            Fault::Unwritten => {
                after[len - 1] = before[len - 1];
                self.inner.write(c, &after)
            }
            Fault::PastTheEnd => {
                after[len] = 0;
                self.inner.write(c, &after)
            }
            Fault::ClobbersInput => self.inner.write(a, &[1.0f32.to_bits()]),
        }
    }
}

#[test]
fn the_checker_fails_a_backend_with_a_faulty_matmul() {
    let seed = verify::run_seed();
    eprintln!("verify_ops faults: seed {seed} (replay with WGTRAIN_SEED={seed})");
    for fault in [
        Fault::OffByOne,
        Fault::Unwritten,
        Fault::PastTheEnd,
        Fault::ClobbersInput,
    ] {
        for spec in [
            MatmulSpec::new(15, 17, 9),
            MatmulSpec {
                trans_b: true,
                epilogue: Epilogue::BiasRelu,
                ..MatmulSpec::new(1, 1, 7)
            },
        ] {
            let mut be = Faulty {
                inner: CpuBackend::new(),
                fault,
                products: Vec::new(),
            };
            // The sound backend passes the same check (the fault, not the inputs, fails it).
            let ok = pollster::block_on(check_matmul_op(
                &mut be.inner,
                &mut Inputs::new(seed),
                &spec,
            ))
            .unwrap();
            assert!(failures(&ok).is_empty(), "{:?}", failures(&ok));
            let checks =
                pollster::block_on(check_matmul_op(&mut be, &mut Inputs::new(seed), &spec))
                    .unwrap();
            let bad = failures(&checks);
            eprintln!("{fault:?} on {spec:?}: {bad:?}");
            assert_eq!(
                bad.len(),
                1,
                "{fault:?}: expected one failing check: {bad:?}"
            );
            let untouched = checks.iter().find(|c| c.kernel.ends_with("untouched"));
            let untouched_fails = !untouched.expect("an untouched check").pass();
            match fault {
                Fault::OffByOne | Fault::Unwritten => assert!(!untouched_fails, "{bad:?}"),
                Fault::PastTheEnd | Fault::ClobbersInput => assert!(untouched_fails, "{bad:?}"),
            }
        }
    }
}
