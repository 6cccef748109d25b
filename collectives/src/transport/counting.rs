//! A transport wrapper that counts bytes, messages and rounds per peer.

use super::{Incoming, Outgoing, Transport, TransportError};
use crate::watchdog::Watchdog;
use std::cell::RefCell;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    pub bytes_sent: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub messages_received: u64,
}

#[derive(Default)]
struct Tally {
    peers: Vec<PeerTraffic>,
    /// Exchanges that carried at least one message: the α term of a cost model.
    rounds: u64,
}

pub struct Counting<T> {
    inner: T,
    tally: RefCell<Tally>,
}

impl<T: Transport> Counting<T> {
    pub fn new(inner: T) -> Self {
        let peers = vec![PeerTraffic::default(); inner.size()];
        Counting {
            inner,
            tally: RefCell::new(Tally { peers, rounds: 0 }),
        }
    }

    pub fn per_peer(&self) -> Vec<PeerTraffic> {
        self.tally.borrow().peers.clone()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.tally.borrow().peers.iter().map(|p| p.bytes_sent).sum()
    }

    pub fn bytes_received(&self) -> u64 {
        self.tally
            .borrow()
            .peers
            .iter()
            .map(|p| p.bytes_received)
            .sum()
    }

    pub fn messages_sent(&self) -> u64 {
        self.tally
            .borrow()
            .peers
            .iter()
            .map(|p| p.messages_sent)
            .sum()
    }

    pub fn rounds(&self) -> u64 {
        self.tally.borrow().rounds
    }

    pub fn reset(&self) {
        let mut t = self.tally.borrow_mut();
        t.peers.iter_mut().for_each(|p| *p = PeerTraffic::default());
        t.rounds = 0;
    }
}

impl<T: Transport> Transport for Counting<T> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn set_watchdog(&mut self, watchdog: Watchdog) {
        self.inner.set_watchdog(watchdog);
    }

    fn exchange(
        &self,
        sends: &[Outgoing<'_>],
        recvs: &mut [Incoming<'_>],
        overlap: Option<&mut dyn FnMut()>,
    ) -> Result<(), TransportError> {
        self.inner.exchange(sends, recvs, overlap)?;
        let mut t = self.tally.borrow_mut();
        if !sends.is_empty() || !recvs.is_empty() {
            t.rounds += 1;
        }
        for s in sends {
            t.peers[s.peer].bytes_sent += s.data.len() as u64;
            t.peers[s.peer].messages_sent += 1;
        }
        for r in recvs.iter() {
            t.peers[r.peer].bytes_received += r.data.len() as u64;
            t.peers[r.peer].messages_received += 1;
        }
        Ok(())
    }
}
