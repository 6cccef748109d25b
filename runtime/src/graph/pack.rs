//! A model with several outputs run as one with a single output: each row
//! of that output is the rows of the model's outputs side by side, each
//! flattened. Every strategy then treats the outputs together; the writer
//! takes them apart again.

use super::{Elem, Model, Node, Op, Value, ValueId};
use crate::ModelError;

/// One of the model's outputs inside a packed row.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputPart {
    pub name: String,
    /// The shape of one row of this output (without the batch).
    pub sample: Vec<usize>,
}

impl OutputPart {
    pub fn row_len(&self) -> usize {
        self.sample.iter().product()
    }
}

impl Model {
    /// This model with its outputs packed into one, and where each lies in
    /// a packed row, in the model's order. A model with one output is
    /// returned as it is.
    pub fn pack_outputs(mut self) -> Result<(Model, Vec<OutputPart>), ModelError> {
        let parts: Vec<OutputPart> = self
            .output_names()
            .into_iter()
            .zip(self.output_sample_shapes()?)
            .map(|(name, sample)| OutputPart {
                name: name.to_string(),
                sample,
            })
            .collect();
        if let Some(&v) = self
            .outputs
            .iter()
            .find(|&&v| self.values[v].elem != Elem::Float)
        {
            return Err(self.graph_error(format!(
                "output {} holds integers, which runs do not write",
                self.values[v].name
            )));
        }
        if self.outputs.len() == 1 {
            return Ok((self, parts));
        }
        let flat: Vec<Option<ValueId>> = self
            .outputs
            .clone()
            .into_iter()
            .map(|v| {
                let name = format!("{}.flat", self.values[v].name);
                Some(self.append(&name, Op::Flatten { axis: 1 }, vec![Some(v)]))
            })
            .collect();
        let packed = self.append("outputs.packed", Op::Concat { axis: 1 }, flat);
        self.outputs = vec![packed];
        Ok((self, parts))
    }

    /// A float value named `name` computed by a new last node.
    fn append(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>) -> ValueId {
        let v = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            elem: Elem::Float,
            constant: None,
        });
        let op_type = match op {
            Op::Flatten { .. } => "Flatten",
            _ => "Concat",
        };
        self.nodes.push(Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            op,
            inputs,
            outputs: vec![v],
        });
        v
    }

    fn graph_error(&self, message: String) -> ModelError {
        ModelError::Graph {
            path: self.path.clone(),
            message,
        }
    }
}
