"""The whole of NAS-Bench-101 (nb101.all_archs, nb101.canonical, nb101.nasbench_hash)
against the benchmark's own generator, run literally (benchmarks/nb101_space.py)."""

import numpy as np
import pytest

from benchmarks.nb101_space import generated_graphs, hash_module
from epsinas_onnx.cli import main
from epsinas_onnx.spaces import nb101

# a record of nasbench_only108.tfrecord, as the benchmark's data gives it (module_hash, matrix, ops)
KNOWN_HASH = "00005c142e6f48ac74fdcf73e3439874"
KNOWN_MATRIX = ((0, 1, 0, 0, 1, 1, 0), (0, 0, 1, 0, 0, 0, 0), (0, 0, 0, 1, 0, 0, 1), (0, 0, 0, 0, 0, 1, 0),
                (0, 0, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 0))
KNOWN_OPS = ("input", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv1x1-bn-relu",
             "output")


@pytest.fixture(scope="module")
def whole_space():
    return nb101.all_archs()


def _labels(arch):
    return [-1] + [nb101.OPS.index(op) for op in arch.ops[1:-1]] + [-2]


def test_all_archs_is_the_generators_list_up_to_five_vertices():
    # cell for cell, in the generator's order and labelling (2,532 cells, ~1 s);
    # benchmarks/nb101_space.py runs the same comparison on all 7 vertices
    buckets = generated_graphs(5)
    theirs = [nb101.Arch(tuple(map(tuple, m)), ("input", *(nb101.OPS[v] for v in labels[1:-1]), "output"))
              for m, labels in buckets.values()]
    assert nb101.all_archs(5) == theirs
    assert [nb101.nasbench_hash(a.matrix, a.ops) for a in theirs] == list(buckets)


def test_the_whole_space_is_423624_distinct_cells(whole_space):
    assert len(whole_space) == 423_624
    assert len(set(whole_space)) == len(whole_space)
    sizes = np.bincount([len(a.matrix) for a in whole_space])
    assert sizes.tolist() == [0, 0, 1, 6, 84, 2441, 62010, 359082]  # the generator's counts per size
    for arch in whole_space[::997]:
        nb101.validate(arch)
        assert nb101.prune(arch) == arch  # nothing to prune
        assert sum(map(sum, arch.matrix)) <= nb101.MAX_EDGES


def test_a_known_record_is_listed_in_the_benchmarks_labelling(whole_space):
    assert nb101.nasbench_hash(KNOWN_MATRIX, KNOWN_OPS) == KNOWN_HASH
    assert nb101.Arch(KNOWN_MATRIX, KNOWN_OPS) in set(whole_space)


def test_nasbench_hash_is_graph_utils_hash_module(whole_space):
    rng = np.random.default_rng(0)
    for i in rng.choice(len(whole_space), 300, replace=False):
        arch = whole_space[i]
        assert nb101.nasbench_hash(arch.matrix, arch.ops) == hash_module(np.array(arch.matrix), _labels(arch))


def test_canonical_is_the_listed_cell_of_the_same_network(whole_space):
    listed = set(whole_space)
    rng = np.random.default_rng(1)
    for arch in nb101.sample(40, 2):  # unpruned 7-vertex encodings
        cell = nb101.canonical(arch)
        assert cell in listed
        pruned = nb101.prune(arch)
        assert nb101.nasbench_hash(cell.matrix, cell.ops) == nb101.nasbench_hash(pruned.matrix, pruned.ops)
        n = len(pruned.matrix)
        for _ in range(5):  # any forward relabelling of the pruned cell has the same canonical cell
            order = [0, *rng.permutation(np.arange(1, n - 1)), n - 1]
            m = np.array(pruned.matrix)[np.ix_(order, order)]
            if not np.tril(m).any():
                assert nb101.canonical((m.tolist(), [pruned.ops[v] for v in order])) == cell
    for i in rng.choice(len(whole_space), 200, replace=False):
        assert nb101.canonical(whole_space[i]) == whole_space[i]


def test_space_all_lists_every_cell(whole_space, capsys):
    assert main(["space", "nb101", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 423_624
    assert lines[0] == nb101.format_arch(whole_space[0]) == '{"matrix":[[0,1],[0,0]],"ops":["input","output"]}'
    assert lines[-1] == nb101.format_arch(whole_space[-1])
