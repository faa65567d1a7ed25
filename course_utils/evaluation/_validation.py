"""Input checks shared by the evaluation modules: arrays of scores and labels, probabilities, positive
integers, temperatures. Each raises ``ValueError``/``TypeError`` saying what was wrong.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import numpy as np

__all__ = []


# ================================================================================================ validation
def _array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array (tensors are detached and moved to the CPU); ``TypeError`` for other objects."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if getattr(x, "is_quantized", False):
            x = x.dequantize()
        return x.float().numpy() if str(x.dtype) in ("torch.bfloat16", "torch.float16") else x.numpy()
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        return np.asarray(x)
    if not isinstance(x, (str, bytes, Mapping)) and hasattr(x, "__len__") and hasattr(x, "__iter__"):
        return np.asarray(list(x))  # e.g. a datasets Column
    raise TypeError(f"{name} must be a NumPy array, a torch tensor or a list, got {type(x).__name__}")


def _scores(x: Any, name: str = "logits") -> np.ndarray:
    """Validate an ``(N, C)`` array of scores (logits or probabilities) and return it as float64."""
    a = _array(x, name)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got an array of dtype {a.dtype}")
    if a.ndim != 2:
        hint = (" — for a single example use x[None]; a model with one output unit needs its two-class logits "
                "[0, z]" if a.ndim == 1 else "")
        raise ValueError(f"{name} must have shape (N, C) (N examples, C classes), got shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 examples): nothing to evaluate")
    if a.shape[1] < 2:
        raise ValueError(f"{name} has {a.shape[1]} class column(s); a classifier needs at least 2")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values ({int((~np.isfinite(a)).sum())} entries): the model "
                         "diverged or the array was not filled")
    return a


def _labels(y: Any, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """Validate ``n`` integer class labels in ``[0, num_classes)``."""
    a = _array(y, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"{n} predictions but {len(a)} {name}: they must describe the same examples, in order")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be integer class indices, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise TypeError(f"{name} must be integer class indices, got non-integer values such as "
                            f"{a[~(a == np.round(a))][:3].tolist()} (probabilities or one-hot rows? pass argmax)")
        a = a.astype(np.int64)
    if n and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) for {num_classes} classes, got values from "
                         f"{a.min()} to {a.max()}")
    return a.astype(np.int64)


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must "
                         "score the same examples over the same classes")


def _check_probabilities(p: np.ndarray, name: str = "probs") -> np.ndarray:
    if (p < -1e-6).any() or (p > 1 + 1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        sums = p.sum(1)
        raise ValueError(
            f"{name} must be probabilities (each row non-negative and summing to 1), but its values range from "
            f"{p.min():.3g} to {p.max():.3g} and its rows sum to {sums.min():.3g}…{sums.max():.3g}. If these are "
            "logits, convert them first: evaluation.probabilities(logits)."
        )
    return np.clip(p, 0.0, 1.0)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return int(value)


def _probability_level(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (e.g. 0.95), got {value}")
    return float(value)


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {value}")
    return float(value)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _require_module(model: Any, name: str = "model") -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
