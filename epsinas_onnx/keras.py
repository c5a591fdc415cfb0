"""The public path of epsinas_onnx.bridges.keras (`import epsinas_onnx.keras`),
kept for the users who import it: the code lives in bridges/keras.py."""

from epsinas_onnx.bridges.keras import export, score

__all__ = ["export", "score"]
