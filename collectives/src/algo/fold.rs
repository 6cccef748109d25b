//! Folding a non-power-of-two rank count onto the largest power of two below
//! it, for the allreduce algorithms that need one. Costs one extra message of
//! the whole vector before and after on the first `2 * rem` ranks.

use super::blocks::Fold;
use super::segmented::{exchange_reduce, Source, Step};
use super::{Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::TransportError;

/// Even ranks below `2 * rem` hand their vector to the next odd rank, which
/// reduces it into its own. Returns this rank's active index, if it has one,
/// and where its contribution now lives (`None`: in `buf`).
pub fn fold_in<'a, E: Element>(
    ctx: Ctx<'_>,
    fold: Fold,
    own: Option<&'a [E]>,
    buf: &mut [E],
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(Option<usize>, Option<&'a [E]>), TransportError> {
    let rank = ctx.rank();
    let n = buf.len();
    if rank < 2 * fold.rem {
        if rank.is_multiple_of(2) {
            let out = own.map_or(Source::Buf(0..n), Source::Slice);
            let step = Step {
                to: Some(rank + 1),
                out,
                from: None,
                acc: 0..0,
                own: None,
                agreed_len: n,
            };
            exchange_reduce(ctx, step, buf, op, scratch)?;
            return Ok((None, own));
        }
        exchange_reduce(
            ctx,
            Step {
                to: None,
                out: Source::Nothing,
                from: Some(rank - 1),
                acc: 0..n,
                own,
                agreed_len: n,
            },
            buf,
            op,
            scratch,
        )?;
        return Ok((fold.active(rank), None));
    }
    Ok((fold.active(rank), own))
}

/// Hands the finished vector back to the ranks that sat out.
pub fn fold_out<E: Element>(ctx: Ctx<'_>, fold: Fold, buf: &mut [E]) -> Result<(), TransportError> {
    let rank = ctx.rank();
    if rank < 2 * fold.rem {
        if rank.is_multiple_of(2) {
            ctx.transport.recv(rank + 1, ctx.tag, bytes_mut(buf))?;
        } else {
            ctx.transport.send(rank - 1, ctx.tag, bytes(buf))?;
        }
    }
    Ok(())
}
