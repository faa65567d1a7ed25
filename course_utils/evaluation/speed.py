"""Inference latency measured correctly: same inputs for every model, warm-up, fixed threads, interleaved
repeats, medians; speed-ups relative to a reference model.
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._validation import _positive_int

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from torch import nn

__all__ = ['text_batches', 'default_threads', 'measure_latency', 'speedups', 'benchmark_latency']


# ==================================================================================================== speed
def text_batches(tokenizer: Any, texts: Sequence[str], batch_sizes: Sequence[int], max_length: int = 64
                 ) -> "dict[int, dict[str, torch.Tensor]]":
    """``{b: tokenizer(texts[:b])}`` — the first ``b`` texts, padded to the longest and truncated to ``max_length``.

    Every model of a benchmark gets the same batches, so their timings compare like with like.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    sizes = [_positive_int(b, "batch size") for b in batch_sizes]
    if not sizes:
        raise ValueError("batch_sizes is empty")
    if len(texts) < max(sizes):
        raise ValueError(f"need at least {max(sizes)} texts, got {len(texts)} (the largest batch takes the first "
                         f"{max(sizes)})")
    texts = list(texts)
    return {b: dict(tokenizer(texts[:b], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
            for b in sizes}


def _forward_keys(model: Any) -> set[str] | None:
    fn = model.forward if hasattr(model, "forward") else model
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None  # accepts anything
    return {p.name for p in params}


def _device_of(model: Any) -> "torch.device":
    import torch

    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    import torch

    old = torch.get_num_threads()
    n = old if n is None else _positive_int(n, "threads")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


def default_threads() -> int:
    """The thread count benchmarks use unless told otherwise: all cores, at most 8 (printed with every result)."""
    return min(8, os.cpu_count() or 1)


def measure_latency(
    models: "Mapping[str, nn.Module | Callable[..., Any]]",
    inputs: "Mapping[int, Mapping[str, Any]] | Callable[[int], Mapping[str, Any]]",
    batch_sizes: Sequence[int] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    rotate: bool = True,
) -> "pd.DataFrame":
    """Inference latency of several models, measured side by side the way that gives reproducible *ratios*.

    * **Warm-up**: each (model, batch size) first runs ``warmup`` untimed times — the first calls pay for memory
      allocation, lazy initialisation and cold caches.
    * **Fixed threads**: ``torch.set_num_threads(threads)`` for the whole measurement (restored afterwards).
    * **Interleaved repeats**: repeat r times A, B, C, … (rotated by one each round, so no model always runs
      right after the same one), so a background hiccup slows every model alike.
    * **Median and p90** over the ``repeats`` timed runs (``time.perf_counter``): the median is robust to the odd
      slow run that drags a mean up; the p90 shows the tail a user would notice.
    * Models run in eval mode under ``torch.inference_mode()``; on CUDA every timed call is synchronised.

    Args:
        models: ``{name: model}``; a model is an ``nn.Module`` called as ``model(**inputs)`` (only the inputs its
            ``forward`` accepts are passed), or any callable (e.g. ``lambda **kw: m.generate(**kw, …)``).
        inputs: ``{batch_size: {keyword: tensor}}`` (e.g. from :func:`text_batches`), or a function
            ``batch_size → keyword inputs`` together with ``batch_sizes``.
        batch_sizes: which batch sizes to measure (default: the keys of ``inputs``).
        repeats: timed runs per (model, batch size) (≥ 3 for a p90 to mean anything).
        warmup: untimed runs before them.
        threads: CPU threads; default :func:`default_threads`.
        rotate: rotate the order of the models between rounds.

    Returns:
        A DataFrame indexed by ``(model, batch_size)`` with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``
        and ``throughput`` (examples per second at the median). ``attrs``: ``threads``, ``repeats``, ``warmup``
        and ``raw`` (``{(model, batch_size): [seconds, …]}``).
    """
    import pandas as pd
    import torch

    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, model in models.items():
        if not callable(model):
            raise TypeError(f"model {name!r} is a {type(model).__name__}, which cannot be called")
    for value in (repeats, warmup):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"repeats and warmup must be integers, got {repeats!r}, {warmup!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats}, {warmup}")
    if callable(inputs) and not isinstance(inputs, Mapping):
        if batch_sizes is None:
            raise ValueError("inputs is a function: give the batch_sizes to call it with")
        sizes = [_positive_int(b, "batch size") for b in batch_sizes]
        batches = {b: inputs(b) for b in sizes}
    elif isinstance(inputs, Mapping):
        sizes = list(inputs) if batch_sizes is None else [_positive_int(b, "batch size") for b in batch_sizes]
        missing = [b for b in sizes if b not in inputs]
        if missing:
            raise ValueError(f"no inputs for batch size(s) {missing}; inputs has {list(inputs)}")
        batches = {b: inputs[b] for b in sizes}
    else:
        raise TypeError(f"inputs must be {{batch_size: keyword inputs}} or a function, got {type(inputs).__name__}")
    if not sizes:
        raise ValueError("batch_sizes is empty")
    for b, batch in batches.items():
        if not isinstance(batch, Mapping):
            raise TypeError(f"the inputs for batch size {b} must be a mapping of keyword arguments, got "
                            f"{type(batch).__name__}")

    names = list(models)
    prepared: dict[tuple[str, int], dict[str, Any]] = {}
    devices = {}
    for name, model in models.items():
        if isinstance(model, torch.nn.Module):
            model.eval()
        keys = _forward_keys(model)
        devices[name] = _device_of(model)
        for b in sizes:
            kw = {k: v for k, v in batches[b].items() if keys is None or k in keys}
            prepared[(name, b)] = {k: (v.to(devices[name]) if hasattr(v, "to") else v) for k, v in kw.items()}

    def sync(name: str) -> None:
        if devices[name].type == "cuda":
            torch.cuda.synchronize(devices[name])

    raw: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in sizes}
    with _threads(threads if threads is not None else default_threads()) as n_threads, torch.inference_mode():
        for b in sizes:
            for name in names:
                for _ in range(warmup):
                    models[name](**prepared[(name, b)])
                sync(name)
            for r in range(repeats):
                order = names[r % len(names):] + names[:r % len(names)] if rotate else names
                for name in order:
                    start = time.perf_counter()
                    models[name](**prepared[(name, b)])
                    sync(name)
                    raw[(name, b)].append(time.perf_counter() - start)
    rows = []
    for (name, b), secs in raw.items():
        ms = np.array(secs) * 1000
        median = float(np.median(ms))
        rows.append({"model": name, "batch_size": b, "median_ms": median, "p90_ms": float(np.percentile(ms, 90)),
                     "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "throughput": 1000 * b / median})
    table = pd.DataFrame(rows).set_index(["model", "batch_size"])
    table.attrs.update(threads=n_threads, repeats=repeats, warmup=warmup, raw=raw)
    return table


def speedups(latency: "pd.DataFrame", reference: str, stat: str = "median_ms") -> "pd.DataFrame":
    """Speed-up of every model over ``reference`` (its latency ÷ theirs), per batch size: models × batch sizes.

    Only ratios measured in the same run are meaningful; that is what a :func:`measure_latency` table holds.
    """
    if stat not in latency.columns:
        raise ValueError(f"stat {stat!r} is not a column of the latency table ({list(latency.columns)})")
    wide = latency[stat].unstack("batch_size")
    if reference not in wide.index:
        raise ValueError(f"reference {reference!r} was not measured; models: {list(wide.index)}")
    return wide.loc[reference] / wide


def benchmark_latency(
    models: "dict[str, nn.Module]",
    tokenizer: Any,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = None,
    max_length: int = 64,
) -> "pd.DataFrame":
    """CPU inference latency of text classifiers: median milliseconds per batch, one column per batch size.

    :func:`measure_latency` on :func:`text_batches` (same inputs for every model, warm-up, fixed threads,
    interleaved repeats, median), reshaped into the wide table notebook 03 prints.

    Returns:
        DataFrame indexed by model name with columns ``"latency b{b} (ms)"``; ``attrs["threads"]`` and
        ``attrs["raw"]`` (all timings, seconds) record how it was measured; ``attrs["latency"]`` is the full
        :func:`measure_latency` table (with p90 and throughput).

    Raises:
        ValueError: no models, fewer texts than the largest batch, a model not on the CPU, bad repeats/warm-up.
    """
    if not models:
        raise ValueError("models is empty")
    for name, model in models.items():
        if _device_of(model).type != "cpu":
            raise ValueError(f"model {name!r} is on {_device_of(model)}; benchmark_latency measures CPU latency")
    batches = text_batches(tokenizer, texts, batch_sizes, max_length)
    long = measure_latency(models, batches, list(batch_sizes), repeats, warmup, threads)
    wide = long["median_ms"].unstack("batch_size")
    wide = wide.loc[list(models), list(batch_sizes)]
    wide.columns = [f"latency b{b} (ms)" for b in batch_sizes]
    wide.index.name = None
    wide.attrs.update(threads=long.attrs["threads"], raw=long.attrs["raw"], latency=long)
    return wide
