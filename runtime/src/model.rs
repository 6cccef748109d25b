//! A model as mpinfer runs it: a chain of layers, one input, one output.
//!
//! Weights are not read when the model is loaded. Each [`Weight`] knows where
//! its values lie in the model file, so a rank that holds a shard of a layer
//! reads that shard and nothing else.

use crate::error::{ModelError, ReshapeError};
use mpinfer_kernels::cpu::{Conv2d, Gemm, Pool2d};
use mpinfer_kernels::{StoredDType, Tensor};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// The model file, kept open so that weights can be read from it later.
#[derive(Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// Where a weight's values come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Computed or decoded at load time (small tensors, typed protobuf fields).
    Values(Arc<Vec<f32>>),
    /// Little-endian values at `offset` in the model file.
    File {
        file: Arc<ModelFile>,
        offset: u64,
        dtype: StoredDType,
    },
}

/// A constant tensor of the model, read on demand.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Initializer name, for messages.
    pub name: String,
    pub shape: Vec<usize>,
    pub source: Source,
    /// Multiplies every value of index `i` along axis 0 by `row_scale[i]`:
    /// a BatchNormalization folded into the convolution before it, applied
    /// as the weight is read so that folding keeps weights in the file.
    pub row_scale: Option<Arc<Vec<f32>>>,
}

impl Weight {
    pub fn from_values(name: &str, shape: Vec<usize>, values: Vec<f32>) -> Weight {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        Weight {
            name: name.to_string(),
            shape,
            source: Source::Values(Arc::new(values)),
            row_scale: None,
        }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole tensor, widened to f32.
    pub fn read(&self) -> Result<Tensor, ModelError> {
        let all: Vec<Range<usize>> = self.shape.iter().map(|&d| 0..d).collect();
        self.read_slice(&all)
    }

    /// The values inside `ranges` (one per axis), as a tensor of the slice's
    /// shape. Reads only the slice's bytes from the file.
    pub fn read_slice(&self, ranges: &[Range<usize>]) -> Result<Tensor, ModelError> {
        if ranges.len() != self.shape.len()
            || ranges
                .iter()
                .zip(&self.shape)
                .any(|(r, &d)| r.start > r.end || r.end > d)
        {
            return Err(ModelError::WeightSlice {
                weight: self.name.clone(),
                ranges: ranges.to_vec(),
                shape: self.shape.clone(),
            });
        }
        let out_shape: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
        let total: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(total);
        if total > 0 {
            // The slice is a set of runs contiguous along the last axes: find
            // how many trailing axes are taken whole, then walk the rest.
            let rank = self.shape.len();
            let mut inner = 1usize;
            let mut split = rank;
            while split > 0 && ranges[split - 1].len() == self.shape[split - 1] {
                inner *= self.shape[split - 1];
                split -= 1;
            }
            let (run_axis, run) = if split == 0 {
                (None, inner)
            } else {
                (Some(split - 1), ranges[split - 1].len() * inner)
            };
            let strides: Vec<usize> = (0..rank)
                .map(|a| self.shape[a + 1..].iter().product())
                .collect();
            let outer_axes = run_axis.unwrap_or(0);
            let mut index: Vec<usize> = ranges[..outer_axes].iter().map(|r| r.start).collect();
            loop {
                let mut start: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
                if let Some(a) = run_axis {
                    start += ranges[a].start * strides[a];
                }
                self.read_run(start, run, &mut out)?;
                // Odometer over the outer axes.
                let mut a = outer_axes;
                loop {
                    if a == 0 {
                        return self.finish(out, out_shape, ranges);
                    }
                    a -= 1;
                    index[a] += 1;
                    if index[a] < ranges[a].end {
                        break;
                    }
                    index[a] = ranges[a].start;
                }
            }
        }
        self.finish(out, out_shape, ranges)
    }

    fn finish(
        &self,
        mut out: Vec<f32>,
        shape: Vec<usize>,
        ranges: &[Range<usize>],
    ) -> Result<Tensor, ModelError> {
        if let (Some(scale), Some(rows)) = (&self.row_scale, ranges.first()) {
            let per_row = out.len() / rows.len().max(1);
            for (i, row) in out.chunks_mut(per_row.max(1)).enumerate() {
                let s = scale[rows.start + i];
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        Ok(Tensor::new(shape, out))
    }

    /// Appends `count` values starting at flat index `start`.
    fn read_run(&self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<(), ModelError> {
        match &self.source {
            Source::Values(v) => {
                out.extend_from_slice(&v[start..start + count]);
                Ok(())
            }
            Source::File {
                file,
                offset,
                dtype,
            } => {
                let width = match dtype {
                    StoredDType::F32 => 4,
                    StoredDType::F16 | StoredDType::BF16 => 2,
                };
                let mut bytes = vec![0u8; count * width];
                let at = offset + (start * width) as u64;
                file.file
                    .read_exact_at(&mut bytes, at)
                    .map_err(|e| ModelError::Format {
                        path: file.path.clone(),
                        message: format!("weight {} at byte {at}: {e}", self.name),
                    })?;
                match dtype {
                    StoredDType::F32 => out.extend(
                        bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    ),
                    StoredDType::F16 => out.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                    ),
                    StoredDType::BF16 => out.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                    ),
                }
                Ok(())
            }
        }
    }
}

/// What one layer computes. Activations flow from one layer to the next.
#[derive(Clone, Debug)]
pub enum Op {
    /// ONNX Conv; `weight` is `[M, C/groups, kH, kW]`, `bias` is `[M]`.
    Conv {
        conv: Conv2d,
        weight: Weight,
        bias: Option<Weight>,
    },
    /// ONNX Gemm (or MatMul followed by Add) with the activation as `A` and a
    /// constant `B` as stored (`[K, N]`, or `[N, K]` when `gemm.trans_b`);
    /// `bias` is `C` expanded to `[N]`, already multiplied by `beta`
    /// (`gemm.beta` is then 1).
    Gemm {
        gemm: Gemm,
        weight: Weight,
        bias: Option<Weight>,
    },
    Relu,
    Pool(Pool2d),
    GlobalAveragePool,
    Flatten {
        axis: usize,
    },
    /// ONNX Reshape with a constant target shape (0 copies the input's
    /// dimension, -1 is inferred); the batch dimension is usually 0 or -1.
    Reshape {
        shape: Vec<i64>,
    },
    /// `coerced`: the pre-opset-13 semantics (normalise the 2-D view split at
    /// `axis`), else along the one axis. Negative axes count from the end.
    Softmax {
        axis: i64,
        coerced: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Layer {
    /// The ONNX node's name (or its output's name when the node has none).
    pub name: String,
    /// The ONNX op type(s) it came from, e.g. "Conv+BatchNormalization".
    pub op_type: String,
    pub op: Op,
}

#[derive(Debug)]
pub struct Model {
    pub path: PathBuf,
    pub opset: i64,
    pub input_name: String,
    /// Shape of one sample (without the batch dimension).
    pub sample_shape: Vec<usize>,
    pub output_name: String,
    pub layers: Vec<Layer>,
}

impl Model {
    /// Shape of every layer's output for a batch of `batch` samples:
    /// `shapes[i]` is the output of layer `i`.
    pub fn shapes(&self, batch: usize) -> Result<Vec<Vec<usize>>, ModelError> {
        let mut shape: Vec<usize> = std::iter::once(batch)
            .chain(self.sample_shape.iter().copied())
            .collect();
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            shape = layer.output_shape(&shape)?;
            out.push(shape.clone());
        }
        Ok(out)
    }

    /// Shape of one output sample.
    pub fn output_sample_shape(&self) -> Result<Vec<usize>, ModelError> {
        let last = self.shapes(1)?.pop().unwrap_or_else(|| {
            std::iter::once(1)
                .chain(self.sample_shape.iter().copied())
                .collect()
        });
        Ok(last[1..].to_vec())
    }
}

impl Layer {
    pub fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, ModelError> {
        let at = |e: mpinfer_kernels::KernelError| ModelError::Layer {
            layer: self.name.clone(),
            op_type: self.op_type.clone(),
            message: e.to_string(),
        };
        match &self.op {
            Op::Conv { conv, weight, .. } => conv.output_shape(x, &weight.shape).map_err(at),
            Op::Gemm { gemm, weight, .. } => {
                let (m, _, n) = gemm.dims(x, &weight.shape).map_err(at)?;
                Ok(vec![m, n])
            }
            Op::Relu | Op::Softmax { .. } => Ok(x.to_vec()),
            Op::Pool(p) => p.output_shape(x).map_err(at),
            Op::GlobalAveragePool => match x {
                [n, c, _, _] => Ok(vec![*n, *c, 1, 1]),
                _ => Err(self.error(format!("input has shape {x:?}, expected [N, C, H, W]"))),
            },
            Op::Flatten { axis } => {
                if *axis > x.len() {
                    return Err(self.error(format!("axis {axis} beyond input shape {x:?}")));
                }
                Ok(vec![
                    x[..*axis].iter().product(),
                    x[*axis..].iter().product(),
                ])
            }
            Op::Reshape { shape } => {
                reshape_target(x, shape).map_err(|e| self.error(e.to_string()))
            }
        }
    }

    pub fn error(&self, message: String) -> ModelError {
        ModelError::Layer {
            layer: self.name.clone(),
            op_type: self.op_type.clone(),
            message,
        }
    }

    /// Multiply-adds ×2 for a batch of `batch` given the input shape.
    pub fn flops(&self, x: &[usize]) -> u64 {
        let Ok(y) = self.output_shape(x) else {
            return 0;
        };
        match &self.op {
            Op::Conv { weight, .. } => {
                let per_output: usize = weight.shape[1..].iter().product();
                2 * (y.iter().product::<usize>() * per_output) as u64
            }
            Op::Gemm { gemm, weight, .. } => {
                let (m, k, n) = gemm.dims(x, &weight.shape).unwrap_or((0, 0, 0));
                2 * (m * k * n) as u64
            }
            Op::Pool(p) => (y.iter().product::<usize>() * p.kernel[0] * p.kernel[1]) as u64,
            _ => x.iter().product::<usize>() as u64,
        }
    }

    /// The layer's weights, for sizes and hashes.
    pub fn weights(&self) -> Vec<&Weight> {
        match &self.op {
            Op::Conv { weight, bias, .. } | Op::Gemm { weight, bias, .. } => {
                std::iter::once(weight).chain(bias.as_ref()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// ONNX Reshape's target shape for input shape `x` (allowzero = 0).
pub fn reshape_target(x: &[usize], shape: &[i64]) -> Result<Vec<usize>, ReshapeError> {
    // An empty batch still has a per-sample shape: infer -1 as if every
    // zero dimension were 1, then copy the zeros back.
    let total: usize = x.iter().map(|&d| d.max(1)).product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            0 => out.push(*x.get(i).ok_or_else(|| ReshapeError::NoDimensionToCopy {
                target: shape.to_vec(),
                axis: i,
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            _ => {
                return Err(ReshapeError::BadTarget {
                    target: shape.to_vec(),
                })
            }
        }
    }
    let mismatch = || ReshapeError::Mismatch {
        input: x.to_vec(),
        target: shape.to_vec(),
    };
    let known: usize = out.iter().map(|&d| d.max(1)).product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(mismatch());
        }
        out[i] = total / known;
        if x.contains(&0) && !out.contains(&0) {
            out[i] = 0;
        }
    } else if known != total {
        return Err(mismatch());
    }
    Ok(out)
}
