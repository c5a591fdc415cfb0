"""The graph rewrite: every weight one shared constant, biases zero, embeddings
random, BatchNorm on batch statistics, and the channel collapse.

op_registry.py: one rule per op, keyed by op and opset; roles.py: the role of
every constant tensor (weight, bias, BN parameter, embedding, ...);
passes/: one model -> model transformation each, composed in
passes/pipeline.py; rewrite.py: the policy and the pipeline as one call;
computation_key.py: a hash of what a rewritten graph computes.
"""
