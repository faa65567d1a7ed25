"""Unit tests for course_utils.core.hf: ``quiet_load`` restores the transformers logging, ``dataset_logits`` keeps the
dataset's order and the model's train/eval mode (on a tiny BERT classifier and the shared tokenised ``reviews``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification

from course_utils.core import hf
from course_utils.core.hf import dataset_logits

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    "the a movie film plot is was very not good great fun bad awful boring".split()


pytestmark = pytest.mark.usefixtures("single_thread")


def bert(layers: int = 1, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        num_labels=2, max_position_embeddings=64, initializer_range=0.2))


# ================================================================================================ quiet_load
def test_quiet_load_restores_logging():
    from transformers.utils import logging as hf_logging

    class Fake:
        @classmethod
        def from_pretrained(cls, name, **kwargs):
            assert hf_logging.get_verbosity() == hf_logging.ERROR
            if name == "boom":
                raise OSError("no such model")
            return (name, kwargs)

    level = hf_logging.get_verbosity()
    assert hf.quiet_load(Fake, "m", num_labels=2) == ("m", {"num_labels": 2})
    assert hf_logging.get_verbosity() == level
    with pytest.raises(OSError):
        hf.quiet_load(Fake, "boom")
    assert hf_logging.get_verbosity() == level


# ============================================================================================ dataset_logits
def test_predict_logits_keeps_dataset_order_and_mode(reviews, tokenizer):
    model = bert(layers=2, seed=3).train()
    logits = dataset_logits(model, reviews, tokenizer, batch_size=5)  # several length-sorted batches
    assert model.training, "train mode not restored"
    assert logits.shape == (32, 2) and logits.dtype == np.float32
    model.eval()
    with torch.no_grad():
        for i in (0, 7, 31):
            row = reviews[i]
            one = model(**{k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")})
            assert np.allclose(logits[i], one.logits[0].numpy(), atol=1e-5), i
    dataset_logits(model, reviews, tokenizer)
    assert not model.training  # eval mode stays eval


def test_predict_logits_needs_tokenised_data(tokenizer):
    with pytest.raises(ValueError, match="not tokenised"):
        dataset_logits(bert(), Dataset.from_dict({"text": ["a film"]}), tokenizer)
