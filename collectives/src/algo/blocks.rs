//! Splitting a vector into per-rank blocks, and borrowing two disjoint parts of one buffer.

use std::ops::Range;

/// How a vector is cut into per-rank blocks: evenly (no allocation, the
/// common case on every hot path) or by explicit counts.
#[derive(Clone, Debug)]
pub enum Blocks {
    /// `parts` nearly equal blocks of `n`; the first `n % parts` get one more.
    Even { n: usize, parts: usize },
    /// Block `i` is `displs[i]..displs[i + 1]`.
    Listed { displs: Vec<usize> },
}

impl Blocks {
    pub fn from_counts(counts: &[usize]) -> Blocks {
        let mut displs = Vec::with_capacity(counts.len() + 1);
        displs.push(0);
        let mut at = 0;
        for c in counts {
            at += c;
            displs.push(at);
        }
        Blocks::Listed { displs }
    }

    pub fn even(n: usize, parts: usize) -> Blocks {
        assert!(parts > 0);
        Blocks::Even { n, parts }
    }

    pub fn len(&self) -> usize {
        match self {
            Blocks::Even { parts, .. } => *parts,
            Blocks::Listed { displs } => displs.len() - 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn total(&self) -> usize {
        match self {
            Blocks::Even { n, .. } => *n,
            Blocks::Listed { displs } => *displs.last().unwrap(),
        }
    }

    fn start(&self, i: usize) -> usize {
        match self {
            Blocks::Even { n, parts } => i * (n / parts) + i.min(n % parts),
            Blocks::Listed { displs } => displs[i],
        }
    }

    pub fn range(&self, i: usize) -> Range<usize> {
        self.start(i)..self.start(i + 1)
    }

    /// Blocks `first..end` as one range (they are contiguous).
    pub fn span(&self, first: usize, end: usize) -> Range<usize> {
        self.start(first)..self.start(end)
    }

    pub fn count(&self, i: usize) -> usize {
        self.start(i + 1) - self.start(i)
    }

    pub fn max_count(&self) -> usize {
        match self {
            Blocks::Even { n, parts } => n.div_ceil(*parts),
            Blocks::Listed { .. } => (0..self.len()).map(|i| self.count(i)).max().unwrap_or(0),
        }
    }

    pub fn counts(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).map(|i| self.count(i))
    }
}

/// Part `j` of `nparts` nearly equal parts of `range`.
pub fn part(range: &Range<usize>, nparts: usize, j: usize) -> Range<usize> {
    let len = range.len();
    let start = range.start + j * (len / nparts) + j.min(len % nparts);
    let end = start + len / nparts + usize::from(j < len % nparts);
    start..end
}

/// Writable views of `N` ranges of one buffer. Panics if two non-empty
/// ranges overlap: the algorithms' correctness rests on that never happening.
pub fn disjoint_mut<E, const N: usize>(buf: &mut [E], ranges: [Range<usize>; N]) -> [&mut [E]; N] {
    for r in &ranges {
        assert!(
            r.start <= r.end && r.end <= buf.len(),
            "range {r:?} outside a buffer of {}",
            buf.len()
        );
    }
    for i in 0..N {
        for j in i + 1..N {
            let (a, b) = (&ranges[i], &ranges[j]);
            let apart = a.is_empty() || b.is_empty() || a.end <= b.start || b.end <= a.start;
            assert!(apart, "overlapping views {a:?} and {b:?}");
        }
    }
    let base = buf.as_mut_ptr();
    // SAFETY: every range lies inside `buf` and no two non-empty ranges
    // overlap, so the views never alias; they borrow `buf` mutably.
    ranges.map(|r| unsafe { std::slice::from_raw_parts_mut(base.add(r.start), r.len()) })
}

/// The largest power of two not above `p`, and how many ranks exceed it.
///
/// Power-of-two algorithms fold the excess: among the first `2 * rem` ranks,
/// each even rank hands its data to the odd rank after it and sits out.
#[derive(Clone, Copy, Debug)]
pub struct Fold {
    pub pof2: usize,
    pub rem: usize,
}

impl Fold {
    pub fn new(p: usize) -> Fold {
        let pof2 = if p == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - p.leading_zeros())
        };
        Fold {
            pof2,
            rem: p - pof2,
        }
    }

    /// Index among the `pof2` active ranks, or `None` for a rank that sits out.
    pub fn active(&self, rank: usize) -> Option<usize> {
        if rank < 2 * self.rem {
            (rank % 2 == 1).then_some(rank / 2)
        } else {
            Some(rank - self.rem)
        }
    }

    /// The real rank of active index `j`.
    pub fn real(&self, j: usize) -> usize {
        if j < self.rem {
            2 * j + 1
        } else {
            j + self.rem
        }
    }

    /// First real rank whose data active index `j` stands for.
    pub fn first_real(&self, j: usize) -> usize {
        if j < self.rem {
            2 * j
        } else {
            j + self.rem
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_range_in_order() {
        for len in [0usize, 1, 5, 64, 1000] {
            for n in 1..9 {
                let r = 3..3 + len;
                let mut at = r.start;
                for j in 0..n {
                    let p = part(&r, n, j);
                    assert_eq!(p.start, at);
                    at = p.end;
                }
                assert_eq!(at, r.end);
            }
        }
    }

    /// Counts of `parts` nearly equal blocks of `n`, written out independently.
    fn even_counts(n: usize, parts: usize) -> Vec<usize> {
        (0..parts)
            .map(|i| n / parts + usize::from(i < n % parts))
            .collect()
    }

    #[test]
    fn even_and_listed_blocks_agree() {
        for n in [0usize, 1, 7, 64, 1001] {
            for parts in 1..10 {
                let even = Blocks::even(n, parts);
                let listed = Blocks::from_counts(&even_counts(n, parts));
                for i in 0..parts {
                    assert_eq!(even.range(i), listed.range(i));
                }
                assert_eq!(even.max_count(), listed.max_count());
                assert_eq!(even.total(), n);
            }
        }
    }

    #[test]
    fn fold_maps_every_rank_once() {
        for p in 1..=17 {
            let f = Fold::new(p);
            assert!(f.pof2.is_power_of_two() && f.pof2 <= p && 2 * f.pof2 > p);
            let active: Vec<usize> = (0..p).filter_map(|r| f.active(r)).collect();
            assert_eq!(active, (0..f.pof2).collect::<Vec<_>>());
            for j in 0..f.pof2 {
                assert_eq!(f.active(f.real(j)), Some(j));
            }
        }
    }

    #[test]
    fn views_are_the_requested_ranges() {
        let mut v: Vec<u32> = (0..10).collect();
        let [a, b, c] = disjoint_mut(&mut v, [6..9, 1..3, 3..3]);
        assert_eq!(a, &[6, 7, 8]);
        b[0] = 100;
        assert!(c.is_empty());
        assert_eq!(v[1], 100);
        // An empty view may sit inside another.
        let [a, b] = disjoint_mut(&mut v, [0..4, 2..2]);
        assert_eq!((a.len(), b.len()), (4, 0));
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlapping_views_are_refused() {
        let mut v = [0u8; 8];
        let _ = disjoint_mut(&mut v, [0..4, 3..5]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn views_past_the_end_are_refused() {
        let mut v = [0u8; 8];
        let _ = disjoint_mut(&mut v, [6..9, 0..0]);
    }
}
