"""NAS-Bench-101 (Ying et al. 2019) as ONNX models.

An architecture is one cell, repeated 9 times: a DAG of at most 7 vertices
given by an upper-triangular 0/1 adjacency matrix and one op per vertex
(first "input", last "output", the others conv3x3-bn-relu, conv1x1-bn-relu or
maxpool3x3). The network and the cell follow google-research/nasbench
(`model_builder.py`, `model_spec.py`, `base_ops.py`):

    stem Conv3x3(3 -> 128) BN ReLU
    3 stacks of 3 cells, 128 -> 256 -> 512 channels, MaxPool(2, 2) between stacks
    global average pool, Linear(512 -> num_classes)

Inside a cell (after pruning the vertices not on an input-to-output path):
  * the output channels are split among the vertices feeding the output
    (`vertex_channels`); other vertices take the max of their successors';
  * a vertex sums its inputs: every edge from the cell input goes through its
    own 1x1 conv-bn-relu projection, an edge from another vertex is sliced to
    the first `channels` channels when that vertex has one channel more;
  * the output concatenates the vertices feeding it, plus the projected cell
    input when input -> output is an edge (or is only that projection when
    it is the only edge).
conv-bn-relu is Conv (no bias) -> BatchNorm (gamma and beta) -> ReLU.

An `Arch` keeps the matrix and ops as given (un-pruned, like the benchmark's
own files and ModelSpec.original_matrix), so that `mutate` can reconnect a
dangling vertex; `prune` gives the network actually built.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnx_ir as ir

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import ExecutionOptions, ScoringSettings
from epsinas_onnx.core.textfile import read_text
from epsinas_onnx.spaces import pieces
from epsinas_onnx.spaces.graph_builder import GraphBuilder
from epsinas_onnx.spaces.pieces import Step
from epsinas_onnx.spaces.protocol import Space

NAME = "nb101"

INPUT, OUTPUT = "input", "output"
OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
MAX_VERTICES = 7
MAX_EDGES = 9

STEM_CHANNELS = 128
NUM_STACKS = 3
CELLS_PER_STACK = 3
IN_CHANNELS = 3

_CONV_KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}


class Arch(NamedTuple):
    """One NAS-Bench-101 cell; a plain, hashable tuple (matrix, ops)."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]


# --- building and checking architectures ------------------------------------


def make_arch(matrix, ops) -> Arch:
    """An Arch from any nested sequence / array of 0/1 and a list of op names
    (checks the shape and the entries, not the graph: see `validate`)."""
    try:
        rows = [list(row) for row in matrix]
    except TypeError:
        raise UserError(f"nb101 adjacency must be a square list of lists of 0/1, got {matrix!r}") from None
    n = len(rows)
    if n == 0 or any(len(row) != n for row in rows):
        raise UserError(f"nb101 adjacency must be square (n x n), got row lengths {[len(r) for r in rows]}")
    entries = [v for row in rows for v in row]
    # by type first (a bool is not an int here), then by value: bench checks 423,624 cells
    if not all(t is int or issubclass(t, np.integer) for t in set(map(type, entries))) or not set(entries) <= {0, 1}:
        raise UserError("nb101 adjacency entries must be the integers 0 or 1")
    if isinstance(ops, str) or not all(isinstance(op, str) for op in ops):
        raise UserError(f"nb101 ops must be a list of op names, got {ops!r}")
    return Arch(tuple(tuple(map(int, row)) for row in rows), tuple(ops))


def _pruned(arch: Arch) -> Arch | None:
    """The cell without the vertices that lie on no input-to-output path,
    renumbered in order (ModelSpec._prune); None if input cannot reach output."""
    m = arch.matrix
    n = len(m)
    # reach[j]: j is reachable from input; feeds[j]: output is reachable from j.
    # Edges go from low to high index, so one pass in each direction suffices.
    reach = [True] + [False] * (n - 1)
    for j in range(1, n):
        reach[j] = any(reach[i] and m[i][j] == 1 for i in range(j))
    feeds = [False] * (n - 1) + [True]
    for i in range(n - 2, -1, -1):
        feeds[i] = any(feeds[j] and m[i][j] == 1 for j in range(i + 1, n))
    keep = [v for v in range(n) if reach[v] and feeds[v]]
    if len(keep) < 2:
        return None
    if len(keep) == n:
        return arch
    return Arch(tuple(tuple(m[i][j] for j in keep) for i in keep), tuple(arch.ops[i] for i in keep))


def prune(arch: Arch) -> Arch:
    """The network actually built: `arch` without the vertices on no
    input-to-output path (two archs with equal `prune` are the same network)."""
    return _pruned(_checked(arch))


def validate(arch) -> None:
    """Raise UserError naming what is wrong, as the official api.is_valid
    would reject it (edges counted after pruning, as there)."""
    _checked(arch)


def _checked(arch) -> Arch:
    """`arch` (an Arch or any pair matrix, ops) as a validated Arch (UserError: `validate`)."""
    if not (isinstance(arch, (tuple, list)) and len(arch) == 2):
        raise UserError("an nb101 architecture is a pair (adjacency matrix, ops list)")
    arch = make_arch(*arch)
    n = len(arch.matrix)
    if n < 2 or n > MAX_VERTICES:
        raise UserError(f"nb101 cells have 2 to {MAX_VERTICES} vertices, got a {n}x{n} adjacency matrix")
    if len(arch.ops) != n:
        raise UserError(f"nb101 needs one op per vertex: {n} vertices but {len(arch.ops)} ops")
    if any(arch.matrix[i][j] for i in range(n) for j in range(i + 1)):
        raise UserError("nb101 adjacency must be strictly upper triangular (edges go from a lower to a higher vertex)")
    if arch.ops[0] != INPUT or arch.ops[-1] != OUTPUT:
        raise UserError(f"nb101 ops must start with {INPUT!r} and end with {OUTPUT!r}, got {list(arch.ops)}")
    unknown = [op for op in arch.ops[1:-1] if op not in OPS]
    if unknown:
        raise UserError(f"unknown nb101 op {unknown[0]!r}: choose one of {', '.join(OPS)}")
    pruned = _pruned(arch)
    if pruned is None:
        raise UserError("nb101 cell has no path from input to output: add an edge on such a path")
    edges = sum(map(sum, pruned.matrix))
    if edges > MAX_EDGES:
        raise UserError(f"nb101 cell has {edges} edges on input-output paths, at most {MAX_EDGES} allowed")
    return arch


def _is_valid(arch: Arch) -> bool:
    try:
        validate(arch)
    except UserError:
        return False
    return True


# --- text formats --------------------------------------------------------------


def parse(text: str) -> Arch:
    """Read one cell from either encoding of the benchmark files:

    * JSON: {"matrix": [[...]], "ops": [...]} (also "adjacency" for "matrix"),
      or the two fields of naslib_500.csv one after the other,
      `[[0, 1, ...], ...] ["input", ..., "output"]` (whitespace or comma between);
    * the cell string of test_143.csv: the upper-triangle bits, row-major
      (21 for 7 vertices), then the inner op names, space separated.
    """
    text = text.strip()
    if not text:
        raise UserError("empty nb101 architecture string")
    arch = _parse_json(text) if text[0] in "{[" else _parse_bits(text)
    validate(arch)
    return arch


def _parse_json(text: str) -> Arch:
    decoder = json.JSONDecoder()
    try:
        first, end = decoder.raw_decode(text)
        rest = text[end:].strip().lstrip(",;").strip()
        second = decoder.raw_decode(rest)[0] if rest else None
    except json.JSONDecodeError as e:
        raise UserError(f"nb101 architecture is not valid JSON ({e.msg} at character {e.pos})") from None
    except RecursionError:  # json recurses once per level: a cell is two levels deep
        raise UserError("nb101 architecture JSON is nested too deeply to be a cell (a matrix is two levels)") from None
    if isinstance(first, dict):
        matrix = first.get("matrix", first.get("adjacency"))
        if matrix is None or "ops" not in first:
            raise UserError('nb101 JSON architecture needs the keys "matrix" and "ops"')
        return make_arch(matrix, first["ops"])
    if second is None:
        raise UserError("nb101 architecture has an adjacency matrix but no ops list after it")
    return make_arch(first, second)


def _parse_bits(text: str) -> Arch:
    bits, *inner_ops = text.split()
    if set(bits) - {"0", "1"}:
        raise UserError(f"nb101 cell string must start with the upper-triangle bits (0/1), got {bits!r}")
    n = _vertices_for_bits(len(bits))
    if n is None:
        raise UserError(f"nb101 cell string has {len(bits)} adjacency bits: expected 21 (7 vertices), "
                        "or n(n-1)/2 for n vertices")
    if len(inner_ops) != n - 2:
        raise UserError(f"nb101 cell string with {n} vertices needs {n - 2} op names after the bits, "
                        f"got {len(inner_ops)}")
    matrix = np.zeros((n, n), dtype=np.int64)
    matrix[np.triu_indices(n, 1)] = [int(b) for b in bits]
    return make_arch(matrix.tolist(), (INPUT, *inner_ops, OUTPUT))


def _vertices_for_bits(num_bits: int) -> int | None:
    for n in range(2, MAX_VERTICES + 1):
        if n * (n - 1) // 2 == num_bits:
            return n
    return None


def format_arch(arch: Arch) -> str:
    """Canonical JSON: {"matrix":[[...]],"ops":[...]} (parse reads it back)."""
    arch = make_arch(*arch)
    return json.dumps({"matrix": [list(row) for row in arch.matrix], "ops": list(arch.ops)},
                      separators=(",", ":"))


def load_archs(path) -> list[Arch]:
    """The architectures of a csv file with either an `adjacency` and an `ops`
    column (naslib_500.csv) or a `cell` column (test_143.csv), in file order."""
    path = Path(path)
    rows = list(csv.DictReader(io.StringIO(read_text(path, "architecture file"), newline="")))
    columns = set(rows[0]) if rows else set()
    if {"adjacency", "ops"} <= columns:
        texts = [f"{r['adjacency']} {r['ops']}" for r in rows]
    elif "cell" in columns:
        texts = [r["cell"] for r in rows]
    else:
        raise UserError(f"{path}: expected nb101 columns 'adjacency' and 'ops', or 'cell'")
    archs = []
    for line, text in enumerate(texts, start=2):
        try:
            archs.append(parse(text))
        except UserError as e:
            raise UserError(f"{path}, line {line}: {e}") from None
    return archs


# --- sampling and mutation ----------------------------------------------------------


def sample(n: int, seed: int = 0) -> list[Arch]:
    """`n` cells drawn uniformly (with replacement) over valid 7-vertex
    encodings, by rejection as in the NAS-Bench-101 notebook: 21 fair bits and
    5 uniform ops, kept if the pruned cell is valid. Repeatable for a seed."""
    rng = np.random.default_rng(seed)
    archs: list[Arch] = []
    while len(archs) < n:
        matrix = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int64)
        matrix[np.triu_indices(MAX_VERTICES, 1)] = rng.integers(0, 2, MAX_VERTICES * (MAX_VERTICES - 1) // 2)
        inner = [OPS[i] for i in rng.integers(0, len(OPS), MAX_VERTICES - 2)]
        arch = make_arch(matrix.tolist(), (INPUT, *inner, OUTPUT))
        if _is_valid(arch):
            archs.append(arch)
    return archs


def _neighbours(arch: Arch) -> list[Arch]:
    """Every cell one edge flip or one op change away (valid or not)."""
    n = len(arch.matrix)
    result = []
    for i in range(n):
        for j in range(i + 1, n):
            matrix = [list(row) for row in arch.matrix]
            matrix[i][j] = 1 - matrix[i][j]
            result.append(Arch(tuple(map(tuple, matrix)), arch.ops))
    for v in range(1, n - 1):
        for op in OPS:
            if op != arch.ops[v]:
                result.append(Arch(arch.matrix, arch.ops[:v] + (op,) + arch.ops[v + 1:]))
    return result


def mutate(arch: Arch, rng: np.random.Generator) -> Arch:
    """A uniformly drawn valid neighbour (one edge flip or one op change).
    Edits that only touch pruned-away vertices leave the network unchanged,
    so they are drawn only if no edit changes the network."""
    arch = _checked(arch)
    valid = [a for a in _neighbours(arch) if _is_valid(a)]
    network = _pruned(arch)
    changed = [a for a in valid if _pruned(a) != network]
    choices = changed or valid
    if not choices:
        raise UserError(f"nb101 cell {format_arch(arch)} has no valid neighbour")
    return choices[int(rng.integers(len(choices)))]


# --- the whole space --------------------------------------------------------------
#
# The benchmark's generator (nasbench/scripts/generate_graphs.py) walks, for
# 2..7 vertices, every adjacency bitmask in increasing order (bit x + y(y-1)/2
# is the edge x -> y), keeps the "full" DAGs (every vertex but the output has
# an out-edge, every vertex but the input an in-edge: nothing to prune) of at
# most 9 edges, labels the inner vertices in itertools.product order and keeps
# the first cell of each graph hash (`nasbench_hash`): 423,624 cells. The hash
# is invariant under relabelling and, on this space, tells every two
# non-isomorphic cells apart (the generator checked it), so its classes are the
# isomorphism classes. `all_archs` finds them without hashing 1.3 million
# labelled graphs: a class's first cell lies on the first bitmask of its
# unlabelled graph (every relabelling of the graph carries every labelling),
# labelled with the first labelling of its orbit under that graph's
# automorphisms. tests/test_nb101_space.py compares it, cell for cell and in
# order, with the generator's own loop on up to 5 vertices and checks the
# count; benchmarks/nb101_space.py runs that comparison on all 7.


def nasbench_hash(matrix, ops) -> str:
    """NAS-Bench-101's graph hash of a pruned cell (graph_util.hash_module,
    the `module_hash` of its records): each vertex starts from the MD5 of
    (out-degree, in-degree, label), label -1 input, -2 output, else the op's
    index in OPS; then, as many rounds as vertices, each vertex hashes its
    sorted in-neighbours', its sorted out-neighbours' and its own hash; the
    result is the MD5 of the sorted final hashes."""
    n = len(matrix)
    labels = [-1] + [OPS.index(op) for op in ops[1:-1]] + [-2]
    ins = [[w for w in range(n) if matrix[w][v]] for v in range(n)]
    outs = [[w for w in range(n) if matrix[v][w]] for v in range(n)]
    md5 = hashlib.md5
    hashes = [md5(str((len(outs[v]), len(ins[v]), labels[v])).encode()).hexdigest() for v in range(n)]
    for _ in range(n):
        hashes = [md5(("".join(sorted([hashes[w] for w in ins[v]])) + "|"
                       + "".join(sorted([hashes[w] for w in outs[v]])) + "|" + hashes[v]).encode()).hexdigest()
                  for v in range(n)]
    return md5(str(sorted(hashes)).encode()).hexdigest()


def _edges(n: int) -> list[tuple[int, int]]:
    """The generator's edge of each bit: bit x + y(y-1)/2 is x -> y (column by column)."""
    return [(x, y) for y in range(n) for x in range(y)]


def _full_dag_masks(n: int) -> np.ndarray:
    """The bitmasks, in increasing order, of n-vertex DAGs of at most
    MAX_EDGES edges whose every vertex lies on an input-output path
    (graph_util.is_full_dag: each vertex but the last has an out-edge, each
    but the first an in-edge)."""
    edges = _edges(n)
    masks = np.arange(1 << len(edges), dtype=np.int64)
    keep = np.bitwise_count(masks) <= MAX_EDGES
    for v in range(n):
        if v < n - 1:
            keep &= (masks & sum(1 << k for k, (x, _) in enumerate(edges) if x == v)) != 0
        if v > 0:
            keep &= (masks & sum(1 << k for k, (_, y) in enumerate(edges) if y == v)) != 0
    return masks[keep]


def _cells_of_size(n: int) -> list[Arch]:
    """The generator's first cell of each graph hash among the n-vertex cells, in its order."""
    edges = _edges(n)
    masks = _full_dag_masks(n)
    # every relabelling that keeps the input and the output; a graph's code under
    # it: its n x n matrix as bits p(x) * n + p(y); equal minima = isomorphic graphs
    perms = [(0, *p, n - 1) for p in itertools.permutations(range(1, n - 1))]
    codes = np.zeros((len(perms), len(masks)), np.int64)
    for i, p in enumerate(perms):
        for k, (x, y) in enumerate(edges):
            codes[i] |= ((masks >> k) & 1) << (p[x] * n + p[y])
    _, first = np.unique(codes.min(axis=0), return_index=True)  # each graph's first bitmask
    inner = n - 2
    labellings = np.array(list(itertools.product(range(len(OPS)), repeat=inner)), np.int64).reshape(len(OPS) ** inner, inner)
    place = len(OPS) ** np.arange(inner - 1, -1, -1)  # a labelling's rank in product order
    rank = labellings @ place
    cells = []
    for j in np.sort(first):
        least = rank
        for i in np.flatnonzero(codes[:, j] == codes[0, j])[1:]:  # the automorphisms but the identity
            moved = np.empty_like(labellings)
            moved[:, [v - 1 for v in perms[i][1:-1]]] = labellings
            least = np.minimum(least, moved @ place)
        mask = int(masks[j])
        matrix = tuple(tuple(int(mask >> edges.index((x, y)) & 1) if x < y else 0 for y in range(n))
                       for x in range(n))
        cells += [Arch(matrix, (INPUT, *(OPS[v] for v in labels), OUTPUT)) for labels in labellings[least == rank]]
    return cells


def all_archs(max_vertices: int = MAX_VERTICES) -> list[Arch]:
    """The 423,624 cells of NAS-Bench-101, pruned, each once, in the
    labelling and the order of the benchmark's generator (the labelling its
    records store): 2 to 7 vertices, at most 9 edges. `max_vertices`: the
    cells of at most that many vertices (the generator's --max_vertices)."""
    return [arch for n in range(2, max_vertices + 1) for arch in _cells_of_size(n)]


def canonical(arch) -> Arch:
    """The cell of `all_archs` that is the same network as `arch`: pruned,
    then relabelled as the benchmark's generator first met it (the least
    bitmask, then the least labelling in product order, over the relabellings
    that keep the edges going forward)."""
    cell = prune(arch)
    n = len(cell.matrix)
    edges = _edges(n)
    best = None
    for inner in itertools.permutations(range(1, n - 1)):
        order = (0, *inner, n - 1)  # vertex order[i] becomes vertex i
        if any(cell.matrix[order[y]][order[x]] for x, y in edges):
            continue  # an edge would go backward
        mask = sum(1 << k for k, (x, y) in enumerate(edges) if cell.matrix[order[x]][order[y]])
        labels = tuple(OPS.index(cell.ops[v]) for v in inner)
        if best is None or (mask, labels) < best[:2]:
            best = (mask, labels, order)
    _, _, order = best
    return Arch(tuple(tuple(cell.matrix[order[x]][order[y]] for y in range(n)) for x in range(n)),
                tuple(cell.ops[v] for v in order))


# --- the network ----------------------------------------------------------------


def vertex_channels(c_in: int, c_out: int, matrix) -> list[int]:
    """Channels of each vertex of a pruned cell (compute_vertex_channels): the
    output's channels split as evenly as possible among the vertices feeding
    it (the first ones get the remainder), every other vertex the max of its
    successors'."""
    m = np.asarray(matrix)
    n = len(m)
    channels = [0] * n
    channels[0], channels[n - 1] = c_in, c_out
    if n == 2:
        return channels
    fan_in = int(m[1:, n - 1].sum())
    share, remainder = divmod(c_out, fan_in)
    for v in range(1, n - 1):
        if m[v, n - 1]:
            channels[v] = share + (1 if remainder > 0 else 0)
            remainder -= 1
    for v in range(n - 3, 0, -1):
        if not m[v, n - 1]:
            channels[v] = max([channels[v]] + [channels[d] for d in range(v + 1, n - 1) if m[v, d]])
    return channels


def _cell_shapes() -> list[tuple[int, int]]:
    """(input channels, output channels) of the 9 cells, in order."""
    shapes, c = [], STEM_CHANNELS
    for stack in range(NUM_STACKS):
        c_out = STEM_CHANNELS * 2 ** stack
        for _ in range(CELLS_PER_STACK):
            shapes.append((c, c_out))
            c = c_out
    return shapes


def num_params(arch: Arch, num_classes: int = 10) -> int:
    """Trainable parameters of the network (conv weights, BN gamma and beta,
    classifier weight and bias), as NAS-Bench-101 reports them."""
    cell = prune(arch)
    m = cell.matrix
    n = len(m)

    def conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out

    total = conv_bn(IN_CHANNELS, STEM_CHANNELS, 3)
    for c_in, c_out in _cell_shapes():
        channels = vertex_channels(c_in, c_out, m)
        total += sum(conv_bn(c_in, channels[t], 1) for t in range(1, n) if m[0][t])
        total += sum(conv_bn(channels[t], channels[t], _CONV_KERNEL[cell.ops[t]])
                     for t in range(1, n - 1) if cell.ops[t] in _CONV_KERNEL)
    c_last = _cell_shapes()[-1][1]
    return total + c_last * num_classes + num_classes


def _conv_bn_relu(g: GraphBuilder, x: str, name: str, c_in: int, c_out: int, k: int) -> str:
    y = g.conv(x, f"{name}.conv", c_in, c_out, k)
    y = g.batch_norm(y, f"{name}.bn", c_out)
    return g.op("Relu", y, name=f"{name}.relu")


def _truncate(g: GraphBuilder, x: str, name: str, have: int, want: int) -> str:
    """The first `want` channels of x (a vertex may carry one extra channel
    from the uneven split of the output's channels)."""
    if have == want:
        return x
    starts = g.constant(f"{name}.starts", np.array([0], np.int64))
    ends = g.constant(f"{name}.ends", np.array([want], np.int64))
    axes = g.constant(f"{name}.axes", np.array([1], np.int64))
    return g.op("Slice", [x, starts, ends, axes], name=name)


def _cell(g: GraphBuilder, x: str, name: str, cell: Arch, c_in: int, c_out: int) -> str:
    m, n = cell.matrix, len(cell.matrix)
    channels = vertex_channels(c_in, c_out, m)

    def project(t):  # the 1x1 conv-bn-relu on the edge input -> t
        return _conv_bn_relu(g, x, f"{name}.input_proj_{t}", c_in, channels[t], 1)

    values = [x]
    for t in range(1, n - 1):
        addends = [_truncate(g, values[s], f"{name}.vertex_{t}.slice_{s}", channels[s], channels[t])
                   for s in range(1, t) if m[s][t]]
        if m[0][t]:
            addends.append(project(t))
        v = g.add_all(addends, name=f"{name}.vertex_{t}.sum")
        op = cell.ops[t]
        if op == "maxpool3x3":
            v = g.op("MaxPool", v, name=f"{name}.vertex_{t}.maxpool", kernel_shape=[3, 3],
                     strides=[1, 1], pads=[1, 1, 1, 1])
        else:
            v = _conv_bn_relu(g, v, f"{name}.vertex_{t}", channels[t], channels[t], _CONV_KERNEL[op])
        values.append(v)

    feeding = [values[t] for t in range(1, n - 1) if m[t][n - 1]]
    if not feeding:  # input -> output is the only edge
        return project(n - 1)
    out = feeding[0] if len(feeding) == 1 else g.op("Concat", feeding, name=f"{name}.concat", axis=1)
    if m[0][n - 1]:
        out = g.op("Add", [out, project(n - 1)], name=f"{name}.add_input")
    return out


def to_onnx(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0) -> onnx.ModelProto:
    """The NAS-Bench-101 network of `arch`: input "input" (batch, 3, r, r),
    output "logits" (batch, num_classes). Inference-mode BatchNormalization
    (the scorer switches it to batch statistics). The stack MaxPools floor odd
    sizes (as torch; TF's 'same' would round up), so r >= 4. `seed` picks the
    placeholder values of the initialisers."""
    return ir.to_proto(to_ir(arch, num_classes=num_classes, resolution=resolution, seed=seed))


def to_ir(arch: Arch, num_classes: int = 1, resolution: int = 32, seed: int = 0, tied: bool = False) -> ir.Model:
    """to_onnx's model as onnx-ir objects, not serialised (what bench rewrites).
    tied: one initialiser per kind of parameter and shape (GraphBuilder.tied_parameter),
    for constant weights only."""
    cell = prune(arch)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(resolution, int) or resolution < 4:
        raise UserError(f"resolution must be an integer >= 4 (two 2x2 poolings), got {resolution!r}")

    g = GraphBuilder(seed, tied=tied)
    x = g.input("input", ["batch", IN_CHANNELS, resolution, resolution])
    y = _conv_bn_relu(g, x, "stem", IN_CHANNELS, STEM_CHANNELS, 3)
    for i, (c_in, c_out) in enumerate(_cell_shapes()):
        if i > 0 and i % CELLS_PER_STACK == 0:
            y = g.op("MaxPool", y, name=f"downsample_{i // CELLS_PER_STACK}", kernel_shape=[2, 2],
                     strides=[2, 2])
        y = _cell(g, y, f"cells.{i}", cell, c_in, c_out)
    y = g.op("GlobalAveragePool", y, name="global_pool")
    y = g.op("Flatten", y, name="flatten", axis=1)
    c_last = _cell_shapes()[-1][1]
    y = g.linear(y, "classifier", c_last, num_classes)
    g.output(y, "logits", ["batch", num_classes])
    return g.ir_model("nb101", doc=f"NAS-Bench-101 cell {format_arch(arch)}")


# --- the network run piece by piece -------------------------------------------------
#
# Under constant weights a cell's sub-networks compute the same wherever their
# inputs are alike: a vertex (its addends summed, its op) in a stack, given its
# channels and its addends' channels; a projection of the cell input, given the
# input's channel groups (the channels of the previous cell's vertices feeding
# its output: channel collapse keeps one channel per group and folds the group
# sizes into the constants) and the projection's channels; a cell's output (the
# concatenation, the projected input added) given the channels of its parts;
# a downsampling and the head given the groups they read. `cell_steps` lists an
# architecture's sub-networks as steps, each keyed by exactly those
# parameters, each naming the tensors to_ir gives its inputs and its output.
# A worker cuts a piece for a key the first time an architecture needs it:
# that architecture rewritten by the generic path, its piece cut out by those
# names (pieces.StepPieces), one session each; later architectures reuse it. Every
# node run is a node of a generic rewrite fed the same inputs, so the logits
# are the generic path's bit for bit (tests/test_nb101_pieces.py).

STEM_OUTPUT = "stem.relu"
HEAD_OUTPUT = "logits"


def cell_steps(cell: Arch) -> tuple[Step, ...]:
    """The steps that compute the logits of the pruned `cell` from the stem's output, in order."""
    m, n = cell.matrix, len(cell.matrix)
    steps = []
    x, groups = STEM_OUTPUT, (STEM_CHANNELS,)  # the cell input and the channels of its parts
    for i, (c_in, c_out) in enumerate(_cell_shapes()):
        stack = i // CELLS_PER_STACK
        if i > 0 and i % CELLS_PER_STACK == 0:
            steps.append(Step(("downsample", stack, groups), (x,), f"downsample_{stack}"))
            x = f"downsample_{stack}"
        channels = vertex_channels(c_in, c_out, m)
        made = {}  # projection key -> the tensor that already holds it
        values = [x]

        def project(t):
            key = ("project", stack, groups, channels[t])
            output = f"cells.{i}.input_proj_{t}.relu"
            steps.append(Step(key, (x,), output) if key not in made else Step(None, (made[key],), output))
            made.setdefault(key, output)
            return output

        for t in range(1, n - 1):
            sources = [s for s in range(1, t) if m[s][t]]
            inputs = [values[s] for s in sources] + ([project(t)] if m[0][t] else [])
            output = f"cells.{i}.vertex_{t}." + ("maxpool" if cell.ops[t] == "maxpool3x3" else "relu")
            steps.append(Step(("vertex", stack, cell.ops[t], channels[t], tuple(channels[s] for s in sources),
                               bool(m[0][t])), tuple(inputs), output))
            values.append(output)
        feeding = [t for t in range(1, n - 1) if m[t][n - 1]]
        if not feeding:  # input -> output is the only edge
            x, groups = project(n - 1), (c_out,)
            continue
        inputs = [values[t] for t in feeding] + ([project(n - 1)] if m[0][n - 1] else [])
        if len(inputs) == 1:
            x = inputs[0]
        else:
            output = f"cells.{i}.add_input" if m[0][n - 1] else f"cells.{i}.concat"
            steps.append(Step(("output", stack, tuple(channels[t] for t in feeding), bool(m[0][n - 1])),
                              tuple(inputs), output))
            x = output
        groups = tuple(channels[t] for t in feeding)
    steps.append(Step(("head", groups), (x,), HEAD_OUTPUT))
    return tuple(steps)


def pieces_declines(scoring: ScoringSettings, input_name: str | None, device: str) -> str | None:
    """Why the cell pieces would not compute what the generic path does for
    these settings (prepare_model's) on `device`; None where they do."""
    return pieces.declines(scoring, input_name, device, HEAD_OUTPUT)


# the first template: the stem's piece (every other piece is cut when an architecture first needs it)
STEM_TEMPLATE = Arch(((0, 1), (0, 0)), (INPUT, OUTPUT))


def pieces_for(export: dict, scoring: ScoringSettings, batch: np.ndarray, execution: ExecutionOptions,
               input_name: str | None = None) -> pieces.StepPieces | None:
    """Space.pieces_for: the cell pieces for networks exported with `export`
    and rewritten with `scoring` and `input_name`, on `batch`; None where they
    do not apply (`pieces_declines`)."""
    if pieces_declines(scoring, input_name, execution.device) is not None:
        return None
    network = pieces.StepNetwork(steps=lambda arch: cell_steps(prune(arch)),
                                 build=lambda arch: to_ir(prune(arch), **export, tied=True),
                                 stem_template=STEM_TEMPLATE, stem_output=STEM_OUTPUT, head_output=HEAD_OUTPUT)
    return pieces.StepPieces(network, scoring, input_name, batch, execution.threads, execution.graph_optimization)


SPACE = Space(
    name=NAME, parse=parse, format_arch=format_arch, validate=validate, sample=sample, mutate=mutate,
    num_params=num_params, to_onnx=to_onnx, to_ir=to_ir,
    export_defaults={"num_classes": 1, "resolution": 32, "seed": 0}, num_params_options=("num_classes",),
    reference_weights=(1e-4, 10.0), read_csv_archs=load_archs, all_archs=all_archs,
    canonical=canonical, ir_takes_tied=True, pieces_for=pieces_for,
    # test_143: test accuracy of 143 cells; naslib_500: validation accuracy and proxies of 500
    target_tables=("nb101_test_143", "nb101_naslib_500"), baselines_table="nb101_naslib_500",
    proxies_table="nb101_naslib_500", arch_columns=("cell", "adjacency,ops", "arch"),
    target_columns=("cifar_acc_108", "val_accuracy"),
)
