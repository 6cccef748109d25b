//! Dense row-major (NCHW) tensors.

use half::{bf16, f16};

/// A dense f32 tensor, row-major; images are NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not match {} values",
            data.len()
        );
        Tensor { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Same data, another shape of the same element count.
    pub fn reshape(mut self, shape: Vec<usize>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.data.len(),
            "cannot reshape {:?} to {shape:?}",
            self.shape
        );
        self.shape = shape;
        self
    }
}

/// Element type of stored (not computed) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
}

/// Values as stored, for weights kept in 16 bits to halve their memory and
/// bytes moved; compute widens them to f32.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Stored {
    pub fn from_f32(values: &[f32], dtype: StoredDType) -> Stored {
        use half::slice::HalfFloatSliceExt;
        match dtype {
            StoredDType::F32 => Stored::F32(values.to_vec()),
            StoredDType::F16 => {
                let mut v = vec![f16::ZERO; values.len()];
                v.convert_from_f32_slice(values);
                Stored::F16(v)
            }
            StoredDType::BF16 => {
                let mut v = vec![bf16::ZERO; values.len()];
                v.convert_from_f32_slice(values);
                Stored::BF16(v)
            }
        }
    }

    pub fn dtype(&self) -> StoredDType {
        match self {
            Stored::F32(_) => StoredDType::F32,
            Stored::F16(_) => StoredDType::F16,
            Stored::BF16(_) => StoredDType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Stored::F32(v) => v.len(),
            Stored::F16(v) => v.len(),
            Stored::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_f32(&self) -> Vec<f32> {
        use half::slice::HalfFloatSliceExt;
        match self {
            Stored::F32(v) => v.clone(),
            Stored::F16(v) => v.to_f32_vec(),
            Stored::BF16(v) => v.to_f32_vec(),
        }
    }
}
