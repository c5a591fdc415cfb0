"""Result files are written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from epsinas_onnx.errors import UserError


def write_atomically(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it to
    `path`: an interrupted or failed write never leaves a half-written result."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
