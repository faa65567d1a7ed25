"""Distillation losses, with the course's conventions spelled out once.

Notation (Hinton et al. 2015, §2) and the code names used across the course:

=====================  =====================  ==================================================
maths                  code                   meaning
=====================  =====================  ==================================================
z                      ``student_logits``     student's raw scores, shape ``(..., C)``
v                      ``teacher_logits``     teacher's raw scores, shape ``(..., C)``
T                      ``temperature``        softening temperature, ``T > 0``
q = softmax(z / T)                            student distribution at temperature T
p = softmax(v / T)                            teacher distribution ("soft targets")
α                      ``alpha_kd``           weight of the KD term (the *other* seed convention
                                              weights the CE term; ``alpha_ce = 1 - alpha_kd``)
=====================  =====================  ==================================================

* The KD term is the **forward** KL, ``KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)``: the teacher is the
  reference distribution, so the student is pushed to cover everything the teacher finds plausible.
  ``direction="reverse"`` gives ``KL(q ‖ p)`` (mode-seeking), used by on-policy LLM distillation.
* It is averaged over *distributions* (``batchmean`` in ``F.kl_div`` terms): every leading position
  (batch, or batch × sequence) counts once; the class axis is summed, never averaged.
* It is multiplied by ``T²`` so its gradient keeps the same scale as the CE term's when T changes
  (∂/∂z of KL(p‖q) is (q − p)/T; see notebook 02).
* Combined: ``loss = (1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q)``.

Every public function validates its inputs and raises ``ValueError``/``TypeError`` explaining how to fix them.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['KL_DIRECTIONS', 'validate_temperature', 'validate_alpha_kd', 'validate_weight', 'validate_logits', 'temperature_softmax', 'temperature_log_softmax', 'entropy', 'kl_divergence', 'soft_target_gradient', 'soft_target_loss', 'DistillationLoss', 'distillation_loss']


# ----------------------------------------------------------------------------------------------- validation
def validate_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float after checking it is a finite number > 0.

    Raises:
        TypeError: if it is not a real number (a tensor with one element is accepted).
        ValueError: if it is ≤ 0, NaN or infinite.
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise TypeError(f"temperature must be a single number, got a tensor of shape {tuple(temperature.shape)}")
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature}. T = 1 is the plain softmax; "
            "T > 1 softens the distribution (typical KD values are 1–8); T → 0 approaches argmax."
        )
    return temperature


def validate_alpha_kd(alpha_kd: float) -> float:
    """Return ``alpha_kd`` as a float after checking ``0 ≤ alpha_kd ≤ 1``."""
    if isinstance(alpha_kd, bool) or not isinstance(alpha_kd, numbers.Real):
        raise TypeError(f"alpha_kd must be a real number in [0, 1], got {type(alpha_kd).__name__}")
    alpha_kd = float(alpha_kd)
    if not 0.0 <= alpha_kd <= 1.0:
        raise ValueError(
            f"alpha_kd must lie in [0, 1], got {alpha_kd}. It weights the KD term: "
            "loss = (1 - alpha_kd)·CE + alpha_kd·T²·KL (alpha_kd = 0: hard labels only, 1: soft targets only)."
        )
    return alpha_kd


def validate_weight(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number ≥ 0 (a loss term's weight); ``TypeError``/``ValueError`` naming
    ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number ≥ 0, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
    return value

KL_DIRECTIONS = ("forward", "reverse")


def validate_logits(logits: torch.Tensor, name: str = "logits", check_probabilities: bool = True) -> None:
    """Check that ``logits`` is a floating tensor of raw scores with a class axis last.

    Args:
        logits: shape ``(..., C)`` with ``C ≥ 2``.
        name: argument name used in error messages.
        check_probabilities: also reject tensors whose rows all look like probabilities (non-negative, each
            row summing to 1). Passing probabilities where logits are expected is the "double softmax" bug:
            softmax of probabilities is nearly uniform, so the student learns from almost nothing.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: fewer than 1 dimension, fewer than 2 classes, no distribution at all (an empty leading
            dimension), NaN/inf values, or probabilities.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}; wrap it with torch.as_tensor(...)")
    if not logits.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor of raw scores, got dtype {logits.dtype}. "
            "Integer class indices are labels, not logits; call .float() if these really are scores."
        )
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., C) with C ≥ 2 classes on the last axis, got {tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(
            f"{name} holds no distribution at all (shape {tuple(logits.shape)}); the mean over positions would be "
            "0/0 = NaN. Check the batch/sequence slicing upstream."
        )
    with torch.no_grad():
        finite = torch.isfinite(logits)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            kinds = []
            if bool(torch.isnan(logits).any()):
                kinds.append("NaN")
            if bool(torch.isinf(logits).any()):
                kinds.append("inf")
            raise ValueError(
                f"{name} contains {bad} non-finite value(s) ({'/'.join(kinds)}). Usually the model diverged "
                "(lower the learning rate, check for fp16 overflow) or an upstream division by zero; "
                "fix the source instead of masking it."
            )
        if check_probabilities:
            x = logits.detach().float()
            if bool((x >= 0).all()) and bool((x <= 1).all()) and torch.allclose(
                x.sum(-1), torch.ones_like(x[..., 0]), atol=1e-3
            ):
                raise ValueError(
                    f"{name} looks like probabilities (every row is non-negative and sums to 1), but raw logits "
                    "are expected. Pass the model's outputs *before* softmax; applying softmax again would flatten "
                    "the distribution (the 'double softmax' bug)."
                )


def _validate_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    validate_logits(student_logits, "student_logits")
    validate_logits(teacher_logits, "teacher_logits")
    s, t = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if s[-1] != t[-1]:
        raise ValueError(
            f"vocabulary/class size mismatch: student_logits have {s[-1]} classes, teacher_logits have {t[-1]}. "
            "Token-level KD needs one shared label space. For language models with different tokenizers use "
            "sequence-level KD (train on teacher-generated text) or a cross-tokenizer loss such as ULD "
            "(Boizard et al. 2024); for classifiers, make both heads predict the same labels in the same order."
        )
    if s != t:
        raise ValueError(
            f"shape mismatch: student_logits {s} vs teacher_logits {t}. Both must be (..., C) with identical "
            "leading dimensions (same batch, same sequence positions); check padding/truncation and batch order."
        )


def _validate_mask(mask: torch.Tensor | None, leading: tuple[int, ...]) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean torch.Tensor of shape {leading}, got {type(mask).__name__}")
    if tuple(mask.shape) != leading:
        raise ValueError(f"mask must have the logits' leading shape {leading} (one entry per distribution), "
                         f"got {tuple(mask.shape)}")
    mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("mask selects no position at all; the loss would be 0/0. Check the attention/label mask.")
    return mask


# ---------------------------------------------------------------------------------------- softmax with T
def temperature_softmax(logits: torch.Tensor, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """``softmax(logits / T)`` along ``dim``, numerically stable for any logit size.

    Args:
        logits: raw scores, any shape; the class axis is ``dim``.
        temperature: T > 0.
    Returns:
        Probabilities of the same shape as ``logits``, summing to 1 along ``dim``.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    temperature = validate_temperature(temperature)
    return torch.softmax(logits / temperature, dim=dim)


def temperature_log_softmax(logits: torch.Tensor, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    """``log_softmax(logits / T)`` along ``dim`` (use it, not ``log(softmax(...))``, which underflows to -inf)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    temperature = validate_temperature(temperature)
    return torch.log_softmax(logits / temperature, dim=dim)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each distribution along the last axis, ``H(p) = −Σ_c p_c log p_c`` (0 · log 0 = 0).

    Args:
        probs: ``(..., C)`` probabilities: non-negative, each row summing to 1 (e.g. ``temperature_softmax(v, T)``).

    Returns:
        ``(...)``: one entropy per distribution, from 0 (one-hot) to log C (uniform).

    Raises:
        TypeError: ``probs`` is not a floating-point tensor.
        ValueError: it has no class axis, a negative entry, or a row that does not sum to 1 (logits passed by
            mistake: apply ``temperature_softmax`` first).
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        raise TypeError(f"probs must be a floating-point torch.Tensor of probabilities, got {type(probs).__name__}"
                        + (f" of dtype {probs.dtype}" if isinstance(probs, torch.Tensor) else ""))
    if probs.dim() == 0 or probs.shape[-1] == 0:
        raise ValueError(f"probs needs a class axis (last) with at least one class, got shape {tuple(probs.shape)}")
    if (probs < 0).any():
        raise ValueError("probs has negative entries: these are not probabilities. Pass softmax outputs, e.g. "
                         "temperature_softmax(logits, T)")
    worst = (probs.sum(-1) - 1).abs().max().item()
    if worst > 1e-3:
        raise ValueError(f"a row of probs sums to 1 ± {worst:.3g}, not 1: pass probabilities (softmax outputs), not "
                         "logits or unnormalised scores")
    return -torch.special.xlogy(probs, probs).sum(-1)


# ------------------------------------------------------------------------------------------------- KL & KD
def kl_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    direction: str = "forward",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL divergence between teacher and student distributions at temperature T, averaged over distributions.

    ``direction="forward"``: KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)   (KD's standard, mode-covering)
    ``direction="reverse"``: KL(q ‖ p) = Σ_c q_c (log q_c − log p_c)   (mode-seeking)

    with p = softmax(teacher_logits / T), q = softmax(student_logits / T). Not scaled by T².

    Args:
        student_logits: ``(..., C)`` raw scores; gradients flow into them.
        teacher_logits: ``(..., C)`` raw scores, same shape; treated as constants (detached).
        temperature: T > 0.
        direction: ``"forward"`` or ``"reverse"``.
        mask: optional bool ``(...)`` (the leading shape): which distributions count, e.g. non-padding tokens.

    Returns:
        Scalar tensor: the sum over classes, averaged over the (masked) leading positions — ``batchmean``.
    """
    _validate_pair(student_logits, teacher_logits)
    temperature = validate_temperature(temperature)
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    mask = _validate_mask(mask, tuple(student_logits.shape[:-1]))
    log_q = torch.log_softmax(student_logits / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    if direction == "forward":
        per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        per_position = (log_q.exp() * (log_q - log_p)).sum(-1)
    if mask is None:
        return per_position.mean() if per_position.dim() else per_position
    return per_position[mask].mean()


def soft_target_gradient(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """The gradient of ``KL(p ‖ q)`` with respect to the student's logits, one row per distribution: ``(q − p) / T``.

    Not scaled by T² and not averaged over the batch: ``soft_target_loss`` (``T² · batchmean``) has gradient
    ``T · (q − p) / B``. Notebook 02 derives it and checks it against autograd and finite differences.

    Args:
        student_logits: z, ``(..., C)``.
        teacher_logits: v, ``(..., C)``, same shape.
        temperature: T > 0.

    Returns:
        ``(..., C)``, each row summing to 0.
    """
    _validate_pair(student_logits, teacher_logits)
    temperature = validate_temperature(temperature)
    q = torch.softmax(student_logits.detach() / temperature, dim=-1)
    p = torch.softmax(teacher_logits.detach() / temperature, dim=-1)
    return (q - p) / temperature


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    direction: str = "forward",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton's soft-target loss: ``T² · KL(p ‖ q)`` (``batchmean`` over distributions).

    Equivalent to ``F.kl_div(F.log_softmax(z/T, -1), F.log_softmax(v/T, -1), log_target=True,
    reduction="batchmean") * T**2`` for 2-D inputs. Shapes and arguments as in :func:`kl_divergence`.
    """
    t = validate_temperature(temperature)
    return kl_divergence(student_logits, teacher_logits, t, direction=direction, mask=mask) * (t * t)


class DistillationLoss(NamedTuple):
    """Result of :func:`distillation_loss`: the total to backpropagate and its two parts (unweighted)."""

    loss: torch.Tensor
    """(1 − alpha_kd) · ce + alpha_kd · kd, scalar."""
    ce: torch.Tensor
    """cross-entropy with the hard labels at T = 1, scalar."""
    kd: torch.Tensor
    """T² · KL(p ‖ q), scalar."""


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float = 2.0,
    alpha_kd: float = 0.5,
    ignore_index: int = -100,
    direction: str = "forward",
) -> DistillationLoss:
    """The combined KD objective ``(1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q)``.

    The CE term uses T = 1 (the student must be right at inference temperature); the KD term uses T.
    Positions whose label is ``ignore_index`` are left out of *both* terms (padding / prompt tokens).

    Args:
        student_logits: ``(..., C)``.
        teacher_logits: ``(..., C)``, same shape.
        labels: integer ``(...)`` (the leading shape), values in ``[0, C)`` or ``ignore_index``;
            may be None only when ``alpha_kd == 1`` (pure soft-target training on unlabelled data).
        temperature: T > 0.
        alpha_kd: weight of the KD term in [0, 1].
        ignore_index: label value that marks positions to skip.
        direction: KL direction of the KD term (see :func:`kl_divergence`).

    Returns:
        :class:`DistillationLoss` ``(loss, ce, kd)``; ``ce`` is NaN-free 0 when ``labels`` is None.
    """
    _validate_pair(student_logits, teacher_logits)
    t = validate_temperature(temperature)
    alpha_kd = validate_alpha_kd(alpha_kd)
    leading = tuple(student_logits.shape[:-1])
    n_classes = student_logits.shape[-1]
    if labels is None:
        if alpha_kd != 1.0:
            raise ValueError(f"labels=None is only allowed with alpha_kd=1 (soft targets only), got alpha_kd={alpha_kd}")
        kd = soft_target_loss(student_logits, teacher_logits, t, direction=direction)
        return DistillationLoss(kd, torch.zeros((), dtype=kd.dtype, device=kd.device), kd)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be an integer torch.Tensor of shape {leading}, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must hold integer class indices (dtype long), got {labels.dtype}. If you have one-hot or soft "
            "labels, take .argmax(-1) for CE, or pass them as teacher probabilities' logits instead."
        )
    if tuple(labels.shape) != leading:
        raise ValueError(f"labels must have the logits' leading shape {leading}, got {tuple(labels.shape)}")
    valid = labels != ignore_index
    if not bool(valid.any()):
        raise ValueError(f"every label equals ignore_index={ignore_index}; nothing to learn from in this batch")
    bad = valid & ((labels < 0) | (labels >= n_classes))
    if bool(bad.any()):
        raise ValueError(f"labels must lie in [0, {n_classes}) (or be ignore_index={ignore_index}); found "
                         f"{labels[bad].unique().tolist()[:5]}")
    # .long(): cross_entropy rejects int32/int16 targets, which the checks above rightly accept as class indices.
    ce = F.cross_entropy(student_logits[valid], labels[valid].long())
    kd = soft_target_loss(student_logits, teacher_logits, t, direction=direction, mask=valid if leading else None)
    loss = (1.0 - alpha_kd) * ce + alpha_kd * kd
    return DistillationLoss(loss, ce, kd)
