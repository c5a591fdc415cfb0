"""Every command and snippet of the README runs as written, and the outputs it
shows are the ones printed; docs pages' blocks marked `<!-- test: run -->`
run too. A README block that should not run carries `<!-- test: skip REASON -->`.

How a block runs, in a temporary folder that holds links to models/ and
examples/ (files the commands write land there):

- bash: one command a line (`\\` continues one; `# ...` is a comment).
  `epsinas-onnx ARGS` runs in-process, `epsinas_onnx.cli.main(ARGS)`, which
  must return 0. `pip install ...` is the environment this test runs in: the
  line is skipped, and `pip install ... && COMMAND` runs COMMAND. `python -m
  pytest` is this very suite: skipped.
- python: executed in a fresh namespace.
- a ```text block right after a block is its output: every line must be
  printed (numbers to 6 significant digits, as printed; `seconds` and
  `device` rows vary from run to run and are not compared).

For speed, a few arguments are substituted (SUBSTITUTIONS, below); a command
changed by one is run but its output, being of other data, is not compared.
No ../shared is read: this runs on a fresh clone.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shlex
from pathlib import Path

import pytest

from epsinas_onnx.cli import main
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
VOLATILE_ROWS = {"seconds", "device"}  # single-model output rows that change from run to run

# (command prefix, argument to find, what replaces it): smaller runs of the same commands
SUBSTITUTIONS = [
    ("bench", ["--all"], ["--sample", "12", "--seed", "0"]),  # 15,625 architectures -> 12 (11 distinct)
    ("bench", ["--workers", "2"], ["--workers", "1"]),  # no worker processes to start
    ("search pick", ["--n", "100"], ["--n", "5", "--runs", "2"]),  # draws the 12 do not hold are scored on demand
    ("calibrate", ["--sample", "30"], ["--sample", "6", "--per-decade", "1", "--low", "1e-8", "1e-6",
                                        "--high", "1", "10"]),  # 6 architectures, a 3 x 2 grid
    ("calibrate", ["models/nb201_cifar10_best.onnx"], ["models/nb201_cifar10_best.onnx", "--batch-size", "16",
                                                       "--low", "1e-8", "1e-6", "--high", "1", "10"]),
    ("ablate", ["--sample", "30"], ["--sample", "8"]),
    ("ablate", ["--repeats", "3"], ["--repeats", "2"]),
]


def blocks(page: Path) -> list[tuple[str, str, str, str | None, int]]:
    """(lang, body, mark, the output block after it, line) of each fenced block that runs:
    every bash / python block of the README, the ones marked `run` elsewhere."""
    text = page.read_text()
    found = list(BLOCK.finditer(text))
    out = []
    for i, match in enumerate(found):
        lang, mark = match["lang"], (match["mark"] or "").strip()
        if lang not in ("bash", "python"):
            continue
        if mark.startswith("skip"):
            continue
        if page.name != "README.md" and mark != "run":
            continue
        output = None
        if i + 1 < len(found) and found[i + 1]["lang"] == "text" and text[match.end():found[i + 1].start()].strip() == "":
            output = found[i + 1]["body"]
        out.append((lang, match["body"], mark, output, text.count("\n", 0, match.start()) + 1))
    return out


CASES = [pytest.param(page, *block, id=f"{page.relative_to(ROOT)}:{block[4]}") for page in PAGES for block in blocks(page)]


def commands(body: str) -> list[list[str]]:
    """The command lines of a bash block, as argument lists."""
    lines = body.replace("\\\n", " ").splitlines()
    return [args for line in lines if (args := shlex.split(line, comments=True))]


def substitute(args: list[str]) -> tuple[list[str], bool]:
    changed = False
    for prefix, find, replace in SUBSTITUTIONS:
        if " ".join(args[:len(prefix.split())]) != prefix:
            continue
        for start in range(len(args) - len(find) + 1):
            if args[start:start + len(find)] == find:
                args = args[:start] + replace + args[start + len(find):]
                changed = True
                break
    return args, changed


def run_line(args: list[str]) -> tuple[str, bool]:
    """One command line of a block: (its stdout, whether it was substituted)."""
    if "&&" in args:  # `pip install ... && COMMAND`: the install is this environment
        before = args[:args.index("&&")]
        assert before[:2] == ["pip", "install"], args
        args = args[args.index("&&") + 1:]
    if args[:2] == ["pip", "install"] or args[:3] == ["python", "-m", "pytest"]:
        return "", False
    assert args[0] == "epsinas-onnx", f"a README command the test cannot run: {' '.join(args)}"
    args, changed = substitute(args[1:])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, f"epsinas-onnx {' '.join(args)} exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue(), changed


def assert_printed(expected: str, printed: str) -> None:
    """Every expected line printed, in order; a number as printed (6 significant digits), equal as a number."""
    lines = [line.split() for line in printed.splitlines()]
    rows = [line.split() for line in expected.splitlines() if line.strip()]
    assert len(lines) >= len(rows), printed
    for want, got in zip(rows, lines):
        if want[0] in VOLATILE_ROWS:
            assert got[0] == want[0], (want, got)
            continue
        assert len(want) == len(got), f"expected {' '.join(want)}\nprinted  {' '.join(got)}"
        for w, g in zip(want, got):
            try:
                wf, gf = float(w), float(g)
            except ValueError:
                assert w == g, f"expected {' '.join(want)}\nprinted  {' '.join(got)}"
                continue
            assert (math.isnan(wf) and math.isnan(gf)) or gf == wf, f"expected {' '.join(want)}\nprinted  {' '.join(got)}"


@pytest.fixture
def in_a_folder(tmp_path):
    """cwd: a temporary folder that reaches models/ and examples/ as the repository root does."""
    for name in ("models", "examples"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


@pytest.mark.parametrize("page, lang, body, mark, output, line", CASES)
def test_documented_block_runs(page, lang, body, mark, output, line, in_a_folder):
    if lang == "python":
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(body, f"{page.name}:{line}", "exec"), {"__name__": "__readme__"})
        if output is not None:
            assert_printed(output, printed.getvalue())
        return
    lines = commands(body)
    assert lines, f"{page.name}:{line}: an empty bash block"
    results = [run_line(args) for args in lines]
    if output is not None:
        assert len(lines) == 1 or all(not out for out, _ in results[:-1]), "an output block follows one command"
        printed, changed = results[-1]
        if not changed:
            assert_printed(output, printed)


def test_every_readme_block_is_collected():
    """The README's bash and python blocks all run (none is skipped silently),
    and at least the two commands of its first screen are among them."""
    text = (ROOT / "README.md").read_text()
    fenced = [m for m in BLOCK.finditer(text) if m["lang"] in ("bash", "python")]
    collected = blocks(ROOT / "README.md")
    assert len(collected) == len(fenced) - sum(1 for m in fenced if (m["mark"] or "").startswith("skip"))
    bodies = [b for _, b, *_ in collected]
    assert any("epsinas-onnx score models/nb201_cifar10_best.onnx --weights 1e-7 1" in b for b in bodies)
    assert any('pip install ".[test]" && python -m pytest' in b for b in bodies)
    outputs = [o for *_, o, _ in collected if o is not None]
    assert len(outputs) >= 2  # the first command's and the ranking's
