//! Running a model's nodes on a rank: programs of steps over the graph's
//! values, each value freed after its last use and its buffer reused.

mod cpu;
mod cuda;
mod fuse;
pub(crate) mod load;
mod pool;
mod program;
mod step;

pub use cuda::CudaBackend;
pub(crate) use fuse::fuse_posts;
pub use load::{load_program, round_to};
pub use program::{Comm, In, Instr, Operand, Program};
pub use step::{Post, Step};

use crate::graph::Known;
use crate::ModelError;
use mpinfer_kernels::Tensor;
use std::ops::Range;

/// Where kernels run. The executor hands every step to one backend; a
/// backend runs steps on its device and keeps the graph out of its code.
/// Values stay on the device between steps: the executor moves them to the
/// host only for collectives and for the values a program returns.
pub trait Backend {
    /// A value as this backend holds it between steps.
    type Value;

    /// Runs `step` on `args` (one per input of the step; absent ones for
    /// inputs left out or known while planning, whose values are in
    /// `known`). Returns the step's outputs.
    fn run(
        &self,
        step: &Step,
        args: Vec<Arg<'_, Self::Value>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<Self::Value>, ModelError>;

    /// A value from the host: the input, or a collective's result.
    fn upload(&self, t: Tensor) -> Result<Self::Value, ModelError>;

    /// A value for the host: for a collective, or to return.
    fn download(&self, v: Self::Value) -> Result<Tensor, ModelError>;

    fn shape<'v>(&self, v: &'v Self::Value) -> &'v [usize];

    /// The same elements under another shape.
    fn reshape(&self, v: Self::Value, shape: Vec<usize>) -> Result<Self::Value, ModelError>;

    fn zeros(&self, shape: Vec<usize>) -> Result<Self::Value, ModelError>;

    /// A value no longer needed: its memory may serve the next.
    fn release(&self, _v: Self::Value) {}

    /// A copy of a value that another step still reads.
    fn duplicate(&self, v: &Self::Value) -> Result<Self::Value, ModelError>;

    /// Collective `c` on value `v`, which `f` carries out on the host: the
    /// value goes there and back.
    fn communicate<E: From<ModelError>>(
        &self,
        v: Self::Value,
        c: &Comm,
        f: &mut dyn FnMut(Operand<'_>) -> Result<(), E>,
    ) -> Result<Self::Value, E> {
        let mut t = self.download(v)?;
        host_collective(c, &mut t, f)?;
        Ok(self.upload(t)?)
    }
}

/// `c` on a value on the host, whole.
pub(crate) fn host_collective<E>(
    c: &Comm,
    t: &mut Tensor,
    f: &mut dyn FnMut(Operand<'_>) -> Result<(), E>,
) -> Result<(), E> {
    match c {
        Comm::Allreduce => f(Operand::Partial(&mut t.data)),
        Comm::Gather { shards, to_root } => f(Operand::Shard {
            shards,
            to_root: *to_root,
            value: t,
        }),
    }
}

/// One input of a step: a value whose last use this is (the step may reuse
/// its buffer), one read in place, a constant on the host (a weight or a
/// value folded while planning), or none.
pub enum Arg<'a, V> {
    Owned(V),
    Ref(&'a V),
    Host(&'a Tensor),
    Absent,
}

impl<'a, V> Arg<'a, V> {
    pub fn owned(&self) -> bool {
        matches!(self, Arg::Owned(_))
    }

    pub fn take(&mut self) -> Arg<'a, V> {
        std::mem::replace(self, Arg::Absent)
    }
}

/// On the CPU, values and host constants are the same tensors.
impl<'a> Arg<'a, Tensor> {
    pub fn get(&self) -> Option<&Tensor> {
        match self {
            Arg::Owned(t) => Some(t),
            Arg::Ref(t) | Arg::Host(t) => Some(t),
            Arg::Absent => None,
        }
    }

    /// The tensor of an input the planner proved present.
    pub fn tensor(&self) -> &Tensor {
        self.get().expect("an input the plan requires is present")
    }

    pub fn into_owned(self) -> Tensor {
        match self {
            Arg::Owned(t) => t,
            Arg::Ref(t) | Arg::Host(t) => t.clone(),
            Arg::Absent => panic!("an input the plan requires is present"),
        }
    }
}

/// BatchNormalization's statistics as the per-channel `(scale, shift)` of
/// `x · scale + shift`, the scale computed in f64.
pub fn batch_norm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = (0..gamma.len())
        .map(|c| (gamma[c] as f64 / (var[c] as f64 + epsilon as f64).sqrt()) as f32)
        .collect();
    let shift = (0..gamma.len())
        .map(|c| beta[c] - mean[c] * scale[c])
        .collect();
    (scale, shift)
}

/// Channels `range` of `[N, C, ...]` (or features of `[N, F]`).
pub fn slice_channels(x: &Tensor, range: Range<usize>) -> Tensor {
    let n = x.shape[0];
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let mut data = Vec::with_capacity(n * range.len() * inner);
    for s in 0..n {
        let base = s * c * inner;
        data.extend_from_slice(&x.data[base + range.start * inner..base + range.end * inner]);
    }
    let mut shape = x.shape.clone();
    shape[1] = range.len();
    Tensor::new(shape, data)
}

/// Concatenates per-rank blocks along an axis: block `r` holds
/// `[outer, counts[r], inner]`.
pub fn concat_blocks(blocks: &[f32], counts: &[usize], outer: usize, inner: usize) -> Vec<f32> {
    let c: usize = counts.iter().sum();
    let mut out = vec![0.0; outer * c * inner];
    let mut src = 0;
    let mut c0 = 0;
    for &cr in counts {
        for s in 0..outer {
            let len = cr * inner;
            let dst = s * c * inner + c0 * inner;
            out[dst..dst + len].copy_from_slice(&blocks[src..src + len]);
            src += len;
        }
        c0 += cr;
    }
    out
}

/// Per-channel `(x - mean) / std` on `[N, C, ...]` or `[N, F]`.
pub fn normalize(x: &mut Tensor, mean: &[f32], std: &[f32]) {
    let inner: usize = x.shape[2..].iter().product();
    let c = x.shape.get(1).copied().unwrap_or(1);
    for (i, v) in x.data.iter_mut().enumerate() {
        let ch = (i / inner.max(1)) % c.max(1);
        let (m, s) = (mean[ch.min(mean.len() - 1)], std[ch.min(std.len() - 1)]);
        *v = (*v - m) / s;
    }
}
