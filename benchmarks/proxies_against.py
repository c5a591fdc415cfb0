"""The proxies of this checkout against those of another commit, in one
process: CPU seconds per architecture of each, and whether every value is
bit for bit the same.

    python -m benchmarks.proxies_against 3850783 --space nb201 --n 16 --data cifar10_test_1000.npz

The other commit's `epsinas_onnx` is taken with `git archive` into a
temporary folder and imported beside this checkout's (each import gets its
own modules); the two compute every proxy of the same architectures in turn,
the order alternating from one architecture to the next so that a machine
shared with other work slows both alike. One thread, the first 256 images of
--data, CIFAR-10 normalisation, as bench runs NAS-Bench-201.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("naswot", "zen", "meco", "params", "flops")


def import_package(root: Path) -> dict:
    """This root's epsinas_onnx modules the benchmark calls (a fresh import)."""
    for name in [n for n in sys.modules if n == "epsinas_onnx" or n.startswith("epsinas_onnx.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        from epsinas_onnx.core.options import BatchOptions, ExecutionOptions
        from epsinas_onnx.core.scoring.scorer import batch_for, prepare_model
        from epsinas_onnx.proxies import engine
        from epsinas_onnx.proxies.proxy import Context, ProxyOptions
        from epsinas_onnx.spaces import get_space
    finally:
        sys.path.remove(str(root))
    return dict(BatchOptions=BatchOptions, ExecutionOptions=ExecutionOptions, batch_for=batch_for,
                prepare_model=prepare_model, engine=engine, Context=Context, ProxyOptions=ProxyOptions,
                get_space=get_space)


def checkout(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "epsinas_onnx"], check=True,
                             capture_output=True).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(into, filter="data")
    return into


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the other commit (a git ref of this repository)")
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        versions = {"this checkout": import_package(ROOT), args.ref: import_package(checkout(args.ref, Path(folder)))}
        first = versions["this checkout"]
        space = first["get_space"](args.space)
        archs = space.sample(args.n, args.seed)
        model = first["prepare_model"](space.to_onnx(archs[0], **space.export_defaults), execution=first["ExecutionOptions"](threads=1))
        batch = first["batch_for"](model, first["BatchOptions"](data=str(args.data), batch_size=256,
                                                                 norm="cifar10")).array
        runs = {}
        for label, v in versions.items():
            space_v = v["get_space"](args.space)
            context = v["Context"](batch, "input", v["ProxyOptions"](), 256)
            execution = v["ExecutionOptions"](device="cpu", threads=1)
            runs[label] = (space_v, context, execution, v["engine"])
            warm = space_v.parse(space.format_arch(archs[0]))
            v["engine"].compute_on(lambda: space_v.to_ir(warm, **space_v.export_defaults), NAMES, context,
                                   execution)  # imports and the arena, once
        cpu = dict.fromkeys(runs, 0.0)
        differing = dict.fromkeys(NAMES, 0)
        for i, arch in enumerate(archs):
            values = {}
            for label in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                space_v, context, execution, engine = runs[label]
                start = time.process_time()
                own = space_v.parse(space.format_arch(arch))
                got = engine.compute_on(lambda: space_v.to_ir(own, **space_v.export_defaults), NAMES, context,
                                        execution)
                cpu[label] += time.process_time() - start
                values[label] = {name: got[name].value for name in NAMES}
            mine, theirs = values.values()
            for name in NAMES:
                differing[name] += not same(mine[name], theirs[name])
            print(f"{i + 1}/{len(archs)}", flush=True, file=sys.stderr)
    n = len(archs)
    print(f"{args.space}, {n} architectures (sample({args.n}, {args.seed})), one thread, every proxy "
          f"({', '.join(NAMES)}), CPU seconds per architecture:")
    for label, seconds in cpu.items():
        print(f"  {label:<16} {seconds / n:.3f}")
    mine, theirs = cpu.values()
    print(f"  ratio            {mine / theirs:.2f}")
    print("architectures whose value differs: " + ", ".join(f"{k} {v}" for k, v in differing.items()))


if __name__ == "__main__":
    main()
