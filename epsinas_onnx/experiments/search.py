"""NAS search with the epsinas score (reference-semantics §9, paper section 5.6).

"Training" an architecture is a lookup of its benchmark accuracy (the
target); scores come from a results store, and architectures the store lacks
are scored on demand through bench.run_bench with the store's own weights,
batch and settings (`BenchFiller`). Every search is repeatable: run r of a
command draws from numpy's default_rng(seed + r).

    pick_one_of_n   draw N architectures (with replacement), keep the best
                    score (NaN never picked): the paper's Table 3
    random_search   train random architectures; with a warm-up, score W
                    random architectures first and train them best score first
    evolution       ageing evolution (Real et al. 2019): population P,
                    tournament T, the parent is the tournament's best
                    accuracy (or, with move=True, its best score), its child
                    (the space's `mutate`) joins, the oldest member leaves;
                    with a warm-up the first population is the P best-scored
                    of W random architectures

As in the reference (NAS-Bench-201/Integration.ipynb), NaN scores count as 0
where architectures are ordered by score, every architecture of the first
population and every child counts as trained (a repeat too), the tournament is
drawn without replacement from the population, and the curves hold the best
target found so far. One departure: a warm-up scores the *distinct*
architectures of its W draws (the reference ranks repeats as separate
candidates, so a repeat could take two places among those trained).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sqlite3
import sys
from typing import Callable

import numpy as np

from epsinas_onnx.core.errors import UserError
from epsinas_onnx.core.options import BENCH_EXECUTION, BatchOptions, ExecutionOptions, RunOptions, TargetOptions
from epsinas_onnx.core.tables import as_table

SEED_SPACE = 2**31  # seeds handed to space.sample


# ---------------------------------------------------------------- what a search looks up


@dataclasses.dataclass
class Targets:
    """The benchmark's trained result per architecture (format_arch text)."""

    values: dict[str, float]  # NaN: trained, but the result is missing (diverged)
    name: str  # the target column
    lower_is_better: bool = False
    source: str = ""
    selection: dict[str, float] | None = None  # what evolution's tournament compares; None = values
    selection_name: str | None = None

    def good(self, text: str, table: dict[str, float] | None = None) -> float:
        """The target as higher-is-better; -inf for NaN. UserError if absent."""
        table = self.values if table is None else table
        try:
            value = table[text]
        except KeyError:
            raise UserError(
                f"architecture {text} has no {self.name!r} in {self.source or 'the targets'}: a search trains "
                "(looks up) architectures anywhere in the space, so it needs a table that covers the space "
                "(a packaged table of a whole space does, e.g. nb201's; others cover only samples)"
            ) from None
        if not math.isfinite(value):
            return -math.inf
        return -value if self.lower_is_better else value

    def select_good(self, text: str) -> float:
        return self.good(text, self.selection) if self.selection is not None else self.good(text)

    def to_target(self, good: float) -> float:
        """Back from higher-is-better to the target's own units."""
        if not math.isfinite(good):
            return math.nan
        return -good if self.lower_is_better else good

    def best(self) -> float:
        finite = [v for v in self.values.values() if math.isfinite(v)]
        if not finite:
            return math.nan
        return min(finite) if self.lower_is_better else max(finite)


def load_targets(space: str, targets: TargetOptions, select_column: str | None = None) -> Targets:
    """The target column of targets.accuracies (a Table or a csv path), with
    the same defaults as `evaluate` (the space's declaration:
    evaluation.target_spec); select_column: what evolution's tournament
    compares (default: the target)."""
    from epsinas_onnx.experiments import evaluation
    from epsinas_onnx.spaces import get_space

    module = get_space(space)
    accuracies = as_table(targets.accuracies)
    spec = evaluation.target_spec(module, accuracies, targets)
    target_column, lower_is_better = spec.target_column, spec.lower_is_better
    columns = [target_column] + ([select_column] if select_column and select_column != target_column else [])
    table, _ = evaluation.read_keyed(accuracies, module, arch_column=spec.arch_column, columns=columns,
                                     dataset=spec.dataset)
    values = {arch: row[target_column] for arch, row in table.items()}
    selection = None
    if select_column and select_column != target_column:
        selection = {arch: row[select_column] for arch, row in table.items()}
    return Targets(values, target_column, lower_is_better, str(accuracies), selection, select_column)


class Scores:
    """Scores by architecture text: what is known, plus `fill` for the rest.

    fill(archs) -> {text: score} scores architectures the table lacks (e.g.
    BenchFiller); without it a missing architecture is a UserError."""

    def __init__(self, known: dict[str, float], fill: Callable | None = None, source: str = ""):
        self.known = dict(known)
        self.fill = fill
        self.source = source
        self.filled = 0  # architectures scored on demand

    def ensure(self, archs: list, texts: list[str]) -> None:
        missing: dict[str, object] = {}
        for arch, text in zip(archs, texts):
            if text not in self.known and text not in missing:
                missing[text] = arch
        if not missing:
            return
        if self.fill is None:
            raise UserError(
                f"{len(missing)} architecture(s) the search needs are not in {self.source or 'the store'} "
                f"(e.g. {next(iter(missing))}): score them first with `epsinas-onnx bench`"
            )
        got = self.fill(list(missing.values()))
        for text in missing:
            if text not in got:
                raise UserError(f"scoring {text} on demand left no row in the store")
            self.known[text] = got[text]
        self.filled += len(missing)

    def of(self, archs: list, texts: list[str]) -> np.ndarray:
        """Scores with NaN as 0 (reference: NaN scores count as 0 when ordering)."""
        self.ensure(archs, texts)
        values = np.array([self.known[t] for t in texts], dtype=np.float64)
        return np.where(np.isfinite(values), values, 0.0)

    def raw(self, text: str) -> float:
        return self.known[text]

    def population(self, texts: list[str]) -> np.ndarray:
        """What ranks the candidates `texts` against each other, higher first:
        here each one's own score (NaN stays NaN: never picked)."""
        return np.array([self.known[t] for t in texts], dtype=np.float64)

    def ordering(self, archs: list, texts: list[str]) -> np.ndarray:
        """What orders a pool (a warm-up, a tournament): the scores, NaN as 0."""
        return self.of(archs, texts)


class RankedScores(Scores):
    """Several stored scores per architecture (epsinas and other proxies) whose
    rank aggregate over each population of candidates ranks them
    (proxies.aggregate): pick 1 of N aggregates over the N drawn, a warm-up
    over its pool, --move over the tournament. Every member must be stored for
    every architecture the search draws (nothing is scored on demand)."""

    def __init__(self, columns: dict[str, dict[str, float]], source: str = "", members: tuple = ()):
        known = set.intersection(*(set(values) for values in columns.values()))
        super().__init__({t: math.nan for t in known}, None, source)
        self.columns = columns
        self.members = tuple(members) or tuple(columns)  # a name listed twice counts twice

    def ensure(self, archs: list, texts: list[str]) -> None:
        missing = [t for t in texts if t not in self.known]
        if missing:
            lacking = [name for name, values in self.columns.items() if missing[0] not in values]
            raise UserError(f"{len(set(missing))} architecture(s) the search draws have no stored "
                            f"{', '.join(lacking)} in {self.source or 'the store'} (e.g. {missing[0]}): store them "
                            "first with `epsinas-onnx bench ... --proxies`")

    def population(self, texts: list[str]) -> np.ndarray:
        from epsinas_onnx.proxies.aggregate import of_members

        self.ensure([], texts)
        return of_members({name: [values[t] for t in texts] for name, values in self.columns.items()}, self.members)

    def ordering(self, archs: list, texts: list[str]) -> np.ndarray:
        return self.population(texts)


class _Texts:
    """format_arch with a cache (a search formats the same architectures often)."""

    def __init__(self, space):
        self.space = space
        self.cache: dict = {}

    def __call__(self, arch) -> str:
        try:
            return self.cache[arch]
        except KeyError:
            text = self.cache[arch] = self.space.format_arch(arch)
            return text
        except TypeError:  # unhashable
            return self.space.format_arch(arch)


def _rng(seed: int, run: int) -> np.random.Generator:
    return np.random.default_rng(seed + run)


def _draw(space, n: int, rng: np.random.Generator) -> list:
    return list(space.sample(n, int(rng.integers(SEED_SPACE))))


def _distinct(archs: list, texts: list[str]) -> tuple[list, list[str]]:
    seen: dict[str, object] = {}
    for arch, text in zip(archs, texts):
        seen.setdefault(text, arch)
    return list(seen.values()), list(seen)


def _by_score(scores: np.ndarray) -> np.ndarray:
    """Indices, best score first; ties keep the draw order."""
    return np.argsort(-scores, kind="stable")


# ---------------------------------------------------------------- pick one of N


@dataclasses.dataclass
class PickResult:
    n: int
    runs: int
    picked: list[str | None]  # per run: the chosen architecture (None: every score was NaN)
    targets: np.ndarray  # per run: its target (NaN where none was picked)
    all_nan_runs: int


def pick_one_of_n(space, targets: Targets, scores: Scores, n: int, runs: int, seed: int = 0) -> PickResult:
    """Run r: space.sample(n, seed + r) (with replacement, as §9 says), the
    architecture with the best score (the first drawn among ties; NaN never)."""
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    if runs < 1:
        raise UserError(f"--runs must be at least 1, not {runs}")
    text = _Texts(space)
    draws = []
    for run in range(runs):
        archs = list(space.sample(n, seed + run))
        draws.append((archs, [text(a) for a in archs]))
    scores.ensure([a for archs, _ in draws for a in archs], [t for _, texts in draws for t in texts])
    picked, values, all_nan = [], [], 0
    for archs, texts in draws:
        raw = scores.population(texts)
        if not np.isfinite(raw).any():
            picked.append(None)
            values.append(math.nan)
            all_nan += 1
            continue
        best = int(np.argmax(np.where(np.isfinite(raw), raw, -np.inf)))
        picked.append(texts[best])
        values.append(targets.to_target(targets.good(texts[best])))
    return PickResult(n, runs, picked, np.array(values, dtype=np.float64), all_nan)


# ---------------------------------------------------------------- random search


def random_search(space, targets: Targets, scores: Scores | None, *, budget: int, warmup: int = 0,
                  runs: int = 1, seed: int = 0) -> np.ndarray:
    """Best target found so far after each trained architecture: array (runs, budget).

    warmup 0: train `budget` random architectures (no scores). warmup W: score
    the distinct architectures of W random draws and train them best score
    first (NaN as 0); should fewer than `budget` be distinct, random draws
    follow (as the reference does past its warm-up pool)."""
    _check_budget(budget, runs)
    if warmup < 0:
        raise UserError(f"--warmup must be at least 0, not {warmup}")
    if 0 < warmup < budget:
        raise UserError(f"--warmup ({warmup}) must be at least --budget ({budget}): the warm-up pool is what is "
                        "trained (or 0 for plain random search)")
    if warmup and scores is None:
        raise UserError("a warm-up needs scores (a results store)")
    text = _Texts(space)
    pools = []
    for run in range(runs):
        rng = _rng(seed, run)
        if warmup:
            archs = _draw(space, warmup, rng)
            pools.append((rng, *_distinct(archs, [text(a) for a in archs])))
        else:
            pools.append((rng, [], []))
    if warmup:  # every score the runs need, in one go (one on-demand bench at most)
        scores.ensure([a for _, archs, _ in pools for a in archs], [t for _, _, texts in pools for t in texts])
    curves = np.empty((runs, budget), dtype=np.float64)
    for run, (rng, archs, texts) in enumerate(pools):
        if warmup:
            order = _by_score(scores.ordering(archs, texts))
            trained = [texts[i] for i in order[:budget]]
        else:
            trained = []
        if len(trained) < budget:
            trained += [text(a) for a in _draw(space, budget - len(trained), rng)]
        goods = np.array([targets.good(t) for t in trained], dtype=np.float64)
        curves[run] = np.maximum.accumulate(goods)
    return curves


# ---------------------------------------------------------------- ageing evolution


@dataclasses.dataclass
class Member:
    arch: object
    text: str
    select: float  # the tournament's accuracy (higher is better)
    score: float | None  # unused: --move orders each tournament by Scores.ordering


@dataclasses.dataclass(frozen=True)
class Evolution:
    """Ageing evolution's settings: `budget` architectures trained per run
    (the first population included), the population and tournament sizes, a
    warm-up (the first population: the best-scored of `warmup` random
    architectures; 0: random) and `move` (the parent is the tournament's best
    score, not its best accuracy)."""

    budget: int
    population: int = 64
    tournament: int = 10
    warmup: int = 0
    move: bool = False


def evolution(space, targets: Targets, scores: Scores | None, plan: Evolution, runs: int = 1, seed: int = 0,
              history: list | None = None) -> np.ndarray:
    """Ageing evolution; best target found so far after each trained
    architecture: array (runs, plan.budget). `history`, if a list, receives per run
    the list of population snapshots (texts) after each step, for tests."""
    budget, population, tournament, warmup, move = plan.budget, plan.population, plan.tournament, plan.warmup, plan.move
    _check_budget(budget, runs)
    if population < 1:
        raise UserError(f"--population must be at least 1, not {population}")
    if not 1 <= tournament <= population:
        raise UserError(f"--tournament must be between 1 and --population ({population}), not {tournament}")
    if population > budget:
        raise UserError(f"--population ({population}) must not exceed --budget ({budget}): the first population "
                        "is trained too")
    if warmup < 0:
        raise UserError(f"--warmup must be at least 0, not {warmup}")
    if 0 < warmup < population:
        raise UserError(f"--warmup ({warmup}) must be at least --population ({population}): the first population "
                        "is the best-scored of the warm-up draws")
    if (warmup or move) and scores is None:
        raise UserError("a warm-up or --move needs scores (a results store)")
    text = _Texts(space)
    curves = np.empty((runs, budget), dtype=np.float64)
    starts = []
    for run in range(runs):
        rng = _rng(seed, run)
        if warmup:
            archs = _draw(space, warmup, rng)
            archs, texts = _distinct(archs, [text(a) for a in archs])
        else:
            archs = _draw(space, population, rng)
            texts = [text(a) for a in archs]
        starts.append((rng, archs, texts))
    if warmup or move:
        scores.ensure([a for _, archs, _ in starts for a in archs], [t for _, _, texts in starts for t in texts])

    def member(arch, t: str) -> Member:
        if move:
            scores.ensure([arch], [t])
        return Member(arch, t, targets.select_good(t), None)

    for run, (rng, archs, texts) in enumerate(starts):
        if warmup:
            order = _by_score(scores.ordering(archs, texts))[:population]
            if len(order) < population:
                raise UserError(f"the warm-up drew only {len(order)} distinct architectures, fewer than --population "
                                f"({population}): raise --warmup")
            archs, texts = [archs[i] for i in order], [texts[i] for i in order]
        pop = collections.deque(member(a, t) for a, t in zip(archs, texts))
        goods = [targets.good(m.text) for m in pop]
        snapshots = [[m.text for m in pop]] if history is not None else None
        while len(goods) < budget:
            picks = np.sort(rng.choice(len(pop), size=tournament, replace=False))
            sample = [pop[i] for i in picks]
            # the last best of the (index-sorted) sample: the reference's sorted(sample, key)[-1]
            if move:  # by score (NaN as 0), or the aggregate over the tournament
                values = scores.ordering([m.arch for m in sample], [m.text for m in sample])
                parent = sample[len(sample) - 1 - int(np.argmax(values[::-1]))]
            else:
                parent = max(reversed(sample), key=lambda m: m.select)
            child = space.mutate(parent.arch, rng)
            child_member = member(child, text(child))
            pop.append(child_member)
            pop.popleft()  # the oldest dies
            goods.append(targets.good(child_member.text))
            if snapshots is not None:
                snapshots.append([m.text for m in pop])
        curves[run] = np.maximum.accumulate(np.array(goods, dtype=np.float64))
        if history is not None:
            history.append(snapshots)
    return curves


def _check_budget(budget: int, runs: int) -> None:
    if budget < 1:
        raise UserError(f"--budget must be at least 1, not {budget}")
    if runs < 1:
        raise UserError(f"--runs must be at least 1, not {runs}")


# ---------------------------------------------------------------- summaries


def summary(values) -> dict:
    """mean, std (population, ddof 0, as numpy's default), median, quartiles of the finite values."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "q25": math.nan, "q75": math.nan,
                "min": math.nan, "max": math.nan}
    return {
        "n": int(len(finite)), "mean": float(finite.mean()), "std": float(finite.std()),
        "median": float(np.median(finite)), "q25": float(np.quantile(finite, 0.25)),
        "q75": float(np.quantile(finite, 0.75)), "min": float(finite.min()), "max": float(finite.max()),
    }


def curve_targets(targets: Targets, curves: np.ndarray) -> np.ndarray:
    """Curves (higher is better internally) in the target's units."""
    out = np.where(np.isfinite(curves), curves, np.nan)
    return -out if targets.lower_is_better else out


def curve_summary(targets: Targets, curves: np.ndarray, checkpoints=(10, 50, 100, 200, 300)) -> dict:
    values = curve_targets(targets, curves)
    budget = values.shape[1]
    marks = sorted({c for c in checkpoints if c <= budget} | {budget})
    return {
        **summary(values[:, -1]),
        "runs": int(values.shape[0]), "budget": budget,
        "at": {str(c): summary(values[:, c - 1]) for c in marks},
    }


# ---------------------------------------------------------------- plots


# ---------------------------------------------------------------- scores from a store, and on demand


def store_scores(rows: list[dict]) -> dict[str, float]:
    """{arch: score} of one config's rows (error rows left out: not results)."""
    return {r["arch"]: (math.nan if r["score"] is None else float(r["score"])) for r in rows if r["error"] is None}


@dataclasses.dataclass
class BenchFiller:
    """Scores missing architectures into the store run.store with
    bench.run_bench, with the weights and settings of the store's config; the
    batch options must give the config's batch (checked by its fingerprint
    before anything is scored)."""

    space: str
    config_row: dict  # one stored row of the config
    batch: BatchOptions  # the batch the store was made with
    execution: ExecutionOptions = BENCH_EXECUTION
    run: RunOptions = RunOptions(workers=1)
    checked: bool = False
    stored: int = 0  # rows of the config in the store, for the messages
    announce: bool = True  # a line on stderr before the first scoring on demand

    def _config(self):
        import json

        settings = json.loads(self.config_row["settings"])
        return (json.loads(self.config_row["weights"]), settings.get("export", {}), settings.get("prepare", {}),
                settings.get("mode", "reference"))

    def __call__(self, archs: list) -> dict[str, float]:
        from epsinas_onnx.core.options import ScoringSettings
        from epsinas_onnx.experiments.bench import run_bench

        weights, export, prepare, mode = self._config()
        prepare = dict(prepare)
        # the model input fed is a batch option, part of the stored key as a prepare setting
        batch = dataclasses.replace(self.batch, input_name=prepare.pop("input_name", None))
        common = dict(export=export, batch=batch, scoring=ScoringSettings(mode=mode, **prepare),
                      execution=self.execution)
        if not self.checked:
            probe = run_bench(self.space, archs[:1], weights, run=dataclasses.replace(self.run, limit=0, progress=False),
                              **common)
            if probe.data != self.config_row["data"]:
                raise UserError(
                    f"{self._missing(archs)}, but the input options give another batch ({probe.data_description}) "
                    f"than the store's ({self.config_row['data_description']}): score them first with `epsinas-onnx "
                    f"bench {self.space}` and the store's options (--all scores the whole space, resumably), or pass "
                    "the --data / --batch-size / --norm / --shuffle-seed / --synthetic the store was made with to "
                    "score them here, or draw fewer (--runs, --n)"
                )
            self.checked = True
        if self.announce:  # never silently (this may be most of the space); once, not for each child of a search
            print(f"{self._missing(archs)}: scoring them into it on the store's batch and settings (Ctrl-C stops; "
                  "a rerun resumes)", file=sys.stderr, flush=True)
            self.announce = False
        run_bench(self.space, archs, weights, run=self.run, **common)
        return self._read(archs)

    def _missing(self, archs: list) -> str:
        """How many architectures the search lacks, against what the store holds."""
        return (f"{len(archs)} architecture(s) the search draws are not in the store {self.run.store} "
                f"(it holds {self.stored} of this config)")

    def _read(self, archs: list) -> dict[str, float]:
        from epsinas_onnx.spaces import get_space

        module = get_space(self.space)
        texts = [module.format_arch(a) for a in archs]
        out: dict[str, float] = {}
        db = sqlite3.connect(self.run.store, timeout=60)
        try:
            for start in range(0, len(texts), 500):
                chunk = texts[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT arch, score, error FROM results WHERE space = ? AND weights = ? AND data = ? "
                    f"AND settings = ? AND arch IN ({marks})",
                    (self.space, self.config_row["weights"], self.config_row["data"], self.config_row["settings"], *chunk),
                )
                for arch, value, error in rows:
                    # an architecture that could not be scored at all ranks as a NaN score
                    out[arch] = math.nan if value is None else float(value)
        finally:
            db.close()
        return out
