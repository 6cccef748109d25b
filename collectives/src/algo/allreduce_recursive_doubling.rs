//! Allreduce by recursive doubling: log2(p) rounds, each exchanging the whole
//! vector with the partner at distance 2^k. Time ⌈log p⌉(α + nβ + nγ): the
//! fewest rounds, so the choice for small vectors.

use super::blocks::Fold;
use super::fold::{fold_in, fold_out};
use super::{reduce_into, Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::TransportError;

/// Leaves the reduction in `buf`. This rank's contribution is `own` if
/// given, else `buf`'s contents. Needs p ≥ 2.
pub fn allreduce<E: Element>(
    ctx: Ctx<'_>,
    own: Option<&[E]>,
    buf: &mut [E],
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let fold = Fold::new(ctx.size());
    let tmp = scratch.get::<E>(buf.len());
    let (active, mut own) = fold_in(ctx, fold, own, buf, tmp, op)?;
    if let Some(me) = active {
        let mut mask = 1;
        while mask < fold.pof2 {
            let partner = fold.real(me ^ mask);
            let outgoing = own.unwrap_or(buf);
            ctx.transport
                .sendrecv(partner, bytes(outgoing), partner, bytes_mut(tmp), ctx.tag)?;
            // IEEE addition and multiplication commute bitwise, so both partners
            // hold the same bits after every round.
            reduce_into(op, buf, own.take(), tmp);
            mask <<= 1;
        }
    }
    fold_out(ctx, fold, buf)
}
