//! `mpinfer batch`: the tasks of a task file in one MPI job, several at once
//! on their own shares of the ranks.
//!
//! Each running task has a communicator of its own, split from the world,
//! and runs exactly as `mpinfer run` would on that many ranks. A task that
//! fails on what every one of its ranks sees (a file it cannot load, an
//! input that does not fit the model) fails alone: its ranks agree on the
//! failure and go on to the next wave. Only a lost rank or the watchdog
//! still ends the job.

mod report;
pub mod schedule;
pub mod tasks;

use crate::job::{say, Job};
use crate::run::{self, Place};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use mpi::topology::{Color, Communicator as _};
use mpinfer_collectives::{Communicator, MpiTransport, Opts};
use report::{Outcome, Record};
use schedule::{Demand, Plan};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tasks::Task;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The task file: [[task]] tables with model, input, output, and
    /// optionally weight, ranks and any `run` option by its long name.
    #[arg(long)]
    tasks: PathBuf,
    /// Print the schedule, with the reason for every choice, and stop
    /// without running anything.
    #[arg(long)]
    plan: bool,
    /// The job size to plan for with --plan (default: this job's ranks).
    #[arg(long, requires = "plan")]
    ranks: Option<usize>,
    /// Skip the tasks whose output is complete and resume the partial ones
    /// (on any number of ranks), as `run --resume` does.
    #[arg(long)]
    resume: bool,
    /// Where rank 0 writes the batch's metrics as JSON (default: beside the
    /// task file, TASKS.metrics.json).
    #[arg(long)]
    metrics: Option<PathBuf>,
}

type WorldComm = Communicator<MpiTransport>;

pub fn run(job: &Job, args: &Args) -> Result<ExitCode> {
    let mut tasks = tasks::read(&args.tasks)?;
    for t in &mut tasks {
        t.args.resume = args.resume;
    }
    let world = job.communicator()?;
    let finished = finished_tasks(&world, &tasks, args.resume)?;
    let demands: Vec<Demand> = tasks
        .iter()
        .map(|t| Demand {
            weight: t.weight,
            ranks: t.ranks,
        })
        .collect();
    let ranks = args.ranks.unwrap_or(job.size());
    if ranks == 0 {
        bail!("--ranks 0: a plan needs at least one rank");
    }
    let plan = schedule::plan(&demands, &finished, ranks)
        .with_context(|| format!("{}", args.tasks.display()))?;
    if job.rank() == 0 {
        let name = |i: usize| tasks[i].name();
        plan.describe(name, &finished).iter().for_each(|l| say(l));
    }
    if args.plan {
        return Ok(ExitCode::SUCCESS);
    }
    let start = Clock::start(&world)?;
    let mut mine = run_waves(job, &tasks, &plan, &start);
    mine.end_s = start.now();
    let all = report::gather(&world, &mine)?;
    let mut failed = [0i64];
    if job.rank() == 0 {
        let outcomes = report::outcomes(&tasks, &plan, &finished, &all);
        report::summary(&tasks, &outcomes);
        let path = args
            .metrics
            .clone()
            .unwrap_or_else(|| metrics_path(&args.tasks));
        report::write_metrics(&path, &tasks, &outcomes, &all)?;
        failed[0] = outcomes.iter().filter(|o| o.failed()).count() as i64;
    }
    if job.size() > 1 {
        world.broadcast(&mut failed, Opts::default())?;
    }
    Ok(if failed[0] > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Seconds since the batch started, on the system clock from rank 0's
/// start: ranks of one node then agree on when things happened, which
/// clocks started at a barrier do not (a rank leaves it late when the
/// node's cores are oversubscribed).
struct Clock {
    start_epoch_s: f64,
}

impl Clock {
    fn start(world: &WorldComm) -> Result<Clock> {
        let mut start = [epoch_s()];
        if world.size() > 1 {
            world.broadcast(&mut start, Opts::default())?;
        }
        Ok(Clock {
            start_epoch_s: start[0],
        })
    }

    fn now(&self) -> f64 {
        epoch_s() - self.start_epoch_s
    }
}

fn epoch_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `TASKS.metrics.json` beside `TASKS.toml`.
fn metrics_path(tasks: &Path) -> PathBuf {
    tasks.with_extension("metrics.json")
}

/// With `resume`, the tasks whose output is complete: the file is there
/// and no manifest says a run of it is still under way. Rank 0 looks, and
/// every rank plans with its answer.
fn finished_tasks(world: &WorldComm, tasks: &[Task], resume: bool) -> Result<Vec<bool>> {
    if !resume {
        return Ok(vec![false; tasks.len()]);
    }
    let mut done: Vec<i64> = tasks
        .iter()
        .map(|t| {
            let out = &t.args.output;
            let mut manifest = out.as_os_str().to_owned();
            manifest.push(".resume");
            i64::from(out.is_file() && !Path::new(&manifest).exists())
        })
        .collect();
    if world.size() > 1 {
        world.broadcast(&mut done, Opts::default())?;
    }
    Ok(done.into_iter().map(|d| d == 1).collect())
}

/// Every wave of the plan, this rank in the task its slot names (if any).
/// Returns what this rank did: its busy time and the outcome of each task
/// it led (was rank 0 of).
fn run_waves(job: &Job, tasks: &[Task], plan: &Plan, start: &Clock) -> Record {
    let mut record = Record::default();
    for wave in &plan.waves {
        let slot = wave.slot_of(job.rank());
        // Ranks outside every slot of this wave (explicit counts left them
        // over) take part in the split and get no communicator.
        let color = slot.map_or(Color::undefined(), |s| {
            Color::with_value(s.first_rank as i32)
        });
        let Some(sub) = job.world().split_by_color(color) else {
            continue;
        };
        let slot = slot.expect("a communicator only for ranks in a slot");
        let task = &tasks[slot.task];
        let begun = start.now();
        let label = format!("task {}", task.number);
        let place = Place {
            comm: &sub,
            label: &label,
            progress: false,
        };
        let result = run::run_in(job, &place, &task.args);
        let wall = start.now() - begun;
        record.busy_s += wall;
        if sub.rank() == 0 {
            if let Err(e) = &result {
                say(&format!("{label} failed: error: {e:#}"));
            }
            record.led.push(Outcome::new(slot, begun, wall, result));
        }
    }
    record
}
