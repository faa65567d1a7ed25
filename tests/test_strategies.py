"""course_utils.strategies: multi-teacher soft targets, born-again, teacher-assistant chains, mutual learning, data-free."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from course_utils import strategies as S
from course_utils.digits import make_mlp, predict_logits, train_classifier
from course_utils.losses import distillation_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def randn(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def toy():
    """A tiny separable 3-class problem in 6 dimensions (60 rows)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    centres = torch.randn(3, 6, generator=gen) * 2
    x = centres[y] + 0.5 * torch.randn(60, 6, generator=gen)
    return x, y


def mlp(hidden=(8,), seed=0):
    return make_mlp(hidden, in_features=6, n_classes=3, seed=seed)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


# ============================================================================================ multi-teacher
def test_stack_teacher_logits_accepts_lists_and_tensors():
    a, b = randn(4, 5, seed=1), randn(4, 5, seed=2)
    stacked = S.stack_teacher_logits([a, b])
    assert stacked.shape == (2, 4, 5) and torch.equal(stacked[1], b)
    assert torch.equal(S.stack_teacher_logits(stacked), stacked)
    assert S.stack_teacher_logits([a.double()]).dtype == torch.float32


def test_teachers_with_different_label_spaces_are_refused():
    with pytest.raises(ValueError, match="do not share a label space: teacher 0 predicts 5 classes, teacher 1 predicts 4"):
        S.stack_teacher_logits([randn(4, 5), randn(4, 4)])
    names = ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match=r"different column order.*\[:, \[1, 0, 2\]\]"):
        S.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, ["dog", "cat", "fox"]])
    with pytest.raises(ValueError, match=r"classes \['owl'\] that teacher 0 lacks and lacks \['fox'\]"):
        S.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, ["cat", "dog", "owl"]])
    with pytest.raises(ValueError, match="2 label spaces for 1 teachers"):
        S.stack_teacher_logits([randn(2, 3)], label_spaces=[names, names])
    with pytest.raises(ValueError, match="names 2 classes"):
        S.stack_teacher_logits([randn(2, 3)], label_spaces=[["a", "b"]])
    assert S.stack_teacher_logits([randn(2, 3), randn(2, 3)], label_spaces=[names, list(names)]).shape == (2, 2, 3)


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
        S.stack_teacher_logits(bad)


def test_ensemble_mean_probs_and_mean_logits():
    v = randn(3, 4, 5, seed=3)
    T = 2.0
    p = S.ensemble_soft_targets(v, T, "mean_probs")
    assert torch.allclose(p, torch.softmax(v / T, -1).mean(0))
    g = S.ensemble_soft_targets(list(v), T, "mean_logits")
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
        assert torch.allclose(S.ensemble_soft_targets(v, 3.0, method, **kw), torch.softmax(v[0] / 3.0, -1))


def test_weighted_soft_targets():
    v = randn(2, 3, 4, seed=5)
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # rows are normalised
    out = S.ensemble_soft_targets(v, 1.0, "weighted", weights=w)
    probs = torch.softmax(v, -1)
    assert torch.allclose(out[0], probs[0, 0]) and torch.allclose(out[1], probs[1, 1])
    assert torch.allclose(out[2], probs[:, 2].mean(0))
    glob = S.ensemble_soft_targets(v, 1.0, "weighted", weights=torch.tensor([3.0, 1.0]))
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
        S.ensemble_soft_targets(randn(2, 3, 4), **kwargs)


def test_teacher_weights():
    labels = torch.tensor([0, 1])
    right_then_wrong = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # teacher 0 says class 0 twice
    wrong_then_right = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])  # teacher 1 says class 1 twice
    w = S.teacher_weights([right_then_wrong, wrong_then_right], labels)
    assert w.shape == (2, 2) and torch.allclose(w.sum(-1), torch.ones(2))
    assert w[0, 0] > 0.95 and w[1, 1] > 0.95
    p = torch.softmax(torch.stack([right_then_wrong, wrong_then_right]), -1)
    expected = p[:, torch.arange(2), labels].T
    assert torch.allclose(w, expected / expected.sum(-1, keepdim=True))
    assert torch.allclose(S.teacher_weights([right_then_wrong, wrong_then_right], labels, sharpness=0), torch.full((2, 2), 0.5))
    sharp = S.teacher_weights([right_then_wrong, wrong_then_right], labels, sharpness=3)
    assert sharp[0, 0] > w[0, 0]
    unsure = torch.zeros(2, 3)
    conf = S.teacher_weights([right_then_wrong, unsure], scheme="confidence")
    assert (conf[:, 0] > conf[:, 1]).all()
    # extreme logits: weights stay finite (log-space computation)
    extreme = S.teacher_weights([torch.tensor([[200.0, -200.0, 0.0]]), torch.tensor([[-200.0, 200.0, 0.0]])],
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
        S.teacher_weights([randn(2, 3, seed=1), randn(2, 3, seed=2)], **kwargs)


def test_soft_targets_to_logits_round_trip():
    p = torch.softmax(randn(5, 4, seed=6), -1)
    for T in (1.0, 4.0):
        logits = S.soft_targets_to_logits(p, T)
        assert torch.allclose(torch.softmax(logits / T, -1), p, atol=1e-6)
    with_zero = torch.tensor([[1.0, 0.0, 0.0]])
    logits = S.soft_targets_to_logits(with_zero, 2.0)
    assert torch.isfinite(logits).all()
    # usable as teacher logits in the course's KD loss (not mistaken for probabilities)
    distillation_loss(randn(5, 4, seed=7), S.soft_targets_to_logits(p, 4.0), torch.zeros(5, dtype=torch.long), 4.0)
    with pytest.raises(ValueError, match="did you pass logits"):
        S.soft_targets_to_logits(randn(3, 4), 1.0)
    with pytest.raises(TypeError):
        S.soft_targets_to_logits(torch.ones(2, 2, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="C ≥ 2"):
        S.soft_targets_to_logits(torch.ones(3, 1), 1.0)


# ============================================================================================ born-again
def test_born_again_generations(toy):
    x, y = toy
    gens = S.born_again(lambda s: mlp(seed=s), x, y, generations=2, temperature=2.0, alpha_kd=0.7, epochs=5,
                        lr=1e-2, batch_size=20, seed=10)
    assert len(gens) == 3 and all(S.same_architecture(g, gens[0]) for g in gens)
    assert not any(m.training for m in gens)
    # generation 2 is exactly "train a fresh copy with KD from generation 1's logits on x"
    manual = mlp(seed=12)
    train_classifier(manual, x, y, epochs=5, lr=1e-2, batch_size=20, seed=12, teacher_logits=predict_logits(gens[1], x),
                     temperature=2.0, alpha_kd=0.7)
    assert all(torch.equal(a, b) for a, b in zip(params(manual), params(gens[2])))


def test_born_again_reuses_a_trained_first_generation(toy):
    x, y = toy
    first = mlp(seed=0)
    train_classifier(first, x, y, epochs=3, lr=1e-2, seed=0)
    before = params(first)
    gens = S.born_again(lambda s: mlp(seed=s), x, y, generations=1, epochs=2, first=first)
    assert gens[0] is first and all(torch.equal(a, b) for a, b in zip(before, params(first)))


def test_born_again_errors(toy):
    x, y = toy
    with pytest.raises(ValueError, match="different architecture"):
        S.born_again(lambda s: mlp((8,) if s == 0 else (4,), seed=s), x, y, epochs=1)
    with pytest.raises(ValueError, match="generations"):
        S.born_again(lambda s: mlp(seed=s), x, y, generations=0)
    with pytest.raises(TypeError, match="make_model"):
        S.born_again(mlp(), x, y)
    with pytest.raises(ValueError, match="epochs"):
        S.born_again(lambda s: mlp(seed=s), x, y, epochs=0)
    with pytest.raises(ValueError, match="one label per row"):
        S.born_again(lambda s: mlp(seed=s), x, y[:10])
    with pytest.raises(ValueError, match="alpha_kd"):
        S.born_again(lambda s: mlp(seed=s), x, y, alpha_kd=1.5)


def test_same_architecture():
    assert S.same_architecture(mlp(seed=0), mlp(seed=1))
    assert not S.same_architecture(mlp((8,)), mlp((8, 8)))
    assert not S.same_architecture(mlp((8,)), mlp((9,)))


# ===================================================================================== teacher assistants
def test_distill_chain_trains_each_step_from_the_previous(toy):
    x, y = toy
    teacher = mlp((16,), seed=0)
    train_classifier(teacher, x, y, epochs=10, lr=1e-2, seed=0)
    teacher_before = params(teacher)
    ta, student = mlp((8,), seed=1), mlp((2,), seed=2)
    chain = S.distill_chain(teacher, [ta, student], x, y, temperature=2.0, alpha_kd=0.5, epochs=4, lr=1e-2,
                            batch_size=30, seed=5)
    assert chain == [ta, student]
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, params(teacher)))
    manual = mlp((2,), seed=2)
    train_classifier(manual, x, y, epochs=4, lr=1e-2, batch_size=30, seed=6, teacher_logits=predict_logits(ta, x),
                     temperature=2.0, alpha_kd=0.5)
    assert all(torch.equal(a, b) for a, b in zip(params(manual), params(student)))


def test_distill_chain_without_labels(toy):
    x, _ = toy
    student = mlp(seed=3)
    S.distill_chain(mlp(seed=4), [student], x, None, alpha_kd=1.0, epochs=2)
    with pytest.raises(ValueError, match="alpha_kd=1"):
        S.distill_chain(mlp(seed=4), [mlp(seed=5)], x, None, alpha_kd=0.5, epochs=2)


def test_distill_chain_errors(toy):
    x, y = toy
    teacher = mlp(seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        S.distill_chain(teacher, [], x, y)
    with pytest.raises(ValueError, match="distinct"):
        S.distill_chain(teacher, [teacher], x, y)
    same = mlp(seed=1)
    with pytest.raises(ValueError, match="distinct"):
        S.distill_chain(teacher, [same, same], x, y)
    with pytest.raises(ValueError, match="chain\\[0\\] predicts 4 classes but its teacher predicts 3"):
        S.distill_chain(teacher, [make_mlp((4,), in_features=6, n_classes=4)], x, y, epochs=1)
    with pytest.raises(TypeError, match="teacher"):
        S.distill_chain("teacher", [mlp()], x, y)


# ===================================================================================== deep mutual learning
def test_mutual_learning_losses_formula_and_detach():
    za = randn(6, 4, seed=8).requires_grad_(True)
    zb = randn(6, 4, seed=9).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_a, loss_b = S.mutual_learning_losses([za, zb], y, temperature=2.0, alpha_kd=0.3)
    assert torch.allclose(loss_a, distillation_loss(za, zb.detach(), y, 2.0, 0.3).loss)
    assert torch.allclose(loss_b, distillation_loss(zb, za.detach(), y, 2.0, 0.3).loss)
    ga = torch.autograd.grad(loss_a, [za, zb], allow_unused=True)
    assert ga[0] is not None and ga[1] is None  # the peer is a fixed target


def test_mutual_learning_losses_three_students_average_over_peers():
    z = [randn(5, 3, seed=s) for s in (1, 2, 3)]
    y = torch.tensor([0, 1, 2, 0, 1])
    losses = S.mutual_learning_losses(z, y, temperature=1.0, alpha_kd=0.5)
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
        S.mutual_learning_losses(logits, torch.zeros(2, dtype=torch.long))


def test_mutual_learning_with_alpha_zero_is_independent_training(toy):
    x, y = toy
    a, b = mlp(seed=1), mlp(seed=2)
    S.mutual_learning([a, b], x, y, epochs=3, lr=1e-2, batch_size=16, alpha_kd=0.0, seed=4)
    for model, seed in ((a, 1), (b, 2)):
        alone = mlp(seed=seed)
        train_classifier(alone, x, y, epochs=3, lr=1e-2, batch_size=16, seed=4)
        assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(params(alone), params(model)))


def test_mutual_learning_learns_and_is_reproducible(toy):
    x, y = toy

    def run():
        a, b = mlp(seed=1), mlp(seed=2)
        hist = S.mutual_learning([a, b], x, y, epochs=15, lr=1e-2, batch_size=20, seed=0)
        return a, b, hist

    a, b, hist = run()
    _, _, again = run()
    assert hist == again and len(hist) == 2 and len(hist[0]) == 15
    assert hist[0][-1] < hist[0][0] and hist[1][-1] < hist[1][0]
    assert not a.training and not b.training
    agree = (predict_logits(a, x).argmax(-1) == predict_logits(b, x).argmax(-1)).float().mean()
    assert agree > 0.9


def test_mutual_learning_errors(toy):
    x, y = toy
    a = mlp()
    with pytest.raises(ValueError, match="at least two"):
        S.mutual_learning([a], x, y)
    with pytest.raises(ValueError, match="distinct"):
        S.mutual_learning([a, a], x, y)
    with pytest.raises(ValueError, match="needs labels"):
        S.mutual_learning([a, mlp()], x, None)
    with pytest.raises(ValueError, match="batch_size"):
        S.mutual_learning([a, mlp()], x, y, batch_size=0)


# ============================================================================================== data-free
def test_noise_inputs():
    u = S.noise_inputs(50, (1, 4, 4), seed=0)
    assert u.shape == (50, 1, 4, 4) and 0 <= float(u.min()) and float(u.max()) <= 1
    assert torch.equal(u, S.noise_inputs(50, (1, 4, 4), seed=0))
    g = S.noise_inputs(200, (3,), kind="gaussian", low=-1.0, high=1.0, seed=1)
    assert -1 <= float(g.min()) and float(g.max()) <= 1 and abs(float(g.mean())) < 0.1
    with pytest.raises(ValueError, match="kind"):
        S.noise_inputs(2, (3,), kind="pink")
    with pytest.raises(ValueError, match="low < high"):
        S.noise_inputs(2, (3,), low=1.0, high=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        S.noise_inputs(0, (3,))


def test_synthesize_inputs_make_the_teacher_see_the_targets(toy):
    x, y = toy
    teacher = mlp((16,), seed=0)
    train_classifier(teacher, x, y, epochs=30, lr=1e-2, seed=0)
    teacher.train()  # must come back in the mode it was given
    before = params(teacher)
    xs, targets = S.synthesize_inputs(teacher, 30, (6,), steps=60, lr=0.1, low=-4.0, high=4.0, l2_weight=1e-3, seed=1)
    assert xs.shape == (30, 6) and not xs.requires_grad and torch.bincount(targets).tolist() == [10, 10, 10]
    assert float(xs.min()) >= -4 and float(xs.max()) <= 4
    assert (predict_logits(teacher, xs).argmax(-1) == targets).float().mean() > 0.9
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, params(teacher)))
    noise, _ = S.synthesize_inputs(teacher, 30, (6,), steps=0, low=-4.0, high=4.0, seed=1)
    assert torch.equal(noise, S.noise_inputs(30, (6,), low=-4.0, high=4.0, seed=1))


def test_synthesize_inputs_matches_batchnorm_statistics():
    from course_utils.vision import SmallCNN

    teacher = SmallCNN((4,), head="avg", n_classes=3, image_size=8, seed=0)
    conv, bn = teacher.blocks[0][0], teacher.blocks[0][1]
    real = torch.zeros(64, 1, 8, 8)
    real[:, :, 2:6, 2:6] = torch.rand(64, 1, 1, 1, generator=torch.Generator().manual_seed(0))  # "real" images
    with torch.no_grad():  # the running statistics a training run on these images would have stored
        h = conv(real)
        bn.running_mean.copy_(h.mean((0, 2, 3)))
        bn.running_var.copy_(h.var((0, 2, 3), unbiased=False))
    teacher.eval()

    @torch.no_grad()
    def mismatch(images):
        h = conv(images)
        return float((h.mean((0, 2, 3)) - bn.running_mean).norm() + (h.var((0, 2, 3), unbiased=False) - bn.running_var).norm())

    plain, _ = S.synthesize_inputs(teacher, 24, (1, 8, 8), steps=60, lr=0.05, seed=0)
    matched, _ = S.synthesize_inputs(teacher, 24, (1, 8, 8), steps=60, lr=0.05, bn_weight=10.0, tv_weight=0.1, seed=0)
    assert mismatch(matched) < 0.5 * mismatch(plain)
    assert not teacher.training  # given in eval mode, left in eval mode
    assert not any(m._forward_hooks for m in teacher.modules())  # hooks removed


def test_synthesize_inputs_errors(toy):
    teacher = mlp()
    with pytest.raises(ValueError, match="BatchNorm"):
        S.synthesize_inputs(teacher, 4, (6,), bn_weight=1.0, steps=1)
    with pytest.raises(ValueError, match="image inputs"):
        S.synthesize_inputs(teacher, 4, (6,), tv_weight=1.0, steps=1)
    with pytest.raises(ValueError, match="n_classes=5"):
        S.synthesize_inputs(teacher, 4, (6,), n_classes=5, steps=1)
    with pytest.raises(ValueError, match="steps"):
        S.synthesize_inputs(teacher, 4, (6,), steps=-1)
    with pytest.raises(ValueError, match="lr"):
        S.synthesize_inputs(teacher, 4, (6,), lr=-0.1)
    with pytest.raises(TypeError, match="teacher"):
        S.synthesize_inputs(lambda x: x, 4, (6,))
    assert isinstance(teacher, nn.Module)
