//! Running a model the ways the tests compare: on 1–4 ranks over the
//! in-process transport, or whole in this process.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use mpinfer_collectives::transport::{Counting, LocalWorld};
use mpinfer_collectives::{Communicator, Config};
use mpinfer_kernels::cpu::Cpu;
use mpinfer_kernels::{StoredDType, Tensor};
use mpinfer_runtime::exec::{load_program, Operand, Program};
use mpinfer_runtime::graph::Spec;
use mpinfer_runtime::model::Model;
use mpinfer_runtime::run::{run, Exec, Outputs, RunError, RunOptions};
use mpinfer_runtime::ModelError;

#[derive(Default)]
pub struct Collect {
    rows: Vec<(usize, Tensor)>,
    computed: usize,
}

impl Outputs for Collect {
    fn computed(&mut self, _first: usize, y: &Tensor) -> Result<(), RunError> {
        self.computed += y.shape[0];
        Ok(())
    }
    fn collected(&mut self, first: usize, y: &Tensor) -> Result<(), RunError> {
        self.rows.push((first, y.clone()));
        Ok(())
    }
}

/// Rank 0's output rows in order, and how many rows each rank computed.
pub fn run_on(ranks: usize, model: &Model, x: &Tensor, opts: &RunOptions) -> (Tensor, Vec<usize>) {
    let cpu = Cpu::new(1);
    run_with(ranks, model, Exec::Cpu(&cpu), x, opts)
}

/// Rank 0's output rows in order, every rank running on `exec`.
pub fn run_on_device(
    ranks: usize,
    model: &Model,
    exec: Exec<'_>,
    x: &Tensor,
    opts: &RunOptions,
) -> Tensor {
    run_with(ranks, model, exec, x, opts).0
}

fn run_with(
    ranks: usize,
    model: &Model,
    exec: Exec<'_>,
    x: &Tensor,
    opts: &RunOptions,
) -> (Tensor, Vec<usize>) {
    let results = LocalWorld::run(ranks, |t| {
        let comm = Communicator::new(Counting::new(t), Config::default());
        let mut out = Collect::default();
        run(&comm, model, exec, x, &mut out, opts).expect("run");
        (out.rows, out.computed)
    });
    let computed = results.iter().map(|r| r.1).collect();
    let rows = &results[0].0;
    let mut next = 0;
    let mut data = Vec::new();
    for (first, y) in rows {
        assert_eq!(*first, next, "rows arrive in input order");
        next += y.shape[0];
        data.extend_from_slice(&y.data);
    }
    assert_eq!(next, x.shape[0], "every row reaches rank 0");
    let mut shape = rows[0].1.shape.clone();
    shape[0] = next;
    (Tensor::new(shape, data), computed)
}

/// Every node of `model` whole, loaded as one rank alone loads it, and the
/// model at `batch` rows.
pub fn whole_program(model: &Model, batch: usize) -> (Program, Spec) {
    let spec = model.spec(batch).unwrap();
    let all: Vec<usize> = (0..model.nodes.len()).collect();
    let cpu = Cpu::new(1);
    let program = load_program(
        model,
        &spec,
        &all,
        model.outputs.clone(),
        StoredDType::F32,
        &cpu,
    )
    .unwrap();
    (program, spec)
}

/// The whole model in this process, on one thread, with no collectives.
pub fn single(model: &Model, x: &Tensor) -> Tensor {
    let (program, spec) = whole_program(model, x.shape[0]);
    let mut no_comm = |_: usize, _: Operand<'_>| -> Result<(), ModelError> { unreachable!() };
    let mut ys = program
        .run(
            &Cpu::new(1),
            model,
            &spec,
            vec![(model.input, x.clone())],
            &mut no_comm,
        )
        .unwrap();
    ys.swap_remove(0)
}
