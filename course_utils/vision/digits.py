"""scikit-learn's 8 × 8 handwritten digits as train / validation / test tensors, and the MLPs notebooks 01, 02 and 07
train on them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

__all__ = ['DigitsData', 'load_digits_splits', 'make_mlp']


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
