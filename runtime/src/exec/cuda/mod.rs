//! The CUDA backend: values live on one device between steps.
//!
//! Every op of float values has a CUDA kernel ([`steps`]): convolutions
//! and linear layers with their fused work, pooling, elementwise and
//! broadcast ops, normalisation, reductions, batched MatMul, softmax and
//! the layout ops. What has none (a Gemm of two computed operands, a
//! BatchNormalization of computed statistics) runs on the CPU: its inputs
//! come to the host, its outputs go back, and each such op is logged once
//! and counted ([`CudaBackend::host_steps`]).
//!
//! Activations are f32 on the device. Weights carry the precision of the
//! stored type (`--dtype`), rounded on the host as the CPU backend rounds
//! them, so both backends compute the same values.

mod steps;

use super::program::{Comm, Operand};
use super::step::Step;
use super::{host_collective, Arg, Backend};
use crate::graph::Known;
use crate::ModelError;
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::cuda::{Gpu, GpuTensor, Staging};
use mpinfer_kernels::{KernelError, StoredDType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A weight on the device, and the host copy whose address keys it.
type Uploaded = (Arc<dyn Send + Sync>, Arc<GpuTensor>);

pub struct CudaBackend {
    gpu: Gpu,
    cpu: Cpu,
    /// Weights uploaded once, by the address of the host copy a step holds
    /// (which the entry keeps alive, so the address is not reused).
    weights: Mutex<HashMap<usize, Uploaded>>,
    host: Mutex<BTreeMap<String, u64>>,
    on_device: AtomicU64,
    /// Buffers for collectives, made at the first.
    staging: Mutex<Vec<Staging>>,
    chunk: usize,
}

/// Values per chunk of a collective's staged copies: 4 MiB, enough for the
/// copies and the collective to run near their bandwidth, while two chunks
/// stay within the host's last-level cache.
const STAGING_CHUNK: usize = 1 << 20;

/// f32 on the device: see the module's note on precision.
const ON_DEVICE: StoredDType = StoredDType::F32;

impl CudaBackend {
    /// `cpu` runs the steps that have no CUDA kernel.
    pub fn new(gpu: Gpu, cpu: Cpu) -> CudaBackend {
        CudaBackend {
            gpu,
            cpu,
            weights: Mutex::new(HashMap::new()),
            host: Mutex::new(BTreeMap::new()),
            on_device: AtomicU64::new(0),
            staging: Mutex::new(Vec::new()),
            chunk: STAGING_CHUNK,
        }
    }

    /// Stages collectives through chunks of `values` instead of the
    /// default 4 MiB.
    pub fn with_staging_chunk(mut self, values: usize) -> CudaBackend {
        self.chunk = values.max(1);
        self
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    /// How many steps ran on the device.
    pub fn device_steps(&self) -> u64 {
        self.on_device.load(Ordering::Relaxed)
    }

    /// Per op, how many steps ran on the CPU for want of a CUDA kernel.
    pub fn host_steps(&self) -> BTreeMap<String, u64> {
        self.host.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn weight<T: Send + Sync + 'static>(
        &self,
        host: &Arc<T>,
        tensor: impl FnOnce(&T) -> Tensor,
    ) -> Result<Arc<GpuTensor>, ModelError> {
        let key = Arc::as_ptr(host) as usize;
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = w.get(&key) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.gpu.upload(&tensor(host), ON_DEVICE)?);
        w.insert(key, (host.clone(), t.clone()));
        Ok(t)
    }

    /// An argument the kernels read in place: a device value as it is, a
    /// host constant uploaded.
    fn read<'a>(&self, a: &'a Arg<'_, GpuTensor>) -> Result<DeviceInput<'a>, ModelError> {
        Ok(match a {
            Arg::Owned(t) => DeviceInput::Device(t),
            Arg::Ref(t) => DeviceInput::Device(t),
            Arg::Host(t) => DeviceInput::Uploaded(self.gpu.upload(t, ON_DEVICE)?),
            Arg::Absent => unreachable!("the plan requires this input"),
        })
    }

    /// An argument as a device value of its own: taken when the step may
    /// consume it, else copied (a host constant uploaded).
    fn owned(&self, a: Arg<'_, GpuTensor>) -> Result<GpuTensor, ModelError> {
        match a {
            Arg::Owned(t) => Ok(t),
            Arg::Ref(t) => self.duplicate(t),
            Arg::Host(t) => Ok(self.gpu.upload(t, ON_DEVICE)?),
            Arg::Absent => unreachable!("the plan requires this input"),
        }
    }

    /// `step` on the CPU, its inputs brought to the host.
    fn on_host(
        &self,
        step: &Step,
        args: Vec<Arg<'_, GpuTensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<GpuTensor>, ModelError> {
        let name = step_name(step);
        {
            let mut host = self.host.lock().unwrap_or_else(|e| e.into_inner());
            let n = host.entry(name.clone()).or_insert(0);
            if *n == 0 {
                log::info!("{name} has no CUDA kernel: it runs on the CPU");
            }
            *n += 1;
        }
        let host_args = args
            .into_iter()
            .map(|a| {
                Ok(match a {
                    Arg::Owned(t) => Arg::Owned(self.gpu.download(&t)?),
                    Arg::Ref(t) => Arg::Owned(self.gpu.download(t)?),
                    Arg::Host(t) => Arg::Host(t),
                    Arg::Absent => Arg::Absent,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        self.cpu
            .run(step, host_args, known)?
            .iter()
            .map(|y| Ok(self.gpu.upload(y, ON_DEVICE)?))
            .collect()
    }
}

/// A staged collective's failure: the collective's own, or the copies'.
enum Staged<E> {
    Host(E),
    Device(KernelError),
}

impl<E> From<KernelError> for Staged<E> {
    fn from(e: KernelError) -> Self {
        Staged::Device(e)
    }
}

enum DeviceInput<'a> {
    Device(&'a GpuTensor),
    Uploaded(GpuTensor),
}

impl DeviceInput<'_> {
    fn get(&self) -> &GpuTensor {
        match self {
            DeviceInput::Device(t) => t,
            DeviceInput::Uploaded(t) => t,
        }
    }
}

impl Backend for CudaBackend {
    type Value = GpuTensor;

    fn upload(&self, t: Tensor) -> Result<GpuTensor, ModelError> {
        Ok(self.gpu.upload(&t, ON_DEVICE)?)
    }

    fn download(&self, v: GpuTensor) -> Result<Tensor, ModelError> {
        Ok(self.gpu.download(&v)?)
    }

    fn shape<'v>(&self, v: &'v GpuTensor) -> &'v [usize] {
        v.shape()
    }

    fn reshape(&self, v: GpuTensor, shape: Vec<usize>) -> Result<GpuTensor, ModelError> {
        Ok(v.reshape(shape)?)
    }

    fn zeros(&self, shape: Vec<usize>) -> Result<GpuTensor, ModelError> {
        Ok(self.gpu.full(shape, ON_DEVICE, 0.0)?)
    }

    fn duplicate(&self, v: &GpuTensor) -> Result<GpuTensor, ModelError> {
        Ok(self.gpu.copy(v)?)
    }

    /// Through page-locked chunks: an allreduce runs chunk by chunk while
    /// the next chunk comes off the device; a gather's shard comes down and
    /// the whole value goes up in chunks that overlap with the host's
    /// copies.
    fn communicate<E: From<ModelError>>(
        &self,
        v: GpuTensor,
        c: &Comm,
        f: &mut dyn FnMut(Operand<'_>) -> Result<(), E>,
    ) -> Result<GpuTensor, E> {
        // Taken out for the collective, not held: ranks sharing this
        // backend (threads of one process) each need buffers of their own
        // while they wait for each other.
        let spare = self.staging.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut staging = match spare {
            Some(s) => s,
            None => self.gpu.staging(self.chunk).map_err(ModelError::from)?,
        };
        let v = self.staged(&mut staging, v, c, f);
        self.staging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(staging);
        v
    }

    fn run(
        &self,
        step: &Step,
        args: Vec<Arg<'_, GpuTensor>>,
        known: &[Option<&Known>],
    ) -> Result<Vec<GpuTensor>, ModelError> {
        if steps::runs_on_device(step, &args) {
            self.on_device.fetch_add(1, Ordering::Relaxed);
            self.run_on_device(step, args, known)
        } else {
            self.on_host(step, args, known)
        }
    }
}

impl CudaBackend {
    fn staged<E: From<ModelError>>(
        &self,
        staging: &mut Staging,
        mut v: GpuTensor,
        c: &Comm,
        f: &mut dyn FnMut(Operand<'_>) -> Result<(), E>,
    ) -> Result<GpuTensor, E> {
        let gpu = &self.gpu;
        match c {
            Comm::Allreduce => {
                let sum = |sums: &mut [f32]| f(Operand::Partial(sums)).map_err(Staged::Host);
                match staging.in_chunks(gpu, &mut v, sum) {
                    Ok(()) => Ok(v),
                    Err(Staged::Host(e)) => Err(e),
                    Err(Staged::Device(e)) => Err(ModelError::from(e).into()),
                }
            }
            Comm::Gather { .. } => {
                let mut t = staging.download(gpu, &v).map_err(ModelError::from)?;
                self.release(v);
                host_collective(c, &mut t, f)?;
                Ok(staging.upload(gpu, &t).map_err(ModelError::from)?)
            }
        }
    }
}

/// What the log and the count call a step: its op, or its kind.
fn step_name(step: &Step) -> String {
    let kind = match step {
        Step::Node(op) => {
            let op = format!("{op:?}");
            return op.split([' ', '{']).next().unwrap_or("node").to_string();
        }
        Step::Conv { post, .. } | Step::Linear { post, .. } if !post.is_empty() => {
            return format!("{} with fused {post:?}", step_name_plain(step));
        }
        _ => step_name_plain(step),
    };
    kind.to_string()
}

fn step_name_plain(step: &Step) -> &'static str {
    match step {
        Step::Conv { one_d: true, .. } => "Conv 1-D",
        Step::Conv { .. } => "Conv",
        Step::Linear { .. } => "Linear",
        Step::Affine { .. } => "BatchNormalization",
        Step::Node(_) => "node",
        Step::Channels(_) => "Channels",
        Step::Bias { .. } => "Bias",
        Step::Zeros(_) => "Zeros",
        Step::View { .. } => "View",
    }
}
