"""Cache-or-train recipes of notebooks 03 and 04 (and what notebook 06 reloads): the sentiment task, the fine-tuned
teacher, its logits on the transfer set, the copy and fresh students of notebook 03 and the feature-distilled
students of notebook 04. Each trained model is cached with the fingerprint of its recipe.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from ..core import cache, hf
from ..core.profiles import smoke_active
from ..evaluation.metrics import accuracy
from ..kd import features
from ..training import distillation_trainer
from . import bert, sentiment
from .feature_trainer import NARROW_STUDENTS, TeacherCache, narrow_student, train_with_features

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = ['FEATURE_VARIANTS', 'FEATURE_RECIPES', 'feature_recipe', 'train_feature_student', 'feature_student', 'STUDENT_METHODS', 'KD_METHODS', 'KINDS', 'SentimentTask', 'prepare', 'fine_tune_teacher', 'teacher', 'distillation_sets', 'kd_settings', 'fresh_steps', 'train_sentiment_student', 'student', 'weights_digest', 'logits_of']


# ================================================================================ notebook 04's students
FEATURE_VARIANTS: dict[str, dict[str, bool]] = {
    "logit": dict(hidden=False, attention=False),            # notebook 03's loss only (CE + KD)
    "hidden": dict(hidden=True, attention=False),            # + hint loss on the mapped hidden states
    "attention": dict(hidden=False, attention=True),         # + attention-map loss on the mapped layers
    "hidden_attention": dict(hidden=True, attention=True),   # + both (TinyBERT)
}
"""The loss variants of notebook 04's comparison: which feature terms are added to the logit loss."""

FEATURE_RECIPES: dict[str, dict[str, Any]] = {
    # The narrow student (NARROW_STUDENTS) on the 2,000 labelled snippets, every variant and seed on the same
    # batches (the Trainer is seeded with data_seed; the batch order and dropout follow it) for the same number of
    # steps; the student's seed changes its initialisation and its projections' initialisation.
    # The hidden term is DistilBERT's cosine loss (through the projections) with weight 1: chosen on the validation
    # split over seeds 0-2 (small profile). The MSE hint at weight 0.1 was unstable there: with the attention term one
    # seed stayed at chance, and at weight 1 the MSE (raw, about ten times the KD term) drowned the logit loss; the
    # cosine ignores the hidden vectors' lengths and stays between 0 and 2.
    "small": dict(max_steps=126, learning_rate=1.5e-3, per_device_train_batch_size=32, hidden_weight=1.0,
                  attention_weight=1.0, hidden_loss="cosine", attention_loss="kl", layer_map="uniform", data_seed=0),
    "gpu": dict(max_steps=500, learning_rate=5e-4, per_device_train_batch_size=32, hidden_weight=1.0,
                attention_weight=1.0, hidden_loss="cosine", attention_loss="kl", layer_map="uniform", data_seed=0),
}
"""Training recipe of notebook 04's narrow students per profile (the KD settings are the recipe's fresh students',
:func:`course_utils.text.recipes.kd_settings` ``(task, "fresh")``)."""
_SMOKE_FEATURE_SIZES = dict(max_steps=2, per_device_train_batch_size=4)
"""What the gpu profile's smoke run (``KD_SMOKE=1``) changes in :data:`FEATURE_RECIPES` ``["gpu"]``: sizes only."""


def feature_recipe(task: Any) -> dict[str, Any]:
    """Notebook 04's recipe for ``task``'s profile: :data:`FEATURE_RECIPES` plus ``temperature`` / ``alpha_kd``
    (in the gpu profile's smoke run, 2 steps at batch 4)."""

    if task.profile not in FEATURE_RECIPES:
        raise ValueError(f"no feature-distillation recipe for profile {task.profile!r}; expected one of "
                         f"{sorted(FEATURE_RECIPES)}")
    smoke = _SMOKE_FEATURE_SIZES if task.profile == "gpu" and smoke_active() else {}
    return {**FEATURE_RECIPES[task.profile], **smoke, **kd_settings(task, "fresh")}


def _check_variant(variant: Any) -> dict[str, bool]:
    if variant not in FEATURE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(FEATURE_VARIANTS)}")
    return FEATURE_VARIANTS[variant]


def train_feature_student(task: Any, teacher: nn.Module, variant: str = "hidden", seed: int = 0,
                          teacher_cache: TeacherCache | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train one narrow student of notebook 04 (:func:`narrow_student`, frozen word embeddings) with the logit
    loss plus the feature terms of ``variant`` (:data:`FEATURE_VARIANTS`), on ``task.data["train"]``, with
    :func:`feature_recipe`. ``seed`` sets the student's (and its projections') initialisation; the batches and their
    order are the recipe's (``data_seed``), the same for every variant and seed, so a shared ``teacher_cache``
    runs the teacher once per batch. Returns the student (eval mode) and metrics: ``train_seconds``, ``steps``,
    ``test_accuracy``, ``test_logits`` (``(N_test, 2)`` nested lists), ``validation_accuracy`` and ``log`` (the
    logged loss parts)."""
    import time


    terms = _check_variant(variant)
    r = feature_recipe(task)
    student = narrow_student(teacher, task.profile, seed=seed)
    bert.freeze_word_embeddings(student)
    n_s, n_t = features.num_layers(student), features.num_layers(teacher)
    pairs = features.layer_map(n_s, n_t, r["layer_map"])
    start = time.perf_counter()
    tr = train_with_features(
        student, task.data["train"], task.tokenizer, teacher=teacher,
        hidden_pairs=pairs if terms["hidden"] else None, hidden_weight=r["hidden_weight"] if terms["hidden"] else 0.0,
        hidden_loss=r["hidden_loss"], attention_pairs=pairs if terms["attention"] else None,
        attention_weight=r["attention_weight"] if terms["attention"] else 0.0, attention_loss=r["attention_loss"],
        temperature=r["temperature"], alpha_kd=r["alpha_kd"], seed=r["data_seed"], projection_seed=seed,
        teacher_cache=teacher_cache, max_steps=r["max_steps"], learning_rate=r["learning_rate"],
        per_device_train_batch_size=r["per_device_train_batch_size"],
        logging_steps=max(1, r["max_steps"] // 6))
    seconds = time.perf_counter() - start
    student.eval()
    test_logits = logits_of(student, task, "test")
    log = [{k: v for k, v in entry.items() if k in ("step", "loss", "ce", "kd", "hidden", "attention")}
           for entry in tr.state.log_history if "loss" in entry]
    metrics = {"train_seconds": round(seconds, 1), "steps": tr.state.global_step,
               "test_accuracy": accuracy(test_logits, task.data["test"]["label"]),
               "validation_accuracy": accuracy(logits_of(student, task, "validation"),
                                                  task.data["validation"]["label"]),
               "test_logits": test_logits.round(5).tolist(), "log": log}
    return student, metrics


def feature_student(task: Any, teacher: nn.Module, variant: str = "hidden", seed: int = 0,
                    teacher_cache: TeacherCache | None = None, retrain: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Like :func:`train_feature_student`, through the model cache (name ``features-<variant>-s<seed>``): notebook
    04 trains these students, later notebooks load them the same way, e.g.
    ``model, metrics = feature_student(task, teacher, "hidden", seed=0)``; ``metrics["test_logits"]`` holds the
    student's test logits as for :func:`course_utils.text.recipes.student`.

    The cache key holds the recipe, the data split sizes, the teacher's weights digest, the variant and the seed:
    a changed recipe or teacher trains (and caches) a new student.
    """
    from transformers import AutoModelForSequenceClassification


    _check_variant(variant)
    r = feature_recipe(task)
    name = f"features-{variant}-s{seed}"
    fp = task.fingerprint(splits=("train", "validation", "test"), variant=variant, seed=seed,
                          teacher=weights_digest(teacher), recipe04=r,
                          student=NARROW_STUDENTS[task.profile], feature_terms=FEATURE_VARIANTS[variant])
    hit = None if retrain else cache.load(name, AutoModelForSequenceClassification, fp, task.profile)
    if hit is not None:
        bert.freeze_word_embeddings(hit[0])  # as when it was trained
        return hit
    model, metrics = train_feature_student(task, teacher, variant, seed, teacher_cache)
    cache.save(model, name, fp, metrics, task.profile)
    return model, metrics

STUDENT_METHODS = ("hard", "kd_labelled", "pseudo", "kd")
KD_METHODS = ("kd_labelled", "kd")  # the methods with a KD term (temperature and alpha_kd matter)
KINDS = ("copy", "fresh")


@dataclass
class SentimentTask:
    """Everything the BERT notebooks share: profile name, recipe, tokenizer, tokenised splits and their sizes."""

    profile: str
    recipe: bert.BertRecipe
    tokenizer: Any
    data: "DatasetDict"
    sizes: dict
    seed: int

    def fingerprint(self, splits: "tuple[str, ...] | None" = None, **extra: Any) -> dict:
        """The settings a cached model depends on (recipe, split sizes and seed, plus ``extra``).

        ``splits`` limits the sizes to the splits the model learns from (e.g. the teacher never sees ``transfer``,
        so a different transfer size must not invalidate it); None → all of them.
        """
        r = self.recipe
        sizes = {k: v for k, v in self.sizes.items() if splits is None or k.removeprefix("n_") in splits}
        return {"recipe": {"teacher": r.teacher.split("/")[-1], "copy_student": r.copy_student,
                           "copy_layers": list(r.copy_layers), "fresh_config": r.fresh_config,
                           "max_length": r.max_length, "teacher_hparams": r.teacher_hparams},
                "splits": sizes, "split_seed": self.seed, **extra}


def prepare(profile: Any = None, *, n_train: int = 2000, n_validation: int = 1000, n_test: int = 2000,
            n_transfer: int = 5000, seed: int = 0) -> SentimentTask:
    """Load the recipe, tokenizer and tokenised splits of a profile (``Profile``, its name, or None → ``small``).

    In the gpu profile's smoke run (``KD_SMOKE=1``) ``train`` and ``transfer`` take half of the stand-in train split
    each (:data:`course_utils.text.sentiment.SMOKE_SPLIT_SIZES`), whatever the sizes asked for."""
    name = getattr(profile, "name", profile) or "small"
    r = bert.bert_recipe(name)
    tok = bert.load_bert_tokenizer(r)
    sizes = dict(n_train=n_train, n_validation=n_validation, n_test=n_test, n_transfer=n_transfer)
    if name == "gpu" and smoke_active():  # the smoke run's stand-in data (sentiment.smoke_hub_dataset) is tiny
        n = sentiment.SMOKE_SPLIT_SIZES["train"] // 2
        sizes = dict(sizes, n_train=n, n_transfer=n)
    raw = sentiment.load_sentiment(name, seed=seed, **sizes)
    return SentimentTask(profile=name, recipe=r, tokenizer=tok, data=sentiment.tokenize(raw, tok, r.max_length),
                         sizes=sizes, seed=seed)


def _evaluate(model: "nn.Module", task: SentimentTask, split: str = "test") -> float:
    return accuracy(logits_of(model, task, split), task.data[split]["label"])


# ------------------------------------------------------------------------------------------------ teacher
def fine_tune_teacher(task: SentimentTask, seed: int = 0) -> "tuple[nn.Module, dict]":
    """Fine-tune the pretrained encoder + new classification head on ``train`` (CE only); return it and metrics.

    The word embeddings stay frozen: a few thousand snippets cannot improve them, and on a CPU their optimizer
    update costs as much as the rest of the step.
    """
    model = bert.load_bert_teacher(task.recipe, num_labels=2, seed=seed)
    bert.freeze_word_embeddings(model)
    start = time.perf_counter()
    tr = distillation_trainer.train_student(model, task.data["train"], task.tokenizer, alpha_kd=0.0, seed=seed,
                               **task.recipe.teacher_hparams)
    model.requires_grad_(True).eval()
    metrics = {"train_seconds": round(time.perf_counter() - start, 1), "steps": tr.state.global_step,
               "validation_accuracy": _evaluate(model, task, "validation")}
    return model, metrics


def teacher(task: SentimentTask, seed: int = 0, retrain: bool = False, verbose: bool = True) -> "tuple[nn.Module, dict]":
    """The fine-tuned teacher and its metrics: from the cache if this exact recipe was trained before, else trained
    now (≈ 2–3 min on 2 CPU cores in the ``small`` profile) and cached."""
    from transformers import AutoModelForSequenceClassification

    # The splits are drawn test, validation, train, transfer in that order, so the teacher's training data does not
    # depend on the transfer size: leave it out of the key.
    name, fp = "sentiment-teacher", task.fingerprint(splits=("train", "validation", "test"), seed=seed)
    hit = None if retrain else cache.load(name, AutoModelForSequenceClassification, fp, task.profile)
    if hit is not None:
        if verbose:
            print(f"teacher loaded from the cache ({cache.model_dir(name, task.profile)})")
        return hit
    if verbose:
        print("no cached teacher for this recipe: fine-tuning it now …")
    model, metrics = fine_tune_teacher(task, seed=seed)
    cache.save(model, name, fp, metrics, task.profile, tokenizer=task.tokenizer)
    return model, metrics


# -------------------------------------------------------------------------------------------- students
def distillation_sets(task: SentimentTask, teacher_model: "nn.Module") -> "dict[str, Dataset]":
    """Training sets for every method, with the teacher's logits computed once.

    Returns:
        ``{"hard": train, "kd_labelled": train (+ teacher_logits), "pseudo": train + transfer (teacher labels),
        "kd": train + transfer (+ teacher_logits)}``; the ``kd`` set has a ``teacher_logits`` column, ``pseudo`` has
        the same rows and labels without it.
    """
    from datasets import concatenate_datasets

    tok = task.tokenizer
    train_l = distillation_trainer.add_teacher_logits(task.data["train"], teacher_model, tok)
    transfer_l = distillation_trainer.add_teacher_logits(task.data["transfer"], teacher_model, tok)  # label = teacher argmax
    transfer_l = transfer_l.select_columns(train_l.column_names).cast(train_l.features)
    kd = concatenate_datasets([train_l, transfer_l])
    return {"hard": task.data["train"], "kd_labelled": train_l,
            "pseudo": kd.remove_columns(distillation_trainer.TEACHER_LOGITS), "kd": kd}


def _student_hparams(task: SentimentTask, kind: str, overrides: dict) -> dict:
    base = dict(task.recipe.student_hparams) if kind == "copy" else {**task.recipe.fresh_hparams,
                                                                      "max_steps": fresh_steps(task)}
    return {**base, **overrides}


def _kd_args(task: SentimentTask, kind: str, temperature: float | None, alpha_kd: float | None) -> tuple:
    default = kd_settings(task, kind)
    return (default["temperature"] if temperature is None else temperature,
            default["alpha_kd"] if alpha_kd is None else alpha_kd)


def kd_settings(task: SentimentTask, kind: str) -> dict:
    """``{"temperature": T, "alpha_kd": a}`` of the recipe's ``kind`` students (``task.recipe.copy_kd`` or
    ``fresh_kd``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown student kind {kind!r}; expected one of {KINDS}")
    return dict(task.recipe.copy_kd if kind == "copy" else task.recipe.fresh_kd)


def fresh_steps(task: SentimentTask) -> int:
    """Optimizer steps of every fresh student: the recipe's epochs over the KD set (labelled + transfer), so the
    hard-label student, whose set is smaller, takes as many steps as the KD student (a step-matched control)."""
    hp = task.recipe.fresh_hparams
    if "max_steps" in hp:  # a recipe that fixes the steps itself
        return int(hp["max_steps"])
    n_kd = len(task.data["train"]) + len(task.data["transfer"])
    return int(hp["num_train_epochs"] * -(-n_kd // hp["per_device_train_batch_size"]))


def train_sentiment_student(task: SentimentTask, teacher_model: "nn.Module", sets: "dict[str, Dataset]", kind: str,
                  method: str, seed: int = 0, temperature: float | None = None, alpha_kd: float | None = None,
                  **hparams: Any) -> "tuple[nn.Module, dict]":
    """Train one student (``kind`` × ``method``, see the module docstring); return it and its metrics.

    Metrics: ``train_seconds``, ``steps``, ``examples``, ``test_accuracy`` and ``test_logits`` (``(N_test, 2)`` as
    nested lists, in the test split's order).

    ``temperature`` / ``alpha_kd`` default to the recipe's (:func:`kd_settings`). ``hparams`` override the recipe's
    training arguments; fresh students default to ``max_steps=fresh_steps(task)`` (step-matched). Copy students
    keep the teacher's frozen word embeddings; fresh students train theirs.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown student kind {kind!r}; expected one of {KINDS}")
    if method not in STUDENT_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {STUDENT_METHODS}")
    temperature, alpha_kd = _kd_args(task, kind, temperature, alpha_kd)
    model = bert.load_bert_student(task.recipe, kind, teacher_model, seed=seed)
    if kind == "copy":
        bert.freeze_word_embeddings(model)
    settings = _student_hparams(task, kind, hparams)
    start = time.perf_counter()
    tr = distillation_trainer.train_student(model, sets[method], task.tokenizer, teacher=None,
                               temperature=temperature, alpha_kd=alpha_kd if method in KD_METHODS else 0.0,
                               seed=seed, **settings)
    model.eval()
    test_logits = logits_of(model, task, "test")
    metrics = {"train_seconds": round(time.perf_counter() - start, 1), "steps": tr.state.global_step,
               "examples": len(sets[method]),
               "test_accuracy": accuracy(test_logits, task.data["test"]["label"]),
               "test_logits": test_logits.round(5).tolist()}  # kept with the cached model: no second pass needed
    return model, metrics


def student(task: SentimentTask, teacher_model: "nn.Module", kind: str, method: str, seed: int = 0,
            temperature: float | None = None, alpha_kd: float | None = None,
            sets: "dict[str, Dataset] | None" = None, retrain: bool = False,
            **hparams: Any) -> "tuple[nn.Module, dict]":
    """Like :func:`train_sentiment_student`, through the cache (name ``sentiment-<kind>-<method>-s<seed>``).

    Called with the defaults it returns notebook 03's students (notebooks 04–06 load them this way)."""
    from transformers import AutoModelForSequenceClassification

    if kind not in KINDS:
        raise ValueError(f"unknown student kind {kind!r}; expected one of {KINDS}")
    temperature, alpha_kd = _kd_args(task, kind, temperature, alpha_kd)
    name = f"sentiment-{kind}-{method}-s{seed}"
    fp = task.fingerprint(kind=kind, method=method, seed=seed, teacher=weights_digest(teacher_model),
                          # T and alpha_kd only matter to kd
                          temperature=temperature if method in KD_METHODS else None,
                          alpha_kd=alpha_kd if method in KD_METHODS else 0.0,
                          hparams=_student_hparams(task, kind, hparams))
    hit = None if retrain else cache.load(name, AutoModelForSequenceClassification, fp, task.profile)
    if hit is not None:
        if kind == "copy":  # as when it was trained (see train_sentiment_student), so further training behaves the same
            bert.freeze_word_embeddings(hit[0])
        return hit
    if sets is None:
        sets = distillation_sets(task, teacher_model)
    model, metrics = train_sentiment_student(task, teacher_model, sets, kind, method, seed, temperature, alpha_kd, **hparams)
    cache.save(model, name, fp, metrics, task.profile)
    return model, metrics


def weights_digest(model: "nn.Module") -> str:
    """A short hash of every parameter and buffer of ``model``: students cached for one teacher are not reused for
    another one (e.g. a teacher retrained with a different seed or fine-tuned further)."""
    import hashlib


    h = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def logits_of(model: "nn.Module", task: SentimentTask, split: str = "test") -> np.ndarray:
    """``(N, 2)`` logits of ``model`` on a split, in the split's order."""
    return hf.dataset_logits(model, task.data[split], task.tokenizer)
