"""What the hardware is fast at."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

BF16_MIN_SPEEDUP = 1.2  # bf16 matrix products must be this much faster than fp32 for bf16 to be used on a CPU


def bf16_is_fast(device: str | None = None) -> bool:
    """True on CUDA devices with bf16 and on CPUs with bf16 matrix instructions (AMX or AVX512-BF16).

    ``device``: ``"cuda"`` or ``"cpu"``; None means CUDA when present. On CPUs PyTorch must also
    dispatch to its AVX512 kernels: with ``ATEN_CPU_CAPABILITY=avx2`` (how the benchmarks stand in
    for an AVX2-only CPU) bf16 is emulated and slow. The flags are not enough: on a virtual Intel
    Xeon with AVX512-BF16 (2026-12-07) bf16 products ran at 127 GFLOP/s against 215 for fp32, so a
    CPU with the flags is also timed once (:func:`cpu_bf16_speedup`, about 0.1 s) and must reach
    ``BF16_MIN_SPEEDUP``. Measured on an AMD EPYC with AVX512-BF16 (2 cores): bf16 autocast
    trains the default model 1.5x faster.
    """
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 time over bf16 time of a (1024, 256) x (256, 1024) matrix product on this CPU, best of 5 rounds."""

    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(1024, 256, dtype=dtype), torch.randn(256, 1024, dtype=dtype)
        a @ b  # warm-up: kernels chosen, memory touched
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            rounds.append(time.perf_counter() - start)
        return min(rounds)

    return best(torch.float32) / best(torch.bfloat16)
