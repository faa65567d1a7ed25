"""Results claims: ``claim(condition, message)`` is an ``assert`` that the gpu profile's smoke run reports instead.

A notebook states what its numbers support ("the KD student beats the hard-label student") as a claim. Normally
:func:`claim` is exactly ``assert condition, message``: it prints nothing when the claim holds (so committed outputs do
not change) and raises ``AssertionError(message)`` when it does not. In the smoke run (``KD_SMOKE=1``, see
:func:`course_utils.core.profiles.smoke_active`) models have random weights and train one or two steps, so results
cannot hold: a failed claim then prints ``not checked (smoke run): <message>`` and the notebook runs on.

Structural facts (shapes, equalities, the learner's function equal to the library's) stay plain ``assert``\\ s: they
hold at every size, the smoke run included.
"""
from __future__ import annotations

from typing import Any

from .profiles import smoke_active

__all__ = ['SMOKE_PREFIX', 'claim']

SMOKE_PREFIX = "not checked (smoke run): "
"""What :func:`claim` prints before the message of a claim that failed in the smoke run."""


def claim(condition: Any, message: str) -> None:
    """Assert a results claim; in the smoke run, report a failed one instead.

    Args:
        condition: whether the claim holds: a ``bool`` or a NumPy boolean scalar (e.g. ``(gain > 0).all()`` of a
            pandas Series). A tensor or an array with more than one element is rejected: reduce it with ``.all()``
            or ``.any()`` first, which is what the claim means.
        message: the claim in words, e.g. ``"KD beats hard labels on average"``.

    Raises:
        AssertionError: the claim does not hold (outside the smoke run); its message is ``message``.
        TypeError: ``condition`` is not a bool / NumPy bool (convert a 0-d tensor with ``bool(...)``), or
            ``message`` is not a string.
        ValueError: ``message`` is empty.
    """
    import numpy as np

    if not isinstance(condition, (bool, np.bool_)):
        raise TypeError(f"claim's condition must be a bool or a NumPy bool, got {type(condition).__name__}; reduce an "
                        "array or Series with .all() / .any() and convert a tensor with bool(...)")
    if not isinstance(message, str):
        raise TypeError(f"claim's message must be a string saying what is claimed, got {type(message).__name__}")
    if not message.strip():
        raise ValueError("claim's message is empty; say in words what is claimed, e.g. 'KD beats hard labels'")
    if bool(condition):
        return
    if smoke_active():
        print(f"{SMOKE_PREFIX}{message}")
        return
    raise AssertionError(message)
