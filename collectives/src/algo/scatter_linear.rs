//! Scatter with the root sending every block at once. The root sends
//! (p−1)/p·n bytes: the minimum.

use super::blocks::Blocks;
use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::{Outgoing, TransportError};

/// A non-root rank's part: receive its block from the root.
pub fn receive_block<E: Element>(
    ctx: Ctx<'_>,
    mine: &mut [E],
    root: usize,
) -> Result<(), TransportError> {
    if mine.is_empty() {
        return Ok(());
    }
    ctx.transport.recv(root, ctx.tag, bytes_mut(mine))
}

/// The root's part: send every other rank its block of `buf`.
pub fn distribute<E: Element>(
    ctx: Ctx<'_>,
    buf: &[E],
    blocks: &Blocks,
) -> Result<(), TransportError> {
    let root = ctx.rank();
    let sends: Vec<Outgoing<'_>> = (0..ctx.size())
        .filter(|&peer| peer != root && blocks.count(peer) > 0)
        .map(|peer| Outgoing {
            peer,
            tag: ctx.tag,
            data: bytes(&buf[blocks.range(peer)]),
        })
        .collect();
    ctx.transport.exchange(&sends, &mut [], None)
}

/// The root's `buf` holds every block; afterwards each rank's block of `buf` holds its part.
pub fn scatter_in_place<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
    root: usize,
) -> Result<(), TransportError> {
    if ctx.rank() == root {
        distribute(ctx, buf, blocks)
    } else {
        receive_block(ctx, &mut buf[blocks.range(ctx.rank())], root)
    }
}
