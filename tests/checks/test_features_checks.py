"""Notebook-04 checkers in ``course_utils.checks.features``: they pass correct code, report unimplemented exercises,
and diagnose every listed mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.checks import CheckFailed, check_hint_loss, check_layer_mapping

pytestmark = pytest.mark.usefixtures("single_thread")


# ================================================================================================ hint loss
def make_hint_projection(student_width, teacher_width):
    return nn.Linear(student_width, teacher_width)


def hint_loss(student_hidden, teacher_hidden, projection, attention_mask):
    sq = (projection(student_hidden) - teacher_hidden.detach()).pow(2)
    return sq[attention_mask.bool()].mean()


def test_hint_loss_correct(capsys):
    assert check_hint_loss(hint_loss, make_hint_projection) is True
    assert check_hint_loss(hint_loss) is True
    out = capsys.readouterr().out
    assert out.count("✔") == 2 and "projection maps the student's width" in out


def test_hint_loss_accepts_other_correct_forms():
    def via_mse(s, t, p, m):
        keep = m.bool()
        return F.mse_loss(p(s)[keep], t[keep].detach())

    def by_hand(s, t, p, m):
        sq = ((p(s) - t.detach()) ** 2) * m[..., None]
        return sq.sum() / (m.sum() * t.shape[-1])

    assert check_hint_loss(via_mse)
    assert check_hint_loss(by_hand)


def _not_implemented(*args):
    raise NotImplementedError("apply the projection, square, average over real tokens")


def test_hint_loss_not_implemented(capsys):
    with pytest.raises(CheckFailed, match="not implemented yet — apply the projection"):
        check_hint_loss(_not_implemented)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_hint_loss(hint_loss, _not_implemented)
    assert "✘" in capsys.readouterr().out


@pytest.mark.parametrize("fn, match", [
    (lambda s, t, p, m: F.mse_loss(p(s), t), "padding positions are included"),
    (lambda s, t, p, m: ((p(s) - t).pow(2) * m[..., None]).mean(), "zeroed the padding positions"),
    (lambda s, t, p, m: (p(s) - t).pow(2)[m.bool()].sum(), "sum the squared errors"),
    (lambda s, t, p, m: (p(s) - t).pow(2).sum(-1)[m.bool()].mean(), "sum over the features"),
    (lambda s, t, p, m: 0.5 * (p(s) - t).pow(2)[m.bool()].mean(), "drop the ½"),
    (lambda s, t, p, m: (p(s) - t).abs()[m.bool()].mean(), "absolute differences"),
    (lambda s, t, p, m: (p(s) - t).pow(2)[m.bool()].mean().sqrt(), "square root"),
    (lambda s, t, p, m: F.mse_loss(p(s), t, reduction="sum"), "2 problems.*padding.*sum the squared"),
    (lambda s, t, p, m: (p(s) - t).pow(2)[m.bool()].mean(), "gradients flow into teacher_hidden"),
    (lambda s, t, p, m: (p(s.detach()) - t.detach()).pow(2)[m.bool()].mean(), "no gradient reaches student_hidden"),
    (lambda s, t, p, m: (F.linear(s, p.weight.detach(), p.bias.detach()) - t.detach()).pow(2)[m.bool()].mean(),
     "no gradient reaches the projection"),
    (lambda s, t, p, m: (p(s) - t.detach()).pow(2)[m.bool()].mean().item(), "Python float"),
    (lambda s, t, p, m: (p(s) - t.detach()).pow(2).mean(-1), "shape"),
    (lambda s, t, p, m: None, "return"),
    (lambda s, t, p, m: (s - t).pow(2).mean(), "raised RuntimeError"),
    (lambda s, t, p, m: (p(s) - t).pow(2)[m.bool()].mean() + 1.0, "expected"),
])
def test_hint_loss_mistakes(fn, match, capsys):
    with pytest.raises(CheckFailed, match=match):
        check_hint_loss(fn)
    assert "✘" in capsys.readouterr().out


@pytest.mark.parametrize("make, match", [
    (lambda s, t: nn.Linear(t, s), "maps 10 → 6.*nn.Linear\\(student_width, teacher_width\\)"),
    (lambda s, t: torch.randn(s, t), "returns a tensor"),
    (lambda s, t: nn.Identity(), "without trainable parameters"),
    (lambda s, t: nn.Linear(s, s), "must produce the teacher's width"),
    (lambda s, t: None, "returned None"),
    (lambda s, t: "linear", "must return an nn.Module"),
])
def test_projection_mistakes(make, match):
    with pytest.raises(CheckFailed, match=match):
        check_hint_loss(hint_loss, make)


def test_hint_loss_type_errors():
    with pytest.raises(TypeError, match="without calling it"):
        check_hint_loss(torch.tensor(1.0))
    with pytest.raises(TypeError, match="without calling it"):
        check_hint_loss(hint_loss, nn.Linear(2, 3).weight)


def test_hint_loss_in_place_modification_is_reported():
    def in_place(s, t, p, m):
        t -= 0.0
        t.mul_(1.0)
        s.add_(1.0)
        return (p(s) - t.detach()).pow(2)[m.bool()].mean()

    with pytest.raises(CheckFailed, match="in place"):
        check_hint_loss(in_place)


# ============================================================================================ layer mapping
def map_layers(n_student, n_teacher, strategy="uniform", include_embeddings=False):
    if n_student > n_teacher:
        raise ValueError("the student is deeper than the teacher")
    if strategy == "uniform":
        pairs = [(m, m * n_teacher // n_student) for m in range(1, n_student + 1)]
    else:
        pairs = [(m, n_teacher - n_student + m) for m in range(1, n_student + 1)]
    return ([(0, 0)] if include_embeddings else []) + pairs


def test_layer_mapping_correct(capsys):
    assert check_layer_mapping(map_layers) is True
    assert "✔" in capsys.readouterr().out

    def as_lists(*args):
        return [list(p) for p in map_layers(*args)]

    assert check_layer_mapping(as_lists)


def _uniform(n_student, n_teacher, strategy, emb, teacher_of, student_of=lambda m: m, deeper_ok=False):
    if n_student > n_teacher and not deeper_ok:
        raise ValueError("deeper")
    return ([(0, 0)] if emb else []) + [(student_of(m), teacher_of(m, n_student, n_teacher))
                                        for m in range(1, n_student + 1)]


def _last(k, m, n):
    return n - m + k


@pytest.mark.parametrize("fn, match", [
    (lambda m, n, s="uniform", e=False: [k * n // m for k in range(1, m + 1)], "single numbers"),
    (lambda m, n, s="uniform", e=False: ([(0, 0)] if e else []) + [(k, k * n / m) for k in range(1, m + 1)],
     "float layer indices"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: k * n // m, lambda k: k - 1),
     "numbered 0…M−1"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: k * n // m - 1), "one too small"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: (k - 1) * n // m), "m = 0…M−1"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, False, lambda k, m, n: k * n // m),
     "include_embeddings=True the embedding outputs"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, True, lambda k, m, n: k * n // m), "only when"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, _last), "that is the 'last' mapping"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: k * n // m if s == "last"
                                                 else _last(k, m, n)), "'last' mapping"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: k * n // m)[::-1] if e else
     _uniform(m, n, s, e, lambda k, m, n: k * n // m), "first"),
    (lambda m, n, s="uniform", e=False: _uniform(m, n, s, e, lambda k, m, n: k * n // m)[:-1], "must be 3 pairs"),
    (lambda m, n, s="uniform", e=False: None, "returned None"),
    (lambda m, n, s="uniform", e=False: 3, "list of"),
])
def test_layer_mapping_mistakes(fn, match, capsys):
    with pytest.raises(CheckFailed, match=match):
        check_layer_mapping(fn)
    assert "✘" in capsys.readouterr().out


def test_layer_mapping_must_refuse_deeper_students():
    def no_check(m, n, strategy="uniform", include_embeddings=False):
        return _uniform(m, n, strategy, include_embeddings,
                        (lambda k, m, n: k * n // m) if strategy == "uniform" else _last, deeper_ok=True)

    with pytest.raises(CheckFailed, match="instead of raising ValueError"):
        check_layer_mapping(no_check)

    def wrong_error(m, n, strategy="uniform", include_embeddings=False):
        if m > n:
            raise IndexError("too deep")
        return map_layers(m, n, strategy, include_embeddings)

    with pytest.raises(CheckFailed, match="raised IndexError"):
        check_layer_mapping(wrong_error)


def test_layer_mapping_not_implemented_and_type_error():
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_layer_mapping(_not_implemented)
    with pytest.raises(TypeError, match="without calling it"):
        check_layer_mapping([(1, 2)])
