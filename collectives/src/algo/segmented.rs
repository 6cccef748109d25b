//! A pairwise step cut into segments: segment j travels while segment j−1 is
//! reduced, so arriving data is reduced while still in cache instead of being
//! written to memory whole and read back.

use super::blocks::{disjoint_mut, part};
use super::{Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::{Incoming, Outgoing, TransportError};
use std::ops::Range;

/// What a step sends: a slice of the caller's input, or a range of the working buffer.
#[derive(Clone)]
pub enum Source<'a, E> {
    Slice(&'a [E]),
    Buf(Range<usize>),
    Nothing,
}

impl<E> Source<'_, E> {
    fn len(&self) -> usize {
        match self {
            Source::Slice(s) => s.len(),
            Source::Buf(r) => r.len(),
            Source::Nothing => 0,
        }
    }
}

/// One step: send `out` to `to`; reduce what `from` sends into `buf[acc]`.
pub struct Step<'a, E> {
    pub to: Option<usize>,
    pub out: Source<'a, E>,
    pub from: Option<usize>,
    pub acc: Range<usize>,
    /// This rank's contribution to `buf[acc]`, aligned with it, while it is
    /// still in the caller's input; `None` once `buf[acc]` holds it.
    pub own: Option<&'a [E]>,
    /// Both peers cut their messages into the same number of segments, so
    /// they derive it from a length they agree on, not from their own sizes.
    pub agreed_len: usize,
}

pub fn exchange_reduce<E: Element>(
    ctx: Ctx<'_>,
    step: Step<'_, E>,
    buf: &mut [E],
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let seg = Segments::of(ctx.segment_bytes, &step);
    if let (Some(peer), None) = (step.to, step.from) {
        return send_segments(ctx, peer, &step.out, buf, &seg);
    }

    // While this rank's contribution is still in the caller's input, segments
    // arrive straight into their final place and are reduced there: no
    // staging copy, and the destination is already in cache when written.
    let direct = step.own.is_some();
    let seg_cap = step.agreed_len.div_ceil(seg.n);
    let tmp = scratch.get::<E>(if direct { 0 } else { 2 * seg_cap });
    let (tmp_a, tmp_b) = tmp.split_at_mut(if direct { 0 } else { seg_cap });
    let mut tmps = [tmp_a, tmp_b];
    for j in 0..=seg.n {
        segment_step(ctx, &step, &seg, buf, op, &mut tmps, j)?;
    }
    Ok(())
}

/// How a step cuts its messages: `n` segments of what it sends and of what
/// it receives, positions counted from the start of each.
struct Segments {
    n: usize,
    out: Range<usize>,
    acc: Range<usize>,
    /// Where the received data lies in the working buffer.
    acc_start: usize,
}

impl Segments {
    fn of<E>(segment_bytes: usize, step: &Step<'_, E>) -> Segments {
        let send_len = if step.to.is_some() { step.out.len() } else { 0 };
        let recv_len = if step.from.is_some() {
            step.acc.len()
        } else {
            0
        };
        debug_assert!(send_len <= step.agreed_len && recv_len <= step.agreed_len);
        let seg_elems = (segment_bytes / std::mem::size_of::<E>()).max(1);
        Segments {
            n: step.agreed_len.div_ceil(seg_elems).max(1),
            out: 0..send_len,
            acc: 0..recv_len,
            acc_start: step.acc.start,
        }
    }

    fn out(&self, j: usize) -> Range<usize> {
        part(&self.out, self.n, j)
    }

    fn acc(&self, j: usize) -> Range<usize> {
        part(&self.acc, self.n, j)
    }

    fn in_buf(&self, r: Range<usize>) -> Range<usize> {
        self.acc_start + r.start..self.acc_start + r.end
    }
}

/// Nothing to reduce here: post every segment at once, so the receiver
/// never waits for this rank to come back and post the next one.
fn send_segments<E: Element>(
    ctx: Ctx<'_>,
    peer: usize,
    out: &Source<'_, E>,
    buf: &[E],
    seg: &Segments,
) -> Result<(), TransportError> {
    let whole: &[E] = match out {
        Source::Slice(s) => s,
        Source::Buf(r) => &buf[r.clone()],
        Source::Nothing => &[],
    };
    if seg.n == 1 {
        return ctx.transport.send(peer, ctx.tag, bytes(whole));
    }
    let sends: Vec<Outgoing<'_>> = (0..seg.n)
        .map(|j| Outgoing {
            peer,
            tag: ctx.tag,
            data: bytes(&whole[seg.out(j)]),
        })
        .collect();
    ctx.transport.exchange(&sends, &mut [], None)
}

/// Step `j` of the pipeline: segment `j` travels while segment `j − 1`,
/// which arrived in the step before, is reduced. Step `n` only reduces.
fn segment_step<E: Element>(
    ctx: Ctx<'_>,
    step: &Step<'_, E>,
    seg: &Segments,
    buf: &mut [E],
    op: ReduceOp,
    tmps: &mut [&mut [E]; 2],
    j: usize,
) -> Result<(), TransportError> {
    let Views {
        send,
        landing,
        reduced,
        staged,
        arrived,
    } = views(step, seg, buf, tmps, j);
    let own = step.own;
    let mut reduce_previous = || match own {
        // IEEE addition and multiplication commute bitwise, so
        // `incoming op own` equals the `own op incoming` of the peer.
        Some(a) => E::combine(op, reduced, &a[arrived.clone()]),
        None => E::combine(op, reduced, &staged[..arrived.len()]),
    };
    // Segment 0 has nothing before it to reduce.
    let reduces = j > 0 && step.from.is_some();
    if j == seg.n {
        if reduces {
            reduce_previous();
        }
        return Ok(());
    }
    let send = step.to.map(|peer| Outgoing {
        peer,
        tag: ctx.tag,
        data: bytes(send),
    });
    let mut recv = step.from.map(|peer| Incoming {
        peer,
        tag: ctx.tag,
        data: bytes_mut(landing),
    });
    let work: Option<&mut dyn FnMut()> = if reduces {
        Some(&mut reduce_previous)
    } else {
        None
    };
    ctx.transport
        .exchange(send.as_slice(), recv.as_mut_slice(), work)
}

/// The buffers of one pipeline step, apart so that they can be in flight and
/// reduced at once.
struct Views<'v, E> {
    /// Segment `j` of what is sent.
    send: &'v [E],
    /// Where segment `j` arrives: its final place, or a staging half.
    landing: &'v mut [E],
    /// Segment `j − 1`'s final place, reduced into.
    reduced: &'v mut [E],
    /// The staging half segment `j − 1` arrived in.
    staged: &'v [E],
    /// Segment `j − 1`, counted from the start of what is received.
    arrived: Range<usize>,
}

fn views<'v, E: Element>(
    step: &'v Step<'_, E>,
    seg: &Segments,
    buf: &'v mut [E],
    tmps: &'v mut [&mut [E]; 2],
    j: usize,
) -> Views<'v, E> {
    let direct = step.own.is_some();
    let sending = if j < seg.n { seg.out(j) } else { 0..0 };
    let arriving = if j < seg.n && step.from.is_some() {
        seg.acc(j)
    } else {
        0..0
    };
    let arrived = if j > 0 { seg.acc(j - 1) } else { 0..0 };
    let send_in_buf = match &step.out {
        Source::Buf(r) => r.start + sending.start..r.start + sending.end,
        _ => 0..0,
    };
    let arriving_in_buf = if direct {
        seg.in_buf(arriving.clone())
    } else {
        0..0
    };
    let [send_view, landing, reduced] = disjoint_mut(
        buf,
        [send_in_buf, arriving_in_buf, seg.in_buf(arrived.clone())],
    );
    let send: &[E] = match &step.out {
        Source::Slice(s) => &s[sending],
        Source::Buf(_) => send_view,
        Source::Nothing => &[],
    };
    // The halves alternate: segment j lands in one while j − 1 is reduced
    // from the other.
    let [ta, tb] = tmps;
    let (incoming, previous) = if j.is_multiple_of(2) {
        (ta, tb)
    } else {
        (tb, ta)
    };
    let landing: &mut [E] = if direct {
        landing
    } else {
        &mut incoming[..arriving.len()]
    };
    Views {
        send,
        landing,
        reduced,
        staged: previous,
        arrived,
    }
}
