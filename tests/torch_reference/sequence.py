"""Token models written in PyTorch as a user would, for the framework-model
tests: an nn.LSTM / nn.GRU language model and a small Transformer encoder,
with the reference initialisation (`init_reference_all`).

The initial recurrent states are parameters (`h0`, `c0`, expanded to the
batch in `forward`): an nn.LSTM called without a state starts from zeros in
PyTorch, while the scorer sets the zero state torch.onnx exports for it to w,
as the reference does. With the states as parameters, the PyTorch network can
be given w as well (`init_reference_all`), and the two compute the same thing.
"""

import numpy as np
import torch
from torch import nn

from tests.torch_reference.metric import init_reference

EMBEDDING_SEED = 21  # the scorer draws every embedding as default_rng(21).random(shape)


class RNNLM(nn.Module):
    """Embedding -> nn.LSTM / nn.GRU (sequence-first) -> Linear decoder."""

    def __init__(self, kind="lstm", vocab=50, emb=16, hidden=24, layers=2):
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab, emb)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(emb, hidden, layers)
        self.h0 = nn.Parameter(torch.zeros(layers, 1, hidden))
        if kind == "lstm":
            self.c0 = nn.Parameter(torch.zeros(layers, 1, hidden))
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens):  # (seq, batch) int64
        x = self.embedding(tokens)
        batch = tokens.shape[1]
        h0 = self.h0.expand(-1, batch, -1).contiguous()
        state = (h0, self.c0.expand(-1, batch, -1).contiguous()) if self.kind == "lstm" else h0
        out, _ = self.rnn(x, state)
        return self.decoder(out)


class TinyTransformer(nn.Module):
    """Embedding -> 2 pre-LN nn.TransformerEncoderLayer (batch-first); the
    encoded sequence is the output.

    Pre-LN on purpose: with constant weights every attention and feed-forward
    output is the same across features, so a LayerNorm after the residual sum
    (post-LN) removes all of it and the output is LayerNorm(embedding) up to
    rounding: its score is ~1e-5, at float32 noise.
    """

    def __init__(self, vocab=50, d=16, heads=2, ff=32, layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens):  # (batch, seq) int64
        return self.encoder(self.embedding(tokens))


def init_reference_all(module: nn.Module, w: float) -> None:
    """The reference initialisation for every module kind used here: conv /
    linear / recurrent / attention weights w, biases 0, norm gamma w beta 0,
    embeddings U(0, 1) from seed 21 (the scorer's table), initial states w."""
    init_reference(module, w)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
                for name, p in m.named_parameters():
                    p.fill_(w if name.startswith("weight") else 0.0)
            elif isinstance(m, nn.MultiheadAttention):
                if m.in_proj_weight is not None:
                    m.in_proj_weight.fill_(w)
                if m.in_proj_bias is not None:
                    m.in_proj_bias.zero_()
            elif isinstance(m, nn.Embedding):
                table = np.random.default_rng(EMBEDDING_SEED).random(tuple(m.weight.shape))
                m.weight.copy_(torch.from_numpy(table.astype(np.float32)))
        for name in ("h0", "c0"):
            if isinstance(getattr(module, name, None), nn.Parameter):
                getattr(module, name).fill_(w)


def expected_role(module: nn.Module, name: str) -> str | None:
    """The role a parameter or buffer of `module` (its dotted `name`) plays,
    from the module kinds alone: the ground truth the role table is checked
    against. None for tensors that are not float data (counters)."""
    *path, leaf = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if isinstance(owner, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
        return {"weight": "weight", "bias": "bias"}[leaf]
    if isinstance(owner, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return {"weight": "norm-scale", "bias": "norm-bias", "running_mean": "norm-stats",
                "running_var": "norm-stats", "num_batches_tracked": None}[leaf]
    if isinstance(owner, (nn.LayerNorm, nn.GroupNorm)):
        return {"weight": "norm-scale", "bias": "norm-bias"}[leaf]
    if isinstance(owner, (nn.LSTM, nn.GRU, nn.RNN)):
        return "weight" if leaf.startswith("weight") else "bias"
    if isinstance(owner, nn.MultiheadAttention):
        return {"in_proj_weight": "weight", "in_proj_bias": "bias"}[leaf]
    if isinstance(owner, nn.Embedding):
        return "embedding"
    if leaf in ("h0", "c0"):
        return "initial-state"
    raise ValueError(f"no expected role for {name} ({type(owner).__name__})")
