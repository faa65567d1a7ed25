"""Unit tests for course_utils.core.cache on a tiny BERT classifier, with the course cache moved to a temporary
directory (``KD_COURSE_CACHE``, the shared ``course_cache`` fixture): save/load round trip, fingerprint mismatch,
``KD_COURSE_RETRAIN``, interrupted saves, name and profile validation, ``clear``, ``load_meta`` and ``cached_json``.
"""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from course_utils.core import cache

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a movie film good bad great awful plot is was".split()
FINGERPRINT = {"recipe": {"teacher": "minilm", "copy_layers": [0, 2]}, "splits": {"n_train": 16}, "seed": 0}
METRICS = {"steps": 2, "test_accuracy": 0.75}


pytestmark = pytest.mark.usefixtures("course_cache")


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2, max_position_embeddings=16)
    return BertForSequenceClassification(config)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --------------------------------------------------------------------------------------------------- layout
def test_directories_follow_the_cache(course_cache):
    assert cache.models_dir() == course_cache / "models" / "small"
    assert cache.models_dir("gpu") == course_cache / "models" / "gpu"
    assert cache.model_dir("sentiment-teacher") == course_cache / "models" / "small" / "sentiment-teacher"
    assert cache.model_dir("x", "gpu") == course_cache / "models" / "gpu" / "x"
    assert not (course_cache / "models").exists()  # not created


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", ".hidden", "..", "/abs"])
def test_bad_names(name):
    with pytest.raises(ValueError, match="plain directory name"):
        cache.model_dir(name)
    with pytest.raises(ValueError):
        cache.save(tiny_bert(), name, FINGERPRINT)
    with pytest.raises(ValueError):
        cache.load(name, AutoModelForSequenceClassification, FINGERPRINT)
    with pytest.raises(ValueError):
        cache.load_meta(name)


@pytest.mark.parametrize("profile", ["tiny", "", None, "GPU"])
def test_bad_profiles(profile, course_cache):
    with pytest.raises(ValueError, match="unknown profile"):
        cache.models_dir(profile)
    with pytest.raises(ValueError, match="unknown profile"):
        cache.save(tiny_bert(), "m", FINGERPRINT, profile=profile)
    with pytest.raises(ValueError, match="unknown profile"):
        cache.load("m", AutoModelForSequenceClassification, FINGERPRINT, profile=profile)
    with pytest.raises(ValueError, match="unknown profile"):
        cache.clear(profile)
    assert not (course_cache / "models").exists()


@pytest.mark.parametrize("fingerprint", [None, [("seed", 0)], "seed=0", 0])
def test_fingerprint_must_be_a_dict(fingerprint, course_cache):
    with pytest.raises(TypeError, match="fingerprint must be a dict"):
        cache.save(tiny_bert(), "m", fingerprint)
    assert not (course_cache / "models").exists()  # nothing written


# ------------------------------------------------------------------------------------------------ round trip
def test_save_then_load(course_cache):
    model = tiny_bert()
    model.train()
    path = cache.save(model, "sentiment-teacher", FINGERPRINT, METRICS)
    assert path == cache.model_dir("sentiment-teacher") and path.is_dir()
    assert (path / "config.json").is_file() and (path / cache.META_FILE).is_file()
    assert not any(p.name.endswith(".partial") for p in path.parent.iterdir())

    hit = cache.load("sentiment-teacher", AutoModelForSequenceClassification, FINGERPRINT)
    assert hit is not None
    loaded, metrics = hit
    assert type(loaded) is BertForSequenceClassification
    assert not loaded.training
    assert_same_weights(loaded, model)
    assert metrics == METRICS
    ids = torch.tensor([[2, 5, 9, 3]])
    model.eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_meta_file(course_cache):
    cache.save(tiny_bert(), "m", FINGERPRINT, METRICS)
    meta = cache.load_meta("m")
    assert meta == {"fingerprint": FINGERPRINT, "metrics": METRICS}
    assert json.loads((cache.model_dir("m") / cache.META_FILE).read_text()) == meta


def test_metrics_default_to_empty():
    cache.save(tiny_bert(), "m", FINGERPRINT)
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT)[1] == {}
    assert cache.load_meta("m")["metrics"] == {}


def test_fingerprint_compared_as_json():
    """Tuples and lists, and key order, do not matter: the stored fingerprint is its JSON form."""
    cache.save(tiny_bert(), "m", {"layers": (0, 2), "b": 1, "a": {"y": 2.5, "x": "s"}})
    assert cache.load("m", AutoModelForSequenceClassification, {"a": {"x": "s", "y": 2.5}, "layers": [0, 2], "b": 1})


def test_tokenizer_saved_alongside(tokenizer):
    path = cache.save(tiny_bert(), "m", FINGERPRINT, tokenizer=tokenizer)
    assert (path / "tokenizer_config.json").is_file()
    assert AutoTokenizer.from_pretrained(path).convert_ids_to_tokens(list(range(len(VOCAB)))) == VOCAB
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is not None


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"splits": {"n_train": 17}},
    {"recipe": {"teacher": "minilm", "copy_layers": [0, 1]}},
    {"extra": True},
])
def test_different_fingerprint_misses(change):
    cache.save(tiny_bert(), "m", FINGERPRINT, METRICS)
    assert cache.load("m", AutoModelForSequenceClassification, {**FINGERPRINT, **change}) is None
    assert cache.load("m", AutoModelForSequenceClassification, {}) is None
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is not None  # still there


def test_missing_model_misses():
    assert cache.load("never-saved", AutoModelForSequenceClassification, FINGERPRINT) is None
    assert cache.load_meta("never-saved") is None


def test_profiles_are_separate():
    cache.save(tiny_bert(), "m", FINGERPRINT, profile="gpu")
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT, profile="gpu") is not None
    assert cache.load_meta("m") is None and cache.load_meta("m", "gpu") is not None


@pytest.mark.parametrize("value, ignored", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_retrain_env(monkeypatch, value, ignored):
    cache.save(tiny_bert(), "m", FINGERPRINT)
    monkeypatch.setenv("KD_COURSE_RETRAIN", value)
    assert cache.retrain_requested() is ignored
    hit = cache.load("m", AutoModelForSequenceClassification, FINGERPRINT)
    assert (hit is None) is ignored
    assert cache.load_meta("m") is not None  # the model is ignored, not deleted


def test_save_overwrites():
    cache.save(tiny_bert(seed=0), "m", FINGERPRINT, {"run": 1})
    new = tiny_bert(seed=1)
    cache.save(new, "m", {**FINGERPRINT, "seed": 1}, {"run": 2})
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None
    loaded, metrics = cache.load("m", AutoModelForSequenceClassification, {**FINGERPRINT, "seed": 1})
    assert metrics == {"run": 2}
    assert_same_weights(loaded, new)


# ------------------------------------------------------------------------------------------ interrupted saves
class Interrupted(Exception):
    pass


def test_interrupted_save_is_never_loaded(monkeypatch, tokenizer):
    """A save that dies half-way (here: while writing the tokenizer) leaves nothing load() accepts."""
    def boom(*args, **kwargs):
        raise Interrupted

    monkeypatch.setattr(tokenizer, "save_pretrained", boom)
    with pytest.raises(Interrupted):
        cache.save(tiny_bert(), "m", FINGERPRINT, tokenizer=tokenizer)
    assert (cache.models_dir() / "m.partial" / "config.json").is_file()  # the weights were written …
    assert not cache.model_dir("m").exists()  # … but only to the temporary directory
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None
    assert cache.load_meta("m") is None


def test_interrupted_resave_keeps_the_old_model(monkeypatch, tokenizer):
    old = tiny_bert(seed=0)
    cache.save(old, "m", FINGERPRINT, {"run": 1})
    monkeypatch.setattr(tokenizer, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(Interrupted()))
    with pytest.raises(Interrupted):
        cache.save(tiny_bert(seed=1), "m", {**FINGERPRINT, "seed": 1}, {"run": 2}, tokenizer=tokenizer)
    assert cache.load("m", AutoModelForSequenceClassification, {**FINGERPRINT, "seed": 1}) is None
    loaded, metrics = cache.load("m", AutoModelForSequenceClassification, FINGERPRINT)
    assert metrics == {"run": 1}
    assert_same_weights(loaded, old)


def test_partial_directory_with_meta_is_ignored_and_replaced(monkeypatch):
    """Killed after the meta file was written but before the swap: the complete-looking ``.partial`` directory
    is still not the model; the next save replaces it."""
    real_rename = pathlib.Path.rename

    def rename(self, target):
        raise Interrupted

    monkeypatch.setattr(pathlib.Path, "rename", rename)
    with pytest.raises(Interrupted):
        cache.save(tiny_bert(), "m", FINGERPRINT, METRICS)
    partial = cache.models_dir() / "m.partial"
    assert (partial / cache.META_FILE).is_file()
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None
    assert cache.load_meta("m") is None

    monkeypatch.setattr(pathlib.Path, "rename", real_rename)
    cache.save(tiny_bert(), "m", FINGERPRINT, METRICS)
    assert not partial.exists()
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT)[1] == METRICS


def test_corrupt_meta_is_a_miss():
    path = cache.save(tiny_bert(), "m", FINGERPRINT)
    (path / cache.META_FILE).write_text("{not json")
    assert cache.load_meta("m") is None
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None


def test_directory_without_meta_is_a_miss():
    path = cache.model_dir("m")
    tiny_bert().save_pretrained(path)  # e.g. written by hand: no fingerprint, so never trusted
    assert cache.load_meta("m") is None
    assert cache.load("m", AutoModelForSequenceClassification, FINGERPRINT) is None


# ------------------------------------------------------------------------------------------------------ clear
def test_clear_counts(course_cache):
    assert cache.clear() == 0  # no cache directory at all
    for name in ("a", "b"):
        cache.save(tiny_bert(), name, FINGERPRINT)
    cache.save(tiny_bert(), "c", FINGERPRINT, profile="gpu")
    (cache.models_dir() / "stray.txt").write_text("not a model")
    assert cache.clear() == 2
    assert cache.load("a", AutoModelForSequenceClassification, FINGERPRINT) is None
    assert cache.load_meta("b") is None
    assert (cache.models_dir() / "stray.txt").is_file()  # only model directories are removed
    assert cache.clear() == 0
    assert cache.load("c", AutoModelForSequenceClassification, FINGERPRINT, profile="gpu") is not None
    assert cache.clear("gpu") == 1 and cache.clear("gpu") == 0


# ----------------------------------------------------------------------------------------------- cached_json
def test_cached_json_round_trip(course_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"a": [1, 2]}

    assert cache.cached_json("x", {"k": 1}, compute, verbose=False) == ({"a": [1, 2]}, False)
    assert cache.cached_json("x", {"k": 1}, compute, verbose=False) == ({"a": [1, 2]}, True)
    cache.cached_json("x", {"k": 2}, compute, verbose=False)
    assert len(calls) == 2
    assert json.loads((cache.model_dir("x") / cache.META_FILE).read_text())["fingerprint"] == {"k": 2}


def test_lookup_is_the_read_side_of_save_entry(course_cache, monkeypatch):
    monkeypatch.delenv("KD_COURSE_RETRAIN", raising=False)
    fp = {"lr": 1e-3, "steps": 10}
    cache.save_entry("entry", fp, {"seconds": 2.0}, "small", lambda d: (d / "data").mkdir())
    assert cache.lookup("entry", fp) == {"seconds": 2.0}
    assert cache.lookup("entry", fp, needs="data") == {"seconds": 2.0}
    assert cache.lookup("entry", fp, needs="value.json") is None            # the required content is missing
    assert cache.lookup("entry", {**fp, "steps": 11}) is None               # another recipe
    assert cache.lookup("other", fp) is None
    monkeypatch.setenv("KD_COURSE_RETRAIN", "1")
    assert cache.lookup("entry", fp) is None
    assert cache.lookup("entry", fp, honour_retrain=False) == {"seconds": 2.0}
    with pytest.raises(TypeError, match="fingerprint must be a dict"):
        cache.lookup("entry", ["lr", 1e-3])


def test_smoke_run_keeps_gpu_entries_apart(course_cache, monkeypatch):
    monkeypatch.setenv("KD_SMOKE", "1")
    assert cache.models_dir("gpu") == course_cache / "models" / "gpu-smoke"
    assert cache.models_dir("small") == course_cache / "models" / "small"
    cache.save(tiny_bert(), "m", FINGERPRINT, profile="gpu")
    assert (course_cache / "models" / "gpu-smoke" / "m").is_dir() and not (course_cache / "models" / "gpu").exists()
    monkeypatch.setenv("KD_SMOKE", "0")
    assert cache.load_meta("m", "gpu") is None
