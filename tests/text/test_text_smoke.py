"""The text track's stand-ins for the gpu profile's smoke run (KD_SMOKE=1): real classes, tiny, the real tokenizer,
the hub dataset's schema; nothing changes outside the smoke run."""
from __future__ import annotations

import pytest

from course_utils.text import bert, feature_trainer, recipes, sentiment


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("KD_SMOKE", "1")


def test_stand_in_dataset_has_the_hub_schema():
    data = sentiment.smoke_hub_dataset()
    assert set(data) == {"train", "validation", "test"}
    for split, ds in data.items():
        assert ds.features["text"].dtype == "string"
        assert ds.features["label"].names == list(sentiment.HUB_LABEL_NAMES)
        assert len(ds) == sentiment.SMOKE_SPLIT_SIZES[split] and sum(ds["label"]) == len(ds) // 2
    train = data["train"]["label"]
    assert train == sorted(train, reverse=True), "positives first, as the hub lists its train split"
    texts = [t for ds in data.values() for t in ds["text"]]
    assert len(set(texts)) == len(texts), "no row in two splits"


@pytest.mark.parametrize("sizes, match", [({"train": 4}, "exactly the splits"),
                                          ({"train": 3, "validation": 2, "test": 2}, "even number"),
                                          ({"train": 0, "validation": 2, "test": 2}, "positive even"),
                                          ({"train": 10**6, "validation": 2, "test": 2}, "fewer than")])
def test_stand_in_dataset_rejects_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        sentiment.smoke_hub_dataset(sizes)


def test_load_hub_dataset_uses_the_stand_in_only_in_the_smoke_run(smoke):
    assert len(sentiment._load_hub_dataset(sentiment.HUB_DATASET)["train"]) == sentiment.SMOKE_SPLIT_SIZES["train"]
    with pytest.raises(ValueError, match="stand-in for 'rotten_tomatoes' only"):
        sentiment._load_hub_dataset("imdb")


def test_bert_recipe_outside_the_smoke_run_names_the_hub(monkeypatch):
    monkeypatch.delenv("KD_SMOKE", raising=False)
    r = bert.bert_recipe("gpu")
    assert r.teacher == "bert-base-uncased" and r.copy_student == "distilbert-base-uncased"


def test_smoke_recipe_loads_the_real_classes_through_from_pretrained(smoke):
    from transformers import BertForSequenceClassification, DistilBertForSequenceClassification

    r = bert.bert_recipe("gpu")
    assert r.profile == "gpu" and r.teacher == bert.smoke_bert_standins()["teacher"]
    assert r.teacher_hparams["max_steps"] == 2 and r.fresh_hparams["max_steps"] == 2
    tok = bert.load_bert_tokenizer(r)
    assert tok.vocab_size == 30_522 and tok.tokenize("Distillation") == ["di", "##sti", "##llation"]
    teacher = bert.load_bert_teacher(r)
    assert isinstance(teacher, BertForSequenceClassification) and teacher.config.num_hidden_layers == 12
    student = bert.load_bert_student(r, "copy", teacher)
    assert isinstance(student, DistilBertForSequenceClassification)
    assert student.config.vocab_size == teacher.config.vocab_size == 30_522
    narrow = feature_trainer.narrow_student(teacher, "gpu")
    assert narrow.config.hidden_size == feature_trainer.SMOKE_NARROW_STUDENT["hidden_size"]
    assert narrow.config.num_attention_heads == teacher.config.num_attention_heads


def test_smoke_prepare_and_feature_recipe_shrink_sizes_only(smoke):
    task = recipes.prepare("gpu")
    half = sentiment.SMOKE_SPLIT_SIZES["train"] // 2
    assert {k: len(v) for k, v in task.data.items()} == {"train": half, "transfer": half,
                                                          "validation": sentiment.SMOKE_SPLIT_SIZES["validation"],
                                                          "test": sentiment.SMOKE_SPLIT_SIZES["test"]}
    r = recipes.feature_recipe(task)
    gpu = recipes.FEATURE_RECIPES["gpu"]
    assert r["max_steps"] == 2 and r["per_device_train_batch_size"] == 4
    assert {k: v for k, v in r.items() if k in gpu and k not in ("max_steps", "per_device_train_batch_size")} == \
        {k: v for k, v in gpu.items() if k not in ("max_steps", "per_device_train_batch_size")}
