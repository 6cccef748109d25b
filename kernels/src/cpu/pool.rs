//! Max and average pooling (ONNX MaxPool, AveragePool, GlobalAveragePool).

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::Cpu;
use crate::error::{shape_err, KernelError};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub ceil_mode: bool,
    /// Average only: padding counts towards the divisor.
    pub count_include_pad: bool,
}

impl Pool2d {
    pub fn new(kind: PoolKind, kernel: [usize; 2]) -> Pool2d {
        Pool2d {
            kind,
            kernel,
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
        }
    }

    /// Output length of one axis. With `ceil_mode` a last, partial window is
    /// kept only if it starts inside the input or its leading padding.
    fn out_len(&self, input: usize, axis: usize) -> Option<usize> {
        let (k, s, d) = (self.kernel[axis], self.strides[axis], self.dilations[axis]);
        let (lo, hi) = (self.pads[axis], self.pads[axis + 2]);
        let span = d * (k.max(1) - 1) + 1;
        let padded = input + lo + hi;
        if padded < span || s == 0 || k == 0 {
            return None;
        }
        let mut out = if self.ceil_mode {
            (padded - span).div_ceil(s) + 1
        } else {
            (padded - span) / s + 1
        };
        if self.ceil_mode && (out - 1) * s >= input + lo {
            out -= 1;
        }
        Some(out)
    }

    pub fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, KernelError> {
        let [n, c, h, w] = *x else {
            return Err(shape_err("Pool", "input", x, "[N, C, H, W]"));
        };
        match (self.out_len(h, 0), self.out_len(w, 1)) {
            (Some(oh), Some(ow)) => Ok(vec![n, c, oh, ow]),
            _ => Err(shape_err(
                "Pool",
                "input",
                x,
                format!(
                    "at least the {:?} window (dilated, after padding)",
                    self.kernel
                ),
            )),
        }
    }

    pub fn run(&self, cpu: &Cpu, x: &Tensor) -> Result<Tensor, KernelError> {
        let mut y = Tensor::zeros(self.output_shape(&x.shape)?);
        self.run_into(cpu, x, &mut y.data)?;
        Ok(y)
    }

    pub fn run_into(&self, cpu: &Cpu, x: &Tensor, y: &mut [f32]) -> Result<(), KernelError> {
        let out = self.output_shape(&x.shape)?;
        let [_, _, h, w] = x.shape[..] else {
            unreachable!()
        };
        let [_, _, oh, ow] = out[..] else {
            unreachable!()
        };
        if y.len() != out.iter().product::<usize>() {
            return Err(shape_err("Pool", "output", &[y.len()], format!("{out:?}")));
        }
        if y.is_empty() {
            return Ok(());
        }
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        // Windows that never leave the image need no bounds checks: the
        // common case (no padding, no dilation, floor mode).
        let simple = self.pads == [0; 4]
            && self.dilations == [1, 1]
            && (oh - 1) * sh + kh <= h
            && (ow - 1) * sw + kw <= w;
        #[cfg(target_arch = "x86_64")]
        if simple && self.average_avx512(cpu, x, [h, w], [oh, ow], y) {
            return Ok(());
        }
        let planes: Vec<(usize, &mut [f32])> = y.chunks_mut(oh * ow).enumerate().collect();
        cpu.for_each(planes, |_, (p, dst)| {
            let src = &x.data[p * h * w..(p + 1) * h * w];
            if simple {
                self.plane_inside(src, w, oh, ow, dst);
            } else {
                self.plane_padded(src, [h, w], [oh, ow], dst);
            }
        });
        Ok(())
    }

    /// Average pooling with the AVX-512 kernel, when it is one and the CPU
    /// has it; false (nothing written) otherwise. Every window lies inside
    /// its plane.
    #[cfg(target_arch = "x86_64")]
    fn average_avx512(
        &self,
        cpu: &Cpu,
        x: &Tensor,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        y: &mut [f32],
    ) -> bool {
        if self.kind != PoolKind::Average || w > avx512::POOL_MAX_WIDTH || !avx512::available() {
            return false;
        }
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        cpu.for_each_run(y, oh * ow, |first, run| {
            let planes = run.len() / (oh * ow);
            let src = &x.data[first * h * w..(first + planes) * h * w];
            avx512::average_pool(src, [h, w], [kh, kw], [sh, sw], [oh, ow], run);
        });
        true
    }
}

impl Pool2d {
    /// Windows that may reach into padding or past the plane: each tap is
    /// bounds-checked.
    fn plane_padded(&self, src: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2], dst: &mut [f32]) {
        let pads = self.pads.map(|p| p as isize);
        for oy in 0..oh {
            for ox in 0..ow {
                dst[oy * ow + ox] = self.window(src, [h, w], pads, [oy, ox]);
            }
        }
    }

    /// The pooled value of the window of output `[oy, ox]`.
    fn window(
        &self,
        src: &[f32],
        [h, w]: [usize; 2],
        [pt, pl, pb, pr]: [isize; 4],
        [oy, ox]: [usize; 2],
    ) -> f32 {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let (mut acc, mut valid, mut counted) = match self.kind {
            PoolKind::Max => (f32::NEG_INFINITY, 0usize, 0usize),
            PoolKind::Average => (0.0, 0, 0),
        };
        for i in 0..kh {
            let iy = (oy * sh + i * dh) as isize - pt;
            if iy >= h as isize + pb {
                continue;
            }
            for j in 0..kw {
                let ix = (ox * sw + j * dw) as isize - pl;
                if ix >= w as isize + pr {
                    continue;
                }
                counted += 1;
                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                    continue;
                }
                let v = src[iy as usize * w + ix as usize];
                valid += 1;
                acc = match self.kind {
                    // NaN wins, as in the reference implementations.
                    PoolKind::Max => {
                        if v > acc || v.is_nan() {
                            v
                        } else {
                            acc
                        }
                    }
                    PoolKind::Average => acc + v,
                };
            }
        }
        match self.kind {
            PoolKind::Max => acc,
            PoolKind::Average => {
                let div = if self.count_include_pad {
                    counted
                } else {
                    valid
                };
                if div == 0 {
                    0.0
                } else {
                    acc / div as f32
                }
            }
        }
    }
    /// Every window lies inside the plane: plain index loops, no bounds
    /// logic, so the compiler can keep the sums in registers.
    fn plane_inside(&self, src: &[f32], w: usize, oh: usize, ow: usize, dst: &mut [f32]) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let div = (kh * kw) as f32;
        for oy in 0..oh {
            let out = &mut dst[oy * ow..(oy + 1) * ow];
            match self.kind {
                PoolKind::Average => {
                    // Sum the window's rows element-wise first (a vector add
                    // over the whole row), then each window's columns.
                    ROW_SUM.with(|cell| {
                        let mut acc = cell.borrow_mut();
                        acc.clear();
                        acc.extend_from_slice(&src[oy * sh * w..(oy * sh + 1) * w]);
                        for i in 1..kh {
                            let row = &src[(oy * sh + i) * w..(oy * sh + i + 1) * w];
                            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                        }
                        for (ox, o) in out.iter_mut().enumerate() {
                            *o = acc[ox * sw..ox * sw + kw].iter().sum::<f32>() / div;
                        }
                    });
                }
                PoolKind::Max => {
                    out.fill(f32::NEG_INFINITY);
                    for i in 0..kh {
                        let row = &src[(oy * sh + i) * w..(oy * sh + i + 1) * w];
                        for (ox, o) in out.iter_mut().enumerate() {
                            for &v in &row[ox * sw..ox * sw + kw] {
                                if v > *o || v.is_nan() {
                                    *o = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Column sums of one row of windows, kept per thread: a buffer set up per
    /// row would cost more than the sums.
    static ROW_SUM: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Mean over H and W: `[N, C, H, W]` → `[N, C, 1, 1]`.
pub fn global_average_pool(x: &Tensor) -> Result<Tensor, KernelError> {
    let [n, c, h, w] = x.shape[..] else {
        return Err(shape_err(
            "GlobalAveragePool",
            "input",
            &x.shape,
            "[N, C, H, W]",
        ));
    };
    let hw = h * w;
    let data = if hw == 0 {
        vec![f32::NAN; n * c]
    } else {
        x.data
            .chunks(hw)
            .map(|p| p.iter().sum::<f32>() / hw as f32)
            .collect()
    };
    Ok(Tensor::new(vec![n, c, 1, 1], data))
}
