import numpy as np
import pytest
import torch

from epsinas_onnx.core.scoring.metric import epsinas_score, score_with_reason
from tests.torch_reference.metric import reference_score


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_formula(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(64, 3)).astype(np.float32)
    b = (a * 3 + rng.normal(size=a.shape) * 0.1).astype(np.float32)
    a[0, 0] = a[1, 1]  # ties and exact zeros after normalisation
    expected = reference_score(torch.from_numpy(a), torch.from_numpy(b))
    assert epsinas_score(a, b) == pytest.approx(expected, rel=1e-6)


def test_zeros_become_nan_before_the_means():
    # every row loses its minimum: with two values per row nothing is left
    # but the maxima (both 1), so mae = 0 and the score is 0
    assert epsinas_score(np.array([0.0, 1.0]), np.array([5.0, 7.0])) == 0.0
    # an interior exact zero after normalisation is dropped too
    low = np.array([1.0, 1.0, 2.0, 3.0], dtype=np.float32)
    high = np.array([0.0, 2.0, 1.0, 3.0], dtype=np.float32)
    expected = reference_score(torch.from_numpy(low), torch.from_numpy(high))
    assert epsinas_score(low, high) == pytest.approx(expected, rel=1e-6)


def test_constant_output_is_nan_with_reason():
    value, reason = score_with_reason({1e-7: np.zeros(8), 1.0: np.arange(8.0)})
    assert np.isnan(value)
    assert reason.startswith("constant output at w = 1e-07")


def test_non_finite_output_is_nan_with_reason():
    y = np.arange(8.0)
    y[3] = np.inf
    value, reason = score_with_reason({1e-7: np.arange(8.0), 1.0: y})
    assert np.isnan(value)
    assert reason.startswith("non-finite output at w = 1")


def test_nan_output_values_are_ignored_like_the_reference():
    low = np.array([0.0, 1.0, np.nan, 3.0, 5.0], dtype=np.float32)
    high = np.array([1.0, 0.5, 2.0, 2.0, 9.0], dtype=np.float32)
    expected = reference_score(torch.from_numpy(low), torch.from_numpy(high))
    value, reason = score_with_reason({1e-7: low, 1.0: high})
    assert value == pytest.approx(expected, rel=1e-6)
    assert reason is None


def test_output_warnings_name_partly_non_finite_outputs():
    from epsinas_onnx.core.scoring.metric import output_warnings

    y = np.linspace(0, 1, 8, dtype=np.float32)
    partial = y.copy()
    partial[[1, 4]] = [np.nan, np.inf]
    notes = output_warnings({1e-7: y, 1.0: partial})
    assert notes == [
        "2 of 8 output values at w = 1 are NaN or inf: the score is computed from the finite ones only "
        "(the reference's NaN-aware mean skips them)"
    ]
    assert output_warnings({1e-7: y, 1.0: np.full(8, np.nan, np.float32)}) == []  # all NaN: the score's NaN reason says it


DECISIVE_FIRST_OUTPUTS = {
    "constant": np.full(8, 0.25),
    "one inf": np.r_[np.arange(7.0), np.inf],
    "all NaN": np.full(8, np.nan),
    "empty": np.zeros(0),
}


@pytest.mark.parametrize("kind", DECISIVE_FIRST_OUTPUTS)
def test_score_runs_skips_the_second_run_only_where_the_first_decides(kind):
    from epsinas_onnx.core.scoring.metric import score_runs

    rng = np.random.default_rng(1)
    second_outputs = [rng.normal(size=8), np.full(8, 3.0), np.r_[np.arange(7.0), np.nan]]
    first = DECISIVE_FIRST_OUTPUTS[kind]
    for second in second_outputs:
        ran = []
        outputs = {1e-7: first, 1.0: second[: first.size]}
        value, reason, got = score_runs((1e-7, 1.0), lambda w: ran.append(w) or outputs[w])
        assert ran == [1e-7] and list(got) == [1e-7] and np.isnan(value)
        if kind == "empty":  # nanmin of nothing: the formula itself cannot run
            assert reason == "empty output at w = 1e-07"
            continue
        expected_value, expected_reason = score_with_reason(outputs)
        assert np.isnan(expected_value) and reason == expected_reason
    # a first output that decides nothing: both run, the ordinary score
    outputs = {1e-7: rng.normal(size=8), 1.0: rng.normal(size=8)}
    ran = []
    value, reason, got = score_runs((1e-7, 1.0), lambda w: ran.append(w) or outputs[w])
    assert ran == [1e-7, 1.0] and (value, reason) == score_with_reason(outputs)
