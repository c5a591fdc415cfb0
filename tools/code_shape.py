"""The shape of the package's functions: the longest, and those that take the most parameters.

    python tools/code_shape.py [--top 15] [--check]

Read from the source with `ast` (nothing is imported). A function's
parameters are every name it takes (positional, keyword-only, *args and
**kwargs count one each; a method's self / cls does not count); its length is
its lines, decorators and docstring included. A CLI command is a function in
epsinas_onnx/cli/ decorated with a click `command`; an option group arrives in
it as one object, so it counts one, and a command that takes its options as
**kwargs counts each option it receives that way (read from the click command,
which is imported for that: run with the package importable).

Flags (and, with --check, exit 1): a library function over LIBRARY_LIMIT
parameters, other than the documented keyword entry points (ENTRY_POINTS), and a
CLI command over COMMAND_LIMIT.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "epsinas_onnx"
LIBRARY_LIMIT = 8
COMMAND_LIMIT = 10
# the friendly keyword entry points: epsinas_onnx.score and the framework bridges that pass keywords through it
ENTRY_POINTS = {("core/scoring/scorer.py", "score"), ("bridges/torch.py", "score"), ("bridges/keras.py", "score")}


@dataclasses.dataclass(frozen=True)
class Function:
    path: str  # relative to the package
    name: str  # qualified: Class.method, outer.inner
    line: int
    lines: int
    parameters: int
    command: bool  # a click command of the CLI
    keywords: tuple[str, ...] = ()  # the names it takes, less **kwargs (commands: see received_by_commands)
    takes_kwargs: bool = False

    def where(self) -> str:
        return f"{self.path}:{self.line} {self.name}"


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    args = node.args
    names = [*args.posonlyargs, *args.args]
    if method and names and names[0].arg in ("self", "cls"):
        names = names[1:]
    return len(names) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)


def parameter_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    args = node.args
    return tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])


def is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with click.command(...), a group's .command(...), or click.group(...)."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            return True
    return False


def functions(package: Path = PACKAGE) -> list[Function]:
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        in_cli = relative.startswith("cli/")

        def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    found.append(Function(relative, prefix + child.name, child.lineno, child.end_lineno - start + 1,
                                          parameter_count(child, in_class), in_cli and is_command(child),
                                          parameter_names(child), child.args.kwarg is not None))
                    visit(child, f"{prefix}{child.name}.", False)
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.", True)
                else:
                    visit(child, prefix, in_class)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "", False)
    return found


def click_options() -> dict[tuple[str, str], list[str]]:
    """(path, function name) -> the names of the options and arguments of the
    click command it is the callback of (the CLI imported); {} when it cannot be."""
    try:
        from epsinas_onnx.cli import cli
    except ImportError:
        return {}
    out = {}
    commands = [cli]
    while commands:
        command = commands.pop()
        commands.extend(getattr(command, "commands", {}).values())
        if command.callback is None:
            continue
        function = inspect.unwrap(command.callback)
        path = Path(function.__code__.co_filename).resolve()
        if PACKAGE in path.parents:
            out[(path.relative_to(PACKAGE).as_posix(), function.__qualname__)] = [p.name for p in command.params]
    return out


def received_by_commands(found: list[Function]) -> list[Function]:
    """A command taking **kwargs receives there every option it does not name."""
    options = click_options()
    out = []
    for f in found:
        if f.command and f.takes_kwargs and (f.path, f.name) in options:
            hidden = [name for name in options[f.path, f.name] if name not in f.keywords]
            f = dataclasses.replace(f, parameters=f.parameters - 1 + len(hidden))
        out.append(f)
    return out


def over_limits(found: list[Function]) -> list[str]:
    flags = []
    for f in found:
        if f.command and f.parameters > COMMAND_LIMIT:
            flags.append(f"CLI command over {COMMAND_LIMIT} parameters: {f.where()} takes {f.parameters}")
        elif not f.command and f.parameters > LIBRARY_LIMIT and (f.path, f.name) not in ENTRY_POINTS:
            flags.append(f"library function over {LIBRARY_LIMIT} parameters: {f.where()} takes {f.parameters}")
    return flags


def report(found: list[Function], top: int) -> str:
    lines = [f"{len(found)} functions in {PACKAGE.name}/ ({sum(f.lines for f in found)} lines inside them)", ""]
    lines.append(f"the {top} longest (lines):")
    lines += [f"  {f.lines:4d}  {f.where()}" for f in sorted(found, key=lambda f: (-f.lines, f.where()))[:top]]
    lines += ["", "CLI commands (parameters the function receives):"]
    lines += [f"  {f.parameters:4d}  {f.where()}" for f in sorted((f for f in found if f.command),
                                                                   key=lambda f: (-f.parameters, f.where()))]
    many = sorted((f for f in found if not f.command and f.parameters >= LIBRARY_LIMIT),
                  key=lambda f: (-f.parameters, f.where()))
    lines += ["", f"library functions with {LIBRARY_LIMIT} or more parameters: {len(many)}"]
    lines += [f"  {f.parameters:4d}  {f.where()}" + ("  (keyword entry point)" if (f.path, f.name) in ENTRY_POINTS
                                                     else "") for f in many]
    flags = over_limits(found)
    lines += ["", f"over the limits: {len(flags)}"] + [f"  {flag}" for flag in flags]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="How many of the longest functions to list.")
    parser.add_argument("--check", action="store_true", help="Exit 1 when a function is over the limits.")
    args = parser.parse_args(argv)
    found = received_by_commands(functions())
    print(report(found, args.top))
    return 1 if args.check and over_limits(found) else 0


if __name__ == "__main__":
    sys.exit(main())
