//! Reduce as a ring reduce-scatter followed by a gather of the reduced blocks
//! at the root. Time 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ: every rank moves
//! about n bytes whatever p is, where a tree moves n per level.

use super::blocks::Blocks;
use super::{gather_linear, reduce_scatter_ring, Ctx, Scratch};
use crate::element::Element;
use crate::op::ReduceOp;
use crate::transport::TransportError;

/// Same contract as the binomial reduce.
pub fn reduce<E: Element>(
    ctx: Ctx<'_>,
    own: Option<&[E]>,
    acc: &mut [E],
    op: ReduceOp,
    root: usize,
    scratch: &mut Scratch,
) -> Result<(), TransportError> {
    let blocks = Blocks::even(acc.len(), ctx.size());
    reduce_scatter_ring::reduce_scatter(ctx, own, acc, &blocks, op, scratch)?;
    gather_linear::gather_in_place(ctx, acc, &blocks, root)
}
