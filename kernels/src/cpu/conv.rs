//! 2-D convolution as im2col + GEMM, with bias, ReLU and an [`Epilogue`]
//! (a residual, then activations) applied while each output plane is still
//! in cache; Winograd for 3×3 with enough channels, and direct for few input
//! channels where the CPU has AVX-512.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::elementwise::relu_keep_nan;
use super::matmul::{matmul, View};
use super::unary::{unary, Unary};
use super::{winograd, Cpu};
use crate::error::{shape_err, KernelError};
use crate::tensor::Tensor;
use std::ops::Range;

/// Below this many input channels a 3×3 convolution stays on im2col + GEMM.
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// The sizes of one convolution: input `[N, C, H, W]`, weight
/// `[M, C/groups, kH, kW]`, output `[N, M, OH, OW]`. Both backends check
/// their operands against these.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub cg: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// How a convolution is computed; each writes every output element.
enum Algorithm {
    Winograd,
    #[cfg(target_arch = "x86_64")]
    DirectAvx512,
    Im2colGemm,
}

/// What follows a convolution's own output (bias, then ReLU where
/// [`Conv2d::relu`] asks for it) for every value: `residual`, laid out as
/// the output, added elementwise, then `acts` in order, each exactly as
/// [`unary`] computes it. A residual block's Add and the activation after
/// it so run on each plane or tile as it is written, not as further passes
/// over the whole output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub residual: Option<&'a [f32]>,
    pub acts: &'a [Unary],
}

impl<'a> Epilogue<'a> {
    /// The epilogue of outputs `range` of the whole, for a kernel that
    /// writes only those.
    pub(crate) fn part(&self, range: Range<usize>) -> Epilogue<'a> {
        Epilogue {
            residual: self.residual.map(|r| &r[range]),
            acts: self.acts,
        }
    }

    /// Finishes `out`, the outputs at `at..at + out.len()`.
    pub(crate) fn finish(&self, out: &mut [f32], at: usize) {
        let acts = match (self.residual, self.acts) {
            // The usual residual block, in one pass.
            (Some(r), [Unary::Relu, rest @ ..]) => {
                let r = &r[at..at + out.len()];
                out.iter_mut()
                    .zip(r)
                    .for_each(|(v, r)| *v = relu_keep_nan(*v + r));
                rest
            }
            (Some(r), acts) => {
                let r = &r[at..at + out.len()];
                out.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                acts
            }
            (None, acts) => acts,
        };
        for &a in acts {
            unary(a, out);
        }
    }
}

/// All that an output value gets after its sum: `bias` (per output
/// channel), ReLU where `relu`, then `epilogue`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finish<'a> {
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
    pub epilogue: Epilogue<'a>,
}

impl<'a> Finish<'a> {
    /// The finish of outputs `range` of the whole.
    pub(crate) fn part(&self, range: Range<usize>) -> Finish<'a> {
        Finish {
            epilogue: self.epilogue.part(range),
            ..*self
        }
    }

    /// Finishes the planes (of `plane_len`) of output channels `oc0..` in
    /// `dst`, which start at output `at`: the epilogue of the GEMM path.
    fn planes(&self, dst: &mut [f32], plane_len: usize, oc0: usize, at: usize) {
        for (j, plane) in dst.chunks_mut(plane_len).enumerate() {
            let b = self.bias.map_or(0.0, |b| b[oc0 + j]);
            match (b != 0.0, self.relu) {
                (true, true) => plane.iter_mut().for_each(|v| *v = relu_keep_nan(*v + b)),
                (true, false) => plane.iter_mut().for_each(|v| *v += b),
                (false, true) => plane.iter_mut().for_each(|v| *v = relu_keep_nan(*v)),
                (false, false) => {}
            }
            self.epilogue.finish(plane, at + j * plane_len);
        }
    }
}

/// ONNX Conv attributes for 2-D inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub strides: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub groups: usize,
    pub relu: bool,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
            relu: false,
        }
    }
}

/// Output length of one spatial axis; `None` when the kernel does not fit.
pub(crate) fn out_len(
    input: usize,
    pad_lo: usize,
    pad_hi: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel.max(1) - 1) + 1;
    let padded = input + pad_lo + pad_hi;
    (padded >= span && stride > 0).then(|| (padded - span) / stride + 1)
}

impl Conv2d {
    /// `[N, M, OH, OW]` for input `[N, C, H, W]` and weight `[M, C/groups, kH, kW]`.
    /// The sizes of a convolution of an input shaped `x` by a weight shaped
    /// `w`, once they agree with each other and with these attributes.
    pub(crate) fn dims(&self, x: &[usize], w: &[usize]) -> Result<Dims, KernelError> {
        let out = self.output_shape(x, w)?;
        let (&[n, m, oh, ow], &[_, c, h, wd], &[_, cg, kh, kw]) = (&out[..], x, w) else {
            unreachable!("output_shape checked the ranks")
        };
        Ok(Dims {
            n,
            c,
            h,
            w: wd,
            m,
            cg,
            kh,
            kw,
            oh,
            ow,
        })
    }

    pub fn output_shape(&self, x: &[usize], w: &[usize]) -> Result<Vec<usize>, KernelError> {
        let [n, c, h, wd] = *x else {
            return Err(shape_err("Conv", "input", x, "[N, C, H, W]"));
        };
        let [m, cg, kh, kw] = *w else {
            return Err(shape_err("Conv", "weight", w, "[M, C/groups, kH, kW]"));
        };
        let g = self.groups;
        if g == 0 || c % g != 0 || m % g != 0 || cg != c / g {
            return Err(shape_err(
                "Conv",
                "weight",
                w,
                format!(
                    "[M, {}, kH, kW] with M divisible by groups = {g} (input has {c} channels)",
                    c / g.max(1)
                ),
            ));
        }
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let [pt, pl, pb, pr] = self.pads;
        let oh = out_len(h, pt, pb, kh, sh, dh);
        let ow = out_len(wd, pl, pr, kw, sw, dw);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(vec![n, m, oh, ow]),
            _ => Err(shape_err(
                "Conv",
                "input",
                x,
                format!(
                    "at least the {kh}x{kw} kernel (dilated, after padding) with positive strides"
                ),
            )),
        }
    }

    pub fn run(
        &self,
        cpu: &Cpu,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&[f32]>,
    ) -> Result<Tensor, KernelError> {
        let mut y = Tensor::zeros(self.output_shape(&x.shape, &w.shape)?);
        self.run_into(cpu, x, w, bias, &mut y.data)?;
        Ok(y)
    }

    /// Writes every element of `y` (`[N, M, OH, OW]`).
    pub fn run_into(
        &self,
        cpu: &Cpu,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        self.run_into_with(cpu, x, w, bias, Epilogue::default(), y)
    }

    /// [`Conv2d::run_into`], then `epilogue` on every output value.
    pub fn run_into_with(
        &self,
        cpu: &Cpu,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        y: &mut [f32],
    ) -> Result<(), KernelError> {
        let d = self.check(x, w, bias, &epilogue, y)?;
        if y.is_empty() {
            return Ok(());
        }
        let f = Finish {
            bias,
            relu: self.relu,
            epilogue,
        };
        match self.algorithm(&d) {
            Algorithm::Winograd => self.winograd(cpu, d, x, w, &f, y),
            #[cfg(target_arch = "x86_64")]
            Algorithm::DirectAvx512 => self.direct_avx512(cpu, d, x, w, &f, y),
            Algorithm::Im2colGemm => self.im2col_gemm(cpu, d, x, w, &f, y),
        }
        Ok(())
    }

    /// The sizes of a convolution of `x` by `w` into `y`, once they agree
    /// with each other, with `bias` and with the epilogue's residual.
    fn check(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&[f32]>,
        epilogue: &Epilogue,
        y: &[f32],
    ) -> Result<Dims, KernelError> {
        let d = self.dims(&x.shape, &w.shape)?;
        let out = [d.n, d.m, d.oh, d.ow];
        let len = out.iter().product::<usize>();
        if y.len() != len {
            return Err(shape_err("Conv", "output", &[y.len()], format!("{out:?}")));
        }
        if let Some(b) = bias {
            if b.len() != d.m {
                return Err(shape_err("Conv", "bias", &[b.len()], format!("[{}]", d.m)));
            }
        }
        if let Some(r) = epilogue.residual {
            if r.len() != len {
                let want = format!("{len} values, as the output {out:?}");
                return Err(shape_err("Conv", "residual", &[r.len()], want));
            }
        }
        Ok(d)
    }

    fn algorithm(&self, d: &Dims) -> Algorithm {
        let unit = self.strides == [1, 1] && self.dilations == [1, 1] && self.groups == 1;
        // Winograd where it applies and there are enough channels to
        // amortise its transforms.
        if unit && d.kh == 3 && d.kw == 3 && d.c >= WINOGRAD_MIN_CHANNELS {
            return Algorithm::Winograd;
        }
        #[cfg(target_arch = "x86_64")]
        if unit
            && d.kh * d.kw > 1
            && avx512::direct_pays(d.c * d.kh * d.kw, d.ow)
            && avx512::available()
        {
            return Algorithm::DirectAvx512;
        }
        Algorithm::Im2colGemm
    }

    fn winograd(&self, cpu: &Cpu, d: Dims, x: &Tensor, w: &Tensor, finish: &Finish, y: &mut [f32]) {
        let [pt, pl, _, _] = self.pads;
        winograd::conv3x3(
            cpu,
            &x.data,
            [d.c, d.h, d.w],
            &w.data,
            d.m,
            [pt, pl],
            [d.oh, d.ow],
            finish,
            y,
        );
    }

    #[cfg(target_arch = "x86_64")]
    fn direct_avx512(
        &self,
        cpu: &Cpu,
        d: Dims,
        x: &Tensor,
        w: &Tensor,
        finish: &Finish,
        y: &mut [f32],
    ) {
        let packed = avx512::pack_direct(&w.data, d.m, d.c * d.kh * d.kw);
        let geometry = avx512::DirectGeometry {
            c: d.c,
            h: d.h,
            w: d.w,
            m: d.m,
            kh: d.kh,
            kw: d.kw,
            pt: self.pads[0],
            pl: self.pads[1],
            oh: d.oh,
            ow: d.ow,
        };
        let per_image = d.c * d.h * d.w;
        let per_out = d.m * d.oh * d.ow;
        cpu.for_each_run(y, per_out, |first, run| {
            let images = run.len() / per_out;
            let x = &x.data[first * per_image..(first + images) * per_image];
            let finish = finish.part(first * per_out..(first + images) * per_out);
            avx512::direct_conv(geometry, x, &packed, &finish, run);
        });
    }

    fn im2col_gemm(
        &self,
        cpu: &Cpu,
        d: Dims,
        x: &Tensor,
        w: &Tensor,
        finish: &Finish,
        y: &mut [f32],
    ) {
        let Dims {
            c,
            h,
            m,
            cg,
            kh,
            kw,
            oh,
            ow,
            ..
        } = d;
        let wd = d.w;
        let g = self.groups;
        let mg = m / g;
        let k = cg * kh * kw;
        let ohw = oh * ow;
        // A 1x1 kernel with unit stride and no padding reads the image as it is.
        let direct = kh == 1 && kw == 1 && self.strides == [1, 1] && self.pads == [0; 4];
        // Contiguous runs of images per thread, each with one unfold buffer:
        // a buffer allocated per image would be fresh memory every time, and
        // first-touch memory is several times slower than reused.
        cpu.for_each_run(y, m * ohw, |first, run| {
            let mut col = if direct {
                Vec::new()
            } else {
                vec![0f32; k * ohw]
            };
            for (offset, out) in run.chunks_mut(m * ohw).enumerate() {
                let img = first + offset;
                for grp in 0..g {
                    let src =
                        &x.data[(img * c + grp * cg) * h * wd..(img * c + (grp + 1) * cg) * h * wd];
                    let cols: &[f32] = if direct {
                        src
                    } else {
                        self.im2col(src, cg, h, wd, kh, kw, oh, ow, &mut col);
                        &col
                    };
                    let dst = &mut out[grp * mg * ohw..(grp + 1) * mg * ohw];
                    let weights = View {
                        data: &w.data[grp * mg * k..(grp + 1) * mg * k],
                        rs: k,
                        cs: 1,
                    };
                    let cols = View {
                        data: cols,
                        rs: ohw,
                        cs: 1,
                    };
                    matmul(mg, ohw, k, dst, ohw, weights, cols, false);
                    finish.planes(dst, ohw, grp * mg, (img * m + grp * mg) * ohw);
                }
            }
        });
    }

    /// Unfolds one group of one image into `col[(c·kH + i)·kW + j][oy·OW + ox]`.
    #[allow(clippy::too_many_arguments)]
    fn im2col(
        &self,
        src: &[f32],
        cg: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        oh: usize,
        ow: usize,
        col: &mut [f32],
    ) {
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let (pt, pl) = (self.pads[0] as isize, self.pads[1] as isize);
        for c in 0..cg {
            let plane = &src[c * h * w..(c + 1) * h * w];
            for i in 0..kh {
                for j in 0..kw {
                    let row = &mut col[((c * kh + i) * kw + j) * oh * ow..][..oh * ow];
                    // Output columns whose input column lies inside the image.
                    let off = (j * dw) as isize - pl;
                    let first = if off >= 0 {
                        0
                    } else {
                        ((-off) as usize).div_ceil(sw)
                    };
                    let end = if (w as isize) > off {
                        (((w as isize - off - 1) as usize) / sw + 1).min(ow)
                    } else {
                        0
                    };
                    let first = first.min(end);
                    for oy in 0..oh {
                        let iy = (oy * sh + i * dh) as isize - pt;
                        let out_row = &mut row[oy * ow..(oy + 1) * ow];
                        if iy < 0 || iy >= h as isize {
                            out_row.fill(0.0);
                            continue;
                        }
                        let in_row = &plane[iy as usize * w..(iy as usize + 1) * w];
                        out_row[..first].fill(0.0);
                        out_row[end..].fill(0.0);
                        // A kernel tap that never lands inside the image
                        // (a kernel wider than the padded input) copies
                        // nothing, and its start may lie before column 0.
                        if first == end {
                            continue;
                        }
                        let x0 = (first * sw) as isize + off;
                        if sw == 1 {
                            out_row[first..end]
                                .copy_from_slice(&in_row[x0 as usize..x0 as usize + (end - first)]);
                        } else {
                            for (t, o) in out_row[first..end].iter_mut().enumerate() {
                                *o = in_row[x0 as usize + t * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}
