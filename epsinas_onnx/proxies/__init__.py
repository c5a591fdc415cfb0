"""Zero-cost proxies beside epsinas, computed with ONNX Runtime on any ONNX model.

    from epsinas_onnx import proxies
    results = proxies.compute("model.onnx", ["naswot", "zen", "meco", "params", "flops"],
                              epsinas_onnx.BatchOptions(data="images.npz"))
    results["naswot"].value, results["naswot"].nan_reason, results["naswot"].seconds
    ranked = proxies.rank_models(["a.onnx", "b.onnx", "c.onnx"], rank_by=["epsinas", "naswot", "params"])
    [(c.rank, c.model, c.aggregate) for c in ranked]

One module per proxy in measures/ (registered by name, registry.py), each
with its paper's initialisation (init.py) and batch; engine.py runs them, one
prepared graph per model and one ONNX Runtime session per proxy; aggregate.py ranks
a population by several of them at once. docs/proxies.md says what each
computes and how it compares with the published values.
"""

from __future__ import annotations

__all__ = ["ProxyOptions", "ProxyResult", "compute", "names", "rank_models"]


def __getattr__(name: str):  # the engine imports onnx and ONNX Runtime: only when used
    import importlib

    if name in ("compute", "compute_on", "ProxyResult"):
        return getattr(importlib.import_module("epsinas_onnx.proxies.engine"), name)
    if name in ("ProxyOptions",):
        return getattr(importlib.import_module("epsinas_onnx.proxies.proxy"), name)
    if name == "rank_models":
        return importlib.import_module("epsinas_onnx.proxies.population").rank_models
    if name == "names":
        return importlib.import_module("epsinas_onnx.proxies.registry").names
    raise AttributeError(f"module 'epsinas_onnx.proxies' has no attribute {name!r}")
