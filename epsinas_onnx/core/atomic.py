"""Result files are written whole or not at all.

A regular file (or a new one) is written to a private temporary file in the
same folder (tempfile.mkstemp: O_EXCL, an unpredictable name, mode 0600 while
it is written), flushed to disk, then renamed over the path: a reader sees the
old file or the new one, never half of one, and a failed or interrupted write
leaves nothing behind. A symlink is followed: its target is replaced, the link
stays. A special file (/dev/null, /dev/stdout, a FIFO) cannot be replaced by a
rename without destroying it, so it is opened and written directly.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from epsinas_onnx.core.errors import UserError


def write_atomically(path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) with `f` an open binary file, and make what it wrote the
    contents of `path` (see the module docstring). Any OSError, such as a
    read-only folder or a full disk, is a UserError naming `path`."""
    path = Path(path)
    try:
        existing = os.stat(path)  # through symlinks, /dev/stdout's /proc link included
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {_reason(exc)}") from None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise UserError(f"cannot write {path}: it is a folder (name a file)")
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        _write_special(path, write)
        return
    target = Path(os.path.realpath(path))  # a symlink's target, replaced; the link itself is kept
    folder = target.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist")
    if existing is not None:
        mode = stat.S_IMODE(existing.st_mode)
    else:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
            if hasattr(os, "fchmod"):  # by descriptor: the name could be swapped in a shared folder
                os.fchmod(f.fileno(), mode)
        if not hasattr(os, "fchmod"):
            os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
        _fsync_folder(folder)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _write_special(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """A device, FIFO or socket: written in place (there is no partial file to avoid)."""
    try:
        with open(path, "wb") as f:
            write(f)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {_reason(exc)}") from None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort (not every system opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full (free some space and rerun)"
    if exc.errno == errno.EFBIG:
        return "the file is larger than this process may write (ulimit -f)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror.lower()} (pick a folder you can write to)"
    return exc.strerror.lower() if exc.strerror else str(exc)
