"""Shared by the scripts that export framework models (numpy and onnx only,
so the TensorFlow virtual environment can use it too).

`expected_roles` is the ground truth the role-table tests compare against:
each float tensor of the exported ONNX file is matched BY VALUE to the
framework's own parameters (the scripts randomise every parameter before
export, so values identify them), and gets the role of the parameter kind it
came from (conv kernel -> weight, BN gamma -> norm-scale, ...). Nothing here
asks the rewriter: a tensor that matches no parameter is expected to be
"other".
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MODELS = Path(__file__).resolve().parent.parent / "models"  # the scripts live in exporters/, their output in models/
EXPECTED = MODELS / "expected_scores.json"


def onnx_tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant tensor: initializers and Constant nodes, in every graph
    (named as the rewriter names them: a Constant by its output)."""
    found: dict[str, np.ndarray] = {}

    def walk(graph: onnx.GraphProto) -> None:
        for tensor in graph.initializer:
            found[tensor.name] = numpy_helper.to_array(tensor)
        for node in graph.node:
            if node.op_type == "Constant":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return found


def _key(values: np.ndarray) -> np.ndarray:
    return np.sort(np.asarray(values, dtype=np.float32).reshape(-1))


def expected_roles(model: onnx.ModelProto, params: dict[str, tuple[np.ndarray, str]]) -> dict[str, str]:
    """{tensor name: expected role} for every float tensor of `model`.

    params: framework parameter name -> (its values at export, its role).
    A tensor matches a parameter whose values it holds (any order: exporters
    transpose kernels and reorder gates), or two parameters of one role
    joined (torch's TorchScript LSTM joins the two bias vectors), ignoring
    exact zeros a converter padded in (tf2onnx's LSTM bias).
    """
    keys = {name: _key(values) for name, (values, _) in params.items()}
    roles = {}
    for name, array in onnx_tensors(model).items():
        if not np.issubdtype(array.dtype, np.floating):
            continue
        values = _key(array)
        nonzero = values[values != 0]
        role = "other"
        for pname, key in keys.items():
            if np.array_equal(values, key) or (nonzero.size and np.array_equal(nonzero, key[key != 0])):
                role = params[pname][1]
                break
        else:
            for (a, ka), (b, kb) in itertools.combinations(keys.items(), 2):
                if params[a][1] != params[b][1] or ka.size + kb.size < nonzero.size or not nonzero.size:
                    continue
                joined = np.sort(np.concatenate([ka, kb]))
                if np.array_equal(values, joined) or np.array_equal(nonzero, joined[joined != 0]):
                    role = params[a][1]
                    break
        roles[name] = role
    return roles


def update_expected(entries: dict[str, dict], command: str) -> None:
    """Merge `entries` (file name -> record) into expected_scores.json."""
    data = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {"models": {}}
    data["about"] = (
        "Expected epsinas scores of the framework models in this folder, computed by each framework with "
        "its own reference-initialised network (weights w, biases 0, norm gamma w beta 0 with batch "
        "statistics, embeddings default_rng(21).random, initial states w) in float32 as the reference "
        "computes it ('score') and, as a check on float32 rounding, with the network and the metric in "
        "float64 ('score_float64'); and the expected role of every "
        "constant tensor, matched by value to the framework's parameters. `score_kwargs` are the "
        "arguments of epsinas_onnx.score that give the same batch ('data' is relative to shared/data)."
    )
    for record in entries.values():
        record["made_by"] = command
    data["models"].update(entries)
    data["models"] = dict(sorted(data["models"].items()))
    EXPECTED.write_text(json.dumps(data, indent=1) + "\n")


def cifar10_nchw(shared_data: Path, n: int) -> np.ndarray:
    """The first n CIFAR-10 test images, /255, CIFAR-10 mean/std, NCHW float32
    (reference-semantics section 5)."""
    images = np.load(shared_data / "inputs" / "cifar10_test_1000.npz")["images"][:n].astype(np.float32) / 255.0
    mean = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255.0
    std = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255.0
    return np.ascontiguousarray(((images - mean) / std).transpose(0, 3, 1, 2))


def default_tokens(vocab: int, seq_len: int, batch: int, seed: int = 0) -> np.ndarray:
    """The scorer's default token batch (docs/commands/score.md: random ids below the embedding
    size, seed --input-seed), sequence-first (seq_len, batch) int64."""
    return np.random.default_rng(seed).integers(0, vocab, size=(seq_len, batch))


def reference_score(y_low: np.ndarray, y_high: np.ndarray, dtype=np.float32) -> float:
    """reference-semantics section 1, written out here so the scripts need no
    part of epsinas_onnx. float32 as the reference; float64 for the
    higher-precision check (`score_float64`)."""
    rows = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant output gives NaN, as in the reference
        for y in (y_low, y_high):
            y = np.asarray(y, dtype=dtype).reshape(-1)
            lo, hi = np.nanmin(y), np.nanmax(y)
            rows.append((y - lo) / (hi - lo))
        p = np.stack(rows)
        p[p == 0] = np.nan
        mae = np.abs(p[0] - p[1])
        return float(dtype(np.nanmean(mae)) / dtype(np.nanmean(p)))
