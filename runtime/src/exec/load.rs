//! Programs built from the graph: each node's step with its weights read.

use super::fuse::fuse_posts;
use super::program::{In, Instr, Program};
use super::step::Step;
use super::{Arg, Backend};
use crate::graph::infer::conv_at;
use crate::graph::{Elem, Model, Op, Spatial, Spec, ValueId};
use crate::model::Weight;
use crate::ModelError;
use mpinfer_kernels::cpu::{Cpu, Gemm};
use mpinfer_kernels::{Stored, StoredDType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Rounds values to what `dtype` can hold: weights stored in 16 bits carry
/// that precision, though compute widens them to f32.
pub fn round_to(t: Tensor, dtype: StoredDType) -> Tensor {
    match dtype {
        StoredDType::F32 => t,
        _ => Tensor::new(t.shape.clone(), Stored::from_f32(&t.data, dtype).to_f32()),
    }
}

/// The nodes `nodes` (indices into the graph, in order) whole: what a rank
/// runs under data parallelism, or a pipeline stage. Returns the values in
/// `keep`. `spec` is the model at any batch size (shapes other than the
/// batch's do not depend on it).
pub fn load_program(
    model: &Model,
    spec: &Spec,
    nodes: &[usize],
    keep: Vec<ValueId>,
    dtype: StoredDType,
    cpu: &Cpu,
) -> Result<Program, ModelError> {
    let mut consts = Consts::new(dtype);
    let mut instrs = Vec::new();
    for &i in nodes {
        if !spec.runs[i] {
            consts.fold(model, spec, i, cpu)?;
            continue;
        }
        let (step, inputs) = whole_step(model, spec, i, &mut consts)?;
        instrs.push(Instr::Run {
            node: i,
            step,
            inputs,
            outputs: model.nodes[i].outputs.clone(),
        });
    }
    let instrs = fuse_posts(instrs, spec, &keep);
    Ok(Program::new(instrs, keep, model.values.len()))
}

/// Constants a program holds, each read once.
pub struct Consts {
    dtype: StoredDType,
    read: HashMap<ValueId, Arc<Tensor>>,
}

impl Consts {
    pub fn new(dtype: StoredDType) -> Consts {
        Consts {
            dtype,
            read: HashMap::new(),
        }
    }

    /// A node input: a weight (read whole) or folded value as a constant,
    /// anything else as the value it is.
    pub fn input(&mut self, model: &Model, v: Option<ValueId>) -> Result<In, ModelError> {
        let Some(v) = v else { return Ok(In::Absent) };
        if let Some(t) = self.read.get(&v) {
            return Ok(In::Const(t.clone()));
        }
        match model.weight(v) {
            Some(w) => {
                let t = Arc::new(round_to(w.read()?, self.dtype));
                self.read.insert(v, t.clone());
                Ok(In::Const(t))
            }
            None => Ok(In::Value(v)),
        }
    }

    pub fn weight(&self, w: &Weight) -> Result<Arc<Tensor>, ModelError> {
        Ok(Arc::new(round_to(w.read()?, self.dtype)))
    }

    /// Evaluates a node on constants only (a subgraph over weights) once.
    pub fn fold(
        &mut self,
        model: &Model,
        spec: &Spec,
        i: usize,
        cpu: &Cpu,
    ) -> Result<(), ModelError> {
        let node = &model.nodes[i];
        if node
            .outputs
            .iter()
            .all(|&v| spec.known(v).is_some() || model.values[v].elem != Elem::Float)
        {
            return Ok(());
        }
        let inputs: Vec<In> = node
            .inputs
            .iter()
            .map(|&v| self.input(model, v))
            .collect::<Result<_, _>>()?;
        let known: Vec<_> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| spec.known(v)))
            .collect();
        let args = inputs
            .iter()
            .zip(&known)
            .map(|(x, k)| match (x, k) {
                (In::Const(t), _) => Arg::Host(t.as_ref()),
                (_, Some(crate::graph::Known::Float(t))) => Arg::Host(t.as_ref()),
                _ => Arg::Absent,
            })
            .collect();
        let ys = cpu.run(&Step::Node(node.op.clone()), args, &known)?;
        for (&v, y) in node.outputs.iter().zip(ys) {
            self.read.insert(v, Arc::new(y));
        }
        Ok(())
    }
}

/// Node `i` whole, with its weights in memory.
pub(crate) fn whole_step(
    model: &Model,
    spec: &Spec,
    i: usize,
    consts: &mut Consts,
) -> Result<(Step, Vec<In>), ModelError> {
    let node = &model.nodes[i];
    let weight = |j: usize| node.input(j).and_then(|v| model.weight(v));
    let x = || In::Value(node.input(0).expect("checked while planning"));
    match &node.op {
        Op::Conv { .. } if weight(1).is_some() => {
            let bias = weight(2).map(|b| consts.weight(b)).transpose()?;
            let step = conv_step(
                model,
                spec,
                i,
                consts.weight(weight(1).expect("checked"))?,
                bias,
            )?;
            Ok((step, vec![x()]))
        }
        Op::Gemm(g) if linear_gemm(model, spec, i).is_some() => {
            let (gemm, bias) = linear_gemm(model, spec, i).expect("checked");
            let bias = bias
                .map(|b| {
                    Ok::<_, ModelError>(Arc::new(bias_vector(
                        &b.read()?,
                        g.beta,
                        gemm_n(g, weight(1).expect("checked")),
                    )))
                })
                .transpose()?;
            let w = consts.weight(weight(1).expect("checked"))?;
            Ok((
                Step::Linear {
                    gemm,
                    weight: w,
                    bias,
                    post: Vec::new(),
                },
                vec![x()],
            ))
        }
        Op::MatMul if matmul_weight(model, spec, i) => {
            let w = consts.weight(weight(1).expect("checked"))?;
            let bias = weight(2).map(|b| consts.weight(b)).transpose()?;
            Ok((
                Step::Linear {
                    gemm: Gemm::default(),
                    weight: w,
                    bias,
                    post: Vec::new(),
                },
                vec![x()],
            ))
        }
        Op::BatchNorm { epsilon } if (1..5).all(|j| weight(j).is_some()) => {
            let p = |j: usize| weight(j).expect("checked").read().map(|t| t.data);
            let (g, b, m, v) = (p(1)?, p(2)?, p(3)?, p(4)?);
            let (scale, shift) = super::batch_norm_affine(&g, &b, &m, &v, *epsilon);
            Ok((
                Step::Affine {
                    scale: Arc::new(scale),
                    shift: Arc::new(shift),
                },
                vec![x()],
            ))
        }
        op => {
            let inputs = node
                .inputs
                .iter()
                .map(|&v| consts.input(model, v))
                .collect::<Result<_, _>>()?;
            Ok((Step::Node(op.clone()), inputs))
        }
    }
}

/// A Conv's step for the weight (rows) and bias given.
pub(crate) fn conv_step(
    model: &Model,
    spec: &Spec,
    i: usize,
    weight: Arc<Tensor>,
    bias: Option<Arc<Tensor>>,
) -> Result<Step, ModelError> {
    let node = &model.nodes[i];
    let Op::Conv {
        conv,
        spatial,
        auto_pad,
    } = &node.op
    else {
        unreachable!("called for Conv nodes")
    };
    let x = spec.shape(node.input(0).expect("checked"));
    let w_whole = spec.shape(node.input(1).expect("checked"));
    let (c, _, _) = conv_at(conv, *spatial, *auto_pad, x, w_whole).map_err(|m| node.error(m))?;
    let one_d = *spatial == Spatial::One;
    let weight = if one_d {
        let s = &weight.shape;
        Arc::new(Tensor {
            shape: vec![s[0], s[1], 1, s[2]],
            data: weight.data.clone(),
        })
    } else {
        weight
    };
    Ok(Step::Conv {
        conv: c,
        one_d,
        weight,
        bias: bias.map(|b| Arc::new(b.data.clone())),
        post: Vec::new(),
    })
}

/// A Gemm by a constant B with a bias that broadcasts along rows: the
/// attributes the linear step takes and its C.
pub(crate) fn linear_gemm<'m>(
    model: &'m Model,
    spec: &Spec,
    i: usize,
) -> Option<(Gemm, Option<&'m Weight>)> {
    let node = &model.nodes[i];
    let Op::Gemm(g) = &node.op else { return None };
    let w = model.weight(node.input(1)?)?;
    let n = gemm_n(g, w);
    let c = match node.input(2) {
        None => None,
        Some(v) => {
            let c = model.weight(v)?;
            let s = spec.shape(v);
            let rows: usize = s.iter().rev().skip(1).product();
            let cols = s.last().copied().unwrap_or(1);
            if s.len() > 2 || rows != 1 || (cols != n && cols != 1) {
                return None;
            }
            (g.beta != 0.0).then_some(c)
        }
    };
    let mut gemm = *g;
    gemm.beta = 1.0;
    Some((gemm, c))
}

pub(crate) fn gemm_n(g: &Gemm, w: &Weight) -> usize {
    if g.trans_b {
        w.shape[0]
    } else {
        w.shape[1]
    }
}

/// `beta · C` as `[n]`.
pub(crate) fn bias_vector(c: &Tensor, beta: f32, n: usize) -> Tensor {
    let v = &c.data;
    Tensor::new(
        vec![n],
        (0..n).map(|j| beta * v[j % v.len().max(1)]).collect(),
    )
}

/// A MatMul by a constant matrix on an input of two or more axes.
pub(crate) fn matmul_weight(model: &Model, spec: &Spec, i: usize) -> bool {
    let node = &model.nodes[i];
    let w2d = node
        .input(1)
        .and_then(|v| model.weight(v))
        .is_some_and(|w| w.shape.len() == 2);
    let bias_ok = node.input(2).is_none_or(|v| model.weight(v).is_some());
    w2d && bias_ok && node.input(0).is_some_and(|x| spec.shape(x).len() >= 2)
}
