"""The proxies' memory guard (epsinas_onnx/proxies/memory.py): its estimate
of a run's memory beside the real peak of a process making that run.

    python -m benchmarks.proxies_memory                 # the default cases below
    python -m benchmarks.proxies_memory --case naswot tnb_macro 64-121131-basic 256 16
    # one process through several TransNAS-Bench-101 macro skeletons (NASWOT, Zen, MeCo each): its resident
    # memory after each, beside the largest estimate of that skeleton's runs (the shared arena's growth)
    python -m benchmarks.proxies_memory --one-process 8 --images 32

Each case runs in a child process of its own: the space's exporter builds
the network, one proxy runs it on a batch of N Gaussian images
(engine.compute_on, one thread, as bench runs it; NASWOT takes 128 of them,
Zen draws two batches of 16, MeCo takes one), and the child reports the guard's estimate
of that run and, from /proc/self/status, its resident memory before the run
(VmRSS, after the imports and the batch) and its peak during it (VmHWM,
reset first through /proc/self/clear_refs). The ratio is the estimate over
the growth (the peak less the memory before): what the guard compares with
the memory available. A last line per model gives the guard's message for
NASWOT's own batch of 128 where that exceeds half of this machine's memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
CASES = [  # proxy, space, architecture, resolution, images in the batch (Zen draws its own 16, MeCo takes 1)
    ("naswot", "nb201", NB201, 32, 128),
    ("zen", "nb201", NB201, 32, 128),
    ("meco", "nb201", NB201, 32, 128),
    ("naswot", "macro", "22222222", 32, 128),
    ("naswot", "tnb_macro", "64-121131-basic", 256, 8),
    ("naswot", "tnb_macro", "64-121131-basic", 256, 16),
    ("naswot", "tnb_macro", "64-121131-basic", 256, 32),
    ("naswot", "tnb_macro", "64-211213-basic", 256, 32),
    ("zen", "tnb_macro", "64-211213-basic", 256, 16),
    ("meco", "tnb_macro", "64-211213-basic", 256, 1),
]


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(proxy: str, space_name: str, arch_text: str, resolution: int, images: int, estimate_only: bool) -> dict:
    """One case, in this process (the parent starts a fresh one per case)."""
    import importlib

    import numpy as np

    from epsinas_onnx.core.options import ExecutionOptions
    from epsinas_onnx.proxies import engine, memory
    from epsinas_onnx.proxies.proxy import Context

    space = importlib.import_module(f"epsinas_onnx.spaces.{space_name}")
    arch = space.parse(arch_text)
    export = {"resolution": resolution} if space_name != "nb201" else {}
    batch = np.random.default_rng(0).standard_normal((images, 3, resolution, resolution), dtype=np.float32)
    needs, refusal = [], memory.refusal

    def recorded(name, feed, need, taken=0):  # the estimate; the run goes on unless estimate_only
        needs.append(need)
        return refusal(name, feed, need, taken) if estimate_only else None

    memory.refusal = recorded
    memory.room = lambda: 0.0  # past the engine's quick bound: the run is estimated
    before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    result = engine.compute_on(lambda: space.to_ir(arch, **export), [proxy], Context(batch, "input"),
                               ExecutionOptions(device="cpu", threads=1))[proxy]
    return {"estimate": needs[0], "before": before * 1024, "peak": status_kib("VmHWM") * 1024,
            "error": result.error}


def one_process(count: int, images: int) -> None:
    """`count` TransNAS-Bench-101 macro skeletons (a seeded sample) in this process."""
    import random

    import numpy as np

    from epsinas_onnx.core.options import ExecutionOptions
    from epsinas_onnx.proxies import engine, memory
    from epsinas_onnx.proxies.proxy import Context
    from epsinas_onnx.spaces import tnb_macro

    needs, refusal = [], memory.refusal

    def recorded(name, feed, need, taken=0):
        needs.append(need)

    memory.refusal, memory.room = recorded, lambda: 0.0  # every run estimated, and made
    batch = np.random.default_rng(0).standard_normal((images, 3, 256, 256), dtype=np.float32)
    for arch in random.Random(0).sample(tnb_macro.all_archs(), count):
        needs.clear()
        engine.compute_on(lambda: tnb_macro.to_ir(arch), ["naswot", "zen", "meco"], Context(batch, "input"),
                          ExecutionOptions(device="cpu", threads=1))
        print(f"{tnb_macro.format_arch(arch):<18} largest estimate {max(needs) / 2**30:5.2f} GiB, resident "
              f"{status_kib('VmRSS') / 2**20:5.2f} GiB, peak so far {status_kib('VmHWM') / 2**20:5.2f} GiB", flush=True)
    memory.refusal = refusal


def run_case(proxy: str, space: str, arch: str, resolution: int, images: int, estimate_only: bool = False) -> dict:
    command = [sys.executable, "-m", "benchmarks.proxies_memory", "--child", proxy, space, arch, str(resolution),
               str(images)] + (["--estimate-only"] if estimate_only else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{proxy} {space} {arch} x{images}: the child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=5, action="append", metavar=("PROXY", "SPACE", "ARCH", "RESOLUTION", "IMAGES"))
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--estimate-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-process", type=int, metavar="COUNT",
                        help="COUNT TransNAS-Bench-101 macro skeletons in this one process instead")
    parser.add_argument("--images", type=int, default=32, help="with --one-process: the batch (default 32)")
    args = parser.parse_args()
    if args.one_process:
        one_process(args.one_process, args.images)
        return
    if args.child:
        proxy, space, arch, resolution, images = args.child
        print(json.dumps(child(proxy, space, arch, int(resolution), int(images), args.estimate_only)))
        return
    cases = [(p, s, a, int(r), int(n)) for p, s, a, r, n in args.case] if args.case else CASES
    gib = 2**30
    print(f"{'proxy':<7} {'space':<10} {'architecture':<20} {'input':>9} {'images':>6} {'estimate':>9} "
          f"{'before':>7} {'peak':>7} {'growth':>7} {'estimate / growth':>18}   (GiB)")
    for proxy, space, arch, resolution, images in cases:
        got = run_case(proxy, space, arch, resolution, images)
        growth = got["peak"] - got["before"]
        label = arch if len(arch) <= 20 else arch[:17] + "..."
        print(f"{proxy:<7} {space:<10} {label:<20} {resolution:>4}x{resolution:<4} {images:>6} "
              f"{got['estimate'] / gib:>9.2f} {got['before'] / gib:>7.2f} {got['peak'] / gib:>7.2f} "
              f"{growth / gib:>7.2f} {got['estimate'] / growth:>18.2f}", flush=True)
    for space, arch, resolution in dict.fromkeys((s, a, r) for _, s, a, r, _ in cases):
        got = run_case("naswot", space, arch, resolution, 128, estimate_only=True)
        print(f"{space} {arch}, NASWOT's 128 images: estimate {got['estimate'] / gib:.2f} GiB; "
              f"with nothing available the guard says: {got['error']}")


if __name__ == "__main__":
    main()
