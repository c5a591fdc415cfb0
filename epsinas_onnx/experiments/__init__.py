"""Experiments over many models: bench (a search space into the results
store, run by executors.py), evaluate (evaluation.py, against the benchmark
tables and files), search, calibrate and ablate, and the plots they draw.
selection.py picks the stored rows and targets a command works on.
"""
