"""epsinas-onnx: the epsinas zero-cost NAS score for any ONNX model.

    import epsinas_onnx
    result = epsinas_onnx.score("model.onnx", data="images.npz", weights=(1e-7, 1.0))
    result.score, result.nan_reason
"""

from epsinas_onnx.errors import UserError
from epsinas_onnx.metric import epsinas_score
from epsinas_onnx.scorer import ScoreResult, prepare_model, score

__all__ = ["ScoreResult", "UserError", "epsinas_score", "prepare_model", "score"]
__version__ = "0.1.0"
