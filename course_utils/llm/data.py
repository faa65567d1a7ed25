"""Notebook 05's data: prompts, the teacher's responses (generated once, filtered, cached) and SFT/KD examples.

Pipeline (same code in both profiles)::

    prompts = instruction_prompts(r)                 # small: templated instruction set; gpu: databricks-dolly-15k
    gen = teacher_responses(r, teacher, tok, prompts)   # batched greedy generation, cached in the course cache
    kept, report = filter_responses(gen["train"], r.max_new_tokens)   # empty / truncated / repetitive / refusals /
                                                                      # exact and near duplicates, with counts
    train = sft_dataset(kept, student_tok, r)        # prompt + response + EOS, loss only on the response

**The instruction set** (``small``). The packaged chat data is context-dependent small talk, a poor source of
prompts, so the course builds a small, varied set: 36 topics × 8 task templates ("Give two facts about …", "Write a
haiku about …", …) plus arithmetic word problems. The held-out split holds (topic, task) *combinations* and
numbers that never occur in training, so evaluation measures generalisation, not recall.

**Sequence-level KD** (Kim & Rush 2016) fine-tunes the student on the teacher's *text*: it works across tokenizers
(Mistral → Phi-2), costs one generation pass, and lets you filter what the student learns from.
"""
from __future__ import annotations

import inspect
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..core.cache import cached_json
from ..core.profiles import smoke_active

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from datasets import Dataset, DatasetDict
    from torch import nn

    from .recipe import LLMRecipe


__all__ = ['TOPICS', 'TASKS', 'ARITHMETIC', 'PROMPT_STYLES', 'instruction_set', 'DOLLY_CATEGORIES', 'smoke_dolly', 'dolly_prompts', 'instruction_prompts', 'format_prompt', 'left_pad', 'generate', 'teacher_responses', 'FILTER_REASONS', 'repetition_ratio', 'is_refusal', 'filter_responses', 'ExampleFn', 'sft_example', 'sft_dataset', 'CausalLMCollator']


TOPICS = (
    "volcanoes", "the moon", "bicycles", "coffee", "honeybees", "the internet", "rainbows", "chess", "penguins",
    "bread", "the ocean", "trains", "music", "tea", "robots", "gardening", "libraries", "thunderstorms",
    "photosynthesis", "the Roman Empire", "electricity", "recycling", "deserts", "dolphins", "airplanes",
    "vaccines", "mountains", "chocolate", "football", "the human heart", "solar panels", "glaciers", "elephants",
    "computers", "cheese", "rivers",
)
"""36 everyday topics."""

TASKS = {
    "define": "Explain what {topic} is in one sentence.",
    "fact": "Give one short fact about {topic}.",
    "child": "Explain {topic} to a child in one sentence.",
    "haiku": "Write a haiku about {topic}.",
    "title": "Suggest a short title for an article about {topic}.",
    "why": "Why are {topic} important? Answer in one sentence.",
    "advert": "Write a one-sentence advertisement for {topic}.",
    "question": "Ask one short question about {topic}.",
}
"""Task templates; every one asks for a short answer (the teacher's responses are capped in tokens)."""

ARITHMETIC = {
    "add": "What is {a} plus {b}?",
    "subtract": "What is {a} minus {b}?",
    "compare": "Which number is larger, {a} or {b}?",
}

PROMPT_STYLES = ("chat", "phi")

# ------------------------------------------------------------------------------------------------ prompts


def instruction_set(n_train: int = 192, n_heldout: int = 48, seed: int = 0, arithmetic_share: float = 1 / 6
                    ) -> "DatasetDict":
    """The course's instruction set: ``train`` and ``heldout`` splits of ``instruction`` / ``context`` / ``kind``.

    Topic prompts are (topic, task) pairs drawn without replacement from 36 × 8; arithmetic prompts use operand
    pairs drawn without replacement. Held-out pairs and operands never appear in ``train``; each topic and task
    does, so the student has seen the *kind* of request. Deterministic for a given ``seed``.

    Raises:
        ValueError: sizes that are not positive or exceed the pool of distinct prompts.
    """
    from datasets import Dataset, DatasetDict

    for name, value in (("n_train", n_train), ("n_heldout", n_heldout)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= arithmetic_share < 1.0:
        raise ValueError(f"arithmetic_share must lie in [0, 1), got {arithmetic_share!r}")
    rng = random.Random(seed)
    n_total = n_train + n_heldout
    n_arith = round(n_total * arithmetic_share)
    n_topic = n_total - n_arith
    pairs = [(t, k) for t in TOPICS for k in TASKS]
    if n_topic > len(pairs):
        raise ValueError(f"{n_topic} topic prompts requested but only {len(pairs)} (topic, task) pairs exist; lower "
                         "n_train/n_heldout or raise arithmetic_share")
    rng.shuffle(pairs)
    operands = [(a, b) for a in range(2, 60) for b in range(2, 30) if a > b]
    rng.shuffle(operands)
    arith_kinds = list(ARITHMETIC)

    def topic_rows(chosen):
        return [{"instruction": TASKS[k].format(topic=t), "context": "", "kind": k} for t, k in chosen]

    def arith_rows(chosen, offset):
        rows = []
        for i, (a, b) in enumerate(chosen):
            kind = arith_kinds[(i + offset) % len(arith_kinds)]
            rows.append({"instruction": ARITHMETIC[kind].format(a=a, b=b), "context": "", "kind": kind})
        return rows

    h_arith = round(n_heldout * n_arith / n_total)
    h_topic = n_heldout - h_arith
    heldout = topic_rows(pairs[:h_topic]) + arith_rows(operands[:h_arith], 0)
    train = topic_rows(pairs[h_topic:n_topic]) + arith_rows(operands[h_arith:n_arith], h_arith)
    rng.shuffle(train)
    rng.shuffle(heldout)
    return DatasetDict({"train": Dataset.from_list(train), "heldout": Dataset.from_list(heldout)})


DOLLY_CATEGORIES = ("open_qa", "general_qa", "classification", "closed_qa", "brainstorming",
                    "information_extraction", "summarization", "creative_writing")
"""databricks-dolly-15k's eight ``category`` values."""


def smoke_dolly(n_rows: int = 24, seed: int = 0) -> "Dataset":
    """The smoke run's stand-in of databricks-dolly-15k's ``train`` split: its exact schema, ``n_rows`` rows.

    Columns ``instruction``, ``context``, ``response``, ``category`` (all strings, in dolly's order). Instructions
    are the course's instruction set (:func:`instruction_set`); categories cycle through :data:`DOLLY_CATEGORIES`;
    the context-based categories (``closed_qa``, ``information_extraction``, ``summarization``) get a context
    sentence, the others an empty one, as in dolly; responses are placeholders (sequence-level KD drops them).

    Raises:
        ValueError: ``n_rows`` is not an integer ≥ 2.
    """
    from datasets import Dataset

    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 2:
        raise ValueError(f"n_rows must be an integer ≥ 2, got {n_rows!r}")
    prompts = instruction_set(n_rows - 1, 1, seed=seed)
    instructions = list(prompts["train"]["instruction"]) + list(prompts["heldout"]["instruction"])
    categories = [DOLLY_CATEGORIES[i % len(DOLLY_CATEGORIES)] for i in range(n_rows)]
    with_context = ("closed_qa", "information_extraction", "summarization")
    return Dataset.from_dict({
        "instruction": instructions,
        "context": ["Bees make honey, and trains run on rails." if c in with_context else "" for c in categories],
        "response": ["A stand-in response." for _ in categories],
        "category": categories,
    })


def _load_dolly() -> "Dataset":  # separated so tests can replace the download
    """databricks-dolly-15k's ``train`` split; in the gpu profile's smoke run, :func:`smoke_dolly` instead."""
    if smoke_active():
        return smoke_dolly()
    from datasets import load_dataset

    return load_dataset("databricks/databricks-dolly-15k", split="train")


def dolly_prompts(n_train: int, n_heldout: int, seed: int = 0, max_chars: int = 1500) -> "DatasetDict":
    """databricks-dolly-15k as ``instruction`` / ``context`` / ``kind`` (its ``category``), shuffled and split.

    Its human ``response`` column is dropped on purpose: in sequence-level KD the *teacher* writes the responses.
    Rows whose instruction + context exceed ``max_chars`` characters are skipped (they would not fit the budget).
    """
    from datasets import DatasetDict

    raw = _load_dolly()
    raw = raw.filter(lambda r: len(r["instruction"]) + len(r.get("context") or "") <= max_chars)
    raw = raw.shuffle(seed=seed)
    if n_train + n_heldout > len(raw):
        raise ValueError(f"dolly has {len(raw)} usable rows, {n_train + n_heldout} requested")

    def to_prompt(r):
        return {"instruction": r["instruction"].strip(), "context": (r.get("context") or "").strip(),
                "kind": r.get("category", "")}

    cols = raw.column_names
    heldout = raw.select(range(n_heldout)).map(to_prompt, remove_columns=cols)
    train = raw.select(range(n_heldout, n_heldout + n_train)).map(to_prompt, remove_columns=cols)
    return DatasetDict({"train": train, "heldout": heldout})


def instruction_prompts(r: "LLMRecipe", seed: int = 0) -> "DatasetDict":
    """The recipe's prompts: the instruction set (``small``) or dolly (``gpu``)."""
    if r.data == "instructions":
        return instruction_set(r.n_train, r.n_heldout, seed=seed)
    if r.data == "dolly":
        return dolly_prompts(r.n_train, r.n_heldout, seed=seed)
    raise ValueError(f"unknown data source {r.data!r}; expected 'instructions' or 'dolly'")


def format_prompt(tokenizer: Any, instruction: str, context: str = "", style: str = "chat",
                  system: str | None = None) -> str:
    """The text a model is prompted with, ending exactly where its response starts.

    * ``"chat"``: the tokenizer's chat template with one user turn and the assistant header
      (``add_generation_prompt=True``). The template writes the special tokens itself (Mistral's ``<s>[INST]``,
      SmolLM2's ``<|im_start|>``), so encode the result with ``add_special_tokens=False``.
    * ``"phi"``: Phi-2's documented QA format ``"Instruct: <instruction>\\nOutput:"`` (Phi-2 has no chat template).

    A non-empty ``context`` (dolly's reference passage) follows the instruction after a blank line. ``system``
    (chat only) replaces the template's default system message, if it has one; None keeps the default.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    user = instruction.strip() + (f"\n\n{context.strip()}" if context and context.strip() else "")
    if style == "phi":
        return f"Instruct: {user}\nOutput:"
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template; use style='phi' (a plain "
                         "'Instruct: …\\nOutput:' prompt) for base models such as Phi-2")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _encode(tokenizer: Any, text: str, style: str) -> list[int]:
    # chat templates already contain BOS and friends; a second BOS would shift every position
    return tokenizer(text, add_special_tokens=(style != "chat"))["input_ids"]


# ------------------------------------------------------------------------------------------------ generation
def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(ids, attention_mask)``, both ``(len(rows), longest row)`` long tensors: ``rows`` padded on the **left**
    with ``pad_id`` (mask 0 there), the layout batched decoder-only generation needs (every prompt ends where
    generation starts).

    Raises:
        ValueError: ``rows`` is empty or one of them is.
    """
    import torch

    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("rows must be a non-empty list of non-empty token-id lists (tokenise the prompts first)")
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def generate(model: "nn.Module", tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 40,
             batch_size: int = 32, style: str = "chat", progress: bool = False) -> list[dict]:
    """Greedy responses to already formatted ``prompts``, batched; one dict per prompt, in the input order.

    Prompts are sorted by length so each batch wastes little padding (left padding, as decoder-only generation
    requires), and a batch stops as soon as all its rows produced EOS. Greedy decoding keeps the data
    deterministic; sampling would add variety at the price of reproducibility.

    Returns:
        ``[{"response": str, "new_tokens": int, "finished": bool}]`` — ``finished`` is False when the response
        hit ``max_new_tokens`` without EOS (it was cut off).
    """
    import torch

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size!r}")
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if not eos_ids and tokenizer.eos_token_id is not None:
        eos_ids = {tokenizer.eos_token_id}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids), 0)
    encoded = [_encode(tokenizer, p, style) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[dict | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    try:
        for start in batches:
            idx = order[start:start + batch_size]
            ids, mask = left_pad([encoded[i] for i in idx], pad_id)
            width = ids.shape[1]
            with torch.inference_mode():
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                     eos_token_id=sorted(eos_ids) or None)
            new = gen[:, width:].cpu()
            for row, i in enumerate(idx):
                tokens = new[row].tolist()
                cut = next((j for j, t in enumerate(tokens) if t in eos_ids), None)
                body = tokens if cut is None else tokens[:cut]
                out[i] = {"response": tokenizer.decode(body, skip_special_tokens=True).strip(),
                          "new_tokens": len(body) + (cut is not None), "finished": cut is not None}
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def teacher_responses(r: "LLMRecipe", teacher: "nn.Module | Callable[[], nn.Module]", tokenizer: Any,
                      prompts: "DatasetDict", splits: Iterable[str] = ("train", "heldout"),
                      progress: bool = False) -> dict[str, list[dict]]:
    """The teacher's greedy responses for every split of ``prompts``, generated once and cached.

    ``teacher`` may be a function returning the model, so a cache hit never loads it. Each record holds the
    prompt fields plus ``response`` / ``new_tokens`` / ``finished`` (see :func:`generate`).
    """
    splits = list(splits)
    fp = r.generation_fingerprint(what="teacher responses", splits=splits,
                                  prompts={s: list(prompts[s]["instruction"]) for s in splits},
                                  contexts={s: list(prompts[s]["context"]) for s in splits})

    def compute():
        model = teacher() if callable(teacher) and not hasattr(teacher, "generate") else teacher
        result = {}
        for s in splits:
            rows = prompts[s].to_list()
            texts = [format_prompt(tokenizer, x["instruction"], x["context"], r.teacher_prompt, r.system_prompt)
                     for x in rows]
            gen = generate(model, tokenizer, texts, r.max_new_tokens, r.generation_batch_size, r.teacher_prompt,
                           progress=progress)
            result[s] = [{**x, **g} for x, g in zip(rows, gen)]
        return result

    value, _ = cached_json(f"llm-teacher-responses-{r.data}", fp, compute, r.profile)
    return value


# --------------------------------------------------------------------------------------------------- filtering
FILTER_REASONS = ("empty", "cut off at the token cap", "repetitive", "refusal", "exact duplicate", "near duplicate")
"""Why a response is dropped, in the order the rules are applied (a response counts under its first reason)."""

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t (?:help|provide|answer|assist|do)|i am (?:not able|unable)"
    r"|i'?m (?:not able|unable)|as an ai\b|as a language model|i do not have (?:access|the ability)"
    r"|i don'?t have (?:access|the ability))",
    re.IGNORECASE,
)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def repetition_ratio(text: str, n: int = 3) -> float:
    """Share of the word ``n``-grams of ``text`` that repeat an earlier one (0: none; → 1: a loop)."""
    words = _words(text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_refusal(text: str) -> bool:
    """True for the usual refusal/disclaimer phrasings ("I'm sorry, but I can't …", "As an AI …")."""
    return bool(_REFUSAL.search(text))


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _words(text)
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def filter_responses(records: Sequence[dict], max_repetition: float = 0.3, near_duplicate: float = 0.7,
                     min_words: int = 1) -> "tuple[list[dict], pd.DataFrame]":
    """Drop responses a student should not imitate; return ``(kept, report)``.

    Rules, in order (each dropped record counts under its first reason, see :data:`FILTER_REASONS`):
    fewer than ``min_words`` words; cut off by the token cap (``finished`` is False: the teacher was still
    talking); :func:`repetition_ratio` above ``max_repetition`` (greedy decoding loops); a refusal
    (:func:`is_refusal`); the same normalised text as an earlier kept response; word-trigram Jaccard similarity
    ≥ ``near_duplicate`` with an earlier kept response (the teacher's stock answers).

    Returns:
        kept records (input order) and a pandas table with one row per reason: ``dropped`` count and an example.
    """
    import pandas as pd

    kept: list[dict] = []
    dropped: dict[str, list[str]] = {reason: [] for reason in FILTER_REASONS}
    seen_exact: set[str] = set()
    kept_shingles: list[set] = []
    for rec in records:
        text = str(rec.get("response", ""))
        norm = " ".join(_words(text))
        reason = None
        if len(_words(text)) < min_words:
            reason = "empty"
        elif not rec.get("finished", True):
            reason = "cut off at the token cap"
        elif repetition_ratio(text) > max_repetition:
            reason = "repetitive"
        elif is_refusal(text):
            reason = "refusal"
        elif norm in seen_exact:
            reason = "exact duplicate"
        else:
            sh = _shingles(text)
            for other in kept_shingles:
                union = len(sh | other)
                if union and len(sh & other) / union >= near_duplicate:
                    reason = "near duplicate"
                    break
        if reason is None:
            kept.append(rec)
            seen_exact.add(norm)
            kept_shingles.append(_shingles(text))
        else:
            dropped[reason].append(text)
    report = pd.DataFrame(
        {"dropped": [len(dropped[r]) for r in FILTER_REASONS],
         "example": [(dropped[r][0][:80] + ("…" if len(dropped[r][0]) > 80 else "")) if dropped[r] else ""
                     for r in FILTER_REASONS]},
        index=pd.Index(FILTER_REASONS, name="reason"),
    )
    report.loc["kept"] = [len(kept), ""]
    return kept, report


# ---------------------------------------------------------------------------------------------- SFT examples
def sft_example(prompt_ids: Sequence[int], response_ids: Sequence[int], eos_id: int | None,
                max_length: int | None = None, ignore_index: int = -100) -> dict[str, list[int]]:
    """One causal-LM training example: ``input_ids`` = prompt + response (+ EOS), loss only on the response.

    ``labels`` equals ``input_ids`` with ``ignore_index`` on every prompt token; they are *not* shifted — the model
    (or :func:`course_utils.kd.llm_losses.shift_labels`) aligns position t's logits with token t + 1. The EOS token is
    learned too: a student that never sees it never learns to stop. ``max_length`` truncates from the right (the
    prompt is kept whole; a prompt longer than ``max_length`` raises).
    """
    prompt_ids, response_ids = list(prompt_ids), list(response_ids)
    target = response_ids + ([eos_id] if eos_id is not None else [])
    return _truncated(prompt_ids + target, [ignore_index] * len(prompt_ids) + target, len(prompt_ids), max_length)


def _truncated(ids: list[int], labels: list[int], n_prompt: int, max_length: int | None) -> dict[str, list[int]]:
    """An example cut to ``max_length`` tokens from the right (the prompt kept whole), with its attention mask."""
    if max_length is not None:
        if n_prompt >= max_length:
            raise ValueError(f"the prompt has {n_prompt} tokens, max_length is {max_length}: no room for the "
                             "response; raise max_length or shorten the prompt")
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


ExampleFn = Callable[[list, list, "int | None"], Mapping]
"""Builds one training example: ``fn(prompt_ids, response_ids, eos_id) -> {"input_ids": [...], "labels": [...]}``
(token-id lists, labels unshifted with −100 on the prompt), like :func:`sft_example` — e.g. a learner's
``sft_example`` of notebook 05's exercise 2."""


def _check_example_fn(example_fn: Any) -> str:
    """Raise ``TypeError`` unless ``example_fn`` can be called as ``fn(prompt_ids, response_ids, eos_id)``; its name."""
    if not callable(example_fn):
        raise TypeError(f"example_fn must be a function (prompt_ids, response_ids, eos_id) -> {{'input_ids', 'labels'}}, "
                        f"got a {type(example_fn).__name__}: pass the function itself, without calling it")
    name = getattr(example_fn, "__name__", type(example_fn).__name__)
    try:
        signature = inspect.signature(example_fn)
    except (TypeError, ValueError):  # no signature to inspect: a wrong call fails at the first record
        return name
    try:
        signature.bind(*range(3))
    except TypeError as err:
        raise TypeError(f"example_fn {name}{signature} cannot be called as fn(prompt_ids, response_ids, eos_id) "
                        f"({err}): give it these three positional parameters") from None
    return name


def _token_list(value: Any, key: str, name: str) -> list[int]:
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # a 1-D tensor or array
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise TypeError(f"example_fn `{name}` returned {key} of type {type(value).__name__}"
                        f"{'' if not isinstance(value, (list, tuple)) else ' with non-integer items'}; "
                        "return a list of integer token ids (or a 1-D integer tensor)")
    return list(value)


def _custom_example(example_fn: ExampleFn, name: str, prompt_ids: list[int], response_ids: list[int],
                    eos_id: int | None, max_length: int | None) -> dict[str, list[int]]:
    out = example_fn(list(prompt_ids), list(response_ids), eos_id)
    if not isinstance(out, Mapping) or "input_ids" not in out or "labels" not in out:
        raise TypeError(f"example_fn `{name}` must return a dict with the keys 'input_ids' and 'labels', got "
                        f"{type(out).__name__}{' with keys ' + str(sorted(out)) if isinstance(out, Mapping) else ''}")
    ids, labels = _token_list(out["input_ids"], "input_ids", name), _token_list(out["labels"], "labels", name)
    if len(ids) != len(labels):
        raise ValueError(f"example_fn `{name}` returned {len(ids)} input_ids but {len(labels)} labels; labels must "
                         "have one entry per input token (the model shifts them, not the example)")
    return _truncated(ids, labels, len(prompt_ids), max_length)


def sft_dataset(records: Sequence[dict], tokenizer: Any, r: "LLMRecipe", teacher_tokenizer: Any = None,
                example_fn: ExampleFn | None = None) -> "Dataset":
    """Tokenised SFT examples from (prompt, teacher response) records, in the *student's* prompt format.

    With ``teacher_tokenizer`` (cross-tokenizer distillation, ULD) the same text is also tokenised in the
    teacher's format into ``teacher_input_ids`` / ``teacher_attention_mask`` / ``teacher_labels``, so a live teacher
    can score the response the student learns.

    Args:
        records: dicts with ``instruction``, ``response`` and optionally ``context``.
        tokenizer: the student's tokenizer.
        r: the recipe (prompt format, system prompt, ``max_length``).
        teacher_tokenizer: also tokenise for a teacher with another tokenizer (ULD).
        example_fn: builds each example from the token ids, :data:`ExampleFn`
            ``fn(prompt_ids, response_ids, eos_id) -> {"input_ids", "labels"}``; None (default) is
            :func:`sft_example`. Its result is then cut to ``r.max_length`` as :func:`sft_example` cuts, and given
            an attention mask; any other key it returns is dropped. The same records give the same dataset (and
            :func:`~course_utils.llm.trainer.dataset_fingerprint`) as the default exactly when it builds the same
            token lists.

    Raises:
        TypeError: ``example_fn`` is not a function of three positional arguments, or returns something other
            than a dict of two integer lists (or 1-D tensors).
        ValueError: its ``input_ids`` and ``labels`` differ in length; a prompt longer than ``r.max_length``.
    """
    from datasets import Dataset

    name = _check_example_fn(example_fn) if example_fn is not None else None
    rows = []
    for rec in records:
        row = _tokenize_pair(tokenizer, rec, r.student_prompt, r.max_length, r.system_prompt, example_fn, name)
        if teacher_tokenizer is not None:
            t = _tokenize_pair(teacher_tokenizer, rec, r.teacher_prompt, r.max_length, r.system_prompt, example_fn,
                               name)
            row.update({f"teacher_{k}": v for k, v in t.items()})
        rows.append(row)
    return Dataset.from_list(rows)


def _tokenize_pair(tokenizer: Any, rec: dict, style: str, max_length: int, system: str | None = None,
                   example_fn: ExampleFn | None = None, name: str | None = None) -> dict[str, list[int]]:
    prompt = format_prompt(tokenizer, rec["instruction"], rec.get("context", ""), style, system)
    prompt_ids = _encode(tokenizer, prompt, style)
    response = rec["response"] if style == "chat" else " " + rec["response"]  # "Output: <response>"
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if example_fn is not None:
        return _custom_example(example_fn, name or "example_fn", prompt_ids, response_ids, tokenizer.eos_token_id,
                               max_length)
    return sft_example(prompt_ids, response_ids, tokenizer.eos_token_id, max_length)


@dataclass
class CausalLMCollator:
    """Right-pads a list of examples into a batch: ``input_ids`` with ``pad_token_id`` (0 if None), the teacher's
    ``teacher_input_ids`` with ``teacher_pad_token_id`` (it must be a valid id of the *teacher's* vocabulary — the
    student's pad id may not be), masks with 0, every ``*labels`` column with ``ignore_index``; per-position
    teacher top-k columns (lists of k ids / logits) with 0 (their positions are masked by the labels anyway).
    """

    pad_token_id: int | None = 0
    ignore_index: int = -100
    teacher_pad_token_id: int = 0

    def __call__(self, features: list[dict]) -> dict[str, "torch.Tensor"]:
        import torch

        batch: dict[str, torch.Tensor] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if not isinstance(values[0], (list, tuple)) and not hasattr(values[0], "shape"):
                batch[key] = torch.tensor(values)
                continue
            tensors = [torch.as_tensor(v) for v in values]
            width = max(t.shape[0] for t in tensors)
            if key.endswith("labels"):
                fill = self.ignore_index
            elif key == "teacher_input_ids":
                fill = self.teacher_pad_token_id
            elif key == "input_ids":
                fill = self.pad_token_id if self.pad_token_id is not None else 0
            else:
                fill = 0
            out = torch.full((len(tensors), width, *tensors[0].shape[1:]), fill, dtype=tensors[0].dtype)
            for i, t in enumerate(tensors):
                out[i, :t.shape[0]] = t
            batch[key] = out
        return batch
