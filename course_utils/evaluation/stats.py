"""Uncertainty of a comparison: the paired bootstrap over test examples (scipy's BCa where available) and the
accuracy difference of two models with its interval.
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ._validation import _labels, _positive_int, _probability_level, _scores
from .metrics import accuracy

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ['BootstrapResult', 'paired_bootstrap', 'accuracy_difference', 'compare_accuracies']


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
