//! Steps on the CUDA kernels.

use super::{CudaBackend, DeviceInput};
use crate::exec::step::{Post, Step};
use crate::exec::{batch_norm_affine, Arg};
use crate::graph::infer::{self, Input};
use crate::graph::op::{gather_indices, norm_axis};
use crate::graph::{Known, Op};
use crate::ModelError;
use mpinfer_kernels::cpu::{self as k, Binary, PoolKind, Reduce};
use mpinfer_kernels::cuda::GpuTensor;
use mpinfer_kernels::{KernelError, Tensor};

/// Whether the CUDA kernels run `step` on these arguments: every op of
/// float values with an input on the device (its first, for ops that read
/// the others as parameters), except a Gemm of two computed operands and
/// a BatchNormalization whose statistics are computed (both rare; they run
/// on the CPU).
pub(super) fn runs_on_device(step: &Step, args: &[Arg<'_, GpuTensor>]) -> bool {
    let on_device = |a: &Arg<'_, GpuTensor>| matches!(a, Arg::Owned(_) | Arg::Ref(_));
    let any = match step {
        Step::Node(Op::Binary(_) | Op::Concat { .. } | Op::MatMul) => args.iter().any(on_device),
        Step::Node(Op::Expand) => true,
        _ => args.first().is_some_and(on_device),
    };
    if !any {
        return false;
    }
    match step {
        Step::Conv { .. }
        | Step::Linear { .. }
        | Step::Affine { .. }
        | Step::Channels(_)
        | Step::Bias { .. } => true,
        Step::Node(op) => match op {
            Op::BatchNorm { .. } => args[1..].iter().all(|a| matches!(a, Arg::Host(_))),
            Op::Gemm(_)
            | Op::Shape { .. }
            | Op::ConstantOfShape { .. }
            | Op::Range
            | Op::Compare(_)
            | Op::Not
            | Op::Where
            | Op::Mod { .. } => false,
            _ => true,
        },
        Step::Zeros(_) | Step::View { .. } => false,
    }
}

fn planning(what: String) -> ModelError {
    ModelError::Kernel(KernelError::Invalid { op: "node", what })
}

impl CudaBackend {
    /// `step` with the CUDA kernels; [`runs_on_device`] said they run it.
    pub(super) fn run_on_device(
        &self,
        step: &Step,
        mut args: Vec<Arg<'_, GpuTensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<GpuTensor>, ModelError> {
        let y = match step {
            Step::Conv {
                conv,
                one_d,
                weight,
                bias,
                post,
            } => {
                let mut y = self.conv(conv, *one_d, weight, bias.as_ref(), &mut args)?;
                self.posts(post, &mut y, &args)?;
                y
            }
            Step::Linear {
                gemm,
                weight,
                bias,
                post,
            } => {
                let mut y = self.linear(gemm, weight, bias.as_ref(), args[0].take())?;
                self.posts(post, &mut y, &args)?;
                y
            }
            Step::Affine { scale, shift } => {
                let mut x = self.owned(args[0].take())?;
                let scale = self.weight(scale, |v| Tensor::new(vec![v.len()], v.to_vec()))?;
                let shift = self.weight(shift, |v| Tensor::new(vec![v.len()], v.to_vec()))?;
                self.gpu.channel_affine(&mut x, &scale, &shift)?;
                x
            }
            Step::Channels(range) => {
                let x = self.read(&args[0])?;
                let shape = x.get().shape();
                let (mut starts, mut ends) = (vec![0; shape.len()], axis_ends(shape));
                (starts[1], ends[1]) = (range.start as i64, range.end as i64);
                self.gpu
                    .slice(x.get(), &starts, &ends, &vec![1; shape.len()])?
            }
            Step::Bias { bias, axis, post } => {
                let mut x = self.owned(args[0].take())?;
                let b = self.weight(bias, |v| Tensor::new(vec![v.len()], v.to_vec()))?;
                self.gpu.add_bias(&mut x, &b, *axis)?;
                self.posts(post, &mut x, &args)?;
                x
            }
            Step::Node(op) => return self.node(op, args, known),
            Step::Zeros(_) | Step::View { .. } => unreachable!("the executor makes these"),
        };
        Ok(vec![y])
    }

    fn conv(
        &self,
        conv: &k::Conv2d,
        one_d: bool,
        weight: &std::sync::Arc<Tensor>,
        bias: Option<&std::sync::Arc<Vec<f32>>>,
        args: &mut [Arg<'_, GpuTensor>],
    ) -> Result<GpuTensor, ModelError> {
        let w = self.weight(weight, |t| t.clone())?;
        let b = bias
            .map(|b| self.weight(b, |v| Tensor::new(vec![v.len()], v.to_vec())))
            .transpose()?;
        if !one_d {
            let x = self.read(&args[0])?;
            return Ok(self.gpu.conv2d(conv, x.get(), &w, b.as_deref())?);
        }
        // [N, C, L] seen as [N, C, 1, L], and back.
        let x = self.owned(args[0].take())?;
        let s = x.shape().to_vec();
        let x = x.reshape(vec![s[0], s[1], 1, s[2]])?;
        let y = self.gpu.conv2d(conv, &x, &w, b.as_deref())?;
        let ys = y.shape().to_vec();
        Ok(y.reshape(vec![ys[0], ys[1], ys[3]])?)
    }

    fn linear(
        &self,
        gemm: &k::Gemm,
        weight: &std::sync::Arc<Tensor>,
        bias: Option<&std::sync::Arc<Tensor>>,
        x: Arg<'_, GpuTensor>,
    ) -> Result<GpuTensor, ModelError> {
        let w = self.weight(weight, |t| t.clone())?;
        let b = bias.map(|b| self.weight(b, |t| t.clone())).transpose()?;
        let mut g = *gemm;
        g.beta = if b.is_some() { 1.0 } else { 0.0 };
        let mut x = self.owned(x)?;
        if g.trans_a {
            x = self.gpu.transpose(&x, &[1, 0])?;
            g.trans_a = false;
        }
        let mut shape = x.shape().to_vec();
        let k = *shape.last().unwrap_or(&1);
        let rows = x.len() / k.max(1);
        let y = self
            .gpu
            .gemm(&g, &x.reshape(vec![rows, k])?, &w, b.as_deref())?;
        *shape.last_mut().expect("a matrix") = y.shape()[1];
        Ok(y.reshape(shape)?)
    }

    /// The work fused after a layer, in order.
    fn posts(
        &self,
        post: &[Post],
        y: &mut GpuTensor,
        args: &[Arg<'_, GpuTensor>],
    ) -> Result<(), ModelError> {
        for p in post {
            match p {
                Post::Unary(u) => self.gpu.unary(*u, y)?,
                Post::Add(i) => {
                    self.gpu
                        .binary_in_place(Binary::Add, y, self.read(&args[*i])?.get())?
                }
            }
        }
        Ok(())
    }

    fn node(
        &self,
        op: &Op,
        mut args: Vec<Arg<'_, GpuTensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<GpuTensor>, ModelError> {
        let gpu = &self.gpu;
        let y = match op {
            Op::Unary(u) => {
                let mut y = self.owned(args[0].take())?;
                gpu.unary(*u, &mut y)?;
                y
            }
            Op::Binary(b) => self.binary(*b, args)?,
            // A Cast that reaches run time is float to float: values are f32.
            Op::Identity | Op::Cast { .. } => self.owned(args[0].take())?,
            Op::Softmax { axis, coerced } => {
                let mut y = self.owned(args[0].take())?;
                let rank = y.shape().len();
                let a = norm_axis(*axis, rank, *coerced).ok_or(ModelError::SoftmaxAxis {
                    axis: *axis,
                    shape: y.shape().to_vec(),
                })?;
                if *coerced {
                    gpu.softmax_coerced(&mut y, a)?;
                } else {
                    gpu.softmax(&mut y, a)?;
                }
                y
            }
            Op::Pool {
                pool,
                spatial,
                auto_pad,
            } => self.pool(pool, *spatial, *auto_pad, args[0].take())?,
            Op::GlobalPool(kind) => {
                let x = self.read(&args[0])?;
                let x = x.get();
                match kind {
                    PoolKind::Average if x.shape().len() == 4 => gpu.global_average_pool(x)?,
                    _ => {
                        let r = if *kind == PoolKind::Max {
                            Reduce::Max
                        } else {
                            Reduce::Mean
                        };
                        let axes: Vec<usize> = (2..x.shape().len()).collect();
                        gpu.reduce(r, x, &axes, true)?
                    }
                }
            }
            Op::LayerNorm { axis, epsilon } => self.layer_norm(*axis, *epsilon, &args)?,
            Op::MatMul => {
                let (a, b) = (self.read(&args[0])?, self.read(&args[1])?);
                let mut y = gpu.batched_matmul(a.get(), b.get())?;
                if let Some(c) = args.get(2).filter(|c| !matches!(c, Arg::Absent)) {
                    gpu.binary_in_place(Binary::Add, &mut y, self.read(c)?.get())?;
                }
                y
            }
            Op::BatchNorm { epsilon } => {
                let p = |i: usize| match &args[i] {
                    Arg::Host(t) => &t.data,
                    _ => unreachable!("runs_on_device asked for host statistics"),
                };
                let (scale, shift) = batch_norm_affine(p(1), p(2), p(3), p(4), *epsilon);
                let up = |v: Vec<f32>| gpu.upload(&Tensor::new(vec![v.len()], v), super::ON_DEVICE);
                let (scale, shift) = (up(scale)?, up(shift)?);
                let mut x = self.owned(args[0].take())?;
                gpu.channel_affine(&mut x, &scale, &shift)?;
                x
            }
            _ => return self.shaped(op, args, known),
        };
        Ok(vec![y])
    }

    /// In place into the first operand when it is this step's to reuse and
    /// already has the output's shape.
    fn binary(
        &self,
        op: Binary,
        mut args: Vec<Arg<'_, GpuTensor>>,
    ) -> Result<GpuTensor, ModelError> {
        let in_place = match (&args[0], &args[1]) {
            (Arg::Owned(a), b) => {
                let b = shape_input(b, None).expect("a present operand").shape;
                k::broadcast_shape(a.shape(), b)? == a.shape()
            }
            _ => false,
        };
        if in_place {
            let mut a = self.owned(args[0].take())?;
            self.gpu
                .binary_in_place(op, &mut a, self.read(&args[1])?.get())?;
            return Ok(a);
        }
        let (a, b) = (self.read(&args[0])?, self.read(&args[1])?);
        Ok(self.gpu.binary(op, a.get(), b.get())?)
    }

    fn pool(
        &self,
        pool: &k::Pool2d,
        spatial: crate::graph::op::Spatial,
        auto_pad: crate::graph::op::AutoPad,
        x: Arg<'_, GpuTensor>,
    ) -> Result<GpuTensor, ModelError> {
        let x = self.owned(x)?;
        let shape = x.shape().to_vec();
        let (p, x4) = infer::pool_at(pool, spatial, auto_pad, &shape).map_err(planning)?;
        let y = self.gpu.pool2d(&p, &x.reshape(x4)?)?;
        if shape.len() == 3 {
            let ys = y.shape().to_vec();
            return Ok(y.reshape(vec![ys[0], ys[1], ys[3]])?);
        }
        Ok(y)
    }

    /// Scale and bias broadcast to the normalised block, as the CPU does.
    fn layer_norm(
        &self,
        axis: i64,
        epsilon: f32,
        args: &[Arg<'_, GpuTensor>],
    ) -> Result<GpuTensor, ModelError> {
        let x = self.read(&args[0])?;
        let x = x.get();
        let rank = x.shape().len();
        let a = norm_axis(axis, rank, false)
            .ok_or_else(|| planning(format!("axis {axis} outside rank {rank}")))?;
        let block = &x.shape()[a..];
        let full = |i: usize| -> Result<Option<GpuTensor>, ModelError> {
            Ok(match args.get(i) {
                None | Some(Arg::Absent) => None,
                Some(Arg::Host(t)) => {
                    Some(self.gpu.upload(&k::expand(t, block)?, super::ON_DEVICE)?)
                }
                Some(Arg::Owned(t)) => Some(self.gpu.expand(t, block)?),
                Some(Arg::Ref(t)) => Some(self.gpu.expand(t, block)?),
            })
        };
        let (scale, bias) = (full(1)?, full(2)?);
        Ok(self
            .gpu
            .layer_norm(x, a, scale.as_ref(), bias.as_ref(), epsilon)?)
    }

    /// Ops whose output depends on integer inputs known while planning.
    fn shaped(
        &self,
        op: &Op,
        mut args: Vec<Arg<'_, GpuTensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<GpuTensor>, ModelError> {
        let gpu = &self.gpu;
        let inputs: Vec<Option<Input>> = args
            .iter()
            .zip(known)
            .map(|(a, k)| shape_input(a, *k))
            .collect();
        let x_shape = inputs[0]
            .as_ref()
            .map(|i| i.shape.to_vec())
            .ok_or_else(|| planning(format!("{op:?} of nothing")))?;
        let axis_of = |axis: i64| {
            norm_axis(axis, x_shape.len(), false)
                .ok_or_else(|| planning(format!("axis {axis} outside rank {}", x_shape.len())))
        };
        let y = match op {
            Op::Transpose { perm } => {
                let p = infer::transpose_perm(perm.as_deref(), x_shape.len()).map_err(planning)?;
                gpu.transpose(self.read(&args[0])?.get(), &p)?
            }
            Op::Reduce {
                op: r,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let axes = infer::reduce_axes(
                    axes.as_deref(),
                    &inputs,
                    x_shape.len(),
                    *noop_with_empty_axes,
                )
                .map_err(planning)?;
                if axes.is_empty() {
                    self.owned(args[0].take())?
                } else {
                    gpu.reduce(*r, self.read(&args[0])?.get(), &axes, *keepdims)?
                }
            }
            Op::Concat { axis } => {
                let parts = args
                    .iter()
                    .map(|a| self.read(a))
                    .collect::<Result<Vec<DeviceInput>, ModelError>>()?;
                let parts: Vec<&GpuTensor> = parts.iter().map(|p| p.get()).collect();
                gpu.concat(&parts, axis_of(*axis)?)?
            }
            Op::Split {
                axis,
                split,
                outputs,
            } => {
                let a = axis_of(*axis)?;
                let sizes = infer::split_sizes(&x_shape, a, split.as_deref(), &inputs, *outputs)
                    .map_err(planning)?;
                return Ok(gpu.split(self.read(&args[0])?.get(), a, &sizes)?);
            }
            Op::Slice => {
                let p = infer::slice_params(&x_shape, &inputs).map_err(planning)?;
                gpu.slice(self.read(&args[0])?.get(), &p.starts, &p.ends, &p.steps)?
            }
            Op::Gather { axis } => {
                let a = axis_of(*axis)?;
                let Some(Known::Ints(idx)) = known.get(1).copied().flatten() else {
                    return Err(planning(
                        "Gather indices must be known while planning".into(),
                    ));
                };
                let picks = gather_indices(&idx.data, x_shape[a]).map_err(planning)?;
                gpu.gather(self.read(&args[0])?.get(), a, &picks, &idx.shape)?
            }
            Op::Expand => {
                let to = infer::infer(op, &inputs, 1).map_err(planning)?.remove(0);
                let x = match (&args[0], known.first().copied().flatten()) {
                    (Arg::Absent, Some(Known::Float(t))) => {
                        DeviceInput::Uploaded(gpu.upload(t, super::ON_DEVICE)?)
                    }
                    (a, _) => self.read(a)?,
                };
                gpu.expand(x.get(), &to)?
            }
            // The reshapes: the shape worked out as the CPU works it out.
            _ => {
                let to = infer::infer(op, &inputs, 1).map_err(planning)?.remove(0);
                self.owned(args[0].take())?.reshape(to)?
            }
        };
        Ok(vec![y])
    }
}

/// The end of every axis: a slice that takes all of it.
fn axis_ends(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn shape_input<'a>(a: &'a Arg<'_, GpuTensor>, k: Option<&'a Known>) -> Option<Input<'a>> {
    let shape = match (a, k) {
        (Arg::Owned(t), _) => t.shape(),
        (Arg::Ref(t), _) => t.shape(),
        (Arg::Host(t), _) => &t.shape,
        (Arg::Absent, Some(Known::Ints(t))) => &t.shape,
        (Arg::Absent, Some(Known::Float(t))) => &t.shape,
        (Arg::Absent, None) => return None,
    };
    let known = match a {
        Arg::Owned(_) | Arg::Ref(_) => None,
        _ => k,
    };
    Some(Input { shape, known })
}
