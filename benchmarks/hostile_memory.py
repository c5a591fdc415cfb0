"""Peak memory of two hostile inputs, another checkout's code (the baseline,
e.g. the main branch) against this one, side by side.

    python benchmarks/hostile_memory.py --baseline-root ../main [--bomb-gib 1]

- `score m.onnx --data x.npz`, x.npz a symbolic link to /dev/zero (a file
  that never ends);
- `evaluate --benchmark-file logs.zip` of a NAS-Bench-NLP store, logs.zip a
  zip of about 1 MB whose one log expands to BOMB GiB;
- for scale, the same two commands on ordinary files (8 images; one real log).

Each command runs in a fresh process (the CLI in-process there, as
`epsinas-onnx` runs it) that reports its peak resident memory (getrusage
ru_maxrss) after the imports and at the end, its exit status and the first
line of its stderr. The process's address space is capped at CAP GiB
(RLIMIT_AS, default 4): code that reads without bound then ends in "out of
memory" at the cap rather than taking the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import contextlib, io, json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import epsinas_onnx
    from epsinas_onnx.cli import main
    import onnx, onnxruntime, onnx_ir  # what a command imports before it reads a file
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(sys.argv[2:])
        except SystemExit as exc:
            code = exc.code
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"imported_kib": imported, "peak_kib": peak, "seconds": seconds, "code": code,
                      "stderr": (err.getvalue().strip().splitlines() or [""])[0][:110]}))
""")

LOG = {"recepie_id": 1, "status": "OK", "num_params": 100, "val_losses": [6.0, 5.5], "test_losses": [6.1, 5.6],
       "recepie": '{"h_new_0": {"op": "linear", "input": ["x", "h_prev_0"]}}'}


def write_files(folder: Path, bomb_gib: float) -> dict[str, Path]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "m.onnx")
    os.symlink("/dev/zero", folder / "x.npz")
    np.savez(folder / "images.npz", images=np.zeros((8, 8, 8, 3), np.uint8))
    with zipfile.ZipFile(folder / "logs.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("log_stats_model_1.json", "w", force_zip64=True) as member:
            left, spaces = int(bomb_gib * 2**30), b" " * 2**24  # JSON whitespace: valid until its end
            while left:
                member.write(spaces[: min(left, len(spaces))])
                left -= min(left, len(spaces))
    with zipfile.ZipFile(folder / "one_log.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("log_stats_model_1.json", json.dumps(LOG))
    _nlp_store(folder / "nlp.sqlite")
    return {"m": folder / "m.onnx", "zero": folder / "x.npz", "images": folder / "images.npz",
            "bomb": folder / "logs.zip", "log": folder / "one_log.zip", "store": folder / "nlp.sqlite"}


def _nlp_store(path: Path) -> None:
    """A store of one NAS-Bench-NLP row (this checkout's schema, which the baseline's reads too)."""
    sys.path.insert(0, str(HERE))
    from epsinas_onnx.experiments.store import ResultStore
    from epsinas_onnx.spaces import get_space

    nlp = get_space("nlp")
    arch = nlp.format_arch(nlp.parse(LOG["recepie"]))
    with ResultStore(path) as store:
        store.add({"space": "nlp", "arch": arch, "weights": "[1e-05, 0.001]", "data": "0" * 16, "settings": "{}",
                   "score": 0.5, "seconds": 0.1})
        store.commit()


def measure(root: Path, argv: list[str], cap_gib: float) -> dict:
    import resource

    cap = int(cap_gib * 2**30)
    result = subprocess.run([sys.executable, "-c", CHILD, str(root), *argv], capture_output=True, text=True,
                            cwd=tempfile.gettempdir(), timeout=600,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    if result.returncode != 0 or not result.stdout.strip():
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"failed": f"exit {result.returncode}: {last[:110]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-root", type=Path, required=True, help="The checkout to compare against.")
    parser.add_argument("--bomb-gib", type=float, default=1.0, help="What the zip's log expands to.")
    parser.add_argument("--cap-gib", type=float, default=4.0, help="The address-space cap of each command.")
    args = parser.parse_args()
    roots = {"baseline": args.baseline_root.resolve(), "this checkout": HERE}
    with tempfile.TemporaryDirectory() as tmp:
        f = write_files(Path(tmp), args.bomb_gib)
        cases = {
            "--data x.npz -> /dev/zero": ["score", f["m"], "--data", f["zero"], "--batch-size", "2"],
            "--data images.npz (8 images)": ["score", f["m"], "--data", f["images"], "--batch-size", "2"],
            f"NLP logs zip, {f['bomb'].stat().st_size / 2**20:.1f} MB -> {args.bomb_gib:g} GiB":
                ["evaluate", "--store", f["store"], "--benchmark-file", f["bomb"]],
            "NLP logs zip, one real log": ["evaluate", "--store", f["store"], "--benchmark-file", f["log"]],
        }
        print(f"peak resident memory (getrusage ru_maxrss) of one command in a fresh process, MiB; "
              f"address space capped at {args.cap_gib:g} GiB")
        print(f"{'input':<34} {'code':<14} {'imported':>8} {'peak':>7} {'adds':>7} {'s':>6}  exit, stderr")
        for name, argv in cases.items():
            for label, root in roots.items():
                row = measure(root, [str(a) for a in argv], args.cap_gib)
                if "failed" in row:
                    print(f"{name:<34} {label:<14} {row['failed']}")
                    continue
                imported, peak = row["imported_kib"] / 1024, row["peak_kib"] / 1024
                print(f"{name:<34} {label:<14} {imported:>8.0f} {peak:>7.0f} {peak - imported:>7.0f} "
                      f"{row['seconds']:>6.2f}  {row['code']}, {row['stderr']}")
        for label, root in roots.items():
            print(f"{label}: {root}")


if __name__ == "__main__":
    main()
