//! Broadcast along a binomial tree: each rank receives once from its parent,
//! then sends to all its children at once. Time ⌈log p⌉(α + nβ).

use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::{Outgoing, TransportError};

pub fn broadcast<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    root: usize,
) -> Result<(), TransportError> {
    let p = ctx.size();
    if p == 1 || buf.is_empty() {
        return Ok(());
    }
    let me = (ctx.rank() + p - root) % p;
    let real = |v: usize| (v + root) % p;
    let mut mask = 1;
    while mask < p {
        if me & mask != 0 {
            ctx.transport
                .recv(real(me - mask), ctx.tag, bytes_mut(buf))?;
            break;
        }
        mask <<= 1;
    }
    let mut children = Vec::new();
    mask >>= 1;
    while mask > 0 {
        if me + mask < p {
            children.push(real(me + mask));
        }
        mask >>= 1;
    }
    let data = bytes(buf);
    let sends: Vec<Outgoing<'_>> = children
        .into_iter()
        .map(|peer| Outgoing {
            peer,
            tag: ctx.tag,
            data,
        })
        .collect();
    ctx.transport.exchange(&sends, &mut [], None)
}
