"""`python -m epsinas_onnx` and the `epsinas-onnx` command.

Importing the CLI takes a second (onnx, ONNX Runtime, numpy); a Ctrl-C then
is an exit 130 like one later, not a traceback. So this module imports
nothing heavy itself, and neither does the package's __init__."""

import os
import sys

INTERRUPTED = 130


def main() -> int:
    try:
        from epsinas_onnx.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("\nerror: interrupted\n")
        return INTERRUPTED
    try:
        code = cli_main()
    except SystemExit as stop:  # bench's interrupted exit, after its resume message
        if stop.code != INTERRUPTED:
            raise
        code = INTERRUPTED
    if code == INTERRUPTED:
        # every finally block has run (the store is closed, workers stopped);
        # the interpreter's own teardown of the imported modules takes a
        # second or more (sympy, through onnx-ir): a Ctrl-C should not wait
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
