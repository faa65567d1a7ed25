"""Calibration: reliability bins, expected calibration error (ECE), the ECE difference of two models with a
paired-bootstrap interval, and the reliability diagram.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import _check_probabilities, _labels, _positive_int, _same_shape, _scores
from .stats import BootstrapResult, paired_bootstrap

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ['reliability_bins', 'expected_calibration_error', 'ece_difference', 'reliability_diagram']


# ============================================================================================== calibration
def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence for ``n_bins`` equal-width bins (0, 1/M], (1/M, 2/M], …; 0 goes to the first."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> "pd.DataFrame":
    """The reliability table behind :func:`expected_calibration_error` and :func:`reliability_diagram`.

    Each example is put in one of ``n_bins`` equal-width bins by its *confidence* — the probability of the class
    the model predicts (top-label calibration, Guo et al. 2017). Bins are right-closed, (lower, upper], so a
    confidence of exactly 1.0 lands in the last bin.

    Args:
        probs: ``(N, C)`` predicted probabilities (use :func:`probabilities` on logits).
        labels: ``N`` class indices.
        n_bins: number of equal-width bins on [0, 1] (Guo et al. use 15).

    Returns:
        One row per bin: ``lower``, ``upper``, ``count``, ``confidence`` (mean confidence in the bin), ``accuracy``
        (share of correct predictions in it) and ``gap`` = accuracy − confidence (negative: over-confident);
        empty bins have count 0 and NaN means.
    """
    import pandas as pd

    n_bins = _positive_int(n_bins, "n_bins")
    p = _check_probabilities(_scores(probs, "probs"))
    y = _labels(labels, len(p), p.shape[1])
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": mean_conf,
                         "accuracy": mean_acc, "gap": mean_acc - mean_conf})


def _ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """ECE from per-example top-class confidences and 0/1 correctness (the arithmetic, no validation)."""
    idx = _bin_index(confidence, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, weights=correct, minlength=n_bins) - np.bincount(idx, weights=confidence,
                                                                                  minlength=n_bins))
    return float(gap.sum() / count.sum())  # Σ_b n_b/N · |acc_b − conf_b| = Σ_b |Σ_i∈b (correct_i − conf_i)| / N


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017), top-label, equal-width bins.

        ECE = Σ_b (n_b / N) · | accuracy(b) − confidence(b) |

    over the non-empty bins b of :func:`reliability_bins`: the average distance between how sure the model is and
    how often it is right, weighted by how many predictions fall in each bin. 0 = perfectly calibrated (on this
    binning); an always-100 %-sure model with 85 % accuracy has ECE 0.15.

    Args:
        probs: ``(N, C)`` predicted probabilities (not logits: see :func:`probabilities`).
        labels: ``N`` class indices.
        n_bins: number of equal-width bins. More bins see finer miscalibration but each bin's accuracy gets noisier;
            ECE is biased upwards on small sets — compare models on the same set with the same ``n_bins``.
    """
    n_bins = _positive_int(n_bins, "n_bins")
    p = _check_probabilities(_scores(probs, "probs"))
    y = _labels(labels, len(p), p.shape[1])
    return _ece(p.max(1), (p.argmax(1) == y).astype(np.float64), n_bins)


def ece_difference(probs_a: Any, probs_b: Any, labels: Any, n_bins: int = 15, n_resamples: int = 5_000,
                   confidence: float = 0.95, method: str = "percentile", seed: int = 0, label: str = ""
                   ) -> "BootstrapResult":
    """ECE(A) − ECE(B) on the same labelled examples, with a paired bootstrap CI (:func:`paired_bootstrap`).

    ECE is a noisy, upward-biased statistic on a few thousand examples; before saying one model is better
    calibrated than another, check that this interval excludes 0.
    """
    n_bins = _positive_int(n_bins, "n_bins")
    pa = _check_probabilities(_scores(probs_a, "probs_a"), "probs_a")
    pb = _check_probabilities(_scores(probs_b, "probs_b"), "probs_b")
    _same_shape(pa, pb, "probs_a", "probs_b")
    y = _labels(labels, len(pa), pa.shape[1])
    ca, cb = pa.max(1), pb.max(1)
    ka, kb = (pa.argmax(1) == y).astype(np.float64), (pb.argmax(1) == y).astype(np.float64)
    return paired_bootstrap(lambda i: _ece(ca[i], ka[i], n_bins) - _ece(cb[i], kb[i], n_bins), len(y), n_resamples,
                            confidence, method, seed, label)


def reliability_diagram(probs: Any, labels: Any, n_bins: int = 15, ax: "Axes | None" = None,
                        title: str | None = None, color: str = "C0") -> "Axes":
    """Draw a reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.

    Bars below the diagonal are over-confident bins, above it under-confident ones; the red part of each bar is
    its gap. A thin histogram at the bottom shows how many predictions fall in each bin (bins with few examples
    have noisy accuracies). The ECE is written in the legend.

    Args:
        probs, labels, n_bins: as for :func:`reliability_bins`.
        ax: the matplotlib ``Axes`` to draw on (default: a new figure).
        title: the axes title.

    Returns:
        The ``Axes``.
    """
    import matplotlib.pyplot as plt

    table = reliability_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    num_classes = _scores(probs, "probs").shape[1]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    width = 1.0 / n_bins
    filled = table[table["count"] > 0]
    centres = (filled["lower"] + filled["upper"]) / 2
    ax.bar(centres, filled["accuracy"], width=width * 0.95, color=color, alpha=0.8, edgecolor="white",
           label=f"accuracy per bin (ECE {ece:.3f})")
    ax.bar(centres, filled["confidence"] - filled["accuracy"], bottom=filled["accuracy"], width=width * 0.95,
           color="tab:red", alpha=0.35, label="gap to confidence")
    low = math.floor(n_bins / num_classes) / n_bins  # the top-class probability is ≥ 1/C
    ax.plot([low, 1], [low, 1], "k--", lw=1, label="perfect calibration")
    share = table["count"] / table["count"].sum()
    ax.bar((table["lower"] + table["upper"]) / 2, share * 0.25 * (1 - low), bottom=low, width=width * 0.95,
           color="grey", alpha=0.5, label="share of predictions (scaled)")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return ax
