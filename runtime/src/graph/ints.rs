//! Integer tensors: shapes, axes, indices and the arithmetic exporters do on
//! them (Shape → Gather → Concat → Reshape). They are evaluated while
//! planning, for one batch size, never at run time.

/// A small dense integer tensor, row-major. Booleans are 0 and 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ints {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

impl Ints {
    pub fn vector(data: Vec<i64>) -> Ints {
        Ints {
            shape: vec![data.len()],
            data,
        }
    }

    pub fn scalar(v: i64) -> Ints {
        Ints {
            shape: Vec::new(),
            data: vec![v],
        }
    }

    /// Element-wise `f` with numpy broadcasting; `None` when the shapes do
    /// not broadcast.
    pub fn zip(&self, other: &Ints, f: impl Fn(i64, i64) -> i64) -> Option<Ints> {
        let shape = broadcast(&self.shape, &other.shape)?;
        let data = (0..shape.iter().product())
            .map(|i| f(self.at(&shape, i), other.at(&shape, i)))
            .collect();
        Some(Ints { shape, data })
    }

    /// The element that flat index `i` of a broadcast of shape `to` reads.
    pub fn at(&self, to: &[usize], i: usize) -> i64 {
        let mut rest = i;
        let mut flat = 0;
        let mut stride = 1;
        let lead = to.len() - self.shape.len();
        for a in (0..to.len()).rev() {
            let idx = rest % to[a].max(1);
            rest /= to[a].max(1);
            if a >= lead {
                let d = self.shape[a - lead];
                if d != 1 {
                    flat += idx * stride;
                }
                stride *= d;
            }
        }
        self.data[flat]
    }

    /// Elements along axis 0 picked by `idx` (already in range), for Gather
    /// on axis 0 and Slice.
    pub fn take(&self, axis: usize, idx: &[usize], idx_shape: &[usize]) -> Ints {
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let dim = self.shape[axis];
        let mut data = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &k in idx {
                let base = (o * dim + k) * inner;
                data.extend_from_slice(&self.data[base..base + inner]);
            }
        }
        let shape = self.shape[..axis]
            .iter()
            .chain(idx_shape)
            .chain(&self.shape[axis + 1..])
            .copied()
            .collect();
        Ints { shape, data }
    }
}

/// numpy's broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let a = Ints {
            shape: vec![2, 1],
            data: vec![10, 20],
        };
        let b = Ints::vector(vec![1, 2, 3]);
        let c = a.zip(&b, |x, y| x + y).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.data, vec![11, 12, 13, 21, 22, 23]);
        assert!(Ints::vector(vec![1, 2])
            .zip(&Ints::vector(vec![1, 2, 3]), |x, _| x)
            .is_none());
    }

    #[test]
    fn take_picks_along_an_axis() {
        let t = Ints {
            shape: vec![2, 3],
            data: vec![0, 1, 2, 3, 4, 5],
        };
        assert_eq!(t.take(1, &[2, 0], &[2]).data, vec![2, 0, 5, 3]);
        assert_eq!(t.take(0, &[1], &[]).data, vec![3, 4, 5]);
        assert_eq!(t.take(0, &[1], &[]).shape, vec![3]);
    }
}
