"""Peak memory of making a batch from a large data file: another checkout's
code (the baseline, e.g. the main branch) against this one, side by side.

    python benchmarks/data_memory.py --baseline-root ../main [--size-gib 1] [--batch-size 4]

Writes a sparse .npy of uint8 NHWC zeros (SIZE GiB; no disk used) and an .npz
of the same array, deflated (a few MB), then, for each file and each
checkout, makes the batch in a fresh process and reports that process's peak
resident memory (getrusage ru_maxrss) after the imports and after the batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import epsinas_onnx
    from epsinas_onnx.core.options import BatchOptions
    from epsinas_onnx.core.scoring.inputs import InputSpec, prepare_batch
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    batch = prepare_batch(InputSpec("x", np.dtype(np.float32), ["b", 3, 32, 32]),
                          BatchOptions(data=sys.argv[2], batch_size=int(sys.argv[3])))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": epsinas_onnx.__file__, "imported_kib": imported, "peak_kib": peak,
                      "seconds": seconds, "shape": list(batch.array.shape)}))
""")


def write_files(folder: Path, size_gib: float) -> list[Path]:
    shape = (int(size_gib * 2**30) // 3072, 32, 32, 3)
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    npy = folder / "zeros.npy"
    with open(npy, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + int(np.prod(shape)))
    npz = folder / "zeros.npz"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("images.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        left, zeros = int(np.prod(shape)), bytes(2**24)
        while left:
            member.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
    return [npy, npz]


def measure(root: Path, path: Path, batch_size: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(root), str(path), str(batch_size)],
                            capture_output=True, text=True, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-root", type=Path, required=True, help="The checkout to compare against.")
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    roots = {"baseline": args.baseline_root.resolve(), "this checkout": HERE}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.size_gib)
        print(f"batch of {args.batch_size} from {args.size_gib:g} GiB of uint8 images (NHWC 32x32x3); peak RSS in MiB")
        print(f"{'file':<11} {'on disk':>9} {'code':<14} {'imported':>9} {'peak':>9} {'batch adds':>10} {'seconds':>8}")
        for path in files:
            on_disk = f"{path.stat().st_blocks * 512 / 2**20:.1f} MiB"
            for label, root in roots.items():
                row = measure(root, path, args.batch_size)
                if "error" in row:
                    print(f"{path.name:<11} {on_disk:>9} {label:<14} failed: {row['error']}")
                    continue
                imported, peak = row["imported_kib"] / 1024, row["peak_kib"] / 1024
                print(f"{path.name:<11} {on_disk:>9} {label:<14} {imported:>9.0f} {peak:>9.0f} {peak - imported:>10.0f} "
                      f"{row['seconds']:>8.2f}")
        for label, root in roots.items():
            print(f"{label}: {root}")


if __name__ == "__main__":
    main()
