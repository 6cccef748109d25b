use super::external::{DataFiles, Location};
use super::proto::{
    attribute_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use crate::error::ModelError;
use crate::model::{Layer, Model, ModelFile, Op, Source, Weight};
use bytes::Bytes;
use mpinfer_kernels::cpu::{Conv2d, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::StoredDType;
use prost::Message;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// The ops [`load`] reads, as listed in its errors.
pub const SUPPORTED_OPS: &str = "Conv, Gemm, MatMul (+ Add of a constant bias), Relu, MaxPool, \
     AveragePool, GlobalAveragePool, Flatten, Reshape (constant shape or \
     Shape/Gather/Unsqueeze/Concat of the input's shape), Softmax, BatchNormalization after Conv, \
     Identity, Dropout, Constant";

const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Largest kernel, stride, dilation or pad taken from an attribute: far
/// above any real model, low enough that shape arithmetic cannot overflow.
const MAX_WINDOW: i64 = 1 << 24;

/// Largest number of values in one input sample, for the same reason.
const MAX_SAMPLE: usize = 1 << 40;

/// Reads the ONNX model at `path`. Weights stored as `raw_data` stay in the
/// file ([`Source::File`]); the others are decoded ([`Source::Values`]).
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

fn unsupported(node: &NodeProto, message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        node: node_name(node).to_string(),
        op_type: node.op_type.clone(),
        message: message.into(),
    }
}

fn node_name(node: &NodeProto) -> &str {
    if !node.name.is_empty() {
        &node.name
    } else {
        node.output
            .first()
            .map(String::as_str)
            .unwrap_or("(unnamed)")
    }
}

/// A constant the graph defines: an initializer (whose `raw_data` may be
/// left in the file) or a Constant node's value (decoded).
struct Constant<'a> {
    tensor: Cow<'a, TensorProto>,
    initializer: bool,
}

/// One entry of a shape computed from the input's shape at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dim {
    Batch,
    Fixed(i64),
}

/// A tensor computed from `Shape` of an activation: its values are known
/// except for the batch size.
#[derive(Clone, Debug)]
struct ShapeValue {
    dims: Vec<Dim>,
    scalar: bool,
}

struct Importer<'a> {
    path: &'a Path,
    file: Arc<ModelFile>,
    external: DataFiles,
    base: usize,
    map_len: usize,
    opset: i64,
    constants: HashMap<String, Constant<'a>>,
    shapes: HashMap<String, ShapeValue>,
    /// The output of the last node: the only computed value a node may read.
    activation: String,
    /// The activation's shape for a batch of one.
    shape: Vec<usize>,
    /// The batch size when the graph input fixes it.
    fixed_batch: Option<i64>,
    layers: Vec<Layer>,
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
            shapes: HashMap::new(),
            activation: String::new(),
            shape: Vec::new(),
            fixed_batch: None,
            layers: Vec::new(),
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
        self.activation = input_name.clone();
        self.shape = std::iter::once(1)
            .chain(sample_shape.iter().copied())
            .collect();
        for node in &graph.node {
            self.node(node)?;
        }
        let output_name = match graph.output.as_slice() {
            [out] => out.name.clone(),
            outs => {
                return Err(self.invalid(format!(
                    "the graph has {} outputs; mpinfer runs models with one",
                    outs.len()
                )))
            }
        };
        if output_name != self.activation {
            return Err(self.invalid(format!(
                "graph output {output_name} is not the last node's output {} \
                 (only sequential graphs are supported)",
                self.activation
            )));
        }
        Ok(Model {
            path: self.path.to_path_buf(),
            opset: self.opset,
            input_name,
            sample_shape,
            output_name,
            layers: self.layers,
        })
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
                    "domain {} is not supported; supported ops: {SUPPORTED_OPS}",
                    node.domain
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
            "Constant" => self.constant_node(node),
            "Identity" | "Dropout" => self.pass_through(node),
            "Shape" => self.shape_node(node),
            "Gather" | "Unsqueeze" | "Concat" | "Cast"
                if node.input.iter().any(|i| self.shapes.contains_key(i)) =>
            {
                self.shape_arith(node)
            }
            "Conv" => self.conv(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Add" => self.add(node),
            "Relu" => {
                self.activation_input(node)?;
                self.push(node, Op::Relu)
            }
            "MaxPool" => self.pool(node, PoolKind::Max),
            "AveragePool" => self.pool(node, PoolKind::Average),
            "GlobalAveragePool" => {
                self.activation_input(node)?;
                self.push(node, Op::GlobalAveragePool)
            }
            "Flatten" => {
                self.activation_input(node)?;
                let axis = Attrs(node).int("axis")?.unwrap_or(1);
                let rank = self.shape.len() as i64;
                let a = if axis < 0 { axis + rank } else { axis };
                if !(0..=rank).contains(&a) {
                    return Err(unsupported(
                        node,
                        format!("axis {axis} is outside the input's {rank} dimensions"),
                    ));
                }
                self.push(node, Op::Flatten { axis: a as usize })
            }
            "Reshape" => self.reshape(node),
            "Softmax" => {
                self.activation_input(node)?;
                let coerced = self.opset < 13;
                let default = if coerced { 1 } else { -1 };
                let axis = Attrs(node).int("axis")?.unwrap_or(default);
                self.push(node, Op::Softmax { axis, coerced })
            }
            "BatchNormalization" => self.batch_norm(node),
            _ => Err(unsupported(
                node,
                format!("op not supported; supported ops: {SUPPORTED_OPS}"),
            )),
        }
    }

    /// Adds a layer reading the activation, which becomes the node's output.
    fn push(&mut self, node: &NodeProto, op: Op) -> Result<(), ModelError> {
        self.push_layer(
            node,
            Layer {
                name: node_name(node).to_string(),
                op_type: node.op_type.clone(),
                op,
            },
        )
    }

    fn push_layer(&mut self, node: &NodeProto, layer: Layer) -> Result<(), ModelError> {
        // Shapes are checked now so that a model that cannot run fails here,
        // naming the layer, rather than on every rank later.
        self.shape = layer.output_shape(&self.shape)?;
        self.layers.push(layer);
        self.set_output(node)
    }

    fn set_output(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        if let Some(extra) = node.output.iter().skip(1).find(|o| !o.is_empty()) {
            if !matches!(node.op_type.as_str(), "Dropout") {
                return Err(unsupported(
                    node,
                    format!("second output {extra} is not supported"),
                ));
            }
        }
        self.activation = node.output[0].clone();
        Ok(())
    }

    /// Checks that input 0 is the activation and the other inputs constants.
    fn activation_input(&self, node: &NodeProto) -> Result<(), ModelError> {
        let Some(first) = node.input.first() else {
            return Err(unsupported(node, "the node has no input"));
        };
        if *first != self.activation {
            return Err(unsupported(
                node,
                format!(
                    "input {first} is not the previous node's output {} \
                     (only sequential graphs are supported)",
                    self.activation
                ),
            ));
        }
        for name in node.input.iter().skip(1) {
            if !name.is_empty() && !self.constants.contains_key(name) {
                return Err(unsupported(
                    node,
                    format!(
                        "input {name} is computed by the graph; only the first input may be \
                         (the others must be initializers or Constant outputs)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn optional_input<'n>(&self, node: &'n NodeProto, i: usize) -> Option<&'n str> {
        node.input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn required_input<'n>(&self, node: &'n NodeProto, i: usize) -> Result<&'n str, ModelError> {
        self.optional_input(node, i)
            .ok_or_else(|| unsupported(node, format!("input {i} is missing")))
    }

    fn constant(&self, node: &NodeProto, name: &str) -> Result<&Constant<'a>, ModelError> {
        self.constants.get(name).ok_or_else(|| {
            unsupported(
                node,
                format!("input {name} must be a constant (an initializer or a Constant output)"),
            )
        })
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
        self.constants.insert(
            node.output[0].clone(),
            Constant {
                tensor,
                initializer: false,
            },
        );
        Ok(())
    }

    /// Identity and Dropout: the output is the input, computed or constant.
    fn pass_through(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let input = self.required_input(node, 0)?;
        if let Some(c) = self.constants.get(input) {
            let alias = Constant {
                tensor: c.tensor.clone(),
                initializer: c.initializer,
            };
            self.constants.insert(node.output[0].clone(), alias);
            return Ok(());
        }
        if let Some(s) = self.shapes.get(input).cloned() {
            self.shapes.insert(node.output[0].clone(), s);
            return Ok(());
        }
        self.activation_input(node)?;
        if node.op_type == "Dropout" {
            // Opset 12 and later take training_mode as an input; in training
            // mode Dropout is not the identity.
            if let Some(mode) = self.optional_input(node, 2) {
                if self.ints(node, mode)?.iter().any(|&m| m != 0) {
                    return Err(unsupported(node, "training_mode must be false"));
                }
            }
        }
        self.set_output(node)
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

    /// A small float constant's values (BatchNormalization statistics, a
    /// bias to broadcast), read at load time.
    fn floats(&self, node: &NodeProto, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let w = self.weight(node, name)?;
        let t = w.read()?;
        Ok((t.shape, t.data))
    }

    fn shape_node(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let input = self.required_input(node, 0)?;
        if input != self.activation {
            return Err(unsupported(
                node,
                format!(
                    "Shape is supported only of the previous node's output {}, not of {input}",
                    self.activation
                ),
            ));
        }
        let rank = self.shape.len() as i64;
        let attrs = Attrs(node);
        let clamp = |v: i64| if v < 0 { v + rank } else { v }.clamp(0, rank) as usize;
        let start = clamp(attrs.int("start")?.unwrap_or(0));
        let end = clamp(attrs.int("end")?.unwrap_or(rank));
        let dims = (start..end.max(start))
            .map(|i| {
                if i == 0 {
                    Dim::Batch
                } else {
                    Dim::Fixed(self.shape[i] as i64)
                }
            })
            .collect();
        self.shapes.insert(
            node.output[0].clone(),
            ShapeValue {
                dims,
                scalar: false,
            },
        );
        Ok(())
    }

    /// Gather, Unsqueeze, Concat and Cast over values derived from Shape.
    fn shape_arith(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let attrs = Attrs(node);
        let input = |i: usize| -> Result<ShapeValue, ModelError> {
            let name = self.required_input(node, i)?;
            if let Some(s) = self.shapes.get(name) {
                return Ok(s.clone());
            }
            let t = self.constant(node, name)?.tensor.as_ref();
            let values = self.ints(node, name)?;
            Ok(ShapeValue {
                dims: values.into_iter().map(Dim::Fixed).collect(),
                scalar: t.dims.is_empty(),
            })
        };
        let out = match node.op_type.as_str() {
            "Gather" => {
                let data = input(0)?;
                let indices = input(1)?;
                if attrs.int("axis")?.unwrap_or(0) != 0 || data.scalar {
                    return Err(unsupported(node, "only Gather along axis 0 of a shape"));
                }
                let n = data.dims.len() as i64;
                let mut dims = Vec::with_capacity(indices.dims.len());
                for d in &indices.dims {
                    let i = match *d {
                        Dim::Fixed(i) if (-n..n).contains(&i) => (i + n) % n,
                        _ => {
                            return Err(unsupported(
                                node,
                                format!("index {d:?} outside a shape of {n} dimensions"),
                            ))
                        }
                    };
                    dims.push(data.dims[i as usize]);
                }
                ShapeValue {
                    dims,
                    scalar: indices.scalar,
                }
            }
            "Unsqueeze" => {
                let data = input(0)?;
                let axes = if self.opset >= 13 {
                    self.ints(node, self.required_input(node, 1)?)?
                } else {
                    attrs.ints("axes")?.unwrap_or_default()
                };
                if !(data.scalar && (axes == [0] || axes == [-1])) {
                    return Err(unsupported(
                        node,
                        "only Unsqueeze of a scalar into a vector is supported on shapes",
                    ));
                }
                ShapeValue {
                    dims: data.dims,
                    scalar: false,
                }
            }
            "Concat" => {
                let axis = attrs.int("axis")?.unwrap_or(0);
                if axis != 0 && axis != -1 {
                    return Err(unsupported(node, "only Concat along axis 0 of shapes"));
                }
                let mut dims = Vec::new();
                for i in 0..node.input.len() {
                    let part = input(i)?;
                    if part.scalar {
                        return Err(unsupported(node, "Concat of a scalar"));
                    }
                    dims.extend(part.dims);
                }
                ShapeValue {
                    dims,
                    scalar: false,
                }
            }
            "Cast" => {
                let to = attrs.int("to")?.unwrap_or(0) as i32;
                if to != data_type::INT64 && to != data_type::INT32 {
                    return Err(unsupported(node, "only Cast of shapes to integers"));
                }
                input(0)?
            }
            _ => unreachable!("only shape arithmetic ops are routed here"),
        };
        self.shapes.insert(node.output[0].clone(), out);
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        self.activation_input(node)?;
        let weight = self.weight(node, self.required_input(node, 1)?)?;
        if weight.shape.len() != 4 {
            return Err(unsupported(
                node,
                format!(
                    "weight has shape {:?}; only 2-D convolutions ([M, C/group, kH, kW]) are \
                     supported",
                    weight.shape
                ),
            ));
        }
        let bias = match self.optional_input(node, 2) {
            Some(name) => {
                let b = self.weight(node, name)?;
                if b.shape != [weight.shape[0]] {
                    return Err(unsupported(
                        node,
                        format!(
                            "bias has shape {:?}, expected [{}]",
                            b.shape, weight.shape[0]
                        ),
                    ));
                }
                Some(b)
            }
            None => None,
        };
        let attrs = Attrs(node);
        let kernel = [weight.shape[2], weight.shape[3]];
        if let Some(k) = attrs.ints("kernel_shape")? {
            if k != [kernel[0] as i64, kernel[1] as i64] {
                return Err(unsupported(
                    node,
                    format!("kernel_shape {k:?} does not match the weight's {kernel:?}"),
                ));
            }
        }
        let strides = attrs.pair(node, "strides")?;
        let dilations = attrs.pair(node, "dilations")?;
        let pads = self.pads(node, kernel, strides, dilations, false)?;
        let groups = attrs.int("group")?.unwrap_or(1);
        if groups < 1 {
            return Err(unsupported(
                node,
                format!("group {groups} must be positive"),
            ));
        }
        let conv = Conv2d {
            strides,
            pads,
            dilations,
            groups: groups as usize,
            relu: false,
        };
        self.push(node, Op::Conv { conv, weight, bias })
    }

    /// Explicit pads from `pads` or `auto_pad`. SAME_* pads are computed from
    /// the input's spatial size so that the output is ceil(input / stride).
    fn pads(
        &self,
        node: &NodeProto,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        ceil_mode: bool,
    ) -> Result<[usize; 4], ModelError> {
        let attrs = Attrs(node);
        let auto = attrs.string("auto_pad")?.unwrap_or_default();
        let explicit = match attrs.ints("pads")? {
            None => [0; 4],
            Some(p) => match p.as_slice() {
                &[a, b, c, d] if p.iter().all(|&v| (0..=MAX_WINDOW).contains(&v)) => {
                    [a as usize, b as usize, c as usize, d as usize]
                }
                _ => {
                    return Err(unsupported(
                        node,
                        format!("pads {p:?}: four non-negative values expected (2-D only)"),
                    ))
                }
            },
        };
        match auto.as_str() {
            "" | "NOTSET" => Ok(explicit),
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let [_, _, h, w] = self.shape[..] else {
                    return Err(unsupported(
                        node,
                        format!("input has shape {:?}, expected [N, C, H, W]", self.shape),
                    ));
                };
                if ceil_mode {
                    return Err(unsupported(node, "auto_pad SAME with ceil_mode"));
                }
                let mut pads = [0; 4];
                for (axis, input) in [h, w].into_iter().enumerate() {
                    let s = strides[axis];
                    let span = dilations[axis] * (kernel[axis].max(1) - 1) + 1;
                    let out = input.div_ceil(s);
                    let total = ((out - 1) * s + span).saturating_sub(input);
                    let (lo, hi) = if auto == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[axis] = lo;
                    pads[axis + 2] = hi;
                }
                Ok(pads)
            }
            other => Err(unsupported(
                node,
                format!("auto_pad {other} is not supported"),
            )),
        }
    }

    fn pool(&mut self, node: &NodeProto, kind: PoolKind) -> Result<(), ModelError> {
        self.activation_input(node)?;
        let attrs = Attrs(node);
        let kernel = match attrs.ints("kernel_shape")?.as_deref() {
            Some(&[h, w]) if (1..=MAX_WINDOW).contains(&h) && (1..=MAX_WINDOW).contains(&w) => {
                [h as usize, w as usize]
            }
            k => {
                return Err(unsupported(
                    node,
                    format!("kernel_shape {k:?}: two positive values expected (2-D only)"),
                ))
            }
        };
        let strides = attrs.pair(node, "strides")?;
        let dilations = attrs.pair(node, "dilations")?;
        let ceil_mode = attrs.int("ceil_mode")?.unwrap_or(0) != 0;
        let pads = self.pads(node, kernel, strides, dilations, ceil_mode)?;
        let count_include_pad = attrs.int("count_include_pad")?.unwrap_or(0) != 0;
        let pool = Pool2d {
            kind,
            kernel,
            strides,
            pads,
            dilations,
            ceil_mode,
            count_include_pad,
        };
        self.push(node, Op::Pool(pool))
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        self.activation_input(node)?;
        let attrs = Attrs(node);
        let gemm = Gemm {
            trans_a: attrs.int("transA")?.unwrap_or(0) != 0,
            trans_b: attrs.int("transB")?.unwrap_or(0) != 0,
            alpha: attrs.float("alpha")?.unwrap_or(1.0),
            beta: 1.0,
            relu: false,
        };
        let beta = attrs.float("beta")?.unwrap_or(1.0);
        let weight = self.weight(node, self.required_input(node, 1)?)?;
        let n = gemm_n(node, &gemm, &weight)?;
        let bias = match self.optional_input(node, 2) {
            Some(c) => self.bias(node, c, n, beta)?,
            None => None,
        };
        self.push(node, Op::Gemm { gemm, weight, bias })
    }

    /// `C` (or an Add's constant) as an `[n]` bias times `beta`. A `C` with
    /// one row is broadcast down the rows; one with several would tie the
    /// model to one batch size and is refused.
    fn bias(
        &self,
        node: &NodeProto,
        name: &str,
        n: usize,
        beta: f32,
    ) -> Result<Option<Weight>, ModelError> {
        if beta == 0.0 {
            return Ok(None);
        }
        let mut w = self.weight(node, name)?;
        let rows: usize = w.shape.iter().rev().skip(1).product();
        let cols = w.shape.last().copied().unwrap_or(1);
        if w.shape.len() > 2 || rows != 1 || (cols != n && cols != 1) {
            let why = if w.shape.len() == 2 && rows > 1 && (cols == n || cols == 1) {
                "one row per batch row would tie the model to one batch size; \
                 a bias of [N] or [1, N] is supported"
            } else {
                "expected [N], [1, N] or a single value"
            };
            return Err(unsupported(
                node,
                format!("bias {name} has shape {:?} with N = {n}: {why}", w.shape),
            ));
        }
        if cols == n && beta == 1.0 {
            // Same values in the same order: the file's copy is used as is.
            w.shape = vec![n];
            return Ok(Some(w));
        }
        let values = w.read()?.data;
        let expanded = (0..n).map(|j| beta * values[j % values.len()]).collect();
        Ok(Some(Weight::from_values(name, vec![n], expanded)))
    }

    fn matmul(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        self.activation_input(node)?;
        let weight = self.weight(node, self.required_input(node, 1)?)?;
        if weight.shape.len() != 2 {
            return Err(unsupported(
                node,
                format!(
                    "right operand has shape {:?}; a constant 2-D matrix is expected",
                    weight.shape
                ),
            ));
        }
        let gemm = Gemm::default();
        self.push(
            node,
            Op::Gemm {
                gemm,
                weight,
                bias: None,
            },
        )
    }

    /// Add of a constant bias to the output of a MatMul or Gemm without one.
    fn add(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let why = "Add is supported only as a constant bias ([N] or [1, N]) added to the output \
                   of the MatMul or Gemm (without C) just before it";
        let [a, b] = node.input.as_slice() else {
            return Err(unsupported(node, why));
        };
        let bias_name = if *a == self.activation && self.constants.contains_key(b) {
            b
        } else if *b == self.activation && self.constants.contains_key(a) {
            a
        } else if self.constants.contains_key(a) || self.constants.contains_key(b) {
            return Err(unsupported(
                node,
                format!(
                    "no input is the previous node's output {} (only sequential graphs are \
                     supported)",
                    self.activation
                ),
            ));
        } else {
            return Err(unsupported(
                node,
                format!("both inputs ({a}, {b}) are computed by the graph; {why}"),
            ));
        };
        let Some(Layer {
            op: Op::Gemm { gemm, weight, bias },
            ..
        }) = self.layers.last()
        else {
            return Err(unsupported(node, why));
        };
        if bias.is_some() {
            return Err(unsupported(node, why));
        }
        let n = gemm_n(node, gemm, weight)?;
        let new_bias = self.bias(node, bias_name, n, 1.0)?;
        let last = self.layers.last_mut().expect("checked above");
        if let Op::Gemm { bias, .. } = &mut last.op {
            *bias = new_bias;
        }
        last.op_type = format!("{}+Add", last.op_type);
        self.set_output(node)
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        let [x, target] = node.input.as_slice() else {
            return Err(unsupported(node, "Reshape needs data and shape inputs"));
        };
        if *x != self.activation {
            return Err(unsupported(
                node,
                format!(
                    "input {x} is not the previous node's output {} \
                     (only sequential graphs are supported)",
                    self.activation
                ),
            ));
        }
        let allowzero = Attrs(node).int("allowzero")?.unwrap_or(0) != 0;
        let op = if let Some(s) = self.shapes.get(target) {
            // The batch entry may only lead: everything else is fixed.
            let mut shape = Vec::with_capacity(s.dims.len());
            for (i, d) in s.dims.iter().enumerate() {
                shape.push(match *d {
                    Dim::Batch if i == 0 => 0,
                    Dim::Fixed(v) if v != 0 || !allowzero => v,
                    _ => {
                        return Err(unsupported(
                            node,
                            format!("computed shape {:?} moves the batch dimension", s.dims),
                        ))
                    }
                });
            }
            if shape == [0, -1] {
                Op::Flatten { axis: 1 }
            } else {
                Op::Reshape { shape }
            }
        } else {
            let mut shape = self.ints(node, target)?;
            if allowzero && shape.contains(&0) {
                return Err(unsupported(node, "allowzero with a zero in the shape"));
            }
            // A model exported for a fixed batch size often spells that size
            // into its Reshape; read it as "keep the batch" so the model runs
            // at any batch size.
            if self.fixed_batch.is_some() && shape.first().copied() == self.fixed_batch {
                log::debug!(
                    "{}: Reshape {}: reading the leading {} of {shape:?} as the batch",
                    self.path.display(),
                    node_name(node),
                    shape[0]
                );
                shape[0] = 0;
            }
            Op::Reshape { shape }
        };
        if let Op::Reshape { shape } = &op {
            let fixed = shape
                .iter()
                .filter(|&&d| d > 0)
                .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
            if fixed.is_none_or(|n| n > MAX_SAMPLE) {
                return Err(unsupported(
                    node,
                    format!("target shape {shape:?} is too large"),
                ));
            }
        }
        self.push(node, op)
    }

    fn batch_norm(&mut self, node: &NodeProto) -> Result<(), ModelError> {
        self.activation_input(node)?;
        let attrs = Attrs(node);
        if attrs.int("training_mode")?.unwrap_or(0) != 0 {
            return Err(unsupported(node, "training_mode must be 0"));
        }
        let eps = attrs.float("epsilon")?.unwrap_or(1e-5);
        let Some(Layer {
            op: Op::Conv { weight, bias, .. },
            ..
        }) = self.layers.last()
        else {
            return Err(unsupported(
                node,
                "BatchNormalization is supported only directly after a Conv, folded into it",
            ));
        };
        let m = weight.shape[0];
        let mut params = Vec::with_capacity(4);
        for (i, what) in ["scale", "B", "mean", "var"].into_iter().enumerate() {
            let (shape, values) = self.floats(node, self.required_input(node, i + 1)?)?;
            if values.len() != m {
                return Err(unsupported(
                    node,
                    format!("{what} has shape {shape:?}, expected [{m}] (the Conv's outputs)"),
                ));
            }
            params.push(values);
        }
        let [gamma, beta, mean, var] = <[Vec<f32>; 4]>::try_from(params).expect("four inputs");
        let old_bias = match bias {
            Some(b) => b.read()?.data,
            None => vec![0.0; m],
        };
        // Computed in f64: the folded values are then the f32 nearest to the
        // exact ones.
        let scale: Vec<f64> = (0..m)
            .map(|i| gamma[i] as f64 / (var[i] as f64 + eps as f64).sqrt())
            .collect();
        let new_bias: Vec<f32> = (0..m)
            .map(|i| ((old_bias[i] as f64 - mean[i] as f64) * scale[i] + beta[i] as f64) as f32)
            .collect();
        let row_scale: Vec<f32> = match &weight.row_scale {
            Some(old) => (0..m).map(|i| (old[i] as f64 * scale[i]) as f32).collect(),
            None => scale.iter().map(|&s| s as f32).collect(),
        };
        let last = self.layers.last_mut().expect("checked above");
        let layer_name = last.name.clone();
        if let Op::Conv { weight, bias, .. } = &mut last.op {
            weight.row_scale = Some(Arc::new(row_scale));
            *bias = Some(Weight::from_values(
                &format!("{layer_name}.bias+{}", node_name(node)),
                vec![m],
                new_bias,
            ));
        }
        last.op_type = format!("{}+BatchNormalization", last.op_type);
        self.set_output(node)
    }
}

/// N of a Gemm: the weight's columns after its transpose.
fn gemm_n(node: &NodeProto, gemm: &Gemm, weight: &Weight) -> Result<usize, ModelError> {
    match weight.shape[..] {
        [r, c] => Ok(if gemm.trans_b { r } else { c }),
        _ => Err(unsupported(
            node,
            format!("B has shape {:?}; a 2-D matrix is expected", weight.shape),
        )),
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

/// A node's attributes, each checked for its type when read.
struct Attrs<'n>(&'n NodeProto);

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

    fn int(&self, name: &str) -> Result<Option<i64>, ModelError> {
        Ok(self.get(name, attribute_type::INT)?.map(|a| a.i))
    }

    fn float(&self, name: &str) -> Result<Option<f32>, ModelError> {
        Ok(self.get(name, attribute_type::FLOAT)?.map(|a| a.f))
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, ModelError> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str) -> Result<Option<String>, ModelError> {
        Ok(self
            .get(name, attribute_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    /// A two-value attribute (strides, dilations), 1 by default.
    fn pair(&self, node: &NodeProto, name: &str) -> Result<[usize; 2], ModelError> {
        match self.ints(name)?.as_deref() {
            None => Ok([1, 1]),
            Some(&[a, b]) if (1..=MAX_WINDOW).contains(&a) && (1..=MAX_WINDOW).contains(&b) => {
                Ok([a as usize, b as usize])
            }
            Some(v) => Err(unsupported(
                node,
                format!("{name} {v:?}: two values from 1 to {MAX_WINDOW} expected (2-D only)"),
            )),
        }
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

    #[test]
    fn raw_values_widen() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(decode_raw(&raw, StoredDType::F32), vec![1.5, -2.0]);
        let raw: Vec<u8> = half::f16::from_f32(0.25).to_le_bytes().to_vec();
        assert_eq!(decode_raw(&raw, StoredDType::F16), vec![0.25]);
        let raw: Vec<u8> = half::bf16::from_f32(-3.0).to_le_bytes().to_vec();
        assert_eq!(decode_raw(&raw, StoredDType::BF16), vec![-3.0]);
    }
}
