"""Evaluating a distilled language model against its teacher: held-out perplexity and KD loss, ROUGE-L of its
generations against the teacher's, and side-by-side samples.

* :func:`evaluate_lm` — on the *teacher's* held-out responses: perplexity exp(mean CE) of the response tokens (how
  likely the student finds what the teacher wrote; the teacher's own is the floor) and, for a teacher with the same
  vocabulary, the token-level KD loss T²·KL(p ‖ q) on the same tokens.
* :func:`rouge_l` — ROUGE-L F1 (Lin 2004): the longest common *subsequence* of words of two texts, as precision
  and recall combined. It scores what the student *generates* (greedy) against what the teacher generated for the
  same prompt — the text-level view that perplexity (a teacher-forced, token-level view) misses.
* :func:`student_generations` / :func:`side_by_side` — greedy generations in the student's prompt format and a
  table of teacher, pruned and distilled students for the same prompts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .llm_data import format_prompt, generate

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from datasets import Dataset
    from torch import nn

    from .llm import LLMRecipe

__all__ = ["evaluate_lm", "evaluate_many", "rouge_l", "rouge_l_scores", "student_generations", "side_by_side", "words"]


# --------------------------------------------------------------------------------------------------- perplexity
def evaluate_lm(model: "nn.Module", dataset: "Dataset", teacher: "nn.Module | None" = None, temperature: float = 2.0,
                batch_size: int = 16, pad_token_id: int = 0) -> dict[str, float]:
    """Held-out scores of ``model`` on the response tokens of a tokenised SFT ``dataset``.

    Returns:
        ``{"perplexity": exp(mean CE), "ce": mean CE (nats/token), "tokens": N}`` plus, with a ``teacher`` that
        shares the vocabulary, ``"kd"``: T²·KL(p ‖ q) averaged over the same tokens, and ``"teacher_perplexity"``.
    """
    from . import evaluation

    table = evaluation.language_model_scores({"model": model}, dataset, teacher=teacher, temperature=temperature,
                                             batch_size=batch_size, pad_token_id=pad_token_id)
    row = table.loc["model"]
    out = {"perplexity": float(row["perplexity"]), "ce": float(row["ce"]), "tokens": int(table.attrs["tokens"])}
    if teacher is not None:
        out.update(kd=float(row["kd"]), teacher_perplexity=float(table.attrs["teacher_perplexity"]))
    return out


def evaluate_many(models: Mapping[str, "nn.Module"], dataset: "Dataset", teacher: "nn.Module | None" = None,
                  temperature: float = 2.0, batch_size: int = 16, pad_token_id: int = 0) -> "pd.DataFrame":
    """:func:`evaluate_lm` for several models at once, the teacher run once per batch; one row per model.

    The evaluation harness's :func:`course_utils.evaluation.language_model_scores`: columns ``perplexity`` and
    ``ce`` on the teacher's response tokens and, with a ``teacher``, ``kd`` (T²·KL(p ‖ q) against it); the teacher's
    own perplexity is in ``attrs["teacher_perplexity"]``, the number of scored tokens in ``attrs["tokens"]``.
    """
    from . import evaluation

    return evaluation.language_model_scores(models, dataset, teacher=teacher, temperature=temperature,
                                            batch_size=batch_size, pad_token_id=pad_token_id)


# ------------------------------------------------------------------------------------------------------ ROUGE-L
# One implementation for the course: notebook 05 scores generations with the evaluation harness's ROUGE-L.
from .evaluation import _lcs, rouge_l, rouge_l_scores, words  # noqa: E402,F401

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
