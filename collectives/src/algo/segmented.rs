//! A pairwise step cut into segments: segment j travels while segment j−1 is
//! reduced, so the arriving data is reduced while still in cache instead of
//! being written to memory whole and read back.

use super::blocks::{part, split_ro_rw};
use super::{reduce_into, Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::{Incoming, Outgoing, TransportError};
use std::ops::Range;

/// What a step sends: a slice of its own, or a range of the working buffer.
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

/// Sends `out` to `to` while reducing what `from` sends into `buf[acc]`.
/// This rank's contribution to `buf[acc]` is `own` if given (aligned with
/// `acc`), else what `buf[acc]` holds. Both peers derive the same segment
/// count from the larger of the two message lengths, which they agree on.
#[allow(clippy::too_many_arguments)]
pub fn exchange_reduce<E: Element>(
    ctx: Ctx<'_>,
    to: Option<usize>,
    out: Source<'_, E>,
    from: Option<usize>,
    buf: &mut [E],
    acc: Range<usize>,
    own: Option<&[E]>,
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let send_len = if to.is_some() { out.len() } else { 0 };
    let recv_len = if from.is_some() { acc.len() } else { 0 };
    let longest = send_len.max(recv_len);
    let seg_elems = (ctx.segment_bytes / std::mem::size_of::<E>()).max(1);
    let nseg = longest.div_ceil(seg_elems).max(1);
    let seg_cap = longest.div_ceil(nseg);
    let tmp = scratch.get::<E>(2 * seg_cap);
    let (tmp_a, tmp_b) = tmp.split_at_mut(seg_cap);
    let mut tmps = [tmp_a, tmp_b];
    let out_whole = 0..send_len;
    let acc_local = 0..recv_len;

    if let (Some(peer), None) = (to, from) {
        // Nothing to reduce here: post every segment at once, so the receiver
        // never waits for this rank to come back and post the next one.
        let whole: &[E] = match &out {
            Source::Slice(s) => s,
            Source::Buf(r) => &buf[r.clone()],
            Source::Nothing => &[],
        };
        let sends: Vec<Outgoing<'_>> = (0..nseg)
            .map(|j| Outgoing {
                peer,
                tag: ctx.tag,
                data: bytes(&whole[part(&out_whole, nseg, j)]),
            })
            .collect();
        return ctx.transport.exchange(&sends, &mut [], &mut || {});
    }

    for j in 0..=nseg {
        let sending = if j < nseg {
            part(&out_whole, nseg, j)
        } else {
            0..0
        };
        let arrived = if j > 0 {
            part(&acc_local, nseg, j - 1)
        } else {
            0..0
        };
        let acc_abs = acc.start + arrived.start..acc.start + arrived.end;
        let (send_view, acc_view): (&[E], &mut [E]) = match &out {
            Source::Slice(s) => (&s[sending.clone()], &mut buf[acc_abs]),
            Source::Buf(r) => {
                split_ro_rw(buf, r.start + sending.start..r.start + sending.end, acc_abs)
            }
            Source::Nothing => (&[], &mut buf[acc_abs]),
        };
        let own_part = own.map(|a| &a[arrived.clone()]);
        let [ta, tb] = &mut tmps;
        let (incoming, previous) = if j % 2 == 0 { (ta, tb) } else { (tb, ta) };
        let mut reduce_previous = || {
            if j > 0 && from.is_some() {
                reduce_into(op, acc_view, own_part, &previous[..arrived.len()]);
            }
        };
        if j == nseg {
            reduce_previous();
            break;
        }
        let n_in = if from.is_some() {
            part(&acc_local, nseg, j).len()
        } else {
            0
        };
        let send = to.map(|peer| Outgoing {
            peer,
            tag: ctx.tag,
            data: bytes(send_view),
        });
        let mut recv = from.map(|peer| Incoming {
            peer,
            tag: ctx.tag,
            data: bytes_mut(&mut incoming[..n_in]),
        });
        ctx.transport
            .exchange(send.as_slice(), recv.as_mut_slice(), &mut reduce_previous)?;
    }
    Ok(())
}
