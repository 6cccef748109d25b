//! `mpinfer batch` end to end, under a real `mpirun`, against ONNX Runtime.
//!
//! tests/batch_models.py (through the repository's venv) writes small
//! models, inputs, ONNX Runtime's outputs and broken files. The tests: the
//! plan and the run follow the stated priorities and weight split; broken
//! tasks fail alone while the others finish and match ONNX Runtime; a
//! batch killed part-way and resumed on another rank count ends
//! byte-identical to an uninterrupted one; an empty or malformed task file
//! is refused with a clear error.
//!
//! `cargo test --release --test mpi_batch -- FILTER...` runs the tests whose
//! name contains one of the FILTERs. `MPINFER_PYTHON` picks the Python that
//! has numpy, onnx and onnxruntime (default: `.venv/bin/python`).

mod common;

use common::{make_models, mpirun, ranks_of, sigkill, Outcome};
use mpinfer_runtime::npy::NpyFile;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A batch that has not ended by then is hung: killed and failed.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// A bad task file must be refused at least this fast.
const ERROR_LIMIT: Duration = Duration::from_secs(10);
/// Absolute floor of the comparison, times the largest |reference|.
const FLOOR: f64 = 1e-5;

#[derive(Deserialize)]
struct Manifest {
    cases: BTreeMap<String, Case>,
    broken: Broken,
}

#[derive(Deserialize)]
struct Case {
    model: String,
    input: String,
    expected: String,
    rtol: f64,
}

#[derive(Deserialize)]
struct Broken {
    garbage_model: String,
    truncated_input: String,
    unsupported_model: String,
}

struct Env {
    models: PathBuf,
    manifest: Manifest,
}

type Test = fn(&Env, &Path) -> Result<(), String>;

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mpi_batch");
    let models = work.join("models");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&models).expect("create the work folder");
    let manifest: Manifest = serde_json::from_str(&make_models("batch_models.py", &models, &["1"]))
        .expect("parse manifest.json");
    let env = Env { models, manifest };

    let tests: [(&str, Test); 4] = [
        (
            "batch_priorities_order_starts_and_weights_split_ranks_n4",
            priorities_and_weights,
        ),
        ("batch_broken_tasks_fail_alone_n4", broken_tasks_fail_alone),
        (
            "batch_killed_then_resumed_on_3_ranks_same_bytes",
            killed_then_resumed,
        ),
        ("batch_empty_or_malformed_task_file_refused", bad_task_files),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        match test(&env, &dir) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(why) => {
                println!("test {name} ... FAILED\n{why}");
                failed += 1;
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

// ---------------------------------------------------------------- helpers

fn show(o: &Outcome) -> String {
    format!(
        "exit {:?} after {:.1?}{}\nstdout:\n{}\nstderr:\n{}",
        o.code,
        o.elapsed,
        if o.timed_out { " (killed: hung)" } else { "" },
        o.stdout,
        o.stderr
    )
}

fn succeeded(o: &Outcome) -> Result<(), String> {
    if o.timed_out || o.code != Some(0) {
        return Err(show(o));
    }
    Ok(())
}

/// `mpirun -n RANKS mpinfer batch --tasks TASKS EXTRA...`.
fn batch(ranks: usize, tasks: &Path, extra: &[&str], env: &[(&str, &str)]) -> Outcome {
    batch_during(ranks, tasks, extra, env, RUN_LIMIT, None)
}

fn batch_during(
    ranks: usize,
    tasks: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
    during: Option<common::During>,
) -> Outcome {
    let mut args = vec!["-n".to_string(), ranks.to_string()];
    args.push(env!("CARGO_BIN_EXE_mpinfer").into());
    args.extend(["batch", "--tasks"].map(String::from));
    args.push(tasks.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    mpirun(&args, env, limit, during)
}

/// A task in TOML whose model and input are the manifest's case `name`,
/// given relative to the task file's folder `dir`, which lies beside the
/// models.
fn task(env: &Env, name: &str, output: &str, extra: &str) -> String {
    let c = &env.manifest.cases[name];
    format!(
        "[[task]]\nmodel = \"../models/{}\"\ninput = \"../models/{}\"\noutput = \"{output}\"\n{extra}\n",
        c.model, c.input
    )
}

fn write_tasks(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tasks.toml");
    std::fs::write(&path, text).expect("write the task file");
    path
}

fn read_npy(path: &Path) -> Result<Vec<f32>, String> {
    let f = NpyFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.read_rows(0..f.rows())
        .map(|t| t.data)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `out` against ONNX Runtime's output for the case `name`.
fn matches_ort(env: &Env, name: &str, out: &Path) -> Result<(), String> {
    let c = &env.manifest.cases[name];
    let want = read_npy(&env.models.join(&c.expected))?;
    let got = read_npy(out)?;
    if got.len() != want.len() {
        return Err(format!(
            "{}: {} values, ONNX Runtime gives {}",
            out.display(),
            got.len(),
            want.len()
        ));
    }
    let largest = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        if (g - w).abs() > c.rtol * w.abs() + FLOOR * largest {
            return Err(format!(
                "{}: value {i} is {g}, ONNX Runtime gives {w}",
                out.display()
            ));
        }
    }
    Ok(())
}

fn metrics(dir: &Path) -> Result<Value, String> {
    let path = dir.join("tasks.metrics.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}\n{text}", path.display()))
}

/// The metrics of task `number` (1-based, file order).
fn task_metrics(m: &Value, number: u64) -> Result<&Value, String> {
    m["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task"].as_u64() == Some(number)))
        .ok_or_else(|| format!("no metrics for task {number}: {m}"))
}

fn ranks_of_task(m: &Value, number: u64) -> Result<(u64, u64), String> {
    let t = task_metrics(m, number)?;
    match (t["first_rank"].as_u64(), t["ranks"].as_u64()) {
        (Some(f), Some(n)) => Ok((f, n)),
        _ => Err(format!("task {number}: no ranks in {t}")),
    }
}

fn seconds(t: &Value, key: &str) -> Result<f64, String> {
    t[key].as_f64().ok_or_else(|| format!("no {key} in {t}"))
}

// ---------------------------------------------------------------- tests

/// Weights 1, 3, 1 and 1 with 2 explicit ranks on 4 ranks: P = W²/6 puts
/// task 2 first; it and task 1 share wave 1 as 3 : 1 ranks; task 3's share
/// there would be under one rank, so it starts in wave 2 beside task 4's
/// explicit 2 ranks. `--plan` says so without running; the run does it.
fn priorities_and_weights(env: &Env, dir: &Path) -> Result<(), String> {
    let text = [
        task(env, "mlp", "a.npy", ""),
        task(env, "conv", "b.npy", "weight = 3"),
        task(env, "mlp", "c.npy", "batch-size = 4"),
        task(env, "conv", "d.npy", "ranks = 2\nstrategy = \"tensor\""),
    ]
    .concat();
    let tasks = write_tasks(dir, &text);
    let plan = batch(1, &tasks, &["--plan", "--ranks", "4"], &[]);
    succeeded(&plan)?;
    let order: Vec<&str> = plan
        .stderr
        .lines()
        .filter(|l| l.starts_with("plan: task "))
        .collect();
    let want_order = ["task 2 ", "task 1 ", "task 3 ", "task 4 "];
    if order.len() != 4 || !order.iter().zip(want_order).all(|(l, w)| l.contains(w)) {
        return Err(format!(
            "priority order is not 2, 1, 3, 4:\n{}",
            show(&plan)
        ));
    }
    for want in [
        "P 1.5000",
        "wave 1: task 2 (",
        "on ranks 0-2 (3 ranks: weight 3 of 4",
        "wave 1: task 3 waits for the next wave",
        "wave 2: task 4 (",
        "on ranks 2-3 (2 ranks: ranks = 2 in the task file)",
        "ties in file order",
    ] {
        if !plan.stderr.contains(want) {
            return Err(format!("the plan does not say {want:?}:\n{}", show(&plan)));
        }
    }
    if ["a", "b", "c", "d"]
        .iter()
        .any(|o| dir.join(format!("{o}.npy")).exists())
    {
        return Err("--plan ran tasks".into());
    }

    let o = batch(4, &tasks, &[], &[]);
    succeeded(&o)?;
    let m = metrics(dir)?;
    for (number, want) in [(2, (0, 3)), (1, (3, 1)), (3, (0, 2)), (4, (2, 2))] {
        let got = ranks_of_task(&m, number)?;
        if got != want {
            return Err(format!(
                "task {number} ran on {got:?} (first rank, ranks), not {want:?}:\n{m:#}"
            ));
        }
    }
    // Wave 2 starts when wave 1 has ended: the ranks' times are on the
    // node's one system clock.
    let end = |n| -> Result<f64, String> {
        let t = task_metrics(&m, n)?;
        Ok(seconds(t, "start_s")? + seconds(t, "wall_s")?)
    };
    let wave1_end = end(1)?.max(end(2)?);
    for n in [3, 4] {
        let start = seconds(task_metrics(&m, n)?, "start_s")?;
        if start + 1e-4 < wave1_end {
            return Err(format!(
                "task {n} started at {start} s, before wave 1 ended at {wave1_end} s:\n{m:#}"
            ));
        }
    }
    let ranks = m["per_rank"].as_array().map_or(0, Vec::len);
    let shares_ok = m["per_rank"].as_array().is_some_and(|rs| {
        rs.iter().all(|r| {
            r["busy_share"]
                .as_f64()
                .is_some_and(|s| (0.0..=1.0).contains(&s))
        })
    });
    if ranks != 4 || !shares_ok {
        return Err(format!(
            "per-rank busy shares missing or out of [0, 1]:\n{m:#}"
        ));
    }
    for (case, out) in [("mlp", "a"), ("conv", "b"), ("mlp", "c"), ("conv", "d")] {
        matches_ort(env, case, &dir.join(format!("{out}.npy")))?;
    }
    Ok(())
}

/// A garbage model, a truncated input, a missing model and an unsupported
/// op (each on 2 or 3 ranks) fail; the tasks beside them finish and match ONNX
/// Runtime; the job exits non-zero with a table of the failures.
fn broken_tasks_fail_alone(env: &Env, dir: &Path) -> Result<(), String> {
    let models = &env.models;
    let broken = &env.manifest.broken;
    let mlp_input = models.join(&env.manifest.cases["mlp"].input);
    let conv_input = models.join(&env.manifest.cases["conv"].input);
    let bad = |model: &Path, input: &Path, output: &str, extra: &str| {
        format!("[[task]]\nmodel = {model:?}\ninput = {input:?}\noutput = \"{output}\"\n{extra}\n")
    };
    // Waves on 4 ranks: tasks 1 and 2 on 2 ranks each; then 3 on its 3
    // explicit ranks beside 4; then 5 and 6 on 2 ranks each.
    let text = [
        bad(
            &models.join(&broken.garbage_model),
            &mlp_input,
            "garbage.npy",
            "weight = 2",
        ),
        task(env, "mlp", "mlp.npy", "weight = 2"),
        bad(
            &models.join(&env.manifest.cases["mlp"].model),
            &models.join(&broken.truncated_input),
            "truncated.npy",
            "ranks = 3",
        ),
        task(env, "conv", "conv.npy", ""),
        bad(
            Path::new("no_such_model.onnx"),
            &conv_input,
            "missing.npy",
            "",
        ),
        bad(
            &models.join(&broken.unsupported_model),
            &mlp_input,
            "unsupported.npy",
            "strategy = \"tensor\"",
        ),
    ]
    .concat();
    let tasks = write_tasks(dir, &text);
    let o = batch(4, &tasks, &[], &[]);
    if o.timed_out || o.code == Some(0) || o.code.is_none() {
        return Err(format!("expected a non-zero exit:\n{}", show(&o)));
    }
    let m = metrics(dir)?;
    for (number, want) in [
        (1, (0, 2)),
        (3, (0, 3)),
        (4, (3, 1)),
        (5, (0, 2)),
        (6, (2, 2)),
    ] {
        if ranks_of_task(&m, number)? != want {
            return Err(format!(
                "task {number} was meant to run on ranks {want:?}:\n{m:#}"
            ));
        }
    }
    for want in [
        "error: 4 of 6 tasks failed",
        "error: task 1 (",
        "garbage.onnx",
        "error: task 3 (",
        "truncated.npy: ",
        "error: task 5 (",
        "no_such_model.onnx",
        "error: task 6 (",
        "Sin",
    ] {
        if !o.stderr.contains(want) {
            return Err(format!("stderr does not say {want:?}:\n{}", show(&o)));
        }
    }
    let results = ["failed", "ok", "failed", "ok", "failed", "failed"];
    for (number, result) in (1..).zip(results) {
        let t = task_metrics(&m, number)?;
        if t["result"] != result {
            return Err(format!(
                "task {number} is {}, not {result}:\n{m:#}",
                t["result"]
            ));
        }
    }
    for out in ["garbage", "truncated", "missing", "unsupported"] {
        if dir.join(format!("{out}.npy")).exists() {
            return Err(format!("a failed task left {out}.npy"));
        }
    }
    matches_ort(env, "mlp", &dir.join("mlp.npy"))?;
    matches_ort(env, "conv", &dir.join("conv.npy"))
}

/// Two tasks on 2 ranks, killed once the long one has committed rows (its
/// rank slowed 50x) and the short one has finished; `--resume` on 3 ranks
/// skips the finished task and resumes the other, ending byte-identical to
/// an uninterrupted batch; a second `--resume` has nothing left to do.
fn killed_then_resumed(env: &Env, dir: &Path) -> Result<(), String> {
    let text = [
        task(env, "mlp", "short.npy", ""),
        task(
            env,
            "seed",
            "long.npy",
            "strategy = \"data\"\nbatch-size = 16",
        ),
    ]
    .concat();
    let whole_dir = dir.join("whole");
    let cut_dir = dir.join("cut");
    for d in [&whole_dir, &cut_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The task files lie one folder deeper than the models' relative paths
    // expect: point them one more level up.
    let text = text.replace("\"../models/", "\"../../models/");
    let whole = write_tasks(&whole_dir, &text);
    let cut = write_tasks(&cut_dir, &text);
    succeeded(&batch(2, &whole, &[], &[]))?;

    let manifest = cut_dir.join("long.npy.resume");
    let short = cut_dir.join("short.npy");
    let some_committed = || {
        short.exists()
            && std::fs::read_to_string(&manifest).is_ok_and(|m| {
                m.lines()
                    .any(|l| l.starts_with("committed_rows ") && l != "committed_rows 0")
            })
    };
    let kill_all = |pid: u32| ranks_of(pid).into_iter().for_each(sigkill);
    // Task 2 runs on rank 1 (equal priorities keep the file's order).
    batch_during(
        2,
        &cut,
        &[],
        &[("MPINFER_SLOW_RANK", "1:50")],
        Duration::from_secs(60),
        Some((&some_committed, &kill_all)),
    );
    if cut_dir.join("long.npy").exists() || !short.exists() {
        return Err("the batch was not stopped part-way through task 2: make it longer".into());
    }
    let committed = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("{}: {e}", manifest.display()))?
        .lines()
        .find_map(|l| l.strip_prefix("committed_rows ").map(str::to_string))
        .ok_or("no committed_rows in the manifest")?;

    let o = batch(3, &cut, &["--resume"], &[]);
    succeeded(&o)?;
    for want in [
        format!("resuming: {committed} of 512 rows"),
        "task 1 (".into(),
        "skipped, output complete".into(),
        "skipped (finished)".into(),
    ] {
        if !o.stderr.contains(&want) {
            return Err(format!(
                "the resumed batch does not say {want:?}:\n{}",
                show(&o)
            ));
        }
    }
    let m = metrics(&cut_dir)?;
    if ranks_of_task(&m, 2)? != (0, 3) || task_metrics(&m, 1)?["result"] != "skipped (finished)" {
        return Err(format!(
            "task 2 should resume alone on 3 ranks, task 1 be skipped:\n{m:#}"
        ));
    }
    for out in ["short.npy", "long.npy"] {
        let (a, b) = (
            std::fs::read(whole_dir.join(out)),
            std::fs::read(cut_dir.join(out)),
        );
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => {}
            _ => return Err(format!("{out} differs from the uninterrupted batch's")),
        }
    }
    matches_ort(env, "seed", &cut_dir.join("long.npy"))?;
    matches_ort(env, "mlp", &short)?;

    let again = batch(2, &cut, &["--resume"], &[]);
    succeeded(&again)?;
    if again.stderr.matches("skipped (finished)").count() != 2 {
        return Err(format!("both tasks should be skipped:\n{}", show(&again)));
    }
    Ok(())
}

/// An empty file, a file that is not TOML, a task with an unknown key and
/// one asking for more ranks than the job has: each an `error:` line that
/// says what is wrong, quickly, and a non-zero exit.
fn bad_task_files(env: &Env, dir: &Path) -> Result<(), String> {
    let good = task(env, "mlp", "y.npy", "");
    let cases = [
        ("empty", String::new(), "no [[task]] tables: nothing to run"),
        (
            "not_toml",
            "[[task]\nmodel = 1\n".to_string(),
            "TOML parse error at line 1",
        ),
        (
            "unknown_key",
            format!("{good}batch_size = 4\n"),
            "task 1: unknown key \"batch_size\"",
        ),
        (
            "too_many_ranks",
            format!("{good}ranks = 3\n"),
            "task 1 asks for 3 ranks, but the job has 2",
        ),
    ];
    for (name, text, want) in cases {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let tasks = write_tasks(&sub, &text);
        let o = batch_during(2, &tasks, &[], &[], ERROR_LIMIT, None);
        let said = o
            .stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(want));
        if o.timed_out || o.code == Some(0) || !said {
            return Err(format!(
                "{name}: expected an error line saying {want:?}:\n{}",
                show(&o)
            ));
        }
        if sub.join("y.npy").exists() {
            return Err(format!("{name}: a task ran"));
        }
    }
    Ok(())
}
