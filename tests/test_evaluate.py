"""evaluate: the §8 statistics, NaN handling, joins with the shared tables, the plot."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from epsinas_onnx.cli import main
from epsinas_onnx.experiments.evaluation import statistics
from epsinas_onnx.experiments.plots import score_vs_target
from epsinas_onnx.experiments.store import ResultStore, settings_key, weights_key
from tests.conftest import ROOT, SHARED_DATA, packaged_csv, run_cli_in_process
from tests.test_cli_errors import assert_user_error

NB201 = SHARED_DATA / "nb201"


# ---------------------------------------------------------------- statistics


def test_hand_computed_case():
    # ranks d = 0, -1, 1, -1, 1: rho = 1 - 6 * 4 / (5 * 24) = 0.8; 8 concordant, 2 discordant pairs: tau = 0.6
    result = statistics([1, 2, 3, 4, 5], [1, 3, 2, 5, 4])
    assert result["n"] == 5 and result["nan_dropped"] == 0
    assert result["spearman"] == pytest.approx(0.8)
    assert result["kendall"] == pytest.approx(0.6)
    # P90 of both = 4.6: the best target (5) has score 4, the best score (5) has target 4
    assert result["top10_top10"] == 0.0
    # the 64 best-scored are all 5; P95(target) = 4.8: one of them is above
    assert (result["top64_top5"], result["n_top64"]) == (1, 5)
    assert result["n_top10"] == 1 and math.isnan(result["spearman_top10"])  # one point: undefined


def test_nan_dropped_or_ranked_last_hand_computed():
    score, target = [1, 2, math.nan, 4], [1, 2, 3, 4]
    dropped = statistics(score, target)
    assert (dropped["n"], dropped["nan_dropped"]) == (3, 1)
    assert dropped["spearman"] == pytest.approx(1.0) and dropped["kendall"] == pytest.approx(1.0)
    # NaN last: score ranks 2, 3, 1, 4: d^2 = 1 + 1 + 4 + 0 = 6, rho = 1 - 36 / 60 = 0.4;
    # 4 concordant, 2 discordant pairs (the NaN against the two below it): tau = 2 / 6
    last = statistics(score, target, nan="last")
    assert (last["n"], last["nan_last"], last["nan_dropped"]) == (4, 1, 0)
    assert last["spearman"] == pytest.approx(0.4)
    assert last["kendall"] == pytest.approx(1 / 3)
    # a NaN target is never used, whatever the score
    assert statistics([1, 2, 3], [1, math.nan, 3])["no_target"] == 1


def test_top_statistics_follow_their_definitions():
    rng = np.random.default_rng(0)
    target = rng.normal(size=300)
    score = target + rng.normal(size=300)
    score[rng.choice(300, 40, replace=False)] = np.nan
    result = statistics(score, target)
    keep = ~np.isnan(score)
    s, t = score[keep], target[keep]
    assert result["n"] == 260 and result["nan_dropped"] == 40
    assert result["spearman"] == pytest.approx(scipy_stats.spearmanr(s, t).statistic)
    assert result["kendall"] == pytest.approx(scipy_stats.kendalltau(s, t).statistic)
    top = t > np.percentile(t, 90)
    assert result["n_top10"] == top.sum() == 26
    assert result["spearman_top10"] == pytest.approx(scipy_stats.spearmanr(s[top], t[top]).statistic)
    assert result["kendall_top10"] == pytest.approx(scipy_stats.kendalltau(s[top], t[top]).statistic)
    best = s > np.percentile(s, 90)
    assert result["top10_top10"] == pytest.approx(100 * (best & top).sum() / best.sum())
    top64 = np.argsort(-s)[:64]
    assert result["top64_top5"] == (t[top64] > np.percentile(t, 95)).sum()

    # a loss: the same ranking mirrored; correlations change sign, "top" is the lowest loss
    loss = statistics(score, -target, lower_is_better=True)
    assert loss["spearman"] == pytest.approx(-result["spearman"])
    assert loss["kendall_top10"] == pytest.approx(-result["kendall_top10"])
    for key in ("top10_top10", "top64_top5", "n_top10"):
        assert loss[key] == result[key]


# ---------------------------------------------------------------- a synthetic store against the shared tables


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _store(path, archs, scores, *, weights=(1e-7, 1.0), error_arch=None):
    key = {"space": "nb201", "weights": weights_key(weights), "data": "f" * 16,
           "settings": settings_key({"export": {}, "prepare": {"bn_gamma": "w"}})}
    with ResultStore(path) as db:
        for arch, value in zip(archs, scores):
            db.add({**key, "arch": arch, "score": value, "nan_reason": "constant output" if math.isnan(value) else None,
                    "params": 1000 + len(arch), "seconds": 0.1, "data_description": "test batch"})
        if error_arch is not None:
            db.add({**key, "arch": error_arch, "score": None, "error": "RuntimeError: boom", "seconds": 0.1})
        db.commit()


@pytest.fixture(scope="module")
def nb201_files(tmp_path_factory):
    """The development data's nb201/accuracies.csv and baselines.csv, from the tables packaged with epsinas-onnx."""
    folder = tmp_path_factory.mktemp("nb201")
    return (packaged_csv("nb201_accuracies", folder / "accuracies.csv"),
            packaged_csv("nb201_baselines", folder / "baselines.csv"))


@pytest.fixture(scope="module")
def nb201_tables(nb201_files):
    accuracies, baselines = nb201_files
    return _read(accuracies)[:60], _read(baselines)[:60]


def test_evaluate_against_scipy_with_baselines_and_plot(tmp_path, nb201_files, nb201_tables):
    accuracies, baselines = nb201_tables
    archs = [r["arch"] for r in accuracies[:50]]
    acc = np.array([float(r["cifar100"]) for r in accuracies[:50]])
    rng = np.random.default_rng(1)
    scores = acc + rng.normal(0, 5, size=50)
    scores[[3, 17, 31]] = np.nan
    store = tmp_path / "r.sqlite"
    _store(store, archs, scores, error_arch=accuracies[55]["arch"])
    figure = tmp_path / "fig.png"

    result = run_cli_in_process("evaluate", "--store", store, "--accuracies", nb201_files[0], "--dataset", "cifar100",
                                "--baselines", nb201_files[1], "--plot", figure, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == "cifar100"
    assert report["counts"]["stored"] == 51 and report["counts"]["errors"] == 1 and report["counts"]["compared"] == 50
    rows = {r["proxy"]: r for r in report["rows"]}
    assert set(rows) == {"epsinas", "epsinas (NaN last)", "params", "naswot_cifar10", "zen_cifar100"}

    keep = ~np.isnan(scores)
    eps = rows["epsinas"]
    assert (eps["n"], eps["nan_dropped"]) == (47, 3)
    assert eps["spearman"] == pytest.approx(scipy_stats.spearmanr(scores[keep], acc[keep]).statistic)
    assert eps["kendall"] == pytest.approx(scipy_stats.kendalltau(scores[keep], acc[keep]).statistic)
    last = rows["epsinas (NaN last)"]
    ranked = np.where(keep, scores, -np.inf)
    assert (last["n"], last["nan_last"]) == (50, 3)
    assert last["spearman"] == pytest.approx(scipy_stats.spearmanr(ranked, acc).statistic)

    # the baselines on the same 50 architectures; NASWOT's empty cells and Zen's -1e8 are NaN
    naswot = np.array([float(r["naswot_cifar10"] or "nan") for r in baselines[:50]])
    zen = np.array([float(r["zen_cifar100"]) for r in baselines[:50]])
    zen[zen <= -1e8] = np.nan
    for name, values in (("naswot_cifar10", naswot), ("zen_cifar100", zen)):
        ok = ~np.isnan(values)
        assert rows[name]["n"] == ok.sum() and rows[name]["nan_dropped"] == (~ok).sum()
        assert rows[name]["spearman"] == pytest.approx(scipy_stats.spearmanr(values[ok], acc[ok]).statistic)
    assert rows["naswot_cifar10"]["nan_dropped"] > 0 and rows["zen_cifar100"]["nan_dropped"] > 0  # the first 50 have both

    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_proxies_get_rows_on_their_subset_and_epsinas_keeps_every_architecture(tmp_path, shared_data, capsys):
    proxies = [r for r in _read(NB201 / "proxies_subset.csv") if r["dataset"] == "cifar10"]
    covered = [r["arch_str"] for r in proxies[:20]]
    accuracies = {r["arch"]: r for r in _read(NB201 / "accuracies.csv")}
    outside = next(a for a in accuracies if a not in {r["arch_str"] for r in proxies})
    archs = covered + [outside]
    acc = np.array([float(accuracies[a]["cifar10"]) for a in covered])
    store = tmp_path / "r.sqlite"
    _store(store, archs, [float(accuracies[a]["cifar10"]) for a in archs])

    code = main(["evaluate", "--store", str(store), "--accuracies", str(NB201 / "accuracies.csv"),
                 "--proxies", str(NB201 / "proxies_subset.csv"), "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["not_in_proxies"] == 1 and report["counts"]["in_proxies"] == 20
    assert report["counts"]["compared"] == 21
    rows = {r["proxy"]: r for r in report["rows"]}
    assert rows["epsinas"]["n"] == 21 and rows["epsinas"]["spearman"] == pytest.approx(1.0)  # score = accuracy here
    subset = rows["epsinas (proxies' subset)"]  # epsinas on the proxies' architectures, for a like-for-like row
    assert subset["n"] == 20 and subset["spearman"] == pytest.approx(1.0)
    synflow = np.array([float(r["synflow"]) for r in proxies[:20]])
    assert rows["zc.synflow"]["n"] == 20
    assert rows["zc.synflow"]["spearman"] == pytest.approx(scipy_stats.spearmanr(synflow, acc).statistic)
    assert "zc.naslib_val_accuracy" not in rows  # an accuracy, not a proxy


def test_generic_columns_configs_and_bad_input(tmp_path, nb201_tables, capsys):
    accuracies, _ = nb201_tables
    archs = [r["arch"] for r in accuracies[:10]]
    table = tmp_path / "mine.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "loss"])
        for i, arch in enumerate(archs):
            writer.writerow([arch, 10 - i])
    store = tmp_path / "r.sqlite"
    _store(store, archs, [float(i) for i in range(10)])

    args = ["evaluate", "--store", str(store), "--accuracies", str(table), "--arch-column", "name",
            "--target-column", "loss", "--format", "json"]
    assert main(args + ["--lower-is-better"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"][0]["spearman"] == pytest.approx(-1.0) and report["lower_is_better"] is True
    assert report["rows"][0]["top64_top5"] == 1  # the best score has the lowest loss

    # a second config in the store: evaluate asks which one
    _store(store, archs, [float(-i) for i in range(10)], weights=(1e-4, 10))
    assert main(args) == 1
    assert "pick one with --config" in capsys.readouterr().err
    with ResultStore(store) as db:
        ids = {json.loads(r["weights"])[0]: r["config"] for r in db.rows()}
    assert main(args + ["--config", ids[1e-4]]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["spearman"] == pytest.approx(1.0)

    assert_user_error(
        run_cli_in_process("evaluate", "--store", store, "--config", ids[1e-4], "--accuracies", table, "--arch-column", "name",
                           "--target-column", "acc"),
        "no column 'acc'",
    )
    assert_user_error(run_cli_in_process("evaluate", "--store", tmp_path / "absent.sqlite", "--accuracies", table),
                      "results store not found")


def test_plot_is_never_half_written(tmp_path, monkeypatch):
    import matplotlib.figure

    report = {
        "space": "nb201", "dataset": "cifar10", "target": "cifar10", "lower_is_better": False,
        "rows": [statistics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])],
        "points": {"score": [1.0, 2.0, 3.0], "target": [1.0, 3.0, 2.0], "params": [1e5, 2e5, 4e6]},
    }
    target = tmp_path / "fig.png"
    target.write_bytes(b"the previous figure")

    def broken(self, f, **kw):  # the atomic writer passes an open file
        f.write(b"\x89PNG half")
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        score_vs_target(report, target)
    assert target.read_bytes() == b"the previous figure"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]  # no temporary left

    monkeypatch.undo()
    score_vs_target(report, tmp_path / "ok.svg")
    assert b"<svg" in (tmp_path / "ok.svg").read_bytes()[:500]
    with pytest.raises(Exception, match="name it .png"):
        score_vs_target(report, tmp_path / "fig.xyz")
    assert not (tmp_path / "fig.xyz").exists()


def test_missing_eval_extra_is_one_line(tmp_path):
    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['scipy.stats'] = None\n"
        "from epsinas_onnx.cli import main\n"
        f"sys.exit(main(['evaluate', '--store', {str(tmp_path / 'r.sqlite')!r}, '--accuracies', 'x.csv']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_user_error(result, 'pip install "epsinas-onnx[eval]"')
