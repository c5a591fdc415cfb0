"""naswot: NAS without training (Mellor et al., ICML 2021), the score of the
paper's second version and of its code (BayesWatch/nas-without-training,
`hook_logdet`).

A batch of N = 128 images runs through the network with PyTorch's default
initialisation (init.py, `pytorch`) and BatchNorm on the batch's statistics.
Each ReLU's input gives every image a binary code (input > 0); with c_i the
codes of image i over all the ReLUs, K_ij = the number of units where c_i
and c_j agree (N_units - Hamming distance), summed over the ReLUs, and the
score is log |det K| (numpy's slogdet). A ReLU is every Relu node, and
LeakyRelu, PRelu and a Clip at 0 (ReLU6): the reference hooks every module
whose class name contains "ReLU". Several ReLUs reading one tensor count
once each, as the reference's hooks do.

Only the signs are needed: the probe adds `Greater(x, 0)` per distinct ReLU
input (a bool output, a quarter of the float's bytes), and K is computed from
the codes packed 64 to a machine word (popcounts of AND: the agreements
K_ij = N_units - a_i - a_j + 2 |c_i AND c_j|, a_i the ones of image i), a
fraction of a float matrix product's cost.

NaN: no ReLU in the main graph; a batch of fewer than 2 images; a singular
K (two images with the same code everywhere: log det is -inf).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx_ir as ir

from epsinas_onnx.core.rewriting.passes.build import node
from epsinas_onnx.proxies.graph import add_nodes, is_added, output_of, scalar_like
from epsinas_onnx.proxies.proxy import NotApplicable, Outcome, Probe, Proxy, register

BATCH = 128  # the paper's NAS-Bench-201 batch
RELU_OPS = ("Relu", "LeakyRelu", "PRelu")


@register("naswot")
class Naswot(Proxy):
    summary = "log det of the kernel of binary ReLU codes of a batch (Mellor et al. 2021)"
    init = "pytorch"

    def settings(self, options) -> dict:
        return {"seed": options.seed, "init": self.init, "batch": BATCH}

    def probe(self, model) -> Probe:
        readers = Counter()
        for n in model.graph:
            if not is_added(n) and is_relu(n):
                readers[n.inputs[0]] += 1
        if not readers:
            inside = any(is_relu(m) for n in model.graph for m in _subgraph_nodes(n))
            raise NotApplicable("the ReLUs are inside a Scan / Loop body, whose values cannot be read" if inside
                                else "no ReLU in the model (NASWOT reads the binary codes of ReLU inputs)")
        outputs, counts = [], []
        for value, count in readers.items():
            zero = scalar_like(value, 0.0)
            add_nodes(model.graph, [zero])
            outputs.append(output_of(model.graph, node("Greater", [value, zero.outputs[0]]), "naswot", ir.DataType.BOOL))
            counts.append(count)
        return Probe(outputs, {"counts": counts})

    def feeds(self, context) -> list[np.ndarray]:
        images = context.images(self.name)
        return [images[:BATCH]]

    def value(self, probe, fetched, context) -> Outcome:
        codes = fetched[0]
        n = codes[0].shape[0] if codes[0].ndim else 0
        if n < 2:
            return Outcome.nan(f"NASWOT compares images: the batch holds {n}")
        kernel = agreement_kernel(codes, probe.info["counts"])
        sign, logdet = np.linalg.slogdet(kernel)
        if not math.isfinite(logdet):
            return Outcome.nan(f"the kernel of the {n} images' ReLU codes is singular (two images share every "
                               "code): log det is -inf")
        return Outcome(float(logdet))


def is_relu(n) -> bool:
    if n.op_type in RELU_OPS and n.domain in ("", "ai.onnx"):
        return True
    if n.op_type == "Clip" and n.domain in ("", "ai.onnx"):  # ReLU6 = Clip(x, 0, 6)
        low = n.attributes.get("min")
        if low is not None:
            return low.as_float() == 0.0
        bound = n.inputs[1] if len(n.inputs) > 1 else None
        tensor = bound.const_value if bound is not None else None
        if tensor is None and bound is not None and bound.producer() is not None \
                and bound.producer().op_type == "Constant":
            tensor = bound.producer().attributes["value"].as_tensor() if "value" in bound.producer().attributes \
                else None
        return tensor is not None and tensor.numpy().size == 1 and float(tensor.numpy().reshape(())) == 0.0
    return False


def _subgraph_nodes(n):
    from epsinas_onnx.core.rewriting.passes.build import all_nodes, subgraphs

    for graph in subgraphs(n):
        yield from all_nodes(graph)


def agreement_kernel(codes: list[np.ndarray], counts: list[int]) -> np.ndarray:
    """K_ij = sum over the code tensors of count * (units where image i and j
    agree), in float64; codes[k] is a bool array with the images first."""
    n = codes[0].shape[0]
    kernel = np.zeros((n, n))
    by_count: dict[int, list[np.ndarray]] = {}
    for array, count in zip(codes, counts):
        by_count.setdefault(count, []).append(array.reshape(n, -1))
    for count, arrays in by_count.items():
        units = sum(a.shape[1] for a in arrays)
        packed = np.concatenate([np.packbits(a, axis=1) for a in arrays], axis=1)
        pad = (-packed.shape[1]) % 8  # whole 64-bit words; the padding bits are 0 in every row
        words = np.pad(packed, ((0, 0), (0, pad))).view(np.uint64)
        both = _and_counts(words)
        ones = np.diag(both)
        kernel += count * (units - ones[:, None] - ones[None, :] + 2 * both)
    return kernel


def _and_counts(words: np.ndarray) -> np.ndarray:
    """G_ij = popcount(row i AND row j) summed over the words, as float64."""
    n = words.shape[0]
    counts = np.zeros((n, n))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        # at most 64 per word: uint32 holds the sum of up to 2^26 words, and sums 25 % faster than int64
        total = np.uint32 if words.shape[1] < 2**26 else np.int64
        for i in range(n):
            counts[i, i:] = np.bitwise_count(words[i] & words[i:]).sum(axis=1, dtype=total)
    else:
        table = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
        as_bytes = words.view(np.uint8)
        for i in range(n):
            counts[i, i:] = table[as_bytes[i] & as_bytes[i:]].sum(axis=1, dtype=np.int64)
    return np.triu(counts) + np.triu(counts, 1).T
