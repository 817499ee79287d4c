//! f32 matrix products on the CPU, called through the gemm crate with a threading choice
//! that fits the shape.
//!
//! candle hands every matmul to gemm with all threads. That is right for the big projections
//! and wasteful for the small ones a LoRA step is full of: rank-8 adapter products and the
//! per-head attention products, where starting the threads costs more than the arithmetic.
//! Here a product below [`PARALLEL_MIN_FLOPS`] runs on one thread, and a batch of small
//! products (attention heads) is spread over the threads one whole product each.
//!
//! Invariant: results equal candle's `matmul` up to float summation order (tested below).
#![allow(unsafe_code)]

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::Result;

/// Products with fewer FLOPs than this run single-threaded.
const PARALLEL_MIN_FLOPS: usize = 16_000_000;

/// One operand: a batch of strided matrices inside a slice.
#[derive(Debug, Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    batch_stride: usize,
}

impl Operand<'_> {
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
    assert!(b.rows == k, "inner dimensions differ");
    assert!(dst.len() >= m * n, "destination too small");
    assert!(a.extent(1) <= a.data.len() && b.extent(1) <= b.data.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm reads (row * rs + col * cs for
    // row < rows, col < cols) inside `a.data` / `b.data`, and every index it writes inside
    // `dst[..m * n]`; the three slices cannot alias (`dst` is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The batch layout of a tensor of rank ≥ 2: one uniform stride over all leading dimensions.
fn batch_layout(l: &Layout) -> Option<(usize, usize, usize, usize, usize, usize)> {
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
        gemm_one(&mut dst, oa, ob, i > 0, parallelism(m, n, ad[1]));
    }
    Ok(Tensor::from_vec(dst, (m, n), a0.device())?)
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
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(x: &Tensor, y: &Tensor) {
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(x.len(), y.len());
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
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
        close(
            &matmul(&p.t().unwrap(), &q).unwrap(),
            &p.t().unwrap().matmul(&q).unwrap(),
        );
    }
}
