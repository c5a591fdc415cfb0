"""Errors a user can fix. The CLI prints them as one line and exits 1."""

import re

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # torch and ONNX Runtime colour some messages


class UserError(ValueError):
    """Bad input: the message names the problem and, where possible, the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message as one line (its first, or its type's name when
    it has none), for a UserError or a warning that quotes it."""
    text = _COLOUR.sub("", str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
