"""Writing a token dataset: stformer's DatasetWriter against the datasets library's public path.

Both write the same Arrow tables (token lists and lengths) to a folder that
``datasets.load_from_disk`` opens. The public path, ``Dataset.from_generator`` then
``save_to_disk``, writes the data twice (into the cache, then the copy). Each writer runs in a
fresh process; peak = that process's peak resident memory, imports included.

    python benchmarks/bench_dataset_writer.py [--cells 20000] [--genes-per-cell 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import cpu

HERE = Path(__file__).resolve().parent

CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from _memory import peak_rss_kb
import numpy as np, pyarrow as pa
from datasets import Dataset, load_from_disk

writer, out, cells, per_cell = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)

def tables():
    for start in range(0, cells, 256):
        n = min(256, cells - start)
        offsets = np.arange(n + 1, dtype=np.int32) * per_cell
        tokens = rng.integers(2, 20_000, n * per_cell, dtype=np.int64)
        yield pa.table({{"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens)),
                        "length": pa.array(np.full(n, per_cell), type=pa.int64())}})

start = time.perf_counter()
if writer == "stformer":
    from stformer.tokenize._dataset_writer import DatasetWriter
    with DatasetWriter(__import__("pathlib").Path(out), 500_000_000) as w:
        for table in tables():
            w.write(table)
else:
    def rows():
        for table in tables():
            yield from table.to_pylist()
    Dataset.from_generator(rows, cache_dir=out + ".cache").save_to_disk(out)
seconds = time.perf_counter() - start
assert len(load_from_disk(out)) == cells
print(f"{{seconds:.2f}} {{peak_rss_kb() / 1e6:.2f}}")
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes-per-cell", type=int, default=2_000)
    a = p.parse_args()
    print(f"Writing {a.cells:,} cells x {a.genes_per_cell:,} tokens; CPU: {cpu()}")
    print(f"{'writer':<44} {'seconds':>8} {'peak GB':>8}")
    writers = (
        ("stformer", "stformer DatasetWriter (streams tables)"),
        ("memory", "Dataset(all tables in memory) + save_to_disk"),
        ("datasets", "Dataset.from_generator + save_to_disk"),
    )
    for writer, label in writers:
        with tempfile.TemporaryDirectory() as tmp:
            code = CHILD.format(here=str(HERE))
            out = subprocess.run(
                [sys.executable, "-c", code, writer, str(Path(tmp) / "ds"), str(a.cells), str(a.genes_per_cell)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            print(f"{label:<44} {float(out[-2]):>8.2f} {float(out[-1]):>8.2f}")


if __name__ == "__main__":
    main()
