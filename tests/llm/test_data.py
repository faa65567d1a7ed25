"""Unit tests for course_utils.llm.data: the instruction set, Dolly prompts, prompt formats, batched generation,
response filtering, SFT examples and datasets (one or two tokenizers) and the collator, on tiny models from
course_utils.llm.tiny (no hub, no assets)."""
from __future__ import annotations

import pytest
import torch

from course_utils.llm import data, recipe, tiny

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------- instruction set
def test_instruction_set_is_deterministic_and_heldout_is_new():
    a, b = data.instruction_set(100, 30, seed=0), data.instruction_set(100, 30, seed=0)
    assert list(a["train"]["instruction"]) == list(b["train"]["instruction"])
    assert len(a["train"]) == 100 and len(a["heldout"]) == 30
    train, held = set(a["train"]["instruction"]), set(a["heldout"]["instruction"])
    assert not train & held and len(train) == 100 and len(held) == 30
    kinds = set(a["train"]["kind"])
    assert set(data.TASKS) <= kinds and {"add", "subtract", "compare"} & kinds
    assert list(data.instruction_set(100, 30, seed=1)["train"]["instruction"]) != list(a["train"]["instruction"])
    with pytest.raises(ValueError, match="pairs exist"):
        data.instruction_set(400, 100)
    with pytest.raises(ValueError, match="positive"):
        data.instruction_set(0, 5)


def test_dolly_prompts_drop_human_responses(monkeypatch):
    from datasets import Dataset

    rows = [{"instruction": f"Question {i}?", "context": "Some context." if i % 2 else "",
             "response": "human answer", "category": "open_qa"} for i in range(12)]
    rows.append({"instruction": "x" * 2000, "context": "", "response": "", "category": "long"})
    monkeypatch.setattr(data, "_load_dolly", lambda: Dataset.from_list(rows))
    d = data.dolly_prompts(8, 3, seed=0)
    assert len(d["train"]) == 8 and len(d["heldout"]) == 3
    assert set(d["train"].column_names) == {"instruction", "context", "kind"}
    assert "x" * 2000 not in list(d["train"]["instruction"]) + list(d["heldout"]["instruction"])
    with pytest.raises(ValueError, match="usable rows"):
        data.dolly_prompts(20, 5)


def test_format_prompt_styles():
    tok = tiny.toy_mistral_tokenizer()
    assert data.format_prompt(tok, "Give a fact.", "", "chat") == "<s>[INST] Give a fact. [/INST]"
    assert data.format_prompt(tok, "Q?", "ctx", "phi") == "Instruct: Q?\n\nctx\nOutput:"
    with pytest.raises(ValueError, match="no chat template"):
        data.format_prompt(tiny.toy_char_tokenizer(), "Q?", "", "chat")
    with pytest.raises(ValueError, match="style"):
        data.format_prompt(tok, "Q?", "", "alpaca")


# ------------------------------------------------------------------------------------------------- generation
def test_generate_batched_equals_one_by_one_and_reports_cutoffs(llama_pair):
    model, tok = llama_pair
    prompts = [data.format_prompt(tok, q) for q in ("why is the sky blue ?", "one fact", "write a haiku about tea")]
    batched = data.generate(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [data.generate(model, tok, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single  # left padding + attention mask: batching changes nothing
    for g in batched:
        assert set(g) == {"response", "new_tokens", "finished"} and 1 <= g["new_tokens"] <= 5
    # force EOS right away: finished, empty response
    with torch.no_grad():
        model.lm_head.weight.data[tok.eos_token_id] += 100.0
    try:
        out = data.generate(model, tok, prompts[:1], max_new_tokens=5)
    finally:
        with torch.no_grad():
            model.lm_head.weight.data[tok.eos_token_id] -= 100.0
    assert out == [{"response": "", "new_tokens": 1, "finished": True}]
    with pytest.raises(ValueError, match="max_new_tokens"):
        data.generate(model, tok, prompts, max_new_tokens=0)


# ------------------------------------------------------------------------------------------------- filtering
def test_filter_responses_counts_every_reason():
    recs = [
        {"response": "Tea is a drink made from leaves.", "finished": True},
        {"response": "", "finished": True},
        {"response": "Bees make honey and they", "finished": False},
        {"response": "a cat a cat a cat a cat a cat a cat a cat", "finished": True},
        {"response": "I'm sorry, but I can't help with that.", "finished": True},
        {"response": "tea is a drink made from leaves", "finished": True},
        {"response": "Tea is a drink made from leaves, friend.", "finished": True},
        {"response": "Rivers flow to the sea.", "finished": True},
    ]
    kept, report = data.filter_responses(recs)
    assert [r["response"] for r in kept] == [recs[0]["response"], recs[7]["response"]]
    counts = report["dropped"].to_dict()
    assert counts == {"empty": 1, "cut off at the token cap": 1, "repetitive": 1, "refusal": 1,
                      "exact duplicate": 1, "near duplicate": 1, "kept": 2}


def test_repetition_and_refusal_helpers():
    assert data.repetition_ratio("one two three four") == 0.0
    assert data.repetition_ratio("la la la la la la") > 0.7
    assert data.is_refusal("As an AI language model, I cannot do that")
    assert not data.is_refusal("The sorry state of the roads")


# ------------------------------------------------------------------------------------------------ SFT examples
def test_sft_example_masks_prompt_and_learns_eos():
    ex = data.sft_example([1, 2, 3], [7, 8], eos_id=9)
    assert ex == {"input_ids": [1, 2, 3, 7, 8, 9], "attention_mask": [1] * 6, "labels": [-100, -100, -100, 7, 8, 9]}
    assert data.sft_example([1, 2], [7, 8, 9], eos_id=0, max_length=4)["labels"] == [-100, -100, 7, 8]
    with pytest.raises(ValueError, match="no room"):
        data.sft_example([1, 2, 3], [4], eos_id=0, max_length=3)


def test_sft_dataset_cross_tokenizer_columns(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path)
    r = recipe.llm_recipe("gpu", max_length=400)
    s_tok, t_tok = tiny.toy_char_tokenizer(), tiny.toy_mistral_tokenizer()
    recs = [{"instruction": "Give one fact about tea.", "context": "", "response": "Tea is hot."}]
    ds = data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok)
    row = ds[0]
    # student: Phi format, character tokens; the response starts after "Output:" with a space
    prompt_len = len(s_tok("Instruct: Give one fact about tea.\nOutput:", add_special_tokens=False)["input_ids"])
    assert row["labels"][:prompt_len] == [-100] * prompt_len
    assert s_tok.decode([t for t in row["labels"] if t != -100]) == " Tea is hot.<|endoftext|>"
    # teacher: its chat template, word tokens: fewer tokens for the same text
    resp_t = [t for t in row["teacher_labels"] if t != -100]
    assert len(resp_t) < len([t for t in row["labels"] if t != -100])
    assert resp_t[-1] == t_tok.eos_token_id and row["teacher_input_ids"][0] == t_tok.bos_token_id
    assert row["teacher_input_ids"].count(t_tok.bos_token_id) == 1  # no second BOS from add_special_tokens


def test_collator_pads_every_column():
    col = data.CausalLMCollator(pad_token_id=0)
    batch = col([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7],
         "teacher_topk_ids": [[1, 2], [3, 4], [5, 6]], "teacher_topk_logits": [[0.5, 0.1]] * 3},
        {"input_ids": [5], "attention_mask": [1], "labels": [5],
         "teacher_topk_ids": [[1, 2]], "teacher_topk_logits": [[0.5, 0.1]]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["teacher_topk_ids"].shape == (2, 3, 2) and batch["teacher_topk_logits"].dtype == torch.float32


def _learner_sft_example(prompt_ids, response_ids, eos_id):
    """What notebook 05's exercise 2 asks for: no attention mask, no max_length."""
    return {"input_ids": list(prompt_ids) + list(response_ids) + [eos_id],
            "labels": [-100] * len(prompt_ids) + list(response_ids) + [eos_id]}


def test_sft_dataset_with_example_fn_equals_the_default(monkeypatch, tmp_path):
    from course_utils.llm.trainer import dataset_fingerprint

    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path)
    r = recipe.llm_recipe("gpu", max_length=60)
    s_tok, t_tok = tiny.toy_char_tokenizer(), tiny.toy_mistral_tokenizer()
    recs = [{"instruction": "Give one fact about tea.", "context": "", "response": "Tea is hot."},
            {"instruction": "Why?", "context": "", "response": "A response long enough to be cut at max_length, " * 3}]
    default = data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok)
    as_tensors = lambda p, resp, eos: {k: torch.tensor(v) for k, v in _learner_sft_example(p, resp, eos).items()}
    for fn in (_learner_sft_example, data.sft_example, as_tensors):
        ds = data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok, example_fn=fn)
        assert ds.to_list() == default.to_list()
        assert dataset_fingerprint(ds) == dataset_fingerprint(default)
    assert len(default[1]["input_ids"]) == 60  # cut at max_length, as the default cuts


@pytest.mark.parametrize("fn, error, match", [
    ("sft_example", TypeError, "without calling it"),
    (lambda prompt_ids, response_ids: {}, TypeError, "three positional parameters"),
    (lambda p, r, e: [p, r], TypeError, "keys 'input_ids' and 'labels', got list"),
    (lambda p, r, e: {"input_ids": p + r}, TypeError, r"got dict with keys \['input_ids'\]"),
    (lambda p, r, e: {"input_ids": p + r, "labels": "abc"}, TypeError, "labels of type str"),
    (lambda p, r, e: {"input_ids": [float(x) for x in p + r], "labels": p + r}, TypeError, "non-integer"),
    (lambda p, r, e: {"input_ids": p + r + [e], "labels": r + [e]}, ValueError, "one entry per input token"),
], ids=["a string", "two parameters", "a list", "no labels", "labels a string", "float ids", "lengths differ"])
def test_sft_dataset_example_fn_errors(monkeypatch, tmp_path, fn, error, match):
    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path)
    r = recipe.llm_recipe("gpu", max_length=400)
    recs = [{"instruction": "Give one fact about tea.", "context": "", "response": "Tea is hot."}]
    with pytest.raises(error, match=match):
        data.sft_dataset(recs, tiny.toy_char_tokenizer(), r, example_fn=fn)


# ---------------------------------------------------------------------------------------------------- left_pad
def test_left_pad_puts_padding_before_each_row():
    ids, mask = data.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


@pytest.mark.parametrize("rows", [[], [[1, 2], []]])
def test_left_pad_rejects_empty_input(rows):
    with pytest.raises(ValueError, match="non-empty"):
        data.left_pad(rows, pad_id=0)
