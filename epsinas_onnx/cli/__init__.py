"""The epsinas-onnx command line: a thin layer over the library.

One module per command family (score.py: score, rewrite, export, space;
bench.py: bench, results, evaluate; search.py: search, calibrate, ablate),
each importing only option_groups and render, and the library inside its
commands' bodies, so that --help and --version import no ONNX library.
"""

from __future__ import annotations

import os
import sys

import click

from epsinas_onnx.cli import bench, score, search
from epsinas_onnx.core.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="epsinas-onnx")
def cli():
    """epsinas: rank untrained networks with two constant shared weights."""


for command in (score.score, score.rewrite, score.export, score.space, bench.bench, bench.results, bench.evaluate,
                search.search, search.calibrate, search.ablate):
    cli.add_command(command)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: one line on stderr and exit 1 for any user error, never a traceback."""
    try:
        cli.main(args=argv, prog_name="epsinas-onnx", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "epsinas-onnx"
        click.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C 130; SIGTERM / SIGHUP (stop_signals.StopSignal) 143 / 129
        click.echo("error: interrupted", err=True)
        return 128 + getattr(stop, "signum", 2)
    except MemoryError as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        click.echo(f"error: out of memory{f' ({detail})' if detail else ''}: try a smaller --batch-size", err=True)
        return 1
    except Exception as exc:  # the promise: never a traceback
        if os.environ.get("EPSINAS_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        click.echo(f"error: internal error ({type(exc).__name__}: {first}); rerun with EPSINAS_DEBUG=1 and report it", err=True)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
