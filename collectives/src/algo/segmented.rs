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
    let Step {
        to,
        out,
        from,
        acc,
        own,
        agreed_len,
    } = step;
    let send_len = if to.is_some() { out.len() } else { 0 };
    let recv_len = if from.is_some() { acc.len() } else { 0 };
    debug_assert!(send_len <= agreed_len && recv_len <= agreed_len);
    let seg_elems = (ctx.segment_bytes / std::mem::size_of::<E>()).max(1);
    let nseg = agreed_len.div_ceil(seg_elems).max(1);
    let out_whole = 0..send_len;
    let acc_whole = 0..recv_len;
    let out_range = |j: usize| part(&out_whole, nseg, j);
    let acc_range = |j: usize| part(&acc_whole, nseg, j);
    let in_buf = |r: Range<usize>| acc.start + r.start..acc.start + r.end;

    if let (Some(peer), None) = (to, from) {
        // Nothing to reduce here: post every segment at once, so the receiver
        // never waits for this rank to come back and post the next one.
        let whole: &[E] = match &out {
            Source::Slice(s) => s,
            Source::Buf(r) => &buf[r.clone()],
            Source::Nothing => &[],
        };
        if nseg == 1 {
            return ctx.transport.send(peer, ctx.tag, bytes(whole));
        }
        let sends: Vec<Outgoing<'_>> = (0..nseg)
            .map(|j| Outgoing {
                peer,
                tag: ctx.tag,
                data: bytes(&whole[out_range(j)]),
            })
            .collect();
        return ctx.transport.exchange(&sends, &mut [], None);
    }

    // While this rank's contribution is still in the caller's input, segments
    // arrive straight into their final place and are reduced there: no
    // staging copy, and the destination is already in cache when written.
    let direct = own.is_some();
    let seg_cap = agreed_len.div_ceil(nseg);
    let tmp = scratch.get::<E>(if direct { 0 } else { 2 * seg_cap });
    let (tmp_a, tmp_b) = tmp.split_at_mut(if direct { 0 } else { seg_cap });
    let mut tmps = [tmp_a, tmp_b];

    for j in 0..=nseg {
        let sending = if j < nseg { out_range(j) } else { 0..0 };
        let arriving = if j < nseg && from.is_some() {
            acc_range(j)
        } else {
            0..0
        };
        let arrived = if j > 0 { acc_range(j - 1) } else { 0..0 };
        let send_in_buf = match &out {
            Source::Buf(r) => r.start + sending.start..r.start + sending.end,
            _ => 0..0,
        };
        let arriving_in_buf = if direct {
            in_buf(arriving.clone())
        } else {
            0..0
        };
        let [send_view, landing, reduced] =
            disjoint_mut(buf, [send_in_buf, arriving_in_buf, in_buf(arrived.clone())]);
        let send_view: &[E] = match &out {
            Source::Slice(s) => &s[sending],
            Source::Buf(_) => send_view,
            Source::Nothing => &[],
        };
        let [ta, tb] = &mut tmps;
        let (incoming, previous) = if j % 2 == 0 { (ta, tb) } else { (tb, ta) };
        let mut reduce_previous = || {
            if j == 0 || from.is_none() {
                return;
            }
            match own {
                // IEEE addition and multiplication commute bitwise, so
                // `incoming op own` equals the `own op incoming` of the peer.
                Some(a) => E::combine(op, reduced, &a[arrived.clone()]),
                None => E::combine(op, reduced, &previous[..arrived.len()]),
            }
        };
        if j == nseg {
            reduce_previous();
            break;
        }
        let landing: &mut [E] = if direct {
            landing
        } else {
            &mut incoming[..arriving.len()]
        };
        let send = to.map(|peer| Outgoing {
            peer,
            tag: ctx.tag,
            data: bytes(send_view),
        });
        let mut recv = from.map(|peer| Incoming {
            peer,
            tag: ctx.tag,
            data: bytes_mut(landing),
        });
        // Segment 0 has nothing before it to reduce.
        let work: Option<&mut dyn FnMut()> = if j > 0 && from.is_some() {
            Some(&mut reduce_previous)
        } else {
            None
        };
        ctx.transport
            .exchange(send.as_slice(), recv.as_mut_slice(), work)?;
    }
    Ok(())
}
