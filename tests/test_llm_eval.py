"""course_utils.llm_eval (held-out perplexity/KD for one or several models, ROUGE-L, student generations, the
side-by-side table) and the real Mistral / GPT-2 tokenizers of the offline assets (skipped when not fetched)."""
from __future__ import annotations

import math

import pytest
import torch

from course_utils import assets, llm, llm_data, llm_eval
from course_utils import llm_tiny as tiny

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pair():
    tok = tiny.llama_tokenizer()
    teacher = tiny.tiny_llama(tok, layers=4, seed=0)
    student = llm.prune_layers(teacher, [0, 3])
    recs = [{"instruction": q, "context": "", "response": f"the sun is {w} ."}
            for q, w in (("why is the sky blue ?", "hot"), ("one fact about tea", "big"), ("a haiku", "red"))]
    r = llm.LLMRecipe(profile="small", teacher="x", student="x", teacher_4bit=False, drop_layers=(),
                      lora_targets=("q_proj",), max_length=64, max_new_tokens=4, generation_batch_size=2)
    return tok, teacher, student, llm_data.sft_dataset(recs, tok, r), recs, r


def test_evaluate_many_matches_evaluate_lm(pair):
    tok, teacher, student, data, _, _ = pair
    table = llm_eval.evaluate_many({"teacher": teacher, "student": student}, data, teacher=teacher, batch_size=2,
                                   pad_token_id=tok.pad_token_id)
    one = llm_eval.evaluate_lm(student, data, teacher=teacher, batch_size=3, pad_token_id=tok.pad_token_id)
    assert math.isclose(table.loc["student", "perplexity"], one["perplexity"], rel_tol=1e-5)
    assert math.isclose(table.loc["student", "kd"], one["kd"], rel_tol=1e-4)
    assert table.loc["teacher", "kd"] < 1e-6
    assert math.isclose(table.attrs["teacher_perplexity"], table.loc["teacher", "perplexity"], rel_tol=1e-6)
    assert table.attrs["tokens"] == one["tokens"]
    no_teacher = llm_eval.evaluate_many({"student": student}, data, pad_token_id=tok.pad_token_id)
    assert "kd" not in no_teacher.columns


def test_evaluate_rejects_data_without_response_tokens(pair):
    tok, teacher, _, data, _, _ = pair
    empty = data.map(lambda x: {"labels": [-100] * len(x["labels"])})
    with pytest.raises(ValueError, match="no response token"):
        llm_eval.evaluate_lm(teacher, empty)
    with pytest.raises(ValueError, match="no response token"):
        llm_eval.evaluate_many({"t": teacher}, empty)


@pytest.mark.parametrize("cand, ref, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat on the mat", "the cat lay on the mat", 5 / 6),
    ("Bees make honey.", "bees MAKE honey", 1.0),
    ("a b c", "x y z", 0.0),
    ("", "x y z", 0.0),
    ("one two three four", "one two", 2 * (0.5 * 1.0) / 1.5),
])
def test_rouge_l(cand, ref, expected):
    assert llm_eval.rouge_l(cand, ref) == pytest.approx(expected)


def test_rouge_l_subsequence_not_substring_and_errors():
    # LCS 'a c e f' (4 of 6 and of 7 words) although no two words are adjacent in both
    assert llm_eval.rouge_l("a b c d e f", "a x c y e z f") == pytest.approx(2 * (4 / 6) * (4 / 7) / (4 / 6 + 4 / 7))
    assert llm_eval.rouge_l_scores(["a b", "c"], ["a b", "d"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="candidates"):
        llm_eval.rouge_l_scores(["a"], [])
    with pytest.raises(TypeError):
        llm_eval.rouge_l(None, "a")


def test_student_generations_and_side_by_side(pair):
    tok, teacher, student, _, recs, r = pair
    gens = llm_eval.student_generations(student, tok, recs, r)
    assert len(gens) == 3 and all(isinstance(g, str) for g in gens)
    table = llm_eval.side_by_side(recs, {"teacher": [x["response"] for x in recs], "student": gens}, width=10)
    assert list(table.columns) == ["prompt", "teacher", "student"] and len(table) == 3
    assert all(len(t) <= 10 for t in table["prompt"])
    with pytest.raises(ValueError, match="column"):
        llm_eval.side_by_side(recs, {"x": ["only one"]})


def test_detect_gpu_without_cuda():
    from course_utils import memory

    if not torch.cuda.is_available():
        assert memory.detect_gpu() is None


@pytest.mark.skipif(not (assets.is_fetched("mistral-tokenizer") and assets.is_fetched("gpt2-bpe")),
                    reason="offline tokenizer assets not fetched (bash course.sh setup)")
def test_real_tokenizers_split_the_same_text_differently():
    m, g = llm.mistral_tokenizer(), llm.gpt2_tokenizer()
    assert len(m) == 32_000 and len(g) == 50_257
    text = "Knowledge distillation transfers a teacher's predictions to a smaller student."
    assert m.tokenize(text)[:2] == ["▁Know", "ledge"] and g.tokenize(text)[:2] == ["Know", "ledge"]
    assert len(m.tokenize(text)) != len(g.tokenize(text))
    assert g.decode(g(text)["input_ids"]) == text
