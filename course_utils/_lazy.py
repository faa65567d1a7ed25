"""Lazy submodules for the subpackages' ``__init__``: ``course_utils.kd.losses`` works without importing it first."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_submodules(package: str, modules: list[str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports the listed submodules on first access."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
