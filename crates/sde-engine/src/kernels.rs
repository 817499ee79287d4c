//! f32 matrix products on the CPU, called through the gemm crate with a threading choice
//! that fits the shape, or through the engine's own product ([`crate::sgemm`]): for frozen
//! weights packed beforehand on CPUs with AVX2, and for the projections' shapes on CPUs with
//! AVX2 but not AVX-512.
//!
//! candle hands every matmul to gemm with all threads. That is right for the big projections
//! and wasteful for the small ones a LoRA step is full of: rank-8 adapter products and the
//! per-head attention products, where starting the threads costs more than the arithmetic.
//! Here a product below [`PARALLEL_MIN_FLOPS`] runs on one thread, and a batch of small
//! products (attention heads) is spread over the threads one whole product each.
//!
//! Invariant: results equal candle's `matmul` up to float summation order (tested below).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::bf16::PackedBf16;

use crate::error::Result;
use crate::sgemm::PackedRhs;

/// Runs `f` on a thread of rayon's pool, so that the parallel products inside it split their
/// work with the other threads directly instead of handing every product over from outside
/// the pool and waiting to be woken.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("the scope ran its body")
}

/// Whether an [`in_pool_awake`] region is running.
static AWAKE: AtomicBool = AtomicBool::new(false);

/// [`in_pool`] with the pool's other threads kept awake until `f` returns: each spins,
/// taking the pool's work as it appears, instead of going to sleep between parallel
/// regions. For loops of many short parallel products (a decode step makes about ten per
/// layer, some of a few microseconds a thread), where waking a sleeping thread for each cost
/// more than its share of the work, and for train steps and scoring batches, whose wake-ups
/// cost most under a hypervisor. The other threads stay busy for the whole of `f`.
///
/// One awake region runs at a time; another one started meanwhile (from another thread, or
/// inside `f`) runs as plain [`in_pool`]. Two at once could deadlock: a thread spinning for
/// one region runs a part of the other's work, and waiting inside it takes up the other's
/// spinner, which then waits for the work beneath it.
pub(crate) fn in_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    /// Stores its value in its flag when dropped, so that the flags are set even if `f`
    /// panics.
    struct StoreOnDrop<'a>(&'a AtomicBool, bool);
    impl Drop for StoreOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(self.1, Ordering::Release);
        }
    }
    if AWAKE
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return in_pool(f);
    }
    // The awake region is over when this returns.
    let _over = StoreOnDrop(&AWAKE, false);
    in_pool(|| {
        let owner = rayon::current_thread_index();
        let done = AtomicBool::new(false);
        rayon::scope(|s| {
            s.spawn_broadcast(|_, ctx| {
                // The thread running `f` takes its copy between its own jobs: not to spin.
                if Some(ctx.index()) == owner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        for _ in 0..16 {
                            std::hint::spin_loop();
                        }
                    }
                }
            });
            // The spinning threads stop when `f` returns.
            let _done = StoreOnDrop(&done, true);
            f()
        })
    })
}

/// Products with fewer FLOPs than this run single-threaded.
const PARALLEL_MIN_FLOPS: usize = 16_000_000;

/// One operand: a batch of strided matrices inside a slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl<'a> Operand<'a> {
    /// Rows `r0..r0 + rows`, columns `0..cols` of a row-major matrix with row stride `ld`.
    pub(crate) fn rows_of(data: &'a [f32], ld: usize, r0: usize, rows: usize, cols: usize) -> Self {
        Operand {
            data: &data[r0 * ld..],
            rows,
            cols,
            row_stride: ld,
            col_stride: 1,
            batch_stride: 0,
        }
    }

    /// The transposed matrix (a view: strides swapped).
    pub(crate) fn t(self) -> Self {
        Operand {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// One past the largest element index the batch touches, for the bounds check.
    fn extent(&self, batch: usize) -> usize {
        if self.rows == 0 || self.cols == 0 || batch == 0 {
            return 0;
        }
        (batch - 1) * self.batch_stride
            + (self.rows - 1) * self.row_stride
            + (self.cols - 1) * self.col_stride
            + 1
    }

    fn matrix(&self, i: usize) -> Operand<'_> {
        Operand {
            data: &self.data[i * self.batch_stride..],
            batch_stride: 0,
            ..*self
        }
    }
}

/// `dst = a @ b` (or `dst += a @ b` with `accumulate`) for one matrix pair; `dst` is
/// `[a.rows, b.cols]` row-major.
fn gemm_one(
    dst: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if crate::sgemm::applies(m, k, n) {
        assert!(b.rows == k, "inner dimensions differ");
        assert!(dst.len() >= m * n, "destination too small");
        assert!(a.extent(1) <= a.data.len() && b.extent(1) <= b.data.len());
        fn view(o: Operand<'_>) -> crate::sgemm::View<'_> {
            crate::sgemm::View {
                data: &o.data[..o.extent(1)],
                rows: o.rows,
                cols: o.cols,
                row_stride: o.row_stride,
                col_stride: o.col_stride,
            }
        }
        let parallel = !matches!(parallelism, Parallelism::None);
        crate::sgemm::gemm(&mut dst[..m * n], view(a), view(b), accumulate, parallel);
        return;
    }
    gemm_strided(dst, n, a, b, accumulate, 1.0, parallelism);
}

/// `dst = scale · a b` (or `dst += scale · a b` with `accumulate`) through the gemm crate for
/// one matrix pair; `dst` is row-major with row stride `ldd`.
pub(crate) fn gemm_strided(
    dst: &mut [f32],
    ldd: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    accumulate: bool,
    scale: f32,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= ldd && (m - 1) * ldd + n <= dst.len(),
        "destination too small"
    );
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(ldd).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    assert!(a.extent(1) <= a.data.len() && b.extent(1) <= b.data.len());
    // SAFETY: the asserts keep every index gemm reads (row * rs + col * cs for row < rows,
    // col < cols) inside `a.data` / `b.data` and every index it writes (row * ldd + col for
    // row < m, col < n) inside `dst`; `dst` is a unique borrow, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The batch layout of a tensor of rank ≥ 2: one uniform stride over all leading dimensions.
pub(crate) fn batch_layout(l: &Layout) -> Option<(usize, usize, usize, usize, usize, usize)> {
    let dims = l.dims();
    let stride = l.stride();
    let r = dims.len();
    if r < 2 {
        return None;
    }
    let (rows, cols) = (dims[r - 2], dims[r - 1]);
    let (rs, cs) = (stride[r - 2], stride[r - 1]);
    let batch: usize = dims[..r - 2].iter().product();
    let mut batch_stride = rows * cols;
    if r > 2 {
        batch_stride = stride[r - 3];
        for i in 0..r - 3 {
            if dims[i + 1] > 1 && stride[i] != stride[i + 1] * dims[i + 1] {
                return None;
            }
        }
    }
    Some((batch, rows, cols, rs, cs, batch_stride))
}

/// `a @ b` over equal leading (batch) dimensions, f32 on the CPU, any row/column strides.
/// Other devices and dtypes, and unusual batch strides, go to candle's `matmul`.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() || a.dtype() != candle_core::DType::F32 || a.rank() != b.rank() {
        return Ok(a.matmul(b)?);
    }
    let r = a.rank();
    if r < 2 || a.dims()[..r - 2] != b.dims()[..r - 2] {
        return Ok(a.matmul(b)?);
    }
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(da)), Storage::Cpu(CpuStorage::F32(db))) = (&*sa, &*sb)
    else {
        drop((sa, sb));
        return Ok(a.matmul(b)?);
    };
    let (Some(pa), Some(pb)) = (batch_layout(la), batch_layout(lb)) else {
        drop((sa, sb));
        return Ok(a.matmul(b)?);
    };
    let (batch, m, k, ars, acs, abs) = pa;
    let (_, k2, n, brs, bcs, bbs) = pb;
    if k != k2 {
        drop((sa, sb));
        return Ok(a.matmul(b)?);
    }
    let oa = Operand {
        data: &da[la.start_offset()..],
        rows: m,
        cols: k,
        row_stride: ars,
        col_stride: acs,
        batch_stride: abs,
    };
    let ob = Operand {
        data: &db[lb.start_offset()..],
        rows: k,
        cols: n,
        row_stride: brs,
        col_stride: bcs,
        batch_stride: bbs,
    };
    assert!(oa.extent(batch) <= oa.data.len() && ob.extent(batch) <= ob.data.len());
    let mut dst = vec![0f32; batch * m * n];
    let flops = 2 * m * n * k;
    if batch == 1 {
        gemm_one(&mut dst, oa, ob, false, parallelism(m, n, k));
    } else if m * n > 0 {
        let work = |(i, d): (usize, &mut [f32])| {
            gemm_one(d, oa.matrix(i), ob.matrix(i), false, Parallelism::None)
        };
        if flops * batch >= PARALLEL_MIN_FLOPS / 4 {
            dst.par_chunks_mut(m * n).enumerate().for_each(work);
        } else {
            dst.chunks_mut(m * n).enumerate().for_each(work);
        }
    }
    drop((sa, sb));
    let mut shape = a.dims().to_vec();
    shape[r - 1] = n;
    Ok(Tensor::from_vec(dst, shape, a.device())?)
}

/// Threads for one `[m, k] @ [k, n]` product: all of them for big products, and for few-row
/// products over a big matrix (decoding), whose cost is reading that matrix.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if 2 * m * n * k >= PARALLEL_MIN_FLOPS || (m <= 16 && k * n >= 1 << 17) {
        Parallelism::Rayon(rayon::current_num_threads().max(1))
    } else {
        Parallelism::None
    }
}

/// `Σ a_i @ b_i` over 2-D f32 CPU operands (any strides), summed in one output buffer: no
/// temporary per term. Elsewhere it is a sum of candle matmuls.
pub(crate) fn matmul_sum(terms: &[(&Tensor, &Tensor)]) -> Result<Tensor> {
    let Some(&(a0, b0)) = terms.first() else {
        return Err(crate::error::EngineError::invalid("matmul_sum of no terms"));
    };
    let cpu_f32 = terms.iter().all(|(a, b)| {
        a.device().is_cpu()
            && a.dtype() == candle_core::DType::F32
            && b.dtype() == candle_core::DType::F32
            && a.rank() == 2
            && b.rank() == 2
    });
    let (m, n) = (a0.dim(0)?, b0.dim(1)?);
    if !cpu_f32 {
        let mut acc = a0.matmul(b0)?;
        for (a, b) in &terms[1..] {
            acc = (acc + a.matmul(b)?)?;
        }
        return Ok(acc);
    }
    let mut dst = vec![0f32; m * n];
    sum_into(&mut dst, m, n, terms, false)?;
    Ok(Tensor::from_vec(dst, (m, n), a0.device())?)
}

/// `dst (+)= Σ a_i @ b_i` over 2-D f32 CPU operands into a row-major `[m, n]` buffer.
fn sum_into(
    dst: &mut [f32],
    m: usize,
    n: usize,
    terms: &[(&Tensor, &Tensor)],
    accumulate: bool,
) -> Result<()> {
    for (i, (a, b)) in terms.iter().enumerate() {
        let (sa, la) = a.storage_and_layout();
        let (sb, lb) = b.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(da)), Storage::Cpu(CpuStorage::F32(db))) = (&*sa, &*sb)
        else {
            return Err(crate::error::EngineError::invalid(
                "matmul_sum: not f32 CPU storage",
            ));
        };
        let (ad, bd) = (la.dims(), lb.dims());
        if ad[0] != m || bd[1] != n || ad[1] != bd[0] {
            return Err(crate::error::EngineError::invalid(format!(
                "matmul_sum: term {i} is {ad:?} @ {bd:?}, output [{m}, {n}]"
            )));
        }
        let oa = Operand {
            data: &da[la.start_offset()..],
            rows: ad[0],
            cols: ad[1],
            row_stride: la.stride()[0],
            col_stride: la.stride()[1],
            batch_stride: 0,
        };
        let ob = Operand {
            data: &db[lb.start_offset()..],
            rows: bd[0],
            cols: bd[1],
            row_stride: lb.stride()[0],
            col_stride: lb.stride()[1],
            batch_stride: 0,
        };
        gemm_one(dst, oa, ob, accumulate || i > 0, parallelism(m, n, ad[1]));
    }
    Ok(())
}

/// A frozen weight packed once as the right operand of its products.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Packed<'a> {
    /// Rounded to bf16 ([`crate::bf16`]): the opt-in lossy products.
    Bf16(&'a PackedBf16),
    /// f32, for the engine's product ([`crate::sgemm`]).
    F32(&'a PackedRhs),
}

impl Packed<'_> {
    fn rows(&self) -> usize {
        match self {
            Packed::Bf16(p) => p.rows(),
            Packed::F32(p) => p.rows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Packed::Bf16(p) => p.cols(),
            Packed::F32(p) => p.cols(),
        }
    }
}

/// `Σ x_i @ P_i + Σ a_j @ b_j`: products of 2-D f32 CPU inputs with packed weights
/// ([`Packed`]), then f32 products, summed in one output buffer. Where the last weight is
/// packed in f32, the `a_j @ b_j` (the LoRA terms, of low inner dimension) are added inside
/// its product ([`crate::sgemm::gemm_packed_low_rank`]) instead of in another pass.
pub(crate) fn packed_matmul_sum(
    packed: &[(&Tensor, Packed<'_>)],
    terms: &[(&Tensor, &Tensor)],
) -> Result<Tensor> {
    let Some(&(x0, p0)) = packed.first() else {
        return Err(crate::error::EngineError::invalid(
            "packed_matmul_sum of no packed terms",
        ));
    };
    let (m, n) = (x0.dim(0)?, p0.cols());
    // The first f32 product writes the output unzeroed; the others add to it.
    let mut dst = unwritten(m * n);
    let low_rank = match packed.last() {
        Some((_, Packed::F32(_))) => low_rank_factors(terms, m, n)?,
        _ => None,
    };
    for (i, (x, p)) in packed.iter().enumerate() {
        let (xm, xk) = x.dims2()?;
        if xm != m || xk != p.rows() || p.cols() != n || !x.device().is_cpu() {
            return Err(crate::error::EngineError::invalid(format!(
                "packed_matmul_sum: term {i} is [{xm}, {xk}] @ [{}, {}], output [{m}, {n}]",
                p.rows(),
                p.cols()
            )));
        }
        let last = i + 1 == packed.len();
        with_f32(x, |xd| -> Result<()> {
            let a = crate::sgemm::View::row_major(xd, m, xk);
            let low = |f: &mut dyn FnMut(Option<crate::sgemm::LowRank<'_>>)| -> Result<()> {
                match low_rank.as_ref().filter(|_| last) {
                    Some((u, v)) => with_view(u, |u| {
                        with_view(v, |v| f(Some(crate::sgemm::LowRank { u, v })))
                    })?,
                    None => {
                        f(None);
                        Ok(())
                    }
                }
            };
            match p {
                Packed::Bf16(p) => {
                    if i == 0 {
                        dst.fill(MaybeUninit::new(0.0));
                    }
                    // SAFETY: written, just above or by an earlier term.
                    let d = unsafe { written_mut(&mut dst) };
                    crate::bf16::matmul_into(d, xd, m, p, i > 0);
                }
                Packed::F32(p) if i > 0 => low(&mut |low| {
                    // SAFETY: an earlier term wrote every element.
                    let d = unsafe { written_mut(&mut dst) };
                    crate::sgemm::gemm_packed_low_rank(d, a, p, low, true, true)
                })?,
                Packed::F32(p) => low(&mut |low| {
                    crate::sgemm::gemm_packed_low_rank_unwritten(&mut dst, a, p, low, true)
                })?,
            }
            Ok(())
        })??;
    }
    // SAFETY: the first term wrote every element (there is one: checked above).
    let mut dst = unsafe { written(dst) };
    if low_rank.is_none() {
        sum_into(&mut dst, m, n, terms, true)?;
    }
    Ok(Tensor::from_vec(dst, (m, n), x0.device())?)
}

/// The factors `u = [a_1 … a_j]` (`[m, Σ r_j]`) and `v = [b_1; … b_j]` (`[Σ r_j, n]`) of
/// `Σ a_j @ b_j`, for f32 CPU terms of rank 2 (one term as it is); `None` for no terms or
/// others.
fn low_rank_factors(
    terms: &[(&Tensor, &Tensor)],
    m: usize,
    n: usize,
) -> Result<Option<(Tensor, Tensor)>> {
    let fits =
        |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.rank() == 2;
    if terms.is_empty() || !terms.iter().all(|(a, b)| fits(a) && fits(b)) {
        return Ok(None);
    }
    for (i, (a, b)) in terms.iter().enumerate() {
        let (ad, bd) = (a.dims(), b.dims());
        if ad[0] != m || bd[1] != n || ad[1] != bd[0] {
            return Err(crate::error::EngineError::invalid(format!(
                "packed_matmul_sum: term {i} is {ad:?} @ {bd:?}, output [{m}, {n}]"
            )));
        }
    }
    if let [(a, b)] = terms {
        return Ok(Some(((*a).clone(), (*b).clone())));
    }
    let us: Vec<&Tensor> = terms.iter().map(|(a, _)| *a).collect();
    let vs: Vec<&Tensor> = terms.iter().map(|(_, b)| *b).collect();
    Ok(Some((Tensor::cat(&us, 1)?, Tensor::cat(&vs, 0)?)))
}

/// Runs `f` on a view of a 2-D f32 CPU tensor, any strides.
fn with_view<R>(t: &Tensor, f: impl FnOnce(crate::sgemm::View<'_>) -> R) -> Result<R> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*st else {
        return Err(crate::error::EngineError::invalid("not an f32 CPU tensor"));
    };
    let (&[rows, cols], &[row_stride, col_stride]) = (l.dims(), l.stride()) else {
        return Err(crate::error::EngineError::invalid("not a matrix"));
    };
    Ok(f(crate::sgemm::View {
        data: &v[l.start_offset()..],
        rows,
        cols,
        row_stride,
        col_stride,
    }))
}

/// The products of a LoRA rank ([`crate::lowrank`]) over one 2-D f32 CPU activation `d`
/// `[n, w]`: `d @ m` for `m` `[w, r]`, and `dᵀ @ e` for `e` `[n, r]`, each where given; `None`
/// where they do not run here (another device or dtype, or a rank they do not take).
pub(crate) fn low_rank_products(
    d: &Tensor,
    m: Option<&Tensor>,
    e: Option<&Tensor>,
) -> Result<Option<(Option<Tensor>, Option<Tensor>)>> {
    let Some(r) = m.or(e).map(|t| t.dim(1)).transpose()? else {
        return Ok(Some((None, None)));
    };
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    if !crate::lowrank::applies(r)
        || d.rank() != 2
        || !f32_cpu(d)
        || m.is_some_and(|m| !f32_cpu(m))
        || e.is_some_and(|e| !f32_cpu(e))
    {
        return Ok(None);
    }
    let (n, w) = d.dims2()?;
    if m.is_some_and(|m| m.dims() != [w, r]) || e.is_some_and(|e| e.dims() != [n, r]) {
        return Err(crate::error::EngineError::invalid(format!(
            "low-rank products of [{n}, {w}] with {:?} and {:?}",
            m.map(|m| m.dims().to_vec()),
            e.map(|e| e.dims().to_vec())
        )));
    }
    // The factors are small (`r` columns): plain copies.
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let mv = m.map(flat).transpose()?;
    let ev = e.map(flat).transpose()?;
    let (p, g) = with_f32(d, |dd| {
        crate::lowrank::project_and_outer_sum(
            dd,
            n,
            w,
            mv.as_deref().unwrap_or(&[]),
            ev.as_deref(),
            r,
        )
    })?;
    let dev = d.device();
    Ok(Some((
        m.map(|_| Tensor::from_vec(p, (n, r), dev)).transpose()?,
        e.map(|_| Tensor::from_vec(g, (w, r), dev)).transpose()?,
    )))
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (made contiguous first if needed).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*st else {
        return Err(crate::error::EngineError::invalid(
            "fused kernel: not an f32 CPU tensor",
        ));
    };
    let start = l.start_offset();
    Ok(f(&v[start..start + l.shape().elem_count()]))
}

/// Whether the fused row kernels below apply (f32 on the CPU).
pub(crate) fn fused_ok(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Rows per parallel task of the row kernels.
const ROW_BLOCK: usize = 8;

/// Runs `f(row, out_row)` over the rows of width `w` of `out`, [`ROW_BLOCK`] rows per
/// parallel task.
fn par_rows(out: &mut [f32], w: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(w * ROW_BLOCK)
        .enumerate()
        .for_each(|(blk, ob)| {
            for (i, orow) in ob.chunks_mut(w).enumerate() {
                f(blk * ROW_BLOCK + i, orow);
            }
        });
}

/// [`par_rows`] with one more output per row: runs `f(row, out_row, side_row)`, where
/// `side` holds one element per row of `out`.
fn par_rows_with<O: Send, T: Send>(
    out: &mut [O],
    w: usize,
    side: &mut [T],
    f: impl Fn(usize, &mut [O], &mut T) + Sync,
) {
    out.par_chunks_mut(w * ROW_BLOCK)
        .zip(side.par_chunks_mut(ROW_BLOCK))
        .enumerate()
        .for_each(|(blk, (ob, sb))| {
            for (i, (orow, sv)) in ob.chunks_mut(w).zip(sb.iter_mut()).enumerate() {
                f(blk * ROW_BLOCK + i, orow, sv);
            }
        });
}

/// `len` floats for a kernel that writes every one of them, not zeroed first: zeroing each
/// output before the kernel overwrote it was about 3% of a train or scoring step's profile
/// (`memset`, on a Xeon with AVX-512 at full width).
fn unwritten(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity holds `len`, and `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// The floats of [`unwritten`] once a kernel wrote them.
///
/// # Safety
/// Every element of `v` was written.
unsafe fn written(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the caller wrote all `len`.
    unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) }
}

/// The floats of a slice of [`unwritten`] once a kernel wrote them.
///
/// # Safety
/// Every element of `v` was written.
unsafe fn written_ref(v: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the caller wrote them all.
    unsafe { &*(v as *const [MaybeUninit<f32>] as *const [f32]) }
}

/// [`written_ref`], to be added to.
///
/// # Safety
/// Every element of `v` was written.
unsafe fn written_mut(v: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: as in `written_ref`.
    unsafe { &mut *(v as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// RMSNorm forward over rows of width `h`: `y = x * r * w` with `r = 1 / sqrt(mean(x²) + eps)`.
/// Returns `y` and `r` (`[rows, 1]`).
pub(crate) fn rms_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let dims = x.dims().to_vec();
    let h = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / h.max(1);
    let w = with_f32(w, <[f32]>::to_vec)?;
    let mut y = unwritten(rows * h);
    let mut r = vec![0f32; rows];
    with_f32(x, |x| {
        par_rows_with(&mut y, h, &mut r, |row, yr, rr| {
            let xr = &x[row * h..(row + 1) * h];
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let inv = 1.0 / (ms + eps as f32).sqrt();
            *rr = inv;
            for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(&w) {
                o.write(xv * inv * wv);
            }
        });
    })?;
    // SAFETY: each row of `y` was written above.
    let y = unsafe { written(y) };
    let dev = x.device();
    let mut rdims = dims.clone();
    *rdims.last_mut().unwrap_or(&mut 0) = 1;
    Ok((
        Tensor::from_vec(y, dims, dev)?,
        Tensor::from_vec(r, rdims, dev)?,
    ))
}

/// `x = residual + delta` and the RMSNorm of `x` over rows of the last dimension, in one pass:
/// `(x, x / sqrt(mean(x²) + eps) * w)`, with candle's arithmetic (the squares summed in order,
/// a division by the root), so the bits are those of candle's add and `rms_norm`.
pub(crate) fn add_rms_norm(
    residual: &Tensor,
    delta: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let dims = residual.dims().to_vec();
    let h = *dims.last().unwrap_or(&1);
    let n = residual.elem_count();
    let w = with_f32(w, <[f32]>::to_vec)?;
    if delta.dims() != dims.as_slice() || w.len() != h {
        return Err(crate::error::EngineError::invalid(format!(
            "add_rms_norm: residual {dims:?}, delta {:?}, weight [{}]",
            delta.dims(),
            w.len()
        )));
    }
    let (mut x, mut y) = (unwritten(n), unwritten(n));
    with_f32(residual, |r| {
        with_f32(delta, |d| {
            let rows = h * ROW_BLOCK;
            x.par_chunks_mut(rows)
                .zip(y.par_chunks_mut(rows))
                .enumerate()
                .for_each(|(blk, (xb, yb))| {
                    for (i, (xr, yr)) in xb.chunks_mut(h).zip(yb.chunks_mut(h)).enumerate() {
                        let at = (blk * ROW_BLOCK + i) * h;
                        for ((o, &a), &b) in xr.iter_mut().zip(&r[at..at + h]).zip(&d[at..at + h]) {
                            o.write(a + b);
                        }
                        // SAFETY: every element of the row was written just above.
                        let xr = unsafe { written_ref(xr) };
                        let sum2 = xr.iter().map(|v| v * v).sum::<f32>();
                        let m = (sum2 / h as f32 + eps).sqrt();
                        for ((o, &v), &wv) in yr.iter_mut().zip(xr.iter()).zip(&w) {
                            o.write(v / m * wv);
                        }
                    }
                });
        })
    })??;
    // SAFETY: each row of both was written above.
    let (x, y) = unsafe { (written(x), written(y)) };
    let dev = residual.device();
    Ok((
        Tensor::from_vec(x, dims.clone(), dev)?,
        Tensor::from_vec(y, dims, dev)?,
    ))
}

/// [`add_rms_norm`], or candle's add and `rms_norm` where the fused kernels do not apply.
pub(crate) fn add_rms_norm_or_generic(
    residual: &Tensor,
    delta: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    if fused_ok(residual) && fused_ok(delta) && fused_ok(w) && residual.dims() == delta.dims() {
        return add_rms_norm(residual, delta, w, eps);
    }
    let x = (residual + delta)?;
    let y = candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)?;
    Ok((x, y))
}

/// RMSNorm backward plus the residual gradient: `resid + (g*w - xhat * mean(g*w*xhat)) * r`
/// with `xhat = x * r`.
pub(crate) fn rms_backward_add(
    x: &Tensor,
    r: &Tensor,
    w: &Tensor,
    g: &Tensor,
    resid: &Tensor,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let h = *dims.last().unwrap_or(&1);
    let w = with_f32(w, <[f32]>::to_vec)?;
    let r = with_f32(r, <[f32]>::to_vec)?;
    let mut out = with_f32(resid, <[f32]>::to_vec)?;
    with_f32(x, |x| {
        with_f32(g, |g| {
            par_rows(&mut out, h, |row, orow| {
                let (xr, gr) = (&x[row * h..(row + 1) * h], &g[row * h..(row + 1) * h]);
                let inv = r[row];
                let mut m = 0f32;
                for ((&xv, &gv), &wv) in xr.iter().zip(gr).zip(&w) {
                    m += gv * wv * xv * inv;
                }
                m /= h as f32;
                for (((o, &xv), &gv), &wv) in orow.iter_mut().zip(xr).zip(gr).zip(&w) {
                    *o += (gv * wv - xv * inv * m) * inv;
                }
            });
        })
    })??;
    Ok(Tensor::from_vec(out, dims, x.device())?)
}

/// `silu(g) * u`.
pub(crate) fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    let dims = g.dims().to_vec();
    let mut out = unwritten(g.elem_count());
    with_f32(g, |g| {
        with_f32(u, |u| {
            out.par_chunks_mut(1 << 14).enumerate().for_each(|(c, o)| {
                let base = c << 14;
                for (i, ov) in o.iter_mut().enumerate() {
                    let gv = g[base + i];
                    ov.write(gv / (1.0 + exp_f32(-gv)) * u[base + i]);
                }
            });
        })
    })??;
    // SAFETY: every chunk of `out` was written above.
    let out = unsafe { written(out) };
    Ok(Tensor::from_vec(out, dims, g.device())?)
}

/// [`swiglu`], or candle's `silu(g) * u` where the fused kernels do not apply.
pub(crate) fn swiglu_or_generic(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if fused_ok(g) && fused_ok(u) && g.dims() == u.dims() {
        return swiglu(g, u);
    }
    Ok((g.silu()? * u)?)
}

/// Gradients of `silu(g) * u` with respect to `g` and `u`, given the output gradient `d`.
pub(crate) fn swiglu_backward(g: &Tensor, u: &Tensor, d: &Tensor) -> Result<(Tensor, Tensor)> {
    let dims = g.dims().to_vec();
    let n = g.elem_count();
    let (mut dg, mut du) = (unwritten(n), unwritten(n));
    with_f32(g, |g| {
        with_f32(u, |u| {
            with_f32(d, |d| {
                dg.par_chunks_mut(1 << 14)
                    .zip(du.par_chunks_mut(1 << 14))
                    .enumerate()
                    .for_each(|(c, (dgc, duc))| {
                        let base = c << 14;
                        for (i, (a, b)) in dgc.iter_mut().zip(duc.iter_mut()).enumerate() {
                            let (gv, uv, dv) = (g[base + i], u[base + i], d[base + i]);
                            let sg = 1.0 / (1.0 + exp_f32(-gv));
                            let silu = gv * sg;
                            a.write(dv * uv * sg * (1.0 + gv * (1.0 - sg)));
                            b.write(dv * silu);
                        }
                    });
            })
        })
    })???;
    // SAFETY: every chunk of both was written above.
    let (dg, du) = unsafe { (written(dg), written(du)) };
    let dev = g.device();
    Ok((
        Tensor::from_vec(dg, dims.clone(), dev)?,
        Tensor::from_vec(du, dims, dev)?,
    ))
}

/// Softmax backward over rows of the last dimension: `p * (dp - sum(dp * p))`.
pub(crate) fn softmax_backward(p: &Tensor, dp: &Tensor) -> Result<Tensor> {
    let dims = p.dims().to_vec();
    let w = *dims.last().unwrap_or(&1);
    let mut out = vec![0f32; p.elem_count()];
    with_f32(p, |p| {
        with_f32(dp, |dp| {
            par_rows(&mut out, w, |row, orow| {
                let (pr, dr) = (&p[row * w..(row + 1) * w], &dp[row * w..(row + 1) * w]);
                let s: f32 = pr.iter().zip(dr).map(|(a, b)| a * b).sum();
                for ((o, &pv), &dv) in orow.iter_mut().zip(pr).zip(dr) {
                    *o = pv * (dv - s);
                }
            });
        })
    })??;
    Ok(Tensor::from_vec(out, dims, p.device())?)
}

/// `exp(x)` in f32 without a library call, so that loops over slices vectorize: Cody–Waite
/// reduction `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-7 Taylor polynomial in `r`
/// (truncation below 6e-9 relative), and `2^n` built from its exponent bits. Relative error
/// within 3e-7 for `x` in [-87, 88]; inputs are clamped to [-87.3, 88.3], so very negative
/// ones give about 1e-38 rather than 0 and large ones about 2e38 rather than infinity.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p: f32 = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    // `n + 1.5·2^23` holds `n` in its low mantissa bits (|n| < 2^22): the exponent field of
    // `2^n` without a float-to-int conversion, which saturates and kept the loops over
    // slices from vectorizing (3.5× slower).
    let biased = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000 - 127);
    p * f32::from_bits(biased << 23)
}

/// Sum of a slice with 16 partial sums (one vector register), which the compiler vectorizes.
#[inline(always)]
fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Below this, `exp(x - max)` is 0 in f32: masked scores (`MASKED` bias) skip the
/// exponential.
const EXP_UNDERFLOW: f32 = -104.0;

/// `softmax(scores + bias)` over the last dimension, for attention scores
/// `[g, nkv, rep, tq, tk]` and an additive bias `[g or 1, 1, 1, tq, tk]` (the mask), without
/// materialising the biased scores. Entries whose biased score lies more than 104 below the
/// row's maximum are exactly 0, as their exponential underflows. `None` when the shapes are
/// not these (the caller then takes the generic path).
pub(crate) fn masked_softmax(scores: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((g, nkv, rep, tq, tk)), Ok((gb, b1, b2, bq, bk))) = (scores.dims5(), bias.dims5())
    else {
        return Ok(None);
    };
    if !(gb == g || gb == 1) || (b1, b2, bq, bk) != (1, 1, tq, tk) || !fused_ok(scores) {
        return Ok(None);
    }
    let per_group = nkv * rep * tq;
    let mut out = vec![0f32; scores.elem_count()];
    with_f32(scores, |s| {
        with_f32(bias, |bias| {
            par_rows(&mut out, tk, |row, orow| {
                let group = if gb == 1 { 0 } else { row / per_group };
                let brow = &bias[(group * tq + row % tq) * tk..][..tk];
                orow.copy_from_slice(&s[row * tk..(row + 1) * tk]);
                softmax_biased_in_place(orow, brow);
            });
        })
    })??;
    Ok(Some(Tensor::from_vec(
        out,
        (g, nkv, rep, tq, tk),
        scores.device(),
    )?))
}

/// `row = softmax(row + bias)`; entries more than 104 below the maximum are exactly 0.
#[inline(always)]
pub(crate) fn softmax_biased_in_place(row: &mut [f32], bias: &[f32]) {
    for (s, &b) in row.iter_mut().zip(bias) {
        *s += b;
    }
    let max = max_lanes(row);
    for s in row.iter_mut() {
        let d = *s - max;
        *s = if d < EXP_UNDERFLOW { 0.0 } else { exp_f32(d) };
    }
    let inv = 1.0 / sum_lanes(row);
    row.iter_mut().for_each(|s| *s *= inv);
}

/// [`masked_softmax`], or candle's softmax of the broadcast sum where it does not apply.
pub(crate) fn masked_softmax_or_generic(scores: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if let Some(p) = masked_softmax(scores, bias)? {
        return Ok(p);
    }
    Ok(candle_nn::ops::softmax_last_dim(
        &scores.broadcast_add(bias)?,
    )?)
}

/// Dot product with 16 partial sums, which the compiler vectorizes.
#[inline(always)]
pub(crate) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Maximum of a slice with 16 partial maxima, which the compiler vectorizes.
#[inline(always)]
fn max_lanes(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(rest, |m, &x| m.max(x))
}

/// `(max, sum of exp(x - max))` of a row: the parts of its log-sum-exp, `max + ln(sum)`.
#[inline(always)]
fn max_and_exp_sum(row: &[f32]) -> (f32, f32) {
    let max = max_lanes(row);
    if !max.is_finite() {
        // All -inf (or a NaN or +inf somewhere): the generic formula gives NaN or the
        // limit; keep its result.
        let sum = row.iter().map(|&v| (v - max).exp()).sum();
        return (max, sum);
    }
    let mut acc = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|&v| exp_f32(v - max)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += exp_f32(v - max);
        }
    }
    (max, acc.iter().sum::<f32>() + rest)
}

/// `log_softmax` over the last dimension in two reading passes and one writing pass per row
/// (candle's op makes five, each into a new tensor, with the library exponential); candle's
/// op where the fused kernels do not apply.
pub(crate) fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return Ok(candle_nn::ops::log_softmax(x, candle_core::D::Minus1)?);
    }
    let dims = x.dims().to_vec();
    let w = *dims.last().unwrap_or(&1);
    let mut out = vec![0f32; x.elem_count()];
    if w > 0 {
        with_f32(x, |xs| {
            par_rows(&mut out, w, |row, orow| {
                let xr = &xs[row * w..(row + 1) * w];
                let (max, sum) = max_and_exp_sum(xr);
                let lse = max + sum.ln();
                for (o, &v) in orow.iter_mut().zip(xr) {
                    *o = v - lse;
                }
            });
        })?;
    }
    Ok(Tensor::from_vec(out, dims, x.device())?)
}

/// Cross-entropy of `[n, vocab]` logits against one target per row, with its gradient: the
/// sum over rows of `-log softmax(x)[target]` (summed in f64), and
/// `scale * (softmax(x) - onehot(target))`. One pass for the maximum, one writing the
/// exponentials, one scaling them. `None` where the fused kernels do not apply.
///
/// # Errors
/// A target outside the vocabulary, or a row count that is not the targets'.
pub(crate) fn nll_and_grad(
    logits: &Tensor,
    targets: &[u32],
    scale: f32,
) -> Result<Option<(f64, Tensor)>> {
    let Ok((n, w)) = logits.dims2() else {
        return Ok(None);
    };
    if !fused_ok(logits) {
        return Ok(None);
    }
    if n != targets.len() {
        return Err(crate::error::EngineError::invalid(format!(
            "cross-entropy: {n} rows of logits, {} targets",
            targets.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= w) {
        return Err(crate::error::EngineError::invalid(format!(
            "cross-entropy: target {t} outside a vocabulary of {w}"
        )));
    }
    let mut grad = vec![0f32; n * w];
    let mut nll = vec![0f64; n];
    if w > 0 {
        with_f32(logits, |xs| {
            par_rows_with(&mut grad, w, &mut nll, |row, grow, l| {
                let xr = &xs[row * w..(row + 1) * w];
                let t = targets[row] as usize;
                let max = max_lanes(xr);
                for (g, &v) in grow.iter_mut().zip(xr) {
                    *g = exp_f32(v - max);
                }
                let sum = sum_lanes(grow);
                *l = f64::from(max) + f64::from(sum).ln() - f64::from(xr[t]);
                let k = scale / sum;
                for g in grow.iter_mut() {
                    *g *= k;
                }
                grow[t] -= scale;
            });
        })?;
    }
    let total = nll.iter().sum();
    Ok(Some((
        total,
        Tensor::from_vec(grad, (n, w), logits.device())?,
    )))
}

/// `x.mm(&y)`: [`matmul`] in method form.
pub(crate) trait MatmulExt {
    /// `self @ rhs` through [`matmul`].
    fn mm(&self, rhs: &Tensor) -> Result<Tensor>;
}

impl MatmulExt for Tensor {
    fn mm(&self, rhs: &Tensor) -> Result<Tensor> {
        matmul(self, rhs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// Asserts that two f32 tensors of equal size agree to a relative `1e-4` (float
    /// summation order).
    pub(crate) fn close(x: &Tensor, y: &Tensor) {
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(x.len(), y.len());
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// Work inside [`in_pool_awake`] runs on the pool as usual and gives its result; a panic
    /// inside it still stops the spinning threads (the scope ends and the pool serves the
    /// next call) and reaches the caller.
    #[test]
    fn awake_pool_runs_parallel_work_and_stops_after_a_panic() {
        let sum = in_pool_awake(|| (0..100_000u64).into_par_iter().map(|i| i * 3).sum::<u64>());
        assert_eq!(sum, 3 * 99_999 * 100_000 / 2);
        let caught = std::panic::catch_unwind(|| {
            in_pool_awake(|| {
                let n: usize = (0..1000).into_par_iter().map(|i| i % 7).sum();
                if n > 0 {
                    panic!("inside the awake pool");
                }
            })
        });
        assert!(caught.is_err());
        // Other tests' regions (generation, training) may run meanwhile: the flag must fall,
        // not be down at once.
        let start = std::time::Instant::now();
        while AWAKE.load(Ordering::Acquire) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "the panic left the region marked running"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let again = in_pool_awake(|| (0..1000u32).into_par_iter().filter(|i| i % 2 == 0).count());
        assert_eq!(again, 500);
    }

    /// Awake regions started from several threads at once, and one inside another, all
    /// finish with their results (one spins at a time; the others run as plain `in_pool`).
    #[test]
    fn awake_regions_from_several_threads_at_once_finish() {
        fn nested(depth: u32) -> u64 {
            if depth == 0 {
                return (0..2000u64).into_par_iter().map(|i| i % 13).sum();
            }
            let (a, b) = rayon::join(|| nested(depth - 1), || nested(depth - 1));
            a + b
        }
        let want = 8 * (0..2000u64).map(|i| i % 13).sum::<u64>();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let got: Vec<u64> = (0..50)
                    .map(|_| in_pool_awake(|| nested(2) + in_pool_awake(|| nested(2))))
                    .collect();
                let _ = tx.send(got);
            });
        }
        // A deadlock shows as a run that never reports.
        for _ in 0..4 {
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .expect("an awake region did not finish in two minutes");
            assert!(got.iter().all(|&g| g == want));
        }
    }

    /// The fused residual add and RMSNorm give candle's add and `rms_norm` bit for bit, on
    /// enough rows to run in parallel and on a few, with a ragged last row block.
    #[test]
    fn add_rms_norm_equals_candles_add_and_norm_bit_for_bit() {
        let dev = Device::Cpu;
        for (rows, h) in [(3, 40), (37, 96), (300, 576)] {
            let r = Tensor::randn(0f32, 1.0, (rows, h), &dev).unwrap();
            let d = Tensor::randn(0f32, 2.0, (rows, h), &dev).unwrap();
            let w = Tensor::randn(1f32, 0.3, h, &dev).unwrap();
            let (x, y) = add_rms_norm(&r, &d, &w, 1e-5).unwrap();
            let x_ref = (&r + &d).unwrap();
            let y_ref = candle_nn::ops::rms_norm(&x_ref, &w, 1e-5).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|f| f.to_bits()).collect()
            };
            assert_eq!(bits(&x), bits(&x_ref), "sum, {rows} rows");
            assert_eq!(bits(&y), bits(&y_ref), "norm, {rows} rows");
        }
        let r = Tensor::zeros((2, 8), candle_core::DType::F32, &dev).unwrap();
        let d = Tensor::zeros((2, 7), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones(8, candle_core::DType::F32, &dev).unwrap();
        assert!(add_rms_norm(&r, &d, &w, 1e-5).is_err());
    }

    #[test]
    fn equals_candle_matmul_for_plain_transposed_and_batched_operands() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (37, 19), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (19, 23), &dev).unwrap();
        let bt = Tensor::randn(0f32, 1.0, (23, 19), &dev).unwrap();
        close(&matmul(&a, &b).unwrap(), &a.matmul(&b).unwrap());
        close(
            &matmul(&a, &bt.t().unwrap()).unwrap(),
            &a.matmul(&bt.t().unwrap()).unwrap(),
        );
        let at = Tensor::randn(0f32, 1.0, (19, 37), &dev).unwrap();
        close(
            &matmul(&at.t().unwrap(), &b).unwrap(),
            &at.t().unwrap().matmul(&b).unwrap(),
        );
        // Big enough to take the multi-threaded path.
        let x = Tensor::randn(0f32, 1.0, (300, 200), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (400, 200), &dev).unwrap();
        close(
            &matmul(&x, &w.t().unwrap()).unwrap(),
            &x.matmul(&w.t().unwrap()).unwrap(),
        );
        // Enough rows for the blocked product (`crate::sgemm`) where the CPU runs it,
        // as the first term of a sum and as a later one (accumulating).
        let x = Tensor::randn(0f32, 1.0, (600, 160), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (144, 160), &dev).unwrap();
        let wide = Tensor::randn(0f32, 1.0, (600, 40), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (40, 144), &dev).unwrap();
        close(
            &matmul(&x, &w.t().unwrap()).unwrap(),
            &x.matmul(&w.t().unwrap()).unwrap(),
        );
        let want = (x.matmul(&w.t().unwrap()).unwrap() + wide.matmul(&v).unwrap()).unwrap();
        close(
            &matmul_sum(&[(&wide, &v), (&x, &w.t().unwrap())]).unwrap(),
            &want,
        );
        // Batched (attention-shaped), with a transposed and a narrowed operand.
        let q = Tensor::randn(0f32, 1.0, (2, 3, 12, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, 10, 8), &dev).unwrap();
        close(
            &matmul(&q, &k.t().unwrap()).unwrap(),
            &q.matmul(&k.t().unwrap()).unwrap(),
        );
        let big = Tensor::randn(0f32, 1.0, (2, 3, 16, 8), &dev).unwrap();
        let kn = big.narrow(2, 0, 10).unwrap();
        close(
            &matmul(&q, &kn.t().unwrap()).unwrap(),
            &q.matmul(&kn.t().unwrap().contiguous().unwrap()).unwrap(),
        );
        let y = Tensor::randn(0f32, 1.0, (37, 5), &dev).unwrap();
        let z = Tensor::randn(0f32, 1.0, (23, 5), &dev).unwrap();
        let want = (a.matmul(&b).unwrap() + y.matmul(&z.t().unwrap()).unwrap()).unwrap();
        close(
            &matmul_sum(&[(&a, &b), (&y, &z.t().unwrap())]).unwrap(),
            &want,
        );
        let p = Tensor::randn(0f32, 1.0, (2, 3, 12, 10), &dev).unwrap();
        let _ = &p;
        close(
            &matmul(&p.t().unwrap(), &q).unwrap(),
            &p.t().unwrap().matmul(&q).unwrap(),
        );
    }

    #[test]
    fn row_kernels_equal_their_composite_formulas() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (13, 24), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 24, &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (13, 24), &dev).unwrap();
        let res = Tensor::randn(0f32, 1.0, (13, 24), &dev).unwrap();
        let eps = 1e-5;
        let r_want = ((x.sqr().unwrap().mean_keepdim(1).unwrap() + eps)
            .unwrap()
            .sqrt()
            .unwrap())
        .recip()
        .unwrap();
        let (y, r) = rms_forward(&x, &w, eps).unwrap();
        close(&r, &r_want);
        close(
            &y,
            &x.broadcast_mul(&r_want).unwrap().broadcast_mul(&w).unwrap(),
        );
        let xhat = x.broadcast_mul(&r_want).unwrap();
        let gw = g.broadcast_mul(&w).unwrap();
        let m = (&gw * &xhat).unwrap().mean_keepdim(1).unwrap();
        let want = (&res
            + (gw - xhat.broadcast_mul(&m).unwrap())
                .unwrap()
                .broadcast_mul(&r_want)
                .unwrap())
        .unwrap();
        close(&rms_backward_add(&x, &r, &w, &g, &res).unwrap(), &want);

        let u = Tensor::randn(0f32, 1.0, (13, 24), &dev).unwrap();
        close(&swiglu(&x, &u).unwrap(), &(x.silu().unwrap() * &u).unwrap());
        let sg = candle_nn::ops::sigmoid(&x).unwrap();
        let dsilu = (&sg * ((&x * (1.0 - &sg).unwrap()).unwrap() + 1.0).unwrap()).unwrap();
        let (dg, du) = swiglu_backward(&x, &u, &g).unwrap();
        close(&dg, &((&g * &u).unwrap() * dsilu).unwrap());
        close(&du, &(&g * x.silu().unwrap()).unwrap());

        let p = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let s = (&g * &p).unwrap().sum_keepdim(1).unwrap();
        close(
            &softmax_backward(&p, &g).unwrap(),
            &(&p * g.broadcast_sub(&s).unwrap()).unwrap(),
        );
    }

    #[test]
    fn masked_softmax_equals_softmax_of_the_biased_scores() {
        let dev = Device::Cpu;
        // [g 2, nkv 3, rep 2, tq 5, tk 7]; a causal mask with 2 past keys, and one fully masked
        // query row (a padding query) in the second group.
        let (g, tq, tk) = (2, 5, 7);
        let scores = Tensor::randn(0f32, 3.0, (g, 3, 2, tq, tk), &dev).unwrap();
        let mut bias = vec![0f32; g * tq * tk];
        for b in 0..g {
            for i in 0..tq {
                for j in 0..tk {
                    if j > i + 2 || (b == 1 && i == 3) {
                        bias[(b * tq + i) * tk + j] = -1e9;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (g, 1, 1, tq, tk), &dev).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&bias).unwrap()).unwrap();
        let got = masked_softmax(&scores, &bias).unwrap().unwrap();
        close(&got, &want);
        // Masked entries are exactly 0; the padding row is uniform.
        let row = got.get(1).unwrap().get(0).unwrap().get(0).unwrap();
        let pad = row.get(3).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            pad.iter().all(|v| (v - 1.0 / tk as f32).abs() < 1e-6),
            "{pad:?}"
        );
        let first = row.get(0).unwrap().to_vec1::<f32>().unwrap();
        assert!(first[3..].iter().all(|&v| v == 0.0), "{first:?}");
        // A bias shared by every group broadcasts.
        let shared = bias.narrow(0, 0, 1).unwrap();
        close(
            &masked_softmax(&scores, &shared).unwrap().unwrap(),
            &candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&shared).unwrap()).unwrap(),
        );
        // Other shapes are left to the caller.
        assert!(
            masked_softmax(&scores.flatten_to(1).unwrap(), &bias)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn log_softmax_equals_candles() {
        let dev = Device::Cpu;
        // Wide rows (a vocabulary) with a remainder after the 16-lane chunks, and large values.
        let x = (Tensor::randn(0f32, 4.0, (19, 1003), &dev).unwrap() + 30.0).unwrap();
        close(
            &log_softmax_last_dim(&x).unwrap(),
            &candle_nn::ops::log_softmax(&x, candle_core::D::Minus1).unwrap(),
        );
        let x = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev).unwrap();
        close(
            &log_softmax_last_dim(&x).unwrap(),
            &candle_nn::ops::log_softmax(&x, candle_core::D::Minus1).unwrap(),
        );
    }

    #[test]
    fn nll_and_grad_equal_the_definition() {
        let dev = Device::Cpu;
        let (n, w) = (13, 517);
        let x = Tensor::randn(0f32, 3.0, (n, w), &dev).unwrap();
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % w as u32).collect();
        let scale = 0.25f32;
        let (nll, grad) = nll_and_grad(&x, &targets, scale).unwrap().unwrap();
        let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
        let g: Vec<Vec<f32>> = grad.to_vec2().unwrap();
        let mut want_nll = 0f64;
        for (r, row) in xs.iter().enumerate() {
            let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            let t = targets[r] as usize;
            want_nll += lse - f64::from(row[t]);
            for (j, &v) in row.iter().enumerate() {
                let p = (f64::from(v) - lse).exp();
                let want = f64::from(scale) * (p - f64::from(u8::from(j == t)));
                assert!(
                    (f64::from(g[r][j]) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "row {r} col {j}: {} vs {want}",
                    g[r][j]
                );
            }
        }
        assert!(
            (nll - want_nll).abs() <= 1e-5 * want_nll.abs(),
            "{nll} vs {want_nll}"
        );
        assert!(nll_and_grad(&x, &[0; 12], 1.0).is_err());
        let mut bad = targets.clone();
        bad[3] = w as u32;
        assert!(nll_and_grad(&x, &bad, 1.0).is_err());
    }

    #[test]
    fn exp_f32_is_within_3e7_relative_of_exp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp_f32(x)) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.000_731;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1e9) < 1e-37 && exp_f32(-1e9) >= 0.0);
        assert!(exp_f32(1e9).is_finite());
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        assert_eq!(sum_lanes(&v), 333.0);
    }
}
