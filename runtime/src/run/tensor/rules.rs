//! Which nodes run on their split inputs as they are, and how their output
//! is split then. A node no rule takes gathers its inputs first.

use super::Layout;
use crate::graph::infer::transpose_perm;
use crate::graph::op::norm_axis;
use crate::graph::{Model, Op, Spec, ValueId};
use crate::shards::Shards;

/// What a node does on its split input.
pub(super) struct LocalRun {
    /// The split that constants are sliced to match.
    pub along: Shards,
    /// The split of its output.
    pub out: Shards,
    /// A reshape of the split: the executor works out this rank's shape.
    pub view: bool,
}

/// The model's shapes at two batch sizes: a split must land on the same
/// place at both, or it depends on the batch.
#[derive(Clone, Copy)]
pub(super) struct Shapes<'a> {
    pub one: &'a Spec,
    pub two: &'a Spec,
}

impl Shapes<'_> {
    fn of(&self, v: ValueId) -> &[usize] {
        self.one.shape(v)
    }
}

pub(super) fn local(
    model: &Model,
    shapes: Shapes,
    layouts: &[Layout],
    i: usize,
) -> Option<LocalRun> {
    let node = &model.nodes[i];
    let split = |v: ValueId| match &layouts[v] {
        Layout::Split(s) => Some(s.clone()),
        Layout::Whole => None,
    };
    let first = node.inputs.iter().flatten().find_map(|&v| split(v))?;
    let x = node.input(0)?;
    let y = *node.outputs.first()?;
    let same = |s: Shards| {
        Some(LocalRun {
            along: s.clone(),
            out: s,
            view: false,
        })
    };
    let sx = split(x);
    match &node.op {
        Op::Unary(_) | Op::Identity | Op::Cast { .. } => same(sx?),
        Op::Binary(_) => binary(model, shapes, layouts, i, first),
        Op::BatchNorm { .. } => {
            let s = sx?;
            let consts = (1..5).all(|j| node.input(j).and_then(|v| model.weight(v)).is_some());
            (s.axis == 1 && consts).then(|| same(s))?
        }
        Op::Pool { .. } | Op::GlobalPool(_) => sx.filter(|s| s.axis == 1).and_then(same),
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            let s = sx?;
            let view = |spec: &Spec| s.through_view(spec.shape(x), spec.shape(y));
            let out = view(shapes.one)?;
            (view(shapes.two)? == out).then_some(())?;
            // Views that leave a rank empty are gathered instead: not every
            // kernel after them takes an empty axis.
            out.all_hold().then_some(LocalRun {
                along: s,
                out,
                view: true,
            })
        }
        Op::Transpose { perm } => {
            let s = sx?;
            let p = transpose_perm(perm.as_deref(), shapes.of(x).len()).ok()?;
            let to = p.iter().position(|&a| a == s.axis)?;
            Some(LocalRun {
                out: s.on_axis(to),
                along: s,
                view: false,
            })
        }
        Op::Gather { axis } => {
            let s = sx?;
            let g = norm_axis(*axis, shapes.of(x).len(), false)?;
            let idx_rank = shapes.of(node.input(1)?).len();
            let to = match s.axis {
                a if a < g => a,
                a if a > g => a - 1 + idx_rank,
                _ => return None,
            };
            Some(LocalRun {
                out: s.on_axis(to),
                along: s,
                view: false,
            })
        }
        Op::Softmax { axis, coerced } => {
            let s = sx?;
            let n = norm_axis(*axis, shapes.of(x).len(), *coerced)?;
            let apart = if *coerced { s.axis < n } else { s.axis != n };
            apart.then(|| same(s))?
        }
        Op::LayerNorm { axis, .. } => {
            let s = sx?;
            let n = norm_axis(*axis, shapes.of(x).len(), false)?;
            (s.axis < n).then(|| same(s))?
        }
        Op::MatMul if node.inputs.len() == 2 => matmul(shapes, layouts, i, model),
        Op::Concat { axis } => concat(model, shapes, layouts, i, *axis),
        _ => None,
    }
}

/// An elementwise op whose split operands are split alike. A whole operand
/// must broadcast along the split axis, or be a constant sliced to match.
fn binary(
    model: &Model,
    shapes: Shapes,
    layouts: &[Layout],
    i: usize,
    first: Shards,
) -> Option<LocalRun> {
    let node = &model.nodes[i];
    let y = shapes.of(node.outputs[0]);
    let rank = y.len();
    let mut out = None;
    for &v in node.inputs.iter().flatten() {
        let s = shapes.of(v);
        let lead = rank.checked_sub(s.len())?;
        match &layouts[v] {
            Layout::Split(t) => {
                let on = t.on_axis(t.axis + lead);
                if s[t.axis] != y[on.axis] || out.as_ref().is_some_and(|o| o != &on) {
                    return None;
                }
                out = Some(on);
            }
            Layout::Whole => {}
        }
    }
    let out = out.unwrap_or(first);
    let a = out.axis;
    // A constant spans the split axis only when the axis does not grow
    // with the batch.
    let y2 = shapes.two.shape(node.outputs[0]);
    let fits = node.inputs.iter().flatten().all(|&v| {
        let s = shapes.of(v);
        let lead = rank - s.len();
        layouts[v] != Layout::Whole
            || a < lead
            || s[a - lead] == 1
            || (model.weight(v).is_some() && s[a - lead] == y[a] && y[a] == y2[a])
    });
    fits.then(|| LocalRun {
        along: out.clone(),
        out,
        view: false,
    })
}

/// A batched product of two activations: split alike on a batch axis, or
/// the left one by rows (the right one whole), or the right one by columns.
fn matmul(shapes: Shapes, layouts: &[Layout], i: usize, model: &Model) -> Option<LocalRun> {
    let node = &model.nodes[i];
    let (a, b) = (node.input(0)?, node.input(1)?);
    let (ra, rb) = (shapes.of(a).len(), shapes.of(b).len());
    let ro = shapes.of(node.outputs[0]).len();
    if ra < 2 || rb < 2 {
        return None;
    }
    let out = match (&layouts[a], &layouts[b]) {
        (Layout::Split(sa), Layout::Split(sb)) => {
            let (oa, ob) = (sa.axis + ro - ra, sb.axis + ro - rb);
            let batch = sa.axis + 2 < ra && sb.axis + 2 < rb;
            let alike =
                sa.segments == sb.segments && shapes.of(a)[sa.axis] == shapes.of(b)[sb.axis];
            (batch && oa == ob && alike).then(|| sa.on_axis(oa))?
        }
        (Layout::Split(sa), Layout::Whole) if sa.axis + 2 == ra => sa.on_axis(ro - 2),
        (Layout::Whole, Layout::Split(sb)) if sb.axis + 1 == rb => sb.on_axis(ro - 1),
        _ => return None,
    };
    Some(LocalRun {
        along: out.clone(),
        out,
        view: false,
    })
}

/// A concatenation of values split alike along another axis, or of values
/// split along the concatenated axis itself: then each rank's share is its
/// share of every input, one segment each.
fn concat(
    model: &Model,
    shapes: Shapes,
    layouts: &[Layout],
    i: usize,
    axis: i64,
) -> Option<LocalRun> {
    let node = &model.nodes[i];
    let y = node.outputs[0];
    let c = norm_axis(axis, shapes.of(y).len(), false)?;
    let splits: Vec<Shards> = node
        .inputs
        .iter()
        .map(|v| match &layouts[(*v)?] {
            Layout::Split(s) => Some(s.clone()),
            Layout::Whole => None,
        })
        .collect::<Option<_>>()?;
    let first = splits.first()?.clone();
    let out = if first.axis != c {
        splits.iter().all(|s| s == &first).then(|| first.clone())?
    } else {
        // Each input one run long, at every batch size.
        let single = node.inputs.iter().flatten().zip(&splits).all(|(&v, s)| {
            s.axis == c
                && s.period() == shapes.one.shape(v)[c]
                && s.period() == shapes.two.shape(v)[c]
        });
        single.then_some(())?;
        Shards {
            axis: c,
            segments: splits.iter().flat_map(|s| s.segments.clone()).collect(),
        }
    };
    Some(LocalRun {
        along: first,
        out,
        view: false,
    })
}
