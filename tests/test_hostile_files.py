"""Hostile files, round 2, run in-process (`epsinas_onnx.cli.main`): every
option that reads a file, given a FIFO, a link to /dev/zero or a name too
long for the file system; bombs (a zip, a TFRecord length, a PNG header);
names from a model or data file holding a newline or an escape sequence;
graph walks as deep as a user's file can make them; numeric options that
are no number; output paths that name a folder. The promise of each: exit 1
with exactly one stderr line "error: ..." naming the problem (exit 0 where
the input is legitimate), never the internal-error exit 3, never a hang,
no control character from a file on stderr, no file written."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import sqlite3
import struct
import threading
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from epsinas_onnx.cli import main
from epsinas_onnx.experiments.store import ResultStore, settings_key, weights_key
from tests.conftest import ROOT
from tests.onnx_graphs import conv_bn_relu, init, model

HANG_SECONDS = 60  # a case takes well under a second; past this it hangs
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
NB101 = '{"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"]}'
NLP_RECIPE = '{"h_new_0": {"op": "linear", "input": ["x", "h_prev_0"]}}'
TOKEN_MODEL = ROOT / "models" / "torch_dynamo_lstm_lm.onnx"
FAST = ("--batch-size", "8", "--no-progress")


class Hung(BaseException):
    """The command did not return in time (not an Exception: main must not catch it)."""


def cli(*args, timeout: int = HANG_SECONDS) -> tuple[int, str, str]:
    """main(args) in this process: (exit status, stdout, stderr). SIGALRM turns a hang into a failure."""
    def alarm(signum, frame):
        raise Hung(f"{args[0]} hung for {timeout} s")

    stdout, stderr = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([str(a) for a in args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, stdout.getvalue(), stderr.getvalue()


def one_error(result, *fragments) -> str:
    """Exit 1, one stderr line "error: ..." holding each fragment and no control character; nothing on stdout."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 1, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == "", out
    assert not any(ord(c) < 32 or ord(c) == 127 for c in lines[0]), repr(lines[0])
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- fixtures


def conv_model(path):
    onnx.save(conv_bn_relu(), path)
    return path


def nb_store(path, space="nb201", archs=(NB201,), **row):
    key = {"space": space, "weights": weights_key((1e-7, 1.0)), "data": "f" * 16,
           "settings": settings_key({"export": {}, "prepare": {"bn_gamma": "w"}})}
    with ResultStore(path) as db:
        for i, arch in enumerate(archs):
            db.add({**key, "arch": arch, "score": 0.5 + i, "params": 10, "seconds": 0.1,
                    "data_description": "test batch", **row})
        db.commit()
    return path


def nlp_arch() -> str:
    from epsinas_onnx.spaces import get_space

    nlp = get_space("nlp")
    return nlp.format_arch(nlp.parse(NLP_RECIPE))


def nb101_arch() -> str:
    from epsinas_onnx.spaces import get_space

    nb101 = get_space("nb101")
    return nb101.format_arch(nb101.parse(NB101))


# ---------------------------------------------------------------- every option that reads a file


def _data(model_maker=conv_model, suffix_args=()):
    def argv(tmp_path, path):
        return ["score", model_maker(tmp_path / "m.onnx"), "--data", path, "--batch-size", 2, *suffix_args]
    return argv


def _tokens(tmp_path, path):
    return ["score", TOKEN_MODEL, "--data", path, "--batch-size", 2, "--seq-len", 4]


def _evaluate(space, arch_fn, option):
    def argv(tmp_path, path):
        store = nb_store(tmp_path / "s.sqlite", space, (arch_fn(),))
        return ["evaluate", "--store", store, option, path]
    return argv


def _nlp_log_folder(tmp_path, path):
    store = nb_store(tmp_path / "s.sqlite", "nlp", (nlp_arch(),))
    return ["evaluate", "--store", store, "--benchmark-file", path.parent]


# (name, the hostile file's name, argv given the temporary folder and the hostile file's path)
FILE_OPTIONS = [
    ("score MODEL", "m.onnx", lambda t, p: ["score", p]),
    ("rewrite MODEL", "m.onnx", lambda t, p: ["rewrite", p, "--explain"]),
    ("score --data .npz", "x.npz", _data()),
    ("score --data .npy", "x.npy", _data()),
    ("score --data CIFAR .bin", "test_batch.bin", _data()),
    ("score --data token text", "t.txt", _tokens),
    ("bench --archs", "archs.txt", lambda t, p: ["bench", "nb201", "--archs", p, "--store", t / "s.sqlite", *FAST]),
    ("bench nb101 --archs .csv", "cells.csv", lambda t, p: ["bench", "nb101", "--archs", p, "--store", t / "s.sqlite", *FAST]),
    ("bench --store", "s.sqlite", lambda t, p: ["bench", "nb201", "--sample", 1, "--store", p, *FAST]),
    ("results --store", "s.sqlite", lambda t, p: ["results", "--store", p]),
    ("evaluate --store", "s.sqlite", lambda t, p: ["evaluate", "--store", p]),
    ("evaluate --accuracies", "acc.csv", _evaluate("nb201", lambda: NB201, "--accuracies")),
    ("evaluate --baselines", "base.csv", _evaluate("nb201", lambda: NB201, "--baselines")),
    ("evaluate --proxies", "prox.csv", _evaluate("nb201", lambda: NB201, "--proxies")),
    ("evaluate nb201 --benchmark-file .pth", "NAS-Bench-201.pth", _evaluate("nb201", lambda: NB201, "--benchmark-file")),
    ("evaluate nb101 --benchmark-file", "nasbench_only108.tfrecord", _evaluate("nb101", nb101_arch, "--benchmark-file")),
    ("evaluate nlp --benchmark-file .zip", "logs.zip", _evaluate("nlp", nlp_arch, "--benchmark-file")),
    ("evaluate nlp --benchmark-file a log in a folder", "logs/log_stats_model_1.json", _nlp_log_folder),
    ("export nb101 cell file", "cell.json", lambda t, p: ["export", "nb101", p, "-o", t / "o.onnx"]),
    ("export nlp recipe file", "recipe.json", lambda t, p: ["export", "nlp", p, "-o", t / "o.onnx"]),
    ("calibrate --outputs", "cache.npz",
     lambda t, p: ["calibrate", "nb201", "--sample", 1, "--outputs", p, "--batch-size", 2, "--no-progress"]),
    ("calibrate --archs", "archs.txt", lambda t, p: ["calibrate", "nb201", "--archs", p, "--no-progress"]),
    ("calibrate MODEL", "m.onnx", lambda t, p: ["calibrate", p, "--batch-size", 2, "--no-progress"]),
    ("ablate --archs", "archs.txt",
     lambda t, p: ["ablate", "nb201", "--vary", "synthetic", "--values", "grey", "--archs", p, "--store", t / "s.sqlite",
                   "--no-progress"]),
    ("search pick --store", "s.sqlite", lambda t, p: ["search", "pick", "--store", p, "--space", "nb201"]),
    ("search pick --accuracies", "acc.csv",
     lambda t, p: ["search", "pick", "--store", nb_store(t / "s.sqlite"), "--accuracies", p, "--n", 1, "--runs", 1]),
]
HOSTILE = {
    "fifo": (os.mkfifo, "not a regular file"),
    "dev_zero": (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("name, filename, argv", FILE_OPTIONS, ids=[row[0] for row in FILE_OPTIONS])
def test_a_special_file_is_refused_before_it_is_read(tmp_path, name, filename, argv, kind):
    make, fragment = HOSTILE[kind]
    path = tmp_path / filename
    path.parent.mkdir(exist_ok=True)
    make(path)
    args = argv(tmp_path, path)
    before = files_under(tmp_path)
    one_error(cli(*args), fragment, filename.split("/")[-1])
    assert files_under(tmp_path) == before


NAMED_FILES = [row for row in FILE_OPTIONS if "/" not in row[1]]  # the file itself is the argument


@pytest.mark.parametrize("name, filename, argv", NAMED_FILES, ids=[row[0] for row in NAMED_FILES])
def test_a_file_name_too_long_for_the_file_system(tmp_path, name, filename, argv):
    path = tmp_path / ("n" * 300 + filename)
    args = argv(tmp_path, path)
    before = files_under(tmp_path)
    one_error(cli(*args), "too long")
    assert files_under(tmp_path) == before


def test_a_model_argument_of_300_digits():
    """A number-like MODEL is looked up as a file (a third --weights value?): too long a name is one line."""
    one_error(cli("score", "1" * 300), "too long")


def test_an_external_data_location_too_long(tmp_path):
    m = conv_bn_relu()
    tensor = m.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w" * 300 + ".bin"), ("offset", "0"), ("length", "432")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(m, tmp_path / "m.onnx")
    one_error(cli("score", tmp_path / "m.onnx"), "too long", "conv.w")


def test_an_image_of_a_folder_that_is_a_special_file_is_skipped(tmp_path):
    """A folder's images are its regular files: a FIFO or a link to /dev/zero named .png is not one of them."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    os.mkfifo(tmp_path / "images" / "b.png")
    os.symlink("/dev/zero", tmp_path / "images" / "c.png")
    code, out, err = cli("score", conv_model(tmp_path / "m.onnx"), "--data", tmp_path / "images", "--batch-size", 1)
    assert code == 0, err
    assert "(1 images)" in out


# ---------------------------------------------------------------- bounded reads


def test_a_zip_of_nlp_logs_whose_log_expands_past_the_limit(tmp_path):
    from epsinas_onnx.experiments.benchmark_files import MAX_LOG_BYTES

    with zipfile.ZipFile(tmp_path / "logs.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("log_stats_model_1.json", "w", force_zip64=True) as member:
            for _ in range(MAX_LOG_BYTES // 2**20 + 1):
                member.write(b" " * 2**20)
    assert (tmp_path / "logs.zip").stat().st_size < MAX_LOG_BYTES / 100
    store = nb_store(tmp_path / "s.sqlite", "nlp", (nlp_arch(),))
    one_error(cli("evaluate", "--store", store, "--benchmark-file", tmp_path / "logs.zip"),
              "log_stats_model_1.json", "over the")


def test_a_log_file_in_a_folder_past_the_limit(tmp_path):
    from epsinas_onnx.experiments.benchmark_files import MAX_LOG_BYTES

    (tmp_path / "logs").mkdir()
    with open(tmp_path / "logs" / "log_stats_model_1.json", "wb") as f:
        f.truncate(MAX_LOG_BYTES + 1)  # sparse: no disk used
    store = nb_store(tmp_path / "s.sqlite", "nlp", (nlp_arch(),))
    one_error(cli("evaluate", "--store", store, "--benchmark-file", tmp_path / "logs"), "log_stats_model_1.json", "over the")


def tfrecord(path, records):
    from epsinas_onnx.experiments.benchmark_files import masked_crc32c

    with open(path, "wb") as f:
        for data, claimed in records:
            length = struct.pack("<Q", claimed)
            f.write(length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data)))


def test_a_tfrecord_record_claiming_more_bytes_than_the_file_holds(tmp_path):
    tfrecord(tmp_path / "nasbench_only108.tfrecord", [(b"[]", 2**62)])
    store = nb_store(tmp_path / "s.sqlite", "nb101", (nb101_arch(),))
    one_error(cli("evaluate", "--store", store, "--benchmark-file", tmp_path / "nasbench_only108.tfrecord"),
              "record 1", "4611686018427387904 bytes", "cut short")


@pytest.mark.parametrize("where", ["tfrecord", "nlp log"])
def test_deeply_nested_json_in_a_benchmark_file(tmp_path, where):
    deep = b"[" * 100_000 + b"]" * 100_000
    if where == "tfrecord":
        path = tmp_path / "nasbench_only108.tfrecord"
        tfrecord(path, [(deep, len(deep))])
        store = nb_store(tmp_path / "s.sqlite", "nb101", (nb101_arch(),))
    else:
        path = tmp_path / "logs.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("log_stats_model_1.json", deep)
        store = nb_store(tmp_path / "s.sqlite", "nlp", (nlp_arch(),))
    one_error(cli("evaluate", "--store", store, "--benchmark-file", path), "nested too deeply")


def png_header(path, width, height):
    """A PNG whose header says width x height (its pixels are never there)."""
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_an_image_too_large_is_refused_from_its_header(tmp_path):
    """12000 x 12000: above the pixels one image may have, below Pillow's own refusal (which warns first)."""
    (tmp_path / "images").mkdir()
    png_header(tmp_path / "images" / "a.png", 12000, 12000)
    one_error(cli("score", conv_model(tmp_path / "m.onnx"), "--data", tmp_path / "images", "--batch-size", 1),
              "a.png", "12000x12000")


def test_a_later_image_too_large_is_refused_from_its_header(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    png_header(tmp_path / "images" / "b.png", 12000, 12000)
    one_error(cli("score", conv_model(tmp_path / "m.onnx"), "--data", tmp_path / "images", "--batch-size", 2),
              "b.png", "12000x12000")


# ---------------------------------------------------------------- names from a file are printed escaped

EVIL = "x\nerror: all good\x1b]0;owned\x07\x1b[2J"


def evil_named_model(path, with_weight_name=True):
    """conv_bn_relu whose input, conv weight and output names hold a newline and escape sequences."""
    m = conv_bn_relu()
    rename = {"x": EVIL, "y": EVIL + "out"}
    if with_weight_name:
        rename["conv.w"] = EVIL + "w"
    for node in m.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in (*m.graph.input, *m.graph.output, *m.graph.initializer):
        value.name = rename.get(value.name, value.name)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def assert_no_control_characters(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


def test_an_error_quoting_a_name_is_one_escaped_line(tmp_path):
    path = evil_named_model(tmp_path / "m.onnx")
    line = one_error(cli("score", path, "--input", "nope"), "no input 'nope'")
    assert "\\n" in line and "\\x1b" in line, line


def test_rewrite_explain_escapes_names(tmp_path):
    """A table and json hold no control character; csv on a pipe is the data (csv's quoting), on a terminal escaped."""
    path = evil_named_model(tmp_path / "m.onnx")
    for args in (["--explain"], ["--explain", "--tensors"], ["--explain", "--tensors", "--format", "json"]):
        code, out, err = cli("rewrite", path, *args)
        assert code == 0, err
        assert_no_control_characters(out + err)
        if "json" in args:
            assert json.loads(out)[0]["tensor"] == EVIL + "w"
        else:  # the collapse summary, a header and one line per role (4) or tensor (5)
            assert len(out.splitlines()) == 2 + (5 if "--tensors" in args else 4)
    code, out, err = cli("rewrite", path, "--explain", "--tensors", "--format", "csv")
    assert code == 0, err
    assert_no_control_characters(err)
    assert next(csv.DictReader(io.StringIO(out, newline="")))["tensor"] == EVIL + "w"


def test_csv_on_a_terminal_is_escaped(tmp_path, monkeypatch):
    path = evil_named_model(tmp_path / "m.onnx")
    stdout = io.StringIO()
    stdout.isatty = lambda: True
    monkeypatch.setattr("sys.stdout", stdout)
    assert main(["rewrite", str(path), "--explain", "--tensors", "--format", "csv"]) == 0
    assert_no_control_characters(stdout.getvalue())
    assert "\\x1b]0;owned" in stdout.getvalue()


def test_score_escapes_names_in_its_row_and_warnings(tmp_path):
    path = evil_named_model(tmp_path / "m.onnx")
    code, out, err = cli("score", path, "--batch-size", 2)
    assert code == 0, err
    assert_no_control_characters(out + err)
    assert "x\\nerror: all good\\x1b]0;owned\\x07\\x1b[2Jout" in out


def test_a_data_file_name_with_escape_sequences(tmp_path):
    """A file name is data too: it reaches an error line, a score's input description and a store."""
    data = tmp_path / ("images\x1b]0;owned\x07\n.npz")
    np.savez(data, images=np.zeros((2, 8, 8, 3), np.uint8))
    code, out, err = cli("score", conv_model(tmp_path / "m.onnx"), "--data", data, "--batch-size", 2)
    assert code == 0, err
    assert_no_control_characters(out + err)
    line = one_error(cli("score", conv_model(tmp_path / "m.onnx"), "--data", data, "--batch-size", 5), "too few")
    assert "\\x1b" in line


def test_a_warning_quoting_a_name_is_escaped(tmp_path):
    """bool output: a warning naming the output."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Greater", ["h", "zero"], [EVIL])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info(EVIL, TensorProto.BOOL, ["n", 3])
    inits = [init("w", [4, 3]), numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    onnx.save(model(nodes, [x], [y], inits), tmp_path / "m.onnx")
    code, out, err = cli("score", tmp_path / "m.onnx", "--batch-size", 8)
    assert code == 0 and "warning:" in err, err
    assert_no_control_characters(out + err)


def test_results_csv_is_the_stored_text_and_the_table_is_escaped(tmp_path):
    store = nb_store(tmp_path / "s.sqlite", data_description=EVIL, nan_reason="a,b \"quoted\"\r\nline")
    code, out, err = cli("results", "--store", store, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert rows[0]["data_description"] == EVIL
    assert rows[0]["nan_reason"] == "a,b \"quoted\"\r\nline"
    code, out, err = cli("results", "--store", store, "--format", "json")
    assert code == 0 and json.loads(out)[0]["data_description"] == EVIL
    code, out, err = cli("results", "--store", store, "--format", "table")
    assert code == 0, err
    assert_no_control_characters(out)
    assert len(out.strip().splitlines()) == 2  # the header and the row


# ---------------------------------------------------------------- graphs as deep as a file makes them


def chain_model(path, ops, depth):
    """x @ W, W reached through `depth` data-movement nodes (cycling through `ops`)."""
    nodes, name = [], "w"
    for i in range(depth):
        op = ops[i % len(ops)]
        nodes.append(helper.make_node(op, [name], [f"w{i}"], perm=[1, 0]) if op == "Transpose"
                     else helper.make_node(op, [name], [f"w{i}"]))
        name = f"w{i}"
    weight_shape = [4, 3] if sum(op == "Transpose" for op in ops[:1]) == 0 or depth % 2 == 0 else [3, 4]
    nodes.append(helper.make_node("MatMul", ["x", name], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    graph = helper.make_graph(nodes, "g", [x], [y], [init("w", weight_shape)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.mark.parametrize("ops", [["Identity"], ["Identity", "Transpose"]], ids=["identity", "identity+transpose"])
def test_a_weight_behind_thousands_of_data_movement_nodes(tmp_path, ops):
    path = chain_model(tmp_path / "m.onnx", ops, 4000)
    code, out, err = cli("rewrite", path, "--explain", "--tensors", "--format", "json")
    assert code == 0, err
    roles = {row["tensor"]: row["role"] for row in json.loads(out)}
    assert roles["w"] == "weight"
    code, out, err = cli("score", path, "--batch-size", 4, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["score"] is not None


def test_an_nlp_recipe_of_thousands_of_chained_nodes(tmp_path):
    recipe = {"n0": {"op": "linear", "input": ["x", "h_prev_0"]}}
    for i in range(1, 2000):  # past Python's 1,000 frames: a recursive walk of the recipe fails
        recipe[f"n{i}"] = {"op": "activation_tanh", "input": [f"n{i - 1}"]}
    recipe["h_new_0"] = {"op": "activation_tanh", "input": ["n1999"]}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    code, out, err = cli("export", "nlp", tmp_path / "recipe.json", "-o", tmp_path / "o.onnx")
    assert code == 0, err[:300]
    assert (tmp_path / "o.onnx").exists()


def test_a_string_output(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cast", ["h"], ["y"], to=TensorProto.STRING)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["n", 3])
    onnx.save(model(nodes, [x], [y], [init("w", [4, 3])]), tmp_path / "m.onnx")
    one_error(cli("score", tmp_path / "m.onnx", "--batch-size", 4), "'y'", "string")


# ---------------------------------------------------------------- numeric options


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "-1", "1e7"])
@pytest.mark.parametrize("command", ["score", "bench"])
def test_a_timeout_that_is_no_duration_is_refused(tmp_path, command, value):
    args = ["score", conv_model(tmp_path / "m.onnx")] if command == "score" else \
        ["bench", "nb201", "--sample", 1, "--store", tmp_path / "s.sqlite", *FAST]
    line = one_error(cli(*args, "--timeout", value), "--timeout")
    assert "Traceback" not in line
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize("option, values", [
    ("--weights", ["nan", "1"]), ("--weights", ["1e-7", "inf"]), ("--weights", ["-inf", "1"]),
])
def test_weights_that_are_no_number_are_refused(tmp_path, option, values):
    one_error(cli("score", conv_model(tmp_path / "m.onnx"), option, *values), option)


@pytest.mark.parametrize("value", ["nan", "inf", "1e300"])
def test_rewrite_weight_that_is_no_number_is_refused(tmp_path, value):
    one_error(cli("rewrite", conv_model(tmp_path / "m.onnx"), "--weight", value, "-o", tmp_path / "o.onnx"), "--weight")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("option, values", [("--low", ["nan", "1"]), ("--high", ["1", "inf"]), ("--compare", ["nan", "1"])])
def test_calibrate_grids_that_are_no_numbers_are_refused(tmp_path, option, values):
    one_error(cli("calibrate", "nb201", "--sample", 1, option, *values), option)


def test_the_watchdog_survives_a_far_deadline_and_refuses_nan():
    """The library refuses what the CLI refuses; a long accepted timeout never stops the watchdog thread."""
    from epsinas_onnx.core.errors import UserError
    from epsinas_onnx.core.scoring import runtime
    import onnxruntime as ort

    session = ort.InferenceSession(conv_bn_relu().SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    for bad in (float("nan"), float("inf"), 1e300, -1.0):
        with pytest.raises(UserError, match="timeout"):
            runtime.run_outputs(session, ["y"], feeds, timeout=bad)
    from epsinas_onnx.core.limits import MAX_TIMEOUT

    runtime.run_outputs(session, ["y"], feeds, timeout=MAX_TIMEOUT)
    time.sleep(0.2)  # the thread has looked at the far deadline by now
    assert [t for t in threading.enumerate() if t.name == "epsinas-onnx-watchdog" and t.is_alive()]


def test_out_of_memory_names_batch_size_only_where_a_command_has_it(tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr("epsinas_onnx.core.scoring.scorer.score_with", exhausted)
    one_error(cli("score", conv_model(tmp_path / "m.onnx")), "out of memory: try a smaller --batch-size")
    monkeypatch.setattr("epsinas_onnx.experiments.selection.space_rows", exhausted)
    line = one_error(cli("evaluate", "--store", nb_store(tmp_path / "s.sqlite")), "out of memory")
    assert "--batch-size" not in line


def test_a_library_warning_is_one_escaped_line(tmp_path, monkeypatch):
    import warnings

    def warn_then_fail(*args, **kwargs):
        warnings.warn("tensor " + EVIL, UserWarning)
        raise MemoryError()

    monkeypatch.setattr("epsinas_onnx.core.scoring.scorer.score_with", warn_then_fail)
    code, out, err = cli("score", conv_model(tmp_path / "m.onnx"))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2 and lines[0].startswith("warning: tensor x\\nerror: all good"), err
    assert_no_control_characters(err)


# ---------------------------------------------------------------- output paths that name a folder


@pytest.mark.parametrize("command", ["rewrite", "export"])
@pytest.mark.parametrize("target", ["newdir/", "existing"])
def test_an_output_path_that_names_a_folder_is_refused(tmp_path, command, target):
    (tmp_path / "existing").mkdir()
    out = f"{tmp_path}/{target}"  # as typed: a Path would drop the trailing slash
    args = ["rewrite", conv_model(tmp_path / "m.onnx"), "-o", out] if command == "rewrite" else \
        ["export", "nb201", NB201, "-o", out]
    before = files_under(tmp_path)
    one_error(cli(*args), "folder")
    assert files_under(tmp_path) == before


def test_a_store_or_plot_path_that_names_a_folder_is_refused(tmp_path):
    one_error(cli("bench", "nb201", "--sample", 1, "--store", f"{tmp_path}/newdir/", *FAST), "folder")
    store = nb_store(tmp_path / "s.sqlite")
    one_error(cli("evaluate", "--store", store, "--plot", f"{tmp_path}/plots/"), "folder")
    assert files_under(tmp_path) == ["s.sqlite"]


# ---------------------------------------------------------------- the store: its schema, its rows, its file


def rebuild_results(path, drop: str):
    """The results table made again without `drop` (a column or the UNIQUE key), rows kept."""
    from epsinas_onnx.experiments.store import COLUMNS

    db = sqlite3.connect(path)
    columns = [c for c in ("id", *COLUMNS) if c != drop]
    db.execute("ALTER TABLE results RENAME TO old")
    db.execute(f"CREATE TABLE results ({', '.join(columns)})")
    db.execute(f"INSERT INTO results SELECT {', '.join(columns)} FROM old")
    db.execute("DROP TABLE old")
    db.commit()
    db.close()


def add_trigger(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER forget AFTER INSERT ON results BEGIN DELETE FROM results WHERE id = new.id; END")
    db.commit()
    db.close()


SCHEMA_CASES = {
    "no unique key": lambda p: rebuild_results(p, "none"),
    "a column dropped": lambda p: rebuild_results(p, "device"),
    "a trigger that deletes rows": add_trigger,
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
@pytest.mark.parametrize("command", ["bench", "results"])
def test_a_store_of_another_schema_names_the_fix_that_fixes_it(tmp_path, case, command):
    store = nb_store(tmp_path / "s.sqlite")
    SCHEMA_CASES[case](store)
    args = ["bench", "nb201", "--sample", 2, "--store", store, *FAST] if command == "bench" else ["results", "--store", store]
    line = one_error(cli(*args), "not a results store of this version", "move it aside or give --store another file")
    assert "rerun" not in line


def test_the_summary_counts_the_rows_kept(tmp_path, monkeypatch):
    """Rows that vanish from the store while bench writes (another program) are not counted as kept."""
    store_path = tmp_path / "s.sqlite"
    original = ResultStore.commit

    def commit_then_lose(self):
        original(self)
        self.db.execute("DELETE FROM results")
        self.db.commit()

    monkeypatch.setattr(ResultStore, "commit", commit_then_lose)
    line = one_error(cli("bench", "nb201", "--sample", 3, "--store", store_path, *FAST), "0 of the 3", str(store_path))
    assert "scored" not in line


def test_a_store_deleted_while_bench_runs(tmp_path, monkeypatch):
    store_path = tmp_path / "s.sqlite"
    original = ResultStore.commit

    def commit_then_delete(self):
        original(self)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{store_path}{suffix}")
            except FileNotFoundError:
                pass

    monkeypatch.setattr(ResultStore, "commit", commit_then_delete)
    one_error(cli("bench", "nb201", "--sample", 3, "--store", store_path, *FAST), str(store_path), "deleted")


BAD_ROWS = {
    "weights not JSON": {"weights": "not json"},
    "settings not JSON": {"settings": "{oops"},
    "settings nested too deeply": {"settings": "[" * 100_000 + "]" * 100_000},
    "settings not an object": {"settings": "[1, 2]"},
    "weights not two numbers": {"weights": '["a"]'},
}


@pytest.mark.parametrize("case", BAD_ROWS)
@pytest.mark.parametrize("command", ["results --format json", "evaluate"])
def test_a_stored_row_that_is_not_ours(tmp_path, case, command):
    store = nb_store(tmp_path / "s.sqlite")
    db = sqlite3.connect(store)
    for column, value in BAD_ROWS[case].items():
        db.execute(f"UPDATE results SET {column} = ?", (value,))
    db.commit()
    db.close()
    one_error(cli(*command.split(), "--store", store), str(store), "row 1")
