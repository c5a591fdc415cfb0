"""Export Keras models through tf2onnx, and record what each should score.

Needs TensorFlow, tf-keras and tf2onnx, kept out of the project's environment:

    python3 -m venv tfvenv
    tfvenv/bin/pip install tensorflow-cpu tf-keras tf2onnx
    tfvenv/bin/python exporters/make_keras_models.py

(made with tensorflow 2.21.0, keras 3.15.1, tf-keras 2.21.0, tf2onnx 1.17.0,
Python 3.11; tf-keras pulls in the `tensorflow` package beside tensorflow-cpu.)

- keras2_cnn.onnx: tf-keras (Keras 2) Conv2D (no bias) + BatchNormalization
  + ReLU blocks, a residual Add, a DepthwiseConv2D, Dense layers; NHWC input
  (tf2onnx wraps the NCHW convs and BNs in Transposes; Dense becomes MatMul +
  Add). Keras 2's BN is one FusedBatchNormV3 op, which tf2onnx turns into a
  BatchNormalization node; converted with tf2onnx's optimizers except
  "remove_back_to_back", the one that folds BN into the preceding Conv.
- keras3_cnn_bn_folded.onnx: the same network in Keras 3 (the `keras` that
  TensorFlow 2.21 ships). Keras 3 writes BN out as mul / sub with the moving
  statistics, which TensorFlow folds into constants while freezing the graph,
  before tf2onnx sees it: BN cannot survive, whatever tf2onnx's options. The
  scorer warns (conv biases, no BatchNormalization).
- keras3_lstm_lm.onnx: Keras 3 Embedding -> LSTM(return_sequences) -> Dense,
  batch-first int32 tokens (tf2onnx rewrites the LSTM loop into one ONNX LSTM
  op). The initial states are weights of a small layer (InitialState), passed
  as initial_state, so they are exported as constants the scorer sets to w.

Every weight is randomised before conversion (values identify tensors, see
_common.expected_roles). The expected score is computed by Keras on a fresh
model with the reference initialisation set through the variables (kernels w,
biases 0, BN gamma w beta 0, embedding default_rng(21).random, initial states
w), the model called with training=True (BN normalises with batch statistics).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain float32 kernels

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (Keras 2)
import tf2onnx  # noqa: E402
import tf2onnx.optimizer  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED_DATA = HERE.parent.parent / "shared" / "data"
MODELS = HERE.parent / "models"  # where the exported models and expected_scores.json live

from _common import cifar10_nchw, default_tokens, expected_roles, reference_score, update_expected  # noqa: E402

WEIGHT_PAIRS = [(1e-7, 1.0), (1e-4, 10.0), (1e-5, 1e-3)]
IMAGE_BATCH = 16
TOKEN_BATCH, SEQ_LEN, VOCAB, HIDDEN = 8, 12, 50, 24
EMBEDDING_SEED = 21


class InitialState(keras.layers.Layer):
    """A learned initial state (1, units), repeated over the batch of `tokens`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.state = self.add_weight(shape=(1, self.units), initializer="zeros", name="state")

    def call(self, tokens):
        batch = keras.ops.shape(tokens)[0]
        return keras.ops.broadcast_to(self.state, (batch, self.units))


def cnn(K=keras):
    """The CNN in Keras module K (keras: Keras 3, tf_keras: Keras 2)."""
    x_in = K.Input((32, 32, 3), name="x")

    def conv_bn(x, filters, stride=1):
        x = K.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        return K.layers.BatchNormalization()(x)

    x = K.layers.ReLU()(conv_bn(x_in, 8))
    y = K.layers.ReLU()(conv_bn(x, 8))
    x = K.layers.Add()([x, conv_bn(y, 8)])
    x = K.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = K.layers.ReLU()(K.layers.BatchNormalization()(x))
    x = K.layers.ReLU()(conv_bn(x, 16, stride=2))
    x = K.layers.GlobalAveragePooling2D()(x)
    x = K.layers.Dense(16, activation="relu")(x)
    return K.Model(x_in, K.layers.Dense(1)(x), name="cnn")


def lstm_lm() -> keras.Model:
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 16)(tokens)
    h0 = InitialState(HIDDEN, name="h0")(tokens)
    c0 = InitialState(HIDDEN, name="c0")(tokens)
    x = keras.layers.LSTM(HIDDEN, return_sequences=True)(x, initial_state=[h0, c0])
    return keras.Model(tokens, keras.layers.Dense(VOCAB)(x), name="keras_lstm_lm")


def variable_name(variable) -> str:
    """A variable's unique path (Keras 3) or name (Keras 2)."""
    return getattr(variable, "path", None) or variable.name


def role_of(layer, variable) -> str:
    """The role of a Keras variable, from its layer kind alone."""
    name = variable_name(variable).split("/")[-1].split(":")[0]
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return {"gamma": "norm-scale", "beta": "norm-bias", "moving_mean": "norm-stats",
                "moving_variance": "norm-stats"}[name]
    if kind == "Embedding":
        return "embedding"
    if kind == "InitialState":
        return "initial-state"
    if kind in ("Conv2D", "DepthwiseConv2D", "Dense", "LSTM"):
        return "bias" if name == "bias" else "weight"
    raise ValueError(f"no role for {variable_name(variable)}")


def randomise(model) -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(0)
    params = {}
    for layer in model.layers:
        for variable in layer.weights:
            value = rng.standard_normal(variable.shape).astype(np.float32)
            if "moving_variance" in variable_name(variable):
                value = np.abs(value) + 0.5
            variable.assign(value)
            params[variable_name(variable)] = (value, role_of(layer, variable))
    return params


def init_reference(model, w: float) -> None:
    for layer in model.layers:
        for variable in layer.weights:
            role = role_of(layer, variable)
            shape = tuple(variable.shape)
            if role in ("weight", "norm-scale", "initial-state"):
                value = np.full(shape, w)
            elif role == "embedding":
                value = np.random.default_rng(EMBEDDING_SEED).random(shape).astype(np.float32)  # the scorer's table
            elif "moving_variance" in variable_name(variable):
                value = np.ones(shape)  # unused: training=True normalises with the batch's statistics
            else:
                value = np.zeros(shape)
            variable.assign(value.astype(getattr(variable.dtype, "as_numpy_dtype", variable.dtype)))


def convert(model, spec, path: Path, keep_bn: bool = True) -> onnx.ModelProto:
    optimizers = {k: v for k, v in tf2onnx.optimizer._get_optimizers().items() if not (keep_bn and k == "remove_back_to_back")}
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, optimizers=optimizers)
    onnx.save(proto, path)
    return proto


def set_floatx(K, floatx: str) -> None:
    K.backend.set_floatx(floatx)
    if hasattr(K, "config") and hasattr(K.config, "set_dtype_policy"):  # Keras 3
        K.config.set_dtype_policy(floatx)


def keras_scores(make, K, batch) -> list[dict]:
    """The reference score for each pair (float32, as the reference computes
    it) and the same computed in float64 throughout."""
    rows = []
    for pair in WEIGHT_PAIRS:
        row = {"weights": list(pair)}
        for floatx, key in (("float32", "score"), ("float64", "score_float64")):
            set_floatx(K, floatx)
            outs = []
            for w in pair:
                model = make()
                init_reference(model, w)
                x = batch.astype(floatx) if np.issubdtype(batch.dtype, np.floating) else batch
                outs.append(np.asarray(model(x, training=True)))
            set_floatx(K, "float32")
            value = reference_score(outs[0], outs[1], dtype=np.dtype(floatx).type)
            row[key] = None if np.isnan(value) else value
        rows.append(row)
    return rows


def main() -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    entries = {}
    images = np.ascontiguousarray(cifar10_nchw(SHARED_DATA, IMAGE_BATCH).transpose(0, 2, 3, 1))  # NHWC
    tokens = np.ascontiguousarray(default_tokens(VOCAB, SEQ_LEN, TOKEN_BATCH, seed=0).T.astype(np.int32))
    image_spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="x"),)
    image_kwargs = {"data": "inputs/cifar10_test_1000.npz", "batch_size": IMAGE_BATCH, "norm": "cifar10"}
    jobs = [  # file, model maker, Keras, batch, input spec, keep BN, score kwargs
        ("keras2_cnn.onnx", lambda: cnn(tf_keras), tf_keras, images, image_spec, True, image_kwargs),
        ("keras3_cnn_bn_folded.onnx", lambda: cnn(keras), keras, images, image_spec, True, image_kwargs),
        ("keras3_lstm_lm.onnx", lstm_lm, keras, tokens, (tf.TensorSpec((None, None), tf.int32, name="tokens"),), True,
         {"batch_size": TOKEN_BATCH, "seq_len": SEQ_LEN, "seed": 0, "token_layout": "batch-first"}),
    ]
    for name, make, K, batch, spec, keep_bn, score_kwargs in jobs:
        scores = keras_scores(make, K, batch)
        model = make()
        params = randomise(model)
        proto = convert(model, spec, MODELS / name, keep_bn)
        bn_nodes = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
        entries[name] = {
            "framework": f"tensorflow {tf.__version__}, keras {K.__version__}",
            "exporter": f"tf2onnx {tf2onnx.__version__} from_keras(opset=17, optimizers=all but remove_back_to_back)",
            "score_kwargs": score_kwargs,
            "expected": scores,
            "roles": expected_roles(proto, params),
        }
        if "bn_folded" in name:
            assert bn_nodes == 0, "Keras 3 BN was expected to be folded away"
            entries[name]["bn_folded"] = (
                "Keras 3 BatchNormalization is folded into the convs by TensorFlow's graph freezing; the "
                "expected scores are Keras's with batch-statistics BN, which this file cannot reproduce"
            )
        print(f"{name}: {(MODELS / name).stat().st_size} bytes, {bn_nodes} BN nodes, scores {[s['score'] for s in scores]}")
    update_expected(entries, f"python exporters/make_keras_models.py  (tensorflow {tf.__version__}, "
                    f"keras {keras.__version__}, tf-keras {tf_keras.__version__}, tf2onnx {tf2onnx.__version__})")


if __name__ == "__main__":
    main()
