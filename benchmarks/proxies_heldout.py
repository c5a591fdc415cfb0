"""The frozen aggregate (docs/proxies.md) on a held-out space, computed
without a results store: every proxy of the packaged architectures of the
space, then each one's Spearman and Kendall with the target beside the
aggregate's, all on the same architectures.

    python -m benchmarks.proxies_heldout nlp --data ptb.test.txt

`sample` writes a seeded uniform sample of a packaged table's architectures
that have a finite target (of one data set or task), one a line, for
bench --archs: the held-out samples of docs/proxies.md, where a whole table
costs more CPU than the run could have.

    python -m benchmarks.proxies_heldout sample nb101 nb101_naslib_500 50 > nb101_500_sample50.txt

NAS-Bench-NLP's models read token ids: NASWOT, Zen and MeCo are NaN there
(defined for image inputs), so the frozen aggregate ranks by its other member,
params, alone (its NaN members tie every architecture). bench --proxies
computes the same values with epsinas beside them, at the cost of epsinas's
own runs (for NAS-Bench-NLP, most of the time).
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

from epsinas_onnx.core.options import BatchOptions, ExecutionOptions, TargetOptions
from epsinas_onnx.core.scoring.inputs import model_input, prepare_batch
from epsinas_onnx.core.tables import packaged
from epsinas_onnx.experiments.bench import load_arch_file
from epsinas_onnx.experiments.evaluation import read_keyed, statistics, target_spec
from epsinas_onnx.proxies import engine
from epsinas_onnx.proxies.aggregate import FROZEN_MEMBERS, of_members
from epsinas_onnx.proxies.proxy import Context, ProxyOptions
from epsinas_onnx.spaces import get_space

NAMES = ("naswot", "zen", "meco", "params", "flops")
TABLES = {"nlp": "nlp_wt2_summary"}


def sample(space_name: str, table_name: str, n: int, seed: int = 0, dataset: str | None = None) -> list[str]:
    """`n` architectures (format_arch texts) drawn without replacement, with
    random.Random(seed), from the distinct architectures of the packaged
    table `table_name` that have a finite target (`dataset`'s; None: the
    space's default), in the table's order before the draw."""
    space = get_space(space_name)
    table = packaged(table_name)
    spec = target_spec(space, table, TargetOptions(dataset=dataset))
    targets, _ = read_keyed(table, space, arch_column=spec.arch_column, columns=[spec.target_column],
                            dataset=spec.dataset)
    texts = [text for text, row in targets.items() if math.isfinite(row[spec.target_column])]
    if n > len(texts):
        raise SystemExit(f"{table_name} has {len(texts)} architectures with a target; ask for at most that many")
    return random.Random(seed).sample(texts, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in sorted(TABLES):
        proxies_of = commands.add_parser(name, help=f"every proxy of {TABLES[name]}'s architectures")
        proxies_of.add_argument("--data", required=True, help="the batch's data, as bench's --data")
        proxies_of.add_argument("--limit", type=int, default=None)
    drawn = commands.add_parser("sample", help="a seeded sample of a packaged table's architectures")
    drawn.add_argument("space")
    drawn.add_argument("table", help="a packaged table of the space, e.g. nb101_naslib_500")
    drawn.add_argument("n", type=int)
    drawn.add_argument("--seed", type=int, default=0)
    drawn.add_argument("--dataset", default=None, help="the data set or task whose target must be finite")
    args = parser.parse_args()
    if args.command == "sample":
        print("\n".join(sample(args.space, args.table, args.n, args.seed, args.dataset)))
        return
    args.space = args.command
    space = get_space(args.space)
    archs = load_arch_file(space, f"packaged:{TABLES[args.space]}")
    seen = {}
    for arch in archs:
        seen.setdefault(space.format_arch(arch), arch)
    texts = list(seen)[:args.limit]
    first = space.to_ir(seen[texts[0]], **space.export_defaults)
    spec = model_input(first, None, exclude=set())
    batch = prepare_batch(spec, BatchOptions(data=args.data))
    context = Context(batch.array, spec.name, ProxyOptions(), BatchOptions().batch_size)
    values = {name: [] for name in NAMES}
    start = time.perf_counter()
    for text in texts:
        got = engine.compute_on(lambda: space.to_ir(seen[text], **space.export_defaults), NAMES, context,
                                ExecutionOptions(device="cpu", threads=1))
        for name in NAMES:
            values[name].append(got[name].value)
    column = space.target_columns[0]
    table, _ = read_keyed(packaged(TABLES[args.space]), space, arch_column=space.arch_columns[0], columns=[column])
    target = [table[t][column] for t in texts]
    lower = space.lower_is_better
    print(f"{args.space}: {len(texts)} architectures, target {column} ({'lower' if lower else 'higher'} is better), "
          f"{(time.perf_counter() - start) / len(texts):.2f} s per architecture")
    print(f"{'score':<40} {'n':>5} {'NaN':>5} {'spearman':>9} {'kendall':>9}")
    rows = {**{name: values[name] for name in NAMES},
            f"frozen aggregate ({','.join(FROZEN_MEMBERS)})": of_members(values, FROZEN_MEMBERS)}
    for label, score in rows.items():
        s = statistics(score, target, nan="last", lower_is_better=lower)
        print(f"{label:<40} {s['n']:>5} {s['nan_last']:>5} {s['spearman']:>9.3f} {s['kendall']:>9.3f}")
    nan = {name: int(np.isnan(values[name]).sum()) for name in NAMES}
    print("NaN per proxy:", nan)


if __name__ == "__main__":
    main()
