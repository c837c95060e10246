"""Run a benchmark runner in fresh processes and keep the median of each figure."""

import json
import subprocess


def median_of_runs(cmd: list[str], label: str, repeats: int = 1) -> dict:
    """Median of each figure over ``repeats`` runs of ``cmd`` (its last stdout line is a JSON dict).

    Each run is printed as it ends; a failed run gives ``{"error": last stderr line}``.
    """
    results = []
    for _ in range(repeats):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"# {label}: {results[-1]}", flush=True)
    return {key: sorted(r[key] for r in results)[len(results) // 2] for key in results[0]}
