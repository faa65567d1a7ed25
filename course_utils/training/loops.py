"""Small plain-PyTorch training loops: a KD-capable classifier loop (MLPs on digits, CNNs on Fashion-MNIST),
FitNets' stage-1 hint training, batched logits and accuracy of a ``torch`` model on a tensor of inputs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..evaluation.metrics import accuracy
from ..kd import features, losses
from ..kd.losses import distillation_loss, validate_alpha_kd, validate_temperature, validate_weight

__all__ = ['predict_logits', 'model_accuracy', 'train_classifier', 'fitnets_stage1', 'train_cnn']


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on ``x`` ``(N, …)`` in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def model_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of a ``torch`` model on inputs ``x`` ``(N, …)`` with labels ``y`` ``(N,)``, in eval mode.

    The logits come from :func:`predict_logits`; the score from
    :func:`course_utils.evaluation.metrics.accuracy`, the course's one accuracy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}; for logits you already have, "
                        "use course_utils.evaluation.metrics.accuracy(logits, labels)")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y):
        raise ValueError(f"x and y must be tensors with one label per input, got {getattr(x, 'shape', type(x))} "
                         f"and {getattr(y, 'shape', type(y))}")
    return accuracy(predict_logits(model, x, batch_size), y)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha_kd: float = 0.0,
) -> list[float]:
    """Train ``model`` with Adam on ``(x, y)``, optionally distilling from precomputed ``teacher_logits``.

    The loss is :func:`course_utils.kd.losses.distillation_loss`:
    ``(1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q)``. With ``alpha_kd = 0`` (default) this is plain
    hard-label training and ``teacher_logits`` may be None; with ``alpha_kd = 1``, ``y`` may be None.

    Args:
        x: ``(N, features)`` inputs.  y: ``(N,)`` int64 labels or None.
        teacher_logits: ``(N, C)`` teacher logits aligned with ``x``.
        seed: seeds the mini-batch order, so equal seeds give equal runs.

    Returns:
        The mean training loss of each epoch.
    """
    temperature = validate_temperature(temperature)
    alpha_kd = validate_alpha_kd(alpha_kd)
    if alpha_kd > 0 and teacher_logits is None:
        raise ValueError("alpha_kd > 0 needs teacher_logits (N, C); pass them or set alpha_kd=0")
    if y is None and alpha_kd < 1:
        raise ValueError("y=None (unlabelled data) only works with alpha_kd=1")
    n = x.shape[0]
    for name, t in (("y", y), ("teacher_logits", teacher_logits)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} rows but x has {n}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            logits = model(x[idx])
            if alpha_kd == 0:
                loss = F.cross_entropy(logits, y[idx])  # type: ignore[index]
            else:
                loss = distillation_loss(logits, teacher_logits[idx], None if y is None else y[idx],  # type: ignore[index]
                                         temperature=temperature, alpha_kd=alpha_kd).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    model.eval()
    return history


# ================================================================================================= CNNs
def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _check_images(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor of images (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],)):
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")


def fitnets_stage1(student: nn.Module, teacher: nn.Module, x: torch.Tensor, *, student_block: int,
                   teacher_block: int, epochs: int = 3, lr: float = 1e-3, batch_size: int = 128,
                   seed: int = 0) -> tuple[nn.Module, list[float]]:
    """FitNets stage 1 (Romero et al. 2015): train the student's blocks up to its *guided* block, plus a 1×1
    convolution regressor, so that they predict the teacher's *hint* block: min mean((r(F_s) − F_t)²).

    Only ``student.blocks[:student_block + 1]`` and the regressor are updated (labels are not used). Stage 2 then
    trains the whole student with KD from these weights (e.g. :func:`train_cnn` with ``alpha_kd > 0``).

    Args:
        student, teacher: CNNs with ``features(x)`` → list of block outputs (``course_utils.vision.fashion_mnist.SmallCNN``).
        student_block / teacher_block: indices into those lists; the maps must have the same spatial size.

    Returns:
        ``(regressor, mean hint loss per epoch)``.
    """
    _check_images(x, None)
    for name, model in (("student", student), ("teacher", teacher)):
        if not callable(getattr(model, "features", None)):
            raise TypeError(f"the {name} must expose features(x) → list of block outputs (course_utils.vision CNNs)")
    was_training = student.training
    student.eval()  # a probe in train mode would update the BatchNorm statistics of every block
    teacher.eval()
    with torch.no_grad():
        probe_s, probe_t = student.features(x[:2]), teacher.features(x[:2])
    student.train(was_training)
    for name, idx, maps in (("student_block", student_block, probe_s), ("teacher_block", teacher_block, probe_t)):
        if not 0 <= idx < len(maps):
            raise ValueError(f"{name}={idx} is out of range: the model has {len(maps)} blocks (0…{len(maps) - 1})")
    fs, ft = probe_s[student_block], probe_t[teacher_block]
    if fs.shape[-2:] != ft.shape[-2:]:
        raise ValueError(f"the guided block's maps are {tuple(fs.shape[-2:])} but the hint block's "
                         f"{tuple(ft.shape[-2:])}: choose blocks of the same resolution")
    regressor = features.make_projection(fs.shape[1], ft.shape[1], conv=True, seed=seed)
    blocks = getattr(student, "blocks")[: student_block + 1]
    params = list(blocks.parameters()) + list(regressor.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    teacher.eval()
    student.train()
    history = []
    for _ in range(epochs):
        total = 0.0
        for idx in _batches(len(x), batch_size, gen):
            with torch.no_grad():
                target = teacher.features(x[idx])[teacher_block]
            h = x[idx]
            for block in blocks:
                h = block(h)
            loss = features.hint_loss(h, target, regressor)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
    student.eval()
    return regressor, history


def train_cnn(student: nn.Module, x: torch.Tensor, y: torch.Tensor, *, teacher: nn.Module | None = None,
              alpha_kd: float = 0.0, temperature: float = 4.0, at_pairs: Sequence[tuple[int, int]] = (),
              at_weight: float = 0.0, epochs: int = 5, lr: float = 1e-3, batch_size: int = 128,
              seed: int = 0) -> list[float]:
    """Train a CNN on ``(1 − alpha_kd)·CE + alpha_kd·T²·KL + at_weight · mean_pairs AT(F_s, F_t)`` with Adam.

    Args:
        teacher: needed when ``alpha_kd > 0`` or ``at_weight > 0``; run live in eval mode under ``no_grad``.
        at_pairs: ``(student_block, teacher_block)`` pairs for :func:`course_utils.kd.features.attention_transfer_loss`
            (same spatial size; channels may differ).
        seed: seeds the mini-batch order.

    Returns:
        The mean training loss of each epoch.
    """
    _check_images(x, y)
    alpha_kd = losses.validate_alpha_kd(alpha_kd)
    temperature = losses.validate_temperature(temperature)
    at_weight = validate_weight(at_weight, "at_weight")
    if (alpha_kd > 0 or at_weight > 0) and teacher is None:
        raise ValueError("alpha_kd > 0 or at_weight > 0 needs a teacher")
    if at_weight > 0 and not at_pairs:
        raise ValueError("at_weight > 0 needs at_pairs, e.g. [(0, 0), (1, 1)] (student block, teacher block)")
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    history = []
    student.train()
    for _ in range(epochs):
        total = 0.0
        for idx in _batches(len(x), batch_size, gen):
            xb, yb = x[idx], y[idx]
            logits, maps = student.forward_features(xb) if at_weight > 0 else (student(xb), None)
            if teacher is not None:
                with torch.no_grad():
                    t_logits, t_maps = teacher.forward_features(xb) if at_weight > 0 else (teacher(xb), None)
                loss = losses.distillation_loss(logits, t_logits, yb, temperature=temperature, alpha_kd=alpha_kd).loss
            else:
                loss = F.cross_entropy(logits, yb)
            if at_weight > 0:
                at = torch.stack([features.attention_transfer_loss(maps[i], t_maps[j]) for i, j in at_pairs]).mean()
                loss = loss + at_weight * at
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
    student.eval()
    return history
