"""Text metrics for generated answers: ROUGE-L F1 over words (Lin 2004) and SQuAD-style exact match.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

__all__ = ['words', 'lcs_length', 'rouge_l', 'rouge_l_scores', 'normalize_answer', 'exact_match', 'exact_match_scores']


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation and case do not count."""
    if not isinstance(text, str):
        raise TypeError(f"words() takes a string, got {type(text).__name__}")
    return re.findall(r"\w+", text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference`` (Lin 2004), on lower-cased words.

    With L = the length of the longest common subsequence of the two word lists (in order, gaps allowed),
    P = L / |candidate|, R = L / |reference|, F1 = 2PR / (P + R). 0 when either text has no word or nothing is
    shared; 1 for identical word sequences.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise TypeError(f"rouge_l compares two strings, got {type(candidate).__name__} and {type(reference).__name__}")
    c, r = words(candidate), words(reference)
    lcs = lcs_length(c, r) if c and r else 0
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def _aligned(candidates: Sequence[str], references: Sequence[str]) -> None:
    for name, xs in (("candidates", candidates), ("references", references)):
        if isinstance(xs, str) or not isinstance(xs, Sequence):
            raise TypeError(f"{name} must be a list of strings, got {type(xs).__name__}")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")


def rouge_l_scores(candidates: Sequence[str], references: Sequence[str]) -> list[float]:
    """:func:`rouge_l` for aligned lists (the i-th candidate against the i-th reference)."""
    _aligned(candidates, references)
    return [rouge_l(c, r) for c, r in zip(candidates, references)]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (Rajpurkar et al. 2016): lower case, no punctuation, no articles (a, an, the),
    single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer takes a string, got {type(text).__name__}")
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(candidate: str, reference: str, normalize: bool = True) -> float:
    """1.0 if the two answers are identical (after :func:`normalize_answer` when ``normalize``), else 0.0.

    Strict by design: right for short answers (a number, a label, a name), meaningless for free text — use
    :func:`rouge_l` there.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise TypeError(f"exact_match compares two strings, got {type(candidate).__name__} and "
                        f"{type(reference).__name__}")
    if normalize:
        return float(normalize_answer(candidate) == normalize_answer(reference))
    return float(candidate == reference)


def exact_match_scores(candidates: Sequence[str], references: Sequence[str], normalize: bool = True) -> list[float]:
    """:func:`exact_match` for aligned lists."""
    _aligned(candidates, references)
    return [exact_match(c, r, normalize) for c, r in zip(candidates, references)]
