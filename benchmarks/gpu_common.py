"""Helpers shared by the GPU benchmarks: CUDA-event timing, the peak of GPU
memory drawn from CuPy's pool, device peaks for roofline fractions, and the
result file name of a device."""

from __future__ import annotations

import re
import statistics
import time

# peak numbers of known devices: (FP32 TFLOP/s without tensor cores, memory TB/s)
PEAKS = {
    "H100 80GB HBM3": (66.9, 3.35), "H100 PCIe": (51.2, 2.0), "H100": (66.9, 3.35),
    "H200": (66.9, 4.8), "A100-SXM4-80GB": (19.5, 2.04), "A100-SXM4-40GB": (19.5, 1.55),
    "A100": (19.5, 1.55), "L40S": (91.6, 0.864), "RTX 4090": (82.6, 1.01),
}


def peaks_of(name):
    """(FP32 TFLOP/s, memory TB/s) of a device name, or (None, None) if unknown."""
    for key, val in PEAKS.items():
        if key in name:
            return val
    return (None, None)


def device_name(cp):
    """Name of the current CUDA device."""
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def device_tag(name):
    """``name`` as a file-name fragment (``NVIDIA H200`` -> ``nvidia_h200``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


class PeakMemory:
    """Peak bytes held from CuPy's pool while active (a CuPy MemoryHook).

    ``peak`` counts allocations made inside the block on top of what was held
    when it began."""

    def __init__(self, cp):
        outer = self

        class Hook(cp.cuda.MemoryHook):
            name = "pacnd_bench_peak"

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                outer.cur += mem_size
                outer.peak = max(outer.peak, outer.cur)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                outer.cur -= mem_size

        self.cur = self.peak = 0
        self.hook = Hook()

    def __enter__(self):
        self.cur = self.peak = 0
        self.hook.__enter__()
        return self

    def __exit__(self, *exc):
        self.hook.__exit__(*exc)


def time_gpu(cp, fn, repeat, max_seconds=20.0):
    """(median, min) seconds of ``fn()`` over up to ``repeat`` runs after one
    warm-up, each timed with CUDA events on the current stream. Slow calls get
    fewer runs (at least 3) so that the timed runs take about ``max_seconds``:
    a device lease is short."""
    t0 = time.perf_counter()
    fn()
    cp.cuda.Device().synchronize()
    first = time.perf_counter() - t0
    repeat = max(min(repeat, 3), min(repeat, int(max_seconds / max(first, 1e-9))))
    times = []
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times), min(times)


def peak_extra_bytes(cp, fn):
    """Peak bytes one call of ``fn()`` (warmed up already) draws from CuPy's pool
    above what it held before (the result included while it is alive)."""
    cp.cuda.Device().synchronize()
    cp.get_default_memory_pool().free_all_blocks()
    with PeakMemory(cp) as pm:
        res = fn()
        cp.cuda.Device().synchronize()
    del res
    return pm.peak


def torch_peak_extra_bytes(fn):
    """Peak bytes one call of ``fn()`` (PyTorch on CUDA, after a warm-up call made
    here) allocates above what PyTorch held before it."""
    import torch  # noqa: PLC0415

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
