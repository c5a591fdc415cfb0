"""Hostile and careless inputs, run as the command a user runs: each case is
built in a temporary folder with onnx.helper / numpy, and must end in exit 1
with exactly one stderr line "error: ..." naming the problem (or exit 0 with
its warning, where the input is legitimate), no traceback, never the
internal-error exit 3, no file written, within a time limit. The external-data
cases also check that nothing outside the model's folder is read: the file a
link points to there is a FIFO, which an open() would block on."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ROOT, default_sigint, run_cli_in_process
from tests.onnx_graphs import conv_bn_relu, image_input, init, model, out

CASE_TIMEOUT = 60  # seconds: generous for a loaded 2-core machine; a case takes 1-3 s


def run(*args, env=None, timeout=CASE_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epsinas_onnx", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- models


def external(tmp_path, location, offset="0", length=None, name="ext.onnx"):
    """conv_bn_relu with its conv weight stored at `location` (not created here)."""
    m = conv_bn_relu()
    tensor = m.graph.initializer[0]
    nbytes = numpy_helper.to_array(tensor).nbytes
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length or str(nbytes))):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    onnx.save(m, folder / name)
    return folder / name


def outside_fifo(tmp_path):
    """A FIFO outside the model's folder: reading it would block the run."""
    (tmp_path / "outside").mkdir(exist_ok=True)
    fifo = tmp_path / "outside" / "secret"
    os.mkfifo(fifo)
    return fifo


def ext_dotdot(tmp_path):
    outside_fifo(tmp_path)
    return ["score", external(tmp_path, "../outside/secret")], "outside the model's folder"


def ext_deep_dotdot(tmp_path):
    return ["score", external(tmp_path, "../../../../../../etc/passwd")], "outside the model's folder"


def ext_absolute(tmp_path):
    return ["score", external(tmp_path, str(outside_fifo(tmp_path)))], "absolute path"


def ext_dev_zero(tmp_path):
    return ["score", external(tmp_path, "/dev/zero")], "absolute path"


def ext_symlink_out(tmp_path):
    path = external(tmp_path, "w.bin")
    os.symlink(outside_fifo(tmp_path), path.parent / "w.bin")
    return ["score", path], "outside the model's folder"


def ext_symlink_in(tmp_path):
    path = external(tmp_path, "w.bin")
    (path.parent / "real.bin").write_bytes(np.ones(4 * 3 * 3 * 3, np.float32).tobytes())
    os.symlink("real.bin", path.parent / "w.bin")
    return ["score", path], "a symbolic link"


def ext_symlinked_folder(tmp_path):
    path = external(tmp_path, "sub/secret")
    outside_fifo(tmp_path)
    os.symlink(tmp_path / "outside", path.parent / "sub")
    return ["score", path], "outside the model's folder"


def ext_hard_link(tmp_path):
    path = external(tmp_path, "w.bin")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)
    os.link(secret, path.parent / "w.bin")
    return ["score", path], "hard links"


def ext_directory(tmp_path):
    path = external(tmp_path, "w.bin")
    (path.parent / "w.bin").mkdir()
    return ["score", path], "not a regular file"


def ext_fifo(tmp_path):
    path = external(tmp_path, "w.bin")
    os.mkfifo(path.parent / "w.bin")
    return ["score", path], "not a regular file"


def ext_past_the_end(tmp_path):
    path = external(tmp_path, "w.bin", offset="100")
    (path.parent / "w.bin").write_bytes(b"\0" * 200)
    return ["score", path], "is the file truncated?"


def ext_bad_offset(tmp_path):
    path = external(tmp_path, "w.bin", offset="-5")
    (path.parent / "w.bin").write_bytes(b"\0" * 4096)
    return ["score", path], "not a byte count"


def ext_wrong_length(tmp_path):
    path = external(tmp_path, "w.bin", length="8")
    (path.parent / "w.bin").write_bytes(b"\0" * 4096)
    return ["score", path], "needs 432 bytes"


def ext_rewrite_symlink(tmp_path):
    """rewrite -o would copy the linked file into its output (onnx 1.16-1.20)."""
    path = external(tmp_path, "w.bin")
    os.symlink("/etc/passwd", path.parent / "w.bin")
    return ["rewrite", path, "-o", tmp_path / "out.onnx"], "outside the model's folder"


def model_dev_zero(tmp_path):
    return ["score", "/dev/zero"], "not a regular file"


def model_fifo(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx"], "not a regular file"


def no_outputs(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [image_input()], [])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx"], "no graph outputs"


def initializer_output(tmp_path):
    m = conv_bn_relu()
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("conv.w", TensorProto.FLOAT, [4, 3, 3, 3]))
    onnx.save(m, tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx"], "is an initializer"


def name_not_utf8(tmp_path):
    raw = conv_bn_relu().SerializeToString().replace(b"conv.w", b"conv\xff\xfe")
    (tmp_path / "m.onnx").write_bytes(raw)
    return ["score", tmp_path / "m.onnx"], "cannot be read as an ONNX graph"


def conv_wrong_input_channels(tmp_path, collapse="--collapse"):
    m = conv_bn_relu()
    m.graph.initializer[0].CopyFrom(init("conv.w", [4, 5, 3, 3]))
    onnx.save(m, tmp_path / "m.onnx")
    fragment = "input channels" if collapse == "--collapse" else "Input channels C is not equal"
    return ["score", tmp_path / "m.onnx", "--batch-size", 2, collapse], fragment


def conv_wrong_input_channels_full_width(tmp_path):
    return conv_wrong_input_channels(tmp_path, "--no-collapse")


def second_conv_wrong_input_channels(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    onnx.save(model(nodes, [image_input()], [out("y")], [init("w1", [4, 3, 3, 3]), init("w2", [4, 7, 3, 3])]),
              tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx", "--batch-size", 2], "weight for 7 input channels"


def batch_norm_wrong_size(tmp_path):
    m = conv_bn_relu()
    for tensor in m.graph.initializer[1:]:
        tensor.CopyFrom(init(tensor.name, [6], 1.0))
    onnx.save(m, tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx", "--batch-size", 2], "of shape [6] for an input of 4 channels"


def gemm_wrong_inputs(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 48])
    onnx.save(model([helper.make_node("Gemm", ["x", "w"], ["y"])], [x], [out("y", 2)], [init("w", [50, 2])]),
              tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx", "--batch-size", 2], "has a weight for 50 inputs on an input of 48"


def loop_model(trip_count=None):
    """MatMul then a Loop adding 1 while its condition (always true) holds:
    without a trip count it never stops."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["y_in", "one"], ["y_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_in", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_out", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.ones((), np.float32), "one")])
    inits = [numpy_helper.from_array(np.array(True), "cond"), init("w", [4, 3])]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "trips"))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Loop", ["" if trip_count is None else "trips", "cond", "h"], ["y"], body=body)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    return model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)


def endless_loop_with_timeout(tmp_path):
    onnx.save(loop_model(), tmp_path / "loop.onnx")
    return ["score", tmp_path / "loop.onnx", "--batch-size", 2, "--timeout", 1], "ran for more than 1 s"


def huge_loop_with_timeout(tmp_path):
    onnx.save(loop_model(10**15), tmp_path / "loop.onnx")
    return ["score", tmp_path / "loop.onnx", "--batch-size", 2, "--timeout", 0.5], "--timeout 0.5"


def bool_output(tmp_path):
    """Legitimate, but the score of a bool says little: exit 0 and a warning."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Greater", ["h", "zero"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    inits = [init("w", [4, 3]), numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    onnx.save(model(nodes, [x], [out("y", 2, TensorProto.BOOL)], inits), tmp_path / "m.onnx")
    return ["score", tmp_path / "m.onnx", "--batch-size", 8], "warning: the scored output holds bool"


def good(tmp_path):
    onnx.save(conv_bn_relu(), tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def threads_absurd(tmp_path):
    return ["score", good(tmp_path), "--threads", 4096], "EPSINAS_MAX_THREADS=4096"


def threads_cap_not_a_number(tmp_path):
    return ["score", good(tmp_path), "--threads", 2], "EPSINAS_MAX_THREADS='lots'", {"EPSINAS_MAX_THREADS": "lots"}


def bench_threads_absurd(tmp_path):
    return ["bench", "nb201", "--sample", 1, "--threads", 4096, "--store", tmp_path / "s.sqlite"], "EPSINAS_MAX_THREADS"


def workers_absurd(tmp_path):
    return ["bench", "nb201", "--sample", 2, "--workers", 1000, "--store", tmp_path / "s.sqlite"], "EPSINAS_MAX_WORKERS=1000"


def sample_huge(tmp_path):
    return ["bench", "nb201", "--sample", 10**8, "--store", tmp_path / "s.sqlite"], "--sample 100000000 is more than"


def space_sample_huge(tmp_path):
    return ["space", "nb101", "--sample", 10**9], "--sample 1000000000 is more than"


def weight_overflows_float32(tmp_path):
    return ["score", good(tmp_path), "--weights", "1e39", "1"], "beyond float32's range"


def weight_underflows_float32(tmp_path):
    return ["score", good(tmp_path), "--weights", "1e-50", "1"], "below float32's smallest"


def weights_equal_in_float32(tmp_path):
    return ["score", good(tmp_path), "--weights", "1", "1.00000001"], "the same number in float32"


def bench_negative_seed(tmp_path):
    return ["bench", "nb201", "--sample", 2, "--seed", -1, "--store", tmp_path / "s.sqlite"], "'--seed': -1"


def space_negative_seed(tmp_path):
    return ["space", "nb201", "--sample", 3, "--seed", -1], "'--seed': -1"


NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def archs_binary(tmp_path):
    (tmp_path / "archs.txt").write_bytes(bytes(range(128, 256)) * 4)
    return ["bench", "nb201", "--archs", tmp_path / "archs.txt", "--store", tmp_path / "s.sqlite"], "not UTF-8 text"


def archs_utf16(tmp_path):
    (tmp_path / "archs.txt").write_bytes((NB201 + "\n").encode("utf-16"))
    return ["bench", "nb201", "--archs", tmp_path / "archs.txt", "--store", tmp_path / "s.sqlite"], "UTF-16"


def archs_nul_bytes(tmp_path):
    (tmp_path / "archs.txt").write_bytes(NB201.encode() + b"\0\0\n")
    return ["bench", "nb201", "--archs", tmp_path / "archs.txt", "--store", tmp_path / "s.sqlite"], "NUL bytes"


def archs_fifo(tmp_path):
    os.mkfifo(tmp_path / "archs.txt")
    return ["bench", "nb201", "--archs", tmp_path / "archs.txt", "--store", tmp_path / "s.sqlite"], "not a regular file"


def nb101_deep_json_file(tmp_path):
    (tmp_path / "cell.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["export", "nb101", tmp_path / "cell.json", "-o", tmp_path / "o.onnx"], "nested too deeply"


def nb101_deep_json_archs(tmp_path):
    (tmp_path / "cells.txt").write_text('{"matrix": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    return ["bench", "nb101", "--archs", tmp_path / "cells.txt", "--store", tmp_path / "s.sqlite"], "nested too deeply"


def nlp_deep_json_file(tmp_path):
    (tmp_path / "recipe.json").write_text('{"a": ' * 50_000 + "1" + "}" * 50_000)
    return ["export", "nlp", tmp_path / "recipe.json", "-o", tmp_path / "o.onnx"], "nested too deeply"


def nlp_deep_json_argument(tmp_path):
    return ["export", "nlp", "[" * 2000 + "]" * 2000, "-o", tmp_path / "o.onnx"], "nested too deeply"


def nb101_binary_json(tmp_path):
    (tmp_path / "cell.json").write_bytes(bytes(range(128, 256)) * 8)
    return ["export", "nb101", tmp_path / "cell.json", "-o", tmp_path / "o.onnx"], "not UTF-8 text"


def nlp_utf16_json(tmp_path):
    (tmp_path / "recipe.json").write_bytes('{"x": {"op": "linear", "input": ["x"]}}'.encode("utf-16"))
    return ["export", "nlp", tmp_path / "recipe.json", "-o", tmp_path / "o.onnx"], "UTF-16"


CASES = [
    ext_dotdot, ext_deep_dotdot, ext_absolute, ext_dev_zero, ext_symlink_out, ext_symlink_in, ext_symlinked_folder,
    ext_hard_link, ext_directory, ext_fifo, ext_past_the_end, ext_bad_offset, ext_wrong_length, ext_rewrite_symlink,
    model_dev_zero, model_fifo, no_outputs, initializer_output, name_not_utf8,
    conv_wrong_input_channels, conv_wrong_input_channels_full_width, second_conv_wrong_input_channels,
    batch_norm_wrong_size, gemm_wrong_inputs, endless_loop_with_timeout, huge_loop_with_timeout, bool_output,
    threads_absurd, threads_cap_not_a_number, bench_threads_absurd, workers_absurd, sample_huge, space_sample_huge,
    weight_overflows_float32, weight_underflows_float32, weights_equal_in_float32,
    bench_negative_seed, space_negative_seed, archs_binary, archs_utf16, archs_nul_bytes, archs_fifo,
    nb101_deep_json_file, nb101_deep_json_archs, nlp_deep_json_file, nlp_deep_json_argument, nb101_binary_json,
    nlp_utf16_json,
]


# Cases run in a process of their own, with a time limit: those that would hang
# or exhaust the test run itself if the check they test were gone (a FIFO or
# /dev/zero read, an endless Loop, JSON nested past the recursion limit) and
# the one that sets an environment variable; the others run in this process
# (conftest.run_cli_in_process: the same exit status and output, without an
# interpreter start-up each).
IN_A_PROCESS = {
    ext_dotdot, ext_absolute, ext_dev_zero, ext_symlink_out, ext_symlinked_folder, ext_fifo, model_dev_zero,
    model_fifo, archs_fifo, endless_loop_with_timeout, huge_loop_with_timeout, nb101_deep_json_file,
    nb101_deep_json_archs, nlp_deep_json_file, nlp_deep_json_argument, threads_cap_not_a_number,
}


def files_under(folder):
    return {p for p in folder.rglob("*") if not p.is_symlink() or p.exists()}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input(tmp_path, case):
    args, fragment, *env = case(tmp_path)
    before = files_under(tmp_path)
    if case in IN_A_PROCESS:
        result = run(*args, env=env[0] if env else None)
    else:
        assert not env, "a case that sets the environment runs in a process of its own"
        result = run_cli_in_process(*args)
    err = result.stderr
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # ONNX Runtime's own log lines never reach stderr
    assert fragment in lines[0], lines[0]
    if fragment.startswith("warning:"):
        assert result.returncode == 0, err
    else:
        assert result.returncode == 1, (result.returncode, err)
        assert lines[0].startswith("error: ")
        assert result.stdout == ""
        assert files_under(tmp_path) == before  # no output file, no store, no temporary left


# ---------------------------------------------------------------- Ctrl-C during a long run


@pytest.mark.parametrize("timeout", [[], ["--timeout", "1000"], ["--timeout", "604800"]], ids=["none", "1000", "max"])
def test_ctrl_c_during_a_run_exits_130_within_a_second(tmp_path, timeout):
    """Whatever --timeout is accepted (up to a week), the watchdog is alive to hear Ctrl-C."""
    onnx.save(loop_model(), tmp_path / "loop.onnx")
    # the imports done first (a second or more on a loaded machine; the scorer's,
    # onnx and ONNX Runtime, too: a C extension's import holds up a signal until
    # it is done), so that the signal lands in the load, rewrite or the endless
    # run; each must stop at once
    script = ("import sys; import epsinas_onnx.cli; import epsinas_onnx.core.scoring.scorer; "
              "from epsinas_onnx.__main__ import main; print('imported', flush=True); sys.exit(main())")
    process = subprocess.Popen(
        [sys.executable, "-c", script, "score", str(tmp_path / "loop.onnx"), "--batch-size", "2", "--threads", "1",
         *timeout],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=default_sigint)
    try:
        assert process.stdout.readline() == "imported\n"
        time.sleep(1.5)  # well into the run: the load and rewrite take milliseconds
        assert process.poll() is None, process.stderr.read()
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        process.kill()
    err = process.stderr.read()
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted"], err
    assert took < 1.0, f"exit took {took:.2f} s after SIGINT"


def test_a_run_past_its_timeout_stops_in_process():
    """runtime.run_outputs: the watchdog stops an endless Loop at its deadline."""
    import onnxruntime as ort

    from epsinas_onnx.core.scoring import runtime

    session = ort.InferenceSession(loop_model().SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.zeros((2, 4), np.float32)}
    start = time.monotonic()
    with pytest.raises(runtime.RunTimeout, match="ran for more than 0.3 s"):
        runtime.run_outputs(session, ["y"], feeds, timeout=0.3)
    assert time.monotonic() - start < 10
    # a run that ends in time is untouched by an earlier deadline
    finite = ort.InferenceSession(loop_model(3).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = runtime.run_outputs(finite, ["y"], feeds, timeout=30)
    assert np.all(y == 3)


class _LoopSpace:
    """A stand-in search space whose only architecture is the endless Loop."""

    NAME = "loop"

    @staticmethod
    def format_arch(arch):
        return str(arch)

    @staticmethod
    def to_ir(arch, **_):
        import onnx_ir as ir

        return ir.from_proto(loop_model())

    @staticmethod
    def num_params(arch, **_):
        return 12


def test_bench_architecture_past_its_timeout_is_an_error_row():
    from epsinas_onnx.experiments.bench import score_architecture

    row = score_architecture(_LoopSpace, "endless", np.zeros((2, 4), np.float32), (1e-7, 1.0), export={},
                             settings={}, timeout=0.3)
    assert row["error"] is not None and "ran for more than 0.3 s" in row["error"], row
    assert np.isnan(row["score"]) and row["params"] == 12
