//! Tensors and the layer kernels each rank runs on its shard.
//!
//! Compute is f32; weights may be stored as f16 or bf16 ([`Stored`]) and are
//! widened once when loaded. CPU kernels live in [`cpu`]: convolution as
//! Winograd F(2×2, 3×3) for 3×3 stride-1 layers and im2col + GEMM otherwise,
//! over the `gemm` crate (runtime SIMD dispatch, AVX-512 where present),
//! pooling, and element-wise ops, with bias and ReLU fused into the epilogues.
//! CUDA kernels with the same semantics live in [`cuda`], on tensors kept in
//! device memory; [`device::choose`] picks CPU or GPU at run time.

pub mod cpu;
pub mod cuda;
pub mod device;
mod error;
mod tensor;

pub use device::{Device, DeviceRequest};
pub use error::KernelError;
pub use tensor::{Stored, StoredDType, Tensor};
