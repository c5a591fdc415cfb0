"""Fuzzing the command line in-process: mutated bytes of a valid model, and
random argument combinations over good and bad models and data files. The
promise: exit 0 or 1, never an internal error or a traceback; an error is one
line on stderr; a failed `rewrite -o` leaves no file behind."""

import contextlib
import io
import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnx import numpy_helper

from epsinas_onnx.cli import main
from tests.onnx_graphs import conv_bn_relu, init, model, out

FUZZ = settings(max_examples=int(os.environ.get("EPSINAS_FUZZ_EXAMPLES", 300)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run_main(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(args)
        except SystemExit as exc:  # main must return, not exit
            code = f"SystemExit({exc.code})"
    return code, stdout.getvalue(), stderr.getvalue()


def assert_clean(code, err: str) -> None:
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pool of models and data files, good and bad."""
    d = tmp_path_factory.mktemp("fuzz")
    onnx.save(conv_bn_relu(), d / "good.onnx")
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["seq", "batch"])
    onnx.save(model([helper.make_node("Gather", ["emb", "tokens"], ["e"]), helper.make_node("MatMul", ["e", "proj"], ["y"])],
                    [tokens], [out("y", 3)], [init("emb", [10, 4]), init("proj", [4, 3])]), d / "tokens.onnx")
    fixed = conv_bn_relu()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(fixed, d / "fixed.onnx")
    onnx.save(conv_bn_relu(), d / "ext.onnx", save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (d / "junk.onnx").write_bytes(b"\x08\x07" + bytes(range(256)))
    (d / "dir.onnx").mkdir()
    np.savez(d / "images.npz", images=np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    np.save(d / "floats.npy", np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32))
    np.save(d / "scalar.npy", np.float32(1))
    np.save(d / "ints.npy", np.arange(24).reshape(6, 4))
    (d / "text.txt").write_text("the cat sat on the mat\n" * 30)
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x01" * 10)
    (d / "empty.txt").write_text("")
    return d


@pytest.fixture(scope="module")
def mutant_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mutants")


GOOD = conv_bn_relu().SerializeToString()


@FUZZ
@given(st.sampled_from(["flip", "truncate", "insert", "splice"]), st.data())
def test_mutated_model_bytes(mutant_dir, kind, data):
    raw = bytearray(GOOD)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        i, j = sorted(data.draw(st.lists(st.integers(0, len(raw)), min_size=2, max_size=2)))
        raw = raw[:i] + raw[j:] + raw[i:j]
    path = mutant_dir / "mutant.onnx"
    path.write_bytes(bytes(raw))
    target = mutant_dir / "rewritten.onnx"
    target.unlink(missing_ok=True)
    for args in (["score", str(path), "--batch-size", "2", "--device", "cpu"],
                 ["rewrite", str(path), "--weight", "0.5", "-o", str(target)]):
        code, _, err = run_main(args)
        event(f"{kind}: {args[0]} exit {code}")
        assert_clean(code, err)
    assert target.exists() == (code == 0)
    assert sorted(p.name for p in mutant_dir.iterdir()) in (["mutant.onnx"], ["mutant.onnx", "rewritten.onnx"])


MODELS = ["good.onnx", "tokens.onnx", "fixed.onnx", "ext.onnx", "junk.onnx", "dir.onnx", "missing.onnx"]
DATA = ["images.npz", "floats.npy", "scalar.npy", "ints.npy", "text.txt", "binary.txt", "empty.txt", "dir.onnx",
        "missing.npz"]


def mixed(valid, invalid):
    """Half the draws valid, so runs get past the first check and deeper."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(invalid))


BAD_NUMBERS = ["0", "-1", "nan", "inf", "x", "", "1e400", "99999999999999999999"]
OPTIONS = {
    "--data": mixed(["images.npz", "floats.npy", "text.txt"], DATA),
    "--batch-size": mixed(["1", "2", "4", "6"], BAD_NUMBERS + ["7", "100000000"]),
    "--seq-len": mixed(["1", "3", "5"], BAD_NUMBERS + ["1000000"]),
    "--shuffle-seed": mixed(["0", "3"], BAD_NUMBERS),
    "--seed": mixed(["0", "1"], BAD_NUMBERS),
    "--weights": st.tuples(mixed(["1e-7", "1", "10"], BAD_NUMBERS + ["1e-45", "3e38"]),
                           mixed(["1e-4", "1", "0.5"], BAD_NUMBERS + ["-1e30"])),
    "--norm": mixed(["auto", "cifar10", "none", "imagenet16"], ["bogus"]),
    "--synthetic": mixed(["grey", "normal", "uniform", "uniform+"], ["bogus"]),
    "--token-layout": mixed(["seq-first", "batch-first"], ["bogus"]),
    "--input": mixed(["x", "tokens"], ["nope", ""]),
    "--output": mixed(["y"], ["nope", ""]),
    "--threads": mixed(["1", "2"], BAD_NUMBERS),
    "--bn-gamma": mixed(["w", "one"], ["two"]),
    "--bias": mixed(["zero", "w"], ["bogus"]),
    "--embedding": mixed(["uniform", "keep"], ["bogus"]),
    "--format": mixed(["table", "json", "csv"], ["xml"]),
    "--weight": mixed(["0.5", "1e-7"], BAD_NUMBERS),
    "--explain": st.just(None),
}


@FUZZ
@given(st.sampled_from(["score", "rewrite"]), mixed(["good.onnx", "tokens.onnx", "ext.onnx"], MODELS),
       st.sets(st.sampled_from(sorted(OPTIONS)), max_size=5), st.data())
def test_random_argument_combinations(files, command, model_name, chosen, data):
    args = [command, str(files / model_name), "--device", "cpu"] if command == "score" else [command, str(files / model_name)]
    for option in chosen:
        value = data.draw(OPTIONS[option])
        args.append(option)
        if isinstance(value, tuple):
            args.extend(value)
        elif value is not None:
            args.append(str(files / value) if value in DATA else value)
    target = None
    if command == "rewrite" and data.draw(st.booleans()):
        target = files / "out" / "rewritten.onnx"
        target.parent.mkdir(exist_ok=True)
        target.unlink(missing_ok=True)
        args += ["-o", str(target)]
    code, _, err = run_main(args)
    event(f"{command} exit {code}")
    assert_clean(code, err)
    if target is not None:
        assert target.exists() == (code == 0)
        assert [p.name for p in target.parent.iterdir()] in ([], ["rewritten.onnx"])


# ---------------------------------------------------------------- external data and Loop fields

LOCATIONS = ["w.bin", "./w.bin", "sub/../w.bin", "../w.bin", "../../../../etc/passwd", "/etc/passwd", "/dev/zero",
             "", ".", "sub", "missing.bin", "link.bin", "w.bin\x00.txt", "é.bin"]
BYTE_COUNTS = [None, "", "0", "4", "432", "-1", "abc", "1e3", "99999999999999999999", str(2**63)]


@pytest.fixture(scope="module")
def external_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("external")
    (d / "w.bin").write_bytes(np.ones(4 * 3 * 3 * 3 + 8, np.float32).tobytes())
    (d / "sub").mkdir()
    os.symlink("w.bin", d / "link.bin")
    return d


@FUZZ
@given(st.sampled_from(LOCATIONS), st.sampled_from(BYTE_COUNTS), st.sampled_from(BYTE_COUNTS),
       st.sampled_from([None, "checksum", "basepath"]), st.booleans())
def test_mutated_external_data_fields(external_dir, location, offset, length, extra_key, rewrite):
    """The conv weight's external_data entries drawn from good and hostile values:
    a clean exit 0 or 1 always, a score only from the file in the folder."""
    m = conv_bn_relu()
    tensor = m.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length), (extra_key, "x")):
        if key is not None and value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    path = external_dir / "mutant.onnx"
    path.write_bytes(m.SerializeToString())
    target = external_dir / "out" / "rewritten.onnx"
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    args = ["rewrite", str(path), "--weight", "0.5", "-o", str(target)] if rewrite else \
        ["score", str(path), "--batch-size", "2", "--device", "cpu"]
    code, _, err = run_main(args)
    event(f"external data: {args[0]} exit {code}")
    assert_clean(code, err)
    if code == 0:  # only a file inside the folder, read within its bounds
        assert location in ("w.bin", "./w.bin", "sub/../w.bin"), (location, offset, length)
    if rewrite:
        assert target.exists() == (code == 0)


def loop_graph(trip_count, start_cond, body_cond, carried_shape):
    body_nodes = [helper.make_node("Add", ["y_in", "one"], ["y_out"])]
    if body_cond == "identity":
        body_nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    else:  # a constant condition, or the iteration count compared with 3
        body_nodes.append(helper.make_node("Less", ["i", "three"], ["cond_out"]) if body_cond == "i < 3" else
                          helper.make_node("Constant", [], ["cond_out"], value=numpy_helper.from_array(np.array(body_cond == "true"))))
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_in", TensorProto.FLOAT, carried_shape)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_out", TensorProto.FLOAT, carried_shape)],
        [numpy_helper.from_array(np.ones((), np.float32), "one"), numpy_helper.from_array(np.array(3, np.int64), "three")])
    inits = [numpy_helper.from_array(np.array(start_cond), "cond"), init("w", [4, 3])]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "trips"))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Loop", ["" if trip_count is None else "trips", "cond", "h"], ["y"], body=body)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@settings(FUZZ, max_examples=int(os.environ.get("EPSINAS_FUZZ_LOOP_EXAMPLES", 40)))
@given(st.sampled_from([None, 0, 1, 7, -1, 2**62]), st.booleans(), st.sampled_from(["identity", "true", "false", "i < 3"]),
       st.sampled_from([["n", 3], [None, 3], [2, 3], [5, 5]]))
def test_mutated_loop_fields(mutant_dir, trip_count, start_cond, body_cond, carried_shape):
    """Loops that stop, never stop or are malformed: a clean exit 0 or 1, an
    endless one stopped by --timeout with its one line."""
    path = mutant_dir / "loop.onnx"
    path.write_bytes(loop_graph(trip_count, start_cond, body_cond, carried_shape).SerializeToString())
    code, _, err = run_main(["score", str(path), "--batch-size", "2", "--device", "cpu", "--timeout", "0.3"])
    event(f"loop exit {code}{' (timeout)' if 'ran for more than' in err else ''}")
    assert_clean(code, err)
