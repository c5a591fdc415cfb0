"""Files a user gives (models, data, architecture lists, tables, benchmark
files, recipes, stores): opened only when they are regular files, read only
up to a size the tool can take, and text only when it is UTF-8; otherwise
one line saying what the file is instead.

Every reader of a user's file goes through `open_regular_file` (or
`read_regular_file`, `read_text`, `read_member` for a zip's member, `check_regular_file` for a
file another library opens by name): a FIFO would block for ever, /dev/zero
never ends, a name too long for the file system is no file. `file_status` is
the one stat of a user's path, for a caller that takes a folder too.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import stat
from pathlib import Path

from epsinas_onnx.core.errors import UserError, first_line

MAX_TEXT_BYTES = 256 * 2**20  # an architecture list of millions of lines; more is not a list a user wrote
NOT_REGULAR = "is not a regular file (a device, FIFO or socket)"


def file_status(path, what: str) -> os.stat_result | None:
    """os.stat of a user's path (through symlinks), None where nothing is
    there; a path the system cannot look up (a name too long, a loop of
    symlinks, a folder without permission) is one line naming it."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise UserError(f"{what} not found: {shown(path)} (a part of the path before its name is a file, "
                        "not a folder)") from None
    except OSError as exc:
        raise path_error(exc, path, what) from None


def path_error(exc: OSError, path, what: str) -> UserError:
    """An OSError on a user's path as one line naming the path and the problem."""
    if exc.errno == errno.ENAMETOOLONG:
        return UserError(f"{what} {shown(path)}: the name is too long for the file system (over 255 bytes in one "
                         "part, or 4,096 in all): give a shorter path")
    if exc.errno == errno.ELOOP:
        return UserError(f"{what} {shown(path)}: too many levels of symbolic links (a link that points to itself?)")
    return UserError(f"cannot read {what} {shown(path)}: {(exc.strerror or first_line(exc)).lower()}")


def shown(path, limit: int = 160) -> str:
    """A path for a message: whole, or its two ends around an ellipsis when it is very long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


@contextlib.contextmanager
def open_regular_file(path, what: str, max_bytes: int | None = None, too_large: str = "", kind: str = "",
                      follow_symlinks: bool = True):
    """`path` open for binary reading (a context manager), refusing before
    any read what is not there, is a folder, is not a regular file, or is
    over `max_bytes` (`too_large`: why that is the limit and what to do).
    The checks are made on the opened descriptor (O_NONBLOCK: opening a FIFO
    does not wait), so the file read is the file checked. `kind` ends the
    not-a-regular-file line (say, what to give instead); follow_symlinks=False
    refuses to open a symbolic link (O_NOFOLLOW)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {shown(path)} (check the path)") from None
    except IsADirectoryError:
        raise UserError(f"{shown(path)} is a directory, not a {what}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UserError(f"{what} {shown(path)} is a symbolic link; give the file itself") from None
        raise path_error(exc, path, what) from None
    file = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{shown(path)} is a directory, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} {shown(path)} {NOT_REGULAR}{kind}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise UserError(f"{what} {shown(path)} is {size_text(info.st_size)}, over the {size_text(max_bytes)} "
                            f"{too_large}")
        os.set_blocking(fd, True)
        yield file
    finally:
        file.close()


def check_regular_file(path, what: str, kind: str = "") -> Path:
    """`path` (see open_regular_file), for a library that opens the file by name itself."""
    with open_regular_file(path, what, kind=kind):
        return Path(path)


def read_regular_file(path, what: str, max_bytes: int, too_large: str, kind: str = "") -> bytes:
    """The bytes of `path` (see open_regular_file), never more than `max_bytes`
    even if the file grows while it is read."""
    with open_regular_file(path, what, max_bytes, too_large, kind) as file:
        try:
            payload = file.read(max_bytes + 1)
        except OSError as exc:
            raise UserError(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
    if len(payload) > max_bytes:
        raise UserError(f"{what} {shown(path)} grew past the {size_text(max_bytes)} {too_large} while it was read")
    return payload


def read_member(archive, info, what: str, max_bytes: int, too_large: str) -> bytes:
    """The bytes of one member of an open zipfile.ZipFile, refused before it is
    inflated when its declared size is over `max_bytes` (zipfile stops at the
    declared size and checks the CRC there, so a member cannot inflate past it)."""
    if info.file_size > max_bytes:
        raise UserError(f"{what} is {size_text(info.file_size)} once inflated, over the {size_text(max_bytes)} "
                        f"{too_large}")
    with archive.open(info) as member:
        payload = member.read(max_bytes + 1)
    if len(payload) > max_bytes:  # cannot happen with zipfile (see above); kept as the bound itself
        raise UserError(f"{what} inflates past the {size_text(max_bytes)} {too_large}")
    return payload


def read_text(path, what: str = "file") -> str:
    """The text of `path` (see read_regular_file), saying so when the bytes are
    UTF-16 or binary rather than UTF-8."""
    raw = read_regular_file(path, what, MAX_TEXT_BYTES, "a text input may be; split it")
    return decode(raw, f"{what} {shown(path)}")


def size_text(n: int) -> str:
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


def parse_json(text: str | bytes, what: str):
    """JSON from a user's file: one line for text that is not JSON, or is nested
    deeper than Python's parser recurses (a file of 100,000 '[')."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{what} is JSON nested too deeply to be read (thousands of levels)") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, and bytes that are not UTF-8
        raise UserError(f"{what} is not JSON ({first_line(exc, 120)})") from None


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a byte-order mark: ASCII text with every other byte NUL."""
    return len(head) >= 4 and (not any(head[1::2]) or not any(head[0::2])) and any(head)
