//! Rewrites of the graph made once at load.

use super::{Constant, Model, Op};
use crate::model::Weight;
use crate::ModelError;
use std::sync::Arc;

/// Folds each BatchNormalization that alone reads a Conv's output into that
/// Conv: the weight rows are scaled as they are read (so the weight stays in
/// its file) and the bias replaced. The statistics are read now; they are
/// one value per channel.
pub fn fold_batch_norms(model: &mut Model) -> Result<(), ModelError> {
    let mut i = 0;
    while i < model.nodes.len() {
        if let Some(conv) = foldable(model, i) {
            fold(model, conv, i)?;
            model.nodes.remove(i);
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The Conv node BatchNormalization `bn` can fold into.
fn foldable(model: &Model, bn: usize) -> Option<usize> {
    let node = &model.nodes[bn];
    if !matches!(node.op, Op::BatchNorm { .. }) {
        return None;
    }
    let x = node.input(0)?;
    if (1..5).any(|i| node.input(i).and_then(|v| model.weight(v)).is_none())
        || model.outputs.contains(&x)
    {
        return None;
    }
    let consumers = model.consumers();
    if consumers[x] != [bn] {
        return None;
    }
    let conv = model.producers()[x]?;
    let c = &model.nodes[conv];
    let weighted = c.input(1).and_then(|v| model.weight(v)).is_some();
    let bias_ok = c.input(2).is_none_or(|v| model.weight(v).is_some());
    (matches!(c.op, Op::Conv { .. }) && weighted && bias_ok).then_some(conv)
}

fn fold(model: &mut Model, conv: usize, bn: usize) -> Result<(), ModelError> {
    let Op::BatchNorm { epsilon } = model.nodes[bn].op else {
        unreachable!("checked by foldable")
    };
    let stat = |i: usize| -> Result<Vec<f32>, ModelError> {
        let v = model.nodes[bn].input(i).expect("checked by foldable");
        Ok(model.weight(v).expect("checked by foldable").read()?.data)
    };
    let (gamma, beta, mean, var) = (stat(1)?, stat(2)?, stat(3)?, stat(4)?);
    let w_id = model.nodes[conv].input(1).expect("checked by foldable");
    let mut weight: Weight = model.weight(w_id).expect("checked").clone();
    let m = weight.shape[0];
    if [&gamma, &beta, &mean, &var].iter().any(|s| s.len() != m) {
        return Err(model.nodes[bn].error(format!(
            "statistics must have one value per channel of the Conv before it ({m})"
        )));
    }
    let old_bias = match model.nodes[conv].input(2) {
        Some(b) => model.weight(b).expect("checked").read()?.data,
        None => vec![0.0; m],
    };
    // Computed in f64: the folded values are then the f32 nearest to the
    // exact ones.
    let scale: Vec<f64> = (0..m)
        .map(|i| gamma[i] as f64 / (var[i] as f64 + epsilon as f64).sqrt())
        .collect();
    let bias: Vec<f32> = (0..m)
        .map(|i| ((old_bias[i] as f64 - mean[i] as f64) * scale[i] + beta[i] as f64) as f32)
        .collect();
    weight.row_scale = Some(Arc::new(match &weight.row_scale {
        Some(old) => (0..m).map(|i| (old[i] as f64 * scale[i]) as f32).collect(),
        None => scale.iter().map(|&s| s as f32).collect(),
    }));
    let name = format!("{}+{}", model.values[w_id].name, model.nodes[bn].name);
    let w_new = push_weight(model, &name, weight);
    let b_new = push_weight(
        model,
        &format!("{name}.bias"),
        Weight::from_values(&format!("{name}.bias"), vec![m], bias),
    );
    let out = model.nodes[bn].outputs[0];
    let c = &mut model.nodes[conv];
    c.inputs.resize(3, None);
    c.inputs[1] = Some(w_new);
    c.inputs[2] = Some(b_new);
    c.outputs[0] = out;
    c.op_type = format!("{}+BatchNormalization", c.op_type);
    Ok(())
}

fn push_weight(model: &mut Model, name: &str, w: Weight) -> usize {
    model.values.push(super::Value {
        name: name.to_string(),
        elem: super::Elem::Float,
        constant: Some(Constant::Weight(w)),
    });
    model.values.len() - 1
}

/// Gives a MatMul by a constant matrix the constant bias of the Add that
/// alone reads it, as a third input: a linear layer, which tensor
/// parallelism splits with its bias.
pub fn fuse_linear_bias(model: &mut Model) {
    let mut i = 0;
    while i < model.nodes.len() {
        match linear_bias(model, i) {
            Some((add, bias)) => {
                let out = model.nodes[add].outputs[0];
                let m = &mut model.nodes[i];
                m.inputs.push(Some(bias));
                m.outputs[0] = out;
                m.op_type = format!("{}+Add", m.op_type);
                model.nodes.remove(add);
            }
            None => i += 1,
        }
    }
}

/// The Add after MatMul `i` and its bias value, when they make a linear
/// layer.
fn linear_bias(model: &Model, i: usize) -> Option<(usize, usize)> {
    let n = &model.nodes[i];
    if n.op != Op::MatMul || n.inputs.len() != 2 {
        return None;
    }
    let w = model.weight(n.input(1)?)?;
    let [_, cols] = w.shape[..] else { return None };
    let y = n.outputs[0];
    if model.outputs.contains(&y) {
        return None;
    }
    let consumers = model.consumers();
    let [add] = consumers[y][..] else { return None };
    let a = &model.nodes[add];
    if a.op != Op::Binary(mpinfer_kernels::cpu::Binary::Add) {
        return None;
    }
    let other = if a.input(0) == Some(y) {
        a.input(1)?
    } else {
        a.input(0)?
    };
    let b = model.weight(other)?;
    // [N] or [1, N]: one value per column, whatever side it is added from.
    let per_column = b.shape.last() == Some(&cols) && b.len() == cols;
    (per_column && a.inputs.len() == 2).then_some((add, other))
}

/// Drops the nodes no graph output depends on: a branch left in the graph
/// would be computed on every row for nothing.
pub fn prune_dead(model: &mut Model) {
    let mut needed = vec![false; model.values.len()];
    for &v in &model.outputs {
        needed[v] = true;
    }
    let mut keep = vec![false; model.nodes.len()];
    for (i, n) in model.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|&v| needed[v]) {
            keep[i] = true;
            for &v in n.inputs.iter().flatten() {
                needed[v] = true;
            }
        }
    }
    let mut i = 0;
    model.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}
