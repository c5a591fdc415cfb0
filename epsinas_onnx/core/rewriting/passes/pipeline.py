"""The rewrite that prepares a model for scoring, as a list of passes."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from epsinas_onnx.core.rewriting.passes.batch_statistics_norm import BatchStatisticsNormPass
from epsinas_onnx.core.rewriting.passes.channel_collapse import ChannelCollapsePass
from epsinas_onnx.core.rewriting.passes.channel_sum_input import ChannelSumInputPass
from epsinas_onnx.core.rewriting.passes.constant_weight import ConstantWeightPass, InitPolicy
from epsinas_onnx.core.rewriting.passes.dead_nodes import RemoveDeadNodesPass
from epsinas_onnx.core.rewriting.passes.weight_input import WeightInputPass
from epsinas_onnx.core.rewriting.roles import TensorRole

WEIGHT_INPUT = "epsinas_weight"


def normalising_passes() -> list[ir.passes.PassBase]:
    """Bring every constant tensor into one place: main-graph initializers.

    Constant nodes (any size) and subgraph initializers are lifted, and
    initializers that double as graph inputs stop being inputs, so the
    role classifier sees every tensor the same way.
    """
    return [
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=1),
        common_passes.LiftSubgraphInitializersToMainGraphPass(),
        common_passes.RemoveInitializersFromInputsPass(),
    ]


def scoring_pipeline(
    policy: InitPolicy = InitPolicy(),
    collapse: ChannelCollapsePass | None = None,
    roles: list[TensorRole] | None = None,
    channel_sum_input: ChannelSumInputPass | None = None,
) -> ir.passes.Sequential:
    """The rewrite; with `collapse` (a ChannelCollapsePass, whose report the
    caller reads afterwards) the graph also runs at reduced channel width.
    `roles`: the role table of the model after normalising_passes(), if the
    caller has normalised it and computed them (the passes are then not rerun).
    `channel_sum_input` (a ChannelSumInputPass, after the collapse that makes
    the sum and the removal of dead nodes): the input becomes its channel sum
    where it is only read summed."""
    return ir.passes.Sequential(
        *(normalising_passes() if roles is None else []),
        WeightInputPass(WEIGHT_INPUT),
        ConstantWeightPass(WEIGHT_INPUT, policy, roles),
        *([collapse] if collapse is not None else []),
        BatchStatisticsNormPass(),
        RemoveDeadNodesPass(),
        # on the live graph (the full-width nodes the collapse replaced no longer read
        # the input); the ReduceSum's axes constant it leaves unread goes with the second
        *([channel_sum_input, RemoveDeadNodesPass()] if channel_sum_input is not None else []),
        common_passes.NameFixPass(),
    )
