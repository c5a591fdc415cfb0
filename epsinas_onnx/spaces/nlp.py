"""NAS-Bench-NLP (Klyuchnikov et al., 2020) as ONNX models.

The network is the benchmark's AWD-LSTM-style language model
(fmsnew/nas-bench-nlp-release: model.py, custom_rnn.py, multilinear.py),
as the epsinas reference scores it (reference-semantics §2-§4):

    tokens (seq, batch) int64
    -> embedding (vocab, 400)                 initialiser "encoder.weight" (Gather)
    -> 3 recurrent layers, each one custom cell built from the recipe;
       input/hidden widths 400->600, 600->600, 600->400 (tied weights:
       the last layer's hidden size is the embedding size)
    -> "hidden0": the raw output of the last layer, hidden unit 0,
       shape (seq, batch). No dropout (eval mode), no decoder.

A recipe is a JSON object {node: {"op": ..., "input": [...]}}. Inputs name
"x" (the layer input at this step), "h_prev_i" (state i of the previous
step) or another node; node "h_new_i" is state i of this step, "h_new_0" is
also the layer's output. Ops, as custom_rnn.py / multilinear.py compute them:

    linear                  W_0 a_0 + b + W_1 a_1 + ...  (one weight matrix per
                            input, ONE bias: MultiLinear has a bias)
    blend(z, a, b)          z * a + (1 - z) * b
    elementwise_prod/_sum   a * b, a + b (exactly two inputs)
    activation_tanh/_sigm/_leaky_relu   (LeakyReLU slope 0.01, torch's default)

The recurrence is one ONNX `Scan` per layer. Its body reads the cell weights
from the main graph's initialisers (outer scope), so the model has one copy
of each weight, as the benchmark does. Initialiser roles, for the scorer:

    encoder.weight                       embedding table (Gather data)
    layers.{l}.cell.{node}.weights.{k}   linear weight, MatMul B (in_k, hidden)
    layers.{l}.cell.{node}.bias          linear bias, Add
    layers.{l}.h0_{i}                    initial state i, (hidden,), Expand-ed
                                         to (batch, hidden): reference sets it to w

The reference sets EVERY cell parameter, biases included, to w; the model
says so with metadata_props "epsinas.bias" = "weight".

Arch: a recipe as canonical JSON text (`json.dumps(recipe, sort_keys=True)`:
node names sorted, each node's input order kept), hashable and comparable.
Functions also accept the recipe as a dict.

The space: the benchmark's generator (search_space.py upstream) makes
recipes nobody trained, and its PTB training logs are not available here,
so `all_archs` / `sample` use the 291 distinct recipes of the 345 WikiText-2
runs (wt2_summary.csv, packaged with epsinas-onnx; read by `load_recipes`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.textfile import parse_json, read_text
from epsinas_onnx.spaces.graph_builder import GraphBuilder
from epsinas_onnx.spaces.protocol import Space

NAME = "nlp"

WT2_VOCAB = 33278  # WikiText-2 vocabulary (the wt2_summary.csv parameter counts)
PTB_VOCAB = 10000  # Penn Treebank vocabulary (the paper's NAS-Bench-NLP results)

_ACTIVATIONS = {
    "activation_tanh": ("Tanh", {}),
    "activation_sigm": ("Sigmoid", {}),
    "activation_leaky_relu": ("LeakyRelu", {"alpha": 0.01}),
}
_ELEMENTWISE = {"elementwise_prod": "Mul", "elementwise_sum": "Add"}

# op -> (fewest inputs, most inputs). custom_rnn.py breaks on elementwise ops
# with more than two inputs (it indexes with an undefined variable).
_ARITY = {
    "linear": (1, math.inf),
    "blend": (3, 3),
    **{op: (2, 2) for op in _ELEMENTWISE},
    **{op: (1, 1) for op in _ACTIVATIONS},
}
OPS = tuple(_ARITY)
# The benchmark's generator (search_space.py upstream) gives linear nodes 2 or 3 inputs.
_GENERATED_ARITY = {**_ARITY, "linear": (2, 3)}


# ---------------------------------------------------------------------------
# recipes: parsing, validation

def _recipe(arch) -> dict:
    """The recipe dict of an arch (canonical JSON text or a dict)."""
    if isinstance(arch, Mapping):
        return dict(arch)
    try:
        recipe = json.loads(arch)
    except (TypeError, json.JSONDecodeError) as e:
        raise UserError(f"NLP recipe is not valid JSON ({e}): give a JSON object "
                        '{"node": {"op": ..., "input": [...]}, ...}') from None
    except RecursionError:  # json recurses once per level: a recipe is three levels deep
        raise UserError("NLP recipe JSON is nested too deeply to be a recipe (a recipe is three levels)") from None
    if not isinstance(recipe, dict):
        raise UserError("NLP recipe must be a JSON object mapping node names to "
                        '{"op": ..., "input": [...]}')
    return recipe


def _canonical(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True)


def _state_index(name: str, prefix: str) -> int | None:
    """i for "h_prev_i" / "h_new_i" (prefix "h_prev_" / "h_new_"), else None."""
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return None


def num_states(arch) -> int:
    """How many hidden states the cell carries (1 + the largest i of h_new_i),
    as custom_rnn.py counts them."""
    indices = [_state_index(n, "h_new_") for n in _recipe(arch)]
    return 1 + max((i for i in indices if i is not None), default=-1)


def _topological_order(recipe: dict) -> list[str]:
    """Recipe nodes, each after the nodes it reads: a depth-first walk of the
    inputs, in their order, from each node in sorted order. A stack, not
    recursion: a recipe may chain any number of nodes. Assumes inputs exist."""
    order, state = [], {}  # state: 1 = on the current path, 2 = done
    for root in sorted(recipe):
        if state.get(root) == 2:
            continue
        state[root] = 1
        path, pending = [root], [iter(recipe[root]["input"])]  # the walk's path, and each node's inputs left
        while path:
            for inp in pending[-1]:
                if inp not in recipe or state.get(inp) == 2:
                    continue
                if state.get(inp) == 1:
                    cycle = path[path.index(inp):] + [inp]
                    raise UserError(f"NLP recipe has a cycle: {' -> '.join(cycle)}; "
                                    "only h_prev_i may feed a node back from the previous step")
                state[inp] = 1
                path.append(inp)
                pending.append(iter(recipe[inp]["input"]))
                break
            else:  # every input done
                node = path.pop()
                pending.pop()
                state[node] = 2
                order.append(node)
    return order


def _check_node(name, spec, recipe, n_states) -> None:
    if name == "x" or _state_index(name, "h_prev_") is not None:
        raise UserError(f"NLP recipe node {name!r}: this name is reserved for a cell input; rename the node")
    if not isinstance(spec, dict) or not isinstance(spec.get("input"), list) or "op" not in spec:
        raise UserError(f'NLP recipe node {name!r} must be {{"op": ..., "input": [...]}}, got {spec!r}')
    op, inputs = spec["op"], spec["input"]
    if op not in _ARITY:
        raise UserError(f"NLP recipe node {name!r}: unknown op {op!r}; known ops: {', '.join(OPS)}")
    lo, hi = _ARITY[op]
    if not lo <= len(inputs) <= hi:
        wanted = f"{lo}" if lo == hi else f"at least {lo}"
        raise UserError(f"NLP recipe node {name!r}: {op} takes {wanted} input(s), got {len(inputs)}")
    for inp in inputs:
        if not isinstance(inp, str):
            raise UserError(f"NLP recipe node {name!r}: input {inp!r} is not a node name")
        i = _state_index(inp, "h_prev_")
        if i is not None and i >= n_states:
            raise UserError(f"NLP recipe node {name!r} reads {inp} but the recipe defines no h_new_{i}, "
                            f"so that state is never set (the cell carries {n_states} state(s))")
        if inp != "x" and i is None and inp not in recipe:
            raise UserError(f"NLP recipe node {name!r} reads {inp!r}, which is neither x, h_prev_i "
                            "nor a node of the recipe")


def _check_widths(recipe: dict, order: list[str]) -> None:
    """Every value is as wide as x or as the hidden state; in the benchmark's
    network these differ (400 vs 600 in layer 1, 600 vs 400 in layer 3), so
    an elementwise op may not mix them and the states must be hidden-wide.
    custom_rnn.py gives a linear input the input width only when it is x."""
    width = {"x": "x"}
    for node in order:
        spec = recipe[node]
        ins = [width.get(i, "hidden") for i in spec["input"]]  # h_prev_i: hidden
        op = spec["op"]
        if op == "linear":
            bad = [i for i, w in zip(spec["input"], ins) if w == "x" and i != "x"]
            if bad:
                raise UserError(f"NLP recipe node {node!r}: linear input {bad[0]!r} is as wide as x, "
                                "but the benchmark sizes linear weights for x or hidden-wide values only")
            width[node] = "hidden"
        else:
            if len(set(ins)) > 1:
                raise UserError(f"NLP recipe node {node!r}: {op} mixes x-wide and hidden-wide values "
                                f"({', '.join(spec['input'])}); their widths differ in the benchmark's network")
            width[node] = ins[0]
        if _state_index(node, "h_new_") is not None and width[node] != "hidden":
            raise UserError(f"NLP recipe node {node!r}: a state must be hidden-wide, but it is computed "
                            "from x without a linear node")


def validate(arch) -> None:
    """Raise UserError naming the first problem of the recipe, if any."""
    recipe = _recipe(arch)
    n_states = num_states(recipe)
    if "h_new_0" not in recipe:
        raise UserError("NLP recipe has no node h_new_0 (the cell's output): add one")
    for i in range(n_states):
        if f"h_new_{i}" not in recipe:
            raise UserError(f"NLP recipe defines h_new_{n_states - 1} but not h_new_{i}: "
                            "states must be numbered h_new_0, h_new_1, ... without gaps")
    for name, spec in recipe.items():
        _check_node(name, spec, recipe, n_states)
    _check_widths(recipe, _topological_order(recipe))


def parse(text: str) -> str:
    """A recipe's JSON text -> the canonical arch (validated)."""
    recipe = _recipe(text)
    validate(recipe)
    return _canonical(recipe)


def format_arch(arch) -> str:
    """The recipe as JSON text (canonical: sorted node names)."""
    return _canonical(_recipe(arch))


# ---------------------------------------------------------------------------
# the benchmark's data

def load_recipes(data_dir: str | Path | None = None) -> list[dict]:
    """The 345 WikiText-2 runs of wt2_summary.csv, in file order: dicts with
    id, status, num_params, epochs_logged, final_val_loss, min_val_loss,
    final_test_loss (NaN where absent) and arch (canonical recipe). Without
    data_dir, the copy packaged with epsinas-onnx."""
    from epsinas_onnx.core.tables import packaged, read_csv

    if data_dir is None:
        table = packaged("nlp_wt2_summary")
    else:
        path = Path(data_dir) / "wt2_summary.csv"
        table = read_csv(path)

    def number(text):
        return float(text) if text else float("nan")

    return [
        {
            "id": int(row["recepie_id"]),
            "status": row["status"],
            "num_params": int(row["num_params"]),
            "epochs_logged": int(row["epochs_logged"]),
            "final_val_loss": number(row["final_val_loss"]),
            "min_val_loss": number(row["min_val_loss"]),
            "final_test_loss": number(row["final_test_loss"]),
            "arch": parse(row["recepie"]),
        }
        for row in table.rows
    ]


def example_recipes(data_dir: str | Path) -> list[str]:
    """The recipes of recipes_example.json (upstream data/recepies_example.json)
    in `data_dir`: the package does not ship that file, so the folder is given."""
    path = Path(data_dir) / "recipes_example.json"
    return [parse(json.dumps(r)) for r in parse_json(read_text(path, "recipes file"), str(path))]


def all_archs(data_dir: str | Path | None = None) -> list[str]:
    """The distinct recipes of the WikiText-2 runs (291 of the 345 runs: a
    few recipes were trained more than once), sorted."""
    return sorted({row["arch"] for row in load_recipes(data_dir)})


def sample(n: int, seed: int, data_dir: str | Path | None = None) -> list[str]:
    """n recipes drawn uniformly, with replacement, from `all_archs()`
    (numpy default_rng(seed)), as nb201.sample draws from its space."""
    pool = all_archs(data_dir)
    picks = np.random.default_rng(seed).integers(0, len(pool), size=n)
    return [pool[i] for i in picks]


def _below(rng, n: int) -> int:
    """A random integer in [0, n) from a numpy Generator or a random.Random."""
    return int(rng.integers(n)) if hasattr(rng, "integers") else rng.randrange(n)


def _shuffled(items: list, rng) -> list:
    items = list(items)
    for i in range(len(items) - 1, 0, -1):  # Fisher-Yates, works with either rng
        j = _below(rng, i + 1)
        items[i], items[j] = items[j], items[i]
    return items


def mutate(arch, rng) -> str:
    """One neighbour: one node's op changed to another op that the benchmark's
    generator uses with as many inputs (activations among themselves; linear
    <-> elementwise ops for two inputs, linear <-> blend for three), keeping
    the recipe valid. rng: a numpy Generator (or a random.Random)."""
    recipe = _recipe(arch)
    for node in _shuffled(sorted(recipe), rng):
        n_inputs = len(recipe[node]["input"])
        others = [op for op in OPS if op != recipe[node]["op"]
                  and _GENERATED_ARITY[op][0] <= n_inputs <= _GENERATED_ARITY[op][1]]
        for op in _shuffled(others, rng):
            candidate = {**recipe, node: {**recipe[node], "op": op}}
            try:
                validate(candidate)
            except UserError:
                continue  # e.g. an elementwise op over x and a hidden state
            return _canonical(candidate)
    raise UserError(f"NLP recipe {format_arch(recipe)} has no valid single-op mutation")


# ---------------------------------------------------------------------------
# sizes

def layer_sizes(emb: int = 400, hidden: int = 600, n_layers: int = 3) -> list[tuple[int, int]]:
    """(input width, hidden width) per layer: AWD-LSTM with tied weights makes
    the last layer's hidden width the embedding width."""
    return [(emb if l == 0 else hidden, emb if l == n_layers - 1 else hidden) for l in range(n_layers)]


def num_params(arch, vocab_size: int = PTB_VOCAB, emb: int = 400, hidden: int = 600,
               n_layers: int = 3) -> int:
    """Parameters as NAS-Bench-NLP counts them (main_one_model_train.py: every
    model parameter once): the embedding (shared with the tied decoder), the
    decoder bias (vocab_size values; the ONNX model has no decoder), and per
    layer, per linear node, one (hidden x width) matrix per input plus one bias.
    With vocab_size=WT2_VOCAB this is wt2_summary.csv's num_params."""
    recipe = _recipe(arch)
    total = vocab_size * emb + vocab_size
    for in_size, hid in layer_sizes(emb, hidden, n_layers):
        for spec in recipe.values():
            if spec["op"] == "linear":
                total += sum(hid * (in_size if i == "x" else hid) for i in spec["input"]) + hid
    return total


# ---------------------------------------------------------------------------
# ONNX export

def _cell_node(g: GraphBuilder, b: GraphBuilder, name: str, spec: dict, values: dict,
               prefix: str, in_size: int, hidden: int) -> str:
    """Emit one recipe node into the step body `b`; weights go to the main graph `g`."""
    op, args = spec["op"], [values[i] for i in spec["input"]]
    step = f"{prefix}step.{name}"
    if op == "linear":
        # MultiLinear: linear(a_0, W_0, bias) + linear(a_1, W_1) + ..., in this order
        acc = None
        for k, (inp, arg) in enumerate(zip(spec["input"], args)):
            width = in_size if inp == "x" else hidden
            w = g.weight(f"{prefix}cell.{name}.weights.{k}", (width, hidden))
            term = b.op("MatMul", [arg, w], name=f"{step}.matmul{k}")
            if acc is None:
                bias = g.weight(f"{prefix}cell.{name}.bias", (hidden,))
                acc = b.op("Add", [term, bias], name=f"{step}.bias")
            else:
                acc = b.op("Add", [acc, term], name=f"{step}.add{k}")
        return acc
    if op == "blend":
        z, p, q = args
        one = b.constant_node(f"{step}.one", np.float32(1.0))
        first = b.op("Mul", [z, p], name=f"{step}.z_a")
        second = b.op("Mul", [b.op("Sub", [one, z], name=f"{step}.one_minus_z"), q], name=f"{step}.z_b")
        return b.op("Add", [first, second], name=step)
    if op in _ELEMENTWISE:
        return b.op(_ELEMENTWISE[op], args, name=step)
    onnx_op, attrs = _ACTIVATIONS[op]
    return b.op(onnx_op, args, name=step, **attrs)


def _cell_body(g: GraphBuilder, recipe: dict, layer: int, in_size: int, hidden: int,
               n_states: int) -> ir.Graph:
    """The Scan body of one layer: (h_prev_0.., x) -> (h_new_0.., output)."""
    prefix = f"layers.{layer}."
    b = GraphBuilder(parent=g)
    values = {f"h_prev_{i}": b.input(f"{prefix}step.h_prev_{i}", ["batch", hidden]) for i in range(n_states)}
    values["x"] = b.input(f"{prefix}step.x", ["batch", in_size])
    for name in _topological_order(recipe):
        values[name] = _cell_node(g, b, name, recipe[name], values, prefix, in_size, hidden)
    for i in range(n_states):
        b.output(values[f"h_new_{i}"], f"{prefix}step.h_new_{i}.out", ["batch", hidden])
    b.output(values["h_new_0"], f"{prefix}step.output", ["batch", hidden])
    return b.graph(f"layer{layer}_cell")


def _layer(g: GraphBuilder, recipe: dict, layer: int, xs: str, in_size: int, hidden: int,
           state_shape: str) -> str:
    """One recurrent layer: Scan over the sequence; returns (seq, batch, hidden)."""
    n_states = num_states(recipe)
    initial = [
        g.op("Expand", [g.weight(f"layers.{layer}.h0_{i}", (hidden,)), state_shape],
             name=f"layers.{layer}.h0_{i}.batch")
        for i in range(n_states)
    ]
    body = _cell_body(g, recipe, layer, in_size, hidden, n_states)
    outputs = [f"layers.{layer}.h_last_{i}" for i in range(n_states)] + [f"layers.{layer}.output"]
    outputs = g.op_outputs("Scan", initial + [xs], outputs, name=f"layers.{layer}.scan", num_scan_inputs=1, body=body)
    return outputs[-1]


def to_onnx(arch, vocab_size: int = PTB_VOCAB, emb: int = 400, hidden: int = 600,
            n_layers: int = 3, seed: int = 0) -> onnx.ModelProto:
    """The network of one recipe: tokens (seq, batch) int64 -> hidden0 (seq, batch).
    `seed` picks the (arbitrary) initialiser values."""
    return ir.to_proto(to_ir(arch, vocab_size=vocab_size, emb=emb, hidden=hidden, n_layers=n_layers, seed=seed))


def to_ir(arch, vocab_size: int = PTB_VOCAB, emb: int = 400, hidden: int = 600,
          n_layers: int = 3, seed: int = 0) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench rewrites)."""
    recipe = _recipe(arch)
    validate(recipe)
    if min(vocab_size, emb, hidden, n_layers) < 1:
        raise UserError(f"vocab_size, emb, hidden and n_layers must be positive, got "
                        f"{vocab_size}, {emb}, {hidden}, {n_layers}")
    g = GraphBuilder(seed)
    tokens = g.input("tokens", ["seq", "batch"], TensorProto.INT64)
    xs = g.op("Gather", [g.weight("encoder.weight", (vocab_size, emb)), tokens], name="encoder")
    # (batch, 1): Expand broadcasts an initial state (hidden,) to (batch, hidden)
    batch = g.op("Shape", [tokens], name="batch_size", start=1, end=2)
    state_shape = g.op("Concat", [batch, g.constant_node("one_column", np.array([1], np.int64))],
                       name="state_shape", axis=0)
    for layer, (in_size, hid) in enumerate(layer_sizes(emb, hidden, n_layers)):
        xs = _layer(g, recipe, layer, xs, in_size, hid, state_shape)
    unit0 = g.op("Gather", [xs, g.constant_node("unit_index", np.array(0, np.int64))], name="unit0", axis=2)
    g.output(unit0, "hidden0", ["seq", "batch"])
    # the reference sets every cell parameter, biases included, to w (§2)
    g.metadata.update({"epsinas.bias": "weight", "epsinas.space": NAME})
    return g.ir_model("nas_bench_nlp", doc=f"NAS-Bench-NLP recipe {_canonical(recipe)}")


def _read_csv_archs(path) -> list[str]:
    """The recipes of a wt2_summary.csv, the one csv form of this benchmark."""
    path = Path(path)
    if path.name != "wt2_summary.csv":
        raise UserError(f"{path}: for nlp a .csv must be wt2_summary.csv; give other recipes one JSON per line")
    return [row["arch"] for row in load_recipes(path.parent)]


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"vocab_size": PTB_VOCAB, "emb": 400, "hidden": 600, "n_layers": 3, "seed": 0},
    num_params_options=("vocab_size", "emb", "hidden", "n_layers"),
    reference_weights=(1e-5, 1e-3), all_archs=all_archs, read_csv_archs=_read_csv_archs,
    target_tables=("nlp_wt2_summary",), arch_columns=("recepie", "arch"), target_columns=("final_test_loss",),
    lower_is_better=True,
)
