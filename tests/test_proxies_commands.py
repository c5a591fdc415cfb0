"""The proxies in the commands: `score --proxy` beside epsinas, `score A B C
--rank-by` (a population ranked by the aggregate), `bench --proxies` (stored,
keyed, resumable) and `evaluate` (the stored proxies side by side, --rank-by);
the aggregate against scipy's ranks. In process (cli.main), small batches."""

import json
import math
import sqlite3

import numpy as np
import pytest

from epsinas_onnx.cli import main
from epsinas_onnx.proxies import aggregate
from epsinas_onnx.spaces import nb201

ARCHS = {
    "conv.onnx": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "mixed.onnx": "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_3x3~0|none~1|skip_connect~2|",
    "pool.onnx": "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|",
}
SMALL = ("--batch-size", "16", "--synthetic", "normal")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidates")
    for name, arch in ARCHS.items():
        (folder / name).write_bytes(nb201.to_onnx(nb201.parse(arch), num_classes=10).SerializeToString())
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_score_prints_every_proxy_beside_epsinas(models, capsys):
    status, out, _ = cli(capsys, "score", models / "mixed.onnx", *SMALL, "--proxy", "naswot,zen,meco,params,flops",
                         "--format", "json")
    assert status == 0
    row = json.loads(out)
    assert row["score"] is not None
    for name in ("naswot", "zen", "meco", "params", "flops"):
        assert isinstance(row[name], float) and math.isfinite(row[name]), name
    assert row["params"] == nb201.num_params(nb201.parse(ARCHS["mixed.onnx"]))
    assert set(row["proxy_seconds"]) == {"naswot", "zen", "meco", "params", "flops"}


def test_rank_by_orders_the_population_by_the_aggregate(models, capsys):
    status, out, _ = cli(capsys, "score", models, *SMALL, "--rank-by", "epsinas,naswot,params", "--format", "json")
    assert status == 0
    rows = json.loads(out)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    # the aggregate, recomputed independently: the sum of log(rank / n), scipy's average ranks
    from scipy.stats import rankdata

    names = ("epsinas", "naswot", "params")
    expected = sum(np.log(rankdata([r[name] for r in rows]) / len(rows)) for name in names)
    assert [r["aggregate"] for r in rows] == pytest.approx(list(expected))
    assert [r["aggregate"] for r in rows] == sorted((r["aggregate"] for r in rows), reverse=True)


def test_rank_fractions_are_scipys_average_ranks_with_nan_last():
    from scipy.stats import rankdata

    values = [3.0, float("nan"), 1.0, 3.0, float("nan"), -2.0]
    expected = rankdata([3.0, -np.inf, 1.0, 3.0, -np.inf, -2.0]) / 6
    assert aggregate.rank_fractions(values) == pytest.approx(expected)
    both = aggregate.aggregate({"a": [1, 2, 3], "b": [3, 2, 1]}, form="mean")
    assert both == pytest.approx([4 / 3, 4 / 3, 4 / 3])
    twice = aggregate.aggregate({"a": [1, 2, 3], "b": [3, 2, 1]}, weights={"a": 2})
    assert twice == pytest.approx(2 * np.log([1 / 3, 2 / 3, 1]) + np.log([1, 2 / 3, 1 / 3]))
    # --rank-by a,a,b: a name listed twice counts twice
    assert aggregate.of_members({"a": [1, 2, 3], "b": [3, 2, 1]}, ("a", "a", "b")) == pytest.approx(twice)
    from epsinas_onnx.proxies.registry import parse_names

    assert parse_names("meco,meco,params", repeats=True) == ("meco", "meco", "params")


def test_bench_stores_the_proxies_and_resumes(tmp_path, capsys):
    store = tmp_path / "p.sqlite"
    args = ("bench", "nb201", "--sample", "3", "--seed", "4", *SMALL, "--store", store, "--proxies", "params,naswot",
            "--no-progress")
    status, out, _ = cli(capsys, *args)
    assert status == 0 and "naswot" in out
    # the proxies' seconds are a line of their own after the summary, not an escaped "\n" inside it
    assert any(line.startswith("seconds per architecture in a worker: epsinas ") for line in out.splitlines())
    assert "\\n" not in out
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT proxy, COUNT(*), COUNT(DISTINCT settings) FROM proxies GROUP BY proxy").fetchall()
        scored = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert sorted(rows) == [("naswot", scored, 1), ("params", scored, 1)]
    status, out, _ = cli(capsys, *args)
    assert status == 0 and f"{scored} skipped as already stored" in out
    # another seed is another key: computed again beside the first
    status, out, _ = cli(capsys, *args, "--proxy-seed", "1")
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(DISTINCT settings) FROM proxies WHERE proxy = 'naswot'").fetchone()[0] == 2
    status, out, _ = cli(capsys, "evaluate", "--store", store, "--rank-by", "epsinas,params", "--format", "json")
    assert status == 0
    report = json.loads(out)
    labels = [r["proxy"] for r in report["rows"]]
    assert "params (stored)" in labels and "rank-by epsinas,params" in labels
    assert any(label.startswith("naswot [") for label in labels)  # two keys of one proxy: each named by its settings


def test_bad_proxy_names_are_one_line(models, capsys):
    status, _, err = cli(capsys, "score", models / "conv.onnx", "--proxy", "naswot,nope")
    assert status == 1 and "unknown proxy 'nope'" in err and "\n" == err[-1] and err.count("\n") == 1
    status, _, err = cli(capsys, "score", models / "conv.onnx", "--rank-by", "naswot")
    assert status == 1 and "two or more" in err


def test_search_picks_by_the_aggregate_of_stored_scores(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    for seed in (0, 1):  # pick 1 of 3, runs 0 and 1: space.sample(3, 0) and space.sample(3, 1)
        status, _, _ = cli(capsys, "bench", "nb201", "--sample", "3", "--seed", seed, *SMALL, "--store", store,
                           "--proxies", "params", "--no-progress")
        assert status == 0
    status, out, err = cli(capsys, "search", "pick", "--n", "3", "--runs", "2", "--store", store, "--rank-by",
                           "epsinas,params", "--format", "json")
    assert status == 0, err
    report = json.loads(out)
    from epsinas_onnx.core.tables import packaged

    table = {row["arch"]: row for row in packaged("nb201_accuracies").rows}
    with sqlite3.connect(store) as db:
        epsinas = {a: (np.nan if s is None else s) for a, s in db.execute("SELECT arch, score FROM results")}
    picked = []
    for run in range(2):
        texts = [nb201.format_arch(a) for a in nb201.sample(3, run)]
        values = aggregate.aggregate({"e": [epsinas[t] for t in texts],
                                      "p": [float(table[t]["params_m"]) for t in texts]})
        picked.append(float(table[texts[int(np.argmax(values))]]["cifar10"]))
    assert report["mean"] == pytest.approx(np.mean(picked)) and report["config"]["rank_by"] == ["epsinas", "params"]
    # a member not stored for the drawn architectures: one line naming it
    status, _, err = cli(capsys, "search", "pick", "--n", "3", "--runs", "2", "--store", store, "--rank-by", "naswot")
    assert status == 1 and "naswot" in err and err.count("\n") == 1


def _rebuild_proxies_without_key(path):
    """The proxies table made again without its UNIQUE key, rows kept (another program's doing)."""
    db = sqlite3.connect(path)
    columns = [r[1] for r in db.execute("PRAGMA table_info(proxies)")]
    db.execute("ALTER TABLE proxies RENAME TO old")
    db.execute(f"CREATE TABLE proxies ({', '.join(columns)})")
    db.execute(f"INSERT INTO proxies SELECT {', '.join(columns)} FROM old")
    db.execute("DROP TABLE old")
    db.commit()
    db.close()


def test_a_store_with_or_without_the_proxies_table_is_a_store_and_a_changed_one_is_refused(tmp_path, capsys):
    """The store's schema check: the proxies table is optional (an older store lacks it until a bench
    --proxies adds it), and where it is there it must be what the store makes, as results and meta must."""
    store = tmp_path / "s.sqlite"
    bench = ("bench", "nb201", "--sample", "1", *SMALL, "--store", store, "--no-progress")
    assert cli(capsys, *bench)[0] == 0
    with sqlite3.connect(store) as db:
        assert "proxies" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert cli(capsys, "results", "--store", store)[0] == 0
    assert cli(capsys, *bench, "--proxies", "params")[0] == 0  # the table added to the existing store
    assert cli(capsys, "results", "--store", store)[0] == 0
    _rebuild_proxies_without_key(store)
    for args in (("results", "--store", store), (*bench, "--proxies", "params")):
        status, _, err = cli(capsys, *args)
        assert status == 1 and err.count("\n") == 1, err
        assert "not a results store of this version (its proxies table" in err
        assert "move it aside or give --store another file" in err
