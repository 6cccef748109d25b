//! A model as mpinfer runs it: a graph of nodes over named values.
//!
//! Values are the graph input, constants (initializers and Constant nodes)
//! and node outputs. Nodes are kept in an order where every node comes after
//! the nodes whose outputs it reads. Weights are not read when the model is
//! loaded: a constant's [`Weight`] knows where its values lie, so a rank
//! that holds a shard of a node reads that shard and nothing else.
//!
//! Shapes are not stored: every shape but the batch's is fixed by the graph
//! input, and [`Model::spec`] works out every value's shape (and every
//! integer value, such as a shape computed with Shape and Concat) for one
//! batch size.

mod batch;
mod fuse;
pub(crate) mod infer;
mod ints;
pub mod op;
mod pack;
mod spec;

pub use batch::BatchAxis;
pub use fuse::{fold_batch_norms, fuse_linear_bias, prune_dead};
pub use ints::Ints;
pub use op::{AutoPad, Compare, Elem, Op, Spatial};
pub use pack::OutputPart;
pub use spec::{Known, Spec};

use crate::model::Weight;
use std::path::PathBuf;

pub type ValueId = usize;

#[derive(Clone, Debug)]
pub enum Constant {
    /// A float tensor, read on demand.
    Weight(Weight),
    /// Integers or booleans, decoded at load (shapes, axes, indices).
    Ints(Ints),
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub elem: Elem,
    pub constant: Option<Constant>,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node's name (or its first output's name when it has none).
    pub name: String,
    /// The ONNX op type(s) it came from, e.g. "Conv+BatchNormalization".
    pub op_type: String,
    pub op: Op,
    /// `None` for an optional input left out.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn error(&self, message: impl Into<String>) -> crate::ModelError {
        crate::ModelError::Node {
            node: self.name.clone(),
            op_type: self.op_type.clone(),
            message: message.into(),
        }
    }
}

#[derive(Debug)]
pub struct Model {
    pub path: PathBuf,
    pub opset: i64,
    pub input: ValueId,
    /// Shape of one input sample (without the batch dimension).
    pub sample_shape: Vec<usize>,
    pub outputs: Vec<ValueId>,
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
}

impl Model {
    pub fn input_name(&self) -> &str {
        &self.values[self.input].name
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs
            .iter()
            .map(|&v| self.values[v].name.as_str())
            .collect()
    }

    /// The one output a run computes; a model with several is refused,
    /// naming them ([`Model::pack_outputs`] makes one).
    pub fn single_output(&self) -> Result<ValueId, crate::ModelError> {
        match self.outputs[..] {
            [v] => Ok(v),
            _ => Err(crate::ModelError::Graph {
                path: self.path.clone(),
                message: format!(
                    "the model has {} outputs ({}); runs take models with one",
                    self.outputs.len(),
                    self.output_names().join(", ")
                ),
            }),
        }
    }

    pub fn weight(&self, v: ValueId) -> Option<&Weight> {
        match &self.values[v].constant {
            Some(Constant::Weight(w)) => Some(w),
            _ => None,
        }
    }

    /// Every float constant some node reads, for sizes and hashes.
    pub fn weights(&self) -> Vec<&Weight> {
        let mut used = vec![false; self.values.len()];
        for v in self.nodes.iter().flat_map(|n| n.inputs.iter().flatten()) {
            used[*v] = true;
        }
        (0..self.values.len())
            .filter(|&v| used[v])
            .filter_map(|v| self.weight(v))
            .collect()
    }

    /// The files other than the model that hold its weights (ONNX external
    /// data), each once.
    pub fn data_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .weights()
            .iter()
            .filter_map(|w| match &w.source {
                crate::model::Source::File { file, .. } if file.path != self.path => {
                    Some(file.path.clone())
                }
                _ => None,
            })
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// For each value, the nodes that read it, in order.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                if out[*v].last() != Some(&i) {
                    out[*v].push(i);
                }
            }
        }
        out
    }

    /// The node that computes each value.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.outputs {
                out[v] = Some(i);
            }
        }
        out
    }

    /// Shapes of the output samples.
    pub fn output_sample_shapes(&self) -> Result<Vec<Vec<usize>>, crate::ModelError> {
        let spec = self.spec(1)?;
        Ok(self
            .outputs
            .iter()
            .map(|&v| spec.shape(v)[1..].to_vec())
            .collect())
    }
}
