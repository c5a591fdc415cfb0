"""`python -m epsinas_onnx` and the `epsinas-onnx` command.

A command imports onnx, onnx-ir and ONNX Runtime when it starts (a second on
a small machine); a Ctrl-C then is an exit 130 like one later, not a
traceback. This module, the package's __init__ and the cli package import
nothing heavy themselves, so `--help` answers at once."""

import os
import sys

from epsinas_onnx.core.stop_signals import stop_signals_as_interrupt

# 128 + the signal: Ctrl-C 130, SIGTERM 143, SIGHUP 129
STOPPED = {128 + signum for signum in (1, 2, 15)}


def main() -> None:
    """The `epsinas-onnx` command: run it, then leave at once (exit_now)."""
    exit_now(run())


def run() -> int:
    """The command's exit status, for callers that go on afterwards."""
    # SIGTERM / SIGHUP are Ctrl-C from the first line on, the slow imports included
    with stop_signals_as_interrupt():
        return _run()


def _run() -> int:
    try:
        from epsinas_onnx.cli import main as cli_main
    except KeyboardInterrupt as stop:
        sys.stderr.write("\nerror: interrupted\n")
        return 128 + getattr(stop, "signum", 2)
    try:
        code = cli_main()
    except SystemExit as stop:  # bench's interrupted exit, after its resume message
        if stop.code not in STOPPED:
            raise
        code = stop.code
    return code


def exit_now(code: int) -> None:
    """Leave with `code`, skipping the interpreter's teardown."""
    # Every finally block has run (the store is closed, workers stopped, a
    # Ray instance shut down): what is left is the interpreter's teardown of
    # the imported modules, 0.1 s after a score and a second or more after a
    # Ctrl-C (sympy, through onnx-ir), which a script looping over the command
    # or a user who pressed Ctrl-C should not wait for.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a closed pipe (`| head`): nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
