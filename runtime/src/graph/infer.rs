//! Output shapes of each op from its input shapes (and, for ops whose
//! output shape depends on values, the integer inputs).

use super::op::{norm_axis, resolve_pads, AutoPad, Op, Spatial};
use super::spec::Known;
use super::Ints;
use crate::model::reshape_target;
use mpinfer_kernels::cpu::{broadcast_shape, Conv2d, Pool2d};

/// One input as shape inference sees it.
pub(crate) struct Input<'a> {
    pub shape: &'a [usize],
    pub known: Option<&'a Known>,
}

type Result<T> = std::result::Result<T, String>;

fn ints<'a>(inputs: &'a [Option<Input>], i: usize, what: &str) -> Result<&'a Ints> {
    match inputs.get(i).and_then(|x| x.as_ref()).and_then(|x| x.known) {
        Some(Known::Ints(v)) => Ok(v),
        _ => Err(format!(
            "input {i} ({what}) must be known while planning (a constant, or computed from shapes)"
        )),
    }
}

fn shape<'a>(inputs: &'a [Option<Input>], i: usize) -> Result<&'a [usize]> {
    inputs
        .get(i)
        .and_then(|x| x.as_ref())
        .map(|x| x.shape)
        .ok_or_else(|| format!("input {i} is missing"))
}

/// Output shapes of `op` on `inputs`, or why they cannot be formed.
pub(crate) fn infer(op: &Op, inputs: &[Option<Input>], outputs: usize) -> Result<Vec<Vec<usize>>> {
    let x = || shape(inputs, 0);
    let one = |s: Vec<usize>| Ok(vec![s]);
    match op {
        Op::Conv {
            conv,
            spatial,
            auto_pad,
        } => {
            let (c, x4, w4) = conv_at(conv, *spatial, *auto_pad, x()?, shape(inputs, 1)?)?;
            let y = c.output_shape(&x4, &w4).map_err(|e| e.to_string())?;
            one(unview(y, *spatial))
        }
        Op::Gemm(g) => {
            let (m, _, n) = g.dims(x()?, shape(inputs, 1)?).map_err(|e| e.to_string())?;
            if let Ok(c) = shape(inputs, 2) {
                if broadcast_shape(c, &[m, n]).ok().as_deref() != Some(&[m, n][..]) {
                    return Err(format!("C of shape {c:?} does not broadcast to [{m}, {n}]"));
                }
            }
            one(vec![m, n])
        }
        Op::MatMul => one(matmul_shape(x()?, shape(inputs, 1)?)?),
        Op::Unary(_) | Op::Identity | Op::Softmax { .. } | Op::Cast { .. } | Op::Not => {
            one(x()?.to_vec())
        }
        Op::Binary(_) | Op::Compare(_) | Op::Mod { .. } => {
            let (a, b) = (x()?, shape(inputs, 1)?);
            one(broadcast_shape(a, b).map_err(|_| format!("{a:?} and {b:?} do not broadcast"))?)
        }
        Op::Where => {
            let c = x()?;
            let ab = broadcast_shape(shape(inputs, 1)?, shape(inputs, 2)?);
            let all = ab.and_then(|ab| broadcast_shape(c, &ab));
            one(all.map_err(|_| "condition, x and y do not broadcast".to_string())?)
        }
        Op::Pool {
            pool,
            spatial,
            auto_pad,
        } => {
            let (p, x4) = pool_at(pool, *spatial, *auto_pad, x()?)?;
            one(unview(
                p.output_shape(&x4).map_err(|e| e.to_string())?,
                *spatial,
            ))
        }
        Op::GlobalPool(_) => {
            let x = x()?;
            if x.len() < 3 {
                return Err(format!("input {x:?} has no spatial axes"));
            }
            one(x[..2]
                .iter()
                .copied()
                .chain(x[2..].iter().map(|_| 1))
                .collect())
        }
        Op::BatchNorm { .. } => {
            let x = x()?;
            let c = x.get(1).copied().unwrap_or(1);
            for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                if shape(inputs, i)? != [c] {
                    return Err(format!(
                        "{what} has shape {:?}, expected [{c}] (the input's channels)",
                        shape(inputs, i)?
                    ));
                }
            }
            one(x.to_vec())
        }
        Op::LayerNorm { axis, .. } => {
            let x = x()?;
            let a = norm_axis(*axis, x.len(), false)
                .ok_or_else(|| format!("axis {axis} outside input {x:?}"))?;
            for i in 1..3 {
                if let Ok(s) = shape(inputs, i) {
                    if broadcast_shape(s, &x[a..]).ok().as_deref() != Some(&x[a..]) {
                        return Err(format!("input {i} of shape {s:?} does not fit {x:?}"));
                    }
                }
            }
            one(x.to_vec())
        }
        Op::Reduce {
            axes,
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let x = x()?;
            let axes = reduce_axes(axes.as_deref(), inputs, x.len(), *noop_with_empty_axes)?;
            one(reduced_shape(x, &axes, *keepdims))
        }
        Op::Flatten { axis } => {
            let x = x()?;
            let a = norm_axis(*axis, x.len(), true)
                .ok_or_else(|| format!("axis {axis} outside input {x:?}"))?;
            one(vec![x[..a].iter().product(), x[a..].iter().product()])
        }
        Op::Reshape { allowzero } => {
            let target = &ints(inputs, 1, "shape")?.data;
            if *allowzero && target.contains(&0) {
                return Err("allowzero with a 0 in the shape is not supported".into());
            }
            one(reshape_target(x()?, target).map_err(|e| e.to_string())?)
        }
        Op::Transpose { perm } => {
            let x = x()?;
            let p = transpose_perm(perm.as_deref(), x.len())?;
            one(p.iter().map(|&a| x[a]).collect())
        }
        Op::Squeeze { axes } => one(squeeze(x()?, axes.as_deref(), inputs)?),
        Op::Unsqueeze { axes } => one(unsqueeze(x()?, axes.as_deref(), inputs)?),
        Op::Concat { axis } => one(concat_shape(inputs, *axis)?),
        Op::Split {
            axis,
            split,
            outputs,
        } => split_shapes(x()?, *axis, split.as_deref(), inputs, *outputs),
        Op::Slice => one(slice_params(x()?, inputs)?.shape),
        Op::Gather { axis } => {
            let x = x()?;
            let a = norm_axis(*axis, x.len(), false)
                .ok_or_else(|| format!("axis {axis} outside input {x:?}"))?;
            let idx = shape(inputs, 1)?;
            one(x[..a]
                .iter()
                .chain(idx)
                .chain(&x[a + 1..])
                .copied()
                .collect())
        }
        Op::Expand => {
            let to = dims_of(ints(inputs, 1, "shape")?)?;
            let x = x()?;
            one(broadcast_shape(x, &to).map_err(|_| format!("{x:?} cannot expand to {to:?}"))?)
        }
        Op::Shape { .. } | Op::ConstantOfShape { .. } | Op::Range => {
            Err("evaluated only while planning".into())
        }
    }
    .and_then(|out: Vec<Vec<usize>>| {
        if out.len() == outputs || matches!(op, Op::Split { .. }) {
            Ok(out)
        } else {
            Err(format!("{} outputs are not supported", outputs))
        }
    })
}

/// Non-negative dimensions from an integer tensor.
pub(crate) fn dims_of(t: &Ints) -> Result<Vec<usize>> {
    t.data
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} in {:?}", t.data)))
        .collect()
}

/// 1-D shapes seen as 2-D with a height of one.
fn view(s: &[usize], spatial: Spatial) -> Vec<usize> {
    match spatial {
        Spatial::Two => s.to_vec(),
        Spatial::One if s.len() == 3 => vec![s[0], s[1], 1, s[2]],
        Spatial::One => s.to_vec(),
    }
}

fn unview(s: Vec<usize>, spatial: Spatial) -> Vec<usize> {
    match spatial {
        Spatial::Two => s,
        Spatial::One => vec![s[0], s[1], s[3]],
    }
}

/// The convolution as it runs on `x`: SAME pads resolved, 1-D viewed as
/// 2-D. Returns the attributes and the 4-D input and weight shapes.
pub(crate) fn conv_at(
    conv: &Conv2d,
    spatial: Spatial,
    auto_pad: AutoPad,
    x: &[usize],
    w: &[usize],
) -> Result<(Conv2d, Vec<usize>, Vec<usize>)> {
    let rank = if spatial == Spatial::One { 3 } else { 4 };
    if x.len() != rank || w.len() != rank {
        return Err(format!(
            "input {x:?} and weight {w:?} must both have {rank} dimensions"
        ));
    }
    let (x4, w4) = (view(x, spatial), view(w, spatial));
    let mut c = *conv;
    c.pads = resolve_pads(
        auto_pad,
        conv.pads,
        [x4[2], x4[3]],
        [w4[2], w4[3]],
        conv.strides,
        conv.dilations,
    );
    Ok((c, x4, w4))
}

pub(crate) fn pool_at(
    pool: &Pool2d,
    spatial: Spatial,
    auto_pad: AutoPad,
    x: &[usize],
) -> Result<(Pool2d, Vec<usize>)> {
    let rank = if spatial == Spatial::One { 3 } else { 4 };
    if x.len() != rank {
        return Err(format!("input {x:?} must have {rank} dimensions"));
    }
    let x4 = view(x, spatial);
    let mut p = *pool;
    p.pads = resolve_pads(
        auto_pad,
        pool.pads,
        [x4[2], x4[3]],
        pool.kernel,
        pool.strides,
        pool.dilations,
    );
    Ok((p, x4))
}

pub(crate) fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("{a:?} × {b:?}: inner dimensions differ"));
    }
    let batch = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .map_err(|_| format!("{a:?} × {b:?}: batch dimensions do not broadcast"))?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

/// Axes a Reduce works on: from the attribute or input 1, normalised.
pub(crate) fn reduce_axes(
    attr: Option<&[i64]>,
    inputs: &[Option<Input>],
    rank: usize,
    noop_with_empty_axes: bool,
) -> Result<Vec<usize>> {
    let given: Vec<i64> = match attr {
        Some(a) => a.to_vec(),
        None if inputs.get(1).is_some_and(|i| i.is_some()) => ints(inputs, 1, "axes")?.data.clone(),
        None => Vec::new(),
    };
    if given.is_empty() {
        return Ok(if noop_with_empty_axes {
            Vec::new()
        } else {
            (0..rank).collect()
        });
    }
    let mut axes = given
        .iter()
        .map(|&a| norm_axis(a, rank, false).ok_or_else(|| format!("axis {a} outside rank {rank}")))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

pub(crate) fn reduced_shape(x: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

pub(crate) fn transpose_perm(perm: Option<&[i64]>, rank: usize) -> Result<Vec<usize>> {
    let p: Vec<usize> = match perm {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, rank, false).ok_or_else(|| format!("perm {p:?}")))
            .collect::<Result<_>>()?,
    };
    let mut seen = p.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {p:?} is not a permutation of {rank} axes"));
    }
    Ok(p)
}

fn axes_of(attr: Option<&[i64]>, inputs: &[Option<Input>]) -> Result<Option<Vec<i64>>> {
    Ok(match attr {
        Some(a) => Some(a.to_vec()),
        None if inputs.get(1).is_some_and(|i| i.is_some()) => {
            Some(ints(inputs, 1, "axes")?.data.clone())
        }
        None => None,
    })
}

fn squeeze(x: &[usize], attr: Option<&[i64]>, inputs: &[Option<Input>]) -> Result<Vec<usize>> {
    let Some(axes) = axes_of(attr, inputs)? else {
        return Ok(x.iter().copied().filter(|&d| d != 1).collect());
    };
    let axes = axes
        .iter()
        .map(|&a| norm_axis(a, x.len(), false).ok_or_else(|| format!("axis {a} outside {x:?}")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
        return Err(format!("axis {a} of {x:?} is not 1"));
    }
    Ok(x.iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

fn unsqueeze(x: &[usize], attr: Option<&[i64]>, inputs: &[Option<Input>]) -> Result<Vec<usize>> {
    let axes = axes_of(attr, inputs)?.ok_or("no axes")?;
    let rank = x.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, rank, false).ok_or_else(|| format!("axis {a} outside rank {rank}")))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("repeated axes {axes:?}"));
    }
    let mut rest = x.iter();
    Ok((0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                *rest.next().expect("counted")
            }
        })
        .collect())
}

fn concat_shape(inputs: &[Option<Input>], axis: i64) -> Result<Vec<usize>> {
    let first = shape(inputs, 0)?;
    let a = norm_axis(axis, first.len(), false)
        .ok_or_else(|| format!("axis {axis} outside {first:?}"))?;
    let mut out = first.to_vec();
    out[a] = 0;
    for i in 0..inputs.len() {
        let s = shape(inputs, i)?;
        if s.len() != first.len()
            || s.iter()
                .zip(first)
                .enumerate()
                .any(|(j, (x, y))| j != a && x != y)
        {
            return Err(format!("input {i} of shape {s:?} does not fit {first:?}"));
        }
        out[a] += s[a];
    }
    Ok(out)
}

/// Sizes of the parts of a Split along its axis.
pub(crate) fn split_sizes(
    x: &[usize],
    axis: usize,
    attr: Option<&[i64]>,
    inputs: &[Option<Input>],
    outputs: usize,
) -> Result<Vec<usize>> {
    let given = match attr {
        Some(s) => Some(s.to_vec()),
        None if inputs.get(1).is_some_and(|i| i.is_some()) => {
            Some(ints(inputs, 1, "split")?.data.clone())
        }
        None => None,
    };
    let d = x[axis];
    let sizes: Vec<usize> = match given {
        Some(s) => dims_of(&Ints::vector(s))?,
        None => {
            // Equal parts, the last smaller when they do not divide.
            let per = d.div_ceil(outputs.max(1));
            (0..outputs)
                .map(|i| per.min(d.saturating_sub(i * per)))
                .collect()
        }
    };
    if sizes.len() != outputs || sizes.iter().sum::<usize>() != d {
        return Err(format!(
            "split {sizes:?} does not cut axis {axis} of {x:?} into {outputs} parts"
        ));
    }
    Ok(sizes)
}

fn split_shapes(
    x: &[usize],
    axis: i64,
    attr: Option<&[i64]>,
    inputs: &[Option<Input>],
    outputs: usize,
) -> Result<Vec<Vec<usize>>> {
    let a = norm_axis(axis, x.len(), false).ok_or_else(|| format!("axis {axis} outside {x:?}"))?;
    let sizes = split_sizes(x, a, attr, inputs, outputs)?;
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut y = x.to_vec();
            y[a] = s;
            y
        })
        .collect())
}

/// A Slice with every axis's start, end and step made effective (ONNX's
/// clamping rules); `shape` is the output's.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SliceParams {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub steps: Vec<i64>,
    pub shape: Vec<usize>,
}

pub(crate) fn slice_params(x: &[usize], inputs: &[Option<Input>]) -> Result<SliceParams> {
    let starts = &ints(inputs, 1, "starts")?.data;
    let ends = &ints(inputs, 2, "ends")?.data;
    let rank = x.len();
    let axes: Vec<usize> = match inputs.get(3).and_then(|i| i.as_ref()) {
        Some(_) => ints(inputs, 3, "axes")?
            .data
            .iter()
            .map(|&a| norm_axis(a, rank, false).ok_or_else(|| format!("axis {a} outside {x:?}")))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps: Vec<i64> = match inputs.get(4).and_then(|i| i.as_ref()) {
        Some(_) => ints(inputs, 4, "steps")?.data.clone(),
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut p = SliceParams {
        starts: vec![0; rank],
        ends: x.iter().map(|&d| d as i64).collect(),
        steps: vec![1; rank],
        shape: x.to_vec(),
    };
    for (i, &a) in axes.iter().enumerate() {
        let (d, step) = (x[a] as i64, steps[i]);
        if step == 0 {
            return Err("a step of 0".into());
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (s, e) = if step > 0 {
            (fix(starts[i]).clamp(0, d), fix(ends[i]).clamp(0, d))
        } else {
            (
                fix(starts[i]).clamp(0, d - 1),
                fix(ends[i]).clamp(-1, d - 1),
            )
        };
        p.starts[a] = s;
        p.ends[a] = e;
        p.steps[a] = step;
        let len = if step > 0 {
            (e - s).max(0).div_euclid(1) as u64
        } else {
            (s - e).max(0) as u64
        };
        p.shape[a] = len.div_ceil(step.unsigned_abs()) as usize;
    }
    Ok(p)
}
