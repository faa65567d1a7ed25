"""Trained models saved under the course cache, so later notebooks reuse them instead of retraining.

Layout: ``<cache_dir>/models/<profile>/<name>/`` holds what ``model.save_pretrained`` writes plus
``kd_course.json`` — the *fingerprint* of the recipe that produced the model (hyper-parameters, data sizes, seed)
and the metrics measured when it was trained. :func:`load` returns a model only if its stored fingerprint equals the
one asked for, so changing a recipe silently invalidates the old model instead of reusing it.

``KD_COURSE_CACHE`` moves the cache (see :func:`course_utils.assets.cache_dir`); ``KD_COURSE_RETRAIN=1`` makes
:func:`load` ignore every cached model (the notebooks then retrain and overwrite them).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import assets

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["META_FILE", "models_dir", "model_dir", "save", "load", "load_meta", "clear", "retrain_requested"]

META_FILE = "kd_course.json"


def models_dir(profile: str = "small") -> Path:
    """``<cache_dir>/models/<profile>`` (not created)."""
    if profile not in ("small", "gpu"):
        raise ValueError(f"unknown profile {profile!r}; expected 'small' or 'gpu'")
    return assets.cache_dir() / "models" / profile


def model_dir(name: str, profile: str = "small") -> Path:
    """Directory of one cached model; ``name`` is a simple identifier such as ``"sentiment-teacher"``."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"model name must be a plain directory name, got {name!r}")
    return models_dir(profile) / name


def retrain_requested() -> bool:
    """True when ``KD_COURSE_RETRAIN`` is set to a non-empty value other than ``0``."""
    return os.environ.get("KD_COURSE_RETRAIN", "") not in ("", "0")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def save(model: "nn.Module", name: str, fingerprint: dict, metrics: dict | None = None,
         profile: str = "small", tokenizer: Any = None) -> Path:
    """Save ``model`` (``save_pretrained``), its tokenizer if given, and ``{fingerprint, metrics}``; return the dir.

    The model is written to a temporary sibling directory first and swapped in, so an interrupted save never leaves
    a half-written model that :func:`load` would accept.
    """
    if not isinstance(fingerprint, dict):
        raise TypeError(f"fingerprint must be a dict of the recipe's settings, got {type(fingerprint).__name__}")
    target = model_dir(name, profile)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    meta = {"fingerprint": _jsonable(fingerprint), "metrics": _jsonable(metrics or {})}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def load_meta(name: str, profile: str = "small") -> dict | None:
    """The stored ``{"fingerprint": …, "metrics": …}`` of a cached model, or None if there is none."""
    path = model_dir(name, profile) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def load(name: str, model_class: Any, fingerprint: dict, profile: str = "small") -> "tuple[nn.Module, dict] | None":
    """``(model, metrics)`` from the cache if a model with exactly this ``fingerprint`` is stored, else None.

    Args:
        model_class: e.g. ``AutoModelForSequenceClassification``; its ``from_pretrained`` loads the directory.
    """
    if retrain_requested():
        return None
    meta = load_meta(name, profile)
    if meta is None or meta.get("fingerprint") != _jsonable(fingerprint):
        return None
    model = model_class.from_pretrained(model_dir(name, profile))
    model.eval()
    return model, meta.get("metrics", {})


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
