//! `mpinfer run`: a model over an input file on every rank of the job.

use crate::agree::agree;
use crate::job::{say, Job};
use crate::output::{self, Output};
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args as ClapArgs;
use mpi::topology::SimpleCommunicator;
use mpinfer_collectives::{Opts, ReduceOp};
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::cuda::Gpu;
use mpinfer_kernels::{device, Device, DeviceRequest, StoredDType, Tensor};
use mpinfer_runtime::exec::CudaBackend;
use mpinfer_runtime::model::Model;
use mpinfer_runtime::npy::{self, NpyDType, NpyFile};
use mpinfer_runtime::run::{
    self as runner, CommDType, Metrics, Outputs, RankWeights, RunError, RunOptions, Schedule,
    Strategy,
};
use mpinfer_runtime::{onnx, ModelError};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// ONNX model (as written by torch.onnx.export).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Input rows as .npy (float32; float16/float64 are converted).
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Where rank 0 writes the outputs (.npy, float32).
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// data: rows split across ranks; tensor: every layer's weights split;
    /// pipeline: layers split into stages; auto: chosen from the model size
    /// and rank count (the reason is printed).
    #[arg(long, default_value = "auto")]
    strategy: Strategy,
    /// auto takes a CUDA device when there is one, else the CPU.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Rows per rank per step (data), per step (tensor), per micro-batch (pipeline).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Relative speed of each rank for data parallelism (w0,w1,...), or
    /// auto to time a short batch on every rank.
    #[arg(long)]
    rank_weights: Option<RankWeights>,
    /// static: fixed split by rank weights; dynamic: each round split by the
    /// speed every rank showed so far.
    #[arg(long, default_value = "static")]
    schedule: Schedule,
    /// Precision weights are stored in (compute is f32).
    #[arg(long, default_value = "f32")]
    dtype: WeightDType,
    /// Element type activations travel in between ranks.
    #[arg(long, default_value = "f32")]
    comm_dtype: CommDType,
    /// Write per-rank metrics as JSON.
    #[arg(long)]
    pub(crate) metrics: Option<PathBuf>,
    /// Per-channel input mean to subtract (m0,m1,... or one value).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel input standard deviation to divide by.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Integer class per row (.npy): rank 0 prints top-1 accuracy.
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// CPU threads per rank (default: the node's cores ÷ ranks on the node).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue an interrupted run of the same command: rows already
    /// committed to OUTPUT.partial are kept, the rest computed (on any
    /// number of ranks).
    #[arg(long)]
    pub(crate) resume: bool,
}

/// The spellings `--dtype` takes for the kernels' stored types.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum WeightDType {
    F32,
    F16,
    #[value(name = "bf16")]
    BF16,
}

impl From<WeightDType> for StoredDType {
    fn from(d: WeightDType) -> Self {
        match d {
            WeightDType::F32 => StoredDType::F32,
            WeightDType::F16 => StoredDType::F16,
            WeightDType::BF16 => StoredDType::BF16,
        }
    }
}

/// Test-only: `MPINFER_SLOW_RANK=R:F` makes rank R compute F times slower.
fn slowdown(rank: usize) -> Result<f64> {
    let Ok(v) = std::env::var("MPINFER_SLOW_RANK") else {
        return Ok(1.0);
    };
    let (r, f) = v
        .split_once(':')
        .and_then(|(r, f)| Some((r.parse::<usize>().ok()?, f.parse::<f64>().ok()?)))
        .filter(|&(_, f)| f >= 1.0)
        .ok_or_else(|| anyhow!("MPINFER_SLOW_RANK={v:?}: expected RANK:FACTOR, e.g. 1:2"))?;
    Ok(if r == rank { f } else { 1.0 })
}

/// Rank 0 writes rows as they arrive; every rank counts correct top-1
/// predictions of the rows it computed.
struct Sink {
    writer: Option<Output>,
    progress: Option<Progress>,
    labels: Option<Vec<i64>>,
    /// Values per row of the first output, the one labels score.
    classes: usize,
    /// Input row of the first row this run computes (after a resume).
    start: usize,
    correct: u64,
    counted: u64,
}

impl Outputs for Sink {
    fn computed(&mut self, first: usize, y: &Tensor) -> Result<(), RunError> {
        let Some(labels) = &self.labels else {
            return Ok(());
        };
        let rows = y.shape.first().copied().unwrap_or(0);
        let packed = y.data.len() / rows.max(1);
        for (i, row) in y.data.chunks(packed.max(1)).take(rows).enumerate() {
            let best = row[..self.classes.min(row.len())]
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (j, &v)| {
                    if v > bv {
                        (j, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0;
            self.counted += 1;
            if labels[self.start + first + i] == best as i64 {
                self.correct += 1;
            }
        }
        Ok(())
    }

    fn collected(&mut self, _first: usize, y: &Tensor) -> Result<(), RunError> {
        if let Some(w) = self.writer.as_mut() {
            w.write_rows(&y.data)
                .map_err(|e| RunError::Outputs(e.into()))?;
        }
        if let Some(p) = self.progress.as_mut() {
            p.advance(y.shape.first().copied().unwrap_or(0));
        }
        Ok(())
    }
}

/// The input file, checked against the model's input.
struct Input {
    file: NpyFile,
    /// Rows before this one are already done (resumed run).
    start: usize,
}

impl runner::Rows for Input {
    fn rows(&self) -> usize {
        self.file.rows() - self.start
    }
    fn read_rows(&self, range: Range<usize>) -> Result<Tensor, ModelError> {
        self.file
            .read_rows(range.start + self.start..range.end + self.start)
    }
}

fn open_input(path: &Path, model: &Model, rank: usize) -> Result<Input> {
    let file = NpyFile::open(path)?;
    let shape = file.shape().to_vec();
    if shape.len() != model.sample_shape.len() + 1 || shape[1..] != model.sample_shape[..] {
        let want: Vec<String> = std::iter::once("N".to_string())
            .chain(model.sample_shape.iter().map(|d| d.to_string()))
            .collect();
        bail!(
            "{}: input has shape {shape:?}, but model input {:?} takes [{}]",
            path.display(),
            model.input_name(),
            want.join(", ")
        );
    }
    if rank == 0 && file.dtype() != NpyDType::F32 {
        log::info!(
            "{}: converting {} values to float32",
            path.display(),
            file.dtype().descr()
        );
    }
    Ok(Input { file, start: 0 })
}

impl Args {
    /// Paths in the arguments taken relative to `base` (a task file's folder).
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        at(&mut self.model);
        at(&mut self.input);
        at(&mut self.output);
        self.labels.iter_mut().for_each(at);
        self.metrics.iter_mut().for_each(at);
    }
}

/// Where a run happens: the ranks of `comm` (all of the job's, or one
/// task's share of them), and how it names itself in what it prints.
pub struct Place<'a> {
    pub comm: &'a SimpleCommunicator,
    /// Starts the summary lines: `run`, or the task's name.
    pub label: &'a str,
    /// A progress bar or line; off where several runs share the terminal.
    pub progress: bool,
}

/// What a finished run hands back to its caller.
pub struct Done {
    /// Rows this run computed (after any it resumed from).
    pub rows: usize,
    pub strategy: String,
    /// Rank 0 of the run only: every rank's [`FIELDS`], rank by rank.
    pub per_rank: Vec<[f64; FIELDS.len()]>,
}

pub fn run(job: &Job, args: &Args) -> Result<()> {
    let place = Place {
        comm: job.world(),
        label: "run",
        progress: true,
    };
    run_in(job, &place, args).map(drop)
}

/// The model loaded, packed to one output, and the input opened.
struct Loaded {
    model: Model,
    parts: Vec<mpinfer_runtime::graph::OutputPart>,
    input: Input,
    labels: Option<Vec<i64>>,
}

/// A run on the ranks of `place`. Whatever can fail on some ranks only,
/// before the model runs, is agreed on: every rank returns the error, and
/// none is left waiting in a collective.
pub fn run_in(job: &Job, place: &Place, args: &Args) -> Result<Done> {
    let start = Instant::now();
    let comm = job.counting_communicator_on(place.comm)?;
    let rank = comm.rank();
    let threads = args.threads.unwrap_or_else(|| job.default_threads());
    let device = agree(&comm, open_device(job, args, threads))?;
    let fingerprints = same_files_everywhere(&comm, &[&args.model, &args.input])?;
    let Loaded {
        model,
        parts,
        mut input,
        labels,
    } = agree(&comm, load(&comm, args))?;
    let rows = runner::Rows::rows(&input);
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    let files: Vec<(PathBuf, Vec<usize>)> = output::output_paths(&args.output, &names)
        .into_iter()
        .zip(&parts)
        .map(|(path, p)| {
            (
                path,
                std::iter::once(rows).chain(p.sample.clone()).collect(),
            )
        })
        .collect();
    let shapes: Vec<&Vec<usize>> = files.iter().map(|f| &f.1).collect();
    let identity = format!(
        "model {:x}-{:x} input {:x}-{:x} output {shapes:?}",
        fingerprints[0], fingerprints[1], fingerprints[2], fingerprints[3]
    );
    let (first_row, writer) = start_row(&comm, args, &files, identity)?;
    input.start = first_row;
    let progress = (rank == 0 && place.progress).then(|| Progress::new(rows - input.start));
    let mut sink = Sink {
        writer,
        classes: parts[0].row_len(),
        progress,
        labels,
        start: input.start,
        correct: 0,
        counted: 0,
    };
    let opts = agree(&comm, run_options(job, args))?;
    let (metrics, steps) = match &device {
        Opened::Cpu(cpu) => (
            runner::run(&comm, &model, cpu, &input, &mut sink, &opts)?,
            Steps::default(),
        ),
        Opened::Cuda(cuda) => {
            let m = runner::run(&comm, &model, &**cuda, &input, &mut sink, &opts)?;
            let host = cuda.host_steps();
            if !host.is_empty() {
                log::info!("steps run on the CPU for want of a CUDA kernel: {host:?}");
            }
            let steps = Steps {
                cuda: cuda.device_steps(),
                cpu_fallback: host.values().sum(),
            };
            (m, steps)
        }
    };
    finish_outputs(&comm, rank, sink)?;
    let ran = Ran { metrics, steps };
    let per_rank = report(&comm, place.label, &ran, rows, threads, start, args)?;
    Ok(Done {
        rows: rows - first_row,
        strategy: ran.metrics.strategy.to_string(),
        per_rank,
    })
}

/// This rank's model, input and labels. The data files beside the model
/// are compared across ranks in between, which every rank reaches alike:
/// a load that failed anywhere has failed everywhere first.
fn load(comm: &RunComm, args: &Args) -> Result<Loaded> {
    // Several outputs run as one, each row theirs side by side.
    let loaded = agree(comm, onnx::load(&args.model).map_err(anyhow::Error::from))?;
    let (model, parts) = agree(comm, loaded.pack_outputs().map_err(anyhow::Error::from))?;
    // Weights in data files beside the model must match too.
    let data_files = model.data_files();
    same_files_everywhere(
        comm,
        &data_files.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
    )?;
    let input = open_input(&args.input, &model, comm.rank())?;
    let labels = load_labels(args.labels.as_deref(), runner::Rows::rows(&input))?;
    Ok(Loaded {
        model,
        parts,
        input,
        labels,
    })
}

/// The device a rank runs on.
enum Opened {
    Cpu(Cpu),
    Cuda(Box<CudaBackend>),
}

/// The device this rank runs on, its choice logged by rank 0: with CUDA,
/// local rank `r` takes device `r` mod the device count, and the CPU runs
/// the steps that have no CUDA kernel.
fn open_device(job: &Job, args: &Args, threads: usize) -> Result<Opened> {
    let (device, why) = device::choose(args.device, job.local_rank())?;
    if job.rank() == 0 {
        log::info!("device: {device:?} ({why}); {threads} CPU threads per rank");
    }
    Ok(match device {
        Device::Cpu => Opened::Cpu(Cpu::new(threads)),
        Device::Cuda(ordinal) => {
            let gpu = Gpu::new(ordinal)?;
            Opened::Cuda(Box::new(CudaBackend::new(gpu, Cpu::new(threads))))
        }
    })
}

fn load_labels(path: Option<&Path>, rows: usize) -> Result<Option<Vec<i64>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let labels = npy::read_labels(path)?;
    if labels.len() != rows {
        bail!(
            "{}: {} labels for {rows} input rows",
            path.display(),
            labels.len()
        );
    }
    Ok(Some(labels))
}

/// The first input row this run computes, and rank 0's output writer.
/// Rank 0 owns the output and decides where the run starts.
fn start_row(
    comm: &RunComm,
    args: &Args,
    files: &[(PathBuf, Vec<usize>)],
    identity: String,
) -> Result<(usize, Option<Output>)> {
    let opened = if comm.rank() == 0 {
        open_output(args, files, identity).map(|(row, w)| (row, Some(w)))
    } else {
        Ok((0, None))
    };
    let (row, writer) = agree(comm, opened)?;
    let mut first_row = [row as i64];
    if comm.size() > 1 {
        comm.broadcast(&mut first_row, Opts::default())?;
    }
    Ok((first_row[0] as usize, writer))
}

fn open_output(
    args: &Args,
    files: &[(PathBuf, Vec<usize>)],
    identity: String,
) -> Result<(usize, Output)> {
    let committed = output::committed_rows(&args.output, &identity)?;
    let resume_rows = resume_from(args, committed, files[0].1[0]);
    let writer = Output::open(files, identity, resume_rows)?;
    Ok((resume_rows.unwrap_or(0), writer))
}

/// The committed rows to keep, saying why a run resumes or starts over.
fn resume_from(args: &Args, committed: Option<usize>, rows: usize) -> Option<usize> {
    match (args.resume, committed) {
        (true, Some(done)) => {
            log::info!("resuming: {done} of {rows} rows were committed before");
            Some(done)
        }
        (true, None) => {
            log::info!(
                "nothing to resume for {}: starting from the first row",
                args.output.display()
            );
            None
        }
        (false, Some(done)) => {
            log::info!("an interrupted run left {done} committed rows; starting over (--resume continues it)");
            None
        }
        (false, None) => None,
    }
}

fn run_options(job: &Job, args: &Args) -> Result<RunOptions> {
    Ok(RunOptions {
        strategy: args.strategy,
        schedule: args.schedule,
        batch_size: args.batch_size,
        rank_weights: args.rank_weights.clone().unwrap_or(RankWeights::Equal),
        dtype: args.dtype.into(),
        comm_dtype: args.comm_dtype,
        mean: args.mean.clone(),
        std: args.std.clone(),
        slowdown: slowdown(job.rank())?,
        local_ranks: job.local_size(),
    })
}

/// Publishes the output and, with labels, has rank 0 print the accuracy
/// over the rows every rank computed.
fn finish_outputs(comm: &RunComm, rank: usize, mut sink: Sink) -> Result<()> {
    sink.progress.take();
    if let Some(w) = sink.writer.take() {
        w.finish()?;
    }
    if sink.labels.is_some() {
        let mut counts = [sink.correct as i64, sink.counted as i64];
        comm.reduce(&mut counts, ReduceOp::Sum, Opts::default())?;
        if rank == 0 {
            let [correct, total] = counts;
            println!(
                "accuracy: {:.2}% ({correct}/{total})",
                100.0 * correct as f64 / total.max(1) as f64
            );
        }
    }
    Ok(())
}

/// Values each rank contributes to the summary, in this order.
pub const FIELDS: [&str; 10] = [
    "rows",
    "compute_s",
    "comm_s",
    "bytes_sent",
    "messages_sent",
    "weight_bytes",
    "peak_rss_bytes",
    "wall_s",
    "cuda_steps",
    "cpu_fallback_steps",
];

/// Steps a CUDA rank ran on the device, and on the CPU for want of a CUDA
/// kernel; none on a CPU rank.
#[derive(Clone, Copy, Default)]
struct Steps {
    cuda: u64,
    cpu_fallback: u64,
}

/// What a rank's run measured.
struct Ran {
    metrics: Metrics,
    steps: Steps,
}

type RunComm = mpinfer_collectives::Communicator<
    mpinfer_collectives::transport::Counting<mpinfer_collectives::MpiTransport>,
>;

/// Prints the run's summary and writes its metrics; returns every rank's
/// values on rank 0, none elsewhere.
fn report(
    comm: &RunComm,
    label: &str,
    ran: &Ran,
    rows: usize,
    threads: usize,
    start: Instant,
    args: &Args,
) -> Result<Vec<[f64; FIELDS.len()]>> {
    let (m, steps) = (&ran.metrics, ran.steps);
    let p = comm.size();
    let mine = [
        m.rows as f64,
        m.compute_s,
        m.comm_s,
        m.bytes_sent as f64,
        m.messages_sent as f64,
        m.weight_bytes as f64,
        peak_rss() as f64,
        start.elapsed().as_secs_f64(),
        steps.cuda as f64,
        steps.cpu_fallback as f64,
    ];
    let mut all = vec![
        0.0f64;
        if comm.rank() == 0 {
            p * FIELDS.len()
        } else {
            0
        }
    ];
    comm.gather(&mine, &mut all, Opts::default())?;
    if comm.rank() != 0 {
        return Ok(Vec::new());
    }
    let per_rank: Vec<[f64; FIELDS.len()]> = all
        .chunks(FIELDS.len())
        .map(|r| r.try_into().expect("gathered whole records"))
        .collect();
    let wall = per_rank.iter().map(|r| r[7]).fold(0.0f64, f64::max);
    say(&format!(
        "{label}: {rows} rows in {wall:.3} s ({:.0} rows/s), {} parallel on {p} ranks, {threads} threads each",
        rows as f64 / wall.max(1e-9),
        m.strategy
    ));
    say(&format!(
        "{label}: rank  rows      compute s  comm s    sent       weights    peak RSS"
    ));
    for (r, v) in per_rank.iter().enumerate() {
        say(&format!(
            "{label}: {r:<5} {:<9} {:<10.3} {:<9.3} {:<10} {:<10} {}",
            v[0] as u64,
            v[1],
            v[2],
            runner::human_bytes(v[3] as u64),
            runner::human_bytes(v[5] as u64),
            runner::human_bytes(v[6] as u64)
        ));
    }
    if let Some(path) = &args.metrics {
        let json = format!(
            "{{\n  \"model\": {:?},\n  \"strategy\": \"{}\",\n  \"ranks\": {p},\n  \"threads_per_rank\": {threads},\n  \"rows\": {rows},\n  \"wall_s\": {},\n  \"rows_per_s\": {},\n  \"per_rank\": [\n{}\n  ]\n}}\n",
            args.model.display().to_string(),
            m.strategy,
            json_number(wall),
            json_number(rows as f64 / wall.max(1e-9)),
            per_rank_json(&per_rank, "    ")
        );
        output::write_atomic(path, json.as_bytes())?;
    }
    Ok(per_rank)
}

/// One JSON object per rank, one a line, each line indented by `indent`.
pub(crate) fn per_rank_json(per_rank: &[[f64; FIELDS.len()]], indent: &str) -> String {
    let ranks: Vec<String> = per_rank
        .iter()
        .enumerate()
        .map(|(r, v)| {
            let fields: Vec<String> = FIELDS
                .iter()
                .zip(v)
                .map(|(k, x)| format!("\"{k}\": {}", json_number(*x)))
                .collect();
            format!("{indent}{{\"rank\": {r}, {}}}", fields.join(", "))
        })
        .collect();
    ranks.join(",\n")
}

pub(crate) fn json_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// A cheap fingerprint of a file: its size and a hash of its first and last
/// 64 KiB and of 4 KiB at 16 places between. Reading it all would cost a
/// tensor-parallel rank the whole model, which it otherwise never reads.
fn fingerprint(path: &Path) -> Result<[u64; 2]> {
    use std::hash::Hasher;
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let len = file.metadata()?.len();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut read = |at: u64, n: u64| -> Result<()> {
        let n = n.min(len.saturating_sub(at));
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, at)
            .with_context(|| format!("{}", path.display()))?;
        hasher.write(&buf);
        Ok(())
    };
    read(0, 64 << 10)?;
    for i in 1..=16 {
        read(len / 17 * i, 4 << 10)?;
    }
    read(len.saturating_sub(64 << 10), 64 << 10)?;
    Ok([len, hasher.finish()])
}

/// Every rank must read the same model and input: a node with a stale copy
/// would silently compute something else. Compared before any work starts.
/// Returns this rank's fingerprints (size, hash for each path).
fn same_files_everywhere(comm: &RunComm, paths: &[&Path]) -> Result<Vec<u64>> {
    let p = comm.size();
    // A file this rank cannot open is reported by the loader, naming it.
    let mine_u: Vec<u64> = paths
        .iter()
        .flat_map(|path| fingerprint(path).unwrap_or([u64::MAX, 0]))
        .collect();
    if p == 1 {
        return Ok(mine_u);
    }
    let mine: Vec<i64> = mine_u.iter().map(|&v| v as i64).collect();
    let mut all = vec![0i64; mine.len() * p];
    comm.allgather(&mut all, Opts::default().send(&mine))?;
    for (i, path) in paths.iter().enumerate() {
        let of = |r: usize| [all[r * mine.len() + 2 * i], all[r * mine.len() + 2 * i + 1]];
        let differ: Vec<usize> = (1..p).filter(|&r| of(r) != of(0)).collect();
        if differ.is_empty() {
            continue;
        }
        let size = |r: usize| match of(r)[0] {
            -1 => "cannot open it".to_string(),
            n => format!("{n} bytes"),
        };
        let listed: Vec<String> = differ
            .iter()
            .map(|&r| format!("rank {r} ({})", size(r)))
            .collect();
        bail!(
            "{}: not the same file on every rank: rank 0 ({}) and {} differ; give every rank the same file",
            path.display(),
            size(0),
            listed.join(", ")
        );
    }
    Ok(mine_u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn dtype(spelling: &str) -> Result<StoredDType, clap::Error> {
        let argv = ["mpinfer", "--model", "m.onnx", "--input", "x.npy"];
        Cmd::try_parse_from(
            argv.into_iter()
                .chain(["--output", "y.npy", "--dtype", spelling]),
        )
        .map(|c| c.args.dtype.into())
    }

    #[test]
    fn dtype_takes_the_three_stored_types_by_their_short_names() {
        assert_eq!(dtype("f32").unwrap(), StoredDType::F32);
        assert_eq!(dtype("f16").unwrap(), StoredDType::F16);
        assert_eq!(dtype("bf16").unwrap(), StoredDType::BF16);
        let err = dtype("f8").unwrap_err().to_string();
        assert!(err.contains("f32, f16, bf16"), "{err}");
        assert!(dtype("BF16").is_err());
    }
}
