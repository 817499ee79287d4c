//! f32 matrix products with AVX2 and FMA, and with AVX-512 where the CPU has it.
//!
//! The gemm crate's AVX2 path ran the engine's shapes (576 to 1536 wide, hundreds to
//! thousands of rows) at about half of the FMA rate of a Zen 3 core. This is the classic
//! blocked product: both operands packed per block (except that the AVX-512 tile reads the
//! rows of a row-major left operand in place, one pointer a row), a register tile of up to
//! [`MR`] rows (one broadcast a row per step of the inner dimension) by one panel of [`NR`]
//! columns (two 8-lane registers) with AVX2 or up to [`PANELS_512`] panels (one 16-lane
//! register each) with AVX-512, the inner dimension taken whole up to [`KC_MAX`] so that each
//! output tile is written once, and the output tile prefetched before its sums start. A tile
//! of fewer rows (the last of a matrix, or the one to eight rows of a decode step) is compiled
//! for its height, so that it does only its own rows' sums.
//!
//! Its main use is a frozen weight packed once ([`PackedRhs`]): the gemm crate packs its
//! left operand (the weight, in its column-major view of `x Wᵀ`) again in every product, and
//! on a Zen 4 core that packing was 4-8% of a training step. Packed beforehand, the AVX-512
//! tiles ran the model's `x Wᵀ` shapes at 194-221 GFLOP/s where the gemm crate ran 142-202
//! (`examples/matmul_shapes.rs` in `benches/`, 512 and 2048 rows). Products of operands
//! packed per product ([`gemm`]) run here only on AVX2 CPUs ([`applies`]).
//!
//! Invariant: the result is the f32 product summed in order along the inner dimension within
//! each block of it (tested against a scalar reference below, with each instruction set's
//! tiles); only the order of the sums differs from other kernels.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of the register tile.
const MR: usize = 6;
/// Columns of the register tile: two 8-lane registers.
const NR: usize = 16;
/// The most inner positions per block: a tile's packed rows (`KC_MAX × 6 × 4` bytes) stay in
/// the L1 cache, and the model's widths up to 576 run in one block.
const KC_MAX: usize = 640;
/// Panels per AVX-512 tile: `MR × PANELS_512` accumulators of 16 lanes.
const PANELS_512: usize = 4;
/// How far ahead, in rows of its panels, an AVX-512 tile prefetches the right operand.
const PREFETCH_ROWS: usize = 16;
/// Rows per block of the left operand: four register tiles share each column panel.
const MC: usize = 4 * MR;
/// Products of fewer rows stay with the gemm crate: at 128 rows, packing the right operand
/// for each product cost about what the faster tile brought (`examples/matmul_shapes.rs` in
/// `benches/`, Zen 3); from 256 rows this product was faster on every training shape but one.
const MIN_ROWS: usize = 256;
/// Bytes of the right operand packed at a time: columns are taken in blocks that fit, so that
/// the packed block stays in the last-level cache while the rows pass over it.
const PACKED_B_MAX: usize = 4 << 20;
/// The longest part of the inner dimension packed at a time: [`PACKED_B_MAX`] then holds at
/// least 256 columns.
const K_PART_MAX: usize = 4096;
/// Inner dimensions and columns outside this range stay with the gemm crate: it ran the
/// attention heads' products (64 wide) and the output head's gradient (49152 deep) faster.
const WIDTHS: std::ops::RangeInclusive<usize> = 128..=4096;

/// One strided matrix inside a slice: element `(r, c)` is `data[r * row_stride + c *
/// col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix.
    pub cols: usize,
    /// Distance between consecutive rows' elements.
    pub row_stride: usize,
    /// Distance between consecutive columns' elements.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `[cols, rows]` matrix (a weight `W` read as `Wᵀ`).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }
}

#[cfg(test)]
impl View<'_> {
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// The instruction sets the register tiles are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA: one panel of [`NR`] columns per tile, in two 8-lane registers.
    Avx2,
    /// AVX-512F: up to [`PANELS_512`] panels per tile, one 16-lane register per panel and row.
    Avx512,
}

/// The widest instruction set of this CPU that a tile is written for, if any.
pub fn isa() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if !(std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"))
            {
                None
            } else if std::arch::is_x86_feature_detected!("avx512f") {
                Some(Isa::Avx512)
            } else {
                Some(Isa::Avx2)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    })
}

impl Isa {
    /// The instruction set's usual name (`AVX2`, `AVX-512`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "AVX2",
            Isa::Avx512 => "AVX-512",
        }
    }
}

/// Whether this CPU has AVX2 and FMA (and so runs [`gemm`], with AVX-512 where it has it).
pub fn supported() -> bool {
    isa().is_some()
}

/// Whether the engine runs an `[m, k] @ [k, n]` product, both operands packed per product,
/// here rather than in the gemm crate: on CPUs with AVX2 and FMA but no AVX-512 (where the
/// gemm crate's AVX-512 kernels are as fast), for the shapes of the model's projections
/// (at least [`MIN_ROWS`] rows, `k` in [`WIDTHS`], at least 128 columns).
pub(crate) fn applies(m: usize, k: usize, n: usize) -> bool {
    m >= MIN_ROWS && WIDTHS.contains(&k) && n >= *WIDTHS.start() && isa() == Some(Isa::Avx2)
}

thread_local! {
    /// Space for a packed right operand, reused across products on each thread.
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Space for packed rows of a left operand, likewise.
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's `space`, or on fresh space where a product on
/// this thread already holds it (rayon runs other tasks on a thread while it waits).
fn with_space<R>(
    space: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    space.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// `dst = a @ b`, or `dst += a @ b` with `accumulate`; `dst` is `[a.rows, b.cols]`
/// row-major; on all of rayon's threads with `parallel`.
///
/// # Panics
/// If the shapes disagree, an operand's last element lies outside its slice, or the CPU is
/// not [`supported`].
pub fn gemm(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool, parallel: bool) {
    gemm_on(detected(), dst, a, b, accumulate, parallel);
}

/// [`gemm`] with the tiles of `isa`.
fn gemm_on(isa: Isa, dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool, parallel: bool) {
    check_view(&b);
    let dst = Dst::written(dst);
    if !prepare(dst, &a, b.rows, b.cols, accumulate) {
        return;
    }
    let (k, n) = (a.cols, b.cols);
    let plan = Plan::new(k, n);
    let threads = threads(parallel);
    plan.for_each_block(|q0, kq, c0, cols| {
        let a = a.part(q0, kq);
        let b = b.block(q0, kq, c0, cols);
        with_space(&PACKED_B, plan.block_len(kq, cols), |bpack| {
            pack_block(bpack, b, plan.kc_len, threads > 1);
            let block = Block {
                packed: bpack,
                cols,
                kc_len: plan.kc_len,
            };
            run_block(
                isa,
                dst,
                n,
                c0,
                a,
                block,
                None,
                accumulate || q0 > 0,
                threads,
            );
        });
    });
}

/// A right operand packed once for many products ([`gemm_packed`]): a frozen weight. It
/// holds as many floats as the matrix (rounded up to whole panels of [`NR`] columns).
#[derive(Debug, Clone)]
pub struct PackedRhs {
    plan: Plan,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedRhs {
    /// Packs `b` as [`gemm`] would pack it for every product.
    ///
    /// # Panics
    /// If an element of `b` lies outside its slice or the CPU is not [`supported`].
    pub fn pack(b: View<'_>) -> Self {
        assert!(supported(), "sgemm: runs on CPUs with AVX2 and FMA");
        check_view(&b);
        let plan = Plan::new(b.rows, b.cols);
        // Column blocks are whole panels but the last: the blocks hold all panels of all rows.
        let mut data = vec![0f32; b.rows * b.cols.div_ceil(NR) * NR];
        let mut at = 0;
        plan.for_each_block(|q0, kq, c0, cols| {
            let l = plan.block_len(kq, cols);
            pack_block(
                &mut data[at..at + l],
                b.block(q0, kq, c0, cols),
                plan.kc_len,
                true,
            );
            at += l;
        });
        assert_eq!(at, data.len());
        Self {
            plan,
            rows: b.rows,
            cols: b.cols,
            data,
        }
    }

    /// Rows of the matrix (the products' inner dimension).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// [`gemm`] with a right operand packed beforehand: `dst (+)= a @ b`, `dst` row-major
/// `[a.rows, b.cols()]`.
///
/// # Panics
/// As [`gemm`].
pub fn gemm_packed(dst: &mut [f32], a: View<'_>, b: &PackedRhs, accumulate: bool, parallel: bool) {
    gemm_packed_low_rank(dst, a, b, None, accumulate, parallel);
}

/// Elements of a product as [`gemm`] and [`gemm_packed`] compute them with this module's
/// tiles: `x` a row of the left operand, each of `ys` a column of the right one (all of the
/// inner dimension's length). The same fused multiply-adds in the same order (one chain per
/// block of the inner dimension, the blocks' sums added in turn), so the same bits; the `N`
/// chains are interleaved so that they do not wait on each other.
///
/// # Panics
/// If a column's length is not `x`'s.
pub fn dots_as_product<const N: usize>(x: &[f32], ys: [&[f32]; N]) -> [f32; N] {
    let k = x.len();
    assert!(
        ys.iter().all(|y| y.len() == k),
        "sgemm: dot of unequal lengths"
    );
    let kc = Plan::new(k, 1).kc_len;
    let mut out = [0f32; N];
    for (i, p0) in (0..k).step_by(kc).enumerate() {
        let end = (p0 + kc).min(k);
        let mut acc = [0f32; N];
        for (p, &xp) in x.iter().enumerate().take(end).skip(p0) {
            for (a, y) in acc.iter_mut().zip(&ys) {
                *a = xp.mul_add(y[p], *a);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = if i == 0 { a } else { a + *o };
        }
    }
    out
}

/// A product of low inner dimension added to a bigger one ([`gemm_packed_low_rank`]):
/// `u @ v`, `u` `[m, r]` and `v` `[r, n]` (a LoRA adapter's term `(x Aᵀ) Bᵀ`).
#[derive(Debug, Clone, Copy)]
pub struct LowRank<'a> {
    /// The left factor, `[m, r]`.
    pub u: View<'a>,
    /// The right factor, `[r, n]`.
    pub v: View<'a>,
}

/// [`gemm_packed`] plus a low-rank term: `dst (+)= a @ b + u @ v`. The low-rank sums are
/// added to each output tile while it is still in registers' reach (after its last block of
/// the inner dimension), instead of in a second pass over `dst`.
///
/// # Panics
/// As [`gemm`], and if `u` or `v` does not fit `dst`.
pub fn gemm_packed_low_rank(
    dst: &mut [f32],
    a: View<'_>,
    b: &PackedRhs,
    low_rank: Option<LowRank<'_>>,
    accumulate: bool,
    parallel: bool,
) {
    gemm_packed_low_rank_on(
        detected(),
        Dst::written(dst),
        a,
        b,
        low_rank,
        accumulate,
        parallel,
    );
}

/// [`gemm_packed_low_rank`] into an output not written yet: `dst = a @ b (+ u @ v)`, every
/// element of `dst[..a.rows * b.cols()]` written without being read, so that it need not be
/// zeroed first.
///
/// # Panics
/// As [`gemm_packed_low_rank`].
pub fn gemm_packed_low_rank_unwritten(
    dst: &mut [MaybeUninit<f32>],
    a: View<'_>,
    b: &PackedRhs,
    low_rank: Option<LowRank<'_>>,
    parallel: bool,
) {
    let dst = Dst {
        ptr: dst.as_mut_ptr().cast(),
        len: dst.len(),
    };
    gemm_packed_low_rank_on(detected(), dst, a, b, low_rank, false, parallel);
}

/// A product's output: `len` floats at `ptr`, which a product writes (each before reading
/// it, unless it accumulates) and no one else touches while it runs.
#[derive(Clone, Copy)]
struct Dst {
    ptr: *mut f32,
    len: usize,
}

impl Dst {
    /// The output in `dst`.
    fn written(dst: &mut [f32]) -> Self {
        Self {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
        }
    }
}

/// [`gemm_packed_low_rank`] with the tiles of `isa`.
fn gemm_packed_low_rank_on(
    isa: Isa,
    dst: Dst,
    a: View<'_>,
    b: &PackedRhs,
    low_rank: Option<LowRank<'_>>,
    accumulate: bool,
    parallel: bool,
) {
    if !prepare(dst, &a, b.rows, b.cols, accumulate) {
        return;
    }
    let n = b.cols;
    let packed_v = low_rank.filter(|lr| lr.u.cols > 0).map(|lr| {
        assert!(
            lr.u.rows == a.rows && lr.v.rows == lr.u.cols && lr.v.cols == n,
            "sgemm: the low-rank term does not fit the product"
        );
        check_view(&lr.u);
        check_view(&lr.v);
        let r = lr.v.rows;
        let mut packed = vec![0f32; r * n.div_ceil(NR) * NR];
        for (j, panel) in packed.chunks_exact_mut(r * NR).enumerate() {
            pack_panel(panel, lr.v, 0, r, j * NR);
        }
        (lr.u, packed)
    });
    let threads = threads(parallel);
    let mut at = 0;
    b.plan.for_each_block(|q0, kq, c0, cols| {
        let l = b.plan.block_len(kq, cols);
        let block = Block {
            packed: &b.data[at..at + l],
            cols,
            kc_len: b.plan.kc_len,
        };
        // Added with the last part of the inner dimension, to each block of columns.
        let low = packed_v
            .as_ref()
            .filter(|_| q0 + kq == b.rows)
            .map(|(u, packed)| PackedLowRank {
                u: *u,
                packed: &packed[c0 * u.cols..],
            });
        run_block(
            isa,
            dst,
            n,
            c0,
            a.part(q0, kq),
            block,
            low,
            accumulate || q0 > 0,
            threads,
        );
        at += l;
    });
}

/// A low-rank term as [`run_block`] adds it: the left factor `[m, r]` as it is, and the
/// right one packed in panels of [`NR`] columns (`r × NR` each) from the block's first column.
#[derive(Clone, Copy)]
struct PackedLowRank<'a> {
    u: View<'a>,
    packed: &'a [f32],
}

/// How a `[k, n]` right operand is cut: blocks of the inner dimension of `kc_len`, parts of
/// it of `part_len` (a multiple of `kc_len`), and in each part blocks of columns that fit
/// [`PACKED_B_MAX`].
#[derive(Debug, Clone, Copy)]
struct Plan {
    k: usize,
    n: usize,
    kc_len: usize,
    part_len: usize,
}

impl Plan {
    fn new(k: usize, n: usize) -> Self {
        let kc_len = k.div_ceil(k.div_ceil(KC_MAX).max(1)).max(1);
        // Very long inner dimensions (the output head's gradient) run in parts that add up,
        // so that a block of columns packed over a whole part still spans many columns.
        let part_len = k
            .div_ceil(k.div_ceil(K_PART_MAX).max(1))
            .div_ceil(kc_len)
            .max(1)
            * kc_len;
        Self {
            k,
            n,
            kc_len,
            part_len,
        }
    }

    /// Calls `f(q0, kq, c0, cols)` for each part `q0..q0 + kq` of the inner dimension and
    /// each block `c0..c0 + cols` of columns, in packing order.
    fn for_each_block(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for q0 in (0..self.k).step_by(self.part_len) {
            let kq = self.part_len.min(self.k - q0);
            // Column blocks whose packed columns (all of the part) fit the budget.
            let nc = (PACKED_B_MAX / (4 * kq) / NR).max(1) * NR;
            for c0 in (0..self.n).step_by(nc) {
                f(q0, kq, c0, nc.min(self.n - c0));
            }
        }
    }

    /// Floats of one packed block of `kq` inner positions and `cols` columns.
    fn block_len(&self, kq: usize, cols: usize) -> usize {
        kq * cols.div_ceil(NR) * NR
    }
}

/// This CPU's instruction set for the tiles.
///
/// # Panics
/// If the CPU lacks AVX2 or FMA.
fn detected() -> Isa {
    isa().expect("sgemm: runs on CPUs with AVX2 and FMA")
}

/// The checks of both products against a right operand of `b_rows × n`; `false` when there
/// is nothing to compute (an empty product: its output zeroed unless accumulated).
fn prepare(dst: Dst, a: &View<'_>, b_rows: usize, n: usize, accumulate: bool) -> bool {
    let (m, k) = (a.rows, a.cols);
    assert_eq!(b_rows, k, "sgemm: inner dimensions differ");
    assert!(dst.len >= m * n, "sgemm: destination too small");
    check_view(a);
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: `dst` holds at least `m * n` floats (asserted above), and this product
            // is the only one writing them.
            unsafe { std::ptr::write_bytes(dst.ptr, 0, m * n) };
        }
        return false;
    }
    true
}

/// Threads a product runs on.
fn threads(parallel: bool) -> usize {
    if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

/// Asserts that a view's last element lies inside its slice.
fn check_view(v: &View<'_>) {
    if v.rows > 0 && v.cols > 0 {
        assert!(
            (v.rows - 1) * v.row_stride + (v.cols - 1) * v.col_stride < v.data.len(),
            "sgemm: operand outside its slice"
        );
    }
}

impl<'a> View<'a> {
    /// Rows `q0..q0 + rows` and columns `c0..c0 + cols` of a right operand.
    fn block(self, q0: usize, rows: usize, c0: usize, cols: usize) -> Self {
        View {
            data: &self.data[q0 * self.row_stride + c0 * self.col_stride..],
            rows,
            cols,
            ..self
        }
    }

    /// Columns `q0..q0 + len` of a left operand.
    fn part(self, q0: usize, len: usize) -> Self {
        View {
            data: &self.data[q0 * self.col_stride..],
            cols: len,
            ..self
        }
    }
}

/// One packed block of a right operand: for each block of [`Plan::kc_len`] inner positions,
/// its panels of [`NR`] columns.
#[derive(Clone, Copy)]
struct Block<'a> {
    packed: &'a [f32],
    cols: usize,
    kc_len: usize,
}

/// Packs all of `b` (one block: a part of the inner dimension, a block of columns) into
/// `bpack`, panel by panel.
fn pack_block(bpack: &mut [f32], b: View<'_>, kc_len: usize, parallel: bool) {
    let (k, panels) = (b.rows, b.cols.div_ceil(NR));
    let pack = |(i, panel): (usize, &mut [f32])| {
        let (p0, j) = (i / panels * kc_len, i % panels);
        pack_panel(panel, b, p0, kc_len.min(k - p0), j * NR);
    };
    // One slice per panel (the last inner block's panels may be shorter).
    let mut parts = Vec::with_capacity(k.div_ceil(kc_len) * panels);
    let mut rest = &mut bpack[..];
    for p0 in (0..k).step_by(kc_len) {
        for _ in 0..panels {
            let (panel, tail) = rest.split_at_mut(kc_len.min(k - p0) * NR);
            parts.push(panel);
            rest = tail;
        }
    }
    if parallel {
        parts.into_par_iter().enumerate().for_each(pack);
    } else {
        parts.into_iter().enumerate().for_each(pack);
    }
}

/// One block of columns: `dst[.., c0..c0 + b.cols] (+)= a @ b (+ u @ v)`, `dst` having row
/// stride `ldd`, on `threads` threads.
#[allow(clippy::too_many_arguments)]
fn run_block(
    isa: Isa,
    dst: Dst,
    ldd: usize,
    c0: usize,
    a: View<'_>,
    b: Block<'_>,
    low: Option<PackedLowRank<'_>>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n, kc_len) = (a.rows, a.cols, b.cols, b.kc_len);
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(MC);
    // Tasks: row blocks, each split into column chunks when there are too few to share.
    let chunks = if threads == 1 {
        1
    } else {
        (2 * threads).div_ceil(row_blocks).min(panels)
    };
    let per_chunk = panels.div_ceil(chunks);
    assert!(dst.len >= (m - 1) * ldd + c0 + n);
    assert!(b.packed.len() >= k * panels * NR);
    let r = low.map_or(0, |l| l.u.cols);
    if let Some(l) = low {
        assert!(l.u.rows == m && l.packed.len() >= r * panels * NR);
    }
    let out = dst.ptr as usize;
    let bpack = b.packed;
    // A task's output rows stay in cache from one block of the inner dimension to the next.
    let task = |t: usize| {
        let (ib, jc) = (t / chunks, t % chunks);
        let (i0, rows) = (ib * MC, MC.min(m - ib * MC));
        let tiles = rows.div_ceil(MR);
        with_space(&PACKED_A, tiles * (kc_len + r) * MR, |space| {
            let (apack, upack) = space.split_at_mut(tiles * kc_len * MR);
            if let Some(l) = low {
                for (ir, tile) in upack.chunks_mut(r * MR).enumerate() {
                    pack_rows(tile, l.u, i0 + ir * MR, 0, r);
                }
            }
            for p0 in (0..k).step_by(kc_len) {
                let kc = kc_len.min(k - p0);
                let add = accumulate || p0 > 0;
                let last = p0 + kc == k;
                let apack = &mut apack[..tiles * kc * MR];
                // The AVX-512 tiles read the rows of a row-major `a` where they lie.
                let direct = |_: usize| isa == Isa::Avx512 && a.col_stride == 1;
                for (ir, tile) in apack.chunks_mut(kc * MR).enumerate() {
                    if !direct(ir) {
                        pack_rows(tile, a, i0 + ir * MR, p0, kc);
                    }
                }
                let (mut j, j_end) = (jc * per_chunk, panels.min((jc + 1) * per_chunk));
                while j < j_end {
                    // Panels `j..j + wide` go through one tile.
                    let wide = match isa {
                        Isa::Avx2 => 1,
                        Isa::Avx512 => PANELS_512.min(j_end - j),
                    };
                    let at = p0 * panels * NR + j * kc * NR;
                    let bp = &bpack[at..at + wide * kc * NR];
                    let cols = (wide * NR).min(n - j * NR);
                    for (ir, ap) in apack.chunks(kc * MR).enumerate() {
                        let r0 = i0 + ir * MR;
                        let rows_a = if direct(ir) {
                            TileRows {
                                data: &a.data[r0 * a.row_stride + p0..],
                                row_stride: a.row_stride,
                                step: 1,
                            }
                        } else {
                            TileRows::packed(ap)
                        };
                        let rows = MR.min(m - r0);
                        // `c (+)= a b` over `depth` inner positions for this tile.
                        let tile = |depth: usize, a: TileRows<'_>, b: &[f32], add: bool| {
                            assert!(b.len() == wide * depth * NR);
                            let c = (out as *mut f32).wrapping_add(r0 * ldd + c0 + j * NR);
                            // SAFETY: the CPU has the tile's instruction set (`isa` came from
                            // `isa()`); `a` holds the tile's `rows` rows of `depth` positions
                            // and `b` `wide` panels of `depth` groups (asserted by `tile`);
                            // rows `r0..r0 + rows` and columns `c0 + j * NR..+cols` lie inside
                            // `dst` (asserted above), and no other task writes them.
                            unsafe { tile(isa, wide, rows, depth, a, b, c, ldd, cols, add) }
                        };
                        tile(kc, rows_a, bp, add);
                        if let Some(l) = low.filter(|_| last) {
                            let vp = &l.packed[j * r * NR..(j + wide) * r * NR];
                            let up = TileRows::packed(&upack[ir * r * MR..(ir + 1) * r * MR]);
                            tile(r, up, vp, true);
                        }
                    }
                    j += wide;
                }
            }
        });
    };
    let tasks = row_blocks * chunks;
    if threads > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Packs inner positions `p0..p0 + kc` of columns `c0..c0 + NR` of `b` as `kc` rows of
/// [`NR`] values (zeros past the last column).
fn pack_panel(panel: &mut [f32], b: View<'_>, p0: usize, kc: usize, c0: usize) {
    let cols = NR.min(b.cols - c0);
    assert!(panel.len() == kc * NR && p0 + kc <= b.rows);
    if cols < NR {
        panel.fill(0.0);
    }
    if b.col_stride == 1 {
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let at = (p0 + p) * b.row_stride + c0;
            if cols == NR {
                // A fixed length: two register moves instead of a call to `memmove`.
                let row: &mut [f32; NR] = row.try_into().expect("a panel row");
                *row = b.data[at..at + NR].try_into().expect("a panel row");
            } else {
                row[..cols].copy_from_slice(&b.data[at..at + cols]);
            }
        }
        return;
    }
    let mut p = 0;
    if b.row_stride == 1 && cols == NR {
        // A transposed row-major matrix (`x Wᵀ`): each column is contiguous; 8 × 8 blocks
        // are transposed in registers.
        while p + 8 <= kc {
            for half in 0..2 {
                let at = (c0 + 8 * half) * b.col_stride + p0 + p;
                // SAFETY: the CPU has AVX2 (`gemm` asserted it); columns `c0 + 8 half + i`
                // (`i < 8`, all `< b.cols`) at rows `p0 + p..+8` (`<= b.rows`) lie inside
                // `b.data`, as `gemm` asserted for the view's last element; the stores fill
                // rows `p..p + 8` of the panel (`p + 8 <= kc`), 8 values each.
                unsafe {
                    transpose_8x8(
                        b.data.as_ptr().add(at),
                        b.col_stride,
                        panel.as_mut_ptr().add(p * NR + 8 * half),
                        NR,
                    );
                }
            }
            p += 8;
        }
    }
    let src = b.data.as_ptr();
    for (p, row) in panel.chunks_exact_mut(NR).enumerate().skip(p) {
        let at = (p0 + p) * b.row_stride + c0 * b.col_stride;
        for (c, v) in row[..cols].iter_mut().enumerate() {
            // SAFETY: row `p0 + p < b.rows`, column `c0 + c < b.cols`: inside `b.data`, as
            // `gemm` asserted for the view's last element.
            *v = unsafe { *src.add(at + c * b.col_stride) };
        }
    }
}

/// Writes the transpose of the 8 × 8 block whose row `i` is `src[i * src_stride..][..8]` to
/// `dst`, row `j` at `dst[j * dst_stride..][..8]`.
///
/// # Safety
/// The CPU has AVX2; the 8 source and 8 destination rows are valid for 8 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    let r: [__m256; 8] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_stride)) });
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    let o = [
        _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
        _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
        _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
        _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
        _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
    ];
    for (j, o) in o.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(dst.add(j * dst_stride), *o) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_8x8(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("sgemm only runs on x86-64 CPUs with AVX2")
}

/// The [`MR`] rows of a register tile's left operand: element `(r, p)` (row `r`, inner
/// position `p`) is `data[r * row_stride + p * step]`. Packed ([`pack_rows`]) or read in
/// place from a row-major matrix.
#[derive(Clone, Copy)]
struct TileRows<'a> {
    data: &'a [f32],
    row_stride: usize,
    step: usize,
}

impl<'a> TileRows<'a> {
    /// Rows packed as groups of [`MR`] values per inner position.
    fn packed(data: &'a [f32]) -> Self {
        Self {
            data,
            row_stride: 1,
            step: MR,
        }
    }

    /// Asserts that `rows` rows of `depth` inner positions lie inside `data`.
    fn check(&self, rows: usize, depth: usize) {
        assert!(
            rows > 0
                && depth > 0
                && (rows - 1) * self.row_stride + (depth - 1) * self.step < self.data.len()
        );
    }

    /// The packed groups, for the AVX2 tile (which reads only packed rows).
    fn packed_ptr(&self) -> *const f32 {
        assert!(
            self.row_stride == 1 && self.step == MR,
            "sgemm: AVX2 tiles read packed rows"
        );
        self.data.as_ptr()
    }
}

/// Packs inner positions `p0..p0 + kc` of rows `r0..r0 + MR` of `a` as `kc` groups of
/// [`MR`] values (zeros past the last row).
fn pack_rows(tile: &mut [f32], a: View<'_>, r0: usize, p0: usize, kc: usize) {
    let rows = MR.min(a.rows - r0);
    assert!(tile.len() == kc * MR && p0 + kc <= a.cols);
    if rows < MR {
        tile.fill(0.0);
    }
    let src = a.data.as_ptr();
    for (p, group) in tile.chunks_exact_mut(MR).enumerate() {
        let at = r0 * a.row_stride + (p0 + p) * a.col_stride;
        for (r, v) in group[..rows].iter_mut().enumerate() {
            // SAFETY: row `r0 + r < a.rows`, column `p0 + p < a.cols`: inside `a.data`, as
            // `gemm` asserted for the view's last element.
            *v = unsafe { *src.add(at + r * a.row_stride) };
        }
    }
}

/// One register tile of `R <= MR` rows: `c (+)= a b` over `kc` inner positions, for the
/// packed rows `a` (`kc × MR`, of which the first `R` of each group are read) and columns `b`
/// (`kc × NR`); `c` has row stride `ldc`, and only its `R` rows and first `cols` columns are
/// written.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` and `b` hold `kc` packed groups; rows `< R` and columns
/// `< cols` of `c` are valid for reads and writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    // The output tile is usually out of cache: fetching it while the sums run hides the wait.
    for r in 0..R {
        // SAFETY: row `r < R` of `c` is valid (the caller's contract); a prefetch of an
        // address inside it does not fault.
        unsafe {
            let row = c.add(r * ldc);
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.add(cols - 1).cast());
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..kc {
        // SAFETY: `p < kc` packed groups of `NR` and `MR` values (the caller's contract).
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(p * MR + r));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
    }
    if cols == NR {
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: all `R` rows and `NR` columns are valid.
            unsafe {
                let row = c.add(r * ldc);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if add {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            }
        }
        return;
    }
    let mut tile = [0f32; MR * NR];
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: `tile` holds `MR >= R` rows of `NR` floats.
        unsafe {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[0]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), acc[1]);
        }
    }
    for r in 0..R {
        for (cc, &v) in tile[r * NR..r * NR + cols].iter().enumerate() {
            // SAFETY: row `r < R`, column `cc < cols` (the caller's contract).
            unsafe {
                let at = c.add(r * ldc + cc);
                *at = if add { *at + v } else { v };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize>(
    _: usize,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("sgemm only runs on x86-64 CPUs with AVX2")
}

/// The AVX-512 register tile of `R <= MR` rows: `c (+)= a b` over `kc` inner positions, for
/// the tile's rows `a` and `P` consecutive packed panels `b` (`P × kc × NR`); `c` has row
/// stride `ldc`, and only its `R` rows and first `cols` columns are written. A tile of fewer
/// rows than [`MR`] (a matrix's last, or a decode step's one to five) does only its own rows'
/// sums.
///
/// # Safety
/// The CPU has AVX-512F; rows `< R` and columns `< cols` of `c` are valid for reads and
/// writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512<const P: usize, const R: usize>(
    kc: usize,
    a: TileRows<'_>,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    a.check(R, kc);
    assert!(b.len() >= P * kc * NR && R <= MR && cols <= P * NR);
    for r in 0..R {
        for at in (0..cols).step_by(NR) {
            // SAFETY: row `r < R`, column `at < cols` of `c` are valid (the caller's
            // contract); a prefetch does not fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + at).cast()) };
        }
    }
    let (rows_a, step, b) = (
        std::array::from_fn::<_, R, _>(|r| a.data[r * a.row_stride..].as_ptr()),
        a.step,
        b.as_ptr(),
    );
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for p in 0..kc {
        // The `P` panels are `P` streams `kc × NR × 4` bytes apart, which the hardware
        // prefetchers alone leave waiting on L2.
        for i in 0..P {
            let ahead = b.wrapping_add(i * kc * NR + (p + PREFETCH_ROWS) * NR);
            // A prefetch does not fault, even past the end of `b`.
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        }
        // SAFETY: `p < kc`: element `p` of each of the `R` rows of `a` and row `p` of each of
        // the `P` panels of `b` (`NR` values each) lie inside the slices (asserted above).
        unsafe {
            let w: [__m512; P] =
                std::array::from_fn(|i| _mm512_loadu_ps(b.add(i * kc * NR + p * NR)));
            for (row, acc) in rows_a.iter().zip(acc.iter_mut()) {
                let x = _mm512_set1_ps(*row.add(p * step));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(x, *w, *acc);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (i, v) in acc.iter().enumerate() {
            let lanes = cols.saturating_sub(i * NR).min(NR);
            if lanes == 0 {
                break;
            }
            let mask = (((1u32 << lanes) - 1) & 0xFFFF) as u16;
            // SAFETY: row `r < R`, columns `i * NR..i * NR + lanes` (`<= cols`) of `c`
            // are valid; the masked lanes are neither read nor written.
            unsafe {
                let at = c.add(r * ldc + i * NR);
                let mut v = *v;
                if add {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
                }
                _mm512_mask_storeu_ps(at, mask, v);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel_avx512<const P: usize, const R: usize>(
    _: usize,
    _: TileRows<'_>,
    _: &[f32],
    _: *mut f32,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("sgemm only runs on x86-64 CPUs with AVX2")
}

/// [`kernel`] or [`kernel_avx512`] for a tile of `rows` rows (`1..=MR`) and `wide` panels
/// (`1..=PANELS_512`; AVX2 tiles take one).
///
/// # Safety
/// The CPU has `isa`; `a` holds the tile's `rows` rows of `kc` positions (packed, for AVX2),
/// `b` its `wide` panels; rows `< rows` and columns `< cols` of `c` are valid for reads and
/// writes, and no other thread writes them.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    wide: usize,
    rows: usize,
    kc: usize,
    a: TileRows<'_>,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    macro_rules! by_rows {
        ($k:ident[$($p:literal)?], $a:expr, $b:expr) => {
            match rows {
                1 => $k::<$($p,)? 1>(kc, $a, $b, c, ldc, cols, add),
                2 => $k::<$($p,)? 2>(kc, $a, $b, c, ldc, cols, add),
                3 => $k::<$($p,)? 3>(kc, $a, $b, c, ldc, cols, add),
                4 => $k::<$($p,)? 4>(kc, $a, $b, c, ldc, cols, add),
                5 => $k::<$($p,)? 5>(kc, $a, $b, c, ldc, cols, add),
                _ => $k::<$($p,)? MR>(kc, $a, $b, c, ldc, cols, add),
            }
        };
    }
    assert!((1..=MR).contains(&rows));
    // SAFETY: the caller's contract.
    unsafe {
        match (isa, wide) {
            (Isa::Avx2, _) => {
                assert!(b.len() >= kc * NR);
                a.check(MR, kc);
                by_rows!(kernel[], a.packed_ptr(), b.as_ptr())
            }
            (Isa::Avx512, 1) => by_rows!(kernel_avx512[1], a, b),
            (Isa::Avx512, 2) => by_rows!(kernel_avx512[2], a, b),
            (Isa::Avx512, 3) => by_rows!(kernel_avx512[3], a, b),
            (Isa::Avx512, _) => by_rows!(kernel_avx512[4], a, b),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pseudo-random values in [-1, 1) from `seed`.
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The instruction sets this CPU runs tiles of.
    fn isas() -> Vec<Isa> {
        match isa() {
            None => {
                eprintln!("note: this CPU lacks AVX2 or FMA; the gemm crate runs instead");
                vec![]
            }
            Some(Isa::Avx2) => {
                eprintln!("note: this CPU lacks AVX-512; only the AVX2 tiles are checked");
                vec![Isa::Avx2]
            }
            Some(Isa::Avx512) => vec![Isa::Avx2, Isa::Avx512],
        }
    }

    /// `dots_as_product` gives the bits of the products' elements: inner dimensions of one
    /// block, several, and several parts.
    #[test]
    fn dots_equal_the_products_elements_bit_for_bit() {
        if !supported() {
            eprintln!("note: this CPU lacks AVX2 or FMA; no product to compare with");
            return;
        }
        for (i, &(m, k, n)) in [
            (3, 37, 20),
            (7, 576, 50),
            (2, 700, 33),
            (9, 1536, 17),
            (2, 5000, 18),
        ]
        .iter()
        .enumerate()
        {
            let a = values(m * k, 7 * i as u64);
            let b = values(n * k, 7 * i as u64 + 1);
            // `b` holds the columns of the right operand as rows (`x Wᵀ`, as the output head).
            let packed = PackedRhs::pack(View::transposed(&b, k, n));
            let mut dst = vec![0f32; m * n];
            gemm_packed(&mut dst, View::row_major(&a, m, k), &packed, false, true);
            let mut plain = vec![0f32; m * n];
            gemm(
                &mut plain,
                View::row_major(&a, m, k),
                View::transposed(&b, k, n),
                false,
                true,
            );
            for r in 0..m {
                let x = &a[r * k..(r + 1) * k];
                for c in (0..n).step_by(2) {
                    let d = (c + 1).min(n - 1);
                    let [y0, y1] =
                        dots_as_product(x, [&b[c * k..(c + 1) * k], &b[d * k..(d + 1) * k]]);
                    for (col, y) in [(c, y0), (d, y1)] {
                        assert_eq!(
                            y.to_bits(),
                            dst[r * n + col].to_bits(),
                            "{m}x{k}x{n} ({r}, {col})"
                        );
                        assert_eq!(
                            y.to_bits(),
                            plain[r * n + col].to_bits(),
                            "{m}x{k}x{n} ({r}, {col})"
                        );
                    }
                }
            }
        }
    }

    /// A product into an output not yet written writes every element without reading it:
    /// over NaNs, the same bits as into a written output.
    #[test]
    fn an_unwritten_output_gets_every_element_written() {
        if !supported() {
            return;
        }
        let (m, k, n, rank) = (300, 200, 170, 8);
        let (av, bv) = (values(m * k, 1), values(k * n, 2));
        let (uv, vv) = (values(m * rank, 3), values(rank * n, 4));
        let a = View::row_major(&av, m, k);
        let packed = PackedRhs::pack(View::row_major(&bv, k, n));
        let low = LowRank {
            u: View::row_major(&uv, m, rank),
            v: View::row_major(&vv, rank, n),
        };
        let mut want = vec![0f32; m * n];
        gemm_packed_low_rank(&mut want, a, &packed, Some(low), false, true);
        let mut got = vec![MaybeUninit::new(f32::NAN); m * n];
        gemm_packed_low_rank_unwritten(&mut got, a, &packed, Some(low), true);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // SAFETY: every element was initialised (to NaN) above.
            let g = unsafe { g.assume_init() };
            assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} vs {w}");
        }
    }

    /// Every shape class (partial tiles in rows and columns, several inner blocks, one row
    /// block or many, transposed operands, accumulation, one thread or all) against a
    /// scalar f64 product, and the same product with the right operand packed beforehand,
    /// with each instruction set's tiles.
    #[test]
    fn products_equal_a_scalar_reference() {
        for isa in isas() {
            products_equal_a_scalar_reference_on(isa);
        }
    }

    fn products_equal_a_scalar_reference_on(isa: Isa) {
        let shapes = [
            (16, 16, 8),
            (13, 50, 64),
            (31, 70, 112),
            (23, 41, 17),
            (96, 576, 192),
            (130, 1536, 576),
            (7, 64, 1000),
            (300, 1300, 33),
            (64, 2000, 64),
            // Tiles of every height: one decode step's rows.
            (1, 576, 192),
            (3, 200, 70),
            (8, 576, 100),
            // Several blocks of columns (`PACKED_B_MAX`), several parts of the inner
            // dimension (`K_PART_MAX`).
            (40, 3000, 400),
            (20, 9000, 40),
        ];
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            let av = values(m * k * 2, 2 * i as u64);
            let bv = values(k * n * 2, 2 * i as u64 + 1);
            let lows: Vec<(usize, Vec<f32>, Vec<f32>)> = [1, 8, 24]
                .map(|r| {
                    let seed = 100 * i as u64 + r as u64;
                    (r, values(m * r * 2, seed), values(r * n * 2, seed + 1))
                })
                .into();
            // Layouts: 0 row-major, 1 a transposed row-major matrix (`Wᵀ`), 2 every other
            // element of a wider transposed buffer (strides neither 1 nor the width).
            for (layout_a, layout_b, accumulate, parallel) in [
                (0, 0, false, true),
                (0, 1, false, true),
                (0, 2, true, false),
                (2, 0, true, false),
                (1, 1, true, true),
            ] {
                let view = |data, rows, cols, layout| {
                    let (row_stride, col_stride) = match layout {
                        0 => (cols, 1),
                        1 => (1, rows),
                        _ => (2, 2 * rows),
                    };
                    View {
                        data,
                        rows,
                        cols,
                        row_stride,
                        col_stride,
                    }
                };
                let a = view(&av[..], m, k, layout_a);
                let b = view(&bv[..], k, n, layout_b);
                let start = values(m * n, 99);
                let mut dst = if accumulate {
                    start.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                let mut packed_dst = dst.clone();
                crate::kernels::in_pool(|| gemm_on(isa, &mut dst, a, b, accumulate, parallel));
                // Packed once beforehand: the same sums in the same order.
                let packed = PackedRhs::pack(b);
                assert_eq!((packed.rows(), packed.cols()), (k, n));
                crate::kernels::in_pool(|| {
                    gemm_packed_low_rank_on(
                        isa,
                        Dst::written(&mut packed_dst),
                        a,
                        &packed,
                        None,
                        accumulate,
                        parallel,
                    )
                });
                assert!(
                    packed_dst
                        .iter()
                        .zip(&dst)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "[{m}, {k}] @ [{k}, {n}] (layouts {layout_a}, {layout_b}): the packed \
                     operand gave other sums"
                );
                // A low-rank term added to each tile: its own sums (fused multiply-adds in
                // order from zero), added to the product's.
                for (rank, uv, vv) in &lows {
                    let rank = *rank;
                    let u = view(&uv[..], m, rank, layout_b);
                    let v = view(&vv[..], rank, n, layout_a);
                    let mut low_dst = if accumulate {
                        start.clone()
                    } else {
                        vec![f32::NAN; m * n]
                    };
                    crate::kernels::in_pool(|| {
                        gemm_packed_low_rank_on(
                            isa,
                            Dst::written(&mut low_dst),
                            a,
                            &packed,
                            Some(LowRank { u, v }),
                            accumulate,
                            parallel,
                        )
                    });
                    for r in 0..m {
                        for c in 0..n {
                            let low =
                                (0..rank).fold(0f32, |s, p| u.at(r, p).mul_add(v.at(p, c), s));
                            let want = low + dst[r * n + c];
                            let got = low_dst[r * n + c];
                            assert!(
                                got.to_bits() == want.to_bits(),
                                "[{m}, {k}] @ [{k}, {n}] + rank {rank} (layouts {layout_a}, \
                                 {layout_b}) at ({r}, {c}): {got} vs {want}"
                            );
                        }
                    }
                }
                for r in 0..m {
                    for c in 0..n {
                        let mut want: f64 =
                            (0..k).map(|p| a.at(r, p) as f64 * b.at(p, c) as f64).sum();
                        if accumulate {
                            want += start[r * n + c] as f64;
                        }
                        let got = dst[r * n + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (k as f64).sqrt() * (1.0 + want.abs()),
                            "{isa:?}: [{m}, {k}] @ [{k}, {n}] (layouts {layout_a}, {layout_b}, \
                             {accumulate}) at ({r}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
