"""Checkers for notebooks 01 (softmax with temperature, entropy) and 02 (the soft-target loss and its gradient).

Each ``check_*`` takes the learner's function, runs it on fixed, seeded inputs, compares it with the reference
(:mod:`course_utils.kd.losses` where it has one) and either prints "✔ …" and returns ``True``, or prints "✘ …" with a
diagnosis of the *specific* mistake and raises :class:`~course_utils.checks.CheckFailed`.

Expected learner functions (shapes: ``B`` rows, ``C`` classes, ``...`` any leading dimensions):

======================================================================  ====================================
exercise                                                                checker
======================================================================  ====================================
``stable_softmax(logits (..., C), temperature=1.0) -> (..., C)``        :func:`check_stable_softmax`
``entropy(probs (..., C)) -> (...)``  (nats)                            :func:`check_entropy`
``soft_target_loss(student_logits (B, C), teacher_logits (B, C),        :func:`check_soft_target_loss`
temperature) -> ()``  = T² · KL(p ‖ q), batchmean
``kd_logit_gradient(student_logits (B, C), teacher_logits (B, C),       :func:`check_kd_gradient`
temperature) -> (B, C)``  = (q − p) / T
``distillation_loss(student_logits (B, C), teacher_logits (B, C),       :func:`check_distillation_loss`
labels (B,), temperature, alpha_kd) -> ()``
======================================================================  ====================================

Conventions as in :mod:`course_utils.kd.losses`: q = softmax(z / T) (student), p = softmax(v / T) (teacher),
loss = (1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..kd import losses
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
    seeded_randn,
)

__all__ = [
    "check_stable_softmax",
    "check_entropy",
    "check_soft_target_loss",
    "check_kd_gradient",
    "check_distillation_loss",
]


# =========================================================================================== stable_softmax
_SOFTMAX_MISTAKES: Dimensions = {
    "axis": [
        (-1, ""),
        (0, "you normalised along the wrong axis, dim 0: for a (rows, classes) input your *columns* sum to 1 "
            "instead of your rows. Softmax runs over the classes, the last axis — use dim=-1 in every max/sum "
            "(e.g. logits.max(dim=-1, keepdim=True).values)."),
        (-2, "you normalised along the wrong axis (dim 1, which is the class axis only for 2-D input): for a "
             "(2, 3, 5) input the classes are on dim 2. Use dim=-1, the last axis, in every max/sum."),
    ],
    "temperature": [
        ("divide", ""),
        ("ignore", "the temperature is ignored: your output does not change with T. Divide the logits by T before "
                   "the softmax: softmax(logits / temperature)."),
        ("multiply", "the temperature is applied as a multiplication (logits * T), which sharpens the distribution "
                     "for T > 1 instead of softening it. Divide: softmax(logits / temperature)."),
        ("after", "the temperature is applied after normalising (the probabilities are divided by T), so your rows "
                  "sum to 1/T instead of 1. The temperature divides the logits before anything else; the division "
                  "by the sum comes last."),
    ],
    "output": [
        ("probs", ""),
        ("log", "you return log-probabilities (all ≤ 0; their exp sums to 1). Return the probabilities "
                "exp(x − max) / Σ exp(x − max) — no log at the end."),
        ("double", "your output is much flatter than softmax(logits / T) — did you apply softmax twice? Softmax of "
                   "numbers that are already probabilities (all in [0, 1]) is nearly uniform. Normalise once."),
    ],
}


def _softmax_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    x, t = case["logits"], case["temperature"]
    x = {"divide": x / t, "ignore": x, "multiply": x * t, "after": x}[choice["temperature"]]
    dim = choice["axis"]
    out = torch.softmax(x, dim=dim)
    if choice["temperature"] == "after":
        out = out / t
    if choice["output"] == "double":
        out = torch.softmax(out, dim=dim)
    elif choice["output"] == "log":
        out = torch.log_softmax(x, dim=dim)
    return out


def _softmax_reference(case: Case) -> torch.Tensor:
    return torch.softmax(case["logits"] / case["temperature"], dim=-1)


@checker
def check_stable_softmax(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``stable_softmax(logits, temperature=1.0)``: ``softmax(logits / T)`` along the last axis, stable.

    Expected function:
        ``stable_softmax(logits: Tensor (..., C), temperature: float = 1.0) -> Tensor (..., C)``: probabilities
        of the same shape as ``logits``, summing to 1 along the last axis, finite even for logits ~ ±1000.

    Diagnoses: wrong axis (columns sum to 1), temperature ignored, multiplied or applied to the probabilities
    after normalising, log-probabilities returned,
    softmax applied twice, rows not summing to 1, shape changed, NaN/inf for large logits (row max not
    subtracted, or the global max subtracted instead of each row's), input modified in place.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis (also printed after "✘").
        TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "stable_softmax")
    cases: list[Case] = [
        {"logits": seeded_randn(4, 7, seed=0, scale=2.0), "temperature": 1.0},
        {"logits": seeded_randn(4, 7, seed=1, scale=2.0), "temperature": 2.5},
        {"logits": seeded_randn(3, 5, seed=2, scale=2.0), "temperature": 0.5},
        {"logits": seeded_randn(2, 3, 5, seed=3, scale=2.0), "temperature": 1.5},
        {"logits": seeded_randn(6, seed=4, scale=2.0), "temperature": 2.0},
    ]
    outputs, bad = run_cases(fn, cases, _softmax_reference)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _softmax_variant, _SOFTMAX_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        _softmax_fallback(name, cases[bad], outputs[bad])

    # Numerical stability: exp(1000) overflows float32 (its largest value is about e^88.7).
    big = torch.tensor([[1000.0, 999.0, 998.0]])
    out = as_tensor_output(call_learner(fn, {"logits": big, "temperature": 1.0}), name)
    if not bool(torch.isfinite(out).all()):
        fail(
            f"`{name}` returns {fmt(out)} for logits tensor([[1000., 999., 998.]]): exp(1000) overflows to inf "
            "and inf/inf is NaN. Did you subtract the row max before exp? softmax(x) = softmax(x − max(x)), so "
            "shift each row first: x = x - x.max(dim=-1, keepdim=True).values — then the largest exponent is "
            "exp(0) = 1 and nothing overflows."
        )
    mixed = torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -998.0]])
    out2 = as_tensor_output(call_learner(fn, {"logits": mixed, "temperature": 1.0}), name)
    if not bool(torch.isfinite(out2).all()):
        fail(
            f"`{name}` returns {fmt(out2)} for logits [[1000, 999, 998], [-1000, -999, -998]]: the second row "
            "underflows to 0/0. Subtract each row's own max (x.max(dim=-1, keepdim=True).values), not the global "
            "max of the whole tensor."
        )
    for logits, got in ((big, out), (mixed, out2)):
        if not close(got, torch.softmax(logits, dim=-1)):
            _softmax_fallback(name, {"logits": logits, "temperature": 1.0}, got)
    return passed(
        f"`{name}` is correct: it matches torch.softmax(logits / T, dim=-1) for 1-D, 2-D and 3-D inputs and "
        "T ∈ {0.5, 1, 1.5, 2, 2.5}, and stays finite for logits around ±1000."
    )


def _softmax_fallback(name: str, case: Case, out: torch.Tensor) -> None:
    x, t = case["logits"], case["temperature"]
    expected = _softmax_reference(case)
    where = f"for logits of shape {tuple(x.shape)} and T = {t:g}"
    if tuple(out.shape) != tuple(x.shape):
        fail(f"`{name}` changed the shape: {where} it returns shape {tuple(out.shape)}, but softmax returns one "
             "probability per logit, the same shape as the input. Did you reduce (sum/max) without "
             "keepdim=True, or index/squeeze the result?")
    if not bool(torch.isfinite(out).all()):
        fail(f"`{name}` returns NaN/inf {where} even though these logits are small: check for a division by zero "
             "or a log of 0.")
    sums = out.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        fail(f"`{name}`: {where} your rows sum to {fmt(sums, 3)}, but each row of probabilities must sum to 1. "
             "Divide exp(x − max) by its sum over the last axis: e / e.sum(dim=-1, keepdim=True).")
    fail(f"`{name}` gives wrong probabilities {where}: expected {fmt(expected)}, got {fmt(out)}. It must equal "
         "torch.softmax(logits / temperature, dim=-1).")


# ================================================================================================== entropy
_ENTROPY_MISTAKES: Dimensions = {
    "log": [
        ("e", ""),
        ("2", "you used log base 2 (bits): your entropies are 1/ln 2 ≈ 1.443 times too large. The course measures "
              "entropy in nats — use the natural log, torch.log."),
        ("10", "you used log base 10: your entropies are ln 10 ≈ 2.303 times too small. Use the natural log, "
               "torch.log (entropy in nats)."),
    ],
    "sign": [
        (1, ""),
        (-1, "the sign is flipped: your entropies are ≤ 0. H(p) = −Σ p log p; log p ≤ 0, so the minus makes H ≥ 0."),
    ],
    "classes": [
        ("sum", ""),
        ("sum0", "you summed over the wrong axis (dim 0, the rows). Sum over the classes, the last axis: "
                 ".sum(dim=-1)."),
        ("sum-2", "you summed over the wrong axis (dim 1 is the class axis only for 2-D input). Sum over the "
                  "last axis: .sum(dim=-1)."),
        ("mean", "you averaged over the classes (.mean(-1)) instead of summing: H = −Σ_c p_c log p_c, so your "
                 "values are C times too small. Use .sum(dim=-1)."),
        ("none", "you return −p·log p for every class without summing: sum over the last axis, .sum(dim=-1), to "
                 "get one entropy per distribution."),
    ],
    "rows": [
        ("each", ""),
        ("mean", "you return the mean over rows (a single number) instead of one entropy per row: the result must "
                 "have the input's shape without its last axis, (...,). Drop the final .mean()."),
        ("sum", "you return the sum over rows (a single number) instead of one entropy per row: sum over the last "
                "axis only, .sum(dim=-1)."),
    ],
}


def _entropy_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    p = case["probs"]
    terms = -torch.special.xlogy(p, p) * choice["sign"]
    if choice["log"] != "e":
        terms = terms / math.log(float(choice["log"]))
    h = {
        "sum": lambda: terms.sum(-1),
        "sum0": lambda: terms.sum(0),
        "sum-2": lambda: terms.sum(-2),
        "mean": lambda: terms.mean(-1),
        "none": lambda: terms,
    }[choice["classes"]]()
    if choice["rows"] == "mean":
        h = h.mean()
    elif choice["rows"] == "sum":
        h = h.sum()
    return h


def _entropy_reference(case: Case) -> torch.Tensor:
    return losses.entropy(case["probs"])


@checker
def check_entropy(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``entropy(probs)``: Shannon entropy in nats of each distribution along the last axis.

    Expected function:
        ``entropy(probs: Tensor (..., C)) -> Tensor (...)``: ``H = −Σ_c p_c log p_c`` per row, natural log,
        with ``0 · log 0 = 0`` (so rows containing zeros give finite values).

    Diagnoses: log base 2 (or 10), sign flipped, summed over the wrong axis, averaged instead of summed over the
    classes, not summed at all, mean/sum over rows instead of one value per row, NaN for zero probabilities.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "entropy")
    cases: list[Case] = [
        {"probs": torch.softmax(seeded_randn(4, 6, seed=10, scale=2.0), -1)},
        {"probs": torch.softmax(seeded_randn(3, 5, seed=11, scale=1.0), -1)},
        {"probs": torch.softmax(seeded_randn(2, 3, 4, seed=12, scale=2.0), -1)},
        {"probs": torch.softmax(seeded_randn(5, seed=13, scale=2.0), -1)},
    ]
    outputs, bad = run_cases(fn, cases, _entropy_reference)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _entropy_variant, _ENTROPY_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        _entropy_fallback(name, cases[bad], outputs[bad])

    zeros = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    case = {"probs": zeros}
    out = as_tensor_output(call_learner(fn, case), name)
    if tuple(out.shape) == (3,) and not bool(torch.isfinite(out).all()):
        fail(
            f"`{name}` returns {fmt(out)} for the rows [0.5, 0.5, 0, 0], [1, 0, 0, 0], [0.25]*4: a zero probability "
            "gives 0 · log 0 = 0 · (−inf) = NaN. By convention (the limit of p log p as p → 0) 0 · log 0 = 0: use "
            "torch.special.xlogy(p, p) for p·log p, or torch.where(p > 0, p * p.log(), 0.0)."
        )
    if not close(out, _entropy_reference(case)):
        _entropy_fallback(name, case, out)
    return passed(
        f"`{name}` is correct: it matches −Σ p·ln p over the last axis for 1-D, 2-D and 3-D inputs, and handles "
        "zero probabilities (0 · log 0 = 0; a one-hot row has entropy 0, a uniform one log C)."
    )


def _entropy_fallback(name: str, case: Case, out: torch.Tensor) -> None:
    p = case["probs"]
    expected = _entropy_reference(case)
    where = f"for probs of shape {tuple(p.shape)}"
    if tuple(out.shape) != tuple(expected.shape):
        fail(f"`{name}` returns shape {tuple(out.shape)} {where}; expected {tuple(expected.shape)} — one entropy per "
             "distribution (the input's shape without its last axis). Sum over dim=-1 only.")
    if not bool(torch.isfinite(out).all()):
        fail(f"`{name}` returns NaN/inf {where}: check for log(0) — use torch.special.xlogy(p, p) for p·log p.")
    fail(f"`{name}` gives wrong entropies {where}: expected {fmt(expected)}, got {fmt(out)}. Compute "
         "−(p * torch.log(p)).sum(dim=-1) (a uniform distribution over C classes has entropy log C).")


# ========================================================================================= soft-target loss
_SOFT_MISTAKES: Dimensions = {
    "scale": [
        ("T2", ""),
        ("none", "the T² factor is missing (your loss is T² times too small): multiply the KL by temperature ** 2. "
                 "T² keeps the soft-target gradients, which shrink like 1/T², on the same scale as the hard-label "
                 "ones when you change T."),
        ("T", "you multiplied by T instead of T² (your loss is T times too small): the factor is temperature ** 2."),
    ],
    "reduction": [
        ("batchmean", ""),
        ("mean", "reduction=\"mean\" averages over the classes too, which makes the loss C (number of classes) "
                 "times too small. KL sums over the classes and averages over the batch: use "
                 "reduction=\"batchmean\"."),
        ("sum", "reduction=\"sum\" adds up the whole batch, which makes the loss B (batch size) times too large: "
                "use reduction=\"batchmean\" (sum over classes, mean over rows)."),
        ("none", "you return a (B, C) tensor (reduction=\"none\"): the loss must be one number — sum over the "
                 "classes and average over the rows, reduction=\"batchmean\"."),
        ("rows", "you return one loss per row: average them into a single number (that is what "
                 "reduction=\"batchmean\" does)."),
    ],
    "direction": [
        ("forward", ""),
        ("reverse", "the KL arguments are swapped: you computed the reverse KL(q ‖ p). The KD term is the forward "
                    "KL(p ‖ q) with the teacher p as the target: F.kl_div(log_q, p, ...) — the student's "
                    "log-probabilities first, the teacher's probabilities second."),
    ],
    "kl_input": [
        ("log", ""),
        ("probs", "F.kl_div expects LOG-probabilities as its first argument, but you passed probabilities (the "
                  "F.kl_div trap: it computes target · (log target − input), so the input must already be a log). "
                  "Use F.log_softmax(student_logits / T, dim=-1) as the first argument."),
    ],
    "teacher_T": [
        (True, ""),
        (False, "the teacher's logits are not divided by T: the soft targets are p = softmax(teacher_logits / T)."),
    ],
    "student_T": [
        (True, ""),
        (False, "the student's logits are not divided by T: q = softmax(student_logits / T) — both distributions "
                "use the same temperature."),
    ],
    "teacher_softmax": [
        ("once", ""),
        ("twice", "your soft targets went through softmax twice — did you apply softmax twice? Softmax of numbers "
                  "that are already probabilities is nearly uniform, so the student would learn almost nothing. "
                  "Compute p = F.softmax(teacher_logits / T, dim=-1) once and use it as the target."),
    ],
    "student_softmax": [
        ("once", ""),
        ("twice", "the student went through softmax twice (e.g. F.log_softmax(F.softmax(z / T))) — did you apply "
                  "softmax twice? Use F.log_softmax(student_logits / T, dim=-1) directly on the logits."),
    ],
}


def _soft_variant(z: torch.Tensor, v: torch.Tensor, t: float, choice: Mapping[str, Any]) -> torch.Tensor:
    """``T² · KL(p ‖ q)`` (batchmean) as computed with the mistakes in ``choice`` (see ``_SOFT_MISTAKES``)."""
    zs = z / t if choice["student_T"] else z
    vs = v / t if choice["teacher_T"] else v
    log_q = F.log_softmax(zs, dim=-1)
    if choice["student_softmax"] == "twice":
        log_q = F.log_softmax(log_q.exp(), dim=-1)
    p = F.softmax(vs, dim=-1)
    if choice["teacher_softmax"] == "twice":
        p = F.softmax(p, dim=-1)
    log_p = p.log()
    if choice["direction"] == "forward":  # F.kl_div(first, target) = target · (log target − first)
        first, target, log_target = log_q, p, log_p
    else:
        first, target, log_target = log_p, log_q.exp(), log_q
    if choice["kl_input"] == "probs":
        first = first.exp()
    pointwise = target * (log_target - first)
    reduced = {
        "batchmean": lambda: pointwise.sum() / pointwise.shape[0],
        "mean": lambda: pointwise.mean(),
        "sum": lambda: pointwise.sum(),
        "none": lambda: pointwise,
        "rows": lambda: pointwise.sum(-1),
    }[choice["reduction"]]()
    return reduced * {"T2": t * t, "T": t, "none": 1.0}[choice["scale"]]


def _soft_case(seed: int, batch: int, classes: int, temperature: float) -> dict[str, Any]:
    return {
        "student_logits": seeded_randn(batch, classes, seed=seed, scale=2.0),
        "teacher_logits": seeded_randn(batch, classes, seed=seed + 1, scale=3.0),
        "temperature": temperature,
    }


def _check_student_gradient(
    fn: Callable[..., Any],
    name: str,
    case: Case,
    reference: Callable[[Case], torch.Tensor],
) -> None:
    """Fail unless the learner's loss is differentiable w.r.t. ``student_logits`` with the right gradient."""
    with torch.enable_grad():  # the check cell might run inside torch.no_grad()
        _check_student_gradient_enabled(fn, name, case, reference)


def _check_student_gradient_enabled(
    fn: Callable[..., Any], name: str, case: Case, reference: Callable[[Case], torch.Tensor]
) -> None:
    z = case["student_logits"].clone().requires_grad_(True)
    raw = call_learner(fn, dict(case, student_logits=z))
    loss = raw.loss if hasattr(raw, "loss") and isinstance(raw.loss, torch.Tensor) else raw
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad or loss.grad_fn is None:
        fail(
            f"`{name}` gives the right value, but the result is not differentiable w.r.t. student_logits (it has no "
            "gradient), so the student could never learn from it. Did you call .detach(), .item(), "
            "torch.tensor(...)/numpy, or compute it under torch.no_grad()? Keep the student's computation in torch; "
            "only the teacher may be detached."
        )
    (grad,) = torch.autograd.grad(loss, z, allow_unused=True)
    z_ref = case["student_logits"].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(dict(case, student_logits=z_ref)), z_ref)
    if grad is None or not close(grad, expected):
        fail(
            f"`{name}` gives the right value but the wrong gradient w.r.t. student_logits (max difference "
            f"{fmt((expected - (grad if grad is not None else 0)).abs().max())}): part of the student's computation "
            "is detached or replaced by a constant. Only the teacher's side may be detached."
        )


@checker
def check_soft_target_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``soft_target_loss(student_logits, teacher_logits, temperature)`` = ``T² · KL(p ‖ q)``, batchmean.

    Expected function:
        ``soft_target_loss(student_logits: Tensor (B, C), teacher_logits: Tensor (B, C), temperature: float)
        -> Tensor ()``: with q = softmax(z / T), p = softmax(v / T), ``T² · Σ_b Σ_c p_bc (log p_bc − log q_bc) / B``
        — e.g. ``F.kl_div(F.log_softmax(z / T, -1), F.softmax(v / T, -1), reduction="batchmean") * T**2``.
        Differentiable w.r.t. ``student_logits``.

    Diagnoses (alone or two at a time): missing T², T instead of T², ``reduction="mean"`` (1/C too small),
    ``reduction="sum"`` (B times too large), unreduced (B, C) or per-row output, KL arguments swapped (reverse
    KL(q ‖ p)), probabilities instead of log-probabilities as ``F.kl_div``'s first argument, teacher or student
    logits not divided by T, teacher or student through softmax twice, not differentiable (detached),
    ``log(softmax(...))`` instead of ``log_softmax`` for the student or the teacher (inf/NaN for a very confident
    student or teacher).

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "soft_target_loss")
    # B ≠ C and two temperatures, so that the factors T², T, C and B can all be told apart.
    cases: list[Case] = [_soft_case(20, 3, 7, 2.0), _soft_case(22, 3, 7, 4.0), _soft_case(24, 5, 3, 1.5)]

    def reference(case: Case) -> torch.Tensor:
        return losses.soft_target_loss(case["student_logits"], case["teacher_logits"], case["temperature"])

    def variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
        return _soft_variant(case["student_logits"], case["teacher_logits"], case["temperature"], choice)

    outputs, bad = run_cases(fn, cases, reference)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, variant, _SOFT_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        _loss_fallback(name, cases[bad], outputs[bad], reference(cases[bad]), "T² · KL(p ‖ q) (batchmean)")
    _check_student_gradient(fn, name, cases[0], reference)
    _check_confident_models(fn, name, reference)
    return passed(
        f"`{name}` is correct: T² · KL(p ‖ q) averaged over the batch, for T ∈ {{1.5, 2, 4}}, its gradient "
        "w.r.t. the student's logits matches autograd, and it stays finite for a very confident student or teacher."
    )


# Logit gaps of ~300: at T = 1 or 2 softmax underflows to exactly 0 in float32 (below ~1e-45), so log(softmax(·)) is
# -inf there while log_softmax stays finite; at T = 4 the gaps shrink to 75 and nothing underflows. That tells the
# two terms of a distillation loss apart: the cross-entropy (T = 1) against a label whose probability underflows, at
# T = 4 (the KD term is then safe), and the KD term at T = 2 with labels on the top classes (the CE term is then safe).
CONFIDENT_LOGITS = torch.tensor([[150.0, -150.0, 0.0], [0.0, 140.0, -160.0]])
MILD_LOGITS = torch.tensor([[1.0, 0.5, -0.5], [0.2, 0.1, 0.0]])
UNDERFLOWING_LABELS = torch.tensor([1, 2])
TOP_LABELS = torch.tensor([0, 1])


def log_of_softmax_message(name: str, out: torch.Tensor | str, who: str, where: str) -> str:
    """The diagnosis of a loss that is inf/NaN because it takes the log of a softmax that underflowed to 0."""
    shown = out if isinstance(out, str) else fmt(out)
    return (f"`{name}` returns {shown} for a very confident {who} ({where}): its probabilities underflow to exactly 0 "
            "and their log is -inf, so you take log(softmax(...)) (or .log() of probabilities) there — the unstable "
            "way notebook 01 warned about. Compute the log-probabilities in one step, with the log-sum-exp trick built "
            "in (PyTorch has a function for exactly this; F.cross_entropy takes the raw logits and does it itself).")


def confident_probes(with_labels: bool) -> list[tuple[str, str, Case]]:
    """``(who, where, case)`` for :func:`_check_confident_models`; ``case`` has the keys student_logits,
    teacher_logits, labels (when ``with_labels``) and temperature."""
    probes = []
    if with_labels:
        probes.append(("student", "logits ±150, T = 4, labels on the classes whose probability underflows: in the "
                                  "hard-label cross-entropy, at T = 1",
                       {"student_logits": CONFIDENT_LOGITS, "teacher_logits": MILD_LOGITS,
                        "labels": UNDERFLOWING_LABELS, "temperature": 4.0}))
    probes.append(("student", "logits ±150, T = 2: in the KD term, the student's side",
                   {"student_logits": CONFIDENT_LOGITS, "teacher_logits": MILD_LOGITS, "labels": TOP_LABELS,
                    "temperature": 2.0}))
    probes.append(("teacher", "logits ±150, T = 2: in the KD term, the teacher's side",
                   {"student_logits": MILD_LOGITS, "teacher_logits": CONFIDENT_LOGITS, "labels": TOP_LABELS,
                    "temperature": 2.0}))
    if not with_labels:
        for _, _, case in probes:
            del case["labels"]
    return probes


def _check_confident_models(fn: Callable[..., Any], name: str, reference: Callable[[Case], torch.Tensor],
                            alpha_kd: float | None = None,
                            convert: Callable[[Any, str], torch.Tensor] | None = None) -> None:
    """Run ``fn`` with a very confident student, then a very confident teacher: the loss must stay finite and right.
    ``alpha_kd`` is given for a distillation loss ``fn(z, v, labels, T, alpha_kd)``, ``None`` for ``fn(z, v, T)``."""
    convert = convert or (lambda out, n: as_tensor_output(out, n, "loss"))
    for who, where, case in confident_probes(with_labels=alpha_kd is not None):
        case = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        if alpha_kd is not None:
            case["alpha_kd"] = alpha_kd
        out = convert(call_learner(fn, case), name)
        if not bool(torch.isfinite(out).all()):
            fail(log_of_softmax_message(name, out, who, where))
        expected = reference(case)
        if not close(out, expected):
            _loss_fallback(name, case, out, expected, f"the loss for a very confident {who}")


def _loss_fallback(name: str, case: Case, out: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    where = "for " + ", ".join(
        f"{k} of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"{k} = {v:g}" for k, v in case.items()
    )
    if out.dim() != 0:
        fail(f"`{name}` returns a tensor of shape {tuple(out.shape)} {where}; the loss must be a single number "
             "(shape ()): sum over the classes and average over the rows.")
    ratio = float(out) / float(expected) if float(expected) != 0 else float("nan")
    fail(f"`{name}` returns {fmt(out)} {where}, expected {what} = {fmt(expected)} (ratio {ratio:.3g}). "
         "Recompute it step by step: q = log_softmax(z / T), p = softmax(v / T), Σ_c p (log p − log q) per row, "
         "mean over rows, times T².")


# ============================================================================================== KD gradient
_GRADIENT_MISTAKES: Dimensions = {
    "sign": [
        (1, ""),
        (-1, "the sign is flipped: you return (p − q)/T. ∂KL(p‖q)/∂z = (q − p)/T — student minus teacher: positive "
             "where the student puts too much probability, so gradient descent lowers those logits."),
    ],
    "factor": [
        ("1/T", ""),
        ("1", "the 1/T factor is missing: q = softmax(z / T), and by the chain rule ∂(z/T)/∂z = 1/T, so the "
              "gradient is (q − p)/T."),
        ("T", "you included the T² scaling: T² · (q − p)/T = T·(q − p) is the gradient of the T²-scaled loss; here "
              "the gradient of the unscaled KL(p‖q) is asked for: (q − p)/T."),
        ("1/T2", "you divided by T² instead of T: the gradient is (q − p)/T (one factor 1/T from the chain rule)."),
        ("1/TB", "you divided by the batch size as well: the function returns the gradient of the per-row KL "
                 "(summed over rows), (q − p)/T in every row, not the gradient of the batch mean."),
    ],
    "temperature": [
        ("T", ""),
        ("1", "you used T = 1 softmaxes, softmax(z) and softmax(v): q and p are the distributions at temperature "
              "T, softmax(z / T) and softmax(v / T)."),
    ],
}


def _gradient_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    z, v, t = case["student_logits"], case["teacher_logits"], case["temperature"]
    s = t if choice["temperature"] == "T" else 1.0
    diff = (torch.softmax(z / s, -1) - torch.softmax(v / s, -1)) * choice["sign"]
    factor = {"1/T": 1 / t, "1": 1.0, "T": t, "1/T2": 1 / t**2, "1/TB": 1 / (t * z.shape[0])}[choice["factor"]]
    return diff * factor


def _gradient_reference(case: Case) -> torch.Tensor:
    """Autograd of Σ_rows KL(p ‖ q) w.r.t. z (unscaled, summed over rows)."""
    with torch.enable_grad():
        z = case["student_logits"].detach().clone().requires_grad_(True)
        log_p = torch.log_softmax(case["teacher_logits"] / case["temperature"], -1)
        kl = (log_p.exp() * (log_p - torch.log_softmax(z / case["temperature"], -1))).sum()
        (grad,) = torch.autograd.grad(kl, z)
    return grad


@checker
def check_kd_gradient(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``kd_logit_gradient(student_logits, teacher_logits, temperature)`` = ``(q − p) / T`` against autograd.

    Expected function:
        ``kd_logit_gradient(student_logits: Tensor (B, C), teacher_logits: Tensor (B, C), temperature: float)
        -> Tensor (B, C)``: the analytic gradient of each row's (unscaled) KL(p ‖ q) w.r.t. that row's z,
        ``(softmax(z / T) − softmax(v / T)) / T``.

    Diagnoses (alone or two at a time): missing 1/T, sign flipped (p − q), T² scaling included (T·(q − p)),
    1/T² instead of 1/T, divided by the batch size, T = 1 softmaxes.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "kd_logit_gradient")
    cases: list[Case] = [_soft_case(30, 3, 5, 2.0), _soft_case(32, 4, 6, 0.5), _soft_case(34, 5, 4, 3.0)]
    outputs, bad = run_cases(fn, cases, _gradient_reference, atol=1e-6)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _gradient_variant, _GRADIENT_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        case, out = cases[bad], outputs[bad]
        expected = _gradient_reference(case)
        if tuple(out.shape) != tuple(expected.shape):
            fail(f"`{name}` returns shape {tuple(out.shape)}; the gradient has the shape of student_logits, "
                 f"{tuple(expected.shape)}.")
        fail(f"`{name}` differs from autograd for T = {case['temperature']:g}: expected row 0 = {fmt(expected[0])}, "
             f"got {fmt(out[0])}. The gradient is (softmax(z / T) − softmax(v / T)) / T.")
    return passed(
        f"`{name}` is correct: (q − p)/T matches autograd's gradient of KL(p ‖ q) for T ∈ {{0.5, 2, 3}}."
    )


# ======================================================================================== distillation loss
_DISTILLATION_MISTAKES: Dimensions = {
    "weights": [
        ("kd", ""),
        ("ce", "alpha_kd is on the wrong term: you computed alpha_kd·CE + (1 − alpha_kd)·KD, the other convention "
               "(where alpha weights the hard labels). In this course alpha_kd weights the KD term: "
               "(1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q)."),
        ("no_ce_weight", "the CE term is not weighted: the loss is (1 − alpha_kd)·CE + alpha_kd·T²·KL, not "
                         "CE + alpha_kd·T²·KL."),
        ("t2_all", "the T² factor multiplies the cross-entropy too: T² belongs to the KD term only — "
                   "(1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q). Scaling the CE by T² would make the hard labels "
                   "weigh more whenever you raise T."),
    ],
    "ce": [
        ("T1", ""),
        ("atT", "the cross-entropy is computed at temperature T (on student_logits / T). The hard-label term uses "
                "T = 1, F.cross_entropy(student_logits, labels): the student must be right at the temperature it "
                "is used with."),
        ("probs", "F.cross_entropy was given probabilities, but it expects raw logits (it applies log_softmax "
                  "itself): F.cross_entropy(student_logits, labels)."),
    ],
    **_SOFT_MISTAKES,
}


def _distillation_case(seed: int, batch: int, classes: int, temperature: float, alpha_kd: float) -> dict[str, Any]:
    case = _soft_case(seed, batch, classes, temperature)
    gen = torch.Generator().manual_seed(seed + 2)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    return {
        "student_logits": case["student_logits"],
        "teacher_logits": case["teacher_logits"],
        "labels": labels,
        "temperature": temperature,
        "alpha_kd": alpha_kd,
    }


def _distillation_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    z, v, y, t, a = (case[k] for k in ("student_logits", "teacher_logits", "labels", "temperature", "alpha_kd"))
    ce_input = {"T1": z, "atT": z / t, "probs": torch.softmax(z, -1)}[choice["ce"]]
    ce = F.cross_entropy(ce_input, y)
    kd = _soft_variant(z, v, t, choice)
    w_ce, w_kd = {"kd": (1 - a, a), "ce": (a, 1 - a), "no_ce_weight": (1.0, a),
                  "t2_all": ((1 - a) * t * t, a)}[choice["weights"]]
    return w_ce * ce + w_kd * kd


def _distillation_reference(case: Case) -> torch.Tensor:
    return losses.distillation_loss(
        case["student_logits"], case["teacher_logits"], case["labels"], case["temperature"], case["alpha_kd"]
    ).loss


def _loss_output(out: Any, name: str) -> torch.Tensor:
    """Accept a tensor, or a result with a ``.loss`` tensor (like :class:`course_utils.kd.losses.DistillationLoss`)."""
    if not isinstance(out, torch.Tensor) and isinstance(getattr(out, "loss", None), torch.Tensor):
        out = out.loss
    return as_tensor_output(out, name, "loss")


@checker
def check_distillation_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``distillation_loss(student_logits, teacher_logits, labels, temperature, alpha_kd)``.

    Expected function:
        ``distillation_loss(student_logits: Tensor (B, C), teacher_logits: Tensor (B, C), labels: LongTensor (B,),
        temperature: float, alpha_kd: float) -> Tensor ()`` =
        ``(1 − alpha_kd) · F.cross_entropy(z, y) + alpha_kd · T² · KL(p ‖ q)`` (KL with batchmean; CE at T = 1).
        A result with a ``.loss`` attribute (like :func:`course_utils.kd.losses.distillation_loss`'s) is accepted.

    Diagnoses (alone or two at a time): alpha_kd on the wrong term (alpha weighting CE), CE not weighted by
    (1 − alpha_kd), T² on the CE term too, CE computed at temperature T, probabilities given to cross_entropy,
    ``log(softmax(...))`` in either term (inf/NaN for a very confident student or teacher), and every soft-loss
    mistake of :func:`check_soft_target_loss` (missing T², T instead of T², mean/sum reduction, reverse KL,
    F.kl_div given probabilities, T missing on either side, softmax twice); not differentiable. When nothing
    known matches, says whether the CE part (alpha_kd = 0) or the KD part (alpha_kd = 1) is off.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "distillation_loss")
    cases: list[Case] = [
        _distillation_case(40, 4, 7, 2.0, 0.3),
        _distillation_case(43, 5, 3, 4.0, 0.8),
        _distillation_case(46, 4, 6, 1.5, 0.0),
        _distillation_case(49, 3, 5, 3.0, 1.0),
    ]
    outputs, bad = run_cases(fn, cases, _distillation_reference, convert=_loss_output)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _distillation_variant, _DISTILLATION_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        out = outputs[bad]
        if out.dim() != 0:
            _loss_fallback(name, cases[bad], out, _distillation_reference(cases[bad]), "the loss")
        parts = []
        for i, part, what in ((2, "CE", "F.cross_entropy(student_logits, labels)"),
                              (3, "KD", "T² · KL(p ‖ q) with batchmean")):
            if i < len(outputs) and not close(outputs[i], _distillation_reference(cases[i])):
                parts.append(f"at alpha_kd = {cases[i]['alpha_kd']:g} the loss is the {part} term alone, {what} = "
                             f"{fmt(_distillation_reference(cases[i]))}, but you return {fmt(outputs[i])}")
        detail = ("; ".join(parts) + ". Fix that term first.") if parts else (
            "both terms are right on their own (alpha_kd = 0 and 1), so the weighting is off: "
            "(1 − alpha_kd)·CE + alpha_kd·KD.")
        fail(f"`{name}` returns {fmt(out)} for T = {cases[bad]['temperature']:g}, alpha_kd = "
             f"{cases[bad]['alpha_kd']:g}, expected {fmt(_distillation_reference(cases[bad]))}: {detail}")
    _check_student_gradient(fn, name, cases[0], _distillation_reference)
    _check_confident_models(fn, name, _distillation_reference, alpha_kd=0.5, convert=_loss_output)
    return passed(
        f"`{name}` is correct: (1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q) for alpha_kd ∈ {{0, 0.3, 0.8, 1}} and "
        "T ∈ {1.5, 2, 3, 4}, differentiable w.r.t. the student's logits, and finite for a very confident student "
        "or teacher."
    )
