"""Evaluating a distilled language model against its teacher on the teacher's held-out responses: perplexity and
token-level KD loss (one teacher pass per batch for several students), greedy generations and a side-by-side table.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..evaluation._validation import _positive_int, _require_module, _temperature
from ..evaluation.speed import _device_of
from ..kd import llm_losses
from .data import CausalLMCollator, format_prompt, generate

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from datasets import Dataset
    from torch import nn

    from .recipe import LLMRecipe


__all__ = ['language_model_scores', 'perplexity', 'evaluate_lm', 'student_generations', 'side_by_side']


# =============================================================================================== generation
def _lm_batches(dataset: "Dataset", batch_size: int, pad_token_id: int) -> Iterator[dict[str, "torch.Tensor"]]:

    cols = ("input_ids", "attention_mask", "labels")
    missing = [c for c in cols if c not in getattr(dataset, "column_names", [])]
    if missing:
        raise ValueError(f"the dataset lacks column(s) {missing}: pass a tokenised SFT dataset (input_ids, "
                         "attention_mask, labels with -100 on the prompt), e.g. from course_utils.llm.data.sft_dataset")
    collate = CausalLMCollator(pad_token_id)
    columns = dataset.select_columns(list(cols)).to_dict()
    for s in range(0, len(dataset), batch_size):
        yield collate([{c: columns[c][i] for c in cols} for i in range(s, min(s + batch_size, len(dataset)))])


def language_model_scores(models: "Mapping[str, nn.Module]", dataset: "Dataset", teacher: "nn.Module | None" = None,
                          temperature: float = 2.0, batch_size: int = 16, pad_token_id: int = 0) -> "pd.DataFrame":
    """Held-out perplexity of several causal LMs on the response tokens of one tokenised SFT dataset.

    Perplexity = exp(mean cross-entropy of the tokens whose label is not -100), the next-token targets shifted by
    one. On the *teacher's* held-out responses it measures how likely a student finds what the teacher wrote; the
    teacher's own perplexity is the floor. With a ``teacher`` sharing the vocabulary, ``kd`` = T²·KL(p ‖ q) on the
    same tokens (the token-level KD loss). The teacher runs once per batch for all models.

    Returns:
        One row per model: ``perplexity``, ``ce`` (nats per token) and, with a teacher, ``kd``. ``attrs``:
        ``tokens`` (how many were scored) and, with a teacher, ``teacher_perplexity``.

    Raises:
        ValueError: no response token to score; a teacher with another vocabulary (names both sizes).
    """
    import pandas as pd
    import torch
    import torch.nn.functional as F


    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, m in models.items():
        _require_module(m, f"model {name!r}")
    t = _temperature(temperature)
    batch_size = _positive_int(batch_size, "batch_size")
    sums = {name: [0.0, 0.0] for name in models}
    t_ce, n = 0.0, 0
    all_models = dict(models, **({"\0teacher": teacher} if teacher is not None else {}))
    states = {name: m.training for name, m in all_models.items()}
    for m in all_models.values():
        m.eval()
    try:
        with torch.inference_mode():
            for batch in _lm_batches(dataset, batch_size, pad_token_id):
                targets = llm_losses.shift_labels(batch["labels"])
                valid = targets != -100
                n += int(valid.sum())
                log_p = None
                if teacher is not None:
                    dev = _device_of(teacher)
                    v = teacher(input_ids=batch["input_ids"].to(dev),
                                attention_mask=batch["attention_mask"].to(dev)).logits.float().cpu()[valid]
                    t_ce += float(F.cross_entropy(v, targets[valid], reduction="sum"))
                    log_p = torch.log_softmax(v / t, -1)
                for name, model in models.items():
                    dev = _device_of(model)
                    z = model(input_ids=batch["input_ids"].to(dev),
                              attention_mask=batch["attention_mask"].to(dev)).logits.float().cpu()[valid]
                    sums[name][0] += float(F.cross_entropy(z, targets[valid], reduction="sum"))
                    if log_p is not None:
                        llm_losses.check_same_vocabulary(z, log_p)
                        log_q = torch.log_softmax(z / t, -1)
                        sums[name][1] += float((log_p.exp() * (log_p - log_q)).sum()) * t * t
    finally:
        for name, m in all_models.items():
            m.train(states[name])
    if n == 0:
        raise ValueError("the dataset has no response token to score (every label is -100)")
    rows = {name: {"perplexity": math.exp(ce / n), "ce": ce / n, **({"kd": kd / n} if teacher is not None else {})}
            for name, (ce, kd) in sums.items()}
    table = pd.DataFrame(rows).T
    table.attrs["tokens"] = n
    if teacher is not None:
        table.attrs["teacher_perplexity"] = math.exp(t_ce / n)
    return table


def perplexity(model: "nn.Module", dataset: "Dataset", batch_size: int = 16, pad_token_id: int = 0) -> float:
    """exp(mean cross-entropy) of ``model`` on the response tokens of a tokenised SFT dataset
    (:func:`language_model_scores` for one model)."""
    return float(language_model_scores({"model": model}, dataset, None, 1.0, batch_size, pad_token_id)
                 .loc["model", "perplexity"])


# --------------------------------------------------------------------------------------------------- perplexity
def evaluate_lm(model: "nn.Module", dataset: "Dataset", teacher: "nn.Module | None" = None, temperature: float = 2.0,
                batch_size: int = 16, pad_token_id: int = 0) -> dict[str, float]:
    """Held-out scores of ``model`` on the response tokens of a tokenised SFT ``dataset``.

    Returns:
        ``{"perplexity": exp(mean CE), "ce": mean CE (nats/token), "tokens": N}`` plus, with a ``teacher`` that
        shares the vocabulary, ``"kd"``: T²·KL(p ‖ q) averaged over the same tokens, and ``"teacher_perplexity"``.
    """

    table = language_model_scores({"model": model}, dataset, teacher=teacher, temperature=temperature,
                                             batch_size=batch_size, pad_token_id=pad_token_id)
    row = table.loc["model"]
    out = {"perplexity": float(row["perplexity"]), "ce": float(row["ce"]), "tokens": int(table.attrs["tokens"])}
    if teacher is not None:
        out.update(kd=float(row["kd"]), teacher_perplexity=float(table.attrs["teacher_perplexity"]))
    return out

# --------------------------------------------------------------------------------------------------- samples
def student_generations(model: "nn.Module", tokenizer: Any, records: Sequence[Mapping[str, Any]], r: "LLMRecipe",
                        batch_size: int | None = None) -> list[str]:
    """Greedy responses of a student to the records' prompts, in the *student's* prompt format and token cap."""
    texts = [format_prompt(tokenizer, x["instruction"], x.get("context", ""), r.student_prompt, r.system_prompt)
             for x in records]
    out = generate(model, tokenizer, texts, r.max_new_tokens, batch_size or r.generation_batch_size, r.student_prompt)
    return [g["response"] for g in out]


def side_by_side(records: Sequence[Mapping[str, Any]], columns: Mapping[str, Sequence[str]], width: int = 90
                 ) -> "pd.DataFrame":
    """A table with one row per prompt: the instruction, then one column per model (texts cut to ``width``)."""
    import pandas as pd

    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    data = {"prompt": [cut(x["instruction"]) for x in records]}
    for name, texts in columns.items():
        if len(texts) != len(records):
            raise ValueError(f"column {name!r} has {len(texts)} texts for {len(records)} prompts")
        data[name] = [cut(t) for t in texts]
    return pd.DataFrame(data)
