"""Score a Keras model directly: convert it with tf2onnx as docs/exporting.md
documents ("TensorFlow / Keras through tf2onnx"), into a temporary folder,
and score that file with the usual scorer.

    import epsinas_onnx.keras
    result = epsinas_onnx.keras.score(model, weights=(1e-7, 1.0))

Needs the `keras` extra (tensorflow-cpu, tf-keras, tf2onnx). BatchNormalization
survives for Keras 2 models (tf_keras); Keras 3 writes BN out in ops that
TensorFlow folds into constants before tf2onnx sees them, and the scorer
warns. TensorFlow and tf2onnx are imported here only, when a function is
called.
"""

from __future__ import annotations

from epsinas_onnx.core.errors import UserError, first_line
from epsinas_onnx.bridges.framework_export import quiet, score_exported
from epsinas_onnx.core.scoring.scorer import DEFAULT_WEIGHTS, ScoreResult

EXTRA_HINT = 'pip install "epsinas-onnx[keras]"'
OPSET = 17  # LayerNormalization's first opset


def score(model, data=None, weights=DEFAULT_WEIGHTS, *, input_signature=None, **settings) -> ScoreResult:
    """The epsinas score of the Keras `model`, converted as export() does.

    input_signature: tf.TensorSpecs of the inputs (None: tf2onnx derives
    them from the model's inputs, batch dim dynamic). data and the keyword
    settings are epsinas_onnx.score's: the batch scored is `data`, or the
    default batch when it is None (an NHWC model is fed channels-last).
    """
    return score_exported(lambda path: export(model, path, input_signature), data, weights, settings)


def export(model, path, input_signature=None) -> list[str]:
    """Write `model` to `path` with every tf2onnx optimizer but
    `remove_back_to_back`, the one that folds BatchNormalization into the
    convolution before it. Returns the warnings to report: a Keras 3 model's
    BN is folded all the same, and in an untrained model (zero moving mean)
    it leaves not even a conv bias for the scorer to notice."""
    tf2onnx = _import_tf2onnx()
    try:
        with quiet():
            keep_bn = {name: optimizer for name, optimizer in tf2onnx.optimizer._get_optimizers().items()
                       if name != "remove_back_to_back"}
            tf2onnx.convert.from_keras(model, input_signature=input_signature, opset=OPSET, optimizers=keep_bn,
                                       output_path=str(path))
    except Exception as exc:
        raise UserError(f"tf2onnx cannot convert the model ({type(exc).__name__}: {first_line(exc)})") from None
    folded = sum(type(layer).__name__ == "BatchNormalization" and type(layer).__module__.startswith("keras.")
                 for layer in _all_layers(model))
    if folded:
        return [f"the model is a Keras 3 model: TensorFlow folds its {folded} BatchNormalization layer(s) into "
                "constants before tf2onnx sees them, so the score will not follow the reference semantics "
                "(build the model with tf_keras, Keras 2, whose BN survives)"]
    return []


def _all_layers(model):
    """Every layer, nested models' included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _import_tf2onnx():
    try:
        import tf2onnx
        import tf2onnx.optimizer
    except ImportError as exc:
        raise UserError(f"scoring a Keras model needs TensorFlow and tf2onnx ({exc.name} is missing): {EXTRA_HINT}") from None
    return tf2onnx
