"""Unit tests for course_utils.text.recipes: the notebook-03 pipeline (prepare → teacher → distillation_sets →
train_student / student) end to end in BOTH profiles, on tiny local models (no hub, no assets, no network).

* ``small``: the recipe's teacher/tokenizer point at a tiny BERT (4 layers × 32) saved to a temporary directory, the
  snippets come from a temporary file.
* ``gpu``: the hub dataset is an in-memory stand-in, ``bert-base-uncased`` is replaced by the tiny BERT and
  ``distilbert-base-uncased`` by a tiny DistilBERT, so the gpu code path (a pretrained DistilBERT copy student)
  runs as it would on the hub models.

Every training run is 2 steps of 8 examples; the course cache lives in a temporary directory.
"""
from __future__ import annotations

import copy
import dataclasses
import random
import types

import numpy as np
import pytest
import torch

import course_utils.text.recipes
from course_utils.core import cache, hf
from course_utils.text import bert, sentiment
from course_utils.training import distillation_trainer

transformers = pytest.importorskip("transformers")
from datasets import Dataset, DatasetDict  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    "the a movie film plot is was very not good great fun bad awful boring".split()
POSITIVE, NEGATIVE = ["good", "great", "fun"], ["bad", "awful", "boring"]
FILLER = ["the", "a", "movie", "film", "plot", "is", "was", "very", "not"]
SIZES = dict(n_train=16, n_validation=8, n_test=8, n_transfer=16)
TINY_HPARAMS = dict(max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=1)
REAL_RECIPE = bert.bert_recipe


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------------ fixtures
def _texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` distinct short reviews, alternately negative and positive."""
    rng = random.Random(seed)
    texts, labels, seen = [], [], set()
    while len(texts) < n:
        label = len(texts) % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))] + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny pretrained-looking BERT encoder (+ its tokenizer) and a tiny DistilBERT, saved like hub models."""
    root = tmp_path_factory.mktemp("tiny-models")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    bert_dir, distil_dir = root / "tiny-bert", root / "tiny-distilbert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    DistilBertModel(DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64)).save_pretrained(distil_dir)
    return {"bert": str(bert_dir), "distilbert": str(distil_dir)}


def tiny_recipe(profile: str, tiny_models: dict) -> bert.BertRecipe:
    """The real recipe of ``profile`` with the models replaced by the tiny ones and 2-step training."""
    r = REAL_RECIPE(profile)
    return dataclasses.replace(
        r, teacher=tiny_models["bert"], tokenizer=tiny_models["bert"],
        copy_student=tiny_models["distilbert"] if profile == "gpu" else None, copy_layers=(0, 2),
        fresh_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        max_length=16, teacher_hparams=dict(TINY_HPARAMS), student_hparams=dict(TINY_HPARAMS),
        fresh_hparams=dict(TINY_HPARAMS),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models):
    """Tiny recipes for both profiles, a temporary snippets file and hub stand-in, the cache in a temporary dir."""
    root = tmp_path_factory.mktemp("sentiment")
    snippets = root / "movieReviewSnippets_GroundTruth.txt"
    texts, labels = _texts(60, seed=0)
    rows = [f"{i + 1}\t{2.0 if y else -2.0}\t{t}\r\n" for i, (t, y) in enumerate(zip(texts, labels))]
    snippets.write_bytes("".join(rows).encode("utf-8"))
    real_read = sentiment.read_snippets
    hub_calls = []

    def hub(name):
        hub_calls.append(name)
        out = {}
        for split, n, seed in (("train", 32, 1), ("validation", 8, 2), ("test", 8, 3)):
            t, y = _texts(n, seed)
            out[split] = Dataset.from_dict({"text": t, "label": y})
        return DatasetDict(out)

    recipes = {p: tiny_recipe(p, tiny_models) for p in ("small", "gpu")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bert, "bert_recipe", lambda profile=None: recipes[getattr(profile, "name", profile) or "small"])
        mp.setattr(sentiment, "read_snippets", lambda path=None: real_read(snippets if path is None else path))
        mp.setattr(sentiment, "_load_hub_dataset", hub)
        mp.setenv("KD_COURSE_CACHE", str(root / "cache"))
        mp.delenv("KD_COURSE_RETRAIN", raising=False)
        yield {"root": root, "recipes": recipes, "hub_calls": hub_calls}


@pytest.fixture(scope="module")
def task(env):
    return course_utils.text.recipes.prepare(**SIZES)


@pytest.fixture(scope="module")
def teacher_model(task):
    model, _ = course_utils.text.recipes.fine_tune_teacher(task)
    return model


@pytest.fixture(scope="module")
def sets(task, teacher_model):
    return course_utils.text.recipes.distillation_sets(task, teacher_model)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, env):
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path))
    return tmp_path


def counting(monkeypatch, name: str) -> list:
    """Replace ``recipes.<name>`` by a wrapper that records each call and calls the real function."""
    real, calls = getattr(course_utils.text.recipes, name), []

    def wrapper(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(course_utils.text.recipes, name, wrapper)
    return calls


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ===================================================================================================== small
def test_prepare(task, env):
    assert task.profile == "small" and task.seed == 0
    assert task.recipe is env["recipes"]["small"]
    assert task.sizes == SIZES
    assert list(task.data) == list(sentiment.SPLITS)
    assert {k: len(v) for k, v in task.data.items()} == {
        "train": 16, "validation": 8, "test": 8, "transfer": 16}
    for split, ds in task.data.items():
        assert {"input_ids", "attention_mask", "length"} <= set(ds.column_names), split
        assert ("label" in ds.column_names) is (split != "transfer")
        assert max(ds["length"]) <= task.recipe.max_length
    assert task.tokenizer.convert_ids_to_tokens(task.data["train"][0]["input_ids"])[0] == "[CLS]"
    assert len(task.tokenizer) == len(VOCAB)


def test_prepare_profile_names_and_seed(env):
    other = course_utils.text.recipes.prepare(None, seed=1, **SIZES)
    assert other.profile == "small" and other.seed == 1
    assert course_utils.text.recipes.prepare(types.SimpleNamespace(name="small"), **SIZES).profile == "small"  # a Profile-like
    assert list(other.data["train"]["text"]) != list(course_utils.text.recipes.prepare("small", **SIZES).data["train"]["text"])


def test_fingerprint(task):
    fp = task.fingerprint(seed=3, kind="copy")
    assert fp["splits"] == SIZES and fp["split_seed"] == 0
    assert fp["seed"] == 3 and fp["kind"] == "copy"
    assert fp["recipe"]["teacher"] == "tiny-bert"  # the last path component, not the machine-specific path
    assert fp["recipe"]["copy_layers"] == [0, 2] and fp["recipe"]["max_length"] == 16
    assert fp["recipe"]["teacher_hparams"] == TINY_HPARAMS


def test_fingerprint_of_some_splits(task):
    fp = task.fingerprint(splits=("train", "test"), seed=0)
    assert fp["splits"] == {"n_train": SIZES["n_train"], "n_test": SIZES["n_test"]}


def test_weights_digest(teacher_model):
    digest = course_utils.text.recipes.weights_digest(teacher_model)
    assert isinstance(digest, str) and len(digest) == 16 and digest == course_utils.text.recipes.weights_digest(teacher_model)
    other = copy.deepcopy(teacher_model)
    with torch.no_grad():
        other.classifier.bias.add_(1e-3)
    assert course_utils.text.recipes.weights_digest(other) != digest


def test_fine_tune_teacher(task, teacher_model):
    assert isinstance(teacher_model, BertForSequenceClassification)
    assert teacher_model.config.num_labels == 2 and teacher_model.config.num_hidden_layers == 4
    assert not teacher_model.training
    assert all(p.requires_grad for p in teacher_model.parameters())  # unfrozen again after training


def test_teacher_trains_then_caches(task, fresh_cache, monkeypatch, capsys):
    calls = counting(monkeypatch, "fine_tune_teacher")
    model, metrics = course_utils.text.recipes.teacher(task)
    assert len(calls) == 1 and "fine-tuning it now" in capsys.readouterr().out
    assert metrics["steps"] == 2 and 0 <= metrics["validation_accuracy"] <= 1 and metrics["train_seconds"] >= 0
    path = cache.model_dir("sentiment-teacher")
    assert path.is_dir() and (path / "tokenizer_config.json").is_file()

    again, metrics_again = course_utils.text.recipes.teacher(task)
    assert len(calls) == 1 and "loaded from the cache" in capsys.readouterr().out
    assert isinstance(again, BertForSequenceClassification) and not again.training
    assert again is not model and same_weights(again, model)
    assert metrics_again == metrics

    course_utils.text.recipes.teacher(task, verbose=False)
    assert len(calls) == 1 and capsys.readouterr().out == ""
    course_utils.text.recipes.teacher(task, retrain=True, verbose=False)  # explicit retrain
    assert len(calls) == 2
    monkeypatch.setenv("KD_COURSE_RETRAIN", "1")
    course_utils.text.recipes.teacher(task, verbose=False)
    assert len(calls) == 3
    monkeypatch.delenv("KD_COURSE_RETRAIN")
    course_utils.text.recipes.teacher(task, seed=1, verbose=False)  # another seed is another recipe
    assert len(calls) == 4 and calls[-1] == {"seed": 1}
    course_utils.text.recipes.teacher(task, seed=1, verbose=False)
    assert len(calls) == 4


def test_teacher_cache_depends_on_the_splits(env, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "fine_tune_teacher")
    a = course_utils.text.recipes.prepare(**SIZES)
    course_utils.text.recipes.teacher(a, verbose=False)
    course_utils.text.recipes.teacher(course_utils.text.recipes.prepare(**SIZES), verbose=False)
    assert len(calls) == 1
    course_utils.text.recipes.teacher(course_utils.text.recipes.prepare(**{**SIZES, "n_train": 14}), verbose=False)
    assert len(calls) == 2
    # the teacher never sees the transfer split (drawn after train), so its size does not invalidate the teacher
    course_utils.text.recipes.teacher(course_utils.text.recipes.prepare(**{**SIZES, "n_train": 14, "n_transfer": 4}), verbose=False)
    assert len(calls) == 2


def test_distillation_sets(task, teacher_model, sets):
    assert set(sets) == set(course_utils.text.recipes.STUDENT_METHODS) == {"hard", "kd_labelled", "pseudo", "kd"}
    n_train, n_transfer = SIZES["n_train"], SIZES["n_transfer"]
    assert sets["hard"] is task.data["train"]
    # kd_labelled: exactly the hard-label rows and labels, plus the teacher's logits
    assert list(sets["kd_labelled"]["text"]) == list(task.data["train"]["text"])
    assert list(sets["kd_labelled"]["label"]) == list(task.data["train"]["label"])
    assert sets["kd_labelled"][distillation_trainer.TEACHER_LOGITS] == sets["kd"].select(range(n_train))[distillation_trainer.TEACHER_LOGITS]
    assert len(sets["hard"]) == n_train and len(sets["pseudo"]) == len(sets["kd"]) == n_train + n_transfer
    assert distillation_trainer.TEACHER_LOGITS in sets["kd"].column_names
    assert distillation_trainer.TEACHER_LOGITS not in sets["pseudo"].column_names
    assert sets["pseudo"].features == task.data["train"].features
    texts = list(task.data["train"]["text"]) + list(task.data["transfer"]["text"])
    assert list(sets["pseudo"]["text"]) == list(sets["kd"]["text"]) == texts
    assert list(sets["pseudo"]["label"]) == list(sets["kd"]["label"])

    tok = task.tokenizer
    train_logits = hf.dataset_logits(teacher_model, task.data["train"], tok)
    transfer_logits = hf.dataset_logits(teacher_model, task.data["transfer"], tok)
    kd_logits = np.asarray(sets["kd"][distillation_trainer.TEACHER_LOGITS], dtype=np.float32)
    assert kd_logits.shape == (n_train + n_transfer, 2)
    np.testing.assert_allclose(kd_logits, np.concatenate([train_logits, transfer_logits]), rtol=1e-5, atol=1e-6)
    labels = np.asarray(sets["pseudo"]["label"])
    assert labels[:n_train].tolist() == list(task.data["train"]["label"])  # human labels on train
    assert labels[n_train:].tolist() == transfer_logits.argmax(-1).tolist()  # teacher labels on transfer


@pytest.mark.parametrize("kind", course_utils.text.recipes.KINDS)
@pytest.mark.parametrize("method", course_utils.text.recipes.STUDENT_METHODS)
def test_train_student(task, teacher_model, sets, kind, method, monkeypatch):
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    seen, real = [], distillation_trainer.train_student

    def spy(student, train_dataset, tokenizer, **kwargs):
        seen.append(dict(kwargs, dataset=train_dataset))
        return real(student, train_dataset, tokenizer, **kwargs)

    monkeypatch.setattr(distillation_trainer, "train_student", spy)
    model, metrics = course_utils.text.recipes.train_sentiment_student(task, teacher_model, sets, kind, method, temperature=3.0, alpha_kd=0.7)
    # kd, kd_labelled: alpha_kd > 0 on the precomputed logits (no live teacher); hard/pseudo: alpha_kd = 0, CE only
    (call,) = seen
    assert call["dataset"] is sets[method] and call["teacher"] is None and call["temperature"] == 3.0
    assert call["alpha_kd"] == (0.7 if method in ("kd", "kd_labelled") else 0.0)
    hparams = task.recipe.student_hparams if kind == "copy" else task.recipe.fresh_hparams
    assert {k: call[k] for k in hparams} == hparams
    assert isinstance(model, BertForSequenceClassification) and not model.training
    if kind == "copy":
        assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
        assert not model.get_input_embeddings().weight.requires_grad  # frozen like the teacher's during training
    else:
        assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 16
        assert model.get_input_embeddings().num_embeddings == len(VOCAB)
    assert metrics["steps"] == 2
    assert metrics["examples"] == len(sets[method])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["train_seconds"] >= 0
    after = teacher_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher is untouched


@pytest.mark.parametrize("kind, method", [("big", "kd"), ("Copy", "hard"), ("copy", "soft"), ("fresh", "")])
def test_bad_kind_or_method(task, teacher_model, sets, kind, method):
    with pytest.raises(ValueError, match="unknown"):
        course_utils.text.recipes.train_sentiment_student(task, teacher_model, sets, kind, method)
    with pytest.raises(ValueError, match="unknown"):
        course_utils.text.recipes.student(task, teacher_model, kind, method, sets=sets)


def test_student_caches_per_kind_method_seed(task, teacher_model, sets, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "train_sentiment_student")
    model, metrics = course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets)
    assert len(calls) == 1 and cache.model_dir("sentiment-copy-kd-s0").is_dir()
    again, metrics_again = course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets)
    assert len(calls) == 1 and metrics_again == metrics
    assert isinstance(again, BertForSequenceClassification) and not again.training and same_weights(again, model)

    course_utils.text.recipes.student(task, teacher_model, "copy", "kd", seed=1, sets=sets)  # another seed: another model
    course_utils.text.recipes.student(task, teacher_model, "copy", "pseudo", sets=sets)  # another method
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets)  # another kind
    assert len(calls) == 4
    assert {p.name for p in cache.models_dir().iterdir()} == {
        "sentiment-copy-kd-s0", "sentiment-copy-kd-s1", "sentiment-copy-pseudo-s0", "sentiment-fresh-kd-s0"}
    for kind, method, seed in (("copy", "kd", 0), ("copy", "kd", 1), ("copy", "pseudo", 0), ("fresh", "kd", 0)):
        course_utils.text.recipes.student(task, teacher_model, kind, method, seed=seed, sets=sets)
    assert len(calls) == 4  # all cached

    course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets, retrain=True)
    assert len(calls) == 5

    # loaded from the cache, a copy student is set up as when it was trained: word embeddings frozen
    cached, _ = course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets)
    assert len(calls) == 5 and not cached.get_input_embeddings().weight.requires_grad
    fresh, _ = course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets)
    assert fresh.get_input_embeddings().weight.requires_grad


def test_student_cache_depends_on_the_teacher_weights(task, teacher_model, sets, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "train_sentiment_student")
    course_utils.text.recipes.student(task, teacher_model, "fresh", "hard", sets=sets)
    other = copy.deepcopy(teacher_model)
    with torch.no_grad():
        other.classifier.bias.add_(1e-3)
    course_utils.text.recipes.student(task, other, "fresh", "hard", sets=sets)  # another teacher: not the cached student
    assert len(calls) == 2
    course_utils.text.recipes.student(task, teacher_model, "fresh", "hard", sets=sets)
    assert len(calls) == 3  # one cache slot per name: the first teacher's student was replaced


def test_student_cache_invalidated_by_kd_settings(task, teacher_model, sets, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "train_sentiment_student")
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets)
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets, temperature=2.0)
    assert len(calls) == 1
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets, temperature=4.0)
    assert len(calls) == 2
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets, temperature=4.0)
    assert len(calls) == 2
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets, temperature=4.0, alpha_kd=0.5)
    assert len(calls) == 3
    _, metrics = course_utils.text.recipes.student(task, teacher_model, "fresh", "kd", sets=sets, temperature=4.0, alpha_kd=0.5,
                                   max_steps=3)  # a hyper-parameter override
    assert len(calls) == 4 and metrics["steps"] == 3


def test_student_cache_ignores_kd_settings_without_kd(task, teacher_model, sets, fresh_cache, monkeypatch):
    """Temperature and alpha_kd do not change a hard/pseudo student, so they do not invalidate it."""
    calls = counting(monkeypatch, "train_sentiment_student")
    course_utils.text.recipes.student(task, teacher_model, "fresh", "hard", sets=sets)
    course_utils.text.recipes.student(task, teacher_model, "fresh", "hard", sets=sets, alpha_kd=0.9)
    course_utils.text.recipes.student(task, teacher_model, "fresh", "hard", sets=sets, temperature=4.0)
    assert len(calls) == 1
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd_labelled", sets=sets)
    course_utils.text.recipes.student(task, teacher_model, "fresh", "kd_labelled", sets=sets, alpha_kd=0.5)  # kd_labelled has a KD term
    assert len(calls) == 3


def test_recipe_kd_settings_are_the_defaults(task, teacher_model, sets, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "train_sentiment_student")
    for kind in course_utils.text.recipes.KINDS:
        settings = course_utils.text.recipes.kd_settings(task, kind)
        assert settings == (task.recipe.copy_kd if kind == "copy" else task.recipe.fresh_kd)
        course_utils.text.recipes.student(task, teacher_model, kind, "kd", sets=sets)
        course_utils.text.recipes.student(task, teacher_model, kind, "kd", sets=sets, **settings)  # the same student: cached
    assert len(calls) == 2
    with pytest.raises(ValueError, match="unknown student kind"):
        course_utils.text.recipes.kd_settings(task, "big")


def test_fresh_steps_match_the_kd_set(task, monkeypatch):
    assert course_utils.text.recipes.fresh_steps(task) == TINY_HPARAMS["max_steps"]  # a recipe with max_steps keeps it
    import dataclasses

    monkeypatch.setattr(task, "recipe", dataclasses.replace(
        task.recipe, fresh_hparams=dict(num_train_epochs=2, per_device_train_batch_size=5)))
    n_kd = SIZES["n_train"] + SIZES["n_transfer"]
    assert course_utils.text.recipes.fresh_steps(task) == 2 * -(-n_kd // 5)


def test_student_computes_the_sets_when_not_given(task, teacher_model, fresh_cache, monkeypatch):
    calls = counting(monkeypatch, "distillation_sets")
    _, metrics = course_utils.text.recipes.student(task, teacher_model, "fresh", "pseudo")
    assert len(calls) == 1 and metrics["examples"] == SIZES["n_train"] + SIZES["n_transfer"]
    course_utils.text.recipes.student(task, teacher_model, "fresh", "pseudo")  # cached: no teacher pass at all
    assert len(calls) == 1


def test_logits_of(task, teacher_model):
    logits = course_utils.text.recipes.logits_of(teacher_model, task)
    assert logits.shape == (SIZES["n_test"], 2) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits, hf.dataset_logits(teacher_model, task.data["test"], task.tokenizer))
    assert course_utils.text.recipes.logits_of(teacher_model, task, "transfer").shape == (SIZES["n_transfer"], 2)


# ======================================================================================================= gpu
def test_gpu_profile_pipeline(env, fresh_cache, monkeypatch):
    """The gpu code path — hub dataset, a hub teacher, a pretrained DistilBERT copy student — on tiny models."""
    real = REAL_RECIPE("gpu")
    r = env["recipes"]["gpu"]
    assert (real.copy_student, real.teacher) == ("distilbert-base-uncased", "bert-base-uncased")
    assert r == dataclasses.replace(real, teacher=r.teacher, tokenizer=r.tokenizer, copy_student=r.copy_student,
                                    copy_layers=r.copy_layers, fresh_config=r.fresh_config, max_length=r.max_length,
                                    teacher_hparams=r.teacher_hparams, student_hparams=r.student_hparams,
                                    fresh_hparams=r.fresh_hparams)

    task = course_utils.text.recipes.prepare("gpu", n_train=16, n_transfer=16)
    assert task.profile == "gpu" and env["hub_calls"][-1] == sentiment.HUB_DATASET
    assert {k: len(v) for k, v in task.data.items()} == {"train": 16, "validation": 8, "test": 8, "transfer": 16}
    assert "label" not in task.data["transfer"].column_names

    teacher_model, t_metrics = course_utils.text.recipes.teacher(task, verbose=False)
    assert isinstance(teacher_model, BertForSequenceClassification) and t_metrics["steps"] == 2
    assert cache.model_dir("sentiment-teacher", "gpu").is_dir() and not cache.models_dir("small").exists()

    sets = course_utils.text.recipes.distillation_sets(task, teacher_model)
    assert (len(sets["hard"]), len(sets["kd"])) == (16, 32) and distillation_trainer.TEACHER_LOGITS in sets["kd"].column_names

    copy_kd, metrics = course_utils.text.recipes.train_sentiment_student(task, teacher_model, sets, "copy", "kd")
    assert isinstance(copy_kd, DistilBertForSequenceClassification)
    assert copy_kd.config.n_layers == 2 and copy_kd.config.num_labels == 2 and not copy_kd.training
    assert not copy_kd.get_input_embeddings().weight.requires_grad
    assert metrics["steps"] == 2 and metrics["examples"] == 32 and 0 <= metrics["test_accuracy"] <= 1
    pretrained = DistilBertModel.from_pretrained(r.copy_student)
    assert torch.equal(copy_kd.distilbert.transformer.layer[0].ffn.lin1.weight,  # trained: weights moved
                       pretrained.transformer.layer[0].ffn.lin1.weight) is False
    assert torch.equal(copy_kd.get_input_embeddings().weight, pretrained.get_input_embeddings().weight)  # frozen

    fresh, f_metrics = course_utils.text.recipes.train_sentiment_student(task, teacher_model, sets, "fresh", "kd")
    assert isinstance(fresh, BertForSequenceClassification) and fresh.config.num_hidden_layers == 1
    assert f_metrics["steps"] == 2

    # through the cache: the DistilBERT student comes back as a DistilBERT
    calls = counting(monkeypatch, "train_sentiment_student")
    first, _ = course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets)
    second, _ = course_utils.text.recipes.student(task, teacher_model, "copy", "kd", sets=sets)
    assert len(calls) == 1 and isinstance(second, DistilBertForSequenceClassification) and same_weights(first, second)
    assert cache.model_dir("sentiment-copy-kd-s0", "gpu").is_dir()
