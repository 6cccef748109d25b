//! Tensor parallelism on a graph: every rank holds a slice of the weights
//! and all ranks work on the same rows.
//!
//! Each value is either whole on every rank or split along one axis. A
//! convolution on a whole input splits its output channels (a grouped one,
//! its groups); on a channel-split input it sums partial products with one
//! allreduce where that moves fewer bytes than gathering the channels. A
//! linear layer on a whole input splits its output columns, and on a
//! feature-split input its rows, then one allreduce: linear pairs run column
//! then row. Per-channel work (activations, BatchNormalization, pooling,
//! Adds and Muls of values split the same way, a flatten after the
//! channels) runs on the split as it is, constants sliced to match. Any
//! other node gathers its split inputs first; the output is gathered on
//! rank 0.

use super::{Ctx, Outputs, Rows, RunError};
use crate::exec::load::{conv_step, linear_gemm, matmul_weight, whole_step, Consts};
use crate::exec::{Comm, In, Instr, Program, Step};
use crate::graph::{Model, Op, Spec, ValueId};
use crate::model::Weight;
use crate::split;
use crate::ModelError;
use mpinfer_collectives::transport::Transport;
use mpinfer_kernels::cpu::Gemm;
use mpinfer_kernels::{StoredDType, Tensor};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Rows all ranks work on together per step, unless `--batch-size` says.
const DEFAULT_ROWS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    Whole,
    Split { axis: usize, counts: Vec<usize> },
}

/// How one node is divided among the ranks.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Not run: folded while planning.
    Folded,
    Whole,
    /// Run on each rank's split as it is.
    Local,
    ConvOut(Vec<usize>),
    ConvGroups(Vec<usize>),
    /// Partial sums over input channels, then allreduce and bias.
    ConvIn(Vec<usize>),
    LinearColumns(Vec<usize>),
    /// Partial sums over input features, then allreduce and bias.
    LinearRows(Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub ranks: usize,
    pub parts: Vec<Part>,
    /// Per node: split values made whole before it runs.
    pub gathers: Vec<Vec<(ValueId, Layout)>>,
    /// The output's layout, gathered on rank 0 at the end.
    pub output: Layout,
    /// Per node run locally: the layout of its split input.
    pub local_in: Vec<Option<Layout>>,
    /// Per-sample activation elements moved: (allreduce?, elements).
    moved: Vec<(bool, usize)>,
    /// Weight values each rank reads.
    pub rank_weights: Vec<u64>,
}

impl TensorPlan {
    pub fn max_rank_weight_bytes(&self) -> u64 {
        4 * self.rank_weights.iter().copied().max().unwrap_or(0)
    }

    /// Bytes one rank sends per input row, with ring-style collectives.
    pub fn comm_bytes_per_row(&self) -> u64 {
        let p = self.ranks as f64;
        if self.ranks == 1 {
            return 0;
        }
        self.moved
            .iter()
            .map(|&(reduce, elems)| {
                let e = 4.0 * elems as f64;
                if reduce {
                    2.0 * e * (p - 1.0) / p
                } else {
                    e * (p - 1.0) / p
                }
            })
            .sum::<f64>() as u64
    }

    /// Where each gather and reduce happens, one line each.
    pub fn describe(&self, model: &Model) -> Vec<String> {
        let mut out = Vec::new();
        for (i, node) in model.nodes.iter().enumerate() {
            for (v, _) in &self.gathers[i] {
                out.push(format!(
                    "allgather {} before {}",
                    model.values[*v].name, node.name
                ));
            }
            if matches!(self.parts[i], Part::ConvIn(_) | Part::LinearRows(_)) {
                out.push(format!("allreduce after {} ({})", node.name, node.op_type));
            }
        }
        if self.output != Layout::Whole {
            out.push(format!("gather {} on rank 0", model.output_names()[0]));
        }
        out
    }
}

struct Planner<'a> {
    model: &'a Model,
    spec: &'a Spec,
    ranks: usize,
    layouts: Vec<Layout>,
    plan: TensorPlan,
}

/// Divides every node of `model` among `ranks` ranks.
pub fn plan(model: &Model, ranks: usize) -> Result<TensorPlan, ModelError> {
    let spec = model.spec(1)?;
    let n = model.nodes.len();
    let mut p = Planner {
        model,
        spec: &spec,
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
        },
    };
    for i in 0..n {
        if spec.runs[i] {
            p.node(i)?;
        }
    }
    p.plan.output = p.layouts[model.outputs[0]].clone();
    if p.plan.output != Layout::Whole {
        let elems = elems(&spec, model.outputs[0]);
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

impl Planner<'_> {
    fn gather(&mut self, i: usize, v: ValueId) {
        if self.layouts[v] != Layout::Whole {
            let l = std::mem::replace(&mut self.layouts[v], Layout::Whole);
            self.plan.gathers[i].push((v, l));
            self.plan.moved.push((false, elems(self.spec, v)));
        }
    }

    fn gather_all(&mut self, i: usize) {
        for v in self.model.nodes[i].inputs.clone().into_iter().flatten() {
            self.gather(i, v);
        }
    }

    fn weights(&mut self, per_rank: impl Fn(usize) -> u64) {
        for r in 0..self.ranks {
            self.plan.rank_weights[r] += per_rank(r);
        }
    }

    fn set(&mut self, i: usize, part: Part, out: Layout) {
        for &v in &self.model.nodes[i].outputs {
            self.layouts[v] = out.clone();
        }
        self.plan.parts[i] = part;
    }

    fn node(&mut self, i: usize) -> Result<(), ModelError> {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        let w = |j: usize| node.input(j).and_then(|v| model.weight(v));
        let x = node.input(0);
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
            _ if self.local(i) => {
                let l = x.map_or(Layout::Whole, |x| self.layouts[x].clone());
                self.plan.local_in[i] = Some(l.clone());
                let l = self.flattened(i, l);
                self.weights(|_| {
                    node.inputs
                        .iter()
                        .flatten()
                        .filter_map(|&v| model.weight(v))
                        .map(|w| w.len() as u64)
                        .sum()
                });
                self.set(i, Part::Local, l);
                Ok(())
            }
            _ => {
                self.gather_all(i);
                self.weights(|_| {
                    node.inputs
                        .iter()
                        .flatten()
                        .filter_map(|&v| model.weight(v))
                        .map(|w| w.len() as u64)
                        .sum()
                });
                self.set(i, Part::Whole, Layout::Whole);
                Ok(())
            }
        }
    }

    /// Whether node `i` can run on its split input as it is.
    fn local(&self, i: usize) -> bool {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        let Some(x) = node.input(0) else { return false };
        let Layout::Split { axis, counts } = &self.layouts[x] else {
            return false;
        };
        let rank = spec.shape(x).len();
        let per_channel = *axis == 1 && rank >= 2;
        let fits = |v: ValueId| -> bool {
            if v == x
                || self.layouts[v]
                    == (Layout::Split {
                        axis: *axis,
                        counts: counts.clone(),
                    })
            {
                return spec.shape(v) == spec.shape(x) || v == x;
            }
            if self.layouts[v] != Layout::Whole {
                return false;
            }
            // A whole operand that broadcasts along the split axis, or a
            // constant sliced to match it.
            let s = spec.shape(v);
            let lead = rank.saturating_sub(s.len());
            *axis < lead
                || s[*axis - lead] == 1
                || (model.weight(v).is_some() && s[*axis - lead] == spec.shape(x)[*axis])
        };
        match &node.op {
            Op::Unary(_) | Op::Identity => true,
            Op::Binary(_) => {
                node.inputs.len() == 2
                    && node.inputs.iter().flatten().all(|&v| fits(v))
                    && spec.shape(node.outputs[0]) == spec.shape(x)
            }
            Op::BatchNorm { .. } => {
                per_channel && (1..5).all(|j| node.input(j).and_then(|v| model.weight(v)).is_some())
            }
            Op::Pool { .. } | Op::GlobalPool(_) => per_channel,
            Op::Flatten { axis: 1 } => per_channel,
            _ => false,
        }
    }

    /// A flatten after the channels keeps each rank's channels contiguous:
    /// the split carries over, scaled.
    fn flattened(&self, i: usize, l: Layout) -> Layout {
        let node = &self.model.nodes[i];
        match (&node.op, l) {
            (Op::Flatten { .. }, Layout::Split { axis: 1, counts }) => {
                let x = self.spec.shape(node.input(0).expect("checked"));
                let inner: usize = x[2..].iter().product();
                Layout::Split {
                    axis: 1,
                    counts: counts.iter().map(|c| c * inner).collect(),
                }
            }
            (_, l) => l,
        }
    }

    fn conv(&mut self, i: usize, groups: usize) -> Result<(), ModelError> {
        let (model, spec) = (self.model, self.spec);
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
            let counts = g.iter().map(|c| c * per_group).collect();
            self.set(i, Part::ConvGroups(g), Layout::Split { axis: 1, counts });
            return Ok(());
        }
        if let Layout::Split { axis: 1, counts } = self.layouts[x].clone() {
            if 2 * elems(spec, y) < elems(spec, x) {
                let k: usize = ws[2..].iter().product();
                self.weights(|r| (m * counts[r] * k) as u64 + has_bias * m as u64);
                self.plan.moved.push((true, elems(spec, y)));
                self.set(i, Part::ConvIn(counts), Layout::Whole);
                return Ok(());
            }
        }
        self.gather(i, x);
        let counts = split::even(m, self.ranks);
        self.weights(|r| counts[r] as u64 * (per_out_row as u64 + has_bias));
        self.set(
            i,
            Part::ConvOut(counts.clone()),
            Layout::Split { axis: 1, counts },
        );
        Ok(())
    }

    fn linear(&mut self, i: usize, trans_b: bool) -> Result<(), ModelError> {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        let (x, y) = (node.input(0).expect("linear input"), node.outputs[0]);
        let ws = spec.shape(node.input(1).expect("checked"));
        let (k, n) = if trans_b {
            (ws[1], ws[0])
        } else {
            (ws[0], ws[1])
        };
        let has_bias = u64::from(node.input(2).is_some());
        let last = last_axis(spec, x);
        if let Layout::Split { axis, counts } = self.layouts[x].clone() {
            if axis == last {
                self.weights(|r| (counts[r] * n) as u64 + has_bias * n as u64);
                self.plan.moved.push((true, elems(spec, y)));
                self.set(i, Part::LinearRows(counts), Layout::Whole);
                return Ok(());
            }
        }
        self.gather(i, x);
        let counts = split::even(n, self.ranks);
        self.weights(|r| counts[r] as u64 * (k as u64 + has_bias));
        let axis = last_axis(spec, y);
        self.set(
            i,
            Part::LinearColumns(counts.clone()),
            Layout::Split { axis, counts },
        );
        Ok(())
    }
}

fn range_of(counts: &[usize], rank: usize) -> Range<usize> {
    let offsets = split::offsets(counts);
    offsets[rank]..offsets[rank + 1]
}

/// Reads `w` restricted to `range` along `axis`.
fn slice(
    w: &Weight,
    axis: usize,
    range: Range<usize>,
    dtype: StoredDType,
) -> Result<Arc<Tensor>, ModelError> {
    let ranges: Vec<Range<usize>> = w
        .shape
        .iter()
        .enumerate()
        .map(|(a, &d)| if a == axis { range.clone() } else { 0..d })
        .collect();
    Ok(Arc::new(crate::exec::round_to(
        w.read_slice(&ranges)?,
        dtype,
    )))
}

/// Rank `rank`'s program: its steps with its weight slices, and the
/// collectives between them.
struct Shard<'a> {
    model: &'a Model,
    spec: &'a Spec,
    plan: &'a TensorPlan,
    rank: usize,
    dtype: StoredDType,
    instrs: Vec<Instr>,
}

fn program(
    model: &Model,
    spec: &Spec,
    plan: &TensorPlan,
    rank: usize,
    dtype: StoredDType,
    backend: &dyn crate::exec::Backend,
) -> Result<Program, ModelError> {
    let mut consts = Consts::new(dtype);
    let mut s = Shard {
        model,
        spec,
        plan,
        rank,
        dtype,
        instrs: Vec::new(),
    };
    for i in 0..model.nodes.len() {
        if plan.parts[i] == Part::Folded {
            consts.fold(model, spec, i, backend)?;
            continue;
        }
        for (v, l) in &plan.gathers[i] {
            s.gather(*v, l, false);
        }
        s.node(i, &mut consts)?;
    }
    let out = model.outputs[0];
    if let Layout::Split { axis, counts } = &plan.output {
        s.instrs.push(Instr::Comm {
            value: out,
            comm: Comm::Gather {
                axis: *axis,
                counts: counts.clone(),
                to_root: true,
            },
        });
    }
    let keep = vec![out];
    let instrs = crate::exec::fuse_posts(s.instrs, spec, &keep);
    Ok(Program::new(instrs, keep, model.values.len()))
}

impl Shard<'_> {
    fn gather(&mut self, v: ValueId, l: &Layout, to_root: bool) {
        if let Layout::Split { axis, counts } = l {
            self.instrs.push(Instr::Comm {
                value: v,
                comm: Comm::Gather {
                    axis: *axis,
                    counts: counts.clone(),
                    to_root,
                },
            });
        }
    }

    fn run(&mut self, i: usize, step: Step, inputs: Vec<In>) {
        self.instrs.push(Instr::Run {
            node: i,
            step,
            inputs,
            outputs: self.model.nodes[i].outputs.clone(),
        });
    }

    /// This rank's share of a value of `v`'s shape split along `axis`: zeros
    /// when it holds none.
    fn empty(&mut self, i: usize, axis: usize) {
        let mut sample = self.spec.shape(self.model.nodes[i].outputs[0])[1..].to_vec();
        sample[axis - 1] = 0;
        self.run(i, Step::Zeros(sample), Vec::new());
    }

    fn node(&mut self, i: usize, consts: &mut Consts) -> Result<(), ModelError> {
        let (model, spec, dtype) = (self.model, self.spec, self.dtype);
        let node = &model.nodes[i];
        let w = |j: usize| {
            node.input(j)
                .and_then(|v| model.weight(v))
                .expect("the plan checked the weight")
        };
        let x = In::Value(node.input(0).unwrap_or(0));
        let mine = |c: &[usize]| range_of(c, self.rank);
        match &self.plan.parts[i] {
            Part::Folded => {}
            Part::Whole => {
                let (step, inputs) = whole_step(model, spec, i, consts)?;
                self.run(i, step, inputs);
            }
            Part::Local => self.local(i, consts)?,
            Part::ConvOut(c) => {
                let r = mine(c);
                if r.is_empty() {
                    self.empty(i, 1);
                    return Ok(());
                }
                let bias = node
                    .input(2)
                    .map(|_| slice(w(2), 0, r.clone(), dtype))
                    .transpose()?;
                let step = conv_step(model, spec, i, slice(w(1), 0, r, dtype)?, bias)?;
                self.run(i, step, vec![x]);
            }
            Part::ConvGroups(g) => {
                let r = mine(g);
                if r.is_empty() {
                    self.empty(i, 1);
                    return Ok(());
                }
                let (m, per_in) = (
                    spec.shape(node.input(1).expect("w"))[0],
                    spec.shape(node.input(1).expect("w"))[1],
                );
                let Op::Conv { conv, .. } = &node.op else {
                    unreachable!()
                };
                let per_out = m / conv.groups;
                let rows = r.start * per_out..r.end * per_out;
                let channels = In::Value(node.outputs[0]);
                self.instrs.push(Instr::Run {
                    node: i,
                    step: Step::Channels(r.start * per_in..r.end * per_in),
                    inputs: vec![x],
                    outputs: node.outputs.clone(),
                });
                let bias = node
                    .input(2)
                    .map(|_| slice(w(2), 0, rows.clone(), dtype))
                    .transpose()?;
                let mut step = conv_step(model, spec, i, slice(w(1), 0, rows, dtype)?, bias)?;
                if let Step::Conv { conv, .. } = &mut step {
                    conv.groups = r.len();
                }
                self.run(i, step, vec![channels]);
            }
            Part::ConvIn(c) => {
                let step = (!mine(c).is_empty())
                    .then(|| conv_step(model, spec, i, slice(w(1), 1, mine(c), dtype)?, None))
                    .transpose()?;
                self.partial_sum(i, step, 1)?;
            }
            Part::LinearColumns(c) => {
                let r = mine(c);
                let y_axis = spec.shape(node.outputs[0]).len() - 1;
                if r.is_empty() {
                    self.empty(i, y_axis);
                    return Ok(());
                }
                let (gemm, trans_b) = self.gemm_of(i);
                let weight = slice(w(1), if trans_b { 0 } else { 1 }, r.clone(), dtype)?;
                let bias = self
                    .bias(i, r.clone())?
                    .map(|b| Arc::new(Tensor::new(vec![r.len()], b)));
                self.run(
                    i,
                    Step::Linear {
                        gemm,
                        weight,
                        bias,
                        post: Vec::new(),
                    },
                    vec![x],
                );
            }
            Part::LinearRows(c) => {
                let (mut gemm, trans_b) = self.gemm_of(i);
                gemm.relu = false;
                let step = (!mine(c).is_empty())
                    .then(|| slice(w(1), if trans_b { 1 } else { 0 }, mine(c), dtype))
                    .transpose()?
                    .map(|weight| Step::Linear {
                        gemm,
                        weight,
                        bias: None,
                        post: Vec::new(),
                    });
                let axis = spec.shape(node.outputs[0]).len() - 1;
                self.partial_sum(i, step, axis)?;
            }
        }
        Ok(())
    }

    fn gemm_of(&self, i: usize) -> (Gemm, bool) {
        match &self.model.nodes[i].op {
            Op::Gemm(_) => {
                let (g, _) = linear_gemm(self.model, self.spec, i).expect("the plan checked it");
                (g, g.trans_b)
            }
            _ => (Gemm::default(), false),
        }
    }

    /// Columns `range` of a linear node's bias, as `[N]` holds them: read as
    /// that slice of the file when the bias is stored one value per column.
    fn bias(&self, i: usize, range: Range<usize>) -> Result<Option<Vec<f32>>, ModelError> {
        let node = &self.model.nodes[i];
        let Some(b) = node.input(2).and_then(|v| self.model.weight(v)) else {
            return Ok(None);
        };
        let n = *self.spec.shape(node.outputs[0]).last().expect("rank");
        let beta = match &node.op {
            Op::Gemm(g) => g.beta,
            _ => 1.0,
        };
        if b.len() == n && !b.shape.is_empty() {
            let last = b.shape.len() - 1;
            let mut t = slice(b, last, range, self.dtype)?.data.clone();
            t.iter_mut().for_each(|v| *v *= beta);
            return Ok(Some(t));
        }
        // A scalar broadcast along the row: one value, read whole.
        let t = crate::exec::round_to(b.read()?, self.dtype);
        Ok(Some(
            crate::exec::load::bias_vector(&t, beta, n).data[range].to_vec(),
        ))
    }

    /// This rank's partial sum (zeros when it holds no share), the
    /// allreduce, then the whole bias along `axis`, added once.
    fn partial_sum(&mut self, i: usize, step: Option<Step>, axis: usize) -> Result<(), ModelError> {
        let node = &self.model.nodes[i];
        let y = node.outputs[0];
        match step {
            Some(s) => self.run(i, s, vec![In::Value(node.input(0).expect("input"))]),
            None => {
                let sample = self.spec.shape(y)[1..].to_vec();
                self.run(i, Step::Zeros(sample), Vec::new());
            }
        }
        self.instrs.push(Instr::Comm {
            value: y,
            comm: Comm::Allreduce,
        });
        let n = self.spec.shape(y)[axis];
        let bias = match &node.op {
            Op::Conv { .. } => match node.input(2).and_then(|v| self.model.weight(v)) {
                Some(b) => crate::exec::round_to(b.read()?, self.dtype).data,
                None => vec![0.0; n],
            },
            _ => self.bias(i, 0..n)?.unwrap_or_else(|| vec![0.0; n]),
        };
        self.instrs.push(Instr::Run {
            node: i,
            step: Step::Bias {
                bias: Arc::new(bias),
                axis,
                post: Vec::new(),
            },
            inputs: vec![In::Value(y)],
            outputs: vec![y],
        });
        Ok(())
    }

    /// A node on its split input; constants that span the split axis are
    /// sliced to this rank's share.
    fn local(&mut self, i: usize, consts: &mut Consts) -> Result<(), ModelError> {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        let x = node.input(0).expect("checked");
        let Some(Layout::Split { axis, counts }) = self.plan.local_in[i].clone() else {
            unreachable!("the plan runs only split values locally")
        };
        let r = range_of(&counts, self.rank);
        let rank = spec.shape(x).len();
        let mut inputs = Vec::new();
        for &v in &node.inputs {
            let inp = match v.and_then(|v| model.weight(v).map(|w| (v, w))) {
                Some((v, w)) => {
                    let s = spec.shape(v);
                    let lead = rank.saturating_sub(s.len());
                    let along = if matches!(node.op, Op::BatchNorm { .. }) {
                        Some(0)
                    } else {
                        (axis >= lead
                            && s[axis - lead] == spec.shape(x)[axis]
                            && s[axis - lead] != 1)
                            .then(|| axis - lead)
                    };
                    match along {
                        Some(a) => In::Const(slice(w, a, r.clone(), self.dtype)?),
                        None => consts.input(model, Some(v))?,
                    }
                }
                None => consts.input(model, v)?,
            };
            inputs.push(inp);
        }
        let affine = match (&node.op, &inputs[1..]) {
            // Scale and shift worked out once, not per batch.
            (
                Op::BatchNorm { epsilon },
                [In::Const(g), In::Const(b), In::Const(m), In::Const(v)],
            ) => Some(crate::exec::batch_norm_affine(
                &g.data, &b.data, &m.data, &v.data, *epsilon,
            )),
            _ => None,
        };
        let step = match affine {
            Some((scale, shift)) => {
                inputs.truncate(1);
                Step::Affine {
                    scale: Arc::new(scale),
                    shift: Arc::new(shift),
                }
            }
            None => Step::Node(node.op.clone()),
        };
        self.run(i, step, inputs);
        Ok(())
    }
}

pub(crate) fn run<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
) -> Result<(), RunError> {
    let rank = ctx.comm.rank();
    let spec1 = ctx.spec(1)?;
    let plan = plan(ctx.model, ctx.comm.size())?;
    let program = program(ctx.model, &spec1, &plan, rank, ctx.opts.dtype, ctx.cpu)?;
    ctx.weight_bytes = 4 * program.weight_values();
    let total = input.rows();
    let rows = ctx.opts.batch_size.unwrap_or(DEFAULT_ROWS);
    let mut first = 0;
    loop {
        let len = rows.min(total - first);
        let x = ctx.read(input, first..first + len)?;
        let y = if len == 0 {
            Tensor::zeros(std::iter::once(0).chain(ctx.output_sample()?).collect())
        } else {
            step(ctx, &program, x)?
        };
        // Every rank worked on every row.
        ctx.rows_done += len as u64;
        if rank == 0 {
            outputs.computed(first, &y)?;
            outputs.collected(first, &y)?;
        }
        first += len;
        if first >= total {
            break;
        }
    }
    Ok(())
}

/// The program on one batch of rows, its compute time charged with the
/// collectives' taken out.
fn step<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    program: &Program,
    x: Tensor,
) -> Result<Tensor, RunError> {
    let spec = ctx.spec(x.shape[0])?;
    let (model, cpu) = (ctx.model, ctx.cpu);
    let (started, comm_before) = (Instant::now(), ctx.clock.comm);
    let mut comm = |c: &Comm, t: &mut Tensor| -> Result<(), RunError> { collective(ctx, c, t) };
    let mut ys = program.run::<RunError>(cpu, model, &spec, vec![(model.input, x)], &mut comm)?;
    let in_comm = ctx.clock.comm - comm_before;
    ctx.clock
        .charge_compute(started.elapsed().saturating_sub(in_comm));
    Ok(ys.swap_remove(0))
}

/// One collective of the program on its value.
fn collective<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    c: &Comm,
    t: &mut Tensor,
) -> Result<(), RunError> {
    match c {
        Comm::Allreduce => ctx.allreduce_sum(&mut t.data),
        Comm::Gather {
            axis,
            counts,
            to_root,
        } => {
            let outer: usize = t.shape[..*axis].iter().product();
            let inner: usize = t.shape[axis + 1..].iter().product();
            let elems: Vec<usize> = counts.iter().map(|c| outer * c * inner).collect();
            let root = to_root.then_some(0);
            let blocks = ctx.gatherv(&t.data, &elems, root)?;
            if root.is_some_and(|r| r != ctx.comm.rank()) {
                *t = Tensor::zeros(vec![0]);
            } else {
                let mut shape = t.shape.clone();
                shape[*axis] = counts.iter().sum();
                *t = Tensor::new(
                    shape,
                    crate::exec::concat_blocks(&blocks, counts, outer, inner),
                );
            }
            Ok(())
        }
    }
}
