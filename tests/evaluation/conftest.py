"""Fixtures shared by the course_utils.evaluation tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_bert(request):
    """A builder of tiny eval-mode BERT classifiers (no dropout) over the requesting module's ``VOCAB``."""
    from transformers import BertConfig, BertForSequenceClassification

    vocab_size = len(request.module.VOCAB)

    def build(layers: int = 2, seed: int = 0, hidden: int = 32, num_labels: int = 2):
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=2 * hidden, num_labels=num_labels, max_position_embeddings=32,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)
        return BertForSequenceClassification(config).eval()

    return build
