"""ONNX Runtime sessions: provider choice and options."""

from __future__ import annotations

import onnxruntime as ort

from epsinas_onnx.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cuda":
        if not has_cuda:
            raise UserError(
                "--device cuda: the CUDA execution provider is not available in this onnxruntime "
                "(install the gpu extra: pip uninstall -y onnxruntime && pip install onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


def device_name(providers: list[str]) -> str:
    return "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"


GRAPH_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def session_options(threads: int | None = None, optimization: str = "all") -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    options.graph_optimization_level = GRAPH_OPTIMIZATION[optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def make_session(model_bytes: bytes, providers: list[str], threads: int | None = None,
                 optimization: str = "all") -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model_bytes, session_options(threads, optimization), providers=providers)
    except Exception as exc:  # ORT raises its own exception types per failure
        raise UserError(f"ONNX Runtime cannot load the rewritten model: {_ort_message(exc)}") from None


def run(session: ort.InferenceSession, output: str, feeds: dict) -> "np.ndarray":
    try:
        return session.run([output], feeds)[0]
    except Exception as exc:
        raise UserError(f"ONNX Runtime failed to run the model: {_ort_message(exc)}") from None


def _ort_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # ORT prefixes messages with "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ..."; keep what follows.
    return line.split(" : ")[-1][:400]
