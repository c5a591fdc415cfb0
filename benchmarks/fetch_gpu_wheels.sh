#!/usr/bin/env bash
# Fill a folder with the wheels benchmarks/gpu_check.sh installs on a GPU
# machine without internet: onnxruntime-gpu (in place of onnxruntime) and the
# project's other core dependencies (read from pyproject.toml), with their
# dependencies, for one CPython version on manylinux x86_64. Run it where pip
# reaches PyPI:
#
#   bash benchmarks/fetch_gpu_wheels.sh [DEST]          # DEST: benchmarks/gpu_wheels
#
# Environment:
#   PYTHON_VERSION  the GPU machine's Python, default 3.12 (python3 on this
#                   workplace's device machines is 3.12.3); e.g. 3.11
#   ORT_GPU         the onnxruntime-gpu requirement, default onnxruntime-gpu
#                   (1.31.1 when written: built for CUDA 13 and cuDNN 9)
#   CUDA_LIBS=1     also the CUDA / cuDNN runtime wheels (onnxruntime-gpu's
#                   [cuda,cudnn] extras), for a machine without them; not
#                   needed where PyTorch for CUDA 13 is installed (its nvidia-*
#                   wheels are what onnxruntime.preload_dlls loads)
#   SPLIT_MB=N      cut every file over N MiB into DEST/NAME.part-00, -01, ...
#                   (gpu_check.sh joins them and checks SHA256SUMS), for a
#                   transfer that takes at most so much at a time
#
# It also copies ../shared/data/inputs/cifar10_test_1000.npz (2.8 MB) into DEST.
#
# Sizes when written (onnxruntime-gpu 1.31.1, cp312): onnxruntime-gpu 244 MiB;
# with the core dependencies about 300 MiB; CUDA_LIBS=1 adds about 1.2 GiB.
# The folder is git-ignored: never commit wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-benchmarks/gpu_wheels}
PY=${PYTHON_VERSION:-3.12}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"

# the core dependencies, less onnxruntime (onnxruntime-gpu replaces it)
mapfile -t CORE < <("$PYTHON" - <<'EOF'
import re
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]
    if name.lower() != "onnxruntime":
        print(dep)
EOF
)
if [ "${CUDA_LIBS:-0}" = 1 ]; then
    ORT_GPU="${ORT_GPU}[cuda,cudnn]"
fi
echo "downloading for CPython $PY, manylinux x86_64: $ORT_GPU ${CORE[*]}"
"$PYTHON" -m pip download --dest "$DEST" --only-binary=:all: \
    --python-version "$PY" --implementation cp --abi "cp${PY/./}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform linux_x86_64 \
    "$ORT_GPU" "${CORE[@]}"

# the batch gpu_check.sh scores, for a machine without ../shared/data
for data in ../shared/data/inputs/cifar10_test_1000.npz shared/data/inputs/cifar10_test_1000.npz; do
    if [ -f "$data" ]; then cp "$data" "$DEST/"; break; fi
done

# checksums of the whole files, then (optionally) the parts
(cd "$DEST" && sha256sum -- *.whl > SHA256SUMS)
if [ -n "${SPLIT_MB:-}" ]; then
    for whl in "$DEST"/*.whl; do
        if [ "$(stat -c %s "$whl")" -gt $((SPLIT_MB * 1024 * 1024)) ]; then
            split -b "${SPLIT_MB}M" -d -a 2 "$whl" "$whl.part-"
            rm "$whl"
            echo "split $(basename "$whl") into $(ls "$whl".part-* | wc -l) parts of at most $SPLIT_MB MiB"
        fi
    done
fi
du -sh "$DEST"
ls -l "$DEST"
