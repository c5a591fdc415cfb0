"""epsinas-onnx: the epsinas zero-cost NAS score for any ONNX model.

    import epsinas_onnx
    result = epsinas_onnx.score("model.onnx", data="images.npz", weights=(1e-7, 1.0))
    result.score, result.nan_reason

A PyTorch module or a Keras model is exported and scored in one call:
epsinas_onnx.torch.score(module, example_batch) and epsinas_onnx.keras.score(model)
(torch / tf2onnx are imported only when those are called).
"""

from epsinas_onnx.errors import UserError
from epsinas_onnx.metric import epsinas_score
from epsinas_onnx.scorer import ScoreResult, prepare_model, score
from epsinas_onnx import keras, torch  # noqa: F401  (light: they import their frameworks when called)

__all__ = ["ScoreResult", "UserError", "epsinas_score", "prepare_model", "score"]
__version__ = "0.1.0"
