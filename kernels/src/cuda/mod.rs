//! CUDA kernels: the same ops as [`crate::cpu`], on tensors that stay in
//! device memory between layers.
//!
//! The kernels are our own `.cu` files (`kernels/cuda/`), compiled by NVRTC
//! the first time they are needed ([`nvrtc::compile_target`] says for
//! what) and kept on disk for later processes ([`cache`]). Compiled images
//! are shared by every [`Gpu`] in the process; each `Gpu` loads a file's
//! module once.
//!
//! All operands of one op share a storage type ([`StoredDType`]); 16-bit
//! tensors are read and written as 16 bits and computed in f32. On devices
//! of compute capability 8.0 and later, f16 and bf16 convolutions and GEMMs
//! use tensor cores.
//!
//! Nothing here is behind a cargo feature: the driver and NVRTC are loaded
//! at run time, and [`crate::device::choose`] decides whether to use them.

mod broadcast;
pub mod cache;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod matmul;
mod norm;
pub mod nvrtc;
mod pool;
mod reduce;
mod staging;
mod strided;
mod tensor;
mod unary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig,
};
use cudarc::nvrtc::Ptx;

pub use crate::cpu::{Binary, Conv2d, Gemm, Pool2d, PoolKind, Reduce, Unary};
pub use elementwise::flatten;
pub use staging::Staging;
pub use tensor::GpuTensor;

use crate::error::KernelError;
use crate::tensor::StoredDType;
use nvrtc::Source;

/// One CUDA device: its context, the stream every op is queued on (so ops
/// run in the order they are called, and a download waits for all of them),
/// and the kernels loaded so far.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    capability: (i32, i32),
    tensor_cores: bool,
    target: OnceLock<String>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

/// A compiled image of one file for one target.
struct Image {
    file: &'static str,
    target: String,
    bytes: Arc<[u8]>,
}

/// Compiled images, for every `Gpu` of the process.
static IMAGES: Mutex<Vec<Image>> = Mutex::new(Vec::new());

/// Wraps a driver error with what was being done.
pub(crate) fn driver_error(what: impl Into<String>) -> impl FnOnce(DriverError) -> KernelError {
    move |source| KernelError::Driver {
        what: what.into(),
        source,
    }
}

pub(crate) fn launch_error(kernel: &str) -> impl FnOnce(DriverError) -> KernelError + '_ {
    move |source| KernelError::Driver {
        what: format!("launching {kernel}"),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gpu {
    /// Opens device `ordinal`. Fails, without panicking, when there is no
    /// driver or no such device.
    pub fn new(ordinal: usize) -> Result<Gpu, KernelError> {
        crate::device::init_driver()?;
        let count = CudaContext::device_count().map_err(driver_error("counting devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(KernelError::Unavailable(format!(
                "no CUDA device {ordinal}: the driver shows {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_error(format!(
            "creating a context on device {ordinal}"
        )))?;
        // SAFETY: event tracking orders work across streams; every buffer of
        // this Gpu is only used on its one stream, which orders it already.
        unsafe { ctx.disable_event_tracking() };
        let on = |what: &str| driver_error(format!("{what} of device {ordinal}"));
        let stream = ctx.new_stream().map_err(on("creating a stream"))?;
        keep_freed_memory(&ctx, ordinal);
        let capability = ctx
            .compute_capability()
            .map_err(on("reading the compute capability"))?;
        let name = ctx.name().map_err(on("reading the name"))?;
        Ok(Gpu {
            ctx,
            stream,
            ordinal,
            name,
            capability,
            tensor_cores: true,
            target: OnceLock::new(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    /// Allows or forbids the tensor-core kernels (on by default); with them
    /// off, 16-bit GEMMs and convolutions use the f32-accumulating SIMT
    /// kernels, which exist for every device.
    pub fn set_tensor_cores(&mut self, on: bool) {
        self.tensor_cores = on;
    }

    /// Whether 16-bit GEMMs and convolutions will use tensor cores.
    pub fn uses_tensor_cores(&self) -> bool {
        self.tensor_cores && self.capability.0 >= 8
    }

    /// Waits for every op queued so far.
    pub fn synchronize(&self) -> Result<(), KernelError> {
        self.stream
            .synchronize()
            .map_err(driver_error(format!("waiting for cuda:{}", self.ordinal)))?;
        self.ctx.check_err().map_err(driver_error(format!(
            "work queued earlier on cuda:{}",
            self.ordinal
        )))
    }

    /// Compiles (if this process has not yet) and loads every kernel file,
    /// so that the first inference does not pay for it.
    pub fn load_all(&self) -> Result<(), KernelError> {
        for source in &nvrtc::SOURCES {
            self.module(source)?;
        }
        Ok(())
    }

    /// What NVRTC compiles for on this device (see
    /// [`nvrtc::compile_target`]).
    pub fn compile_target(&self) -> Result<String, KernelError> {
        if let Some(target) = self.target.get() {
            return Ok(target.clone());
        }
        let target = nvrtc::compile_target(self.capability, &nvrtc::supported_architectures()?)?;
        Ok(self.target.get_or_init(|| target).clone())
    }

    fn module(&self, source: &'static Source) -> Result<Arc<CudaModule>, KernelError> {
        if let Some(m) = lock(&self.modules).get(source.name) {
            return Ok(m.clone());
        }
        let target = self.compile_target()?;
        let image = {
            // Held while compiling, so that threads needing the same file
            // compile it once.
            let mut images = lock(&IMAGES);
            match images
                .iter()
                .find(|i| i.file == source.name && i.target == target)
            {
                Some(image) => image.bytes.clone(),
                None => {
                    let bytes: Arc<[u8]> = cache::kernels().compile(source, &target, &[])?.into();
                    images.push(Image {
                        file: source.name,
                        target: target.clone(),
                        bytes: bytes.clone(),
                    });
                    bytes
                }
            }
        };
        let module = self
            .ctx
            .load_module(Ptx::from_binary(image.to_vec()))
            .map_err(driver_error(format!(
                "loading {} ({target}) on {}",
                source.name, self.name
            )))?;
        lock(&self.modules).insert(source.name, module.clone());
        Ok(module)
    }

    pub(crate) fn function(
        &self,
        source: &'static Source,
        name: &str,
    ) -> Result<CudaFunction, KernelError> {
        if let Some(f) = lock(&self.functions).get(name) {
            return Ok(f.clone());
        }
        let f = self
            .module(source)?
            .load_function(name)
            .map_err(driver_error(format!(
                "finding kernel {name} in {}",
                source.name
            )))?;
        lock(&self.functions).insert(name.to_string(), f.clone());
        Ok(f)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Fails unless every tensor lives on this device.
    pub(crate) fn check_owner(
        &self,
        op: &'static str,
        tensors: &[&GpuTensor],
    ) -> Result<(), KernelError> {
        if tensors.iter().all(|t| t.belongs_to(&self.stream)) {
            Ok(())
        } else {
            Err(KernelError::Invalid {
                op,
                what: format!(
                    "a tensor lives on another device than cuda:{}",
                    self.ordinal
                ),
            })
        }
    }
}

/// Memory freed on a stream stays in the device's pool for the next
/// allocation, rather than going back to the driver at every
/// synchronisation (the pool's default release threshold is 0). Without
/// it, every inference would pay for allocating its activations anew.
fn keep_freed_memory(ctx: &CudaContext, ordinal: usize) {
    use cudarc::driver::sys;
    let mut pool = std::ptr::null_mut();
    let mut keep = u64::MAX;
    // SAFETY: driver calls on the device this context has just opened; the
    // attribute's value is the u64 the driver reads for this attribute.
    let set = ctx.bind_to_thread().and_then(|_| unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )
        .result()
    });
    if let Err(e) = set {
        log::debug!("cuda:{ordinal}: the memory pool keeps its release threshold: {e}");
    }
}

/// All operands of an op must share one storage type.
pub(crate) fn check_dtypes(
    op: &'static str,
    tensors: &[&GpuTensor],
) -> Result<StoredDType, KernelError> {
    let dtype = tensors[0].dtype();
    match tensors.iter().find(|t| t.dtype() != dtype) {
        None => Ok(dtype),
        Some(t) => Err(KernelError::Invalid {
            op,
            what: format!(
                "operands are stored as {dtype:?} and {:?}; cast them to one type first",
                t.dtype()
            ),
        }),
    }
}

pub(crate) fn dtype_suffix(dtype: StoredDType) -> &'static str {
    match dtype {
        StoredDType::F32 => "f32",
        StoredDType::F16 => "f16",
        StoredDType::BF16 => "bf16",
    }
}

/// `v` as an i32 kernel argument, or an error naming what was too large.
pub(crate) fn int(op: &'static str, what: &str, v: usize) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Invalid {
        op,
        what: format!("{what} = {v} exceeds the kernels' 32-bit index range"),
    })
}

/// Threads per block of the element-wise kernels.
const THREADS_1D: u32 = 256;

/// A grid-stride launch over `n` items: enough blocks to cover them, capped
/// because the kernels loop over the rest.
pub(crate) fn launch_1d(n: usize, per_block: usize) -> LaunchConfig {
    let blocks = n.div_ceil(per_block).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Every kernel name the ops may ask for, with its file: lets a test check
/// the compiled modules against what the host code launches.
pub fn kernel_names() -> Vec<(&'static str, String)> {
    let mut names = Vec::new();
    let dtypes = [StoredDType::F32, StoredDType::F16, StoredDType::BF16];
    for dtype in dtypes {
        for tensor_cores in [false, true] {
            if !(tensor_cores && dtype == StoredDType::F32) {
                names.push((nvrtc::GEMM.name, gemm::kernel_name(tensor_cores, dtype)));
            }
        }
        for path in conv::PATHS {
            if path.exists_for(dtype) {
                names.push((nvrtc::CONV.name, conv::kernel_name(path, dtype)));
            }
        }
        for n in pool::kernel_names(dtype) {
            names.push((nvrtc::POOL.name, n));
        }
        for n in elementwise::kernel_names(dtype) {
            names.push((nvrtc::ELEMENTWISE.name, n));
        }
        names.push((nvrtc::UNARY.name, unary::kernel_name(dtype)));
        names.push((nvrtc::BROADCAST.name, broadcast::kernel_name(dtype)));
        names.push((nvrtc::REDUCE.name, reduce::kernel_name(dtype)));
        for n in norm::kernel_names(dtype) {
            names.push((nvrtc::NORM.name, n));
        }
        for tensor_cores in [false, true] {
            if !(tensor_cores && dtype == StoredDType::F32) {
                names.push((nvrtc::MATMUL.name, matmul::kernel_name(tensor_cores, dtype)));
            }
        }
    }
    // Layout kernels move bits, one per element size.
    for n in layout::kernel_names() {
        names.push((nvrtc::LAYOUT.name, n));
    }
    names
}
