"""The scoring core: everything `epsinas-onnx score` needs, on onnx, onnx-ir,
onnxruntime and numpy alone (the small-device install).

- core/ itself: what every layer shares (errors, option objects, limits,
  checked file reading, packaged tables, atomic writes, stop signals);
- core/rewriting/: the graph rewrite (op roles, the passes, channel collapse);
- core/scoring/: batches, sessions, the metric and its modes, score().

The core imports nothing from spaces/, bridges/, experiments/ or cli/
(pyproject's import-linter contracts). Nothing is imported here: the CLI
reads core.options before any ONNX library is loaded.
"""
