"""Checkers of notebook 07 in ``course_utils.checks.strategies``: correct code passes, unsolved exercises say so,
every listed mistake is diagnosed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks

pytestmark = pytest.mark.usefixtures("single_thread")

HINT = "average softmax(v / T) over dim 0 (hint 77)"


# ===================================================================================== ensemble soft targets
def ensemble_ok(teacher_logits, temperature, method):
    if method == "mean_probs":
        return torch.softmax(teacher_logits / temperature, dim=-1).mean(dim=0)
    if method == "mean_logits":
        return torch.softmax(teacher_logits.mean(dim=0) / temperature, dim=-1)
    raise ValueError(f"unknown method {method!r}")


def test_ensemble_correct_passes(capsys):
    assert checks.check_ensemble_soft_targets(ensemble_ok) is True
    assert "✔" in capsys.readouterr().out


def test_ensemble_alternative_correct_forms_pass():
    def via_library(teacher_logits, temperature, method):
        from course_utils.kd import ensembles
        return ensembles.ensemble_soft_targets(list(teacher_logits), temperature, method)

    def via_log_mean_exp(teacher_logits, temperature, method):
        log_p = F.log_softmax(teacher_logits / temperature, -1)
        if method == "mean_probs":
            return (torch.logsumexp(log_p, 0) - torch.log(torch.tensor(float(len(log_p))))).exp()
        assert method == "mean_logits", f"unknown method {method!r}"  # any exception rejects it
        return F.softmax(log_p.mean(0), -1)  # geometric mean of the teachers' distributions, renormalised

    assert checks.check_ensemble_soft_targets(via_library)
    assert checks.check_ensemble_soft_targets(via_log_mean_exp)


def test_ensemble_not_implemented_and_not_callable(capsys, assert_fails):
    def unsolved(teacher_logits, temperature, method):
        raise NotImplementedError(HINT)

    message = assert_fails(checks.check_ensemble_soft_targets, unsolved, "not implemented", "hint 77")
    assert "✘ " + message in capsys.readouterr().out
    with pytest.raises(TypeError, match="function itself"):
        checks.check_ensemble_soft_targets(ensemble_ok(torch.zeros(2, 3, 4), 1.0, "mean_probs"))


def _variant(*, combine="right", temperature="divide", teacher_axis=0, softmax_axis=-1):
    def fn(teacher_logits, T, method):
        if combine == "swapped":
            method = "mean_logits" if method == "mean_probs" else "mean_probs"
        v = {"divide": teacher_logits / T, "ignore": teacher_logits, "multiply": teacher_logits * T,
             "after": teacher_logits}[temperature]
        reduce = (lambda x: x.sum(teacher_axis)) if combine == "sum" else (lambda x: x.mean(teacher_axis))
        if combine == "no_softmax":
            return reduce(v)
        if method == "mean_probs":
            out = reduce(torch.softmax(v, dim=softmax_axis))
            if temperature == "after":
                out = torch.softmax(out.log() / T, dim=-1)
        else:
            out = torch.softmax(reduce(v) / (T if temperature == "after" else 1.0), dim=softmax_axis)
        return torch.softmax(out, -1) if combine == "double" else out
    return fn


@pytest.mark.parametrize("kwargs, keywords", [
    (dict(combine="swapped"), ["swapped"]),
    (dict(combine="sum"), ["summed over the teachers"]),
    (dict(combine="no_softmax"), ["averaged (scaled) logits"]),
    (dict(combine="double"), ["softmax twice"]),
    (dict(temperature="ignore"), ["temperature is ignored"]),
    (dict(temperature="multiply"), ["sharpens"]),
    (dict(temperature="after"), ["softened the *mixture* afterwards"]),
    (dict(teacher_axis=1), ["averaged over the examples"]),
    (dict(softmax_axis=0), ["wrong axis"]),
    (dict(combine="sum", temperature="ignore"), ["2 problems", "summed", "ignored"]),
])
def test_ensemble_mistakes_are_diagnosed(kwargs, keywords, assert_fails):
    assert_fails(checks.check_ensemble_soft_targets, _variant(**kwargs), *keywords)


def test_ensemble_fallbacks(assert_fails):
    def in_place(teacher_logits, T, method):
        teacher_logits /= T
        return ensemble_ok(teacher_logits, 1.0, method)

    assert_fails(checks.check_ensemble_soft_targets, in_place, "in place")

    def unnormalised(teacher_logits, T, method):
        return ensemble_ok(teacher_logits, T, method) * 1.5

    assert_fails(checks.check_ensemble_soft_targets, unnormalised, "sum to")

    def last_teacher(teacher_logits, T, method):
        return torch.softmax(teacher_logits[-1] / T, -1)

    assert_fails(checks.check_ensemble_soft_targets, last_teacher, "wrong targets")

    def flat(teacher_logits, T, method):
        return ensemble_ok(teacher_logits, T, method).flatten()

    assert_fails(checks.check_ensemble_soft_targets, flat, "returns shape")

    def numpy_out(teacher_logits, T, method):
        return ensemble_ok(teacher_logits, T, method).numpy()

    assert_fails(checks.check_ensemble_soft_targets, numpy_out, "torch.Tensor")

    def crashes(teacher_logits, T, method):
        return teacher_logits.mean(dim=3)

    assert_fails(checks.check_ensemble_soft_targets, crashes, "IndexError", "dim=-1")


# ================================================================================== mutual learning step
def dml_ok(logits_a, logits_b, labels, temperature, alpha_kd):
    def one(own, peer):
        ce = F.cross_entropy(own, labels)
        kd = F.kl_div(F.log_softmax(own / temperature, -1), F.softmax(peer.detach() / temperature, -1),
                      reduction="batchmean") * temperature**2
        return (1 - alpha_kd) * ce + alpha_kd * kd
    return one(logits_a, logits_b), one(logits_b, logits_a)


def test_dml_correct_passes(capsys):
    assert checks.check_mutual_learning_losses(dml_ok) is True
    assert "✔" in capsys.readouterr().out

    def via_library(logits_a, logits_b, labels, temperature, alpha_kd):
        from course_utils.kd import ensembles
        return tuple(ensembles.mutual_learning_losses([logits_a, logits_b], labels, temperature, alpha_kd))

    assert checks.check_mutual_learning_losses(via_library)


def test_dml_correct_under_no_grad_passes():
    with torch.no_grad():
        assert checks.check_mutual_learning_losses(dml_ok)


def test_dml_not_implemented(assert_fails):
    def unsolved(*args):
        raise NotImplementedError(HINT)

    assert_fails(checks.check_mutual_learning_losses, unsolved, "not implemented", "hint 77")


def _dml_variant(*, target="peer", weights="kd", direction="forward", scale="T2", ce="T1", reduction="batchmean",
                 detach=True):
    def fn(za, zb, y, t, a):
        def one(own, peer):
            peer = own if target == "self" else peer
            if detach:
                peer = peer.detach()
            log_q, log_p = F.log_softmax(own / t, -1), F.log_softmax(peer / t, -1)
            if direction == "forward":
                kl = F.kl_div(log_q, log_p, log_target=True, reduction=reduction)
            else:
                kl = F.kl_div(log_p, log_q, log_target=True, reduction=reduction)
            kd = kl * (t * t if scale == "T2" else 1.0)
            c = F.cross_entropy(own / t if ce == "atT" else own, y)
            w_ce, w_kd = {"kd": (1 - a, a), "ce": (a, 1 - a), "no_ce_weight": (1.0, a)}[weights]
            return w_ce * c + w_kd * kd
        loss_a = one(za, zb)
        return loss_a, (loss_a if target == "copy" else one(zb, za))
    return fn


@pytest.mark.filterwarnings("ignore:reduction")  # F.kl_div warns about reduction="mean", the mistake imitated here
@pytest.mark.parametrize("kwargs, keywords", [
    (dict(target="self"), ["own* predictions"]),
    (dict(target="copy"), ["same as loss_a"]),
    (dict(weights="ce"), ["wrong term"]),
    (dict(weights="no_ce_weight"), ["not weighted"]),
    (dict(direction="reverse"), ["reversed"]),
    (dict(scale="none"), ["T² factor"]),
    (dict(ce="atT"), ["cross-entropy is computed at temperature"]),
    (dict(reduction="mean"), ["batchmean"]),
    (dict(scale="none", direction="reverse"), ["2 problems", "reversed", "T²"]),
    (dict(detach=False), ["sends gradients", "logits_b.detach()"]),
])
def test_dml_mistakes_are_diagnosed(kwargs, keywords, assert_fails):
    assert_fails(checks.check_mutual_learning_losses, _dml_variant(**kwargs), *keywords)


def test_dml_return_type_and_gradient_problems(assert_fails):
    assert_fails(checks.check_mutual_learning_losses, lambda za, zb, y, t, a: dml_ok(za, zb, y, t, a)[0],
                 "as a pair")
    assert_fails(checks.check_mutual_learning_losses, lambda za, zb, y, t, a: (*dml_ok(za, zb, y, t, a), 0.0),
                 "exactly two")
    assert_fails(checks.check_mutual_learning_losses,
                 lambda za, zb, y, t, a: tuple(x.item() for x in dml_ok(za, zb, y, t, a)), "Python float")
    assert_fails(checks.check_mutual_learning_losses,
                 lambda za, zb, y, t, a: tuple(x.reshape(1) for x in dml_ok(za, zb, y, t, a)), "single number")

    def own_detached(za, zb, y, t, a):
        loss_a, loss_b = dml_ok(za.detach(), zb, y, t, a)
        return loss_a, loss_b

    assert_fails(checks.check_mutual_learning_losses, own_detached, "not differentiable w.r.t. logits_a")

    def own_kd_detached(za, zb, y, t, a):
        ce = F.cross_entropy(za, y)
        kd = F.kl_div(F.log_softmax(za.detach() / t, -1), F.softmax(zb.detach() / t, -1), reduction="batchmean") * t * t
        return (1 - a) * ce + a * kd, dml_ok(za, zb, y, t, a)[1]

    assert_fails(checks.check_mutual_learning_losses, own_kd_detached, "wrong gradient of loss_a")

    def wrong_values(za, zb, y, t, a):
        loss_a, loss_b = dml_ok(za, zb, y, t, a)
        return loss_a + 1.0, loss_b

    assert_fails(checks.check_mutual_learning_losses, wrong_values, "expected")


# ------------------------------------------------------------------ mistakes the exercise text warns against
def test_ensemble_unknown_method_must_be_rejected(assert_fails):
    """Hint 3: reject an unknown method."""
    def falls_back(teacher_logits, temperature, method):
        if method == "mean_probs":
            return torch.softmax(teacher_logits / temperature, dim=-1).mean(dim=0)
        return torch.softmax(teacher_logits.mean(dim=0) / temperature, dim=-1)  # anything else: mean_logits

    assert_fails(checks.check_ensemble_soft_targets, falls_back, "mean_prob", "instead of rejecting", "ValueError")

    def lookup(teacher_logits, temperature, method):  # a KeyError from a dict lookup rejects it too
        return {"mean_probs": lambda: torch.softmax(teacher_logits / temperature, -1).mean(0),
                "mean_logits": lambda: torch.softmax(teacher_logits.mean(0) / temperature, -1)}[method]()

    assert checks.check_ensemble_soft_targets(lookup)


@pytest.mark.parametrize("side, keywords", [
    ("own", ["loss_a", "own side", "log(softmax"]),
    ("peer", ["loss_b", "peer's side", "log(softmax"]),
])
def test_dml_log_of_softmax_is_diagnosed(side, keywords, assert_fails):
    def dml(logits_a, logits_b, labels, temperature, alpha_kd):
        def one(own, peer):
            t = temperature
            log_q = torch.log(F.softmax(own / t, -1)) if side == "own" else F.log_softmax(own / t, -1)
            log_p = torch.log(F.softmax(peer.detach() / t, -1)) if side == "peer" else F.log_softmax(peer.detach() / t, -1)
            kd = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * t**2
            return (1 - alpha_kd) * F.cross_entropy(own, labels) + alpha_kd * kd
        return one(logits_a, logits_b), one(logits_b, logits_a)

    message = assert_fails(checks.check_mutual_learning_losses, dml, *keywords)
    assert "log_softmax" not in message
