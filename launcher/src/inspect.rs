//! `mpinfer inspect`: what a model holds and costs, and how a strategy
//! would divide it among ranks.

use anyhow::Result;
use clap::Args as ClapArgs;
use mpinfer_runtime::graph::Op;
use mpinfer_runtime::model::Model;
use mpinfer_runtime::onnx;
use mpinfer_runtime::run::{self as runner, human_bytes, Strategy};
use std::path::PathBuf;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Show how this many ranks would divide the model.
    #[arg(long)]
    ranks: Option<usize>,
    /// The strategy to show for --ranks (auto shows what it would choose).
    #[arg(long, default_value = "auto")]
    strategy: Strategy,
    /// Rows per batch for the per-batch byte figures.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

pub fn run(args: &Args) -> Result<()> {
    let model = onnx::load(&args.model)?;
    print!("{}", describe(&model)?);
    if let Some(ranks) = args.ranks {
        print!(
            "{}",
            divide(&model, ranks.max(1), args.strategy, args.batch_size)?
        );
    }
    Ok(())
}

/// Parameters node `i` reads.
fn params(model: &Model, i: usize) -> usize {
    model.nodes[i]
        .inputs
        .iter()
        .flatten()
        .filter_map(|&v| model.weight(v))
        .map(|w| w.len())
        .sum()
}

fn dims(s: &[usize]) -> String {
    let d: Vec<String> = s.iter().map(|v| v.to_string()).collect();
    format!("[N, {}]", d.join(", "))
}

/// One line per node run at run time: output, parameters, FLOPs per sample.
pub fn describe(model: &Model) -> Result<String> {
    let spec = model.spec(1)?;
    let mut out = String::new();
    let outputs: Vec<String> = model
        .outputs
        .iter()
        .map(|&v| format!("{} {}", model.values[v].name, dims(&spec.shape(v)[1..])))
        .collect();
    out += &format!(
        "model: {} (opset {})\ninput: {} {}\noutput: {}\n\n",
        model.path.display(),
        model.opset,
        model.input_name(),
        dims(&model.sample_shape),
        outputs.join(", ")
    );
    out += &format!(
        "{:<4} {:<28} {:<26} {:<22} {:>10} {:>12}\n",
        "#", "node", "op", "output", "params", "MFLOP/row"
    );
    let (mut total_params, mut total_flops) = (0usize, 0u64);
    for (i, node) in model.nodes.iter().enumerate() {
        if !spec.runs[i] {
            continue;
        }
        let heavy = matches!(node.op, Op::Conv { .. } | Op::Gemm(_) | Op::MatMul);
        let flops = if heavy {
            runner::node_flops(model, &spec, i)
        } else {
            0
        };
        let p = params(model, i);
        total_params += p;
        total_flops += flops;
        out += &format!(
            "{:<4} {:<28} {:<26} {:<22} {:>10} {:>12.3}\n",
            i,
            node.name,
            node.op_type,
            dims(&spec.shape(node.outputs[0])[1..]),
            p,
            flops as f64 / 1e6
        );
    }
    out += &format!(
        "\ntotal: {total_params} parameters ({} at f32), {:.3} MFLOP per row\n",
        human_bytes(4 * total_params as u64),
        total_flops as f64 / 1e6
    );
    Ok(out)
}

/// Per-rank weights, activations and traffic for one strategy.
pub fn divide(model: &Model, ranks: usize, strategy: Strategy, batch: usize) -> Result<String> {
    let spec = model.spec(1)?;
    let out_row = 4 * model.output_sample_shapes()?[0].iter().product::<usize>() as u64;
    let largest_act = 4
        * (0..model.values.len())
            .filter(|&v| spec.batched[v])
            .map(|v| spec.shape(v).iter().product::<usize>())
            .max()
            .unwrap_or(0) as u64;
    let all_weights = runner::weight_bytes(model);
    let strategy = match strategy {
        Strategy::Auto => {
            // Assumes every rank on one node, the case where memory is tightest.
            let (s, why) = runner::choose(model, ranks, ranks, batch)?;
            let mut line = format!("\nauto would choose {} parallel: {why}\n", s.name());
            line += &divide(model, ranks, s, batch)?;
            return Ok(line);
        }
        s => s,
    };
    let mut out = format!(
        "\n{} parallel on {ranks} ranks, batches of {batch} rows\n{:<5} {:>12} {:>16} {:>18}  {}\n",
        strategy.name(),
        "rank",
        "weights",
        "largest act.",
        "sent per batch",
        "holds"
    );
    match strategy {
        Strategy::Data | Strategy::Auto => {
            let rows = mpinfer_runtime::split::even(batch, ranks);
            for (r, n) in rows.iter().enumerate() {
                let sent = if r == 0 { 0 } else { out_row * *n as u64 };
                out += &format!(
                    "{r:<5} {:>12} {:>16} {:>18}  all nodes, {n} rows\n",
                    human_bytes(all_weights),
                    human_bytes(largest_act * *n as u64),
                    human_bytes(sent)
                );
            }
        }
        Strategy::Tensor => {
            let plan = runner::tensor_plan(model, ranks)?;
            let per_row = plan.comm_bytes_per_row();
            for r in 0..ranks {
                out += &format!(
                    "{r:<5} {:>12} {:>16} {:>18}  a 1/{ranks} slice of the convolutions and linear layers\n",
                    human_bytes(4 * plan.rank_weights[r]),
                    human_bytes(largest_act * batch as u64),
                    human_bytes(per_row * batch as u64)
                );
            }
            for line in plan.describe(model) {
                out += &format!("  {line}\n");
            }
        }
        Strategy::Pipeline => {
            let stages = runner::stages(model, ranks)?;
            for r in 0..ranks {
                let Some(stage) = stages.get(r) else {
                    out += &format!("{r:<5} {:>12} {:>16} {:>18}  no stage\n", "-", "-", "-");
                    continue;
                };
                let w: u64 = stage.clone().map(|i| 4 * params(model, i) as u64).sum();
                let sends = match stages.get(r + 1) {
                    Some(next) => runner::live_at(model, &spec, next.start),
                    None => model.outputs.clone(),
                };
                let sent_row: u64 = sends
                    .iter()
                    .map(|&v| 4 * spec.shape(v)[1..].iter().product::<usize>() as u64)
                    .sum();
                let names: Vec<&str> = stage
                    .clone()
                    .filter(|&i| spec.runs[i])
                    .map(|i| model.nodes[i].name.as_str())
                    .collect();
                let names = if names.len() > 6 {
                    format!(
                        "{} … {}",
                        names[..3].join(", "),
                        names[names.len() - 2..].join(", ")
                    )
                } else {
                    names.join(", ")
                };
                out += &format!(
                    "{r:<5} {:>12} {:>16} {:>18}  nodes {}..{} ({})\n",
                    human_bytes(w),
                    human_bytes(largest_act * batch as u64),
                    human_bytes(if stages.len() > 1 {
                        sent_row * batch as u64
                    } else {
                        0
                    }),
                    stage.start,
                    stage.end,
                    names
                );
            }
        }
    }
    Ok(out)
}
