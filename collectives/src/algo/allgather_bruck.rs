//! Bruck's allgather: ⌈log2 p⌉ rounds for any p. Blocks are gathered in an
//! order rotated to start at this rank, so every round sends a prefix and
//! appends what arrives; one rotation at the end puts them in place.
//! Time ⌈log p⌉α + (p−1)/p·nβ plus two local copies: for small vectors.

use super::blocks::Blocks;
use super::{Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::TransportError;

pub fn allgather<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if p == 1 || blocks.total() == 0 {
        return Ok(());
    }
    // Offsets of the rotated layout: rotated block i is real block (rank + i) % p.
    let count = |i: usize| blocks.count((rank + i) % p);
    let mut offsets = Vec::with_capacity(p + 1);
    offsets.push(0);
    for i in 0..p {
        offsets.push(offsets[i] + count(i));
    }
    let rotated = scratch.get::<E>(blocks.total());
    rotated[..count(0)].copy_from_slice(&buf[blocks.range(rank)]);

    let mut have = 1;
    while have < p {
        let n = have.min(p - have);
        let to = (rank + p - have) % p;
        let from = (rank + have) % p;
        let (held, rest) = rotated.split_at_mut(offsets[have]);
        ctx.transport.sendrecv(
            to,
            bytes(&held[..offsets[n]]),
            from,
            bytes_mut(&mut rest[..offsets[have + n] - offsets[have]]),
            ctx.tag,
        )?;
        have += n;
    }
    for i in 0..p {
        buf[blocks.range((rank + i) % p)].copy_from_slice(&rotated[offsets[i]..offsets[i + 1]]);
    }
    Ok(())
}
