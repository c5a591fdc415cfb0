"""Every module of the package imports on its own, and the start-up path imports
no ONNX library.

An import circle shows only when a module of the circle is imported first
(`import epsinas_onnx.cli_bench` once failed with "partially initialized
module"), so each module is imported in a process where no epsinas_onnx module
has been imported yet."""

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import epsinas_onnx

ROOT = Path(__file__).resolve().parents[1]

MODULES = sorted(
    ["epsinas_onnx"]
    + [info.name for info in pkgutil.walk_packages(epsinas_onnx.__path__, prefix="epsinas_onnx.")]
)

# The framework libraries: no module may import them when imported itself
# (epsinas_onnx.torch and epsinas_onnx.keras import them on first call).
FRAMEWORKS = ("torch", "tensorflow", "tf2onnx", "keras", "tf_keras")

# One interpreter forks a child per module: the child starts with no epsinas_onnx
# module imported, as a fresh interpreter would, without paying the interpreter's
# start and the onnx / onnxruntime imports once per module (the core's third-party
# libraries are imported before the forks; they cannot hide a circle in this package).
_DRIVER = r"""
import importlib, json, os, sys, traceback
import click, numpy, onnx, onnx_ir, onnxruntime, tqdm

modules, frameworks = json.loads(sys.argv[1])
assert not [m for m in sys.modules if m.split(".")[0] == "epsinas_onnx"]
results = {}
for name in modules:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            importlib.import_module(name)
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in frameworks)
            message = f"imported {', '.join(loaded)}" if loaded else ""
        except BaseException:
            message = traceback.format_exc()
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    results[name] = b"".join(chunks).decode() or ("" if status == 0 else f"child exited with status {status}")
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def import_results() -> dict[str, str]:
    if not hasattr(os, "fork"):
        pytest.skip("the driver forks a child per module (POSIX only)")
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([MODULES, FRAMEWORKS])],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_walk_finds_the_subpackages():
    # a walk that found only the top level would make the test below check little
    assert {"epsinas_onnx.scorer", "epsinas_onnx.passes.pipeline", "epsinas_onnx.spaces.nb201"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module, import_results):
    problem = import_results[module]
    if problem:
        pytest.fail(f"import {module} in a fresh process:\n{problem}", pytrace=False)


def _imported_top_level_names(*args: str) -> set[str]:
    """The top-level packages a fresh `python -X importtime ARGS` imports (the
    interpreter lists every import it makes on stderr)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "epsinas_onnx" in names, done.stderr[-2000:]
    return names


HEAVY = {"onnx", "onnx_ir", "onnxruntime", "numpy"}


@pytest.mark.parametrize("args", [
    pytest.param(("-c", "import epsinas_onnx"), id="import epsinas_onnx"),
    pytest.param(("-m", "epsinas_onnx", "--help"), id="epsinas-onnx --help"),
])
def test_start_up_imports_no_onnx_library(args):
    assert _imported_top_level_names(*args) & HEAVY == set()


def test_every_module_is_in_one_layer_of_the_import_contracts():
    """The layers are lists in pyproject.toml's [tool.importlinter]: a module in
    none of them would go unchecked, so a new module must be placed in one."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    by_name = {c["name"]: c for c in contracts}
    core = set(by_name["core imports no experiment, space or cli module"]["source_modules"])
    experiments = set(by_name["experiments import no cli module"]["source_modules"])
    above = {"epsinas_onnx.spaces", "epsinas_onnx.cli", "epsinas_onnx.__main__"}
    assert not core & experiments
    layers = core | experiments | above
    top_level = {".".join(m.split(".")[:2]) for m in MODULES if m != "epsinas_onnx"}
    assert top_level - layers == set(), "add these modules to a layer in pyproject.toml"
    assert layers - top_level == set(), "these layer entries name no module"
