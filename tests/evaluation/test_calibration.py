"""Unit tests for course_utils.evaluation.calibration: the reliability table, the ECE (by hand and on known values),
its input checks and the reliability diagram."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from course_utils.evaluation import calibration, metrics  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

LOGITS = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])


# ============================================================================================== calibration
def test_reliability_bins_and_ece_by_hand():
    # confidences 0.95, 0.95 (both right), 0.65 (wrong), 0.55 (right), 1.0 exactly (right): 10 bins
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.65, 0.35], [0.45, 0.55], [1.0, 0.0]])
    labels = [0, 1, 1, 1, 0]
    table = calibration.reliability_bins(probs, labels, n_bins=10)
    assert list(table["count"]) == [0, 0, 0, 0, 0, 1, 1, 0, 0, 3]  # 1.0 lands in the last bin, (0.9, 1.0]
    last = table.iloc[9]
    assert last["confidence"] == pytest.approx((0.95 + 0.95 + 1.0) / 3) and last["accuracy"] == 1.0
    assert table.iloc[6]["accuracy"] == 0.0 and table.iloc[6]["gap"] == pytest.approx(-0.65)
    assert np.isnan(table.iloc[0]["accuracy"])
    expected = (3 * abs(1 - 2.9 / 3) + 1 * abs(0 - 0.65) + 1 * abs(1 - 0.55)) / 5
    assert calibration.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)


def test_ece_known_values():
    # always 100 % sure, right 85 % of the time: ECE = 0.15
    probs = np.tile([1.0, 0.0], (100, 1))
    labels = np.array([0] * 85 + [1] * 15)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.15)
    # perfectly calibrated within one bin: confidence 0.7 and 70 % right
    probs = np.tile([0.3, 0.7], (10, 1))
    labels = np.array([1] * 7 + [0] * 3)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # the ECE of a mixture is the count-weighted mean of the per-bin gaps (not their plain mean)
    probs = np.vstack([np.tile([0.05, 0.95], (90, 1)), np.tile([0.45, 0.55], (10, 1))])
    labels = np.array([1] * 90 + [0] * 10)  # bin 0.95: 100 % right (gap .05); bin 0.55: 0 % right (gap .55)
    assert calibration.expected_calibration_error(probs, labels, 10) == pytest.approx(0.9 * 0.05 + 0.1 * 0.55)


def test_ece_rejects_logits_and_bad_bins():
    with pytest.raises(ValueError, match="evaluation.probabilities"):
        calibration.expected_calibration_error(LOGITS, [0, 1, 1, 0])
    with pytest.raises(ValueError, match="n_bins must be ≥ 1"):
        calibration.expected_calibration_error(metrics.probabilities(LOGITS), [0, 1, 1, 0], n_bins=0)
    with pytest.raises(TypeError, match="n_bins must be an integer"):
        calibration.reliability_bins(metrics.probabilities(LOGITS), [0, 1, 1, 0], n_bins=2.5)


def test_reliability_diagram_draws():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 2
    labels = rng.integers(0, 3, 200)
    ax = calibration.reliability_diagram(metrics.probabilities(logits), labels, n_bins=10, title="random")
    ece = calibration.expected_calibration_error(metrics.probabilities(logits), labels, 10)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"ECE {ece:.3f}" in t for t in texts)
    assert ax.get_title() == "random" and ax.get_xlim()[0] == pytest.approx(0.3)  # top-class prob ≥ 1/3
    fig, axes = plt.subplots(1, 2)
    assert calibration.reliability_diagram(metrics.probabilities(logits), labels, ax=axes[1]) is axes[1]
    plt.close("all")
