//! Allgather by recursive doubling: log2(p) rounds, the gathered range
//! doubling each round, received straight into place. Time log p α + (p−1)/p·nβ.
//! Non-power-of-two p: the first `2 * rem` even ranks pass their block to the
//! next odd rank first and get the whole vector back at the end.

use super::blocks::{disjoint_mut, Blocks, Fold};
use super::Ctx;
use crate::element::{bytes, bytes_mut, Element};
use crate::transport::TransportError;

pub fn allgather<E: Element>(
    ctx: Ctx<'_>,
    buf: &mut [E],
    blocks: &Blocks,
) -> Result<(), TransportError> {
    let p = ctx.size();
    let rank = ctx.rank();
    if p == 1 || blocks.total() == 0 {
        return Ok(());
    }
    let fold = Fold::new(p);
    let t = ctx.transport;
    if rank < 2 * fold.rem {
        if rank.is_multiple_of(2) {
            t.send(rank + 1, ctx.tag, bytes(&buf[blocks.range(rank)]))?;
            return t.recv(rank + 1, ctx.tag, bytes_mut(buf));
        }
        t.recv(
            rank - 1,
            ctx.tag,
            bytes_mut(&mut buf[blocks.range(rank - 1)]),
        )?;
    }
    let me = fold.active(rank).expect("odd and upper ranks stay active");
    // Active index j stands for real blocks first_real(j)..first_real(j + 1).
    let span = |j0: usize, j1: usize| {
        let end = if j1 == fold.pof2 {
            p
        } else {
            fold.first_real(j1)
        };
        blocks.span(fold.first_real(j0), end)
    };
    let mut mask = 1;
    while mask < fold.pof2 {
        let partner = me ^ mask;
        let mine = me & !(mask - 1);
        let theirs = partner & !(mask - 1);
        let [send, recv] =
            disjoint_mut(buf, [span(mine, mine + mask), span(theirs, theirs + mask)]);
        let peer = fold.real(partner);
        t.sendrecv(peer, bytes(&*send), peer, bytes_mut(recv), ctx.tag)?;
        mask <<= 1;
    }
    if rank < 2 * fold.rem {
        t.send(rank - 1, ctx.tag, bytes(buf))?;
    }
    Ok(())
}
