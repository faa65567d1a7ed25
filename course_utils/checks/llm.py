"""Checkers for notebook 05 (distilling a language model): an SFT training example with the loss on the response
only, the token-level KD loss of a causal LM (shift, mask, T², forward KL), and ROUGE-L.

=====================================================================  =========================================
exercise                                                               checker
=====================================================================  =========================================
``sft_example(prompt_ids, response_ids, eos_id) -> {"input_ids",       :func:`check_sft_example`
"labels"}``: prompt + response + EOS, labels −100 on the prompt
``causal_kd_loss(student_logits, teacher_logits, labels, temperature,  :func:`check_causal_kd_loss`
alpha_kd)``: (1 − α)·CE + α·T²·KL(p ‖ q) on next-token positions
whose label is not −100
``rouge_l(candidate, reference) -> float``: LCS-based F1 on words      :func:`check_rouge_l`
=====================================================================  =========================================

References: :func:`course_utils.llm.data.sft_example`, :func:`course_utils.kd.llm_losses.causal_lm_distillation_loss`,
:func:`course_utils.evaluation.text_metrics.rouge_l`. No model is needed: the inputs are small seeded tensors and strings.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..evaluation.text_metrics import lcs_length, rouge_l, words
from ..kd import llm_losses
from ._core import (
    Case,
    Dimensions,
    as_tensor_output,
    call_learner,
    checker,
    close,
    fail,
    find_mistakes,
    fmt,
    mistakes_message,
    passed,
    require_callable,
    run_cases,
)
from .basics import confident_probes, log_of_softmax_message

__all__ = ["check_sft_example", "check_causal_kd_loss", "check_rouge_l"]

IGNORE = -100


# =========================================================================================== SFT example
def _as_list(value: Any, key: str, name: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        fail(f"`{name}` returned {key} of type {type(value).__name__}; return a list of token ids (or a 1-D tensor).")
    return [int(x) for x in value]


@checker
def check_sft_example(fn: Callable[..., Any]) -> bool:
    """Check ``sft_example(prompt_ids, response_ids, eos_id) -> {"input_ids": [...], "labels": [...]}``.

    Expected: ``input_ids`` = prompt + response + [eos_id]; ``labels`` = the same with −100 on every prompt token,
    *not* shifted (the model shifts). Diagnoses: not a dict / keys missing; EOS missing or doubled; prompt not
    masked; response (or EOS) masked; labels shifted by hand; another mask value than −100; lengths differ.
    """
    name = require_callable(fn, "sft_example")
    cases = [([1, 2, 3], [7, 8], 9), ([5], [6, 6, 4], 2), ([4, 4, 11, 12], [13], 0)]
    for prompt, response, eos in cases:
        args = {"prompt_ids": list(prompt), "response_ids": list(response), "eos_id": eos}
        out = call_learner(fn, args)
        if out is None:
            fail(f"`{name}` returned None — did you forget `return {{'input_ids': ..., 'labels': ...}}`?")
        if not isinstance(out, Mapping) or "input_ids" not in out or "labels" not in out:
            fail(f"`{name}` must return a dict with the keys 'input_ids' and 'labels', got {type(out).__name__}"
                 f"{' with keys ' + str(sorted(out)) if isinstance(out, Mapping) else ''}.")
        ids, labels = _as_list(out["input_ids"], "input_ids", name), _as_list(out["labels"], "labels", name)
        want_ids = prompt + response + [eos]
        want_labels = [IGNORE] * len(prompt) + response + [eos]
        where = f"for prompt_ids={prompt}, response_ids={response}, eos_id={eos}"
        if ids == prompt + response:
            fail(f"`{name}`: input_ids lack the EOS token {where}. Append eos_id after the response — a student "
                 "that never sees EOS in training never learns to stop, and generates until the token cap.")
        if ids == prompt + response + [eos, eos]:
            fail(f"`{name}`: EOS appears twice at the end of input_ids {where}; append it once.")
        if ids != want_ids:
            fail(f"`{name}`: input_ids should be prompt + response + [eos] = {want_ids} {where}, got {ids}.")
        if len(labels) != len(ids):
            fail(f"`{name}`: labels must have one entry per input token ({len(ids)}), got {len(labels)} {where}. "
                 "Do not shift or drop positions: the model aligns position t with token t + 1 itself.")
        if labels == ids:
            fail(f"`{name}`: the prompt is not masked {where}: labels == input_ids, so the student would be trained "
                 "to reproduce the prompt as well. Put -100 (the ignore_index of cross_entropy) on every prompt "
                 "token.")
        if labels == want_ids[1:] + [IGNORE] or labels == [IGNORE] * (len(prompt) - 1) + response + [eos, IGNORE]:
            fail(f"`{name}`: the labels are shifted by one position {where}. Keep labels aligned with input_ids "
                 "(labels[t] = input_ids[t], or -100): Hugging Face models and course_utils' losses shift them "
                 "internally, so shifting here would train the student to predict two tokens ahead.")
        masked = {v for v, w in zip(labels, want_labels) if w == IGNORE and v != w}
        if masked and all(v == w for v, w in zip(labels, want_labels) if w != IGNORE) and len(masked) == 1:
            value = masked.pop()
            fail(f"`{name}`: prompt positions are marked with {value} instead of -100 {where}. Only -100 is "
                 f"ignored by the loss; {value} is an ordinary token id, which the student would learn to predict.")
        if labels[-1] == IGNORE and labels[:-1] == want_labels[:-1]:
            fail(f"`{name}`: the EOS position is masked {where}. The EOS token must be learned (label = eos_id), "
                 "otherwise the student never learns when to stop.")
        if labels == [IGNORE] * len(prompt) + [IGNORE] * len(response) + [eos] or \
                labels == prompt + [IGNORE] * (len(response) + 1):
            fail(f"`{name}`: the wrong part is masked {where}: the response must keep its token ids as labels and "
                 "the prompt must be -100.")
        if labels != want_labels:
            fail(f"`{name}`: labels should be {want_labels} {where} (-100 on the prompt, then the response and EOS), "
                 f"got {labels}.")
    return passed(f"`{name}` is correct: prompt + response + EOS as input_ids, and the loss only on the response and "
                  "its EOS (-100 on the prompt), unshifted.")


# ===================================================================================== causal-LM KD loss
_CAUSAL_MISTAKES: Dimensions = {
    "align": [
        ("shift", ""),
        ("none", "the logits were not shifted: position t's logits predict token t + 1, so compare "
                 "student_logits[:, :-1] (and teacher_logits[:, :-1]) with labels[:, 1:] — or shift the labels: "
                 "course_utils.kd.llm_losses.shift_labels(labels)."),
        ("backwards", "the shift goes the wrong way: logits[:, 1:] were compared with labels[:, :-1]. Position t "
                      "predicts the *next* token: logits[:, :-1] against labels[:, 1:]."),
    ],
    "teacher_align": [
        ("same", ""),
        ("ahead", "the teacher's logits are shifted the other way from the student's (teacher_logits[:, 1:] against "
                  "student_logits[:, :-1]): at each position both models must predict the same next token, so "
                  "shift both logits the same way, dropping their last position."),
    ],
    "kd_positions": [
        ("masked", ""),
        ("all", "the KL term covers every position, prompt and padding included. Average it over the same "
                "positions as the CE: those whose (shifted) label is not -100 — the teacher's opinion about the "
                "prompt and the padding is not what the student should learn."),
    ],
    "kd_reduction": [
        ("tokens", ""),
        ("batch", "the KL sum was divided by the batch size B instead of the number of counted tokens (F.kl_div's "
                  "'batchmean' divides by the first dimension: on a (B, S, V) tensor that is B). Select the counted "
                  "positions into an (N, V) tensor first, then batchmean divides by N."),
        ("mean", "the KL was averaged over the vocabulary too (reduction='mean'), which divides it by V: sum over "
                 "the vocabulary and average over positions ('batchmean' on an (N, V) tensor)."),
    ],
    "t2": [
        ("T2", ""),
        ("none", "the KL term is not multiplied by T². Its gradient scales like 1/T² otherwise (notebook 02): "
                 "multiply by temperature ** 2."),
        ("T", "the KL term is multiplied by T instead of T²."),
    ],
    "direction": [
        ("forward", ""),
        ("reverse", "the KL is reversed: you computed KL(q ‖ p) (student first). KD uses the forward KL(p ‖ q) = "
                    "Σ p (log p − log q) with p the teacher: F.kl_div(log_q, log_p, log_target=True)."),
    ],
    "weights": [
        ("kd", ""),
        ("ce", "alpha_kd weights the wrong term: the course uses (1 − alpha_kd)·CE + alpha_kd·T²·KL."),
    ],
    "ce": [
        ("T1", ""),
        ("atT", "the cross-entropy was computed at temperature T; the hard-label term uses T = 1."),
    ],
}


def _causal_case(seed: int, temperature: float, alpha_kd: float) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    b, s, v = 2, 7, 6
    z = torch.randn(b, s, v, generator=gen, dtype=torch.float64) * 2
    t = torch.randn(b, s, v, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, v, (b, s), generator=gen)
    labels[0, :3] = IGNORE  # prompt
    labels[1, :2] = IGNORE
    labels[1, -2:] = IGNORE  # padding
    return {"student_logits": z, "teacher_logits": t, "labels": labels, "temperature": temperature,
            "alpha_kd": alpha_kd}


def _causal_reference(case: Case) -> torch.Tensor:
    return llm_losses.causal_lm_distillation_loss(case["student_logits"], case["teacher_logits"], case["labels"],
                                                  case["temperature"], case["alpha_kd"]).loss


def _causal_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    z, v, y, t, a = (case[k] for k in ("student_logits", "teacher_logits", "labels", "temperature", "alpha_kd"))
    if choice["align"] == "shift":
        z, v, y = z[:, :-1], (v[:, :-1] if choice["teacher_align"] == "same" else v[:, 1:]), y[:, 1:]
    elif choice["align"] == "backwards":
        z, v, y = z[:, 1:], v[:, 1:], y[:, :-1]
    valid = y != IGNORE
    ce = F.cross_entropy((z / t if choice["ce"] == "atT" else z)[valid], y[valid])
    zk, vk = (z[valid], v[valid]) if choice["kd_positions"] == "masked" else (z.reshape(-1, z.shape[-1]),
                                                                                v.reshape(-1, v.shape[-1]))
    log_q, log_p = torch.log_softmax(zk / t, -1), torch.log_softmax(vk / t, -1)
    per = (log_p.exp() * (log_p - log_q)) if choice["direction"] == "forward" else (log_q.exp() * (log_q - log_p))
    total = per.sum()
    kl = {"tokens": total / zk.shape[0], "batch": total / case["student_logits"].shape[0],
          "mean": total / per.numel()}[choice["kd_reduction"]]
    kd = kl * {"T2": t * t, "none": 1.0, "T": t}[choice["t2"]]
    w_ce, w_kd = (1 - a, a) if choice["weights"] == "kd" else (a, 1 - a)
    return w_ce * ce + w_kd * kd


def _loss_output(out: Any, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) and isinstance(getattr(out, "loss", None), torch.Tensor):
        out = out.loss
    return as_tensor_output(out, name, "loss")


@checker
def check_causal_kd_loss(fn: Callable[..., Any]) -> bool:
    """Check ``causal_kd_loss(student_logits, teacher_logits, labels, temperature, alpha_kd)``.

    Expected: logits ``(B, S, V)``, labels ``(B, S)`` unshifted with −100 on prompt and padding; the result is
    ``(1 − α)·CE + α·T²·KL(p ‖ q)`` where position t's logits are scored against labels[t + 1], both terms
    averaged over the positions whose (shifted) label is not −100, CE at T = 1 and KL summed over the vocabulary.
    Reference: :func:`course_utils.kd.llm_losses.causal_lm_distillation_loss`.

    Diagnoses (alone or two at a time): no shift or a backwards shift; the teacher's logits not shifted (or shifted
    the other way); ``log(softmax(...))`` in either term (inf/NaN for a very confident student or teacher); KL over
    all positions (prompt and padding);
    KL divided by the batch size or averaged over the vocabulary; missing T² or T instead of T²; reverse KL;
    alpha_kd on the wrong term; CE at temperature T; not differentiable; the inputs modified in place.
    """
    name = require_callable(fn, "causal_kd_loss")
    cases = [_causal_case(1, 2.0, 0.5), _causal_case(2, 1.0, 0.7), _causal_case(3, 3.0, 0.2)]
    _diagnose_unshifted_teacher(fn, name, cases[0])
    outputs, bad = run_cases(fn, cases, _causal_reference, convert=_loss_output)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _causal_variant, _CAUSAL_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        out = outputs[bad]
        if out.dim() != 0:
            fail(f"`{name}` returned a tensor of shape {tuple(out.shape)}; the loss must be a scalar (average over the "
                 "counted positions).")
        fail(f"`{name}` returns {fmt(out)} for T = {cases[bad]['temperature']:g}, alpha_kd = "
             f"{cases[bad]['alpha_kd']:g}, expected {fmt(_causal_reference(cases[bad]))}. Check the shift "
             "(logits[:, :-1] vs labels[:, 1:]), the mask (shifted labels != -100) for both terms, T² and the "
             "forward KL Σ p (log p − log q).")
    case = dict(cases[0])
    z = case["student_logits"].clone().requires_grad_()
    case["student_logits"] = z
    raw = call_learner(fn, case)
    raw = raw.loss if not isinstance(raw, torch.Tensor) and hasattr(raw, "loss") else raw
    if not isinstance(raw, torch.Tensor) or not raw.requires_grad:
        fail(f"`{name}` returns a loss without a gradient: something detached the student's logits (.detach(), "
             ".item(), torch.no_grad() or a numpy round trip). Only the teacher's side may be detached.")
    raw.backward()
    if z.grad is None or not close(z.grad, _reference_grad(cases[0]), atol=1e-8):
        fail(f"`{name}` has the right value but the wrong gradient w.r.t. student_logits: is the student's side "
             "detached somewhere?")
    _check_confident_causal(fn, name)
    return passed(f"`{name}` is correct: next-token shift, prompt and padding excluded from both terms, "
                  "(1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q), differentiable in the student's logits, and finite for "
                  "a very confident student or teacher.")


def _diagnose_unshifted_teacher(fn: Callable[..., Any], name: str, case: Case) -> None:
    """If ``fn`` crashes on ``case`` but gives the right loss when the teacher's logits come already shifted, it
    shifts the student's logits and the labels but not the teacher's (a shape mismatch in the mask or the KL)."""
    quiet = contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet, torch.no_grad():
            fn(*case.values())
        return
    except Exception:  # noqa: BLE001 - the learner's code; run_cases reports it if this is not the reason
        pass
    try:
        with quiet, torch.no_grad():
            out = _loss_output(fn(*dict(case, teacher_logits=case["teacher_logits"][:, :-1]).values()), name)
    except Exception:  # noqa: BLE001
        return
    if close(out, _causal_reference(case)):
        fail(f"`{name}` shifts the student's logits and the labels but not the teacher's logits: with (B, S, V) "
             "teacher logits it fails on a shape mismatch, and with the teacher's logits already cut to (B, S − 1, V) "
             "it gives the right loss. The teacher's logits at position t predict token t + 1 too: drop their last "
             "position exactly as you do for the student's.")


def _check_confident_causal(fn: Callable[..., Any], name: str) -> None:
    """Two counted positions whose logits have gaps of ~300 (float32): log(softmax(...)) is -inf/NaN there."""
    for who, where, probe in confident_probes(with_labels=True):
        def sequence(logits: torch.Tensor) -> torch.Tensor:  # (2, V) → (1, 3, V): positions 0, 1 count, 2 is last
            return torch.cat([logits, torch.zeros(1, logits.shape[-1])])[None]

        labels = torch.cat([torch.tensor([IGNORE]), probe["labels"]])[None]  # unshifted: labels[t + 1] for row t
        case = {"student_logits": sequence(probe["student_logits"]), "teacher_logits": sequence(probe["teacher_logits"]),
                "labels": labels, "temperature": probe["temperature"], "alpha_kd": 0.5}
        out = _loss_output(call_learner(fn, case), name)
        if not bool(torch.isfinite(out).all()):
            fail(log_of_softmax_message(name, out, who, where + ", alpha_kd = 0.5"))
        expected = _causal_reference(case)
        if not close(out, expected):
            fail(f"`{name}` returns {fmt(out)} for a very confident {who} ({where}), expected {fmt(expected)}: "
                 "compute both terms from log-probabilities taken in one step (log-sum-exp), never from "
                 "probabilities.")


def _reference_grad(case: Case) -> torch.Tensor:
    z = case["student_logits"].clone().requires_grad_()
    llm_losses.causal_lm_distillation_loss(z, case["teacher_logits"], case["labels"], case["temperature"],
                                           case["alpha_kd"]).loss.backward()
    return z.grad


# ============================================================================================== ROUGE-L
_ROUGE_CASES = [
    ("the cat sat on the mat", "the cat lay on the mat"),
    ("Bees make honey.", "bees make honey"),
    ("a b c d e f", "a x c y e z f"),
    ("honey is sweet", "the quick brown fox"),
    ("one two three four five six seven", "one two"),
    ("", "anything at all"),
]


def _substring(a, b) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def _rouge_variant(c: str, r: str, tokens: str = "words", match: str = "lcs", score: str = "f1") -> float:
    split = {"words": words, "split": lambda s: s.split(), "chars": lambda s: list(s.lower().replace(" ", "")),
             "cased": lambda s: re.findall(r"\w+", s)}[tokens]
    a, b = split(c), split(r)
    if not a or not b:
        return 0.0
    n = lcs_length(a, b) if match == "lcs" else _substring(a, b)
    if score == "count":
        return float(n)
    if n == 0:
        return 0.0
    p, rec = n / len(a), n / len(b)
    return {"f1": 2 * p * rec / (p + rec), "recall": rec, "precision": p}[score]


_ROUGE_MISTAKES = [
    ({"match": "substring"}, "you measured the longest common *substring* (contiguous words); ROUGE-L uses the longest "
                             "common *subsequence*: the words must appear in the same order but gaps are allowed "
                             "('the cat … on the mat' has an LCS of 5 words with 'the cat lay on the mat')."),
    ({"score": "recall"}, "you return the recall L / |reference| only; ROUGE-L's F1 combines it with the precision "
                          "L / |candidate|: F1 = 2PR / (P + R)."),
    ({"score": "precision"}, "you return the precision L / |candidate| only; ROUGE-L's F1 combines it with the recall "
                             "L / |reference|: F1 = 2PR / (P + R)."),
    ({"score": "count"}, "you return the LCS length in words; ROUGE-L turns it into precision L / |candidate| and "
                         "recall L / |reference| and returns their F1 = 2PR / (P + R)."),
    ({"tokens": "split"}, "you split on whitespace only, so case and punctuation count ('Honey.' ≠ 'honey'). Compare "
                          "lower-cased words: re.findall(r'\\w+', text.lower())."),
    ({"tokens": "chars"}, "you compared characters; ROUGE-L works on words: re.findall(r'\\w+', text.lower())."),
    ({"tokens": "cased"}, "you did not lower-case the texts, so 'Bees' and 'bees' count as different words. Lower-case "
                          "both texts before extracting the words."),
]


@checker
def check_rouge_l(fn: Callable[[str, str], float]) -> bool:
    """Check ``rouge_l(candidate, reference) -> float``: ROUGE-L F1 on lower-cased words (LCS-based).

    Diagnoses: longest common substring instead of subsequence; recall or precision only; the raw LCS length;
    whitespace split (case and punctuation counted); words not lower-cased; characters instead of words; a division
    by zero for an empty text or no common word; not a
    number. Reference: :func:`course_utils.evaluation.text_metrics.rouge_l`.
    """
    name = require_callable(fn, "rouge_l")
    reference = rouge_l
    for c, r in _ROUGE_CASES:  # the edge cases first: an empty text, or no word in common
        if lcs_length(words(c), words(r)) == 0:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    fn(c, r)
            except ZeroDivisionError as err:
                what = "an empty text" if not words(c) or not words(r) else "two texts with no word in common"
                fail(f"`{name}`({c!r}, {r!r}) raised ZeroDivisionError for {what}: the LCS is 0 there, so precision "
                     "and recall are 0 and their F1 divides 0 by 0. Return 0.0 when either text is empty or the LCS "
                     "is 0, before computing the F1.", cause=err)
            except Exception:  # noqa: BLE001 - reported below by call_learner, with its context
                pass
    got = []
    for c, r in _ROUGE_CASES:
        out = call_learner(fn, {"candidate": c, "reference": r})
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = float(out)
        if not isinstance(out, (int, float)) or isinstance(out, bool):
            fail(f"`{name}` returned {type(out).__name__} for ({c!r}, {r!r}); return the F1 score as a float.")
        got.append(float(out))
    want = [reference(c, r) for c, r in _ROUGE_CASES]
    if all(abs(g - w) < 1e-6 for g, w in zip(got, want)):
        return passed(f"`{name}` is correct: LCS of lower-cased words, F1 of precision and recall, 0 for an empty "
                      "text.")
    for change, message in _ROUGE_MISTAKES:
        if all(abs(g - _rouge_variant(c, r, **change)) < 1e-6 for g, (c, r) in zip(got, _ROUGE_CASES)):
            fail(f"`{name}`: {message}")
    i = next(i for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) >= 1e-6)
    c, r = _ROUGE_CASES[i]
    fail(f"`{name}`({c!r}, {r!r}) returns {got[i]:.4f}, expected {want[i]:.4f} (LCS = {lcs_length(words(c), words(r))} "
         f"words of {len(words(c))} and {len(words(r))}).")
