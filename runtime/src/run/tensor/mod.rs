//! Tensor parallelism on a graph: every rank holds a slice of the weights
//! and all ranks work on the same rows.
//!
//! Each value is either whole on every rank or split along one axis
//! ([`Shards`]). A convolution on a whole input splits its output channels
//! (a grouped one, its groups); on a channel-split input it sums partial
//! products with one allreduce where that moves fewer bytes than gathering
//! the channels. A linear layer on a whole input splits its output columns,
//! and on a feature-split input its rows, then one allreduce: linear pairs
//! run column then row. Attention runs column then row the same way, split
//! by heads: the query, key and value projections by whole heads, the
//! attention on each rank's heads, the output projection by rows (one
//! allreduce per attention block). Per-channel and per-head work, reshapes
//! and transposes that keep each rank's share whole, and concatenations of
//! split values run on the split as they are, constants sliced to match
//! ([`rules`]). Any other node gathers its split inputs first; the output
//! is gathered on rank 0.

mod plan;
mod rules;
mod shard;

pub use plan::plan;

use super::{Ctx, Outputs, Rows, RunError};
use crate::exec::{Operand, Program};
use crate::graph::{Model, ValueId};
use crate::shards::{assemble, Shards};
use mpinfer_collectives::transport::Transport;
use mpinfer_kernels::Tensor;
use std::time::Instant;

/// Rows all ranks work on together per step, unless `--batch-size` says.
const DEFAULT_ROWS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    Whole,
    Split(Shards),
}

/// How one node is divided among the ranks.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Not run: folded while planning.
    Folded,
    Whole,
    /// Run on each rank's split as it is; a `view` reshapes it to that
    /// split.
    Local {
        view: Option<Shards>,
    },
    ConvOut(Vec<usize>),
    ConvGroups(Vec<usize>),
    /// Partial sums over input channels, then allreduce and bias.
    ConvIn(Shards),
    LinearColumns(Shards),
    /// Partial sums over input features, then allreduce and bias.
    LinearRows(Shards),
}

#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub ranks: usize,
    pub parts: Vec<Part>,
    /// Per node: split values made whole before it runs.
    pub gathers: Vec<Vec<(ValueId, Layout)>>,
    /// The output's layout, gathered on rank 0 at the end.
    pub output: Layout,
    /// Per node run locally: the split its constants are sliced to match.
    pub local_in: Vec<Option<Shards>>,
    /// Per-sample activation elements moved: (allreduce?, elements).
    moved: Vec<(bool, usize)>,
    /// Weight values each rank reads.
    pub rank_weights: Vec<u64>,
    /// Per linear node split by columns: how many columns it has.
    columns: std::collections::HashMap<usize, usize>,
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

    /// Per-sample elements moved, an allreduce counted twice: the measure
    /// the planner minimises.
    fn comm_elements(&self) -> usize {
        self.moved
            .iter()
            .map(|&(reduce, e)| if reduce { 2 * e } else { e })
            .sum()
    }

    /// Where each gather and reduce happens, and which layers are split by
    /// heads, one line each.
    pub fn describe(&self, model: &Model) -> Vec<String> {
        let mut out = Vec::new();
        for (i, node) in model.nodes.iter().enumerate() {
            for (v, _) in &self.gathers[i] {
                out.push(format!(
                    "allgather {} before {}",
                    model.values[*v].name, node.name
                ));
            }
            match &self.parts[i] {
                Part::ConvIn(_) | Part::LinearRows(_) => {
                    out.push(format!("allreduce after {} ({})", node.name, node.op_type))
                }
                Part::LinearColumns(s) => {
                    let n = *self.columns.get(&i).unwrap_or(&s.period());
                    if s.period() < n {
                        out.push(format!(
                            "split {} ({}) by heads: {} runs of {} columns, {:?} a rank in each",
                            node.name,
                            node.op_type,
                            n / s.period(),
                            s.period(),
                            s.segments[0]
                        ));
                    }
                }
                _ => {}
            }
        }
        if self.output != Layout::Whole {
            out.push(format!("gather {} on rank 0", model.output_names()[0]));
        }
        out
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
    let program = shard::program(
        ctx.model,
        &spec1,
        &plan,
        rank,
        ctx.opts.dtype,
        ctx.exec.cpu(),
    )?;
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
    let (model, exec) = (ctx.model, ctx.exec);
    let (started, comm_before) = (Instant::now(), ctx.clock.comm);
    let mut comm =
        |v: ValueId, x: Operand<'_>| -> Result<(), RunError> { collective(ctx, x, spec.shape(v)) };
    let mut ys = exec.run(program, model, &spec, vec![(model.input, x)], &mut comm)?;
    let in_comm = ctx.clock.comm - comm_before;
    ctx.clock
        .charge_compute(started.elapsed().saturating_sub(in_comm));
    Ok(ys.swap_remove(0))
}

/// One collective of the program on its value, whole shaped `whole`.
fn collective<T: Transport>(
    ctx: &mut Ctx<'_, T>,
    x: Operand<'_>,
    whole: &[usize],
) -> Result<(), RunError> {
    match x {
        Operand::Partial(sums) => ctx.allreduce_sum(sums),
        Operand::Shard {
            shards,
            to_root,
            value: t,
        } => {
            let a = shards.axis;
            let outer: usize = whole[..a].iter().product();
            let inner: usize = whole[a + 1..].iter().product();
            let ranks = ctx.comm.size();
            let elems: Vec<usize> = (0..ranks)
                .map(|r| outer * shards.local(r, whole[a]) * inner)
                .collect();
            let root = to_root.then_some(0);
            let sent = ctx.gatherv(&t.data, &elems, root)?;
            if root.is_some_and(|r| r != ctx.comm.rank()) {
                *t = Tensor::zeros(vec![0]);
            } else {
                let data = assemble(&sent, shards, ranks, outer, whole[a], inner);
                *t = Tensor::new(whole.to_vec(), data);
            }
            Ok(())
        }
    }
}
