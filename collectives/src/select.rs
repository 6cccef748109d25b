//! Algorithm names, and `auto`: the choice by vector size and rank count.

use std::str::FromStr;

macro_rules! algorithm_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            #[default]
            Auto,
            $($variant),+
        }

        impl $name {
            /// Every algorithm but `Auto`.
            pub const CONCRETE: &'static [$name] = &[$($name::$variant),+];
            /// `Auto` and then every algorithm.
            pub const ALL: &'static [$name] = &[$name::Auto, $($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $name::Auto => "auto",
                    $($name::$variant => $s),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
                $name::ALL
                    .iter()
                    .copied()
                    .find(|a| a.name() == wanted)
                    .ok_or_else(|| {
                        let names: Vec<&str> = $name::ALL.iter().map(|a| a.name()).collect();
                        format!("unknown {} algorithm `{s}` (expected one of {})", $what, names.join(", "))
                    })
            }
        }
    };
}

algorithm_enum!(AllreduceAlgo, "allreduce" {
    RecursiveDoubling => "recursive_doubling",
    Ring => "ring",
    Rabenseifner => "rabenseifner",
});

algorithm_enum!(AllgatherAlgo, "allgather" {
    RecursiveDoubling => "recursive_doubling",
    Bruck => "bruck",
    Ring => "ring",
});

algorithm_enum!(ReduceAlgo, "reduce" {
    Binomial => "binomial",
    ReduceScatterGather => "reduce_scatter_gather",
});

algorithm_enum!(BroadcastAlgo, "broadcast" {
    Binomial => "binomial",
    ScatterAllgather => "scatter_allgather",
});

/// Crossover points of `auto`, in bytes of the whole vector. The defaults were
/// measured with `mpinfer bench collectives` at 2 and 4 ranks on this
/// project's 2-core test machine (see docs/BENCHMARKS.md); each can be
/// overridden by the environment variable named in [`crate::Config::from_env`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Below this, allreduce uses recursive doubling (fewest rounds).
    pub allreduce_small: usize,
    /// From this up, allreduce uses the ring; between, Rabenseifner. At two
    /// ranks recursive doubling moves the same bytes as both in one round,
    /// so it is used up to here.
    pub allreduce_large: usize,
    /// Below this (gathered bytes), allgather at a non-power-of-two rank
    /// count uses Bruck; from here up, the ring.
    pub allgather_small: usize,
    /// Below this, allgather at a power-of-two rank count uses recursive
    /// doubling (log p rounds, each moving what the ring moves in several);
    /// from here up, the ring.
    pub allgather_large: usize,
    /// From this up, with more than four ranks, reduce and broadcast split
    /// the vector (reduce-scatter + gather, scatter + allgather); trees
    /// otherwise. Up to four ranks a tree is at most two levels deep and its
    /// fewer rounds won at every size measured.
    pub tree_large: usize,
    /// From this up, two ranks reduce by reduce-scatter + gather: each rank
    /// then reduces half, where a tree leaves the whole reduction to the root.
    pub reduce_split: usize,
    /// Pipelining unit of the segmented steps.
    pub segment_bytes: usize,
    /// Largest message the MPI library sends eagerly, without a rendezvous
    /// handshake (Open MPI's shared-memory transport: 4 KiB including its
    /// header). The MPI transport sends messages of up to four times this in
    /// eager pieces: at 2 ranks a 4 KiB allreduce went from 0.4× to 1.0× MPI's
    /// speed and 4–8 KiB broadcasts and reduces from about 1× to 2–4×; eight
    /// pieces made 16 KiB results swing between 0.5× and 2.5×.
    pub eager_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            allreduce_small: 128 << 10,
            allreduce_large: 1 << 20,
            allgather_small: 64 << 10,
            allgather_large: 8 << 20,
            tree_large: 256 << 10,
            reduce_split: 8 << 20,
            segment_bytes: 1 << 20,
            eager_bytes: 3968,
        }
    }
}

impl Tuning {
    pub fn allreduce(&self, bytes: usize, p: usize) -> AllreduceAlgo {
        if (p <= 2 && bytes < self.allreduce_large) || bytes < self.allreduce_small {
            AllreduceAlgo::RecursiveDoubling
        } else if bytes < self.allreduce_large && p.is_power_of_two() {
            AllreduceAlgo::Rabenseifner
        } else {
            AllreduceAlgo::Ring
        }
    }

    pub fn allgather(&self, total_bytes: usize, p: usize) -> AllgatherAlgo {
        // At two ranks every algorithm is one exchange; the ring's sends its
        // block straight from the caller's buffer.
        if p == 2 {
            AllgatherAlgo::Ring
        } else if p.is_power_of_two() {
            if total_bytes < self.allgather_large {
                AllgatherAlgo::RecursiveDoubling
            } else {
                AllgatherAlgo::Ring
            }
        } else if total_bytes < self.allgather_small {
            AllgatherAlgo::Bruck
        } else {
            AllgatherAlgo::Ring
        }
    }

    pub fn reduce(&self, bytes: usize, p: usize) -> ReduceAlgo {
        if (p > 4 && bytes >= self.tree_large) || (p == 2 && bytes >= self.reduce_split) {
            ReduceAlgo::ReduceScatterGather
        } else {
            ReduceAlgo::Binomial
        }
    }

    pub fn broadcast(&self, bytes: usize, p: usize) -> BroadcastAlgo {
        if bytes >= self.tree_large && p > 4 {
            BroadcastAlgo::ScatterAllgather
        } else {
            BroadcastAlgo::Binomial
        }
    }
}
