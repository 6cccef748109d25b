//! One MPI job as seen from one rank: start-up, rank-prefixed logging, and
//! the guarantee that a failure on any rank ends every rank.

use anyhow::{anyhow, Result};
use mpi::environment::Universe;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpinfer_collectives::transport::Counting;
use mpinfer_collectives::{Communicator, Config, MpiTransport, Transport};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);
static SIZE: AtomicUsize = AtomicUsize::new(0);

/// Exit status of a job ended by a panic, as `mpirun` reports it.
pub const PANIC_EXIT: i32 = 101;

pub struct Job {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Rank among the ranks on this node, and how many share the node.
    local_rank: usize,
    local_size: usize,
    /// Signature checks before every collective, whatever the environment says.
    check_collectives: bool,
    /// Longest wait for a message before the job ends; zero: no limit.
    timeout: std::time::Duration,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl Job {
    /// Initialises MPI, then installs the panic hook and the logger, both of
    /// which name this rank in everything they print.
    pub fn start() -> Result<Job> {
        let universe = mpi::initialize()
            .ok_or_else(|| anyhow!("MPI was already initialised in this process"))?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // Ranks that can share memory are the ranks on this node.
        let node = world.split_shared(world.rank());
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        // MPI's own view decides (it cannot be wrong about shared memory);
        // the launcher's variable is a cross-check: if they differ, the
        // GPU and thread choices may not be what the job script intended.
        let launcher_says = crate::launch::launcher_local_rank();
        RANK.store(rank, Ordering::SeqCst);
        SIZE.store(size, Ordering::SeqCst);
        install_panic_hook();
        init_logging();
        if let Some((var, r)) = launcher_says.filter(|&(_, r)| r != local_rank) {
            log::warn!(
                "{var}={r}, but MPI places this rank {local_rank} of {local_size} on its node; using {local_rank}"
            );
        }
        crate::launch::check_launch(size)?;
        Ok(Job {
            world,
            rank,
            size,
            local_rank,
            local_size,
            check_collectives: false,
            timeout: std::time::Duration::ZERO,
            _universe: universe,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// CPU threads for this rank: what SLURM gave each task, else the CPUs
    /// this process is bound to when a launcher bound it, else the node's
    /// cores shared among its ranks.
    pub fn default_threads(&self) -> usize {
        if let Some(n) = std::env::var("SLURM_CPUS_PER_TASK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            return n.max(1);
        }
        let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        match online_cpus() {
            // Bound to a subset already: that subset is this rank's share.
            Some(online) if usable < online => usable,
            _ => (usable / self.local_size.max(1)).max(1),
        }
    }

    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// Ends the job when this rank waits longer than `timeout` for a message
    /// on a communicator made after this call.
    pub fn watch(&mut self, timeout: std::time::Duration) {
        self.timeout = timeout;
    }

    pub fn check_collectives(&mut self, on: bool) {
        self.check_collectives = on;
    }

    /// Our collectives over MPI point-to-point, on a private duplicate of the
    /// world communicator; settings from `MPINFER_*` variables.
    pub fn communicator(&self) -> Result<Communicator<MpiTransport>> {
        let (transport, config) = self.transport(&self.world)?;
        Ok(self.watched(Communicator::new(transport, config)))
    }

    /// The same, counting the bytes and messages this rank sends.
    pub fn counting_communicator(&self) -> Result<Communicator<Counting<MpiTransport>>> {
        self.counting_communicator_on(&self.world)
    }

    /// The same over the ranks of `parent`, a part of the world.
    pub fn counting_communicator_on(
        &self,
        parent: &SimpleCommunicator,
    ) -> Result<Communicator<Counting<MpiTransport>>> {
        let (transport, config) = self.transport(parent)?;
        Ok(self.watched(Communicator::new(Counting::new(transport), config)))
    }

    fn watched<T: Transport>(&self, comm: Communicator<T>) -> Communicator<T> {
        comm.watch(self.timeout, |what| {
            say(&format!("error: {what}"));
            abort_job(1);
        });
        comm
    }

    fn transport(&self, parent: &SimpleCommunicator) -> Result<(MpiTransport, Config)> {
        let mut config = Config::from_env().map_err(|e| anyhow!(e))?;
        config.check |= self.check_collectives;
        let mut transport = MpiTransport::new(parent);
        transport.set_eager_bytes(config.tuning.eager_bytes);
        Ok((transport, config))
    }
}

fn rank_label() -> String {
    match RANK.load(Ordering::SeqCst) {
        usize::MAX => "rank ?".to_string(),
        r => format!("rank {r}"),
    }
}

fn mpi_running() -> bool {
    let (mut initialized, mut finalized) = (0, 0);
    // SAFETY: both queries may be called at any time, even before MPI_Init.
    unsafe {
        mpi::ffi::MPI_Initialized(&mut initialized);
        mpi::ffi::MPI_Finalized(&mut finalized);
    }
    initialized != 0 && finalized == 0
}

/// Ends the whole job: other ranks may be blocked waiting for this one, and
/// only MPI_Abort reaches them. A job of one rank just exits.
pub fn abort_job(code: i32) -> ! {
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    if mpi_running() && SIZE.load(Ordering::SeqCst) > 1 {
        // The launcher forwards each rank's stderr asynchronously, and
        // MPI_Abort kills every rank at once: without a pause, MPICH's Hydra
        // was seen to drop the very line saying why (and the lines other
        // ranks were about to print about the same failure).
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: MPI is initialised and not finalised.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
    }
    std::process::exit(code)
}

/// Prints `error: rank R: cause` (with its chain of causes) and ends the job.
pub fn fail(err: &anyhow::Error) -> ! {
    say(&format!("error: {}: {err:#}", rank_label()));
    abort_job(1)
}

/// One write per line: stderr is unbuffered, and ranks share the terminal, so
/// a line written in pieces gets interleaved with other ranks' lines.
pub fn say(line: &str) {
    let mut out = std::io::stderr().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
}

/// A panic on one rank would leave the others blocked forever in their next
/// receive: report it as an error naming the rank, then abort every rank.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(&format!(
            "error: {}: internal error: {msg}{at}",
            rank_label()
        ));
        abort_job(PANIC_EXIT);
    }));
}

fn init_logging() {
    let _ = env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("warn,mpinfer_runtime=info,mpinfer_launcher=info"),
    )
    .format(|buf, record| {
        writeln!(
            buf,
            "[{}] {}: {}",
            rank_label(),
            record.level().as_str().to_lowercase(),
            record.args()
        )
    })
    .try_init();
}

/// CPUs online on this node (`/sys/devices/system/cpu/online`, e.g. "0-3,8").
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    text.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1),
            None => part.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}
