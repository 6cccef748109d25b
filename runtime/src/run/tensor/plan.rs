//! Dividing the graph's nodes among the ranks: which weights each rank
//! reads, which values stay split, and where they are gathered or reduced.

use super::rules::{self, Shapes};
use super::{Layout, Part, TensorPlan};
use crate::exec::load::{linear_gemm, matmul_weight};
use crate::graph::{Model, Op, Spec, ValueId};
use crate::shards::Shards;
use crate::split;
use crate::ModelError;
use std::collections::BTreeSet;

/// How far past a linear layer the planner looks for the reshapes that
/// show how its columns fall into heads.
const LOOKAHEAD: usize = 24;

#[derive(Clone)]
struct Planner<'a> {
    model: &'a Model,
    shapes: Shapes<'a>,
    consumers: &'a [Vec<usize>],
    ranks: usize,
    layouts: Vec<Layout>,
    plan: TensorPlan,
    /// Working out the cost of one choice: later layers take the plain split.
    probe: bool,
}

/// Divides every node of `model` among `ranks` ranks.
pub fn plan(model: &Model, ranks: usize) -> Result<TensorPlan, ModelError> {
    let (one, two) = (model.spec(1)?, model.spec(2)?);
    let consumers = model.consumers();
    let n = model.nodes.len();
    let mut p = Planner {
        model,
        shapes: Shapes {
            one: &one,
            two: &two,
        },
        consumers: &consumers,
        ranks,
        layouts: vec![Layout::Whole; model.values.len()],
        plan: TensorPlan {
            ranks,
            parts: vec![Part::Folded; n],
            gathers: vec![Vec::new(); n],
            local_in: vec![None; n],
            output: Layout::Whole,
            moved: Vec::new(),
            rank_weights: vec![0; ranks],
            columns: Default::default(),
        },
        probe: false,
    };
    p.nodes(0);
    let out = model.outputs[0];
    p.plan.output = p.layouts[out].clone();
    if p.plan.output != Layout::Whole {
        let elems = elems(&one, out);
        p.plan.moved.push((false, elems / ranks.max(1)));
    }
    Ok(p.plan)
}

fn elems(spec: &Spec, v: ValueId) -> usize {
    spec.shape(v).iter().product()
}

fn last_axis(spec: &Spec, v: ValueId) -> usize {
    spec.shape(v).len().saturating_sub(1)
}

impl<'a> Planner<'a> {
    fn nodes(&mut self, from: usize) {
        for i in from..self.model.nodes.len() {
            if self.shapes.one.runs[i] {
                self.node(i);
            }
        }
    }

    fn spec(&self) -> &'a Spec {
        self.shapes.one
    }

    fn gather(&mut self, i: usize, v: ValueId) {
        if self.layouts[v] != Layout::Whole {
            let l = std::mem::replace(&mut self.layouts[v], Layout::Whole);
            self.plan.gathers[i].push((v, l));
            self.plan.moved.push((false, elems(self.spec(), v)));
        }
    }

    fn weights(&mut self, per_rank: impl Fn(usize) -> u64) {
        for r in 0..self.ranks {
            self.plan.rank_weights[r] += per_rank(r);
        }
    }

    /// Weight values of node `i` every rank reads whole.
    fn whole_weights(&mut self, i: usize) {
        let (model, node) = (self.model, &self.model.nodes[i]);
        let total: u64 = node
            .inputs
            .iter()
            .flatten()
            .filter_map(|&v| model.weight(v))
            .map(|w| w.len() as u64)
            .sum();
        self.weights(|_| total);
    }

    fn set(&mut self, i: usize, part: Part, out: Layout) {
        for &v in &self.model.nodes[i].outputs {
            self.layouts[v] = out.clone();
        }
        self.plan.parts[i] = part;
    }

    fn node(&mut self, i: usize) {
        let (model, spec) = (self.model, self.shapes.one);
        let node = &model.nodes[i];
        let w = |j: usize| node.input(j).and_then(|v| model.weight(v));
        match &node.op {
            Op::Conv { conv, .. }
                if w(1).is_some() && node.input(2).is_none_or(|_| w(2).is_some()) =>
            {
                self.conv(i, conv.groups)
            }
            Op::Gemm(g) if !g.trans_a && linear_gemm(model, spec, i).is_some() => {
                self.linear(i, g.trans_b)
            }
            Op::MatMul if matmul_weight(model, spec, i) => self.linear(i, false),
            _ => match rules::local(model, self.shapes, &self.layouts, i) {
                Some(run) => {
                    self.whole_weights(i);
                    self.plan.local_in[i] = Some(run.along);
                    let view = run.view.then(|| run.out.clone());
                    self.set(i, Part::Local { view }, Layout::Split(run.out));
                }
                None => {
                    for v in node.inputs.clone().into_iter().flatten() {
                        self.gather(i, v);
                    }
                    self.whole_weights(i);
                    self.set(i, Part::Whole, Layout::Whole);
                }
            },
        }
    }

    fn conv(&mut self, i: usize, groups: usize) {
        let (model, spec) = (self.model, self.shapes.one);
        let node = &model.nodes[i];
        let (x, y) = (node.input(0).expect("conv input"), node.outputs[0]);
        let ws = spec.shape(node.input(1).expect("checked")).to_vec();
        let (m, per_out_row) = (ws[0], ws[1..].iter().product::<usize>());
        let has_bias = u64::from(node.input(2).is_some());
        if groups > 1 {
            self.gather(i, x);
            let g = split::even(groups, self.ranks);
            let per_group = m / groups;
            self.weights(|r| (g[r] * per_group) as u64 * (per_out_row as u64 + has_bias));
            let out = Shards {
                axis: 1,
                segments: vec![g.iter().map(|c| c * per_group).collect()],
            };
            self.set(i, Part::ConvGroups(g), Layout::Split(out));
            return;
        }
        if let Layout::Split(s) = self.layouts[x].clone() {
            if s.axis == 1 && 2 * elems(spec, y) < elems(spec, x) {
                let k: usize = ws[2..].iter().product();
                self.weights(|r| (m * s.local(r, ws[1]) * k) as u64 + has_bias * m as u64);
                self.plan.moved.push((true, elems(spec, y)));
                self.set(i, Part::ConvIn(s), Layout::Whole);
                return;
            }
        }
        self.gather(i, x);
        let counts = split::even(m, self.ranks);
        self.weights(|r| counts[r] as u64 * (per_out_row as u64 + has_bias));
        let out = Shards::even(1, m, self.ranks);
        self.set(i, Part::ConvOut(counts), Layout::Split(out));
    }

    fn linear(&mut self, i: usize, trans_b: bool) {
        let (model, spec) = (self.model, self.shapes.one);
        let node = &model.nodes[i];
        let (x, y) = (node.input(0).expect("linear input"), node.outputs[0]);
        let ws = spec.shape(node.input(1).expect("checked"));
        let (k, n) = if trans_b {
            (ws[1], ws[0])
        } else {
            (ws[0], ws[1])
        };
        let has_bias = u64::from(node.input(2).is_some());
        if let Layout::Split(s) = self.layouts[x].clone() {
            if s.axis == last_axis(spec, x) {
                self.weights(|r| (s.local(r, k) * n) as u64 + has_bias * n as u64);
                self.plan.moved.push((true, elems(spec, y)));
                self.set(i, Part::LinearRows(s), Layout::Whole);
                return;
            }
        }
        self.gather(i, x);
        let plain = Shards::even(last_axis(spec, y), n, self.ranks);
        let columns = if self.probe {
            plain
        } else {
            self.cheapest(i, plain)
        };
        self.weights(|r| columns.local(r, n) as u64 * (k as u64 + has_bias));
        self.plan.columns.insert(i, n);
        self.set(
            i,
            Part::LinearColumns(columns.clone()),
            Layout::Split(columns),
        );
    }

    /// Of the ways to split linear node `i`'s columns, the one that moves
    /// the fewest bytes over the rest of the graph. Columns that fall into
    /// heads after a reshape are split by whole heads (the packed query,
    /// key and value projection in runs of three), so the attention runs
    /// on each rank's heads with no gather.
    fn cheapest(&self, i: usize, plain: Shards) -> Shards {
        let candidates = self.by_heads(i, &plain);
        if candidates.is_empty() {
            return plain;
        }
        let cost = |s: &Shards| {
            let mut p = self.clone();
            p.probe = true;
            p.set(i, Part::LinearColumns(s.clone()), Layout::Split(s.clone()));
            p.nodes(i + 1);
            p.plan.comm_elements()
        };
        let mut best = (cost(&plain), plain);
        for c in candidates {
            let k = cost(&c);
            if k < best.0 {
                best = (k, c);
            }
        }
        best.1
    }

    /// Splits of `plain`'s axis into runs of whole heads, the head widths
    /// taken from the reshapes within reach of node `i`'s output.
    fn by_heads(&self, i: usize, plain: &Shards) -> Vec<Shards> {
        let n = plain.period();
        let mut widths = BTreeSet::new();
        let mut frontier = vec![self.model.nodes[i].outputs[0]];
        let mut seen = 0;
        while let Some(v) = frontier.pop() {
            for &j in &self.consumers[v] {
                let node = &self.model.nodes[j];
                seen += 1;
                let layer = matches!(node.op, Op::Conv { .. } | Op::Gemm(_) | Op::MatMul)
                    && node
                        .inputs
                        .iter()
                        .flatten()
                        .any(|&w| self.model.weight(w).is_some());
                if seen > LOOKAHEAD || layer {
                    continue;
                }
                if matches!(node.op, Op::Reshape { .. }) {
                    widths.extend(self.spec().shape(node.outputs[0]).iter().copied());
                }
                frontier.extend(node.outputs.iter().copied());
            }
        }
        let mut out = Vec::new();
        for runs in (1..=4).filter(|r| n.is_multiple_of(*r)) {
            let per_run = n / runs;
            for &w in widths
                .iter()
                .filter(|&&w| w > 1 && per_run.is_multiple_of(w))
            {
                let heads = per_run / w;
                if heads < self.ranks || (runs == 1 && w == 1) {
                    continue;
                }
                let counts = split::even(heads, self.ranks)
                    .iter()
                    .map(|h| h * w)
                    .collect();
                let s = Shards {
                    axis: plain.axis,
                    segments: vec![counts],
                };
                if &s != plain && !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}
