//! ONNX Gemm: `Y = alpha · A' · B' + beta · C`, with bias and ReLU fused.

use super::elementwise::relu_keep_nan;
use super::matmul::{matmul, View};
use super::Cpu;
use crate::error::{shape_err, KernelError};
use crate::tensor::Tensor;

/// Rows of `A` per GEMM call (64: at 16, repacking `B` for every call halved
/// a 1024³ GEMM to 28 GFLOP/s). Callers that need the same bits for a row
/// wherever it falls (data parallelism) hand out rows in multiples of this.
pub const ROW_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub relu: bool,
}

impl Default for Gemm {
    fn default() -> Self {
        Gemm {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
            relu: false,
        }
    }
}

impl Gemm {
    /// (M, K, N) of `a` and `b` after their transposes.
    pub fn dims(&self, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), KernelError> {
        let two_d = |t: &[usize], what| match t {
            [r, c] => Ok((*r, *c)),
            _ => Err(shape_err("Gemm", what, t, "two dimensions")),
        };
        let (ar, ac) = two_d(a, "A")?;
        let (br, bc) = two_d(b, "B")?;
        let (m, k) = if self.trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if self.trans_b { (bc, br) } else { (br, bc) };
        if k != kb {
            return Err(shape_err(
                "Gemm",
                "B",
                b,
                format!("{k} along the contracted dimension (A is {a:?})"),
            ));
        }
        Ok((m, k, n))
    }

    pub fn run(
        &self,
        cpu: &Cpu,
        a: &Tensor,
        b: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<Tensor, KernelError> {
        let (m, _, n) = self.dims(&a.shape, &b.shape)?;
        let mut y = Tensor::zeros(vec![m, n]);
        self.run_into(cpu, a, b, c, &mut y.data)?;
        Ok(y)
    }

    /// Writes every element of `y` (`M × N`, row-major).
    pub fn run_into(
        &self,
        cpu: &Cpu,
        a: &Tensor,
        b: &Tensor,
        c: Option<&Tensor>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        let (m, k, n) = self.dims(&a.shape, &b.shape)?;
        if y.len() != m * n {
            return Err(shape_err(
                "Gemm",
                "output",
                &[y.len()],
                format!("{} values", m * n),
            ));
        }
        // Y starts as beta·C broadcast (read back by the GEMM), or is overwritten.
        let accumulate = match c {
            Some(c) if self.beta != 0.0 => {
                fill_broadcast(y, m, n, c, self.beta)?;
                true
            }
            _ => false,
        };
        let (a_rs, a_cs) = if self.trans_a { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if self.trans_b { (1, k) } else { (n, 1) };
        let scaled;
        let a_data: &[f32] = if self.alpha == 1.0 {
            &a.data
        } else {
            scaled = a.data.iter().map(|v| v * self.alpha).collect::<Vec<f32>>();
            &scaled
        };
        // Rows go to the GEMM in blocks of ROW_BLOCK, whatever the batch and
        // thread count: the GEMM library picks its blocking (and so its
        // summation order) from the shape of each call, and a row must come
        // out bit-identical however a batch is split across ranks or threads.
        let chunks: Vec<(usize, &mut [f32])> = y
            .chunks_mut(ROW_BLOCK * n.max(1))
            .enumerate()
            .map(|(i, ch)| (i * ROW_BLOCK, ch))
            .collect();
        cpu.for_each(chunks, |_, (row0, out)| {
            let rows = out.len() / n.max(1);
            let a_view = View {
                data: &a_data[(row0 * a_rs).min(a_data.len())..],
                rs: a_rs,
                cs: a_cs,
            };
            let b_view = View {
                data: &b.data,
                rs: b_rs,
                cs: b_cs,
            };
            matmul(rows, n, k, out, n, a_view, b_view, accumulate);
            if self.relu {
                out.iter_mut().for_each(|v| *v = relu_keep_nan(*v));
            }
        });
        Ok(())
    }
}

/// `y = scale · c` broadcast to `m × n` (numpy rules, right-aligned).
fn fill_broadcast(
    y: &mut [f32],
    m: usize,
    n: usize,
    c: &Tensor,
    scale: f32,
) -> Result<(), KernelError> {
    let (cr, cc) = match (c.shape.len(), c.shape.as_slice()) {
        (0, _) => (1, 1),
        (1, [x]) => (1, *x),
        (2, [r, x]) => (*r, *x),
        _ => {
            return Err(shape_err(
                "Gemm",
                "C",
                &c.shape,
                format!("broadcastable to [{m}, {n}]"),
            ))
        }
    };
    if !(cr == 1 || cr == m) || !(cc == 1 || cc == n) {
        return Err(shape_err(
            "Gemm",
            "C",
            &c.shape,
            format!("broadcastable to [{m}, {n}]"),
        ));
    }
    for r in 0..m {
        for col in 0..n {
            let v = c.data[(if cr == 1 { 0 } else { r }) * cc + if cc == 1 { 0 } else { col }];
            y[r * n + col] = scale * v;
        }
    }
    Ok(())
}
