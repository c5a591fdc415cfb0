"""The outputs issue 26 found misleading, each fixed and held here, on data a
fresh clone has (the packaged tables and models/; no ../shared):
evaluate keeps each row's own architectures and cautions on few, a ranking
names the mode and the pair of every row and never ranks rounding first."""

import json
import math

import numpy as np
import pytest

from epsinas_onnx.cli import main
from epsinas_onnx.core.tables import packaged
from epsinas_onnx.experiments.store import ResultStore, settings_key, weights_key
from epsinas_onnx.spaces import nb201
from tests.conftest import ROOT

MODELS = ROOT / "models"


def nb201_store(path, n=200, seed=0, modes=("reference",)):
    """A store of `n` sampled NAS-Bench-201 architectures whose score is their
    CIFAR-10 accuracy plus noise, NaN for every 7th (the packaged table's
    accuracies: no benchmark run needed to test what evaluate does with rows)."""
    accuracy = {r["arch"]: float(r["cifar10"]) for r in packaged("nb201_accuracies").rows}
    archs = sorted({nb201.format_arch(a) for a in nb201.sample(n, seed)})
    rng = np.random.default_rng(seed)
    scores = {a: accuracy[a] + rng.normal(0, 3) for a in archs}
    for a in archs[::7]:
        scores[a] = math.nan
    with ResultStore(path) as db:
        for mode in modes:
            settings = {"export": {}, "prepare": {"bn_gamma": "w"}, **({"mode": mode} if mode != "reference" else {})}
            key = {"space": "nb201", "weights": weights_key((1e-7, 1.0)), "data": "f" * 16,
                   "settings": settings_key(settings)}
            for arch in archs:
                value = scores[arch] + (0.5 if mode != "reference" else 0.0)
                db.add({**key, "arch": arch, "score": value, "params": 1000 + len(arch), "seconds": 0.1,
                        "nan_reason": "constant output" if math.isnan(value) else None, "data_description": "test batch"})
        db.commit()
    return archs, scores


def evaluate_json(capsys, *args):
    code = main(["evaluate", *map(str, args), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out), captured.err


def test_evaluate_with_proxies_keeps_epsinas_on_every_architecture(tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    archs, scores = nb201_store(store)
    finite = sum(math.isfinite(v) for v in scores.values())
    report, err = evaluate_json(capsys, "--store", store, "--baselines", "--proxies")
    rows = {r["proxy"]: r for r in report["rows"]}
    # epsinas, params and the whole-space baselines keep their own n
    assert rows["epsinas"]["n"] == finite and rows["epsinas"]["nan_dropped"] == len(archs) - finite
    assert rows["epsinas (NaN last)"]["n"] == len(archs) == report["counts"]["compared"]
    assert rows["params"]["n"] == len(archs)
    assert rows["naswot_cifar10"]["n"] + rows["naswot_cifar10"]["nan_dropped"] == len(archs)
    # the proxies' rows on the subset their table covers, epsinas beside them on the same architectures
    covered = report["counts"]["in_proxies"]
    assert 0 < covered < 30 and report["counts"]["not_in_proxies"] == len(archs) - covered
    assert rows["zc.synflow"]["n"] + rows["zc.synflow"]["nan_dropped"] == covered
    subset = rows["epsinas (proxies' subset)"]
    assert subset["n"] + subset["nan_dropped"] == covered
    assert "epsinas (baselines' subset)" not in rows  # the baselines cover the whole space
    # the plot's points are every epsinas architecture
    assert "fewer than 30 architectures" in err and "zc.synflow" in err and err.count("\n") == 1
    assert "epsinas " + str(finite) not in err


def test_evaluate_plot_has_every_point_and_mode_picks_one(tmp_path, capsys):
    from epsinas_onnx.experiments import evaluation
    from epsinas_onnx.experiments.selection import rows_by_mode, space_rows

    store = tmp_path / "r.sqlite"
    archs, scores = nb201_store(store, n=60, modes=("reference", "upper"))
    report, _ = evaluate_json(capsys, "--store", store)
    assert {r["proxy"] for r in report["rows"]} >= {"epsinas", "epsinas [upper]"}
    report, _ = evaluate_json(capsys, "--store", store, "--mode", "upper")
    names = [r["proxy"] for r in report["rows"]]
    assert names[:2] == ["epsinas [upper]", "epsinas [upper] (NaN last)"] and "epsinas" not in names
    assert report["mode"] == "upper"
    assert main(["evaluate", "--store", str(store), "--mode", "ladder"]) == 1
    assert "no rows in --mode ladder" in capsys.readouterr().err
    # the plotted points: every architecture with a target, NaN scores included (drawn apart)
    _, rows = space_rows(store, None)
    chosen, _ = rows_by_mode(rows, None, "upper")
    full = evaluation.evaluate(chosen, "nb201", packaged("nb201_accuracies"), proxies=packaged("nb201_proxies"),
                               mode="upper")
    assert len(full["points"]["score"]) == len(archs)


def test_evaluate_top64_reads_as_ablate_does(tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    nb201_store(store, n=100)
    assert main(["evaluate", "--store", str(store)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[1].split()
    column = header.index("top64_top5")
    hits, looked_at = out[2].split()[column].split("/")
    assert int(hits) >= 0 and looked_at == "64"


# ---------------------------------------------------------------- ranking


def test_ranked_rows_name_mode_and_pair_and_rounding_does_not_win(capsys):
    models = [MODELS / "keras2_cnn.onnx", MODELS / "nb201_cifar10_best.onnx", MODELS / "tiny_resnet.onnx"]
    code = main(["score", *map(str, models), "--mode", "upper", "--batch-size", "16", "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads(captured.out)
    assert all("mode" in r and "scored_weights" in r for r in rows)
    assert all(r["mode"] == "upper" for r in rows)
    assert rows[0]["model"] != str(models[0])
    keras = next(r for r in rows if r["model"] == str(models[0]))
    # no BatchNorm eps separates its outputs at 1 and 10: u is float32 rounding, flagged with its reason
    assert keras["score"] is None and keras["rank"] is None and keras["scored_weights"] is None
    assert "no more than float32 rounding" in keras["nan_reason"]
    for row in rows:
        if row["score"] is not None:
            assert row["scored_weights"] == [1e-7, 1.0] and row["rank"] is not None
    for fmt in ("table", "csv"):
        assert main(["score", *map(str, models), "--batch-size", "16", "--format", fmt]) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert "mode" in header and "scored_weights" in header


def test_a_third_weight_is_not_read_as_a_model(capsys):
    model = str(MODELS / "nb201_cifar10_best.onnx")
    assert main(["score", model, "--weights", "1e-7", "1", "10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MODEL '10' is a number, not a file" in err and "--weights takes exactly two" in err


def test_rewrite_explain_puts_its_summary_first_and_groups_the_tensors(capsys):
    model = str(MODELS / "nb201_cifar10_best.onnx")
    assert main(["rewrite", model, "--explain"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("channel collapse:") and "channel collapse" not in captured.err
    header, *roles = lines[1:]
    assert header.split() == ["role", "tensors", "read", "by", "first"]
    counts = {line.split()[0]: int(line.split()[1]) for line in roles}
    assert main(["rewrite", model, "--explain", "--tensors", "--format", "json"]) == 0
    tensors = json.loads(capsys.readouterr().out)
    assert sum(counts.values()) == len(tensors) and len(lines) < 12 < len(tensors)
    assert {role: sum(t["role"] == role for t in tensors) for role in counts} == counts
    assert main(["rewrite", model, "--tensors"]) == 1 and "--tensors goes with --explain" in capsys.readouterr().err


def test_search_says_what_it_scores_on_demand_and_how_to_avoid_it(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert main(["bench", "nb201", "--sample", "2", "--seed", "0", "--batch-size", "8", "--store", str(store),
                 "--no-progress"]) == 0
    capsys.readouterr()
    pick = ["search", "pick", "--store", str(store), "--n", "3", "--runs", "2", "--no-progress", "--format", "json"]
    assert main(pick + ["--batch-size", "16"]) == 1  # another batch than the store's: nothing scored
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the store" in err and "(it holds 2 of this config)" in err
    assert "epsinas-onnx bench nb201" in err and "--runs, --n" in err
    assert main(pick + ["--batch-size", "8"]) == 0  # the store's batch: scored into it, never silently
    captured = capsys.readouterr()
    notices = [line for line in captured.err.splitlines() if "not in the store" in line]
    assert len(notices) == 1 and "scoring them into it" in notices[0]
    assert json.loads(captured.out)["scored_on_demand"] > 0
