"""Real networks at a real input size on one CPU thread: MobileNetV2,
ResNet-50 and EfficientNet-B0, shaped as torchvision builds them, scored at
224x224 with a batch of 256, three ways, in one run:

    python benchmarks/real_models.py [--models mobilenet_v2 resnet50 efficientnet_b0]
                                     [--batch-size 256] [--resolution 224] [--weights 1e-7 1]

  pytorch eager      the module itself, BN on batch statistics, the reference
                     initialisation (tests/torch_reference/metric.py), both weights
  onnx full width    the module exported by the project's torch bridge
                     (epsinas_onnx.torch.export), scored with --no-collapse
  onnx collapsed     the same file, scored as `epsinas-onnx score` does

Each path of each network runs in its own child process (one thread:
torch.set_num_threads(1), ONNX Runtime threads=1, OMP_NUM_THREADS=1), so
that its peak resident memory (VmHWM) is its own; a child
imports only what its path needs (torch for eager, onnx + onnxruntime for
the ONNX paths). The parent writes the batch to a .npy file: the eager
child loads it (torch takes the array), the ONNX children give its path to
`epsinas_onnx.score`, as `epsinas-onnx score --data batch.npy` does (the
library reads only what the score needs: the collapsed path, the batch's
channel sum, read a chunk at a time).
"seconds" is the score, the libraries imported beforehand: build the
module, set the weights, both forward passes and the metric (eager); take
the batch, load the file, rewrite, open the session, both runs and the
metric (ONNX: `epsinas_onnx.score`), the batch read from its file. The export is timed apart, once per network.

The modules are written here (torchvision is not installed beside torch
2.13), layer for layer as torchvision's mobilenet_v2(), resnet50() and
efficientnet_b0() build them, and checked by their parameter counts
(3,504,872 / 25,557,032 / 5,288,548 with the 1000-class head).

The batch: the first N CIFAR-10 test images of ../shared/data, resized to
the resolution (bilinear) and normalised with ImageNet's mean and std; where
that file is absent, a synthetic uniform batch (the script says which).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("mobilenet_v2", "resnet50", "efficientnet_b0")
PARAMS = {"mobilenet_v2": 3_504_872, "resnet50": 25_557_032, "efficientnet_b0": 5_288_548}  # torchvision's
PATHS = ("pytorch eager", "onnx full width", "onnx collapsed")
CIFAR10 = ROOT.parent / "shared" / "data" / "inputs" / "cifar10_test_1000.npz"


# ---------------------------------------------------------------- the networks (torch)


def build(name: str):
    import torch
    from torch import nn

    def conv_bn(c_in, c_out, k, stride=1, groups=1, act=None):
        layers = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        return nn.Sequential(*layers, *([act()] if act else []))

    class InvertedResidual(nn.Module):  # torchvision.models.mobilenetv2.InvertedResidual
        def __init__(self, c_in, c_out, stride, expand):
            super().__init__()
            hidden = int(round(c_in * expand))
            layers = [conv_bn(c_in, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, c_out, 1)]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class Bottleneck(nn.Module):  # torchvision.models.resnet.Bottleneck (stride on the 3x3: ResNet v1.5)
        def __init__(self, c_in, width, stride):
            super().__init__()
            c_out = width * 4
            self.body = nn.Sequential(conv_bn(c_in, width, 1, act=nn.ReLU), conv_bn(width, width, 3, stride, act=nn.ReLU),
                                      conv_bn(width, c_out, 1))
            self.downsample = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.downsample(x))

    class SqueezeExcitation(nn.Module):  # torchvision.ops.SqueezeExcitation, SiLU inside
        def __init__(self, channels, squeeze):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
            self.act, self.gate = nn.SiLU(), nn.Sigmoid()

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(self.act(self.fc1(s))))

    class MBConv(nn.Module):  # torchvision.models.efficientnet.MBConv (stochastic depth: identity in eval)
        def __init__(self, c_in, c_out, kernel, stride, expand):
            super().__init__()
            hidden = c_in * expand
            layers = [conv_bn(c_in, hidden, 1, act=nn.SiLU)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
                       SqueezeExcitation(hidden, max(1, c_in // 4)), conv_bn(hidden, c_out, 1)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    head = [nn.Flatten(), nn.Dropout(0.2)]
    if name == "mobilenet_v2":
        layers, c = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c_out, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        layers += [conv_bn(c, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), *head, nn.Linear(1280, 1000)]
    elif name == "resnet50":
        layers, c = [conv_bn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)], 64
        for width, n, s in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            for i in range(n):
                layers.append(Bottleneck(c, width, s if i == 0 else 1))
                c = width * 4
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    elif name == "efficientnet_b0":
        layers, c = [conv_bn(3, 32, 3, 2, act=nn.SiLU)], 32
        for t, k, s, c_out, n in [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                  (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]:
            for i in range(n):
                layers.append(MBConv(c, c_out, k, s if i == 0 else 1, t))
                c = c_out
        layers += [conv_bn(c, 1280, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1), *head, nn.Linear(1280, 1000)]
    else:
        raise SystemExit(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    module = nn.Sequential(*layers)
    params = sum(p.numel() for p in module.parameters())
    if params != PARAMS[name]:
        raise SystemExit(f"{name}: {params} parameters, torchvision's has {PARAMS[name]}")
    return module


# ---------------------------------------------------------------- one path, in a child


def peak_mib() -> float:
    """This process's peak resident memory: VmHWM, which a new program starts
    afresh (getrusage's ru_maxrss keeps the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status (this script measures memory on Linux)")


def child(path: str, model: str, onnx_file: str, batch_file: str, weights: tuple[float, float]) -> dict:
    if path == "pytorch eager":
        import torch
        from torch import nn

        from tests.torch_reference.metric import init_reference, reference_score

        torch.set_num_threads(1)
        x = np.load(batch_file)
        after_setup = peak_mib()
        start = time.perf_counter()
        outputs = []
        for w in weights:
            module = build(model)
            for m in module.modules():  # the reference's BN: batch statistics, no running buffers
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats, m.running_mean, m.running_var = False, None, None
            init_reference(module, w)
            module.eval()
            with torch.no_grad():
                outputs.append(module(torch.from_numpy(x)))
        score, reason = reference_score(*outputs), None
    else:
        import epsinas_onnx

        score_file = epsinas_onnx.score  # imports onnx, onnx-ir and onnxruntime here, as eager imports torch above
        batch_size = np.load(batch_file, mmap_mode="r").shape[0]  # the header alone
        after_setup = peak_mib()
        start = time.perf_counter()
        result = score_file(onnx_file, batch_file, weights, batch_size=batch_size, device="cpu", threads=1,
                            collapse=path == "onnx collapsed")
        score, reason = result.score, result.nan_reason
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "score": score, "nan_reason": reason, "peak_mib": peak_mib(),
            "setup_mib": after_setup}


def run_child(path: str, model: str, onnx_file: Path, batch_file: Path, weights, max_gib: float) -> dict:
    """One path in a child process, stopped if its resident memory passes
    `max_gib` (on a shared machine a path that needs more would push others out)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--child", path, "--models", model, "--onnx", str(onnx_file),
               "--batch-file", str(batch_file), "--weights", *map(str, weights)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child_process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        status = Path(f"/proc/{child_process.pid}/status")
        while child_process.poll() is None:
            try:
                rss_kib = next(int(line.split()[1]) for line in status.read_text().splitlines()
                               if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                rss_kib = 0
            if rss_kib > max_gib * 2**20:
                child_process.kill()
                child_process.wait()
                return {"error": f"stopped at {max_gib:g} GiB resident (--max-gib)"}
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        if child_process.returncode != 0:
            tail = (err.read().strip().splitlines() or ["?"])[-1]
            return {"error": f"exit {child_process.returncode}: {tail}"}
        return json.loads(out.read().strip().splitlines()[-1])


# ---------------------------------------------------------------- the parent


def make_batch(n: int, resolution: int) -> tuple[np.ndarray, str]:
    from epsinas_onnx.core.scoring.inputs import NORMS, resize

    mean, std = (np.array(v, np.float32).reshape(1, 3, 1, 1) for v in NORMS["imagenet16"])
    if CIFAR10.exists():
        images = np.load(CIFAR10)["images"][:n].transpose(0, 3, 1, 2).astype(np.float32)
        what = f"the first {len(images)} CIFAR-10 test images resized to {resolution}x{resolution}, ImageNet norm"
    else:
        images = np.random.default_rng(0).uniform(0, 255, (n, 3, 32, 32)).astype(np.float32)
        what = f"{n} synthetic uniform 32x32 images resized to {resolution}x{resolution} (no CIFAR-10 file)"
    images = resize(images, [resolution, resolution], (2, 3))
    return np.ascontiguousarray((images - mean) / std, dtype=np.float32), what


def save_batch(batch: np.ndarray, folder) -> Path:
    """The batch as `folder`/batch.npy, the file every child reads."""
    batch_file = Path(folder) / "batch.npy"
    np.save(batch_file, batch)
    return batch_file


def exported(models, resolution: int, folder):
    """Each of `models` built here and exported by the project's torch bridge
    into `folder`, in turn: (name, .onnx file, the bridge's notes, seconds)."""
    import epsinas_onnx.torch as bridge

    for model in models:
        onnx_file = Path(folder) / f"{model}.onnx"
        start = time.perf_counter()
        notes = bridge.export(build(model), (1, 3, resolution, resolution), onnx_file)
        yield model, onnx_file, notes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--weights", nargs=2, type=float, default=[1e-7, 1.0])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), metavar="PATH")
    parser.add_argument("--max-gib", type=float, default=12.0,
                        help="stop a path whose resident memory passes this (default 12: a shared 23 GiB machine)")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--batch-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = tuple(args.weights)
    if args.child:
        print(json.dumps(child(args.child, args.models[0], args.onnx, args.batch_file, weights)))
        return

    import platform

    batch, what = make_batch(args.batch_size, args.resolution)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {cpu}; one thread per path; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"batch: {what}, {batch.shape}; weights {weights}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="real-models-") as folder:
        batch_file = save_batch(batch, folder)
        del batch
        for model, onnx_file, notes, seconds in exported(args.models, args.resolution, folder):
            print(f"{model}: exported by epsinas_onnx.torch.export in {seconds:.1f} s "
                  f"({onnx_file.stat().st_size / 2**20:.0f} MiB){'; ' + notes[0] if notes else ''}", flush=True)
            for path in args.paths:
                result = run_child(path, model, onnx_file, batch_file, weights, args.max_gib)
                rows.append((model, path, result))
                print(f"  {path:<16} {json.dumps(result)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print_table(rows)


def print_table(rows) -> None:
    eager = {m: r for m, p, r in rows if p == "pytorch eager" and "error" not in r}
    print("| network | path | seconds | vs eager | peak MiB (set-up: MiB) | vs eager | score | vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    for model, path, r in rows:
        if "error" in r:
            print(f"| {model} | {path} | failed: {r['error']} | | | | | |")
            continue
        base = eager.get(model)
        speed = f"{base['seconds'] / r['seconds']:.1f}x" if base else "-"
        memory = f"{r['peak_mib'] / base['peak_mib']:.3f}" if base else "-"
        score = "NaN" if r["score"] is None or r["score"] != r["score"] else f"{r['score']:.6g}"
        if r.get("nan_reason"):
            score += f" ({r['nan_reason']})"
        gap = "-"
        if base and base["score"] == base["score"] and r["score"] is not None and r["score"] == r["score"]:
            gap = f"{abs(r['score'] - base['score']) / abs(base['score']):.1e} rel"
        print(f"| {model} | {path} | {r['seconds']:.2f} | {speed} | {r['peak_mib']:.0f} ({r['setup_mib']:.0f}) | "
              f"{memory} | {score} | {gap} |")


if __name__ == "__main__":
    main()
