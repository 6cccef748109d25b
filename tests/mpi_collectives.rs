//! Multi-rank tests under a real `mpirun`.
//!
//! MPI initialises once per process, so this is a plain program
//! (`harness = false`). Started by `cargo test`, it relaunches itself under
//! `mpirun -n 1..=4` (rank mode), where every algorithm is compared with
//! MPI's built-in collective on random sizes, for every reduction op on
//! every element type MPI has, and it runs the fault cases:
//! a panic or an error on one rank, and ranks that disagree in check mode,
//! must end the whole job with a message naming the rank, never hang.

mod common;

use common::Outcome;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::topology::Communicator as _;
use mpinfer_collectives::*;
use mpinfer_launcher::job::{self, Job};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::Cell;
use std::process::Command;
use std::time::Duration;

const RANK_MODE: &str = "MPINFER_TEST_RANK_MODE";
const JOB_LIMIT: Duration = Duration::from_secs(180);

fn main() {
    match std::env::var(RANK_MODE).ok().as_deref() {
        Some("compare") => rank_compare(),
        Some("panic") => rank_panic(),
        Some("error") => rank_error(),
        Some("mismatch") => rank_mismatch(),
        Some("truncate") => rank_truncate(),
        Some(other) => panic!("unknown rank mode {other}"),
        None => launcher(),
    }
}

// ---------------------------------------------------------------- launcher

/// This test program in one of its rank modes, on `ranks` ranks.
fn mpirun(ranks: usize, mode: &str, extra_env: &[(&str, &str)]) -> Outcome {
    let exe = std::env::current_exe().expect("test binary path");
    let mut env = vec![(RANK_MODE, mode)];
    env.extend_from_slice(extra_env);
    mpirun_program(ranks, exe.to_str().unwrap(), &[], &env)
}

/// The `mpinfer` binary with `args`, on `ranks` ranks.
fn mpirun_mpinfer(ranks: usize, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    mpirun_program(ranks, env!("CARGO_BIN_EXE_mpinfer"), args, env)
}

fn mpirun_program(
    ranks: usize,
    program: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Outcome {
    let mut all = vec!["-n".to_string(), ranks.to_string(), program.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    common::mpirun(&all, extra_env, JOB_LIMIT, None)
}

fn launcher() {
    let passed = Cell::new(0);
    let failed = Cell::new(0);
    let skipped = Cell::new(0);
    let record = |name: &str, ok: Result<(), String>| match ok {
        Ok(()) => {
            println!("test {name} ... ok");
            passed.set(passed.get() + 1);
        }
        Err(why) => {
            println!("test {name} ... FAILED\n{why}");
            failed.set(failed.get() + 1);
        }
    };
    // Counted apart from passed, and named with the reason in the output.
    let skip = |name: &str, why: &str| {
        println!("test {name} ... skipped: {why}");
        skipped.set(skipped.get() + 1);
    };
    let mpich = common::is_mpich(&std::env::var("MPIRUN").unwrap_or_default());

    // MPICH with more ranks than cores spins for milliseconds per message:
    // its runs set MPINFER_TEST_MAX_RANKS=2.
    let max_ranks: usize = std::env::var("MPINFER_TEST_MAX_RANKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for ranks in 1..=max_ranks {
        let o = mpirun(ranks, "compare", &[]);
        let ok = if o.timed_out {
            Err(format!(
                "hung: killed after {:?}\n{}{}",
                o.elapsed, o.stdout, o.stderr
            ))
        } else if o.code != Some(0) {
            Err(format!(
                "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                o.code, o.stdout, o.stderr
            ))
        } else if !o.stdout.contains("comparisons agree with MPI") {
            Err(format!("no summary line\n{}", o.stdout))
        } else {
            print!("{}", o.stdout);
            Ok(())
        };
        record(
            &format!("every_algorithm_matches_mpi_builtin_on_{ranks}_ranks"),
            ok,
        );
    }

    for ranks in [2, 3].into_iter().filter(|&r| r <= max_ranks) {
        let o = mpirun(ranks, "panic", &[]);
        record(
            &format!("a_panic_on_one_rank_ends_all_{ranks}_ranks"),
            expect_abort(&o, &["error: rank 1: internal error: injected fault"]),
        );
        let o = mpirun(ranks, "error", &[]);
        record(
            &format!("an_error_on_one_rank_ends_all_{ranks}_ranks"),
            expect_abort(
                &o,
                &["error: rank 1: injected failure: the input shard is unreadable"],
            ),
        );
        for (path, call, env) in [
            ("blocking", "MPI_Recv", &[][..]),
            (
                "nonblocking",
                "MPI_Irecv, completed by MPI_Waitall,",
                &[("MPINFER_TEST_NONBLOCKING", "1")][..],
            ),
        ] {
            let name = format!("an_mpi_error_{path}_ends_all_{ranks}_ranks_with_one_error_line");
            if path == "nonblocking" && mpich {
                skip(
                    &name,
                    "MPICH 4.0 aborts on an error completing a request in MPI_Waitall, \
                     whatever the communicator's error handler",
                );
                continue;
            }
            let o = mpirun(ranks, "truncate", env);
            let said = format!(
                "{call} failed on a message with rank 0 (tag {})",
                tags::RESERVABLE.start()
            );
            record(
                &name,
                expect_abort(&o, &["error: rank 1:", &said]).and_then(|()| one_error_line(&o)),
            );
        }
        let o = mpirun(ranks, "mismatch", &[("MPINFER_CHECK", "1")]);
        record(
            &format!("check_mode_turns_a_mismatch_into_an_error_on_{ranks}_ranks"),
            expect_abort(&o, &["collective mismatch", "count 10", "count 11"]),
        );
    }

    // The benchmark itself: every algorithm of every collective checked
    // against the expected values, MPI's baseline beside it, in its CSV form.
    let o = mpirun_mpinfer(
        2,
        &[
            "bench",
            "collectives",
            "--op",
            "all",
            "--algo",
            "all",
            "-b",
            "1K",
            "-e",
            "64K",
            "-f",
            "8",
            "--check",
            "--format",
            "csv",
            "--batches",
            "3",
        ],
        &[],
    );
    record(
        "bench_collectives_checks_every_algorithm_against_mpi",
        bench_csv_is_right(&o),
    );

    let plot = std::env::temp_dir().join(format!("mpinfer-bench-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&plot);
    let o = mpirun_mpinfer(
        2,
        &[
            "bench",
            "collectives",
            "--op",
            "all",
            "--algo",
            "auto,ring,binomial",
            "-b",
            "1K",
            "-e",
            "16K",
            "-f",
            "4",
            "--format",
            "csv",
            "--batches",
            "3",
            "--plot",
            plot.to_str().unwrap(),
        ],
        &[],
    );
    record(
        "bench_collectives_plots_a_line_per_algorithm_and_mpi",
        bench_plot_is_right(&o, &plot),
    );
    let _ = std::fs::remove_file(&plot);

    let o = mpirun_mpinfer(
        2,
        &["bench", "collectives"],
        &[("MPINFER_ALLREDUCE", "tree")],
    );
    record(
        "a_bad_environment_setting_stops_every_rank_with_its_name",
        expect_abort(
            &o,
            &[
                "error: rank 0: MPINFER_ALLREDUCE: unknown allreduce algorithm `tree`",
                "error: rank 1:",
            ],
        ),
    );

    let misuse = Command::new(env!("CARGO_BIN_EXE_mpinfer"))
        .args(["bench", "collectives", "--dtype", "f8"])
        .output()
        .expect("run mpinfer");
    let stderr = String::from_utf8_lossy(&misuse.stderr);
    record(
        "cli_misuse_exits_2_with_usage",
        if misuse.status.code() == Some(2) && stderr.starts_with("error: invalid value 'f8'") {
            Ok(())
        } else {
            Err(format!(
                "exit {:?}, stderr:\n{stderr}",
                misuse.status.code()
            ))
        },
    );

    println!(
        "\n{} passed, {} failed, {} skipped",
        passed.get(),
        failed.get(),
        skipped.get()
    );
    std::process::exit(i32::from(failed.get() > 0));
}

fn bench_csv_is_right(o: &Outcome) -> Result<(), String> {
    let show = || {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            o.code, o.stdout, o.stderr
        )
    };
    if o.timed_out || o.code != Some(0) {
        return Err(show());
    }
    let mut lines = o.stdout.lines();
    let header = "op,algo,dtype,ranks,bytes,count,time_us,algbw_gbs,busbw_gbs,mpi_time_us,mpi_busbw_gbs,ratio,wrong";
    if lines.next() != Some(header) {
        return Err(format!("header is not `{header}`: {}", show()));
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // 3 sizes (1K, 8K, 64K) × (15 of our algorithms, auto included, + 5 MPI rows).
    if rows.len() != 60 || rows.iter().any(|r| r.len() != 13) {
        return Err(format!(
            "{} rows, or a row without 13 fields: {}",
            rows.len(),
            show()
        ));
    }
    for r in &rows {
        if r[12] != "0" {
            return Err(format!("wrong elements in {r:?}: {}", show()));
        }
        let t: f64 = r[6].parse().map_err(|_| format!("time {:?}", r[6]))?;
        if !(t > 0.0 && t.is_finite()) || r[9] == "-" {
            return Err(format!("no time or no MPI baseline in {r:?}"));
        }
    }
    for op in [
        "allreduce",
        "allgather",
        "reduce",
        "broadcast",
        "reduce_scatter",
    ] {
        if !rows.iter().any(|r| r[0] == op && r[1] == "mpi") {
            return Err(format!("no MPI row for {op}: {}", show()));
        }
    }
    Ok(())
}

/// The SVG of a run of `--op all --algo auto,ring,binomial`: one panel per
/// collective, in each a line for every algorithm of it that was named and
/// one for MPI, labelled in the legend, with a point for every CSV row.
fn bench_plot_is_right(o: &Outcome, path: &std::path::Path) -> Result<(), String> {
    if o.timed_out || o.code != Some(0) {
        return Err(format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            o.code, o.stdout, o.stderr
        ));
    }
    let svg =
        std::fs::read_to_string(path).map_err(|e| format!("no plot at {}: {e}", path.display()))?;
    let body = svg.trim();
    if !(body.starts_with("<svg") || body.starts_with("<?xml")) || !body.ends_with("</svg>") {
        return Err(format!("not an SVG document:\n{svg}"));
    }
    if svg.matches('<').count() != svg.matches('>').count() {
        return Err("unbalanced tags".into());
    }
    // Lines per panel: those of auto, ring and binomial that each op has
    // (reduce_scatter has one algorithm, ring, which auto names too), plus MPI.
    let lines = |name: &str| svg.matches(&format!("data-series=\"{name}\"")).count();
    for (name, want) in [
        ("auto", 4),
        ("ring", 3),
        ("binomial", 2),
        ("MPI built-in", 5),
    ] {
        if lines(name) != want {
            return Err(format!(
                "{} lines named `{name}`, expected {want}",
                lines(name)
            ));
        }
    }
    let polylines = svg.matches("<polyline").count();
    if polylines != 14 {
        return Err(format!("{polylines} polylines, expected 14"));
    }
    for text in [
        ">auto<",
        ">ring<",
        ">binomial<",
        ">MPI built-in<",
        ">allreduce<",
        ">reduce_scatter<",
        ">1K<",
        ">16K<",
        "2 ranks, f32",
        "bus bandwidth (GB/s",
        "message size (bytes",
    ] {
        if !svg.contains(text) {
            return Err(format!("the plot lacks `{text}`"));
        }
    }
    // Every measured row is a point of its line; MPI adds one per op and size.
    let rows = o.stdout.lines().skip(1).count();
    let sizes: std::collections::HashSet<(&str, &str)> = o
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 13).then(|| (f[0], f[4]))
        })
        .collect();
    let points = svg.matches("<title>").count();
    if points != rows + sizes.len() {
        return Err(format!(
            "{points} points for {rows} rows and {} MPI sizes",
            sizes.len()
        ));
    }
    Ok(())
}

/// The job must end on its own, non-zero, soon, saying `needles` on stderr.
fn expect_abort(o: &Outcome, needles: &[&str]) -> Result<(), String> {
    let show = || {
        format!(
            "exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            o.code, o.elapsed, o.stdout, o.stderr
        )
    };
    if o.timed_out {
        return Err(format!("hung instead of aborting: {}", show()));
    }
    if o.code == Some(0) {
        return Err(format!("exited 0 despite the fault: {}", show()));
    }
    if o.elapsed > Duration::from_secs(30) {
        return Err(format!("took too long to abort: {}", show()));
    }
    for n in needles {
        if !o.stderr.contains(n) {
            return Err(format!("stderr lacks `{n}`: {}", show()));
        }
    }
    if o.stderr.contains("panicked at") || o.stderr.contains("RUST_BACKTRACE") {
        return Err(format!(
            "a raw Rust panic message reached the user: {}",
            show()
        ));
    }
    Ok(())
}

/// Each rank that fails says so once; here only one rank fails.
fn one_error_line(o: &Outcome) -> Result<(), String> {
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    if errors.len() == 1 {
        Ok(())
    } else {
        Err(format!(
            "{} `error:` lines, expected 1:\n{}",
            errors.len(),
            o.stderr
        ))
    }
}

// ---------------------------------------------------------------- rank modes

fn rank_panic() {
    let job = Job::start().unwrap();
    let comm = job.communicator().unwrap();
    if job.rank() == 1 {
        std::thread::sleep(Duration::from_millis(200));
        panic!("injected fault");
    }
    // Everyone else waits for rank 1, which never sends: only the abort ends this.
    let mut v = vec![0f32; 16];
    comm.broadcast(&mut v, Opts::default().root(1)).unwrap();
    unreachable!("the broadcast from a panicked rank returned");
}

fn rank_error() {
    let job = Job::start().unwrap();
    let comm = job.communicator().unwrap();
    if job.rank() == 1 {
        let e = anyhow::anyhow!("the input shard is unreadable").context("injected failure");
        job::fail(&e);
    }
    let mut v = vec![0f32; 16];
    comm.broadcast(&mut v, Opts::default().root(1)).unwrap();
    unreachable!("the broadcast from a failed rank returned");
}

fn rank_mismatch() {
    let job = Job::start().unwrap();
    let comm = job.communicator().unwrap();
    assert!(
        comm.config().check,
        "MPINFER_CHECK=1 should turn checking on"
    );
    let n = if job.rank() == 0 { 10 } else { 11 };
    let mut v = vec![1.0f32; n];
    if let Err(e) = comm.allreduce(&mut v, ReduceOp::Sum, Opts::default()) {
        job::fail(&anyhow::Error::new(e));
    }
    // Ranks not next to the disagreement wait in the collective until the abort.
    std::thread::sleep(Duration::from_secs(60));
    unreachable!("a mismatched allreduce went unnoticed");
}

/// MPI's own description of an error class, asked of MPI directly.
fn mpi_error_string(class: u32) -> String {
    let mut text = vec![0 as std::os::raw::c_char; mpi::ffi::MPI_MAX_ERROR_STRING as usize];
    let mut len = 0;
    // SAFETY: `text` has room for the MPI_MAX_ERROR_STRING characters MPI may write.
    let code = unsafe { mpi::ffi::MPI_Error_string(class as i32, text.as_mut_ptr(), &mut len) };
    assert_eq!(code, mpi::ffi::MPI_SUCCESS as i32);
    text[..len as usize]
        .iter()
        .map(|&c| c as u8 as char)
        .collect()
}

/// `e` must be MPI's truncation error, reported by `call` on a receive from
/// rank 0 with `tag`, in MPI's own words: Open MPI's text for the code is
/// the class's, MPICH's starts with it and goes on with its error stack.
fn assert_truncated(e: &TransportError, call: &str, tag: Tag) {
    let want = mpi_error_string(mpi::ffi::MPI_ERR_TRUNCATE);
    match e {
        TransportError::Mpi {
            rank: 1,
            call: got_call,
            peer: 0,
            tag: got_tag,
            class,
            message,
        } if *got_call == call
            && *got_tag == tag
            && *class == mpi::ffi::MPI_ERR_TRUNCATE as i32
            && message.starts_with(&want)
            && !message.contains('\n') => {}
        _ => panic!("expected MPI_ERR_TRUNCATE (`{want}`) from {call} on tag {tag}, got {e:?}"),
    }
}

/// Rank 0 sends 64 bytes where rank 1 posted 16: MPI_ERR_TRUNCATE, on the
/// blocking path or, with `MPINFER_TEST_NONBLOCKING` set, the nonblocking
/// one. Rank 1 checks the typed error, then fails the job the way the
/// launcher fails it on any error.
fn rank_truncate() {
    let job = Job::start().unwrap();
    let comm = job.communicator().unwrap();
    let tag = comm.reserve_tags(1).unwrap().get(0);
    let t = comm.transport();
    if job.rank() == 0 {
        t.send(1, tag, &[7u8; 64]).unwrap();
    } else if job.rank() == 1 {
        let mut short = [0u8; 16];
        let e = if std::env::var_os("MPINFER_TEST_NONBLOCKING").is_some() {
            let mut recv = [transport::Incoming {
                peer: 0,
                tag,
                data: &mut short,
            }];
            // Work to overlap takes the nonblocking path.
            let e = t.exchange(&[], &mut recv, Some(&mut || {})).unwrap_err();
            assert_truncated(&e, "MPI_Irecv, completed by MPI_Waitall,", tag);
            e
        } else {
            let e = t.recv(0, tag, &mut short).unwrap_err();
            assert_truncated(&e, "MPI_Recv", tag);
            e
        };
        job::fail(&anyhow::Error::new(CollectiveError::from(e)));
    }
    // The others wait for rank 1 until the abort.
    comm.barrier().unwrap();
    unreachable!("a barrier with a failed rank returned");
}

struct Tally {
    rank: usize,
    checks: u64,
    failures: u64,
}

impl Tally {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures += 1;
            eprintln!("rank {}: MISMATCH {}", self.rank, what());
        }
    }
}

fn ints(n: usize, rng: &mut StdRng) -> Vec<i32> {
    (0..n).map(|_| rng.gen_range(-1000..1000)).collect()
}

/// An element type MPI reduces too (it has no f16 or bf16).
trait MpiReduced: Element + Equivalence {
    fn sample(rng: &mut StdRng, op: ReduceOp, p: usize) -> Self;
    /// MPI has no average: its sum, divided as `ReduceOp::Avg` divides.
    fn mean(sum: Self, p: usize) -> Self;
    /// Whether `got` is MPI's `want`: exactly, but for float sums and
    /// products, which differ by the order of their roundings.
    fn agrees(got: &[Self], want: &[Self], op: ReduceOp, p: usize) -> bool;
}

macro_rules! mpi_float {
    ($t:ty) => {
        impl MpiReduced for $t {
            /// Sums over [-1, 1], products near 1; min and max meet infinities.
            fn sample(rng: &mut StdRng, op: ReduceOp, _: usize) -> Self {
                match op {
                    ReduceOp::Prod => rng.gen_range(0.9..1.1),
                    ReduceOp::Min | ReduceOp::Max if rng.gen_range(0..64) == 0 => {
                        if rng.gen() {
                            <$t>::INFINITY
                        } else {
                            <$t>::NEG_INFINITY
                        }
                    }
                    _ => rng.gen_range(-1.0..1.0),
                }
            }
            fn mean(sum: Self, p: usize) -> Self {
                sum / p as $t
            }
            fn agrees(got: &[Self], want: &[Self], op: ReduceOp, p: usize) -> bool {
                if matches!(op, ReduceOp::Min | ReduceOp::Max) {
                    return got == want;
                }
                // Each side is within p + 1 roundings of the exact result,
                // whose terms are below 1.1 in magnitude: for a product the
                // result is below 1.1^p, for a sum p terms add up.
                let p = p as i32;
                let tol = 2.0
                    * f64::from(p + 1)
                    * f64::from(<$t>::EPSILON)
                    * 1.1f64.powi(p)
                    * f64::from(p);
                got.len() == want.len()
                    && got
                        .iter()
                        .zip(want)
                        .all(|(g, w)| (f64::from(*g) - f64::from(*w)).abs() <= tol)
            }
        }
    };
}
mpi_float!(f32);
mpi_float!(f64);

macro_rules! mpi_int {
    ($t:ty) => {
        impl MpiReduced for $t {
            /// The whole range, so that sums and products wrap and signs
            /// mix; but not for u8 where an MPI gets it wrong. Its sums stay
            /// in range: Open MPI's AVX reductions saturate them instead of
            /// wrapping, a behaviour it keeps on purpose. Its min and max
            /// stay below 128: MPICH 4.0 compares unsigned types as signed
            /// (pmodels/mpich#6083). The local tests check the whole range
            /// against a reference of their own.
            fn sample(rng: &mut StdRng, op: ReduceOp, p: usize) -> Self {
                if <$t>::BITS == 8 && matches!(op, ReduceOp::Sum | ReduceOp::Avg) {
                    rng.gen_range(0..=<$t>::MAX / p as $t)
                } else if <$t>::BITS == 8
                    && <$t>::MIN == 0
                    && matches!(op, ReduceOp::Min | ReduceOp::Max)
                {
                    rng.gen_range(0..=(<$t>::MAX / 2))
                } else {
                    rng.gen()
                }
            }
            fn mean(sum: Self, p: usize) -> Self {
                sum / p as $t
            }
            fn agrees(got: &[Self], want: &[Self], _: ReduceOp, _: usize) -> bool {
                got == want
            }
        }
    };
}
mpi_int!(i32);
mpi_int!(i64);
mpi_int!(u8);

/// `len` zeros in memory of their own: the dangling pointer of an empty
/// `Vec<u8>` is 1, which Open MPI takes for MPI_IN_PLACE.
fn buffer<E: Element>(len: usize) -> Vec<E> {
    let mut v = Vec::with_capacity(len.max(1));
    v.resize(len, E::zeroed());
    v
}

fn mpi_op(op: ReduceOp) -> SystemOperation {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => SystemOperation::sum(),
        ReduceOp::Prod => SystemOperation::product(),
        ReduceOp::Min => SystemOperation::min(),
        ReduceOp::Max => SystemOperation::max(),
    }
}

/// Every op of allreduce (every algorithm), reduce (every algorithm) and
/// reduce-scatter against MPI's own, on `n` elements of `E` per rank.
fn compare_reductions<E: MpiReduced>(
    comm: &Communicator<MpiTransport>,
    world: &mpi::topology::SimpleCommunicator,
    n: usize,
    root: usize,
    rng: &mut StdRng,
    t: &mut Tally,
) {
    let (p, rank) = (comm.size(), comm.rank());
    let dtype = E::DTYPE;
    let at_root = |len: usize| buffer::<E>(if rank == root { len } else { 0 });
    for op in ReduceOp::ALL {
        let mut x = buffer::<E>(n);
        x.iter_mut().for_each(|e| *e = E::sample(rng, op, p));
        let finish = |v: &mut [E]| {
            if op == ReduceOp::Avg {
                v.iter_mut().for_each(|e| *e = E::mean(*e, p));
            }
        };
        let mut want = buffer::<E>(n);
        world.all_reduce_into(&x[..], &mut want[..], mpi_op(op));
        finish(&mut want);
        for &algo in AllreduceAlgo::CONCRETE {
            let mut got = buffer::<E>(n);
            let opts = Opts::default().send(&x).algorithm(algo);
            comm.allreduce(&mut got, op, opts).unwrap();
            t.check(E::agrees(&got, &want, op, p), || {
                format!("allreduce {algo} {op} {dtype} n={n}")
            });
            let mut first = got.clone();
            comm.broadcast(&mut first, Opts::default()).unwrap();
            t.check(first == got, || {
                format!("allreduce {algo} {op} {dtype} n={n}: ranks disagree bitwise")
            });
        }
        let mut want_root = at_root(n);
        let rp = world.process_at_rank(root as i32);
        if rank == root {
            rp.reduce_into_root(&x[..], &mut want_root[..], mpi_op(op));
            finish(&mut want_root);
        } else {
            rp.reduce_into(&x[..], mpi_op(op));
        }
        for &algo in ReduceAlgo::CONCRETE {
            let mut got = at_root(n);
            let opts = Opts::default().send(&x).root(root).algorithm(algo);
            comm.reduce(&mut got, op, opts).unwrap();
            t.check(E::agrees(&got, &want_root, op, p), || {
                format!("reduce {algo} {op} {dtype} n={n} root={root}")
            });
        }
        let block = n / p;
        let mut want_rs = buffer::<E>(block);
        world.reduce_scatter_block_into(&x[..block * p], &mut want_rs[..], mpi_op(op));
        finish(&mut want_rs);
        let mut got_rs = buffer::<E>(block);
        comm.reduce_scatter(&mut got_rs, op, Opts::default().send(&x[..block * p]))
            .unwrap();
        t.check(E::agrees(&got_rs, &want_rs, op, p), || {
            format!("reduce_scatter {op} {dtype} block={block}")
        });
    }
}

fn rank_compare() {
    let job = Job::start().unwrap();
    let comm = job.communicator().unwrap();
    let world = job.world();
    let p = job.size();
    let rank = job.rank();
    let mut t = Tally {
        rank,
        checks: 0,
        failures: 0,
    };
    // Sizes agree across ranks; data differs per rank.
    let mut shared = StdRng::seed_from_u64(2024);
    let mut mine = StdRng::seed_from_u64(99 + rank as u64);
    let mut sizes = vec![0usize, 1, p, 1000];
    sizes.extend((0..4).map(|_| shared.gen_range(2..300_000)));

    for &n in &sizes {
        let root = shared.gen_range(0..p);
        let xi = ints(n, &mut mine);
        compare_reductions::<f32>(&comm, world, n, root, &mut mine, &mut t);
        compare_reductions::<f64>(&comm, world, n, root, &mut mine, &mut t);
        compare_reductions::<i32>(&comm, world, n, root, &mut mine, &mut t);
        compare_reductions::<i64>(&comm, world, n, root, &mut mine, &mut t);
        compare_reductions::<u8>(&comm, world, n, root, &mut mine, &mut t);
        // Broadcast.
        for &algo in BroadcastAlgo::CONCRETE {
            let mut got = xi.clone();
            comm.broadcast(&mut got, Opts::default().root(root).algorithm(algo))
                .unwrap();
            let mut want = xi.clone();
            world
                .process_at_rank(root as i32)
                .broadcast_into(&mut want[..]);
            t.check(got == want, || {
                format!("broadcast {algo} n={n} root={root}")
            });
        }
        // Allgather, even and uneven.
        let per = n / p.max(1);
        let send = &xi[..per];
        let mut want = vec![0i32; per * p];
        world.all_gather_into(send, &mut want[..]);
        let counts: Vec<usize> = (0..p).map(|r| (per + r * 3) % (per + 1)).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |a, c| {
                let d = *a;
                *a += *c as i32;
                Some(d)
            })
            .collect();
        let counts_i32: Vec<i32> = counts.iter().map(|c| *c as i32).collect();
        let total: usize = counts.iter().sum();
        let mut want_v = vec![0i32; total];
        {
            let mut part = PartitionMut::new(&mut want_v[..], counts_i32, &displs[..]);
            world.all_gather_varcount_into(&xi[..counts[rank]], &mut part);
        }
        for &algo in AllgatherAlgo::CONCRETE {
            let mut got = vec![0i32; per * p];
            let opts = Opts::default().algorithm(algo);
            comm.allgather(&mut got, opts.send(send)).unwrap();
            t.check(got == want, || format!("allgather {algo} per-rank={per}"));
            let mut got_v = vec![0i32; total];
            comm.allgather(&mut got_v, opts.send(&xi[..counts[rank]]).counts(&counts))
                .unwrap();
            t.check(got_v == want_v, || {
                format!("uneven allgather {algo} counts={counts:?}")
            });
        }
        // Gather and scatter.
        let mut want_g = vec![0i32; if rank == root { per * p } else { 0 }];
        let rp = world.process_at_rank(root as i32);
        if rank == root {
            rp.gather_into_root(send, &mut want_g[..]);
        } else {
            rp.gather_into(send);
        }
        let mut got_g = vec![0i32; if rank == root { per * p } else { 0 }];
        comm.gather(send, &mut got_g, Opts::default().root(root))
            .unwrap();
        t.check(got_g == want_g, || {
            format!("gather per-rank={per} root={root}")
        });
        let mut want_s = vec![0i32; per];
        if rank == root {
            rp.scatter_into_root(&want[..], &mut want_s[..]);
        } else {
            rp.scatter_into(&mut want_s[..]);
        }
        let mut got_s = vec![0i32; per];
        let src = if rank == root { &want[..] } else { &[] };
        comm.scatter(src, &mut got_s, Opts::default().root(root))
            .unwrap();
        t.check(got_s == want_s, || {
            format!("scatter per-rank={per} root={root}")
        });
    }
    comm.barrier().unwrap();

    let mut totals = [0u64; 2];
    world.all_reduce_into(
        &[t.checks, t.failures][..],
        &mut totals[..],
        SystemOperation::sum(),
    );
    if rank == 0 {
        if totals[1] == 0 {
            println!("  {p} ranks: all {} comparisons agree with MPI", totals[0]);
        } else {
            println!(
                "  {p} ranks: {} of {} comparisons differ from MPI",
                totals[1], totals[0]
            );
        }
    }
    drop(comm);
    drop(job);
    std::process::exit(i32::from(totals[1] > 0));
}
