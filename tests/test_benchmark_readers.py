"""Readers of the official benchmark files (epsinas_onnx.experiments.benchmark_files), on
small files the tests write in the official formats: each gives the same
table as the packaged one for the architectures the file holds, and evaluate
takes it with --benchmark-file."""

import base64
import bz2
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest

from epsinas_onnx.experiments import benchmark_files
from epsinas_onnx.core.tables import packaged
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.spaces import get_space
from epsinas_onnx.spaces.nb101 import nasbench_hash
from tests.conftest import run_cli_in_process
from tests.test_cli_errors import assert_user_error
from tests.test_packaged_tables import _store, cli_json

# ---------------------------------------------------------------- TFRecord framing and CRC32-C


def test_crc32c_matches_the_standard_check_value():
    assert benchmark_files.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    assert benchmark_files.crc32c(b"") == 0


def test_crc32c_each_is_crc32c_of_each_chunk():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 700, 300)]
    chunks += [b"", b"123456789", b"\xff" * 3]
    assert benchmark_files.crc32c_each(chunks) == [benchmark_files.crc32c(c) for c in chunks]
    assert benchmark_files.crc32c_each([]) == []


def test_a_bad_data_checksum_past_the_first_batch_names_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark_files, "TFRECORD_BATCH", 4)
    path = tmp_path / "r.tfrecord"
    records = [f"record {i}".encode() * (i % 3) for i in range(10)]
    _write_tfrecord(path, records)
    assert list(benchmark_files.tfrecords(path)) == records
    raw = bytearray(path.read_bytes())
    offset = sum(16 + len(r) for r in records[:7]) + 12  # the first data byte of record 8 (in the second batch)
    raw[offset] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="record 8 has a bad data checksum"):
        list(benchmark_files.tfrecords(path))


def _write_tfrecord(path, records: list[bytes]) -> None:
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", benchmark_files.masked_crc32c(length)) + data
                    + struct.pack("<I", benchmark_files.masked_crc32c(data)))


def test_tfrecord_framing_round_trip_and_corruption(tmp_path):
    path = tmp_path / "r.tfrecord"
    _write_tfrecord(path, [b"one", b"", b"three" * 100])
    assert list(benchmark_files.tfrecords(path)) == [b"one", b"", b"three" * 100]
    raw = bytearray(path.read_bytes())
    raw[14] ^= 1  # a data byte of the first record
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="bad data checksum"):
        list(benchmark_files.tfrecords(path))
    path.write_bytes(b"not a tfrecord file at all")
    with pytest.raises(UserError, match="bad length checksum"):
        list(benchmark_files.tfrecords(path))


# ---------------------------------------------------------------- NAS-Bench-101


def _metrics_class():
    """nasbench.ModelMetrics built with the protobuf package from the fields of
    model_metrics.proto (google-research/nasbench): an encoder independent of
    the reader's hand-written decoder."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="test_model_metrics.proto", package="nasbench_test",
                                              syntax="proto2")
    data = file.message_type.add(name="EvaluationData")
    for number, name in enumerate(["current_epoch", "training_time", "train_accuracy", "validation_accuracy",
                                   "test_accuracy"], start=1):
        data.field.add(name=name, number=number, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    data.field.add(name="checkpoint_path", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    metrics = file.message_type.add(name="ModelMetrics")
    metrics.field.add(name="evaluation_data", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".nasbench_test.EvaluationData")
    metrics.field.add(name="trainable_parameters", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    metrics.field.add(name="total_time", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nasbench_test.ModelMetrics"))


def _nb101_record(metrics_class, module_hash, epochs, matrix, ops, tests, valids, params) -> list[bytes]:
    """One record per repeat, as the benchmark's generator writes them: JSON
    [hash, epochs, adjacency bits row-major, ops comma-joined, base64 metrics]."""
    out = []
    for test, valid in zip(tests, valids):
        m = metrics_class(trainable_parameters=params, total_time=1000.0)
        for epoch, acc in [(0, 0.1), (epochs / 2, 0.5), (epochs, None)]:
            e = m.evaluation_data.add(current_epoch=epoch, training_time=10.0 * epoch, train_accuracy=0.9,
                                      validation_accuracy=valid if acc is None else acc,
                                      test_accuracy=test if acc is None else acc, checkpoint_path="gs://x")
            assert e.current_epoch == epoch
        adjacency = "".join(str(v) for row in matrix for v in row)
        out.append(json.dumps([module_hash, epochs, adjacency, ",".join(ops),
                               base64.b64encode(m.SerializeToString()).decode()]).encode())
    return out


def _relabelled(arch, rng):
    """The pruned cell with its inner vertices renumbered at random, kept in topological order
    (the file's labelling of a cell need not be the user's)."""
    n = len(arch.matrix)
    m = np.array(arch.matrix)
    for _ in range(50):
        perm = [0, *rng.permutation(np.arange(1, n - 1)), n - 1]
        pm = m[np.ix_(perm, perm)]
        if not np.tril(pm).any():
            return pm.tolist(), [arch.ops[i] for i in perm]
    return m.tolist(), list(arch.ops)


@pytest.fixture(scope="module")
def nb101_file(tmp_path_factory):
    """A tfrecord of the cells of the packaged test_143 table: each pruned,
    relabelled, three repeats whose mean test accuracy is the table's value
    (test_143 holds one repeat: the file gives each cell a - d, a, a + d), plus
    a 36-epoch record that must be left out. Cells of test_143 that are the same
    network (one hash) are one entry of the file, as in the benchmark: the first
    one's. Returns the path, {stored text: the file's accuracy} and the stored
    texts whose network test_143 holds once."""
    from epsinas_onnx.spaces import nb101  # the module: prune is nb101's own, not part of the protocol
    metrics_class = _metrics_class()
    rng = np.random.default_rng(0)
    records, by_hash, expected, hashes = [], {}, {}, {}
    for k, row in enumerate(packaged("nb101_test_143").rows):
        stored = nb101.format_arch(nb101.parse(row["cell"]))
        matrix, ops = _relabelled(nb101.prune(nb101.parse(row["cell"])), rng)
        module_hash = nasbench_hash(matrix, ops)
        hashes.setdefault(module_hash, set()).add(stored)
        if module_hash not in by_hash:
            a, d = float(row["cifar_acc_108"]), 0.001 * (k % 5)
            by_hash[module_hash] = a
            records += _nb101_record(metrics_class, module_hash, 108, matrix, ops, [a - d, a, a + d],
                                     [0.9, 0.91, 0.92], 1000 + k)
            if k == 0:
                records += _nb101_record(metrics_class, module_hash, 36, matrix, ops, [0.5] * 3, [0.5] * 3, 1000)
        expected[stored] = by_hash[module_hash]
    path = tmp_path_factory.mktemp("nb101") / "nasbench_only108.tfrecord"
    _write_tfrecord(path, records)
    once = sorted(next(iter(texts)) for texts in hashes.values() if len(texts) == 1)
    return path, expected, once


def test_nasbench_hash_is_the_benchmarks_own():
    # a cell of nasbench_only108.tfrecord with its module_hash, as the benchmark's data gives it
    # (the key of its record; quoted in NAS-Bench-101 users' code and tests)
    matrix = [[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
              [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
    ops = ["input", "conv3x3-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"]
    assert nasbench_hash(matrix, ops) == "00005c142e6f48ac74fdcf73e3439874"


def test_nasbench_hash_is_invariant_to_relabelling():
    rng = np.random.default_rng(1)
    from epsinas_onnx.spaces import nb101  # the module: prune is nb101's own, not part of the protocol
    for arch in nb101.sample(30, 3):
        pruned = nb101.prune(arch)
        first = nasbench_hash([list(r) for r in pruned.matrix], list(pruned.ops))
        matrix, ops = _relabelled(pruned, rng)
        assert nasbench_hash(matrix, ops) == first
    a, b = nb101.sample(2, 4)
    hash_of = lambda x: nasbench_hash([list(r) for r in nb101.prune(x).matrix], list(nb101.prune(x).ops))
    assert hash_of(a) != hash_of(b)


def test_nb101_tfrecord_gives_the_packaged_test_accuracies(nb101_file):
    path, expected, once = nb101_file
    table = benchmark_files.read("nb101", path, archs=list(expected))
    assert table.columns[:4] == ["arch", "module_hash", "cifar_acc_108", "val_accuracy"]
    by_arch = {row["arch"]: row for row in table.rows}
    assert len({row["module_hash"] for row in table.rows}) == 97  # the networks of test_143, one entry each
    packaged_acc = {get_space("nb101").format_arch(get_space("nb101").parse(r["cell"])): float(r["cifar_acc_108"])
                    for r in packaged("nb101_test_143").rows}
    for stored, value in expected.items():
        row = by_arch[stored]  # found under the user's labelling, through the hash
        assert float(row["cifar_acc_108"]) == pytest.approx(value, abs=1e-12)
        assert float(row["val_accuracy"]) == pytest.approx(91.0)
        assert row["repeats"] == "3"  # the 36-epoch record left out
    assert len(once) > 80  # 143 cells, 97 networks (cells with unreachable vertices prune to the same one)
    for stored in once:
        assert float(by_arch[stored]["cifar_acc_108"]) == pytest.approx(packaged_acc[stored], abs=1e-12)


def test_evaluate_with_the_nb101_tfrecord_equals_the_packaged_table(nb101_file, tmp_path, capsys):
    path, expected, once = nb101_file
    rng = np.random.default_rng(2)
    store = tmp_path / "s.sqlite"
    _store(store, "nb101", once, list(expected[a] + rng.normal(0, 0.01) for a in once))
    a = cli_json(capsys, "evaluate", "--store", store)
    b = cli_json(capsys, "evaluate", "--store", store, "--benchmark-file", path)
    assert b["targets_from"] == str(path) and b["counts"]["compared"] == len(once)
    assert a["target"] == b["target"] == "cifar_acc_108"
    for row_a, row_b in zip(a["rows"], b["rows"]):
        assert row_a["proxy"] == row_b["proxy"]
        for key in ("spearman", "kendall", "n", "top64_top5"):
            assert row_a[key] == pytest.approx(row_b[key]), key


# ---------------------------------------------------------------- NAS-Bench-201 / NATS-Bench


NB201_SETS = {"cifar10": "ori-test", "cifar100": "x-test", "ImageNet16-120": "x-test", "cifar10-valid": "x-valid"}
NB201_COLUMNS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16_120",
                 "cifar10-valid": "cifar10_valid"}


def _nb201_state(api_utils, index, row, seeds=(777, 888, 999)) -> dict:
    """An ArchResults state dict built with the package's own classes: three
    trials per data set, their accuracies a - 0.1, a, a + 0.1 for the table's a."""
    results = api_utils.ArchResults(index, row["arch"])
    for dataset, set_name in NB201_SETS.items():
        a = float(row[NB201_COLUMNS[dataset]])
        for k, seed in enumerate(seeds):
            r = api_utils.ResultsCount(dataset, None, {0: 60.0}, {0: 1.2}, float(row["params_m"]), 10.0, {}, seed, 1,
                                       None)
            r.update_eval({f"{set_name}@0": a + (k - 1) * 0.1}, {f"{set_name}@0": 0.5}, {f"{set_name}@0": 1.0})
            results.update(dataset, seed, r)
    return results.state_dict()


def _assert_same_as_packaged(table, n):
    rows = packaged("nb201_accuracies").rows[:n]
    assert [r["arch"] for r in table.rows] == [r["arch"] for r in rows]
    assert table.columns == packaged("nb201_accuracies").columns
    for mine, theirs in zip(table.rows, rows):
        assert mine["index"] == theirs["index"]
        for column in ("cifar10", "cifar100", "imagenet16_120", "cifar10_valid", "params_m"):
            assert float(mine[column]) == pytest.approx(float(theirs[column]), abs=1e-9), column


def test_nas_bench_201_pth_gives_the_packaged_table(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    api_utils = pytest.importorskip("nas_201_api.api_utils")
    rows = packaged("nb201_accuracies").rows[:12]
    states = {i: {"less": _nb201_state(api_utils, i, r), "full": _nb201_state(api_utils, i, r)}
              for i, r in enumerate(rows)}
    path = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    torch.save({"meta_archs": [r["arch"] for r in rows], "arch2infos": states,
                "evaluated_indexes": list(range(len(rows)))}, path)
    _assert_same_as_packaged(benchmark_files.read("nb201", path), len(rows))
    torch.save({"something": "else"}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="nas-bench-201 could not load .*other.pth"):
        benchmark_files.read("nb201", tmp_path / "other.pth")

    nb201 = get_space("nb201")
    store = tmp_path / "s.sqlite"
    _store(store, "nb201", [nb201.format_arch(nb201.parse(r["arch"])) for r in rows],
           [float(r["cifar10"]) + k % 3 for k, r in enumerate(rows)])
    a = cli_json(capsys, "evaluate", "--store", store)
    b = cli_json(capsys, "evaluate", "--store", store, "--benchmark-file", path)
    assert b["targets_from"] == str(path)
    for row_a, row_b in zip(a["rows"], b["rows"]):
        assert row_a["spearman"] == pytest.approx(row_b["spearman"]) and row_a["n"] == row_b["n"]


def test_nats_bench_topology_file_gives_the_packaged_table(tmp_path):
    api_utils = pytest.importorskip("nats_bench.api_utils")
    rows = packaged("nb201_accuracies").rows[:8]
    states = {i: {"12": _nb201_state(api_utils, i, r), "200": _nb201_state(api_utils, i, r)}
              for i, r in enumerate(rows)}
    path = tmp_path / "NATS-tss-v1_0-3ffb9-full.pickle.pbz2"
    with bz2.BZ2File(path, "wb") as f:
        pickle.dump({"meta_archs": [r["arch"] for r in rows], "arch2infos": states,
                     "evaluated_indexes": list(range(len(rows)))}, f)
    _assert_same_as_packaged(benchmark_files.read("nb201", path), len(rows))


def test_an_nb201_file_of_another_kind_is_one_clear_error(tmp_path):
    store = tmp_path / "s.sqlite"
    nb201 = get_space("nb201")
    _store(store, "nb201", [nb201.format_arch(nb201.sample(1, 0)[0])], [1.0])
    (tmp_path / "x.csv").write_text("a,b\n")
    assert_user_error(run_cli_in_process("evaluate", "--store", store, "--benchmark-file", tmp_path / "x.csv"),
                      "not a NAS-Bench-201 file")
    assert_user_error(run_cli_in_process("evaluate", "--store", store, "--benchmark-file", tmp_path / "absent.pth"),
                      "benchmark file not found")


def test_the_help_says_loading_a_pickle_runs_code():
    result = run_cli_in_process("evaluate", "--help")
    assert "runs code" in " ".join(result.stdout.split())


# ---------------------------------------------------------------- NAS-Bench-NLP


def test_nlp_logs_zip_as_released_gives_the_packaged_table(shared_data):
    table = benchmark_files.read("nlp", shared_data / "nlp" / "wt2_logs.zip")
    assert table.columns == packaged("nlp_wt2_summary").columns
    assert table.rows == packaged("nlp_wt2_summary").rows  # every one of the 345 logs, text for text


def test_nlp_logs_folder_written_by_the_test(shared_data, tmp_path, capsys):
    folder = tmp_path / "logs"
    folder.mkdir()
    with zipfile.ZipFile(shared_data / "nlp" / "wt2_logs.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".json"))
        picked = names[:5] + [n for n in names if json.loads(z.read(n))["status"] != "OK"][:2]
        for name in picked:
            (folder / name).write_bytes(z.read(name))
    table = benchmark_files.read("nlp", folder)
    wanted = {r["recepie_id"]: r for r in packaged("nlp_wt2_summary").rows}
    assert len(table.rows) == 7
    for row in table.rows:
        assert row == wanted[row["recepie_id"]]
    diverged = [r for r in table.rows if r["status"] != "OK"]
    assert diverged and all(r["final_test_loss"] == "" for r in diverged)

    nlp = get_space("nlp")
    store = tmp_path / "s.sqlite"
    _store(store, "nlp", [nlp.format_arch(nlp.parse(r["recepie"])) for r in table.rows],
           [float(k) for k in range(len(table.rows))])
    assert cli_json(capsys, "evaluate", "--store", store, "--benchmark-file", folder)["targets_from"] == str(folder)
    (tmp_path / "bad.zip").write_bytes(b"no zip")
    assert_user_error(run_cli_in_process("evaluate", "--store", store, "--benchmark-file", tmp_path / "bad.zip"),
                      "neither a folder of NAS-Bench-NLP logs nor a zip")
