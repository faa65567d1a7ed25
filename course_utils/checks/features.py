"""Checkers for notebook 04 (feature distillation): the FitNets projection + hint loss, and the layer mapping.

==========================================================================  ===================================
exercise                                                                    checker
==========================================================================  ===================================
``make_hint_projection(student_width, teacher_width) -> nn.Module`` and     :func:`check_hint_loss`
``hint_loss(student_hidden, teacher_hidden, projection, attention_mask)``:
mean of (projection(h_s) − h_t)² over the real tokens and the features
``map_layers(n_student, n_teacher, strategy="uniform",                      :func:`check_layer_mapping`
include_embeddings=False) -> [(student, teacher), …]``
==========================================================================  ===================================

References: :func:`course_utils.kd.features.hint_loss`, :func:`course_utils.kd.features.make_projection` and
:func:`course_utils.kd.features.layer_map`.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..kd import features
from ._core import (
    Case,
    CheckFailed,
    Dimensions,
    call_learner,
    checker,
    close,
    fail,
    find_mistakes,
    fmt,
    mistakes_message,
    passed,
    require_callable,
    seeded_randn,
)

__all__ = ["check_hint_loss", "check_layer_mapping"]


# ============================================================================================ hint loss
def _projection(s: int, t: int, seed: int) -> nn.Linear:
    return features.make_projection(s, t, seed=seed)  # type: ignore[return-value]


def _mask(batch: int, seq: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, seq + 1, (batch,), generator=gen)
    lengths[0] = seq  # one full row, the others padded
    return (torch.arange(seq)[None, :] < lengths[:, None]).long()


def _hint_case(batch: int, seq: int, s: int, t: int, seed: int) -> Case:
    return {
        "student_hidden": seeded_randn(batch, seq, s, seed=seed),
        # the teacher's features sit away from the projected student's, so every mistake changes the number visibly
        "teacher_hidden": seeded_randn(batch, seq, t, seed=seed + 1, scale=1.5) + 0.5,
        "projection": _projection(s, t, seed=seed + 2),
        "attention_mask": _mask(batch, seq, seed + 3),
    }


_HINT_MISTAKES: Dimensions = {
    "positions": [
        ("real", ""),
        ("all", "padding positions are included in the average: tokens with attention_mask == 0 are not text, and "
                "their hidden states are whatever the model computes for [PAD]. Average over the real tokens only: "
                "select the positions where attention_mask is 1 (a boolean mask) before taking the mean."),
        ("zeroed", "you zeroed the padding positions but still divided by all B·S·H entries, so the loss shrinks "
                   "with the amount of padding in the batch. Divide by (number of real tokens) × H, or select the real "
                   "positions with a boolean mask before taking the mean."),
    ],
    "reduction": [
        ("mean", ""),
        ("sum", "you sum the squared errors instead of averaging them, so the loss grows with the batch, the "
                "sequence length and the width; the course's hint loss is a mean (as F.mse_loss)."),
        ("feature_sum", "you sum over the features and average over the tokens (‖·‖² per token): the course's "
                        "hint loss averages over the features too (as F.mse_loss), so its scale does not depend on "
                        "the teacher's width."),
        ("half", "you multiplied by ½ (FitNets write ½‖·‖²); the course's hint loss is the plain mean squared error, "
                 "as F.mse_loss — drop the ½."),
    ],
    "distance": [
        ("square", ""),
        ("abs", "you average absolute differences (L1); the hint loss squares them: (projection(h_s) − h_t)²."),
        ("rmse", "you took a square root (RMSE); the hint loss is the mean of the squared differences, no root."),
    ],
}


def _hint_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    p = case["projection"](case["student_hidden"])
    diff = p - case["teacher_hidden"]
    err = diff.abs() if choice["distance"] == "abs" else diff.pow(2)
    mask = case["attention_mask"].bool()
    width = err.shape[-1]
    if choice["positions"] == "real":
        values, count = err[mask], int(mask.sum()) * width
    elif choice["positions"] == "all":
        values, count = err, err.numel()
    else:  # zeroed padding, divided by everything
        values, count = err * mask[..., None], err.numel()
    total = values.sum()
    if choice["reduction"] == "sum":
        out = total
    elif choice["reduction"] == "feature_sum":
        out = total / (count / width)
    else:
        out = total / count
        if choice["reduction"] == "half":
            out = out / 2
    return out.sqrt() if choice["distance"] == "rmse" else out


def _hint_reference(case: Case) -> torch.Tensor:
    return features.hint_loss(case["student_hidden"], case["teacher_hidden"], case["projection"],
                              case["attention_mask"])


def _check_projection_factory(make: Callable[..., Any], name: str) -> None:
    s, t = 6, 10
    module = call_learner(make, {"student_width": s, "teacher_width": t})
    if module is None:
        fail(f"`{name}` returned None — did you forget the `return`? Return the projection module, e.g. "
             "nn.Linear(student_width, teacher_width).")
    if isinstance(module, torch.Tensor):
        fail(f"`{name}` returns a tensor (a fixed matrix); return a module with learnable weights, "
             "nn.Linear(student_width, teacher_width), so the optimizer can train it with the student.")
    if not isinstance(module, nn.Module):
        fail(f"`{name}` returns a {type(module).__name__}; it must return an nn.Module such as "
             "nn.Linear(student_width, teacher_width).")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        fail(f"`{name}` returns a {type(module).__name__} without trainable parameters: the projection is *learned* "
             "(FitNets' regressor), trained together with the student. Use nn.Linear(student_width, teacher_width).")
    x = seeded_randn(2, 3, s, seed=5)
    try:
        with torch.no_grad():
            y = module(x)
    except RuntimeError as err:
        weight = getattr(module, "weight", None)
        swapped = isinstance(weight, torch.Tensor) and tuple(weight.shape) == (s, t)
        hint = (f" Your layer maps {t} → {s}: nn.Linear(in, out) takes the *student's* width first — "
                "nn.Linear(student_width, teacher_width)." if swapped else
                " It must accept student features (…, student_width).")
        fail(f"`{name}({s}, {t})` cannot be applied to student features of shape (2, 3, {s}) ({err}).{hint}")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, 3, t):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        fail(f"`{name}({s}, {t})` maps student features (2, 3, {s}) to {shape}; it must produce the teacher's width: "
             f"(2, 3, {t}).")


def _loss_value(out: Any, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        if out.dim() != 0:
            fail(f"`{name}` returns a tensor of shape {tuple(out.shape)}; the hint loss is one number (shape ()): "
                 "average the squared errors over the real tokens and the features.")
        return out.detach()
    if out is None:
        fail(f"`{name}` returned None — did you forget the `return` statement?")
    if isinstance(out, (float, int)):
        fail(f"`{name}` returned a Python {type(out).__name__} ({out!r}); return the loss tensor itself (no .item()), "
             "the optimizer needs its gradient.")
    fail(f"`{name}` returned a {type(out).__name__}; the loss must be a torch.Tensor.")


@checker
def check_hint_loss(hint_loss: Callable[..., Any], make_hint_projection: Callable[..., Any] | None = None) -> bool:
    """Check the FitNets/TinyBERT hint loss (and, if given, the projection factory) of notebook 04.

    Expected functions:
        ``make_hint_projection(student_width, teacher_width) -> nn.Module``: a learnable map (…, H_s) → (…, H_t),
        e.g. ``nn.Linear(student_width, teacher_width)``.

        ``hint_loss(student_hidden (B, S, H_s), teacher_hidden (B, S, H_t), projection, attention_mask (B, S))
        -> Tensor ()``: mean of (projection(student_hidden) − teacher_hidden)² over the real tokens
        (``attention_mask == 1``) and the features; gradients reach the student and the projection, never the
        teacher. Reference: :func:`course_utils.kd.features.hint_loss`.

    Diagnoses: a projection that is not a module, has nothing to train, maps the wrong way or to the wrong width;
    padding included in the average or zeroed but still counted, sum instead of mean, sum over features, a ½ factor,
    L1 or RMSE instead of the squared error (alone or two at a time); a non-scalar result; no gradient to the
    student or the projection; gradients flowing into the teacher's features.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if given something that is not a function.
    """
    name = require_callable(hint_loss, "hint_loss")
    if make_hint_projection is not None:
        _check_projection_factory(make_hint_projection, require_callable(make_hint_projection, "make_hint_projection"))
    cases = [_hint_case(3, 7, 4, 6, seed=40), _hint_case(4, 5, 3, 8, seed=41), _hint_case(2, 6, 5, 5, seed=42)]
    outputs: list[torch.Tensor] = []
    bad: int | None = None
    for i, case in enumerate(cases):
        quiet = contextlib.redirect_stdout(io.StringIO()) if bad is not None else contextlib.nullcontext()
        try:
            with quiet:
                out = _loss_value(call_learner(hint_loss, case), name)
        except CheckFailed:
            if bad is None:
                raise
            break
        outputs.append(out)
        if bad is None and not close(out, _hint_reference(case)):
            bad = i
    if bad is not None:
        diagnoses = find_mistakes(cases, outputs, bad, _hint_variant, _HINT_MISTAKES)
        if diagnoses:
            fail(mistakes_message(name, diagnoses))
        case = cases[bad]
        expected = _hint_reference(case).detach()
        fail(f"`{name}` returns {fmt(outputs[bad])}, expected {fmt(expected)} (mean of (projection(h_s) − h_t)² over "
             f"the real tokens and the features; student {tuple(case['student_hidden'].shape)}, teacher "
             f"{tuple(case['teacher_hidden'].shape)}, {int(case['attention_mask'].sum())} real tokens). Compute it step "
             "by step: project the student's states, square their difference to the teacher's, keep the real "
             "positions (attention_mask == 1) and average over them and the features.")
    _check_hint_gradients(hint_loss, name, cases[0])
    return passed(
        f"`{name}` is correct: the mean squared error between the projected student features and the teacher's, over "
        "the real tokens only, for three shapes (including equal widths); gradients reach the student and the "
        "projection, never the teacher" + (", and the projection maps the student's width to the teacher's."
                                           if make_hint_projection is not None else ".")
    )


def _check_hint_gradients(fn: Callable[..., Any], name: str, case: Case) -> None:
    student = case["student_hidden"].clone().requires_grad_()
    teacher = case["teacher_hidden"].clone().requires_grad_()
    projection = case["projection"]
    projection.zero_grad(set_to_none=True)
    args = dict(case, student_hidden=student, teacher_hidden=teacher)
    with torch.enable_grad():
        out = call_learner(fn, args)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            fail(f"`{name}` gives the right value but its result has no gradient: don't compute it under "
                 "torch.no_grad() or with .detach()/.item() on the student's side — the student and the projection "
                 "learn from this loss.")
        out.backward()
    if student.grad is None or float(student.grad.abs().sum()) == 0.0:
        fail(f"`{name}` gives the right value, but no gradient reaches student_hidden: the student's features are "
             "detached somewhere. Only the teacher's features are a fixed target.")
    if projection.weight.grad is None:
        fail(f"`{name}` gives the right value, but no gradient reaches the projection's weights, so it would never "
             "learn: apply `projection` to the student's features inside the loss (not under torch.no_grad()).")
    if teacher.grad is not None and float(teacher.grad.abs().sum()) > 0:
        fail(f"`{name}` gives the right value, but gradients flow into teacher_hidden: the teacher is a fixed target. "
             "Use teacher_hidden.detach() (its features come from a frozen model under torch.no_grad() anyway, but "
             "the loss should not rely on that).")


# ========================================================================================== layer mapping
def _pairs(out: Any, name: str, where: str) -> list[tuple[int, int]]:
    if out is None:
        fail(f"`{name}` returned None {where} — did you forget the `return`?")
    if isinstance(out, (str, bytes)) or not hasattr(out, "__iter__"):
        fail(f"`{name}` returned a {type(out).__name__} {where}; return a list of (student_layer, teacher_layer) pairs.")
    items = list(out)
    if items and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        fail(f"`{name}` returns a list of single numbers {where} ({items}); return (student_layer, teacher_layer) "
             "*pairs*, e.g. [(1, 2), (2, 4), (3, 6)], so the trainer knows which student layer imitates which.")
    pairs = []
    for x in items:
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            fail(f"`{name}` returns {items!r} {where}; every entry must be a (student_layer, teacher_layer) pair.")
        for v in x:
            if isinstance(v, float):
                fail(f"`{name}` returns float layer indices {where} ({items}): layers are numbered by integers. Use "
                     "integer division, m * n_teacher // n_student, not /.")
            if isinstance(v, bool) or not isinstance(v, int):
                try:
                    v = int(v)
                except (TypeError, ValueError):
                    fail(f"`{name}` returns {items!r} {where}; the layer indices must be integers.")
        pairs.append((int(x[0]), int(x[1])))
    return pairs


def _expected_pairs(m: int, n: int, strategy: str, emb: bool) -> list[tuple[int, int]]:
    return features.layer_map(m, n, strategy, include_embeddings=emb)


_MAP_CASES = [(3, 6, "uniform", False), (3, 6, "uniform", True), (4, 12, "uniform", False), (2, 6, "uniform", True),
              (6, 6, "uniform", False), (1, 4, "uniform", False),
              (3, 6, "last", False), (2, 6, "last", True), (4, 12, "last", False)]


def _map_diagnosis(got: list[tuple[int, int]], m: int, n: int, strategy: str, emb: bool) -> str | None:
    expected = _expected_pairs(m, n, strategy, emb)
    body = [p for p in got if p != (0, 0)] if emb else got
    exp_body = [p for p in expected if p != (0, 0)]
    other = "last" if strategy == "uniform" else "uniform"
    if emb and (0, 0) not in got:
        return ("with include_embeddings=True the embedding outputs must be matched too: put (0, 0) first "
                "(hidden_states[0] is the embedding layer's output in both models).")
    if not emb and (0, 0) in got:
        return "(0, 0) — the embeddings — belongs in the list only when include_embeddings=True."
    if emb and got and got[0] != (0, 0):
        return "put (0, 0) first: the pairs are listed from the bottom (embeddings) to the top layer."
    if len(body) != m:
        return (f"the student has {m} layers, so there must be {m} pairs (one per student layer 1…{m}), "
                f"plus (0, 0) with include_embeddings=True; you return {len(body)}.")
    if [s for s, _ in body] == list(range(m)):
        return ("the student's layers are numbered 0…M−1, but in hidden_states indexing 0 is the embedding output and "
                "layer i is index i: student layers are 1…M.")
    if [s for s, _ in body] != list(range(1, m + 1)):
        return f"the student indices should be 1…{m} in order, got {[s for s, _ in body]}."
    teachers = [t for _, t in body]
    if body == [p for p in _expected_pairs(m, n, other, False)] and body != exp_body:
        return f"that is the {other!r} mapping; for strategy={strategy!r} " + (
            "spread the student layers evenly: teacher layer m·N/M for student layer m." if strategy == "uniform"
            else "take the last M teacher layers: teacher layer N − M + m for student layer m.")
    if teachers == [t - 1 for _, t in exp_body]:
        return ("every teacher index is one too small: hidden_states[0] is the embeddings, so the output of teacher "
                "layer k is index k — don't subtract 1 (the last student layer must meet index N, the top layer).")
    if strategy == "uniform" and teachers == [(i * n) // m for i in range(m)]:
        return ("you used m = 0…M−1 in m·N/M, so the first student layer is matched with the embeddings and the last "
                "one never meets the teacher's top layer. Use m = 1…M: teacher layer m·N/M.")
    if strategy == "uniform" and teachers == [i * (n // m) - 1 for i in range(1, m + 1)]:
        return "every teacher index is one too small: don't subtract 1, hidden_states[k] is already teacher layer k."
    return None


@checker
def check_layer_mapping(fn: Callable[..., Any]) -> bool:
    """Check ``map_layers(n_student, n_teacher, strategy="uniform", include_embeddings=False)`` of notebook 04.

    Expected: a list of ``(student_layer, teacher_layer)`` pairs in ``hidden_states`` indexing (0 = embeddings,
    i = layer i), student layers 1…M in order: ``"uniform"`` → teacher layer m·N/M (integer division); ``"last"`` →
    N − M + m; ``(0, 0)`` first when ``include_embeddings``; a ``ValueError`` when the student has more layers than
    the teacher. Reference: :func:`course_utils.kd.features.layer_map`.

    Diagnoses: single numbers instead of pairs, float indices, 0-based student layers, teacher indices one too small,
    m = 0…M−1 in the uniform formula, the two strategies swapped, the embedding pair missing / misplaced / present
    when not asked for, the wrong number of pairs, no error for a student deeper than the teacher.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    name = require_callable(fn, "map_layers")
    for m, n, strategy, emb in _MAP_CASES:
        args = {"n_student": m, "n_teacher": n, "strategy": strategy, "include_embeddings": emb}
        where = f"for map_layers({m}, {n}, strategy={strategy!r}, include_embeddings={emb})"
        got = _pairs(call_learner(fn, args), name, where)
        expected = _expected_pairs(m, n, strategy, emb)
        if got != expected:
            why = _map_diagnosis(got, m, n, strategy, emb)
            fail(f"`{name}` returns {got} {where}, expected {expected}" + (f": {why}" if why else "."))
    try:
        fn(5, 3, "uniform", False)
    except NotImplementedError:
        fail(f"`{name}` is not implemented yet.")
    except ValueError:
        pass
    except Exception as err:  # noqa: BLE001 - the learner's code
        fail(f"`{name}(5, 3)` raised {type(err).__name__}: {err} — a student deeper than the teacher should raise a "
             "ValueError that says so (raise ValueError(...) before computing the pairs).", cause=err)
    else:
        fail(f"`{name}(5, 3)` — a 5-layer student, a 3-layer teacher — returns a mapping instead of raising ValueError: "
             "with more student than teacher layers several student layers would imitate the same teacher layer. "
             "Check n_student <= n_teacher first and raise ValueError with a clear message.")
    return passed(
        f"`{name}` is correct: 'uniform' (m·N/M) and 'last' (N − M + m) mappings for 6-, 4- and 12-layer teachers, with "
        "and without the embeddings, and a ValueError for a student deeper than its teacher."
    )
