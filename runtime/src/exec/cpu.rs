//! The CPU backend: each [`Step`] on the CPU kernels.

use super::pool::{recycle, spare};
use super::step::{Post, Step};
use super::{Arg, Backend};
use crate::graph::infer::{self, Input};
use crate::graph::op::{gather_indices, norm_axis};
use crate::graph::{Known, Op};
use crate::ModelError;
use mpinfer_kernels::cpu::{self as k, Cpu, Reduce};
use mpinfer_kernels::{KernelError, Tensor};

impl Backend for Cpu {
    type Value = Tensor;

    fn upload(&self, t: Tensor) -> Result<Tensor, ModelError> {
        Ok(t)
    }

    fn download(&self, v: Tensor) -> Result<Tensor, ModelError> {
        Ok(v)
    }

    fn shape<'v>(&self, v: &'v Tensor) -> &'v [usize] {
        &v.shape
    }

    fn reshape(&self, v: Tensor, shape: Vec<usize>) -> Result<Tensor, ModelError> {
        Ok(v.reshape(shape))
    }

    fn zeros(&self, shape: Vec<usize>) -> Result<Tensor, ModelError> {
        Ok(Tensor::zeros(shape))
    }

    fn release(&self, v: Tensor) {
        recycle(v.data);
    }

    fn duplicate(&self, v: &Tensor) -> Result<Tensor, ModelError> {
        Ok(v.clone())
    }

    fn run(
        &self,
        step: &Step,
        args: Vec<Arg<Tensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<Tensor>, ModelError> {
        match step {
            Step::Conv {
                conv,
                one_d,
                weight,
                bias,
                post,
            } => {
                let mut args = args;
                let bias = bias.as_deref().map(|b| b.as_slice());
                let mut x = args[0].take().into_owned();
                if *one_d {
                    x.shape = view_2d(&x.shape);
                }
                let y_shape = conv.output_shape(&x.shape, &weight.shape)?;
                let shape = if *one_d {
                    vec![y_shape[0], y_shape[1], y_shape[3]]
                } else {
                    y_shape
                };
                let (residual, acts) = epilogue(post, &args, &shape);
                let rest = &post[usize::from(residual.is_some()) + acts.len()..];
                let epilogue = k::Epilogue {
                    residual,
                    acts: &acts,
                };
                let mut y = spare(shape.iter().product());
                conv.run_into_with(self, &x, weight, bias, epilogue, &mut y)?;
                recycle(x.data);
                let mut y = Tensor { shape, data: y };
                apply_post(rest, &mut y, &args)?;
                Ok(vec![y])
            }
            Step::Linear {
                gemm,
                weight,
                bias,
                post,
            } => {
                let mut args = args;
                let x = args[0].take().into_owned();
                let mut y = linear(self, gemm, x, weight, bias.as_deref())?;
                apply_post(post, &mut y, &args)?;
                Ok(vec![y])
            }
            Step::Affine { scale, shift } => {
                let mut args = args;
                let mut x = args[0].take().into_owned();
                k::channel_affine(&mut x, scale, shift)?;
                Ok(vec![x])
            }
            Step::Channels(range) => Ok(vec![crate::exec::slice_channels(
                args[0].tensor(),
                range.clone(),
            )]),
            Step::Bias { bias, axis, post } => {
                let mut args = args;
                let mut x = args[0].take().into_owned();
                add_bias(&mut x, bias, *axis);
                apply_post(post, &mut x, &args)?;
                Ok(vec![x])
            }
            Step::Zeros(_) | Step::View { .. } => {
                unreachable!("the executor makes zeros and views")
            }
            Step::Node(op) => node(self, op, args, known),
        }
    }
}

/// `[N, C, L]` as `[N, C, 1, L]`.
fn view_2d(s: &[usize]) -> Vec<usize> {
    vec![s[0], s[1], 1, s[2]]
}

/// A constant right operand on the last axis of `x`, of any rank: the rows
/// of every leading axis together are one GEMM.
fn linear(
    cpu: &Cpu,
    gemm: &k::Gemm,
    mut x: Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor, ModelError> {
    let mut shape = x.shape.clone();
    let kdim = *shape.last().ok_or_else(|| KernelError::Invalid {
        op: "MatMul",
        what: "a scalar input".into(),
    })?;
    if !gemm.trans_a {
        x.shape = vec![x.len() / kdim.max(1), kdim];
    }
    let (m, _, n) = gemm.dims(&x.shape, &w.shape)?;
    let mut y = spare(m * n);
    gemm.run_into(cpu, &x, w, bias, &mut y)?;
    recycle(x.data);
    if gemm.trans_a {
        shape = vec![m, n];
    } else {
        *shape.last_mut().expect("checked") = n;
    }
    Ok(Tensor { shape, data: y })
}

/// `x[.., c, ..] += bias[c]` along `axis`.
fn add_bias(x: &mut Tensor, bias: &[f32], axis: usize) {
    let inner: usize = x.shape[axis + 1..].iter().product();
    let c = bias.len().max(1);
    for (i, run) in x.data.chunks_mut(inner.max(1)).enumerate() {
        let b = bias[i % c];
        run.iter_mut().for_each(|v| *v += b);
    }
}

/// The leading part of `post` a kernel epilogue takes, in the order
/// [`k::Epilogue`] applies it, for an output shaped `shape`: a residual Add
/// of that very shape (a broadcast one stays in [`apply_post`]), then the
/// activations up to the next Add.
fn epilogue<'a>(
    post: &[Post],
    args: &'a [Arg<'_, Tensor>],
    shape: &[usize],
) -> (Option<&'a [f32]>, Vec<k::Unary>) {
    let residual = match post.first() {
        Some(Post::Add(i)) => args[*i]
            .get()
            .filter(|r| r.shape == shape)
            .map(|r| &r.data[..]),
        _ => None,
    };
    let acts = post[usize::from(residual.is_some())..]
        .iter()
        .map_while(|p| match p {
            Post::Unary(u) => Some(*u),
            Post::Add(_) => None,
        })
        .collect();
    (residual, acts)
}

fn apply_post(post: &[Post], y: &mut Tensor, args: &[Arg<Tensor>]) -> Result<(), ModelError> {
    for p in post {
        match p {
            Post::Unary(u) => k::unary(*u, &mut y.data),
            Post::Add(i) => k::binary_in_place(k::Binary::Add, y, args[*i].tensor())?,
        }
    }
    Ok(())
}

fn inputs<'a>(
    args: &'a [Arg<'_, Tensor>],
    known: &'a [Option<&'a Known>],
) -> Vec<Option<Input<'a>>> {
    args.iter()
        .zip(known)
        .map(|(a, kn)| match (a.get(), kn) {
            (Some(t), _) => Some(Input {
                shape: &t.shape,
                known: None,
            }),
            (None, Some(kn)) => Some(Input {
                shape: match kn {
                    Known::Ints(t) => &t.shape,
                    Known::Float(t) => &t.shape,
                },
                known: Some(*kn),
            }),
            (None, None) => None,
        })
        .collect()
}

fn planning(e: String) -> ModelError {
    ModelError::Kernel(KernelError::Invalid {
        op: "node",
        what: e,
    })
}

/// A node on its inputs as they are.
fn node(
    cpu: &Cpu,
    op: &Op,
    mut args: Vec<Arg<Tensor>>,
    known: &[Option<&Known>],
) -> Result<Vec<Tensor>, ModelError> {
    let one = |t: Tensor| Ok(vec![t]);
    let axis_of = |axis: i64, rank: usize| {
        norm_axis(axis, rank, false)
            .ok_or_else(|| planning(format!("axis {axis} outside rank {rank}")))
    };
    match op {
        Op::Unary(u) => {
            let mut x = args[0].take().into_owned();
            k::unary(*u, &mut x.data);
            one(x)
        }
        Op::Binary(b) => {
            let same = args[0].get().map(|t| &t.shape) == Some(&broadcast(&args)?);
            if same && args[0].owned() {
                let mut a = args[0].take().into_owned();
                k::binary_in_place(*b, &mut a, args[1].tensor())?;
                one(a)
            } else {
                one(k::binary(*b, args[0].tensor(), args[1].tensor())?)
            }
        }
        // A Cast that reaches run time is float to float: values are f32.
        Op::Identity | Op::Cast { .. } => one(args[0].take().into_owned()),
        Op::Softmax { axis, coerced } => {
            let mut x = args[0].take().into_owned();
            let rank = x.shape.len();
            let a = norm_axis(*axis, rank, *coerced).ok_or(ModelError::SoftmaxAxis {
                axis: *axis,
                shape: x.shape.clone(),
            })?;
            if *coerced {
                k::softmax_coerced(&mut x, a)?
            } else {
                k::softmax(&mut x, a)?
            }
            one(x)
        }
        Op::Pool {
            pool,
            spatial,
            auto_pad,
        } => {
            let mut x = args[0].take().into_owned();
            let (p, x4) = infer::pool_at(pool, *spatial, *auto_pad, &x.shape).map_err(planning)?;
            let one_d = x.shape.len() == 3;
            x.shape = x4;
            let ys = p.output_shape(&x.shape)?;
            let mut y = spare(ys.iter().product());
            p.run_into(cpu, &x, &mut y)?;
            recycle(x.data);
            let shape = if one_d { vec![ys[0], ys[1], ys[3]] } else { ys };
            one(Tensor { shape, data: y })
        }
        Op::GlobalPool(kind) => {
            let x = args[0].tensor();
            let axes: Vec<usize> = (2..x.shape.len()).collect();
            let r = if *kind == k::PoolKind::Max {
                Reduce::Max
            } else {
                Reduce::Mean
            };
            one(k::reduce(r, x, &axes, true)?)
        }
        Op::LayerNorm { axis, epsilon } => {
            let x = args[0].tensor();
            let a = axis_of(*axis, x.shape.len())?;
            let block: usize = x.shape[a..].iter().product();
            let full = |t: Option<&Tensor>| {
                t.map(|t| k::expand(t, &x.shape[a..]).map(|e| e.data))
                    .transpose()
            };
            let scale = full(args.get(1).and_then(|a| a.get()))?;
            let bias = full(args.get(2).and_then(|a| a.get()))?;
            debug_assert!(scale.as_ref().is_none_or(|s| s.len() == block));
            one(k::layer_norm(
                x,
                a,
                scale.as_deref(),
                bias.as_deref(),
                *epsilon,
            )?)
        }
        Op::MatMul => {
            let mut y = k::batched_matmul(cpu, args[0].tensor(), args[1].tensor())?;
            if let Some(b) = args.get(2).and_then(|a| a.get()) {
                k::binary_in_place(k::Binary::Add, &mut y, b)?;
            }
            one(y)
        }
        Op::Gemm(g) => {
            let c = args.get(2).and_then(|a| a.get());
            one(g.run(cpu, args[0].tensor(), args[1].tensor(), c)?)
        }
        Op::BatchNorm { epsilon } => {
            let p = |i: usize| &args[i].tensor().data;
            let (scale, shift) = super::batch_norm_affine(p(1), p(2), p(3), p(4), *epsilon);
            let mut x = args[0].take().into_owned();
            k::channel_affine(&mut x, &scale, &shift)?;
            one(x)
        }
        _ => shaped(op, args, known),
    }
}

fn broadcast(args: &[Arg<Tensor>]) -> Result<Vec<usize>, ModelError> {
    Ok(k::broadcast_shape(
        &args[0].tensor().shape,
        &args[1].tensor().shape,
    )?)
}

/// Ops whose output depends on integer inputs known while planning.
fn shaped(
    op: &Op,
    mut args: Vec<Arg<Tensor>>,
    known: &[Option<&Known>],
) -> Result<Vec<Tensor>, ModelError> {
    let shape_of = |args: &[Arg<Tensor>]| -> Result<Vec<Vec<usize>>, ModelError> {
        infer::infer(op, &inputs(args, known), 1).map_err(planning)
    };
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            let to = shape_of(&args)?.remove(0);
            one(args[0].take().into_owned().reshape(to))
        }
        Op::Transpose { perm } => {
            let x = args[0].tensor();
            let p = infer::transpose_perm(perm.as_deref(), x.shape.len()).map_err(planning)?;
            one(k::transpose(x, &p)?)
        }
        Op::Reduce {
            op: r,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = args[0].tensor();
            let ins = inputs(&args, known);
            let axes =
                infer::reduce_axes(axes.as_deref(), &ins, x.shape.len(), *noop_with_empty_axes)
                    .map_err(planning)?;
            if axes.is_empty() {
                return one(x.clone());
            }
            one(k::reduce(*r, x, &axes, *keepdims)?)
        }
        Op::Concat { axis } => {
            let ts: Vec<&Tensor> = args.iter().map(|a| a.tensor()).collect();
            let a = norm_axis(*axis, ts[0].shape.len(), false)
                .ok_or_else(|| planning("axis".into()))?;
            one(k::concat(&ts, a)?)
        }
        Op::Split {
            axis,
            split,
            outputs,
        } => {
            let x = args[0].tensor();
            let a =
                norm_axis(*axis, x.shape.len(), false).ok_or_else(|| planning("axis".into()))?;
            let sizes = infer::split_sizes(
                &x.shape,
                a,
                split.as_deref(),
                &inputs(&args, known),
                *outputs,
            )
            .map_err(planning)?;
            Ok(k::split(x, a, &sizes)?)
        }
        Op::Slice => {
            let x = args[0].tensor();
            let p = infer::slice_params(&x.shape, &inputs(&args, known)).map_err(planning)?;
            one(k::slice(x, &p.starts, &p.ends, &p.steps)?)
        }
        Op::Gather { axis } => {
            let x = args[0].tensor();
            let a =
                norm_axis(*axis, x.shape.len(), false).ok_or_else(|| planning("axis".into()))?;
            let Some(Known::Ints(idx)) = known.get(1).copied().flatten() else {
                return Err(planning(
                    "Gather indices must be known while planning".into(),
                ));
            };
            let picks = gather_indices(&idx.data, x.shape[a]).map_err(planning)?;
            one(k::gather(x, a, &picks, &idx.shape)?)
        }
        Op::Expand => {
            let to = shape_of(&args)?.remove(0);
            let x = args[0]
                .get()
                .cloned()
                .or_else(|| match known.first().copied().flatten() {
                    Some(Known::Float(t)) => Some((**t).clone()),
                    _ => None,
                })
                .ok_or_else(|| planning("Expand of nothing".into()))?;
            one(k::expand(&x, &to)?)
        }
        // Integer work is done while planning; what reaches here has no
        // float kernel.
        other => Err(planning(format!(
            "{other:?} on float values at run time is not supported"
        ))),
    }
}
