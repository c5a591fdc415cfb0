"""`python -m epsinas_onnx` and the `epsinas-onnx` command.

Importing the CLI takes a second (onnx, ONNX Runtime, numpy); a Ctrl-C then
is an exit 130 like one later, not a traceback. So this module imports
nothing heavy itself, and neither does the package's __init__."""

import os
import sys

from epsinas_onnx.stop_signals import stop_signals_as_interrupt

# 128 + the signal: Ctrl-C 130, SIGTERM 143, SIGHUP 129
STOPPED = {128 + signum for signum in (1, 2, 15)}


def main() -> int:
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
    if code in STOPPED:
        # every finally block has run (the store is closed, workers stopped);
        # the interpreter's own teardown of the imported modules takes a
        # second or more (sympy, through onnx-ir): a Ctrl-C should not wait
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
