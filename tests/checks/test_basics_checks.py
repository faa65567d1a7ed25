"""Tests for the notebook-01/02 checkers in ``course_utils.checks.basics`` and their shared machinery in
``course_utils.checks._core``.

For every checker: the correct implementation passes (returns True, prints ✔); an unsolved exercise (raising
``NotImplementedError("hint")``) fails with "not implemented" and the hint; every known wrong implementation
fails with a ``CheckFailed`` whose message names the specific mistake; a non-callable raises ``TypeError``.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.checks import CheckFailed
from course_utils.checks import _core

HINT = "use torch.exp and subtract the row max (hint text 42)"


def not_implemented(*args, **kwargs):
    raise NotImplementedError(HINT)


# ============================================================================================ core helpers
def test_check_failed_is_assertion_error():
    assert issubclass(CheckFailed, AssertionError)


def test_passed_and_fail_print(capsys):
    assert _core.passed("all good") is True
    assert capsys.readouterr().out == "✔ all good\n"
    with pytest.raises(CheckFailed, match="broken"):
        _core.fail("broken")
    assert capsys.readouterr().out == "✘ broken\n"


def test_call_learner_reports_exception_with_shapes():
    def boom(x, t):
        raise ValueError("bad things")

    with pytest.raises(CheckFailed) as info:
        _core.call_learner(boom, {"logits": torch.zeros(2, 3), "temperature": 2.0})
    msg = str(info.value)
    assert "ValueError" in msg and "bad things" in msg and "(2, 3)" in msg and "temperature=2" in msg
    assert isinstance(info.value.__cause__, ValueError)


def test_call_learner_empty_not_implemented_message():
    def todo(x):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet — replace"):
        _core.call_learner(todo, {"x": torch.zeros(2)})


def test_mistake_variants_fewest_first():
    dims = {"a": [(0, ""), (1, "a1"), (2, "a2")], "b": [(0, ""), (1, "b1")]}
    variants = _core.mistake_variants(dims, max_mistakes=2)
    assert [d for _, d in variants] == [["a1"], ["a2"], ["b1"], ["a1", "b1"], ["a2", "b1"]]
    assert variants[0][0] == {"a": 1, "b": 0}


@pytest.mark.parametrize(
    "check",
    [checks.check_stable_softmax, checks.check_entropy, checks.check_soft_target_loss, checks.check_kd_gradient,
     checks.check_distillation_loss],
)
def test_not_callable_raises_type_error(check):
    with pytest.raises(TypeError, match="function itself"):
        check(torch.zeros(3))
    with pytest.raises(TypeError):
        check(None)


@pytest.mark.parametrize(
    "check",
    [checks.check_stable_softmax, checks.check_entropy, checks.check_soft_target_loss, checks.check_kd_gradient,
     checks.check_distillation_loss],
)
def test_not_implemented(check, capsys, assert_fails):
    message = assert_fails(check, not_implemented, "not implemented", HINT, capsys=capsys)
    assert message.startswith("`not_implemented` is not implemented yet — ")


@pytest.mark.parametrize(
    "check",
    [checks.check_stable_softmax, checks.check_entropy, checks.check_soft_target_loss, checks.check_kd_gradient,
     checks.check_distillation_loss],
)
def test_returning_none_or_float(check, assert_fails):
    assert_fails(check, lambda *a: None, "return")
    assert_fails(check, lambda *a: 0.5, "torch.Tensor")


# ============================================================================================ stable_softmax
def softmax_ok(logits, temperature=1.0):
    x = logits / temperature
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def test_stable_softmax_correct(capsys):
    assert checks.check_stable_softmax(softmax_ok) is True
    assert capsys.readouterr().out.startswith("✔ ")


def test_stable_softmax_builtin_passes():
    assert checks.check_stable_softmax(lambda x, t=1.0: torch.softmax(x / t, dim=-1))


def _naive(logits, temperature=1.0):
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def _global_max(logits, temperature=1.0):
    x = logits / temperature
    e = torch.exp(x - x.max())
    return e / e.sum(dim=-1, keepdim=True)


def _wrong_axis(logits, temperature=1.0):
    x = logits / temperature
    e = torch.exp(x - x.max(dim=0, keepdim=True).values)
    return e / e.sum(dim=0, keepdim=True)


def _dim1(logits, temperature=1.0):  # right for 2-D only; 1-D raises, 3-D is wrong
    return torch.softmax(logits / temperature, dim=1)


def _no_keepdim(logits, temperature=1.0):
    x = logits / temperature
    return torch.exp(x - x.max(dim=-1).values)


def _unnormalised(logits, temperature=1.0):
    x = logits / temperature
    return torch.exp(x - x.max(dim=-1, keepdim=True).values)


def _inplace(logits, temperature=1.0):
    logits -= logits.max(dim=-1, keepdim=True).values
    return torch.softmax(logits / temperature, dim=-1)


@pytest.mark.parametrize(
    "wrong, keywords",
    [
        (_naive, ["max", "1000"]),
        (_global_max, ["each row's own max"]),
        (_wrong_axis, ["axis", "columns"]),
        (_dim1, ["axis", "dim=-1"]),
        (lambda x, t=1.0: softmax_ok(x), ["temperature is ignored"]),
        (lambda x, t=1.0: softmax_ok(x * t), ["multiplication"]),
        (lambda x, t=1.0: torch.log_softmax(x / t, -1), ["log-probabilities"]),
        (lambda x, t=1.0: softmax_ok(softmax_ok(x, t)), ["softmax twice", "flatter"]),
        (_unnormalised, ["sum to 1"]),
        (lambda x, t=1.0: softmax_ok(x, t).sum(-1), ["shape"]),
        (_no_keepdim, ["keepdim=True"]),
        (_inplace, ["in place"]),
        (lambda x, t=1.0: softmax_ok(x, t) ** 1.1, ["sum to 1"]),
        # right for 2-D, wrong axis for 3-D only: recognised from the first wrong input alone
        (lambda x, t=1.0: softmax_ok(x, t) if x.dim() == 2 else torch.softmax(x / t, 0), ["axis"]),
    ],
)
def test_stable_softmax_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_stable_softmax, wrong, *keywords, capsys=capsys)


def test_stable_softmax_two_mistakes_listed(assert_fails):
    message = assert_fails(checks.check_stable_softmax, lambda x, t=1.0: torch.softmax(x, dim=0), "2 problems")
    assert "(1)" in message and "(2)" in message
    assert "axis" in message and "temperature is ignored" in message and "log-probabilities" not in message


# =================================================================================================== entropy
def entropy_ok(probs):
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def test_entropy_correct(capsys):
    assert checks.check_entropy(entropy_ok) is True
    assert capsys.readouterr().out.startswith("✔ ")


def test_entropy_clamped_log_passes():
    assert checks.check_entropy(lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1))


@pytest.mark.parametrize(
    "wrong, keywords",
    [
        (lambda p: -(p * torch.log2(p.clamp_min(1e-12))).sum(-1), ["log base 2", "ln 2"]),
        (lambda p: -(p * torch.log10(p.clamp_min(1e-12))).sum(-1), ["log base 10"]),
        (lambda p: torch.special.xlogy(p, p).sum(-1), ["sign"]),
        (lambda p: -torch.special.xlogy(p, p).sum(0), ["wrong axis"]),
        (lambda p: -torch.special.xlogy(p, p).sum(1), ["wrong axis", "dim=-1"]),
        (lambda p: -(p * p.log()).sum(-1), ["0 · log 0", "NaN", "xlogy"]),
        (lambda p: -torch.special.xlogy(p, p).sum(-1).mean(), ["mean over rows", "one entropy per row"]),
        (lambda p: -torch.special.xlogy(p, p).sum(-1).sum(), ["sum over rows"]),
        (lambda p: -torch.special.xlogy(p, p).mean(-1), ["averaged over the classes"]),
        (lambda p: -torch.special.xlogy(p, p), ["without summing"]),
        (lambda p: torch.special.xlogy(p, p).sum(-1) / torch.log(torch.tensor(2.0)), ["sign", "log base 2",
                                                                                       "2 problems"]),
        (lambda p: -(p * torch.log(p + 0.1)).sum(-1), ["wrong entropies", "log C"]),
    ],
)
def test_entropy_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_entropy, wrong, *keywords, capsys=capsys)


# ======================================================================================== soft-target loss
def soft_ok(student_logits, teacher_logits, temperature):
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1),
                    reduction="batchmean") * t**2


def _kl(first, target, reduction="batchmean"):
    with warnings.catch_warnings():  # reduction="mean" warns that it is not the KL; that mistake is the point
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(first, target, reduction=reduction)


def _detached(z, v, t):
    return soft_ok(z.detach(), v, t)


def _no_grad(z, v, t):
    with torch.no_grad():
        return soft_ok(z, v, t)


def test_soft_target_loss_correct(capsys):
    assert checks.check_soft_target_loss(soft_ok) is True
    assert capsys.readouterr().out.startswith("✔ ")


def test_soft_target_loss_log_target_form_passes():
    def f(z, v, t):
        return F.kl_div(F.log_softmax(z / t, -1), F.log_softmax(v / t, -1), log_target=True,
                        reduction="batchmean") * t * t

    assert checks.check_soft_target_loss(f)


SOFT_WRONG = [
    # (wrong implementation, diagnosis keywords)
    (lambda z, v, t: soft_ok(z, v, t) / t**2, ["T²", "missing"]),
    (lambda z, v, t: soft_ok(z, v, t) / t, ["instead of T²"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "mean") * t**2, ["batchmean", "mean"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "sum") * t**2, ["batchmean", "sum"]),
    (lambda z, v, t: _kl(F.log_softmax(v / t, -1), F.softmax(z / t, -1)) * t**2, ["swapped", "reverse"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(F.softmax(v / t, -1), -1)) * t**2,
     ["softmax twice"]),
    (lambda z, v, t: _kl(F.log_softmax(F.softmax(z / t, -1), -1), F.softmax(v / t, -1)) * t**2,
     ["softmax twice", "student"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v, -1)) * t**2, ["teacher's logits are not divided"]),
    (lambda z, v, t: _kl(F.log_softmax(z, -1), F.softmax(v / t, -1)) * t**2, ["student's logits are not divided"]),
    (lambda z, v, t: _kl(F.softmax(z / t, -1), F.softmax(v / t, -1)) * t**2, ["log-probabilities", "F.kl_div"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "none") * t**2, ["(B, C)", "batchmean"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "none").sum(-1) * t**2, ["one loss per row"]),
    (lambda z, v, t: _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "mean"), ["2 problems", "T²", "batchmean"]),
    (lambda z, v, t: _kl(F.log_softmax(v / t, -1), F.softmax(z / t, -1)), ["2 problems", "swapped", "T²"]),
    (_detached, ["not differentiable", "detach"]),
    (_no_grad, ["not differentiable", "no_grad"]),
    (lambda z, v, t: torch.tensor(soft_ok(z, v, t).item()), ["not differentiable"]),
    (lambda z, v, t: soft_ok(z, v, t) * 1.01, ["expected T² · KL"]),
]


@pytest.mark.parametrize("wrong, keywords", SOFT_WRONG)
def test_soft_target_loss_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_soft_target_loss, wrong, *keywords, capsys=capsys)


def test_soft_target_loss_wrong_gradient_right_value(assert_fails):
    def f(z, v, t):  # value right, but the student's probabilities are treated as a constant inside the log
        q = F.softmax(z / t, -1)
        p = F.softmax(v / t, -1)
        log_q = torch.log(q.detach()) + (q - q.detach()) * 0
        return (p * (p.log() - log_q)).sum() / z.shape[0] * t**2

    assert_fails(checks.check_soft_target_loss, f, "wrong gradient")


# ============================================================================================== KD gradient
def grad_ok(student_logits, teacher_logits, temperature):
    t = temperature
    return (F.softmax(student_logits / t, -1) - F.softmax(teacher_logits / t, -1)) / t


def test_kd_gradient_correct(capsys):
    assert checks.check_kd_gradient(grad_ok) is True
    assert capsys.readouterr().out.startswith("✔ ")


def test_kd_gradient_autograd_passes():
    def f(z, v, t):
        z = z.clone().requires_grad_(True)
        p = F.softmax(v / t, -1)
        kl = (p * (p.log() - F.log_softmax(z / t, -1))).sum()
        return torch.autograd.grad(kl, z)[0]

    assert checks.check_kd_gradient(f)


@pytest.mark.parametrize(
    "wrong, keywords",
    [
        (lambda z, v, t: grad_ok(z, v, t) * t, ["1/T", "missing"]),
        (lambda z, v, t: -grad_ok(z, v, t), ["sign", "(p − q)"]),
        (lambda z, v, t: grad_ok(z, v, t) * t * t, ["T²", "T·(q − p)"]),
        (lambda z, v, t: (F.softmax(z, -1) - F.softmax(v, -1)) / t, ["T = 1"]),
        (lambda z, v, t: grad_ok(z, v, t) / t, ["T² instead of T"]),
        (lambda z, v, t: grad_ok(z, v, t) / z.shape[0], ["batch size"]),
        (lambda z, v, t: -grad_ok(z, v, t) * t, ["2 problems", "sign", "1/T"]),
        (lambda z, v, t: grad_ok(z, v, t).sum(-1), ["shape"]),
        (lambda z, v, t: grad_ok(z, v, t) + 0.01, ["differs from autograd"]),
    ],
)
def test_kd_gradient_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_kd_gradient, wrong, *keywords, capsys=capsys)


# ======================================================================================== distillation loss
def dist_ok(student_logits, teacher_logits, labels, temperature, alpha_kd):
    return (1 - alpha_kd) * F.cross_entropy(student_logits, labels) + alpha_kd * soft_ok(
        student_logits, teacher_logits, temperature)


def test_distillation_loss_correct(capsys):
    assert checks.check_distillation_loss(dist_ok) is True
    assert capsys.readouterr().out.startswith("✔ ")


def test_distillation_loss_accepts_course_utils_result():
    from course_utils.kd import losses

    assert checks.check_distillation_loss(losses.distillation_loss)


def _with_soft(soft):
    def f(z, v, y, t, a):
        return (1 - a) * F.cross_entropy(z, y) + a * soft(z, v, t)

    return f


DISTILLATION_WRONG = [
    (lambda z, v, y, t, a: a * F.cross_entropy(z, y) + (1 - a) * soft_ok(z, v, t), ["wrong term", "alpha"]),
    (lambda z, v, y, t, a: F.cross_entropy(z, y) + a * soft_ok(z, v, t), ["not weighted"]),
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z / t, y) + a * soft_ok(z, v, t), ["temperature T", "T = 1"]),
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(F.softmax(z, -1), y) + a * soft_ok(z, v, t),
     ["cross_entropy", "logits"]),
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y) + a * soft_ok(z, v, t) / t**2, ["T²", "missing"]),
    (lambda z, v, y, t, a: a * F.cross_entropy(z / t, y) + (1 - a) * soft_ok(z, v, t),
     ["2 problems", "wrong term", "temperature T"]),
    (lambda z, v, y, t, a: dist_ok(z.detach(), v, y, t, a), ["not differentiable"]),
    (lambda z, v, y, t, a: dist_ok(z, v, y, t, a) + 0.01 * a, ["KD term"]),
    (lambda z, v, y, t, a: dist_ok(z, v, y, t, a) + 0.01 * (1 - a), ["CE term"]),
    (lambda z, v, y, t, a: dist_ok(z, v, y, t, a) + 0.01 * a * (1 - a), ["weighting"]),
] + [(_with_soft(wrong), keywords) for wrong, keywords in SOFT_WRONG[:11]]


@pytest.mark.parametrize("wrong, keywords", DISTILLATION_WRONG)
def test_distillation_loss_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_distillation_loss, wrong, *keywords, capsys=capsys)


def test_correct_alternatives_pass():
    assert checks.check_stable_softmax(lambda x, t=1.0: torch.exp(x / t - torch.logsumexp(x / t, -1, keepdim=True)))
    assert checks.check_entropy(lambda p: torch.distributions.Categorical(probs=p).entropy())
    assert checks.check_distillation_loss(
        lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y)
        + a * t * t * (F.softmax(v / t, -1) * (F.log_softmax(v / t, -1) - F.log_softmax(z / t, -1))).sum(-1).mean()
    )


def test_lazy_access_from_course_utils():
    import course_utils

    assert course_utils.checks.check_entropy is checks.check_entropy
    assert course_utils.checks.CheckFailed is CheckFailed


def test_thread_setting_restored():
    before = torch.get_num_threads()
    checks.check_entropy(entropy_ok)
    with pytest.raises(CheckFailed):
        checks.check_entropy(not_implemented)
    assert torch.get_num_threads() == before


def test_checkers_leave_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_stable_softmax(softmax_ok)
    checks.check_distillation_loss(dist_ok)
    assert torch.equal(torch.rand(3), expected)


def test_numpy_in_loss_is_reported(assert_fails):
    def f(z, v, t):
        import numpy as np

        return torch.as_tensor(np.asarray(soft_ok(z, v, t).numpy()))

    assert_fails(checks.check_soft_target_loss, f, "requires grad", "stay in torch")


def test_gradient_check_works_inside_no_grad():
    with torch.no_grad():
        assert checks.check_soft_target_loss(soft_ok)


def test_soft_target_loss_log_of_softmax_is_diagnosed(capsys, assert_fails):
    """``log(softmax(z / T))`` matches on ordinary logits but is -inf where the softmax underflows."""
    def log_of_softmax(z, v, T):
        return F.kl_div(torch.log(F.softmax(z / T, -1)), F.softmax(v / T, -1), reduction="batchmean") * T**2

    message = assert_fails(checks.check_soft_target_loss, log_of_softmax, "underflow", "log(softmax", capsys=capsys)
    assert "log_softmax" not in message  # the hint names the idea, not the function to call


# ------------------------------------------------------------------ mistakes the exercise text warns against
def test_stable_softmax_temperature_after_normalising_is_diagnosed(assert_fails):
    """Hint 3: the temperature divides the logits before anything else."""
    def after(logits, temperature=1.0):
        e = (logits - logits.max(dim=-1, keepdim=True).values).exp()
        return e / e.sum(dim=-1, keepdim=True) / temperature

    assert_fails(checks.check_stable_softmax, after, "after normalising", "before anything else")


def test_soft_target_loss_log_of_teacher_softmax_is_diagnosed(assert_fails):
    """log(softmax(v / T)) as a log_target: NaN where the teacher's softmax underflows."""
    def teacher_log_of_softmax(z, v, T):
        return F.kl_div(F.log_softmax(z / T, -1), torch.log(F.softmax(v / T, -1)), reduction="batchmean",
                        log_target=True) * T**2

    message = assert_fails(checks.check_soft_target_loss, teacher_log_of_softmax, "very confident teacher",
                           "teacher's side", "log(softmax")
    assert "log_softmax" not in message


@pytest.mark.parametrize("fn, keywords", [
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y) + a * t**2 * F.kl_div(
        torch.log(F.softmax(z / t, -1)), F.softmax(v / t, -1), reduction="batchmean"),
     ["very confident student", "KD term", "log(softmax"]),
    (lambda z, v, y, t, a: (1 - a) * F.nll_loss(torch.log(F.softmax(z, -1)), y) + a * t**2 * F.kl_div(
        F.log_softmax(z / t, -1), F.softmax(v / t, -1), reduction="batchmean"),
     ["very confident student", "hard-label cross-entropy", "log(softmax"]),
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y) + a * t**2 * F.kl_div(
        F.log_softmax(z / t, -1), torch.log(F.softmax(v / t, -1)), reduction="batchmean", log_target=True),
     ["very confident teacher", "log(softmax"]),
])
def test_distillation_loss_log_of_softmax_is_diagnosed(fn, keywords, assert_fails):
    message = assert_fails(checks.check_distillation_loss, fn, *keywords)
    assert "log_softmax" not in message


def test_distillation_loss_t2_on_the_ce_term_is_diagnosed(assert_fails):
    """Hint 3: the T² belongs to the KD term only."""
    def t2_everywhere(z, v, y, t, a):
        kd = F.kl_div(F.log_softmax(z / t, -1), F.softmax(v / t, -1), reduction="batchmean")
        return t**2 * ((1 - a) * F.cross_entropy(z, y) + a * kd)

    assert_fails(checks.check_distillation_loss, t2_everywhere, "T² factor multiplies the cross-entropy",
                 "KD term only")
