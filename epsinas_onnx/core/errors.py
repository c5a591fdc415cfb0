"""Errors a user can fix, and how the tool prints text that came from a file.

The CLI prints a UserError as one line and exits 1. Every line it prints
passes through `printable`: a name from a model or data file (a tensor, an
input, a file name) may hold a newline or a terminal escape sequence, which
would split the line, forge one ("error: all good") or drive the terminal.
"""

import re

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # torch and ONNX Runtime colour some messages

# control characters (C0, DEL, C1), line and paragraph separators, and the
# bidirectional overrides that reorder what a terminal shows ("Trojan Source")
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


class UserError(ValueError):
    """Bad input: the message names the problem and, where possible, the fix."""


def printable(text: str) -> str:
    """`text` with every control character written as its escape (a newline
    as \\n, ESC as \\x1b, ...): one line, nothing a terminal acts on."""
    return str(text).translate(_ESCAPES)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (its first, or its type's name when
    it has none), for a UserError or a warning that quotes it."""
    text = _COLOUR.sub("", str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
