"""Text files a user gives (architecture lists, recipes): UTF-8, or one line
saying what the file is instead."""

from __future__ import annotations

import codecs
from pathlib import Path

from epsinas_onnx.errors import UserError

MAX_TEXT_BYTES = 256 * 2**20  # an architecture list of millions of lines; more is not a list a user wrote


def read_text(path, what: str = "file") -> str:
    """The text of `path`, refusing before any read what is not a regular file
    (a FIFO would block, /dev/zero never ends) or is too large, and saying so
    when the bytes are UTF-16 or binary rather than UTF-8."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path} (check the path)")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise UserError(f"{what} {path} is {size / 2**20:.0f} MiB, over the {MAX_TEXT_BYTES // 2**20} MiB "
                        "a text input may be; split it")
    raw = path.read_bytes()
    return decode(raw, f"{what} {path}")


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
