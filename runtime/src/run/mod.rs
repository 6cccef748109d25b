//! Running a model over an input stream across the ranks of a job.
//!
//! Every rank calls [`run`] with the same model, input and options. Rows
//! reach rank 0's [`Outputs`] in input order whatever the strategy.

mod data;
mod pipeline;
mod tensor;

use crate::exec::{load_program, CudaBackend, Operand, Program};
use crate::graph::{Spec, ValueId};
use crate::model::Model;
use crate::ModelError;
use clap::ValueEnum;
use mpinfer_collectives::transport::{Counting, Transport, TransportError};
use mpinfer_collectives::{bf16, f16, CollectiveError, Communicator, Opts, ReduceOp};
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::{StoredDType, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

pub use pipeline::{live_at, node_flops, stages};
pub use tensor::{plan as tensor_plan, TensorPlan};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("--rank-weights lists {listed} weights for {ranks} ranks")]
    RankWeightCount { listed: usize, ranks: usize },
    #[error("--batch-size must be at least 1")]
    ZeroBatch,
    /// `--mean` or `--std` with neither one value nor one per channel.
    #[error(
        "{option} has {values} values; the model's input has {channels} channels \
         (give 1 or {channels})"
    )]
    ChannelCount {
        option: &'static str,
        values: usize,
        channels: usize,
    },
    #[error("--mean and --std go together")]
    UnpairedNormalization,
    #[error("--std values must not be zero")]
    ZeroStd,
    /// An [`Outputs`] implementation could not take the rows.
    #[error("taking the output rows")]
    Outputs(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<mpinfer_kernels::KernelError> for RunError {
    fn from(e: mpinfer_kernels::KernelError) -> Self {
        RunError::Model(e.into())
    }
}

// The command line's spellings are the variant names, lower-cased; `name`
// gives them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    Data,
    Tensor,
    Pipeline,
    Auto,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Data => "data",
            Strategy::Tensor => "tensor",
            Strategy::Pipeline => "pipeline",
            Strategy::Auto => "auto",
        }
    }
}

/// How data parallelism hands out rows: `static` splits each round by the
/// rank weights, fixed for the run; `dynamic` by the speed every rank showed
/// in the rounds before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Schedule {
    Static,
    Dynamic,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RankWeights {
    Equal,
    Listed(Vec<f64>),
    /// Measured: each rank times a short calibration batch.
    Auto,
}

/// `w0,w1,...` or `auto`.
impl FromStr for RankWeights {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(RankWeights::Auto);
        }
        let w = s
            .split(',')
            .map(|v| match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(format!(
                    "rank weight {v:?} is not a non-negative number (expected w0,w1,... or auto)"
                )),
            })
            .collect::<Result<Vec<f64>, String>>()?;
        if w.iter().sum::<f64>() <= 0.0 {
            return Err("rank weights must not all be zero".into());
        }
        Ok(RankWeights::Listed(w))
    }
}

/// Element type activations travel in between ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CommDType {
    #[value(name = "f32")]
    F32,
    #[value(name = "bf16")]
    BF16,
    #[value(name = "f16")]
    F16,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub strategy: Strategy,
    pub schedule: Schedule,
    /// Rows per rank per step (data), per step (tensor), per micro-batch
    /// (pipeline); `None` picks per strategy.
    pub batch_size: Option<usize>,
    pub rank_weights: RankWeights,
    pub dtype: StoredDType,
    pub comm_dtype: CommDType,
    /// Per-channel input normalisation, applied to each rank's rows.
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    /// This rank computes this many times slower (sleeps the difference):
    /// stands in for a busy or weaker node when testing the schedules.
    pub slowdown: f64,
    /// Ranks sharing this rank's node (and so its memory).
    pub local_ranks: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            strategy: Strategy::Data,
            schedule: Schedule::Static,
            batch_size: None,
            rank_weights: RankWeights::Equal,
            dtype: StoredDType::F32,
            comm_dtype: CommDType::F32,
            mean: None,
            std: None,
            slowdown: 1.0,
            local_ranks: 1,
        }
    }
}

/// The model's input, row by row (axis 0).
pub trait Rows {
    fn rows(&self) -> usize;
    fn read_rows(&self, range: Range<usize>) -> Result<Tensor, ModelError>;
}

impl Rows for Tensor {
    fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    fn read_rows(&self, range: Range<usize>) -> Result<Tensor, ModelError> {
        let per: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = range.len();
        Ok(Tensor::new(
            shape,
            self.data[range.start * per..range.end * per].to_vec(),
        ))
    }
}

/// Where output rows go.
pub trait Outputs {
    /// On the rank that computed the final values of rows `first..`, before
    /// they travel to rank 0 (accuracy is counted there).
    fn computed(&mut self, _first: usize, _y: &Tensor) -> Result<(), RunError> {
        Ok(())
    }
    /// Rank 0 only, in input order.
    fn collected(&mut self, first: usize, y: &Tensor) -> Result<(), RunError>;
}

/// What one rank did.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub strategy: String,
    /// Input rows this rank computed (its share of the output).
    pub rows: u64,
    pub compute_s: f64,
    pub comm_s: f64,
    pub bytes_sent: u64,
    pub messages_sent: u64,
    /// Weight values this rank held.
    pub weight_bytes: u64,
    pub wall_s: f64,
}

/// Time split into compute and communication.
pub(crate) struct Clock {
    pub compute: Duration,
    pub comm: Duration,
    slowdown: f64,
}

impl Clock {
    fn new(slowdown: f64) -> Clock {
        Clock {
            compute: Duration::ZERO,
            comm: Duration::ZERO,
            slowdown,
        }
    }

    pub fn compute<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.charge_compute(t.elapsed());
        r
    }

    /// Counts `spent` as compute, slowed down as asked: for work whose
    /// collectives are timed inside it (tensor parallelism), the time left
    /// over when they are taken out.
    pub fn charge_compute(&mut self, spent: Duration) {
        let t = Instant::now();
        if self.slowdown > 1.0 {
            std::thread::sleep(spent.mul_f64(self.slowdown - 1.0));
        }
        self.compute += spent + t.elapsed();
    }

    pub fn comm<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.comm += t.elapsed();
        r
    }
}

/// Where a run's steps execute.
#[derive(Clone, Copy)]
pub enum Exec<'a> {
    Cpu(&'a Cpu),
    Cuda(&'a CudaBackend),
}

impl<'a> From<&'a Cpu> for Exec<'a> {
    fn from(cpu: &'a Cpu) -> Self {
        Exec::Cpu(cpu)
    }
}

impl<'a> From<&'a CudaBackend> for Exec<'a> {
    fn from(cuda: &'a CudaBackend) -> Self {
        Exec::Cuda(cuda)
    }
}

impl Exec<'_> {
    /// The CPU that folds constants while programs are built (and, with
    /// CUDA, runs the steps that have no CUDA kernel).
    pub fn cpu(&self) -> &Cpu {
        match self {
            Exec::Cpu(cpu) => cpu,
            Exec::Cuda(cuda) => cuda.cpu(),
        }
    }

    /// `program` on this device; its work is finished when this returns.
    pub(crate) fn run(
        &self,
        program: &Program,
        model: &Model,
        spec: &Spec,
        inputs: Vec<(ValueId, Tensor)>,
        comm: &mut dyn FnMut(ValueId, Operand<'_>) -> Result<(), RunError>,
    ) -> Result<Vec<Tensor>, RunError> {
        match self {
            Exec::Cpu(cpu) => program.run(*cpu, model, spec, inputs, comm),
            Exec::Cuda(cuda) => {
                let ys = program.run(*cuda, model, spec, inputs, comm)?;
                cuda.gpu().synchronize()?;
                Ok(ys)
            }
        }
    }
}

/// What every strategy works with.
pub(crate) struct Ctx<'a, T: Transport> {
    pub comm: &'a Communicator<Counting<T>>,
    pub model: &'a Model,
    pub exec: Exec<'a>,
    pub opts: &'a RunOptions,
    pub clock: Clock,
    pub rows_done: u64,
    pub weight_bytes: u64,
    specs: RefCell<HashMap<usize, Arc<Spec>>>,
}

impl<T: Transport> Ctx<'_, T> {
    /// The model at `batch` rows, worked out once per batch size.
    pub fn spec(&self, batch: usize) -> Result<Arc<Spec>, ModelError> {
        if let Some(s) = self.specs.borrow().get(&batch) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.model.spec(batch)?);
        self.specs.borrow_mut().insert(batch, s.clone());
        Ok(s)
    }

    /// Every node whole, as one rank runs the model alone.
    pub fn whole_program(&self) -> Result<Program, ModelError> {
        let all: Vec<usize> = (0..self.model.nodes.len()).collect();
        load_program(
            self.model,
            &*self.spec(1)?,
            &all,
            self.model.outputs.clone(),
            self.opts.dtype,
            self.exec.cpu(),
        )
    }

    /// Shape of one output sample (runs take models with one output).
    pub fn output_sample(&self) -> Result<Vec<usize>, ModelError> {
        Ok(self.spec(1)?.shape(self.model.outputs[0])[1..].to_vec())
    }

    /// Runs a program with no collectives on the input rows `x`; returns its
    /// first kept value.
    pub fn forward(&mut self, program: &Program, x: Tensor) -> Result<Tensor, RunError> {
        let spec = self.spec(x.shape[0])?;
        let (model, exec) = (self.model, self.exec);
        let input = model.input;
        let mut ys = self.clock.compute(|| {
            exec.run(program, model, &spec, vec![(input, x)], &mut |_, _| {
                unreachable!("a whole program has no collectives")
            })
        })?;
        Ok(ys.swap_remove(0))
    }

    /// Reads rows and applies the input normalisation.
    pub fn read(&mut self, input: &dyn Rows, range: Range<usize>) -> Result<Tensor, RunError> {
        let mut x = input.read_rows(range)?;
        if let (Some(mean), Some(std)) = (&self.opts.mean, &self.opts.std) {
            crate::exec::normalize(&mut x, mean, std);
        }
        Ok(x)
    }

    /// Sum over ranks, carried in the communication type.
    pub fn allreduce_sum(&mut self, buf: &mut [f32]) -> Result<(), RunError> {
        let comm = self.comm;
        let kind = self.opts.comm_dtype;
        self.clock.comm(|| match kind {
            CommDType::F32 => comm.allreduce(buf, ReduceOp::Sum, Opts::default()),
            CommDType::BF16 => {
                let mut narrow: Vec<bf16> = buf.iter().map(|&v| bf16::from_f32(v)).collect();
                comm.allreduce(&mut narrow, ReduceOp::Sum, Opts::default())?;
                buf.iter_mut()
                    .zip(&narrow)
                    .for_each(|(o, v)| *o = v.to_f32());
                Ok(())
            }
            CommDType::F16 => {
                let mut narrow: Vec<f16> = buf.iter().map(|&v| f16::from_f32(v)).collect();
                comm.allreduce(&mut narrow, ReduceOp::Sum, Opts::default())?;
                buf.iter_mut()
                    .zip(&narrow)
                    .for_each(|(o, v)| *o = v.to_f32());
                Ok(())
            }
        })?;
        Ok(())
    }

    /// Every rank's `send` (`counts[r]` values from rank `r`) on every rank,
    /// or on `root` only.
    pub fn gatherv(
        &mut self,
        send: &[f32],
        counts: &[usize],
        root: Option<usize>,
    ) -> Result<Vec<f32>, RunError> {
        let comm = self.comm;
        let kind = self.opts.comm_dtype;
        let total: usize = counts.iter().sum();
        let here = root.is_none_or(|r| r == comm.rank());
        let mut out = vec![0.0f32; if here { total } else { 0 }];
        fn go<E: mpinfer_collectives::Element>(
            comm: &Communicator<Counting<impl Transport>>,
            send: &[E],
            out: &mut [E],
            counts: &[usize],
            root: Option<usize>,
        ) -> Result<(), CollectiveError> {
            match root {
                Some(r) => comm.gather(send, out, Opts::default().root(r).counts(counts)),
                None => comm.allgather(out, Opts::default().send(send).counts(counts)),
            }
        }
        self.clock.comm(|| -> Result<(), CollectiveError> {
            match kind {
                CommDType::F32 => go(comm, send, &mut out, counts, root),
                CommDType::BF16 => {
                    let s: Vec<bf16> = send.iter().map(|&v| bf16::from_f32(v)).collect();
                    let mut o = vec![bf16::ZERO; out.len()];
                    go(comm, &s, &mut o, counts, root)?;
                    out.iter_mut().zip(&o).for_each(|(d, v)| *d = v.to_f32());
                    Ok(())
                }
                CommDType::F16 => {
                    let s: Vec<f16> = send.iter().map(|&v| f16::from_f32(v)).collect();
                    let mut o = vec![f16::ZERO; out.len()];
                    go(comm, &s, &mut o, counts, root)?;
                    out.iter_mut().zip(&o).for_each(|(d, v)| *d = v.to_f32());
                    Ok(())
                }
            }
        })?;
        Ok(out)
    }
}

/// Runs `model` on every row of `input`; rank 0's `outputs` receives them
/// all in order. Returns this rank's metrics.
pub fn run<'a, T: Transport>(
    comm: &'a Communicator<Counting<T>>,
    model: &'a Model,
    exec: impl Into<Exec<'a>>,
    input: &dyn Rows,
    outputs: &mut dyn Outputs,
    opts: &RunOptions,
) -> Result<Metrics, RunError> {
    let start = Instant::now();
    check_options(model, comm.size(), opts)?;
    model.single_output()?;
    let strategy = match opts.strategy {
        Strategy::Auto => {
            let (s, why) = choose(model, comm.size(), opts.local_ranks, input.rows())?;
            if comm.rank() == 0 {
                log::info!("auto chose {} parallel: {why}", s.name());
            }
            s
        }
        s => s,
    };
    let sent_before = comm.transport().bytes_sent();
    let messages_before = comm.transport().messages_sent();
    let mut ctx = Ctx {
        comm,
        model,
        exec: exec.into(),
        opts,
        clock: Clock::new(opts.slowdown),
        rows_done: 0,
        weight_bytes: 0,
        specs: RefCell::new(HashMap::new()),
    };
    match strategy {
        Strategy::Data | Strategy::Auto => {
            data::run(&mut ctx, input, outputs, opts.strategy == Strategy::Auto)?
        }
        Strategy::Tensor => tensor::run(&mut ctx, input, outputs)?,
        Strategy::Pipeline => pipeline::run(&mut ctx, input, outputs)?,
    }
    Ok(Metrics {
        strategy: strategy.name().to_string(),
        rows: ctx.rows_done,
        compute_s: ctx.clock.compute.as_secs_f64(),
        comm_s: ctx.clock.comm.as_secs_f64(),
        bytes_sent: comm.transport().bytes_sent() - sent_before,
        messages_sent: comm.transport().messages_sent() - messages_before,
        weight_bytes: ctx.weight_bytes,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn check_options(model: &Model, ranks: usize, opts: &RunOptions) -> Result<(), RunError> {
    if let RankWeights::Listed(w) = &opts.rank_weights {
        if w.len() != ranks {
            return Err(RunError::RankWeightCount {
                listed: w.len(),
                ranks,
            });
        }
    }
    if opts.batch_size == Some(0) {
        return Err(RunError::ZeroBatch);
    }
    let channels = model.sample_shape.first().copied().unwrap_or(1);
    for (option, v) in [("--mean", &opts.mean), ("--std", &opts.std)] {
        if let Some(v) = v {
            if v.len() != 1 && v.len() != channels {
                return Err(RunError::ChannelCount {
                    option,
                    values: v.len(),
                    channels,
                });
            }
        }
    }
    if opts.mean.is_some() != opts.std.is_some() {
        return Err(RunError::UnpairedNormalization);
    }
    if opts.std.iter().flatten().any(|&s| s == 0.0) {
        return Err(RunError::ZeroStd);
    }
    Ok(())
}

/// Bytes of all weights at f32.
pub fn weight_bytes(model: &Model) -> u64 {
    model.weights().iter().map(|w| 4 * w.len() as u64).sum()
}

/// Memory one rank may use: what the node has available, shared by the
/// `local_ranks` on it.
fn memory_per_rank(local_ranks: usize) -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    let local = local_ranks.max(1) as u64;
    available / local
}

/// The strategy `auto` takes, and why.
pub fn choose(
    model: &Model,
    ranks: usize,
    local_ranks: usize,
    rows: usize,
) -> Result<(Strategy, String), RunError> {
    let weights = weight_bytes(model);
    let memory = memory_per_rank(local_ranks);
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    if ranks == 1 {
        return Ok((Strategy::Data, "one rank".into()));
    }
    // Weights plus room for activations must fit one rank, else the model
    // has to be split: tensor parallel when its layers are wide, pipeline
    // when it is deep.
    if weights.saturating_mul(2) > memory {
        let plan = tensor::plan(model, ranks)?;
        let biggest = plan.max_rank_weight_bytes();
        if biggest.saturating_mul(2) <= memory {
            return Ok((
                Strategy::Tensor,
                format!(
                    "the weights ({}) do not fit one rank ({} available per rank); split by tensor each rank holds at most {}",
                    mb(weights),
                    mb(memory),
                    mb(biggest)
                ),
            ));
        }
        return Ok((
            Strategy::Pipeline,
            format!(
                "the weights ({}) do not fit one rank ({} available per rank); pipeline stages hold whole layers",
                mb(weights),
                mb(memory)
            ),
        ));
    }
    let out_per_row: usize = model.output_sample_shapes()?[0].iter().product();
    let plan = tensor::plan(model, ranks)?;
    Ok((
        Strategy::Data,
        format!(
            "the weights ({}) fit every rank ({} available per rank); data parallel moves {} per row to rank 0 where tensor parallel would move {} per row between ranks, over {rows} rows",
            mb(weights),
            mb(memory),
            human_bytes(4 * out_per_row as u64),
            human_bytes(plan.comm_bytes_per_row()),
        ),
    ))
}

pub fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
