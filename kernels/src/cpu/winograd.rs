//! 3×3, stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, 2015): each 2×2 output tile costs 16 multiplications per
//! input channel instead of 36, done as 16 GEMMs of [M × C] · [C × tiles].
//! The transforms add a few additions per element; the tests hold the result
//! to the same bound as the direct convolution (1e-5 of the summed
//! magnitudes) and to ONNX Runtime's within 1e-4.
//!
//! Where the CPU has AVX-512 the work runs in cache-sized blocks of tiles
//! with an in-house micro-kernel (`avx512.rs`); elsewhere a whole image at a
//! time: transform, 16 GEMMs on the `gemm` crate, transform back.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::conv::Finish;
use super::elementwise::relu_keep_nan;
use super::matmul::{matmul, View};
use super::Cpu;

/// What the caller has already checked: x is [N, C, H, W], w is [M, C, 3, 3],
/// y is [N, M, OH, OW] for stride 1, dilation 1, one group, and `finish`
/// agrees with them. Every output gets `finish`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    cpu: &Cpu,
    x: &[f32],
    [c, h, w]: [usize; 3],
    weights: &[f32],
    m: usize,
    [pt, pl]: [usize; 2],
    [oh, ow]: [usize; 2],
    finish: &Finish,
    y: &mut [f32],
) {
    let u = transform_filters(weights, m, c);
    let per_out = m * oh * ow;
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let packed = avx512::pack_filters(&u, m, c);
        let g = avx512::Geometry {
            c,
            h,
            w,
            m,
            pt,
            pl,
            oh,
            ow,
        };
        let per_image = c * h * w;
        cpu.for_each_run(y, per_out, |first, run| {
            let images = run.len() / per_out;
            let x = &x[first * per_image..(first + images) * per_image];
            let finish = finish.part(first * per_out..(first + images) * per_out);
            avx512::winograd_conv3x3(g, x, &packed, &finish, run);
        });
        return;
    }
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    cpu.for_each_run(y, per_out, |first, run| {
        let mut v = vec![0f32; 16 * c * tiles];
        let mut prod = vec![0f32; 16 * m * tiles];
        let mut rows = Rows::new(w + pl + 4, tw, tiles);
        for (offset, out) in run.chunks_mut(per_out).enumerate() {
            let img = &x[(first + offset) * c * h * w..(first + offset + 1) * c * h * w];
            transform_input(img, c, h, w, pt, pl, th, tw, &mut rows, &mut v);
            for xi in 0..16 {
                matmul(
                    m,
                    tiles,
                    c,
                    &mut prod[xi * m * tiles..(xi + 1) * m * tiles],
                    tiles,
                    View {
                        data: &u[xi * m * c..(xi + 1) * m * c],
                        rs: c,
                        cs: 1,
                    },
                    View {
                        data: &v[xi * c * tiles..(xi + 1) * c * tiles],
                        rs: tiles,
                        cs: 1,
                    },
                    false,
                );
            }
            let at = (first + offset) * per_out;
            transform_output(&prod, [m, tiles, tw, oh, ow], finish, at, &mut rows, out);
        }
    });
}

/// U = G g Gᵀ for every (output channel, input channel), laid out [ξ][m][c].
fn transform_filters(weights: &[f32], m: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * m * c];
    for oc in 0..m {
        for ic in 0..c {
            let g = &weights[(oc * c + ic) * 9..][..9];
            // G g: 4×3
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = g0;
                t[1][j] = 0.5 * (g0 + g1 + g2);
                t[2][j] = 0.5 * (g0 - g1 + g2);
                t[3][j] = g2;
            }
            // (G g) Gᵀ: 4×4
            for (i, row) in t.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (j, val) in vals.into_iter().enumerate() {
                    u[((i * 4 + j) * m + oc) * c + ic] = val;
                }
            }
        }
    }
    u
}

/// Scratch rows of one row of tiles, reused for every channel and image.
struct Rows {
    /// Four input rows, zero-padded on both sides.
    padded: [Vec<f32>; 4],
    /// Row combinations of Bᵀ, split into even and odd columns.
    even: [Vec<f32>; 4],
    odd: [Vec<f32>; 4],
    /// Aᵀ-combined columns of the output side, and the two output rows of
    /// every tile, for all of a channel's tiles.
    cols: [Vec<f32>; 8],
    out: [Vec<f32>; 2],
}

impl Rows {
    fn new(padded_width: usize, tw: usize, tiles: usize) -> Rows {
        let v = |n: usize| vec![0f32; n];
        Rows {
            padded: std::array::from_fn(|_| v(padded_width.max(2 * tw + 2))),
            even: std::array::from_fn(|_| v(tw + 1)),
            odd: std::array::from_fn(|_| v(tw + 1)),
            cols: std::array::from_fn(|_| v(tiles)),
            out: std::array::from_fn(|_| v(2 * tiles)),
        }
    }
}

/// `dst[t] = f(a[t], b[t])`: a plain zip, so the compiler vectorises it.
#[inline(always)]
fn zip2(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(*x, *y);
    }
}

/// V = Bᵀ d B for every 4×4 input tile d (stride 2, zero outside the image),
/// laid out [ξ][c][tile]. A row of tiles at a time: Bᵀ combines four padded
/// input rows element by element, the combinations are split into even and
/// odd columns, and each of the 16 outputs is a difference or sum of two
/// contiguous runs — every loop a plain zip.
#[allow(clippy::too_many_arguments)]
fn transform_input(
    img: &[f32],
    c: usize,
    h: usize,
    w: usize,
    pt: usize,
    pl: usize,
    th: usize,
    tw: usize,
    rows: &mut Rows,
    v: &mut [f32],
) {
    let tiles = th * tw;
    for ic in 0..c {
        let plane = &img[ic * h * w..(ic + 1) * h * w];
        for ty in 0..th {
            for (i, row) in rows.padded.iter_mut().enumerate() {
                let y = (2 * ty + i) as isize - pt as isize;
                row.fill(0.0);
                if y >= 0 && (y as usize) < h {
                    let src = &plane[y as usize * w..(y as usize + 1) * w];
                    let n = w.min(row.len() - pl);
                    row[pl..pl + n].copy_from_slice(&src[..n]);
                }
            }
            let [r0, r1, r2, r3] = &rows.padded;
            let combos: [(&[f32], &[f32], f32); 4] = [
                (r0, r2, -1.0),
                (r1, r2, 1.0),
                (r2, r1, -1.0),
                (r1, r3, -1.0),
            ];
            for (k, (a, b, sign)) in combos.into_iter().enumerate() {
                let (ev, od) = (&mut rows.even[k], &mut rows.odd[k]);
                for t in 0..=tw {
                    let x = 2 * t;
                    ev[t] = a[x] + sign * b[x];
                    od[t] = a[x + 1] + sign * b[x + 1];
                }
            }
            let base = ty * tw;
            for k in 0..4 {
                let (e, o) = (&rows.even[k], &rows.odd[k]);
                let at = |j: usize| ((k * 4 + j) * c + ic) * tiles + base;
                zip2(&mut v[at(0)..at(0) + tw], &e[..tw], &e[1..], |a, b| a - b);
                zip2(&mut v[at(1)..at(1) + tw], &o[..tw], &e[1..], |a, b| a + b);
                zip2(&mut v[at(2)..at(2) + tw], &e[1..], &o[..tw], |a, b| a - b);
                zip2(&mut v[at(3)..at(3) + tw], &o[..tw], &o[1..], |a, b| a - b);
            }
        }
    }
}

/// Y = Aᵀ M A per output channel and tile, then `finish`, written where
/// the 2×2 tile lies inside the output (one image's, outputs `at..` of the
/// whole); a row of tiles at a time, as zips.
fn transform_output(
    prod: &[f32],
    [m, tiles, tw, oh, ow]: [usize; 5],
    finish: &Finish,
    at: usize,
    rows: &mut Rows,
    out: &mut [f32],
) {
    let th = tiles / tw.max(1);
    for oc in 0..m {
        let b = finish.bias.map_or(0.0, |b| b[oc]);
        let plane = &mut out[oc * oh * ow..(oc + 1) * oh * ow];
        // All of this channel's tiles at once: each ξ's values are contiguous.
        let e: [&[f32]; 16] = std::array::from_fn(|xi| &prod[(xi * m + oc) * tiles..][..tiles]);
        // Aᵀ over rows: cols[j] = m0j + m1j + m2j, cols[4 + j] = m1j − m2j − m3j.
        let (s, d) = rows.cols.split_at_mut(4);
        for j in 0..4 {
            for (((p, q), (x0, x1)), (x2, x3)) in s[j]
                .iter_mut()
                .zip(d[j].iter_mut())
                .zip(e[j].iter().zip(e[4 + j]))
                .zip(e[8 + j].iter().zip(e[12 + j]))
            {
                *p = x0 + x1 + x2;
                *q = x1 - x2 - x3;
            }
        }
        // A over columns: output rows 2·ty and 2·ty + 1, tile by tile in pairs.
        for half in 0..2 {
            let cs = &rows.cols[4 * half..4 * half + 4];
            for ((pair, (c0, c1)), (c2, c3)) in rows.out[half]
                .chunks_exact_mut(2)
                .zip(cs[0].iter().zip(&cs[1]))
                .zip(cs[2].iter().zip(&cs[3]))
            {
                pair[0] = c0 + c1 + c2 + b;
                pair[1] = c1 - c2 - c3 + b;
            }
        }
        for ty in 0..th {
            for (half, r) in rows.out.iter().enumerate() {
                let oy = 2 * ty + half;
                if oy < oh {
                    let src = &r[2 * ty * tw..2 * ty * tw + ow];
                    let dst = &mut plane[oy * ow..(oy + 1) * ow];
                    if finish.relu {
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d = relu_keep_nan(*v));
                    } else {
                        dst.copy_from_slice(src);
                    }
                    finish.epilogue.finish(dst, at + (oc * oh + oy) * ow);
                }
            }
        }
    }
}
