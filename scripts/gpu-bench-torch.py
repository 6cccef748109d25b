"""cuBLAS and cuDNN on the shapes kernels/examples/cuda_bench.rs times, through
PyTorch: the references scripts/gpu-check.sh compares mpinfer's CUDA kernels
with. One JSON object per case on stdout, in the example's format. TF32 is
off, so f32 is f32 on both sides.

    python3 scripts/gpu-bench-torch.py > torch.jsonl
"""

import json
import statistics
import sys

import torch

GEMMS = [(1024, 1024, 1024), (4096, 4096, 4096), (1024, 3136, 100), (1024, 100, 10)]
CONVS = [((1024, 1, 32, 32), (32, 1, 3, 3)), ((1024, 32, 30, 30), (64, 32, 3, 3))]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def median_ms(op):
    """Milliseconds per call: the median of 5 runs of enough calls to take
    about 50 ms, after a warm-up, timed with CUDA events."""
    op()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    op()
    end.record()
    end.synchronize()
    calls = max(1, min(1000, int(50.0 / max(start.elapsed_time(end), 1e-3))))
    runs = []
    for _ in range(5):
        start.record()
        for _ in range(calls):
            op()
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / calls)
    return statistics.median(runs)


def report(impl, op, dtype, shape, ms, flops):
    print(json.dumps({
        "impl": impl, "device": torch.cuda.get_device_name(), "op": op, "dtype": dtype,
        "shape": shape, "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 4),
    }))


def main():
    if not torch.cuda.is_available():
        sys.exit("gpu-bench-torch: PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, dtype in DTYPES.items():
        for m, k, n in GEMMS:
            a = torch.rand(m, k, device="cuda", dtype=dtype, generator=gen)
            b = torch.rand(k, n, device="cuda", dtype=dtype, generator=gen)
            ms = median_ms(lambda: torch.mm(a, b))
            report("cublas", "gemm", name, f"{m}x{k}x{n}", ms, 2.0 * m * k * n)
        for xs, ws in CONVS:
            x = torch.rand(*xs, device="cuda", dtype=dtype, generator=gen)
            w = torch.rand(*ws, device="cuda", dtype=dtype, generator=gen)
            ms = median_ms(lambda: torch.nn.functional.conv2d(x, w))
            oh, ow = xs[2] - ws[2] + 1, xs[3] - ws[3] + 1
            flops = 2.0 * xs[0] * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]
            report("cudnn", "conv", name, f"x{list(xs)} w{list(ws)}", ms, flops)


if __name__ == "__main__":
    main()
