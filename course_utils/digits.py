"""Small, fast classifiers on scikit-learn's 8×8 handwritten digits, for experiments that run in seconds.

Used by notebooks 01, 02 and 07 to get *real* logits from a trained teacher and to run Hinton-style
teacher → student experiments over several seeds on a 2-core CPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import distillation_loss, validate_alpha_kd, validate_temperature

__all__ = ["DigitsData", "load_digits_splits", "make_mlp", "train_classifier", "predict_logits", "accuracy"]


@dataclass
class DigitsData:
    """Train/test split of the digits data set.

    Attributes:
        x_train: ``(N_train, 64)`` float32 pixel intensities scaled to [0, 1].
        y_train: ``(N_train,)`` int64 labels 0–9.
        x_test: ``(N_test, 64)``; y_test: ``(N_test,)``.
        class_names: ``["0", …, "9"]``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]


def load_digits_splits(test_fraction: float = 0.3, seed: int = 0) -> DigitsData:
    """Load sklearn's digits (1,797 images, ships with scikit-learn) as a stratified, seeded split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitsData(torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te),
                      torch.from_numpy(y_te), [str(c) for c in bunch.target_names])


def make_mlp(hidden: Sequence[int], in_features: int = 64, n_classes: int = 10, dropout: float = 0.0,
             seed: int | None = None) -> nn.Sequential:
    """A ReLU MLP ``in_features → hidden… → n_classes`` (outputs logits).

    Args:
        hidden: widths of the hidden layers, e.g. ``(256, 256)``; ``()`` gives logistic regression.
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)`` (same seed, same model).
    """
    if any((not isinstance(h, int)) or h <= 0 for h in hidden):
        raise ValueError(f"hidden widths must be positive integers, got {tuple(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on ``x`` ``(N, …)`` in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model_or_logits: nn.Module | torch.Tensor, x_or_labels: torch.Tensor,
             y: torch.Tensor | None = None) -> float:
    """Top-1 accuracy: ``accuracy(model, x, y)`` or ``accuracy(logits, y)``."""
    if isinstance(model_or_logits, nn.Module):
        if y is None:
            raise TypeError("accuracy(model, x, y) needs the labels y")
        logits, labels = predict_logits(model_or_logits, x_or_labels), y
    else:
        logits, labels = model_or_logits, x_or_labels
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {labels.shape[0]} labels")
    return (logits.argmax(-1) == labels).float().mean().item()


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

    The loss is :func:`course_utils.losses.distillation_loss`:
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
