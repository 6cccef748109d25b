//! The communicator: validates a call, optionally checks that every rank
//! makes the same one, picks the algorithm and runs it.

use crate::algo::blocks::Blocks;
use crate::algo::*;
use crate::check::{layout_hash, Collective, Signature, WIRE_BYTES};
use crate::element::Element;
use crate::error::CollectiveError;
use crate::op::ReduceOp;
use crate::opts::{Allgather, Allreduce, Broadcast, Gather, Opts, Reduce, ReduceScatter, Scatter};
use crate::select::{AllgatherAlgo, AllreduceAlgo, BroadcastAlgo, ReduceAlgo, Tuning};
use crate::tags::{self, Reservations, TagRange};
use crate::transport::{Incoming, Outgoing, Transport};
use crate::watchdog::Watchdog;
use std::cell::{Cell, RefCell};
use std::time::Duration;

type Result<T> = std::result::Result<T, CollectiveError>;

/// How a communicator chooses and checks. Defaults: `auto` everywhere,
/// checking off; [`Config::from_env`] reads the overrides.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub allreduce: AllreduceAlgo,
    pub allgather: AllgatherAlgo,
    pub reduce: ReduceAlgo,
    pub broadcast: BroadcastAlgo,
    pub tuning: Tuning,
    /// Exchange a signature with the neighbouring ranks before every collective.
    pub check: bool,
}

impl Config {
    /// Reads `MPINFER_ALLREDUCE`, `MPINFER_ALLGATHER`, `MPINFER_REDUCE`,
    /// `MPINFER_BROADCAST` (algorithm names), `MPINFER_CHECK` (1/0), and the
    /// tuning crossovers `MPINFER_ALLREDUCE_SMALL`, `MPINFER_ALLREDUCE_LARGE`,
    /// `MPINFER_ALLGATHER_SMALL`, `MPINFER_ALLGATHER_LARGE`, `MPINFER_TREE_LARGE`, `MPINFER_REDUCE_SPLIT`,
    /// `MPINFER_SEGMENT_BYTES`, `MPINFER_EAGER_BYTES`.
    pub fn from_env() -> std::result::Result<Config, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Config, String> {
        fn parse<T: std::str::FromStr<Err = String>>(
            get: &impl Fn(&str) -> Option<String>,
            key: &str,
        ) -> std::result::Result<Option<T>, String> {
            get(key)
                .map(|v| v.parse::<T>().map_err(|e| format!("{key}: {e}")))
                .transpose()
        }
        fn bytes(
            get: &impl Fn(&str) -> Option<String>,
            key: &str,
            into: &mut usize,
        ) -> std::result::Result<(), String> {
            if let Some(v) = get(key) {
                *into =
                    parse_bytes(&v).ok_or_else(|| format!("{key}: `{v}` is not a byte size"))?;
            }
            Ok(())
        }
        let mut c = Config::default();
        if let Some(a) = parse(&get, "MPINFER_ALLREDUCE")? {
            c.allreduce = a;
        }
        if let Some(a) = parse(&get, "MPINFER_ALLGATHER")? {
            c.allgather = a;
        }
        if let Some(a) = parse(&get, "MPINFER_REDUCE")? {
            c.reduce = a;
        }
        if let Some(a) = parse(&get, "MPINFER_BROADCAST")? {
            c.broadcast = a;
        }
        if let Some(v) = get("MPINFER_CHECK") {
            c.check = match v.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => return Err(format!("MPINFER_CHECK: `{v}` is not 1 or 0")),
            };
        }
        let t = &mut c.tuning;
        bytes(&get, "MPINFER_ALLREDUCE_SMALL", &mut t.allreduce_small)?;
        bytes(&get, "MPINFER_ALLREDUCE_LARGE", &mut t.allreduce_large)?;
        bytes(&get, "MPINFER_ALLGATHER_SMALL", &mut t.allgather_small)?;
        bytes(&get, "MPINFER_ALLGATHER_LARGE", &mut t.allgather_large)?;
        bytes(&get, "MPINFER_TREE_LARGE", &mut t.tree_large)?;
        bytes(&get, "MPINFER_REDUCE_SPLIT", &mut t.reduce_split)?;
        bytes(&get, "MPINFER_SEGMENT_BYTES", &mut t.segment_bytes)?;
        bytes(&get, "MPINFER_EAGER_BYTES", &mut t.eager_bytes)?;
        if t.segment_bytes == 0 {
            return Err("MPINFER_SEGMENT_BYTES must be positive".into());
        }
        Ok(c)
    }
}

/// `64`, `64K`, `1M`, `2G` (powers of 1024; a trailing `B`/`iB` is allowed).
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (digits, shift) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 10),
        'm' | 'M' => (&s[..s.len() - 1], 20),
        'g' | 'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    digits.parse::<usize>().ok()?.checked_mul(1 << shift)
}

pub struct Communicator<T: Transport> {
    transport: T,
    config: Config,
    seq: Cell<u64>,
    /// Lent to the algorithms.
    scratch: RefCell<Scratch>,
    /// Holds a private copy of the caller's input where an algorithm works in place.
    staging: RefCell<Scratch>,
    /// Shared with the transport, which marks its waits on it.
    watchdog: Watchdog,
    tags: Reservations,
}

impl<T: Transport> Communicator<T> {
    pub fn new(mut transport: T, config: Config) -> Self {
        let watchdog = Watchdog::new();
        transport.set_watchdog(watchdog.clone());
        Communicator {
            transport,
            config,
            seq: Cell::new(0),
            scratch: RefCell::default(),
            staging: RefCell::default(),
            watchdog,
            tags: Reservations::default(),
        }
    }

    /// Ends waits on this communicator's transport that last longer than
    /// `timeout`: `expire` gets a report naming this rank, the rank waited
    /// on, the collective and its sequence number, and is expected to end
    /// the job. Point-to-point traffic of the caller on [`Self::transport`]
    /// is watched too. A zero timeout turns the watch off.
    pub fn watch(&self, timeout: Duration, expire: impl Fn(String) + Send + 'static) {
        self.watchdog.arm(timeout, self.rank(), expire);
    }

    /// `n` message tags of [`tags::RESERVABLE`] that nothing else on this
    /// communicator uses, for the caller's own messages on
    /// [`Self::transport`]. No message is exchanged: every rank gets the
    /// same tags as long as all ranks reserve in the same order.
    pub fn reserve_tags(&self, n: usize) -> Result<TagRange> {
        self.tags.reserve(n, self.rank())
    }

    pub fn rank(&self) -> usize {
        self.transport.rank()
    }

    pub fn size(&self) -> usize {
        self.transport.size()
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Collectives run so far; every rank agrees on it in a correct program.
    pub fn sequence(&self) -> u64 {
        self.seq.get()
    }

    fn ctx(&self, c: Collective) -> Ctx<'_> {
        Ctx {
            transport: &self.transport,
            tag: tags::collective(c),
            segment_bytes: self.config.tuning.segment_bytes,
        }
    }

    /// Counts the call and, in check mode, compares signatures with both ring
    /// neighbours so that a disagreeing pair both report it.
    /// The signature is built only in check mode: off, a call costs one counter.
    fn begin(&self, sig: impl FnOnce() -> Signature) -> Result<()> {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.watchdog.set_sequence(seq);
        let p = self.size();
        if !self.config.check || p == 1 {
            return Ok(());
        }
        let sig = Signature { seq, ..sig() };
        let rank = self.rank();
        let right = (rank + 1) % p;
        let left = (rank + p - 1) % p;
        let ours = sig.encode();
        let mut from_left = [0u8; WIRE_BYTES];
        let mut from_right = [0u8; WIRE_BYTES];
        self.transport.exchange(
            &[
                Outgoing {
                    peer: right,
                    tag: tags::CHECK,
                    data: &ours,
                },
                Outgoing {
                    peer: left,
                    tag: tags::CHECK,
                    data: &ours,
                },
            ],
            &mut [
                Incoming {
                    peer: left,
                    tag: tags::CHECK,
                    data: &mut from_left,
                },
                Incoming {
                    peer: right,
                    tag: tags::CHECK,
                    data: &mut from_right,
                },
            ],
            None,
        )?;
        for (peer, theirs) in [(left, &from_left), (right, &from_right)] {
            let Some(theirs) = Signature::decode(theirs) else {
                return Err(CollectiveError::BadSignature { rank, peer });
            };
            if theirs != sig {
                return Err(CollectiveError::Mismatch {
                    rank,
                    peer,
                    ours: Box::new(sig),
                    theirs: Box::new(theirs),
                });
            }
        }
        Ok(())
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root < self.size() {
            Ok(())
        } else {
            Err(CollectiveError::BadRoot {
                rank: self.rank(),
                root,
                size: self.size(),
            })
        }
    }

    fn check_len(&self, what: &'static str, got: usize, expected: usize) -> Result<()> {
        if got == expected {
            Ok(())
        } else {
            Err(CollectiveError::BadLength {
                rank: self.rank(),
                what,
                got,
                expected,
            })
        }
    }

    fn check_counts(&self, counts: &[usize]) -> Result<Blocks> {
        if counts.len() != self.size() {
            return Err(CollectiveError::BadCounts {
                rank: self.rank(),
                got: counts.len(),
                size: self.size(),
            });
        }
        Ok(Blocks::from_counts(counts))
    }

    fn sig<E: Element>(
        &self,
        c: Collective,
        op: Option<ReduceOp>,
        algorithm: &'static str,
        count: usize,
    ) -> Signature {
        Signature {
            collective: c,
            dtype: Some(E::DTYPE),
            op,
            algorithm,
            root: None,
            count: count as u64,
            layout: 0,
            seq: 0,
        }
    }

    /// `counts`' blocks, or `p` even blocks of `total` elements.
    fn blocks(&self, counts: Option<&[usize]>, total: usize) -> Result<Blocks> {
        match counts {
            Some(counts) => self.check_counts(counts),
            None => Ok(Blocks::even(total, self.size())),
        }
    }

    // ---- allreduce ----

    /// Every rank's `buf` ends with the reduction over all ranks. In place,
    /// unless [`Opts::send`] gives the input (then `buf.len() == send.len()`).
    pub fn allreduce<E: Element>(
        &self,
        buf: &mut [E],
        op: ReduceOp,
        opts: Opts<'_, E, Allreduce>,
    ) -> Result<()> {
        if let Some(send) = opts.send {
            self.check_len("allreduce receive buffer", buf.len(), send.len())?;
        }
        let algo = opts.algorithm.unwrap_or(self.config.allreduce);
        self.allreduce_impl(opts.send, buf, op, algo)
    }

    fn allreduce_impl<E: Element>(
        &self,
        own: Option<&[E]>,
        buf: &mut [E],
        op: ReduceOp,
        algo: AllreduceAlgo,
    ) -> Result<()> {
        let p = self.size();
        let algo = match algo {
            AllreduceAlgo::Auto => self.config.tuning.allreduce(std::mem::size_of_val(buf), p),
            a => a,
        };
        self.begin(|| self.sig::<E>(Collective::Allreduce, Some(op), algo.name(), buf.len()))?;
        if p == 1 || buf.is_empty() {
            if let Some(a) = own {
                buf.copy_from_slice(a);
            }
            return Ok(());
        }
        let ctx = self.ctx(Collective::Allreduce);
        let scratch = &mut self.scratch.borrow_mut();
        match algo {
            AllreduceAlgo::RecursiveDoubling | AllreduceAlgo::Auto => {
                allreduce_recursive_doubling::allreduce(ctx, own, buf, op, scratch)?
            }
            AllreduceAlgo::Ring => allreduce_ring::allreduce(ctx, own, buf, op, scratch)?,
            AllreduceAlgo::Rabenseifner => {
                allreduce_rabenseifner::allreduce(ctx, own, buf, op, scratch)?
            }
        }
        if op == ReduceOp::Avg {
            E::divide(buf, p);
        }
        Ok(())
    }

    // ---- reduce ----

    /// The root's `buf` ends with the reduction over all ranks. In place, the
    /// other ranks' `buf` contents are unspecified afterwards (they carry
    /// partial results). With [`Opts::send`], `send` is left untouched and
    /// `buf` is written at the root only (`buf.len() == send.len()` there;
    /// other ranks may pass an empty slice).
    pub fn reduce<E: Element>(
        &self,
        buf: &mut [E],
        op: ReduceOp,
        opts: Opts<'_, E, Reduce>,
    ) -> Result<()> {
        let (root, algo) = (opts.root, opts.algorithm.unwrap_or(self.config.reduce));
        let Some(send) = opts.send else {
            return self.reduce_impl(None, buf, op, root, algo);
        };
        self.check_root(root)?;
        if self.rank() == root {
            self.check_len("reduce receive buffer", buf.len(), send.len())?;
            return self.reduce_impl(Some(send), buf, op, root, algo);
        }
        let mut staging = self.staging.borrow_mut();
        let acc = staging.get::<E>(send.len());
        self.reduce_impl(Some(send), acc, op, root, algo)
    }

    fn reduce_impl<E: Element>(
        &self,
        own: Option<&[E]>,
        buf: &mut [E],
        op: ReduceOp,
        root: usize,
        algo: ReduceAlgo,
    ) -> Result<()> {
        self.check_root(root)?;
        let p = self.size();
        let algo = match algo {
            ReduceAlgo::Auto => self.config.tuning.reduce(std::mem::size_of_val(buf), p),
            a => a,
        };
        self.begin(|| Signature {
            root: Some(root),
            ..self.sig::<E>(Collective::Reduce, Some(op), algo.name(), buf.len())
        })?;
        if buf.is_empty() {
            return Ok(());
        }
        let ctx = self.ctx(Collective::Reduce);
        let scratch = &mut self.scratch.borrow_mut();
        match algo {
            ReduceAlgo::Binomial | ReduceAlgo::Auto => {
                reduce_binomial::reduce(ctx, own, buf, op, root, scratch)?
            }
            ReduceAlgo::ReduceScatterGather => {
                reduce_scatter_gather::reduce(ctx, own, buf, op, root, scratch)?
            }
        }
        if op == ReduceOp::Avg && self.rank() == root {
            E::divide(buf, p);
        }
        Ok(())
    }

    // ---- allgather ----

    /// Every rank's block, in rank order, on every rank. Rank `i`'s block has
    /// `counts[i]` elements with [`Opts::counts`]; without, blocks are even.
    /// With [`Opts::send`], `send` is this rank's block and `buf` receives
    /// all of them (`p * send.len()` elements for even blocks). In place,
    /// this rank's block of `buf` is already where it belongs; even blocks
    /// then split `buf` as evenly as they can, the first `buf.len() % p`
    /// one element longer.
    pub fn allgather<E: Element>(&self, buf: &mut [E], opts: Opts<'_, E, Allgather>) -> Result<()> {
        let total = opts.send.map_or(buf.len(), |s| s.len() * self.size());
        let blocks = self.blocks(opts.counts, total)?;
        match opts.send {
            Some(send) => {
                let mine = blocks.count(self.rank());
                self.check_len("allgather send buffer", send.len(), mine)?;
                self.check_len("allgather receive buffer", buf.len(), blocks.total())?;
            }
            None => self.check_len("allgather buffer", buf.len(), blocks.total())?,
        }
        let algo = opts.algorithm.unwrap_or(self.config.allgather);
        self.allgather_blocks(opts.send, buf, &blocks, algo)
    }

    fn allgather_blocks<E: Element>(
        &self,
        own: Option<&[E]>,
        buf: &mut [E],
        blocks: &Blocks,
        algo: AllgatherAlgo,
    ) -> Result<()> {
        let p = self.size();
        let algo = match algo {
            AllgatherAlgo::Auto => self.config.tuning.allgather(std::mem::size_of_val(buf), p),
            a => a,
        };
        self.begin(|| Signature {
            layout: layout_hash(blocks.counts()),
            ..self.sig::<E>(Collective::Allgather, None, algo.name(), buf.len())
        })?;
        let ctx = self.ctx(Collective::Allgather);
        // Ring sends this rank's block straight from `own`; the others start
        // from a buffer with it in place.
        let in_place = |buf: &mut [E]| {
            if let Some(a) = own {
                buf[blocks.range(self.rank())].copy_from_slice(a);
            }
        };
        match algo {
            AllgatherAlgo::Ring => allgather_ring::allgather(ctx, own, buf, blocks)?,
            AllgatherAlgo::Bruck => {
                in_place(buf);
                allgather_bruck::allgather(ctx, buf, blocks, &mut self.scratch.borrow_mut())?
            }
            AllgatherAlgo::RecursiveDoubling | AllgatherAlgo::Auto => {
                in_place(buf);
                allgather_recursive_doubling::allgather(ctx, buf, blocks)?
            }
        }
        Ok(())
    }

    // ---- broadcast ----

    /// The root's `buf` on every rank.
    pub fn broadcast<E: Element>(&self, buf: &mut [E], opts: Opts<'_, E, Broadcast>) -> Result<()> {
        let root = opts.root;
        self.check_root(root)?;
        let algo = match opts.algorithm.unwrap_or(self.config.broadcast) {
            BroadcastAlgo::Auto => self
                .config
                .tuning
                .broadcast(std::mem::size_of_val(buf), self.size()),
            a => a,
        };
        self.begin(|| Signature {
            root: Some(root),
            ..self.sig::<E>(Collective::Broadcast, None, algo.name(), buf.len())
        })?;
        let ctx = self.ctx(Collective::Broadcast);
        match algo {
            BroadcastAlgo::Binomial | BroadcastAlgo::Auto => {
                broadcast_binomial::broadcast(ctx, buf, root)?
            }
            BroadcastAlgo::ScatterAllgather => {
                broadcast_scatter_allgather::broadcast(ctx, buf, root)?
            }
        }
        Ok(())
    }

    // ---- reduce-scatter ----

    /// Rank `i` ends with block `i` of the reduction over all ranks. Block
    /// `i` has `counts[i]` elements with [`Opts::counts`]; without, blocks
    /// are even. With [`Opts::send`], `send` holds every block and `buf` is
    /// this rank's block only (`send.len() == p * buf.len()` for even
    /// blocks). In place, `buf` holds every block; afterwards this rank's
    /// block holds its result and the rest of `buf` partial sums. Even
    /// blocks then split `buf` as evenly as they can, the first
    /// `buf.len() % p` one element longer.
    pub fn reduce_scatter<E: Element>(
        &self,
        buf: &mut [E],
        op: ReduceOp,
        opts: Opts<'_, E, ReduceScatter>,
    ) -> Result<()> {
        let total = buf.len() * if opts.send.is_some() { self.size() } else { 1 };
        let blocks = self.blocks(opts.counts, total)?;
        let Some(send) = opts.send else {
            self.check_len("reduce_scatter buffer", buf.len(), blocks.total())?;
            return self.reduce_scatter_blocks(None, buf, &blocks, op);
        };
        self.check_len("reduce_scatter send buffer", send.len(), blocks.total())?;
        let mine = blocks.count(self.rank());
        self.check_len("reduce_scatter receive buffer", buf.len(), mine)?;
        let mut staging = self.staging.borrow_mut();
        let work = staging.get::<E>(send.len());
        self.reduce_scatter_blocks(Some(send), work, &blocks, op)?;
        buf.copy_from_slice(&work[blocks.range(self.rank())]);
        Ok(())
    }

    fn reduce_scatter_blocks<E: Element>(
        &self,
        own: Option<&[E]>,
        buf: &mut [E],
        blocks: &Blocks,
        op: ReduceOp,
    ) -> Result<()> {
        let p = self.size();
        self.begin(|| Signature {
            layout: layout_hash(blocks.counts()),
            ..self.sig::<E>(Collective::ReduceScatter, Some(op), "ring", buf.len())
        })?;
        let ctx = self.ctx(Collective::ReduceScatter);
        reduce_scatter_ring::reduce_scatter(
            ctx,
            own,
            buf,
            blocks,
            op,
            &mut self.scratch.borrow_mut(),
        )?;
        if op == ReduceOp::Avg {
            E::divide(&mut buf[blocks.range(self.rank())], p);
        }
        Ok(())
    }

    // ---- gather / scatter ----

    /// Every rank's `send`, in rank order, in the root's `recv` (other ranks
    /// may pass an empty one). Rank `i` sends `counts[i]` elements with
    /// [`Opts::counts`]; without, every rank sends as many
    /// (`recv.len() == p * send.len()`).
    pub fn gather<E: Element>(
        &self,
        send: &[E],
        recv: &mut [E],
        opts: Opts<'_, E, Gather>,
    ) -> Result<()> {
        let blocks = self.blocks(opts.counts, send.len() * self.size())?;
        let (root, rank) = (opts.root, self.rank());
        self.check_root(root)?;
        self.check_len("gather send buffer", send.len(), blocks.count(rank))?;
        if rank == root {
            self.check_len("gather receive buffer", recv.len(), blocks.total())?;
        }
        self.begin(|| Signature {
            root: Some(root),
            layout: layout_hash(blocks.counts()),
            ..self.sig::<E>(Collective::Gather, None, "linear", blocks.total())
        })?;
        let ctx = self.ctx(Collective::Gather);
        if rank == root {
            recv[blocks.range(rank)].copy_from_slice(send);
            gather_linear::collect(ctx, recv, &blocks)?;
        } else {
            gather_linear::send_block(ctx, send, root)?;
        }
        Ok(())
    }

    /// Rank `i` gets block `i` of the root's `send` (other ranks may pass an
    /// empty one). Block `i` has `counts[i]` elements with [`Opts::counts`];
    /// without, blocks are even (`send.len() == p * recv.len()`).
    pub fn scatter<E: Element>(
        &self,
        send: &[E],
        recv: &mut [E],
        opts: Opts<'_, E, Scatter>,
    ) -> Result<()> {
        let blocks = self.blocks(opts.counts, recv.len() * self.size())?;
        let (root, rank) = (opts.root, self.rank());
        self.check_root(root)?;
        self.check_len("scatter receive buffer", recv.len(), blocks.count(rank))?;
        if rank == root {
            self.check_len("scatter send buffer", send.len(), blocks.total())?;
        }
        self.begin(|| Signature {
            root: Some(root),
            layout: layout_hash(blocks.counts()),
            ..self.sig::<E>(Collective::Scatter, None, "linear", blocks.total())
        })?;
        let ctx = self.ctx(Collective::Scatter);
        if rank == root {
            recv.copy_from_slice(&send[blocks.range(rank)]);
            scatter_linear::distribute(ctx, send, &blocks)?;
        } else {
            scatter_linear::receive_block(ctx, recv, root)?;
        }
        Ok(())
    }

    pub fn barrier(&self) -> Result<()> {
        self.begin(|| Signature {
            collective: Collective::Barrier,
            dtype: None,
            op: None,
            algorithm: "dissemination",
            root: None,
            count: 0,
            layout: 0,
            seq: 0,
        })?;
        barrier_dissemination::barrier(self.ctx(Collective::Barrier))?;
        Ok(())
    }
}
