//! Sequential references the tests and `mpinfer bench --check` compare against.

use crate::element::Element;
use crate::op::ReduceOp;

/// Reduction of every rank's vector in rank order, one element at a time.
pub fn reduce<E: Element>(inputs: &[Vec<E>], op: ReduceOp) -> Vec<E> {
    let mut acc = inputs[0].clone();
    for v in &inputs[1..] {
        E::combine(op, &mut acc, v);
    }
    if op == ReduceOp::Avg {
        E::divide(&mut acc, inputs.len());
    }
    acc
}

/// The same reduction carried out in f64: the yardstick for float error bounds.
pub fn reduce_f64<E: Element>(inputs: &[Vec<E>], op: ReduceOp) -> Vec<f64> {
    let n = inputs[0].len();
    (0..n)
        .map(|i| {
            let mut it = inputs.iter().map(|v| v[i].to_f64());
            let first = it.next().unwrap();
            let r = it.fold(first, |a, b| match op {
                ReduceOp::Sum | ReduceOp::Avg => a + b,
                ReduceOp::Prod => a * b,
                ReduceOp::Min => a.min(b),
                ReduceOp::Max => a.max(b),
            });
            if op == ReduceOp::Avg {
                r / inputs.len() as f64
            } else {
                r
            }
        })
        .collect()
}
