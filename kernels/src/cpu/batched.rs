//! ONNX MatMul: numpy's matmul over batches of matrices.

use super::broadcast::broadcast_shape_for;
use super::linear::ROW_BLOCK;
use super::matmul::{matmul, View};
use super::strided::{broadcast_strides, check_len, for_each_offset};
use super::Cpu;
use crate::error::{shape_err, KernelError};
use crate::tensor::Tensor;

/// `a · b` with numpy's matmul rules: the last two axes are the matrices,
/// the axes before them broadcast; a 1-D `a` is a row `[1, K]` and a 1-D
/// `b` a column `[K, 1]`, that added axis dropped from the output.
///
/// Each product is GEMM calls of [`ROW_BLOCK`] rows spread over the
/// threads, reading the operands in place: an operand broadcast across the
/// batch is not copied, and when only `a` is batched (`[B, S, K] · [K, N]`)
/// its batch and rows are one tall matrix.
pub fn batched_matmul(cpu: &Cpu, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
    check_len("MatMul", "A", a)?;
    check_len("MatMul", "B", b)?;
    let MatMulShapes {
        a_batch,
        b_batch,
        m,
        k,
        n,
        batch,
        shape,
    } = matmul_shapes(&a.shape, &b.shape)?;
    let count: usize = batch.iter().product();
    let mut out = vec![0.0; count * m * n];
    if out.is_empty() {
        return Ok(Tensor { shape, data: out });
    }
    let (rows, offsets) = if b_batch.iter().product::<usize>() == 1 && a_batch == batch {
        (count * m, vec![(0, 0)])
    } else {
        let sa = broadcast_strides(&a_batch, batch.len());
        let sb = broadcast_strides(&b_batch, batch.len());
        let mut offsets = Vec::with_capacity(count);
        for_each_offset(&batch, [&sa, &sb], [0, 0], |[x, y]| {
            offsets.push((x * m * k, y * k * n));
        });
        (m, offsets)
    };
    let mut items = Vec::new();
    for (entry, product) in out.chunks_mut(rows * n).enumerate() {
        for (block, dst) in product.chunks_mut(ROW_BLOCK * n).enumerate() {
            items.push((entry, block * ROW_BLOCK, dst));
        }
    }
    cpu.for_each(items, |_, (entry, row0, dst)| {
        let (a_at, b_at) = offsets[entry];
        let a_view = View {
            data: &a.data[(a_at + row0 * k).min(a.data.len())..],
            rs: k,
            cs: 1,
        };
        let b_view = View {
            data: &b.data[b_at.min(b.data.len())..],
            rs: n,
            cs: 1,
        };
        matmul(dst.len() / n, n, k, dst, n, a_view, b_view, false);
    });
    Ok(Tensor { shape, data: out })
}

/// The operands of a MatMul as batches of matrices: `a` as `a_batch` of
/// `[m, k]`, `b` as `b_batch` of `[k, n]` (a 1-D operand as one matrix
/// with an added axis of 1), and the broadcast `batch` and output `shape`.
pub(crate) struct MatMulShapes {
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    pub shape: Vec<usize>,
}

pub(crate) fn matmul_shapes(a: &[usize], b: &[usize]) -> Result<MatMulShapes, KernelError> {
    const OP: &str = "MatMul";
    let a_shape = match a {
        [] => return Err(shape_err(OP, "A", a, "at least one dimension")),
        [k] => vec![1, *k],
        _ => a.to_vec(),
    };
    let b_shape = match b {
        [] => return Err(shape_err(OP, "B", b, "at least one dimension")),
        [k] => vec![*k, 1],
        _ => b.to_vec(),
    };
    let (a_batch, &[m, k]) = a_shape.split_at(a_shape.len() - 2) else {
        unreachable!()
    };
    let (b_batch, &[kb, n]) = b_shape.split_at(b_shape.len() - 2) else {
        unreachable!()
    };
    if k != kb {
        return Err(shape_err(
            OP,
            "B",
            b,
            format!("{k} rows to match A's {a:?}"),
        ));
    }
    let batch = broadcast_shape_for(OP, a_batch, b_batch)?;
    let mut shape = batch.clone();
    if a.len() > 1 {
        shape.push(m);
    }
    if b.len() > 1 {
        shape.push(n);
    }
    Ok(MatMulShapes {
        a_batch: a_batch.to_vec(),
        b_batch: b_batch.to_vec(),
        m,
        k,
        n,
        batch,
        shape,
    })
}
