//! AVX-512 kernels, taken at run time when the CPU has `avx512f`; every
//! caller keeps a portable path for other CPUs. The build targets baseline
//! x86-64, so without these the compiler vectorises for SSE2 at best.
//!
//! - Winograd F(2×2, 3×3) convolution on blocks of tiles small enough to stay
//!   in L1/L2: a block's inputs are transformed, multiplied by the transformed
//!   filters and transformed back while still in cache, instead of whole-image
//!   V and product matrices (0.4 and 0.8 MB per image at 32 → 64 channels)
//!   making a round trip through L3. Tiles are the vector lanes throughout, so
//!   the transforms are straight-line vector code over up to 16 horizontally
//!   adjacent tiles at a time.
//! - Direct convolution for few input channels.
//! - Average pooling.

#![cfg(target_arch = "x86_64")]

use super::conv::Finish;
use std::arch::x86_64::*;

/// Whether callers take the kernels in this module: the CPU has `avx512f`
/// and the environment does not set `MPINFER_CPU_AVX512=0`, which selects
/// the portable kernels instead (to compare the two, or to rule one out).
pub(crate) fn available() -> bool {
    static TAKE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TAKE.get_or_init(|| {
        cpu_has_avx512f() && std::env::var_os("MPINFER_CPU_AVX512").is_none_or(|v| v != "0")
    })
}

fn cpu_has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Output channels per GEMM micro-tile.
const ROWS: usize = 4;
/// Tiles per block: four vectors, so the micro-tile is 4 × 64, 16
/// accumulators. At the seed network's shapes 8 × 32 ran 3–5% slower (a block
/// that ends part-way into a row of tiles splits it into two transform
/// passes, and a smaller block splits more rows), and 16 × 32 (32
/// accumulators, all the registers there are) slower still.
const BLOCK: usize = 64;
/// Padding between the 16 ξ planes of a block's V: unpadded, at 32 input
/// channels they lie a multiple of 4 KiB apart, all 16 stores of a tile land
/// in one L1 set, and the input transform ran at half speed.
const V_PAD: usize = 16;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// Zeroed scratch whose start is 64-byte aligned, so that whole-vector
/// accesses at multiples of 16 never straddle two cache lines.
struct Aligned {
    lines: Vec<Line>,
}

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        Aligned {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
        }
    }

    fn ptr(&mut self) -> *mut f32 {
        self.lines.as_mut_ptr().cast()
    }
}

/// Lanes `0..n` set (all of them from 16 on).
#[inline]
fn first(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Lanes whose column `off + lane` lies in `lo..hi`.
#[inline]
fn between(off: usize, lo: usize, hi: usize) -> __mmask16 {
    first(hi.saturating_sub(off)) & !first(lo.saturating_sub(off))
}

/// Filters transformed for the Winograd kernel, `[ξ][m][c]` as the portable
/// path lays them out, regrouped as `[m / ROWS][ξ][c][ROWS]` (zero rows past
/// `m`) so the micro-kernel reads one contiguous run per input channel.
pub(crate) fn pack_filters(u: &[f32], m: usize, c: usize) -> Vec<f32> {
    let chunks = m.div_ceil(ROWS);
    let mut packed = vec![0f32; chunks * 16 * c * ROWS];
    for xi in 0..16 {
        for oc in 0..m {
            let (mc, r) = (oc / ROWS, oc % ROWS);
            for ic in 0..c {
                packed[((mc * 16 + xi) * c + ic) * ROWS + r] = u[(xi * m + oc) * c + ic];
            }
        }
    }
    packed
}

/// The geometry of one Winograd convolution: input `[C, H, W]` per image,
/// output `[M, OH, OW]`, top/left padding.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Up to 16 horizontally adjacent tiles of one image, at lanes
/// `lane..lane + len` of a block.
#[derive(Clone, Copy)]
struct Segment {
    lane: usize,
    img: usize,
    ty: usize,
    tx: usize,
    len: usize,
}

/// Winograd convolution of the images in `x` (`[N, C, H, W]`) into `y`
/// (`[N, M, OH, OW]`), with `packed` from [`pack_filters`], then `finish`
/// (whose residual is laid out as `y`); every element of `y` is written.
pub(crate) fn winograd_conv3x3(
    g: Geometry,
    x: &[f32],
    packed: &[f32],
    finish: &Finish,
    y: &mut [f32],
) {
    let per_out = g.m * g.oh * g.ow;
    let images = y.len() / per_out.max(1);
    assert!(
        cpu_has_avx512f(),
        "AVX-512 kernels on a CPU without avx512f"
    );
    assert!(g.c > 0 && g.oh > 0 && g.ow > 0 && y.len() == images * per_out);
    assert!(x.len() == images * g.c * g.h * g.w, "input size");
    assert!(
        packed.len() == g.m.div_ceil(ROWS) * 16 * g.c * ROWS,
        "filters"
    );
    assert!(finish.bias.is_none_or(|b| b.len() == g.m), "bias");
    // SAFETY: avx512f is present (asserted), and the sizes asserted above
    // are the ones the kernel's indexing derives from.
    unsafe { conv_images(g, x, packed, finish, y, images) }
}

/// # Safety
///
/// The CPU has `avx512f`, and `x`, `packed`, `finish.bias` and `y` have the
/// sizes [`winograd_conv3x3`] asserts for `images` images, with `g.c`, `g.oh`
/// and `g.ow` positive: every pointer formed here from them stays inside
/// them.
#[target_feature(enable = "avx512f")]
unsafe fn conv_images(
    g: Geometry,
    x: &[f32],
    packed: &[f32],
    finish: &Finish,
    y: &mut [f32],
    images: usize,
) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let tiles = th * tw;
    let total = images * tiles;
    let chunks = g.m.div_ceil(ROWS);
    // V of one block, [ξ][c][BLOCK] with ξ planes `vstride` apart, and the
    // products of one chunk of output channels, [ξ][ROWS][BLOCK].
    let vstride = g.c * BLOCK + V_PAD;
    let mut v = Aligned::zeroed(16 * vstride);
    let mut prod = Aligned::zeroed(16 * ROWS * BLOCK);
    let (vp, pp) = (v.ptr(), prod.ptr());
    let yp = y.as_mut_ptr();
    let mut segs = Vec::with_capacity(BLOCK);
    let mut spans = Vec::with_capacity(4);
    let mut start = 0;
    while start < total {
        let end = (start + BLOCK).min(total);
        block_segments(start, end, tiles, tw, &mut segs);
        for s in &segs {
            // SAFETY: the segment's lanes lie in the block's BLOCK lanes of
            // each of the 16 · C rows of `v`, and its image in `x`.
            unsafe { transform_segment(g, x, s, vp.add(s.lane), vstride) };
        }
        next_block_spans(end, total, tiles, tw, &mut spans);
        for mc in 0..chunks {
            prefetch_next_block(g, x, yp, &spans, mc, chunks);
            // SAFETY: `packed` has the size the caller guarantees, and `v`
            // and `prod` are the 64-byte aligned block buffers sized above.
            unsafe { multiply_chunk(g, packed, mc, vp, vstride, pp) };
            // SAFETY: `prod` holds chunk `mc`'s products of this block's
            // segments, whose tiles and images lie inside `y`.
            unsafe { untransform_chunk(g, &segs, mc, pp, finish, yp) };
        }
        start = end;
    }
}

/// Splits the block of tiles `start..end` into segments: runs of at most 16
/// tiles that stay in one row of tiles of one image.
fn block_segments(start: usize, end: usize, tiles: usize, tw: usize, segs: &mut Vec<Segment>) {
    segs.clear();
    let mut t = start;
    while t < end {
        let (img, rest) = (t / tiles, t % tiles);
        let (ty, tx) = (rest / tw, rest % tw);
        let len = (tw - tx).min(end - t).min(16);
        segs.push(Segment {
            lane: t - start,
            img,
            ty,
            tx,
            len,
        });
        t += len;
    }
}

/// The tile rows of the block that starts at `end`, per image, as
/// `(image, first row, last row)`.
fn next_block_spans(
    end: usize,
    total: usize,
    tiles: usize,
    tw: usize,
    spans: &mut Vec<(usize, usize, usize)>,
) {
    spans.clear();
    let next_end = (end + BLOCK).min(total);
    let mut t = end;
    while t < next_end {
        let img = t / tiles;
        let last = next_end.min((img + 1) * tiles) - 1;
        spans.push((img, (t % tiles) / tw, (last % tiles) / tw));
        t = last + 1;
    }
}

/// Fetches chunk `mc`'s share of what the next block (`spans`) reads and
/// writes while this one computes: its inputs are spread over C planes and
/// its outputs over M, more streams than the hardware prefetchers follow.
#[target_feature(enable = "avx512f")]
fn prefetch_next_block(
    g: Geometry,
    x: &[f32],
    yp: *mut f32,
    spans: &[(usize, usize, usize)],
    mc: usize,
    chunks: usize,
) {
    for &(img, ty0, ty1) in spans {
        let r0 = (2 * ty0).saturating_sub(g.pt);
        let r1 = (2 * ty1 + 4).saturating_sub(g.pt).min(g.h);
        for ic in (mc * g.c / chunks)..((mc + 1) * g.c / chunks) {
            let plane = x.as_ptr().wrapping_add((img * g.c + ic) * g.h * g.w);
            prefetch(
                plane.wrapping_add(r0 * g.w),
                r1.saturating_sub(r0) * g.w,
                false,
            );
        }
        let (o0, o1) = (2 * ty0, (2 * ty1 + 2).min(g.oh));
        for oc in mc * ROWS..g.m.min((mc + 1) * ROWS) {
            let plane = yp.wrapping_add((img * g.m + oc) * g.oh * g.ow);
            prefetch(plane.wrapping_add(o0 * g.ow), (o1 - o0) * g.ow, true);
        }
    }
}

/// The products of chunk `mc` of output channels with the block's V, for
/// every ξ, into `pp` (`[ξ][ROWS][BLOCK]`).
///
/// # Safety
///
/// The CPU has `avx512f`; `packed` is [`pack_filters`]' for `g` and holds
/// chunk `mc`; `vp` (16 planes `vstride` apart of C · BLOCK values) and `pp`
/// (16 · ROWS · BLOCK values, writable) are 64-byte aligned, with `vstride` a
/// multiple of 16.
#[target_feature(enable = "avx512f")]
unsafe fn multiply_chunk(
    g: Geometry,
    packed: &[f32],
    mc: usize,
    vp: *const f32,
    vstride: usize,
    pp: *mut f32,
) {
    // SAFETY: chunk `mc` of `packed` is its 16 · C · ROWS values
    // from here; ξ's share of it is C · ROWS values, of `v` a plane
    // of C · BLOCK and of `prod` ROWS · BLOCK, at offsets that are
    // multiples of 16 values from 64-byte aligned starts, as
    // micro_kernel's aligned accesses need.
    unsafe {
        let u = packed.as_ptr().add(mc * 16 * g.c * ROWS);
        for xi in 0..16 {
            micro_kernel(
                g.c,
                u.add(xi * g.c * ROWS),
                vp.add(xi * vstride),
                pp.add(xi * ROWS * BLOCK),
            );
        }
    }
}

/// Transforms chunk `mc`'s products back into the outputs of every segment
/// of the block, then `finish`.
///
/// # Safety
///
/// The CPU has `avx512f`; `pp` holds the block's products for chunk `mc`
/// (`[ξ][ROWS][BLOCK]`), `finish.bias`, if any, has M values, and `yp`
/// points at the writable outputs (`[M, OH, OW]` each) of every image in
/// `segs`, whose tiles lie inside them, and nothing else refers to them.
#[target_feature(enable = "avx512f")]
unsafe fn untransform_chunk(
    g: Geometry,
    segs: &[Segment],
    mc: usize,
    pp: *const f32,
    finish: &Finish,
    yp: *mut f32,
) {
    for r in 0..ROWS.min(g.m - mc * ROWS) {
        let oc = mc * ROWS + r;
        for s in segs {
            let at = (s.img * g.m + oc) * g.oh * g.ow;
            // SAFETY: channel `oc` < M of image `s.img` is the [OH, OW]
            // plane of `y` at `at`, and the segment's products are lanes
            // `s.lane..` of row `r` of every ξ in `prod`.
            unsafe {
                let p = pp.add(r * BLOCK + s.lane);
                untransform_segment(g, s, p, finish, oc, yp.add(at), at);
            }
        }
    }
}

/// Asks for the cache lines of `p[..len]`, for writing when `write`. Only a
/// hint: any address is fine, and nothing is read.
#[target_feature(enable = "avx512f")]
fn prefetch(p: *const f32, len: usize, write: bool) {
    let mut at = 0;
    while at < len {
        let line = p.wrapping_add(at).cast::<i8>();
        if write {
            _mm_prefetch::<_MM_HINT_ET0>(line);
        } else {
            _mm_prefetch::<_MM_HINT_T0>(line);
        }
        at += 16;
    }
    if len > 0 {
        // The last line, when the range ends part-way into it.
        let line = p.wrapping_add(len - 1).cast::<i8>();
        if write {
            _mm_prefetch::<_MM_HINT_ET0>(line);
        } else {
            _mm_prefetch::<_MM_HINT_T0>(line);
        }
    }
}

/// V = Bᵀ d B for every input channel of one segment, written at lanes
/// `v[(ξ·C + c)·BLOCK ..][..len]`. Input columns outside the image, and rows
/// outside it, read as zero through load masks, so padding costs no copies.
///
/// # Safety
///
/// The CPU has `avx512f`; `x` holds image `s.img` (`[C, H, W]` each), and
/// `v[ξ · vstride + c · BLOCK ..][..s.len]` is writable for every ξ < 16 and
/// c < C.
#[target_feature(enable = "avx512f")]
unsafe fn transform_segment(g: Geometry, x: &[f32], s: &Segment, v: *mut f32, vstride: usize) {
    // The segment reads columns x0 .. x0 + 2·len + 2 of four input rows.
    let x0 = (2 * s.tx) as isize - g.pl as isize;
    let span = 2 * s.len + 2;
    let lo = (-x0).clamp(0, span as isize) as usize;
    let hi = (g.w as isize - x0).clamp(lo as isize, span as isize) as usize;
    let rows: [Option<usize>; 4] = std::array::from_fn(|i| {
        let yy = (2 * s.ty + i) as isize - g.pt as isize;
        (yy >= 0 && (yy as usize) < g.h).then_some(yy as usize)
    });
    // Masks of the four loads per row: columns 0..16, 16..32 and, shifted
    // by one tile, 2..18, 18..34 of the segment.
    let masks = [
        between(0, lo, hi),
        between(16, lo, hi),
        between(2, lo, hi),
        between(18, lo, hi),
    ];
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let keep = first(s.len);
    let plane_len = g.h * g.w;
    for ic in 0..g.c {
        // SAFETY: channel `ic` of image `s.img` is a plane of `x`.
        let plane = unsafe { x.as_ptr().add((s.img * g.c + ic) * plane_len) };
        // Per input row: even columns e[t] = d[2t], odd o[t] = d[2t + 1], and
        // both one tile on, e1[t] = e[t + 1], o1[t] = o[t + 1].
        let mut e = [_mm512_setzero_ps(); 4];
        let mut o = e;
        let mut e1 = e;
        let mut o1 = e;
        for i in 0..4 {
            let Some(yy) = rows[i] else { continue };
            // May point outside the plane: only lanes inside it are loaded.
            let p = plane.wrapping_offset(yy as isize * g.w as isize + x0);
            // SAFETY: row `yy` is inside the plane, and the masks select
            // the lanes whose columns `lo..hi` lie inside the row; masked-off
            // lanes are neither read nor able to fault.
            let (a0, a1, b0, b1) = unsafe {
                (
                    _mm512_maskz_loadu_ps(masks[0], p),
                    _mm512_maskz_loadu_ps(masks[1], p.wrapping_add(16)),
                    _mm512_maskz_loadu_ps(masks[2], p.wrapping_add(2)),
                    _mm512_maskz_loadu_ps(masks[3], p.wrapping_add(18)),
                )
            };
            e[i] = _mm512_permutex2var_ps(a0, even, a1);
            o[i] = _mm512_permutex2var_ps(a0, odd, a1);
            e1[i] = _mm512_permutex2var_ps(b0, even, b1);
            o1[i] = _mm512_permutex2var_ps(b0, odd, b1);
        }
        // Bᵀ over rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3.
        let rows_t = |d: [__m512; 4]| {
            [
                _mm512_sub_ps(d[0], d[2]),
                _mm512_add_ps(d[1], d[2]),
                _mm512_sub_ps(d[2], d[1]),
                _mm512_sub_ps(d[1], d[3]),
            ]
        };
        let (e, o, e1, o1) = (rows_t(e), rows_t(o), rows_t(e1), rows_t(o1));
        let stride = vstride;
        // B over columns: the same combinations of columns 0..4 of each tile.
        for k in 0..4 {
            // SAFETY: ξ = 4k..4k + 4 of channel `ic`, `s.len` lanes each
            // (`keep`): writable, as the caller guarantees.
            unsafe {
                let at = v.add(ic * BLOCK + 4 * k * stride);
                _mm512_mask_storeu_ps(at, keep, _mm512_sub_ps(e[k], e1[k]));
                _mm512_mask_storeu_ps(at.add(stride), keep, _mm512_add_ps(o[k], e1[k]));
                _mm512_mask_storeu_ps(at.add(2 * stride), keep, _mm512_sub_ps(e1[k], o[k]));
                _mm512_mask_storeu_ps(at.add(3 * stride), keep, _mm512_sub_ps(o[k], o1[k]));
            }
        }
    }
}

/// `out[r][t] = Σ_c u[c][r] · v[c][t]` for `ROWS` output channels and the
/// `BLOCK` tiles of a block: ROWS × BLOCK / 16 accumulators stay in registers over
/// the whole reduction, each product one FMA with a broadcast filter value.
///
/// # Safety
///
/// The CPU has `avx512f`; `u[..c · ROWS]` and `v[..c · BLOCK]` are readable
/// and `out[..ROWS · BLOCK]` writable; `v` and `out` are 64-byte aligned.
#[target_feature(enable = "avx512f")]
unsafe fn micro_kernel(c: usize, u: *const f32, v: *const f32, out: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); BLOCK / 16]; ROWS];
    for k in 0..c {
        // SAFETY: row `k` of `v` is BLOCK values from a 64-byte aligned
        // address (BLOCK is a multiple of 16), and `u` holds row `k`'s ROWS.
        unsafe {
            let vk: [__m512; BLOCK / 16] =
                std::array::from_fn(|j| _mm512_load_ps(v.add(k * BLOCK + 16 * j)));
            for (r, row) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*u.add(k * ROWS + r));
                for (a, vj) in row.iter_mut().zip(vk) {
                    *a = _mm512_fmadd_ps(b, vj, *a);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: inside `out`'s ROWS · BLOCK values, 64-byte aligned.
            unsafe { _mm512_store_ps(out.add(r * BLOCK + 16 * j), *a) };
        }
    }
}

/// Y = Aᵀ M A, then `finish`, for output channel `oc` of one segment: `p`
/// points at the segment's lanes of ξ = 0 (ξ apart by ROWS · BLOCK), and
/// `plane` at the channel's `[OH, OW]` output, outputs `at..` of `y`.
///
/// # Safety
///
/// The CPU has `avx512f`; `p[ξ · ROWS · BLOCK ..][..s.len]` is readable for
/// every ξ < 16, and `plane[..OH · OW]` writable, referred to by nothing
/// else, with the segment's tiles inside the output (`s.ty < ⌈OH/2⌉`,
/// `s.tx + s.len ≤ ⌈OW/2⌉`); `oc` < M.
#[target_feature(enable = "avx512f")]
unsafe fn untransform_segment(
    g: Geometry,
    s: &Segment,
    p: *const f32,
    finish: &Finish,
    oc: usize,
    plane: *mut f32,
    at: usize,
) {
    let keep = first(s.len);
    // SAFETY: the `s.len` lanes of each ξ (`keep`) are readable.
    let m: [__m512; 16] =
        std::array::from_fn(|xi| unsafe { _mm512_maskz_loadu_ps(keep, p.add(xi * ROWS * BLOCK)) });
    // Aᵀ over rows, then A over columns.
    let sum: [__m512; 4] =
        std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(m[j], m[4 + j]), m[8 + j]));
    let dif: [__m512; 4] =
        std::array::from_fn(|j| _mm512_sub_ps(_mm512_sub_ps(m[4 + j], m[8 + j]), m[12 + j]));
    let b = _mm512_set1_ps(finish.bias.map_or(0.0, |b| b[oc]));
    let relu = finish.relu;
    let zero = _mm512_setzero_ps();
    let cols = |r: [__m512; 4]| {
        let left = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]), b);
        let right = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]), b);
        if relu {
            // max(0, v) returns its second operand when v is NaN, so a NaN
            // input still shows in the output.
            (_mm512_max_ps(zero, left), _mm512_max_ps(zero, right))
        } else {
            (left, right)
        }
    };
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let x0 = 2 * s.tx;
    let width = (2 * s.len).min(g.ow - x0);
    for (half, r) in [sum, dif].into_iter().enumerate() {
        let oy = 2 * s.ty + half;
        if oy >= g.oh {
            break;
        }
        let (left, right) = cols(r);
        // SAFETY: row `oy` < OH of the plane, columns `x0..x0 + width` with
        // `width` ≤ OW − x0: the masks store only those, and the slice is
        // those values, which nothing else refers to.
        let row = unsafe {
            let row = plane.add(oy * g.ow + x0);
            _mm512_mask_storeu_ps(row, first(width), _mm512_permutex2var_ps(left, lo, right));
            _mm512_mask_storeu_ps(
                row.wrapping_add(16),
                first(width.saturating_sub(16)),
                _mm512_permutex2var_ps(left, hi, right),
            );
            std::slice::from_raw_parts_mut(row, width)
        };
        finish.epilogue.finish(row, at + oy * g.ow + x0);
    }
}

/// Output channels per pass of the direct convolution.
const DIRECT_ROWS: usize = 8;
/// The most taps per output (C·kH·kW) [`direct_conv`] takes.
const DIRECT_MAX_TAPS: usize = 64;

/// Whether [`direct_conv`] beats im2col + GEMM on the portable path, for
/// `taps` = C·kH·kW and output rows of `ow`. It computes whole vectors of 16
/// columns, so what decides is the share of lanes a row fills: at 7/8 and
/// above it ran 5–70% faster (1.7× for 1→32 channels, 3×3, rows of 30),
/// while some shapes with rows of 18 or 24 ran up to 40% slower.
pub(crate) fn direct_pays(taps: usize, ow: usize) -> bool {
    taps <= DIRECT_MAX_TAPS && 8 * ow >= 7 * ow.next_multiple_of(16)
}

/// Weights `[M, C·kH·kW]` regrouped as `[M / 8][C·kH·kW][8]` (zero rows
/// past `m`), so the eight filter values of one input tap are contiguous.
pub(crate) fn pack_direct(weights: &[f32], m: usize, k: usize) -> Vec<f32> {
    let chunks = m.div_ceil(DIRECT_ROWS);
    let mut packed = vec![0f32; chunks * k * DIRECT_ROWS];
    for oc in 0..m {
        let (mc, r) = (oc / DIRECT_ROWS, oc % DIRECT_ROWS);
        for t in 0..k {
            packed[(mc * k + t) * DIRECT_ROWS + r] = weights[oc * k + t];
        }
    }
    packed
}

/// The geometry of a stride-1, undilated, ungrouped convolution.
#[derive(Clone, Copy)]
pub(crate) struct DirectGeometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Direct convolution for few input channels (see [`direct_pays`]): 16
/// output columns per vector, each input tap loaded once per 8 output
/// channels and broadcast-multiplied into all of them; then `finish`, whose
/// residual is laid out as `y`.
pub(crate) fn direct_conv(
    g: DirectGeometry,
    x: &[f32],
    packed: &[f32],
    finish: &Finish,
    y: &mut [f32],
) {
    let per_out = g.m * g.oh * g.ow;
    let images = y.len() / per_out.max(1);
    let k = g.c * g.kh * g.kw;
    assert!(
        cpu_has_avx512f(),
        "AVX-512 kernels on a CPU without avx512f"
    );
    assert!(g.m > 0 && g.oh > 0 && g.ow > 0 && y.len() == images * per_out);
    assert!(x.len() == images * g.c * g.h * g.w, "input size");
    assert!(k <= DIRECT_MAX_TAPS, "taps");
    assert!(
        packed.len() == g.m.div_ceil(DIRECT_ROWS) * k * DIRECT_ROWS,
        "filters"
    );
    assert!(finish.bias.is_none_or(|b| b.len() == g.m), "bias");
    // SAFETY: avx512f is present (asserted), and the sizes asserted above
    // are the ones the kernel's indexing derives from.
    unsafe { direct_images(g, x, packed, finish, y, images) }
}

/// # Safety
///
/// The CPU has `avx512f`, and `x`, `packed`, `finish.bias` and `y` have the
/// sizes [`direct_conv`] asserts for `images` images, with `g.m`, `g.oh` and
/// `g.ow` positive and at most [`DIRECT_MAX_TAPS`] taps.
#[target_feature(enable = "avx512f")]
unsafe fn direct_images(
    g: DirectGeometry,
    x: &[f32],
    packed: &[f32],
    finish: &Finish,
    y: &mut [f32],
    images: usize,
) {
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    for img in 0..images {
        for oy in 0..g.oh {
            let mut ox = 0;
            while ox < g.ow {
                // Two vectors a pass where the row has them: twice the FMAs
                // per broadcast filter value and per pass of loop overhead.
                let two = g.ow - ox > 16;
                // SAFETY: `img`, `oy` and `ox` are inside the output whose
                // sizes the caller guarantees.
                unsafe {
                    if two {
                        direct_pass::<2>(g, xp, packed, finish, yp, img, oy, ox);
                    } else {
                        direct_pass::<1>(g, xp, packed, finish, yp, img, oy, ox);
                    }
                }
                ox += if two { 32 } else { 16 };
            }
        }
    }
}

/// Output columns `ox .. ox + 16·V` (those inside the row) of row `oy` of
/// image `img`, every output channel.
///
/// # Safety
///
/// The CPU has `avx512f`; `xp` points at images `..=img` (`[C, H, W]`
/// each) and `yp` at outputs `..=img` (`[M, OH, OW]` each, writable,
/// referred to by nothing else); `oy < OH`, `ox < OW`; `packed` is
/// [`pack_direct`]'s for these weights and `finish.bias`, if any, has M
/// values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn direct_pass<const V: usize>(
    g: DirectGeometry,
    xp: *const f32,
    packed: &[f32],
    finish: &Finish,
    yp: *mut f32,
    img: usize,
    oy: usize,
    ox: usize,
) {
    let k = g.c * g.kh * g.kw;
    let zero = _mm512_setzero_ps();
    let n = (g.ow - ox).min(16 * V);
    // Per kernel column j and vector: the lanes that read inside the image.
    let mut masks = [[0 as __mmask16; V]; DIRECT_MAX_TAPS];
    let masks = &mut masks[..g.kw];
    for (j, mask) in masks.iter_mut().enumerate() {
        let x0 = (ox + j) as isize - g.pl as isize;
        let lo = (-x0).clamp(0, n as isize) as usize;
        let hi = (g.w as isize - x0).clamp(lo as isize, n as isize) as usize;
        for (q, m) in mask.iter_mut().enumerate() {
            *m = between(16 * q, lo, hi);
        }
    }
    for mc in 0..g.m.div_ceil(DIRECT_ROWS) {
        let mut acc: [[__m512; V]; DIRECT_ROWS] = std::array::from_fn(|r| {
            let oc = (mc * DIRECT_ROWS + r).min(g.m - 1);
            [finish.bias.map_or(zero, |b| _mm512_set1_ps(b[oc])); V]
        });
        // SAFETY: chunk `mc` of `packed` is its k · DIRECT_ROWS values
        // from here.
        let wts = unsafe { packed.as_ptr().add(mc * k * DIRECT_ROWS) };
        for ic in 0..g.c {
            for i in 0..g.kh {
                let yy = (oy + i) as isize - g.pt as isize;
                if yy < 0 || yy >= g.h as isize {
                    continue;
                }
                // SAFETY: row `yy` < H of channel `ic` of image `img`.
                let row = unsafe { xp.add(((img * g.c + ic) * g.h + yy as usize) * g.w) };
                for (j, mask) in masks.iter().enumerate() {
                    let at = row.wrapping_offset((ox + j) as isize - g.pl as isize);
                    // SAFETY: the masks select the lanes whose columns lie
                    // inside the row; the others are neither read nor able
                    // to fault.
                    let v: [__m512; V] = std::array::from_fn(|q| unsafe {
                        _mm512_maskz_loadu_ps(mask[q], at.wrapping_add(16 * q))
                    });
                    let t = (ic * g.kh + i) * g.kw + j;
                    for (r, a) in acc.iter_mut().enumerate() {
                        // SAFETY: tap `t` < k of the chunk, row `r` < 8.
                        let w = _mm512_set1_ps(unsafe { *wts.add(t * DIRECT_ROWS + r) });
                        for (aq, vq) in a.iter_mut().zip(v) {
                            *aq = _mm512_fmadd_ps(w, vq, *aq);
                        }
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(g.m - mc * DIRECT_ROWS) {
            let oc = mc * DIRECT_ROWS + r;
            let at = ((img * g.m + oc) * g.oh + oy) * g.ow + ox;
            // SAFETY: channel `oc` < M, row `oy` < OH, column `ox` < OW of
            // output `img`.
            let row = unsafe { yp.add(at) };
            for (q, aq) in a.iter().enumerate() {
                let v = if finish.relu {
                    _mm512_max_ps(zero, *aq)
                } else {
                    *aq
                };
                let keep = first(n.saturating_sub(16 * q));
                // SAFETY: `keep` stores the columns `ox..ox + n` of the
                // row, `n` ≤ OW − ox.
                unsafe { _mm512_mask_storeu_ps(row.wrapping_add(16 * q), keep, v) };
            }
            // SAFETY: the `n` values just stored, which nothing else refers
            // to.
            let row = unsafe { std::slice::from_raw_parts_mut(row, n) };
            finish.epilogue.finish(row, at);
        }
    }
}

/// Widest input row [`average_pool`] takes.
pub(crate) const POOL_MAX_WIDTH: usize = 1024;

/// Average pooling of `[H, W]` planes whose every window lies inside them,
/// `src` holding as many planes as `dst` holds `[OH, OW]` outputs: the kH
/// rows of a window row are summed a vector of columns at a time, then each
/// window's kW column sums.
pub(crate) fn average_pool(
    src: &[f32],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [oh, ow]: [usize; 2],
    dst: &mut [f32],
) {
    assert!(
        cpu_has_avx512f(),
        "AVX-512 kernels on a CPU without avx512f"
    );
    assert!(w <= POOL_MAX_WIDTH && kh > 0 && kw > 0 && oh > 0 && ow > 0);
    assert!(
        (oh - 1) * sh + kh <= h && (ow - 1) * sw + kw <= w,
        "windows"
    );
    assert!(
        src.len() / (h * w).max(1) == dst.len() / (oh * ow),
        "planes"
    );
    // SAFETY: avx512f is present; the asserts bound every row read.
    unsafe { average_pool_planes(src, [h, w], [kh, kw], [sh, sw], [oh, ow], dst) }
}

/// # Safety
///
/// The CPU has `avx512f`, and the sizes are those [`average_pool`] asserts.
#[target_feature(enable = "avx512f")]
unsafe fn average_pool_planes(
    src: &[f32],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [oh, ow]: [usize; 2],
    dst: &mut [f32],
) {
    let div = (kh * kw) as f32;
    let mut sums = [0f32; POOL_MAX_WIDTH];
    for (plane, out) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(oh * ow)) {
        for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
            let top = plane.as_ptr();
            for x0 in (0..w).step_by(16) {
                let keep = first(w - x0);
                // SAFETY: the window rows `oy · sh + i`, i < kH, lie inside
                // the plane (as the caller guarantees), and `keep` loads
                // their columns `x0..w`, storing into `sums[x0..w]`
                // (`w` ≤ POOL_MAX_WIDTH).
                unsafe {
                    let row = |i: usize| top.add((oy * sh + i) * w + x0);
                    let mut acc = _mm512_maskz_loadu_ps(keep, row(0));
                    for i in 1..kh {
                        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(keep, row(i)));
                    }
                    _mm512_mask_storeu_ps(sums.as_mut_ptr().add(x0), keep, acc);
                }
            }
            for (ox, o) in out.iter_mut().enumerate() {
                *o = sums[ox * sw..ox * sw + kw].iter().sum::<f32>() / div;
            }
        }
    }
}
