//! Allreduce as a segmented ring reduce-scatter followed by a ring allgather.
//! Time 2(p−1)α + 2(p−1)/p·nβ + (p−1)/p·nγ: bandwidth-optimal, so the choice
//! for large vectors.

use super::blocks::Blocks;
use super::{allgather_ring, reduce_scatter_ring, Ctx, Scratch};
use crate::element::Element;
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
    let blocks = Blocks::even(buf.len(), ctx.size());
    reduce_scatter_ring::reduce_scatter(ctx, own, buf, &blocks, op, scratch)?;
    allgather_ring::allgather(ctx, None, buf, &blocks)
}
