//! Weights as they lie in the model's files, and the graph that uses them.
//!
//! Weights are not read when the model is loaded. Each [`Weight`] knows where
//! its values lie in the model file, so a rank that holds a shard of a node
//! reads that shard and nothing else.

use crate::error::{ModelError, ReshapeError};
use mpinfer_kernels::{StoredDType, Tensor};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::graph::Model;

thread_local! {
    /// Bytes of weights this thread has read from model and data files.
    static BYTES_READ: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bytes of weights the calling thread has read from files so far: what a
/// rank (one thread per rank in-process) has taken of the model.
pub fn bytes_read() -> u64 {
    BYTES_READ.with(|b| b.get())
}

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
                BYTES_READ.with(|b| b.set(b.get() + bytes.len() as u64));
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
    // A target larger than any input cannot match it; checked so that a
    // hostile shape cannot overflow the product.
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .ok_or_else(mismatch)?;
    let empty = x.contains(&0);
    match infer {
        // An empty input whose zero went into the -1: that is the zero.
        Some(i) if empty && !out.contains(&0) => out[i] = 0,
        Some(i) => {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(mismatch());
            }
            out[i] = total / known;
        }
        // Empty in, empty out: the other dimensions were checked at batch
        // sizes that hold rows.
        None if empty && !out.contains(&0) => return Err(mismatch()),
        None if empty => {}
        None if known != total => return Err(mismatch()),
        None => {}
    }
    Ok(out)
}
