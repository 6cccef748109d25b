//! Gather with every rank sending straight to the root, which posts all
//! receives at once. The root receives (p−1)/p·n bytes: the minimum.

use super::blocks::Blocks;
use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::{Incoming, TransportError};

/// A non-root rank's part: send its block to the root.
pub fn send_block<E: Element>(ctx: Ctx<'_>, mine: &[E], root: usize) -> Result<(), TransportError> {
    if mine.is_empty() {
        return Ok(());
    }
    ctx.transport.send(root, ctx.tag, bytes(mine))
}

/// The root's part: its own block is already in place in `buf`.
pub fn collect<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
) -> Result<(), TransportError> {
    let root = ctx.rank();
    let mut recvs = Vec::with_capacity(ctx.size().saturating_sub(1));
    let mut rest = &mut buf[..];
    let mut consumed = 0;
    for peer in 0..ctx.size() {
        let r = blocks.range(peer);
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - consumed);
        let (this, tail) = tail.split_at_mut(r.len());
        rest = tail;
        consumed = r.end;
        if peer != root && !this.is_empty() {
            recvs.push(Incoming {
                peer,
                tag: ctx.tag,
                data: bytes_mut(this),
            });
        }
    }
    ctx.transport.exchange(&[], &mut recvs, None)
}

/// Every rank's block of `buf` is in place; afterwards the root's holds all.
pub fn gather_in_place<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
    root: usize,
) -> Result<(), TransportError> {
    if ctx.rank() == root {
        collect(ctx, buf, blocks)
    } else {
        send_block(ctx, &buf[blocks.range(ctx.rank())], root)
    }
}
