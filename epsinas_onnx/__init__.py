"""epsinas-onnx: the epsinas zero-cost NAS score for any ONNX model.

    import epsinas_onnx
    result = epsinas_onnx.score("model.onnx", data="images.npz", weights=(1e-7, 1.0))
    result.score, result.nan_reason
"""

from epsinas_onnx.errors import UserError

__all__ = ["ScoreResult", "UserError", "epsinas_score", "prepare_model", "score"]
__version__ = "0.1.0"

# imported on first use (PEP 562), so that `import epsinas_onnx` and the
# command's start-up import nothing heavy until they need it (__main__.py)
_LAZY = {"ScoreResult": "scorer", "prepare_model": "scorer", "score": "scorer", "epsinas_score": "metric"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'epsinas_onnx' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"epsinas_onnx.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
