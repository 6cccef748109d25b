//! Agreement on a step's outcome among the ranks of one communicator.
//!
//! A step that can fail on some ranks only (opening a file, a device)
//! must not leave the others waiting in the next collective. After such a
//! step every rank says whether it failed, with its message, in one
//! allgather; if any did, every rank returns an error, so a batch can
//! record the task as failed and go on instead of ending the job.

use anyhow::{anyhow, Result};
use mpinfer_collectives::{Communicator, Opts, Transport};

/// Bytes of a failure message that travel: enough for an `error:` line.
const MESSAGE: usize = 1024;

/// `Ok` on every rank when every rank's `local` is `Ok`; otherwise an error
/// on every rank: a failed rank keeps its own, the others name the lowest
/// failed rank and its message.
pub fn agree<T, C: Transport>(comm: &Communicator<C>, local: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return local;
    }
    let mut mine = [0u8; MESSAGE + 1];
    if let Err(e) = &local {
        mine[0] = 1;
        let text = format!("{e:#}");
        let n = floor_char_boundary(&text, MESSAGE);
        mine[1..1 + n].copy_from_slice(&text.as_bytes()[..n]);
    }
    let mut all = vec![0u8; mine.len() * comm.size()];
    comm.allgather(&mut all, Opts::default().send(&mine))?;
    let Some((rank, record)) = all.chunks(mine.len()).enumerate().find(|(_, r)| r[0] == 1) else {
        return local;
    };
    local?;
    let text = &record[1..];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Err(anyhow!(
        "rank {rank} of this task failed: {}",
        String::from_utf8_lossy(&text[..end])
    ))
}

/// The longest prefix of `s`, at most `max` bytes, that ends on a character.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpinfer_collectives::transport::LocalWorld;
    use mpinfer_collectives::Config;

    fn outcomes(fail: &[bool]) -> Vec<Result<usize, String>> {
        let world = LocalWorld::new(fail.len());
        let handles: Vec<_> = (0..fail.len())
            .map(|r| {
                let (fail, t) = (fail[r], world.transport(r));
                std::thread::spawn(move || {
                    let comm = Communicator::new(t, Config::default());
                    let local = if fail {
                        Err(anyhow!("bad file on rank {r} — é"))
                    } else {
                        Ok(r)
                    };
                    agree(&comm, local).map_err(|e| format!("{e:#}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn every_rank_succeeds_only_when_all_do() {
        assert_eq!(outcomes(&[false, false, false]), [Ok(0), Ok(1), Ok(2)]);
        let got = outcomes(&[false, true, true]);
        assert_eq!(
            got[0],
            Err("rank 1 of this task failed: bad file on rank 1 — é".into())
        );
        assert_eq!(got[1], Err("bad file on rank 1 — é".into()));
        assert_eq!(got[2], Err("bad file on rank 2 — é".into()));
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        // Two bytes a character: 1023 bytes hold 511 of them.
        let s = "é".repeat(MESSAGE);
        assert_eq!(floor_char_boundary(&s, 1023), 1022);
        assert_eq!(floor_char_boundary(&s, 1024), 1024);
        assert_eq!(floor_char_boundary("ab", 1024), 2);
    }
}
