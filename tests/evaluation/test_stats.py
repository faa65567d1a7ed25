"""Unit tests for course_utils.evaluation.stats: paired bootstrap confidence intervals (accuracy differences, any
statistic, course_utils.evaluation.calibration.ece_difference), the comparison table and their failure paths, on
synthetic correlated models."""
from __future__ import annotations

import math

import numpy as np
import pytest

from course_utils.evaluation import calibration, metrics, stats

pytestmark = pytest.mark.usefixtures("single_thread")

LOGITS = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])


# ============================================================================================== uncertainty
def correlated_pair(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    hard = rng.normal(size=n)  # shared difficulty: both models fail on the same hard examples
    margin_a = 1.2 + hard + 0.3 * rng.normal(size=n)
    margin_b = 1.0 + hard + 0.3 * rng.normal(size=n)

    def logits(margin):
        z = np.zeros((n, 2))
        z[np.arange(n), labels] = margin
        return z

    return logits(margin_a), logits(margin_b), labels


def test_accuracy_difference_paired_interval():
    a, b, y = correlated_pair()
    r = stats.accuracy_difference(a, b, y, label="A − B")
    correct_a, correct_b = a.argmax(1) == y, b.argmax(1) == y
    d = correct_a.astype(float) - correct_b
    assert r.estimate == pytest.approx(d.mean())
    assert r.low < r.estimate < r.high and r.excludes_zero and r.paired
    # the percentile interval ≈ the normal approximation ±1.96·sd(d)/√n
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert (r.high - r.low) / 2 == pytest.approx(half, rel=0.15)
    # same seed, same interval; and the unpaired interval is much wider on correlated models
    assert stats.accuracy_difference(a, b, y) == stats.accuracy_difference(a, b, y, label="")
    unpaired = stats.accuracy_difference(a, b, y, paired=False)
    assert not unpaired.paired and unpaired.width > 1.5 * r.width
    assert "points" in r.points() and r.points().startswith("+") and "A − B" in str(r)
    bca = stats.accuracy_difference(a, b, y, method="BCa", n_resamples=2000)
    assert bca.low == pytest.approx(r.low, abs=0.01) and bca.method == "BCa"


def test_identical_models_give_a_zero_interval():
    a, _, y = correlated_pair(200)
    r = stats.accuracy_difference(a, a, y)
    assert r.estimate == r.low == r.high == 0.0 and not r.excludes_zero


def test_bootstrap_errors():
    a, b, y = correlated_pair(50)
    with pytest.raises(ValueError, match="n_resamples must be ≥ 100"):
        stats.accuracy_difference(a, b, y, n_resamples=10)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stats.accuracy_difference(a, b, y, confidence=95)
    with pytest.raises(ValueError, match="method must be"):
        stats.accuracy_difference(a, b, y, method="normal")
    with pytest.raises(ValueError, match="4 predictions but 50"):
        stats.accuracy_difference(LOGITS, b, y)
    with pytest.raises(TypeError, match="statistic must be a function"):
        stats.paired_bootstrap(0.5, 10)
    with pytest.raises(ValueError, match="finite number"):
        stats.paired_bootstrap(lambda idx: float("nan"), 10)
    with pytest.raises(ValueError, match="n must be ≥ 2"):
        stats.paired_bootstrap(lambda idx: 0.0, 1)


def test_paired_bootstrap_of_any_statistic_and_ece_difference():
    a, b, y = correlated_pair(500)
    pa, pb = metrics.probabilities(a), metrics.probabilities(b * 3)  # b sharpened: a different calibration
    r = calibration.ece_difference(pa, pb, y, n_resamples=500)
    assert r.estimate == pytest.approx(calibration.expected_calibration_error(pa, y) - calibration.expected_calibration_error(pb, y))
    assert r.low <= r.estimate <= r.high
    same = calibration.ece_difference(pa, pa, y, n_resamples=200)
    assert same.low == same.high == 0.0
    median = stats.paired_bootstrap(lambda idx: float(np.median(y[idx])), len(y), n_resamples=200)
    assert median.estimate == float(np.median(y))
    with pytest.raises(ValueError, match="shapes differ"):
        calibration.ece_difference(pa, pb[:10], y)


def test_compare_accuracies_table():
    a, b, y = correlated_pair(300)
    table = stats.compare_accuracies({"A": a, "B": b}, y, [("A", "B"), ("B", "A")], n_resamples=500)
    assert list(table.index) == ["A − B", "B − A"]
    assert table.loc["A − B", "difference (points)"] == pytest.approx(-table.loc["B − A", "difference (points)"])
    assert table.loc["A − B", "accuracy A"] == metrics.accuracy(a, y)
    assert table["CI excludes 0"].dtype == bool
    with pytest.raises(ValueError, match="no logits for"):
        stats.compare_accuracies({"A": a}, y, [("A", "C")])
    with pytest.raises(ValueError, match="each pair must be"):
        stats.compare_accuracies({"A": a}, y, ["A"])
    with pytest.raises(TypeError, match="mapping"):
        stats.compare_accuracies([a, b], y, [("A", "B")])
