"""Unit tests for course_utils.vision.strategies: born-again networks, teacher-assistant chains, deep mutual learning
and data-free distillation (noise and synthesized inputs), on a tiny 3-class problem and tiny CNNs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from course_utils.training.loops import predict_logits, train_classifier
from course_utils.vision import strategies
from course_utils.vision.digits import make_mlp
from course_utils.vision.fashion_mnist import SmallCNN


pytestmark = pytest.mark.usefixtures("single_thread")


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


# ============================================================================================ born-again
def test_born_again_generations(toy):
    x, y = toy
    gens = strategies.born_again(lambda s: mlp(seed=s), x, y, generations=2, temperature=2.0, alpha_kd=0.7, epochs=5,
                        lr=1e-2, batch_size=20, seed=10)
    assert len(gens) == 3 and all(strategies.same_architecture(g, gens[0]) for g in gens)
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
    gens = strategies.born_again(lambda s: mlp(seed=s), x, y, generations=1, epochs=2, first=first)
    assert gens[0] is first and all(torch.equal(a, b) for a, b in zip(before, params(first)))


def test_born_again_errors(toy):
    x, y = toy
    with pytest.raises(ValueError, match="different architecture"):
        strategies.born_again(lambda s: mlp((8,) if s == 0 else (4,), seed=s), x, y, epochs=1)
    with pytest.raises(ValueError, match="generations"):
        strategies.born_again(lambda s: mlp(seed=s), x, y, generations=0)
    with pytest.raises(TypeError, match="make_model"):
        strategies.born_again(mlp(), x, y)
    with pytest.raises(ValueError, match="epochs"):
        strategies.born_again(lambda s: mlp(seed=s), x, y, epochs=0)
    with pytest.raises(ValueError, match="one label per row"):
        strategies.born_again(lambda s: mlp(seed=s), x, y[:10])
    with pytest.raises(ValueError, match="alpha_kd"):
        strategies.born_again(lambda s: mlp(seed=s), x, y, alpha_kd=1.5)


def test_same_architecture():
    assert strategies.same_architecture(mlp(seed=0), mlp(seed=1))
    assert not strategies.same_architecture(mlp((8,)), mlp((8, 8)))
    assert not strategies.same_architecture(mlp((8,)), mlp((9,)))


# ===================================================================================== teacher assistants
def test_distill_chain_trains_each_step_from_the_previous(toy):
    x, y = toy
    teacher = mlp((16,), seed=0)
    train_classifier(teacher, x, y, epochs=10, lr=1e-2, seed=0)
    teacher_before = params(teacher)
    ta, student = mlp((8,), seed=1), mlp((2,), seed=2)
    chain = strategies.distill_chain(teacher, [ta, student], x, y, temperature=2.0, alpha_kd=0.5, epochs=4, lr=1e-2,
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
    strategies.distill_chain(mlp(seed=4), [student], x, None, alpha_kd=1.0, epochs=2)
    with pytest.raises(ValueError, match="alpha_kd=1"):
        strategies.distill_chain(mlp(seed=4), [mlp(seed=5)], x, None, alpha_kd=0.5, epochs=2)


def test_distill_chain_errors(toy):
    x, y = toy
    teacher = mlp(seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        strategies.distill_chain(teacher, [], x, y)
    with pytest.raises(ValueError, match="distinct"):
        strategies.distill_chain(teacher, [teacher], x, y)
    same = mlp(seed=1)
    with pytest.raises(ValueError, match="distinct"):
        strategies.distill_chain(teacher, [same, same], x, y)
    with pytest.raises(ValueError, match="chain\\[0\\] predicts 4 classes but its teacher predicts 3"):
        strategies.distill_chain(teacher, [make_mlp((4,), in_features=6, n_classes=4)], x, y, epochs=1)
    with pytest.raises(TypeError, match="teacher"):
        strategies.distill_chain("teacher", [mlp()], x, y)


# ===================================================================================== deep mutual learning
def test_mutual_learning_with_alpha_zero_is_independent_training(toy):
    x, y = toy
    a, b = mlp(seed=1), mlp(seed=2)
    strategies.mutual_learning([a, b], x, y, epochs=3, lr=1e-2, batch_size=16, alpha_kd=0.0, seed=4)
    for model, seed in ((a, 1), (b, 2)):
        alone = mlp(seed=seed)
        train_classifier(alone, x, y, epochs=3, lr=1e-2, batch_size=16, seed=4)
        assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(params(alone), params(model)))


def test_mutual_learning_learns_and_is_reproducible(toy):
    x, y = toy

    def run():
        a, b = mlp(seed=1), mlp(seed=2)
        hist = strategies.mutual_learning([a, b], x, y, epochs=15, lr=1e-2, batch_size=20, seed=0)
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
        strategies.mutual_learning([a], x, y)
    with pytest.raises(ValueError, match="distinct"):
        strategies.mutual_learning([a, a], x, y)
    with pytest.raises(ValueError, match="needs labels"):
        strategies.mutual_learning([a, mlp()], x, None)
    with pytest.raises(ValueError, match="batch_size"):
        strategies.mutual_learning([a, mlp()], x, y, batch_size=0)



def _pair_losses(logits_a, logits_b, labels, temperature, alpha_kd):
    """Deep mutual learning for two students, written out as the exercise of notebook 07 asks."""
    import torch.nn.functional as F

    def one(own, peer):
        kd = F.kl_div(F.log_softmax(own / temperature, dim=-1), F.softmax(peer.detach() / temperature, dim=-1),
                      reduction="batchmean") * temperature**2
        return (1 - alpha_kd) * F.cross_entropy(own, labels) + alpha_kd * kd

    return one(logits_a, logits_b), one(logits_b, logits_a)


def _train_pair(x, y, **kw):
    a, b = mlp(seed=1), mlp(seed=2)
    hist = strategies.mutual_learning([a, b], x, y, epochs=8, lr=1e-2, batch_size=20, temperature=2.0, alpha_kd=0.6,
                                      seed=3, **kw)
    return a, b, hist


def test_mutual_learning_default_losses_fn_is_the_library_loss(toy):
    from course_utils.kd.ensembles import mutual_learning_losses

    x, y = toy
    a, b, hist = _train_pair(x, y)
    a2, b2, hist2 = _train_pair(x, y, losses_fn=mutual_learning_losses)
    assert hist == hist2
    assert all(torch.equal(p, q) for m, m2 in ((a, a2), (b, b2)) for p, q in zip(params(m), params(m2)))


def test_mutual_learning_trains_with_a_given_losses_fn(toy):
    x, y = toy
    calls = []

    def pair_as_cohort(logits, labels, temperature, alpha_kd):
        calls.append(([tuple(z.shape) for z in logits], tuple(labels.shape), temperature, alpha_kd))
        return _pair_losses(*logits, labels, temperature, alpha_kd)

    a, b, hist = _train_pair(x, y)
    a2, b2, hist2 = _train_pair(x, y, losses_fn=pair_as_cohort)
    assert len(calls) == 8 * 3 and calls[0] == ([(20, 3), (20, 3)], (20,), 2.0, 0.6)
    # the same loss written differently: equal up to float noise, not bit for bit
    assert max(abs(u - v) for h, h2 in zip(hist, hist2) for u, v in zip(h, h2)) < 1e-5
    for m, m2 in ((a, a2), (b, b2)):
        assert torch.allclose(predict_logits(m, x), predict_logits(m2, x), atol=1e-4)


def test_mutual_learning_losses_fn_changes_the_training(toy):
    x, y = toy
    a, _, _ = _train_pair(x, y)
    swapped = lambda logits, labels, t, al: _pair_losses(*logits, labels, t, 1 - al)  # noqa: E731
    a2, _, _ = _train_pair(x, y, losses_fn=swapped)
    assert not torch.allclose(predict_logits(a, x), predict_logits(a2, x), atol=1e-4)


def test_mutual_learning_rejects_bad_losses_fn(toy):
    x, y = toy

    def leaky(logits, labels, temperature, alpha_kd):  # the peer is not detached
        za, zb = logits
        kl = lambda own, peer: torch.nn.functional.kl_div(  # noqa: E731
            own.log_softmax(-1), peer.softmax(-1), reduction="batchmean")
        return [kl(za, zb), kl(zb, za)]

    cases = [
        ("not a function", TypeError, "losses_fn must be a function"),
        (lambda z, l, t, a: torch.stack(_pair_losses(*z, l, t, a)).sum(), TypeError, "not their sum"),
        (lambda z, l, t, a: _pair_losses(*z, l, t, a)[:1], ValueError, "returned 1 losses for 2 students"),
        (lambda z, l, t, a: [v.item() for v in _pair_losses(*z, l, t, a)], TypeError, "not a tensor"),
        (lambda z, l, t, a: [torch.nn.functional.cross_entropy(v, l, reduction="none") for v in z], ValueError,
         "must be a scalar"),
        (lambda z, l, t, a: [v.detach().mean() for v in _pair_losses(*z, l, t, a)], ValueError, "not differentiable"),
        (lambda z, l, t, a: _pair_losses(*z, l, t, a)[::-1], ValueError, "does not depend on student 0"),
        (leaky, ValueError, "sends gradients into student"),
    ]
    for losses_fn, error, message in cases:
        a, b = mlp(seed=1), mlp(seed=2)
        before = params(a) + params(b)
        with pytest.raises(error, match=message):
            strategies.mutual_learning([a, b], x, y, epochs=2, batch_size=20, losses_fn=losses_fn)
        # refused before any update: the students are untouched
        assert all(torch.equal(p, q) for p, q in zip(before, params(a) + params(b)))


# ============================================================================================== data-free
def test_noise_inputs():
    u = strategies.noise_inputs(50, (1, 4, 4), seed=0)
    assert u.shape == (50, 1, 4, 4) and 0 <= float(u.min()) and float(u.max()) <= 1
    assert torch.equal(u, strategies.noise_inputs(50, (1, 4, 4), seed=0))
    g = strategies.noise_inputs(200, (3,), kind="gaussian", low=-1.0, high=1.0, seed=1)
    assert -1 <= float(g.min()) and float(g.max()) <= 1 and abs(float(g.mean())) < 0.1
    with pytest.raises(ValueError, match="kind"):
        strategies.noise_inputs(2, (3,), kind="pink")
    with pytest.raises(ValueError, match="low < high"):
        strategies.noise_inputs(2, (3,), low=1.0, high=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        strategies.noise_inputs(0, (3,))


def test_synthesize_inputs_make_the_teacher_see_the_targets(toy):
    x, y = toy
    teacher = mlp((16,), seed=0)
    train_classifier(teacher, x, y, epochs=30, lr=1e-2, seed=0)
    teacher.train()  # must come back in the mode it was given
    before = params(teacher)
    xs, targets = strategies.synthesize_inputs(teacher, 30, (6,), steps=60, lr=0.1, low=-4.0, high=4.0, l2_weight=1e-3, seed=1)
    assert xs.shape == (30, 6) and not xs.requires_grad and torch.bincount(targets).tolist() == [10, 10, 10]
    assert float(xs.min()) >= -4 and float(xs.max()) <= 4
    assert (predict_logits(teacher, xs).argmax(-1) == targets).float().mean() > 0.9
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, params(teacher)))
    noise, _ = strategies.synthesize_inputs(teacher, 30, (6,), steps=0, low=-4.0, high=4.0, seed=1)
    assert torch.equal(noise, strategies.noise_inputs(30, (6,), low=-4.0, high=4.0, seed=1))


def test_synthesize_inputs_matches_batchnorm_statistics():
    from course_utils.vision import strategies

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

    plain, _ = strategies.synthesize_inputs(teacher, 24, (1, 8, 8), steps=60, lr=0.05, seed=0)
    matched, _ = strategies.synthesize_inputs(teacher, 24, (1, 8, 8), steps=60, lr=0.05, bn_weight=10.0, tv_weight=0.1, seed=0)
    assert mismatch(matched) < 0.5 * mismatch(plain)
    assert not teacher.training  # given in eval mode, left in eval mode
    assert not any(m._forward_hooks for m in teacher.modules())  # hooks removed


def test_synthesize_inputs_errors(toy):
    teacher = mlp()
    with pytest.raises(ValueError, match="BatchNorm"):
        strategies.synthesize_inputs(teacher, 4, (6,), bn_weight=1.0, steps=1)
    with pytest.raises(ValueError, match="image inputs"):
        strategies.synthesize_inputs(teacher, 4, (6,), tv_weight=1.0, steps=1)
    with pytest.raises(ValueError, match="n_classes=5"):
        strategies.synthesize_inputs(teacher, 4, (6,), n_classes=5, steps=1)
    with pytest.raises(ValueError, match="steps"):
        strategies.synthesize_inputs(teacher, 4, (6,), steps=-1)
    with pytest.raises(ValueError, match="lr"):
        strategies.synthesize_inputs(teacher, 4, (6,), lr=-0.1)
    with pytest.raises(TypeError, match="teacher"):
        strategies.synthesize_inputs(lambda x: x, 4, (6,))
    assert isinstance(teacher, nn.Module)
