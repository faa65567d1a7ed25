"""Unit tests for course_utils.evaluation.metrics: accuracy, macro/binary/micro F1, agreement, KL to the teacher and
probabilities, each with its failure paths (and course_utils.evaluation.harness.classification_metrics, which
gathers them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.evaluation import harness, metrics
from course_utils.evaluation.metrics import accuracy, agreement

pytestmark = pytest.mark.usefixtures("single_thread")

LOGITS = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])


# ================================================================================================== quality
def test_accuracy_f1_agreement():
    assert metrics.accuracy(LOGITS, [0, 1, 1, 0]) == 0.75
    assert metrics.accuracy(torch.tensor(LOGITS), torch.tensor([0, 1, 0, 0])) == 1.0
    assert metrics.agreement(LOGITS, LOGITS) == 1.0
    assert metrics.agreement(LOGITS, -LOGITS) == 0.0
    # predictions 0 1 0 0 vs labels 0 1 1 0: class 0 P=2/3 R=1 F1=.8; class 1 P=1 R=.5 F1=2/3
    assert metrics.f1(LOGITS, [0, 1, 1, 0]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics.f1(LOGITS, [0, 1, 1, 0], average="binary") == pytest.approx(2 / 3)
    assert metrics.f1(LOGITS, [0, 1, 1, 0], average="micro") == pytest.approx(0.75)
    assert metrics.accuracy(np.array([[1.0, 0.0]] * 3), np.array([0.0, 0.0, 0.0])) == 1.0  # integral floats accepted


@pytest.mark.parametrize("logits, labels, error, match", [
    (np.array([0.1, 0.9]), [1, 0], ValueError, r"shape \(N, C\)"),
    (np.zeros((0, 2)), [], ValueError, "empty"),
    (np.array([[1.0], [2.0]]), [0, 0], ValueError, "at least 2"),
    (np.array([[np.nan, 1.0]]), [0], ValueError, "NaN"),
    (np.array([["a", "b"]]), [0], TypeError, "numbers"),
    (LOGITS, [0, 1, 1], ValueError, "4 predictions but 3 labels"),
    (LOGITS, [0, 1, 2, 0], ValueError, r"\[0, 2\)"),
    (LOGITS, [0, 1, -1, 0], ValueError, r"\[0, 2\)"),
    (LOGITS, [0.5, 1, 1, 0], TypeError, "integer class indices"),
    (LOGITS, [[0, 1]] * 4, ValueError, "1-D"),
    ("logits", [0], TypeError, "NumPy array"),
])
def test_quality_input_errors(logits, labels, error, match):
    with pytest.raises(error, match=match):
        metrics.accuracy(logits, labels)


def test_quality_other_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.agreement(LOGITS, LOGITS[:3])
    with pytest.raises(ValueError, match="average must be one of"):
        metrics.f1(LOGITS, [0, 1, 1, 0], average="samples")
    with pytest.raises(ValueError, match="not a class index"):
        metrics.f1(LOGITS, [0, 1, 1, 0], average="binary", positive=2)


def test_kl_to_teacher_matches_torch():
    gen = torch.Generator().manual_seed(0)
    z, v = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen) * 2
    for t in (1.0, 3.0):
        expected = F.kl_div(F.log_softmax(z / t, -1), F.log_softmax(v / t, -1), log_target=True,
                            reduction="batchmean")
        assert metrics.kl_to_teacher(z, v, t) == pytest.approx(float(expected), rel=1e-5)
    assert metrics.kl_to_teacher(v, v) == pytest.approx(0.0, abs=1e-12)
    assert metrics.kl_to_teacher(z + 5.0, z) == pytest.approx(0.0, abs=1e-12)  # shift-invariant, like softmax
    with pytest.raises(ValueError, match="temperature must be"):
        metrics.kl_to_teacher(z, v, 0.0)
    with pytest.raises(TypeError, match="temperature must be"):
        metrics.kl_to_teacher(z, v, "2")
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.kl_to_teacher(z, v[:, :3])


def test_probabilities_and_classification_metrics():
    p = metrics.probabilities(LOGITS, temperature=2.0)
    assert np.allclose(p.sum(1), 1.0) and np.allclose(p, torch.softmax(torch.tensor(LOGITS) / 2, -1).numpy())
    m = harness.classification_metrics(LOGITS, [0, 1, 1, 0], teacher_logits=LOGITS)
    assert set(m) == {"accuracy", "macro_f1", "ece", "confidence", "nll", "agreement", "kl_to_teacher"}
    assert m["accuracy"] == 0.75 and m["agreement"] == 1.0 and m["kl_to_teacher"] == pytest.approx(0.0, abs=1e-12)
    nll = F.cross_entropy(torch.tensor(LOGITS), torch.tensor([0, 1, 1, 0])).item()
    assert m["nll"] == pytest.approx(nll)
    assert "agreement" not in harness.classification_metrics(LOGITS, [0, 1, 1, 0])


def test_accuracy_and_agreement():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])
    assert accuracy(logits, [0, 1, 1, 0]) == 0.75
    assert accuracy(logits, np.array([0, 1, 0, 0])) == 1.0
    assert agreement(logits, logits) == 1.0
    assert agreement(logits, -logits) == 0.0
    assert agreement(logits, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])) == 0.5
    with pytest.raises(ValueError, match="4 predictions but 3 labels"):
        accuracy(logits, [0, 1, 1])
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(logits, logits[:3])
