"""options.ScoringSettings.key(): the store key bench writes, byte for byte
the key of the code before the option objects (old stores must resume)."""

import itertools
import json

import pytest

from epsinas_onnx.core.scoring import inputs, modes
from epsinas_onnx.core.options import (DEFAULT_SEQ_LEN, EMBEDDING_CHOICES, MODE_CHOICES, NORM_CHOICES,
                                  SYNTHETIC_CHOICES, WEIGHT_INIT_CHOICES, ScoringSettings)
from epsinas_onnx.core.options import DEFAULT_WEIGHTS
from epsinas_onnx.spaces import get_space
from epsinas_onnx.core.rewriting.passes import constant_weight
from epsinas_onnx.experiments.store import settings_key

NB201_EXPORT = {"num_classes": 1, "resolution": 32, "seed": 0}
# the key's rules as they were written before the option objects: prepare_model's
# keyword defaults that were not None, and the settings left out at their neutral values
OLD_PREPARE_DEFAULTS = {"bn_gamma": "w", "embedding": "uniform", "collapse": True}
NEUTRAL_SETTINGS = {"weight_init": "constant", "weight_seed": 0}


def old_key(export: dict, settings: dict, mode: str) -> str:
    """bench.run_bench's key as it was written before the option objects."""
    settings = {k: v for k, v in settings.items() if v is not None}
    settings = {k: v for k, v in settings.items() if k not in NEUTRAL_SETTINGS or v != NEUTRAL_SETTINGS[k]}
    if "weight_init" not in settings:
        settings.pop("weight_seed", None)
    settings = {**OLD_PREPARE_DEFAULTS, **settings}
    key = {"export": export, "prepare": settings, **({} if mode == "reference" else {"mode": mode})}
    if mode == "upper":  # the upper mode's rounding guard came after its first stores: a key of its own
        key["mode_revision"] = 2
    return settings_key(key)


CASES = [
    dict(zip(("bn_gamma", "bias", "embedding", "collapse", "init", "output", "input_name", "mode"), values))
    for values in itertools.product(
        ("w", "one"), (None, "zero", "w"), ("uniform", "keep"), (True, False),
        (("constant", 0), ("constant", 3), ("normal", 0), ("kaiming_uniform", 7)),
        (None, "logits"), (None, "x"), MODE_CHOICES,
    )
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_key_equals_the_old_key(case):
    weight_init, weight_seed = case["init"]
    # as the CLI's bench command gave them: --weight-init constant meant None / None
    cli_init = ({"weight_init": None, "weight_seed": None} if weight_init == "constant"
                else {"weight_init": weight_init, "weight_seed": weight_seed})
    settings = {"bn_gamma": case["bn_gamma"], "bias": case["bias"], "embedding": case["embedding"],
                "output": case["output"], "input_name": case["input_name"], "collapse": case["collapse"], **cli_init}
    new = ScoringSettings.from_init(weight_init, weight_seed, output=case["output"], bn_gamma=case["bn_gamma"],
                                    bias=case["bias"], embedding=case["embedding"], collapse=case["collapse"],
                                    mode=case["mode"])
    assert settings_key(new.key(NB201_EXPORT, case["input_name"])) == old_key(NB201_EXPORT, settings, case["mode"])


def test_the_upper_modes_rule_change_is_a_new_key_and_the_others_keep_theirs():
    """Rows of the upper mode scored before its rounding guard are not resumed as
    the guarded rule's; the reference and ladder keys are what they were."""
    upper = settings_key(ScoringSettings(mode="upper").key(NB201_EXPORT))
    assert json.loads(upper)["mode_revision"] == 2
    before_the_guard = settings_key({**ScoringSettings(mode="upper").key(NB201_EXPORT), "mode_revision": None})
    assert upper != before_the_guard
    for mode in ("reference", "ladder"):
        assert "mode_revision" not in json.loads(settings_key(ScoringSettings(mode=mode).key(NB201_EXPORT)))


def test_library_callers_neutral_values_give_the_old_key():
    """A library caller may pass weight_init="constant" / weight_seed=0 (the neutral values) directly."""
    new = ScoringSettings(weight_init="constant", weight_seed=0)
    assert settings_key(new.key(NB201_EXPORT)) == old_key(NB201_EXPORT, {"weight_init": "constant", "weight_seed": 0},
                                                          "reference")


def test_choice_lists_mirror_the_library():
    """options.py repeats the library's tables so that it imports nothing heavy: they must agree."""
    assert NORM_CHOICES == ("auto", *inputs.NORMS, "none")
    assert SYNTHETIC_CHOICES == inputs.SYNTHETIC
    assert WEIGHT_INIT_CHOICES == constant_weight.WEIGHT_INITS
    assert EMBEDDING_CHOICES == tuple(constant_weight.EMBEDDINGS)
    assert MODE_CHOICES == modes.MODES
    assert DEFAULT_SEQ_LEN == inputs.DEFAULT_SEQ_LEN
    # a model of no known space is scored at NAS-Bench-201's pair (reference-semantics §6)
    assert DEFAULT_WEIGHTS == get_space("nb201").reference_weights == (1e-7, 1.0)


def old_calibrate_key(bn_gamma, bias, embedding, collapse, weight_init, weight_seed) -> str:
    """calibrate's --outputs cache key as the command built it before the option objects."""
    init = ({"weight_init": None, "weight_seed": None} if weight_init == "constant"
            else {"weight_init": weight_init, "weight_seed": weight_seed})
    settings = {"bn_gamma": bn_gamma, "collapse": collapse, "bias": bias,
                **({"embedding": embedding} if embedding != "uniform" else {}), **init}
    settings = {k: v for k, v in settings.items() if v is not None}
    return settings_key({"export": {}, "prepare": settings})


@pytest.mark.parametrize("case", [c for c in CASES if c["mode"] == "reference" and c["output"] is None
                                  and c["input_name"] is None], ids=lambda c: "-".join(map(str, c.values())))
def test_calibrate_cache_key_equals_the_old_key(case):
    """calibrate's cache key comes from the same builder as bench's, with calibrate's rule
    (options.CALIBRATE_KEY): an --outputs file written before keeps its key."""
    from epsinas_onnx.core.options import CALIBRATE_KEY

    weight_init, weight_seed = case["init"]
    new = ScoringSettings.from_init(weight_init, weight_seed, bn_gamma=case["bn_gamma"], bias=case["bias"],
                                    embedding=case["embedding"], collapse=case["collapse"])
    old = old_calibrate_key(case["bn_gamma"], case["bias"], case["embedding"], case["collapse"], weight_init,
                            weight_seed)
    assert settings_key(new.key(rule=CALIBRATE_KEY)) == old


def test_the_default_keys_as_written():
    from epsinas_onnx.core.options import CALIBRATE_KEY

    assert settings_key(ScoringSettings().key(rule=CALIBRATE_KEY)) == '{"export":{},"prepare":{"bn_gamma":"w","collapse":true}}'
    assert settings_key(ScoringSettings().key(NB201_EXPORT)) == (
        '{"export":{"num_classes":1,"resolution":32,"seed":0},'
        '"prepare":{"bn_gamma":"w","collapse":true,"embedding":"uniform"}}')
