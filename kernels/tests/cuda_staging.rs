//! Staged copies between device and host (`Staging`) and device-to-device
//! copies, against plain downloads of the same tensors. Needs a CUDA
//! device; `scripts/cuda-emu.sh test` runs it on the CPU emulation of one.

use mpinfer_kernels::cuda::Gpu;
use mpinfer_kernels::device::choose;
use mpinfer_kernels::{Device, DeviceRequest, StoredDType, Tensor};
use mpinfer_testkit::skip_cuda;

/// The device, or `None` with the skip recorded. Under the emulation
/// (`MPINFER_CUDA_EMULATED=1`) a missing device is a failure.
fn gpu() -> Option<Gpu> {
    let emulated = std::env::var_os("MPINFER_CUDA_EMULATED").is_some_and(|v| v == "1");
    match choose(DeviceRequest::Auto, 0) {
        Ok((Device::Cuda(i), _)) => Some(Gpu::new(i).expect("open the device choose picked")),
        Ok((Device::Cpu, why)) => {
            assert!(!emulated, "MPINFER_CUDA_EMULATED=1 but no device: {why}");
            skip_cuda(&format!("no CUDA device to test on: {why}"));
            None
        }
        Err(e) => panic!("choose(Auto) must not fail: {e}"),
    }
}

/// Distinct values, so a chunk landing in the wrong place shows.
fn ramp(n: usize) -> Tensor {
    Tensor::new(vec![n], (0..n).map(|i| i as f32 * 0.5 - 7.0).collect())
}

/// Lengths below, at and around the chunk sizes tried.
const LENGTHS: [usize; 6] = [0, 1, 6, 7, 50, 1001];
const CHUNKS: [usize; 4] = [1, 7, 64, 4096];

#[test]
fn staged_downloads_and_uploads_match_plain_copies() {
    let Some(gpu) = gpu() else { return };
    for chunk in CHUNKS {
        let mut staging = gpu.staging(chunk).unwrap();
        for n in LENGTHS {
            let x = ramp(n);
            let d = gpu.upload(&x, StoredDType::F32).unwrap();
            let down = staging.download(&gpu, &d).unwrap();
            assert_eq!(down.shape, x.shape, "chunk {chunk}, {n} values");
            assert_eq!(
                down.data, x.data,
                "staged download, chunk {chunk}, {n} values"
            );
            let up = staging.upload(&gpu, &x).unwrap();
            let back = gpu.download(&up).unwrap();
            assert_eq!(
                back.data, x.data,
                "staged upload, chunk {chunk}, {n} values"
            );
        }
    }
}

#[test]
fn work_in_chunks_sees_every_value_once_in_order_and_is_written_back() {
    let Some(gpu) = gpu() else { return };
    for chunk in CHUNKS {
        let mut staging = gpu.staging(chunk).unwrap();
        for n in LENGTHS {
            let x = ramp(n);
            let mut d = gpu.upload(&x, StoredDType::F32).unwrap();
            let mut seen = Vec::new();
            let mut calls = 0;
            staging
                .in_chunks(&gpu, &mut d, |c: &mut [f32]| {
                    assert!(c.len() <= chunk && !c.is_empty());
                    seen.extend_from_slice(c);
                    // Work that depends on the chunk, as a collective's does.
                    c.iter_mut().for_each(|v| *v = *v * 2.0 + calls as f32);
                    calls += 1;
                    Ok::<(), mpinfer_kernels::KernelError>(())
                })
                .unwrap();
            assert_eq!(seen, x.data, "chunk {chunk}, {n} values: what the host saw");
            assert_eq!(calls, n.div_ceil(chunk), "chunk {chunk}, {n} values");
            let want: Vec<f32> = x
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| v * 2.0 + (i / chunk) as f32)
                .collect();
            assert_eq!(
                gpu.download(&d).unwrap().data,
                want,
                "chunk {chunk}, {n} values"
            );
        }
    }
}

#[test]
fn an_error_in_the_work_stops_the_chunks_and_is_returned() {
    let Some(gpu) = gpu() else { return };
    let mut staging = gpu.staging(4).unwrap();
    let mut d = gpu.upload(&ramp(20), StoredDType::F32).unwrap();
    let mut calls = 0;
    let r = staging.in_chunks(&gpu, &mut d, |_: &mut [f32]| {
        calls += 1;
        if calls == 2 {
            Err(mpinfer_kernels::KernelError::Unavailable(
                "peer lost".into(),
            ))
        } else {
            Ok(())
        }
    });
    assert!(r.unwrap_err().to_string().contains("peer lost"));
    assert_eq!(calls, 2);
    // The buffers are usable again afterwards.
    let again = staging.download(&gpu, &d).unwrap();
    assert_eq!(again.data.len(), 20);
}

#[test]
fn staging_refuses_16_bit_tensors() {
    let Some(gpu) = gpu() else { return };
    let mut staging = gpu.staging(8).unwrap();
    let d = gpu.upload(&ramp(8), StoredDType::BF16).unwrap();
    let e = staging.download(&gpu, &d).unwrap_err().to_string();
    assert!(e.contains("f32"), "{e}");
}

#[test]
fn device_copies_are_independent_of_their_source() {
    let Some(gpu) = gpu() else { return };
    for dtype in [StoredDType::F32, StoredDType::F16, StoredDType::BF16] {
        for n in [0, 1, 33] {
            let x = ramp(n);
            let mut d = gpu.upload(&x, dtype).unwrap();
            let copy = gpu.copy(&d).unwrap();
            assert_eq!(copy.shape(), d.shape());
            assert_eq!(copy.dtype(), dtype);
            let before = gpu.download(&d).unwrap();
            // Change the source in place; the copy keeps the old values.
            gpu.relu(&mut d).unwrap();
            let after = gpu.download(&d).unwrap();
            assert!(n == 0 || after.data != before.data);
            assert_eq!(
                gpu.download(&copy).unwrap().data,
                before.data,
                "{dtype:?}, {n}"
            );
        }
    }
}
