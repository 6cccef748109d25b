//! Reduce along a binomial tree: log2(p) levels, each rank receiving from its
//! children and sending once to its parent, in segments reduced as they
//! arrive. Time ⌈log p⌉(α + nβ + nγ).

use super::segmented::{exchange_reduce, Source, Step};
use super::{Ctx, Scratch};
use crate::element::Element;
use crate::op::ReduceOp;
use crate::transport::TransportError;

/// Afterwards the root's `acc` holds the reduction; other ranks' `acc` holds
/// partial results or is untouched. This rank's contribution is `own` if
/// given (a leaf then sends it without copying), else `acc`.
pub fn reduce<E: Element>(
    ctx: Ctx<'_>,
    mut own: Option<&[E]>,
    acc: &mut [E],
    op: ReduceOp,
    root: usize,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let me = (ctx.rank() + p - root) % p;
    let real = |v: usize| (v + root) % p;
    let n = acc.len();
    let mut mask = 1;
    while mask < p {
        if me & mask != 0 {
            let out = own.map_or(Source::Buf(0..n), Source::Slice);
            return exchange_reduce(
                ctx,
                Step {
                    to: Some(real(me - mask)),
                    out,
                    from: None,
                    acc: 0..0,
                    own: None,
                    agreed_len: n,
                },
                acc,
                op,
                scratch,
            );
        }
        if me + mask < p {
            let child = Some(real(me + mask));
            exchange_reduce(
                ctx,
                Step {
                    to: None,
                    out: Source::Nothing,
                    from: child,
                    acc: 0..n,
                    own: own.take(),
                    agreed_len: n,
                },
                acc,
                op,
                scratch,
            )?;
        }
        mask <<= 1;
    }
    if let Some(a) = own {
        acc.copy_from_slice(a);
    }
    Ok(())
}
