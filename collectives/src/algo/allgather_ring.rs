//! Allgather around a ring: p−1 steps, each forwarding the block received in
//! the step before, straight into its final place. Time (p−1)α + (p−1)/p·nβ,
//! bandwidth-optimal for any p.

use super::blocks::{split_ro_rw, Blocks};
use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::TransportError;

/// `buf` holds this rank's block in place; afterwards it holds every block.
pub fn allgather<E: Element>(ctx: Ctx<'_>, buf: &mut [E], blocks: &Blocks) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if p == 1 || blocks.total() == 0 {
        return Ok(());
    }
    let right = (rank + 1) % p;
    let left = (rank + p - 1) % p;
    for step in 0..p - 1 {
        let send_block = (rank + p - step) % p;
        let recv_block = (rank + 2 * p - step - 1) % p;
        let (send, recv) = split_ro_rw(buf, blocks.range(send_block), blocks.range(recv_block));
        ctx.transport
            .sendrecv(right, bytes(send), left, bytes_mut(recv), ctx.tag)?;
    }
    Ok(())
}
