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
    assert {"epsinas_onnx.core.scoring.scorer", "epsinas_onnx.core.rewriting.passes.pipeline", "epsinas_onnx.spaces.nb201"} <= set(MODULES)


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


def test_the_layers_hold_and_every_module_is_in_one():
    """pyproject.toml's [tool.importlinter]: the folders are the layers, and the
    layer contracts are exhaustive, so a module in a new folder of the package,
    or a new module beside the core's shared ones, fails until it is placed."""
    import shutil
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layered = [c for c in contracts if c["type"] == "layers"]
    assert layered and all(c.get("exhaustive") for c in layered)
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install \".[test]\")")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def _underscore_reach_ins() -> list[str]:
    """`from epsinas_onnx.x import _name` and `module._name` where module is an
    epsinas_onnx module imported by name: another module's private name."""
    import ast

    found = []
    for path in sorted((ROOT / "epsinas_onnx").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("epsinas_onnx"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
                    modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("epsinas_onnx"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_name():
    assert _underscore_reach_ins() == []
