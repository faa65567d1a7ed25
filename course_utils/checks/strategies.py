"""Checkers for notebook 07 (distillation beyond one teacher): ensemble soft targets and a deep-mutual-learning step.

======================================================================  ========================================
exercise                                                                checker
======================================================================  ========================================
``ensemble_soft_targets(teacher_logits (K, N, C), temperature,          :func:`check_ensemble_soft_targets`
method) -> (N, C)``, method ``"mean_probs"`` or ``"mean_logits"``
``mutual_learning_losses(logits_a (B, C), logits_b (B, C),              :func:`check_mutual_learning_losses`
labels (B,), temperature, alpha_kd) -> (loss_a, loss_b)``
======================================================================  ========================================

References: :func:`course_utils.kd.ensembles.ensemble_soft_targets` and
:func:`course_utils.kd.ensembles.mutual_learning_losses`. Conventions as in :mod:`course_utils.kd.losses`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..kd import ensembles
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
from .basics import CONFIDENT_LOGITS, MILD_LOGITS, TOP_LABELS, log_of_softmax_message

__all__ = ["check_ensemble_soft_targets", "check_mutual_learning_losses"]


# ===================================================================================== ensemble soft targets
_ENSEMBLE_MISTAKES: Dimensions = {
    "combine": [
        ("right", ""),
        ("swapped", "the two methods are swapped: 'mean_probs' averages the teachers' *probabilities* "
                    "(softmax(v_k / T) for each teacher, then the mean over teachers), 'mean_logits' averages the "
                    "*logits* first and applies a single softmax to the mean."),
        ("sum", "you summed over the teachers instead of averaging: with 'mean_probs' each row then sums to K, "
                "with 'mean_logits' the targets are K times sharper. Use .mean(dim=0)."),
        ("no_softmax", "you return averaged (scaled) logits, not probabilities: soft targets are distributions "
                       "whose rows sum to 1 — apply the softmax (to each teacher for 'mean_probs', to the mean "
                       "for 'mean_logits')."),
        ("double", "the result went through softmax twice, which flattens it towards uniform (every row ≈ 1/C): "
                   "a softmax of numbers that are already probabilities. Apply exactly one softmax."),
    ],
    "temperature": [
        ("divide", ""),
        ("ignore", "the temperature is ignored: your targets do not change with T. Divide every teacher's logits "
                   "by T before the softmax."),
        ("multiply", "the temperature multiplies the logits (v · T), which sharpens for T > 1 instead of "
                     "softening. Divide: v / T."),
        ("after", "you averaged the teachers' T = 1 probabilities and softened the *mixture* afterwards, "
                  "softmax(log(mean p_k) / T). That is a different distribution: apply T to each teacher's logits "
                  "first, then average softmax(v_k / T)."),
    ],
    "teacher_axis": [
        (0, ""),
        (1, "you averaged over the examples (dim 1) instead of over the teachers: teacher_logits has shape "
            "(K, N, C), teachers first, so the mean is over dim 0 — the result must have one row per example."),
    ],
    "softmax_axis": [
        (-1, ""),
        (0, "the softmax normalises over the wrong axis (dim 0): distributions are over the classes, the last "
            "axis — use dim=-1."),
    ],
}


def _ensemble_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    v, t, method = case["teacher_logits"], case["temperature"], case["method"]
    if choice["combine"] == "swapped":
        method = "mean_logits" if method == "mean_probs" else "mean_probs"
    scaled = {"divide": v / t, "ignore": v, "multiply": v * t, "after": v}[choice["temperature"]]
    axis, sm_axis = choice["teacher_axis"], choice["softmax_axis"]

    def reduce(x: torch.Tensor) -> torch.Tensor:
        return x.sum(axis) if choice["combine"] == "sum" else x.mean(axis)

    if choice["combine"] == "no_softmax":
        return reduce(scaled)
    if method == "mean_probs":
        out = reduce(torch.softmax(scaled, dim=sm_axis))
        if choice["temperature"] == "after":
            out = torch.softmax(out.log() / t, dim=-1)
    else:
        mean = reduce(scaled)
        out = torch.softmax(mean / t if choice["temperature"] == "after" else mean, dim=sm_axis)
    if choice["combine"] == "double":
        out = torch.softmax(out, dim=-1)
    return out


def _ensemble_reference(case: Case) -> torch.Tensor:
    return ensembles.ensemble_soft_targets(case["teacher_logits"], case["temperature"], case["method"])


def _ensemble_cases() -> list[Case]:
    cases: list[Case] = []
    for seed, (k, n, c), t in ((0, (3, 4, 5), 1.0), (1, (3, 4, 5), 2.5), (2, (2, 6, 3), 4.0)):
        logits = seeded_randn(k, n, c, seed=seed, scale=3.0)
        for method in ("mean_probs", "mean_logits"):
            cases.append({"teacher_logits": logits, "temperature": t, "method": method})
    cases.append({"teacher_logits": seeded_randn(1, 2, 4, seed=3, scale=3.0), "temperature": 2.0,
                  "method": "mean_probs"})
    return cases


@checker
def check_ensemble_soft_targets(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``ensemble_soft_targets(teacher_logits, temperature, method)``.

    Expected function:
        ``ensemble_soft_targets(teacher_logits: Tensor (K, N, C), temperature: float, method: str) -> Tensor (N, C)``
        — ``"mean_probs"``: ``softmax(v / T, dim=-1).mean(dim=0)``; ``"mean_logits"``:
        ``softmax(v.mean(dim=0) / T, dim=-1)``. Rows of the result sum to 1.

    Diagnoses (alone or two at a time): methods swapped, sum instead of mean over teachers, averaged logits
    returned (no softmax), softmax applied twice, temperature ignored / multiplied / applied after averaging the
    probabilities, mean over the examples instead of the teachers, softmax over the wrong axis, input modified in
    place, wrong shape, rows not summing to 1; an unknown method not rejected (any exception but NotImplementedError
    counts as rejecting it; a ValueError naming it is best).

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis (also printed after "✘").
        TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "ensemble_soft_targets")
    cases = _ensemble_cases()
    outputs, bad = run_cases(fn, cases, _ensemble_reference)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _ensemble_variant, _ENSEMBLE_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        case, out = cases[bad], outputs[bad]
        k, n, c = case["teacher_logits"].shape
        where = (f"for teacher_logits of shape ({k}, {n}, {c}) — {k} teachers, {n} examples, {c} classes — "
                 f"T = {case['temperature']:g} and method={case['method']!r}")
        if tuple(out.shape) != (n, c):
            fail(f"`{name}` returns shape {tuple(out.shape)} {where}; expected ({n}, {c}): one distribution per "
                 "example, after combining the teachers (dim 0).")
        sums = out.sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            fail(f"`{name}`: {where} your rows sum to {fmt(sums, 3)}; soft targets are distributions over the "
                 "classes, so every row must sum to 1.")
        fail(f"`{name}` gives wrong targets {where}: expected {fmt(_ensemble_reference(case))}, got {fmt(out)}.")
    _check_unknown_method(fn, name)
    return passed(
        f"`{name}` is correct: 'mean_probs' = mean_k softmax(v_k / T) and 'mean_logits' = softmax(mean_k v_k / T) "
        "for 1 to 3 teachers and T ∈ {1, 2, 2.5, 4}, and an unknown method is rejected."
    )


def _check_unknown_method(fn: Callable[..., torch.Tensor], name: str) -> None:
    """A misspelt method must raise, not silently fall back to one of the two."""
    case = {"teacher_logits": seeded_randn(2, 3, 4, seed=7, scale=3.0), "temperature": 2.0, "method": "mean_prob"}
    try:
        with torch.no_grad():
            out = fn(*case.values())
    except NotImplementedError:
        fail(f"`{name}` raises NotImplementedError for method='mean_prob' (a typo): raise a ValueError that names "
             "the unknown method and the two valid ones instead — NotImplementedError says the exercise is unsolved.")
    except Exception:  # noqa: BLE001 - rejected (a ValueError says it best, but any error stops the typo)
        return
    what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
    fail(f"`{name}` returns {what} for method='mean_prob' (a typo for 'mean_probs') instead of rejecting it: an "
         "unknown method must raise a ValueError that names it and the valid ones, otherwise a typo silently "
         "trains the student on the other method's targets.")


# ================================================================================== deep mutual learning step
_DML_MISTAKES: Dimensions = {
    "target": [
        ("peer", ""),
        ("self", "each student's KD term uses its *own* predictions as the target, KL(q_a ‖ q_a) = 0, so the "
                 "students never learn from each other: loss_a's target is softmax(logits_b / T), loss_b's is "
                 "softmax(logits_a / T)."),
        ("copy", "loss_b is the same as loss_a: swap the roles for student b — its CE uses logits_b and its KD "
                 "term pulls softmax(logits_b / T) towards softmax(logits_a / T)."),
    ],
    "weights": [
        ("kd", ""),
        ("ce", "alpha_kd is on the wrong term: you computed alpha_kd·CE + (1 − alpha_kd)·KD. In this course "
               "alpha_kd weights the KD term: (1 − alpha_kd)·CE + alpha_kd·T²·KL(p_peer ‖ q_self)."),
        ("no_ce_weight", "the CE term is not weighted: the loss is (1 − alpha_kd)·CE + alpha_kd·T²·KL, not "
                         "CE + alpha_kd·T²·KL."),
    ],
    "direction": [
        ("forward", ""),
        ("reverse", "the KL is reversed: you computed KL(q_self ‖ p_peer). As in ordinary KD the target (here the "
                    "peer) is the reference distribution: KL(p_peer ‖ q_self) — F.kl_div(log q_self, p_peer)."),
    ],
    "scale": [
        ("T2", ""),
        ("none", "the T² factor is missing on the KD term (it is T² times too small): multiply the KL by "
                 "temperature ** 2, as in every KD loss of the course."),
    ],
    "ce": [
        ("T1", ""),
        ("atT", "the cross-entropy is computed at temperature T: the hard-label term uses the raw logits, "
                "F.cross_entropy(logits_a, labels)."),
    ],
    "reduction": [
        ("batchmean", ""),
        ("mean", "the KL is averaged over the classes too (reduction='mean'), which makes it C times too small: "
                 "sum over classes, average over the batch — reduction='batchmean'."),
    ],
}


def _dml_one(z_self: torch.Tensor, z_peer: torch.Tensor, y: torch.Tensor, t: float, a: float,
             choice: Mapping[str, Any]) -> torch.Tensor:
    target = z_self if choice["target"] == "self" else z_peer
    log_q = F.log_softmax(z_self / t, dim=-1)
    log_p = F.log_softmax(target / t, dim=-1)
    if choice["direction"] == "forward":
        per_row = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        per_row = (log_q.exp() * (log_q - log_p)).sum(-1)
    kl = per_row.mean() / (z_self.shape[-1] if choice["reduction"] == "mean" else 1)
    kd = kl * (t * t if choice["scale"] == "T2" else 1.0)
    ce = F.cross_entropy(z_self / t if choice["ce"] == "atT" else z_self, y)
    w_ce, w_kd = {"kd": (1 - a, a), "ce": (a, 1 - a), "no_ce_weight": (1.0, a)}[choice["weights"]]
    return w_ce * ce + w_kd * kd


def _dml_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    za, zb, y, t, a = (case[k] for k in ("logits_a", "logits_b", "labels", "temperature", "alpha_kd"))
    loss_a = _dml_one(za, zb, y, t, a, choice)
    loss_b = loss_a if choice["target"] == "copy" else _dml_one(zb, za, y, t, a, choice)
    return torch.stack([loss_a, loss_b])


def _dml_reference(case: Case) -> torch.Tensor:
    za, zb, y, t, a = (case[k] for k in ("logits_a", "logits_b", "labels", "temperature", "alpha_kd"))
    return torch.stack(ensembles.mutual_learning_losses([za, zb], y, temperature=t, alpha_kd=a)).detach()


def _pair_output(out: Any, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor) or not isinstance(out, (tuple, list)):
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        fail(f"`{name}` returned {what}; return the two students' losses as a pair: `return loss_a, loss_b`.")
    if len(out) != 2:
        fail(f"`{name}` returned {len(out)} values; return exactly two, `loss_a, loss_b`.")
    losses = [as_tensor_output(x, name, "loss") for x in out]
    for which, loss in zip("ab", losses):
        if loss.dim() != 0:
            fail(f"`{name}`: loss_{which} has shape {tuple(loss.shape)}, but each loss must be a single number "
                 "(average over the batch, sum over the classes).")
    return torch.stack(losses)


def _dml_cases() -> list[Case]:
    cases = []
    for seed, (b, c), t, a in ((0, (6, 4), 1.0, 0.5), (1, (6, 4), 3.0, 0.5), (2, (5, 3), 2.0, 0.8),
                               (3, (8, 5), 4.0, 0.3), (4, (4, 6), 2.0, 0.0), (5, (4, 6), 2.0, 1.0)):
        gen = torch.Generator().manual_seed(100 + seed)
        cases.append({"logits_a": seeded_randn(b, c, seed=seed, scale=2.0),
                      "logits_b": seeded_randn(b, c, seed=seed + 50, scale=2.0),
                      "labels": torch.randint(0, c, (b,), generator=gen), "temperature": t, "alpha_kd": a})
    return cases


@checker
def check_mutual_learning_losses(fn: Callable[..., Any]) -> bool:
    """Check ``mutual_learning_losses(logits_a, logits_b, labels, temperature, alpha_kd)`` for two students.

    Expected function:
        ``mutual_learning_losses(logits_a: Tensor (B, C), logits_b: Tensor (B, C), labels: Tensor (B,),
        temperature: float, alpha_kd: float) -> (loss_a, loss_b)`` with
        ``loss_a = (1 − alpha_kd)·CE(z_a, y) + alpha_kd·T²·KL(softmax(z_b / T) ‖ softmax(z_a / T))`` (batchmean),
        ``loss_b`` the same with the roles swapped, and each peer's logits **detached** in the other's loss.

    Diagnoses (alone or two at a time): own predictions as target, loss_b a copy of loss_a, alpha_kd on the CE term
    or CE unweighted, reversed KL, missing T², CE at temperature T, KL averaged over classes; then, on correct
    values: a peer that is not detached (gradients leak into the other student), a loss that is not differentiable
    w.r.t. its own student; ``log(softmax(...))`` on either side (inf/NaN for a very confident student); wrong return
    types.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis (also printed after "✘").
        TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "mutual_learning_losses")
    cases = _dml_cases()
    outputs, bad = run_cases(fn, cases, _dml_reference, convert=_pair_output)
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _dml_variant, _DML_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        case = cases[bad]
        fail(f"`{name}` returns (loss_a, loss_b) = {fmt(outputs[bad])} for T = {case['temperature']:g}, alpha_kd = "
             f"{case['alpha_kd']:g}, expected {fmt(_dml_reference(case))}. Each loss is (1 − alpha_kd)·CE(own "
             "logits, labels) + alpha_kd·T²·KL(peer ‖ self) at temperature T, batchmean.")
    with torch.enable_grad():  # the check cell might run inside torch.no_grad()
        _check_dml_gradients(fn, name, cases[1])
    _check_confident_students(fn, name)
    return passed(
        f"`{name}` is correct: each student gets (1 − alpha_kd)·CE + alpha_kd·T²·KL(peer ‖ self) with the peer "
        "detached, so one backward pass updates each student only from its own loss, and both losses stay finite "
        "for a very confident student."
    )


def _check_confident_students(fn: Callable[..., Any], name: str) -> None:
    """Student a very confident (logit gaps ~300, T = 2), student b mild: log(softmax(...)) is -inf/NaN in loss_a
    (a's own side) or in loss_b (a as the peer)."""
    case: Case = {"logits_a": CONFIDENT_LOGITS.clone(), "logits_b": MILD_LOGITS.clone(), "labels": TOP_LABELS.clone(),
                  "temperature": 2.0, "alpha_kd": 0.5}
    out = _pair_output(call_learner(fn, case), name)
    for i, side in ((0, "loss_a, where it is the student's own side"), (1, "loss_b, where it is the peer's side")):
        if not bool(torch.isfinite(out[i])):
            fail(log_of_softmax_message(name, f"{fmt(out[i])} as {('loss_a', 'loss_b')[i]}", "student a",
                                        f"logits ±150, T = 2, alpha_kd = 0.5: in {side}"))
    expected = _dml_reference(case)
    if not close(out, expected):
        fail(f"`{name}` returns (loss_a, loss_b) = {fmt(out)} for a very confident student a (logits ±150, T = 2), "
             f"expected {fmt(expected)}: compute every log-probability in one step (log-sum-exp), never as the log "
             "of probabilities.")


def _check_dml_gradients(fn: Callable[..., Any], name: str, case: Case) -> None:
    za = case["logits_a"].clone().requires_grad_(True)
    zb = case["logits_b"].clone().requires_grad_(True)
    out = call_learner(fn, dict(case, logits_a=za, logits_b=zb))
    losses = list(out)
    expected = ensembles.mutual_learning_losses([za, zb], case["labels"], case["temperature"], case["alpha_kd"])
    for which, loss, own, peer, ref in (("a", losses[0], za, zb, expected[0]), ("b", losses[1], zb, za, expected[1])):
        other = "b" if which == "a" else "a"
        if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
            fail(f"`{name}` gives the right values, but loss_{which} is not differentiable w.r.t. logits_{which} "
                 "(no gradient), so the student could not learn. Keep the student's own computation in torch "
                 "(no .item(), .detach() or torch.no_grad() on its side).")
        g_own, g_peer = torch.autograd.grad(loss, [own, peer], allow_unused=True, retain_graph=True)
        if g_peer is not None and float(g_peer.abs().max()) > 1e-8:
            fail(f"`{name}`: loss_{which} sends gradients into student {other}'s logits. In mutual learning the "
                 f"peer's prediction is a fixed target for this loss — use logits_{other}.detach() inside "
                 f"loss_{which}. Otherwise backward() on both losses also pushes student {other} towards student "
                 f"{which}, which is not what either loss says.")
        (g_ref,) = torch.autograd.grad(ref, own, retain_graph=True)
        if g_own is None or not close(g_own, g_ref):
            fail(f"`{name}` gives the right values but the wrong gradient of loss_{which} w.r.t. logits_{which}: part "
                 "of the student's own computation is detached. Only the peer may be detached.")
