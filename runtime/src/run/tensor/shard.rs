//! Rank `rank`'s program under a tensor plan: its steps with its weight
//! slices, and the collectives between them.

use super::{Layout, Part, TensorPlan};
use crate::exec::load::{conv_step, linear_gemm, whole_step, Consts};
use crate::exec::{Comm, In, Instr, Program, Step};
use crate::graph::{Model, Op, Spec, ValueId};
use crate::model::Weight;
use crate::shards::Shards;
use crate::split;
use crate::ModelError;
use mpinfer_kernels::cpu::{self as k, Gemm};
use mpinfer_kernels::{StoredDType, Tensor};
use std::ops::Range;
use std::sync::Arc;

fn range_of(counts: &[usize], rank: usize) -> Range<usize> {
    let offsets = split::offsets(counts);
    offsets[rank]..offsets[rank + 1]
}

/// Reads `w` restricted to `ranges` along `axis`, the pieces side by side.
fn slice(
    w: &Weight,
    axis: usize,
    ranges: &[Range<usize>],
    dtype: StoredDType,
) -> Result<Arc<Tensor>, ModelError> {
    let piece = |r: &Range<usize>| {
        let ranges: Vec<Range<usize>> = w
            .shape
            .iter()
            .enumerate()
            .map(|(a, &d)| if a == axis { r.clone() } else { 0..d })
            .collect();
        w.read_slice(&ranges)
    };
    let t = match ranges {
        [] => piece(&(0..0))?,
        [r] => piece(r)?,
        _ => {
            let pieces = ranges.iter().map(piece).collect::<Result<Vec<_>, _>>()?;
            k::concat(&pieces.iter().collect::<Vec<_>>(), axis)?
        }
    };
    Ok(Arc::new(crate::exec::round_to(t, dtype)))
}

struct Shard<'a> {
    model: &'a Model,
    spec: &'a Spec,
    plan: &'a TensorPlan,
    rank: usize,
    dtype: StoredDType,
    instrs: Vec<Instr>,
}

pub(super) fn program(
    model: &Model,
    spec: &Spec,
    plan: &TensorPlan,
    rank: usize,
    dtype: StoredDType,
    cpu: &mpinfer_kernels::cpu::Cpu,
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
            consts.fold(model, spec, i, cpu)?;
            continue;
        }
        for (v, l) in &plan.gathers[i] {
            s.gather(*v, l, false);
        }
        s.node(i, &mut consts)?;
    }
    let out = model.outputs[0];
    s.gather(out, &plan.output, true);
    let keep = vec![out];
    let instrs = crate::exec::fuse_posts(s.instrs, spec, &keep);
    Ok(Program::new(instrs, keep, model.values.len()))
}

impl Shard<'_> {
    fn gather(&mut self, v: ValueId, l: &Layout, to_root: bool) {
        if let Layout::Split(shards) = l {
            self.instrs.push(Instr::Comm {
                value: v,
                comm: Comm::Gather {
                    shards: shards.clone(),
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

    /// This rank's share of a value split along `axis`, when it holds none.
    fn empty(&mut self, i: usize, axis: usize) {
        self.run(i, Step::Zeros(Some(axis)), Vec::new());
    }

    fn weight(&self, i: usize, j: usize) -> &Weight {
        let node = &self.model.nodes[i];
        node.input(j)
            .and_then(|v| self.model.weight(v))
            .expect("the plan checked the weight")
    }

    fn node(&mut self, i: usize, consts: &mut Consts) -> Result<(), ModelError> {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        match &self.plan.parts[i] {
            Part::Folded => {}
            Part::Whole => {
                let (step, inputs) = whole_step(model, spec, i, consts)?;
                self.run(i, step, inputs);
            }
            Part::Local { view } => self.local(i, consts, view.clone())?,
            Part::ConvOut(c) => self.conv_out(i, range_of(c, self.rank))?,
            Part::ConvGroups(g) => self.conv_groups(i, range_of(g, self.rank))?,
            Part::ConvIn(s) => {
                let w = self.weight(i, 1);
                let ranges = s.ranges(self.rank, w.shape[1]);
                let step = (s.held(self.rank) > 0)
                    .then(|| {
                        let w = slice(w, 1, &ranges, self.dtype)?;
                        conv_step(model, spec, i, w, None)
                    })
                    .transpose()?;
                self.partial_sum(i, step, 1)?;
            }
            Part::LinearColumns(s) => self.linear_columns(i, s)?,
            Part::LinearRows(s) => {
                let (mut gemm, trans_b) = self.gemm_of(i);
                gemm.relu = false;
                let w = self.weight(i, 1);
                let axis = usize::from(trans_b);
                let ranges = s.ranges(self.rank, w.shape[axis]);
                let step = (s.held(self.rank) > 0)
                    .then(|| slice(w, axis, &ranges, self.dtype))
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

    fn conv_out(&mut self, i: usize, r: Range<usize>) -> Result<(), ModelError> {
        if r.is_empty() {
            self.empty(i, 1);
            return Ok(());
        }
        let node = &self.model.nodes[i];
        let bias = node
            .input(2)
            .map(|_| slice(self.weight(i, 2), 0, std::slice::from_ref(&r), self.dtype))
            .transpose()?;
        let w = slice(self.weight(i, 1), 0, &[r], self.dtype)?;
        let step = conv_step(self.model, self.spec, i, w, bias)?;
        self.run(i, step, vec![In::Value(node.input(0).expect("conv input"))]);
        Ok(())
    }

    /// Groups `r` of a grouped convolution: their input channels, then the
    /// convolution with their weights.
    fn conv_groups(&mut self, i: usize, r: Range<usize>) -> Result<(), ModelError> {
        if r.is_empty() {
            self.empty(i, 1);
            return Ok(());
        }
        let node = &self.model.nodes[i];
        let ws = &self.weight(i, 1).shape;
        let Op::Conv { conv, .. } = &node.op else {
            unreachable!()
        };
        let (per_out, per_in) = (ws[0] / conv.groups, ws[1]);
        let rows = r.start * per_out..r.end * per_out;
        self.instrs.push(Instr::Run {
            node: i,
            step: Step::Channels(r.start * per_in..r.end * per_in),
            inputs: vec![In::Value(node.input(0).expect("conv input"))],
            outputs: node.outputs.clone(),
        });
        let bias = node
            .input(2)
            .map(|_| {
                slice(
                    self.weight(i, 2),
                    0,
                    std::slice::from_ref(&rows),
                    self.dtype,
                )
            })
            .transpose()?;
        let w = slice(self.weight(i, 1), 0, &[rows], self.dtype)?;
        let mut step = conv_step(self.model, self.spec, i, w, bias)?;
        if let Step::Conv { conv, .. } = &mut step {
            conv.groups = r.len();
        }
        self.run(i, step, vec![In::Value(node.outputs[0])]);
        Ok(())
    }

    fn linear_columns(&mut self, i: usize, s: &Shards) -> Result<(), ModelError> {
        let node = &self.model.nodes[i];
        let y_axis = self.spec.shape(node.outputs[0]).len() - 1;
        if s.held(self.rank) == 0 {
            self.empty(i, y_axis);
            return Ok(());
        }
        let (gemm, trans_b) = self.gemm_of(i);
        let w = self.weight(i, 1);
        let axis = if trans_b { 0 } else { 1 };
        let ranges = s.ranges(self.rank, w.shape[axis]);
        let weight = slice(w, axis, &ranges, self.dtype)?;
        let bias = self
            .bias(i, &ranges)?
            .map(|b| Arc::new(Tensor::new(vec![b.len()], b)));
        let step = Step::Linear {
            gemm,
            weight,
            bias,
            post: Vec::new(),
        };
        self.run(
            i,
            step,
            vec![In::Value(node.input(0).expect("linear input"))],
        );
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

    /// Columns `ranges` of a linear node's bias, as `[N]` holds them: read
    /// as those slices of the file when the bias is stored one value per
    /// column.
    fn bias(&self, i: usize, ranges: &[Range<usize>]) -> Result<Option<Vec<f32>>, ModelError> {
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
            let mut t = slice(b, last, ranges, self.dtype)?.data.clone();
            t.iter_mut().for_each(|v| *v *= beta);
            return Ok(Some(t));
        }
        // A scalar broadcast along the row: one value, read whole.
        let t = crate::exec::round_to(b.read()?, self.dtype);
        let whole = crate::exec::load::bias_vector(&t, beta, n).data;
        Ok(Some(
            ranges
                .iter()
                .flat_map(|r| whole[r.clone()].to_vec())
                .collect(),
        ))
    }

    /// This rank's partial sum (zeros when it holds no share), the
    /// allreduce, then the whole bias along `axis`, added once.
    fn partial_sum(&mut self, i: usize, step: Option<Step>, axis: usize) -> Result<(), ModelError> {
        let node = &self.model.nodes[i];
        let y = node.outputs[0];
        match step {
            Some(s) => self.run(i, s, vec![In::Value(node.input(0).expect("input"))]),
            None => self.run(i, Step::Zeros(None), Vec::new()),
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
            _ => self
                .bias(i, std::slice::from_ref(&(0..n)))?
                .unwrap_or_else(|| vec![0.0; n]),
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

    /// A node on its split inputs; constants that span the split axis are
    /// sliced to this rank's share.
    fn local(
        &mut self,
        i: usize,
        consts: &mut Consts,
        view: Option<Shards>,
    ) -> Result<(), ModelError> {
        let node = &self.model.nodes[i];
        let along = self.plan.local_in[i]
            .clone()
            .expect("the plan runs only split values locally");
        if let Some(out) = view {
            let step = Step::View {
                shards: out,
                rank: self.rank,
            };
            self.run(i, step, vec![In::Value(node.input(0).expect("view input"))]);
            return Ok(());
        }
        let mut inputs = Vec::new();
        for &v in &node.inputs {
            inputs.push(self.local_input(i, v, &along, consts)?);
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

    /// One input of a node run on its split: a weight spanning the split
    /// axis sliced to this rank's share of it, anything else as it is.
    fn local_input(
        &self,
        i: usize,
        v: Option<ValueId>,
        along: &Shards,
        consts: &mut Consts,
    ) -> Result<In, ModelError> {
        let (model, spec) = (self.model, self.spec);
        let node = &model.nodes[i];
        let Some((v, w)) = v.and_then(|v| model.weight(v).map(|w| (v, w))) else {
            return consts.input(model, v);
        };
        let y = spec.shape(node.outputs[0]);
        let s = spec.shape(v);
        let at = if matches!(node.op, Op::BatchNorm { .. }) {
            Some(0)
        } else {
            let lead = y.len().saturating_sub(s.len());
            let a = along.axis;
            (a >= lead && s[a - lead] == y[a] && s[a - lead] != 1).then(|| a - lead)
        };
        match at {
            Some(a) => {
                let ranges = along.ranges(self.rank, s[a]);
                Ok(In::Const(slice(w, a, &ranges, self.dtype)?))
            }
            None => consts.input(model, Some(v)),
        }
    }
}
