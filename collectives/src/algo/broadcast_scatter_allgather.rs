//! Broadcast as a scatter from the root followed by a ring allgather (van de
//! Geijn). Time (p−1)α + log p α + 2(p−1)/p·nβ: the root no longer sends the
//! whole vector once per tree level, so the choice for large vectors.

use super::blocks::Blocks;
use super::{allgather_ring, scatter_linear, Ctx};
use crate::element::Element;
use crate::transport::TransportError;

pub fn broadcast<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    root: usize,
) -> Result<(), TransportError> {
    let blocks = Blocks::even(buf.len(), ctx.size());
    scatter_linear::scatter_in_place(ctx, buf, &blocks, root)?;
    allgather_ring::allgather(ctx, None, buf, &blocks)
}
