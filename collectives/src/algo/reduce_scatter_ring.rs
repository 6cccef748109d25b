//! Reduce-scatter around a ring: p−1 steps; in each a rank passes one block to
//! its right neighbour and reduces the block arriving from its left, in
//! segments (see [`super::segmented`]). Time (p−1)α + (p−1)/p·n(β + γ).

use super::blocks::Blocks;
use super::segmented::{exchange_reduce, Source, Step};
use super::{Ctx, Scratch};
use crate::element::Element;
use crate::op::ReduceOp;
use crate::transport::TransportError;

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
    for step in 0..p - 1 {
        let send_block = blocks.range((rank + 2 * p - step - 1) % p);
        let recv_block = blocks.range((rank + 2 * p - step - 2) % p);
        // Each block is reduced once on each rank, so its own contribution is
        // always read from `own`; what is sent after step 0 was reduced here.
        let out = match own {
            Some(a) if step == 0 => Source::Slice(&a[send_block]),
            _ => Source::Buf(send_block),
        };
        let step = Step {
            to: Some((rank + 1) % p),
            out,
            from: Some((rank + p - 1) % p),
            own: own.map(|a| &a[recv_block.clone()]),
            acc: recv_block,
            // Neighbours' block sizes differ when blocks are uneven.
            agreed_len: blocks.max_count(),
        };
        exchange_reduce(ctx, step, buf, op, scratch)?;
    }
    Ok(())
}
