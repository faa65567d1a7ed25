"""Notebook 08's checkers accept the reference and name each listed mistake."""
from __future__ import annotations

import pytest
import torch

from course_utils.checks import CheckFailed, check_on_policy_loss, check_score_tokens
from course_utils.kd.llm_losses import generalized_jsd_loss
from course_utils.llm import on_policy

pytestmark = pytest.mark.usefixtures("single_thread")


def test_references_pass(capsys):
    assert check_on_policy_loss(on_policy.on_policy_loss) is True
    assert check_score_tokens(on_policy.score_tokens) is True


def _mask(s, p, e):
    return on_policy.completion_mask(s, p, e)


def prompt_counted(z, v, s, p, e, b):
    m = _mask(s, p, e)
    m[:, :p] = torch.cumsum(s[:, :p] != e, 1) > 0
    return generalized_jsd_loss(z[:, :-1], v[:, :-1], beta=b, mask=m[:, 1:])


def eos_masked(z, v, s, p, e, b):
    return generalized_jsd_loss(z[:, :-1], v[:, :-1], beta=b, mask=(_mask(s, p, e) & (s != e))[:, 1:])


def beta_swapped(z, v, s, p, e, b):
    return on_policy.on_policy_loss(z, v, s, p, e, 1 - b)


def student_detached(z, v, s, p, e, b):
    return on_policy.on_policy_loss(z.detach(), v, s, p, e, b)


def teacher_not_detached(z, v, s, p, e, b):
    m = _mask(s, p, e)[:, 1:]
    lq, lp = torch.log_softmax(z[:, :-1], -1), torch.log_softmax(v[:, :-1], -1)
    if b == 0:
        return (lp.exp() * (lp - lq)).sum(-1)[m].mean()
    return on_policy.on_policy_loss(z, v, s, p, e, b)


def not_shifted(z, v, s, p, e, b):
    return generalized_jsd_loss(z, v, beta=b, mask=_mask(s, p, e))


@pytest.mark.parametrize("wrong, words", [
    (prompt_counted, "prompt tokens are counted"), (eos_masked, "EOS token is masked"),
    (beta_swapped, "endpoints are swapped"), (student_detached, "without a gradient"),
    (teacher_not_detached, "gradient into the teacher"), (not_shifted, "not shifted"),
])
def test_each_loss_mistake_is_named(wrong, words):
    with pytest.raises(CheckFailed, match=words):
        check_on_policy_loss(wrong)


def scores_shifted(m, s, a):
    with torch.no_grad():
        logits = m(input_ids=s, attention_mask=a).logits
    return torch.log_softmax(logits[:, 1:], -1).gather(-1, s[:, 1:, None]).squeeze(-1)


def probabilities(m, s, a):
    return on_policy.score_tokens(m, s, a).exp()


def with_grad(m, s, a):
    logits = m(input_ids=s, attention_mask=a).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, s[:, 1:, None]).squeeze(-1)


def no_attention_mask(m, s, a):
    with torch.no_grad():
        logits = m(input_ids=s).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, s[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("wrong, words", [
    (scores_shifted, "shifted by one position"), (probabilities, "returns probabilities"),
    (with_grad, "carry a gradient"), (no_attention_mask, "attention mask"),
])
def test_each_scoring_mistake_is_named(wrong, words):
    with pytest.raises(CheckFailed, match=words):
        check_score_tokens(wrong)


def test_stubs_report_not_implemented():
    def on_policy_loss(*args):
        raise NotImplementedError("write it")

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_on_policy_loss(on_policy_loss)
