"""Profiles: one code path, two sizes.

``small``: offline, CPU, minutes; real weights and data that ship inside registry packages (see ``assets``).
``gpu``:   Colab T4 / A100 with the hub reachable; full-size models (bert-base, Mistral-7B, Phi-2, Dolly).

``KD_PROFILE=gpu KD_SMOKE=1`` is the gpu profile's *smoke run*: the same code path on CPU, offline, in seconds. The
loaders then build stand-ins that keep everything but the size (the real model classes with tiny random-weight
configs, the real tokenizers, local data with the hub datasets' schemas), the recipes train one or two steps, and
:func:`course_utils.core.claims.claim` reports a results claim it cannot check instead of asserting it.

Notebook code after ``select()`` is identical for both; only what a profile names differs.
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ['PROFILE_NAMES', 'HUB_HOST', 'HUB_TIMEOUT', 'Profile', 'HubUnreachableError', 'cuda_available',
           'hub_offline', 'hub_address', 'hub_reachable', 'SMOKE_ENV', 'smoke_active', 'select']


PROFILE_NAMES = ("small", "gpu")
HUB_HOST = ("huggingface.co", 443)
#: Seconds the hub probe waits, DNS lookup included: long enough for a slow Colab network, short enough that an
#: offline machine learns it at once instead of after transformers' ~25 s of retries.
HUB_TIMEOUT = 2.0


@dataclass(frozen=True)
class Profile:
    """The chosen course profile.

    Attributes:
        name: ``"small"`` or ``"gpu"``.
        reason: one sentence saying why this profile was chosen (printed by ``select``).
        offline: whether the Hugging Face offline variables must be set (always True for ``small``).
        smoke: the gpu profile's smoke run (``KD_SMOKE=1``): tiny stand-ins of the gpu models and data, on CPU,
            offline (see :func:`smoke_active`).
    """

    name: str
    reason: str
    offline: bool
    smoke: bool = False

    @property
    def is_small(self) -> bool:
        return self.name == "small"

    def __str__(self) -> str:
        return f"profile '{self.name}': {self.reason}"


class HubUnreachableError(RuntimeError):
    """The ``gpu`` profile was asked for where the Hugging Face hub cannot be reached (its message is one line)."""


def cuda_available() -> bool:
    """True when torch sees a CUDA device (False if torch is missing)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (``1``, ``true``, ``yes``, ``on``), as huggingface_hub
    reads it: the libraries will then not contact the hub whatever the network allows."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_address() -> tuple[str, int]:
    """``(host, port)`` of the hub: ``HF_ENDPOINT``'s when that variable names a mirror, else ``HUB_HOST``."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if not endpoint:
        return HUB_HOST
    parts = urlsplit(endpoint)
    if not parts.hostname:
        raise ValueError(f"HF_ENDPOINT={endpoint!r} is not a URL; set it to e.g. https://huggingface.co or unset it")
    return parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """True when a TCP connection to the Hugging Face hub opens within ``timeout`` seconds.

    One attempt, no retries. ``HF_HUB_OFFLINE=1`` counts as unreachable without probing. The probe runs in a
    daemon thread so that ``timeout`` bounds the DNS lookup too (``socket``'s own timeout covers only the connect).

    Raises:
        TypeError, ValueError: ``timeout`` is not a positive number of seconds.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds such as 2.0, got {type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds such as 2.0, got {timeout!r}")
    if hub_offline():
        return False
    address = hub_address()
    result: dict[str, object] = {}

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False
        except BaseException as err:  # noqa: BLE001 - handed to the caller below, not swallowed in the thread
            result["error"] = err

    thread = threading.Thread(target=probe, name="kd-course-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("ok") is True


SMOKE_ENV = "KD_SMOKE"
"""Environment variable: ``1`` with ``KD_PROFILE=gpu`` runs the gpu profile's code path as a smoke run."""


def smoke_active() -> bool:
    """True when ``KD_SMOKE=1``: the gpu profile's smoke run (stand-ins that keep everything but the size).

    The loaders and recipes of every layer read it to choose their stand-ins; notebooks never do (their only route
    is :func:`course_utils.core.claims.claim`).

    Raises:
        ValueError: ``KD_SMOKE`` is set to anything but ``0``, ``1`` or the empty string.
    """
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{SMOKE_ENV}={value!r}: use 1 (smoke run of the gpu profile, with KD_PROFILE=gpu) "
                         "or 0 / unset (the normal course)")
    return value == "1"


def _require_hub(source: str) -> None:
    """Raise :class:`HubUnreachableError` (one line: why, and how to switch back) unless the hub is reachable."""
    if hub_reachable():
        return
    if hub_offline():
        why = ("HF_HUB_OFFLINE=1 is set (bash course.sh sets it unless given HF_HUB_OFFLINE=0), so the libraries "
               "will not contact the hub")
    else:
        host, port = hub_address()
        why = f"{host}:{port} did not answer within {HUB_TIMEOUT:g} s"
    back = "profile='small'" if source == "argument" else "KD_PROFILE=small (or unset KD_PROFILE)"
    raise HubUnreachableError(
        f"the gpu profile loads its models and data from the Hugging Face hub, but {why}; "
        f"switch back to the offline CPU-sized course with {back}"
    )


def select(name: str | None = None, verbose: bool = True) -> Profile:
    """Choose the profile: an explicit ``name``, else ``KD_PROFILE``, else auto-detection.

    Auto-detection picks ``gpu`` only when CUDA is present *and* the hub answers (``HF_HUB_OFFLINE=1``, which
    ``course.sh`` sets by default, counts as "does not answer"); otherwise ``small``. Asking for ``gpu`` (argument or
    ``KD_PROFILE``) checks the hub once, the same way, and fails at once where it is unreachable.

    With ``KD_SMOKE=1`` (:func:`smoke_active`) ``gpu`` must be asked for; it is then chosen without the hub check,
    offline, with ``smoke=True``: the smoke run of the gpu code path on CPU.

    Args:
        name: ``"small"``, ``"gpu"`` or None (use ``KD_PROFILE`` / auto).
        verbose: print the choice and the reason.

    Raises:
        ValueError: for any other name, e.g. a typo in ``KD_PROFILE``.
        TypeError: if ``name`` is neither a string nor None.
        HubUnreachableError: ``gpu`` was asked for but the hub is unreachable or ``HF_HUB_OFFLINE=1`` is set.
        ValueError: ``KD_SMOKE=1`` is set but the gpu profile was not asked for, or ``KD_SMOKE`` is invalid.
    """
    smoke = smoke_active()
    source = "argument"
    if name is None:
        env = os.environ.get("KD_PROFILE", "").strip().lower()
        if env and env != "auto":
            name, source = env, "KD_PROFILE"
    if smoke and not (isinstance(name, str) and name.strip().lower() == "gpu"):
        raise ValueError(f"{SMOKE_ENV}=1 runs the gpu profile's code path as a smoke run, but the gpu profile was not "
                         f"asked for; set KD_PROFILE=gpu too, or unset {SMOKE_ENV}")
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"profile name must be a string such as 'small' or 'gpu', got {type(name).__name__}")
        name = name.strip().lower()
        if name not in PROFILE_NAMES:
            raise ValueError(
                f"unknown profile {name!r} (from {source}); use one of {PROFILE_NAMES}, "
                "e.g. `KD_PROFILE=small` for the offline CPU version"
            )
        if name == "gpu" and smoke:
            profile = Profile("gpu", f"requested by {source}; smoke run ({SMOKE_ENV}=1): tiny stand-ins of the gpu "
                                     "models and data, on CPU, offline, results claims not checked",
                              offline=True, smoke=True)
        elif name == "gpu":
            # Without this check the first from_pretrained retries for ~25 s and ends in transformers' own OSError.
            _require_hub(source)
            profile = Profile("gpu", f"requested by {source}", offline=False)
        else:
            profile = Profile("small", f"requested by {source}", offline=True)
    elif not cuda_available():
        profile = Profile("small", "no CUDA device found, so the offline CPU-sized course runs", offline=True)
    elif not hub_reachable():
        why = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the Hugging Face hub is unreachable"
        profile = Profile("small", f"a CUDA device is present but {why}", offline=True)
    else:
        profile = Profile("gpu", "a CUDA device is present and the Hugging Face hub is reachable", offline=False)
    if verbose:
        print(f"Using {profile}  (override with KD_PROFILE=small|gpu)")
    return profile
