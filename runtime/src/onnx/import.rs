//! Builds the graph of a model from its ONNX file.

use super::external::{DataFiles, Location};
use super::ops::{self, node_name, unsupported, Consts};
use super::proto::{data_type, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::error::ModelError;
use crate::graph::{Constant as GraphConstant, Elem, Ints, Model, Node, Op, Value, ValueId};
use crate::model::{ModelFile, Source, Weight};
use bytes::Bytes;
use mpinfer_kernels::StoredDType;
use prost::Message;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

const OPSETS: std::ops::RangeInclusive<i64> = 11..=28;

/// Largest number of values in one input sample: far above any real model,
/// low enough that shape arithmetic cannot overflow.
const MAX_SAMPLE: usize = 1 << 40;

/// Reads the ONNX model at `path`. Weights stored as `raw_data` or as
/// external data stay in their file ([`Source::File`]); the others are
/// decoded ([`Source::Values`]).
pub fn load(path: &Path) -> Result<Model, ModelError> {
    let io = |e| ModelError::Io {
        path: path.to_path_buf(),
        error: e,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(format_err(path, "empty file, not an ONNX model".into()));
    }
    // SAFETY: the map is only read. Another process truncating the file while
    // it is being loaded would fault; model files are not written in place
    // while they are served, so that is not guarded against.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let file = Arc::new(ModelFile {
        path: path.to_path_buf(),
        file,
        len,
    });
    // Decoding from a `Bytes` over the map makes every `bytes` field a view
    // into the map: its position in the file is its address minus the base.
    let bytes = Bytes::from_owner(map);
    let base = bytes.as_ptr() as usize;
    let proto = ModelProto::decode(bytes.clone())
        .map_err(|e| format_err(path, format!("not a valid ONNX model: {e}")))?;
    let model = Importer::new(path, file, base, bytes.len(), &proto)?.run(&proto)?;
    // The map goes with the last view of it: nothing in `model` holds one.
    drop(proto);
    drop(bytes);
    Ok(model)
}

fn format_err(path: &Path, message: String) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// A constant the graph defines: an initializer (whose `raw_data` may be
/// left in the file) or a Constant node's value (decoded).
struct Constant<'a> {
    tensor: Cow<'a, TensorProto>,
    initializer: bool,
}

struct Importer<'a> {
    path: &'a Path,
    file: Arc<ModelFile>,
    external: DataFiles,
    base: usize,
    map_len: usize,
    opset: i64,
    constants: HashMap<String, Constant<'a>>,
    ids: HashMap<String, ValueId>,
    values: Vec<Value>,
    nodes: Vec<Node>,
    /// The batch size when the graph input fixes it.
    fixed_batch: Option<i64>,
}

impl<'a> Importer<'a> {
    fn new(
        path: &'a Path,
        file: Arc<ModelFile>,
        base: usize,
        map_len: usize,
        proto: &'a ModelProto,
    ) -> Result<Importer<'a>, ModelError> {
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| format_err(path, "no opset for the default ONNX domain".into()))?;
        if !OPSETS.contains(&opset) {
            return Err(ModelError::Opset {
                path: path.to_path_buf(),
                opset,
                supported: OPSETS,
            });
        }
        Ok(Importer {
            path,
            file,
            external: DataFiles::new(path),
            base,
            map_len,
            opset,
            constants: HashMap::new(),
            ids: HashMap::new(),
            values: Vec::new(),
            nodes: Vec::new(),
            fixed_batch: None,
        })
    }

    fn invalid(&self, message: String) -> ModelError {
        ModelError::Graph {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn run(mut self, proto: &'a ModelProto) -> Result<Model, ModelError> {
        let graph: &GraphProto = proto
            .graph
            .as_ref()
            .ok_or_else(|| format_err(self.path, "no graph: not an ONNX model".into()))?;
        if !graph.sparse_initializer.is_empty() {
            return Err(self.invalid("sparse initializers are not supported".into()));
        }
        for t in &graph.initializer {
            self.constants.insert(
                t.name.clone(),
                Constant {
                    tensor: Cow::Borrowed(t),
                    initializer: true,
                },
            );
        }
        let (input_name, sample_shape) = self.graph_input(graph)?;
        let input = self.add_value(&input_name, Elem::Float, None);
        for t in &graph.initializer {
            self.define_constant(&t.name)?;
        }
        for node in &graph.node {
            self.node(node)?;
        }
        let outputs = self.outputs(graph)?;
        let mut model = Model {
            path: self.path.to_path_buf(),
            opset: self.opset,
            input,
            sample_shape,
            outputs,
            values: self.values,
            nodes: self.nodes,
        };
        crate::graph::prune_dead(&mut model);
        crate::graph::fold_batch_norms(&mut model)?;
        crate::graph::fuse_linear_bias(&mut model);
        model.check_batch_axis()?;
        Ok(model)
    }

    /// The graph outputs; a value the graph outputs under another name (through
    /// Identity, say) takes that name, which is what users see.
    fn outputs(&mut self, graph: &GraphProto) -> Result<Vec<ValueId>, ModelError> {
        if graph.output.is_empty() {
            return Err(self.invalid("the graph has no output".into()));
        }
        let ids = graph
            .output
            .iter()
            .map(|o| {
                let v = *self.ids.get(&o.name).ok_or_else(|| {
                    self.invalid(format!("graph output {} is computed by no node", o.name))
                })?;
                if self.values[v].constant.is_some() || self.values[v].elem != Elem::Float {
                    return Err(self.invalid(format!(
                        "graph output {} is not a float value computed from the input",
                        o.name
                    )));
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (o, &v) in graph.output.iter().zip(&ids) {
            self.values[v].name = o.name.clone();
        }
        Ok(ids)
    }

    fn add_value(&mut self, name: &str, elem: Elem, constant: Option<GraphConstant>) -> ValueId {
        let id = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            elem,
            constant,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    /// Makes the constant tensor `name` a value of the graph: a weight for
    /// floats (not read), integers decoded.
    fn define_constant(&mut self, name: &str) -> Result<(), ModelError> {
        let context = NodeProto {
            name: name.to_string(),
            op_type: "initializer".into(),
            ..Default::default()
        };
        let dt = self.constants[name].tensor.data_type;
        let (elem, constant) = match dt {
            data_type::FLOAT | data_type::FLOAT16 | data_type::BFLOAT16 => (
                Elem::Float,
                GraphConstant::Weight(self.weight(&context, name)?),
            ),
            data_type::INT64 | data_type::INT32 | data_type::INT8 | data_type::UINT8 | 9 => {
                let (shape, _, _) = self.dims(&self.constants[name].tensor)?;
                let data = self.ints(&context, name)?;
                let elem = if dt == 9 { Elem::Bool } else { Elem::Int };
                (elem, GraphConstant::Ints(Ints { shape, data }))
            }
            data_type::DOUBLE => {
                let t = &self.constants[name].tensor;
                let (shape, count, _) = self.dims(t)?;
                if t.double_data.len() != count {
                    return Err(unsupported(
                        &context,
                        "double values must be stored as double_data",
                    ));
                }
                let v = t.double_data.iter().map(|&d| d as f32).collect();
                (
                    Elem::Float,
                    GraphConstant::Weight(Weight::from_values(name, shape, v)),
                )
            }
            other => {
                return Err(unsupported(
                    &context,
                    format!("element type {} is not supported", data_type::name(other)),
                ))
            }
        };
        self.add_value(name, elem, Some(constant));
        Ok(())
    }

    /// The one graph input that is not an initializer, and its shape without
    /// the batch dimension.
    fn graph_input(&mut self, graph: &GraphProto) -> Result<(String, Vec<usize>), ModelError> {
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.constants.contains_key(&i.name))
            .collect();
        let input = match inputs.as_slice() {
            [one] => *one,
            _ => {
                return Err(self.invalid(format!(
                    "the graph has {} inputs ({}); mpinfer runs models with one",
                    inputs.len(),
                    inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        let name = &input.name;
        let tensor = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| self.invalid(format!("input {name} is not a tensor")))?;
        if ![
            data_type::FLOAT,
            data_type::FLOAT16,
            data_type::BFLOAT16,
            data_type::DOUBLE,
        ]
        .contains(&tensor.elem_type)
        {
            return Err(self.invalid(format!(
                "input {name} has element type {}; a floating-point input is expected",
                data_type::name(tensor.elem_type)
            )));
        }
        let dims = &tensor
            .shape
            .as_ref()
            .ok_or_else(|| self.invalid(format!("input {name} has no shape")))?
            .dim;
        if dims.is_empty() {
            return Err(self.invalid(format!(
                "input {name} has no dimensions; the first is the batch"
            )));
        }
        self.fixed_batch = dims[0].dim_value.filter(|&d| d > 0);
        let mut sample = Vec::with_capacity(dims.len() - 1);
        for (i, d) in dims.iter().enumerate().skip(1) {
            match d.dim_value {
                Some(v) if v > 0 => sample.push(v as usize),
                _ => {
                    let what = d
                        .dim_param
                        .as_ref()
                        .map(|p| format!("symbolic ({p})"))
                        .or_else(|| d.dim_value.map(|v| format!("{v}")))
                        .unwrap_or_else(|| "unknown".into());
                    return Err(self.invalid(format!(
                        "input {name}: dimension {i} is {what}; every dimension after the \
                         batch must be a positive number"
                    )));
                }
            }
        }
        if sample
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_none_or(|n| n > MAX_SAMPLE)
        {
            return Err(self.invalid(format!(
                "input {name}: a sample of shape {sample:?} is too large"
            )));
        }
        Ok((name.clone(), sample))
    }

    fn node(&mut self, node: &'a NodeProto) -> Result<(), ModelError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(unsupported(
                node,
                format!(
                    "domain {} is not supported; supported ops: {}",
                    node.domain,
                    ops::SUPPORTED_OPS
                ),
            ));
        }
        if node.attribute.iter().any(|a| !a.ref_attr_name.is_empty()) {
            return Err(unsupported(node, "attribute references are not supported"));
        }
        if node.output.first().is_none_or(|o| o.is_empty()) {
            return Err(unsupported(node, "the node has no output"));
        }
        match node.op_type.as_str() {
            "Constant" => return self.constant_node(node),
            "Identity" | "Dropout" => return self.alias(node),
            _ => {}
        }
        let inputs = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                self.ids.get(name).copied().map(Some).ok_or_else(|| {
                    unsupported(
                        node,
                        format!(
                            "input {name} is computed by no node before this one (missing, \
                             or the graph has a cycle or is out of order)"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (op, elem) = ops::parse(node, self.opset, self)?;
        let inputs = self.keep_batch(node, &op, inputs);
        let outputs = match op {
            Op::Split { .. } => node.output.clone(),
            _ => vec![node.output[0].clone()],
        };
        if outputs.iter().any(|o| o.is_empty()) {
            return Err(unsupported(node, "an unnamed output is not supported"));
        }
        let outputs = outputs
            .iter()
            .map(|o| self.add_value(o, elem, None))
            .collect();
        self.nodes.push(Node {
            name: node_name(node).to_string(),
            op_type: node.op_type.clone(),
            op,
            inputs,
            outputs,
        });
        Ok(())
    }

    /// A model exported for a fixed batch size often spells that size into
    /// its Reshape targets; reading it as "keep the batch" lets the model
    /// run at any batch size.
    fn keep_batch(
        &mut self,
        node: &NodeProto,
        op: &Op,
        mut inputs: Vec<Option<ValueId>>,
    ) -> Vec<Option<ValueId>> {
        let (Op::Reshape { .. }, Some(b), Some(Some(s))) = (op, self.fixed_batch, inputs.get(1))
        else {
            return inputs;
        };
        let Some(GraphConstant::Ints(t)) = &self.values[*s].constant else {
            return inputs;
        };
        if t.data.len() < 2 || t.data[0] != b {
            return inputs;
        }
        log::debug!(
            "{}: Reshape {}: reading the leading {b} of {:?} as the batch",
            self.path.display(),
            node_name(node),
            t.data
        );
        let mut kept = t.clone();
        kept.data[0] = 0;
        let name = format!("{}.batch", self.values[*s].name);
        inputs[1] = Some(self.add_value(&name, Elem::Int, Some(GraphConstant::Ints(kept))));
        inputs
    }

    /// Identity and Dropout: the output is another name for the input.
    fn alias(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let input = node
            .input
            .first()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| unsupported(node, "input 0 is missing"))?;
        if node.op_type == "Dropout" {
            // Opset 12 and later take training_mode as an input; in training
            // mode Dropout is not the identity.
            if let Some(mode) = node.input.get(2).filter(|m| !m.is_empty()) {
                if self.ints(node, mode)?.iter().any(|&m| m != 0) {
                    return Err(unsupported(node, "training_mode must be false"));
                }
            }
        }
        let id = *self.ids.get(input).ok_or_else(|| {
            unsupported(
                node,
                format!("input {input} is computed by no node before this one"),
            )
        })?;
        self.ids.insert(node.output[0].clone(), id);
        Ok(())
    }

    fn constant_node(&mut self, node: &'a NodeProto) -> Result<(), ModelError> {
        let [attr] = node.attribute.as_slice() else {
            return Err(unsupported(node, "a Constant needs exactly one attribute"));
        };
        let tensor = match attr.name.as_str() {
            "value" => Cow::Borrowed(
                attr.t
                    .as_ref()
                    .ok_or_else(|| unsupported(node, "attribute value holds no tensor"))?,
            ),
            "value_float" => Cow::Owned(TensorProto {
                data_type: data_type::FLOAT,
                float_data: vec![attr.f],
                ..Default::default()
            }),
            "value_floats" => Cow::Owned(TensorProto {
                dims: vec![attr.floats.len() as i64],
                data_type: data_type::FLOAT,
                float_data: attr.floats.clone(),
                ..Default::default()
            }),
            "value_int" => Cow::Owned(TensorProto {
                data_type: data_type::INT64,
                int64_data: vec![attr.i],
                ..Default::default()
            }),
            "value_ints" => Cow::Owned(TensorProto {
                dims: vec![attr.ints.len() as i64],
                data_type: data_type::INT64,
                int64_data: attr.ints.clone(),
                ..Default::default()
            }),
            other => {
                return Err(unsupported(
                    node,
                    format!("Constant attribute {other} is not supported"),
                ))
            }
        };
        let name = node.output[0].clone();
        self.constants.insert(
            name.clone(),
            Constant {
                tensor,
                initializer: false,
            },
        );
        self.define_constant(&name)
    }

    fn constant(&self, node: &NodeProto, name: &str) -> Result<&Constant<'a>, ModelError> {
        self.constants.get(name).ok_or_else(|| {
            unsupported(
                node,
                format!("input {name} must be a constant (an initializer or a Constant output)"),
            )
        })
    }

    /// Checks a tensor's dimensions and element count against the file that
    /// holds its values; with them, where those are when that is a data file
    /// beside the model.
    fn dims(&self, t: &TensorProto) -> Result<(Vec<usize>, usize, Option<Location>), ModelError> {
        let bad = |m: String| format_err(self.path, format!("tensor {}: {m}", t.name));
        let external = self.external.locate(t)?;
        let holder = external.as_ref().map_or(&self.file, |at| &at.file);
        let mut dims = Vec::with_capacity(t.dims.len());
        let mut count = 1usize;
        // The count with zeros taken as ones: an empty tensor must not let
        // its other dimensions be anything at all, since shapes computed
        // from them (kernel sizes, Gemm widths) size later work.
        let mut span = 1usize;
        for &d in &t.dims {
            let d = usize::try_from(d)
                .map_err(|_| bad(format!("negative dimension in {:?}", t.dims)))?;
            count = count
                .checked_mul(d)
                .ok_or_else(|| bad(format!("shape {:?} overflows", t.dims)))?;
            span = span
                .checked_mul(d.max(1))
                .ok_or_else(|| bad(format!("shape {:?} overflows", t.dims)))?;
            dims.push(d);
        }
        // No tensor can hold more elements than the file has bytes (the
        // narrowest element is one byte): refuse before anything is sized
        // from the count.
        if span as u64 > holder.len {
            return Err(bad(format!(
                "shape {:?} has {count} elements, more than the {} bytes of {}",
                t.dims,
                holder.len,
                holder.path.display()
            )));
        }
        Ok((dims, count, external))
    }

    /// A float constant as a weight: `raw_data` of an initializer stays in
    /// the file, anything else is decoded.
    fn weight(&self, node: &NodeProto, name: &str) -> Result<Weight, ModelError> {
        let c = self.constant(node, name)?;
        let t = c.tensor.as_ref();
        // Named after the initializer itself, not an Identity's alias of it.
        let name = if t.name.is_empty() { name } else { &t.name };
        let (shape, count, external) = self.dims(t)?;
        let dtype = match t.data_type {
            data_type::FLOAT => StoredDType::F32,
            data_type::FLOAT16 => StoredDType::F16,
            data_type::BFLOAT16 => StoredDType::BF16,
            other => {
                return Err(unsupported(
                    node,
                    format!(
                        "weight {name} has element type {}; float, float16 or bfloat16 expected",
                        data_type::name(other)
                    ),
                ))
            }
        };
        let width = match dtype {
            StoredDType::F32 => 4,
            StoredDType::F16 | StoredDType::BF16 => 2,
        };
        let values = |v: Vec<f32>| Weight::from_values(name, shape.clone(), v);
        if let Some(at) = external {
            at.check(name, (count * width) as u64)?;
            return Ok(Weight {
                name: name.to_string(),
                shape,
                source: Source::File {
                    file: at.file,
                    offset: at.offset,
                    dtype,
                },
                row_scale: None,
            });
        }
        if !t.raw_data.is_empty() {
            self.check_raw(t, count, width)?;
            let raw = &t.raw_data;
            let at = (raw.as_ptr() as usize).wrapping_sub(self.base);
            if c.initializer && at < self.map_len && raw.len() <= self.map_len - at {
                return Ok(Weight {
                    name: name.to_string(),
                    shape,
                    source: Source::File {
                        file: self.file.clone(),
                        offset: at as u64,
                        dtype,
                    },
                    row_scale: None,
                });
            }
            return Ok(values(decode_raw(raw, dtype)));
        }
        let typed = match dtype {
            StoredDType::F32 => t.float_data.len(),
            StoredDType::F16 | StoredDType::BF16 => t.int32_data.len(),
        };
        if typed != count {
            return Err(format_err(
                self.path,
                format!(
                    "tensor {name}: shape {:?} needs {count} values, it holds {typed}",
                    t.dims
                ),
            ));
        }
        Ok(values(match dtype {
            StoredDType::F32 => t.float_data.clone(),
            StoredDType::F16 => t
                .int32_data
                .iter()
                .map(|&b| half::f16::from_bits(b as u16).to_f32())
                .collect(),
            StoredDType::BF16 => t
                .int32_data
                .iter()
                .map(|&b| half::bf16::from_bits(b as u16).to_f32())
                .collect(),
        }))
    }

    fn check_raw(&self, t: &TensorProto, count: usize, width: usize) -> Result<(), ModelError> {
        let want = count.checked_mul(width);
        if want != Some(t.raw_data.len()) {
            return Err(format_err(
                self.path,
                format!(
                    "tensor {}: shape {:?} of {} needs {} bytes, raw_data has {}",
                    t.name,
                    t.dims,
                    data_type::name(t.data_type),
                    count.saturating_mul(width),
                    t.raw_data.len()
                ),
            ));
        }
        Ok(())
    }

    /// An integer constant (shapes, indices, axes).
    fn ints(&self, node: &NodeProto, name: &str) -> Result<Vec<i64>, ModelError> {
        let t = self.constant(node, name)?.tensor.as_ref();
        let (_, count, external) = self.dims(t)?;
        let (width, typed) = match t.data_type {
            data_type::INT64 => (8, t.int64_data.len()),
            data_type::INT32 => (4, t.int32_data.len()),
            data_type::UINT8 | data_type::INT8 | 9 => (1, t.int32_data.len()),
            other => {
                return Err(unsupported(
                    node,
                    format!(
                        "input {name} has element type {}; an integer tensor is expected",
                        data_type::name(other)
                    ),
                ))
            }
        };
        let external = match external {
            Some(at) => Some(at.read(&t.name, (count * width) as u64)?),
            None => None,
        };
        if external.is_some() || !t.raw_data.is_empty() {
            let raw: &[u8] = match &external {
                Some(bytes) => bytes,
                None => {
                    self.check_raw(t, count, width)?;
                    &t.raw_data
                }
            };
            return Ok(match (t.data_type, width) {
                (_, 8) => raw
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
                (_, 4) => raw
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                    .collect(),
                (data_type::INT8, _) => raw.iter().map(|&b| b as i8 as i64).collect(),
                _ => raw.iter().map(|&b| b as i64).collect(),
            });
        }
        if typed != count {
            return Err(format_err(
                self.path,
                format!(
                    "tensor {name}: shape {:?} needs {count} values, it holds {typed}",
                    t.dims
                ),
            ));
        }
        Ok(if t.data_type == data_type::INT64 {
            t.int64_data.clone()
        } else {
            t.int32_data.iter().map(|&v| v as i64).collect()
        })
    }
}

impl Consts for Importer<'_> {
    fn floats(&self, node: &NodeProto, name: &str) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(&id) = self.ids.get(name) else {
            return Ok(None);
        };
        match &self.values[id].constant {
            Some(GraphConstant::Weight(w)) => Ok(Some(w.read()?.data)),
            Some(GraphConstant::Ints(_)) => {
                Err(unsupported(node, format!("{name} must be a float")))
            }
            None => Ok(None),
        }
    }

    fn const_shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.values[*self.ids.get(name)?].constant {
            Some(GraphConstant::Weight(w)) => Some(w.shape.clone()),
            Some(GraphConstant::Ints(t)) => Some(t.shape.clone()),
            None => None,
        }
    }

    fn elem(&self, name: &str) -> Elem {
        self.ids
            .get(name)
            .map_or(Elem::Float, |&v| self.values[v].elem)
    }
}

/// Widens little-endian values to f32.
fn decode_raw(raw: &[u8], dtype: StoredDType) -> Vec<f32> {
    match dtype {
        StoredDType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        StoredDType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        StoredDType::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}
