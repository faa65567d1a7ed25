"""The sentiment-distillation recipe of notebook 03, as functions notebooks 04–06 reuse (with a model cache).

One :class:`SentimentTask` bundles the profile's recipe (:func:`course_utils.models.recipe`), the tokenizer and the
tokenised splits (:func:`course_utils.data.load_sentiment`). On top of it:

* :func:`teacher` — the fine-tuned teacher, from the cache or trained on demand (:func:`fine_tune_teacher`);
* :func:`distillation_sets` — the teacher's logits added once to ``train`` and ``transfer`` (every student reuses
  them), and the KD training set = labelled ``train`` + teacher-labelled ``transfer``;
* :func:`train_student` / :func:`student` — one student ``kind`` (``"copy"`` or ``"fresh"``) trained with one
  ``method``:

  ===============  ========================================================  ====================================
  method           training data                                             loss
  ===============  ========================================================  ====================================
  ``hard``         ``train`` (labelled)                                      CE on the labels
  ``kd_labelled``  ``train`` with the teacher's logits (same data as hard)   (1 − alpha_kd)·CE + alpha_kd·T²·KL
  ``pseudo``       ``train`` + ``transfer`` with the teacher's argmax label  CE (hard teacher labels on transfer)
  ``kd``           ``train`` + ``transfer`` with the teacher's logits        (1 − alpha_kd)·CE + alpha_kd·T²·KL
  ===============  ========================================================  ====================================

  ``hard`` vs ``kd_labelled`` compares hard and soft targets on exactly the same examples. On ``transfer`` the CE
  term of ``kd`` uses the teacher's argmax (there is no human label), exactly as ``pseudo`` does, so ``pseudo`` vs
  ``kd`` isolates what the *soft* targets add to the extra, teacher-labelled text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import cache, data, models, trainer

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict
    from torch import nn

__all__ = ["SentimentTask", "prepare", "fine_tune_teacher", "teacher", "distillation_sets", "train_student",
           "student", "kd_settings", "fresh_steps", "logits_of", "weights_digest", "METHODS", "KINDS"]

METHODS = ("hard", "kd_labelled", "pseudo", "kd")
KD_METHODS = ("kd_labelled", "kd")  # the methods with a KD term (temperature and alpha_kd matter)
KINDS = ("copy", "fresh")


@dataclass
class SentimentTask:
    """Everything the BERT notebooks share: profile name, recipe, tokenizer, tokenised splits and their sizes."""

    profile: str
    recipe: models.BertRecipe
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
    """Load the recipe, tokenizer and tokenised splits of a profile (``Profile``, its name, or None → ``small``)."""
    name = getattr(profile, "name", profile) or "small"
    r = models.recipe(name)
    tok = models.load_tokenizer(r)
    sizes = dict(n_train=n_train, n_validation=n_validation, n_test=n_test, n_transfer=n_transfer)
    raw = data.load_sentiment(name, seed=seed, **sizes)
    return SentimentTask(profile=name, recipe=r, tokenizer=tok, data=data.tokenize(raw, tok, r.max_length),
                         sizes=sizes, seed=seed)


def _evaluate(model: "nn.Module", task: SentimentTask, split: str = "test") -> float:
    return trainer.accuracy(logits_of(model, task, split), task.data[split]["label"])


# ------------------------------------------------------------------------------------------------ teacher
def fine_tune_teacher(task: SentimentTask, seed: int = 0) -> "tuple[nn.Module, dict]":
    """Fine-tune the pretrained encoder + new classification head on ``train`` (CE only); return it and metrics.

    The word embeddings stay frozen: a few thousand snippets cannot improve them, and on a CPU their optimizer
    update costs as much as the rest of the step.
    """
    model = models.load_teacher(task.recipe, num_labels=2, seed=seed)
    models.freeze_word_embeddings(model)
    start = time.perf_counter()
    tr = trainer.train_student(model, task.data["train"], task.tokenizer, alpha_kd=0.0, seed=seed,
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
    train_l = trainer.add_teacher_logits(task.data["train"], teacher_model, tok)
    transfer_l = trainer.add_teacher_logits(task.data["transfer"], teacher_model, tok)  # label = teacher argmax
    transfer_l = transfer_l.select_columns(train_l.column_names).cast(train_l.features)
    kd = concatenate_datasets([train_l, transfer_l])
    return {"hard": task.data["train"], "kd_labelled": train_l,
            "pseudo": kd.remove_columns(trainer.TEACHER_LOGITS), "kd": kd}


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


def train_student(task: SentimentTask, teacher_model: "nn.Module", sets: "dict[str, Dataset]", kind: str,
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
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    temperature, alpha_kd = _kd_args(task, kind, temperature, alpha_kd)
    model = models.load_student(task.recipe, kind, teacher_model, seed=seed)
    if kind == "copy":
        models.freeze_word_embeddings(model)
    settings = _student_hparams(task, kind, hparams)
    start = time.perf_counter()
    tr = trainer.train_student(model, sets[method], task.tokenizer, teacher=None,
                               temperature=temperature, alpha_kd=alpha_kd if method in KD_METHODS else 0.0,
                               seed=seed, **settings)
    model.eval()
    test_logits = logits_of(model, task, "test")
    metrics = {"train_seconds": round(time.perf_counter() - start, 1), "steps": tr.state.global_step,
               "examples": len(sets[method]),
               "test_accuracy": trainer.accuracy(test_logits, task.data["test"]["label"]),
               "test_logits": test_logits.round(5).tolist()}  # kept with the cached model: no second pass needed
    return model, metrics


def student(task: SentimentTask, teacher_model: "nn.Module", kind: str, method: str, seed: int = 0,
            temperature: float | None = None, alpha_kd: float | None = None,
            sets: "dict[str, Dataset] | None" = None, retrain: bool = False,
            **hparams: Any) -> "tuple[nn.Module, dict]":
    """Like :func:`train_student`, through the cache (name ``sentiment-<kind>-<method>-s<seed>``).

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
        if kind == "copy":  # as when it was trained (see train_student), so further training behaves the same
            models.freeze_word_embeddings(hit[0])
        return hit
    if sets is None:
        sets = distillation_sets(task, teacher_model)
    model, metrics = train_student(task, teacher_model, sets, kind, method, seed, temperature, alpha_kd, **hparams)
    cache.save(model, name, fp, metrics, task.profile)
    return model, metrics


def weights_digest(model: "nn.Module") -> str:
    """A short hash of every parameter and buffer of ``model``: students cached for one teacher are not reused for
    another one (e.g. a teacher retrained with a different seed or fine-tuned further)."""
    import hashlib

    import torch

    h = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def logits_of(model: "nn.Module", task: SentimentTask, split: str = "test") -> np.ndarray:
    """``(N, 2)`` logits of ``model`` on a split, in the split's order."""
    return trainer.predict_logits(model, task.data[split], task.tokenizer)
