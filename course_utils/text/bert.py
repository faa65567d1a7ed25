"""Models for the BERT notebooks: which teacher and students a profile uses, DistilBERT-style initialisation,
size measurements and a CPU latency benchmark.

=========  ===========================================  =============================================================
profile    teacher                                      students
=========  ===========================================  =============================================================
small      MiniLM-L6-H384 (bert-base-uncased vocab),    ``copy``: 3-layer copy of the teacher (layers 0, 2, 4);
           offline asset ``minilm``, fine-tuned          ``fresh``: a randomly initialised BERT, 2 layers × 128
gpu        ``bert-base-uncased``, fine-tuned            ``copy``: ``distilbert-base-uncased`` (Sanh et al. 2019);
                                                        ``fresh``: a randomly initialised BERT, 4 layers × 256
=========  ===========================================  =============================================================

Every model is a ``transformers`` ``*ForSequenceClassification`` loaded with ``from_pretrained(path_or_id)``, so
notebook code is the same for both profiles. In the gpu profile's smoke run (``KD_SMOKE=1``) the hub ids are replaced
by :func:`smoke_bert_standins`: the same classes with tiny random-weight configs and the real bert-base-uncased
tokenizer, saved to a temporary directory and loaded from there by the same ``from_pretrained`` calls; the recipe
then trains 2 steps at batch 4. The fresh students' shapes follow Turc et al. (2019)'s BERT-Tiny
(2 × 128) and BERT-Mini (4 × 256).
"""
from __future__ import annotations

import atexit
import copy
import functools
import numbers
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..core import assets
from ..core.profiles import smoke_active
from ..core.hf import quiet_load

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ['BertRecipe', 'SMOKE_STANDINS', 'smoke_bert_standins', 'bert_recipe', 'load_bert_tokenizer', 'load_bert_teacher', 'fresh_student', 'load_bert_student', 'every_other_layer', 'init_student_from_teacher', 'freeze_word_embeddings']


@dataclass(frozen=True)
class BertRecipe:
    """What one profile uses in the BERT notebooks (models and training hyper-parameters).

    Attributes:
        profile: ``"small"`` or ``"gpu"``.
        teacher: path or hub id of the pretrained encoder the teacher is fine-tuned from.
        tokenizer: path or hub id of the tokenizer shared by teacher and students.
        copy_student: hub id of a pretrained student (gpu: DistilBERT), or None to copy layers from the teacher.
        copy_layers: teacher layers the ``copy`` student keeps when ``copy_student`` is None.
        fresh_config: ``BertConfig`` keyword arguments of the freshly initialised small student.
        max_length: tokens kept per snippet.
        teacher_hparams / student_hparams / fresh_hparams: keyword arguments for ``trainer.training_args``.
        copy_kd / fresh_kd: ``temperature`` and ``alpha_kd`` of the copy / fresh students' KD loss (notebook 03
            shows where they come from: the copy students use the usual T = 2, alpha_kd = 0.5; the fresh
            students' setting won notebook 03's validation sweep).
    """

    profile: str
    teacher: str
    tokenizer: str
    copy_student: str | None
    copy_layers: tuple[int, ...]
    fresh_config: dict = field(default_factory=dict)
    max_length: int = 64
    teacher_hparams: dict = field(default_factory=dict)
    student_hparams: dict = field(default_factory=dict)
    fresh_hparams: dict = field(default_factory=dict)
    copy_kd: dict = field(default_factory=lambda: dict(temperature=2.0, alpha_kd=0.5))
    fresh_kd: dict = field(default_factory=lambda: dict(temperature=2.0, alpha_kd=0.9))

    def describe(self) -> str:
        copy_ = self.copy_student or f"{len(self.copy_layers)}-layer copy of the teacher (layers {list(self.copy_layers)})"
        fc = self.fresh_config
        return (f"teacher: {Path(self.teacher).name if os.sep in self.teacher else self.teacher} (fine-tuned); "
                f"students: {copy_}; fresh BERT {fc.get('num_hidden_layers')} layers × {fc.get('hidden_size')}")


def bert_recipe(profile: Any = None) -> BertRecipe:
    """The :class:`BertRecipe` of a profile (a ``Profile`` or its name; None → ``small``)."""
    name = getattr(profile, "name", profile) or "small"
    if name == "small":

        path = str(assets.path("minilm"))
        return BertRecipe(
            profile="small", teacher=path, tokenizer=path, copy_student=None, copy_layers=(0, 2, 4),
            fresh_config=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
            max_length=64,
            teacher_hparams=dict(learning_rate=1e-4, num_train_epochs=2, per_device_train_batch_size=32),
            student_hparams=dict(learning_rate=2e-4, num_train_epochs=1, per_device_train_batch_size=32),
            fresh_hparams=dict(learning_rate=1.5e-3, num_train_epochs=2, per_device_train_batch_size=64),
        )
    if name == "gpu" and smoke_active():
        # the gpu recipe at stand-in size: the real classes, tiny and random (smoke_bert_standins), 2 steps at batch 4
        paths = smoke_bert_standins()
        return BertRecipe(
            profile="gpu", teacher=paths["teacher"], tokenizer=paths["teacher"],
            copy_student=paths["copy_student"], copy_layers=(0, 2, 4, 7, 9, 11),
            fresh_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
            max_length=32,
            teacher_hparams=dict(learning_rate=3e-5, max_steps=2, per_device_train_batch_size=4),
            student_hparams=dict(learning_rate=5e-5, max_steps=2, per_device_train_batch_size=4),
            fresh_hparams=dict(learning_rate=5e-4, max_steps=2, per_device_train_batch_size=4),
        )
    if name == "gpu":
        return BertRecipe(
            profile="gpu", teacher="bert-base-uncased", tokenizer="bert-base-uncased",
            copy_student="distilbert-base-uncased", copy_layers=(0, 2, 4, 7, 9, 11),
            fresh_config=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
            max_length=128,
            teacher_hparams=dict(learning_rate=3e-5, num_train_epochs=2, per_device_train_batch_size=32),
            student_hparams=dict(learning_rate=5e-5, num_train_epochs=2, per_device_train_batch_size=32),
            fresh_hparams=dict(learning_rate=5e-4, num_train_epochs=4, per_device_train_batch_size=32),
        )
    raise ValueError(f"unknown profile {name!r}; expected 'small' or 'gpu'")


# ---------------------------------------------------------------------------------------- smoke stand-ins
SMOKE_STANDINS: dict[str, dict[str, Any]] = {
    # bert-base-uncased and distilbert-base-uncased at stand-in size: their classes, vocabulary (30,522), position
    # range and 12 heads (notebook 04 matches attention maps head by head), 96 wide and 12 / 6 layers deep like them.
    "teacher": dict(hidden_size=96, num_hidden_layers=12, num_attention_heads=12, intermediate_size=128),
    "copy_student": dict(dim=96, n_layers=6, n_heads=12, hidden_dim=128),
}
"""Configs of the smoke run's stand-ins (``BertConfig`` / ``DistilBertConfig`` keyword arguments)."""


@functools.lru_cache(maxsize=None)
def smoke_bert_standins() -> dict[str, str]:
    """Directories of the gpu profile's stand-ins for the smoke run (``KD_SMOKE=1``), built once per process.

    ``teacher``: a ``BertForSequenceClassification`` with :data:`SMOKE_STANDINS` ``["teacher"]`` and the real
    bert-base-uncased tokenizer (the ``minilm`` asset's vocabulary, which is bert-base-uncased's);
    ``copy_student``: a ``DistilBertForSequenceClassification`` with ``["copy_student"]`` and the same tokenizer.
    Random weights (seed 0), written with ``save_pretrained`` to a temporary directory removed at exit, so the gpu
    path's ``from_pretrained(path_or_id)`` calls load them as they would load the hub's models.

    Returns:
        ``{"teacher": path, "copy_student": path}``.
    """
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    root = Path(tempfile.mkdtemp(prefix="kd-course-smoke-text-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(assets.path("minilm"))  # bert-base-uncased's vocabulary and rules
    vocab = dict(vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
    paths = {}
    with torch.random.fork_rng():  # don't consume the caller's random numbers
        torch.manual_seed(0)
        models = {
            "teacher": BertForSequenceClassification(BertConfig(**vocab, **SMOKE_STANDINS["teacher"])),
            "copy_student": DistilBertForSequenceClassification(
                DistilBertConfig(**vocab, **SMOKE_STANDINS["copy_student"])),
        }
        for name, model in models.items():
            paths[name] = str(root / name)
            model.save_pretrained(paths[name])
            tokenizer.save_pretrained(paths[name])
    return paths


# ------------------------------------------------------------------------------------------------- loading
def load_bert_tokenizer(r: BertRecipe):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(r.tokenizer)


def load_bert_teacher(r: BertRecipe, num_labels: int = 2, seed: int = 0) -> "nn.Module":
    """The pretrained teacher encoder with a new (untrained!) ``num_labels``-way classification head.

    The head is random until the teacher is fine-tuned; distilling from it as it is would teach noise
    (the seed's bug: 50 % accuracy).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return quiet_load(AutoModelForSequenceClassification, r.teacher, num_labels=num_labels)


def fresh_student(r: BertRecipe, vocab_size: int, num_labels: int = 2, seed: int = 0,
                  max_position_embeddings: int = 512) -> "nn.Module":
    """A randomly initialised small ``BertForSequenceClassification`` shaped by ``r.fresh_config``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, num_labels=num_labels,
                        max_position_embeddings=max_position_embeddings, **r.fresh_config)
    return BertForSequenceClassification(config)


def load_bert_student(r: BertRecipe, kind: str, teacher: "nn.Module", seed: int = 0) -> "nn.Module":
    """A student of the given ``kind`` for ``teacher``.

    Args:
        kind: ``"copy"``: DistilBERT-style — in the small profile :func:`init_student_from_teacher` with
            ``r.copy_layers``; in the gpu profile the pretrained ``r.copy_student`` (DistilBERT, itself initialised
            that way by its authors) with a new head. ``"fresh"``: :func:`fresh_student`.
        teacher: the (fine-tuned) teacher; gives the label count and vocabulary.
        seed: seed of any newly initialised weights.
    """
    import torch

    num_labels = teacher.config.num_labels
    if kind == "copy":
        if r.copy_student is None:
            return init_student_from_teacher(teacher, layers=r.copy_layers)
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(seed)
        return quiet_load(AutoModelForSequenceClassification, r.copy_student, num_labels=num_labels)
    if kind == "fresh":
        return fresh_student(r, vocab_size=teacher.get_input_embeddings().num_embeddings, num_labels=num_labels,
                             seed=seed, max_position_embeddings=teacher.config.max_position_embeddings)
    raise ValueError(f"unknown student kind {kind!r}; expected 'copy' or 'fresh'")


# ---------------------------------------------------------------------------------------- layer-copy init
_LAYER_PATHS = ("bert.encoder.layer", "distilbert.transformer.layer", "roberta.encoder.layer",
                "encoder.layer", "transformer.layer")


def _layer_path(model: "nn.Module") -> str:
    import torch.nn as nn

    for path in _LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return path
    raise TypeError(
        f"{type(model).__name__} has no encoder layer list at any of {_LAYER_PATHS}; init_student_from_teacher "
        "supports BERT-like (…ForSequenceClassification, BertModel) and DistilBERT models"
    )


def every_other_layer(n_layers: int) -> tuple[int, ...]:
    """DistilBERT's choice of teacher layers: 0, 2, 4, … (half of them, rounded up)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
    return tuple(range(0, n_layers, 2))


def init_student_from_teacher(teacher: "nn.Module", layers: Sequence[int] | None = None) -> "nn.Module":
    """A shallower copy of ``teacher`` (Sanh et al. 2019, DistilBERT §3): same class and width, the embeddings,
    the chosen encoder layers (in order) and everything above them (pooler, classifier) copied verbatim.

    Args:
        teacher: a BERT-like or DistilBERT model (e.g. ``BertForSequenceClassification``); it is not modified.
        layers: strictly increasing teacher layer indices to keep; default :func:`every_other_layer`.
            Student layer ``i`` is a copy of teacher layer ``layers[i]``.

    Returns:
        A new model of ``type(teacher)`` with ``len(layers)`` layers (in the teacher's train/eval mode and dtype).

    Raises:
        ValueError: empty, repeated, unordered, non-integer or out-of-range layer indices.
        TypeError: a model without a recognisable encoder layer list.
    """
    import torch

    path = _layer_path(teacher)
    obj: Any = teacher
    for part in path.split("."):
        obj = getattr(obj, part)
    n_layers = len(obj)
    layers = every_other_layer(n_layers) if layers is None else layers
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise ValueError(f"layers must be a sequence of layer indices, got {layers!r}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty: a student needs at least one layer")
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ValueError(f"layer indices must be integers, got {i!r} in {layers}")
    layers = [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer indices {bad} are out of range: the teacher has {n_layers} layers (0…{n_layers - 1})")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer indices must be distinct, got {layers}: a repeated layer would be copied twice")
    if layers != sorted(layers):
        raise ValueError(f"layer indices must be increasing, got {layers}: the student keeps the teacher's order")

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    with torch.random.fork_rng():  # the fresh weights are overwritten below; don't consume the caller's RNG
        student = type(teacher)(config)
    mapping = {old: new for new, old in enumerate(layers)}
    pattern = re.compile(rf"^{re.escape(path)}\.(\d+)\.(.*)$")
    state = {}
    for key, value in teacher.state_dict().items():
        m = pattern.match(key)
        if m is None:
            state[key] = value.clone()
        elif int(m.group(1)) in mapping:
            state[f"{path}.{mapping[int(m.group(1))]}.{m.group(2)}"] = value.clone()
    student.load_state_dict(state, strict=True)
    first = next(teacher.parameters())
    student.to(dtype=first.dtype, device=first.device)
    student.train(teacher.training)
    return student


def freeze_word_embeddings(model: "nn.Module") -> int:
    """Stop training the (token) word embeddings; returns how many parameters were frozen.

    On a CPU, AdamW over BERT's 30,522 × H embedding matrix costs as much as the rest of a small model's step,
    and a few thousand sentences cannot improve pretrained word vectors much anyway.
    """
    emb = model.get_input_embeddings()
    n = 0
    for p in emb.parameters():
        if p.requires_grad:
            p.requires_grad_(False)
            n += p.numel()
    return n
