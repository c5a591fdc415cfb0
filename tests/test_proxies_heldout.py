"""benchmarks/proxies_heldout.py's sample: the held-out samples of docs/proxies.md."""

import math

import pytest

from benchmarks.proxies_heldout import sample
from epsinas_onnx.core.tables import packaged
from epsinas_onnx.experiments.evaluation import read_keyed
from epsinas_onnx.spaces import get_space


def test_sample_is_seeded_distinct_and_has_targets():
    drawn = sample("tnb_macro", "tnb_macro_proxies", 20, seed=0, dataset="class_scene")
    assert drawn == sample("tnb_macro", "tnb_macro_proxies", 20, seed=0, dataset="class_scene")
    assert drawn != sample("tnb_macro", "tnb_macro_proxies", 20, seed=1, dataset="class_scene")
    assert len(set(drawn)) == 20
    space = get_space("tnb_macro")
    targets, _ = read_keyed(packaged("tnb_macro_proxies"), space, arch_column="arch", columns=["val_accuracy"],
                            dataset="class_scene")
    assert all(math.isfinite(targets[text]["val_accuracy"]) for text in drawn)
    # every skeleton of class_scene (662 of the table's 725) can be drawn, no other
    assert sorted(sample("tnb_macro", "tnb_macro_proxies", 662, dataset="class_scene")) == sorted(targets)


def test_sample_larger_than_the_table_is_refused():
    with pytest.raises(SystemExit, match="143 architectures with a target"):
        sample("nb101", "nb101_test_143", 144)
