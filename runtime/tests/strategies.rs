//! Every strategy on 1–4 ranks (threads over the in-process transport)
//! gives what one process gives, on models whose channel, feature and row
//! counts do not divide by the rank count.

mod common;

use common::{run_on, single, Collect};
use mpinfer_collectives::transport::{Counting, LocalWorld};
use mpinfer_collectives::{Communicator, Config};
use mpinfer_kernels::cpu::Unary;
use mpinfer_kernels::cpu::{Conv2d, Cpu, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::Tensor;
use mpinfer_runtime::graph::{AutoPad, Constant, Elem, Ints, Node, Op, Spatial, Value};
use mpinfer_runtime::model::{Model, Weight};
use mpinfer_runtime::run::{
    run, stages, tensor_plan, CommDType, RankWeights, RunError, RunOptions, Schedule, Strategy,
};
use mpinfer_runtime::ModelError;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn values(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn weight(rng: &mut impl Rng, name: &str, shape: Vec<usize>) -> Weight {
    let n: usize = shape.iter().product();
    let fan_in = (n / shape[0].max(1)).max(1) as f32;
    Weight::from_values(name, shape, values(rng, n, 1.0 / fan_in.sqrt()))
}

/// A node of a chain: its op and its constant inputs after the activation.
struct Layer {
    name: String,
    op: Op,
    consts: Vec<Constant>,
}

fn layer(name: &str, op: Op) -> Layer {
    Layer {
        name: name.into(),
        op,
        consts: Vec::new(),
    }
}

fn relu(name: &str) -> Layer {
    layer(name, Op::Unary(Unary::Relu))
}

fn conv(rng: &mut impl Rng, name: &str, m: usize, c: usize, k: usize, conv: Conv2d) -> Layer {
    Layer {
        name: name.into(),
        op: Op::Conv {
            conv,
            spatial: Spatial::Two,
            auto_pad: AutoPad::NotSet,
        },
        consts: vec![
            Constant::Weight(weight(rng, name, vec![m, c / conv.groups, k, k])),
            Constant::Weight(weight(rng, name, vec![m])),
        ],
    }
}

fn gemm(rng: &mut impl Rng, name: &str, k: usize, n: usize, trans_b: bool) -> Layer {
    Layer {
        name: name.into(),
        op: Op::Gemm(Gemm {
            trans_b,
            alpha: 0.75,
            ..Gemm::default()
        }),
        consts: vec![
            Constant::Weight(weight(
                rng,
                name,
                if trans_b { vec![n, k] } else { vec![k, n] },
            )),
            Constant::Weight(weight(rng, name, vec![n])),
        ],
    }
}

fn reshape(name: &str, shape: Vec<i64>) -> Layer {
    Layer {
        name: name.into(),
        op: Op::Reshape { allowzero: false },
        consts: vec![Constant::Ints(Ints::vector(shape))],
    }
}

/// The layers as a graph, each reading the one before.
fn model(layers: Vec<Layer>, sample_shape: Vec<usize>) -> Model {
    let value = |name: &str, elem, constant| Value {
        name: name.to_string(),
        elem,
        constant,
    };
    let mut values = vec![value("x", Elem::Float, None)];
    let mut nodes = Vec::new();
    for l in layers {
        let mut inputs = vec![Some(values.len() - 1)];
        for (i, c) in l.consts.into_iter().enumerate() {
            let elem = if matches!(c, Constant::Ints(_)) {
                Elem::Int
            } else {
                Elem::Float
            };
            values.push(value(&format!("{}.{i}", l.name), elem, Some(c)));
            inputs.push(Some(values.len() - 1));
        }
        values.push(value(&l.name, Elem::Float, None));
        nodes.push(Node {
            name: l.name.clone(),
            op_type: l.name,
            op: l.op,
            inputs,
            outputs: vec![values.len() - 1],
        });
    }
    Model {
        path: "test".into(),
        opset: 17,
        input: 0,
        sample_shape,
        outputs: vec![values.len() - 1],
        values,
        nodes,
    }
}

/// 3 → 7 → (depthwise 7) → 5 channels, BatchNorm folded as a row scale, a
/// strided conv, ceil-mode max pool, flatten, two linear layers, softmax.
fn conv_net() -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pad1 = Conv2d {
        pads: [1; 4],
        ..Conv2d::default()
    };
    let mut c1 = conv(&mut rng, "conv1", 7, 3, 3, pad1);
    if let Constant::Weight(weight) = &mut c1.consts[0] {
        weight.row_scale = Some(Arc::new(values(&mut rng, 7, 2.0)));
    }
    let depthwise = Conv2d {
        groups: 7,
        pads: [1, 0, 1, 0],
        ..Conv2d::default()
    };
    let strided = Conv2d {
        strides: [2, 2],
        pads: [0, 1, 1, 0],
        ..Conv2d::default()
    };
    let mut pool = Pool2d::new(PoolKind::Max, [2, 2]);
    pool.strides = [2, 2];
    pool.ceil_mode = true;
    let layers = vec![
        c1,
        relu("relu1"),
        conv(&mut rng, "dw", 7, 7, 3, depthwise),
        relu("relu2"),
        conv(&mut rng, "conv3", 5, 7, 3, strided),
        relu("relu3"),
        layer(
            "pool",
            Op::Pool {
                pool,
                spatial: Spatial::Two,
                auto_pad: AutoPad::NotSet,
            },
        ),
        reshape("flatten", vec![0, -1]),
        gemm(&mut rng, "fc1", 5 * 3 * 2, 13, true),
        relu("relu4"),
        gemm(&mut rng, "fc2", 13, 4, false),
        layer(
            "softmax",
            Op::Softmax {
                axis: -1,
                coerced: false,
            },
        ),
    ];
    model(layers, vec![3, 11, 9])
}

/// Wide then narrow convolutions, so that the narrow one reduces partial
/// sums over input channels, then global pooling and one linear layer.
fn narrowing_net() -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let layers = vec![
        conv(&mut rng, "wide", 19, 2, 3, Conv2d::default()),
        relu("relu"),
        conv(&mut rng, "narrow", 3, 19, 1, Conv2d::default()),
        layer("gap", Op::GlobalPool(PoolKind::Average)),
        layer("flatten", Op::Flatten { axis: 1 }),
        gemm(&mut rng, "fc", 3, 6, true),
    ];
    model(layers, vec![2, 7, 6])
}

fn mlp() -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let layers = vec![
        gemm(&mut rng, "fc1", 37, 50, true),
        relu("relu1"),
        gemm(&mut rng, "fc2", 50, 23, false),
        relu("relu2"),
        gemm(&mut rng, "fc3", 23, 11, true),
        layer(
            "softmax",
            Op::Softmax {
                axis: 1,
                coerced: true,
            },
        ),
    ];
    model(layers, vec![37])
}

fn input(model: &Model, rows: usize, seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape: Vec<usize> = std::iter::once(rows)
        .chain(model.sample_shape.iter().copied())
        .collect();
    let n = shape.iter().product();
    Tensor::new(shape, values(&mut rng, n, 1.0))
}

fn assert_close(got: &Tensor, want: &Tensor, rel: f32, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}: element {i} should be NaN, got {g}");
            continue;
        }
        let err = (g - w).abs();
        assert!(
            err <= rel * w.abs().max(scale * 1e-2),
            "{what}: element {i}: {g} vs {w} (error {err})"
        );
    }
}

fn opts(strategy: Strategy, batch: Option<usize>) -> RunOptions {
    RunOptions {
        strategy,
        batch_size: batch,
        ..RunOptions::default()
    }
}

#[test]
fn every_strategy_matches_one_process() {
    for (name, m, rows) in [
        ("conv net", conv_net(), 13),
        ("narrowing net", narrowing_net(), 5),
        ("mlp", mlp(), 9),
    ] {
        let x = input(&m, rows, 3);
        let want = single(&m, &x);
        for ranks in 1..=4 {
            for strategy in [
                Strategy::Data,
                Strategy::Tensor,
                Strategy::Pipeline,
                Strategy::Auto,
            ] {
                for batch in [None, Some(2)] {
                    let what = format!("{name}, {ranks} ranks, {strategy:?}, batch {batch:?}");
                    let (got, computed) = run_on(ranks, &m, &x, &opts(strategy, batch));
                    assert_close(&got, &want, 1e-5, &what);
                    if strategy == Strategy::Data {
                        assert_eq!(computed.iter().sum::<usize>(), rows, "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn data_parallel_rows_follow_rank_weights_to_the_bit() {
    let m = conv_net();
    let x = input(&m, 300, 5);
    // Rows go out in whole blocks of 64: 5 blocks (the last of 44 rows).
    let (equal, computed) = run_on(3, &m, &x, &opts(Strategy::Data, Some(100)));
    assert_eq!(computed, vec![128, 128, 44]);
    let weighted = RunOptions {
        rank_weights: RankWeights::Listed(vec![1.0, 1.0, 2.0]),
        ..opts(Strategy::Data, Some(100))
    };
    let (got, computed) = run_on(3, &m, &x, &weighted);
    assert_eq!(computed, vec![64, 64, 172]);
    assert_eq!(got.data, equal.data, "row placement must not change a bit");
    let dynamic = RunOptions {
        schedule: Schedule::Dynamic,
        ..opts(Strategy::Data, Some(20))
    };
    for ranks in [1, 2, 4] {
        let (got, _) = run_on(ranks, &m, &x, &dynamic);
        assert_eq!(got.data, equal.data, "{ranks} ranks");
    }
    let mlp = mlp();
    let x = input(&mlp, 37, 1);
    let (one, _) = run_on(1, &mlp, &x, &opts(Strategy::Data, Some(5)));
    for ranks in 2..=4 {
        let (got, _) = run_on(ranks, &mlp, &x, &opts(Strategy::Data, Some(1)));
        assert_eq!(got.data, one.data, "{ranks} ranks");
    }
}

#[test]
fn a_nan_in_one_sample_stays_in_its_row() {
    for m in [conv_net(), mlp()] {
        let mut x = input(&m, 6, 9);
        let per = x.data.len() / 6;
        x.data[3 * per + 1] = f32::NAN;
        for strategy in [Strategy::Data, Strategy::Tensor, Strategy::Pipeline] {
            let (y, _) = run_on(3, &m, &x, &opts(strategy, Some(2)));
            let out = y.data.len() / 6;
            for (r, row) in y.data.chunks(out).enumerate() {
                assert_eq!(
                    row.iter().any(|v| v.is_nan()),
                    r == 3,
                    "{strategy:?}: row {r}: {row:?}"
                );
            }
        }
    }
}

#[test]
fn zero_rows_give_an_empty_output() {
    let m = conv_net();
    let x = input(&m, 0, 1);
    for strategy in [Strategy::Data, Strategy::Tensor, Strategy::Pipeline] {
        let (y, _) = run_on(2, &m, &x, &opts(strategy, None));
        assert_eq!(y.shape, vec![0, 4], "{strategy:?}");
    }
}

#[test]
fn reduced_precision_traffic_stays_near_full_precision() {
    let m = mlp();
    let x = input(&m, 7, 2);
    let want = single(&m, &x);
    for comm_dtype in [CommDType::BF16, CommDType::F16] {
        let o = RunOptions {
            comm_dtype,
            ..opts(Strategy::Tensor, None)
        };
        let (got, _) = run_on(3, &m, &x, &o);
        assert_close(&got, &want, 2e-2, &format!("{comm_dtype:?}"));
        assert!(
            got.data != want.data,
            "{comm_dtype:?} traffic should round something"
        );
    }
}

#[test]
fn tensor_plan_splits_weights_and_pairs_linear_layers() {
    let m = mlp();
    let plan = tensor_plan(&m, 3).unwrap();
    let total: u64 = plan.rank_weights.iter().sum();
    let whole: u64 = m.weights().iter().map(|w| w.len() as u64).sum();
    // Every weight value is held once, except the biases of row-parallel
    // layers, which every rank adds after the reduce.
    assert_eq!(total, whole + 2 * 23);
    let max = *plan.rank_weights.iter().max().unwrap();
    assert!(max as f64 <= whole as f64 / 3.0 * 1.2, "{plan:?}");
}

#[test]
fn pipeline_stages_balance_flops() {
    let m = mlp();
    let s = stages(&m, 3).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].start, 0);
    assert_eq!(s[2].end, m.nodes.len());
    for w in s.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    // fc1 (37·50) outweighs fc2 + fc3 (50·23 + 23·11): it gets a stage alone.
    assert_eq!(s[0], 0..1);
    assert_eq!(stages(&m, 10).unwrap().len(), m.nodes.len());
}

#[test]
fn input_normalisation_is_applied_on_every_rank_shard() {
    let m = conv_net();
    let x = input(&m, 11, 4);
    let (mean, std) = (vec![0.5, -0.25, 0.1], vec![2.0, 0.5, 4.0]);
    let mut normalised = x.clone();
    let plane = 11 * 9;
    for (i, v) in normalised.data.iter_mut().enumerate() {
        let c = (i / plane) % 3;
        *v = (*v - mean[c]) / std[c];
    }
    let want = single(&m, &normalised);
    for strategy in [Strategy::Data, Strategy::Tensor, Strategy::Pipeline] {
        let o = RunOptions {
            mean: Some(mean.clone()),
            std: Some(std.clone()),
            ..opts(strategy, Some(4))
        };
        let (got, _) = run_on(3, &m, &x, &o);
        assert_close(&got, &want, 1e-5, &format!("{strategy:?}"));
    }
}

#[test]
fn options_that_cannot_apply_are_refused_by_name() {
    let m = conv_net();
    let x = input(&m, 4, 1);
    let refused = |ranks: usize, o: RunOptions| -> RunError {
        let mut errors = LocalWorld::run(ranks, |t| {
            let comm = Communicator::new(Counting::new(t), Config::default());
            run(&comm, &m, &Cpu::new(1), &x, &mut Collect::default(), &o)
                .expect_err("options accepted")
        });
        errors.swap_remove(0)
    };
    let e = refused(
        2,
        RunOptions {
            rank_weights: RankWeights::Listed(vec![1.0, 1.0, 2.0]),
            ..RunOptions::default()
        },
    );
    assert!(
        matches!(
            e,
            RunError::RankWeightCount {
                listed: 3,
                ranks: 2
            }
        ),
        "{e:?}"
    );
    let e = refused(1, opts(Strategy::Tensor, Some(0)));
    assert!(matches!(e, RunError::ZeroBatch), "{e:?}");
    // conv_net's input has 3 channels: 1 or 3 values, not 2.
    let e = refused(
        1,
        RunOptions {
            mean: Some(vec![0.0, 0.0]),
            std: Some(vec![1.0, 1.0]),
            ..RunOptions::default()
        },
    );
    assert!(
        matches!(
            e,
            RunError::ChannelCount {
                option: "--mean",
                values: 2,
                channels: 3
            }
        ),
        "{e:?}"
    );
    let e = refused(
        1,
        RunOptions {
            mean: Some(vec![0.0]),
            ..RunOptions::default()
        },
    );
    assert!(matches!(e, RunError::UnpairedNormalization), "{e:?}");
    let e = refused(
        1,
        RunOptions {
            mean: Some(vec![0.0]),
            std: Some(vec![1.0, 0.0, 1.0]),
            ..RunOptions::default()
        },
    );
    assert!(matches!(e, RunError::ZeroStd), "{e:?}");
}

#[test]
fn a_fixed_reshape_target_refuses_another_batch() {
    let m = model(vec![reshape("fixed", vec![2, 12])], vec![3, 4]);
    assert_eq!(m.spec(2).unwrap().shape(m.outputs[0]), [2, 12]);
    let e = m.spec(3).unwrap_err();
    assert!(
        matches!(&e, ModelError::Node { node, message, .. }
            if node == "fixed" && message.contains("cannot reshape [3, 3, 4] to [2, 12]")),
        "{e:?}"
    );
    // Loading checks two batch sizes, so such a model is refused by name.
    let e = m.check_batch_axis().unwrap_err();
    assert!(e.to_string().contains("fixed"), "{e}");
}
