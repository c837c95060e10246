"""The CPU a benchmark ran on, named beside every figure.

An AVX2-only CPU is stood in for on a newer one by capping every library's instruction set
(children inherit the environment):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/...

PyTorch then dispatches to its AVX2 kernels and stformer trains and predicts in fp32, as on such a
CPU; :func:`cpu` names the cap.
"""

import os
import platform
from pathlib import Path

CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu() -> str:
    """Model name, the vector flags that decide stformer's CPU paths, the architecture and any ISA cap."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    caps = [f"{cap}={os.environ[cap]}" for cap in CAPS if cap in os.environ]
    capped = f", capped: {' '.join(caps)}" if caps else ""
    return f"{name} ({', '.join(flags)}), {platform.machine()}{capped}"
