"""The benchmark tables shipped in the package: built from the data folder by
tools/build_tables.py, read by benchmark_tables, used by evaluate and search
when no --accuracies is given, with the same results as the source files."""

import ast
import csv
import json
import math

import numpy as np

from epsinas_onnx.core import tables
from epsinas_onnx.experiments.store import ResultStore, settings_key, weights_key
from epsinas_onnx.spaces import get_space
from tests.conftest import ROOT, run_cli_in_process
from tests.test_cli_errors import assert_user_error
from tools.build_tables import TABLES, build

DATA = ROOT / "epsinas_onnx" / "data"
SOURCES = {name: source for name, (source, *_rest) in TABLES.items()}


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _store(path, space, archs, scores):
    """A results store with one row per architecture (format_arch text) and a given score."""
    key = {"space": space, "weights": weights_key((1e-7, 1.0)), "data": "f" * 16,
           "settings": settings_key({"export": {}, "prepare": {"bn_gamma": "w"}})}
    with ResultStore(path) as db:
        for arch, value in zip(archs, scores):
            db.add({**key, "arch": arch, "score": value, "nan_reason": "constant output" if math.isnan(value) else None,
                    "params": 1000 + len(arch), "seconds": 0.1, "data_description": "test batch"})
        db.commit()


def test_the_build_script_rebuilds_the_committed_tables_byte_for_byte(shared_data, tmp_path):
    build(shared_data, tmp_path)
    for name in SOURCES:
        assert (tmp_path / f"{name}.csv.gz").read_bytes() == (DATA / f"{name}.csv.gz").read_bytes(), name
    assert (tmp_path / "PROVENANCE.md").read_text() == (DATA / "PROVENANCE.md").read_text()


def test_every_packaged_value_is_the_source_text(shared_data):
    assert tables.packaged_names() == sorted(SOURCES)
    for name, source in SOURCES.items():
        table = tables.packaged(name)
        rows = _read(shared_data / source)
        assert len(table.rows) == len(rows), name
        for mine, theirs in zip(table.rows, rows):
            assert mine == {c: theirs[c] for c in table.columns}, name


def test_the_tables_are_small_and_their_provenance_names_each_source_and_licence():
    sizes = {p.name: p.stat().st_size for p in DATA.glob("*.csv.gz")}
    assert sum(sizes.values()) < 3_000_000, sizes
    provenance = (DATA / "PROVENANCE.md").read_text()
    for name in SOURCES:
        assert f"## {name}.csv.gz" in provenance
    for source in ("v-tao/nats-bench-landscape", "BayesWatch/nas-without-training", "automl/NASLib",
                   "akashjorss/NAS_Search_using_NASBench-101", "fmsnew/nas-bench-nlp-release"):
        assert source in provenance
    assert provenance.count("Apache-2.0") >= 4 and "MIT" in provenance
    assert provenance.count("states no licence") == 2  # nats-bench-landscape, akashjorss: as the data README says


def test_the_loader_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "epsinas_onnx" / "core" / "tables.py").read_text())
    top = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    assert top <= {"__future__", "csv", "dataclasses", "gzip", "io", "importlib", "math", "pathlib", "epsinas_onnx"}, top


def test_pyproject_ships_the_tables_as_package_data():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["epsinas_onnx"]
    assert "data/*.csv.gz" in globs and "data/PROVENANCE.md" in globs


def cli_json(capsys, *args) -> dict:
    """The command's json output, run in this process (as run_cli, without a new interpreter per call)."""
    from epsinas_onnx.cli import main

    capsys.readouterr()
    code = main([str(a) for a in (*args, "--format", "json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _evaluate_json(capsys, *args):
    out = cli_json(capsys, "evaluate", *args)
    return out.pop("targets_from"), out


def test_evaluate_nb201_by_default_equals_the_source_files(shared_data, tmp_path, capsys):
    rows = _read(shared_data / "nb201" / "accuracies.csv")
    picked = np.random.default_rng(0).choice(len(rows), 300, replace=False)
    archs = [rows[i]["arch"] for i in picked]
    scores = [float(rows[i]["cifar100"]) + np.random.default_rng(i).normal(0, 3) for i in picked]
    store = tmp_path / "s.sqlite"
    _store(store, "nb201", archs, scores)
    nb201 = shared_data / "nb201"
    source, packaged = _evaluate_json(capsys, "--store", store, "--dataset", "cifar100", "--baselines", "--proxies")
    assert source == "the packaged table nb201_accuracies"
    given, by_file = _evaluate_json(capsys, "--store", store, "--dataset", "cifar100", "--accuracies", nb201 / "accuracies.csv",
                                    "--baselines", nb201 / "baselines.csv", "--proxies", nb201 / "proxies_subset.csv")
    assert given == str(nb201 / "accuracies.csv")
    assert packaged == by_file
    names = [r["proxy"] for r in packaged["rows"]]
    assert "naswot_cifar10" in names and "zen_cifar100" in names and "zc.synflow" in names
    n_of = {r["proxy"]: r["n"] for r in packaged["rows"]}
    assert n_of["epsinas"] == 300  # each row on the architectures it covers:
    assert 0 < n_of["zc.synflow"] < 300  # the subset proxies on their subset
    _, same = _evaluate_json(capsys, "--store", store, "--dataset", "cifar100", "--baselines", "packaged")
    assert [r["proxy"] for r in same["rows"]][3:] == ["naswot_cifar10", "zen_cifar100"]


def test_evaluate_nb101_takes_the_packaged_table_that_holds_the_cells(shared_data, tmp_path, capsys):
    nb101 = get_space("nb101")
    test_143 = _read(shared_data / "nb101" / "test_143.csv")
    naslib = _read(shared_data / "nb101" / "naslib_500.csv")
    for rows, text, target, name in [
        (test_143, lambda r: r["cell"], "cifar_acc_108", "nb101_test_143"),
        (naslib, lambda r: f"{r['adjacency']} {r['ops']}", "val_accuracy", "nb101_naslib_500"),
    ]:
        archs = [nb101.format_arch(nb101.parse(text(r))) for r in rows[:80]]
        store = tmp_path / f"{name}.sqlite"
        _store(store, "nb101", archs, [float(r[target]) + i % 7 * 0.01 for i, r in enumerate(rows[:80])])
        source, out = _evaluate_json(capsys, "--store", store)
        assert (source, out["target"]) == (f"the packaged table {name}", target)
        assert out["counts"]["compared"] == 80
    # naslib_500's proxies are the packaged nb101 baselines
    source, out = _evaluate_json(capsys, "--store", tmp_path / "nb101_naslib_500.sqlite", "--baselines")
    assert {"synflow", "jacov", "snip"} <= {r["proxy"] for r in out["rows"]}
    _, by_file = _evaluate_json(capsys, "--store", tmp_path / "nb101_naslib_500.sqlite", "--accuracies",
                                shared_data / "nb101" / "naslib_500.csv", "--baselines",
                                shared_data / "nb101" / "naslib_500.csv")
    assert out == by_file


def test_evaluate_nlp_by_default_and_no_packaged_nlp_baselines(shared_data, tmp_path, capsys):
    nlp = get_space("nlp")
    rows = _read(shared_data / "nlp" / "wt2_summary.csv")[:60]
    store = tmp_path / "s.sqlite"
    _store(store, "nlp", [nlp.format_arch(nlp.parse(r["recepie"])) for r in rows],
           [-(float(r["final_test_loss"] or "nan")) + i % 5 * 0.01 for i, r in enumerate(rows)])
    source, out = _evaluate_json(capsys, "--store", store)
    _, by_file = _evaluate_json(capsys, "--store", store, "--accuracies", shared_data / "nlp" / "wt2_summary.csv")
    assert source == "the packaged table nlp_wt2_summary" and out == by_file
    assert out["target"] == "final_test_loss" and out["lower_is_better"]
    assert_user_error(run_cli_in_process("evaluate", "--store", store, "--baselines"), "no packaged baselines for nlp",
                      "--baselines FILE")


def test_accuracies_and_benchmark_file_together_is_one_clear_error(tmp_path):
    store = tmp_path / "s.sqlite"
    _store(store, "nb201", [get_space("nb201").format_arch(get_space("nb201").sample(1, 0)[0])], [1.0])
    assert_user_error(run_cli_in_process("evaluate", "--store", store, "--accuracies", "a.csv", "--benchmark-file", "b.pth"),
                      "not both")


def test_search_pick_by_default_equals_the_source_file(shared_data, tmp_path, capsys):
    nb201 = get_space("nb201")
    archs = sorted({nb201.format_arch(a) for r in range(3) for a in nb201.sample(40, r)})
    rng = np.random.default_rng(1)
    store = tmp_path / "s.sqlite"
    _store(store, "nb201", archs, list(rng.normal(size=len(archs))))
    args = ["search", "pick", "--store", store, "--n", 40, "--runs", 3, "--no-progress"]
    packaged_run = cli_json(capsys, *args)
    assert packaged_run == cli_json(capsys, *args, "--accuracies", shared_data / "nb201" / "accuracies.csv")
    assert packaged_run["target"] == "cifar10" and packaged_run["runs"] == 3


def test_nlp_space_reads_the_packaged_recipes(shared_data):
    from epsinas_onnx.spaces import nlp  # the module: load_recipes is nlp's own, not part of the protocol
    assert repr(nlp.load_recipes()) == repr(nlp.load_recipes(shared_data / "nlp"))  # repr: NaN equals NaN
    assert len(nlp.all_archs()) == 291


def test_bench_archs_from_a_packaged_table_equal_those_of_the_source_file(shared_data):
    from epsinas_onnx.experiments.bench import load_arch_file

    nb101, nlp = get_space("nb101"), get_space("nlp")
    for name, source in [("nb101_test_143", "nb101/test_143.csv"), ("nb101_naslib_500", "nb101/naslib_500.csv")]:
        assert load_arch_file(nb101, f"packaged:{name}") == load_arch_file(nb101, shared_data / source)
    assert load_arch_file(nlp, "packaged:nlp_wt2_summary") == load_arch_file(nlp, shared_data / "nlp" / "wt2_summary.csv")
    assert len(load_arch_file(nb101, "packaged:nb101_test_143")) == 143
    assert_user_error(run_cli_in_process("bench", "nb101", "--archs", "packaged:nb201_accuracies", "--store", "x.sqlite"),
                      "the packaged table nb201_accuracies", "nb101")
    assert_user_error(run_cli_in_process("bench", "nb101", "--archs", "packaged:nope", "--store", "x.sqlite"),
                      "no packaged table 'nope'")


def test_calibrate_with_the_packaged_accuracies_equals_the_source_file(shared_data, tmp_path, capsys):
    args = ["calibrate", "nb201", "--sample", 6, "--seed", 1, "--low", 1e-8, 1e-7, "--high", 1e-1, 1,
            "--batch-size", 8, "--compare", 1e-7, 1, "--no-progress", "--outputs", tmp_path / "o.npz"]
    a = cli_json(capsys, *args, "--accuracies")
    b = cli_json(capsys, *args, "--accuracies", shared_data / "nb201" / "accuracies.csv")
    a.pop("seconds"), b.pop("seconds")
    assert a == b and all("spearman" in p for p in a["pairs"])
