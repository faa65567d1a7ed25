"""Shared pytest fixtures for the course_utils tests.

The tests mirror the package: ``tests/<subpackage>/test_<module>.py`` tests ``course_utils.<subpackage>.<module>``
(``tests/checks`` holds one file per notebook's checkers). There is no ``__init__.py``: every test file has a
basename of its own.
"""
from __future__ import annotations

import random

import pytest
import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
POSITIVE, NEGATIVE = ["good", "great", "fun"], ["bad", "awful", "boring"]
FILLER = ["the", "a", "movie", "film", "plot", "is", "was", "very", "not"]


@pytest.fixture(autouse=True)
def strict_checks(monkeypatch):
    """Checkers raise ``CheckFailed`` in the tests, as in the nbval run of ``solutions/``; tests of the default
    (report-only) mode set ``KD_COURSE_STRICT_CHECKS=0`` themselves."""
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "1")


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: OpenMP thread hand-offs cost far more than the maths (100x on a busy 2-core machine).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``; the thread count is restored
    after the module.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def course_cache(tmp_path, monkeypatch):
    """The course cache (``KD_COURSE_CACHE``) in ``tmp_path / "cache"``, without ``KD_COURSE_RETRAIN``."""
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KD_COURSE_RETRAIN", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tokenizer(request, tmp_path_factory):
    """A word-level ``BertTokenizer`` over the requesting module's ``VOCAB`` (token ids in ``VOCAB``'s order); the
    special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` that ``VOCAB`` lacks come first."""
    from transformers import BertTokenizer

    vocab = list(request.module.VOCAB)
    vocab = [token for token in SPECIAL_TOKENS if token not in vocab] + vocab
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizer(str(path))


def _reviews(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` short reviews, alternately negative and positive: filler words and one word of the label's sentiment."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 9))] + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def _tokenised(data: dict, tokenizer):
    from datasets import Dataset

    from course_utils.text import sentiment

    return sentiment.tokenize(Dataset.from_dict(data), tokenizer, max_length=16)


@pytest.fixture(scope="module")
def reviews(tokenizer):
    """32 labelled reviews tokenised (at most 16 tokens) by ``tokenizer``: the module's ``VOCAB`` must hold the
    words of ``POSITIVE``, ``NEGATIVE`` and ``FILLER``."""
    texts, labels = _reviews(32, seed=0)
    return _tokenised({"text": texts, "label": labels}, tokenizer)


@pytest.fixture(scope="module")
def unlabelled_reviews(tokenizer):
    """12 other reviews (another seed), tokenised like ``reviews`` and without a label column."""
    texts, _ = _reviews(12, seed=1)
    return _tokenised({"text": texts}, tokenizer)
