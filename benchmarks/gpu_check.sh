#!/usr/bin/env bash
# Score NAS-Bench-201 on CPU and CUDA, full width and collapsed, on a machine
# with an NVIDIA GPU and no internet, and check that the four paths agree.
#
#   bash benchmarks/gpu_check.sh [N] [gpu_check.py options...]
#
# N: architectures (default 1000; 200 keeps the whole script well inside a
# 10-minute limit). Options after N go to benchmarks/gpu_check.py, e.g.
# --cuda-workers 4, --devices cpu (no GPU: checks the install and the CPU half).
#
# What it needs, carried with the repository (benchmarks/fetch_gpu_wheels.sh
# fills it beforehand where PyPI is reachable; it is git-ignored):
#   benchmarks/gpu_wheels/   onnxruntime-gpu and the core dependencies as wheels
#                            (files split into NAME.part-NN are joined here and
#                            checked against SHA256SUMS), and
#                            cifar10_test_1000.npz unless ../shared/data has it
# Environment:
#   WHEELS   the wheel folder (default benchmarks/gpu_wheels)
#   DATA     the CIFAR-10 .npz (default: ../shared/data/inputs/, then WHEELS)
#   VENV     the virtual environment to make (default /tmp/epsinas-gpu-venv); made
#            with --system-site-packages, so what the machine has (numpy, onnx,
#            PyTorch's CUDA / cuDNN wheels) is used and only what is missing is
#            installed; onnxruntime-gpu in the venv shadows a CPU onnxruntime
#   PYTHON   the interpreter (default python3)
#   NB101    also time `epsinas-onnx bench nb101 --sample NB101`, collapsed, on
#            all CPU cores and on CUDA with 1 and 4 processes (default 100; 0 skips)
#   NB101_FULL  the same full width (--no-collapse) on CUDA and on the CPUs
#            (default 16 architectures)
#   OUT      if set, gpu_check.py's --json report is written to $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-1000}
shift || true
WHEELS=${WHEELS:-benchmarks/gpu_wheels}
VENV=${VENV:-/tmp/epsinas-gpu-venv}
PYTHON=${PYTHON:-python3}
NB101=${NB101:-100}
NB101_FULL=${NB101_FULL:-16}
OUT=${OUT:-}
export PYTHONUNBUFFERED=1
start=$(date +%s)
say() { echo "[gpu_check.sh +$(( $(date +%s) - start ))s] $*"; }

# ---------------------------------------------------------------- the wheels
[ -d "$WHEELS" ] || { echo "error: no wheel folder $WHEELS (run benchmarks/fetch_gpu_wheels.sh where PyPI is reachable)" >&2; exit 2; }
for first in "$WHEELS"/*.part-00; do
    [ -e "$first" ] || continue
    whole=${first%.part-00}
    cat "$whole".part-* > "$whole.tmp" && mv "$whole.tmp" "$whole"
    say "joined $(basename "$whole") from $(ls "$whole".part-* | wc -l) parts"
done
if [ -f "$WHEELS/SHA256SUMS" ]; then
    (cd "$WHEELS" && sha256sum --quiet --ignore-missing -c SHA256SUMS) || { echo "error: a wheel in $WHEELS does not match SHA256SUMS" >&2; exit 2; }
fi

# ---------------------------------------------------------------- the data
if [ -z "${DATA:-}" ]; then
    for candidate in ../shared/data/inputs/cifar10_test_1000.npz shared/data/inputs/cifar10_test_1000.npz \
                     "$WHEELS/cifar10_test_1000.npz"; do
        if [ -f "$candidate" ]; then DATA=$candidate; break; fi
    done
fi
[ -n "${DATA:-}" ] && [ -f "$DATA" ] || { echo "error: cifar10_test_1000.npz not found: set DATA=PATH" >&2; exit 2; }
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")

# ---------------------------------------------------------------- the environment
say "python: $("$PYTHON" --version 2>&1); wheels: $(du -sh "$WHEELS" | cut -f1) in $WHEELS"
"$PYTHON" -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"
# --system-site-packages sees the base interpreter's packages only: when PYTHON
# is itself in a venv (the GPU machines' python3 is /opt/torch/.venv's), add
# that venv's site-packages after the new one's, so its numpy, onnx and CUDA /
# cuDNN wheels are used and onnxruntime-gpu installed here shadows its onnxruntime
"$PYTHON" - "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" <<'EOF'
import site, sys
from pathlib import Path
dirs = [d for d in dict.fromkeys(site.getsitepackages()) if Path(d).is_dir()]
line = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
Path(sys.argv[1], "zz_parent_site.pth").write_text(line + "\n")
EOF
core=$("$PY" - <<'EOF'
import re, sys
try:
    import tomllib
except ImportError:
    sys.exit("error: Python 3.11+ is needed to read pyproject.toml here")
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() != "onnxruntime"))
EOF
)
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-index --find-links "$WHEELS" --disable-pip-version-check onnxruntime-gpu $core
"$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(onnxruntime|onnxruntime-gpu|onnx|onnx-ir|numpy|nvidia-cudnn|nvidia-cublas|nvidia-cuda-runtime) " || true
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF'
import onnxruntime as ort
from epsinas_onnx import runtime
print(f"onnxruntime {ort.__version__} from {ort.__file__}; providers {ort.get_available_providers()}")
print(f"CUDA usable: {runtime.cuda_problem() or 'yes'}")
EOF
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv; fi

# ---------------------------------------------------------------- NAS-Bench-201: four paths, agreement
say "gpu_check.py --n $N $*"
json=()
[ -n "$OUT" ] && json=(--json "$OUT/gpu_check.json")
status=0
"$PY" benchmarks/gpu_check.py --n "$N" --data "$DATA" "${json[@]}" "$@" || status=$?
say "gpu_check.py exit status $status"

# ---------------------------------------------------------------- NAS-Bench-101: per-architecture time
# the same sample on this machine's CPUs (all cores) and on CUDA (1 and 4 processes
# sharing the GPU), collapsed; and full width on CUDA and CPU on a smaller sample
nb101() {  # label, then bench options
    local label=$1; shift
    local store=/tmp/epsinas-gpu-nb101-$label.sqlite
    rm -f "$store"
    say "bench nb101 $*"
    "$PY" -m epsinas_onnx bench nb101 --seed 0 --data "$DATA" --norm cifar10 --store "$store" --no-progress "$@" || status=$?
}
if [ "$NB101" -gt 0 ]; then
    nb101 cpu --sample "$NB101" --device cpu --workers "$(nproc)"
    if "$PY" -c "from epsinas_onnx import runtime; raise SystemExit(runtime.cuda_problem() is not None)"; then
        nb101 cuda-w1 --sample "$NB101" --device cuda --workers 1
        nb101 cuda-w4 --sample "$NB101" --device cuda --workers 4
        nb101 cuda-full --sample "$NB101_FULL" --device cuda --workers 1 --no-collapse
        nb101 cpu-full --sample "$NB101_FULL" --device cpu --workers "$(nproc)" --no-collapse
        # NAS-Bench-101 agreement, CUDA against CPU (same tolerance as gpu_check.py)
        "$PY" - <<'EOF' || status=$?
import math, sqlite3, sys
def rows(label):
    with sqlite3.connect(f"/tmp/epsinas-gpu-nb101-{label}.sqlite") as db:
        return {a: (math.nan if s is None else s) for a, s in db.execute("SELECT arch, score FROM results WHERE error IS NULL")}
bad = 0
for a, b in (("cpu", "cuda-w1"), ("cpu", "cuda-w4"), ("cpu-full", "cuda-full")):
    x, y = rows(a), rows(b)
    common = sorted(set(x) & set(y))
    wrong = [k for k in common if math.isnan(x[k]) != math.isnan(y[k]) or (not math.isnan(x[k])
             and abs(x[k] - y[k]) > max(1e-4 * max(abs(x[k]), abs(y[k])), 1e-6))]
    print(f"AGREE nb101 a={a} b={b} n={len(common)} of {len(x)}/{len(y)} bad={len(wrong)}")
    for k in wrong[:10]:
        print(f"  disagree: {x[k]!r} vs {y[k]!r} {k}")
    bad += len(wrong) + (len(common) != len(x) or len(common) != len(y))
sys.exit(1 if bad else 0)
EOF
    fi
fi
say "done, exit status $status"
exit "$status"
