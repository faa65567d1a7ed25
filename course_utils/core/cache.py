"""Trained models saved under the course cache, so later notebooks reuse them instead of retraining.

Layout: ``<cache_dir>/models/<profile>/<name>/`` holds what ``model.save_pretrained`` writes plus
``kd_course.json`` — the *fingerprint* of the recipe that produced the model (hyper-parameters, data sizes, seed)
and the metrics measured when it was trained. :func:`load` returns a model only if its stored fingerprint equals the
one asked for, so changing a recipe silently invalidates the old model instead of reusing it.

``KD_COURSE_CACHE`` moves the cache (see :func:`course_utils.core.assets.cache_dir`); ``KD_COURSE_RETRAIN=1`` makes
:func:`load` ignore every cached model (the notebooks then retrain and overwrite them).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import assets, profiles

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn



__all__ = ["save_entry", "lookup", "jsonable", 'META_FILE', 'models_dir', 'model_dir', 'retrain_requested', 'save', 'load_meta', 'load', 'clear', 'cached_json']


META_FILE = "kd_course.json"


def models_dir(profile: str = "small") -> Path:
    """``<cache_dir>/models/<profile>`` (not created).

    In the gpu profile's smoke run (``KD_SMOKE=1``, :func:`course_utils.core.profiles.smoke_active`) the gpu
    profile's entries live under ``<cache_dir>/models/gpu-smoke`` instead, so a smoke run's tiny stand-ins never
    take the place of a real gpu model in the cache.
    """
    if profile not in ("small", "gpu"):
        raise ValueError(f"unknown profile {profile!r}; expected 'small' or 'gpu'")
    if profile == "gpu" and profiles.smoke_active():
        return assets.cache_dir() / "models" / "gpu-smoke"
    return assets.cache_dir() / "models" / profile


def model_dir(name: str, profile: str = "small") -> Path:
    """Directory of one cached model; ``name`` is a simple identifier such as ``"sentiment-teacher"``."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"model name must be a plain directory name, got {name!r}")
    return models_dir(profile) / name


def retrain_requested() -> bool:
    """True when ``KD_COURSE_RETRAIN`` is set to a non-empty value other than ``0``."""
    return os.environ.get("KD_COURSE_RETRAIN", "") not in ("", "0")


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (keys sorted, unknown objects as ``str``): compare fingerprints this way."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _check_fingerprint(fingerprint: Any) -> None:
    if not isinstance(fingerprint, dict):
        raise TypeError(f"fingerprint must be a dict of the recipe's settings, got {type(fingerprint).__name__}")


def save_entry(name: str, fingerprint: dict, metrics: dict | None, profile: str,
               write: Callable[[Path], Any]) -> Path:
    """Write one cache entry atomically and return its directory.

    ``write(directory)`` fills a temporary sibling directory; ``{fingerprint, metrics}`` is added as
    :data:`META_FILE`, then the directory is swapped in for the old entry. An interrupted save therefore never
    leaves a half-written entry that :func:`load` or :func:`load_meta` would accept. The one place the course
    writes to its cache: models, datasets, adapters and JSON values all go through it.
    """
    _check_fingerprint(fingerprint)
    target = model_dir(name, profile)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    meta = {"fingerprint": jsonable(fingerprint), "metrics": jsonable(metrics or {})}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def save(model: "nn.Module", name: str, fingerprint: dict, metrics: dict | None = None,
         profile: str = "small", tokenizer: Any = None) -> Path:
    """Save ``model`` (``save_pretrained``), its tokenizer if given, and ``{fingerprint, metrics}``; return the dir
    (atomically, through :func:`save_entry`)."""

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

    return save_entry(name, fingerprint, metrics, profile, write)


def load_meta(name: str, profile: str = "small") -> dict | None:
    """The stored ``{"fingerprint": …, "metrics": …}`` of a cached model, or None if there is none."""
    path = model_dir(name, profile) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def lookup(name: str, fingerprint: dict, profile: str = "small", needs: str = "",
           honour_retrain: bool = True) -> dict | None:
    """The stored metrics of the entry ``name`` if it was written with exactly this ``fingerprint``, else None.

    The read side of :func:`save_entry`, used by every cache-or-train function.

    Args:
        needs: a file or directory inside the entry that must exist too (e.g. ``"data"``), "" for none.
        honour_retrain: with ``KD_COURSE_RETRAIN=1`` every lookup misses; ``False`` for conversions that no
            retraining changes (SmolLM2's GGUF → fp32).
    """
    _check_fingerprint(fingerprint)
    if honour_retrain and retrain_requested():
        return None
    meta = load_meta(name, profile)
    if meta is None or meta.get("fingerprint") != jsonable(fingerprint):
        return None
    if needs and not (model_dir(name, profile) / needs).exists():
        return None
    return meta.get("metrics", {})


def load(name: str, model_class: Any, fingerprint: dict, profile: str = "small") -> "tuple[nn.Module, dict] | None":
    """``(model, metrics)`` from the cache if a model with exactly this ``fingerprint`` is stored, else None.

    Args:
        model_class: e.g. ``AutoModelForSequenceClassification``; its ``from_pretrained`` loads the directory.
    """
    metrics = lookup(name, fingerprint, profile)
    if metrics is None:
        return None
    model = model_class.from_pretrained(model_dir(name, profile))
    model.eval()
    return model, metrics


def clear(profile: str = "small") -> int:
    """Delete every cached model of a profile; returns how many were removed."""
    root = models_dir(profile)
    if not root.is_dir():
        return 0
    removed = 0
    for child in root.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
            removed += 1
    return removed


def cached_json(name: str, fingerprint: dict, compute: Callable[[], Any], profile: str = "small",
                verbose: bool = True) -> tuple[Any, bool]:
    """``(value, from_cache)``: ``compute()``'s JSON-able result, stored under the course cache with ``fingerprint``.

    The value is recomputed when the fingerprint differs or ``KD_COURSE_RETRAIN`` is set (see
    :mod:`course_utils.core.cache`). Writes go to a temporary file first, so an interrupted run never leaves a
    half-written value behind.
    """
    target = model_dir(name, profile)
    if lookup(name, fingerprint, profile, needs="value.json") is not None:
        return json.loads((target / "value.json").read_text()), True
    start = time.perf_counter()
    value = compute()
    seconds = round(time.perf_counter() - start, 1)
    save_entry(name, fingerprint, {"seconds": seconds}, profile, lambda d: (d / "value.json").write_text(json.dumps(value)))
    if verbose:
        print(f"{name}: computed in {seconds:.0f} s and cached ({target})")
    return value, False
