//! Walking several strided operands over one index space, for the kernels
//! that move or combine data along arbitrary axes (broadcasting, transpose,
//! slice, reduce). Callers collapse the index space first, so the walk costs
//! one odometer step per contiguous run rather than per element.

use crate::error::KernelError;
use crate::tensor::Tensor;

/// Row-major strides of a contiguous tensor of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut step = 1isize;
    for (s, d) in strides.iter_mut().zip(shape).rev() {
        *s = step;
        step *= *d as isize;
    }
    strides
}

/// Strides that read `shape` (right-aligned against `out_rank` axes) as if
/// broadcast: 0 along axes where `shape` has 1 or is missing.
pub(crate) fn broadcast_strides(shape: &[usize], out_rank: usize) -> Vec<isize> {
    let own = contiguous_strides(shape);
    let mut strides = vec![0isize; out_rank];
    let pad = out_rank - shape.len();
    for (i, (d, s)) in shape.iter().zip(own).enumerate() {
        if *d != 1 {
            strides[pad + i] = s;
        }
    }
    strides
}

/// `dims` with the axes of extent 1 dropped and each axis merged into the
/// one before it wherever every operand steps across the pair as one run
/// (`stride[i - 1] == stride[i] * dims[i]`). The walk over the result
/// visits the same offsets in the same order, with fewer, longer runs.
pub(crate) fn collapse<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
) -> (Vec<usize>, [Vec<isize>; N]) {
    let mut out_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut out_strides: [Vec<isize>; N] = std::array::from_fn(|_| Vec::new());
    for (ax, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let merges = out_dims.last().is_some_and(|_| {
            (0..N).all(|k| *out_strides[k].last().unwrap() == strides[k][ax] * d as isize)
        });
        if merges {
            *out_dims.last_mut().unwrap() *= d;
            for k in 0..N {
                *out_strides[k].last_mut().unwrap() = strides[k][ax];
            }
        } else {
            out_dims.push(d);
            for k in 0..N {
                out_strides[k].push(strides[k][ax]);
            }
        }
    }
    (out_dims, out_strides)
}

/// Calls `visit(offsets)` for every multi-index over `dims` in row-major
/// order, `offsets[k]` being `base[k] + Σ index[i] · strides[k][i]`. With no
/// axes it visits once; with an empty axis, never.
pub(crate) fn for_each_offset<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
    base: [isize; N],
    mut visit: impl FnMut([usize; N]),
) {
    if dims.contains(&0) {
        return;
    }
    let mut index = vec![0usize; dims.len()];
    let mut offsets = base;
    loop {
        visit(offsets.map(|o| o as usize));
        let mut ax = dims.len();
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            index[ax] += 1;
            if index[ax] < dims[ax] {
                for k in 0..N {
                    offsets[k] += strides[k][ax];
                }
                break;
            }
            for k in 0..N {
                offsets[k] -= strides[k][ax] * (dims[ax] as isize - 1);
            }
            index[ax] = 0;
        }
    }
}

/// Splits collapsed `dims` into the outer axes an odometer walks and the
/// innermost run: `(outer dims, run length)`. No axes is one run of one.
pub(crate) fn split_run(dims: &[usize]) -> (&[usize], usize) {
    match dims.split_last() {
        Some((&run, outer)) => (outer, run),
        None => (&[], 1),
    }
}

/// A tensor whose `data` does not hold `shape`'s element count is refused
/// here, so the kernels after it can index without checks failing.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    t: &Tensor,
) -> Result<(), KernelError> {
    let want: usize = t.shape.iter().product();
    if t.data.len() == want {
        Ok(())
    } else {
        Err(KernelError::Invalid {
            op,
            what: format!(
                "{what} has shape {:?} ({want} values) but holds {}",
                t.shape,
                t.data.len()
            ),
        })
    }
}
