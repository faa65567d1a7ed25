"""Notebook set-up: offline environment, seeds, quiet logging and device choice.

``setup()`` is the first thing every notebook calls. It must run before ``transformers`` or ``datasets`` are
imported, because both read the ``HF_*_OFFLINE`` variables at import time; without them an offline machine
retries the hub for about 50 seconds on every ``from_pretrained``.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np

from . import assets, profiles

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .profiles import Profile


__all__ = ['OFFLINE_VARIABLES', 'set_offline', 'seed_everything', 'quiet_logging', 'device', 'on_colab',
           'fetch_missing_assets', 'setup']


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def set_offline(offline: bool = True) -> None:
    """Set (or clear) the Hugging Face offline variables.

    Raises:
        RuntimeError: if going offline after ``transformers``/``datasets`` were already imported while the
            variables were not yet set, where they would be silently ignored. (Calling it again once they are
            set, e.g. re-running the set-up cell, is fine.)
    """
    # Decide *before* touching the environment: afterwards the variables are always "1".
    already_offline = all(os.environ.get(v) == "1" for v in OFFLINE_VARIABLES)
    late = [m for m in ("transformers", "datasets") if m in sys.modules]
    for var in OFFLINE_VARIABLES:
        if offline:
            os.environ[var] = "1"
        else:
            os.environ.pop(var, None)
    if offline and "huggingface_hub" in sys.modules:
        # huggingface_hub caches the flag at import; refresh it so a late setup() still takes effect.
        try:
            from huggingface_hub import constants

            constants.HF_HUB_OFFLINE = True
        except Exception:  # pragma: no cover - best effort only
            pass
    if offline and late and not already_offline:
        raise RuntimeError(
            f"{', '.join(late)} were imported before course_utils.setup(); the offline variables may be ignored. "
            "Restart the kernel and run the set-up cell first."
        )


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    Args:
        seed: an integer in ``[0, 2**32 - 1]`` (NumPy's legacy seeding accepts no more).
        deterministic: if True, ``torch.use_deterministic_algorithms(True, warn_only=True)``: identical results
            run to run on the same hardware and thread count (CPU), at most a warning where no deterministic
            kernel exists.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    seed = int(seed)  # random.seed rejects NumPy integers
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def quiet_logging() -> None:
    """Silence the progress chatter of transformers/datasets that would bury a notebook's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    # Library-internal bars ("Loading weights", "Map", "Writing model shards") on every call; read at import time.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*use_deterministic_algorithms.*")


def device() -> "torch.device":
    """The device notebooks train on: CUDA when available, else CPU (MPS is skipped: several ops used here lack it)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_colab() -> bool:
    """True inside a Google Colab runtime, whose kernel imports ``google.colab`` before the first cell runs."""
    return "google.colab" in sys.modules


def fetch_missing_assets(verbose: bool = True) -> dict[str, str]:
    """Fetch every offline asset that is not in the cache yet (nothing to do, nothing printed, when all are).

    Each asset is fetched on its own, so one that fails (e.g. no ``npm`` on the machine) does not stop the
    others; a failure is reported in one line and the notebooks that need that asset say so when they load it.

    Returns:
        ``{name: status}`` for the assets that were missing: ``"fetched"``, ``"skipped: …"`` (optional asset)
        or ``"failed: …"``.
    """
    missing = [name for name in assets.ASSETS if not assets.is_fetched(name)]
    status: dict[str, str] = {}
    if missing and verbose:
        print(f"Fetching the small profile's offline assets into {assets.cache_dir() / 'assets'} (once):")
    for name in missing:
        try:
            status.update(assets.fetch(name, verbose=verbose))
        except RuntimeError as err:
            status[name] = f"failed: {err}"
            if verbose:
                print(f"  {name:18s} not fetched ({str(err).splitlines()[0][:200]}); retry with "
                      f"`{assets.FETCH_COMMAND} {name}`")
    return status


def setup(seed: int = 0, profile: str | None = None, verbose: bool = True,
          fetch_assets: bool | None = None) -> "Profile":
    """Prepare a notebook: choose the profile, go offline if it needs to, fetch assets, seed, quiet the logs.

    Args:
        seed: seed for Python, NumPy and torch.
        profile: ``"small"`` or ``"gpu"`` to force one; default: ``KD_PROFILE`` or auto-detection
            (see :func:`course_utils.core.profiles.select`).
        verbose: print which profile was chosen and why.
        fetch_assets: with the ``small`` profile, fetch the offline assets that are missing
            (:func:`fetch_missing_assets`). Default (None): only on Colab, where no set-up script ran; locally
            ``bash course.sh setup`` fetched them.

    Returns:
        The selected :class:`course_utils.core.profiles.Profile`.

    Raises:
        ValueError: for an unknown profile name or an invalid seed.
        TypeError: ``fetch_assets`` is not True, False or None.
        HubUnreachableError: the ``gpu`` profile was asked for where the hub is unreachable
            (see :func:`course_utils.core.profiles.select`).
        RuntimeError: when an offline profile is chosen after ``transformers``/``datasets`` were imported
            (see :func:`set_offline`): restart the kernel and run the set-up cell first.
    """
    if fetch_assets is not None and not isinstance(fetch_assets, bool):
        raise TypeError(f"fetch_assets must be True, False or None (fetch on Colab only), got {fetch_assets!r}")
    chosen = profiles.select(profile, verbose=verbose)
    if chosen.offline:
        set_offline(True)
    if chosen.is_small and (on_colab() if fetch_assets is None else fetch_assets):
        fetch_missing_assets(verbose=verbose)
    quiet_logging()
    seed_everything(seed)
    try:  # headless runs (CI, nbconvert) must not need a display
        import matplotlib

        if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
            matplotlib.use("Agg")
    except ImportError:  # pragma: no cover
        pass
    return chosen
