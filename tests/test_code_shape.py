"""tools/code_shape.py: no library function over 8 parameters (the keyword
entry points aside) and no CLI command over 10: settings travel as option
objects (core/options.py), and a command's option groups arrive as objects."""

import importlib.util
import sys

from tests.conftest import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_no_function_over_the_limits():
    tool = load_tool()
    found = tool.received_by_commands(tool.functions())
    assert tool.over_limits(found) == []
    commands = {f.name for f in found if f.command}
    assert {"bench", "score", "calibrate", "ablate", "evaluate"} <= commands  # the commands are found


def test_the_counts(tmp_path):
    tool = load_tool()
    (tmp_path / "cli").mkdir()
    (tmp_path / "lib.py").write_text(
        "class A:\n    def method(self, a, b, *rest, c=1, **more):\n        pass\n\n\n"
        "def outer(a):\n    def inner(x, y):\n        pass\n")
    (tmp_path / "cli" / "commands.py").write_text(
        "import click\n\n\n@click.command()\n@click.option('--x')\ndef go(x, y, z):\n    pass\n")
    found = {f.name: f for f in tool.functions(tmp_path)}
    assert found["A.method"].parameters == 5 and found["A.method"].lines == 2
    assert found["outer.inner"].parameters == 2 and found["outer"].parameters == 1
    assert found["go"].command and found["go"].parameters == 3 and found["go"].lines == 4
    assert not found["outer"].command
