//! A program: the steps one rank runs, in order, over the graph's values.

use super::step::Step;
use super::{Arg, Backend};
use crate::graph::{Known, Model, Spec, ValueId};
use crate::shards::Shards;
use crate::ModelError;
use mpinfer_kernels::Tensor;
use std::sync::Arc;

/// Where a step's input comes from.
#[derive(Clone, Debug)]
pub enum In {
    /// A value of the graph: computed, or known while planning.
    Value(ValueId),
    /// A constant this program holds (a weight, or a folded subgraph).
    Const(Arc<Tensor>),
    Absent,
}

/// What a collective works on, on the host.
pub enum Operand<'a> {
    /// Partial sums to add up across ranks in place: a whole value, or one
    /// chunk of it (the sum of each element is on its own).
    Partial(&'a mut [f32]),
    /// This rank's shard of a split value, replaced by the whole value (or,
    /// when only the root gathers, by nothing on the other ranks).
    Shard {
        shards: &'a Shards,
        to_root: bool,
        value: &'a mut Tensor,
    },
}

/// A collective on a value, carried out by the strategy.
#[derive(Clone, Debug, PartialEq)]
pub enum Comm {
    /// Partial sums made whole on every rank.
    Allreduce,
    /// A split value made whole: on every rank, or on rank 0 only when
    /// `to_root`.
    Gather { shards: Shards, to_root: bool },
}

#[derive(Clone, Debug)]
pub enum Instr {
    Run {
        /// The graph node, for messages.
        node: usize,
        step: Step,
        inputs: Vec<In>,
        outputs: Vec<ValueId>,
    },
    Comm {
        value: ValueId,
        comm: Comm,
    },
}

impl Instr {
    fn reads(&self) -> Vec<ValueId> {
        match self {
            Instr::Run { inputs, .. } => inputs
                .iter()
                .filter_map(|i| match i {
                    In::Value(v) => Some(*v),
                    _ => None,
                })
                .collect(),
            Instr::Comm { value, .. } => vec![*value],
        }
    }

    fn writes(&self) -> Vec<ValueId> {
        match self {
            Instr::Run { outputs, .. } => outputs.clone(),
            Instr::Comm { value, .. } => vec![*value],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Program {
    pub instrs: Vec<Instr>,
    /// Values the program returns, in order.
    pub keep: Vec<ValueId>,
    /// Per instruction: values dead after it.
    free: Vec<Vec<ValueId>>,
    /// Per instruction: the index of the last instruction referring to
    /// each value it reads, to know which inputs it may consume.
    last: Vec<usize>,
}

impl Program {
    pub fn new(instrs: Vec<Instr>, keep: Vec<ValueId>, values: usize) -> Program {
        let mut last = vec![usize::MAX; values];
        for (i, ins) in instrs.iter().enumerate() {
            for v in ins.reads().into_iter().chain(ins.writes()) {
                last[v] = i;
            }
        }
        let mut free = vec![Vec::new(); instrs.len()];
        for (v, &i) in last.iter().enumerate() {
            if i != usize::MAX && !keep.contains(&v) {
                free[i].push(v);
            }
        }
        Program {
            instrs,
            keep,
            free,
            last,
        }
    }

    /// Weight values held by the program's steps and constants.
    pub fn weight_values(&self) -> u64 {
        self.instrs
            .iter()
            .map(|i| match i {
                Instr::Run { step, inputs, .. } => {
                    step.weight_values()
                        + inputs
                            .iter()
                            .map(|x| match x {
                                In::Const(t) => t.len(),
                                _ => 0,
                            })
                            .sum::<usize>()
                }
                Instr::Comm { .. } => 0,
            })
            .sum::<usize>() as u64
    }

    /// Runs the program on `inputs` (values already computed: the graph
    /// input, or what an earlier stage sent) and returns the kept values.
    /// `comm` carries out each collective on its value.
    pub fn run<B: Backend, E: From<ModelError>>(
        &self,
        backend: &B,
        model: &Model,
        spec: &Spec,
        inputs: Vec<(ValueId, Tensor)>,
        comm: &mut dyn FnMut(ValueId, Operand<'_>) -> Result<(), E>,
    ) -> Result<Vec<Tensor>, E> {
        let mut values: Vec<Option<B::Value>> = (0..model.values.len()).map(|_| None).collect();
        for (v, t) in inputs {
            values[v] = Some(backend.upload(t)?);
        }
        for (i, ins) in self.instrs.iter().enumerate() {
            match ins {
                Instr::Run {
                    node,
                    step,
                    inputs,
                    outputs,
                } => {
                    let ys = self
                        .run_step(backend, model, spec, &mut values, i, step, inputs, outputs)
                        .map_err(|e| E::from(in_node(model, *node, e)))?;
                    for (&v, y) in outputs.iter().zip(ys) {
                        values[v] = Some(y);
                    }
                }
                // Collectives run on the host.
                Instr::Comm { value, comm: c } => {
                    let v = values[*value]
                        .take()
                        .expect("a collective's value is computed before it");
                    let v = backend.communicate(v, c, &mut |x| comm(*value, x))?;
                    values[*value] = Some(v);
                }
            }
            for &v in &self.free[i] {
                if let Some(t) = values[v].take() {
                    backend.release(t);
                }
            }
        }
        self.keep
            .iter()
            .map(|&v| match values[v].take() {
                Some(t) => Ok(backend.download(t)?),
                None => Ok(Tensor::zeros(vec![0])),
            })
            .collect()
    }

    /// Input `x` of instruction `i`: taken when this is its last read.
    fn take_or_copy<B: Backend>(
        &self,
        backend: &B,
        values: &mut [Option<B::Value>],
        i: usize,
        x: &In,
    ) -> Result<B::Value, ModelError> {
        let In::Value(v) = x else {
            unreachable!("a view reads a value")
        };
        let last = self.last[*v] == i && !self.keep.contains(v);
        match (last, &values[*v]) {
            (true, _) => Ok(values[*v].take().expect("computed before it")),
            (false, Some(t)) => backend.duplicate(t),
            (false, None) => unreachable!("a view's input is computed before it"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step<B: Backend>(
        &self,
        backend: &B,
        model: &Model,
        spec: &Spec,
        values: &mut [Option<B::Value>],
        i: usize,
        step: &Step,
        inputs: &[In],
        outputs: &[ValueId],
    ) -> Result<Vec<B::Value>, ModelError> {
        match step {
            Step::Zeros(empty) => {
                let mut shape = spec.shape(outputs[0]).to_vec();
                if let Some(a) = empty {
                    shape[*a] = 0;
                }
                return Ok(vec![backend.zeros(shape)?]);
            }
            // A reshape of this rank's share: the whole output's shape at
            // this batch size, with the rank's part of the split axis.
            Step::View { shards, rank } => {
                let mut shape = spec.shape(outputs[0]).to_vec();
                shape[shards.axis] = shards.local(*rank, shape[shards.axis]);
                let x = self.take_or_copy(backend, values, i, &inputs[0])?;
                return Ok(vec![backend.reshape(x, shape)?]);
            }
            _ => {}
        }
        // A value read once, by its last reader (or rewritten by it), is
        // handed over so the step can work in its buffer.
        let consumed: Vec<Option<B::Value>> = inputs
            .iter()
            .map(|x| match x {
                In::Value(v)
                    if (self.last[*v] == i && !self.keep.contains(v) || outputs.contains(v))
                        && inputs
                            .iter()
                            .filter(|y| matches!(y, In::Value(w) if w == v))
                            .count()
                            == 1 =>
                {
                    values[*v].take()
                }
                _ => None,
            })
            .collect();
        let values: &[Option<B::Value>] = values;
        let mut known: Vec<Option<&Known>> = Vec::with_capacity(inputs.len());
        let mut args = Vec::with_capacity(inputs.len());
        for (x, own) in inputs.iter().zip(consumed) {
            let (arg, k) = match (x, own) {
                (_, Some(t)) => (Arg::Owned(t), None),
                (In::Value(v), None) => match (&values[*v], spec.known(*v)) {
                    (Some(t), _) => (Arg::Ref(t), None),
                    (None, Some(Known::Float(t))) => (Arg::Host(t.as_ref()), spec.known(*v)),
                    (None, Some(k)) => (Arg::Absent, Some(k)),
                    (None, None) => {
                        return Err(ModelError::Kernel(mpinfer_kernels::KernelError::Invalid {
                            op: "executor",
                            what: format!(
                                "input {} is not computed on this rank",
                                model.values[*v].name
                            ),
                        }))
                    }
                },
                (In::Const(t), None) => (Arg::Host(t.as_ref()), None),
                (In::Absent, None) => (Arg::Absent, None),
            };
            args.push(arg);
            known.push(k);
        }
        backend.run(step, args, &known)
    }
}

/// A kernel's error, said of the node it ran.
fn in_node(model: &Model, node: usize, e: ModelError) -> ModelError {
    match e {
        ModelError::Kernel(k) => model.nodes[node].error(k.to_string()),
        other => other,
    }
}
