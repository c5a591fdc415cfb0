"""Scoring a model: the batch (inputs.py, datasets.py), the model file
(model_io.py), ONNX Runtime sessions (runtime.py), the metric and its modes
(metric.py, modes.py), and the library calls that put them together
(scorer.py: score, prepare_model; ranking.py: several models on one batch).
"""
