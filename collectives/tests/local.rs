//! Every algorithm × element type × op against a reference written here, on
//! ranks that are threads of this process, for awkward rank counts and sizes.

use mpinfer_collectives::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const RANKS: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16];

fn counts_for(p: usize) -> Vec<usize> {
    let mut c = vec![0, 1, p.saturating_sub(1), p, 1000, 65539];
    c.dedup();
    c
}

/// Inputs of every rank, drawn by [`Reference::sample`].
fn inputs<E: Reference>(p: usize, n: usize, op: ReduceOp, seed: u64) -> Vec<Vec<E>> {
    (0..p)
        .map(|r| {
            let mut rng = StdRng::seed_from_u64(seed ^ ((r as u64) << 32) ^ n as u64);
            (0..n).map(|_| E::sample(&mut rng, op)).collect()
        })
        .collect()
}

/// What a reduction must give, worked out here rather than with the
/// library's `combine`: in f64 for floats (16-bit ones widened), in i128
/// wrapped to the type's width for integers, the semantics `Element`
/// documents (wrapping sum and product; `Avg` divides the wrapped sum,
/// rounding toward zero).
trait Reference: Element {
    fn sample(rng: &mut StdRng, op: ReduceOp) -> Self;
    /// Panics, naming `what` and the element, where `got` is not the
    /// reduction of `inputs`.
    fn assert_reduced(got: &[Self], inputs: &[Vec<Self>], op: ReduceOp, what: &str);
}

/// Float inputs: sums and averages over [-1, 1], products near 1 so that
/// sixteen of them stay well inside every type's range, and for min and max
/// now and then an infinity or a zero of either sign.
fn float_sample(rng: &mut StdRng, op: ReduceOp) -> f64 {
    match op {
        ReduceOp::Prod => rng.gen_range(0.9..1.1),
        ReduceOp::Min | ReduceOp::Max => match rng.gen_range(0..64) {
            0 => f64::INFINITY,
            1 => f64::NEG_INFINITY,
            2 => 0.0,
            3 => -0.0,
            _ => rng.gen_range(-1.0..1.0),
        },
        _ => rng.gen_range(-1.0..1.0),
    }
}

/// Exact for min and max; within p + 1 roundings of `eps` of the
/// magnitudes involved for the rest.
fn assert_float_reduced(got: &[f64], inputs: &[Vec<f64>], op: ReduceOp, eps: f64, what: &str) {
    assert_eq!(got.len(), inputs[0].len(), "{what}: length");
    let p = inputs.len() as f64;
    for (i, &g) in got.iter().enumerate() {
        let xs = inputs.iter().map(|v| v[i]);
        let (want, bound) = match op {
            ReduceOp::Min => (xs.fold(f64::INFINITY, f64::min), 0.0),
            ReduceOp::Max => (xs.fold(f64::NEG_INFINITY, f64::max), 0.0),
            ReduceOp::Prod => {
                let w = xs.product::<f64>();
                (w, (p + 1.0) * eps * w.abs())
            }
            ReduceOp::Sum => {
                let scale: f64 = inputs.iter().map(|v| v[i].abs()).sum();
                (xs.sum(), (p + 1.0) * eps * scale + 1e-30)
            }
            ReduceOp::Avg => {
                let scale = inputs.iter().map(|v| v[i].abs()).sum::<f64>() / p;
                (xs.sum::<f64>() / p, (p + 1.0) * eps * scale + 1e-30)
            }
        };
        let ok = if bound == 0.0 {
            g == want
        } else {
            (g - want).abs() <= bound
        };
        assert!(
            ok,
            "{what}: element {i} = {g} but reference {want} (bound {bound:e})"
        );
    }
}

macro_rules! float_reference {
    ($t:ty, $eps:expr, $from:expr, $wide:expr) => {
        impl Reference for $t {
            fn sample(rng: &mut StdRng, op: ReduceOp) -> Self {
                $from(float_sample(rng, op))
            }
            fn assert_reduced(got: &[Self], inputs: &[Vec<Self>], op: ReduceOp, what: &str) {
                let wide = |v: &[Self]| v.iter().map(|&x| $wide(x)).collect::<Vec<f64>>();
                let inputs: Vec<Vec<f64>> = inputs.iter().map(|v| wide(v)).collect();
                assert_float_reduced(&wide(got), &inputs, op, $eps, what);
            }
        }
    };
}
float_reference!(f32, f64::from(f32::EPSILON), |v| v as f32, f64::from);
float_reference!(f64, f64::EPSILON, |v| v, |v| v);
float_reference!(f16, 2f64.powi(-10), f16::from_f64, f16::to_f64);
float_reference!(bf16, 2f64.powi(-7), bf16::from_f64, bf16::to_f64);

/// Exact, element by element, against `reduce` of every rank's value.
fn assert_int_reduced<E: Element + Into<i128>>(
    got: &[E],
    inputs: &[Vec<E>],
    reduce: impl Fn(&mut dyn Iterator<Item = i128>) -> i128,
    what: &str,
) {
    assert_eq!(got.len(), inputs[0].len(), "{what}: length");
    for (i, &g) in got.iter().enumerate() {
        let want = reduce(&mut inputs.iter().map(|v| v[i].into()));
        assert_eq!(g.into(), want, "{what}: element {i}");
    }
}

macro_rules! int_reference {
    ($t:ty) => {
        impl Reference for $t {
            /// The whole range: sums and products wrap, signs mix.
            fn sample(rng: &mut StdRng, _: ReduceOp) -> Self {
                rng.gen()
            }
            fn assert_reduced(got: &[Self], inputs: &[Vec<Self>], op: ReduceOp, what: &str) {
                let wrap = |v: i128| i128::from(v as $t);
                let p = inputs.len() as i128;
                let reduce = |xs: &mut dyn Iterator<Item = i128>| match op {
                    ReduceOp::Sum => wrap(xs.fold(0, i128::wrapping_add)),
                    ReduceOp::Prod => wrap(xs.fold(1, i128::wrapping_mul)),
                    ReduceOp::Min => xs.min().unwrap(),
                    ReduceOp::Max => xs.max().unwrap(),
                    ReduceOp::Avg => wrap(xs.fold(0, i128::wrapping_add)) / p,
                };
                assert_int_reduced(got, inputs, reduce, what);
            }
        }
    };
}
int_reference!(i32);
int_reference!(i64);
int_reference!(u8);

fn assert_reduced<E: Reference>(got: &[E], inputs: &[Vec<E>], op: ReduceOp, what: &str) {
    E::assert_reduced(got, inputs, op, what)
}

fn comm(t: LocalTransport) -> Communicator<LocalTransport> {
    Communicator::new(t, Config::default())
}

fn allreduce_all<E: Reference>() {
    for p in RANKS {
        for n in counts_for(p) {
            for op in ReduceOp::ALL {
                let data = inputs::<E>(p, n, op, 7);
                for &algo in AllreduceAlgo::CONCRETE {
                    let what = format!("allreduce {algo} {} {op} p={p} n={n}", E::DTYPE);
                    let results = LocalWorld::run(p, |t| {
                        let c = comm(t);
                        let mine = &data[c.rank()];
                        let mut a = mine.clone();
                        let opts = Opts::default().algorithm(algo);
                        c.allreduce(&mut a, op, opts).unwrap();
                        let mut b = vec![E::zeroed(); n];
                        c.allreduce(&mut b, op, opts.send(mine)).unwrap();
                        assert!(a == b, "{what}: out of place differs from in place");
                        let mut again = mine.clone();
                        c.allreduce(&mut again, op, opts).unwrap();
                        assert!(a == again, "{what}: a repeated run gave different bits");
                        a
                    });
                    assert_reduced(&results[0], &data, op, &what);
                    for (r, res) in results.iter().enumerate() {
                        assert!(res == &results[0], "{what}: rank {r} disagrees with rank 0");
                    }
                }
            }
        }
    }
}

#[test]
fn allreduce_f32() {
    allreduce_all::<f32>();
}
#[test]
fn allreduce_f64() {
    allreduce_all::<f64>();
}
#[test]
fn allreduce_f16() {
    allreduce_all::<f16>();
}
#[test]
fn allreduce_bf16() {
    allreduce_all::<bf16>();
}
#[test]
fn allreduce_i32() {
    allreduce_all::<i32>();
}
#[test]
fn allreduce_i64() {
    allreduce_all::<i64>();
}
#[test]
fn allreduce_u8() {
    allreduce_all::<u8>();
}

fn reduce_all<E: Reference>() {
    for p in RANKS {
        for n in counts_for(p) {
            for op in ReduceOp::ALL {
                let data = inputs::<E>(p, n, op, 11);
                let root = (n + 3) % p;
                for &algo in ReduceAlgo::CONCRETE {
                    let what = format!("reduce {algo} {} {op} p={p} n={n} root={root}", E::DTYPE);
                    let results = LocalWorld::run(p, |t| {
                        let c = comm(t);
                        let mut buf = data[c.rank()].clone();
                        let opts = Opts::default().root(root).algorithm(algo);
                        c.reduce(&mut buf, op, opts).unwrap();
                        let mut out = if c.rank() == root {
                            vec![E::zeroed(); n]
                        } else {
                            Vec::new()
                        };
                        c.reduce(&mut out, op, opts.send(&data[c.rank()])).unwrap();
                        (buf, out)
                    });
                    assert_reduced(&results[root].0, &data, op, &what);
                    assert_reduced(
                        &results[root].1,
                        &data,
                        op,
                        &format!("{what} (out of place)"),
                    );
                }
            }
        }
    }
}

#[test]
fn reduce_every_type() {
    reduce_all::<f32>();
    reduce_all::<f64>();
    reduce_all::<f16>();
    reduce_all::<bf16>();
    reduce_all::<i32>();
    reduce_all::<i64>();
    reduce_all::<u8>();
}

fn reduce_scatter_all<E: Reference>() {
    for p in RANKS {
        for n in counts_for(p) {
            for op in ReduceOp::ALL {
                // Uneven blocks, some empty: block i gets a share skewed by i.
                let weights: Vec<usize> = (0..p).map(|i| (i * 7 + 3) % 5).collect();
                let total_w: usize = weights.iter().sum::<usize>().max(1);
                let mut counts: Vec<usize> = weights.iter().map(|w| n * w / total_w).collect();
                counts[0] += n - counts.iter().sum::<usize>();
                let data = inputs::<E>(p, n, op, 13);
                let what = format!("reduce_scatter {} {op} p={p} n={n}", E::DTYPE);
                let results = LocalWorld::run(p, |t| {
                    let c = comm(t);
                    let mut out = vec![E::zeroed(); counts[c.rank()]];
                    let opts = Opts::default().counts(&counts);
                    c.reduce_scatter(&mut out, op, opts.send(&data[c.rank()]))
                        .unwrap();
                    let mut inplace = data[c.rank()].clone();
                    c.reduce_scatter(&mut inplace, op, opts).unwrap();
                    let start: usize = counts[..c.rank()].iter().sum();
                    assert!(
                        out.as_slice() == &inplace[start..start + out.len()],
                        "{what}: in place differs"
                    );
                    out
                });
                let mut joined = Vec::new();
                results.iter().for_each(|r| joined.extend_from_slice(r));
                assert_reduced(&joined, &data, op, &what);
            }
        }
    }
}

#[test]
fn reduce_scatter_every_type() {
    reduce_scatter_all::<f32>();
    reduce_scatter_all::<f64>();
    reduce_scatter_all::<f16>();
    reduce_scatter_all::<bf16>();
    reduce_scatter_all::<i32>();
    reduce_scatter_all::<i64>();
    reduce_scatter_all::<u8>();
}

/// Per-rank counts for uneven blocks, with empty ranks.
fn uneven(p: usize, n: usize) -> Vec<usize> {
    (0..p)
        .map(|r| {
            if r % 3 == 1 {
                0
            } else {
                (n / p + r % 4).min(n)
            }
        })
        .collect()
}

fn movement_all<E: Reference>() {
    for p in RANKS {
        for n in counts_for(p) {
            let data = inputs::<E>(p, n, ReduceOp::Sum, 17);
            let root = (n + 1) % p;
            // allgather, even and uneven
            for &algo in AllgatherAlgo::CONCRETE {
                let what = format!("allgather {algo} {} p={p} n={n}", E::DTYPE);
                let counts = uneven(p, n);
                let results = LocalWorld::run(p, |t| {
                    let c = comm(t);
                    let mut even = vec![E::zeroed(); p * n];
                    let opts = Opts::default().algorithm(algo);
                    c.allgather(&mut even, opts.send(&data[c.rank()])).unwrap();
                    let mine = &data[c.rank()][..counts[c.rank()]];
                    let mut v = vec![E::zeroed(); counts.iter().sum()];
                    c.allgather(&mut v, opts.send(mine).counts(&counts))
                        .unwrap();
                    // In place: this rank's block already sits in the buffer.
                    let mut inplace = vec![E::zeroed(); v.len()];
                    let start: usize = counts[..c.rank()].iter().sum();
                    inplace[start..start + mine.len()].copy_from_slice(mine);
                    c.allgather(&mut inplace, opts.counts(&counts)).unwrap();
                    assert!(inplace == v, "{what}: in place differs");
                    (even, v)
                });
                let want_even: Vec<E> = data.concat();
                let want_v: Vec<E> = (0..p).flat_map(|r| data[r][..counts[r]].to_vec()).collect();
                for (r, (even, v)) in results.iter().enumerate() {
                    assert!(even == &want_even, "{what}: rank {r} even");
                    assert!(v == &want_v, "{what}: rank {r} uneven");
                }
            }
            // broadcast
            for &algo in BroadcastAlgo::CONCRETE {
                let what = format!("broadcast {algo} {} p={p} n={n} root={root}", E::DTYPE);
                let results = LocalWorld::run(p, |t| {
                    let c = comm(t);
                    let mut buf = data[c.rank()].clone();
                    c.broadcast(&mut buf, Opts::default().root(root).algorithm(algo))
                        .unwrap();
                    buf
                });
                for (r, b) in results.iter().enumerate() {
                    assert!(b == &data[root], "{what}: rank {r}");
                }
            }
            // uneven gather, then scatter of the gathered vector back to its owners
            let counts = uneven(p, n);
            let want_g: Vec<E> = (0..p).flat_map(|r| data[r][..counts[r]].to_vec()).collect();
            let results = LocalWorld::run(p, |t| {
                let c = comm(t);
                let r = c.rank();
                let mut g = if r == root {
                    vec![E::zeroed(); want_g.len()]
                } else {
                    vec![]
                };
                let opts = Opts::default().root(root).counts(&counts);
                c.gather(&data[r][..counts[r]], &mut g, opts).unwrap();
                let src = if r == root { want_g.clone() } else { vec![] };
                let mut back = vec![E::zeroed(); counts[r]];
                c.scatter(&src, &mut back, Opts::default().root(root).counts(&counts))
                    .unwrap();
                (g, back)
            });
            assert!(
                results[root].0 == want_g,
                "uneven gather {} p={p} n={n}",
                E::DTYPE
            );
            for (r, res) in results.iter().enumerate() {
                assert!(
                    res.1.as_slice() == &data[r][..counts[r]],
                    "uneven scatter {} p={p} n={n} rank {r}",
                    E::DTYPE
                );
            }
        }
    }
}

#[test]
fn data_movement_every_type() {
    movement_all::<f32>();
    movement_all::<f64>();
    movement_all::<f16>();
    movement_all::<bf16>();
    movement_all::<i32>();
    movement_all::<i64>();
    movement_all::<u8>();
}

#[test]
fn barrier_orders_ranks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for p in RANKS {
        let arrived = AtomicUsize::new(0);
        LocalWorld::run(p, |t| {
            let c = comm(t);
            for round in 1..=3 {
                arrived.fetch_add(1, Ordering::SeqCst);
                c.barrier().unwrap();
                // Nobody leaves a barrier before everyone has entered it.
                assert!(arrived.load(Ordering::SeqCst) >= round * p);
                c.barrier().unwrap();
            }
        });
    }
}

#[test]
fn wrong_lengths_and_roots_are_errors() {
    LocalWorld::run(2, |t| {
        let c = comm(t);
        let mut out = vec![0f32; 3];
        let e = c
            .allgather(&mut out, Opts::default().send(&[1.0f32, 2.0]))
            .unwrap_err();
        assert!(e.to_string().contains("expected 4"), "{e}");
        let e = c.broadcast(&mut out, Opts::default().root(5)).unwrap_err();
        assert!(e.to_string().contains("root 5 is out of range"), "{e}");
        let e = c
            .allgather(&mut out, Opts::default().send(&[1.0f32]).counts(&[1, 1, 1]))
            .unwrap_err();
        assert!(e.to_string().contains("3 entries for 2 ranks"), "{e}");
    });
}

#[test]
fn even_blocks_in_place_split_the_buffer_first_blocks_longer() {
    for p in [2, 3, 5] {
        for n in [0usize, 1, 7, 64] {
            // Block r of the near-even split: the first n % p blocks one longer.
            let counts: Vec<usize> = (0..p).map(|r| n / p + usize::from(r < n % p)).collect();
            let data = inputs::<i64>(p, n, ReduceOp::Sum, 29);
            LocalWorld::run(p, |t| {
                let c = comm(t);
                let mine = &data[c.rank()];
                let mut even = mine.clone();
                c.allgather(&mut even, Opts::default()).unwrap();
                let mut listed = mine.clone();
                c.allgather(&mut listed, Opts::default().counts(&counts))
                    .unwrap();
                assert_eq!(even, listed, "allgather p={p} n={n}");
                let mut even = mine.clone();
                c.reduce_scatter(&mut even, ReduceOp::Sum, Opts::default())
                    .unwrap();
                let mut listed = mine.clone();
                let opts = Opts::default().counts(&counts);
                c.reduce_scatter(&mut listed, ReduceOp::Sum, opts).unwrap();
                let start: usize = counts[..c.rank()].iter().sum();
                let block = start..start + counts[c.rank()];
                assert_eq!(
                    even[block.clone()],
                    listed[block],
                    "reduce_scatter p={p} n={n}"
                );
            });
        }
    }
}

#[test]
fn algorithm_names_parse_and_unknown_ones_are_listed() {
    assert_eq!(
        "ring".parse::<AllreduceAlgo>().unwrap(),
        AllreduceAlgo::Ring
    );
    assert_eq!(
        "Recursive-Doubling".parse::<AllgatherAlgo>().unwrap(),
        AllgatherAlgo::RecursiveDoubling
    );
    let e = "tree".parse::<AllreduceAlgo>().unwrap_err();
    assert!(e.contains("rabenseifner"), "{e}");
    let env = |k: &str| match k {
        "MPINFER_ALLREDUCE" => Some("ring".to_string()),
        "MPINFER_SEGMENT_BYTES" => Some("64K".to_string()),
        "MPINFER_CHECK" => Some("1".to_string()),
        _ => None,
    };
    let c = Config::from_lookup(env).unwrap();
    assert_eq!(c.allreduce, AllreduceAlgo::Ring);
    assert_eq!(c.tuning.segment_bytes, 64 << 10);
    assert!(c.check);
    let e = Config::from_lookup(|k| (k == "MPINFER_REDUCE").then(|| "nope".into())).unwrap_err();
    assert!(e.starts_with("MPINFER_REDUCE:"), "{e}");
}

#[test]
fn small_segments_still_pipeline_correctly() {
    // Many segments per block, including blocks shorter than the segment count.
    for p in [2, 3, 5] {
        for n in [7usize, 1000, 4099] {
            let data = inputs::<f32>(p, n, ReduceOp::Sum, 23);
            let results = LocalWorld::run(p, |t| {
                let mut cfg = Config::default();
                cfg.tuning.segment_bytes = 64;
                let c = Communicator::new(t, cfg);
                let mut a = data[c.rank()].clone();
                let ring = Opts::default().algorithm(AllreduceAlgo::Ring);
                c.allreduce(&mut a, ReduceOp::Sum, ring).unwrap();
                a
            });
            assert_reduced(
                &results[0],
                &data,
                ReduceOp::Sum,
                &format!("segmented ring p={p} n={n}"),
            );
        }
    }
}
