//! Copies between device tensors and host memory for the collectives, and
//! device-to-device copies.
//!
//! A collective runs on the host, so its value crosses PCIe twice. Staged
//! copies go through two page-locked chunk buffers, so the DMA engine works
//! on one chunk while the host works on the other: copying it to or from
//! pageable memory, or running the collective itself on it
//! ([`Staging::in_chunks`]). Page-locked memory is also what lets a copy
//! run at the bus's speed at all; from pageable memory the driver copies
//! through a bounce buffer of its own first.
//!
//! The buffers are not write-combined: the host reads them back.

use std::ops::Range;

use cudarc::driver::{result, CudaEvent};

use super::{driver_error, Gpu, GpuTensor};
use crate::error::KernelError;
use crate::tensor::{StoredDType, Tensor};

/// Page-locked host memory for one chunk, and the event recorded after the
/// last copy queued on it.
struct Pinned {
    ptr: *mut f32,
    len: usize,
    done: CudaEvent,
}

// SAFETY: the buffer is plain host memory owned by this value; the event
// orders every device access to it before the host touches it.
unsafe impl Send for Pinned {}

impl Pinned {
    /// Waits for the copy last queued on this buffer, then lends it to the
    /// host.
    fn wait(&mut self, len: usize) -> Result<&mut [f32], KernelError> {
        debug_assert!(len <= self.len);
        self.done
            .synchronize()
            .map_err(driver_error("waiting for a staged copy"))?;
        // SAFETY: `len <= self.len` values of this allocation, which no
        // device copy is using any more.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, len) })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // A copy still in flight must not land in freed memory.
        let _ = self.done.synchronize();
        // SAFETY: allocated by malloc_host in Gpu::staging, freed once.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}

/// Two chunk buffers for staged copies on one device.
pub struct Staging {
    chunk: usize,
    buffers: [Pinned; 2],
}

/// `0..n` in runs of `chunk`.
fn chunks(n: usize, chunk: usize) -> Vec<Range<usize>> {
    (0..n.div_ceil(chunk))
        .map(|k| k * chunk..((k + 1) * chunk).min(n))
        .collect()
}

const F32: usize = std::mem::size_of::<f32>();

impl Gpu {
    /// Buffers for staged copies of `chunk` f32 values at a time.
    pub fn staging(&self, chunk: usize) -> Result<Staging, KernelError> {
        let chunk = chunk.max(1);
        let buffer = || -> Result<Pinned, KernelError> {
            let failed = driver_error(format!("allocating {chunk} pinned host values"));
            self.ctx.bind_to_thread().map_err(failed)?;
            let failed = driver_error(format!("allocating {chunk} pinned host values"));
            // SAFETY: memory for `chunk` f32, freed by Pinned's drop; the
            // host reads it only after a copy has filled it (Pinned::wait).
            let ptr = unsafe { result::malloc_host(chunk * F32, 0) }.map_err(failed)?;
            let done = self
                .ctx
                .new_event(None)
                .map_err(driver_error("creating a staging event"))?;
            Ok(Pinned {
                ptr: ptr.cast(),
                len: chunk,
                done,
            })
        };
        Ok(Staging {
            chunk,
            buffers: [buffer()?, buffer()?],
        })
    }

    /// A copy of `x` made on the device.
    pub fn copy(&self, x: &GpuTensor) -> Result<GpuTensor, KernelError> {
        self.check_owner("Copy", &[x])?;
        let mut y = self.alloc(x.shape().to_vec(), x.dtype())?;
        if !x.is_empty() {
            y.copy_from(x, self.stream())?;
        }
        Ok(y)
    }
}

impl Staging {
    /// Values per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Queues the copy of device values `r` (from address `src`) into buffer
    /// `b`.
    fn fetch(
        &mut self,
        gpu: &Gpu,
        src: u64,
        r: &Range<usize>,
        b: usize,
    ) -> Result<(), KernelError> {
        let buf = &mut self.buffers[b];
        debug_assert!(r.len() <= buf.len);
        // SAFETY: `r.len()` values of the buffer's allocation. The previous
        // copy on this buffer is ordered before this one by the stream, and
        // the host is done with it (it waited for it before using it).
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr, r.len()) };
        // SAFETY: `r` lies inside the tensor at `src`, which outlives the
        // copy: callers wait for the buffer before the tensor can go.
        let queued = unsafe {
            result::memcpy_dtoh_async(dst, src + (r.start * F32) as u64, gpu.stream().cu_stream())
        };
        queued.map_err(driver_error(format!(
            "copying {} values to the host",
            r.len()
        )))?;
        buf.done
            .record(gpu.stream())
            .map_err(driver_error("recording a staged copy"))
    }

    /// Queues the copy of buffer `b`'s first `r.len()` values to device
    /// values `r` (at address `dst`).
    fn store(
        &mut self,
        gpu: &Gpu,
        dst: u64,
        r: &Range<usize>,
        b: usize,
    ) -> Result<(), KernelError> {
        let buf = &mut self.buffers[b];
        debug_assert!(r.len() <= buf.len);
        // SAFETY: `r.len()` values of the buffer's allocation, written by
        // the host before queueing the copy; it waits for `done` before
        // writing them again.
        let src = unsafe { std::slice::from_raw_parts(buf.ptr, r.len()) };
        // SAFETY: `r` lies inside the tensor at `dst`, on this stream, so
        // later kernels on it run after the copy.
        let queued = unsafe {
            result::memcpy_htod_async(dst + (r.start * F32) as u64, src, gpu.stream().cu_stream())
        };
        queued.map_err(driver_error(format!(
            "copying {} values to the device",
            r.len()
        )))?;
        buf.done
            .record(gpu.stream())
            .map_err(driver_error("recording a staged copy"))
    }

    /// `t` on the host. While chunk k is copied out of a page-locked buffer,
    /// chunk k + 1 comes off the device into the other.
    pub fn download(&mut self, gpu: &Gpu, t: &GpuTensor) -> Result<Tensor, KernelError> {
        check_f32("Download", gpu, t)?;
        gpu.ctx
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        let src = t.ptr(gpu.stream());
        let runs = chunks(t.len(), self.chunk);
        let mut data = Vec::with_capacity(t.len());
        if let Some(first) = runs.first() {
            self.fetch(gpu, src, first, 0)?;
        }
        for (k, r) in runs.iter().enumerate() {
            if let Some(next) = runs.get(k + 1) {
                self.fetch(gpu, src, next, (k + 1) % 2)?;
            }
            data.extend_from_slice(self.buffers[k % 2].wait(r.len())?);
        }
        Ok(Tensor::new(t.shape().to_vec(), data))
    }

    /// `t` on the device, as f32. While chunk k goes to the device from one
    /// page-locked buffer, the host fills the other with chunk k + 1.
    pub fn upload(&mut self, gpu: &Gpu, t: &Tensor) -> Result<GpuTensor, KernelError> {
        let mut y = gpu.alloc(t.shape.clone(), StoredDType::F32)?;
        gpu.ctx
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        let dst = y.ptr_mut(gpu.stream());
        for (k, r) in chunks(t.len(), self.chunk).iter().enumerate() {
            self.buffers[k % 2]
                .wait(r.len())?
                .copy_from_slice(&t.data[r.clone()]);
            self.store(gpu, dst, r, k % 2)?;
        }
        Ok(y)
    }

    /// Runs `f` on each chunk of `t` in page-locked memory and writes the
    /// chunk back: `f` on chunk k runs while chunk k + 1 comes off the
    /// device and chunk k - 1 goes back. For work on each value alone, such
    /// as summing partial sums across ranks.
    pub fn in_chunks<E: From<KernelError>>(
        &mut self,
        gpu: &Gpu,
        t: &mut GpuTensor,
        mut f: impl FnMut(&mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        check_f32("Staged", gpu, t)?;
        gpu.ctx
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        let at = t.ptr_mut(gpu.stream());
        let runs = chunks(t.len(), self.chunk);
        if let Some(first) = runs.first() {
            self.fetch(gpu, at, first, 0)?;
        }
        for (k, r) in runs.iter().enumerate() {
            // The stream runs this after chunk k - 1's copy back, which
            // read the same buffer.
            if let Some(next) = runs.get(k + 1) {
                self.fetch(gpu, at, next, (k + 1) % 2)?;
            }
            f(self.buffers[k % 2].wait(r.len())?)?;
            self.store(gpu, at, r, k % 2)?;
        }
        Ok(())
    }
}

fn check_f32(op: &'static str, gpu: &Gpu, t: &GpuTensor) -> Result<(), KernelError> {
    gpu.check_owner(op, &[t])?;
    if t.dtype() == StoredDType::F32 {
        Ok(())
    } else {
        Err(KernelError::Invalid {
            op,
            what: format!("staged copies are of f32 values, not {:?}", t.dtype()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_values_once_in_order() {
        assert_eq!(chunks(0, 4), vec![]);
        assert_eq!(chunks(4, 4), vec![0..4]);
        assert_eq!(chunks(10, 4), vec![0..4, 4..8, 8..10]);
    }
}
