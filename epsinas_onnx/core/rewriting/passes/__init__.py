"""Graph passes, one job each (`ir.Model -> ir.Model`, in place).

`scoring_pipeline` composes them into the rewrite that turns any model into
one whose weights all read a single scalar input, `epsinas_weight`.
"""

from epsinas_onnx.core.rewriting.passes.batch_statistics_norm import BatchStatisticsNormPass
from epsinas_onnx.core.rewriting.passes.constant_weight import ConstantWeightPass, InitPolicy
from epsinas_onnx.core.rewriting.passes.fix_weight import FixWeightPass
from epsinas_onnx.core.rewriting.passes.pipeline import WEIGHT_INPUT, scoring_pipeline

__all__ = [
    "BatchStatisticsNormPass",
    "ConstantWeightPass",
    "FixWeightPass",
    "InitPolicy",
    "WEIGHT_INPUT",
    "scoring_pipeline",
]
