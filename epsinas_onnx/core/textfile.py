"""Files a user gives (models, architecture lists, recipes): read only when
they are regular files of a size the tool can take, and text only when it is
UTF-8; otherwise one line saying what the file is instead."""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from epsinas_onnx.core.errors import UserError

MAX_TEXT_BYTES = 256 * 2**20  # an architecture list of millions of lines; more is not a list a user wrote


def read_regular_file(path, what: str, max_bytes: int, too_large: str, kind: str = "") -> bytes:
    """The bytes of `path`, refusing before any read what is not a regular
    file (a FIFO would block, /dev/zero never ends) or is over `max_bytes`
    (`too_large`: why that is the limit and what to do). The checks are made
    on the opened file (O_NONBLOCK: opening a FIFO does not wait), so the
    file read is the file checked. `kind` ends the not-a-regular-file line
    (say, what to give instead)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path} (check the path)")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a {what}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket){kind}")
        if info.st_size > max_bytes:
            raise UserError(f"{what} {path} is {_size(info.st_size)}, over the {_size(max_bytes)} {too_large}")
        try:
            return file.read()
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_text(path, what: str = "file") -> str:
    """The text of `path` (see read_regular_file), saying so when the bytes are
    UTF-16 or binary rather than UTF-8."""
    raw = read_regular_file(path, what, MAX_TEXT_BYTES, "a text input may be; split it")
    return decode(raw, f"{what} {path}")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def decode(raw: bytes, what: str) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(raw[:64]):
        raise UserError(f"{what} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); is it binary?") from None
    if "\0" in text:
        raise UserError(f"{what} holds NUL bytes: it is binary, not text")
    return text


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a byte-order mark: ASCII text with every other byte NUL."""
    return len(head) >= 4 and (not any(head[1::2]) or not any(head[0::2])) and any(head)
