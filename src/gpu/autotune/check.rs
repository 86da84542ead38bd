//! The autotuner's correctness check: a variant against the [oracle](crate::oracle) on shapes
//! that cross its tile edges within a product's class ([`check_shapes`]).

use super::key::bucket;
use super::{CHECK_FULL_TILES, CHECK_SEED};
use crate::gpu::kernels::{self, MatmulAlgo, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use crate::oracle::{matmul_compare, Check, Inputs, MatmulData};
use crate::Result;

/// How far the variant's K loop steps: BK through workgroup memory, 4 in the direct kernel.
pub(crate) fn k_step(tile: &MatmulTile) -> usize {
    match tile.algo {
        MatmulAlgo::Tiled => tile.bk as usize,
        MatmulAlgo::Direct | MatmulAlgo::Subgroup => 4,
    }
}

/// The rows and columns of C (not C') one workgroup of `tile` covers.
pub(crate) fn tile_mn(tile: &MatmulTile) -> (usize, usize) {
    let (bm, bn) = (tile.bm() as usize, tile.bn() as usize);
    if tile.swap {
        (bn, bm)
    } else {
        (bm, bn)
    }
}

/// The two sizes one dimension of the check shapes takes, for a product dimension `d` and a
/// tile of `t` along it (see the module docs): [`CHECK_FULL_TILES`] full tiles (fewer where the
/// class of `d` ends sooner) and then 1, resp. t − 1 (4, resp. t − 4, when `d` is a multiple of
/// 4); the smallest, resp. largest, size of the class when it never passes one tile. Every size
/// is at most the class's largest and a multiple of 4 exactly when `d` is.
pub(crate) fn edge_sizes(d: usize, t: usize) -> [usize; 2] {
    let hi = bucket(d);
    let aligned = d.is_multiple_of(4);
    let same_flag = |s: usize| s.is_multiple_of(4) == aligned;
    let in_class = |s: usize| s >= 1 && bucket(s) == hi && same_flag(s);
    let (near, far) = if aligned {
        (4, t.saturating_sub(4).max(4))
    } else {
        (1, t.saturating_sub(1).max(1))
    };
    let fit = |r: usize| {
        (0..=CHECK_FULL_TILES)
            .rev()
            .map(|f| (f, f * t + r))
            .find(|&(f, s)| s <= hi && same_flag(s) && (in_class(s) || f == CHECK_FULL_TILES))
    };
    let lo = hi / 2 + 1;
    let smallest = (lo..=hi).find(|&s| in_class(s)).unwrap_or(d);
    let largest = (lo..=hi).rev().find(|&s| in_class(s)).unwrap_or(d);
    if hi <= t {
        return [smallest, largest];
    }
    [
        fit(near).map_or(smallest, |x| x.1),
        fit(far).map_or(largest, |x| x.1),
    ]
}

/// The shapes [`check_tile`] runs `tile` on for products of `spec`'s class (see the module
/// docs): `spec`'s transposes, epilogue and accumulation; one shape pairs M's partial tile of 1
/// (or 4) with N's and K's of tile − 1 (or tile − 4), the other the reverse (left out when it is
/// the same shape).
pub fn check_shapes(spec: &MatmulSpec, tile: &MatmulTile) -> Vec<MatmulSpec> {
    let (tm, tn) = tile_mn(tile);
    let [m0, m1] = edge_sizes(spec.m, tm);
    let [n0, n1] = edge_sizes(spec.n, tn);
    let [k0, k1] = edge_sizes(spec.k, k_step(tile));
    let mut v = vec![
        MatmulSpec {
            m: m0,
            n: n1,
            k: k1,
            ..*spec
        },
        MatmulSpec {
            m: m1,
            n: n0,
            k: k0,
            ..*spec
        },
    ];
    v.dedup();
    v
}

#[cfg(test)]
thread_local! {
    /// Tests only: variants whose results this thread corrupts at and past their first tile
    /// edge in M or N, i.e. variants that are wrong only there.
    pub(crate) static SABOTAGED: std::cell::RefCell<Vec<MatmulTile>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `tile` on the product `shape` with fresh inputs from `inp` (C poisoned with NaN, or the
/// accumulated values) and compare with the [oracle](crate::oracle::matmul_compare): the one
/// matmul check, of the tuner and of `verify` alike. The check names the tile.
pub async fn check_matmul_async(
    ctx: &GpuContext,
    inp: &mut Inputs,
    shape: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Check> {
    let (m, n) = (shape.m, shape.n);
    let d = MatmulData::new(inp, shape);
    let ab = ctx.upload("a", d.a.as_slice().unwrap());
    let bb = ctx.upload("b", d.b.as_slice().unwrap());
    let aux = d.aux(shape.epilogue).map(|v| ctx.upload("aux", v));
    let cb = if shape.accumulate {
        ctx.upload("c", d.start.as_slice().unwrap())
    } else {
        ctx.poisoned("c", m * n)
    };
    let launch = kernels::matmul(ctx, shape, tile, &ab, &bb, aux.as_ref(), &cb)?;
    ctx.submit(&[&launch], 1)?;
    #[allow(unused_mut)]
    let mut got: Vec<f32> = ctx.read_async("c", &cb, m * n).await?;
    #[cfg(test)]
    if SABOTAGED.with_borrow(|s| s.contains(tile)) {
        let (tm, tn) = tile_mn(tile);
        for (idx, v) in got.iter_mut().enumerate() {
            if idx / n >= tm || idx % n >= tn {
                *v += 1.0;
            }
        }
    }
    let mut check = matmul_compare(shape, &d, &got);
    check.tile = Some(*tile);
    Ok(check)
}

/// Check `tile` against the CPU twin on [`check_shapes`]`(spec, tile)`: the first check that
/// fails, or `None` when all pass.
pub fn check_tile(ctx: &GpuContext, spec: &MatmulSpec, tile: &MatmulTile) -> Result<Option<Check>> {
    crate::util::wait_for("tile check", check_tile_async(ctx, spec, tile))
}

/// [`check_tile`] without blocking the browser.
pub async fn check_tile_async(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Option<Check>> {
    let mut inp = Inputs::new(CHECK_SEED);
    for shape in check_shapes(spec, tile) {
        let c = check_matmul_async(ctx, &mut inp, &shape, tile).await?;
        if !c.pass() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// A failed check in a few words.
pub(crate) fn failure(c: &Check) -> String {
    format!(
        "{} of {} elements off on {} (worst {:.3e}x the tolerance)",
        c.bad, c.elements, c.shape, c.worst
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::autotune::ShapeClass;
    use crate::gpu::kernels::Epilogue;

    /// The remainders a dimension of a class with `aligned` sizes can leave past a tile edge of
    /// `t`: one and one short of full, or four and four short when sizes are multiples of 4.
    fn edge_remainders(aligned: bool, t: usize) -> Vec<usize> {
        let mut r = if aligned {
            vec![4 % t, (t - 4) % t]
        } else {
            vec![1, t - 1]
        };
        r.sort();
        r.dedup();
        r
    }

    #[test]
    fn check_shapes_cross_every_tile_edge_of_each_candidate() {
        let mut specs = Vec::new();
        for (m, n, k) in [
            (100, 512, 784),
            (1000, 1000, 1000),
            (513, 257, 1023),
            (4096, 130, 4097),
        ] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                specs.push(MatmulSpec {
                    trans_a: ta,
                    trans_b: tb,
                    ..MatmulSpec::new(m, n, k)
                });
            }
        }
        specs.push(MatmulSpec {
            epilogue: Epilogue::ReluMask,
            accumulate: true,
            ..MatmulSpec::new(255, 258, 63)
        });
        for tile in MatmulTile::CANDIDATES {
            let (tm, tn) = tile_mn(&tile);
            let tk = k_step(&tile);
            for spec in &specs {
                let shapes = check_shapes(spec, &tile);
                let class = ShapeClass::of(spec);
                let dims: [(&str, usize, usize, usize, Vec<usize>); 3] = [
                    (
                        "M",
                        spec.m,
                        tm,
                        class.m,
                        shapes.iter().map(|s| s.m).collect(),
                    ),
                    (
                        "N",
                        spec.n,
                        tn,
                        class.n,
                        shapes.iter().map(|s| s.n).collect(),
                    ),
                    (
                        "K",
                        spec.k,
                        tk,
                        class.k,
                        shapes.iter().map(|s| s.k).collect(),
                    ),
                ];
                for (dim, d, t, hi, sizes) in dims {
                    let ctx = format!("{tile} on {spec:?}: {dim} sizes {sizes:?}, tile {t}");
                    // Past the first tile edge, with the partial tiles the class can have.
                    assert!(hi >= 2 * t, "{ctx}: the class should reach past one tile");
                    assert!(sizes.iter().all(|&s| s > t && s <= hi), "{ctx}");
                    let mut rem: Vec<usize> = sizes.iter().map(|&s| s % t).collect();
                    rem.sort();
                    rem.dedup();
                    assert_eq!(rem, edge_remainders(d % 4 == 0, t), "{ctx}");
                    // Cheap: a few hundred per side at most.
                    assert!(sizes.iter().all(|&s| s <= 3 * t && s < 200), "{ctx}");
                }
                for s in &shapes {
                    // The same pipeline as the product, with the same flavour.
                    assert_eq!(s.key(&tile), spec.key(&tile), "{tile} {s:?}");
                    assert_eq!(
                        (s.trans_a, s.trans_b, s.epilogue, s.accumulate),
                        (spec.trans_a, spec.trans_b, spec.epilogue, spec.accumulate)
                    );
                }
            }
        }
    }

    #[test]
    fn check_shapes_by_hand() {
        let t = MatmulTile::DEFAULT; // 64×64 per workgroup, BK 16
                                     // M = 100 (a multiple of 4, class 65..128): 64 + 4 and 64 + 60. N = 30 (class 17..32)
                                     // never passes a tile: its smallest and largest. K = 50 (class 33..64): 2·16 + 1, + 15.
        let c = check_shapes(&MatmulSpec::new(100, 30, 50), &t);
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(68, 31, 47), (124, 17, 33)]);
        // The subgroup tile covers 64×16 and steps K by 4; N = 512 (class 257..512) is checked
        // at 2·16 + 4 and 2·16 + 12 (below the class: two full tiles are enough); K = 784 a
        // multiple of 4 only fills whole steps.
        let c = check_shapes(
            &MatmulSpec::new(100, 512, 784),
            &MatmulTile::DEFAULT_CPU_SUBGROUP,
        );
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(68, 44, 12), (124, 36, 12)]);
        // Swapped, the direct 8×8 tile covers 8 rows of C by 64 columns.
        let swapped = MatmulTile::direct(1, 8, 8).swapped();
        assert_eq!(tile_mn(&swapped), (8, 64));
        let c = check_shapes(&MatmulSpec::new(100, 10, 784), &swapped);
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(20, 15, 12), (20, 9, 12)]);
        // Tiny classes stay tiny; one shape when both coincide.
        let c = check_shapes(&MatmulSpec::new(1, 3, 1), &t);
        assert_eq!(c, [MatmulSpec::new(1, 3, 1)]);
        // Every product of a class gets the same shapes.
        let spec = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(100, 513, 786)
        };
        let same = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(128, 1023, 514)
        };
        assert_eq!(ShapeClass::of(&spec), ShapeClass::of(&same));
        for t in MatmulTile::CANDIDATES {
            assert_eq!(check_shapes(&spec, &t), check_shapes(&same, &t), "{t}");
        }
    }

    #[test]
    fn edge_sizes_stay_in_small_classes() {
        for d in 1..=300 {
            for t in [4, 8, 16, 32, 64] {
                let s = edge_sizes(d, t);
                let hi = bucket(d);
                for x in s {
                    assert!(x >= 1 && x <= hi, "d {d} t {t}: {s:?}");
                    assert_eq!(x % 4 == 0, d % 4 == 0, "d {d} t {t}: {s:?}");
                    // Below the class only with two full tiles before the partial one.
                    assert!(bucket(x) == hi || x > 2 * t, "d {d} t {t}: {s:?}");
                }
                if hi <= t {
                    let class: Vec<usize> = (1..=hi)
                        .filter(|&x| bucket(x) == hi && (x % 4 == 0) == (d % 4 == 0))
                        .collect();
                    assert_eq!(s, [class[0], *class.last().unwrap()], "d {d} t {t}");
                }
            }
        }
    }
}
