//! Dissemination barrier: ⌈log2 p⌉ rounds of empty messages; in round k each
//! rank signals rank + 2^k and waits for rank − 2^k.

use super::Ctx;
use crate::transport::TransportError;

pub fn barrier(ctx: Ctx<'_>) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    let mut dist = 1;
    while dist < p {
        ctx.transport.sendrecv(
            (rank + dist) % p,
            &[],
            (rank + p - dist) % p,
            &mut [],
            ctx.tag,
        )?;
        dist <<= 1;
    }
    Ok(())
}
