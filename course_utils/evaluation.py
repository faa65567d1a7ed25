"""Evaluating a distilled model against its teacher: quality, calibration, speed, memory, size — and how sure we are.

One module, one job: every number notebook 06 (and notebooks 03–05) reports about a trained model comes from here.

=====================  ==================================================================================
what                   functions
=====================  ==================================================================================
quality                :func:`accuracy`, :func:`f1`, :func:`agreement`, :func:`kl_to_teacher`,
                       :func:`classification_metrics`
calibration            :func:`probabilities`, :func:`reliability_bins`, :func:`expected_calibration_error`,
                       :func:`reliability_diagram`
uncertainty            :func:`paired_bootstrap` (any paired statistic), :func:`accuracy_difference` →
                       :class:`BootstrapResult`; :func:`compare_accuracies` (a table of them)
speed                  :func:`measure_latency` (warm-up, fixed threads, interleaved repeats, median and p90,
                       throughput, several batch sizes), :func:`text_batches`, :func:`speedups`,
                       :func:`benchmark_latency` (the wide table notebook 03 prints)
memory and size        :func:`count_parameters`, :func:`size_on_disk_mb`, :func:`weights_memory_mb`,
                       :func:`inference_memory_mb`
compression            :func:`quantize_int8` (dynamic int8 quantization with ``torch.ao.quantization``)
generation             :func:`perplexity`, :func:`language_model_scores`, :func:`rouge_l`, :func:`exact_match`
                       (+ ``*_scores`` for lists), :func:`words`, :func:`normalize_answer`
the harness            :func:`evaluate_classifiers` → :class:`ClassifierEvaluation` (one row per model, CIs,
                       speed-ups, a markdown table), :func:`pareto_front`, :func:`results_path`
=====================  ==================================================================================

Conventions: ``logits`` are raw scores of shape ``(N, C)`` (N examples, C classes) as NumPy arrays or tensors;
``labels`` are ``N`` integers in ``[0, C)``; ``probs`` are rows of probabilities (non-negative, summing to 1).
The teacher's logits are v and the student's z, as everywhere in the course; p = softmax(v/T), q = softmax(z/T).
Bad inputs raise ``TypeError`` (wrong kind of object) or ``ValueError`` (wrong shape or values) saying how to fix
them. Importing this module is cheap (NumPy only); torch, pandas, scipy and matplotlib are imported when needed.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math
import numbers
import os
import re
import string
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from datasets import Dataset
    from matplotlib.axes import Axes
    from torch import nn

__all__ = [
    # quality
    "accuracy",
    "f1",
    "agreement",
    "kl_to_teacher",
    "classification_metrics",
    # calibration
    "probabilities",
    "reliability_bins",
    "expected_calibration_error",
    "ece_difference",
    "reliability_diagram",
    # uncertainty
    "BootstrapResult",
    "paired_bootstrap",
    "accuracy_difference",
    "compare_accuracies",
    # speed
    "text_batches",
    "measure_latency",
    "speedups",
    "benchmark_latency",
    # memory and size
    "count_parameters",
    "size_on_disk_mb",
    "weights_memory_mb",
    "inference_memory_mb",
    # compression
    "quantize_int8",
    # generation
    "perplexity",
    "language_model_scores",
    "words",
    "rouge_l",
    "rouge_l_scores",
    "normalize_answer",
    "exact_match",
    "exact_match_scores",
    # harness
    "ClassifierEvaluation",
    "evaluate_classifiers",
    "readable_columns",
    "pareto_front",
    "results_path",
]

F1_AVERAGES = ("macro", "micro", "weighted", "binary")
SIZE_FORMATS = ("auto", "save_pretrained", "state_dict")


# ================================================================================================ validation
def _array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array (tensors are detached and moved to the CPU); ``TypeError`` for other objects."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if getattr(x, "is_quantized", False):
            x = x.dequantize()
        return x.float().numpy() if str(x.dtype) in ("torch.bfloat16", "torch.float16") else x.numpy()
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        return np.asarray(x)
    if not isinstance(x, (str, bytes, Mapping)) and hasattr(x, "__len__") and hasattr(x, "__iter__"):
        return np.asarray(list(x))  # e.g. a datasets Column
    raise TypeError(f"{name} must be a NumPy array, a torch tensor or a list, got {type(x).__name__}")


def _scores(x: Any, name: str = "logits") -> np.ndarray:
    """Validate an ``(N, C)`` array of scores (logits or probabilities) and return it as float64."""
    a = _array(x, name)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got an array of dtype {a.dtype}")
    if a.ndim != 2:
        hint = (" — for a single example use x[None]; a model with one output unit needs its two-class logits "
                "[0, z]" if a.ndim == 1 else "")
        raise ValueError(f"{name} must have shape (N, C) (N examples, C classes), got shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 examples): nothing to evaluate")
    if a.shape[1] < 2:
        raise ValueError(f"{name} has {a.shape[1]} class column(s); a classifier needs at least 2")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values ({int((~np.isfinite(a)).sum())} entries): the model "
                         "diverged or the array was not filled")
    return a


def _labels(y: Any, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """Validate ``n`` integer class labels in ``[0, num_classes)``."""
    a = _array(y, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"{n} predictions but {len(a)} {name}: they must describe the same examples, in order")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be integer class indices, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise TypeError(f"{name} must be integer class indices, got non-integer values such as "
                            f"{a[~(a == np.round(a))][:3].tolist()} (probabilities or one-hot rows? pass argmax)")
        a = a.astype(np.int64)
    if n and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) for {num_classes} classes, got values from "
                         f"{a.min()} to {a.max()}")
    return a.astype(np.int64)


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must "
                         "score the same examples over the same classes")


def _check_probabilities(p: np.ndarray, name: str = "probs") -> np.ndarray:
    if (p < -1e-6).any() or (p > 1 + 1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        sums = p.sum(1)
        raise ValueError(
            f"{name} must be probabilities (each row non-negative and summing to 1), but its values range from "
            f"{p.min():.3g} to {p.max():.3g} and its rows sum to {sums.min():.3g}…{sums.max():.3g}. If these are "
            "logits, convert them first: evaluation.probabilities(logits)."
        )
    return np.clip(p, 0.0, 1.0)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return int(value)


def _probability_level(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (e.g. 0.95), got {value}")
    return float(value)


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {value}")
    return float(value)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _require_module(model: Any, name: str = "model") -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


# ================================================================================================== quality
def accuracy(logits: Any, labels: Any) -> float:
    """Share of examples whose argmax prediction equals the label.

    Args:
        logits: ``(N, C)`` scores (logits or probabilities: only the argmax matters).
        labels: ``N`` class indices.
    """
    z = _scores(logits)
    y = _labels(labels, len(z), z.shape[1])
    return float((z.argmax(1) == y).mean())


def f1(logits: Any, labels: Any, average: str = "macro", positive: int = 1) -> float:
    """F1 score of the argmax predictions (``sklearn.metrics.f1_score``).

    Args:
        logits: ``(N, C)`` scores.
        labels: ``N`` class indices.
        average: ``"macro"`` (unweighted mean of the per-class F1 — every class counts the same, so a model that
            ignores a rare class is penalised), ``"micro"`` (= accuracy for single-label data), ``"weighted"``
            (per-class F1 weighted by class frequency) or ``"binary"`` (the F1 of class ``positive`` only).
        positive: the positive class for ``average="binary"``.
    """
    from sklearn.metrics import f1_score

    if average not in F1_AVERAGES:
        raise ValueError(f"average must be one of {F1_AVERAGES}, got {average!r}")
    z = _scores(logits)
    y = _labels(labels, len(z), z.shape[1])
    if average == "binary":
        if not 0 <= positive < z.shape[1]:
            raise ValueError(f"positive={positive} is not a class index for {z.shape[1]} classes")
        return float(f1_score(y, z.argmax(1), average="binary", pos_label=positive, zero_division=0))
    return float(f1_score(y, z.argmax(1), average=average, labels=list(range(z.shape[1])), zero_division=0))


def agreement(logits_a: Any, logits_b: Any) -> float:
    """Share of examples on which two models predict the same class (e.g. student vs teacher).

    Args:
        logits_a, logits_b: ``(N, C)`` scores of two models on the same examples.
    """
    a, b = _scores(logits_a, "logits_a"), _scores(logits_b, "logits_b")
    _same_shape(a, b, "logits_a", "logits_b")
    return float((a.argmax(1) == b.argmax(1)).mean())


def kl_to_teacher(student_logits: Any, teacher_logits: Any, temperature: float = 1.0) -> float:
    """Mean over examples of KL(p ‖ q) in nats, p = softmax(v/T) the teacher's and q = softmax(z/T) the student's.

    The same divergence the KD loss minimises (forward KL), as a metric: *not* multiplied by T² (that factor only
    rescales gradients in training), and computed in float64. 0 means the student reproduces the teacher's whole
    distribution, not just its argmax.

    Args:
        student_logits: ``(N, C)`` logits z.
        teacher_logits: ``(N, C)`` logits v (logits, not probabilities).
        temperature: T > 0; 1 compares the models' actual predictive distributions.
    """
    t = _temperature(temperature)
    z, v = _scores(student_logits, "student_logits"), _scores(teacher_logits, "teacher_logits")
    _same_shape(z, v, "student_logits", "teacher_logits")
    log_p, log_q = _log_softmax(v / t), _log_softmax(z / t)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


def probabilities(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the class axis: ``(N, C)`` float64 rows summing to 1."""
    return np.exp(_log_softmax(_scores(logits) / _temperature(temperature)))


def classification_metrics(logits: Any, labels: Any, teacher_logits: Any = None, n_bins: int = 15
                           ) -> dict[str, float]:
    """Every quality number of one classifier on one labelled set.

    Returns:
        ``accuracy``, ``macro_f1``, ``ece`` (:func:`expected_calibration_error` with ``n_bins`` bins),
        ``confidence`` (mean top-class probability), ``nll`` (mean negative log-likelihood of the label, nats) and,
        with ``teacher_logits``, ``agreement`` and ``kl_to_teacher`` (at T = 1).
    """
    z = _scores(logits)
    y = _labels(labels, len(z), z.shape[1])
    log_q = _log_softmax(z)
    probs = np.exp(log_q)
    out = {"accuracy": accuracy(z, y), "macro_f1": f1(z, y, "macro"),
           "ece": expected_calibration_error(probs, y, n_bins), "confidence": float(probs.max(1).mean()),
           "nll": float(-log_q[np.arange(len(y)), y].mean())}
    if teacher_logits is not None:
        out["agreement"] = agreement(z, teacher_logits)
        out["kl_to_teacher"] = kl_to_teacher(z, teacher_logits)
    return out


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


# ============================================================================================== uncertainty
@dataclass(frozen=True)
class BootstrapResult:
    """A paired statistic (usually a difference of two models' scores) with its bootstrap confidence interval.

    Attributes:
        estimate: the statistic on the actual data (e.g. accuracy of A minus accuracy of B).
        low, high: the confidence interval's bounds.
        confidence: its level (e.g. 0.95).
        n: examples resampled.
        n_resamples: bootstrap resamples drawn.
        method: scipy's interval method (``"percentile"``, ``"basic"`` or ``"BCa"``).
        paired: whether both models were resampled with the same examples (the right thing on one test set).
        label: what was compared, for printing.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int
    method: str
    paired: bool = True
    label: str = ""

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0: the data support the sign of the difference."""
        return self.low > 0 or self.high < 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def points(self, scale: float = 100.0) -> str:
        """``"+1.25 points [+0.40, +2.10] (95 % CI)"`` (accuracy differences in percentage points)."""
        return (f"{scale * self.estimate:+.2f} points [{scale * self.low:+.2f}, {scale * self.high:+.2f}] "
                f"({self.confidence:.0%} CI)")

    def __str__(self) -> str:
        head = f"{self.label}: " if self.label else ""
        return f"{head}{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}] ({self.confidence:.0%} CI, n={self.n})"


def _scipy_bootstrap(data: tuple, statistic: Callable[..., Any], vectorized: bool, paired: bool, n_resamples: int,
                     confidence: float, method: str, seed: int) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` → (low, high); NaN bounds (every resample equal) are returned as they are."""
    from scipy import stats

    kwargs = dict(vectorized=vectorized, paired=paired, n_resamples=n_resamples, confidence_level=confidence,
                  method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about degenerate (all-equal) resamples; the caller handles them
        # scipy ≥ 1.15 calls the generator `rng`, older versions `random_state`
        key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
        res = stats.bootstrap(data, statistic, **{key: np.random.default_rng(seed)}, **kwargs)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _check_method(method: Any) -> str:
    if method not in ("percentile", "basic", "BCa"):
        raise ValueError(f"method must be 'percentile', 'basic' or 'BCa', got {method!r}")
    return method


def paired_bootstrap(statistic: Callable[[np.ndarray], float], n: int, n_resamples: int = 10_000,
                     confidence: float = 0.95, method: str = "percentile", seed: int = 0, label: str = ""
                     ) -> BootstrapResult:
    """Bootstrap confidence interval of any statistic of ``n`` paired examples (``scipy.stats.bootstrap``).

    The examples are resampled *with replacement*, the same draw for every model involved: ``statistic(idx)``
    receives an index array of length ``n`` (a resample) and returns one number, e.g.
    ``lambda idx: ece(p_a[idx], y[idx]) - ece(p_b[idx], y[idx])``. ``statistic(np.arange(n))`` is the estimate.

    Args:
        statistic: function of an index array → float.
        n: number of examples.
        n_resamples: bootstrap resamples (10 000 gives stable 95 % bounds to about ±0.1 points here).
        confidence: interval level in (0, 1).
        method: ``"percentile"`` (the 2.5 % and 97.5 % quantiles of the resampled statistic), ``"basic"`` or
            ``"BCa"`` (bias-corrected and accelerated; more accurate, costs n extra evaluations).
        seed: random seed: the same seed gives the same interval.
    """
    n = _positive_int(n, "n", 2)
    n_resamples = _positive_int(n_resamples, "n_resamples", 100)
    confidence = _probability_level(confidence, "confidence")
    _check_method(method)
    if not callable(statistic):
        raise TypeError(f"statistic must be a function of an index array, got {type(statistic).__name__}")
    index = np.arange(n)
    estimate = float(statistic(index))
    if not math.isfinite(estimate):
        raise ValueError(f"statistic returned {estimate} on the full data; it must return a finite number")
    low, high = _scipy_bootstrap((index,), lambda idx: statistic(idx.astype(np.int64)), False, True, n_resamples,
                                 confidence, method, seed)
    if not (math.isfinite(low) and math.isfinite(high)):  # every resample gave the same value (e.g. identical models)
        low = high = estimate
    return BootstrapResult(estimate, low, high, confidence, n, n_resamples, method, True, label)


def _correct(logits: Any, labels: Any, name: str) -> np.ndarray:
    z = _scores(logits, name)
    y = _labels(labels, len(z), z.shape[1])
    return (z.argmax(1) == y).astype(np.float64)


def accuracy_difference(logits_a: Any, logits_b: Any, labels: Any, n_resamples: int = 10_000,
                        confidence: float = 0.95, method: str = "percentile", seed: int = 0, paired: bool = True,
                        label: str = "") -> BootstrapResult:
    """accuracy(A) − accuracy(B) on the same labelled examples, with a bootstrap confidence interval.

    **Paired** (default): each resample draws N test examples with replacement and scores *both* models on them,
    so the interval reflects how much the difference would move on another test set of the same kind. Two
    models evaluated on one test set make correlated mistakes (the same hard snippets), and pairing cancels that
    shared noise — the interval of the difference is much narrower than the two accuracies' own intervals
    suggest. ``paired=False`` resamples the two models' examples independently (what you would do for two
    *different* test sets); it is shown in notebook 06 for comparison and is too wide here.

    The interval describes test-set noise only: a different training seed gives a different model, and that
    spread is not in it (compare seeds for that).

    Args:
        logits_a, logits_b: ``(N, C)`` scores of the two models on the same examples, in the same order.
        labels: ``N`` class indices.
        n_resamples, confidence, method, seed: see :func:`paired_bootstrap`.
        label: a name for the comparison (e.g. ``"KD − hard"``).
    """
    a, b = _correct(logits_a, labels, "logits_a"), _correct(logits_b, labels, "logits_b")
    if len(a) != len(b):
        raise ValueError(f"logits_a has {len(a)} rows but logits_b has {len(b)}: score the same examples")
    n_resamples = _positive_int(n_resamples, "n_resamples", 100)
    confidence = _probability_level(confidence, "confidence")
    _check_method(method)
    if len(a) < 2:
        raise ValueError("a bootstrap needs at least 2 examples")
    estimate = float(a.mean() - b.mean())
    if paired:  # resample the per-example differences: both models see the same draw
        low, high = _scipy_bootstrap((a - b,), lambda d, axis=-1: d.mean(axis), True, True, n_resamples, confidence,
                                     method, seed)
    else:  # two independent resamples
        low, high = _scipy_bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), True, False,
                                     n_resamples, confidence, method, seed)
    if not (math.isfinite(low) and math.isfinite(high)):
        low = high = estimate
    return BootstrapResult(estimate, low, high, confidence, len(a), n_resamples, method, paired, label)


def compare_accuracies(logits: Mapping[str, Any], labels: Any, pairs: Sequence[tuple[str, str]],
                       n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> "pd.DataFrame":
    """A table of paired accuracy differences A − B with bootstrap CIs, in percentage points.

    Args:
        logits: ``{model name: (N, C) logits}`` on the same labelled examples.
        labels: ``N`` class indices.
        pairs: ``[(A, B), …]`` model names to compare.

    Returns:
        One row per pair (index ``"A − B"``): ``accuracy A``, ``accuracy B``, ``difference (points)``,
        ``CI low``, ``CI high`` and ``CI excludes 0``.
    """
    import pandas as pd

    if not isinstance(logits, Mapping):
        raise TypeError(f"logits must be a mapping {{model name: logits}}, got {type(logits).__name__}")
    rows = {}
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"each pair must be (model A, model B), got {pair!r}")
        a, b = pair
        missing = [m for m in (a, b) if m not in logits]
        if missing:
            raise ValueError(f"no logits for {missing}; known models: {list(logits)}")
        r = accuracy_difference(logits[a], logits[b], labels, n_resamples, confidence, seed=seed, label=f"{a} − {b}")
        rows[f"{a} − {b}"] = {"accuracy A": accuracy(logits[a], labels), "accuracy B": accuracy(logits[b], labels),
                              "difference (points)": 100 * r.estimate, "CI low": 100 * r.low,
                              "CI high": 100 * r.high, "CI excludes 0": r.excludes_zero}
    table = pd.DataFrame(rows).T
    table.attrs["confidence"] = confidence
    return table.astype({"accuracy A": float, "accuracy B": float, "difference (points)": float, "CI low": float,
                         "CI high": float, "CI excludes 0": bool})


# ==================================================================================================== speed
def text_batches(tokenizer: Any, texts: Sequence[str], batch_sizes: Sequence[int], max_length: int = 64
                 ) -> "dict[int, dict[str, torch.Tensor]]":
    """``{b: tokenizer(texts[:b])}`` — the first ``b`` texts, padded to the longest and truncated to ``max_length``.

    Every model of a benchmark gets the same batches, so their timings compare like with like.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    sizes = [_positive_int(b, "batch size") for b in batch_sizes]
    if not sizes:
        raise ValueError("batch_sizes is empty")
    if len(texts) < max(sizes):
        raise ValueError(f"need at least {max(sizes)} texts, got {len(texts)} (the largest batch takes the first "
                         f"{max(sizes)})")
    texts = list(texts)
    return {b: dict(tokenizer(texts[:b], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
            for b in sizes}


def _forward_keys(model: Any) -> set[str] | None:
    fn = model.forward if hasattr(model, "forward") else model
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None  # accepts anything
    return {p.name for p in params}


def _device_of(model: Any) -> "torch.device":
    import torch

    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    import torch

    old = torch.get_num_threads()
    n = old if n is None else _positive_int(n, "threads")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


def default_threads() -> int:
    """The thread count benchmarks use unless told otherwise: all cores, at most 8 (printed with every result)."""
    return min(8, os.cpu_count() or 1)


def measure_latency(
    models: "Mapping[str, nn.Module | Callable[..., Any]]",
    inputs: "Mapping[int, Mapping[str, Any]] | Callable[[int], Mapping[str, Any]]",
    batch_sizes: Sequence[int] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    rotate: bool = True,
) -> "pd.DataFrame":
    """Inference latency of several models, measured side by side the way that gives reproducible *ratios*.

    * **Warm-up**: each (model, batch size) first runs ``warmup`` untimed times — the first calls pay for memory
      allocation, lazy initialisation and cold caches.
    * **Fixed threads**: ``torch.set_num_threads(threads)`` for the whole measurement (restored afterwards).
    * **Interleaved repeats**: repeat r times A, B, C, … (rotated by one each round, so no model always runs
      right after the same one), so a background hiccup slows every model alike.
    * **Median and p90** over the ``repeats`` timed runs (``time.perf_counter``): the median is robust to the odd
      slow run that drags a mean up; the p90 shows the tail a user would notice.
    * Models run in eval mode under ``torch.inference_mode()``; on CUDA every timed call is synchronised.

    Args:
        models: ``{name: model}``; a model is an ``nn.Module`` called as ``model(**inputs)`` (only the inputs its
            ``forward`` accepts are passed), or any callable (e.g. ``lambda **kw: m.generate(**kw, …)``).
        inputs: ``{batch_size: {keyword: tensor}}`` (e.g. from :func:`text_batches`), or a function
            ``batch_size → keyword inputs`` together with ``batch_sizes``.
        batch_sizes: which batch sizes to measure (default: the keys of ``inputs``).
        repeats: timed runs per (model, batch size) (≥ 3 for a p90 to mean anything).
        warmup: untimed runs before them.
        threads: CPU threads; default :func:`default_threads`.
        rotate: rotate the order of the models between rounds.

    Returns:
        A DataFrame indexed by ``(model, batch_size)`` with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``
        and ``throughput`` (examples per second at the median). ``attrs``: ``threads``, ``repeats``, ``warmup``
        and ``raw`` (``{(model, batch_size): [seconds, …]}``).
    """
    import pandas as pd
    import torch

    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, model in models.items():
        if not callable(model):
            raise TypeError(f"model {name!r} is a {type(model).__name__}, which cannot be called")
    for value in (repeats, warmup):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"repeats and warmup must be integers, got {repeats!r}, {warmup!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats}, {warmup}")
    if callable(inputs) and not isinstance(inputs, Mapping):
        if batch_sizes is None:
            raise ValueError("inputs is a function: give the batch_sizes to call it with")
        sizes = [_positive_int(b, "batch size") for b in batch_sizes]
        batches = {b: inputs(b) for b in sizes}
    elif isinstance(inputs, Mapping):
        sizes = list(inputs) if batch_sizes is None else [_positive_int(b, "batch size") for b in batch_sizes]
        missing = [b for b in sizes if b not in inputs]
        if missing:
            raise ValueError(f"no inputs for batch size(s) {missing}; inputs has {list(inputs)}")
        batches = {b: inputs[b] for b in sizes}
    else:
        raise TypeError(f"inputs must be {{batch_size: keyword inputs}} or a function, got {type(inputs).__name__}")
    if not sizes:
        raise ValueError("batch_sizes is empty")
    for b, batch in batches.items():
        if not isinstance(batch, Mapping):
            raise TypeError(f"the inputs for batch size {b} must be a mapping of keyword arguments, got "
                            f"{type(batch).__name__}")

    names = list(models)
    prepared: dict[tuple[str, int], dict[str, Any]] = {}
    devices = {}
    for name, model in models.items():
        if isinstance(model, torch.nn.Module):
            model.eval()
        keys = _forward_keys(model)
        devices[name] = _device_of(model)
        for b in sizes:
            kw = {k: v for k, v in batches[b].items() if keys is None or k in keys}
            prepared[(name, b)] = {k: (v.to(devices[name]) if hasattr(v, "to") else v) for k, v in kw.items()}

    def sync(name: str) -> None:
        if devices[name].type == "cuda":
            torch.cuda.synchronize(devices[name])

    raw: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in sizes}
    with _threads(threads if threads is not None else default_threads()) as n_threads, torch.inference_mode():
        for b in sizes:
            for name in names:
                for _ in range(warmup):
                    models[name](**prepared[(name, b)])
                sync(name)
            for r in range(repeats):
                order = names[r % len(names):] + names[:r % len(names)] if rotate else names
                for name in order:
                    start = time.perf_counter()
                    models[name](**prepared[(name, b)])
                    sync(name)
                    raw[(name, b)].append(time.perf_counter() - start)
    rows = []
    for (name, b), secs in raw.items():
        ms = np.array(secs) * 1000
        median = float(np.median(ms))
        rows.append({"model": name, "batch_size": b, "median_ms": median, "p90_ms": float(np.percentile(ms, 90)),
                     "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "throughput": 1000 * b / median})
    table = pd.DataFrame(rows).set_index(["model", "batch_size"])
    table.attrs.update(threads=n_threads, repeats=repeats, warmup=warmup, raw=raw)
    return table


def speedups(latency: "pd.DataFrame", reference: str, stat: str = "median_ms") -> "pd.DataFrame":
    """Speed-up of every model over ``reference`` (its latency ÷ theirs), per batch size: models × batch sizes.

    Only ratios measured in the same run are meaningful; that is what a :func:`measure_latency` table holds.
    """
    if stat not in latency.columns:
        raise ValueError(f"stat {stat!r} is not a column of the latency table ({list(latency.columns)})")
    wide = latency[stat].unstack("batch_size")
    if reference not in wide.index:
        raise ValueError(f"reference {reference!r} was not measured; models: {list(wide.index)}")
    return wide.loc[reference] / wide


def benchmark_latency(
    models: "dict[str, nn.Module]",
    tokenizer: Any,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = None,
    max_length: int = 64,
) -> "pd.DataFrame":
    """CPU inference latency of text classifiers: median milliseconds per batch, one column per batch size.

    :func:`measure_latency` on :func:`text_batches` (same inputs for every model, warm-up, fixed threads,
    interleaved repeats, median), reshaped into the wide table notebook 03 prints.

    Returns:
        DataFrame indexed by model name with columns ``"latency b{b} (ms)"``; ``attrs["threads"]`` and
        ``attrs["raw"]`` (all timings, seconds) record how it was measured; ``attrs["latency"]`` is the full
        :func:`measure_latency` table (with p90 and throughput).

    Raises:
        ValueError: no models, fewer texts than the largest batch, a model not on the CPU, bad repeats/warm-up.
    """
    if not models:
        raise ValueError("models is empty")
    for name, model in models.items():
        if _device_of(model).type != "cpu":
            raise ValueError(f"model {name!r} is on {_device_of(model)}; benchmark_latency measures CPU latency")
    batches = text_batches(tokenizer, texts, batch_sizes, max_length)
    long = measure_latency(models, batches, list(batch_sizes), repeats, warmup, threads)
    wide = long["median_ms"].unstack("batch_size")
    wide = wide.loc[list(models), list(batch_sizes)]
    wide.columns = [f"latency b{b} (ms)" for b in batch_sizes]
    wide.index.name = None
    wide.attrs.update(threads=long.attrs["threads"], raw=long.attrs["raw"], latency=long)
    return wide


# ========================================================================================== memory and size
def _is_quantized_module(module: Any) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized")


def _quantized_tensors(module: Any) -> list["torch.Tensor"]:
    """The packed (int8) weight and float bias of a quantized Linear/Embedding — invisible to ``parameters()``."""
    out = []
    if _is_quantized_module(module):
        for attr in ("weight", "bias"):
            fn = getattr(module, attr, None)
            if callable(fn):
                try:
                    t = fn()
                except Exception:  # pragma: no cover - a quantized module without that part
                    continue
                if t is not None:
                    out.append(t)
    return out


def count_parameters(model: "nn.Module", trainable_only: bool = False, exclude_embeddings: bool = False) -> int:
    """Number of parameters (shared tensors counted once), int8-quantized weights included.

    Args:
        model: any ``nn.Module`` (a ``transformers`` model for ``exclude_embeddings``).
        trainable_only: count only parameters with ``requires_grad`` (quantized weights are never trainable).
        exclude_embeddings: leave out the input (word) embedding matrix (``model.get_input_embeddings()``).
    """
    _require_module(model)
    skip_params: set[int] = set()
    skip_modules: set[int] = set()
    if exclude_embeddings:
        getter = getattr(model, "get_input_embeddings", None)
        if getter is None:
            raise TypeError(f"{type(model).__name__} has no get_input_embeddings(); exclude_embeddings needs a "
                            "transformers model")
        emb = getter()
        skip_params = {id(p) for p in emb.parameters()}
        skip_modules = {id(emb)}
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip_params or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    if not trainable_only:
        for module in model.modules():
            if id(module) not in skip_modules:
                total += sum(t.numel() for t in _quantized_tensors(module))
    return total


def _tensor_bytes(t: "torch.Tensor") -> int:
    """Bytes of one tensor; a quantized tensor counts its int8 values plus its per-channel scales/zero points."""
    n = t.numel() * t.element_size()
    if getattr(t, "is_quantized", False):
        import torch

        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            scales, zeros = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            n += scales.numel() * scales.element_size() + zeros.numel() * zeros.element_size()
    return n


def weights_memory_mb(model: "nn.Module") -> float:
    """Memory taken by the model's parameters and buffers, in MB (10⁶ bytes); int8-quantized weights count one byte
    each (plus their scales). Tensors shared between modules (tied weights) are counted once.
    """
    _require_module(model)
    seen: set[int] = set()
    total = 0
    tensors = list(model.parameters()) + list(model.buffers())
    for module in model.modules():
        tensors += _quantized_tensors(module)
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += _tensor_bytes(t)
    return total / 1e6


def size_on_disk_mb(model: "nn.Module", how: str = "auto") -> float:
    """Size in MB (10⁶ bytes) of the saved model.

    Args:
        how: ``"save_pretrained"``: the files ``model.save_pretrained`` writes (safetensors weights + config) — what
            you would ship with ``transformers``; ``"state_dict"``: ``torch.save(model.state_dict())`` — the only
            format that also holds int8-quantized modules, so use it to compare fp32 and int8 models;
            ``"auto"``: ``save_pretrained`` for an unquantized ``transformers`` model, else ``state_dict``.
    """
    _require_module(model)
    if how not in SIZE_FORMATS:
        raise ValueError(f"how must be one of {SIZE_FORMATS}, got {how!r}")
    quantized = any(_is_quantized_module(m) for m in model.modules())
    if how == "auto":
        how = "save_pretrained" if hasattr(model, "save_pretrained") and not quantized else "state_dict"
    if how == "save_pretrained":
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"{type(model).__name__} has no save_pretrained(); use how='state_dict'")
        if quantized:
            raise ValueError("save_pretrained cannot save int8-quantized modules; use how='state_dict'")
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence writes to file descriptor 2 (not only ``sys.stderr``): torch's profiler (kineto) logs two lines per
    session from C++, which Jupyter would show under the cell."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def inference_memory_mb(model: "nn.Module", inputs: Mapping[str, Any]) -> float:
    """Peak memory one forward pass allocates *on top of* the weights, in MB (10⁶ bytes).

    Measured with :func:`course_utils.memory.measure_peak_memory` (CUDA: ``max_memory_allocated``; CPU: the
    allocations ``torch.profiler`` records — exact, and blind to glibc's caching that makes RSS misleading) after
    one untimed warm-up call, in eval mode under ``torch.inference_mode()``. Add :func:`weights_memory_mb` for the
    total a deployment needs.

    Args:
        model: the model; only the inputs its ``forward`` accepts are passed.
        inputs: keyword inputs of one batch (e.g. one entry of :func:`text_batches`).
    """
    import torch

    from .memory import measure_peak_memory

    _require_module(model)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of keyword arguments, got {type(inputs).__name__}")
    keys = _forward_keys(model)
    device = _device_of(model)
    kw = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items() if keys is None or k in keys}
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(**kw)

    forward()  # warm-up: one-time allocations (thread pools, packed kernels) are not the model's
    quiet = _native_stderr_silenced() if device.type == "cpu" else contextlib.nullcontext()
    with quiet:
        return measure_peak_memory(forward, device=device).peak_above_baseline / 1e6


# ============================================================================================== compression
def quantize_int8(model: "nn.Module", embeddings: bool = True) -> "nn.Module":
    """A copy of ``model`` with dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``).

    Every ``nn.Linear`` stores int8 weights (one scale per tensor); its inputs are quantized on the fly per batch
    ("dynamic") and the matrix product runs in int8 on x86 (fbgemm/oneDNN) or ARM (qnnpack) CPUs. With
    ``embeddings`` the ``nn.Embedding`` tables are stored as 8-bit too (weight-only, one scale per row) — in a
    small BERT they hold most of the parameters, so without them the file barely shrinks. The original model
    is left untouched. No training data is needed, which makes it the natural last step after distillation.

    ``torch.ao.quantization`` is deprecated in favour of ``torchao`` (``torchao.quantization.quantize_`` with
    ``Int8DynamicActivationInt8WeightConfig``); it still works in torch 2.13, and its deprecation warnings are
    silenced here.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a model on a GPU (dynamic int8 quantization is a CPU technique) or already quantized.
    """
    import torch
    from torch import nn

    _require_module(model)
    if _device_of(model).type != "cpu":
        raise ValueError(f"dynamic int8 quantization runs on the CPU; the model is on {_device_of(model)} — "
                         "move it with model.cpu() first")
    if any(_is_quantized_module(m) for m in model.modules()):
        raise ValueError("the model is already quantized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices (see the docstring)
        from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

        spec: dict[type, Any] = {nn.Linear: default_dynamic_qconfig}
        if embeddings:
            spec[nn.Embedding] = float_qparams_weight_only_qconfig
        copy_ = copy.deepcopy(model).eval()
        return quantize_dynamic(copy_, spec, dtype=torch.qint8)


# =============================================================================================== generation
def _lm_batches(dataset: "Dataset", batch_size: int, pad_token_id: int) -> Iterator[dict[str, "torch.Tensor"]]:
    from .llm_data import CausalLMCollator

    cols = ("input_ids", "attention_mask", "labels")
    missing = [c for c in cols if c not in getattr(dataset, "column_names", [])]
    if missing:
        raise ValueError(f"the dataset lacks column(s) {missing}: pass a tokenised SFT dataset (input_ids, "
                         "attention_mask, labels with -100 on the prompt), e.g. from llm_data.sft_dataset")
    collate = CausalLMCollator(pad_token_id)
    columns = dataset.select_columns(list(cols)).to_dict()
    for s in range(0, len(dataset), batch_size):
        yield collate([{c: columns[c][i] for c in cols} for i in range(s, min(s + batch_size, len(dataset)))])


def language_model_scores(models: "Mapping[str, nn.Module]", dataset: "Dataset", teacher: "nn.Module | None" = None,
                          temperature: float = 2.0, batch_size: int = 16, pad_token_id: int = 0) -> "pd.DataFrame":
    """Held-out perplexity of several causal LMs on the response tokens of one tokenised SFT dataset.

    Perplexity = exp(mean cross-entropy of the tokens whose label is not -100), the next-token targets shifted by
    one. On the *teacher's* held-out responses it measures how likely a student finds what the teacher wrote; the
    teacher's own perplexity is the floor. With a ``teacher`` sharing the vocabulary, ``kd`` = T²·KL(p ‖ q) on the
    same tokens (the token-level KD loss). The teacher runs once per batch for all models.

    Returns:
        One row per model: ``perplexity``, ``ce`` (nats per token) and, with a teacher, ``kd``. ``attrs``:
        ``tokens`` (how many were scored) and, with a teacher, ``teacher_perplexity``.

    Raises:
        ValueError: no response token to score; a teacher with another vocabulary (names both sizes).
    """
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from . import llm_losses

    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, m in models.items():
        _require_module(m, f"model {name!r}")
    t = _temperature(temperature)
    batch_size = _positive_int(batch_size, "batch_size")
    sums = {name: [0.0, 0.0] for name in models}
    t_ce, n = 0.0, 0
    all_models = dict(models, **({"\0teacher": teacher} if teacher is not None else {}))
    states = {name: m.training for name, m in all_models.items()}
    for m in all_models.values():
        m.eval()
    try:
        with torch.inference_mode():
            for batch in _lm_batches(dataset, batch_size, pad_token_id):
                targets = llm_losses.shift_labels(batch["labels"])
                valid = targets != -100
                n += int(valid.sum())
                log_p = None
                if teacher is not None:
                    dev = _device_of(teacher)
                    v = teacher(input_ids=batch["input_ids"].to(dev),
                                attention_mask=batch["attention_mask"].to(dev)).logits.float().cpu()[valid]
                    t_ce += float(F.cross_entropy(v, targets[valid], reduction="sum"))
                    log_p = torch.log_softmax(v / t, -1)
                for name, model in models.items():
                    dev = _device_of(model)
                    z = model(input_ids=batch["input_ids"].to(dev),
                              attention_mask=batch["attention_mask"].to(dev)).logits.float().cpu()[valid]
                    sums[name][0] += float(F.cross_entropy(z, targets[valid], reduction="sum"))
                    if log_p is not None:
                        llm_losses.check_same_vocabulary(z, log_p)
                        log_q = torch.log_softmax(z / t, -1)
                        sums[name][1] += float((log_p.exp() * (log_p - log_q)).sum()) * t * t
    finally:
        for name, m in all_models.items():
            m.train(states[name])
    if n == 0:
        raise ValueError("the dataset has no response token to score (every label is -100)")
    rows = {name: {"perplexity": math.exp(ce / n), "ce": ce / n, **({"kd": kd / n} if teacher is not None else {})}
            for name, (ce, kd) in sums.items()}
    table = pd.DataFrame(rows).T
    table.attrs["tokens"] = n
    if teacher is not None:
        table.attrs["teacher_perplexity"] = math.exp(t_ce / n)
    return table


def perplexity(model: "nn.Module", dataset: "Dataset", batch_size: int = 16, pad_token_id: int = 0) -> float:
    """exp(mean cross-entropy) of ``model`` on the response tokens of a tokenised SFT dataset
    (:func:`language_model_scores` for one model)."""
    return float(language_model_scores({"model": model}, dataset, None, 1.0, batch_size, pad_token_id)
                 .loc["model", "perplexity"])


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation and case do not count."""
    if not isinstance(text, str):
        raise TypeError(f"words() takes a string, got {type(text).__name__}")
    return re.findall(r"\w+", text.lower())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference`` (Lin 2004), on lower-cased words.

    With L = the length of the longest common subsequence of the two word lists (in order, gaps allowed),
    P = L / |candidate|, R = L / |reference|, F1 = 2PR / (P + R). 0 when either text has no word or nothing is
    shared; 1 for identical word sequences.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise TypeError(f"rouge_l compares two strings, got {type(candidate).__name__} and {type(reference).__name__}")
    c, r = words(candidate), words(reference)
    lcs = _lcs(c, r) if c and r else 0
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def _aligned(candidates: Sequence[str], references: Sequence[str]) -> None:
    for name, xs in (("candidates", candidates), ("references", references)):
        if isinstance(xs, str) or not isinstance(xs, Sequence):
            raise TypeError(f"{name} must be a list of strings, got {type(xs).__name__}")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")


def rouge_l_scores(candidates: Sequence[str], references: Sequence[str]) -> list[float]:
    """:func:`rouge_l` for aligned lists (the i-th candidate against the i-th reference)."""
    _aligned(candidates, references)
    return [rouge_l(c, r) for c, r in zip(candidates, references)]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (Rajpurkar et al. 2016): lower case, no punctuation, no articles (a, an, the),
    single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer takes a string, got {type(text).__name__}")
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(candidate: str, reference: str, normalize: bool = True) -> float:
    """1.0 if the two answers are identical (after :func:`normalize_answer` when ``normalize``), else 0.0.

    Strict by design: right for short answers (a number, a label, a name), meaningless for free text — use
    :func:`rouge_l` there.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise TypeError(f"exact_match compares two strings, got {type(candidate).__name__} and "
                        f"{type(reference).__name__}")
    if normalize:
        return float(normalize_answer(candidate) == normalize_answer(reference))
    return float(candidate == reference)


def exact_match_scores(candidates: Sequence[str], references: Sequence[str], normalize: bool = True) -> list[float]:
    """:func:`exact_match` for aligned lists."""
    _aligned(candidates, references)
    return [exact_match(c, r, normalize) for c, r in zip(candidates, references)]


# ================================================================================================ the harness
SUMMARY_LABELS = {
    "params_m": "parameters (M)",
    "size_mb": "size on disk (MB)",
    "weights_mb": "weights in memory (MB)",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "ece": "ECE",
    "confidence": "mean confidence",
    "nll": "NLL",
    "agreement": "agreement with reference",
    "kl_to_teacher": "KL(reference ‖ model)",
}


@dataclass
class ClassifierEvaluation:
    """What :func:`evaluate_classifiers` measured.

    Attributes:
        table: one row per model; columns ``params_m``, ``size_mb``, ``weights_mb``, ``activations_mb_b{b}``,
            ``peak_mb_b{b}`` (weights + activations), per batch size ``b{b}_median_ms``, ``b{b}_p90_ms``,
            ``b{b}_throughput`` (examples/s) and ``b{b}_speedup`` (over the reference, same run), then
            ``accuracy``, ``macro_f1``, ``ece``, ``confidence``, ``nll``, ``agreement`` and ``kl_to_teacher`` (to
            the reference).
        latency: the :func:`measure_latency` table (``(model, batch_size)`` rows).
        logits: ``{model: (N, C) logits}`` on the evaluation set.
        labels: its ``N`` labels.
        reference: the model every other one is compared with (usually the teacher).
    """

    table: "pd.DataFrame"
    latency: "pd.DataFrame | None"
    logits: dict[str, np.ndarray]
    labels: np.ndarray
    reference: str | None
    settings: dict = field(default_factory=dict)

    def difference(self, a: str, b: str, **kwargs: Any) -> BootstrapResult:
        """accuracy(a) − accuracy(b) with a paired bootstrap CI (:func:`accuracy_difference`)."""
        for m in (a, b):
            if m not in self.logits:
                raise ValueError(f"unknown model {m!r}; evaluated: {list(self.logits)}")
        return accuracy_difference(self.logits[a], self.logits[b], self.labels, label=f"{a} − {b}", **kwargs)

    def compare(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> "pd.DataFrame":
        """:func:`compare_accuracies` for the given ``(A, B)`` pairs."""
        return compare_accuracies(self.logits, self.labels, pairs, **kwargs)

    def pretty(self, columns: Sequence[str] | None = None, digits: int = 3) -> "pd.DataFrame":
        """The table with readable column names (for display), rounded."""
        t = self.table if columns is None else self.table[list(columns)]
        return t.rename(columns=_pretty_name).round(digits)

    def to_markdown(self, columns: Sequence[str] | None = None, digits: int = 3) -> str:
        """The (readable) table as GitHub markdown."""
        return _markdown(self.pretty(columns, digits))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the full table (machine-readable column names) to ``path``; returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(path, index_label="model")
        return path


def readable_columns(table: "pd.DataFrame") -> "pd.DataFrame":
    """``table`` with the harness's machine-readable column names (``b32_median_ms``, ``size_mb``, …) replaced by
    readable ones (``b32 latency median (ms)``, ``size on disk (MB)``, …); other columns keep their names."""
    return table.rename(columns=_pretty_name)


def _pretty_name(column: str) -> str:
    if column in SUMMARY_LABELS:
        return SUMMARY_LABELS[column]
    m = re.fullmatch(r"b(\d+)_(median_ms|p90_ms|throughput|speedup)", column)
    if m:
        what = {"median_ms": "latency median (ms)", "p90_ms": "latency p90 (ms)", "throughput": "throughput (ex/s)",
                "speedup": "speed-up"}[m.group(2)]
        return f"b{m.group(1)} {what}"
    m = re.fullmatch(r"(activations|peak)_mb_b(\d+)", column)
    if m:
        return f"{'activation' if m.group(1) == 'activations' else 'peak'} memory b{m.group(2)} (MB)"
    return column


def _markdown(df: "pd.DataFrame") -> str:
    """GitHub markdown without the optional ``tabulate`` dependency of ``DataFrame.to_markdown``."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    head = "| " + " | ".join([str(df.index.name or "")] + [str(c) for c in df.columns]) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"
    body = ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |" for i, row in zip(df.index, df.values)]
    return "\n".join([head, rule, *body])


def evaluate_classifiers(
    models: "Mapping[str, nn.Module]",
    dataset: "Dataset",
    tokenizer: Any,
    *,
    reference: str | None = None,
    logits: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    max_length: int = 64,
    n_bins: int = 15,
    memory_batch_size: int | None = None,
    size_format: str = "state_dict",
    text_column: str = "text",
) -> ClassifierEvaluation:
    """The evaluation harness: every number of the trade-off for several text classifiers, in one run.

    For each model: parameter count, size on disk, weights in memory, peak memory of one batch, latency (median and
    p90) and throughput at every batch size (:func:`measure_latency`: warm-up, fixed threads, interleaved repeats),
    speed-up over the ``reference`` (same run), and on the labelled ``dataset``: accuracy, macro-F1, ECE, mean
    confidence, NLL, agreement with and KL to the reference.

    Args:
        models: ``{name: model}`` (``transformers`` sequence classifiers, fp32 or quantized), all on the CPU.
        dataset: a tokenised, labelled split (``input_ids``, ``label`` and ``text_column``), e.g. ``task.data["test"]``.
        tokenizer: the tokenizer every model shares.
        reference: the model speed-ups, agreement and KL refer to (default: the first).
        logits: precomputed ``{name: (N, C) logits}`` on ``dataset`` (e.g. stored with a cached student); models
            without an entry are run with :func:`course_utils.trainer.predict_logits`.
        batch_sizes: latency batch sizes (the first ``b`` texts of ``dataset``); ``()`` skips speed and memory.
        repeats, warmup, threads: see :func:`measure_latency`.
        max_length: truncation length of the latency batches (as in training).
        n_bins: ECE bins.
        memory_batch_size: batch size of the memory measurement (default: the largest of ``batch_sizes``).
        size_format: ``"state_dict"`` (default; comparable across fp32 and int8 models) or ``"save_pretrained"``,
            see :func:`size_on_disk_mb`.
        text_column: the dataset's raw-text column.
    """
    import pandas as pd

    from .trainer import predict_logits

    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, m in models.items():
        _require_module(m, f"model {name!r}")
    reference = reference if reference is not None else next(iter(models))
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    cols = getattr(dataset, "column_names", None)
    if cols is None or "label" not in cols:
        raise ValueError("dataset must be a labelled, tokenised datasets.Dataset (with a 'label' column)")
    labels = _array(dataset["label"], "labels")
    logits = dict(logits or {})
    unknown = [k for k in logits if k not in models]
    if unknown:
        raise ValueError(f"logits given for unknown model(s) {unknown}; models: {list(models)}")
    out_logits = {}
    for name, model in models.items():
        z = _scores(logits[name], f"logits[{name!r}]") if name in logits else \
            predict_logits(model, dataset, tokenizer).astype(np.float64)
        if len(z) != len(labels):
            raise ValueError(f"logits of {name!r} have {len(z)} rows for {len(labels)} examples")
        out_logits[name] = z
    rows: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        rows[name] = {"params_m": count_parameters(model) / 1e6, "size_mb": size_on_disk_mb(model, size_format),
                      "weights_mb": weights_memory_mb(model)}
    latency = None
    sizes = [int(b) for b in batch_sizes]
    if sizes:
        if text_column not in cols:
            raise ValueError(f"dataset has no {text_column!r} column to build latency batches from")
        batches = text_batches(tokenizer, dataset[text_column][: max(sizes)], sizes, max_length)
        mem_b = memory_batch_size or max(sizes)
        mem_batch = batches.get(mem_b) or text_batches(tokenizer, dataset[text_column][:mem_b], [mem_b], max_length)[mem_b]
        for name, model in models.items():
            act = inference_memory_mb(model, mem_batch)
            rows[name][f"activations_mb_b{mem_b}"] = act
            rows[name][f"peak_mb_b{mem_b}"] = rows[name]["weights_mb"] + act
        latency = measure_latency(models, batches, sizes, repeats, warmup, threads)
        ratio = speedups(latency, reference)
        for name in models:
            for b in sizes:
                stats_ = latency.loc[(name, b)]
                rows[name].update({f"b{b}_median_ms": stats_["median_ms"], f"b{b}_p90_ms": stats_["p90_ms"],
                                   f"b{b}_throughput": stats_["throughput"], f"b{b}_speedup": ratio.loc[name, b]})
    for name in models:
        rows[name].update(classification_metrics(out_logits[name], labels, out_logits[reference], n_bins))
    table = pd.DataFrame(rows).T
    table.index.name = "model"
    settings = {"reference": reference, "batch_sizes": sizes, "repeats": repeats, "warmup": warmup,
                "threads": latency.attrs["threads"] if latency is not None else None, "n_bins": n_bins,
                "size_format": size_format, "examples": len(labels)}
    table.attrs.update(settings)
    return ClassifierEvaluation(table, latency, out_logits, labels, reference, settings)


def pareto_front(table: "pd.DataFrame", maximize: Sequence[str] = (), minimize: Sequence[str] = ()) -> "pd.Series":
    """Which rows are Pareto-optimal: no other row is at least as good on every criterion and better on one.

    Args:
        table: one row per model.
        maximize: columns where higher is better (e.g. ``["accuracy"]``).
        minimize: columns where lower is better (e.g. ``["b32_median_ms", "size_mb"]``).

    Returns:
        A boolean Series aligned with ``table.index``.
    """
    import pandas as pd

    criteria = list(maximize) + list(minimize)
    if not criteria:
        raise ValueError("give at least one column to maximize or minimize")
    missing = [c for c in criteria if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table ({list(table.columns)})")
    values = np.column_stack([table[c].to_numpy(float) for c in maximize] +
                             [-table[c].to_numpy(float) for c in minimize])
    if np.isnan(values).any():
        raise ValueError("the criteria columns contain NaN")
    front = []
    for i in range(len(values)):
        others = np.delete(values, i, axis=0)
        dominated = np.any(np.all(others >= values[i], axis=1) & np.any(others > values[i], axis=1))
        front.append(not dominated)
    return pd.Series(front, index=table.index, name="pareto")


def results_path(name: str) -> Path:
    """Where a notebook's result tables go: ``<course cache>/results/<name>`` (the directory is created)."""
    from . import assets

    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name such as '06_summary.csv', got {name!r}")
    folder = assets.cache_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
