"""ONNX Runtime sessions: provider choice and options."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnxruntime as ort

from epsinas_onnx.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


# CUDA execution provider options. Every architecture is a new session run
# twice: cuDNN's default exhaustive algorithm search (a benchmark of every conv
# algorithm, per session) costs more than the runs; its heuristic pick is cheap.
# TF32 off: TF32 rounds conv / matmul inputs to 10 mantissa bits, and the
# score should not depend on the card (benchmarks/gpu_check.py compares with
# the CPU). cuDNN's graph API may still use TF32 unless NVIDIA_TF32_OVERRIDE=0.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
CUDA_MISSING = (
    "--device cuda: the CUDA execution provider is not available in this onnxruntime "
    "(install the gpu extra: pip uninstall -y onnxruntime && pip install onnxruntime-gpu)"
)


def providers_for(device: str) -> list:
    """ONNX Runtime providers for `device`; auto is cuda when a CUDA session can
    actually be made here, else cpu."""
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda and cuda_problem() is None else "cpu"
    if device == "cuda":
        if not has_cuda:
            raise UserError(CUDA_MISSING)
        problem = cuda_problem()
        if problem is not None:
            raise UserError(f"--device cuda: {problem}")
        return [("CUDAExecutionProvider", dict(CUDA_OPTIONS)), "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")


def _provider_name(provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def device_name(providers: list) -> str:
    return "cuda" if _provider_name(providers[0]) == "CUDAExecutionProvider" else "cpu"


_CUDA_PROBLEM: list = []  # [None or why], once per process


def cuda_problem() -> str | None:
    """None when ONNX Runtime can open a CUDA session here, else why not (one
    line). onnxruntime-gpu lists the CUDA provider even when the CUDA / cuDNN
    libraries or the GPU are missing, and then quietly runs on the CPU: a tiny
    session tells. Libraries from pip (onnxruntime-gpu[cuda,cudnn]) are loaded
    first with onnxruntime.preload_dlls."""
    if not _CUDA_PROBLEM:
        _CUDA_PROBLEM.append(_probe_cuda())
    return _CUDA_PROBLEM[0]


def _probe_cuda() -> str | None:
    import importlib.util

    from onnx import TensorProto, helper

    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        try:
            ort.preload_dlls()
        except Exception:  # the libraries may be found the usual way instead
            pass
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # ORT logs why the provider failed on stderr (several lines, colour codes):
    # catch them and keep the reason for one line of our own
    with _captured_stderr() as captured:
        try:
            with warnings.catch_warnings():  # "Specified provider ... is not in available provider names"
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                               providers=[("CUDAExecutionProvider", dict(CUDA_OPTIONS))])
            providers = session.get_providers()
        except Exception as exc:
            return f"ONNX Runtime cannot start its CUDA execution provider ({_ort_message(exc)})"
    if "CUDAExecutionProvider" in providers:
        return None
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        cuda_version = "?"
    why = _load_error(captured.get("text", ""))
    return (f"ONNX Runtime cannot start its CUDA execution provider ({why or 'no usable GPU?'}); this onnxruntime-gpu "
            f'needs CUDA {cuda_version} and cuDNN 9: pip install "onnxruntime-gpu[cuda,cudnn]" brings them')


class _captured_stderr:
    """Redirect file descriptor 2 (where ORT's C++ logger writes) to a temporary
    file; the text ends up in the dict `with` gives."""

    def __enter__(self):
        import sys
        import tempfile

        self.result: dict = {}
        try:
            sys.stderr.flush()
            self.file = tempfile.TemporaryFile(mode="w+b")
            self.saved = os.dup(2)
            os.dup2(self.file.fileno(), 2)
        except (OSError, ValueError):  # no real stderr (e.g. embedded): leave it
            self.file = None
        return self.result

    def __exit__(self, *exc):
        if self.file is None:
            return False
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.result["text"] = self.file.read().decode(errors="replace")
        self.file.close()
        return False


def _load_error(text: str) -> str:
    """The useful part of ORT's log about a CUDA provider that did not load."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    found = re.search(r"with error: ([^\n]+)", text)
    if found:
        return found.group(1).strip()[:200]
    for line in text.splitlines():
        if "CUDA" in line and ("Failed" in line or "error" in line.lower()):
            return line.split("] ")[-1].strip()[:200]
    return ""


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
        session = ort.InferenceSession(model_bytes, session_options(threads, optimization), providers=providers)
    except Exception as exc:  # ORT raises its own exception types per failure
        raise UserError(f"ONNX Runtime cannot load the rewritten model: {_ort_message(exc)}") from None
    wanted = _provider_name(providers[0])
    if wanted != "CPUExecutionProvider" and wanted not in session.get_providers():  # ORT fell back quietly
        raise UserError(f"ONNX Runtime could not use {wanted} for this model (it fell back to the CPU)")
    return session


def run_outputs(session: ort.InferenceSession, outputs: list[str], feeds: dict) -> list[np.ndarray]:
    try:
        return session.run(outputs, feeds)
    except Exception as exc:
        raise UserError(f"ONNX Runtime failed to run the model: {_ort_message(exc)}") from None


def _ort_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # ORT prefixes messages with "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ..."; keep what follows.
    return line.split(" : ")[-1][:400]
