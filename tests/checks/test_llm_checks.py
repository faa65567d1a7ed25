"""Notebook-05 checkers in ``course_utils.checks.llm``: they pass correct code, report unimplemented exercises, and
diagnose every listed mistake."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.checks import CheckFailed
from course_utils.evaluation.text_metrics import rouge_l
from course_utils.kd.llm_losses import causal_lm_distillation_loss
from course_utils.llm.data import sft_example


pytestmark = pytest.mark.usefixtures("single_thread")


def expect_fail(check, fn, *needles):
    with pytest.raises(CheckFailed) as err:
        check(fn)
    msg = str(err.value)
    for needle in needles:
        assert needle.lower() in msg.lower(), (needle, msg)
    return msg


def not_implemented(*args, **kwargs):
    raise NotImplementedError("write it")


# ------------------------------------------------------------------------------------------------ sft_example
def test_sft_example_passes_reference_and_variants(capsys):
    assert checks.check_sft_example(lambda p, r, e: sft_example(p, r, e))
    assert checks.check_sft_example(lambda p, r, e: {"input_ids": torch.tensor(p + r + [e]),
                                                     "labels": torch.tensor([-100] * len(p) + r + [e])})
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("fn, needles", [
    (lambda p, r, e: {"input_ids": p + r, "labels": [-100] * len(p) + r}, ["EOS", "stop"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": p + r + [e]}, ["not masked"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": ([-100] * len(p) + r + [e])[1:] + [-100]}, ["shifted"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": [0] * len(p) + r + [e]}, ["instead of -100"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": [-100] * len(p) + r + [-100]}, ["EOS position is masked"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": p + [-100] * (len(r) + 1)}, ["wrong part"]),
    (lambda p, r, e: {"input_ids": p + r + [e, e], "labels": [-100] * len(p) + r + [e, e]}, ["twice"]),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": [-100] * len(p) + r}, ["one entry per input token"]),
    (lambda p, r, e: (p + r + [e], [-100] * len(p) + r + [e]), ["dict"]),
    (lambda p, r, e: None, ["return"]),
    (not_implemented, ["not implemented", "write it"]),
])
def test_sft_example_diagnoses(fn, needles):
    expect_fail(checks.check_sft_example, fn, *needles)


# ------------------------------------------------------------------------------------------------ causal KD loss
def reference_loss(z, v, y, t, a):
    return causal_lm_distillation_loss(z, v, y, t, a).loss


def make_loss(shift="shift", kd_all=False, reduction="tokens", t2="T2", reverse=False, swap=False, ce_at_t=False,
              detach=False):
    def loss(z, v, y, t, a):
        if detach:
            z = z.detach()
        if shift == "shift":
            z, v, y = z[:, :-1], v[:, :-1], y[:, 1:]
        elif shift == "backwards":
            z, v, y = z[:, 1:], v[:, 1:], y[:, :-1]
        valid = y != -100
        ce = F.cross_entropy((z / t if ce_at_t else z)[valid], y[valid])
        zk, vk = (z.reshape(-1, z.shape[-1]), v.reshape(-1, v.shape[-1])) if kd_all else (z[valid], v[valid])
        log_q, log_p = F.log_softmax(zk / t, -1), F.log_softmax(vk / t, -1)
        if reverse:
            log_q, log_p = log_p, log_q
        if reduction == "tokens":
            kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
        elif reduction == "batch":
            kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum") / y.shape[0]
        else:
            kl = F.kl_div(log_q, log_p, log_target=True, reduction="mean")
        kd = kl * {"T2": t * t, "none": 1.0, "T": t}[t2]
        return (a * ce + (1 - a) * kd) if swap else ((1 - a) * ce + a * kd)
    return loss


def test_causal_kd_loss_passes_reference_and_own_implementation(capsys):
    assert checks.check_causal_kd_loss(reference_loss)
    assert checks.check_causal_kd_loss(make_loss())
    assert checks.check_causal_kd_loss(lambda *a: causal_lm_distillation_loss(*a))  # a result with .loss
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, needles", [
    (dict(shift="none"), ["not shifted"]),
    (dict(shift="backwards"), ["wrong way"]),
    (dict(kd_all=True), ["every position"]),
    (dict(reduction="batch"), ["batch size"]),
    (dict(reduction="mean"), ["vocabulary too"]),
    (dict(t2="none"), ["T²"]),
    (dict(t2="T"), ["T instead of T²"]),
    (dict(reverse=True), ["reversed"]),
    (dict(swap=True), ["wrong term"]),
    (dict(ce_at_t=True), ["temperature T"]),
    (dict(shift="none", t2="none"), ["2 problems", "not shifted", "T²"]),
    (dict(detach=True), ["without a gradient"]),
])
def test_causal_kd_loss_diagnoses(kwargs, needles):
    expect_fail(checks.check_causal_kd_loss, make_loss(**kwargs), *needles)


def test_causal_kd_loss_unknown_mistake_and_not_implemented():
    expect_fail(checks.check_causal_kd_loss, lambda z, v, y, t, a: reference_loss(z, v, y, t, a) * 1.37,
                "expected", "shift")
    expect_fail(checks.check_causal_kd_loss, not_implemented, "not implemented")
    expect_fail(checks.check_causal_kd_loss, lambda z, v, y, t, a: z.mean(-1), "scalar")
    with pytest.raises(TypeError):
        checks.check_causal_kd_loss(reference_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3),
                                                   torch.tensor([[-100, 1]]), 1.0, 0.5))


# ------------------------------------------------------------------------------------------------ ROUGE-L
def test_rouge_l_passes_reference(capsys):
    assert checks.check_rouge_l(rouge_l)
    assert "✔" in capsys.readouterr().out


def _lcs(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def _rouge(split=lambda s: re.findall(r"\w+", s.lower()), score="f1", substring=False):
    def fn(c, r):
        a, b = split(c), split(r)
        if not a or not b:
            return 0.0
        if substring:
            n = max((k for i in range(len(a)) for j in range(len(b))
                     for k in [next((k for k in range(min(len(a) - i, len(b) - j) + 1)
                                     if k == min(len(a) - i, len(b) - j) or a[i + k] != b[j + k]))]), default=0)
        else:
            n = _lcs(a, b)
        if score == "count":
            return float(n)
        if n == 0:
            return 0.0
        p, rec = n / len(a), n / len(b)
        return {"f1": 2 * p * rec / (p + rec), "recall": rec, "precision": p}[score]
    return fn


@pytest.mark.parametrize("fn, needles", [
    (_rouge(substring=True), ["substring"]),
    (_rouge(score="recall"), ["recall"]),
    (_rouge(score="precision"), ["precision"]),
    (_rouge(score="count"), ["LCS length"]),
    (_rouge(split=lambda s: s.split()), ["whitespace"]),
    (_rouge(split=lambda s: list(s.lower().replace(" ", ""))), ["characters"]),
    (lambda c, r: rouge_l(c, r) + 0.1, ["expected"]),
    (lambda c, r: str(rouge_l(c, r)), ["float"]),
    (not_implemented, ["not implemented"]),
])
def test_rouge_l_diagnoses(fn, needles):
    expect_fail(checks.check_rouge_l, fn, *needles)


def test_rouge_l_crash_on_empty_text_is_reported():
    def fragile(c, r):
        a, b = c.split(), r.split()
        n = _lcs(a, b)
        p, rec = n / len(a), n / len(b)
        return 2 * p * rec / (p + rec)

    expect_fail(checks.check_rouge_l, fragile, "ZeroDivisionError")


# ------------------------------------------------------------------ mistakes the exercise text warns against
def _causal(log_of_softmax=None, teacher="same"):
    """The notebook's causal KD loss; ``log_of_softmax`` in "ce", "student" or "teacher" takes log(softmax(·)) there;
    ``teacher`` = "unshifted" (full-length teacher logits) or "ahead" (teacher_logits[:, 1:])."""
    def causal_kd_loss(student_logits, teacher_logits, labels, temperature, alpha_kd):
        z, y = student_logits[:, :-1], labels[:, 1:]
        v = {"same": teacher_logits[:, :-1], "ahead": teacher_logits[:, 1:], "unshifted": teacher_logits}[teacher]
        valid = y != -100
        t = temperature
        if log_of_softmax == "ce":
            ce = F.nll_loss(torch.log(torch.softmax(z[valid], -1)), y[valid])
        else:
            ce = F.cross_entropy(z[valid], y[valid])
        log_q = (torch.log(torch.softmax(z[valid] / t, -1)) if log_of_softmax == "student"
                 else F.log_softmax(z[valid] / t, -1))
        log_p = (torch.log(torch.softmax(v[valid] / t, -1)) if log_of_softmax == "teacher"
                 else F.log_softmax(v[valid] / t, -1))
        kd = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * t**2
        return (1 - alpha_kd) * ce + alpha_kd * kd
    return causal_kd_loss


@pytest.mark.parametrize("where, needles", [
    ("student", ["very confident student", "KD term", "log(softmax"]),
    ("ce", ["very confident student", "cross-entropy", "log(softmax"]),
    ("teacher", ["very confident teacher", "teacher's side", "log(softmax"]),
])
def test_causal_kd_loss_log_of_softmax_is_diagnosed(where, needles):
    message = expect_fail(checks.check_causal_kd_loss, _causal(log_of_softmax=where), *needles)
    assert "log_softmax" not in message


def test_causal_kd_loss_teacher_not_shifted_is_diagnosed():
    """The text: compare student_logits[:, :-1] (and teacher_logits[:, :-1]) with labels[:, 1:]."""
    expect_fail(checks.check_causal_kd_loss, _causal(teacher="unshifted"), "not the teacher's logits", "last position")
    expect_fail(checks.check_causal_kd_loss, _causal(teacher="ahead"), "teacher's logits are shifted the other way")


def test_rouge_l_not_lower_cased_is_diagnosed():
    expect_fail(checks.check_rouge_l, _rouge(split=lambda s: re.findall(r"\w+", s)), "lower-case")


def test_rouge_l_division_by_zero_without_common_words_is_diagnosed():
    """The text: 0 if either text is empty or nothing is shared."""
    def no_guard(candidate, reference):
        a, b = re.findall(r"\w+", candidate.lower()), re.findall(r"\w+", reference.lower())
        lcs = _lcs(a, b)
        precision, recall = lcs / max(len(a), 1), lcs / max(len(b), 1)
        return 2 * precision * recall / (precision + recall)

    expect_fail(checks.check_rouge_l, no_guard, "ZeroDivisionError", "no word in common", "Return 0.0")
