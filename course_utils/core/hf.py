"""Small helpers around ``transformers`` models that every track uses: loading quietly, the logits of a
classifier over a tokenised dataset, and the sizes a tokenizer and a model must agree on.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from torch import nn

__all__ = ['quiet_load', 'num_labels', 'embedding_rows', 'max_token_id', 'dataset_logits']


def quiet_load(cls: Any, name: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` without the load report about the (expected) freshly initialised classifier."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(name, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------- validation
def num_labels(model: "nn.Module") -> int | None:
    """The number of classes of a ``transformers`` classifier (``config.num_labels``), or None without a config."""
    return getattr(getattr(model, "config", None), "num_labels", None)


def embedding_rows(model: "nn.Module") -> int | None:
    """Rows of the input embedding matrix (the largest token id + 1 the model accepts), or None if it has none."""
    try:
        return model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return None


def max_token_id(dataset: Any) -> int | None:
    """The largest id in a tokenised dataset's ``input_ids`` column (compare with :func:`embedding_rows`), or None
    for an empty or untokenised dataset."""
    cols = getattr(dataset, "column_names", None)
    if not cols or "input_ids" not in cols or len(dataset) == 0:
        return None
    ids = dataset.select_columns(["input_ids"]).to_dict()["input_ids"]  # whole column at once (fast)
    return max((max(row) for row in ids if len(row)), default=None)


# --------------------------------------------------------------------------------------------- inference
@torch.inference_mode()
def dataset_logits(model: "nn.Module", dataset: "Dataset", tokenizer: Any, batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` for every example of a tokenised ``dataset``, in the dataset's order (float32, ``(N, C)``).

    Batches are formed from length-sorted examples (little padding), and the model runs in eval mode.
    """
    if "input_ids" not in dataset.column_names:
        raise ValueError("the dataset is not tokenised (no input_ids column); run course_utils.text.sentiment.tokenize first")
    keys = set(inspect.signature(model.forward).parameters)
    cols = [c for c in dataset.column_names if c in keys and c in ("input_ids", "attention_mask", "token_type_ids")]
    # to_dict() reads whole columns at once; indexing a datasets Column row by row costs ~0.5 ms a row
    columns = dataset.select_columns(cols).to_dict()
    lengths = np.array([len(x) for x in columns["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(dataset), num_labels(model) or 0), dtype=np.float32)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feats = [{c: columns[c][i] for c in cols} for i in idx]
            batch = tokenizer.pad(feats, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[idx] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out
