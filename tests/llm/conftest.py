"""Fixtures shared by the course_utils.llm tests."""
from __future__ import annotations

import pytest

from course_utils.llm import tiny


@pytest.fixture(scope="module")
def llama_pair():
    """A tiny 4-layer Llama (from course_utils.llm.tiny) and its word-level tokenizer."""
    tok = tiny.toy_llama_tokenizer()
    return tiny.tiny_llama(tok, layers=4), tok
