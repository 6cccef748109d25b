//! The `mpinfer` command line.

mod agree;
pub mod batch;
pub mod bench;
pub mod env;
pub mod inspect;
pub mod job;
pub mod launch;
mod output;
mod progress;
pub mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mpinfer",
    version,
    about = "Neural-network inference across the ranks of an MPI job"
)]
struct Cli {
    /// Before every collective, ranks compare what they are about to run (op,
    /// type, count, root, sequence number) and stop with an error naming both
    /// sides if they differ, instead of hanging. Same as MPINFER_CHECK=1.
    #[arg(long, global = true)]
    check_collectives: bool,
    /// Seconds a rank may wait for a message without progress before the job
    /// is ended with a report of who waited on whom (0: wait forever). Same
    /// as MPINFER_TIMEOUT.
    #[arg(long, global = true, env = "MPINFER_TIMEOUT", default_value_t = 300.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What each rank sees: launcher, rank and local rank, host, device, threads.
    Env(EnvArgs),
    /// Run a model over an input file across the ranks of the job.
    Run(run::Args),
    /// Run the tasks of a task file in one job, several at once on shares of
    /// the ranks.
    Batch(batch::Args),
    /// Show a model's layers, sizes and FLOPs, and how ranks would divide it.
    Inspect(inspect::Args),
    /// Measure mpinfer against MPI's own implementation (run under mpirun).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args)]
struct EnvArgs {
    /// The device each rank would take.
    #[arg(long, default_value = "auto")]
    device: mpinfer_kernels::DeviceRequest,
    /// CPU threads per rank (default: the node's cores ÷ ranks on the node).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time our collectives against MPI's built-in ones, size by size.
    Collectives(bench::collectives::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut job = match job::Job::start() {
        Ok(j) => j,
        Err(e) => job::fail(&e),
    };
    job.check_collectives(cli.check_collectives);
    if !(cli.timeout >= 0.0 && cli.timeout.is_finite()) {
        job::fail(&anyhow::anyhow!(
            "--timeout {} is not a number of seconds",
            cli.timeout
        ));
    }
    job.watch(std::time::Duration::from_secs_f64(cli.timeout));
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Env(args) => done(env::run(&job, args.device, args.threads)),
        Command::Run(args) => done(run::run(&job, &args)),
        Command::Batch(args) => batch::run(&job, &args),
        Command::Inspect(args) => done(inspect::run(&args)),
        Command::Bench(BenchCommand::Collectives(args)) => {
            done(bench::collectives::run(&job, &args))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => job::fail(&e),
    }
}
