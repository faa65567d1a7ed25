"""Profiles: one code path, two sizes.

``small``: offline, CPU, minutes; real weights and data that ship inside registry packages (see ``assets``).
``gpu``:   Colab T4 / A100 with the hub reachable; full-size models (bert-base, Mistral-7B, Phi-2, Dolly).

Notebook code after ``select()`` is identical for both; only what a profile names differs.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ['PROFILE_NAMES', 'HUB_HOST', 'Profile', 'cuda_available', 'hub_reachable', 'select']


PROFILE_NAMES = ("small", "gpu")
HUB_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class Profile:
    """The chosen course profile.

    Attributes:
        name: ``"small"`` or ``"gpu"``.
        reason: one sentence saying why this profile was chosen (printed by ``select``).
        offline: whether the Hugging Face offline variables must be set (always True for ``small``).
    """

    name: str
    reason: str
    offline: bool

    @property
    def is_small(self) -> bool:
        return self.name == "small"

    def __str__(self) -> str:
        return f"profile '{self.name}': {self.reason}"


def cuda_available() -> bool:
    """True when torch sees a CUDA device (False if torch is missing)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when a TCP connection to the Hugging Face hub opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("KD_PROFILE", "").strip().lower() != "gpu":
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def select(name: str | None = None, verbose: bool = True) -> Profile:
    """Choose the profile: an explicit ``name``, else ``KD_PROFILE``, else auto-detection.

    Auto-detection picks ``gpu`` only when CUDA is present *and* the hub answers (``HF_HUB_OFFLINE=1``, which
    ``course.sh`` sets by default, counts as "does not answer"); otherwise ``small``.

    Args:
        name: ``"small"``, ``"gpu"`` or None (use ``KD_PROFILE`` / auto).
        verbose: print the choice and the reason.

    Raises:
        ValueError: for any other name, e.g. a typo in ``KD_PROFILE``.
        TypeError: if ``name`` is neither a string nor None.
    """
    source = "argument"
    if name is None:
        env = os.environ.get("KD_PROFILE", "").strip().lower()
        if env and env != "auto":
            name, source = env, "KD_PROFILE"
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"profile name must be a string such as 'small' or 'gpu', got {type(name).__name__}")
        name = name.strip().lower()
        if name not in PROFILE_NAMES:
            raise ValueError(
                f"unknown profile {name!r} (from {source}); use one of {PROFILE_NAMES}, "
                "e.g. `KD_PROFILE=small` for the offline CPU version"
            )
        if name == "gpu":
            profile = Profile("gpu", f"requested by {source}", offline=False)
        else:
            profile = Profile("small", f"requested by {source}", offline=True)
    elif not cuda_available():
        profile = Profile("small", "no CUDA device found, so the offline CPU-sized course runs", offline=True)
    elif not hub_reachable():
        why = ("HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE") == "1"
               else "the Hugging Face hub is unreachable")
        profile = Profile("small", f"a CUDA device is present but {why}", offline=True)
    else:
        profile = Profile("gpu", "a CUDA device is present and the Hugging Face hub is reachable", offline=False)
    if verbose:
        print(f"Using {profile}  (override with KD_PROFILE=small|gpu)")
    return profile
