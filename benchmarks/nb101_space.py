"""Check nb101.all_archs against the benchmark's own generator, run literally.

    python benchmarks/nb101_space.py [--max-vertices 7]

runs the loop of google-research/nasbench's scripts/generate_graphs.py as it
is written (every bitmask of every size, graph_util.is_full_dag, at most 9
edges, every labelling in itertools.product order, graph_util.hash_module on
each, the first cell of each hash kept; ported here with numpy and hashlib,
without TensorFlow) and compares its cells, in order, with
`epsinas_onnx.spaces.nb101.all_archs`, which finds them without hashing every
labelled graph. Prints the counts and the times; exits 1 on any difference.
On all 7 vertices it hashes about 1.3 million graphs: minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time

import numpy as np

OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # the benchmark's config['available_ops']


def hash_module(matrix: np.ndarray, labeling: list[int]) -> str:
    """graph_util.hash_module, line for line."""
    vertices = np.shape(matrix)[0]
    in_edges = np.sum(matrix, axis=0).tolist()
    out_edges = np.sum(matrix, axis=1).tolist()
    hashes = [hashlib.md5(str(h).encode("utf-8")).hexdigest() for h in zip(out_edges, in_edges, labeling)]
    for _ in range(vertices):
        new_hashes = []
        for v in range(vertices):
            in_neighbors = [hashes[w] for w in range(vertices) if matrix[w, v]]
            out_neighbors = [hashes[w] for w in range(vertices) if matrix[v, w]]
            new_hashes.append(hashlib.md5(("".join(sorted(in_neighbors)) + "|" + "".join(sorted(out_neighbors))
                                           + "|" + hashes[v]).encode("utf-8")).hexdigest())
        hashes = new_hashes
    return hashlib.md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


def generated_graphs(max_vertices: int, max_edges: int = 9, num_ops: int = 3):
    """generate_graphs.main's buckets, hash -> (matrix, labeling), in insertion order."""
    buckets: dict[str, tuple] = {}
    for vertices in range(2, max_vertices + 1):
        for bits in range(2 ** (vertices * (vertices - 1) // 2)):
            matrix = np.zeros((vertices, vertices), np.int8)  # graph_util.gen_is_edge_fn(bits)
            for y in range(vertices):
                for x in range(y):
                    matrix[x, y] = (bits >> (x + y * (y - 1) // 2)) % 2
            rows_bad = np.any(np.all(matrix[:vertices - 1, :] == 0, axis=1))  # graph_util.is_full_dag
            cols_bad = np.any(np.all(matrix[:, 1:] == 0, axis=0))
            if rows_bad or cols_bad or np.sum(matrix) > max_edges:
                continue
            for labeling in itertools.product(*[range(num_ops) for _ in range(vertices - 2)]):
                labeling = [-1] + list(labeling) + [-2]
                buckets.setdefault(hash_module(matrix, labeling), (matrix.tolist(), labeling))
    return buckets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-vertices", type=int, default=7, choices=range(2, 8), metavar="2..7")
    args = parser.parse_args(argv)
    from epsinas_onnx.spaces import nb101

    start = time.perf_counter()
    ours = nb101.all_archs(args.max_vertices)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    buckets = generated_graphs(args.max_vertices)
    generator_seconds = time.perf_counter() - start
    theirs = [nb101.Arch(tuple(map(tuple, matrix)), ("input", *(OPS[v] for v in labeling[1:-1]), "output"))
              for matrix, labeling in buckets.values()]
    print(f"the generator, run literally: {len(theirs)} cells in {generator_seconds:.1f} s")
    print(f"nb101.all_archs:              {len(ours)} cells in {ours_seconds:.1f} s")
    hashes_match = all(nb101.nasbench_hash(a.matrix, a.ops) == h for a, h in zip(theirs, buckets))
    print(f"nb101.nasbench_hash equals graph_util.hash_module on every cell: {hashes_match}")
    if ours != theirs or not hashes_match:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        print(f"DIFFERENT (first at cell {first})", file=sys.stderr)
        return 1
    print("the same cells, in the same order and labelling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
