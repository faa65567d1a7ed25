"""Sentiment data for the BERT notebooks: movie-review snippets as a ``datasets.DatasetDict``.

``load_sentiment()`` returns four splits with the columns ``text`` and ``label`` (``0`` negative, ``1`` positive):

===========  ==============================================================================================
split        use
===========  ==============================================================================================
train        labelled examples to fine-tune the teacher and to train students on hard labels
validation   model selection, hyper-parameter sweeps
test         the numbers the notebooks report (touched once per model)
transfer     *unlabelled* snippets (``text`` only): the teacher labels them, students learn from its logits
===========  ==============================================================================================

``small`` profile (offline): the 10,605 Rotten Tomatoes snippets of Hutto & Gilbert (ICWSM 2014), shipped in the
``vaderSentiment`` sdist (asset ``rotten-tomatoes``). Each snippet has the mean of ten human ratings on a −4…+4
scale. **Label rule**: ``label = 1`` if ``score ≥ +0.5``, ``label = 0`` if ``score ≤ −0.5``; snippets with
``|score| < 0.5`` are dropped as neutral (:data:`NEUTRAL_MARGIN`). Exact duplicate texts (after whitespace and case
normalisation) are removed before splitting — keeping the first — so no test sentence is also a training
sentence. That leaves 10,070 snippets, 49.6 % positive; splits are drawn with a seeded permutation, stratified by
label.

``gpu`` profile: the hub's ``rotten_tomatoes`` dataset (Pang & Lee 2005; 8,530 / 1,066 / 1,066), whose train split
is divided into ``train`` and the unlabelled ``transfer`` split. Its smoke run (``KD_SMOKE=1``) replaces the download
with :func:`smoke_hub_dataset`: a few snippets in the hub dataset's exact schema and order.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import assets
from ..core.profiles import smoke_active

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ['NEUTRAL_MARGIN', 'HUB_DATASET', 'SPLITS', 'LABEL_NAMES', 'HUB_LABEL_NAMES', 'SMOKE_SPLIT_SIZES', 'score_to_label', 'read_snippets', 'smoke_hub_dataset', 'load_sentiment', 'tokenize', 'describe_splits']


NEUTRAL_MARGIN = 0.5
"""Snippets whose mean rating lies strictly between −0.5 and +0.5 are neutral and dropped."""
HUB_DATASET = "rotten_tomatoes"
SPLITS = ("train", "validation", "test", "transfer")
LABEL_NAMES = ("negative", "positive")
HUB_LABEL_NAMES = ("neg", "pos")
"""The label names of the hub's ``rotten_tomatoes`` (its ``label`` column is a ``ClassLabel`` with these)."""
SMOKE_SPLIT_SIZES = {"train": 48, "validation": 16, "test": 32}
"""Rows per split of :func:`smoke_hub_dataset` (half of each split positive)."""


def score_to_label(score: float, margin: float = NEUTRAL_MARGIN) -> int | None:
    """Map a −4…+4 sentiment score to a binary label: 1 if ``score ≥ margin``, 0 if ``score ≤ −margin``, else None.

    >>> score_to_label(2.3), score_to_label(-0.5), score_to_label(0.1)
    (1, 0, None)
    """
    if margin < 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    score = float(score)
    if not np.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    if score >= margin and score > 0:
        return 1
    if score <= -margin and score < 0:
        return 0
    return None


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def read_snippets(path: str | Path | None = None) -> list[tuple[int, float, str]]:
    """Read ``movieReviewSnippets_GroundTruth.txt``: ``(id, score, text)`` rows (tab-separated, UTF-8, CRLF).

    Raises:
        ValueError: on a malformed line (with its number).
    """
    if path is None:

        path = assets.path("rotten-tomatoes", "movieReviewSnippets_GroundTruth.txt")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise ValueError(f"{path}:{n}: expected 'id<TAB>score<TAB>text', got {line[:80]!r}")
            try:
                rows.append((int(parts[0]), float(parts[1]), parts[2].strip()))
            except ValueError as err:
                raise ValueError(f"{path}:{n}: bad id or score in {line[:80]!r}") from err
    return rows


def _split_sizes(n: int, sizes: dict[str, int | None]) -> dict[str, int]:
    fixed = {k: v for k, v in sizes.items() if v is not None}
    for k, v in fixed.items():
        if int(v) != v or v < 0:
            raise ValueError(f"n_{k} must be a non-negative integer, got {v!r}")
    rest = [k for k, v in sizes.items() if v is None]
    remaining = n - sum(fixed.values())
    if remaining < 0:
        raise ValueError(f"requested {sum(fixed.values())} examples ({fixed}) but only {n} are available")
    if len(rest) > 1:
        raise ValueError(f"at most one split size may be None (takes the remainder), got {rest}")
    out = {k: int(v) for k, v in fixed.items()}
    if rest:
        out[rest[0]] = remaining
    return out


def _stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation whose every prefix has (nearly) the overall label balance: interleaves the classes."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    keys = np.concatenate([(np.arange(len(g)) + rng.random()) / len(g) for g in groups])
    idx = np.concatenate(groups)
    return idx[np.argsort(keys, kind="stable")]


def load_sentiment(
    profile: Any = None,
    *,
    n_train: int | None = 2000,
    n_validation: int | None = 1000,
    n_test: int | None = 2000,
    n_transfer: int | None = None,
    seed: int = 0,
    margin: float = NEUTRAL_MARGIN,
    path: str | Path | None = None,
) -> "DatasetDict":
    """The movie-review sentiment data with fixed, seeded ``train``/``validation``/``test`` splits + ``transfer``.

    Args:
        profile: a :class:`course_utils.core.profiles.Profile` or its name; None → ``small`` (the offline snippets).
        n_train, n_validation, n_test, n_transfer: split sizes; one of them may be None and takes the remainder
            (default: ``transfer``). In the ``gpu`` profile ``validation``/``test`` are the hub's own splits and only
            ``n_train``/``n_transfer`` apply (both carved from the hub's train split; None there = "the rest").
        seed: seed of the split permutation (the same seed always gives the same splits).
        margin: neutral margin of the label rule (see :func:`score_to_label`), small profile only.
        path: the snippets file (default: the ``rotten-tomatoes`` asset).

    Returns:
        ``DatasetDict`` with ``train``/``validation``/``test`` (``text``, ``label``) and ``transfer`` (``text``).

    Raises:
        ValueError: impossible split sizes or an unknown profile.
    """
    name = getattr(profile, "name", profile) or "small"
    if name == "gpu":
        return _load_hub(n_train=n_train, n_transfer=n_transfer, seed=seed)
    if name != "small":
        raise ValueError(f"unknown profile {name!r}; expected 'small' or 'gpu'")
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    seen: set[str] = set()
    texts, labels = [], []
    for _, score, text in read_snippets(path):
        label = score_to_label(score, margin)
        key = _normalise(text)
        if label is None or not key or key in seen:
            continue
        seen.add(key)
        texts.append(text)
        labels.append(label)
    sizes = _split_sizes(len(texts), {"test": n_test, "validation": n_validation, "train": n_train,
                                      "transfer": n_transfer})
    order = _stratified_order(np.asarray(labels), seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(LABEL_NAMES))})
    out, start = {}, 0
    for split in ("test", "validation", "train", "transfer"):
        idx = order[start:start + sizes[split]]
        start += sizes[split]
        cols = {"text": [texts[i] for i in idx], "label": [labels[i] for i in idx]}
        out[split] = Dataset.from_dict(cols, features=features)
    out["transfer"] = out["transfer"].remove_columns("label")
    return DatasetDict({k: out[k] for k in SPLITS})


def smoke_hub_dataset(sizes: dict[str, int] | None = None, path: str | Path | None = None) -> "DatasetDict":
    """The smoke run's stand-in of the hub's ``rotten_tomatoes``: its exact schema, a few rows.

    Splits ``train``/``validation``/``test`` with the columns ``text`` (``string``) and ``label`` (``ClassLabel``
    ``neg``/``pos``), the hub's features; rows are shipped snippets (:func:`read_snippets`, labelled by
    :func:`score_to_label`), half of each split positive, listed positives first as the hub lists its train split.

    Args:
        sizes: rows per split (even numbers; default :data:`SMOKE_SPLIT_SIZES`).
        path: the snippets file (default: the ``rotten-tomatoes`` asset).

    Returns:
        ``DatasetDict`` with ``train``/``validation``/``test``, each ``(sizes[split],)`` rows.

    Raises:
        ValueError: a split missing from ``sizes``, an odd or non-positive size, or more rows than the snippets hold.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    sizes = dict(SMOKE_SPLIT_SIZES if sizes is None else sizes)
    if set(sizes) != set(SMOKE_SPLIT_SIZES):
        raise ValueError(f"sizes must give the rows of exactly the splits {sorted(SMOKE_SPLIT_SIZES)}, got {sorted(sizes)}")
    for split, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n % 2:
            raise ValueError(f"sizes[{split!r}] must be a positive even number of rows (half positive), got {n!r}")
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for _, score, text in read_snippets(path):
        label = score_to_label(score)
        if label is not None:
            by_label[label].append(text)
    half = sum(sizes.values()) // 2
    if min(len(v) for v in by_label.values()) < half:
        raise ValueError(f"the snippets hold fewer than {half} rows of a class; ask for smaller sizes")
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(HUB_LABEL_NAMES))})
    out, start = {}, 0
    for split in ("train", "validation", "test"):
        k = sizes[split] // 2
        pos, neg = by_label[1][start:start + k], by_label[0][start:start + k]
        start += k
        out[split] = Dataset.from_dict({"text": pos + neg, "label": [1] * k + [0] * k}, features=features)
    return DatasetDict(out)


def _load_hub_dataset(name: str) -> "DatasetDict":  # separated so tests can replace the download
    """The hub dataset ``name``; in the gpu profile's smoke run, :func:`smoke_hub_dataset` instead."""
    if smoke_active():
        if name != HUB_DATASET:
            raise ValueError(f"the smoke run has a stand-in for {HUB_DATASET!r} only, not {name!r}")
        return smoke_hub_dataset()
    from datasets import load_dataset

    return load_dataset(name)


def _load_hub(n_train: int | None, n_transfer: int | None, seed: int) -> "DatasetDict":
    from datasets import DatasetDict

    hub = _load_hub_dataset(HUB_DATASET)
    missing = {"train", "validation", "test"} - set(hub)
    if missing:
        raise ValueError(f"hub dataset {HUB_DATASET!r} lacks the splits {sorted(missing)}")
    train = hub["train"]
    n = len(train)
    if n_train is None and n_transfer is None:
        n_transfer = n // 2
    sizes = _split_sizes(n, {"train": n_train, "transfer": n_transfer})
    order = _stratified_order(np.asarray(train["label"]), seed)
    tr = train.select(order[:sizes["train"]])
    tf = train.select(order[sizes["train"]:sizes["train"] + sizes["transfer"]]).remove_columns("label")
    return DatasetDict({"train": tr, "validation": hub["validation"], "test": hub["test"], "transfer": tf})


def tokenize(data: "DatasetDict | Dataset", tokenizer: Any, max_length: int = 64) -> "DatasetDict | Dataset":
    """Tokenise the ``text`` column (truncate to ``max_length``, no padding: batches are padded by the collator).

    Adds ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT) and a ``length`` column (tokens per
    example) that length-grouped sampling and length-sorted inference use. ``text`` and ``label`` are kept.
    """
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")

    def enc(batch: dict) -> dict:
        out = tokenizer(batch["text"], truncation=True, max_length=max_length)
        out["length"] = [len(ids) for ids in out["input_ids"]]
        return out

    return data.map(enc, batched=True, desc=None)


def describe_splits(data: "DatasetDict") -> "Any":
    """A small pandas table: examples, share of positives and mean length (words) per split."""
    import pandas as pd

    rows = []
    for split, ds in data.items():
        words = np.array([len(t.split()) for t in ds["text"]])
        pos = float(np.mean(ds["label"])) if "label" in ds.column_names else float("nan")
        rows.append({"split": split, "examples": len(ds), "positive": round(pos, 3),
                     "mean words": round(float(words.mean()), 1), "labelled": "label" in ds.column_names})
    return pd.DataFrame(rows).set_index("split")
