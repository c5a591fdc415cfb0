"""The epsinas-onnx command line: a thin layer over the library.

One module per command family (score.py: score, rewrite, export, space;
bench.py: bench, results, evaluate; search.py: search, calibrate, ablate),
each importing only option_groups and render, and the library inside its
commands' bodies, so that --help and --version import no ONNX library.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from epsinas_onnx.cli import bench, score, search
from epsinas_onnx.core.errors import UserError, printable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="epsinas-onnx")
def cli():
    """epsinas: rank untrained networks with two constant shared weights."""


for command in (score.score, score.rewrite, score.export, score.space, bench.bench, bench.results, bench.evaluate,
                search.search, search.calibrate, search.ablate):
    cli.add_command(command)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: one line on stderr and exit 1 for any user error, never a
    traceback; every line escaped (errors.printable), so a name from a file
    cannot split it or reach the terminal as an escape sequence."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line  # a library's warning: one line of ours, not two of Python's
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="epsinas-onnx", standalone_mode=False)
    except UserError as exc:
        _error(str(exc))
        return 1
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "epsinas-onnx"
        _error(f"{exc.format_message()} (see {command} --help)")
        return 1
    except click.exceptions.Abort:
        _error("interrupted")
        return 130
    except click.ClickException as exc:
        _error(exc.format_message())
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C 130; SIGTERM / SIGHUP (stop_signals.StopSignal) 143 / 129
        _error("interrupted")
        return 128 + getattr(stop, "signum", 2)
    except MemoryError as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        fix = ": try a smaller --batch-size" if _takes_batch_size(argv) else ""
        _error(f"out of memory{f' ({detail})' if detail else ''}{fix}")
        return 1
    except Exception as exc:  # the promise: never a traceback
        if os.environ.get("EPSINAS_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _error(f"internal error ({type(exc).__name__}: {first}); rerun with EPSINAS_DEBUG=1 and report it")
        return 3
    return 0


def _takes_batch_size(argv: list[str] | None) -> bool:
    """Whether the command run has a --batch-size to name as the fix."""
    command = cli
    for arg in sys.argv[1:] if argv is None else argv:  # down the groups (search pick) to the command
        command = getattr(command, "commands", {}).get(arg, command)
    return any("--batch-size" in getattr(p, "opts", ()) for p in command.params)


def _error(message: str) -> None:
    click.echo(f"error: {printable(message)}", err=True)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: a library's warning as one line of ours."""
    click.echo(f"warning: {printable(str(message).strip())[:500]}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
