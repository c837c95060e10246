"""Run a command in two CPU processes under torchrun, as a user would scale out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def two_processes(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 <args>`` on a free port, one thread per process; asserts it succeeded.

    >>> two_processes("-m", "stformer.cli", "embed", "tokens", "--model", "m", "--out", "e")  # doctest: +SKIP
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    proc = subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
