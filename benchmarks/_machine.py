"""The CPU a benchmark ran on, named beside every figure."""

import platform
from pathlib import Path


def cpu() -> str:
    """Model name, the vector flags that decide stformer's CPU paths, and the architecture."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    return f"{name} ({', '.join(flags)}), {platform.machine()}"
