"""epsinas-onnx: the epsinas zero-cost NAS score for any ONNX model.

    import epsinas_onnx
    result = epsinas_onnx.score("model.onnx", data="images.npz", weights=(1e-7, 1.0))
    result.score, result.nan_reason
    ranked = epsinas_onnx.rank_models(["a.onnx", "b.onnx"], (1e-7, 1.0),
                                      epsinas_onnx.BatchOptions(data="images.npz"))  # highest first

A PyTorch module or a Keras model is exported and scored in one call:
epsinas_onnx.torch.score(module, example_batch) and epsinas_onnx.keras.score(model)
(torch / tf2onnx are imported only when those are called).
"""

from epsinas_onnx.core.errors import UserError

__all__ = ["BatchOptions", "ExecutionOptions", "ScoreResult", "ScoringSettings", "UserError", "epsinas_score",
           "prepare_model", "rank_models", "score"]
__version__ = "0.1.0"

# imported on first use (PEP 562), so that `import epsinas_onnx` and the
# command's start-up import nothing heavy until they need it (__main__.py)
_LAZY = {"ScoreResult": "core.scoring.scorer", "prepare_model": "core.scoring.scorer", "score": "core.scoring.scorer",
         "epsinas_score": "core.scoring.metric", "rank_models": "core.scoring.ranking",
         "BatchOptions": "core.options", "ScoringSettings": "core.options", "ExecutionOptions": "core.options"}
_LAZY_MODULES = ("torch", "keras")  # epsinas_onnx.torch.score after a plain `import epsinas_onnx`


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        value = importlib.import_module(f"epsinas_onnx.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"epsinas_onnx.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module 'epsinas_onnx' has no attribute {name!r}")
    globals()[name] = value
    return value
