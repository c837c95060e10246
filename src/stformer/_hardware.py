"""What the hardware is fast at."""

from __future__ import annotations

from pathlib import Path

import torch


def bf16_is_fast(device: str | None = None) -> bool:
    """True on CUDA devices with bf16 and on CPUs with bf16 matrix instructions (AMX or AVX512-BF16).

    ``device``: ``"cuda"`` or ``"cpu"``; None means CUDA when present. On CPUs PyTorch must also
    dispatch to its AVX512 kernels: with ``ATEN_CPU_CAPABILITY=avx2`` (how the benchmarks stand in
    for an AVX2-only CPU) bf16 is emulated and slow. Measured here (AVX512-BF16, 2 cores): bf16
    autocast trains the default model 1.5x faster.
    """
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
