"""The scoring rewrite, as a library call: model -> rewritten model + role table."""

from __future__ import annotations

import dataclasses

import onnx
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import ScoringSettings
from epsinas_onnx.core.rewriting.passes import WEIGHT_INPUT, FixWeightPass, InitPolicy, scoring_pipeline
from epsinas_onnx.core.rewriting.passes.build import all_nodes
from epsinas_onnx.core.rewriting.passes.channel_collapse import ChannelCollapsePass, CollapseReport
from epsinas_onnx.core.rewriting.passes.channel_sum_input import ChannelSumInputPass, ChannelSumReport
from epsinas_onnx.core.rewriting.passes.pipeline import normalising_passes
from epsinas_onnx.core.rewriting.roles import (
    TRANSPARENT_OPS, WEIGHT_OPS, Role, TensorRole, classify_model, is_constant_data,
)

POLICY_METADATA_KEY = "epsinas.bias"  # exporters record a space's reference bias policy here
REWRITER_RULE_KEY = "pkg.onnxscript.rewriter.rule_name"  # node metadata: the rewrite rules that made the node


@dataclasses.dataclass
class Rewritten:
    model: ir.Model
    roles: list[TensorRole]
    warnings: list[str]
    collapse: CollapseReport | None = None  # None: collapse not asked for
    channel_sum: ChannelSumReport | None = None  # None: not asked for (passes/channel_sum_input.py)

    @property
    def takes_channel_sum(self) -> bool:
        """Whether the model's fed input is now the channel sum of the batch
        ([N, 1, H, W]: feed inputs.sum_channels of it)."""
        return self.channel_sum is not None and self.channel_sum.applied


def policy_for(model: ir.Model, scoring: ScoringSettings = ScoringSettings()) -> InitPolicy:
    """The init policy of `scoring`: its explicit options win, then the model's
    own metadata. weight_init / weight_seed None: the reference (constant weights)."""
    bias = scoring.bias
    if bias is None:
        bias = "w" if model.metadata_props.get(POLICY_METADATA_KEY) in ("w", "weight") else "zero"
    extra = {k: v for k, v in (("weight_init", scoring.weight_init), ("weight_seed", scoring.weight_seed))
             if v is not None}
    try:
        return InitPolicy(bn_gamma=scoring.bn_gamma, bias=bias, embedding=scoring.embedding, **extra)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def explain_roles(model: ir.Model) -> list[TensorRole]:
    """The role table of a model as the rewriter sees it (the model is not changed)."""
    copy = ir.from_proto(ir.to_proto(model))
    ir.passes.Sequential(*normalising_passes())(copy)
    return classify_model(copy)


def rewrite_for_scoring(model: ir.Model, policy: InitPolicy, collapse: bool = False,
                        channel_sum_input: str | None = None) -> Rewritten:
    """Rewrite `model` in place; returns it with its role table and warnings.
    collapse: also run the channel-collapse pass (same function, less width).
    channel_sum_input: the fed input's name, to make it the channel sum of the
    batch where the collapsed model only reads it summed (passes/channel_sum_input.py;
    Rewritten.takes_channel_sum says whether it did)."""
    ir.passes.Sequential(*normalising_passes())(model)
    roles = classify_model(model)
    warnings = semantics_warnings(model, roles)
    if not any(r.role == Role.WEIGHT for r in roles):
        why = next((w for w in warnings if "quantized" in w or "computed at run time" in w), None)
        raise UserError(
            "the model has no weights to set (no Conv, Gemm, MatMul or recurrent weight is a constant): "
            "nothing for epsinas to score" + (f"; {why}" if why else "")
        )
    collapse_pass = ChannelCollapsePass(WEIGHT_INPUT) if collapse else None
    sum_pass = ChannelSumInputPass(channel_sum_input) if channel_sum_input is not None else None
    try:
        scoring_pipeline(policy, collapse_pass, roles, sum_pass)(model)
    except ir.passes.PassError as exc:  # onnx-ir wraps what a pass raises
        if isinstance(exc.__cause__, UserError):
            raise exc.__cause__ from None
        raise
    except ValueError as exc:
        raise UserError(f"cannot rewrite the model: {exc}") from None
    return Rewritten(model, roles, warnings, collapse_pass.report if collapse_pass else None,
                     sum_pass.report if sum_pass else None)


def fix_weight(model: ir.Model, weight: float) -> ir.Model:
    """Replace the weight input by the constant `weight`."""
    FixWeightPass(WEIGHT_INPUT, weight)(model)
    return model


def semantics_warnings(model: ir.Model, roles: list[TensorRole]) -> list[str]:
    """Ways the model will not follow the reference semantics."""
    nodes = list(all_nodes(model.graph))
    op_types = {n.op_type for n in nodes}
    warnings = []
    bias_names = {r.name for r in roles if r.role == Role.BIAS}
    biased_convs = [
        n for n in nodes
        if n.op_type == "Conv" and len(n.inputs) > 2 and n.inputs[2] is not None
        and _root(n.inputs[2]).name in bias_names
        and not any(use.op_type == "BatchNormalization" for use, _ in n.outputs[0].uses())
    ]
    # torch.onnx.export's default optimize=True runs onnxscript's rewriter, which records its rules
    # in node metadata: FuseBatchNormIntoConv leaves no bias when the BN statistics are the defaults
    # (an untrained network), so the metadata is the only trace.
    fused = [n for n in nodes if "FuseBatchNorm" in (n.metadata_props.get(REWRITER_RULE_KEY) or "")]
    if fused:
        warnings.append(
            f"the exporter folded BatchNormalization into {len(fused)} conv(s) (onnxscript's FuseBatchNormIntoConv: "
            "torch.onnx.export's default optimize=True), so the score will not follow the reference semantics, "
            "which normalise with batch statistics (export with torch.onnx.export(..., optimize=False))"
        )
    elif biased_convs:
        # A BN folded into its conv by other exporters leaves this: a conv bias and no BN after it.
        where = "the model has no BatchNormalization" if "BatchNormalization" not in op_types else (
            f"{len(biased_convs)} conv(s) have none after them")
        warnings.append(
            f"the model has conv biases but no BatchNormalization after those convs ({where}): the exporter "
            "probably folded BatchNormalization into the convs, so the score will not follow the reference "
            "semantics (export with BN kept, e.g. torch.onnx.export(..., optimize=False))"
        )
    if op_types & {"DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                   "MatMulInteger"}:
        warnings.append(
            "the model is quantized: integer weights behind DequantizeLinear / QLinear / ConvInteger ops are not "
            "rewritten (score the float model from before quantization)"
        )
    computed = [
        n for n in nodes
        if n.op_type in WEIGHT_OPS - {"MatMul"} and len(n.inputs) > 1 and n.inputs[1] is not None
        and not is_constant_data(n.inputs[1])
    ]
    if computed:
        names = ", ".join(f"{n.op_type} {n.name!r}" for n in computed[:3])
        warnings.append(f"{len(computed)} weight(s) are computed at run time and left as computed ({names})")
    return warnings


def _root(value: ir.Value) -> ir.Value:
    """The value behind data-movement ops (a constant's own value, if it is one)."""
    node = value.producer()
    while node is not None and node.op_type in TRANSPARENT_OPS and node.inputs and node.inputs[0] is not None:
        value = node.inputs[0]
        node = value.producer()
    return value


def to_onnx(model: ir.Model) -> onnx.ModelProto:
    return ir.to_proto(model)
