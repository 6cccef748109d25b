//! Collective signatures: with checking on, neighbours compare what they are
//! about to run before running it, so ranks that disagree (a different
//! collective, type, count or root, or one rank a call ahead) get an error
//! naming both sides instead of a hang or silently wrong data.

use crate::element::DType;
use crate::op::ReduceOp;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Collective {
    Allreduce = 1,
    Reduce = 2,
    Allgather = 3,
    Broadcast = 4,
    ReduceScatter = 5,
    Gather = 6,
    Scatter = 7,
    Barrier = 8,
}

impl Collective {
    pub(crate) const ALL: [Collective; 8] = [
        Collective::Allreduce,
        Collective::Reduce,
        Collective::Allgather,
        Collective::Broadcast,
        Collective::ReduceScatter,
        Collective::Gather,
        Collective::Scatter,
        Collective::Barrier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Collective::Allreduce => "allreduce",
            Collective::Reduce => "reduce",
            Collective::Allgather => "allgather",
            Collective::Broadcast => "broadcast",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Gather => "gather",
            Collective::Scatter => "scatter",
            Collective::Barrier => "barrier",
        }
    }
}

/// What one rank is about to run. Equal on every rank, or the call is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub collective: Collective,
    pub dtype: Option<DType>,
    pub op: Option<ReduceOp>,
    pub algorithm: &'static str,
    pub root: Option<usize>,
    /// Total element count of the collective's vector.
    pub count: u64,
    /// Hash of the per-rank counts for the v-variants, 0 otherwise.
    pub layout: u64,
    /// How many collectives this rank has run on the communicator before.
    pub seq: u64,
}

pub const WIRE_BYTES: usize = 48;

impl Signature {
    pub fn encode(&self) -> [u8; WIRE_BYTES] {
        let mut w = [0u8; WIRE_BYTES];
        w[0] = self.collective as u8;
        w[1] = self.dtype.map_or(0, |d| d as u8);
        w[2] = self.op.map_or(0, |o| o as u8);
        w[3] = algorithm_code(self.algorithm);
        w[8..16].copy_from_slice(&self.root.map_or(u64::MAX, |r| r as u64).to_le_bytes());
        w[16..24].copy_from_slice(&self.count.to_le_bytes());
        w[24..32].copy_from_slice(&self.layout.to_le_bytes());
        w[32..40].copy_from_slice(&self.seq.to_le_bytes());
        let sum = checksum(&w[..40]);
        w[40..48].copy_from_slice(&sum.to_le_bytes());
        w
    }

    /// `None` for bytes that are not a signature (a message from some other
    /// traffic arriving where a signature was expected).
    pub fn decode(w: &[u8]) -> Option<Signature> {
        if w.len() != WIRE_BYTES {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(w[i..i + 8].try_into().unwrap());
        if word(40) != checksum(&w[..40]) || w[4..8] != [0; 4] {
            return None;
        }
        let collective = Collective::ALL.into_iter().find(|c| *c as u8 == w[0])?;
        let dtype = match w[1] {
            0 => None,
            d => Some(DType::from_u8(d)?),
        };
        let op = match w[2] {
            0 => None,
            o => Some(ReduceOp::ALL.into_iter().find(|x| *x as u8 == o)?),
        };
        let algorithm = *ALGORITHM_NAMES.get(w[3] as usize)?;
        let root = match word(8) {
            u64::MAX => None,
            r => Some(usize::try_from(r).ok()?),
        };
        Some(Signature {
            collective,
            dtype,
            op,
            algorithm,
            root,
            count: word(16),
            layout: word(24),
            seq: word(32),
        })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{} (", self.collective.name(), self.seq)?;
        if let Some(d) = self.dtype {
            write!(f, "{d}, ")?;
        }
        if let Some(o) = self.op {
            write!(f, "{o}, ")?;
        }
        write!(f, "count {}", self.count)?;
        if self.layout != 0 {
            write!(f, ", counts hash {:016x}", self.layout)?;
        }
        if let Some(r) = self.root {
            write!(f, ", root {r}")?;
        }
        write!(f, ", algorithm {})", self.algorithm)
    }
}

const ALGORITHM_NAMES: &[&str] = &[
    "-",
    "recursive_doubling",
    "ring",
    "rabenseifner",
    "bruck",
    "binomial",
    "reduce_scatter_gather",
    "scatter_allgather",
    "linear",
    "dissemination",
];

fn algorithm_code(name: &str) -> u8 {
    ALGORITHM_NAMES.iter().position(|n| *n == name).unwrap_or(0) as u8
}

/// FNV-1a: enough to tell a signature from stray bytes and to hash count lists.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

pub fn layout_hash(counts: impl IntoIterator<Item = usize>) -> u64 {
    counts.into_iter().fold(checksum(&[]), |h, c| {
        (c as u64)
            .to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_survive_the_wire_and_garbage_does_not_decode() {
        let s = Signature {
            collective: Collective::ReduceScatter,
            dtype: Some(DType::BF16),
            op: Some(ReduceOp::Max),
            algorithm: "ring",
            root: Some(3),
            count: 65539,
            layout: layout_hash([1, 2, 3]),
            seq: 42,
        };
        assert_eq!(Signature::decode(&s.encode()), Some(s));
        let mut bad = s.encode();
        bad[17] ^= 1;
        assert_eq!(Signature::decode(&bad), None);
        assert_eq!(Signature::decode(&[0u8; WIRE_BYTES]), None);
        assert_eq!(Signature::decode(&[1u8; 7]), None);
    }
}
