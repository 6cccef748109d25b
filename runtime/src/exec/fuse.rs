//! Work folded into the step before it: an activation, or a residual Add
//! (then its activation), applied to the step's output in place.

use super::program::{In, Instr};
use super::step::Post;
use super::step::Step;
use crate::graph::{Op, Spec, ValueId};
use mpinfer_kernels::cpu::{Binary, Unary};

/// Folds each activation or residual Add that alone reads a step's output
/// into that step.
pub(crate) fn fuse_posts(mut instrs: Vec<Instr>, spec: &Spec, keep: &[ValueId]) -> Vec<Instr> {
    let mut i = 0;
    while i < instrs.len() {
        match fusable(&instrs, i, spec, keep) {
            Some((j, post, extra)) => {
                let Instr::Run { outputs: out_j, .. } = instrs.remove(j) else {
                    unreachable!()
                };
                if let Instr::Run {
                    step,
                    inputs,
                    outputs,
                    ..
                } = &mut instrs[i]
                {
                    let post = match (post, extra) {
                        (Post::Add(_), Some(r)) => {
                            inputs.push(In::Value(r));
                            Post::Add(inputs.len() - 1)
                        }
                        (p, _) => p,
                    };
                    step.post_mut().expect("checked").push(post);
                    *outputs = out_j;
                }
            }
            None => i += 1,
        }
    }
    instrs
}

/// The instruction that alone reads instruction `i`'s output and can run in
/// its epilogue: its index, the work, and a residual value to add.
fn fusable(
    instrs: &[Instr],
    i: usize,
    spec: &Spec,
    keep: &[ValueId],
) -> Option<(usize, Post, Option<ValueId>)> {
    let Instr::Run { step, outputs, .. } = &instrs[i] else {
        return None;
    };
    let mut step = step.clone();
    step.post_mut()?;
    let [y] = outputs[..] else { return None };
    if keep.contains(&y) {
        return None;
    }
    let readers: Vec<usize> = (0..instrs.len())
        .filter(|&j| reads(&instrs[j], y) > 0)
        .collect();
    let [j] = readers[..] else { return None };
    let Instr::Run {
        step: Step::Node(op),
        inputs,
        ..
    } = &instrs[j]
    else {
        return None;
    };
    if reads(&instrs[j], y) != 1 {
        return None;
    }
    match op {
        Op::Unary(u) if elementwise(*u) => Some((j, Post::Unary(*u), None)),
        Op::Binary(Binary::Add) if inputs.len() == 2 => {
            let other = inputs.iter().find_map(|x| match x {
                In::Value(v) if *v != y => Some(*v),
                _ => None,
            })?;
            // The residual must exist before the step runs, and have the
            // output's shape.
            let defined_before = (0..i).any(|k| writes(&instrs[k], other))
                || !(0..instrs.len()).any(|k| writes(&instrs[k], other));
            (defined_before && spec.shape(other) == spec.shape(y)).then_some((
                j,
                Post::Add(0),
                Some(other),
            ))
        }
        _ => None,
    }
}

fn elementwise(u: Unary) -> bool {
    matches!(
        u,
        Unary::Relu
            | Unary::Clip { .. }
            | Unary::HardSwish
            | Unary::Sigmoid
            | Unary::LeakyRelu { .. }
    )
}

fn reads(ins: &Instr, v: ValueId) -> usize {
    match ins {
        Instr::Run { inputs, .. } => inputs
            .iter()
            .filter(|x| matches!(x, In::Value(w) if *w == v))
            .count(),
        Instr::Comm { value, .. } => usize::from(*value == v),
    }
}

fn writes(ins: &Instr, v: ValueId) -> bool {
    match ins {
        Instr::Run { outputs, .. } => outputs.contains(&v),
        Instr::Comm { value, .. } => *value == v,
    }
}
