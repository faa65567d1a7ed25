"""Unit tests for course_utils.llm.lm_eval: held-out perplexity and KD for one or several models (against a direct
computation), their errors, student generations and the side-by-side table, on a tiny Llama and its pruned copy."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import llm
from course_utils.llm import lm_eval, models, recipe, tiny


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pair():
    tok = tiny.toy_llama_tokenizer()
    teacher = tiny.tiny_llama(tok, layers=4, seed=0)
    student = models.prune_layers(teacher, [0, 3])
    recs = [{"instruction": q, "context": "", "response": f"the sun is {w} ."}
            for q, w in (("why is the sky blue ?", "hot"), ("one fact about tea", "big"), ("a haiku", "red"))]
    r = recipe.LLMRecipe(profile="small", teacher="x", student="x", teacher_4bit=False, drop_layers=(),
                      lora_targets=("q_proj",), max_length=64, max_new_tokens=4, generation_batch_size=2)
    return tok, teacher, student, llm.data.sft_dataset(recs, tok, r), recs, r


def test_evaluate_many_matches_evaluate_lm(pair):
    tok, teacher, student, data, _, _ = pair
    table = lm_eval.language_model_scores({"teacher": teacher, "student": student}, data, teacher=teacher, batch_size=2,
                                   pad_token_id=tok.pad_token_id)
    one = lm_eval.evaluate_lm(student, data, teacher=teacher, batch_size=3, pad_token_id=tok.pad_token_id)
    assert math.isclose(table.loc["student", "perplexity"], one["perplexity"], rel_tol=1e-5)
    assert math.isclose(table.loc["student", "kd"], one["kd"], rel_tol=1e-4)
    assert table.loc["teacher", "kd"] < 1e-6
    assert math.isclose(table.attrs["teacher_perplexity"], table.loc["teacher", "perplexity"], rel_tol=1e-6)
    assert table.attrs["tokens"] == one["tokens"]
    no_teacher = lm_eval.language_model_scores({"student": student}, data, pad_token_id=tok.pad_token_id)
    assert "kd" not in no_teacher.columns


def test_evaluate_rejects_data_without_response_tokens(pair):
    tok, teacher, _, data, _, _ = pair
    empty = data.map(lambda x: {"labels": [-100] * len(x["labels"])})
    with pytest.raises(ValueError, match="no response token"):
        lm_eval.evaluate_lm(teacher, empty)
    with pytest.raises(ValueError, match="no response token"):
        lm_eval.language_model_scores({"t": teacher}, empty)


def test_student_generations_and_side_by_side(pair):
    tok, teacher, student, _, recs, r = pair
    gens = lm_eval.student_generations(student, tok, recs, r)
    assert len(gens) == 3 and all(isinstance(g, str) for g in gens)
    table = lm_eval.side_by_side(recs, {"teacher": [x["response"] for x in recs], "student": gens}, width=10)
    assert list(table.columns) == ["prompt", "teacher", "student"] and len(table) == 3
    assert all(len(t) <= 10 for t in table["prompt"])
    with pytest.raises(ValueError, match="column"):
        lm_eval.side_by_side(recs, {"x": ["only one"]})


def test_perplexity_is_exp_of_the_response_cross_entropy(pair):
    tok, teacher, student, data, _, _ = pair
    nll, count = 0.0, 0
    with torch.no_grad():
        for row in data:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"])
            logits = student(input_ids=ids).logits[0, :-1]
            target = labels[1:]
            keep = target != -100
            nll += F.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    ppl = lm_eval.perplexity(student, data, batch_size=2, pad_token_id=tok.pad_token_id)
    assert ppl == pytest.approx(math.exp(nll / count), rel=1e-4)
    table = lm_eval.language_model_scores({"teacher": teacher, "student": student}, data, teacher=teacher, batch_size=3,
                                     pad_token_id=tok.pad_token_id)
    assert table.loc["student", "perplexity"] == pytest.approx(ppl, rel=1e-5)
    assert table.loc["teacher", "kd"] < 1e-6 < table.loc["student", "kd"]
    assert table.attrs["tokens"] == count
    assert table.attrs["teacher_perplexity"] == pytest.approx(table.loc["teacher", "perplexity"])
    assert "kd" not in lm_eval.language_model_scores({"s": student}, data, pad_token_id=tok.pad_token_id).columns


def test_language_model_scores_errors(pair):
    from course_utils.llm import lm_eval

    tok, teacher, student, data, _, _ = pair
    with pytest.raises(ValueError, match="no response token"):
        lm_eval.perplexity(student, data.map(lambda x: {"labels": [-100] * len(x["labels"])}))
    with pytest.raises(ValueError, match="lacks column"):
        lm_eval.perplexity(student, data.remove_columns("labels"))
    with pytest.raises(ValueError, match="non-empty mapping"):
        lm_eval.language_model_scores({}, data)
    other = tiny.tiny_phi(tiny.toy_llama_tokenizer(), padded_vocab=96)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        lm_eval.language_model_scores({"s": student}, data, teacher=other, pad_token_id=tok.pad_token_id)
