//! ONNX nodes read into [`Op`]s: attributes checked against the operator
//! specification, refused by name where mpinfer does not implement them.

use super::proto::{attribute_type, data_type, AttributeProto, NodeProto};
use crate::error::ModelError;
use crate::graph::{AutoPad, Compare, Elem, Op, Spatial};
use mpinfer_kernels::cpu::{Binary, Conv2d, Gemm, Pool2d, PoolKind, Reduce, Unary};

/// The ops [`parse`] reads, as listed in its errors.
pub const SUPPORTED_OPS: &str =
    "Conv (1-D, 2-D), Gemm, MatMul, Add, Sub, Mul, Div, Pow, Max, Min, \
     Sqrt, Erf, Exp, Log, Neg, Abs, Reciprocal, Relu, Sigmoid, Tanh, HardSigmoid, HardSwish, Clip, \
     Gelu, LeakyRelu, MaxPool, AveragePool (1-D, 2-D), GlobalAveragePool, GlobalMaxPool, \
     BatchNormalization, LayerNormalization, Softmax, ReduceMean, ReduceSum, ReduceMax, ReduceMin, \
     ReduceProd, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, \
     Expand, Identity, Dropout, Constant, Shape, Cast, ConstantOfShape, Range, Equal, Less, \
     Greater, Not, Where, Mod";

/// Largest kernel, stride, dilation or pad taken from an attribute: far
/// above any real model, low enough that shape arithmetic cannot overflow.
const MAX_WINDOW: i64 = 1 << 24;

pub(super) fn unsupported(node: &NodeProto, message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        node: node_name(node).to_string(),
        op_type: node.op_type.clone(),
        message: message.into(),
    }
}

pub(super) fn node_name(node: &NodeProto) -> &str {
    if !node.name.is_empty() {
        &node.name
    } else {
        node.output
            .first()
            .map(String::as_str)
            .unwrap_or("(unnamed)")
    }
}

/// What the importer knows of a node's constant inputs while reading it.
pub(super) trait Consts {
    /// A float constant's values, `None` when the input is computed.
    fn floats(&self, node: &NodeProto, name: &str) -> Result<Option<Vec<f32>>, ModelError>;
    /// A constant's shape, `None` when the input is computed.
    fn const_shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The element kind of a value already defined.
    fn elem(&self, name: &str) -> Elem;
}

/// The node as an op, and the element kind of its outputs.
pub(super) fn parse(
    node: &NodeProto,
    opset: i64,
    c: &dyn Consts,
) -> Result<(Op, Elem), ModelError> {
    let a = Attrs(node);
    let first = || node.input.first().map_or(Elem::Float, |i| c.elem(i));
    let float = |op: Op| Ok((op, Elem::Float));
    let same = |op: Op| Ok((op, first()));
    match node.op_type.as_str() {
        "Conv" => float(conv(node, c)?),
        "Gemm" => float(Op::Gemm(Gemm {
            trans_a: a.int("transA")?.unwrap_or(0) != 0,
            trans_b: a.int("transB")?.unwrap_or(0) != 0,
            alpha: a.float("alpha")?.unwrap_or(1.0),
            beta: a.float("beta")?.unwrap_or(1.0),
            relu: false,
        })),
        "MatMul" => float(Op::MatMul),
        "Add" => same(Op::Binary(Binary::Add)),
        "Sub" => same(Op::Binary(Binary::Sub)),
        "Mul" => same(Op::Binary(Binary::Mul)),
        "Div" => same(Op::Binary(Binary::Div)),
        "Max" | "Min" => {
            if node.input.len() != 2 {
                return Err(unsupported(node, "only two inputs are supported"));
            }
            same(Op::Binary(if node.op_type == "Max" {
                Binary::Max
            } else {
                Binary::Min
            }))
        }
        "Pow" => float(pow(node, c)?),
        "Mod" => same(Op::Mod {
            fmod: a.int("fmod")?.unwrap_or(0) != 0,
        }),
        "Relu" => float(Op::Unary(Unary::Relu)),
        "Sigmoid" => float(Op::Unary(Unary::Sigmoid)),
        "Tanh" => float(Op::Unary(Unary::Tanh)),
        "Erf" => float(Op::Unary(Unary::Erf)),
        "Sqrt" => float(Op::Unary(Unary::Sqrt)),
        "Exp" => float(Op::Unary(Unary::Exp)),
        "Log" => float(Op::Unary(Unary::Log)),
        "Neg" => same(Op::Unary(Unary::Neg)),
        "Abs" => float(Op::Unary(Unary::Abs)),
        "Reciprocal" => float(Op::Unary(Unary::Reciprocal)),
        "LeakyRelu" => float(Op::Unary(Unary::LeakyRelu {
            alpha: a.float("alpha")?.unwrap_or(0.01),
        })),
        "HardSigmoid" => float(Op::Unary(Unary::HardSigmoid {
            alpha: a.float("alpha")?.unwrap_or(0.2),
            beta: a.float("beta")?.unwrap_or(0.5),
        })),
        "HardSwish" => float(Op::Unary(Unary::HardSwish)),
        "Clip" => float(clip(node, opset, c)?),
        "Gelu" => {
            let tanh = match a.string("approximate")?.as_deref() {
                None | Some("none") => false,
                Some("tanh") => true,
                Some(other) => return Err(unsupported(node, format!("approximate {other:?}"))),
            };
            float(Op::Unary(Unary::Gelu { tanh }))
        }
        "MaxPool" => float(pool(node, PoolKind::Max)?),
        "AveragePool" => float(pool(node, PoolKind::Average)?),
        "GlobalAveragePool" => float(Op::GlobalPool(PoolKind::Average)),
        "GlobalMaxPool" => float(Op::GlobalPool(PoolKind::Max)),
        "BatchNormalization" => {
            if a.int("training_mode")?.unwrap_or(0) != 0 {
                return Err(unsupported(node, "training_mode must be 0"));
            }
            only_first_output(node)?;
            float(Op::BatchNorm {
                epsilon: a.float("epsilon")?.unwrap_or(1e-5),
            })
        }
        "LayerNormalization" => {
            only_first_output(node)?;
            float(Op::LayerNorm {
                axis: a.int("axis")?.unwrap_or(-1),
                epsilon: a.float("epsilon")?.unwrap_or(1e-5),
            })
        }
        "Softmax" => {
            let coerced = opset < 13;
            let axis = a.int("axis")?.unwrap_or(if coerced { 1 } else { -1 });
            float(Op::Softmax { axis, coerced })
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => {
            let op = match node.op_type.as_str() {
                "ReduceMean" => Reduce::Mean,
                "ReduceSum" => Reduce::Sum,
                "ReduceMax" => Reduce::Max,
                "ReduceMin" => Reduce::Min,
                _ => Reduce::Prod,
            };
            // ReduceSum takes its axes as an input from opset 13, the others from 18.
            let axes_input = opset >= if op == Reduce::Sum { 13 } else { 18 };
            same(Op::Reduce {
                op,
                axes: if axes_input { None } else { a.ints("axes")? },
                keepdims: a.int("keepdims")?.unwrap_or(1) != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes")?.unwrap_or(0) != 0,
            })
        }
        "Flatten" => float(Op::Flatten {
            axis: a.int("axis")?.unwrap_or(1),
        }),
        "Reshape" => same(Op::Reshape {
            allowzero: a.int("allowzero")?.unwrap_or(0) != 0,
        }),
        "Transpose" => same(Op::Transpose {
            perm: a.ints("perm")?,
        }),
        "Squeeze" => same(Op::Squeeze {
            axes: if opset < 13 { a.ints("axes")? } else { None },
        }),
        "Unsqueeze" => same(Op::Unsqueeze {
            axes: if opset < 13 { a.ints("axes")? } else { None },
        }),
        "Concat" => same(Op::Concat {
            axis: a
                .int("axis")?
                .ok_or_else(|| unsupported(node, "axis is required"))?,
        }),
        "Split" => same(Op::Split {
            axis: a.int("axis")?.unwrap_or(0),
            split: if opset < 13 { a.ints("split")? } else { None },
            outputs: node.output.len(),
        }),
        "Slice" => same(Op::Slice),
        "Gather" => same(Op::Gather {
            axis: a.int("axis")?.unwrap_or(0),
        }),
        "Expand" => same(Op::Expand),
        "Identity" => same(Op::Identity),
        "Shape" => Ok((
            Op::Shape {
                start: a.int("start")?.unwrap_or(0),
                end: a.int("end")?,
            },
            Elem::Int,
        )),
        "Cast" => {
            let to = cast_target(node, a.int("to")?.unwrap_or(0) as i32)?;
            Ok((Op::Cast { to }, to))
        }
        "ConstantOfShape" => constant_of_shape(node),
        "Range" => same(Op::Range),
        "Equal" => Ok((Op::Compare(Compare::Equal), Elem::Bool)),
        "Less" => Ok((Op::Compare(Compare::Less), Elem::Bool)),
        "Greater" => Ok((Op::Compare(Compare::Greater), Elem::Bool)),
        "Not" => Ok((Op::Not, Elem::Bool)),
        "Where" => Ok((
            Op::Where,
            node.input.get(1).map_or(Elem::Float, |i| c.elem(i)),
        )),
        _ => Err(unsupported(
            node,
            format!("op not supported; supported ops: {SUPPORTED_OPS}"),
        )),
    }
}

fn only_first_output(node: &NodeProto) -> Result<(), ModelError> {
    match node.output.iter().skip(1).find(|o| !o.is_empty()) {
        Some(extra) => Err(unsupported(
            node,
            format!("output {extra} is not supported"),
        )),
        None => Ok(()),
    }
}

fn cast_target(node: &NodeProto, to: i32) -> Result<Elem, ModelError> {
    match to {
        data_type::FLOAT | data_type::FLOAT16 | data_type::BFLOAT16 | data_type::DOUBLE => {
            Ok(Elem::Float)
        }
        data_type::INT64 | data_type::INT32 | data_type::INT8 | data_type::UINT8 => Ok(Elem::Int),
        9 => Ok(Elem::Bool),
        other => Err(unsupported(
            node,
            format!("Cast to {} is not supported", data_type::name(other)),
        )),
    }
}

fn constant_of_shape(node: &NodeProto) -> Result<(Op, Elem), ModelError> {
    let Some(attr) = node.attribute.iter().find(|a| a.name == "value") else {
        return Ok((
            Op::ConstantOfShape {
                value: 0.0,
                elem: Elem::Float,
            },
            Elem::Float,
        ));
    };
    let t = attr
        .t
        .as_ref()
        .ok_or_else(|| unsupported(node, "value holds no tensor"))?;
    let raw = &t.raw_data;
    let (value, elem) = match t.data_type {
        data_type::FLOAT => (
            t.float_data.first().copied().unwrap_or_else(|| {
                raw.get(..4)
                    .map_or(0.0, |b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            }) as f64,
            Elem::Float,
        ),
        data_type::INT64 => (
            t.int64_data.first().copied().unwrap_or_else(|| {
                raw.get(..8)
                    .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            }) as f64,
            Elem::Int,
        ),
        data_type::INT32 => (
            t.int32_data.first().copied().unwrap_or_else(|| {
                raw.get(..4)
                    .map_or(0, |b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
            }) as f64,
            Elem::Int,
        ),
        // Booleans are one byte each in raw_data.
        9 => (
            t.int32_data
                .first()
                .copied()
                .unwrap_or_else(|| raw.first().map_or(0, |&b| b as i32)) as f64,
            Elem::Bool,
        ),
        other => {
            return Err(unsupported(
                node,
                format!("value of type {} is not supported", data_type::name(other)),
            ))
        }
    };
    Ok((Op::ConstantOfShape { value, elem }, elem))
}

/// Pow with a constant scalar exponent runs as a unary op.
fn pow(node: &NodeProto, c: &dyn Consts) -> Result<Op, ModelError> {
    let e = node
        .input
        .get(1)
        .ok_or_else(|| unsupported(node, "no exponent"))?;
    match c.floats(node, e)? {
        Some(v) if v.len() == 1 => Ok(Op::Unary(Unary::Pow { exponent: v[0] })),
        _ => Ok(Op::Binary(Binary::Pow)),
    }
}

fn clip(node: &NodeProto, opset: i64, c: &dyn Consts) -> Result<Op, ModelError> {
    let a = Attrs(node);
    if opset < 11 {
        return Ok(Op::Unary(Unary::Clip {
            min: a.float("min")?.unwrap_or(f32::NEG_INFINITY),
            max: a.float("max")?.unwrap_or(f32::INFINITY),
        }));
    }
    let bound = |i: usize, default: f32| -> Result<f32, ModelError> {
        match node.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(name) => match c.floats(node, name)? {
                Some(v) if v.len() == 1 => Ok(v[0]),
                _ => Err(unsupported(
                    node,
                    format!("{name} must be a constant scalar"),
                )),
            },
        }
    };
    Ok(Op::Unary(Unary::Clip {
        min: bound(1, f32::NEG_INFINITY)?,
        max: bound(2, f32::INFINITY)?,
    }))
}

fn spatial_of(node: &NodeProto, rank: usize) -> Result<Spatial, ModelError> {
    match rank {
        1 => Ok(Spatial::One),
        2 => Ok(Spatial::Two),
        n => Err(unsupported(
            node,
            format!("{n}-D windows are not supported (1-D and 2-D are)"),
        )),
    }
}

fn conv(node: &NodeProto, c: &dyn Consts) -> Result<Op, ModelError> {
    let a = Attrs(node);
    let w = node
        .input
        .get(1)
        .ok_or_else(|| unsupported(node, "no weight"))?;
    let shape = c
        .const_shape(w)
        .ok_or_else(|| unsupported(node, format!("weight {w} must be a constant")))?;
    if shape.len() < 3 {
        return Err(unsupported(node, format!("weight has shape {shape:?}")));
    }
    let spatial = spatial_of(node, shape.len() - 2)?;
    let kernel = &shape[2..];
    if let Some(k) = a.ints("kernel_shape")? {
        if k.iter().map(|&v| v as usize).ne(kernel.iter().copied()) {
            return Err(unsupported(
                node,
                format!("kernel_shape {k:?} does not match the weight's {kernel:?}"),
            ));
        }
    }
    let groups = a.int("group")?.unwrap_or(1);
    if !(1..=MAX_WINDOW).contains(&groups) {
        return Err(unsupported(
            node,
            format!("group {groups} must be positive"),
        ));
    }
    let w = Window::read(node, spatial)?;
    Ok(Op::Conv {
        conv: Conv2d {
            strides: w.strides,
            pads: w.pads,
            dilations: w.dilations,
            groups: groups as usize,
            relu: false,
        },
        spatial,
        auto_pad: w.auto_pad,
    })
}

fn pool(node: &NodeProto, kind: PoolKind) -> Result<Op, ModelError> {
    let a = Attrs(node);
    only_first_output(node)?;
    if a.int("storage_order")?.unwrap_or(0) != 0 {
        return Err(unsupported(node, "storage_order 1 is not supported"));
    }
    let k = a
        .ints("kernel_shape")?
        .ok_or_else(|| unsupported(node, "kernel_shape is required"))?;
    let spatial = spatial_of(node, k.len())?;
    if k.iter().any(|v| !(1..=MAX_WINDOW).contains(v)) {
        return Err(unsupported(node, format!("kernel_shape {k:?}")));
    }
    let kernel = match spatial {
        Spatial::One => [1, k[0] as usize],
        Spatial::Two => [k[0] as usize, k[1] as usize],
    };
    let w = Window::read(node, spatial)?;
    let ceil_mode = a.int("ceil_mode")?.unwrap_or(0) != 0;
    if ceil_mode && matches!(w.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
        return Err(unsupported(node, "auto_pad SAME with ceil_mode"));
    }
    Ok(Op::Pool {
        pool: Pool2d {
            kind,
            kernel,
            strides: w.strides,
            pads: w.pads,
            dilations: w.dilations,
            ceil_mode,
            count_include_pad: a.int("count_include_pad")?.unwrap_or(0) != 0,
        },
        spatial,
        auto_pad: w.auto_pad,
    })
}

/// Strides, dilations, pads and auto_pad of a window, 1-D read as 2-D with
/// a height of one.
struct Window {
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    auto_pad: AutoPad,
}

impl Window {
    fn read(node: &NodeProto, spatial: Spatial) -> Result<Window, ModelError> {
        let a = Attrs(node);
        let dims = if spatial == Spatial::One { 1 } else { 2 };
        let pair = |name: &str| -> Result<[usize; 2], ModelError> {
            match a.ints(name)? {
                None => Ok([1, 1]),
                Some(v) if v.len() == dims && v.iter().all(|x| (1..=MAX_WINDOW).contains(x)) => {
                    Ok(if dims == 1 {
                        [1, v[0] as usize]
                    } else {
                        [v[0] as usize, v[1] as usize]
                    })
                }
                Some(v) => Err(unsupported(
                    node,
                    format!("{name} {v:?}: {dims} values from 1 to {MAX_WINDOW} expected"),
                )),
            }
        };
        let pads = match a.ints("pads")? {
            None => [0; 4],
            Some(p) if p.len() == 2 * dims && p.iter().all(|v| (0..=MAX_WINDOW).contains(v)) => {
                let p: Vec<usize> = p.iter().map(|&v| v as usize).collect();
                if dims == 1 {
                    [0, p[0], 0, p[1]]
                } else {
                    [p[0], p[1], p[2], p[3]]
                }
            }
            Some(p) => {
                return Err(unsupported(
                    node,
                    format!("pads {p:?}: {} non-negative values expected", 2 * dims),
                ))
            }
        };
        let auto_pad = match a.string("auto_pad")?.as_deref().unwrap_or("NOTSET") {
            "" | "NOTSET" => AutoPad::NotSet,
            "VALID" => AutoPad::Valid,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            other => {
                return Err(unsupported(
                    node,
                    format!("auto_pad {other} is not supported"),
                ))
            }
        };
        Ok(Window {
            strides: pair("strides")?,
            dilations: pair("dilations")?,
            pads,
            auto_pad,
        })
    }
}

/// A node's attributes, each checked for its type when read.
pub(super) struct Attrs<'n>(pub &'n NodeProto);

impl<'n> Attrs<'n> {
    fn get(&self, name: &str, want: i32) -> Result<Option<&'n AttributeProto>, ModelError> {
        match self.0.attribute.iter().find(|a| a.name == name) {
            // Writers before IR version 2 left the type unset.
            Some(a) if a.r#type == want || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(unsupported(
                self.0,
                format!("attribute {name} has type {}, expected {want}", a.r#type),
            )),
            None => Ok(None),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ModelError> {
        Ok(self.get(name, attribute_type::INT)?.map(|a| a.i))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, ModelError> {
        Ok(self.get(name, attribute_type::FLOAT)?.map(|a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, ModelError> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ModelError> {
        Ok(self
            .get(name, attribute_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_of_the_wrong_type_is_refused() {
        let node = NodeProto {
            name: "c".into(),
            op_type: "Conv".into(),
            attribute: vec![AttributeProto {
                name: "group".into(),
                r#type: attribute_type::FLOAT,
                f: 2.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = Attrs(&node).int("group").unwrap_err().to_string();
        assert!(err.contains("attribute group"), "{err}");
    }
}
