//! Tensor parallelism: every rank holds a slice of every layer's weights and
//! all ranks work on the same rows.
//!
//! The activation between layers is either whole on every rank or split
//! along its channels (features, for 2-D activations). A layer whose input
//! is whole splits its outputs (conv by output channels, linear by columns);
//! a layer whose input is split reduces partial sums with one allreduce
//! (linear by rows; conv by input channels where that moves fewer bytes than
//! gathering the channels first). Per-channel layers (ReLU, pooling) run on
//! the split as it is. So the linear layers pair up column → row with one
//! allreduce per pair, and the bias is added once, after the reduce.

use super::{Ctx, Outputs, Rows, RunError};
use crate::exec::{concat_channels, round_to, Step};
use crate::model::{Layer, Model, Op, Weight};
use crate::split;
use crate::ModelError;
use mpinfer_collectives::transport::Transport;
use mpinfer_kernels::cpu::{Conv2d, Gemm};
use mpinfer_kernels::{StoredDType, Tensor};
use std::ops::Range;

/// Rows all ranks work on together per step, unless `--batch-size` says.
const DEFAULT_ROWS: usize = 256;

/// How a layer (or a data movement) is divided among the ranks.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Every rank runs the layer whole on the whole activation.
    Whole(usize),
    /// Per-channel layer run on each rank's channels.
    Local(usize),
    /// Conv with whole input, split by output channels (`counts[r]` each).
    ConvOut { layer: usize, counts: Vec<usize> },
    /// Grouped conv with whole input, split by groups (`groups[r]` each).
    ConvGroups { layer: usize, groups: Vec<usize> },
    /// Conv on channel-split input: partial sums, then allreduce + bias.
    ConvIn { layer: usize, counts: Vec<usize> },
    /// Linear with whole input, split by output columns.
    GemmColumns { layer: usize, counts: Vec<usize> },
    /// Linear on feature-split input: partial sums, then allreduce + bias.
    GemmRows { layer: usize, counts: Vec<usize> },
    /// Channel-split activation made whole: `counts[r]` channels of `inner`
    /// values each; `sample` is the whole per-sample shape. Only rank 0
    /// receives it when `to_root`.
    Gather {
        counts: Vec<usize>,
        inner: usize,
        sample: Vec<usize>,
        to_root: bool,
    },
}

#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub ranks: usize,
    pub parts: Vec<Part>,
    /// Per-sample activation elements each part moves (for the byte figures).
    moved: Vec<(Movement, usize)>,
    /// Weight values each rank reads.
    pub rank_weights: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Movement {
    Allgather,
    ToRoot,
    Allreduce,
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
            .map(|&(m, elems)| {
                let e = 4.0 * elems as f64;
                match m {
                    Movement::Allgather => e * (p - 1.0) / p,
                    Movement::ToRoot => e / p,
                    Movement::Allreduce => 2.0 * e * (p - 1.0) / p,
                }
            })
            .sum::<f64>() as u64
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Layout {
    Whole,
    /// Split along axis 1, `counts[r]` per rank.
    Split(Vec<usize>),
}

/// One layer as the planner meets it: its index, and its input and output
/// shapes at batch 1.
struct Site<'a> {
    index: usize,
    layer: &'a Layer,
    x: &'a [usize],
    y: &'a [usize],
}

/// The plan as it grows layer by layer, with the layout the activation has
/// after the parts so far.
struct Planner {
    ranks: usize,
    parts: Vec<Part>,
    moved: Vec<(Movement, usize)>,
    rank_weights: Vec<u64>,
    layout: Layout,
}

/// Divides every layer of `model` among `ranks` ranks.
pub fn plan(model: &Model, ranks: usize) -> Result<TensorPlan, ModelError> {
    let shapes = model.shapes(1)?;
    let input: Vec<usize> = std::iter::once(1)
        .chain(model.sample_shape.iter().copied())
        .collect();
    let mut p = Planner {
        ranks,
        parts: Vec::new(),
        moved: Vec::new(),
        rank_weights: vec![0u64; ranks],
        layout: Layout::Whole,
    };
    for (i, layer) in model.layers.iter().enumerate() {
        let at = Site {
            index: i,
            layer,
            x: if i == 0 { &input } else { &shapes[i - 1] },
            y: &shapes[i],
        };
        match &layer.op {
            Op::Conv { conv, weight, bias } => p.conv(&at, conv, weight, bias.as_ref())?,
            Op::Gemm { gemm, weight, bias } => p.gemm(&at, gemm, weight, bias.as_ref())?,
            Op::Relu | Op::Pool(_) | Op::GlobalAveragePool => p.per_channel(&at),
            Op::Flatten { .. } | Op::Reshape { .. } => p.flatten(&at),
            Op::Softmax { .. } => p.whole(&at),
        }
    }
    let last = shapes.last().cloned().unwrap_or(input);
    p.gather(&last, true);
    Ok(TensorPlan {
        ranks,
        parts: p.parts,
        moved: p.moved,
        rank_weights: p.rank_weights,
    })
}

impl Planner {
    /// Makes a channel-split activation of `shape` whole: on every rank, or
    /// on rank 0 only when `to_root`.
    fn gather(&mut self, shape: &[usize], to_root: bool) {
        if let Layout::Split(counts) = &self.layout {
            self.parts.push(Part::Gather {
                counts: counts.clone(),
                inner: shape[2..].iter().product(),
                sample: shape[1..].to_vec(),
                to_root,
            });
            let elems = shape.iter().product();
            self.moved.push((
                if to_root {
                    Movement::ToRoot
                } else {
                    Movement::Allgather
                },
                elems,
            ));
            self.layout = Layout::Whole;
        }
    }

    /// The layer whole on every rank, on a whole input.
    fn whole(&mut self, at: &Site) {
        self.gather(at.x, false);
        self.parts.push(Part::Whole(at.index));
    }

    fn per_channel(&mut self, at: &Site) {
        self.parts.push(if self.layout == Layout::Whole {
            Part::Whole(at.index)
        } else {
            Part::Local(at.index)
        });
    }

    fn flatten(&mut self, at: &Site) {
        // Flattening [N, C, ...] to [N, C·inner] keeps each rank's channels
        // contiguous: the split carries over, scaled.
        let (x, y) = (at.x, at.y);
        let flattens_at_1 = x.len() >= 2 && y.len() == 2 && y[0] == x[0];
        match &self.layout {
            Layout::Split(counts) if flattens_at_1 => {
                let inner: usize = x[2..].iter().product();
                self.layout = Layout::Split(counts.iter().map(|c| c * inner).collect());
                self.parts.push(Part::Local(at.index));
            }
            _ => self.whole(at),
        }
    }

    fn conv(
        &mut self,
        at: &Site,
        conv: &Conv2d,
        weight: &Weight,
        bias: Option<&Weight>,
    ) -> Result<(), ModelError> {
        let [m, cg, kh, kw] = weight.shape[..] else {
            return Err(at.layer.error("weight is not 4-D".into()));
        };
        let bias_len = bias.map_or(0, |b| b.len()) as u64;
        if conv.groups > 1 {
            self.gather(at.x, false);
            let groups = split::even(conv.groups, self.ranks);
            let per_group = m / conv.groups;
            for (r, g) in groups.iter().enumerate() {
                self.rank_weights[r] += (g * per_group * (cg * kh * kw + 1)) as u64;
            }
            self.layout = Layout::Split(groups.iter().map(|g| g * per_group).collect());
            self.parts.push(Part::ConvGroups {
                layer: at.index,
                groups,
            });
            return Ok(());
        }
        if let Layout::Split(counts) = &self.layout {
            let in_elems: usize = at.x.iter().product();
            let out_elems: usize = at.y.iter().product();
            if 2 * out_elems < in_elems {
                let counts = counts.clone();
                for (r, c) in counts.iter().enumerate() {
                    self.rank_weights[r] += (m * c * kh * kw) as u64 + bias_len;
                }
                self.parts.push(Part::ConvIn {
                    layer: at.index,
                    counts,
                });
                self.moved.push((Movement::Allreduce, out_elems));
                self.layout = Layout::Whole;
                return Ok(());
            }
            self.gather(at.x, false);
        }
        let counts = split::even(m, self.ranks);
        for (r, c) in counts.iter().enumerate() {
            self.rank_weights[r] += (c * (cg * kh * kw + usize::from(bias.is_some()))) as u64;
        }
        self.layout = Layout::Split(counts.clone());
        self.parts.push(Part::ConvOut {
            layer: at.index,
            counts,
        });
        Ok(())
    }

    fn gemm(
        &mut self,
        at: &Site,
        gemm: &Gemm,
        weight: &Weight,
        bias: Option<&Weight>,
    ) -> Result<(), ModelError> {
        let bias_len = bias.map_or(0, |b| b.len()) as u64;
        let (_, k, n) = gemm
            .dims(at.x, &weight.shape)
            .map_err(|e| at.layer.error(e.to_string()))?;
        if gemm.trans_a {
            self.gather(at.x, false);
            for w in self.rank_weights.iter_mut() {
                *w += (k * n) as u64 + bias_len;
            }
            self.parts.push(Part::Whole(at.index));
            return Ok(());
        }
        match &self.layout {
            Layout::Split(counts) => {
                let counts = counts.clone();
                for (r, c) in counts.iter().enumerate() {
                    self.rank_weights[r] += (c * n) as u64 + bias_len;
                }
                self.parts.push(Part::GemmRows {
                    layer: at.index,
                    counts,
                });
                self.moved
                    .push((Movement::Allreduce, at.y.iter().product()));
                self.layout = Layout::Whole;
            }
            Layout::Whole => {
                let counts = split::even(n, self.ranks);
                for (r, c) in counts.iter().enumerate() {
                    self.rank_weights[r] += (c * (k + usize::from(bias.is_some()))) as u64;
                }
                self.layout = Layout::Split(counts.clone());
                self.parts.push(Part::GemmColumns {
                    layer: at.index,
                    counts,
                });
            }
        }
        Ok(())
    }
}

/// One thing a rank does in a tensor-parallel step.
#[derive(Debug)]
enum Action {
    Run(Step),
    /// This rank holds no slice of the layer: an empty output of this
    /// per-sample shape (zero channels).
    Empty(Vec<usize>),
    /// This rank holds no slice of a layer whose partial sums are reduced:
    /// it contributes zeros of this per-sample shape.
    Zeros(Vec<usize>),
    Allreduce,
    Gather {
        counts: Vec<usize>,
        inner: usize,
        sample: Vec<usize>,
        to_root: bool,
    },
}

fn range_of(counts: &[usize], rank: usize) -> Range<usize> {
    let offsets = split::offsets(counts);
    offsets[rank]..offsets[rank + 1]
}

fn all(d: usize) -> Range<usize> {
    0..d
}

/// Reads `w` restricted to `range` along `axis`.
fn slice(
    w: &Weight,
    axis: usize,
    range: Range<usize>,
    dtype: StoredDType,
) -> Result<Tensor, ModelError> {
    let ranges: Vec<Range<usize>> = w
        .shape
        .iter()
        .enumerate()
        .map(|(a, &d)| if a == axis { range.clone() } else { all(d) })
        .collect();
    Ok(round_to(w.read_slice(&ranges)?, dtype))
}

/// What a rank's actions are read from: the model, its shapes at batch 1,
/// and whose slices to take.
struct Shard<'a> {
    model: &'a Model,
    shapes: Vec<Vec<usize>>,
    input: Vec<usize>,
    rank: usize,
    dtype: StoredDType,
}

/// This rank's actions, with its weight slices read from the model file.
fn actions(
    model: &Model,
    plan: &TensorPlan,
    rank: usize,
    dtype: StoredDType,
) -> Result<Vec<Action>, ModelError> {
    let shard = Shard {
        model,
        shapes: model.shapes(1)?,
        input: std::iter::once(1)
            .chain(model.sample_shape.iter().copied())
            .collect(),
        rank,
        dtype,
    };
    let mut out = Vec::new();
    for part in &plan.parts {
        shard.part(part, &mut out)?;
    }
    Ok(fuse(out))
}

fn conv_parts(layer: &Layer) -> (&Conv2d, &Weight, Option<&Weight>) {
    match &layer.op {
        Op::Conv { conv, weight, bias } => (conv, weight, bias.as_ref()),
        op => unreachable!("the plan splits {op:?} as a convolution"),
    }
}

fn gemm_parts(layer: &Layer) -> (&Gemm, &Weight, Option<&Weight>) {
    match &layer.op {
        Op::Gemm { gemm, weight, bias } => (gemm, weight, bias.as_ref()),
        op => unreachable!("the plan splits {op:?} as a linear layer"),
    }
}

impl Shard<'_> {
    /// Layer `i`'s input shape.
    fn x(&self, i: usize) -> &[usize] {
        if i == 0 {
            &self.input
        } else {
            &self.shapes[i - 1]
        }
    }

    fn part(&self, part: &Part, out: &mut Vec<Action>) -> Result<(), ModelError> {
        match part {
            Part::Whole(i) | Part::Local(i) => out.push(self.whole(*i, part)?),
            Part::ConvOut { layer, counts } => out.push(self.conv_out(*layer, counts)?),
            Part::ConvGroups { layer, groups } => self.conv_groups(*layer, groups, out)?,
            Part::ConvIn { layer, counts } => self.conv_in(*layer, counts, out)?,
            Part::GemmColumns { layer, counts } => out.push(self.gemm_columns(*layer, counts)?),
            Part::GemmRows { layer, counts } => self.gemm_rows(*layer, counts, out)?,
            Part::Gather {
                counts,
                inner,
                sample,
                to_root,
            } => out.push(Action::Gather {
                counts: counts.clone(),
                inner: *inner,
                sample: sample.clone(),
                to_root: *to_root,
            }),
        }
        Ok(())
    }

    fn whole(&self, i: usize, part: &Part) -> Result<Action, ModelError> {
        let layer = &self.model.layers[i];
        Ok(Action::Run(match &layer.op {
            Op::Conv { .. } | Op::Gemm { .. } => Step::load(layer, self.dtype)?,
            // On a split the shape constant would not fit this rank's part;
            // the plan keeps only reshapes that flatten.
            Op::Reshape { .. } if matches!(part, Part::Local(_)) => Step::Flatten(1),
            op => Step::plain(op),
        }))
    }

    fn conv_out(&self, layer: usize, counts: &[usize]) -> Result<Action, ModelError> {
        let l = &self.model.layers[layer];
        let (conv, weight, bias) = conv_parts(l);
        let mine = range_of(counts, self.rank);
        if mine.is_empty() {
            return no_channels(l, self.x(layer));
        }
        Ok(Action::Run(conv_rows(
            *conv, weight, bias, mine, self.dtype,
        )?))
    }

    fn conv_groups(
        &self,
        layer: usize,
        groups: &[usize],
        out: &mut Vec<Action>,
    ) -> Result<(), ModelError> {
        let l = &self.model.layers[layer];
        let (conv, weight, bias) = conv_parts(l);
        let mine = range_of(groups, self.rank);
        if mine.is_empty() {
            out.push(no_channels(l, self.x(layer))?);
            return Ok(());
        }
        let per_out = weight.shape[0] / conv.groups;
        let per_in = weight.shape[1];
        let rows = mine.start * per_out..mine.end * per_out;
        out.push(Action::Run(Step::Channels(
            mine.start * per_in..mine.end * per_in,
        )));
        let mut c = *conv;
        c.groups = mine.len();
        out.push(Action::Run(conv_rows(c, weight, bias, rows, self.dtype)?));
        Ok(())
    }

    fn conv_in(
        &self,
        layer: usize,
        counts: &[usize],
        out: &mut Vec<Action>,
    ) -> Result<(), ModelError> {
        let (conv, weight, bias) = conv_parts(&self.model.layers[layer]);
        self.partial_sum(layer, counts, bias, out, |mine| {
            let mut c = *conv;
            c.relu = false;
            Ok(Step::Conv {
                conv: c,
                weight: slice(weight, 1, mine, self.dtype)?,
                bias: None,
            })
        })
    }

    fn gemm_columns(&self, layer: usize, counts: &[usize]) -> Result<Action, ModelError> {
        let (gemm, weight, bias) = gemm_parts(&self.model.layers[layer]);
        let mine = range_of(counts, self.rank);
        if mine.is_empty() {
            return Ok(Action::Empty(vec![0]));
        }
        let axis = if gemm.trans_b { 0 } else { 1 };
        Ok(Action::Run(Step::Gemm {
            gemm: *gemm,
            weight: slice(weight, axis, mine.clone(), self.dtype)?,
            bias: bias
                .map(|b| slice(b, 0, mine.clone(), self.dtype))
                .transpose()?,
        }))
    }

    fn gemm_rows(
        &self,
        layer: usize,
        counts: &[usize],
        out: &mut Vec<Action>,
    ) -> Result<(), ModelError> {
        let (gemm, weight, bias) = gemm_parts(&self.model.layers[layer]);
        self.partial_sum(layer, counts, bias, out, |mine| {
            let axis = if gemm.trans_b { 1 } else { 0 };
            let mut g = *gemm;
            g.relu = false;
            Ok(Step::Gemm {
                gemm: g,
                weight: slice(weight, axis, mine, self.dtype)?,
                bias: None,
            })
        })
    }

    /// A layer split along its input: this rank's partial sum over its
    /// share (zeros when it holds none), then the allreduce and the bias.
    /// The layer's ReLU waits until the sum is whole.
    fn partial_sum(
        &self,
        layer: usize,
        counts: &[usize],
        bias: Option<&Weight>,
        out: &mut Vec<Action>,
        step: impl FnOnce(Range<usize>) -> Result<Step, ModelError>,
    ) -> Result<(), ModelError> {
        let mine = range_of(counts, self.rank);
        let y = self.model.layers[layer].output_shape(self.x(layer))?;
        out.push(if mine.is_empty() {
            Action::Zeros(y[1..].to_vec())
        } else {
            Action::Run(step(mine)?)
        });
        reduce_then_bias(out, bias, y[1], self.dtype)
    }
}

/// The output of a layer this rank holds no channel of.
fn no_channels(layer: &Layer, x: &[usize]) -> Result<Action, ModelError> {
    let mut s = layer.output_shape(x)?[1..].to_vec();
    s[0] = 0;
    Ok(Action::Empty(s))
}

/// The convolution restricted to output channels `rows`.
fn conv_rows(
    conv: Conv2d,
    weight: &Weight,
    bias: Option<&Weight>,
    rows: Range<usize>,
    dtype: StoredDType,
) -> Result<Step, ModelError> {
    Ok(Step::Conv {
        conv,
        weight: slice(weight, 0, rows.clone(), dtype)?,
        bias: bias
            .map(|b| slice(b, 0, rows, dtype).map(|t| t.data))
            .transpose()?,
    })
}

/// Partial sums made whole, then the bias, added once.
fn reduce_then_bias(
    out: &mut Vec<Action>,
    bias: Option<&Weight>,
    channels: usize,
    dtype: StoredDType,
) -> Result<(), ModelError> {
    out.push(Action::Allreduce);
    out.push(Action::Run(Step::Bias {
        bias: match bias {
            Some(b) => round_to(b.read()?, dtype).data,
            None => vec![0.0; channels],
        },
        relu: false,
    }));
    Ok(())
}

/// A ReLU right after a step with an epilogue runs inside that step.
fn fuse(actions: Vec<Action>) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::with_capacity(actions.len());
    for a in actions {
        if let Action::Run(Step::Relu) = a {
            if let Some(Action::Run(prev)) = out.last_mut() {
                let mut fused = crate::exec::fuse_relu(vec![prev.clone(), Step::Relu]);
                if fused.len() == 1 {
                    *prev = fused.pop().unwrap();
                    continue;
                }
            }
        }
        out.push(a);
    }
    out
}

fn weight_values(actions: &[Action]) -> u64 {
    let steps: Vec<Step> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Run(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    super::data::step_weight_bytes(&steps)
}

pub(crate) fn run<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
) -> Result<(), RunError> {
    let rank = ctx.comm.rank();
    let plan = plan(ctx.model, ctx.comm.size())?;
    let actions = actions(ctx.model, &plan, rank, ctx.opts.dtype)?;
    ctx.weight_bytes = weight_values(&actions);
    let total = input.rows();
    let rows = ctx.opts.batch_size.unwrap_or(DEFAULT_ROWS);
    let mut first = 0;
    loop {
        let len = rows.min(total - first);
        let mut x = ctx.read(input, first..first + len)?;
        for action in &actions {
            x = match action {
                Action::Run(step) => ctx.clock.compute(|| step.run(ctx.cpu, x))?,
                Action::Empty(s) | Action::Zeros(s) => {
                    Tensor::zeros(std::iter::once(len).chain(s.iter().copied()).collect())
                }
                Action::Allreduce => {
                    ctx.allreduce_sum(&mut x.data)?;
                    x
                }
                Action::Gather {
                    counts,
                    inner,
                    sample,
                    to_root,
                } => {
                    let elems: Vec<usize> = counts.iter().map(|c| len * c * inner).collect();
                    let root = to_root.then_some(0);
                    let blocks = ctx.gatherv(&x.data, &elems, root)?;
                    let shape: Vec<usize> =
                        std::iter::once(len).chain(sample.iter().copied()).collect();
                    if root.is_some_and(|r| r != rank) {
                        Tensor::zeros(vec![0])
                    } else {
                        Tensor::new(shape, concat_channels(&blocks, counts, len, *inner))
                    }
                }
            };
        }
        // Every rank worked on every row.
        ctx.rows_done += len as u64;
        if rank == 0 {
            outputs.computed(first, &x)?;
            outputs.collected(first, &x)?;
        }
        first += len;
        if first >= total {
            break;
        }
    }
    Ok(())
}
