//! `mpinfer bench collectives`: our algorithms against MPI's built-in
//! collectives in the same run, with nccl-tests' bandwidth figures.

use super::plot;
use super::timing::{interleaved, Plan};
use anyhow::{bail, Context, Result};
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::ffi;
use mpi::raw::AsRaw;
use mpinfer_collectives::*;
use std::os::raw::{c_int, c_void};
use std::path::PathBuf;

use crate::job::Job;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Collective to measure: allreduce, allgather, reduce, broadcast, reduce_scatter or all.
    #[arg(long, default_value = "allreduce")]
    op: String,
    /// Comma-separated algorithms: auto, an algorithm of the op (ring, rabenseifner,
    /// recursive_doubling, bruck, binomial, reduce_scatter_gather, scatter_allgather),
    /// mpi for a row of MPI's own, or all. MPI's time is always measured for the ratio.
    #[arg(long, default_value = "auto", value_delimiter = ',')]
    algo: Vec<String>,
    /// Smallest message (bytes of the whole vector; K, M, G suffixes).
    #[arg(short = 'b', long = "min-bytes", default_value = "8")]
    min_bytes: String,
    /// Largest message.
    #[arg(short = 'e', long = "max-bytes", default_value = "64M")]
    max_bytes: String,
    /// Multiply the size by this from one row to the next.
    #[arg(short = 'f', long = "step-factor", default_value_t = 4)]
    step_factor: usize,
    /// Element type: f32, f64, f16, bf16, i32, i64, u8 (MPI has no f16/bf16: no baseline then).
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Verify every algorithm's result once per size and report wrong elements.
    #[arg(long)]
    check: bool,
    /// Output: table, csv or json (one object per line).
    #[arg(long, default_value = "table")]
    format: Format,
    /// Timed batches per algorithm and size; the median is reported. Batches
    /// of all algorithms alternate, so a drift of the machine hits all alike.
    #[arg(long, default_value_t = 31)]
    batches: usize,
    /// Target length of one timed batch, in milliseconds: short batches keep
    /// the alternation finer than the machine's drift.
    #[arg(long, default_value_t = 0.25)]
    batch_ms: f64,
    /// Root rank of reduce and broadcast.
    #[arg(long, default_value_t = 0)]
    root: usize,
    /// Also draw bus bandwidth against message size as an SVG at this path:
    /// one line per algorithm and one for MPI's own, a panel per collective.
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Allreduce,
    Allgather,
    Reduce,
    Broadcast,
    ReduceScatter,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::Allreduce,
        Op::Allgather,
        Op::Reduce,
        Op::Broadcast,
        Op::ReduceScatter,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Allreduce => "allreduce",
            Op::Allgather => "allgather",
            Op::Reduce => "reduce",
            Op::Broadcast => "broadcast",
            Op::ReduceScatter => "reduce_scatter",
        }
    }

    /// nccl-tests' bus bandwidth factor: what each rank must move per byte.
    fn bus_factor(self, p: usize) -> f64 {
        let p = p as f64;
        match self {
            Op::Allreduce => 2.0 * (p - 1.0) / p,
            Op::Allgather | Op::ReduceScatter => (p - 1.0) / p,
            Op::Reduce | Op::Broadcast => 1.0,
        }
    }

    /// Our algorithms for this op, with `auto` first.
    fn algorithms(self) -> Vec<Algo> {
        match self {
            Op::Allreduce => AllreduceAlgo::ALL
                .iter()
                .copied()
                .map(Algo::Allreduce)
                .collect(),
            Op::Allgather => AllgatherAlgo::ALL
                .iter()
                .copied()
                .map(Algo::Allgather)
                .collect(),
            Op::Reduce => ReduceAlgo::ALL.iter().copied().map(Algo::Reduce).collect(),
            Op::Broadcast => BroadcastAlgo::ALL
                .iter()
                .copied()
                .map(Algo::Broadcast)
                .collect(),
            Op::ReduceScatter => vec![Algo::ReduceScatter],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Algo {
    Allreduce(AllreduceAlgo),
    Allgather(AllgatherAlgo),
    Reduce(ReduceAlgo),
    Broadcast(BroadcastAlgo),
    ReduceScatter,
    Mpi,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::Allreduce(a) => a.name(),
            Algo::Allgather(a) => a.name(),
            Algo::Reduce(a) => a.name(),
            Algo::Broadcast(a) => a.name(),
            Algo::ReduceScatter => "ring",
            Algo::Mpi => "mpi",
        }
    }

    fn is_auto(self) -> bool {
        self.name() == "auto"
    }
}

/// The candidates of one op that `--algo` names; errors name the valid ones.
fn select(op: Op, wanted: &[String], strict: bool) -> Result<Vec<Algo>> {
    let all = op.algorithms();
    let mut out = Vec::new();
    for w in wanted {
        let w = w.trim().to_ascii_lowercase().replace('-', "_");
        if w == "all" {
            out.extend(all.iter().copied());
            out.push(Algo::Mpi);
        } else if w == "mpi" {
            out.push(Algo::Mpi);
        } else if let Some(a) = all.iter().find(|a| a.name() == w) {
            out.push(*a);
        } else if (w == "ring" || w == "auto") && op == Op::ReduceScatter {
            out.push(Algo::ReduceScatter);
        } else if strict {
            let names: Vec<&str> = all.iter().map(|a| a.name()).collect();
            bail!(
                "`{w}` is not one of the {} algorithms ({}, mpi or all)",
                op.name(),
                names.join(", ")
            );
        }
    }
    out.dedup();
    Ok(out)
}

struct Row {
    op: Op,
    algo: String,
    bytes: usize,
    count: usize,
    time: f64,
    mpi_time: Option<f64>,
    wrong: Option<u64>,
}

pub fn run(job: &Job, args: &Args) -> Result<()> {
    let ops: Vec<Op> = match args.op.as_str() {
        "all" => Op::ALL.to_vec(),
        name => vec![*Op::ALL
            .iter()
            .find(|o| o.name() == name)
            .with_context(|| format!("unknown collective `{name}` (expected allreduce, allgather, reduce, broadcast, reduce_scatter or all)"))?],
    };
    let min = parse_bytes(&args.min_bytes)
        .with_context(|| format!("-b {}: not a byte size", args.min_bytes))?;
    let max = parse_bytes(&args.max_bytes)
        .with_context(|| format!("-e {}: not a byte size", args.max_bytes))?;
    if args.step_factor < 2 {
        bail!("-f must be at least 2");
    }
    if min == 0 || min > max {
        bail!("-b must be positive and not above -e");
    }
    if args.root >= job.size() {
        bail!(
            "--root {} is out of range for {} ranks",
            args.root,
            job.size()
        );
    }
    if args.batches == 0 {
        bail!("--batches must be positive");
    }
    if let Some(path) = &args.plot {
        // Checked before the benchmark, not after minutes of measuring.
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            bail!(
                "--plot {}: the plot is SVG; name a .svg file",
                path.display()
            );
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if job.rank() == 0 && !dir.is_dir() {
            bail!("--plot {}: no directory {}", path.display(), dir.display());
        }
    }
    let mut per_op = Vec::new();
    for &op in &ops {
        let algos = select(op, &args.algo, ops.len() == 1)?;
        if !algos.is_empty() {
            per_op.push((op, algos));
        }
    }
    if per_op.is_empty() {
        bail!(
            "no algorithm named by --algo {} applies to --op {}",
            args.algo.join(","),
            args.op
        );
    }
    match args.dtype {
        DType::F32 => bench::<f32>(job, args, &per_op, min, max),
        DType::F64 => bench::<f64>(job, args, &per_op, min, max),
        DType::F16 => bench::<f16>(job, args, &per_op, min, max),
        DType::BF16 => bench::<bf16>(job, args, &per_op, min, max),
        DType::I32 => bench::<i32>(job, args, &per_op, min, max),
        DType::I64 => bench::<i64>(job, args, &per_op, min, max),
        DType::U8 => bench::<u8>(job, args, &per_op, min, max),
    }
}

fn mpi_datatype(d: DType) -> Option<ffi::MPI_Datatype> {
    // SAFETY: reading the library's datatype handles.
    unsafe {
        match d {
            DType::F32 => Some(ffi::RSMPI_FLOAT),
            DType::F64 => Some(ffi::RSMPI_DOUBLE),
            DType::I32 => Some(ffi::RSMPI_INT32_T),
            DType::I64 => Some(ffi::RSMPI_INT64_T),
            DType::U8 => Some(ffi::RSMPI_UINT8_T),
            DType::F16 | DType::BF16 => None,
        }
    }
}

/// Buffers of one op at one size, reused by every candidate.
struct Buffers<E> {
    send: Vec<E>,
    recv: Vec<E>,
    /// Elements each rank contributes (allgather, reduce_scatter) or the vector length.
    count: usize,
}

fn bench<E: Element>(
    job: &Job,
    args: &Args,
    per_op: &[(Op, Vec<Algo>)],
    min: usize,
    max: usize,
) -> Result<()> {
    let comm = job.communicator()?;
    let p = job.size();
    let rank = job.rank();
    let mpi_type = mpi_datatype(E::DTYPE);
    let plan = Plan {
        batches: args.batches,
        batch_seconds: args.batch_ms / 1e3,
    };
    let lib = mpi::environment::library_version().unwrap_or_default();
    let lib = lib
        .lines()
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    if rank == 0 && args.format == Format::Table {
        println!(
            "# mpinfer bench collectives: {} ranks, {}, MPI: {}",
            p,
            E::DTYPE,
            lib
        );
        println!("# time: median over {} interleaved batches of the slowest rank; ratio = our busbw / MPI busbw", args.batches);
        if mpi_type.is_none() {
            println!("# MPI has no {} type: no MPI baseline", E::DTYPE);
        }
    }
    if rank == 0 && args.format == Format::Csv {
        println!("{}", COLUMNS.join(","));
    }
    let mut measured = Vec::new();
    for (op, algos) in per_op {
        let op = *op;
        if rank == 0 && args.format == Format::Table {
            println!();
            println!("# {}", op.name());
            println!(
                "{:>12} {:>11} {:<28} {:>11} {:>10} {:>10} {:>11} {:>10} {:>7} {:>6}",
                "bytes",
                "count",
                "algo",
                "time_us",
                "algbw_GB/s",
                "busbw_GB/s",
                "mpi_time_us",
                "mpi_busbw",
                "ratio",
                "wrong"
            );
        }
        let mut size = min;
        while size <= max {
            if let Some(rows) = bench_size::<E>(job, &comm, args, op, algos, size, mpi_type, &plan)?
            {
                if rank == 0 {
                    for row in &rows {
                        print_row(args.format, p, E::DTYPE, row);
                    }
                    measured.extend(rows);
                }
            }
            size = match size.checked_mul(args.step_factor) {
                Some(s) => s,
                None => break,
            };
        }
    }
    if let (Some(path), 0) = (&args.plot, rank) {
        let fig = figure(args, p, E::DTYPE, &lib, per_op, &measured);
        crate::output::write_atomic(path, plot::render(&fig).as_bytes())?;
    }
    Ok(())
}

/// The legend name of MPI's own collective in the plot.
const MPI_SERIES: &str = "MPI built-in";

/// The plot of `rows`: a panel per op, a line per algorithm (`auto` as one
/// line whatever it picked), and MPI's line from the times the ratio uses.
fn figure(
    args: &Args,
    p: usize,
    dtype: DType,
    lib: &str,
    per_op: &[(Op, Vec<Algo>)],
    rows: &[Row],
) -> plot::Figure {
    let host = mpi::environment::processor_name()
        .unwrap_or_default()
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string();
    let host = if host.is_empty() { "?".into() } else { host };
    // "Open MPI v4.1.4, package: ..., repo rev: ...": the name and version.
    let lib = lib.split(',').next().unwrap_or("").trim();
    let mut subtitle = format!(
        "Bus bandwidth (nccl-tests' busbw), median of {} interleaved batches, slowest rank; higher is better.",
        args.batches
    );
    if !lib.is_empty() {
        subtitle.push_str(&format!(" MPI: {lib}."));
    }
    let mut panels = Vec::new();
    for (op, _) in per_op {
        let op = *op;
        let mut series: Vec<plot::Series> = Vec::new();
        let mut picks: Vec<(usize, String)> = Vec::new();
        let mut mpi_points = Vec::new();
        for row in rows.iter().filter(|r| r.op == op) {
            if let Some(t) = row.mpi_time {
                if mpi_points
                    .last()
                    .is_none_or(|q: &plot::Point| q.bytes != row.bytes as f64)
                {
                    mpi_points.push(point(op, p, "mpi", row.bytes, t));
                }
            }
            if row.algo == "mpi" {
                continue;
            }
            let (name, pick) = match row.algo.split_once('(') {
                Some((base, rest)) => (base, Some(rest.trim_end_matches(')'))),
                None => (row.algo.as_str(), None),
            };
            if let Some(pick) = pick {
                picks.push((row.bytes, pick.to_string()));
            }
            let pt = point(op, p, &row.algo, row.bytes, row.time);
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(pt),
                None => series.push(plot::Series {
                    name: name.to_string(),
                    baseline: false,
                    points: vec![pt],
                    notes: Vec::new(),
                }),
            }
        }
        if let Some(auto) = series.iter_mut().find(|s| s.name == "auto") {
            auto.notes = pick_notes(&picks);
        }
        if !mpi_points.is_empty() {
            series.push(plot::Series {
                name: MPI_SERIES.to_string(),
                baseline: true,
                points: mpi_points,
                notes: Vec::new(),
            });
        }
        let factor = match op {
            Op::Allreduce => "busbw = algbw × 2(p−1)/p",
            Op::Allgather | Op::ReduceScatter => "busbw = algbw × (p−1)/p",
            Op::Reduce | Op::Broadcast => "busbw = algbw",
        };
        let empty_note = if op.bus_factor(p) == 0.0 {
            "one rank moves no bytes: bus bandwidth is 0"
        } else {
            "no size in -b..-e holds an element per rank"
        };
        panels.push(plot::Panel {
            title: op.name().to_string(),
            subtitle: factor.to_string(),
            series,
            empty_note: empty_note.to_string(),
        });
    }
    let ranks = if p == 1 { "rank" } else { "ranks" };
    let mut title = format!("mpinfer bench collectives: {p} {ranks}, {dtype}, on {host}");
    if mpi_datatype(dtype).is_none() {
        title.push_str(&format!(" (MPI has no {dtype}: no MPI line)"));
    }
    plot::Figure {
        title,
        subtitle,
        x_label: "message size (bytes, log scale)".into(),
        y_label: "bus bandwidth (GB/s, log scale)".into(),
        panels,
    }
}

fn point(op: Op, p: usize, algo: &str, bytes: usize, time: f64) -> plot::Point {
    let gbs = busbw_gbs(op, p, bytes, time);
    plot::Point {
        bytes: bytes as f64,
        gbs,
        tip: format!(
            "{algo}, {}: {gbs:.2} GB/s busbw, {:.2} µs",
            plot::bytes_label(bytes as f64),
            time * 1e6
        ),
    }
}

/// `auto`'s choices as ranges of sizes: "1K–256K recursive_doubling".
fn pick_notes(picks: &[(usize, String)]) -> Vec<String> {
    let mut runs: Vec<(usize, usize, &str)> = Vec::new();
    for (bytes, pick) in picks {
        match runs.last_mut() {
            Some(run) if run.2 == pick => run.1 = *bytes,
            _ => runs.push((*bytes, *bytes, pick)),
        }
    }
    runs.iter()
        .map(|&(lo, hi, pick)| {
            if lo == hi {
                format!("{} {pick}", plot::bytes_label(lo as f64))
            } else {
                format!(
                    "{}–{} {pick}",
                    plot::bytes_label(lo as f64),
                    plot::bytes_label(hi as f64)
                )
            }
        })
        .collect()
}

/// nccl-tests' bus bandwidth in GB/s, the figure the table and the plot share.
fn busbw_gbs(op: Op, p: usize, bytes: usize, time: f64) -> f64 {
    bytes as f64 / time / 1e9 * op.bus_factor(p)
}

#[allow(clippy::too_many_arguments)]
fn bench_size<E: Element>(
    job: &Job,
    comm: &Communicator<MpiTransport>,
    args: &Args,
    op: Op,
    algos: &[Algo],
    size: usize,
    mpi_type: Option<ffi::MPI_Datatype>,
    plan: &Plan,
) -> Result<Option<Vec<Row>>> {
    let p = job.size();
    let root = args.root;
    let esize = std::mem::size_of::<E>();
    let per_rank = matches!(op, Op::Allgather | Op::ReduceScatter);
    let count = if per_rank {
        size / (esize * p)
    } else {
        size / esize
    };
    if count == 0 {
        return Ok(None);
    }
    let n = if per_rank { count * p } else { count };
    let mut b = buffers::<E>(op, count, n, job.rank(), root);
    // MPI's time is always taken, for the ratio, when MPI has the type.
    let mut cands: Vec<Algo> = algos.iter().copied().filter(|a| *a != Algo::Mpi).collect();
    let show_mpi = algos.contains(&Algo::Mpi);
    if mpi_type.is_some() {
        cands.push(Algo::Mpi);
    }
    let case = Case {
        job,
        comm,
        op,
        root,
        mpi_type,
    };
    let times = time_all(&case, plan, &cands, &mut b)?;
    let mpi_time = mpi_type.map(|_| times[cands.len() - 1]);
    let mut rows = Vec::new();
    for (i, a) in cands.iter().enumerate() {
        if *a == Algo::Mpi && !show_mpi {
            continue;
        }
        let wrong = if args.check {
            Some(check_once(&case, *a, &mut b)?)
        } else {
            None
        };
        rows.push(Row {
            op,
            algo: row_name(comm, op, *a, n * esize, p),
            bytes: n * esize,
            count: b.count,
            time: times[i],
            mpi_time,
            wrong,
        });
    }
    Ok(Some(rows))
}

/// The buffers of `op` with `count` elements per rank or in all, the
/// whole vector `n` long, filled with this rank's pattern.
fn buffers<E: Element>(op: Op, count: usize, n: usize, rank: usize, root: usize) -> Buffers<E> {
    let (send, recv) = match op {
        Op::Allreduce => (n, n),
        Op::Allgather => (count, n),
        Op::Reduce => (n, if rank == root { n } else { 0 }),
        Op::Broadcast => (0, n),
        Op::ReduceScatter => (n, count),
    };
    let mut b = Buffers {
        send: vec![E::zeroed(); send],
        recv: vec![E::zeroed(); recv],
        count,
    };
    // Touch every page with real values: never-written buffers map the
    // kernel's shared zero page, which makes copies from them misleadingly
    // slow (single-copy transfers) or fast (reductions).
    fill(&mut b, rank);
    b
}

/// The median time of every candidate, batches interleaved; the first
/// error of a call ends the measurement.
fn time_all<E: Element>(
    case: &Case<'_>,
    plan: &Plan,
    cands: &[Algo],
    b: &mut Buffers<E>,
) -> Result<Vec<f64>> {
    let mut failure: Option<anyhow::Error> = None;
    let times = interleaved(case.job.world(), plan, cands.len(), |i| {
        if failure.is_none() {
            if let Err(e) = run_once(case, cands[i], b) {
                failure = Some(e);
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(times),
    }
}

/// The algorithm's name in a row; `auto` names what it picked at `bytes`.
fn row_name(comm: &Communicator<MpiTransport>, op: Op, a: Algo, bytes: usize, p: usize) -> String {
    if !a.is_auto() {
        return a.name().to_string();
    }
    let t = &comm.config().tuning;
    let picked = match op {
        Op::Allreduce => t.allreduce(bytes, p).name(),
        Op::Allgather => t.allgather(bytes, p).name(),
        Op::Reduce => t.reduce(bytes, p).name(),
        Op::Broadcast => t.broadcast(bytes, p).name(),
        Op::ReduceScatter => "ring",
    };
    format!("auto({picked})")
}

/// What every call of one op at one size shares.
struct Case<'a> {
    job: &'a Job,
    comm: &'a Communicator<MpiTransport>,
    op: Op,
    root: usize,
    /// MPI's name for the element type; `None` where MPI has none (f16, bf16).
    mpi_type: Option<ffi::MPI_Datatype>,
}

fn run_once<E: Element>(case: &Case<'_>, algo: Algo, b: &mut Buffers<E>) -> Result<()> {
    let Case {
        job,
        comm,
        op,
        root,
        mpi_type,
    } = *case;
    let (sum, send) = (ReduceOp::Sum, &b.send[..]);
    let recv = &mut b.recv[..];
    match (op, algo) {
        (Op::Allreduce, Algo::Allreduce(a)) => {
            comm.allreduce(recv, sum, Opts::default().send(send).algorithm(a))?
        }
        (Op::Allgather, Algo::Allgather(a)) => {
            comm.allgather(recv, Opts::default().send(send).algorithm(a))?
        }
        (Op::Reduce, Algo::Reduce(a)) => {
            let opts = Opts::default().send(send).root(root).algorithm(a);
            comm.reduce(recv, sum, opts)?
        }
        (Op::Broadcast, Algo::Broadcast(a)) => {
            comm.broadcast(recv, Opts::default().root(root).algorithm(a))?
        }
        (Op::ReduceScatter, Algo::ReduceScatter) => {
            comm.reduce_scatter(recv, sum, Opts::default().send(send))?
        }
        (_, Algo::Mpi) => mpi_builtin(
            job,
            op,
            b,
            root,
            mpi_type.expect("MPI baseline needs an MPI type"),
        ),
        (op, a) => unreachable!("{a:?} is not an algorithm of {op:?}"),
    }
    Ok(())
}

/// MPI's own collective, out of place like ours.
fn mpi_builtin<E: Element>(
    job: &Job,
    op: Op,
    b: &mut Buffers<E>,
    root: usize,
    dt: ffi::MPI_Datatype,
) {
    let comm = job.world().as_raw();
    let send = b.send.as_ptr() as *const c_void;
    let recv = b.recv.as_mut_ptr() as *mut c_void;
    let count = b.count as c_int;
    // SAFETY: the buffers have the lengths each call reads and writes, and
    // every rank makes the same call.
    unsafe {
        let sum = ffi::RSMPI_SUM;
        match op {
            Op::Allreduce => ffi::MPI_Allreduce(send, recv, count, dt, sum, comm),
            Op::Allgather => ffi::MPI_Allgather(send, count, dt, recv, count, dt, comm),
            Op::Reduce => ffi::MPI_Reduce(send, recv, count, dt, sum, root as c_int, comm),
            Op::Broadcast => ffi::MPI_Bcast(recv, count, dt, root as c_int, comm),
            Op::ReduceScatter => ffi::MPI_Reduce_scatter_block(send, recv, count, dt, sum, comm),
        };
    }
}

/// Small integers, exact in every type, so any sum of them is exact too.
fn pattern(rank: usize, i: usize) -> f64 {
    ((rank * 7 + i) % 13) as f64
}

/// Runs `algo` once on patterned data and counts wrong elements over all ranks.
fn check_once<E: Element>(case: &Case<'_>, algo: Algo, b: &mut Buffers<E>) -> Result<u64> {
    let Case { job, op, root, .. } = *case;
    let p = job.size();
    let r = job.rank();
    let sum_all = |i: usize| (0..p).map(|q| pattern(q, i)).sum::<f64>();
    let poison = E::from_f64(99.0);
    for (i, v) in b.send.iter_mut().enumerate() {
        *v = E::from_f64(pattern(r, i));
    }
    b.recv.iter_mut().for_each(|v| *v = poison);
    if op == Op::Broadcast && r == root {
        for (i, v) in b.recv.iter_mut().enumerate() {
            *v = E::from_f64(pattern(root, i));
        }
    }
    run_once(case, algo, b)?;
    let c = b.count;
    let expected = |i: usize| -> Option<f64> {
        match op {
            Op::Allreduce => Some(sum_all(i)),
            Op::Allgather => Some(pattern(i / c, i % c)),
            Op::Reduce => (r == root).then(|| sum_all(i)),
            Op::Broadcast => Some(pattern(root, i)),
            Op::ReduceScatter => Some(sum_all(r * c + i)),
        }
    };
    let wrong = b
        .recv
        .iter()
        .enumerate()
        .filter(|(i, v)| expected(*i).is_some_and(|e| v.to_f64() != e))
        .count() as u64;
    let mut total = 0u64;
    job.world()
        .all_reduce_into(&wrong, &mut total, SystemOperation::sum());
    fill(b, r);
    Ok(total)
}

/// Out-of-place collectives never feed their output back into their input,
/// so these values stay bounded however often a benchmark repeats the call.
fn fill<E: Element>(b: &mut Buffers<E>, rank: usize) {
    for (i, v) in b.send.iter_mut().enumerate() {
        *v = E::from_f64(pattern(rank, i));
    }
    for (i, v) in b.recv.iter_mut().enumerate() {
        *v = E::from_f64(pattern(rank, i));
    }
}

/// The CSV header, and the keys of the JSON lines, in order.
const COLUMNS: [&str; 13] = [
    "op",
    "algo",
    "dtype",
    "ranks",
    "bytes",
    "count",
    "time_us",
    "algbw_gbs",
    "busbw_gbs",
    "mpi_time_us",
    "mpi_busbw_gbs",
    "ratio",
    "wrong",
];

fn print_row(format: Format, p: usize, dtype: DType, row: &Row) {
    let algbw = row.bytes as f64 / row.time / 1e9;
    let busbw = busbw_gbs(row.op, p, row.bytes, row.time);
    let mpi_time_us = row.mpi_time.map(|t| t * 1e6);
    let mpi_busbw = row.mpi_time.map(|t| busbw_gbs(row.op, p, row.bytes, t));
    let ratio = row.mpi_time.map(|t| t / row.time);
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    let wrong = row.wrong.map_or("-".to_string(), |w| w.to_string());
    if format == Format::Table {
        println!(
            "{:>12} {:>11} {:<28} {:>11.2} {:>10.2} {:>10.2} {:>11} {:>10} {:>7} {:>6}",
            row.bytes,
            row.count,
            row.algo,
            row.time * 1e6,
            algbw,
            busbw,
            opt(mpi_time_us, 2),
            opt(mpi_busbw, 2),
            opt(ratio, 2),
            wrong
        );
        return;
    }
    // (value, whether JSON quotes it); a missing figure is `-` in CSV, null in JSON.
    let values: [(Option<String>, bool); 13] = [
        (Some(row.op.name().to_string()), true),
        (Some(row.algo.clone()), true),
        (Some(dtype.to_string()), true),
        (Some(p.to_string()), false),
        (Some(row.bytes.to_string()), false),
        (Some(row.count.to_string()), false),
        (Some(format!("{:.3}", row.time * 1e6)), false),
        (Some(format!("{algbw:.4}")), false),
        (Some(format!("{busbw:.4}")), false),
        (mpi_time_us.map(|v| format!("{v:.3}")), false),
        (mpi_busbw.map(|v| format!("{v:.4}")), false),
        (ratio.map(|v| format!("{v:.4}")), false),
        (row.wrong.map(|w| w.to_string()), false),
    ];
    let line = match format {
        Format::Csv => values
            .iter()
            .map(|(v, _)| v.clone().unwrap_or_else(|| "-".into()))
            .collect::<Vec<_>>()
            .join(","),
        _ => {
            let fields: Vec<String> = COLUMNS
                .iter()
                .zip(&values)
                .map(|(k, (v, quoted))| match (v, quoted) {
                    (None, _) => format!("\"{k}\":null"),
                    (Some(v), true) => format!("\"{k}\":\"{v}\""),
                    (Some(v), false) => format!("\"{k}\":{v}"),
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    };
    println!("{line}");
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

    #[test]
    fn format_takes_table_csv_and_json() {
        let format = |f: &str| Cmd::try_parse_from(["bench", "--format", f]).map(|c| c.args.format);
        assert_eq!(format("table").unwrap(), Format::Table);
        assert_eq!(format("csv").unwrap(), Format::Csv);
        assert_eq!(format("json").unwrap(), Format::Json);
        assert!(format("xml").is_err());
        let default = Cmd::try_parse_from(["bench"]).unwrap().args.format;
        assert_eq!(default, Format::Table);
    }
}
