//! Rabenseifner's allreduce: reduce-scatter by recursive halving, then
//! allgather by recursive doubling. Time 2 log p α + 2(p−1)/p·nβ + (p−1)/p·nγ:
//! ring's bandwidth in log p rounds. Non-power-of-two p is folded first.

use super::blocks::{disjoint_mut, Blocks, Fold};
use super::fold::{fold_in, fold_out};
use super::segmented::{exchange_reduce, Source, Step};
use super::{Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
use crate::op::ReduceOp;
use crate::transport::TransportError;

/// Same contract as the recursive-doubling allreduce.
pub fn allreduce<E: Element>(
    ctx: Ctx<'_>,
    own: Option<&[E]>,
    buf: &mut [E],
    op: ReduceOp,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let fold = Fold::new(ctx.size());
    let (active, mut own) = fold_in(ctx, fold, own, buf, op, scratch)?;
    let Some(me) = active else {
        return fold_out(ctx, fold, buf);
    };
    let blocks = Blocks::even(buf.len(), fold.pof2);

    // Recursive halving: keep the half of the current block range on this
    // rank's side of bit `mask`, send the other half, reduce what arrives.
    let (mut lo, mut hi) = (0, fold.pof2);
    let mut mask = fold.pof2 / 2;
    while mask > 0 {
        let partner = fold.real(me ^ mask);
        let mid = lo + (hi - lo) / 2;
        let (keep, give) = if me & mask == 0 {
            ((lo, mid), (mid, hi))
        } else {
            ((mid, hi), (lo, mid))
        };
        let keep_range = blocks.span(keep.0, keep.1);
        let give_range = blocks.span(give.0, give.1);
        let own_keep = own.map(|a| &a[keep_range.clone()]);
        let agreed_len = keep_range.len().max(give_range.len());
        let out = match own.take() {
            Some(a) => Source::Slice(&a[give_range]),
            None => Source::Buf(give_range),
        };
        exchange_reduce(
            ctx,
            Step {
                to: Some(partner),
                out,
                from: Some(partner),
                acc: keep_range,
                own: own_keep,
                agreed_len,
            },
            buf,
            op,
            scratch,
        )?;
        (lo, hi) = keep;
        mask >>= 1;
    }
    debug_assert_eq!((lo, hi), (me, me + 1));

    // Recursive doubling: swap ranges with the partner until all is whole.
    let mut mask = 1;
    while mask < fold.pof2 {
        let partner_me = me ^ mask;
        let mine = me & !(mask - 1);
        let theirs = partner_me & !(mask - 1);
        let [send, recv] = disjoint_mut(
            buf,
            [
                blocks.span(mine, mine + mask),
                blocks.span(theirs, theirs + mask),
            ],
        );
        let partner = fold.real(partner_me);
        ctx.transport
            .sendrecv(partner, bytes(&*send), partner, bytes_mut(recv), ctx.tag)?;
        mask <<= 1;
    }
    fold_out(ctx, fold, buf)
}
