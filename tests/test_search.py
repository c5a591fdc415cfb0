"""search: pick one of N, random search, ageing evolution (reference-semantics §9).

The logic is checked on a tiny made-up space whose answers are known, the
command line on hand-made NAS-Bench-201 stores (no scoring), and on-demand
scoring on a two-architecture store at batch 8."""

import json
import math
import sqlite3

import numpy as np
import pytest

from epsinas_onnx.experiments import search
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.experiments.store import ResultStore
from epsinas_onnx.spaces import nb201
from tests.conftest import CIFAR10, packaged_csv, run_cli_in_process
from tests.test_cli_errors import assert_user_error


class TinySpace:
    """Architectures 0..K-1; `mutate` moves to another one and logs the parent."""

    NAME = "tiny"

    def __init__(self, k=40):
        self.k = k
        self.parents = []

    def sample(self, n, seed):
        return [int(i) for i in np.random.default_rng(seed).integers(0, self.k, size=n)]

    def format_arch(self, arch):
        return f"a{arch}"

    def mutate(self, arch, rng):
        self.parents.append(arch)
        return int((arch + 1 + rng.integers(self.k - 1)) % self.k)


def tiny(k=40, score=None, target=None, lower=False):
    space = TinySpace(k)
    target = target or (lambda i: float(i))
    score = score or (lambda i: float(i))
    targets = search.Targets({f"a{i}": target(i) for i in range(k)}, "acc", lower_is_better=lower)
    scores = search.Scores({f"a{i}": score(i) for i in range(k)})
    return space, targets, scores


# ---------------------------------------------------------------- pick one of N


def test_pick_takes_the_best_score_of_each_draw_and_never_a_nan():
    # score falls with the index, NaN for every multiple of 3; target = index
    space, targets, scores = tiny(score=lambda i: math.nan if i % 3 == 0 else 100.0 - i)
    result = search.pick_one_of_n(space, targets, scores, n=7, runs=25, seed=5)
    for run in range(25):
        drawn = space.sample(7, 5 + run)  # run r draws with seed + r
        finite = [i for i in drawn if i % 3]
        expected = min(finite) if finite else math.nan  # best score = smallest index not divisible by 3
        got = result.targets[run]
        assert (math.isnan(got) and math.isnan(expected)) or got == expected
        assert result.picked[run] is None or int(result.picked[run][1:]) % 3 != 0
    # repeatable
    again = search.pick_one_of_n(space, targets, scores, n=7, runs=25, seed=5)
    np.testing.assert_array_equal(again.targets, result.targets)


def test_pick_counts_runs_that_drew_only_nan():
    space, targets, scores = tiny(k=4, score=lambda i: math.nan if i else 1.0)
    result = search.pick_one_of_n(space, targets, scores, n=1, runs=40, seed=0)
    draws = [space.sample(1, r)[0] for r in range(40)]
    assert result.all_nan_runs == sum(d != 0 for d in draws) > 0
    assert np.isnan(result.targets).sum() == result.all_nan_runs
    assert search.summary(result.targets)["n"] == 40 - result.all_nan_runs


def test_missing_score_without_a_filler_is_a_user_error():
    space, targets, _ = tiny()
    with pytest.raises(UserError, match="not in"):
        search.pick_one_of_n(space, targets, search.Scores({"a1": 1.0}), n=5, runs=1)


def test_scores_fill_asks_once_for_the_distinct_missing():
    asked = []

    def fill(archs):
        asked.append(list(archs))
        return {f"a{a}": float(a) for a in archs}

    scores = search.Scores({"a1": 1.0}, fill)
    values = scores.of([1, 2, 2, 3], ["a1", "a2", "a2", "a3"])
    assert asked == [[2, 3]] and scores.filled == 2
    assert values.tolist() == [1.0, 2.0, 2.0, 3.0]


# ---------------------------------------------------------------- random search


def test_random_search_with_warmup_trains_best_scored_first():
    # score = -target: the warm-up trains the worst architectures first
    space, targets, scores = tiny(k=50, score=lambda i: -float(i))
    curves = search.random_search(space, targets, scores, budget=5, warmup=30, runs=3, seed=2)
    for run in range(3):
        rng = np.random.default_rng(2 + run)
        drawn = space.sample(30, int(rng.integers(search.SEED_SPACE)))
        distinct = sorted(set(drawn))  # best score first = smallest index first
        np.testing.assert_array_equal(curves[run], np.maximum.accumulate(distinct[:5]))


def test_plain_random_search_is_a_running_maximum_and_repeatable():
    space, targets, _ = tiny(k=1000)
    curves = search.random_search(space, targets, None, budget=20, runs=4, seed=9)
    assert curves.shape == (4, 20)
    assert np.all(np.diff(curves, axis=1) >= 0)
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(curves[0], np.maximum.accumulate(space.sample(20, int(rng.integers(search.SEED_SPACE)))))
    np.testing.assert_array_equal(curves, search.random_search(space, targets, None, budget=20, runs=4, seed=9))


def test_lower_is_better_targets_are_minimised():
    space, targets, _ = tiny(k=30, lower=True)
    curves = search.random_search(space, targets, None, budget=10, runs=2, seed=0)
    values = search.curve_targets(targets, curves)
    assert np.all(np.diff(values, axis=1) <= 0)  # the best loss so far only falls
    rng = np.random.default_rng(0)
    assert values[0, -1] == min(space.sample(10, int(rng.integers(search.SEED_SPACE))))


# ---------------------------------------------------------------- ageing evolution


def test_evolution_keeps_its_size_and_the_oldest_dies():
    space, targets, scores = tiny(k=200)
    history = []
    curves = search.evolution(space, targets, None, budget=40, population=8, tournament=3, runs=2, seed=1,
                              history=history)
    assert curves.shape == (2, 40)
    for snapshots in history:
        assert len(snapshots) == 40 - 8 + 1  # the first population, then one per child
        for before, after in zip(snapshots, snapshots[1:]):
            assert len(after) == 8
            assert after[:-1] == before[1:]  # oldest out, child in at the young end


def test_evolution_parent_is_the_tournaments_best_accuracy_or_with_move_best_score():
    # tournament = population: the parent is the population's best
    score = lambda i: float((i * 7) % 13)  # unrelated to the target
    for move in (False, True):
        space, targets, scores = tiny(k=60, score=score)
        history = []
        search.evolution(space, targets, scores, budget=20, population=5, tournament=5, move=move, runs=1,
                         seed=3, history=history)
        key = (lambda t: score(int(t[1:]))) if move else (lambda t: float(t[1:]))
        for parent, before in zip(space.parents, history[0]):
            best = max(key(t) for t in before)
            assert key(f"a{parent}") == best


def test_evolution_warmup_starts_from_the_best_scored():
    space, targets, scores = tiny(k=100, score=lambda i: float((i * 37) % 100))
    history = []
    search.evolution(space, targets, scores, budget=12, population=6, tournament=2, warmup=40, runs=1, seed=4,
                     history=history)
    rng = np.random.default_rng(4)
    drawn = list(dict.fromkeys(space.sample(40, int(rng.integers(search.SEED_SPACE)))))
    top = sorted(drawn, key=lambda i: -((i * 37) % 100))[:6]
    assert history[0][0] == [f"a{i}" for i in top]


def test_evolution_is_repeatable_and_seed_dependent():
    space, targets, scores = tiny(k=500)
    a = search.evolution(space, targets, None, budget=30, population=6, tournament=3, runs=3, seed=0)
    b = search.evolution(space, targets, None, budget=30, population=6, tournament=3, runs=3, seed=0)
    c = search.evolution(space, targets, None, budget=30, population=6, tournament=3, runs=3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_nan_scores_count_as_zero():
    space, targets, scores = tiny(k=10, score=lambda i: math.nan if i == 9 else -1.0 * i)
    # 9 has the best target but a NaN score: 0 still beats every negative score
    assert scores.of([9, 1], ["a9", "a1"]).tolist() == [0.0, -1.0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=10, population=5, tournament=6), "--tournament"),
    (dict(budget=4, population=5, tournament=2), "--population (5) must not exceed --budget"),
    (dict(budget=10, population=5, tournament=2, warmup=3), "--warmup (3) must be at least --population"),
    (dict(budget=0, population=5, tournament=2), "--budget"),
])
def test_evolution_bad_arguments(kwargs, message):
    space, targets, scores = tiny()
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search.evolution(space, targets, scores, **kwargs)


def test_unknown_target_is_a_user_error():
    space = TinySpace(10)
    targets = search.Targets({"a0": 1.0}, "acc", source="t.csv")
    with pytest.raises(UserError, match="has no 'acc' in t.csv"):
        search.random_search(space, targets, None, budget=5, runs=1)


# ---------------------------------------------------------------- the command line, on hand-made stores


ACCURACIES = None


@pytest.fixture(scope="module")
def accuracies_csv(tmp_path_factory):
    """The development data's nb201/accuracies.csv, from the table packaged with epsinas-onnx."""
    return packaged_csv("nb201_accuracies", tmp_path_factory.mktemp("nb201") / "accuracies.csv")


def nb201_accuracies(path):
    with open(path) as f:
        import csv

        return {nb201.format_arch(nb201.parse(r["arch"])): float(r["cifar10"]) for r in csv.DictReader(f)}


def handmade_store(path, scores: dict):
    with ResultStore(path) as store:
        for arch, value in scores.items():
            store.add({"space": "nb201", "arch": arch, "weights": "[1e-07, 1.0]", "data": "handmade", "settings": "{}",
                       "score": value, "nan_reason": "made up" if math.isnan(value) else None,
                       "data_description": "hand-made scores"})
        store.commit()


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory, accuracies_csv):
    """Every NAS-Bench-201 architecture, score = its CIFAR-10 accuracy, NaN where it is below 80."""
    acc = nb201_accuracies(accuracies_csv)
    path = tmp_path_factory.mktemp("search") / "oracle.sqlite"
    handmade_store(path, {a: (v if v >= 80 else math.nan) for a, v in acc.items()})
    return path, acc


def search_cli(*args):
    return run_cli_in_process("search", *args, "--format", "json")


def test_cli_pick_finds_the_best_accuracy_of_each_draw(oracle_store, accuracies_csv):
    path, acc = oracle_store
    result = search_cli("pick", "--store", path, "--accuracies", accuracies_csv,
                        "--n", 20, "--runs", 30, "--seed", 7)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = []
    for run in range(30):
        drawn = [acc[nb201.format_arch(a)] for a in nb201.sample(20, 7 + run)]
        finite = [v for v in drawn if v >= 80]
        if finite:
            expected.append(max(finite))
    assert out["n"] == len(expected) and out["all_nan_runs"] == 30 - len(expected)
    assert out["mean"] == pytest.approx(np.mean(expected)) and out["std"] == pytest.approx(np.std(expected))
    assert out["config"]["rows"] == len(acc) and out["scored_on_demand"] == 0


def test_cli_curves_all_variants_and_plot(oracle_store, accuracies_csv, tmp_path):
    path, acc = oracle_store
    plot = tmp_path / "fig.png"
    result = search_cli("curves", "--store", path, "--accuracies", accuracies_csv,
                        "--warmup", 200, "--budget", 30, "--population", 8, "--tournament", 3, "--runs", 5,
                        "--plot", plot)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["variants"]) == {"random", "random+warmup", "evolution", "evolution+warmup", "evolution+move",
                                    "evolution+warmup+move"}
    for variant in out["variants"].values():
        assert variant["runs"] == 5 and variant["budget"] == 30
        assert variant["at"]["10"]["mean"] <= variant["at"]["30"]["mean"] <= max(acc.values())
    # with the oracle score the warm-up trains the best of its 200 draws first
    assert out["variants"]["random+warmup"]["at"]["10"]["mean"] > out["variants"]["random"]["at"]["10"]["mean"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_cli_plain_search_needs_no_store(accuracies_csv, tmp_path):
    result = search_cli("random", "--space", "nb201", "--accuracies", accuracies_csv,
                        "--budget", 10, "--runs", 3, "--store", tmp_path / "absent.sqlite")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["variant"] == "random" and out["runs"] == 3 and "config" not in out


def test_cli_scores_missing_architectures_on_demand(tmp_path, accuracies_csv):
    store = tmp_path / "s.sqlite"
    acc = accuracies_csv
    made = run_cli_in_process("bench", "nb201", "--sample", 2, "--seed", 0, "--batch-size", 8, "--data", CIFAR10,
                              "--store", store, "--no-progress")
    assert made.returncode == 0, made.stderr
    # another batch than the store's: refused before anything is scored
    wrong = run_cli_in_process("search", "pick", "--store", store, "--accuracies", acc, "--n", 2, "--runs", 2,
                               "--data", CIFAR10, "--batch-size", 16, "--no-progress")
    assert_user_error(wrong, "another batch")
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    good = search_cli("pick", "--store", store, "--accuracies", acc, "--n", 2, "--runs", 2,
                      "--data", CIFAR10, "--batch-size", 8, "--no-progress")
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    drawn = {nb201.format_arch(a) for r in range(2) for a in nb201.sample(2, r)}
    with sqlite3.connect(store) as db:
        stored = {r[0] for r in db.execute("SELECT arch FROM results")}
        configs = db.execute("SELECT COUNT(DISTINCT weights || data || settings) FROM results").fetchone()[0]
    assert drawn <= stored and configs == 1  # scored under the store's own key
    assert out["scored_on_demand"] == len(drawn - {nb201.format_arch(a) for a in nb201.sample(2, 0)})


@pytest.mark.parametrize("args, fragments", [
    (("pick", "--store", "ABSENT.sqlite"), ("results store not found",)),
    (("random", "--space", "nb999"), ("nb999",)),
    (("random", "--store", "STORE", "--warmup", 100, "--budget", 300), ("--warmup (100) must be at least --budget (300)",)),
    (("evolution", "--store", "STORE", "--population", 8, "--tournament", 9, "--budget", 20), ("--tournament",)),
    (("curves", "--store", "STORE", "--variants", "random,hillclimb"), ("unknown variant", "hillclimb")),
    (("pick", "--store", "STORE", "--n", 0), ("--n must be at least 1",)),
    (("random", "--budget", 5), ("give --space",)),
    (("pick", "--store", "STORE", "--plot", "fig.txt"), ("name it .png",)),
])
def test_cli_bad_input(args, fragments, oracle_store, accuracies_csv, tmp_path):
    path, _ = oracle_store
    args = [str(path) if a == "STORE" else str(tmp_path / a) if a == "ABSENT.sqlite" else a for a in args]
    result = run_cli_in_process("search", *args, "--accuracies", accuracies_csv)
    assert_user_error(result, *fragments)
