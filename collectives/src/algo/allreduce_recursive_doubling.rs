//! Allreduce by recursive doubling: log2(p) rounds, each exchanging the whole
//! vector with the partner at distance 2^k. Time ⌈log p⌉(α + nβ + nγ): the
//! fewest rounds, so the choice for small vectors.

use super::blocks::Fold;
use super::fold::{fold_in, fold_out};
use super::segmented::{exchange_reduce, Source, Step};
use super::{Ctx, Scratch};
use crate::element::Element;
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
    let n = buf.len();
    let (active, mut own) = fold_in(ctx, fold, own, buf, op, scratch)?;
    if let Some(me) = active {
        let mut mask = 1;
        while mask < fold.pof2 {
            let partner = fold.real(me ^ mask);
            let out = own.map_or(Source::Buf(0..n), Source::Slice);
            // Segment j is sent before segment j is reduced, so the partner
            // gets this rank's value; IEEE addition and multiplication commute
            // bitwise, so both partners hold the same bits after every round.
            exchange_reduce(
                ctx,
                Step {
                    to: Some(partner),
                    out,
                    from: Some(partner),
                    acc: 0..n,
                    own: own.take(),
                    agreed_len: n,
                },
                buf,
                op,
                scratch,
            )?;
            mask <<= 1;
        }
    }
    fold_out(ctx, fold, buf)
}
