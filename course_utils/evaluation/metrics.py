"""Quality and fidelity of a classifier from its logits: accuracy, F1, agreement with the teacher, KL to the
teacher, probabilities.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import _labels, _log_softmax, _same_shape, _scores, _temperature

__all__ = ['F1_AVERAGES', 'accuracy', 'f1', 'agreement', 'kl_to_teacher', 'probabilities']


F1_AVERAGES = ("macro", "micro", "weighted", "binary")


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
