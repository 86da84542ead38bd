//! The cache key of a product on an adapter: [`ShapeClass`] and [`MatmulAutotuneKey`].

use crate::gpu::kernels::{self, Epilogue, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Round up to a power of two.
pub(crate) fn bucket(d: usize) -> usize {
    d.max(1).next_power_of_two()
}

/// The shape class of a product: M, N, K rounded up to powers of two, and whether each is a
/// multiple of 4. Shown as `m128.n512.k1024.a011`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShapeClass {
    /// M rounded up to a power of two.
    pub m: usize,
    /// N rounded up to a power of two.
    pub n: usize,
    /// K rounded up to a power of two.
    pub k: usize,
    /// M is a multiple of 4.
    pub m4: bool,
    /// N is a multiple of 4.
    pub n4: bool,
    /// K is a multiple of 4.
    pub k4: bool,
}

impl ShapeClass {
    /// The class of the product `spec`.
    pub fn of(spec: &MatmulSpec) -> Self {
        ShapeClass {
            m: bucket(spec.m),
            n: bucket(spec.n),
            k: bucket(spec.k),
            m4: spec.m.is_multiple_of(4),
            n4: spec.n.is_multiple_of(4),
            k4: spec.k.is_multiple_of(4),
        }
    }
}

impl std::fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = |b: bool| if b { '1' } else { '0' };
        write!(
            f,
            "m{}.n{}.k{}.a{}{}{}",
            self.m,
            self.n,
            self.k,
            a(self.m4),
            a(self.n4),
            a(self.k4)
        )
    }
}

/// The shape class of a product as text (see [`ShapeClass`]).
pub fn shape_class(spec: &MatmulSpec) -> String {
    ShapeClass::of(spec).to_string()
}

/// The epilogue by name (`"BiasRelu"`), as it appears in the cache file.
mod epilogue_name {
    use super::Epilogue;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Epilogue, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{e:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Epilogue, D::Error> {
        let name = String::deserialize(d)?;
        Epilogue::ALL
            .into_iter()
            .find(|e| format!("{e:?}") == name)
            .ok_or_else(|| D::Error::custom(format!("unknown epilogue {name:?}")))
    }
}

/// The cache key of one product on one adapter (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatmulAutotuneKey {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// wgpu backend, e.g. `Vulkan`.
    pub backend: String,
    /// Driver name, e.g. `llvmpipe`.
    pub driver: String,
    /// Driver version/info, e.g. `Mesa 23.2.1 (LLVM 15.0.6)`.
    pub driver_info: String,
    /// Changes with the matmul shader and the candidate list.
    pub fingerprint: String,
    /// The product's shape class.
    pub class: ShapeClass,
    /// A is read transposed.
    pub trans_a: bool,
    /// B is read transposed.
    pub trans_b: bool,
    /// What the kernel applies to each output.
    #[serde(with = "epilogue_name")]
    pub epilogue: Epilogue,
    /// C += A·B rather than C = A·B.
    pub accumulate: bool,
}

impl MatmulAutotuneKey {
    /// The key of `spec` on `ctx`.
    pub fn new(ctx: &GpuContext, spec: &MatmulSpec) -> Self {
        let i = &ctx.info;
        MatmulAutotuneKey {
            adapter: i.name.clone(),
            backend: format!("{:?}", i.backend),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            fingerprint: fingerprint().to_string(),
            class: ShapeClass::of(spec),
            trans_a: spec.trans_a,
            trans_b: spec.trans_b,
            epilogue: spec.epilogue,
            accumulate: spec.accumulate,
        }
    }

    /// Same adapter, driver and shader (the product may differ).
    pub(crate) fn same_device(&self, other: &Self) -> bool {
        self.adapter == other.adapter
            && self.backend == other.backend
            && self.driver == other.driver
            && self.driver_info == other.driver_info
            && self.fingerprint == other.fingerprint
    }
}

/// `adapter|backend|driver info|fingerprint|class|nt|Epilogue+=`, for messages.
impl std::fmt::Display for MatmulAutotuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}|{}|{} {}|{}|{}|{}{}|{:?}{}",
            self.adapter,
            self.backend,
            self.driver,
            self.driver_info,
            self.fingerprint,
            self.class,
            if self.trans_a { 't' } else { 'n' },
            if self.trans_b { 't' } else { 'n' },
            self.epilogue,
            if self.accumulate { "+=" } else { "" }
        )
    }
}

/// The cache key of `spec` on `ctx` (see the module docs).
pub fn key(ctx: &GpuContext, spec: &MatmulSpec) -> MatmulAutotuneKey {
    MatmulAutotuneKey::new(ctx, spec)
}

/// FNV-1a, stable across Rust versions (unlike `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Changes whenever the matmul shader or the candidate list does, so stale choices are retimed.
pub(crate) fn fingerprint() -> &'static str {
    static F: OnceLock<String> = OnceLock::new();
    F.get_or_init(|| {
        let mut s = String::new();
        for t in MatmulTile::CANDIDATES {
            s += &t.to_string();
            s.push(';');
        }
        s += &kernels::matmul_source(&MatmulSpec::new(1, 1, 1), &MatmulTile::DEFAULT);
        format!("{:016x}", fnv1a(s.as_bytes()))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_key(driver_info: &str, class: ShapeClass) -> MatmulAutotuneKey {
        MatmulAutotuneKey {
            adapter: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            backend: "Vulkan".into(),
            driver: "llvmpipe".into(),
            driver_info: driver_info.into(),
            fingerprint: "0123456789abcdef".into(),
            class,
            trans_a: false,
            trans_b: true,
            epilogue: Epilogue::BiasRelu,
            accumulate: true,
        }
    }

    #[test]
    fn shape_class_buckets_by_powers_of_two_and_alignment() {
        let s = MatmulSpec::new(100, 512, 784);
        assert_eq!(shape_class(&s), "m128.n512.k1024.a111");
        assert_eq!(
            shape_class(&MatmulSpec::new(100, 10, 10)),
            "m128.n16.k16.a100"
        );
        assert_eq!(shape_class(&MatmulSpec::new(1, 1, 1)), "m1.n1.k1.a000");
        // Same class, same choice: 120×500×1000 shares 100×512×784's entry.
        assert_eq!(
            ShapeClass::of(&MatmulSpec::new(120, 500, 1000)),
            ShapeClass::of(&s)
        );
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
