"""A thin ``transformers.Trainer`` subclass for knowledge distillation, plus the helpers around it.

``DistillationTrainer`` only *wires* model outputs into the course's pure loss function
(:func:`course_utils.kd.losses.distillation_loss`):

    loss = (1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q),    q = softmax(z / T), p = softmax(v / T)

* The teacher is frozen (``requires_grad=False``), kept in eval mode (no dropout) and moved to the student's device.
* Teacher logits come from a column of the training set (``teacher_logits``, written once by
  :func:`add_teacher_logits`) when present — several students then share **one** teacher pass — else from a live
  forward pass of ``teacher_model``.
* The loss parts (``ce`` and ``kd``, unweighted, averaged over the logging interval) are logged next to ``loss``.
* Bad set-ups raise ``ValueError`` in ``__init__``, before any training step (see :func:`check_distillation_setup`).

Extending it (notebooks 04–06): override :meth:`DistillationTrainer.loss_terms` to add terms (call ``super()`` and
add e.g. a hidden-state loss computed by a pure function); set ``output_hidden_states = True`` on the subclass to get
hidden states from both models. Every entry of the returned dict except ``"loss"`` is logged.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from ..core.hf import dataset_logits, embedding_rows, max_token_id, num_labels
from ..kd import losses

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from torch import nn

__all__ = ['TEACHER_LOGITS', 'check_distillation_setup', 'DistillationTrainer', 'training_args', 'train_student', 'add_teacher_logits']


TEACHER_LOGITS = "teacher_logits"
"""Default name of the dataset column holding precomputed teacher logits (one list of C floats per example)."""


def _check_tokenizer(model: "nn.Module", tokenizer: Any, role: str) -> None:
    rows = embedding_rows(model)
    if tokenizer is None or rows is None:
        return
    n = len(tokenizer)
    name = type(model).__name__
    if n > rows:
        raise ValueError(
            f"the tokenizer has {n:,} tokens but the {role}'s ({name}) embedding matrix has only {rows:,} rows: "
            f"token ids ≥ {rows:,} would index past it. The tokenizer does not belong to this model — load the "
            "tokenizer saved with the model (e.g. AutoTokenizer.from_pretrained(<same path>))."
        )
    if n < 0.9 * rows:
        raise ValueError(
            f"the tokenizer has {n:,} tokens but the {role}'s ({name}) embedding matrix has {rows:,} rows: the "
            "vocabularies do not match, so every token id would look up the wrong embedding. Use the tokenizer "
            "saved with the model."
        )
    pad_model = getattr(getattr(model, "config", None), "pad_token_id", None)
    pad_tok = getattr(tokenizer, "pad_token_id", None)
    if pad_model is not None and pad_tok is not None and pad_model != pad_tok:
        raise ValueError(
            f"the tokenizer's padding id is {pad_tok} but the {role}'s config says {pad_model}: the tokenizer does "
            "not belong to this model. Use the tokenizer saved with the model."
        )


def check_distillation_setup(
    student: "nn.Module",
    teacher: "nn.Module | None" = None,
    tokenizer: Any = None,
    train_dataset: Any = None,
    alpha_kd: float = 0.5,
    teacher_logits_column: str = TEACHER_LOGITS,
) -> str:
    """Check a distillation set-up before training; return where the teacher logits will come from.

    Returns:
        ``"column"`` (precomputed), ``"teacher"`` (live forward passes) or ``"none"`` (``alpha_kd == 0``: plain CE).

    Raises:
        ValueError: teacher and student (or precomputed logits) disagree on the number of labels; the tokenizer or
            the dataset's token ids do not fit a model's vocabulary; neither a teacher nor precomputed logits are
            given although ``alpha_kd > 0``.
    """
    alpha_kd = losses.validate_alpha_kd(alpha_kd)
    n_student = num_labels(student)
    cols = list(getattr(train_dataset, "column_names", None) or [])
    source = "column" if teacher_logits_column in cols else ("teacher" if teacher is not None else "none")
    if source == "none" and alpha_kd > 0:
        raise ValueError(
            f"alpha_kd={alpha_kd} needs teacher logits, but no teacher_model was given and the training set has no "
            f"'{teacher_logits_column}' column. Pass teacher_model=..., or precompute the logits once with "
            "add_teacher_logits(dataset, teacher, tokenizer) — or use alpha_kd=0 for a hard-label baseline."
        )
    if teacher is not None:
        n_teacher = num_labels(teacher)
        if n_teacher is not None and n_student is not None and n_teacher != n_student:
            raise ValueError(
                f"the teacher predicts {n_teacher} labels but the student {n_student}: KL(p ‖ q) needs the same classes "
                f"on both sides. Create the student with num_labels={n_teacher} (and the same label order)."
            )
    if source == "column":
        # a sample of rows, not just the first: one row of logits can sum to 1 by accident, many rows cannot
        sample = train_dataset.select(range(min(len(train_dataset), 256)))[teacher_logits_column]
        rows = [np.asarray(r, dtype=np.float64) for r in sample]
        first = rows[0] if rows else np.zeros(0)
        if first.ndim != 1 or (n_student is not None and first.shape[0] != n_student):
            raise ValueError(
                f"the '{teacher_logits_column}' column holds vectors of shape {first.shape} but the student predicts "
                f"{n_student} labels: these logits come from a teacher with a different label set."
            )
        as_probs = sum(bool(np.isclose(r.sum(), 1.0) and (r >= 0).all()) for r in rows)
        if rows and as_probs >= 0.9 * len(rows):
            raise ValueError(
                f"the '{teacher_logits_column}' column looks like probabilities (non-negative, summing to 1 in "
                f"{as_probs} of the {len(rows)} rows checked), not raw logits; KD would apply softmax to them again "
                "(the double-softmax bug). Store the teacher's logits."
            )
    models = [("student", student)] + ([("teacher", teacher)] if teacher is not None and source == "teacher" else [])
    top = max_token_id(train_dataset)
    for role, model in models:
        _check_tokenizer(model, tokenizer, role)
        rows = embedding_rows(model)
        if top is not None and rows is not None and top >= rows:
            raise ValueError(
                f"the training set contains token id {top:,} but the {role}'s embedding matrix has {rows:,} rows: it "
                "was tokenised with a different tokenizer than this model's. Re-tokenise it with the model's tokenizer."
            )
    return source


# ---------------------------------------------------------------------------------------------- trainer
class DistillationTrainer(Trainer):
    """``transformers.Trainer`` that trains a student on ``(1 − alpha_kd)·CE + alpha_kd·T²·KL(teacher ‖ student)``.

    Args:
        model: the student.
        args: ``TrainingArguments`` (see :func:`training_args` for the course defaults).
        teacher_model: the teacher; optional when the training set has a precomputed ``teacher_logits_column``
            (then the teacher is only used for batches without it) or when ``alpha_kd == 0``.
        temperature: T > 0 of the KD term.
        alpha_kd: weight of the KD term in [0, 1].
        teacher_logits_column: dataset column with precomputed teacher logits.
        **kwargs: everything ``Trainer`` accepts (``train_dataset``, ``eval_dataset``, ``processing_class``,
            ``compute_metrics``, ``callbacks`` …).

    Raises:
        ValueError: a bad set-up (see :func:`check_distillation_setup`), before training starts.
    """

    output_hidden_states: bool = False
    """Subclasses that match hidden states (notebook 04) set this to True: both models then return them."""
    loss_is_scaled_for_ga = False  # our loss is a per-batch mean: the Trainer divides it for gradient accumulation

    def __init__(
        self,
        model: "nn.Module | None" = None,
        args: TrainingArguments | None = None,
        *,
        teacher_model: "nn.Module | None" = None,
        temperature: float = 2.0,
        alpha_kd: float = 0.5,
        teacher_logits_column: str = TEACHER_LOGITS,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("DistillationTrainer needs the student model as `model`")
        self.temperature = losses.validate_temperature(temperature)
        self.alpha_kd = losses.validate_alpha_kd(alpha_kd)
        self.teacher_logits_column = teacher_logits_column
        self.teacher_source = self.check_setup(model, teacher_model, kwargs.get("processing_class"),
                                               kwargs.get("train_dataset"))
        if self.output_hidden_states and self.teacher_source != "teacher":
            raise ValueError(f"{type(self).__name__} matches hidden states, which precomputed logits do not have: "
                             "pass teacher_model=... and a training set without a teacher_logits column")
        super().__init__(model=model, args=args, **kwargs)
        self.teacher = teacher_model
        if self.teacher is not None:
            self.teacher.requires_grad_(False)
            self.teacher.eval()
            self.teacher.to(self.args.device)
            self._teacher_keys = set(inspect.signature(self.teacher.forward).parameters)
        self._terms: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def check_setup(self, student: "nn.Module", teacher: "nn.Module | None", tokenizer: Any,
                    train_dataset: Any) -> str:
        """Validate the set-up before training and return the teacher-logits source (:func:`check_distillation_setup`).

        Subclasses whose teacher targets look different (notebook 05: causal LMs, cached top-k logits, a teacher
        with another tokenizer) override it; ``self.alpha_kd`` and ``self.teacher_logits_column`` are set already.
        """
        return check_distillation_setup(student, teacher, tokenizer, train_dataset, self.alpha_kd,
                                        self.teacher_logits_column)

    # Keep the teacher-logits column when the Trainer drops columns the student's forward() does not accept.
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.teacher_logits_column not in self._signature_columns:
            self._signature_columns.append(self.teacher_logits_column)

    # ----------------------------------------------------------------------------------- the three steps
    def teacher_outputs(self, inputs: dict[str, torch.Tensor], precomputed: torch.Tensor | None) -> Any:
        """The teacher's outputs for a batch (an object with ``.logits``; hidden states when requested).

        Precomputed logits win when the batch has them; otherwise the frozen teacher runs under ``no_grad``.
        Returns None when neither is available (evaluation without a teacher: CE only).
        """
        if precomputed is not None:
            return _Logits(precomputed.float())
        if self.teacher is None:
            return None
        self.teacher.eval()  # the Trainer may have called .train() on every module it knows about
        kw = {k: v for k, v in inputs.items() if k in self._teacher_keys}
        with torch.no_grad():
            return self.teacher(**kw, output_hidden_states=self.output_hidden_states)

    def loss_terms(self, student_outputs: Any, teacher_outputs: Any, labels: torch.Tensor | None,
                   inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms; ``"loss"`` is optimised, the others are logged. Override to add terms."""
        z = student_outputs.logits
        if teacher_outputs is None:
            if labels is None:
                raise ValueError("a batch has neither labels nor teacher logits: nothing to learn from")
            ce = torch.nn.functional.cross_entropy(z, labels)
            return {"loss": ce, "ce": ce}
        out = losses.distillation_loss(z, teacher_outputs.logits.to(z.dtype), labels,
                                       temperature=self.temperature, alpha_kd=self.alpha_kd)
        return {"loss": out.loss, "ce": out.ce, "kd": out.kd}

    def compute_loss(self, model: "nn.Module", inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        precomputed = inputs.pop(self.teacher_logits_column, None)
        labels = inputs.pop("labels", None)
        if self.output_hidden_states:
            inputs["output_hidden_states"] = True
        student_outputs = model(**inputs)
        teacher_outputs = self.teacher_outputs(inputs, precomputed) if (self.alpha_kd > 0 or labels is None) else None
        terms = self.loss_terms(student_outputs, teacher_outputs, labels, inputs)
        log = self._terms["train" if model.training else "eval"]
        for name, value in terms.items():
            if name != "loss":
                log[name].append(float(value.detach()))
        return (terms["loss"], student_outputs) if return_outputs else terms["loss"]

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean of each loss term since the last log (``ce``, ``kd``; ``eval_ce``… after evaluation)."""
        mode, prefix = ("eval", "eval_") if any(k.startswith("eval_") for k in logs) else ("train", "")
        if mode == "train" and "loss" not in logs:
            return super().log(logs, *args, **kwargs)
        for name, values in self._terms[mode].items():
            if values:
                logs[f"{prefix}{name}"] = round(sum(values) / len(values), 4)
        self._terms[mode] = defaultdict(list)
        return super().log(logs, *args, **kwargs)


class _Logits:
    """Minimal stand-in for a model output when only (precomputed) logits exist."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.hidden_states = None


# -------------------------------------------------------------------------------------------- arguments
def training_args(seed: int = 0, output_dir: str | None = None, **overrides: Any) -> TrainingArguments:
    """``TrainingArguments`` with the course defaults: quiet (no tqdm, no reporting), no checkpoints, length-grouped
    batches, logging every 50 steps, seeded. Any argument can be overridden.
    """
    defaults: dict[str, Any] = dict(
        output_dir=output_dir or os.path.join(tempfile.gettempdir(), "kd-course-runs"),
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=50,
        train_sampling_strategy="group_by_length",
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        weight_decay=0.01,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    defaults.update(overrides)
    return TrainingArguments(**defaults)


def train_student(
    student: "nn.Module",
    train_dataset: "Dataset",
    tokenizer: Any,
    *,
    teacher: "nn.Module | None" = None,
    temperature: float = 2.0,
    alpha_kd: float = 0.5,
    seed: int = 0,
    eval_dataset: "Dataset | None" = None,
    trainer_class: type = None,  # type: ignore[assignment]
    **hparams: Any,
) -> DistillationTrainer:
    """Build a :class:`DistillationTrainer` with :func:`training_args` (``hparams`` override them), train, return it.

    ``alpha_kd=0`` trains on hard labels only (no teacher needed). The trained model is ``trainer.model``;
    ``trainer.state.log_history`` holds the logged loss parts and ``trainer.state.global_step`` the step count.
    """
    cls = trainer_class or DistillationTrainer
    trainer = cls(
        model=student, args=training_args(seed=seed, **hparams), teacher_model=teacher,
        temperature=temperature, alpha_kd=alpha_kd, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # with tqdm off it would print every log dict; log_history keeps them
    trainer.train()
    student.eval()
    return trainer


def add_teacher_logits(dataset: "Dataset", teacher: "nn.Module | np.ndarray", tokenizer: Any = None,
                       column: str = TEACHER_LOGITS, label_missing: bool = True, batch_size: int = 128) -> "Dataset":
    """Return ``dataset`` with a column of teacher logits (computed once, or given as an ``(N, C)`` array).

    Args:
        teacher: the teacher model, or its logits for this dataset (e.g. from :func:`dataset_logits`).
        label_missing: if the dataset has no ``label`` column (an unlabelled transfer set), add the teacher's
            argmax as ``label`` — the hard "teacher label" the CE term then uses.
    """
    if isinstance(teacher, np.ndarray):
        logits = teacher
    else:
        if tokenizer is None:
            raise ValueError("add_teacher_logits needs the tokenizer to batch the examples for the teacher")
        logits = dataset_logits(teacher, dataset, tokenizer, batch_size=batch_size)
    if logits.shape[0] != len(dataset):
        raise ValueError(f"got {logits.shape[0]} rows of logits for a dataset of {len(dataset)} examples")
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    dataset = dataset.add_column(column, logits.astype(np.float32).tolist())
    if label_missing and "label" not in dataset.column_names:
        dataset = dataset.add_column("label", logits.argmax(-1).astype(np.int64).tolist())
    return dataset
