//! Where each value keeps the batch, and proof that no node mixes samples.
//!
//! mpinfer splits the input's rows (axis 0) among ranks, so every sample must
//! be computed apart from the others. Inside a model the batch may move: an
//! attention block transposes `[N, S, D]` to `[S, N, D]` and folds the heads
//! into it, `[S, N·H, d]`. Comparing the shapes at two batch sizes finds, for
//! each value, the one axis that grows with the batch and by how much (its
//! `inner` factor); each node is then checked not to reduce, normalise,
//! contract, slice or reorder across that axis. What passes computes each
//! sample from its own rows only, whatever the batch size.

use super::infer::slice_params;
use super::op::{gather_indices, norm_axis};
use super::spec::inputs_of;
use super::{Elem, Known, Model, Node, Op, Spec, ValueId};
use crate::ModelError;

/// The axis of a value that holds the batch. Its length is
/// `outer · N · inner`: the index along it is (o, n, i), so samples are
/// `inner` steps apart and every run of `N · inner` holds each sample once.
/// An attention block's `[S·N, D]` has the batch on axis 0 with outer S.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchAxis {
    pub axis: usize,
    pub inner: usize,
}

/// Batch sizes compared: neither is 1, so no axis of length 1 can be taken
/// for the batch.
const SIZES: [usize; 2] = [2, 3];

impl Model {
    /// Refuses a node that mixes samples, naming it. Also works the model
    /// out at batch 1, where planning starts.
    pub fn check_batch_axis(&self) -> Result<(), ModelError> {
        self.spec(1)?;
        let specs = [self.spec(SIZES[0])?, self.spec(SIZES[1])?];
        let grows = growing_axes(self, &specs)?;
        let mut axes = vec![None; self.values.len()];
        axes[self.input] = Some(BatchAxis { axis: 0, inner: 1 });
        for node in &self.nodes {
            if node.outputs.iter().all(|&v| grows[v].is_none()) {
                continue;
            }
            let found = mixes(node, &specs, &axes, &grows).and_then(|()| {
                node.outputs
                    .iter()
                    .map(|&v| Ok((v, out_axis(node, &specs, &axes, grows[v])?)))
                    .collect::<Result<Vec<_>, String>>()
            });
            let found = found.map_err(|why| {
                let shape = |v: &ValueId| format!("{:?}", specs[0].shape(*v));
                let ins: Vec<String> = node.inputs.iter().flatten().map(shape).collect();
                let outs: Vec<String> = node.outputs.iter().map(shape).collect();
                node.error(format!(
                    "mixes the samples of a batch: {why} (at batch {}: inputs {}, outputs {}); \
                     mpinfer splits the batch among ranks and needs each sample computed on \
                     its own",
                    SIZES[0],
                    ins.join(", "),
                    outs.join(", ")
                ))
            })?;
            for (v, a) in found {
                axes[v] = a;
            }
        }
        for &v in &self.outputs {
            let whole_rows = specs[0].shape(v).first() == Some(&SIZES[0]);
            if axes[v] != Some(BatchAxis { axis: 0, inner: 1 }) || !whole_rows {
                return Err(ModelError::Graph {
                    path: self.path.clone(),
                    message: format!(
                        "output {} does not have the batch on axis 0 (shapes {:?} and {:?} at \
                         batch {} and {})",
                        self.values[v].name,
                        specs[0].shape(v),
                        specs[1].shape(v),
                        SIZES[0],
                        SIZES[1]
                    ),
                });
            }
        }
        Ok(())
    }
}

/// For every batched float value, the one axis that grows with the batch
/// and its length per sample (`outer · inner`).
fn growing_axes(
    model: &Model,
    specs: &[Spec; 2],
) -> Result<Vec<Option<(usize, usize)>>, ModelError> {
    let mut axes = vec![None; model.values.len()];
    let batched = |v: ValueId| specs[0].batched[v] && specs[0].known(v).is_none();
    for (v, value) in model.values.iter().enumerate() {
        if !batched(v) || value.elem != Elem::Float {
            continue;
        }
        let (a, b) = (specs[0].shape(v), specs[1].shape(v));
        let grows: Vec<usize> = (0..a.len().min(b.len()))
            .filter(|&i| a[i] != b[i])
            .collect();
        let found = match grows[..] {
            [i] if a.len() == b.len()
                && a[i] % SIZES[0] == 0
                && a[i] / SIZES[0] * SIZES[1] == b[i] =>
            {
                Some((i, a[i] / SIZES[0]))
            }
            _ => None,
        };
        if found.is_none() {
            let node = model.nodes.iter().find(|n| n.outputs.contains(&v));
            let message = format!(
                "output {} is {a:?} at batch {} and {b:?} at batch {}: no one axis holds the \
                 batch; mpinfer splits the batch among ranks and needs it on one axis",
                value.name, SIZES[0], SIZES[1]
            );
            return Err(match node {
                Some(n) => n.error(message),
                None => ModelError::Graph {
                    path: model.path.clone(),
                    message,
                },
            });
        }
        axes[v] = found;
    }
    Ok(axes)
}

/// Where an output of `node` holds the batch, given where its inputs do and
/// the axis that grows with the batch (`grows`: axis, length per sample).
fn out_axis(
    node: &Node,
    specs: &[Spec; 2],
    axes: &[Option<BatchAxis>],
    grows: Option<(usize, usize)>,
) -> Result<Option<BatchAxis>, String> {
    let Some((axis, per_sample)) = grows else {
        return Ok(None);
    };
    let x = node.input(0);
    let xa = x.and_then(|v| axes[v]);
    let inner = match (&node.op, xa) {
        (Op::Transpose { .. }, Some(a)) => a.inner,
        // Gathered along the batch axis, each sample's entries kept together
        // (checked by `gather`): they lie sample after sample.
        (Op::Gather { axis: g }, Some(a))
            if norm_axis(*g, specs[0].shape(x.expect("checked")).len(), false) == Some(a.axis) =>
        {
            per_sample
        }
        (
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. },
            Some(a),
        ) => {
            // The values keep their order, so samples stay as far apart in
            // memory as they were.
            let xs = specs[0].shape(x.expect("checked"));
            let step = a.inner * xs[a.axis + 1..].iter().product::<usize>();
            let y = specs[0].shape(node.outputs[0]);
            let below: usize = y[axis + 1..].iter().product();
            if below == 0 || step % below != 0 || per_sample % (step / below) != 0 {
                return Err("it reshapes across the batch axis".into());
            }
            step / below
        }
        _ => node
            .inputs
            .iter()
            .flatten()
            .filter_map(|&v| axes[v])
            .find(|a| a.axis == axis)
            .map_or(per_sample, |a| a.inner),
    };
    Ok(Some(BatchAxis { axis, inner }))
}

/// Why `node` mixes samples, if it does.
fn mixes(
    node: &Node,
    specs: &[Spec; 2],
    axes: &[Option<BatchAxis>],
    grows: &[Option<(usize, usize)>],
) -> Result<(), String> {
    let x = node.input(0);
    let xa = x.and_then(|v| axes[v]);
    let ya = grows[node.outputs[0]];
    let spec = &specs[0];
    let rank = |v: ValueId| spec.shape(v).len();
    let plain = |b: Option<BatchAxis>| b.is_none_or(|b| b == BatchAxis { axis: 0, inner: 1 });
    match &node.op {
        // Kernels that take the batch as their leading axis.
        Op::Conv { .. } | Op::Pool { .. } | Op::GlobalPool(_) | Op::BatchNorm { .. } => {
            check(plain(xa), "its input keeps the batch off axis 0")
        }
        Op::Gemm(g) => check(
            plain(xa)
                && !(g.trans_a && xa.is_some())
                && node.input(1).is_none_or(|b| axes[b].is_none()),
            "the batch is not the rows of A",
        ),
        Op::MatMul => {
            let a = node.input(0).and_then(|v| axes[v]);
            let b = node.input(1).and_then(|v| axes[v]);
            let ra = x.map_or(0, rank);
            let rb = node.input(1).map_or(0, rank);
            let contracted =
                a.is_some_and(|a| a.axis + 1 == ra) || b.is_some_and(|b| b.axis + 2 == rb);
            check(!contracted, "it contracts over the batch axis")
        }
        Op::Softmax { axis, coerced } => {
            let r = x.map_or(0, rank);
            let a = norm_axis(*axis, r, *coerced).unwrap_or(0);
            let hit = xa.is_some_and(|b| if *coerced { b.axis >= a } else { b.axis == a });
            check(!hit, "it normalises across the batch axis")
        }
        Op::LayerNorm { axis, .. } => {
            let a = norm_axis(*axis, x.map_or(0, rank), false).unwrap_or(0);
            check(
                xa.is_none_or(|b| b.axis < a),
                "it normalises across the batch axis",
            )
        }
        Op::Reduce { .. } => check(
            xa.is_none() || ya.is_some(),
            "it reduces over the batch axis",
        ),
        Op::Concat { axis } | Op::Split { axis, .. } => {
            let a = norm_axis(*axis, x.map_or(0, rank), false).unwrap_or(0);
            let any = node
                .inputs
                .iter()
                .flatten()
                .any(|&v| axes[v].is_some_and(|b| b.axis == a));
            check(!any, "it joins or cuts along the batch axis")
        }
        Op::Slice => {
            let xs = spec.shape(x.expect("Slice has data"));
            let ins = inputs_of(node, spec);
            let p = slice_params(xs, &ins)?;
            let whole = xa.is_none_or(|b| {
                p.starts[b.axis] == 0 && p.steps[b.axis] == 1 && p.shape[b.axis] == xs[b.axis]
            });
            check(whole, "it slices along the batch axis")
        }
        Op::Gather { axis } => gather(node, specs, axes, grows, *axis),
        _ => Ok(()),
    }
}

fn check(ok: bool, why: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why.to_string())
    }
}

/// A Gather along the batch axis keeps samples apart when each output
/// sample takes only its own sample's entries, at both batch sizes (as the
/// exporters write a strided view: flatten, then gather every element).
fn gather(
    node: &Node,
    specs: &[Spec; 2],
    axes: &[Option<BatchAxis>],
    grows: &[Option<(usize, usize)>],
    axis: i64,
) -> Result<(), String> {
    let x = node.input(0).expect("Gather has data");
    let Some(b) = axes[x] else { return Ok(()) };
    if norm_axis(axis, specs[0].shape(x).len(), false) != Some(b.axis) {
        return Ok(());
    }
    let Some((out_axis, _)) = grows[node.outputs[0]] else {
        return Err("it picks samples out of the batch".into());
    };
    for spec in specs {
        let Some(Known::Ints(idx)) = node.input(1).and_then(|v| spec.known(v)) else {
            return Err("its indices are not known while planning".into());
        };
        // Output position p along the axis belongs to sample p / out.inner;
        // index i to sample i / b.inner.
        let per_out = idx.data.len() / spec.batch.max(1);
        let picks = gather_indices(&idx.data, spec.shape(x)[b.axis])?;
        let own = picks
            .iter()
            .enumerate()
            .all(|(p, &i)| i / b.inner == p / per_out.max(1));
        if !own || out_axis != b.axis {
            return Err("it takes entries of one sample into another".into());
        }
    }
    Ok(())
}
