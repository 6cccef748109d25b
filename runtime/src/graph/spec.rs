//! A model at one batch size: every value's shape, the integer values
//! (shapes, indices) evaluated, and which nodes run at run time.
//!
//! A value is *batched* when it depends on the graph input: only those are
//! computed at run time. `batch.rs` proves, by comparing two batch sizes,
//! that no node mixes the samples of a batch.

use super::infer::{dims_of, infer, slice_params, Input};
use super::op::{gather_indices, norm_axis, Compare, Elem, Op};
use super::{Constant, Ints, Model, ValueId};
use crate::ModelError;
use mpinfer_kernels::cpu::Binary;
use mpinfer_kernels::Tensor;
use std::sync::Arc;

/// Most values a float value may have for one batch: far above any real
/// model, low enough that later products of shapes cannot overflow.
const MAX_VALUES: usize = 1 << 40;

/// Most values of an integer or filled-in tensor evaluated while planning,
/// which are held in memory then.
const MAX_KNOWN: usize = 1 << 24;

/// The element count of `shape`, refused above `limit`.
fn checked_count(shape: &[usize], limit: usize) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= limit)
        .ok_or_else(|| format!("shape {shape:?} has more than {limit} values"))
}

/// A value known while planning.
#[derive(Clone, Debug)]
pub enum Known {
    Ints(Ints),
    /// A float filled in from a computed shape (ConstantOfShape).
    Float(Arc<Tensor>),
}

#[derive(Debug)]
pub struct Spec {
    pub batch: usize,
    shapes: Vec<Vec<usize>>,
    known: Vec<Option<Known>>,
    /// Per value: depends on the graph input.
    pub batched: Vec<bool>,
    /// Per node: computed at run time (some input is batched and its
    /// outputs are not all known).
    pub runs: Vec<bool>,
}

impl Spec {
    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.shapes[v]
    }

    pub fn known(&self, v: ValueId) -> Option<&Known> {
        self.known[v].as_ref()
    }

    pub fn ints(&self, v: ValueId) -> Option<&Ints> {
        match &self.known[v] {
            Some(Known::Ints(t)) => Some(t),
            _ => None,
        }
    }
}

impl Model {
    /// The model at batch size `batch`.
    pub fn spec(&self, batch: usize) -> Result<Spec, ModelError> {
        let n = self.values.len();
        let mut spec = Spec {
            batch,
            shapes: vec![Vec::new(); n],
            known: vec![None; n],
            batched: vec![false; n],
            runs: vec![false; self.nodes.len()],
        };
        spec.shapes[self.input] = std::iter::once(batch)
            .chain(self.sample_shape.iter().copied())
            .collect();
        spec.batched[self.input] = true;
        for (v, value) in self.values.iter().enumerate() {
            match &value.constant {
                Some(Constant::Weight(w)) => spec.shapes[v] = w.shape.clone(),
                Some(Constant::Ints(t)) => {
                    spec.shapes[v] = t.shape.clone();
                    spec.known[v] = Some(Known::Ints(t.clone()));
                }
                None => {}
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            self.spec_node(&mut spec, i).map_err(|m| {
                node.error(format!("{m} (input shapes {:?})", in_shapes(&spec, node)))
            })?;
        }
        Ok(spec)
    }

    fn spec_node(&self, spec: &mut Spec, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let batched = node.inputs.iter().flatten().any(|&v| spec.batched[v]);
        let float_out = node
            .outputs
            .iter()
            .any(|&v| self.values[v].elem == Elem::Float);
        let all_known = node
            .inputs
            .iter()
            .flatten()
            .all(|&v| spec.known[v].is_some());
        if all_known && (!float_out || matches!(node.op, Op::ConstantOfShape { .. })) {
            let out = evaluate(&node.op, node, spec)?;
            for (&v, k) in node.outputs.iter().zip(out) {
                spec.shapes[v] = match &k {
                    Known::Ints(t) => t.shape.clone(),
                    Known::Float(t) => t.shape.clone(),
                };
                spec.known[v] = Some(k);
                spec.batched[v] = batched;
            }
            return Ok(());
        }
        let known_or_weight = node
            .inputs
            .iter()
            .flatten()
            .all(|&v| spec.known[v].is_some() || self.weight(v).is_some());
        let from_shapes = node
            .inputs
            .iter()
            .flatten()
            .any(|&v| spec.known[v].is_some());
        if float_out && known_or_weight && from_shapes {
            // Floats computed from shapes (a scale of 1/√d taken from a
            // dimension, divided by a constant): known while planning, as
            // the integers are.
            let k = evaluate_float(self, node, spec)?;
            let v = node.outputs[0];
            spec.shapes[v] = match &k {
                Known::Float(t) => t.shape.clone(),
                Known::Ints(t) => t.shape.clone(),
            };
            spec.known[v] = Some(k);
            spec.batched[v] = batched;
            return Ok(());
        }
        if let Op::Shape { start, end } = node.op {
            let x = &spec.shapes[node.input(0).ok_or("no input")?];
            let t = Ints::vector(
                shape_range(x, start, end)
                    .iter()
                    .map(|&d| d as i64)
                    .collect(),
            );
            let v = node.outputs[0];
            spec.shapes[v] = t.shape.clone();
            spec.known[v] = Some(Known::Ints(t));
            spec.batched[v] = batched;
            return Ok(());
        }
        if !float_out {
            return Err("an integer value computed from run-time data is not supported".into());
        }
        let inputs = inputs_of(node, spec);
        let shapes = infer(&node.op, &inputs, node.outputs.len())?;
        for s in &shapes {
            checked_count(s, MAX_VALUES)?;
        }
        for (&v, s) in node.outputs.iter().zip(shapes) {
            spec.shapes[v] = s;
            spec.batched[v] = batched;
        }
        spec.runs[i] = batched;
        Ok(())
    }
}

/// A node's inputs as shape inference takes them: shape, and value where it
/// is known while planning.
pub(crate) fn inputs_of<'a>(node: &super::Node, spec: &'a Spec) -> Vec<Option<Input<'a>>> {
    node.inputs
        .iter()
        .map(|v| {
            v.map(|v| Input {
                shape: &spec.shapes[v],
                known: spec.known[v].as_ref(),
            })
        })
        .collect()
}

fn in_shapes(spec: &Spec, node: &super::Node) -> Vec<Vec<usize>> {
    node.inputs
        .iter()
        .map(|v| v.map(|v| spec.shapes[v].clone()).unwrap_or_default())
        .collect()
}

fn shape_range(x: &[usize], start: i64, end: Option<i64>) -> Vec<usize> {
    let r = x.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    x[s..e.max(s)].to_vec()
}

/// Evaluates a node whose inputs are all known.
fn evaluate(op: &Op, node: &super::Node, spec: &Spec) -> Result<Vec<Known>, String> {
    let int = |i: usize| -> Result<&Ints, String> {
        node.input(i)
            .and_then(|v| spec.ints(v))
            .ok_or_else(|| format!("input {i} must be an integer tensor"))
    };
    let inputs = inputs_of(node, spec);
    let bad = |why: &str| Err(format!("{why} on integers is not supported"));
    let out = match op {
        Op::Shape { start, end } => {
            let x = &spec.shapes[node.input(0).ok_or("no input")?];
            Ints::vector(
                shape_range(x, *start, *end)
                    .iter()
                    .map(|&d| d as i64)
                    .collect(),
            )
        }
        Op::Identity | Op::Cast { .. } => int(0)?.clone(),
        Op::Binary(b) => {
            let f = match b {
                Binary::Add => |a: i64, b: i64| a.wrapping_add(b),
                Binary::Sub => |a: i64, b: i64| a.wrapping_sub(b),
                Binary::Mul => |a: i64, b: i64| a.wrapping_mul(b),
                // ONNX integer division truncates, as C does.
                Binary::Div => |a: i64, b: i64| if b == 0 { 0 } else { a.wrapping_div(b) },
                Binary::Max => |a: i64, b: i64| a.max(b),
                Binary::Min => |a: i64, b: i64| a.min(b),
                Binary::Pow => |a: i64, b: i64| a.wrapping_pow(b.clamp(0, 63) as u32),
            };
            zip(int(0)?, int(1)?, f)?
        }
        Op::Mod { fmod } => {
            let f = if *fmod {
                |a: i64, b: i64| if b == 0 { 0 } else { a % b }
            } else {
                |a: i64, b: i64| if b == 0 { 0 } else { ((a % b) + b) % b }
            };
            zip(int(0)?, int(1)?, f)?
        }
        Op::Compare(c) => {
            let f = match c {
                Compare::Equal => |a: i64, b: i64| i64::from(a == b),
                Compare::Less => |a: i64, b: i64| i64::from(a < b),
                Compare::Greater => |a: i64, b: i64| i64::from(a > b),
            };
            zip(int(0)?, int(1)?, f)?
        }
        Op::Not => {
            let t = int(0)?;
            Ints {
                shape: t.shape.clone(),
                data: t.data.iter().map(|&v| i64::from(v == 0)).collect(),
            }
        }
        Op::Where => {
            let (c, x, y) = (int(0)?, int(1)?, int(2)?);
            let xy = zip(x, y, |a, _| a)?;
            let shape =
                super::ints::broadcast(&c.shape, &xy.shape).ok_or("shapes do not broadcast")?;
            let data = (0..shape.iter().product())
                .map(|i| {
                    if c.at(&shape, i) != 0 {
                        x.at(&shape, i)
                    } else {
                        y.at(&shape, i)
                    }
                })
                .collect();
            Ints { shape, data }
        }
        Op::ConstantOfShape { value, elem } => {
            let shape = match node.input(0) {
                Some(_) => dims_of(int(0)?)?,
                None => Vec::new(),
            };
            let count = checked_count(&shape, MAX_KNOWN)?;
            if *elem == Elem::Float {
                return Ok(vec![Known::Float(Arc::new(Tensor::new(
                    shape,
                    vec![*value as f32; count],
                )))]);
            }
            Ints {
                shape,
                data: vec![*value as i64; count],
            }
        }
        Op::Range => {
            let (s, l, d) = (scalar(int(0)?)?, scalar(int(1)?)?, scalar(int(2)?)?);
            if d == 0 {
                return Err("Range with a delta of 0".into());
            }
            let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
            if n > MAX_KNOWN as f64 {
                return Err(format!("Range of {n} values is too long"));
            }
            let n = n as i64;
            Ints::vector((0..n).map(|i| s + i * d).collect())
        }
        Op::Gather { axis } => {
            let x = int(0)?;
            let a = norm_axis(*axis, x.shape.len(), false).ok_or("axis outside the input")?;
            let idx = int(1)?;
            let picks = gather_indices(&idx.data, x.shape[a])?;
            x.take(a, &picks, &idx.shape)
        }
        Op::Slice => {
            let x = int(0)?;
            let p = slice_params(&x.shape, &inputs)?;
            slice_ints(x, &p.starts, &p.steps, &p.shape)
        }
        Op::Concat { .. }
        | Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Expand => {
            let shapes = infer(op, &inputs, 1)?;
            let shape = shapes.into_iter().next().ok_or("no output")?;
            match op {
                Op::Concat { .. } => concat_ints(node, spec, &shape)?,
                Op::Expand => {
                    let x = int(0)?;
                    checked_count(&shape, MAX_KNOWN)?;
                    let data = (0..shape.iter().product())
                        .map(|i| x.at(&shape, i))
                        .collect();
                    Ints { shape, data }
                }
                _ => Ints {
                    shape,
                    data: int(0)?.data.clone(),
                },
            }
        }
        Op::Reduce { op: r, .. } => {
            let t = int(0)?;
            if t.shape.len() > 1 {
                return bad("Reduce over more than one axis");
            }
            use mpinfer_kernels::cpu::Reduce;
            let v = match r {
                Reduce::Sum => t.data.iter().sum(),
                Reduce::Prod => t.data.iter().product(),
                Reduce::Max => *t.data.iter().max().ok_or("empty")?,
                Reduce::Min => *t.data.iter().min().ok_or("empty")?,
                _ => return bad("this reduction"),
            };
            Ints::scalar(v)
        }
        other => return bad(&format!("{other:?}")),
    };
    Ok(vec![Known::Ints(out)])
}

/// A known value as floats.
fn as_float(k: &Known) -> Tensor {
    match k {
        Known::Float(t) => (**t).clone(),
        Known::Ints(t) => Tensor::new(t.shape.clone(), t.data.iter().map(|&v| v as f32).collect()),
    }
}

/// Evaluates a float node whose inputs are all known while planning.
fn evaluate_float(model: &Model, node: &super::Node, spec: &Spec) -> Result<Known, String> {
    use mpinfer_kernels::cpu::{binary, unary};
    let arg = |i: usize| -> Result<Tensor, String> {
        let v = node
            .input(i)
            .ok_or_else(|| format!("input {i} is missing"))?;
        match (spec.known(v), model.weight(v)) {
            (Some(k), _) => Ok(as_float(k)),
            (None, Some(w)) => {
                checked_count(&w.shape, MAX_KNOWN)?;
                w.read().map_err(|e| e.to_string())
            }
            (None, None) => Err(format!("input {i} is computed at run time")),
        }
    };
    let inputs = inputs_of(node, spec);
    let out = match &node.op {
        Op::Cast { .. } | Op::Identity => arg(0)?,
        Op::Unary(u) => {
            let mut t = arg(0)?;
            unary(*u, &mut t.data);
            t
        }
        Op::Binary(b) => binary(*b, &arg(0)?, &arg(1)?).map_err(|e| e.to_string())?,
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            let shape = infer(&node.op, &inputs, 1)?.remove(0);
            arg(0)?.reshape(shape)
        }
        Op::Expand => {
            let shape = infer(&node.op, &inputs, 1)?.remove(0);
            checked_count(&shape, MAX_KNOWN)?;
            mpinfer_kernels::cpu::expand(&arg(0)?, &shape).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "{other:?} on values known while planning is not supported"
            ))
        }
    };
    checked_count(&out.shape, MAX_KNOWN)?;
    Ok(Known::Float(Arc::new(out)))
}

fn zip(a: &Ints, b: &Ints, f: impl Fn(i64, i64) -> i64) -> Result<Ints, String> {
    if let Some(shape) = super::ints::broadcast(&a.shape, &b.shape) {
        checked_count(&shape, MAX_KNOWN)?;
    }
    a.zip(b, f)
        .ok_or_else(|| format!("{:?} and {:?} do not broadcast", a.shape, b.shape))
}

fn scalar(t: &Ints) -> Result<i64, String> {
    match t.data.as_slice() {
        [v] => Ok(*v),
        _ => Err(format!("a scalar expected, got shape {:?}", t.shape)),
    }
}

fn slice_ints(x: &Ints, starts: &[i64], steps: &[i64], shape: &[usize]) -> Ints {
    let strides: Vec<usize> = (0..x.shape.len())
        .map(|a| x.shape[a + 1..].iter().product())
        .collect();
    let count: usize = shape.iter().product();
    let data = (0..count)
        .map(|i| {
            let mut rest = i;
            let mut flat = 0i64;
            for a in (0..shape.len()).rev() {
                let idx = (rest % shape[a]) as i64;
                rest /= shape[a];
                flat += (starts[a] + idx * steps[a]) * strides[a] as i64;
            }
            x.data[flat as usize]
        })
        .collect();
    Ints {
        shape: shape.to_vec(),
        data,
    }
}

fn concat_ints(node: &super::Node, spec: &Spec, shape: &[usize]) -> Result<Ints, String> {
    let parts: Vec<&Ints> = node
        .inputs
        .iter()
        .flatten()
        .map(|&v| spec.ints(v).ok_or("a computed input"))
        .collect::<Result<_, _>>()?;
    // Concatenation along an axis is a concatenation of the runs below it.
    let Op::Concat { axis } = node.op else {
        unreachable!()
    };
    let a = norm_axis(axis, shape.len(), false).ok_or("axis")?;
    let outer: usize = shape[..a].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for p in &parts {
            let run: usize = p.shape[a..].iter().product();
            data.extend_from_slice(&p.data[o * run..(o + 1) * run]);
        }
    }
    Ok(Ints {
        shape: shape.to_vec(),
        data,
    })
}
