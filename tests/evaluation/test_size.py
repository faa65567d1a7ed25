"""Unit tests for course_utils.evaluation.size: parameter counts (tied weights counted once), weights memory, size on
disk of fp32 and int8 models, dynamic int8 quantization and inference memory, on tiny BERTs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.evaluation import size, speed
from course_utils.evaluation.size import count_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a movie film good bad great awful plot is was".split()
TEXTS = ["the movie is good", "a bad film", "great plot", "the film was awful", "good", "bad bad plot",
         "the plot is great", "awful"]


# ========================================================================================== memory and size
def test_sizes_of_fp32_and_int8_models(tiny_bert):
    model = tiny_bert(hidden=64)
    n = sum(p.numel() for p in model.parameters())
    q = size.quantize_int8(model)
    q_linear = size.quantize_int8(model, embeddings=False)
    assert size.count_parameters(model) == n == size.count_parameters(q) == size.count_parameters(q_linear)
    emb = model.get_input_embeddings().weight.numel()
    assert size.count_parameters(q, exclude_embeddings=True) == n - emb == size.count_parameters(model, exclude_embeddings=True)
    assert size.count_parameters(q, trainable_only=True) < n  # int8 weights are not trainable parameters
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert size.weights_memory_mb(model) == pytest.approx((4 * n + buffers) / 1e6)
    assert size.weights_memory_mb(q) < size.weights_memory_mb(q_linear) < size.weights_memory_mb(model)
    fp32_disk = size.size_on_disk_mb(model)
    assert 4 * n / 1e6 < fp32_disk < 4 * n / 1e6 + 0.05
    assert size.size_on_disk_mb(model, "state_dict") == pytest.approx(fp32_disk, rel=0.1)
    assert size.size_on_disk_mb(q) < 0.5 * size.size_on_disk_mb(model, "state_dict")  # auto → state_dict
    with pytest.raises(ValueError, match="cannot save int8"):
        size.size_on_disk_mb(q, "save_pretrained")
    with pytest.raises(ValueError, match="how must be one of"):
        size.size_on_disk_mb(model, "onnx")
    with pytest.raises(TypeError, match="no save_pretrained"):
        size.size_on_disk_mb(nn.Linear(2, 2), "save_pretrained")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        size.count_parameters("model")
    with pytest.raises(TypeError, match="get_input_embeddings"):
        size.count_parameters(nn.Linear(2, 2), exclude_embeddings=True)


def test_tied_weights_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    assert size.count_parameters(Tied()) == 40
    assert size.weights_memory_mb(Tied()) == pytest.approx(160 / 1e6)


def test_quantize_int8_keeps_the_original_and_the_predictions(tokenizer, tiny_bert):
    model = tiny_bert(hidden=64)
    q = size.quantize_int8(model)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, nn.Linear)  # original untouched
    assert "quantized" in type(q.bert.encoder.layer[0].attention.self.query).__module__
    assert "quantized" in type(q.get_input_embeddings()).__module__
    assert isinstance(size.quantize_int8(model, embeddings=False).get_input_embeddings(), nn.Embedding)
    batch = speed.text_batches(tokenizer, TEXTS, [8])[8]
    with torch.inference_mode():
        z, zq = model(**batch).logits, q(**batch).logits
    # 8-bit weights: close to the fp32 logits, not equal (random tiny weights are a harsh case)
    assert not torch.equal(z, zq) and np.corrcoef(z.flatten(), zq.flatten())[0, 1] > 0.95
    with pytest.raises(ValueError, match="already quantized"):
        size.quantize_int8(q)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        size.quantize_int8(z)


def test_inference_memory(tokenizer, tiny_bert):
    model = tiny_bert(hidden=64)
    small = speed.text_batches(tokenizer, TEXTS, [1])[1]
    big = {k: v.repeat(64, 4) for k, v in speed.text_batches(tokenizer, TEXTS, [8])[8].items()}
    m_small, m_big = size.inference_memory_mb(model, small), size.inference_memory_mb(model, big)
    assert 0 < m_small < m_big
    with pytest.raises(TypeError, match="mapping of keyword arguments"):
        size.inference_memory_mb(model, small["input_ids"])


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def get_input_embeddings(self):
        return self.emb


def test_count_parameters_tied_counted_once():
    model = Tied()
    assert count_parameters(model) == 40 + 20
    assert count_parameters(model, exclude_embeddings=True) == 20
    model.body.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 40 + 4
    assert count_parameters(model, trainable_only=True, exclude_embeddings=True) == 4
