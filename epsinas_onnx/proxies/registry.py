"""The table of proxies: one module per proxy in measures/, registered by name.

A proxy module is named after the proxy and registers one class with
`@proxy.register("name")` (as NASLib's `@measure`); a second registration of
a name is refused when its module is imported. `names()` lists the modules without
importing them (the command line's --help and option checks stay light);
`get(name)` imports the proxy's module on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from epsinas_onnx.core.errors import UserError

if TYPE_CHECKING:
    from epsinas_onnx.proxies.proxy import Proxy

MEASURES = "epsinas_onnx.proxies.measures"  # = proxy.MEASURES; this module imports no numpy


def names() -> tuple[str, ...]:
    """Every proxy's name, from the module names of measures/ (nothing imported)."""
    import epsinas_onnx.proxies.measures as measures

    return tuple(sorted(info.name for info in pkgutil.iter_modules(measures.__path__) if not info.name.startswith("_")))


def get(name: str) -> "Proxy":
    """The registered proxy `name` (its module imported on first use); UserError naming the choices."""
    from epsinas_onnx.proxies.proxy import TABLE

    if name not in TABLE:
        if name not in names():
            raise UserError(f"unknown proxy {name!r}: choose among {', '.join(names())}")
        importlib.import_module(f"{MEASURES}.{name}")
    return TABLE[name]


def parse_names(text: str | None, allowed_extra: tuple[str, ...] = (), repeats: bool = False) -> tuple[str, ...]:
    """'naswot,zen' -> ('naswot', 'zen'): known names in the order given, each
    once (repeats=True: as often as listed, for --rank-by's weights).
    `allowed_extra`: names that are not proxies but may be listed (e.g. epsinas)."""
    if text is None:
        return ()
    chosen: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item not in names() and item not in allowed_extra:
            known = ", ".join((*allowed_extra, *names()))
            raise UserError(f"unknown proxy {item!r}: choose among {known} (comma-separated, e.g. naswot,zen)")
        if repeats or item not in chosen:
            chosen.append(item)
    if not chosen:
        raise UserError(f"no proxy named in {text!r}: give comma-separated names, e.g. naswot,zen")
    return tuple(chosen)
