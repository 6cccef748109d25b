//! Tensors in device memory, and copies between them and host tensors.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};

use super::{driver_error, Gpu};
use crate::error::{shape_err, KernelError};
use crate::tensor::{Stored, StoredDType, Tensor};
use cudarc::driver::DriverError;

/// A dense row-major tensor on one device, stored as `dtype`.
#[derive(Debug)]
pub struct GpuTensor {
    shape: Vec<usize>,
    dtype: StoredDType,
    buffer: Buffer,
}

/// f16 and bf16 share a buffer type: the kernels read the bits, and
/// `dtype` says which format they are in.
#[derive(Debug)]
enum Buffer {
    F32(CudaSlice<f32>),
    Bits16(CudaSlice<u16>),
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> StoredDType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Same data, another shape of the same element count (no copy).
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<GpuTensor, KernelError> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(shape_err(
                "Reshape",
                "input",
                &self.shape,
                format!("{} values for {shape:?}", shape.iter().product::<usize>()),
            ));
        }
        self.shape = shape;
        Ok(self)
    }

    pub(crate) fn belongs_to(&self, stream: &Arc<CudaStream>) -> bool {
        match &self.buffer {
            Buffer::F32(s) => Arc::ptr_eq(s.stream(), stream),
            Buffer::Bits16(s) => Arc::ptr_eq(s.stream(), stream),
        }
    }

    /// Device address of the first element, for kernel parameters.
    pub(crate) fn ptr(&self, stream: &CudaStream) -> u64 {
        // The access guards only record events, which this crate's streams
        // do not use; dropping them at once is fine.
        match &self.buffer {
            Buffer::F32(s) => s.device_ptr(stream).0,
            Buffer::Bits16(s) => s.device_ptr(stream).0,
        }
    }

    /// Copies all of `src`, which has this tensor's dtype and length.
    pub(crate) fn copy_from(
        &mut self,
        src: &GpuTensor,
        stream: &Arc<CudaStream>,
    ) -> Result<(), KernelError> {
        let n = src.len();
        match (&mut self.buffer, &src.buffer) {
            (Buffer::F32(d), Buffer::F32(s)) => {
                stream.memcpy_dtod(&s.slice(..n), &mut d.slice_mut(..n))
            }
            (Buffer::Bits16(d), Buffer::Bits16(s)) => {
                stream.memcpy_dtod(&s.slice(..n), &mut d.slice_mut(..n))
            }
            _ => unreachable!("callers copy between tensors of one dtype"),
        }
        .map_err(driver_error(format!("copying {n} values on the device")))
    }

    pub(crate) fn ptr_mut(&mut self, stream: &CudaStream) -> u64 {
        match &mut self.buffer {
            Buffer::F32(s) => s.device_ptr_mut(stream).0,
            Buffer::Bits16(s) => s.device_ptr_mut(stream).0,
        }
    }
}

fn alloc_error(n: usize, dtype: StoredDType) -> impl FnOnce(DriverError) -> KernelError {
    driver_error(format!("allocating {n} values of {dtype:?}"))
}

pub(crate) fn dtype_size(dtype: StoredDType) -> usize {
    match dtype {
        StoredDType::F32 => 4,
        StoredDType::F16 | StoredDType::BF16 => 2,
    }
}

impl Gpu {
    /// A tensor whose contents are unspecified until an op writes them.
    pub(crate) fn alloc(
        &self,
        shape: Vec<usize>,
        dtype: StoredDType,
    ) -> Result<GpuTensor, KernelError> {
        // At least one element: zero-byte allocations are not valid for
        // every allocator, and an empty tensor never reads its buffer.
        let n = shape.iter().product::<usize>().max(1);
        let stream = self.stream();
        // SAFETY: device memory is only reached through kernels and copies;
        // no host reference to uninitialised memory is ever formed.
        let buffer = unsafe {
            match dtype {
                StoredDType::F32 => {
                    Buffer::F32(stream.alloc::<f32>(n).map_err(alloc_error(n, dtype))?)
                }
                _ => Buffer::Bits16(stream.alloc::<u16>(n).map_err(alloc_error(n, dtype))?),
            }
        };
        Ok(GpuTensor {
            shape,
            dtype,
            buffer,
        })
    }

    /// Copies `values` (stored as they are: no conversion) into a new device
    /// tensor of `shape`.
    pub fn upload_stored(
        &self,
        shape: Vec<usize>,
        values: &Stored,
    ) -> Result<GpuTensor, KernelError> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(shape_err(
                "Upload",
                "values",
                &[values.len()],
                format!("{} values for {shape:?}", shape.iter().product::<usize>()),
            ));
        }
        let mut t = self.alloc(shape, values.dtype())?;
        if values.is_empty() {
            return Ok(t);
        }
        let stream = self.stream();
        let n = values.len();
        match (&mut t.buffer, values) {
            (Buffer::F32(dst), Stored::F32(v)) => stream.memcpy_htod(v, &mut dst.slice_mut(..n)),
            (Buffer::Bits16(dst), Stored::F16(v)) => {
                stream.memcpy_htod(v.reinterpret_cast(), &mut dst.slice_mut(..n))
            }
            (Buffer::Bits16(dst), Stored::BF16(v)) => {
                stream.memcpy_htod(v.reinterpret_cast(), &mut dst.slice_mut(..n))
            }
            _ => unreachable!("alloc made the buffer for this dtype"),
        }
        .map_err(driver_error(format!("uploading {n} values")))?;
        Ok(t)
    }

    /// Copies `t` to the device, stored as `dtype` (rounded to nearest when
    /// that is 16-bit).
    pub fn upload(&self, t: &Tensor, dtype: StoredDType) -> Result<GpuTensor, KernelError> {
        match dtype {
            StoredDType::F32 => self.upload_stored(t.shape.clone(), &Stored::F32(t.data.clone())),
            _ => self.upload_stored(t.shape.clone(), &Stored::from_f32(&t.data, dtype)),
        }
    }

    /// A tensor with every element `value` (rounded to `dtype`).
    pub fn full(
        &self,
        shape: Vec<usize>,
        dtype: StoredDType,
        value: f32,
    ) -> Result<GpuTensor, KernelError> {
        let n = shape.iter().product();
        self.upload_stored(shape, &Stored::from_f32(&vec![value; n], dtype))
    }

    /// Copies `t` to the host as stored. Waits for the ops queued before.
    pub fn download_stored(&self, t: &GpuTensor) -> Result<Stored, KernelError> {
        self.check_owner("Download", &[t])?;
        let n = t.len();
        let stream = self.stream();
        let stored = match (&t.buffer, t.dtype) {
            (Buffer::F32(s), _) => {
                let mut v = vec![0f32; n];
                if n > 0 {
                    stream
                        .memcpy_dtoh(&s.slice(..n), &mut v)
                        .map_err(driver_error(format!("downloading {n} values")))?;
                }
                Stored::F32(v)
            }
            (Buffer::Bits16(s), dtype) => {
                let mut bits = vec![0u16; n];
                if n > 0 {
                    stream
                        .memcpy_dtoh(&s.slice(..n), &mut bits)
                        .map_err(driver_error(format!("downloading {n} values")))?;
                }
                if dtype == StoredDType::BF16 {
                    Stored::BF16(bits.reinterpret_cast::<bf16>().to_vec())
                } else {
                    Stored::F16(bits.reinterpret_cast::<f16>().to_vec())
                }
            }
        };
        // The copy is queued behind every earlier op; an error from any of
        // them surfaces here.
        self.synchronize()?;
        Ok(stored)
    }

    /// Copies `t` to the host, widened to f32.
    pub fn download(&self, t: &GpuTensor) -> Result<Tensor, KernelError> {
        let stored = self.download_stored(t)?;
        let data = match stored {
            Stored::F32(v) => v,
            s => s.to_f32(),
        };
        Ok(Tensor::new(t.shape.clone(), data))
    }
}
