"""Soft targets from several teachers, and the mutual-learning pair loss: the pure losses behind notebook 07's
multi-teacher and deep-mutual-learning sections (no training loops here; those are in ``vision.strategies``).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .losses import distillation_loss, validate_alpha_kd, validate_logits, validate_temperature

__all__ = ['ENSEMBLE_METHODS', 'WEIGHT_SCHEMES', 'stack_teacher_logits', 'ensemble_soft_targets', 'teacher_weights', 'soft_targets_to_logits', 'mutual_learning_losses']


ENSEMBLE_METHODS = ("mean_probs", "mean_logits", "weighted")
WEIGHT_SCHEMES = ("true_class", "confidence")


# ============================================================================================ multi-teacher
def stack_teacher_logits(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    label_spaces: Sequence[Sequence[str]] | None = None,
) -> torch.Tensor:
    """Check that several teachers' logits describe the same examples and the same classes; stack them.

    Args:
        teacher_logits: a sequence of ``K`` tensors ``(N, C)`` (one per teacher, rows aligned: row n of every
            tensor is example n), or one tensor ``(K, N, C)``.
        label_spaces: optionally, each teacher's class names in the order of its logit columns. They must be
            identical: averaging column c of two teachers only makes sense if column c means the same class.

    Returns:
        ``(K, N, C)`` float tensor.

    Raises:
        TypeError: not tensors / not floating point.
        ValueError: no teacher, different numbers of examples or classes, label spaces that differ (with the column
            permutation that fixes them when only the order differs), probabilities passed instead of logits.
    """
    if isinstance(teacher_logits, torch.Tensor):
        if teacher_logits.dim() != 3:
            raise ValueError(f"a single tensor of teacher logits must have shape (K, N, C), got "
                             f"{tuple(teacher_logits.shape)}; pass a list of (N, C) tensors for separate teachers")
        tensors = list(teacher_logits)
    elif isinstance(teacher_logits, (list, tuple)):
        tensors = list(teacher_logits)
    else:
        raise TypeError(f"teacher_logits must be a list of (N, C) tensors or a (K, N, C) tensor, got "
                        f"{type(teacher_logits).__name__}")
    if not tensors:
        raise ValueError("no teacher logits given: pass at least one (N, C) tensor")
    for k, t in enumerate(tensors):
        validate_logits(t, f"teacher_logits[{k}]")
        if t.dim() != 2:
            raise ValueError(f"teacher_logits[{k}] must have shape (N, C), got {tuple(t.shape)}")
    n0, c0 = tensors[0].shape
    for k, t in enumerate(tensors[1:], 1):
        if t.shape[1] != c0:
            raise ValueError(
                f"teachers do not share a label space: teacher 0 predicts {c0} classes, teacher {k} predicts "
                f"{t.shape[1]}. Multi-teacher KD averages the teachers' distributions class by class, so every "
                "teacher needs the same classes in the same column order — map or retrain the heads first."
            )
        if t.shape[0] != n0:
            raise ValueError(f"teacher 0 has logits for {n0} examples, teacher {k} for {t.shape[0]}; compute every "
                             "teacher's logits on the same inputs, in the same order")
    if label_spaces is not None:
        if len(label_spaces) != len(tensors):
            raise ValueError(f"{len(label_spaces)} label spaces for {len(tensors)} teachers; give one per teacher")
        reference = list(label_spaces[0])
        if len(reference) != c0:
            raise ValueError(f"label_spaces[0] names {len(reference)} classes but the logits have {c0} columns")
        for k, names in enumerate(label_spaces[1:], 1):
            names = list(names)
            if names == reference:
                continue
            if sorted(names) == sorted(reference) and len(set(names)) == len(names):
                order = [names.index(c) for c in reference]
                raise ValueError(
                    f"teacher {k} has the same classes as teacher 0 but in a different column order "
                    f"({names} vs {reference}); reorder its logits first: teacher_logits[{k}][:, {order}]"
                )
            extra, missing = sorted(set(names) - set(reference)), sorted(set(reference) - set(names))
            raise ValueError(
                f"teachers do not share a label space: teacher {k} has classes {extra} that teacher 0 lacks and "
                f"lacks {missing}. Averaging distributions over different classes is meaningless; restrict all "
                "teachers to the shared classes (and renormalise) or train heads on one label set."
            )
    return torch.stack([t.float() for t in tensors])


def _validate_method(method: str) -> None:
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"method must be one of {ENSEMBLE_METHODS}, got {method!r}")


def ensemble_soft_targets(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    temperature: float = 1.0,
    method: str = "mean_probs",
    weights: torch.Tensor | None = None,
    label_spaces: Sequence[Sequence[str]] | None = None,
) -> torch.Tensor:
    """Combine K teachers into one soft target distribution per example, at temperature T.

    * ``"mean_probs"``: p = (1/K) Σ_k softmax(v_k / T) — the ensemble's predictive distribution (an arithmetic
      mixture: it keeps every class any teacher finds plausible; Hinton et al. 2015 distil an ensemble this way).
    * ``"mean_logits"``: p = softmax((1/K) Σ_k v_k / T) — the normalised *geometric* mean of the teachers'
      distributions (a product of experts): classes need the support of all teachers, so it is sharper.
    * ``"weighted"``: p_n = Σ_k w_nk softmax(v_k / T) with per-example weights ``weights`` (e.g. from
      :func:`teacher_weights`): a teacher that is unsure or wrong about example n counts less for that example.

    Args:
        teacher_logits: ``K`` tensors ``(N, C)`` or one ``(K, N, C)`` (see :func:`stack_teacher_logits`).
        temperature: T > 0, applied to every teacher *before* combining (averaging at T = 1 and then softening is
            a different, wrong distribution).
        method: one of :data:`ENSEMBLE_METHODS`.
        weights: for ``"weighted"`` only: ``(N, K)`` per-example or ``(K,)`` global non-negative weights; rows are
            normalised to sum to 1.
        label_spaces: optional class names per teacher, checked to be identical.

    Returns:
        ``(N, C)`` probabilities (rows sum to 1). Pass them to a KD loss via :func:`soft_targets_to_logits`.
    """
    stacked = stack_teacher_logits(teacher_logits, label_spaces)
    t = validate_temperature(temperature)
    _validate_method(method)
    if method != "weighted" and weights is not None:
        raise ValueError(f"weights are only used with method='weighted', not {method!r}")
    if method == "mean_logits":
        return torch.softmax(stacked.mean(0) / t, dim=-1)
    probs = torch.softmax(stacked / t, dim=-1)  # (K, N, C)
    if method == "mean_probs":
        return probs.mean(0)
    w = _validate_weights(weights, n_teachers=stacked.shape[0], n_examples=stacked.shape[1])
    return torch.einsum("nk,knc->nc", w, probs)


def _validate_weights(weights: torch.Tensor | None, n_teachers: int, n_examples: int) -> torch.Tensor:
    if weights is None:
        raise ValueError("method='weighted' needs weights: (N, K) per example (see teacher_weights) or (K,) global")
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    w = weights.detach().float()
    if w.dim() == 1:
        w = w.expand(n_examples, -1)
    if w.dim() != 2 or tuple(w.shape) != (n_examples, n_teachers):
        raise ValueError(f"weights must have shape (N, K) = ({n_examples}, {n_teachers}) or (K,) = ({n_teachers},), "
                         f"got {tuple(weights.shape)}; note the order: one row per example, one column per teacher")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"{int((total <= 0).sum())} example(s) have all-zero teacher weights; every example needs "
                         "at least one teacher with a positive weight")
    return w / total


def teacher_weights(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    labels: torch.Tensor | None = None,
    scheme: str = "true_class",
    sharpness: float = 1.0,
) -> torch.Tensor:
    """Per-example teacher weights ``(N, K)`` (rows sum to 1) for :func:`ensemble_soft_targets`.

    * ``"true_class"`` (needs ``labels``): w_nk ∝ p_k(y_n)^γ, teacher k's probability (at T = 1) of the correct
      class of example n — teachers that get example n wrong count little on it. The same idea, with other
      formulas, is behind confidence-aware multi-teacher KD (e.g. CA-MKD, Zhang et al. 2022).
    * ``"confidence"`` (no labels; usable on unlabelled transfer data): w_nk ∝ (max_c p_k(c | x_n))^γ.

    Args:
        labels: ``(N,)`` integer labels, for ``"true_class"``.
        sharpness: γ ≥ 0; 0 gives equal weights, larger values give more weight to the best teacher.
    """
    stacked = stack_teacher_logits(teacher_logits)
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}")
    if isinstance(sharpness, bool) or not isinstance(sharpness, numbers.Real) or not 0 <= sharpness < math.inf:
        raise ValueError(f"sharpness must be a finite number ≥ 0, got {sharpness!r}")
    log_probs = torch.log_softmax(stacked, dim=-1)  # (K, N, C) at T = 1
    if scheme == "true_class":
        if labels is None:
            raise ValueError("scheme='true_class' needs the labels (N,); use scheme='confidence' on unlabelled data")
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 1:
            raise TypeError("labels must be a 1-D integer tensor (N,)")
        n, c = stacked.shape[1:]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} examples")
        if bool(((labels < 0) | (labels >= c)).any()):
            raise ValueError(f"labels must lie in [0, {c})")
        score = log_probs.gather(-1, labels.long().view(1, -1, 1).expand(stacked.shape[0], -1, 1)).squeeze(-1)
    else:
        if labels is not None:
            raise ValueError("scheme='confidence' does not use labels; pass labels=None or scheme='true_class'")
        score = log_probs.max(-1).values
    # softmax over teachers of γ·log p = p^γ / Σ_k p^γ, computed in log space so tiny probabilities cannot give 0/0
    return torch.softmax(float(sharpness) * score, dim=0).T.contiguous()


def soft_targets_to_logits(probs: torch.Tensor, temperature: float = 1.0, floor: float = 1e-12) -> torch.Tensor:
    """Logits whose softmax at temperature T is ``probs``: ``T · log(probs)``.

    Every KD loss in the course takes *teacher logits*; an ensemble gives probabilities. Since
    softmax(T · log p / T) = p, these logits reproduce the ensemble's soft targets exactly at the same T.

    Args:
        probs: ``(..., C)`` rows summing to 1.
        temperature: the T the probabilities were computed at (and the KD loss will use).
        floor: probabilities are clamped to at least this before the log, so a class with p = 0 gets a very
            negative but finite logit.
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        raise TypeError("probs must be a floating-point torch.Tensor (..., C)")
    t = validate_temperature(temperature)
    if probs.dim() < 1 or probs.shape[-1] < 2 or probs.numel() == 0:
        raise ValueError(f"probs must have shape (..., C) with C ≥ 2, got {tuple(probs.shape)}")
    if bool((probs < 0).any()) or not torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]), atol=1e-4):
        raise ValueError("probs must be probability distributions (non-negative, each row summing to 1); did you pass "
                         "logits? Those can go to the KD loss directly")
    return t * probs.clamp_min(floor).log()


# ===================================================================================== deep mutual learning
def mutual_learning_losses(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    temperature: float = 1.0,
    alpha_kd: float = 0.5,
) -> list[torch.Tensor]:
    """One step's losses of deep mutual learning (Zhang et al. 2018) for K ≥ 2 students trained together.

    Student k learns from the labels and from its peers, whose predictions are treated as fixed targets:

        loss_k = (1 − alpha_kd) · CE(z_k, y) + alpha_kd · T² · mean_{l ≠ k} KL(softmax(z_l / T) ‖ softmax(z_k / T))

    The peers' logits are detached, so loss_k only moves student k. Zhang et al. use T = 1 and equal weights
    (CE + KL), which is ``alpha_kd = 0.5`` up to a factor 2.

    Args:
        logits: the K students' logits ``(B, C)`` on the same batch.
        labels: ``(B,)`` integer labels.

    Returns:
        ``[loss_0, …, loss_{K−1}]`` scalar tensors.
    """
    if not isinstance(logits, (list, tuple)) or len(logits) < 2:
        raise ValueError("mutual learning needs the logits of at least two students, as a list [z_a, z_b, ...]")
    shapes = {tuple(z.shape) for z in logits if isinstance(z, torch.Tensor)}
    if len(shapes) != 1 or not all(isinstance(z, torch.Tensor) for z in logits):
        raise ValueError(f"every student's logits must be tensors of one shape (B, C), got "
                         f"{[tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__ for z in logits]}")
    t, a = validate_temperature(temperature), validate_alpha_kd(alpha_kd)
    out = []
    for k, z in enumerate(logits):
        parts = [distillation_loss(z, peer.detach(), labels, temperature=t, alpha_kd=a)
                 for l, peer in enumerate(logits) if l != k]
        # every part has the same CE; averaging the parts averages the KL terms over the peers
        out.append(torch.stack([p.loss for p in parts]).mean())
    return out
