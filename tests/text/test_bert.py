"""Unit tests for course_utils.text.bert on tiny randomly initialised BERT/DistilBERT models (no hub, no assets):
layer-copy initialisation and its errors, the profile recipes, student/teacher loading (hub loads replaced), freezing
the word embeddings, and course_utils.evaluation's parameter count, size on disk and latency benchmark on these models.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import text
from course_utils.core import assets
from course_utils.core.profiles import Profile
from course_utils.evaluation.size import count_parameters, size_on_disk_mb
from course_utils.evaluation.speed import benchmark_latency
from course_utils.text.bert import BertRecipe, bert_recipe, every_other_layer, freeze_word_embeddings, init_student_from_teacher


transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a movie film good bad great awful plot is was".split()


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_bert(layers: int = 4, seed: int = 0, num_labels: int = 3, vocab_size: int = 100):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels, max_position_embeddings=32,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)
    return BertForSequenceClassification(config).eval()


def tiny_distilbert(layers: int = 4, seed: int = 0, vocab_size: int = 100):
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=layers, n_heads=2, hidden_dim=64, num_labels=3,
                              max_position_embeddings=32, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    return DistilBertForSequenceClassification(config).eval()


def batch(seed: int = 0, n: int = 3, length: int = 6, vocab_size: int = 100) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, 4:] = 0
    return {"input_ids": torch.randint(1, vocab_size, (n, length), generator=gen), "attention_mask": mask}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def group(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ==================================================================================== init_student_from_teacher
def test_copies_the_chosen_layers_and_everything_else():
    teacher = tiny_bert()
    before = snapshot(teacher)
    student = init_student_from_teacher(teacher, [1, 3])
    assert type(student) is BertForSequenceClassification
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    s = student.state_dict()
    for i, j in enumerate([1, 3]):
        assert_same(group(s, f"bert.encoder.layer.{i}."), group(before, f"bert.encoder.layer.{j}."))
    for prefix in ("bert.embeddings.", "bert.pooler.", "classifier."):
        assert_same(group(s, prefix), group(before, prefix))
    assert not any(k.startswith(("bert.encoder.layer.2.", "bert.encoder.layer.3.")) for k in s)


def test_teacher_unchanged_and_nothing_shared():
    teacher = tiny_bert()
    before = snapshot(teacher)
    student = init_student_from_teacher(teacher, [0, 2])
    assert teacher.config.num_hidden_layers == 4 and len(teacher.bert.encoder.layer) == 4
    assert_same(teacher.state_dict(), before)
    assert student.config is not teacher.config
    teacher_storage = {p.untyped_storage().data_ptr() for p in teacher.parameters()}
    assert not any(p.untyped_storage().data_ptr() in teacher_storage for p in student.parameters())
    with torch.no_grad():  # changing the student leaves the teacher alone
        for p in student.parameters():
            p.add_(1.0)
    assert_same(teacher.state_dict(), before)


def test_one_layer_copy_computes_layer_zero_then_the_head():
    teacher = tiny_bert()
    student = init_student_from_teacher(teacher, [0])
    inputs = batch()
    with torch.no_grad():
        hidden = teacher.bert(**inputs, output_hidden_states=True).hidden_states[1]  # after teacher layer 0
        expected = teacher.classifier(teacher.bert.pooler(hidden))
        got = student(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_full_copy_equals_the_teacher():
    teacher = tiny_bert()
    student = init_student_from_teacher(teacher, range(4))
    inputs = batch(1)
    with torch.no_grad():
        assert torch.allclose(student(**inputs).logits, teacher(**inputs).logits, atol=1e-6)


def test_default_is_every_other_layer():
    assert every_other_layer(4) == (0, 2)
    assert every_other_layer(5) == (0, 2, 4)
    assert every_other_layer(12) == (0, 2, 4, 6, 8, 10)
    assert every_other_layer(1) == (0,)
    with pytest.raises(ValueError, match="≥ 1"):
        every_other_layer(0)
    teacher = tiny_bert(layers=5)
    student = init_student_from_teacher(teacher)
    assert student.config.num_hidden_layers == 3
    assert_same(group(student.state_dict(), "bert.encoder.layer.2."),
                group(teacher.state_dict(), "bert.encoder.layer.4."))


def test_mode_dtype_and_rng_follow_or_are_left_alone():
    teacher = tiny_bert().train()
    assert init_student_from_teacher(teacher, [0]).training
    assert not init_student_from_teacher(teacher.eval(), [0]).training
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    student = init_student_from_teacher(teacher.double(), [1])
    assert torch.equal(torch.rand(2), expected)  # the throw-away initialisation does not consume the caller's RNG
    assert next(student.parameters()).dtype == torch.float64


def test_numpy_and_tuple_indices_accepted():
    teacher = tiny_bert()
    assert init_student_from_teacher(teacher, np.array([1, 2])).config.num_hidden_layers == 2
    assert init_student_from_teacher(teacher, (3,)).config.num_hidden_layers == 1


@pytest.mark.parametrize("layers, match", [
    ([], "empty"),
    ("02", "sequence of layer indices"),
    (2, "sequence of layer indices"),
    ([0, 1.5], "integers"),
    ([True, 2], "integers"),
    ([0, 4], r"\[4\] are out of range: the teacher has 4 layers"),
    ([-1], "out of range"),
    ([1, 1], "distinct"),
    ([2, 0], "increasing"),
])
def test_bad_layers(layers, match):
    with pytest.raises(ValueError, match=match):
        init_student_from_teacher(tiny_bert(), layers)


def test_model_without_encoder_layers():
    with pytest.raises(TypeError, match="no encoder layer list"):
        init_student_from_teacher(nn.Linear(3, 3), [0])


def test_bert_model_without_head():
    teacher = tiny_bert().bert
    student = init_student_from_teacher(teacher, [0, 3])
    assert type(student) is BertModel and len(student.encoder.layer) == 2


def test_distilbert():
    teacher = tiny_distilbert()
    before = snapshot(teacher)
    student = init_student_from_teacher(teacher, [1, 3])
    assert type(student) is DistilBertForSequenceClassification
    assert len(student.distilbert.transformer.layer) == 2 and student.config.n_layers == 2
    assert teacher.config.n_layers == 4
    s = student.state_dict()
    for i, j in enumerate([1, 3]):
        assert_same(group(s, f"distilbert.transformer.layer.{i}."), group(before, f"distilbert.transformer.layer.{j}."))
    for prefix in ("distilbert.embeddings.", "pre_classifier.", "classifier."):
        assert_same(group(s, prefix), group(before, prefix))
    assert_same(teacher.state_dict(), before)


def test_student_survives_save_and_load(tmp_path):
    student = init_student_from_teacher(tiny_bert(), [0, 2])
    student.save_pretrained(tmp_path)
    loaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.num_hidden_layers == 2
    inputs = batch(2)
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, student(**inputs).logits, atol=1e-6)


# ================================================================================================== recipes
@pytest.fixture
def fake_minilm(monkeypatch, tmp_path):
    """The small bert_recipe without the real asset: assets.path('minilm') answers a temporary folder."""

    calls = []

    def path(name, filename=None):
        calls.append(name)
        return tmp_path / name

    monkeypatch.setattr(assets, "path", path)
    return calls


def test_recipe_small(fake_minilm, tmp_path):
    r = bert_recipe("small")
    assert fake_minilm == ["minilm"]
    assert isinstance(r, BertRecipe) and r.profile == "small"
    assert r.teacher == r.tokenizer == str(tmp_path / "minilm")
    assert r.copy_student is None and r.copy_layers == (0, 2, 4)
    assert r.fresh_config == dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
    assert r.max_length == 64
    assert r.student_hparams["learning_rate"] > r.teacher_hparams["learning_rate"]
    assert bert_recipe(None) == r and bert_recipe(Profile("small", "test", True)) == r
    assert "3-layer copy of the teacher (layers [0, 2, 4])" in r.describe() and "2 layers × 128" in r.describe()
    assert "minilm" in r.describe()


def test_recipe_gpu():
    r = bert_recipe("gpu")
    assert r.profile == "gpu" and r.teacher == r.tokenizer == "bert-base-uncased"
    assert r.copy_student == "distilbert-base-uncased"
    assert r.copy_layers == (0, 2, 4, 7, 9, 11)
    assert r.fresh_config["num_hidden_layers"] == 4 and r.fresh_config["hidden_size"] == 256
    assert r.max_length == 128
    assert bert_recipe(Profile("gpu", "test", False)) == r
    assert r.describe().startswith("teacher: bert-base-uncased (fine-tuned); students: distilbert-base-uncased")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.teacher = "x"  # type: ignore[misc]


def test_recipe_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'medium'"):
        bert_recipe("medium")


# ================================================================================================== loading
@pytest.fixture
def fake_hub(monkeypatch):
    """Replace _quiet_load: record (class name, id, kwargs) and return a tiny model."""
    calls = []

    def load(cls, name, **kwargs):
        calls.append((cls.__name__, name, kwargs))
        return tiny_distilbert()

    monkeypatch.setattr(text.bert, "quiet_load", load)
    return calls


def test_load_student_copy_gpu_loads_distilbert(fake_hub):
    teacher = tiny_bert(num_labels=3)
    student = text.bert.load_bert_student(bert_recipe("gpu"), "copy", teacher)
    assert fake_hub == [("AutoModelForSequenceClassification", "distilbert-base-uncased", {"num_labels": 3})]
    assert isinstance(student, DistilBertForSequenceClassification)


def test_load_student_copy_small_copies_layers(fake_hub):
    teacher = tiny_bert(layers=4)
    r = dataclasses.replace(bert_recipe("gpu"), copy_student=None, copy_layers=(1, 2))
    student = text.bert.load_bert_student(r, "copy", teacher)
    assert fake_hub == []
    assert student.config.num_hidden_layers == 2
    assert_same(group(student.state_dict(), "bert.encoder.layer.0."),
                group(teacher.state_dict(), "bert.encoder.layer.1."))


def test_load_student_fresh_shape():
    teacher = tiny_bert(num_labels=3, vocab_size=50)
    r = dataclasses.replace(bert_recipe("gpu"), fresh_config=dict(hidden_size=16, num_hidden_layers=2,
                                                             num_attention_heads=2, intermediate_size=32))
    a = text.bert.load_bert_student(r, "fresh", teacher, seed=1)
    b = text.bert.load_bert_student(r, "fresh", teacher, seed=1)
    assert isinstance(a, BertForSequenceClassification)
    assert a.config.hidden_size == 16 and a.config.num_hidden_layers == 2 and a.config.num_labels == 3
    assert a.get_input_embeddings().num_embeddings == 50
    assert a.config.max_position_embeddings == teacher.config.max_position_embeddings == 32
    assert_same(a.state_dict(), b.state_dict())  # seeded
    c = text.bert.load_bert_student(r, "fresh", teacher, seed=2)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_fresh_student_gpu_recipe_shape():
    s = text.bert.fresh_student(bert_recipe("gpu"), vocab_size=100, num_labels=2, max_position_embeddings=64)
    assert (s.config.hidden_size, s.config.num_hidden_layers, s.config.num_attention_heads,
            s.config.intermediate_size) == (256, 4, 4, 1024)
    assert s.config.num_labels == 2 and s.get_input_embeddings().num_embeddings == 100


def test_load_student_bad_kind():
    with pytest.raises(ValueError, match="unknown student kind 'tiny'"):
        text.bert.load_bert_student(bert_recipe("gpu"), "tiny", tiny_bert())


def test_load_teacher(fake_hub):
    text.bert.load_bert_teacher(bert_recipe("gpu"), num_labels=2)
    assert fake_hub == [("AutoModelForSequenceClassification", "bert-base-uncased", {"num_labels": 2})]


def test_load_tokenizer(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    r = dataclasses.replace(bert_recipe("gpu"), tokenizer=str(tmp_path))
    loaded = text.bert.load_bert_tokenizer(r)
    assert len(loaded) == len(VOCAB)
    assert loaded("the movie")["input_ids"] == tokenizer("the movie")["input_ids"]


# =================================================================================================== sizes
def test_count_parameters_bert():
    model = tiny_bert()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    assert count_parameters(model, exclude_embeddings=True) == total - 100 * 32
    assert count_parameters(model, trainable_only=True) == total


def test_freeze_word_embeddings():
    model = tiny_bert()
    total = count_parameters(model)
    assert freeze_word_embeddings(model) == 100 * 32
    assert not model.get_input_embeddings().weight.requires_grad
    assert model.bert.embeddings.position_embeddings.weight.requires_grad  # only the word embeddings
    assert count_parameters(model, trainable_only=True) == total - 100 * 32
    assert freeze_word_embeddings(model) == 0  # already frozen


def test_size_on_disk():
    model = tiny_bert()
    mb = size_on_disk_mb(model)
    weights = count_parameters(model) * 4 / 1e6
    assert weights < mb < weights + 0.05  # float32 safetensors plus a small config/header
    assert size_on_disk_mb(init_student_from_teacher(model, [0])) < mb


# ================================================================================================= latency
TEXTS = ["the movie is good", "a bad film", "great plot", "the film was awful", "good"]


def test_benchmark_latency(tokenizer):
    bert = tiny_bert(vocab_size=len(VOCAB)).train()
    distil = tiny_distilbert(vocab_size=len(VOCAB))  # its forward takes no token_type_ids
    threads = torch.get_num_threads()
    table = benchmark_latency({"bert": bert, "distil": distil}, tokenizer, TEXTS, batch_sizes=(1, 4), repeats=3,
                              warmup=1, threads=1)
    assert list(table.index) == ["bert", "distil"]
    assert list(table.columns) == ["latency b1 (ms)", "latency b4 (ms)"]
    assert (table.to_numpy() > 0).all()
    assert table.attrs["threads"] == 1
    assert set(table.attrs["raw"]) == {("bert", 1), ("bert", 4), ("distil", 1), ("distil", 4)}
    assert all(len(v) == 3 for v in table.attrs["raw"].values())
    assert torch.get_num_threads() == threads
    assert not bert.training  # benchmarked in eval mode


def test_benchmark_latency_errors(tokenizer):
    model = tiny_bert(vocab_size=len(VOCAB))
    with pytest.raises(ValueError, match="models is empty"):
        benchmark_latency({}, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="repeats must be ≥ 1"):
        benchmark_latency({"m": model}, tokenizer, TEXTS, batch_sizes=(1,), repeats=0)
    with pytest.raises(ValueError, match="warmup ≥ 0"):
        benchmark_latency({"m": model}, tokenizer, TEXTS, batch_sizes=(1,), warmup=-1)
    with pytest.raises(ValueError, match="need at least 32 texts, got 5"):
        benchmark_latency({"m": model}, tokenizer, TEXTS)
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="measures CPU latency"):
        benchmark_latency({"m": copy.deepcopy(model).to("meta")}, tokenizer, TEXTS, batch_sizes=(1,), threads=1)
    assert torch.get_num_threads() == threads  # restored after a failure too

