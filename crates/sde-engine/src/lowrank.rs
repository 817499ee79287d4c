//! f32 products with one dimension of a LoRA rank (8, 16, 24 or 32), on CPUs with AVX2 and
//! FMA: the adapter's own products in a train step.
//!
//! With a rank-8 adapter on every projection, a train step makes four such products per
//! projection: `x Aᵀ` forward, and `dy B`, `dyᵀ (x Aᵀ)` and `(dy B)ᵀ x` backward. Each reads a
//! whole activation (`[tokens, width]`) for a few arithmetic operations per element; handed
//! to the gemm crate as general products (a transposed left operand, an 8-wide right one)
//! they took about 8% of a SmolLM2-135M step on 2 cores, several times their reading time.
//! Here they are written for their shape ([`project_and_outer_sum`]): `D M` with the rank
//! along the register lanes, and `Dᵀ E` as a sum of outer products kept in registers over a
//! block of rows, both over the same block of `D` while it is in cache (the backward's `dy B`
//! and `dyᵀ (x Aᵀ)` read `dy` once from memory).
//!
//! On CPUs with AVX-512F, `Dᵀ E` runs with the width along 16-lane registers instead of the
//! rank along 8-lane ones: three vectors of a row of `D` by eight broadcast values of `E`
//! make 24 full-width FMAs per 11 loads, where the AVX2 tile makes eight half-width ones per
//! nine. Each sum is made in the same order, so the results are the same bits.
//!
//! Invariant: `D M` is the f32 sum in order along the long dimension; `Dᵀ E` is that sum per
//! block of rows, added up per part of the rows (one part per thread), the parts then added
//! (both tested against a scalar reference, and the AVX-512 `Dᵀ E` against the AVX2 one bit
//! for bit). Only the order of the sums differs from other products.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Rows of `D` per block: a block of a 1536-wide activation (192 KiB) stays in the L2 cache
/// between the two products of [`project_and_outer_sum`].
const ROW_BLOCK: usize = 32;

/// Whether the products here run for rank `r` on this CPU (AVX2 and FMA; `r` a multiple of 8
/// up to 32).
pub(crate) fn applies(r: usize) -> bool {
    matches!(r, 8 | 16 | 24 | 32) && avx2()
}

/// Whether the CPU has AVX-512F: `Dᵀ E` then runs with the width along 16-lane registers
/// ([`outer_block_avx512`]).
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(D M, Dᵀ E)` in one pass over `D` (row-major `[n, d]`), `M` row-major `[d, r]` (empty
/// for none: the first result is then empty), `E` row-major `[n, r]` (`None` for none: the
/// second result is then empty).
///
/// # Panics
/// If the slices do not hold the shapes or [`applies`] is false for `r`.
pub(crate) fn project_and_outer_sum(
    d: &[f32],
    n: usize,
    width: usize,
    m: &[f32],
    e: Option<&[f32]>,
    r: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert!(applies(r), "lowrank: rank {r} on this CPU");
    assert_eq!(d.len(), n * width, "lowrank: D is not [{n}, {width}]");
    let with_m = !m.is_empty();
    if with_m {
        assert_eq!(m.len(), width * r, "lowrank: M is not [{width}, {r}]");
    }
    if let Some(e) = e {
        assert_eq!(e.len(), n * r, "lowrank: E is not [{n}, {r}]");
    }
    let mut p = if with_m {
        vec![0f32; n * r]
    } else {
        Vec::new()
    };
    // One part of the rows per thread, each with its own partial `Dᵀ E`.
    let threads = if n * width >= 1 << 15 {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let part_rows = n.div_ceil(threads).div_ceil(ROW_BLOCK).max(1) * ROW_BLOCK;
    let parts = n.div_ceil(part_rows).max(1);
    let g_len = if e.is_some() { width * r } else { 0 };
    // With AVX-512 the partial sums are kept transposed (`[r, width]`).
    let wide = avx512();
    let mut partial = vec![0f32; parts * g_len];
    let mut p_parts: Vec<&mut [f32]> = if with_m {
        p.chunks_mut(part_rows * r).collect()
    } else {
        (0..parts).map(|_| &mut [][..]).collect()
    };
    let mut g_parts: Vec<&mut [f32]> = if g_len > 0 {
        partial.chunks_mut(g_len).collect()
    } else {
        (0..parts).map(|_| &mut [][..]).collect()
    };
    let work = |(i, (pp, gp)): (usize, (&mut &mut [f32], &mut &mut [f32]))| {
        let r0 = i * part_rows;
        let rows = part_rows.min(n - r0);
        for b0 in (0..rows).step_by(ROW_BLOCK) {
            let br = ROW_BLOCK.min(rows - b0);
            let db = &d[(r0 + b0) * width..(r0 + b0 + br) * width];
            if with_m {
                let out = &mut pp[b0 * r..(b0 + br) * r];
                // SAFETY: `applies(r)` asserted AVX2 and FMA; the slices hold the shapes
                // (asserted above).
                unsafe { project_block(db, br, width, m, r, out) };
            }
            if let Some(e) = e {
                let eb = &e[(r0 + b0) * r..(r0 + b0 + br) * r];
                // SAFETY: as above, and `wide` only where the CPU has AVX-512F.
                unsafe {
                    if wide {
                        outer_block_avx512(db, br, width, eb, r, gp);
                    } else {
                        outer_block(db, br, width, eb, r, gp);
                    }
                }
            }
        }
    };
    if parts > 1 {
        p_parts
            .par_iter_mut()
            .zip(g_parts.par_iter_mut())
            .enumerate()
            .for_each(work);
    } else {
        p_parts
            .iter_mut()
            .zip(g_parts.iter_mut())
            .enumerate()
            .for_each(work);
    }
    drop((p_parts, g_parts));
    if g_len == 0 {
        return (p, Vec::new());
    }
    let mut g = partial[..g_len].to_vec();
    for part in partial[g_len..].chunks_exact(g_len) {
        for (x, y) in g.iter_mut().zip(part) {
            *x += y;
        }
    }
    if wide {
        let gt = g;
        g = vec![0f32; g_len];
        for (c, row) in gt.chunks_exact(width).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                g[o * r + c] = v;
            }
        }
    }
    (p, g)
}

/// `out = D M` for a block of `rows` rows of `D` (`[rows, width]`), `M` `[width, r]`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `r` is 8, 16, 24 or 32; the slices hold the shapes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn project_block(
    d: &[f32],
    rows: usize,
    width: usize,
    m: &[f32],
    r: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match r {
            8 => project_tiles::<1, 8>(d, rows, width, m, out),
            16 => project_tiles::<2, 4>(d, rows, width, m, out),
            24 => project_tiles::<3, 4>(d, rows, width, m, out),
            _ => project_tiles::<4, 2>(d, rows, width, m, out),
        }
    }
}

/// [`project_block`] for `r = 8 C`, `T` rows at a time (`T × C` accumulators).
///
/// # Safety
/// As [`project_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn project_tiles<const C: usize, const T: usize>(
    d: &[f32],
    rows: usize,
    width: usize,
    m: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let r = 8 * C;
    assert!(d.len() >= rows * width && m.len() >= width * r && out.len() >= rows * r);
    let (dp, mp, op) = (d.as_ptr(), m.as_ptr(), out.as_mut_ptr());
    let mut t0 = 0;
    while t0 < rows {
        let tr = T.min(rows - t0);
        // A partial tile repeats its last row (all `T` rows run, so that the accumulators
        // stay in registers); only the real rows are stored.
        let row: [*const f32; T] = std::array::from_fn(|i| {
            // SAFETY: row `t0 + min(i, tr - 1) < rows` of `D` (asserted above).
            unsafe { dp.add((t0 + i.min(tr - 1)) * width) }
        });
        let mut acc = [[_mm256_setzero_ps(); C]; T];
        for o in 0..width {
            // SAFETY: row `o < width` of `M` holds `r = 8 C` floats; each `row[i]` holds
            // `width` floats (asserted above).
            unsafe {
                let mv: [__m256; C] =
                    std::array::from_fn(|c| _mm256_loadu_ps(mp.add(o * r + 8 * c)));
                for i in 0..T {
                    let x = _mm256_broadcast_ss(&*row[i].add(o));
                    for c in 0..C {
                        acc[i][c] = _mm256_fmadd_ps(x, mv[c], acc[i][c]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(tr) {
            for (c, v) in acc.iter().enumerate() {
                // SAFETY: row `t0 + i < rows` of `out` holds `r` floats.
                unsafe { _mm256_storeu_ps(op.add((t0 + i) * r + 8 * c), *v) };
            }
        }
        t0 += T;
    }
}

/// `g += Dᵀ E` for a block of `rows` rows of `D` (`[rows, width]`) and `E` (`[rows, r]`);
/// `g` is `[width, r]`.
///
/// # Safety
/// As [`project_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn outer_block(d: &[f32], rows: usize, width: usize, e: &[f32], r: usize, g: &mut [f32]) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match r {
            8 => outer_tiles::<1, 8>(d, rows, width, e, g),
            16 => outer_tiles::<2, 6>(d, rows, width, e, g),
            24 => outer_tiles::<3, 4>(d, rows, width, e, g),
            _ => outer_tiles::<4, 2>(d, rows, width, e, g),
        }
    }
}

/// [`outer_block`] for `r = 8 C`, `O` columns of `D` (rows of `g`) at a time.
///
/// # Safety
/// As [`project_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn outer_tiles<const C: usize, const O: usize>(
    d: &[f32],
    rows: usize,
    width: usize,
    e: &[f32],
    g: &mut [f32],
) {
    use std::arch::x86_64::*;
    let r = 8 * C;
    assert!(d.len() >= rows * width && e.len() >= rows * r && g.len() >= width * r);
    let (dp, ep, gp) = (d.as_ptr(), e.as_ptr(), g.as_mut_ptr());
    let mut o0 = 0;
    while o0 < width {
        let oc = O.min(width - o0);
        // A partial tile repeats its last column (all `O` run, so that the accumulators stay
        // in registers); only the real ones are stored.
        let col: [usize; O] = std::array::from_fn(|i| o0 + i.min(oc - 1));
        let mut acc = [[_mm256_setzero_ps(); C]; O];
        for t in 0..rows {
            // SAFETY: row `t < rows` of `E` holds `r` floats, of `D` `width` (asserted), and
            // every `col[i] < width`.
            unsafe {
                let ev: [__m256; C] =
                    std::array::from_fn(|c| _mm256_loadu_ps(ep.add(t * r + 8 * c)));
                let drow = dp.add(t * width);
                for i in 0..O {
                    let x = _mm256_broadcast_ss(&*drow.add(col[i]));
                    for c in 0..C {
                        acc[i][c] = _mm256_fmadd_ps(x, ev[c], acc[i][c]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(oc) {
            for (c, v) in acc.iter().enumerate() {
                // SAFETY: row `o0 + i < width` of `g` holds `r` floats.
                unsafe {
                    let at = gp.add((o0 + i) * r + 8 * c);
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), *v));
                }
            }
        }
        o0 += O;
    }
}

/// [`outer_block`] with the width along 16-lane registers, into a transposed `gᵀ` (`[r,
/// width]`): each row of `D` is read as vectors and each of `E`'s values broadcast, so that a
/// tile of three vectors by eight ranks (24 accumulators) makes 24 full-width FMAs per 11
/// loads. Each sum is the one [`outer_block`] makes, in the same order.
///
/// # Safety
/// The CPU has AVX-512F; `r` is 8, 16, 24 or 32; `d` holds `[rows, width]`, `e` `[rows, r]`
/// and `gt` `[r, width]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn outer_block_avx512(
    d: &[f32],
    rows: usize,
    width: usize,
    e: &[f32],
    r: usize,
    gt: &mut [f32],
) {
    assert!(d.len() >= rows * width && e.len() >= rows * r && gt.len() >= width * r);
    let vectors = width.div_ceil(16);
    for c0 in (0..r).step_by(8) {
        let mut v0 = 0;
        while v0 < vectors {
            // SAFETY: the caller's contract; vectors `v0..` lie within `width.div_ceil(16)`
            // and ranks `c0..c0 + 8` within `r`.
            unsafe {
                match vectors - v0 {
                    1 => outer_tile_avx512::<1>(d, rows, width, e, r, gt, c0, v0),
                    2 => outer_tile_avx512::<2>(d, rows, width, e, r, gt, c0, v0),
                    _ => outer_tile_avx512::<3>(d, rows, width, e, r, gt, c0, v0),
                }
            }
            v0 += 3;
        }
    }
}

/// One tile of [`outer_block_avx512`]: columns `16 v0..16 (v0 + V)` of `D` (those past
/// `width` masked off) by ranks `c0..c0 + 8`.
///
/// # Safety
/// As [`outer_block_avx512`], with `16 v0 < width` and `c0 + 8 <= r`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn outer_tile_avx512<const V: usize>(
    d: &[f32],
    rows: usize,
    width: usize,
    e: &[f32],
    r: usize,
    gt: &mut [f32],
    c0: usize,
    v0: usize,
) {
    use std::arch::x86_64::*;
    let masks: [__mmask16; V] = std::array::from_fn(|v| {
        let lanes = width.saturating_sub(16 * (v0 + v)).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    });
    let (dp, ep, gp) = (d.as_ptr(), e.as_ptr(), gt.as_mut_ptr());
    let mut acc = [[_mm512_setzero_ps(); V]; 8];
    for t in 0..rows {
        // SAFETY: row `t < rows` of `D` holds `width` floats (the masks keep the loads
        // inside them) and of `E` `r >= c0 + 8`.
        unsafe {
            let dv: [__m512; V] = std::array::from_fn(|v| {
                _mm512_maskz_loadu_ps(masks[v], dp.add(t * width + 16 * (v0 + v)))
            });
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ep.add(t * r + c0 + k));
                for (acc, dv) in acc.iter_mut().zip(&dv) {
                    *acc = _mm512_fmadd_ps(*dv, x, *acc);
                }
            }
        }
    }
    for (k, acc) in acc.iter().enumerate() {
        for (v, acc) in acc.iter().enumerate() {
            // SAFETY: row `c0 + k < r` of `gᵀ` holds `width` floats; the mask keeps the
            // access inside them.
            unsafe {
                let at = gp.add((c0 + k) * width + 16 * (v0 + v));
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), *acc);
                _mm512_mask_storeu_ps(at, masks[v], sum);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn outer_block_avx512(_: &[f32], _: usize, _: usize, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("lowrank only runs on x86-64 CPUs with AVX2")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn project_block(_: &[f32], _: usize, _: usize, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("lowrank only runs on x86-64 CPUs with AVX2")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn outer_block(_: &[f32], _: usize, _: usize, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("lowrank only runs on x86-64 CPUs with AVX2")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgemm::tests::values;

    /// The AVX-512 `Dᵀ E` tiles make the AVX2 tiles' sums bit for bit, added over several
    /// row blocks, on every rank and on widths that leave partial vectors and tiles.
    #[test]
    fn wide_outer_sums_equal_the_avx2_ones_bit_for_bit() {
        if !(avx2() && avx512()) {
            eprintln!("note: no AVX-512 here; the AVX2 tiles run instead");
            return;
        }
        for (i, &width) in [1usize, 16, 40, 48, 100, 576, 1536].iter().enumerate() {
            for r in [8, 16, 24, 32] {
                let n = 70;
                let seed = 100 * i as u64 + r as u64;
                let d = values(n * width, seed);
                let e = values(n * r, seed + 1);
                let (mut g, mut gt) = (values(width * r, seed + 2), vec![0f32; width * r]);
                for o in 0..width {
                    for c in 0..r {
                        gt[c * width + o] = g[o * r + c];
                    }
                }
                for b0 in (0..n).step_by(ROW_BLOCK) {
                    let br = ROW_BLOCK.min(n - b0);
                    let (db, eb) = (&d[b0 * width..(b0 + br) * width], &e[b0 * r..(b0 + br) * r]);
                    // SAFETY: the CPU has AVX2, FMA and AVX-512F (checked above); the slices
                    // hold the shapes.
                    unsafe {
                        outer_block(db, br, width, eb, r, &mut g);
                        outer_block_avx512(db, br, width, eb, r, &mut gt);
                    }
                }
                for o in 0..width {
                    for c in 0..r {
                        assert_eq!(
                            gt[c * width + o].to_bits(),
                            g[o * r + c].to_bits(),
                            "width {width} r {r} at ({o}, {c})"
                        );
                    }
                }
            }
        }
    }

    /// Both products, alone and together, on every rank, partial tiles and row blocks, one
    /// part of the rows or several: `D M` exactly the in-order f32 sums, `Dᵀ E` within
    /// rounding of an f64 reference.
    #[test]
    fn products_equal_a_scalar_reference() {
        if !avx2() {
            eprintln!("note: no AVX2 here; the gemm crate runs these products instead");
            return;
        }
        for (i, &(n, width)) in [(1, 8), (13, 100), (64, 576), (300, 1536), (2000, 40)]
            .iter()
            .enumerate()
        {
            for r in [8, 16, 24, 32] {
                let seed = 10 * i as u64 + r as u64;
                let d = values(n * width, seed);
                let m = values(width * r, seed + 1);
                let e = values(n * r, seed + 2);
                let (p, g) = crate::kernels::in_pool(|| {
                    project_and_outer_sum(&d, n, width, &m, Some(&e), r)
                });
                let alone = crate::kernels::in_pool(|| {
                    (
                        project_and_outer_sum(&d, n, width, &m, None, r),
                        project_and_outer_sum(&d, n, width, &[], Some(&e), r),
                    )
                });
                assert_eq!(alone.0, (p.clone(), Vec::new()));
                assert_eq!(alone.1, (Vec::new(), g.clone()));
                for t in 0..n {
                    for j in 0..r {
                        let want =
                            (0..width).fold(0f32, |s, o| d[t * width + o].mul_add(m[o * r + j], s));
                        assert_eq!(
                            p[t * r + j].to_bits(),
                            want.to_bits(),
                            "D M [{n}, {width}] r {r} at ({t}, {j})"
                        );
                    }
                }
                for o in 0..width {
                    for j in 0..r {
                        let want: f64 = (0..n)
                            .map(|t| d[t * width + o] as f64 * e[t * r + j] as f64)
                            .sum();
                        let got = g[o * r + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (n as f64).sqrt() * (1.0 + want.abs()),
                            "Dᵀ E [{n}, {width}] r {r} at ({o}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
