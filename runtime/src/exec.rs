//! Layers with their weights in memory, run one after another on a rank's
//! activations.

use crate::model::{reshape_target, Layer, Op};
use crate::ModelError;
use mpinfer_kernels::cpu::{self, Conv2d, Cpu, Gemm, Pool2d};
use mpinfer_kernels::{Stored, StoredDType, Tensor};
use std::ops::Range;

/// One layer ready to run: the whole layer, or this rank's shard of it.
#[derive(Clone, Debug)]
pub enum Step {
    Conv {
        conv: Conv2d,
        weight: Tensor,
        bias: Option<Vec<f32>>,
    },
    Gemm {
        gemm: Gemm,
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Relu,
    Pool(Pool2d),
    GlobalAveragePool,
    Flatten(usize),
    Reshape(Vec<i64>),
    Softmax {
        axis: i64,
        coerced: bool,
    },
    /// Slices channels `range` (axis 1) out of the activation: a shard of a
    /// grouped convolution needs only its groups' input channels.
    Channels(Range<usize>),
    /// Adds a bias along axis 1 after a reduction, once, then the optional ReLU.
    Bias {
        bias: Vec<f32>,
        relu: bool,
    },
}

impl Step {
    /// The layer whole, with weights rounded to `dtype`'s precision.
    pub fn load(layer: &Layer, dtype: StoredDType) -> Result<Step, ModelError> {
        let read = |w: &crate::model::Weight| -> Result<Tensor, ModelError> {
            Ok(round_to(w.read()?, dtype))
        };
        Ok(match &layer.op {
            Op::Conv { conv, weight, bias } => Step::Conv {
                conv: *conv,
                weight: read(weight)?,
                bias: bias.as_ref().map(|b| read(b).map(|t| t.data)).transpose()?,
            },
            Op::Gemm { gemm, weight, bias } => Step::Gemm {
                gemm: *gemm,
                weight: read(weight)?,
                bias: bias.as_ref().map(read).transpose()?,
            },
            other => Step::plain(other),
        })
    }

    /// A layer without weights.
    pub fn plain(op: &Op) -> Step {
        match op {
            Op::Relu => Step::Relu,
            Op::Pool(p) => Step::Pool(*p),
            Op::GlobalAveragePool => Step::GlobalAveragePool,
            Op::Flatten { axis } => Step::Flatten(*axis),
            Op::Reshape { shape } => Step::Reshape(shape.clone()),
            Op::Softmax { axis, coerced } => Step::Softmax {
                axis: *axis,
                coerced: *coerced,
            },
            Op::Conv { .. } | Op::Gemm { .. } => {
                unreachable!("layers with weights go through load")
            }
        }
    }

    pub fn run(&self, cpu: &Cpu, x: Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            Step::Conv { conv, weight, bias } => {
                let shape = conv.output_shape(&x.shape, &weight.shape)?;
                with_output(x, shape, |x, y| {
                    conv.run_into(cpu, x, weight, bias.as_deref(), y)
                })?
            }
            Step::Gemm { gemm, weight, bias } => {
                let (m, _, n) = gemm.dims(&x.shape, &weight.shape)?;
                with_output(x, vec![m, n], |x, y| {
                    gemm.run_into(cpu, x, weight, bias.as_ref(), y)
                })?
            }
            Step::Relu => {
                let mut x = x;
                cpu::relu(&mut x);
                x
            }
            Step::Pool(p) => {
                let shape = p.output_shape(&x.shape)?;
                with_output(x, shape, |x, y| p.run_into(cpu, x, y))?
            }
            Step::GlobalAveragePool => {
                let y = cpu::global_average_pool(&x)?;
                recycle(x.data);
                y
            }
            Step::Flatten(axis) => cpu::flatten(x, *axis)?,
            Step::Reshape(shape) => {
                let to = reshape_target(&x.shape, shape)?;
                x.reshape(to)
            }
            Step::Softmax { axis, coerced } => {
                let mut x = x;
                let rank = x.shape.len() as i64;
                let a = if *axis < 0 { axis + rank } else { *axis };
                if a < 0 || a > rank {
                    return Err(ModelError::SoftmaxAxis {
                        axis: *axis,
                        shape: x.shape,
                    });
                }
                if *coerced {
                    cpu::softmax_coerced(&mut x, a as usize)?;
                } else {
                    cpu::softmax(&mut x, a as usize)?;
                }
                x
            }
            Step::Channels(range) => slice_channels(&x, range.clone()),
            Step::Bias { bias, relu } => {
                let mut x = x;
                add_channel_bias(&mut x, bias, *relu);
                x
            }
        })
    }

    /// Folds a following ReLU into this step's epilogue, if it has one.
    fn absorb_relu(&mut self) -> bool {
        match self {
            Step::Conv { conv, .. } => {
                conv.relu = true;
                true
            }
            Step::Gemm { gemm, .. } => {
                gemm.relu = true;
                true
            }
            Step::Bias { relu, .. } => {
                *relu = true;
                true
            }
            _ => false,
        }
    }
}

thread_local! {
    /// Activation buffers of finished layers, reused for the next ones: a
    /// fresh buffer of tens of MB is a fresh mapping from the kernel, and its
    /// page faults cost a third of the seed network's time at batch 256.
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept for reuse per thread: a layer's input and output, and the
/// round's output on its way out.
const SPARE_BUFFERS: usize = 4;

fn recycle(buf: Vec<f32>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if buf.capacity() > 0 {
            s.push(buf);
            if s.len() > SPARE_BUFFERS {
                // Keep the largest: they fit the most layers.
                s.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
                s.truncate(SPARE_BUFFERS);
            }
        }
    })
}

/// A buffer of `len` values whose contents are stale, not zero: every
/// kernel writes all of its output.
fn spare(len: usize) -> Vec<f32> {
    let mut v = SPARE.with(|s| {
        let mut s = s.borrow_mut();
        let fit = s
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fit {
            Some(i) => s.swap_remove(i),
            None => Vec::new(),
        }
    });
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// Runs a kernel from `x` into a reused buffer of `shape`, then keeps `x`'s
/// buffer for a later layer.
fn with_output(
    x: Tensor,
    shape: Vec<usize>,
    kernel: impl FnOnce(&Tensor, &mut [f32]) -> Result<(), mpinfer_kernels::KernelError>,
) -> Result<Tensor, ModelError> {
    let mut y = spare(shape.iter().product());
    kernel(&x, &mut y)?;
    recycle(x.data);
    Ok(Tensor { shape, data: y })
}

/// Runs `steps` in order.
pub fn forward(steps: &[Step], cpu: &Cpu, mut x: Tensor) -> Result<Tensor, ModelError> {
    for step in steps {
        x = step.run(cpu, x)?;
    }
    Ok(x)
}

/// Drops each ReLU that the step before it can apply in its epilogue.
pub fn fuse_relu(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if matches!(step, Step::Relu) {
            if let Some(prev) = out.last_mut() {
                if prev.absorb_relu() {
                    continue;
                }
            }
        }
        out.push(step);
    }
    out
}

/// Every layer whole: what one rank runs under data parallelism.
pub fn load_all(layers: &[Layer], dtype: StoredDType) -> Result<Vec<Step>, ModelError> {
    let steps = layers
        .iter()
        .map(|l| Step::load(l, dtype))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(fuse_relu(steps))
}

/// Rounds values to what `dtype` can hold: weights stored in 16 bits carry
/// that precision, though compute widens them to f32.
pub fn round_to(t: Tensor, dtype: StoredDType) -> Tensor {
    match dtype {
        StoredDType::F32 => t,
        _ => Tensor::new(t.shape.clone(), Stored::from_f32(&t.data, dtype).to_f32()),
    }
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

/// `x[:, c, ...] += bias[c]`, then ReLU (keeping NaN) if asked.
pub fn add_channel_bias(x: &mut Tensor, bias: &[f32], relu: bool) {
    let inner: usize = x.shape[2..].iter().product();
    let c = bias.len();
    for (i, v) in x.data.iter_mut().enumerate() {
        let mut y = *v + bias[(i / inner.max(1)) % c.max(1)];
        if relu && y < 0.0 {
            y = 0.0;
        }
        *v = y;
    }
}

/// Concatenates per-rank blocks along axis 1: block `r` holds
/// `[N, counts[r], inner...]` for the same N and inner dimensions.
pub fn concat_channels(blocks: &[f32], counts: &[usize], n: usize, inner: usize) -> Vec<f32> {
    let c: usize = counts.iter().sum();
    let mut out = vec![0.0; n * c * inner];
    let mut src = 0;
    let mut c0 = 0;
    for &cr in counts {
        for s in 0..n {
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
