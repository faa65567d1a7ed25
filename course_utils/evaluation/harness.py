"""The evaluation harness of notebook 06: one table per set of classifiers (quality, fidelity to the teacher,
calibration, size, latency) with bootstrap intervals, the Pareto front of accuracy against latency, and where the
summary is saved.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..core import assets
from ..core.hf import dataset_logits
from ._validation import _array, _labels, _log_softmax, _require_module, _scores
from .calibration import expected_calibration_error
from .metrics import accuracy, agreement, f1, kl_to_teacher
from .size import count_parameters, inference_memory_mb, size_on_disk_mb, weights_memory_mb
from .speed import measure_latency, speedups, text_batches
from .stats import BootstrapResult, accuracy_difference, compare_accuracies

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from datasets import Dataset
    from torch import nn

__all__ = ['classification_metrics', 'SUMMARY_LABELS', 'ClassifierEvaluation', 'readable_columns', 'evaluate_classifiers', 'pareto_front', 'results_path']


def classification_metrics(logits: Any, labels: Any, teacher_logits: Any = None, n_bins: int = 15
                           ) -> dict[str, float]:
    """Every quality number of one classifier on one labelled set.

    Returns:
        ``accuracy``, ``macro_f1``, ``ece`` (:func:`expected_calibration_error` with ``n_bins`` bins),
        ``confidence`` (mean top-class probability), ``nll`` (mean negative log-likelihood of the label, nats) and,
        with ``teacher_logits``, ``agreement`` and ``kl_to_teacher`` (at T = 1).
    """
    z = _scores(logits)
    y = _labels(labels, len(z), z.shape[1])
    log_q = _log_softmax(z)
    probs = np.exp(log_q)
    out = {"accuracy": accuracy(z, y), "macro_f1": f1(z, y, "macro"),
           "ece": expected_calibration_error(probs, y, n_bins), "confidence": float(probs.max(1).mean()),
           "nll": float(-log_q[np.arange(len(y)), y].mean())}
    if teacher_logits is not None:
        out["agreement"] = agreement(z, teacher_logits)
        out["kl_to_teacher"] = kl_to_teacher(z, teacher_logits)
    return out


# ================================================================================================ the harness
SUMMARY_LABELS = {
    "params_m": "parameters (M)",
    "size_mb": "size on disk (MB)",
    "weights_mb": "weights in memory (MB)",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "ece": "ECE",
    "confidence": "mean confidence",
    "nll": "NLL",
    "agreement": "agreement with reference",
    "kl_to_teacher": "KL(reference ‖ model)",
}


@dataclass
class ClassifierEvaluation:
    """What :func:`evaluate_classifiers` measured.

    Attributes:
        table: one row per model; columns ``params_m``, ``size_mb``, ``weights_mb``, ``activations_mb_b{b}``,
            ``peak_mb_b{b}`` (weights + activations), per batch size ``b{b}_median_ms``, ``b{b}_p90_ms``,
            ``b{b}_throughput`` (examples/s) and ``b{b}_speedup`` (over the reference, same run), then
            ``accuracy``, ``macro_f1``, ``ece``, ``confidence``, ``nll``, ``agreement`` and ``kl_to_teacher`` (to
            the reference).
        latency: the :func:`measure_latency` table (``(model, batch_size)`` rows).
        logits: ``{model: (N, C) logits}`` on the evaluation set.
        labels: its ``N`` labels.
        reference: the model every other one is compared with (usually the teacher).
    """

    table: "pd.DataFrame"
    latency: "pd.DataFrame | None"
    logits: dict[str, np.ndarray]
    labels: np.ndarray
    reference: str | None
    settings: dict = field(default_factory=dict)

    def difference(self, a: str, b: str, **kwargs: Any) -> BootstrapResult:
        """accuracy(a) − accuracy(b) with a paired bootstrap CI (:func:`accuracy_difference`)."""
        for m in (a, b):
            if m not in self.logits:
                raise ValueError(f"unknown model {m!r}; evaluated: {list(self.logits)}")
        return accuracy_difference(self.logits[a], self.logits[b], self.labels, label=f"{a} − {b}", **kwargs)

    def compare(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> "pd.DataFrame":
        """:func:`compare_accuracies` for the given ``(A, B)`` pairs."""
        return compare_accuracies(self.logits, self.labels, pairs, **kwargs)

    def pretty(self, columns: Sequence[str] | None = None, digits: int = 3) -> "pd.DataFrame":
        """The table with readable column names (for display), rounded."""
        t = self.table if columns is None else self.table[list(columns)]
        return t.rename(columns=_pretty_name).round(digits)

    def to_markdown(self, columns: Sequence[str] | None = None, digits: int = 3) -> str:
        """The (readable) table as GitHub markdown."""
        return _markdown(self.pretty(columns, digits))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the full table (machine-readable column names) to ``path``; returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(path, index_label="model")
        return path


def readable_columns(table: "pd.DataFrame") -> "pd.DataFrame":
    """``table`` with the harness's machine-readable column names (``b32_median_ms``, ``size_mb``, …) replaced by
    readable ones (``b32 latency median (ms)``, ``size on disk (MB)``, …); other columns keep their names."""
    return table.rename(columns=_pretty_name)


def _pretty_name(column: str) -> str:
    if column in SUMMARY_LABELS:
        return SUMMARY_LABELS[column]
    m = re.fullmatch(r"b(\d+)_(median_ms|p90_ms|throughput|speedup)", column)
    if m:
        what = {"median_ms": "latency median (ms)", "p90_ms": "latency p90 (ms)", "throughput": "throughput (ex/s)",
                "speedup": "speed-up"}[m.group(2)]
        return f"b{m.group(1)} {what}"
    m = re.fullmatch(r"(activations|peak)_mb_b(\d+)", column)
    if m:
        return f"{'activation' if m.group(1) == 'activations' else 'peak'} memory b{m.group(2)} (MB)"
    return column


def _markdown(df: "pd.DataFrame") -> str:
    """GitHub markdown without the optional ``tabulate`` dependency of ``DataFrame.to_markdown``."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    head = "| " + " | ".join([str(df.index.name or "")] + [str(c) for c in df.columns]) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"
    body = ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |" for i, row in zip(df.index, df.values)]
    return "\n".join([head, rule, *body])


def evaluate_classifiers(
    models: "Mapping[str, nn.Module]",
    dataset: "Dataset",
    tokenizer: Any,
    *,
    reference: str | None = None,
    logits: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    max_length: int = 64,
    n_bins: int = 15,
    memory_batch_size: int | None = None,
    size_format: str = "state_dict",
    text_column: str = "text",
) -> ClassifierEvaluation:
    """The evaluation harness: every number of the trade-off for several text classifiers, in one run.

    For each model: parameter count, size on disk, weights in memory, peak memory of one batch, latency (median and
    p90) and throughput at every batch size (:func:`measure_latency`: warm-up, fixed threads, interleaved repeats),
    speed-up over the ``reference`` (same run), and on the labelled ``dataset``: accuracy, macro-F1, ECE, mean
    confidence, NLL, agreement with and KL to the reference.

    Args:
        models: ``{name: model}`` (``transformers`` sequence classifiers, fp32 or quantized), all on the CPU.
        dataset: a tokenised, labelled split (``input_ids``, ``label`` and ``text_column``), e.g. ``task.data["test"]``.
        tokenizer: the tokenizer every model shares.
        reference: the model speed-ups, agreement and KL refer to (default: the first).
        logits: precomputed ``{name: (N, C) logits}`` on ``dataset`` (e.g. stored with a cached student); models
            without an entry are run with :func:`course_utils.core.hf.dataset_logits`.
        batch_sizes: latency batch sizes (the first ``b`` texts of ``dataset``); ``()`` skips speed and memory.
        repeats, warmup, threads: see :func:`measure_latency`.
        max_length: truncation length of the latency batches (as in training).
        n_bins: ECE bins.
        memory_batch_size: batch size of the memory measurement (default: the largest of ``batch_sizes``).
        size_format: ``"state_dict"`` (default; comparable across fp32 and int8 models) or ``"save_pretrained"``,
            see :func:`size_on_disk_mb`.
        text_column: the dataset's raw-text column.
    """
    import pandas as pd


    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, m in models.items():
        _require_module(m, f"model {name!r}")
    reference = reference if reference is not None else next(iter(models))
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    cols = getattr(dataset, "column_names", None)
    if cols is None or "label" not in cols:
        raise ValueError("dataset must be a labelled, tokenised datasets.Dataset (with a 'label' column)")
    labels = _array(dataset["label"], "labels")
    logits = dict(logits or {})
    unknown = [k for k in logits if k not in models]
    if unknown:
        raise ValueError(f"logits given for unknown model(s) {unknown}; models: {list(models)}")
    out_logits = {}
    for name, model in models.items():
        z = _scores(logits[name], f"logits[{name!r}]") if name in logits else \
            dataset_logits(model, dataset, tokenizer).astype(np.float64)
        if len(z) != len(labels):
            raise ValueError(f"logits of {name!r} have {len(z)} rows for {len(labels)} examples")
        out_logits[name] = z
    rows: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        rows[name] = {"params_m": count_parameters(model) / 1e6, "size_mb": size_on_disk_mb(model, size_format),
                      "weights_mb": weights_memory_mb(model)}
    latency = None
    sizes = [int(b) for b in batch_sizes]
    if sizes:
        if text_column not in cols:
            raise ValueError(f"dataset has no {text_column!r} column to build latency batches from")
        batches = text_batches(tokenizer, dataset[text_column][: max(sizes)], sizes, max_length)
        mem_b = memory_batch_size or max(sizes)
        mem_batch = batches.get(mem_b) or text_batches(tokenizer, dataset[text_column][:mem_b], [mem_b], max_length)[mem_b]
        for name, model in models.items():
            act = inference_memory_mb(model, mem_batch)
            rows[name][f"activations_mb_b{mem_b}"] = act
            rows[name][f"peak_mb_b{mem_b}"] = rows[name]["weights_mb"] + act
        latency = measure_latency(models, batches, sizes, repeats, warmup, threads)
        ratio = speedups(latency, reference)
        for name in models:
            for b in sizes:
                stats_ = latency.loc[(name, b)]
                rows[name].update({f"b{b}_median_ms": stats_["median_ms"], f"b{b}_p90_ms": stats_["p90_ms"],
                                   f"b{b}_throughput": stats_["throughput"], f"b{b}_speedup": ratio.loc[name, b]})
    for name in models:
        rows[name].update(classification_metrics(out_logits[name], labels, out_logits[reference], n_bins))
    table = pd.DataFrame(rows).T
    table.index.name = "model"
    settings = {"reference": reference, "batch_sizes": sizes, "repeats": repeats, "warmup": warmup,
                "threads": latency.attrs["threads"] if latency is not None else None, "n_bins": n_bins,
                "size_format": size_format, "examples": len(labels)}
    table.attrs.update(settings)
    return ClassifierEvaluation(table, latency, out_logits, labels, reference, settings)


def pareto_front(table: "pd.DataFrame", maximize: Sequence[str] = (), minimize: Sequence[str] = ()) -> "pd.Series":
    """Which rows are Pareto-optimal: no other row is at least as good on every criterion and better on one.

    Args:
        table: one row per model.
        maximize: columns where higher is better (e.g. ``["accuracy"]``).
        minimize: columns where lower is better (e.g. ``["b32_median_ms", "size_mb"]``).

    Returns:
        A boolean Series aligned with ``table.index``.
    """
    import pandas as pd

    criteria = list(maximize) + list(minimize)
    if not criteria:
        raise ValueError("give at least one column to maximize or minimize")
    missing = [c for c in criteria if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table ({list(table.columns)})")
    values = np.column_stack([table[c].to_numpy(float) for c in maximize] +
                             [-table[c].to_numpy(float) for c in minimize])
    if np.isnan(values).any():
        raise ValueError("the criteria columns contain NaN")
    front = []
    for i in range(len(values)):
        others = np.delete(values, i, axis=0)
        dominated = np.any(np.all(others >= values[i], axis=1) & np.any(others > values[i], axis=1))
        front.append(not dominated)
    return pd.Series(front, index=table.index, name="pareto")


def results_path(name: str) -> Path:
    """Where a notebook's result tables go: ``<course cache>/results/<name>`` (the directory is created)."""

    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name such as '06_summary.csv', got {name!r}")
    folder = assets.cache_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
