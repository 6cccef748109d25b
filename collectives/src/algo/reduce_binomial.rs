//! Reduce along a binomial tree: log2(p) levels, each rank receiving from its
//! children and sending once to its parent. Time ⌈log p⌉(α + nβ + nγ).

use super::{reduce_into, Ctx, Scratch};
use crate::element::{bytes, bytes_mut, Element};
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
    let tmp = scratch.get::<E>(acc.len());
    let mut mask = 1;
    while mask < p {
        if me & mask != 0 {
            return ctx.transport.send(real(me - mask), ctx.tag, bytes(own.unwrap_or(acc)));
        }
        if me + mask < p {
            ctx.transport.recv(real(me + mask), ctx.tag, bytes_mut(tmp))?;
            reduce_into(op, acc, own.take(), tmp);
        }
        mask <<= 1;
    }
    if let Some(a) = own {
        acc.copy_from_slice(a);
    }
    Ok(())
}
