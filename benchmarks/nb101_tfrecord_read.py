"""How long `evaluate --benchmark-file nasbench_only108.tfrecord` spends
reading the benchmark's file, projected to the real one from a synthetic
file of the same record format.

    python benchmarks/nb101_tfrecord_read.py [--cells 20000]

The real file (499 MB) is not available here. This writes the first
`--cells` cells of `nb101.all_archs()` as the benchmark's records (three
repeats of 108 epochs each, the metrics protobuf written with the protobuf
package, the TFRecord CRCs; the fixture of tests/test_benchmark_readers.py),
then times `benchmark_files.read("nb101", path, archs=...)` given the cells'
texts as a store holds them after `bench nb101 --all`, checks that every
cell found its row, and projects the time to the whole file (423,624 cells,
1,270,872 records) by the bytes read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from epsinas_onnx.experiments import benchmark_files  # noqa: E402
from epsinas_onnx.spaces import nb101  # noqa: E402
from tests.test_benchmark_readers import _metrics_class, _nb101_record, _write_tfrecord  # noqa: E402

WHOLE_SPACE = 423_624


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    args = parser.parse_args()
    cells = nb101.all_archs()[:args.cells]
    metrics_class = _metrics_class()
    records = []
    for k, cell in enumerate(cells):
        matrix, ops = [list(row) for row in cell.matrix], list(cell.ops)
        records += _nb101_record(metrics_class, nb101.nasbench_hash(matrix, ops), 108, matrix, ops,
                                 [0.9, 0.91, 0.92], [0.8, 0.81, 0.82], 1000 + k)
    texts = [nb101.format_arch(cell) for cell in cells]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nasbench_only108.tfrecord"
        _write_tfrecord(path, records)
        size = path.stat().st_size
        start = time.perf_counter()
        table = benchmark_files.read("nb101", path, archs=texts)
        seconds = time.perf_counter() - start
    found = {row["arch"] for row in table.rows}
    missing = sum(text not in found for text in texts)
    scale = WHOLE_SPACE / len(cells)
    print(f"{len(cells)} cells, {len(records)} records, {size / 2**20:.1f} MiB: read in {seconds:.1f} s "
          f"({size / 2**20 / seconds:.1f} MiB/s); {len(table.rows)} rows, {missing} cells without their row")
    print(f"projected for the whole file ({WHOLE_SPACE} cells, {size * scale / 2**20:.0f} MiB): "
          f"{seconds * scale / 60:.1f} min")


if __name__ == "__main__":
    main()
