//! Allgather around a ring: p−1 steps, each forwarding the block received in
//! the step before, straight into its final place. Time (p−1)α + (p−1)/p·nβ,
//! bandwidth-optimal for any p.

use super::blocks::{disjoint_mut, Blocks};
use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::{Incoming, Outgoing, TransportError};

/// Copies of this rank's block shorter than this are done before the ring
/// starts rather than overlapped with its first step.
const OVERLAP_MIN_BYTES: usize = 16 << 10;

/// Afterwards `buf` holds every block. This rank's block is `own` if given
/// (sent from there, and copied into place while the first step is in
/// flight), else already in place in `buf`.
pub fn allgather<E: Element>(
    ctx: Ctx<'_>,
    own: Option<&[E]>,
    buf: &mut [E],
    blocks: &Blocks,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if let Some(a) = own {
        // A small copy costs less than giving up the blocking fast path.
        if p == 1 || blocks.total() == 0 || std::mem::size_of_val(a) < OVERLAP_MIN_BYTES {
            buf[blocks.range(rank)].copy_from_slice(a);
            return forward(ctx, buf, blocks, 0);
        }
        let [mine, incoming] =
            disjoint_mut(buf, [blocks.range(rank), blocks.range((rank + p - 1) % p)]);
        ctx.transport.exchange(
            &[Outgoing {
                peer: (rank + 1) % p,
                tag: ctx.tag,
                data: bytes(a),
            }],
            &mut [Incoming {
                peer: (rank + p - 1) % p,
                tag: ctx.tag,
                data: bytes_mut(incoming),
            }],
            Some(&mut || mine.copy_from_slice(a)),
        )?;
        return forward(ctx, buf, blocks, 1);
    }
    forward(ctx, buf, blocks, 0)
}

/// Steps `first..p-1` of the ring.
fn forward<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
    first: usize,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if p == 1 || blocks.total() == 0 {
        return Ok(());
    }
    let right = (rank + 1) % p;
    let left = (rank + p - 1) % p;
    for step in first..p - 1 {
        let send_block = (rank + p - step) % p;
        let recv_block = (rank + 2 * p - step - 1) % p;
        let [send, recv] = disjoint_mut(buf, [blocks.range(send_block), blocks.range(recv_block)]);
        ctx.transport
            .sendrecv(right, bytes(&*send), left, bytes_mut(recv), ctx.tag)?;
    }
    Ok(())
}
