//! What the kernel tests share: random tensors, f64 references for
//! convolution, GEMM and pooling written straight from the ONNX definitions,
//! and one comparison.

// Each test binary uses its own share of these.
#![allow(dead_code)]

use mpinfer_kernels::cpu::{Conv2d, Gemm, Pool2d, PoolKind};
use mpinfer_kernels::Tensor;
use rand::rngs::StdRng;
use rand::Rng;

/// Values uniform in [-1, 1).
pub fn random(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
    )
}

/// Elementwise `|got - want| <= rel * scale + 1e-6`, `scale` being the sum
/// of the magnitudes that produced each element (or whatever magnitude the
/// error is relative to); NaN must meet NaN, and infinities must match
/// exactly.
pub fn assert_close(got: &[f32], want: &[f64], scale: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(scale.len(), want.len(), "{what}: scales");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let g = *g as f64;
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == *w
        } else {
            (g - w).abs() <= rel * s + 1e-6
        };
        assert!(
            ok,
            "{what}: element {i} is {g}, want {w} (error {:e}, scale {s})",
            (g - w).abs()
        );
    }
}

/// [`assert_close`] for two tensors of one shape, `want` computed in f32.
pub fn assert_close_tensors(got: &Tensor, want: &Tensor, scale: &[f32], rel: f64, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let widen = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
    assert_close(&got.data, &widen(&want.data), &widen(scale), rel, what);
}

/// Convolution in f64: the output's shape, values and per-element sums of
/// the magnitudes of the terms.
pub fn conv_reference(
    x: &Tensor,
    w: &Tensor,
    b: Option<&[f32]>,
    p: &Conv2d,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let [n, c, h, wd] = x.shape[..] else { panic!() };
    let [m, cg, kh, kw] = w.shape[..] else {
        panic!()
    };
    let g = p.groups;
    let oh = (h + p.pads[0] + p.pads[2] - p.dilations[0] * (kh - 1) - 1) / p.strides[0] + 1;
    let ow = (wd + p.pads[1] + p.pads[3] - p.dilations[1] * (kw - 1) - 1) / p.strides[1] + 1;
    let mut out = vec![0f64; n * m * oh * ow];
    let mut scale = vec![0f64; out.len()];
    for img in 0..n {
        for oc in 0..m {
            let grp = oc / (m / g);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[oc] as f64);
                    let mut mag = acc.abs();
                    for ic in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (oy * p.strides[0] + i * p.dilations[0]) as isize
                                    - p.pads[0] as isize;
                                let xx = (ox * p.strides[1] + j * p.dilations[1]) as isize
                                    - p.pads[1] as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                let xv = x.data[((img * c + grp * cg + ic) * h + y as usize) * wd
                                    + xx as usize] as f64;
                                let wv = w.data[((oc * cg + ic) * kh + i) * kw + j] as f64;
                                acc += xv * wv;
                                mag += (xv * wv).abs();
                            }
                        }
                    }
                    let at = ((img * m + oc) * oh + oy) * ow + ox;
                    out[at] = if p.relu { acc.max(0.0) } else { acc };
                    scale[at] = mag;
                }
            }
        }
    }
    (vec![n, m, oh, ow], out, scale)
}

/// `op` on `a`, `b` and `c` in f64: the values of `[M, N]` and per-element
/// sums of the magnitudes of the terms.
pub fn gemm_reference(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    op: &Gemm,
) -> (Vec<f64>, Vec<f64>) {
    let (m, k) = if op.trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let n = if op.trans_b { b.shape[0] } else { b.shape[1] };
    let (alpha, beta) = (op.alpha as f64, op.beta as f64);
    let mut want = vec![0f64; m * n];
    let mut scale = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            let mut mag = 0f64;
            for t in 0..k {
                let av = if op.trans_a {
                    a.data[t * m + i]
                } else {
                    a.data[i * k + t]
                } as f64;
                let bv = if op.trans_b {
                    b.data[j * k + t]
                } else {
                    b.data[t * n + j]
                } as f64;
                acc += av * bv;
                mag += (av * bv).abs();
            }
            acc *= alpha;
            mag *= alpha.abs();
            if let Some(c) = c {
                // Unidirectional broadcast of C to [M, N].
                let cv = match c.shape.as_slice() {
                    [] => c.data[0],
                    [_] => c.data[j % c.data.len()],
                    [rows, cols] => c.data[(i % rows) * cols + j % cols],
                    s => panic!("C of shape {s:?}"),
                } as f64;
                acc += beta * cv;
                mag += (beta * cv).abs();
            }
            want[i * n + j] = if op.relu { acc.max(0.0) } else { acc };
            scale[i * n + j] = mag;
        }
    }
    (want, scale)
}

/// Pooling in f64: the output's shape and values.
pub fn pool_reference(x: &Tensor, p: &Pool2d) -> (Vec<usize>, Vec<f64>) {
    let [n, c, h, w] = x.shape[..] else { panic!() };
    // PyTorch's documented output size, with its rule that the last window
    // must start inside the input or the left padding.
    let size = |len: usize, axis: usize| {
        let (k, s, d, lo, hi) = (
            p.kernel[axis],
            p.strides[axis],
            p.dilations[axis],
            p.pads[axis],
            p.pads[axis + 2],
        );
        let num = (len + lo + hi) as f64 - (d * (k - 1)) as f64 - 1.0;
        let mut out = if p.ceil_mode {
            (num / s as f64).ceil()
        } else {
            (num / s as f64).floor()
        } as usize
            + 1;
        if p.ceil_mode && (out - 1) * s >= len + lo {
            out -= 1;
        }
        out
    };
    let (oh, ow) = (size(h, 0), size(w, 1));
    let mut out = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut vals = Vec::new();
                let mut in_padded = 0;
                for i in 0..p.kernel[0] {
                    for j in 0..p.kernel[1] {
                        let y =
                            (oy * p.strides[0] + i * p.dilations[0]) as isize - p.pads[0] as isize;
                        let xx =
                            (ox * p.strides[1] + j * p.dilations[1]) as isize - p.pads[1] as isize;
                        if y < (h + p.pads[2]) as isize && xx < (w + p.pads[3]) as isize {
                            in_padded += 1;
                        }
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            vals.push(x.data[(plane * h + y as usize) * w + xx as usize] as f64);
                        }
                    }
                }
                out.push(match p.kind {
                    PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Average => {
                        let div = if p.count_include_pad {
                            in_padded
                        } else {
                            vals.len()
                        };
                        vals.iter().sum::<f64>() / div as f64
                    }
                });
            }
        }
    }
    (vec![n, c, oh, ow], out)
}
