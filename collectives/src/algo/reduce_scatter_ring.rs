//! Reduce-scatter around a ring: p−1 steps; in each a rank passes one block to
//! its right neighbour and reduces the block arriving from its left. Blocks go
//! in segments so that a segment's reduction runs while the next one travels,
//! and the arriving segment is still in cache when it is reduced.
//! Time (p−1)α + (p−1)/p·n(β + γ).

use super::blocks::{part, split_ro_rw, Blocks};
use super::{reduce_into, Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::{Incoming, Outgoing, TransportError};

/// Afterwards block `rank` of `buf` holds the reduction of every rank's block
/// `rank`; other blocks hold partial results. This rank's contribution is
/// `own` if given (then read where first needed, never copied), else `buf`.
pub fn reduce_scatter<E: Element>(
    ctx: Ctx<'_>,
    own: Option<&[E]>,
    buf: &mut [E],
    blocks: &Blocks,
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if p == 1 || blocks.total() == 0 {
        if let Some(a) = own {
            buf.copy_from_slice(a);
        }
        return Ok(());
    }
    let right = (rank + 1) % p;
    let left = (rank + p - 1) % p;
    // Every rank must cut every block into the same number of segments, or
    // sends and receives would not pair up: derive it from the largest block.
    let seg_elems = (ctx.segment_bytes / std::mem::size_of::<E>()).max(1);
    let nseg = blocks.max_count().div_ceil(seg_elems).max(1);
    let seg_cap = blocks.max_count().div_ceil(nseg);
    let tmp = scratch.get::<E>(2 * seg_cap);
    let (tmp_a, tmp_b) = tmp.split_at_mut(seg_cap);
    let mut tmps = [tmp_a, tmp_b];

    for step in 0..p - 1 {
        let send_block = blocks.range((rank + 2 * p - step - 1) % p);
        let recv_block = blocks.range((rank + 2 * p - step - 2) % p);
        // Each block is reduced once on each rank, so its own contribution is
        // always read from `own`; what is sent after step 0 was reduced here.
        let send_from_own = if step == 0 { own } else { None };
        for j in 0..=nseg {
            // Segment j travels while segment j−1 is reduced.
            let outgoing = if j < nseg {
                part(&send_block, nseg, j)
            } else {
                0..0
            };
            let arrived = if j > 0 {
                part(&recv_block, nseg, j - 1)
            } else {
                0..0
            };
            let (send_view, acc) = match send_from_own {
                Some(a) => (&a[outgoing], &mut buf[arrived.clone()]),
                None => split_ro_rw(buf, outgoing, arrived.clone()),
            };
            let own_part = own.map(|a| &a[arrived.clone()]);
            let [ta, tb] = &mut tmps;
            let (incoming, previous) = if j % 2 == 0 { (ta, tb) } else { (tb, ta) };
            let mut reduce_previous = || {
                if j > 0 {
                    reduce_into(op, acc, own_part, &previous[..arrived.len()]);
                }
            };
            if j < nseg {
                let n_in = part(&recv_block, nseg, j).len();
                ctx.transport.exchange(
                    &[Outgoing {
                        peer: right,
                        tag: ctx.tag,
                        data: bytes(send_view),
                    }],
                    &mut [Incoming {
                        peer: left,
                        tag: ctx.tag,
                        data: bytes_mut(&mut incoming[..n_in]),
                    }],
                    &mut reduce_previous,
                )?;
            } else {
                reduce_previous();
            }
        }
    }
    Ok(())
}
