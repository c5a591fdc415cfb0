"""The NAS-Bench-NLP network in PyTorch, written from the spec for the tests.

reference-semantics §2-§4 and the benchmark's code (fmsnew/nas-bench-nlp-release
custom_rnn.py, multilinear.py, model.py; egracheva/epsinas compute_epsinas):
embedding -> n recurrent layers of the recipe's cell (a python loop over time
steps) -> raw output of the last layer, hidden unit 0, shape (seq, batch).
Eval mode: dropout and the decoder play no part.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MultiLinear(nn.Module):
    """W_0 a_0 + b + W_1 a_1 + ...: one weight per input, one bias."""

    def __init__(self, in_sizes, out_size):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(out_size, n)) for n in in_sizes])
        self.bias = nn.Parameter(torch.empty(out_size))

    def forward(self, *inputs):
        y = F.linear(inputs[0], self.weights[0], self.bias)
        for a, w in zip(inputs[1:], self.weights[1:]):
            y = y + F.linear(a, w)
        return y


def _state_index(name, prefix):
    rest = name[len(prefix):]
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


class Cell(nn.Module):
    """One step of the recipe's cell: (x, states) -> new states."""

    def __init__(self, recipe, in_size, hidden):
        super().__init__()
        self.recipe = recipe
        self.n_states = 1 + max(i for i in (_state_index(n, "h_new_") for n in recipe) if i is not None)
        linear_nodes = [n for n, spec in recipe.items() if spec["op"] == "linear"]
        self.linear_index = {n: k for k, n in enumerate(linear_nodes)}
        self.linears = nn.ModuleList(
            MultiLinear([in_size if i == "x" else hidden for i in recipe[n]["input"]], hidden)
            for n in linear_nodes
        )

    def _compute(self, name, op, args):
        if op == "linear":
            return self.linears[self.linear_index[name]](*args)
        if op == "blend":
            return args[0] * args[1] + (1 - args[0]) * args[2]
        if op == "elementwise_prod":
            return args[0] * args[1]
        if op == "elementwise_sum":
            return args[0] + args[1]
        if op == "activation_tanh":
            return torch.tanh(args[0])
        if op == "activation_sigm":
            return torch.sigmoid(args[0])
        if op == "activation_leaky_relu":
            return F.leaky_relu(args[0], 0.01)
        raise ValueError(f"unknown op {op}")

    def forward(self, x, states):
        values = {"x": x, **{f"h_prev_{i}": s for i, s in enumerate(states)}}

        def value(name):  # each node once, after its inputs
            if name not in values:
                spec = self.recipe[name]
                values[name] = self._compute(name, spec["op"], [value(i) for i in spec["input"]])
            return values[name]

        return tuple(value(f"h_new_{i}") for i in range(self.n_states))


class RecurrentLayer(nn.Module):
    """The cell run over the sequence, from initial states h0 (hidden,) each."""

    def __init__(self, recipe, in_size, hidden):
        super().__init__()
        self.cell = Cell(recipe, in_size, hidden)
        self.h0 = nn.ParameterList(nn.Parameter(torch.zeros(hidden)) for _ in range(self.cell.n_states))

    def forward(self, xs):
        states = tuple(h.expand(xs.shape[1], -1) for h in self.h0)
        outputs = []
        for x in torch.unbind(xs, dim=0):
            states = self.cell(x, states)
            outputs.append(states[0])
        return torch.stack(outputs, dim=0)


class NLPNetwork(nn.Module):
    """tokens (seq, batch) -> last layer's raw output, unit 0, (seq, batch)."""

    def __init__(self, recipe, vocab_size=10000, emb=400, hidden=600, n_layers=3):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, emb)
        # AWD-LSTM, tied weights: the last layer is as wide as the embedding
        self.layers = nn.ModuleList(
            RecurrentLayer(recipe, emb if l == 0 else hidden, emb if l == n_layers - 1 else hidden)
            for l in range(n_layers)
        )

    def forward(self, tokens):
        xs = self.encoder(tokens)
        for layer in self.layers:
            xs = layer(xs)
        return xs[:, :, 0]


def init_nlp_reference(net: NLPNetwork, w: float, seed: int = 21) -> None:
    """The reference initialisation: every cell parameter (weights and biases)
    and every initial state = w; the embedding U(0, 1) drawn right after
    torch.manual_seed(seed), the same for every w."""
    with torch.no_grad():
        for layer in net.layers:
            for p in layer.parameters():
                p.fill_(w)
        torch.manual_seed(seed)
        net.encoder.weight.uniform_(0, 1)
