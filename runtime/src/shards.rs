//! How a value split along one axis lies on the ranks.
//!
//! The axis is a run of segments, each divided among the ranks by its own
//! counts, and the run repeats along the axis as often as it fits. One
//! segment once is a plain split of channels or features. One segment
//! three times is a packed query/key/value projection split by heads: each
//! rank holds its heads of the queries, of the keys and of the values. Several
//! segments are a concatenation of values that were each split on their
//! own. The number of repeats is not stored: it follows from the length of
//! the axis, which may grow with the batch (`[S, N·H, d]` repeats the heads
//! once per sample).

use crate::split;
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shards {
    pub axis: usize,
    /// Per segment, the elements each rank holds of it.
    pub segments: Vec<Vec<usize>>,
}

impl Shards {
    /// `total` elements of `axis` split evenly, in one segment.
    pub fn even(axis: usize, total: usize, ranks: usize) -> Shards {
        Shards {
            axis,
            segments: vec![split::even(total, ranks)],
        }
    }

    /// The length of one run of the segments.
    pub fn period(&self) -> usize {
        self.segments.iter().flatten().sum()
    }

    /// The elements rank `rank` holds of one run.
    pub fn held(&self, rank: usize) -> usize {
        self.segments.iter().map(|s| s[rank]).sum()
    }

    /// The elements rank `rank` holds of an axis of length `dim`.
    pub fn local(&self, rank: usize, dim: usize) -> usize {
        dim / self.period().max(1) * self.held(rank)
    }

    /// Whether the runs fit an axis of length `dim` exactly.
    pub fn fits(&self, dim: usize) -> bool {
        let p = self.period();
        p > 0 && dim.is_multiple_of(p)
    }

    /// Whether every rank holds part of every segment.
    pub fn all_hold(&self) -> bool {
        self.segments.iter().flatten().all(|&c| c > 0)
    }

    /// The indices along an axis of length `dim` that rank `rank` holds, in
    /// the order it holds them, adjacent ones merged.
    pub fn ranges(&self, rank: usize, dim: usize) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut at = 0;
        for _ in 0..dim / self.period().max(1) {
            for seg in &self.segments {
                let off = split::offsets(seg);
                let r = at + off[rank]..at + off[rank + 1];
                match out.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ if r.is_empty() => {}
                    _ => out.push(r),
                }
                at += off[seg.len()];
            }
        }
        out
    }

    /// The same split on another axis, every count mapped by `f`; `None`
    /// when `f` refuses one.
    pub fn map(&self, axis: usize, f: impl Fn(usize) -> Option<usize>) -> Option<Shards> {
        let segments = self
            .segments
            .iter()
            .map(|s| s.iter().map(|&c| f(c)).collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()?;
        Some(Shards { axis, segments })
    }

    pub fn on_axis(&self, axis: usize) -> Shards {
        Shards {
            axis,
            segments: self.segments.clone(),
        }
    }

    /// `from` reshaped to `to` (a view: the elements keep their order):
    /// where the split lands, or `None` when a rank's share is no longer a
    /// run of whole indices of one axis.
    ///
    /// The split is a factor of the flat index: its stride is the product
    /// of the axes after it, and it spans one period. It lands on the
    /// output axis that holds the top of that factor. Below that axis the
    /// factor must be taken whole, so the counts must divide evenly there.
    pub fn through_view(&self, from: &[usize], to: &[usize]) -> Option<Shards> {
        let a = self.axis;
        if !self.fits(*from.get(a)?) {
            return None;
        }
        let lo: usize = from[a + 1..].iter().product();
        let hi = lo * self.period();
        for (b, &d) in to.iter().enumerate() {
            let l: usize = to[b + 1..].iter().product();
            let u = l * d;
            if !(l < hi && hi <= u) {
                continue;
            }
            if !u.is_multiple_of(hi) {
                return None;
            }
            return if lo >= l {
                lo.is_multiple_of(l).then_some(())?;
                self.map(b, |c| Some(c * (lo / l)))
            } else {
                l.is_multiple_of(lo).then_some(())?;
                let q = l / lo;
                self.map(b, |c| c.is_multiple_of(q).then_some(c / q))
            };
        }
        None
    }
}

/// The whole of a value gathered from the ranks: rank `r` sent
/// `[outer, local_r, inner]`, the indices `shards.ranges(r, dim)` of the
/// split axis.
pub fn assemble(
    sent: &[f32],
    shards: &Shards,
    ranks: usize,
    outer: usize,
    dim: usize,
    inner: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; outer * dim * inner];
    let mut src = 0;
    for r in 0..ranks {
        let ranges = shards.ranges(r, dim);
        for o in 0..outer {
            for range in &ranges {
                let len = range.len() * inner;
                let dst = (o * dim + range.start) * inner;
                out[dst..dst + len].copy_from_slice(&sent[src..src + len]);
                src += len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed() -> Shards {
        Shards {
            axis: 2,
            segments: vec![vec![4, 4]],
        }
    }

    #[test]
    fn ranges_repeat_the_segments() {
        let s = packed();
        assert_eq!(s.ranges(0, 24), vec![0..4, 8..12, 16..20]);
        assert_eq!(s.ranges(1, 24), vec![4..8, 12..16, 20..24]);
        assert_eq!(s.local(1, 24), 12);
        let cat = Shards {
            axis: 1,
            segments: vec![vec![2, 1], vec![3, 3]],
        };
        assert_eq!(cat.ranges(0, 9), vec![0..2, 3..6]);
        assert_eq!(cat.ranges(1, 9), vec![2..3, 6..9]);
        let plain = Shards::even(1, 5, 2);
        assert_eq!(plain.ranges(0, 5), vec![0..3]);
    }

    #[test]
    fn a_packed_projection_reshaped_to_heads() {
        // [S, N, 3·E] → [S, N, 3, E]: each rank keeps its columns of E.
        let s = packed();
        let to = s.through_view(&[5, 2, 24], &[5, 2, 3, 8]).unwrap();
        assert_eq!(to, s.on_axis(3));
        // [S, N, E] → [S, N·H, d] with d = 2: four heads a rank, one run
        // per sample.
        let e = Shards {
            axis: 2,
            segments: vec![vec![4, 4]],
        };
        let heads = e.through_view(&[5, 3, 8], &[5, 12, 2]).unwrap();
        assert_eq!(heads.axis, 1);
        assert_eq!(heads.segments, vec![vec![2, 2]]);
        assert_eq!(heads.ranges(1, 12), vec![2..4, 6..8, 10..12]);
        // Back to [S·N, E]: the heads' width comes back.
        let back = heads.through_view(&[3, 4, 5, 2], &[15, 8]);
        assert_eq!(back, None, "heads are not on axis 1 of [N, H, S, d]");
        let back = heads.on_axis(2).through_view(&[5, 3, 4, 2], &[15, 8]);
        assert_eq!(back.unwrap().segments, vec![vec![4, 4]]);
    }

    #[test]
    fn a_split_that_breaks_a_head_is_refused() {
        let e = Shards {
            axis: 1,
            segments: vec![vec![3, 5]],
        };
        assert_eq!(e.through_view(&[2, 8], &[2, 4, 2]), None);
        assert!(e.through_view(&[2, 8], &[2, 8, 1]).is_some());
    }

    #[test]
    fn assemble_puts_every_rank_at_its_indices() {
        let s = Shards {
            axis: 1,
            segments: vec![vec![1, 2]],
        };
        // Whole [2, 6, 1]: value = 10·o + index.
        let (outer, dim) = (2, 6);
        let mut sent = Vec::new();
        for r in 0..2 {
            for o in 0..outer {
                for range in s.ranges(r, dim) {
                    sent.extend(range.map(|i| (10 * o + i) as f32));
                }
            }
        }
        let whole = assemble(&sent, &s, 2, outer, dim, 1);
        let want: Vec<f32> = (0..outer)
            .flat_map(|o| (0..dim).map(move |i| (10 * o + i) as f32))
            .collect();
        assert_eq!(whole, want);
    }
}
