"""Checkers for notebook 08 (on-policy distillation): the masked on-policy generalized-JSD loss and the teacher's
per-token scores of the student's samples.

=====================================================================  =========================================
exercise                                                               checker
=====================================================================  =========================================
``on_policy_loss(student_logits, teacher_logits, sequences,           :func:`check_on_policy_loss`
prompt_length, eos_token_id, beta)``: generalized JSD (T = 1) over
the completion tokens (first EOS included), logits shifted by one
``score_tokens(model, sequences, attention_mask) -> (B, L − 1)``:      :func:`check_score_tokens`
log π(x_{t+1} | x_{≤t}), one forward pass, no gradient
=====================================================================  =========================================

References: :func:`course_utils.llm.on_policy.on_policy_loss`, :func:`course_utils.llm.on_policy.score_tokens`.
No real model is needed: the inputs are small seeded tensors and a bigram "model" whose scores are known.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from ..kd.llm_losses import generalized_jsd_loss
from ._core import as_tensor_output, call_learner, checker, close, fail, fmt, passed, require_callable

__all__ = ["check_on_policy_loss", "check_score_tokens"]

EOS = 2  # the pad token is the EOS token, as in SmolLM2's tokenizer
PROMPT = 3
V = 13


# ====================================================================================== the on-policy loss
def _sequences() -> torch.Tensor:
    # row 0: a left-padded prompt (the pad is EOS) and a completion that stops early (EOS, then EOS as padding);
    # row 1: a full-width prompt and a completion whose only EOS is the last token
    return torch.tensor([[EOS, 5, 6, 7, 8, EOS, EOS, EOS],
                         [4, 5, 6, 9, 3, 7, 10, EOS]])


def _case(seed: int, beta: float) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    seq = _sequences()
    z = torch.randn(*seq.shape, V, generator=g, dtype=torch.float64) * 2
    v = torch.randn(*seq.shape, V, generator=g, dtype=torch.float64) * 2
    return {"student_logits": z, "teacher_logits": v, "sequences": seq, "prompt_length": PROMPT,
            "eos_token_id": EOS, "beta": beta}


def _masked(case: dict[str, Any], mask: torch.Tensor, beta: float | None = None, shift: int = 1) -> torch.Tensor:
    z, v = case["student_logits"], case["teacher_logits"]
    if shift == 1:
        z, v, mask = z[:, :-1], v[:, :-1], mask[:, 1:]
    return generalized_jsd_loss(z, v, beta=case["beta"] if beta is None else beta, mask=mask)


def _completion(seq: torch.Tensor, with_eos: bool = True, with_prompt: bool = False,
                with_padding: bool = False) -> torch.Tensor:
    """The correct mask, or one of the wrong ones a mistake produces."""
    mask = torch.zeros_like(seq, dtype=torch.bool)
    for row in range(seq.shape[0]):
        if with_prompt:  # what an attention mask marks: the prompt's real tokens
            mask[row, :PROMPT] = torch.cumsum(seq[row, :PROMPT] != EOS, 0) > 0
        for t in range(PROMPT, seq.shape[1]):
            if seq[row, t] == EOS and not with_padding:
                mask[row, t] = with_eos
                break
            mask[row, t] = True
    return mask


def _reference(case: dict[str, Any]) -> torch.Tensor:
    return _masked(case, _completion(case["sequences"]))


def _per_sequence_mean(case: dict[str, Any]) -> torch.Tensor:
    mask = _completion(case["sequences"])[:, 1:]
    z, v = case["student_logits"][:, :-1], case["teacher_logits"][:, :-1]
    rows = [generalized_jsd_loss(z[i], v[i], beta=case["beta"], mask=mask[i]) for i in range(z.shape[0])]
    return torch.stack(rows).mean()


def _sum(case: dict[str, Any]) -> torch.Tensor:
    mask = _completion(case["sequences"])
    return _reference(case) * int(mask[:, 1:].sum())


_LOSS_MISTAKES: list[tuple[str, Callable[[dict[str, Any]], torch.Tensor]]] = [
    ("every position is counted — the prompt and the padding after EOS too. Only the completion the student wrote "
     "is graded: from prompt_length up to and including each row's first EOS.",
     lambda c: _masked(c, torch.ones_like(c["sequences"], dtype=torch.bool))),
    ("the prompt tokens are counted: only the completion the student wrote is graded — start the mask at "
     "prompt_length.",
     lambda c: _masked(c, _completion(c["sequences"], with_prompt=True))),
    ("the EOS token is masked out. Here the pad token *is* EOS, so `sequences != eos_token_id` also drops the real "
     "end of the answer, and a student that is never taught to stop rambles to the token cap: keep the first EOS of "
     "each completion, drop only what comes after it.",
     lambda c: _masked(c, _completion(c["sequences"], with_eos=False))),
    ("the padding after the first EOS is counted: positions after a completion's first EOS are filler, not text the "
     "student wrote.",
     lambda c: _masked(c, _completion(c["sequences"], with_padding=True))),
    ("β's endpoints are swapped: β = 0 must give the forward KL(p ‖ q) (teacher first) and β = 1 the reverse "
     "KL(q ‖ p) — the mixture is m = β·p + (1 − β)·q.",
     lambda c: _masked(c, _completion(c["sequences"]), beta=1.0 - c["beta"])),
    ("the logits are not shifted: the logits at position t predict token t + 1, so the completion token at t is "
     "scored by the logits at t − 1 (drop the last position of the logits and the first of the mask).",
     lambda c: _masked(c, _completion(c["sequences"]), shift=0)),
    ("the loss is averaged per sequence, then over sequences: that gives the tokens of a short completion more "
     "weight than those of a long one. Average over all counted tokens of the batch at once.",
     _per_sequence_mean),
    ("the loss is summed over tokens instead of averaged: its size would then grow with the batch and the length of "
     "the completions.",
     _sum),
]


@checker
def check_on_policy_loss(fn: Callable[..., Any]) -> bool:
    """Check ``on_policy_loss(student_logits, teacher_logits, sequences, prompt_length, eos_token_id, beta)``.

    Expected: the generalized JSD at T = 1 (β = 0 forward KL, β = 1 reverse KL) between teacher and student,
    averaged over the completion tokens — from ``prompt_length`` to each row's first EOS, that EOS included —
    scored by the logits one position earlier; differentiable in the student's logits, a constant in the teacher's.

    Diagnoses: prompt tokens counted; EOS masked; padding after EOS counted; β endpoints swapped; no shift; a
    per-sequence mean; a sum; student logits detached; teacher logits not detached.
    """
    name = require_callable(fn, "on_policy_loss")
    cases = [_case(0, 0.5), _case(1, 0.0), _case(2, 1.0), _case(3, 0.3)]
    for case in cases:
        out = call_learner(fn, case)
        out = as_tensor_output(out, name, "loss")
        expected = _reference(case)
        if close(out, expected):
            continue
        if out.dim() != 0:
            fail(f"`{name}` returned a tensor of shape {tuple(out.shape)}; the loss must be a scalar (the mean over "
                 "the counted tokens).")
        matched = [text for text, wrong in _LOSS_MISTAKES if close(out, wrong(case))]
        if matched:
            fail(f"`{name}` with beta = {case['beta']:g}: {matched[0]}")
        fail(f"`{name}` returns {fmt(out)} for beta = {case['beta']:g}, expected {fmt(expected)}. Check, in order: the "
             "mask (completion tokens up to and including the first EOS), the shift by one position, and the "
             "generalized JSD with the mixture m = β·p + (1 − β)·q.")
    case = dict(cases[1])  # β = 0: the forward KL has a gradient with respect to the teacher unless it is detached
    z = case["student_logits"].clone().requires_grad_()
    v = case["teacher_logits"].clone().requires_grad_()
    case.update(student_logits=z, teacher_logits=v)
    loss = call_learner(fn, case)
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad or loss.grad_fn is None:
        fail(f"`{name}` returns a loss without a gradient: the student's logits were detached (.detach(), .item(), "
             "torch.no_grad()); only the teacher's side is a constant.")
    loss.backward()
    if v.grad is not None and bool(v.grad.abs().sum() > 0):
        fail(f"`{name}` sends gradient into the teacher's logits: the teacher is the target, a constant — detach it "
             "(in training its forward pass also runs under torch.no_grad()).")
    if z.grad is None or not bool(z.grad.abs().sum() > 0):
        fail(f"`{name}` gives no gradient to the student's logits: is the student's side detached?")
    return passed(f"`{name}` is correct: the completion tokens only (first EOS kept), shifted logits, generalized JSD "
                  "with β = 0 forward and β = 1 reverse KL, the teacher a constant.")


# ========================================================================================== teacher scores
class _BigramModel(torch.nn.Module):
    """A causal "LM" whose logits at position t depend only on token t (and a position bias), so a score taken at
    the wrong position is visible. It records whether it ran with gradients and with an attention mask."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=g) * 2)
        self.pad_bias = torch.randn(V, generator=g) * 3
        self.calls: list[dict[str, bool]] = []

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **_: Any) -> SimpleNamespace:
        if input_ids is None:
            raise TypeError("call the model with input_ids=… (and attention_mask=…)")
        self.calls.append({"grad": torch.is_grad_enabled(), "mask": attention_mask is not None})
        logits = self.table[input_ids]
        if attention_mask is not None:  # padded positions look different, as they do in a real model
            logits = logits + (1 - attention_mask.to(logits.dtype)).unsqueeze(-1) * self.pad_bias
        return SimpleNamespace(logits=logits)


def _score_reference(model: _BigramModel, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=seq, attention_mask=mask).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, seq[:, 1:, None]).squeeze(-1)


@checker
def check_score_tokens(fn: Callable[..., Any]) -> bool:
    """Check ``score_tokens(model, sequences, attention_mask) -> (B, L − 1)``.

    Expected: ``out[b, t] = log softmax(model(sequences).logits[b, t])[sequences[b, t + 1]]``, computed with the
    attention mask, under ``torch.no_grad()`` (or ``inference_mode``). Diagnoses: scores shifted by one position
    (either way); probabilities or raw logits instead of log-probabilities; shape (B, L); no attention mask;
    gradients kept.
    """
    name = require_callable(fn, "score_tokens")
    model = _BigramModel()
    seq = _sequences()
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    out = call_learner(fn, {"model": model, "sequences": seq, "attention_mask": mask})
    if not model.calls:
        fail(f"`{name}` never called the model: run one forward pass, model(input_ids=sequences, "
             "attention_mask=attention_mask).")
    if isinstance(out, torch.Tensor) and out.requires_grad:
        fail(f"`{name}` returns scores that carry a gradient: the teacher only grades, it is never trained — run its "
             "forward pass under torch.no_grad() (saves the memory of its activations too).")
    out = as_tensor_output(out, name, "per-token log-probabilities")
    expected = _score_reference(model, seq, mask)
    if close(out, expected):
        if not model.calls[-1]["mask"]:
            fail(f"`{name}` did not pass the attention mask: with left-padded prompts the model must be told which "
                 "positions are padding.")
        return passed(f"`{name}` is correct: column t is the log-probability of token t + 1 given the tokens up to t, "
                      "one forward pass, no gradient.")
    b, length = seq.shape
    if tuple(out.shape) == (b, length):
        fail(f"`{name}` returned shape {(b, length)}; expected {(b, length - 1)}: the last position predicts a token "
             "that is not in the sequence, and the first token has no prediction.")
    if tuple(out.shape) != (b, length - 1):
        fail(f"`{name}` returned shape {tuple(out.shape)}; expected {(b, length - 1)} (one score per next token).")
    with torch.no_grad():
        logits = model(input_ids=seq, attention_mask=mask).logits
        nomask_logits = model(input_ids=seq).logits
    log_probs = torch.log_softmax(logits, -1)
    shifted = [log_probs[:, 1:].gather(-1, seq[:, 1:, None]).squeeze(-1),   # token t+1 scored at its own position
               log_probs[:, :-1].gather(-1, seq[:, :-1, None]).squeeze(-1)]  # token t scored by the logits at t
    if any(close(out, s) for s in shifted):
        fail(f"`{name}`'s scores are shifted by one position: the logits at position t are the model's prediction of "
             "token t + 1, so score sequences[:, 1:] with the logits at positions 0 … L − 2.")
    if close(out, expected.exp()):
        fail(f"`{name}` returns probabilities; return log-probabilities (log_softmax), which the losses and the "
             "advantages use and which do not underflow.")
    if close(out, logits[:, :-1].gather(-1, seq[:, 1:, None]).squeeze(-1)):
        fail(f"`{name}` returns the raw logits of the next tokens; normalise them first (log_softmax over the "
             "vocabulary).")
    if close(out, torch.log_softmax(nomask_logits[:, :-1], -1).gather(-1, seq[:, 1:, None]).squeeze(-1)):
        fail(f"`{name}` did not pass the attention mask: with left-padded prompts the model must be told which "
             "positions are padding.")
    fail(f"`{name}` returns {fmt(out[0])} for the first sequence, expected {fmt(expected[0])}: column t must be "
         "log softmax(logits[:, t])[sequences[:, t + 1]].")
