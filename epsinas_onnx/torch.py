"""The public path of epsinas_onnx.bridges.torch (`import epsinas_onnx.torch`),
kept for the users who import it: the code lives in bridges/torch.py."""

from epsinas_onnx.bridges.torch import export, module_from_factory, score

__all__ = ["export", "module_from_factory", "score"]
