//! `mpinfer run` end to end, under a real `mpirun`, against ONNX Runtime.
//!
//! tests/run_models.py (through the repository's venv) writes small models,
//! inputs and ONNX Runtime's outputs; every case then runs under every
//! strategy on 1 to 4 ranks and must match ONNX Runtime and its own one-rank
//! output. Around them: the data strategy's schedules and rank weights must
//! not change a single byte, `--labels` must report ONNX Runtime's accuracy,
//! activations sent as bf16 must stay close, and bad input must end every
//! rank with an `error:` line, quickly, leaving no output file.
//!
//! `cargo test --release --test mpi_run -- FILTER...` runs the tests whose
//! name contains one of the FILTERs. `MPINFER_PYTHON` picks the Python that
//! has numpy, onnx and onnxruntime (default: `.venv/bin/python`);
//! `MPINFER_TEST_SEED` the seed of the generated weights and inputs.

mod common;

use common::{is_mpich, make_models, mpirun, ranks_of, sigkill, Outcome};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const STRATEGIES: [&str; 4] = ["data", "tensor", "pipeline", "auto"];
const MAX_RANKS: usize = 4;
/// A run that has not ended by then is hung: killed and failed.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Bad input must be refused at least this fast.
const ERROR_LIMIT: Duration = Duration::from_secs(10);
/// Against ONNX Runtime the case's own `rtol` applies; both comparisons add
/// an absolute floor of FLOOR times the largest |reference|, for elements
/// that cancel down to almost nothing.
const FLOOR: f64 = 1e-5;
/// Ranks may split sums differently from one rank, never by more than this.
const RANKS_RTOL: f64 = 1e-5;
/// Activations rounded to bf16 (8 significant bits) on every transfer.
const BF16_RTOL: f64 = 2e-2;
const BF16_FLOOR: f64 = 1e-2;

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mpi_run");
    let models = work.join("models");
    let outputs = work.join("out");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&outputs).expect("create the output folder");

    let seed = std::env::var("MPINFER_TEST_SEED").unwrap_or_else(|_| "1".into());
    let manifest: Manifest = serde_json::from_str(&make_models("run_models.py", &models, &[&seed]))
        .expect("parse manifest.json");

    let mut suite = Suite {
        filters,
        passed: 0,
        failed: 0,
    };
    let cases: Vec<Case> = manifest
        .cases
        .iter()
        .map(|c| Case::from_manifest(c, &models))
        .collect();

    // Every case, every strategy, every rank count. The one-rank output of
    // each strategy is the reference for the larger counts; when that run
    // failed, they fail too, since their consistency cannot be checked.
    let mut one_rank: BTreeMap<(&str, &str), Result<Vec<f32>, String>> = BTreeMap::new();
    for case in &cases {
        for strategy in STRATEGIES {
            for ranks in 1..=MAX_RANKS {
                let name = format!("{}_{strategy}_n{ranks}", case.name);
                if !suite.selected(&name) {
                    continue;
                }
                let key = (case.name.as_str(), strategy);
                let out = outputs.join(format!("{name}.npy"));
                if ranks == 1 {
                    let o = run_case(case, 1, &["--strategy", strategy], &out);
                    let result = check_case(case, &o, &out);
                    suite.record(&name, result.clone().map(drop));
                    one_rank.insert(key, result);
                    continue;
                }
                let reference = one_rank.entry(key).or_insert_with(|| {
                    // Filtered out: run it unrecorded for the comparison.
                    let out = outputs.join(format!("{}_{strategy}_n1.npy", case.name));
                    let o = run_case(case, 1, &["--strategy", strategy], &out);
                    check_case(case, &o, &out)
                });
                let o = run_case(case, ranks, &["--strategy", strategy], &out);
                let result = check_case(case, &o, &out).and_then(|y| {
                    let r = reference.as_ref().map_err(|e| {
                        format!("no one-rank output to compare with: the one-rank reference run failed:\n{e}")
                    })?;
                    compare(&y, r, &case.shape, RANKS_RTOL, FLOOR)
                        .map_err(|e| format!("differs from its one-rank output: {e}"))
                });
                suite.record(&name, result);
            }
        }
    }

    // Data parallelism computes each row on one rank: how rows are handed
    // out must not change a bit of the result.
    for case in cases.iter().filter(|c| c.variants) {
        for ranks in 2..=MAX_RANKS {
            let name = format!("{}_data_dynamic_n{ranks}_same_bytes_as_static", case.name);
            if suite.selected(&name) {
                let result = same_bytes(case, ranks, &["--schedule", "dynamic"], &outputs);
                suite.record(&name, result);
            }
        }
        let name = format!("{}_data_rank_weights_1_1_2_same_bytes_as_static", case.name);
        if suite.selected(&name) {
            let result = same_bytes(case, 3, &["--rank-weights", "1,1,2"], &outputs);
            suite.record(&name, result);
        }
    }

    for case in cases.iter().filter(|c| c.variants) {
        for ranks in 2..=MAX_RANKS {
            let name = format!("{}_tensor_comm_bf16_n{ranks}", case.name);
            if suite.selected(&name) {
                let result = comm_bf16(case, ranks, &outputs);
                suite.record(&name, result);
            }
        }
    }

    let digits = &manifest.digits;
    for (strategy, ranks) in [
        ("data", 1),
        ("data", 3),
        ("tensor", 2),
        ("pipeline", 4),
        ("auto", 4),
    ] {
        let name = format!("digits_labels_accuracy_{strategy}_n{ranks}");
        if suite.selected(&name) {
            let result = digits_accuracy(digits, strategy, ranks, &outputs);
            suite.record(&name, result);
        }
    }

    for e in &manifest.errors {
        for (strategy, ranks) in [("data", 1), ("data", 3), ("tensor", 3)] {
            let name = format!("error_{}_{strategy}_n{ranks}", e.name);
            if suite.selected(&name) {
                let result = refused(e, strategy, ranks, &models, &outputs.join(&name));
                suite.record(&name, result);
            }
        }
    }

    let faults = &manifest.faults;
    let fault_model = models.join(&faults.model);
    let fault_input = models.join(&faults.input);
    for (name, run) in [
        (
            "fault_watchdog_names_the_stuck_rank",
            fault_watchdog as FaultTest,
        ),
        ("fault_killed_rank_ends_the_job", fault_killed_rank),
        ("fault_resume_data_same_and_fewer_ranks", fault_resume_data),
        ("fault_resume_tensor_fewer_ranks", fault_resume_tensor),
        ("fault_other_mpi_launcher_refused", other_mpi_launcher),
    ] {
        if suite.selected(name) {
            let dir = outputs.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            suite.record(name, run(&fault_model, &fault_input, &dir));
        }
    }
    let name = "env_lists_every_rank_with_its_local_rank";
    if suite.selected(name) {
        suite.record(name, env_lists_ranks());
    }

    let name = "fault_files_differ_between_ranks";
    if suite.selected(name) {
        let other = models.join(&faults.other_model);
        suite.record(
            name,
            files_differ(&fault_model, &other, &fault_input, &outputs),
        );
    }

    let name = "fault_data_files_differ_between_ranks";
    if suite.selected(name) {
        suite.record(name, data_files_differ(&models, &outputs));
    }

    println!("\n{} passed, {} failed", suite.passed, suite.failed);
    std::process::exit(i32::from(suite.failed > 0));
}

/// What tests/run_models.py wrote: file names relative to its folder (the
/// digits example's are absolute) and ONNX Runtime's verdicts.
#[derive(Deserialize)]
struct Manifest {
    cases: Vec<CaseEntry>,
    errors: Vec<BadInput>,
    digits: Digits,
    faults: Faults,
}

#[derive(Deserialize)]
struct CaseEntry {
    name: String,
    model: String,
    input: String,
    expected: String,
    shape: Vec<usize>,
    rtol: f64,
    nan_rows: Vec<usize>,
    variants: bool,
    #[serde(default)]
    others: Vec<OtherOutput>,
}

/// A model output after the first: written as `Y.SUFFIX.npy` beside `Y.npy`.
#[derive(Deserialize)]
struct OtherOutput {
    suffix: String,
    expected: String,
}

/// Input `mpinfer run` must refuse with an error naming one of `mentions`.
#[derive(Deserialize)]
struct BadInput {
    name: String,
    model: String,
    input: String,
    mentions: Vec<String>,
}

#[derive(Deserialize)]
struct Digits {
    model: String,
    input: String,
    labels: String,
    accuracy_line: String,
}

#[derive(Deserialize)]
struct Faults {
    model: String,
    input: String,
    other_model: String,
}

struct Suite {
    filters: Vec<String>,
    passed: usize,
    failed: usize,
}

impl Suite {
    fn selected(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    fn record(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("test {name} ... ok");
                self.passed += 1;
            }
            Err(why) => {
                println!("test {name} ... FAILED\n{why}");
                self.failed += 1;
            }
        }
    }
}

struct Case {
    name: String,
    model: PathBuf,
    input: PathBuf,
    expected: Vec<f32>,
    shape: Vec<usize>,
    rtol: f64,
    variants: bool,
    /// Per output after the first: its file's suffix, shape and values.
    others: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Case {
    fn from_manifest(j: &CaseEntry, dir: &Path) -> Case {
        let (shape, expected) = read_npy(&dir.join(&j.expected)).unwrap();
        let case = Case {
            name: j.name.clone(),
            model: dir.join(&j.model),
            input: dir.join(&j.input),
            expected,
            shape: j.shape.clone(),
            rtol: j.rtol,
            variants: j.variants,
            others: j
                .others
                .iter()
                .map(|o| {
                    let (shape, values) = read_npy(&dir.join(&o.expected)).unwrap();
                    (o.suffix.clone(), shape, values)
                })
                .collect(),
        };
        assert_eq!(
            case.shape, shape,
            "{}: manifest and expected output disagree",
            case.name
        );
        let width: usize = shape[1..].iter().product();
        for row in 0..shape[0] {
            let values = &case.expected[row * width..(row + 1) * width];
            let want_nan = j.nan_rows.contains(&row);
            assert!(
                values.iter().all(|v| v.is_nan() == want_nan),
                "{}: ONNX Runtime's row {row} is not all {}",
                case.name,
                if want_nan { "NaN" } else { "numbers" }
            );
        }
        case
    }
}

impl Outcome {
    fn show(&self) -> String {
        format!(
            "exit {:?} after {:.1?}{}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.elapsed,
            if self.timed_out {
                " (killed: hung)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }

    fn succeeded(&self) -> Result<(), String> {
        if self.timed_out || self.code != Some(0) {
            Err(self.show())
        } else {
            Ok(())
        }
    }
}

fn run_case(case: &Case, ranks: usize, extra: &[&str], out: &Path) -> Outcome {
    let mut args = vec![
        "run".to_string(),
        "--model".into(),
        case.model.display().to_string(),
        "--input".into(),
        case.input.display().to_string(),
        "--output".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let _ = std::fs::remove_file(out);
    for (suffix, ..) in &case.others {
        let _ = std::fs::remove_file(other_path(out, suffix));
    }
    mpirun_mpinfer(ranks, &args, RUN_LIMIT)
}

/// Where a run writing `out` puts the output with file suffix `suffix`.
fn other_path(out: &Path, suffix: &str) -> PathBuf {
    let text = out.display().to_string();
    PathBuf::from(format!("{}.{suffix}.npy", text.trim_end_matches(".npy")))
}

/// The run succeeded and its outputs match ONNX Runtime's, NaN for NaN.
fn check_case(case: &Case, o: &Outcome, out: &Path) -> Result<Vec<f32>, String> {
    o.succeeded()?;
    let (shape, y) = read_npy(out).map_err(|e| format!("{e}\n{}", o.show()))?;
    if shape != case.shape {
        return Err(format!(
            "output shape {shape:?}, ONNX Runtime's {:?}",
            case.shape
        ));
    }
    compare(&y, &case.expected, &case.shape, case.rtol, FLOOR)
        .map_err(|e| format!("differs from ONNX Runtime: {e}"))?;
    for (suffix, want_shape, want) in &case.others {
        let path = other_path(out, suffix);
        let (shape, got) = read_npy(&path).map_err(|e| format!("{e}\n{}", o.show()))?;
        if &shape != want_shape {
            return Err(format!(
                "{}: shape {shape:?}, ONNX Runtime's {want_shape:?}",
                path.display()
            ));
        }
        compare(&got, want, want_shape, case.rtol, FLOOR)
            .map_err(|e| format!("{} differs from ONNX Runtime: {e}", path.display()))?;
    }
    Ok(y)
}

/// Element by element: NaN where the reference has NaN (so a NaN sample
/// spoils its own row only), elsewhere a finite value within
/// rtol·|ref| + floor·max|ref|.
fn compare(
    got: &[f32],
    want: &[f32],
    shape: &[usize],
    rtol: f64,
    floor: f64,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} elements, expected {}", got.len(), want.len()));
    }
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(f64::from(v.abs())));
    let width = shape[1..].iter().product::<usize>().max(1);
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let at = || format!("row {} column {}", i / width, i % width);
        if w.is_nan() {
            if !g.is_nan() {
                return Err(format!("{}: {g}, expected NaN", at()));
            }
            continue;
        }
        if !g.is_finite() {
            return Err(format!("{}: {g}, expected {w}", at()));
        }
        let err = (f64::from(g) - f64::from(w)).abs();
        let tol = rtol * f64::from(w.abs()) + floor * scale;
        if err > tol && worst.is_none_or(|(_, e)| err / tol > e) {
            worst = Some((i, err / tol));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, ratio)) => Err(format!(
            "row {} column {}: {} vs {} ({ratio:.1}x the tolerance)",
            i / width,
            i % width,
            got[i],
            want[i]
        )),
    }
}

fn same_bytes(case: &Case, ranks: usize, variant: &[&str], dir: &Path) -> Result<(), String> {
    let tag = variant.join("_").replace(['-', ','], "");
    let base = dir.join(format!("{}_data_static_n{ranks}_{tag}.npy", case.name));
    let other = dir.join(format!("{}_data_n{ranks}_{tag}.npy", case.name));
    let o = run_case(
        case,
        ranks,
        &["--strategy", "data", "--schedule", "static"],
        &base,
    );
    check_case(case, &o, &base)?;
    let mut args = vec!["--strategy", "data"];
    args.extend_from_slice(variant);
    let o = run_case(case, ranks, &args, &other);
    check_case(case, &o, &other)?;
    let (a, b) = (
        std::fs::read(&base).unwrap(),
        std::fs::read(&other).unwrap(),
    );
    if a != b {
        return Err(format!(
            "{} differs from static scheduling",
            variant.join(" ")
        ));
    }
    Ok(())
}

fn comm_bf16(case: &Case, ranks: usize, dir: &Path) -> Result<(), String> {
    let f32_out = dir.join(format!("{}_tensor_comm_f32_n{ranks}.npy", case.name));
    let o = run_case(
        case,
        ranks,
        &["--strategy", "tensor", "--comm-dtype", "f32"],
        &f32_out,
    );
    let exact = check_case(case, &o, &f32_out)?;
    let out = dir.join(format!("{}_tensor_comm_bf16_n{ranks}.npy", case.name));
    let o = run_case(
        case,
        ranks,
        &["--strategy", "tensor", "--comm-dtype", "bf16"],
        &out,
    );
    o.succeeded()?;
    let (shape, y) = read_npy(&out)?;
    if shape != case.shape {
        return Err(format!(
            "output shape {shape:?}, ONNX Runtime's {:?}",
            case.shape
        ));
    }
    compare(&y, &case.expected, &case.shape, BF16_RTOL, BF16_FLOOR)
        .map_err(|e| format!("bf16 transfers drift too far from ONNX Runtime: {e}"))?;
    // Tensor parallelism on several ranks must move activations, and bf16
    // cannot carry these random values exactly.
    if y.iter()
        .zip(&exact)
        .all(|(a, b)| a.to_bits() == b.to_bits())
    {
        return Err("--comm-dtype bf16 gives the f32 output bit for bit: not applied".into());
    }
    Ok(())
}

fn digits_accuracy(d: &Digits, strategy: &str, ranks: usize, dir: &Path) -> Result<(), String> {
    let out = dir.join(format!("digits_{strategy}_n{ranks}.npy"));
    let _ = std::fs::remove_file(&out);
    let args: Vec<String> = [
        "run",
        "--model",
        &d.model,
        "--input",
        &d.input,
        "--labels",
        &d.labels,
        "--strategy",
        strategy,
        "--output",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = mpirun_mpinfer(ranks, &args, RUN_LIMIT);
    o.succeeded()?;
    let want = d.accuracy_line.as_str();
    let lines: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("accuracy:"))
        .collect();
    if lines != [want] {
        return Err(format!("expected exactly one `{want}` line\n{}", o.show()));
    }
    let (shape, _) = read_npy(&out)?;
    if shape != [360, 10] {
        return Err(format!("output shape {shape:?}, expected [360, 10]"));
    }
    Ok(())
}

/// Bad input: every rank ends, non-zero, soon, with an `error:` line and
/// without leaving an output file (whole or partial) behind.
fn refused(
    e: &BadInput,
    strategy: &str,
    ranks: usize,
    models: &Path,
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("y.npy");
    let args: Vec<String> = [
        "run",
        "--strategy",
        strategy,
        "--model",
        &models.join(&e.model).display().to_string(),
        "--input",
        &models.join(&e.input).display().to_string(),
        "--output",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = mpirun_mpinfer(ranks, &args, ERROR_LIMIT);
    if o.timed_out {
        return Err(format!("not refused within {ERROR_LIMIT:?}: {}", o.show()));
    }
    if o.code == Some(0) {
        return Err(format!("exited 0: {}", o.show()));
    }
    let mentions = &e.mentions;
    if !o
        .stderr
        .lines()
        .any(|l| l.starts_with("error:") && mentions.iter().any(|m| l.contains(m)))
    {
        return Err(format!(
            "no line starting `error:` that names one of {mentions:?}: {}",
            o.show()
        ));
    }
    if o.stderr.contains("panicked at") {
        return Err(format!("a raw Rust panic reached the user: {}", o.show()));
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().file_name())
        .collect();
    if !left.is_empty() {
        return Err(format!("left files behind: {left:?}"));
    }
    Ok(())
}

fn mpirun_mpinfer(ranks: usize, args: &[String], limit: Duration) -> Outcome {
    let mut all = vec!["-n".to_string(), ranks.to_string()];
    all.push(env!("CARGO_BIN_EXE_mpinfer").into());
    all.extend(args.iter().cloned());
    mpirun(&all, &[], limit, None)
}

// ---------------------------------------------------------------- env

/// `mpinfer env` on 2 ranks: one line per rank, in order, each on its own
/// local rank of the 2 on this node; a launcher variable that disagrees
/// with MPI is shown.
fn env_lists_ranks() -> Result<(), String> {
    let args = vec!["env".to_string(), "--device".into(), "cpu".into()];
    let o = mpirun_mpinfer(2, &args, ERROR_LIMIT);
    o.succeeded()?;
    let rows: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let expected = ["0     0 of 2", "1     1 of 2"];
    if rows.len() != 2 || rows.iter().zip(expected).any(|(r, e)| !r.starts_with(e)) {
        return Err(format!(
            "not one line per rank with its local rank: {}",
            o.show()
        ));
    }
    let single = Command::new(env!("CARGO_BIN_EXE_mpinfer"))
        .args(["env", "--device", "cpu"])
        .env("SLURM_LOCALID", "3")
        .output()
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&single.stdout);
    if !out.contains("0 of 1 (SLURM_LOCALID=3 disagrees)") {
        return Err(format!(
            "the disagreeing launcher variable is not shown:\n{out}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- faults

/// This binary started by the other MPI's launcher: each process would be
/// a job of its own; it must refuse, saying which MPI it was built for.
fn other_mpi_launcher(model: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let ours = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let other = if is_mpich(&ours) {
        "mpirun.openmpi"
    } else {
        "mpiexec.mpich"
    };
    let out = dir.join("y.npy");
    let mut cmd = Command::new(other);
    cmd.args(["-n", "2", env!("CARGO_BIN_EXE_mpinfer")])
        .args(run_args(model, input, &out, &[]))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let o = cmd
        .output()
        .map_err(|e| format!("cannot start {other}: {e} (scripts/setup.sh installs both MPIs)"))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || out.exists() {
        return Err(format!("{other} ran it as independent jobs:\n{stderr}"));
    }
    if !stderr.lines().any(|l| {
        l.starts_with("error:")
            && l.contains("MPI sees each as a job of 1 rank")
            && l.contains("built against")
    }) {
        return Err(format!("no error naming the mismatch:\n{stderr}"));
    }
    Ok(())
}

type FaultTest = fn(&Path, &Path, &Path) -> Result<(), String>;

fn run_args(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--model"].iter().map(|s| s.to_string()).collect();
    a.push(model.display().to_string());
    a.push("--input".into());
    a.push(input.display().to_string());
    a.push("--output".into());
    a.push(out.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn with_ranks(ranks: usize, args: Vec<String>) -> Vec<String> {
    let mut all = vec!["-n".to_string(), ranks.to_string()];
    all.push(env!("CARGO_BIN_EXE_mpinfer").into());
    all.extend(args);
    all
}

/// A rank that computes 1000 times slower leaves the other waiting; with
/// `--timeout 2` the waiting rank must end the job and say on whom it waited.
fn fault_watchdog(model: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let out = dir.join("y.npy");
    let mut args = vec!["--timeout".to_string(), "2".into()];
    args.extend(run_args(model, input, &out, &["--strategy", "data"]));
    let o = mpirun(
        &with_ranks(2, args),
        &[("MPINFER_SLOW_RANK", "1:1000")],
        Duration::from_secs(20),
        None,
    );
    if o.timed_out || o.code == Some(0) {
        return Err(format!(
            "the stuck job did not end with an error: {}",
            o.show()
        ));
    }
    let said = o
        .stderr
        .lines()
        .any(|l| l.starts_with("error: rank 0: no progress") && l.contains("waiting for rank 1"));
    if !said || o.elapsed > Duration::from_secs(15) {
        return Err(format!(
            "no watchdog report naming rank 1 within 15 s: {}",
            o.show()
        ));
    }
    Ok(())
}

/// SIGKILL on one rank part-way: the job ends within 15 s, non-zero, and
/// what is printed names the lost rank's process.
fn fault_killed_rank(model: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let out = dir.join("y.npy");
    let killed = std::cell::Cell::new(None::<String>);
    let kill_one = |pid: u32| {
        if let Some(&victim) = ranks_of(pid).last() {
            // Which rank it is, as Open MPI told the process.
            let env = std::fs::read(format!("/proc/{victim}/environ")).unwrap_or_default();
            let rank = env
                .split(|&b| b == 0)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK=").map(str::to_string));
            killed.set(rank);
            sigkill(victim);
        }
    };
    let args = run_args(
        model,
        input,
        &out,
        &["--strategy", "data", "--batch-size", "16"],
    );
    let start = Instant::now();
    let after_2s = || start.elapsed() >= Duration::from_secs(2);
    let o = mpirun(
        &with_ranks(3, args),
        &[("MPINFER_SLOW_RANK", "0:20")],
        Duration::from_secs(60),
        Some((&after_2s, &kill_one)),
    );
    let Some(victim) = killed.take() else {
        return Err(format!("found no rank to kill: {}", o.show()));
    };
    if o.timed_out || o.code == Some(0) || o.elapsed > Duration::from_secs(2 + 15) {
        return Err(format!(
            "the job did not end within 15 s of losing a rank: {}",
            o.show()
        ));
    }
    if !o.stderr.contains(&format!("rank {victim} ")) {
        return Err(format!(
            "nothing names the lost rank {victim}: {}",
            o.show()
        ));
    }
    if out.exists() {
        return Err("an output file appeared".into());
    }
    Ok(())
}

/// Killed part-way, then resumed: the output equals an uninterrupted run's.
/// Returns the committed rows seen before the resume.
fn interrupted_then_resumed(
    model: &Path,
    input: &Path,
    dir: &Path,
    strategy: &str,
    first: usize,
    second: usize,
) -> Result<(Vec<f32>, usize), String> {
    let out = dir.join(format!("{strategy}-{first}-{second}.npy"));
    let extra = ["--strategy", strategy, "--batch-size", "16"];
    let kill_all = |pid: u32| ranks_of(pid).into_iter().for_each(sigkill);
    let manifest = format!("{}.resume", out.display());
    // Killed as soon as some rows are committed, whatever the speed of the
    // machine: the rank slowed 50x keeps the rest from finishing first.
    let some_committed = || {
        std::fs::read_to_string(&manifest).is_ok_and(|m| {
            m.lines()
                .any(|l| l.starts_with("committed_rows ") && l != "committed_rows 0")
        })
    };
    mpirun(
        &with_ranks(first, run_args(model, input, &out, &extra)),
        &[("MPINFER_SLOW_RANK", "0:50")],
        Duration::from_secs(60),
        Some((&some_committed, &kill_all)),
    );
    if out.exists() {
        return Err("the run finished before it was interrupted: make it longer".into());
    }
    let committed = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("{manifest}: {e}"))?
        .lines()
        .find_map(|l| l.strip_prefix("committed_rows ").map(str::to_string))
        .and_then(|r| r.parse::<usize>().ok())
        .ok_or("no committed_rows in the manifest")?;
    let mut resume = extra.to_vec();
    resume.push("--resume");
    let o = mpirun(
        &with_ranks(second, run_args(model, input, &out, &resume)),
        &[],
        RUN_LIMIT,
        None,
    );
    o.succeeded()?;
    if !o.stderr.contains(&format!("resuming: {committed} of")) {
        return Err(format!(
            "the rerun did not resume from row {committed}: {}",
            o.show()
        ));
    }
    let (_, y) = read_npy(&out)?;
    Ok((y, committed))
}

fn uninterrupted(
    model: &Path,
    input: &Path,
    dir: &Path,
    strategy: &str,
) -> Result<Vec<f32>, String> {
    let out = dir.join(format!("{strategy}-whole.npy"));
    let args = run_args(model, input, &out, &["--strategy", strategy]);
    mpirun(&with_ranks(2, args), &[], RUN_LIMIT, None).succeeded()?;
    Ok(read_npy(&out)?.1)
}

fn fault_resume_data(model: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let whole = uninterrupted(model, input, dir, "data")?;
    for (first, second) in [(2, 2), (3, 1)] {
        let (y, committed) = interrupted_then_resumed(model, input, dir, "data", first, second)?;
        if committed == 0 {
            return Err(format!(
                "{first} → {second} ranks: nothing was committed before the kill"
            ));
        }
        if y != whole {
            return Err(format!(
                "{first} → {second} ranks, resumed at row {committed}: not byte-identical"
            ));
        }
    }
    Ok(())
}

fn fault_resume_tensor(model: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let whole = uninterrupted(model, input, dir, "tensor")?;
    let (y, committed) = interrupted_then_resumed(model, input, dir, "tensor", 2, 1)?;
    if committed == 0 {
        return Err("nothing was committed before the kill".into());
    }
    // Split sums round differently on another rank count: 1e-6 of the
    // largest output.
    let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in y.iter().zip(&whole).enumerate() {
        if (a - b).abs() > 1e-6 * b.abs().max(scale) {
            return Err(format!("element {i}: {a} vs {b}"));
        }
    }
    Ok(())
}

/// Rank 1 given another model than rank 0: both say so, nothing is written.
fn files_differ(model: &Path, other: &Path, input: &Path, dir: &Path) -> Result<(), String> {
    let out = dir.join("differ.npy");
    let mut args = with_ranks(1, run_args(model, input, &out, &[]));
    args.push(":".into());
    args.extend(with_ranks(1, run_args(other, input, &out, &[])));
    let o = mpirun(&args, &[], ERROR_LIMIT, None);
    if o.timed_out || o.code == Some(0) {
        return Err(format!("not refused: {}", o.show()));
    }
    if !o
        .stderr
        .lines()
        .any(|l| l.starts_with("error:") && l.contains("not the same file on every rank"))
    {
        return Err(format!("no error saying the files differ: {}", o.show()));
    }
    if out.exists() {
        return Err("an output file appeared".into());
    }
    Ok(())
}

/// The same model file on every rank, but the external data beside it
/// differs on one: refused, naming the data file.
fn data_files_differ(models: &Path, dir: &Path) -> Result<(), String> {
    let (model, data) = ("seed_net_external.onnx", "seed_net_external.onnx.data");
    let copy = |to: &Path| -> Result<(), String> {
        std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
        for f in [model, data] {
            std::fs::copy(models.join(f), to.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(())
    };
    let (a, b) = (dir.join("data_a"), dir.join("data_b"));
    copy(&a)?;
    copy(&b)?;
    let mut bytes = std::fs::read(b.join(data)).map_err(|e| e.to_string())?;
    bytes[0] ^= 0x40;
    std::fs::write(b.join(data), bytes).map_err(|e| e.to_string())?;
    let input = models.join("seed_net_b5.in.npy");
    let out = dir.join("data_differ.npy");
    let mut args = with_ranks(1, run_args(&a.join(model), &input, &out, &[]));
    args.push(":".into());
    args.extend(with_ranks(1, run_args(&b.join(model), &input, &out, &[])));
    let o = mpirun(&args, &[], ERROR_LIMIT, None);
    if o.timed_out || o.code == Some(0) {
        return Err(format!("not refused: {}", o.show()));
    }
    let names_it = o.stderr.lines().any(|l| {
        l.starts_with("error:") && l.contains(data) && l.contains("not the same file on every rank")
    });
    if !names_it {
        return Err(format!("no error naming {data}: {}", o.show()));
    }
    if out.exists() {
        return Err("an output file appeared".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- .npy

/// A little-endian f32 .npy file (format 1.0, 2.0 or 3.0), C order.
fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| format!("{}: not an f32 .npy file: {why}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(bytes.get(start..start + header_len).ok_or(bad("short"))?)
        .map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}':"))
            .ok_or(bad(&format!("no {key}")))?;
        Ok(header[at + key.len() + 3..].trim_start())
    };
    if !field("descr")?.starts_with("'<f4'") {
        return Err(bad(header));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err(bad("Fortran order"));
    }
    let shape_text = field("shape")?;
    let inner = &shape_text[1..shape_text.find(')').ok_or(bad("shape"))?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(bad(&format!(
            "{} data bytes for shape {shape:?}",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok((shape, values))
}
