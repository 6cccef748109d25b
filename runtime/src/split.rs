//! Who gets how many: rows by rank weight, channels and features evenly.

/// Splits `total` in proportion to `weights` (T_i = T·R_i/ΣR_i), rounding
/// by largest remainder so the parts sum to `total`; ties go to the lower
/// rank, so every rank computes the same split.
pub fn weighted(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum.is_nan() || sum <= 0.0 {
        return even(total, weights.len());
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = total - parts.iter().sum::<usize>().min(total);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// `total` split into `parts` nearly equal parts, the larger ones first.
pub fn even(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Start of each part, and the total at the end.
pub fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(counts.len() + 1);
    let mut at = 0;
    out.push(0);
    for c in counts {
        at += c;
        out.push(at);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_parts_sum_to_total_and_follow_weights() {
        assert_eq!(weighted(10, &[1.0, 1.0, 2.0]), vec![3, 2, 5]);
        assert_eq!(weighted(13, &[1.0; 4]), vec![4, 3, 3, 3]);
        assert_eq!(weighted(0, &[1.0, 3.0]), vec![0, 0]);
        assert_eq!(weighted(1, &[1.0, 1.0, 1.0]), vec![1, 0, 0]);
        assert_eq!(weighted(7, &[0.0, 1.0]), vec![0, 7]);
        for total in [0, 1, 5, 97, 1000] {
            let w = [0.3, 1.7, 2.2, 0.01];
            let parts = weighted(total, &w);
            assert_eq!(parts.iter().sum::<usize>(), total);
            for (p, wi) in parts.iter().zip(w) {
                let exact = total as f64 * wi / 4.21;
                assert!((*p as f64 - exact).abs() < 1.0, "{parts:?} for {total}");
            }
        }
    }

    #[test]
    fn even_and_offsets() {
        assert_eq!(even(7, 3), vec![3, 2, 2]);
        assert_eq!(even(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(offsets(&[3, 2, 2]), vec![0, 3, 5, 7]);
    }
}
