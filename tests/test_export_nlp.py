"""NAS-Bench-NLP exporter: recipes, the space, parameter counts against the
WikiText-2 logs, the model's structure, forward equivalence with an
independent PyTorch network, and epsinas scores."""

import functools
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that `epsinas_onnx` imports without an install
    sys.path.insert(0, str(ROOT))

from epsinas_onnx.core.errors import UserError  # noqa: E402
from epsinas_onnx.spaces import nlp  # noqa: E402
from torch_reference.metric import reference_score  # noqa: E402
from torch_reference.nlp import NLPNetwork, init_nlp_reference  # noqa: E402

torch.set_num_threads(1)

LSTM, GRU = 1000001, 1000002
# three states, 3-input linears, blend, elementwise_prod, leaky ReLU and sigmoid
THREE_STATES = 1012686
RECIPE_IDS = (LSTM, GRU, THREE_STATES)
SMALL = dict(vocab_size=100, emb=20, hidden=30)


@functools.lru_cache(maxsize=None)
def logged_recipes():
    return {r["id"]: r["arch"] for r in nlp.load_recipes()}


def recipe(recipe_id):
    return logged_recipes()[recipe_id]


def run_onnx(model, tokens):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(["hidden0"], {"tokens": tokens})[0]


def torch_net_with_onnx_weights(model, arch, **sizes):
    """The PyTorch network holding the ONNX model's initialisers (MatMul
    weights are (in, out), torch's (out, in)); every one used exactly once."""
    net = NLPNetwork(json.loads(arch), **sizes)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    targets = {"encoder.weight": (net.encoder.weight, False)}
    for l, layer in enumerate(net.layers):
        for i, h0 in enumerate(layer.h0):
            targets[f"layers.{l}.h0_{i}"] = (h0, False)
        for node, k in layer.cell.linear_index.items():
            linear = layer.cell.linears[k]
            targets[f"layers.{l}.cell.{node}.bias"] = (linear.bias, False)
            for j, w in enumerate(linear.weights):
                targets[f"layers.{l}.cell.{node}.weights.{j}"] = (w, True)
    assert set(weights) == set(targets), set(weights) ^ set(targets)
    with torch.no_grad():
        for name, (param, transpose) in targets.items():
            param.copy_(torch.from_numpy((weights[name].T if transpose else weights[name]).copy()))
    return net.eval()


# ---------------------------------------------------------------------------
# recipes and the space


def test_every_logged_recipe_parses_and_round_trips():
    rows = nlp.load_recipes()
    assert len(rows) == 345
    assert sum(r["status"] == "OK" for r in rows) == 341
    assert sum(np.isnan(r["final_test_loss"]) for r in rows) == 4
    for r in rows:
        assert nlp.parse(nlp.format_arch(r["arch"])) == r["arch"]


def test_example_recipes_of_the_data_folder_parse(shared_data):
    assert len(nlp.example_recipes(shared_data / "nlp")) == 10


def test_parse_is_canonical_and_keeps_input_order():
    a = nlp.parse('{"h_new_0": {"op": "blend", "input": ["z", "h_prev_0", "t"]}, '
                  '"t": {"op": "activation_tanh", "input": ["l"]}, "z": {"op": "activation_sigm", "input": ["l"]},'
                  '"l": {"op": "linear", "input": ["x", "h_prev_0"]}}')
    b = nlp.parse(json.dumps(dict(reversed(list(json.loads(a).items())))))
    assert a == b
    assert json.loads(a)["h_new_0"]["input"] == ["z", "h_prev_0", "t"]


GOOD = {"l": {"op": "linear", "input": ["x", "h_prev_0"]}, "h_new_0": {"op": "activation_tanh", "input": ["l"]}}


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"l": GOOD["l"]}), "no node h_new_0"),
    (json.dumps({**GOOD, "l": {"op": "conv", "input": ["x"]}}), "unknown op 'conv'"),
    (json.dumps({**GOOD, "l": {"op": "linear"}}), "node 'l' must be"),
    (json.dumps({**GOOD, "l": {"op": "linear", "input": ["x", "q"]}}), "reads 'q'"),
    (json.dumps({**GOOD, "l": {"op": "linear", "input": ["x", "h_new_0"]}}), "cycle: "),
    (json.dumps({**GOOD, "l": {"op": "linear", "input": ["x", "h_prev_1"]}}), "defines no h_new_1"),
    (json.dumps({**GOOD, "h_new_2": {"op": "activation_tanh", "input": ["l"]}}), "but not h_new_1"),
    (json.dumps({**GOOD, "h_new_0": {"op": "blend", "input": ["l", "l"]}}), "blend takes 3 input"),
    (json.dumps({**GOOD, "h_new_0": {"op": "elementwise_sum", "input": ["l", "x"]}}), "mixes x-wide and hidden-wide"),
    (json.dumps({**GOOD, "h_new_0": {"op": "activation_tanh", "input": ["x"]}}), "a state must be hidden-wide"),
    (json.dumps({**GOOD, "x": {"op": "activation_tanh", "input": ["l"]}}), "reserved"),
])
def test_malformed_recipes_raise_one_line_user_error(text, message):
    with pytest.raises(UserError) as info:
        nlp.parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cycle_message_names_the_nodes():
    bad = {"a": {"op": "linear", "input": ["x", "b"]}, "b": {"op": "activation_tanh", "input": ["a"]},
           "h_new_0": {"op": "activation_tanh", "input": ["b"]}}
    with pytest.raises(UserError, match=r"cycle: a -> b -> a"):
        nlp.validate(bad)


def test_sample_is_repeatable_and_draws_from_the_logged_recipes():
    pool = set(nlp.all_archs())
    assert len(pool) == 291  # 345 runs, a few recipes trained more than once
    a = nlp.sample(2000, seed=3)
    assert a == nlp.sample(2000, seed=3) and a != nlp.sample(2000, seed=4)
    assert set(a) <= pool and len(set(a)) > 270  # uniform with replacement: ~291 * (1 - e^-6.9)


def test_mutate_changes_one_op_to_one_of_the_same_arity_and_stays_valid():
    rng = np.random.default_rng(0)
    lstm = json.loads(recipe(LSTM))
    seen = set()
    for _ in range(300):
        child = json.loads(nlp.mutate(recipe(LSTM), rng))
        nlp.validate(child)
        changed = [n for n in lstm if child[n] != lstm[n]]
        assert set(child) == set(lstm) and len(changed) == 1
        node = changed[0]
        assert child[node]["input"] == lstm[node]["input"]
        if len(lstm[node]["input"]) == 1:
            assert child[node]["op"].startswith("activation_")
        seen.add((node, child[node]["op"]))
    # activations: 5 nodes x 2 others; the four elementwise nodes: the other
    # elementwise op or linear; the four linears read x, so no elementwise op fits
    assert len(seen) == 5 * 2 + 4 * 2
    assert nlp.mutate(recipe(LSTM), np.random.default_rng(7)) == nlp.mutate(recipe(LSTM), np.random.default_rng(7))


def test_mutate_reports_a_recipe_without_valid_mutations():
    only_linear = {"h_new_0": {"op": "linear", "input": ["x", "h_prev_0"]}}
    with pytest.raises(UserError, match="no valid single-op mutation"):
        nlp.mutate(only_linear, np.random.default_rng(0))


# ---------------------------------------------------------------------------
# parameters


def test_num_params_matches_every_wikitext2_log_exactly():
    # embedding (tied with the decoder weight) + decoder bias + the cells' MultiLinears
    for r in nlp.load_recipes():
        assert nlp.num_params(r["arch"], vocab_size=nlp.WT2_VOCAB) == r["num_params"], r["id"]


def test_num_params_of_a_plain_rnn_by_hand():
    rnn = nlp.parse(json.dumps(GOOD))
    layers = (400 * 600 + 600 * 600 + 600) + (2 * 600 * 600 + 600) + (600 * 400 + 400 * 400 + 400)
    assert nlp.num_params(rnn, vocab_size=10000) == 10000 * 401 + layers


def test_onnx_initialisers_are_the_parameters_less_the_decoder_bias():
    arch = recipe(THREE_STATES)
    model = nlp.to_onnx(arch)
    states = nlp.num_states(arch) * (600 + 600 + 400)  # one h0 per layer and state
    total = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert total == nlp.num_params(arch, vocab_size=10000) - 10000 + states


# ---------------------------------------------------------------------------
# the model


def test_model_structure():
    arch = recipe(LSTM)
    model = nlp.to_onnx(arch, **SMALL)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert {p.key: p.value for p in model.metadata_props}["epsinas.bias"] == "weight"
    assert [i.name for i in graph.input] == ["tokens"] and graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(graph.input[0]) == ["seq", "batch"]
    assert [o.name for o in graph.output] == ["hidden0"] and dims(graph.output[0]) == ["seq", "batch"]
    scans = [n for n in graph.node if n.op_type == "Scan"]
    assert len(scans) == 3 and not any(n.op_type == "Loop" for n in graph.node)
    outer = {t.name for t in graph.initializer}
    for layer, scan in enumerate(scans):
        body = scan.attribute[0].g
        assert len(body.initializer) == 0  # weights come from the outer scope
        matmul_weights = {n.input[1] for n in body.node if n.op_type == "MatMul"}
        assert matmul_weights <= outer and len(matmul_weights) == 4 * 2
        assert {n.input[1] for n in body.node if n.op_type == "Add" and n.input[1] in outer} == {
            f"layers.{layer}.cell.{g}.bias" for g in "ijfo"}
        assert len(scan.input) == 2 + 1  # two states, then the sequence
    assert {"encoder.weight", "layers.0.h0_0", "layers.2.h0_1"} <= outer


@pytest.mark.parametrize("recipe_id", RECIPE_IDS)
def test_forward_matches_torch_small(recipe_id):
    arch = recipe(recipe_id)
    model = nlp.to_onnx(arch, **SMALL)
    tokens = np.random.default_rng(recipe_id).integers(0, SMALL["vocab_size"], size=(10, 8))
    net = torch_net_with_onnx_weights(model, arch, **SMALL)
    with torch.no_grad():
        expected = net(torch.from_numpy(tokens)).numpy()
    got = run_onnx(model, tokens)
    assert got.shape == (10, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_forward_matches_torch_at_the_real_sizes():
    arch = recipe(THREE_STATES)
    model = nlp.to_onnx(arch)  # vocab 10000, 400 / 600 / 600 / 400
    tokens = np.random.default_rng(1).integers(0, 10000, size=(4, 3))
    net = torch_net_with_onnx_weights(model, arch)
    with torch.no_grad():
        expected = net(torch.from_numpy(tokens)).numpy()
    got = run_onnx(model, tokens)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# scores
#
# At the reference weights (1e-5, 1e-3) many recipes make the last layer's
# output at w = 1e-5 collapse onto a handful of float32 values (the LSTM:
# ~15 distinct values of ~1e-10); the score of such an output (min-max, then
# exact zeros -> NaN) is decided by float32 rounding, which differs between
# torch's and ONNX Runtime's matrix products. So: the scored outputs must
# match the reference for every recipe, and the score itself for recipes
# whose outputs are not collapsed.

SCORE_SIZES = dict(vocab_size=1000, emb=400, hidden=600)
SCORE_WEIGHTS = (1e-5, 1e-3)
SEQ, BATCH = 20, 16


def batchify(stream, batch_size, seq_len):
    """The reference's batchify: the stream cut into batch_size contiguous
    columns, then the first seq_len rows."""
    rows = len(stream) // batch_size
    return stream[: rows * batch_size].reshape(batch_size, rows).T[:seq_len]


def torch_outputs(arch, tokens, embedding, sizes=SCORE_SIZES, weights=SCORE_WEIGHTS):
    """The reference network's outputs at each weight; `embedding` replaces
    the reference's torch draw when given."""
    outs = []
    for w in weights:
        net = NLPNetwork(json.loads(arch), **sizes).eval()
        init_nlp_reference(net, w)
        with torch.no_grad():
            if embedding is not None:
                net.encoder.weight.copy_(torch.from_numpy(embedding))
            outs.append(net(torch.from_numpy(tokens)))
    return outs


def scorer_embedding(prepared):
    """The embedding table the scorer put into its rewritten model."""
    tables = {v.name: v.const_value.numpy() for v in prepared.rewritten.model.graph.initializers.values()}
    return tables["encoder.weight"]


@pytest.mark.parametrize("recipe_id", RECIPE_IDS)
def test_scored_outputs_match_torch_reference(recipe_id):
    """What the scorer runs at each weight (the rewritten model: weights,
    biases and initial states = w, its embedding) is the reference network."""
    from epsinas_onnx.core.scoring import scorer

    arch = recipe(recipe_id)
    prepared = scorer.prepare_model(nlp.to_onnx(arch, **SCORE_SIZES))
    embedding = scorer_embedding(prepared)
    assert embedding.shape == (1000, 400) and 0 <= embedding.min() and embedding.max() < 1
    tokens = np.random.default_rng(5).integers(0, 1000, size=(SEQ, BATCH))
    for w, expected in zip(SCORE_WEIGHTS, torch_outputs(arch, tokens, embedding)):
        expected = expected.numpy()
        got = prepared.run(tokens, w)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5 * np.abs(expected).max(), err_msg=f"w = {w}")


# recipes whose outputs keep hundreds of distinct values at w = 1e-5
WELL_CONDITIONED = (GRU, 1008816, 1013093)


@pytest.mark.parametrize("recipe_id", WELL_CONDITIONED)
def test_score_matches_torch_reference(recipe_id):
    """epsinas_onnx.score against the reference score, the scorer's own
    embedding on both sides. Tolerance 1e-3, not 1e-5: at w = 1e-5 the
    outputs spread over only ~1e-3 of their value, so float32 rounding moves
    even these scores by ~1e-4 (plain RNN 1000000: float64 reference 0.581664,
    torch float32 0.581585, ONNX Runtime 0.581754)."""
    from epsinas_onnx.core.scoring import scorer

    arch = recipe(recipe_id)
    model = nlp.to_onnx(arch, **SCORE_SIZES)
    stream = np.random.default_rng(5).integers(0, SCORE_SIZES["vocab_size"], size=SEQ * BATCH + 7)
    result = scorer.score(model, data=stream, weights=SCORE_WEIGHTS, batch_size=BATCH, seq_len=SEQ, norm="none")

    outs = torch_outputs(arch, batchify(stream, BATCH, SEQ), scorer_embedding(scorer.prepare_model(model)))
    assert len(np.unique(outs[0].numpy())) > 100  # not collapsed: the score is not rounding noise
    expected = reference_score(*outs)
    assert not np.isnan(expected) and result.nan_reason is None
    assert result.score == pytest.approx(expected, rel=1e-3)


def test_score_with_the_reference_torch_embedding_kept():
    """embedding="keep": the ONNX model carries the reference's own draw
    (torch.manual_seed(21), uniform_(0, 1)), and the scores agree."""
    from epsinas_onnx.core.scoring import scorer

    arch = recipe(GRU)
    model = nlp.to_onnx(arch, **SCORE_SIZES)
    net = NLPNetwork(json.loads(arch), **SCORE_SIZES)
    init_nlp_reference(net, 1.0)
    table = net.encoder.weight.detach().numpy()
    for t in model.graph.initializer:
        if t.name == "encoder.weight":
            t.CopyFrom(onnx.numpy_helper.from_array(table, t.name))
    stream = np.random.default_rng(6).integers(0, SCORE_SIZES["vocab_size"], size=SEQ * BATCH)
    result = scorer.score(model, data=stream, weights=SCORE_WEIGHTS, batch_size=BATCH, seq_len=SEQ,
                          norm="none", embedding="keep")
    expected = reference_score(*torch_outputs(arch, batchify(stream, BATCH, SEQ), None))
    assert not np.isnan(expected)
    assert result.score == pytest.approx(expected, rel=1e-3)


def test_scorer_sees_every_cell_parameter_and_initial_state_as_w():
    """Roles the scorer gives the NLP initialisers: weights, biases (set to w
    by the model's metadata) and every initial state, whichever op reads it
    in the cell (the LSTM's h_prev_1 is read only by a Mul)."""
    from epsinas_onnx.core.scoring.model_io import load_model
    from epsinas_onnx.core.rewriting.rewrite import explain_roles, policy_for

    model = load_model(nlp.to_onnx(recipe(LSTM), **SMALL))
    assert policy_for(model).bias == "w"
    roles = {r.name: r.role.value for r in explain_roles(model)}
    assert roles["encoder.weight"] == "embedding"
    kinds = {"weights": 0, "bias": 0, "h0": 0}
    for name, role in roles.items():
        if re.fullmatch(r"layers\.\d\.cell\..*\.weights\.\d", name):
            assert role == "weight", name
            kinds["weights"] += 1
        elif name.endswith(".bias"):
            assert role == "bias", name
            kinds["bias"] += 1
        elif re.fullmatch(r"layers\.\d\.h0_\d", name):
            assert role in ("initial-state", "weight"), (name, role)
            kinds["h0"] += 1
    assert kinds == {"weights": 3 * 8, "bias": 3 * 4, "h0": 3 * 2}
