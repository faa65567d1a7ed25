"""Unit tests for course_utils.kd.ensembles: stacking teacher logits, multi-teacher soft targets (mean of
probabilities or of logits, weighted), teacher weights, soft targets back to logits, and deep mutual learning's
per-student losses."""
from __future__ import annotations

import pytest
import torch

from course_utils.kd import ensembles
from course_utils.kd.losses import distillation_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def randn(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ============================================================================================ multi-teacher
def test_stack_teacher_logits_accepts_lists_and_tensors():
    a, b = randn(4, 5, seed=1), randn(4, 5, seed=2)
    stacked = ensembles.stack_teacher_logits([a, b])
    assert stacked.shape == (2, 4, 5) and torch.equal(stacked[1], b)
    assert torch.equal(ensembles.stack_teacher_logits(stacked), stacked)
    assert ensembles.stack_teacher_logits([a.double()]).dtype == torch.float32


def test_teachers_with_different_label_spaces_are_refused():
    with pytest.raises(ValueError, match="do not share a label space: teacher 0 predicts 5 classes, teacher 1 predicts 4"):
        ensembles.stack_teacher_logits([randn(4, 5), randn(4, 4)])
    names = ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match=r"different column order.*\[:, \[1, 0, 2\]\]"):
        ensembles.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, ["dog", "cat", "fox"]])
    with pytest.raises(ValueError, match=r"classes \['owl'\] that teacher 0 lacks and lacks \['fox'\]"):
        ensembles.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, ["cat", "dog", "owl"]])
    with pytest.raises(ValueError, match="2 label spaces for 1 teachers"):
        ensembles.stack_teacher_logits([randn(2, 3)], label_spaces=[names, names])
    with pytest.raises(ValueError, match="names 2 classes"):
        ensembles.stack_teacher_logits([randn(2, 3)], label_spaces=[["a", "b"]])
    assert ensembles.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, list(names)]).shape == (2, 2, 3)


@pytest.mark.parametrize("bad, error, message", [
    ([], ValueError, "no teacher"),
    ("logits", TypeError, "list of"),
    (torch.zeros(4, 5), ValueError, r"\(K, N, C\)"),
    ([torch.zeros(4, 5, dtype=torch.long)], TypeError, "floating-point"),
    ([torch.softmax(torch.randn(4, 5), -1)], ValueError, "probabilities"),
    ([torch.randn(2, 4, 5)], ValueError, r"shape \(N, C\)"),
    ([torch.randn(4, 5), torch.randn(3, 5)], ValueError, "same inputs"),
])
def test_stack_teacher_logits_rejects_bad_input(bad, error, message):
    with pytest.raises(error, match=message):
        ensembles.stack_teacher_logits(bad)


def test_ensemble_mean_probs_and_mean_logits():
    v = randn(3, 4, 5, seed=3)
    T = 2.0
    p = ensembles.ensemble_soft_targets(v, T, "mean_probs")
    assert torch.allclose(p, torch.softmax(v / T, -1).mean(0))
    g = ensembles.ensemble_soft_targets(list(v), T, "mean_logits")
    geometric = torch.softmax(v / T, -1).prod(0) ** (1 / 3)
    assert torch.allclose(g, geometric / geometric.sum(-1, keepdim=True), atol=1e-6)  # product of experts
    for out in (p, g):
        assert out.shape == (4, 5) and torch.allclose(out.sum(-1), torch.ones(4))
    # the temperature acts on each teacher before the average
    assert not torch.allclose(p, torch.softmax(torch.softmax(v, -1).mean(0).log() / T, -1))
    # mixture entropy ≥ mean entropy of the parts (concavity)
    entropy = lambda q: -(q * q.log()).sum(-1)  # noqa: E731
    assert (entropy(p) >= entropy(torch.softmax(v / T, -1)).mean(0) - 1e-6).all()


def test_single_teacher_ensemble_is_that_teacher():
    v = randn(1, 6, 4, seed=4)
    for method, kw in (("mean_probs", {}), ("mean_logits", {}), ("weighted", {"weights": torch.ones(1)})):
        assert torch.allclose(ensembles.ensemble_soft_targets(v, 3.0, method, **kw), torch.softmax(v[0] / 3.0, -1))


def test_weighted_soft_targets():
    v = randn(2, 3, 4, seed=5)
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # rows are normalised
    out = ensembles.ensemble_soft_targets(v, 1.0, "weighted", weights=w)
    probs = torch.softmax(v, -1)
    assert torch.allclose(out[0], probs[0, 0]) and torch.allclose(out[1], probs[1, 1])
    assert torch.allclose(out[2], probs[:, 2].mean(0))
    glob = ensembles.ensemble_soft_targets(v, 1.0, "weighted", weights=torch.tensor([3.0, 1.0]))
    assert torch.allclose(glob, 0.75 * probs[0] + 0.25 * probs[1])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="weighted"), ValueError, "needs weights"),
    (dict(method="median"), ValueError, "method must be one of"),
    (dict(method="mean_probs", weights=torch.ones(2)), ValueError, "only used with method='weighted'"),
    (dict(method="weighted", weights=torch.ones(2, 3)), ValueError, r"\(N, K\) = \(3, 2\)"),
    (dict(method="weighted", weights=torch.tensor([1.0, -1.0])), ValueError, "non-negative"),
    (dict(method="weighted", weights=torch.zeros(3, 2)), ValueError, "all-zero"),
    (dict(method="weighted", weights=[0.5, 0.5]), TypeError, "torch.Tensor"),
    (dict(temperature=0.0), ValueError, "temperature"),
])
def test_ensemble_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ensembles.ensemble_soft_targets(randn(2, 3, 4), **kwargs)


def test_teacher_weights():
    labels = torch.tensor([0, 1])
    right_then_wrong = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # teacher 0 says class 0 twice
    wrong_then_right = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])  # teacher 1 says class 1 twice
    w = ensembles.teacher_weights([right_then_wrong, wrong_then_right], labels)
    assert w.shape == (2, 2) and torch.allclose(w.sum(-1), torch.ones(2))
    assert w[0, 0] > 0.95 and w[1, 1] > 0.95
    p = torch.softmax(torch.stack([right_then_wrong, wrong_then_right]), -1)
    expected = p[:, torch.arange(2), labels].T
    assert torch.allclose(w, expected / expected.sum(-1, keepdim=True))
    assert torch.allclose(ensembles.teacher_weights([right_then_wrong, wrong_then_right], labels, sharpness=0), torch.full((2, 2), 0.5))
    sharp = ensembles.teacher_weights([right_then_wrong, wrong_then_right], labels, sharpness=3)
    assert sharp[0, 0] > w[0, 0]
    unsure = torch.zeros(2, 3)
    conf = ensembles.teacher_weights([right_then_wrong, unsure], scheme="confidence")
    assert (conf[:, 0] > conf[:, 1]).all()
    # extreme logits: weights stay finite (log-space computation)
    extreme = ensembles.teacher_weights([torch.tensor([[200.0, -200.0, 0.0]]), torch.tensor([[-200.0, 200.0, 0.0]])],
                                torch.tensor([0]))
    assert torch.isfinite(extreme).all() and extreme[0, 0] > 0.999


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(), ValueError, "needs the labels"),
    (dict(labels=torch.tensor([0, 3])), ValueError, r"\[0, 3\)"),
    (dict(labels=torch.tensor([0])), ValueError, "1 labels for 2"),
    (dict(labels=torch.tensor([0.0, 1.0])), TypeError, "integer"),
    (dict(labels=torch.tensor([0, 1]), scheme="confidence"), ValueError, "does not use labels"),
    (dict(labels=torch.tensor([0, 1]), scheme="accuracy"), ValueError, "scheme must be"),
    (dict(labels=torch.tensor([0, 1]), sharpness=-1.0), ValueError, "sharpness"),
])
def test_teacher_weights_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        ensembles.teacher_weights([randn(2, 3, seed=1), randn(2, 3, seed=2)], **kwargs)


def test_soft_targets_to_logits_round_trip():
    p = torch.softmax(randn(5, 4, seed=6), -1)
    for T in (1.0, 4.0):
        logits = ensembles.soft_targets_to_logits(p, T)
        assert torch.allclose(torch.softmax(logits / T, -1), p, atol=1e-6)
    with_zero = torch.tensor([[1.0, 0.0, 0.0]])
    logits = ensembles.soft_targets_to_logits(with_zero, 2.0)
    assert torch.isfinite(logits).all()
    # usable as teacher logits in the course's KD loss (not mistaken for probabilities)
    distillation_loss(randn(5, 4, seed=7), ensembles.soft_targets_to_logits(p, 4.0), torch.zeros(5, dtype=torch.long), 4.0)
    with pytest.raises(ValueError, match="did you pass logits"):
        ensembles.soft_targets_to_logits(randn(3, 4), 1.0)
    with pytest.raises(TypeError):
        ensembles.soft_targets_to_logits(torch.ones(2, 2, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="C ≥ 2"):
        ensembles.soft_targets_to_logits(torch.ones(3, 1), 1.0)


# ===================================================================================== deep mutual learning
def test_mutual_learning_losses_formula_and_detach():
    za = randn(6, 4, seed=8).requires_grad_(True)
    zb = randn(6, 4, seed=9).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_a, loss_b = ensembles.mutual_learning_losses([za, zb], y, temperature=2.0, alpha_kd=0.3)
    assert torch.allclose(loss_a, distillation_loss(za, zb.detach(), y, 2.0, 0.3).loss)
    assert torch.allclose(loss_b, distillation_loss(zb, za.detach(), y, 2.0, 0.3).loss)
    ga = torch.autograd.grad(loss_a, [za, zb], allow_unused=True)
    assert ga[0] is not None and ga[1] is None  # the peer is a fixed target


def test_mutual_learning_losses_three_students_average_over_peers():
    z = [randn(5, 3, seed=s) for s in (1, 2, 3)]
    y = torch.tensor([0, 1, 2, 0, 1])
    losses = ensembles.mutual_learning_losses(z, y, temperature=1.0, alpha_kd=0.5)
    kl = lambda a, b: distillation_loss(a, b, y, 1.0, 1.0 - 1e-12).kd  # noqa: E731
    ce = torch.nn.functional.cross_entropy(z[0], y)
    assert torch.allclose(losses[0], 0.5 * ce + 0.5 * (kl(z[0], z[1]) + kl(z[0], z[2])) / 2, atol=1e-5)


@pytest.mark.parametrize("logits, message", [
    ([torch.zeros(2, 3)], "at least two"),
    ((torch.zeros(2, 3),), "at least two"),
    ([torch.zeros(2, 3), torch.zeros(2, 4)], "one shape"),
    ([torch.zeros(2, 3), "z"], "one shape"),
])
def test_mutual_learning_losses_errors(logits, message):
    with pytest.raises(ValueError, match=message):
        ensembles.mutual_learning_losses(logits, torch.zeros(2, dtype=torch.long))
