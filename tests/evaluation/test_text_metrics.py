"""Unit tests for course_utils.evaluation.text_metrics: ROUGE-L (a longest common subsequence, not a substring),
exact match, answer normalisation and their input checks."""
from __future__ import annotations

import pytest

from course_utils.evaluation import text_metrics

pytestmark = pytest.mark.usefixtures("single_thread")


# =============================================================================================== generation
@pytest.mark.parametrize("cand, ref, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat on the mat", "the cat lay on the mat", 5 / 6),
    ("Bees make honey.", "bees MAKE honey", 1.0),
    ("", "x y z", 0.0),
    ("a b c d e f", "a x c y e z f", 2 * (4 / 6) * (4 / 7) / (4 / 6 + 4 / 7)),
])
def test_rouge_l(cand, ref, expected):
    assert text_metrics.rouge_l(cand, ref) == pytest.approx(expected)


def test_exact_match_and_errors():
    assert text_metrics.normalize_answer("  The Answer: 42! ") == "answer 42"
    assert text_metrics.exact_match("The answer is 42.", "the answer is 42") == 1.0
    assert text_metrics.exact_match("The answer is 42.", "the answer is 42", normalize=False) == 0.0
    assert text_metrics.exact_match("42", "43") == 0.0
    assert text_metrics.exact_match_scores(["a cat", "dog"], ["cat", "a dog!"]) == [1.0, 1.0]
    assert text_metrics.rouge_l_scores(["a b", "c"], ["a b", "d"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="1 candidates but 0 references"):
        text_metrics.exact_match_scores(["a"], [])
    with pytest.raises(TypeError, match="list of strings"):
        text_metrics.rouge_l_scores("abc", "abc")
    with pytest.raises(TypeError, match="two strings"):
        text_metrics.exact_match(None, "a")
    with pytest.raises(TypeError, match="two strings"):
        text_metrics.rouge_l("a", 3)
    with pytest.raises(TypeError, match="takes a string"):
        text_metrics.words(3)


@pytest.mark.parametrize("cand, ref, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat on the mat", "the cat lay on the mat", 5 / 6),
    ("Bees make honey.", "bees MAKE honey", 1.0),
    ("a b c", "x y z", 0.0),
    ("", "x y z", 0.0),
    ("one two three four", "one two", 2 * (0.5 * 1.0) / 1.5),
])
def test_rouge_l_f1_of_the_word_lcs(cand, ref, expected):
    assert text_metrics.rouge_l(cand, ref) == pytest.approx(expected)


def test_rouge_l_subsequence_not_substring_and_errors():
    # LCS 'a c e f' (4 of 6 and of 7 words) although no two words are adjacent in both
    assert text_metrics.rouge_l("a b c d e f", "a x c y e z f") == pytest.approx(2 * (4 / 6) * (4 / 7) / (4 / 6 + 4 / 7))
    assert text_metrics.rouge_l_scores(["a b", "c"], ["a b", "d"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="candidates"):
        text_metrics.rouge_l_scores(["a"], [])
    with pytest.raises(TypeError):
        text_metrics.rouge_l(None, "a")
