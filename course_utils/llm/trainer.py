"""Distilling a causal LM with LoRA: notebook 03's ``DistillationTrainer`` extended to language models.

:class:`CausalLMDistillationTrainer` subclasses :class:`course_utils.training.distillation_trainer.DistillationTrainer` and keeps its
structure (set-up validated before training, teacher frozen and in eval mode, loss parts logged); only *what the
loss compares* changes, chosen by ``method``:

============  ===========================  =================================================================
method        teacher signal               loss (labels unshifted; position t predicts token t + 1)
============  ===========================  =================================================================
``sft``       none (the data *is* the      CE on the teacher's responses — sequence-level KD (Kim & Rush
              teacher's text)              2016); works across tokenizers
``token_kd``  live teacher forward,        (1 − α)·CE + α·T²·KL(p ‖ q) per response token, with the chunked,
              same vocabulary              memory-lean loss (:func:`~course_utils.kd.llm_losses.causal_lm_distillation_loss`)
``topk_kd``   the teacher's top-k logits   the same with the teacher truncated to its cached top k
              cached once (DistillKit)     (:func:`~course_utils.kd.llm_losses.causal_lm_topk_distillation_loss`)
``uld``       live teacher on *its own*    (1 − α)·CE + α·ULD (sorted-probability L1, Boizard et al. 2024):
              tokenization of the text     teacher and student may use different tokenizers
============  ===========================  =================================================================

Token-level methods need one vocabulary; a teacher whose logits have another width is refused before training
with an error naming both sizes and the two alternatives (``sft``, ``uld``).

``token_kd`` can train with *another* implementation of its loss: ``kd_loss_fn`` (notebook 05 plugs in the learner's
``causal_kd_loss`` of exercise 1) replaces the chunked library loss; :func:`check_kd_loss_fn` validates it before
training.

Around it: :func:`teacher_topk` (cache the top-k once), :class:`HeldoutCurve` (held-out perplexity against *training* time, for equal-time
comparisons) and :func:`distil` (train one student, cache its LoRA adapter and metrics in the course cache).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from ..core.hf import embedding_rows, max_token_id
from ..kd import llm_losses
from ..training.distillation_trainer import DistillationTrainer
from .data import CausalLMCollator
from .models import vocabulary_size

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from torch import nn



__all__ = ['LM_METHODS', 'TOPK_IDS', 'TOPK_LOGITS', 'TOPK_LSE', 'TEACHER_COLUMNS', 'KDLossFn', 'check_vocabularies', 'check_kd_loss_fn', 'CausalLMDistillationTrainer', 'add_teacher_topk', 'dataset_fingerprint', 'HeldoutCurve']


LM_METHODS = ("sft", "token_kd", "topk_kd", "uld")
TOPK_IDS = "teacher_topk_ids"
TOPK_LOGITS = "teacher_topk_logits"
TOPK_LSE = "teacher_logsumexp"
TEACHER_COLUMNS = ("teacher_input_ids", "teacher_attention_mask", "teacher_labels")

KDLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], Any]
"""A token-level KD loss ``fn(student_logits, teacher_logits, labels, temperature, alpha_kd)``: logits ``(B, S, V)``,
labels ``(B, S)`` unshifted with −100 on ignored positions; returns the scalar loss to minimise, or an object whose
``.loss`` is it (a :class:`~course_utils.kd.losses.DistillationLoss`). See :func:`check_kd_loss_fn`."""


def check_vocabularies(student: "nn.Module", teacher: "nn.Module") -> None:
    """Raise ``ValueError`` unless teacher and student produce logits of the same width (token-level KD).

    The message names both sizes and the two ways out: sequence-level KD (``method="sft"`` on teacher-generated
    text) and the cross-tokenizer ULD loss (``method="uld"``).
    """
    vs, vt = vocabulary_size(student), vocabulary_size(teacher)
    if vs != vt:
        raise ValueError(
            f"vocabulary mismatch: the teacher ({_class_name(teacher)}) produces {vt:,} logits per token and the "
            f"student ({_class_name(student)}) {vs:,}. Token-level KD compares the two distributions entry by "
            "entry, which needs one shared tokenizer (entry i = the same token in both models). Two alternatives "
            "work across tokenizers: sequence-level KD (method='sft': fine-tune the student on text the teacher "
            "generated) or Universal Logit Distillation (method='uld', course_utils.kd.llm_losses.uld_loss, "
            "Boizard et al. 2024). (Same tokenizer but padded embedding matrices of different sizes? Then slice "
            "both logits to len(tokenizer) first.)"
        )


def check_kd_loss_fn(kd_loss_fn: Any, method: str = "token_kd") -> None:
    """Validate a custom token-level KD loss before any model is loaded or trained.

    Args:
        kd_loss_fn: a :data:`KDLossFn`, e.g. :func:`course_utils.kd.llm_losses.causal_lm_distillation_loss` or a
            learner's ``causal_kd_loss``.
        method: the training method it is meant for; only ``"token_kd"`` (a live teacher's full logits) has the
            logits this signature takes.

    Raises:
        TypeError: ``kd_loss_fn`` is not callable (e.g. the *result* of calling it was passed), or it cannot be
            called with the five positional arguments ``(student_logits, teacher_logits, labels, temperature,
            alpha_kd)``.
        ValueError: ``method`` is not ``"token_kd"``.
    """
    if not callable(kd_loss_fn):
        raise TypeError(f"kd_loss_fn must be a function (student_logits, teacher_logits, labels, temperature, "
                        f"alpha_kd) -> loss, got a {type(kd_loss_fn).__name__}: pass the function itself, "
                        "without calling it (kd_loss_fn=causal_kd_loss, not causal_kd_loss(...))")
    if method != "token_kd":
        raise ValueError(f"kd_loss_fn replaces the loss of method='token_kd' (a live teacher's full logits); "
                         f"method={method!r} has other teacher targets (sft: none, topk_kd: cached top-k, uld: another "
                         "vocabulary). Use method='token_kd', or leave kd_loss_fn=None for the library's loss.")
    try:
        signature = inspect.signature(kd_loss_fn)
    except (TypeError, ValueError):  # some builtins have no signature: accept them, a wrong call fails at step 1
        return
    try:
        signature.bind(*range(5))
    except TypeError as err:
        raise TypeError(f"kd_loss_fn{signature} cannot be called as fn(student_logits, teacher_logits, labels, "
                        f"temperature, alpha_kd) ({err}): give it exactly these five positional parameters") from None


def _kd_loss_value(out: Any, name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss a custom ``kd_loss_fn`` returned (a tensor or an object with ``.loss``), plus its logged parts."""
    parts: dict[str, torch.Tensor] = {}
    if not isinstance(out, torch.Tensor) and isinstance(getattr(out, "loss", None), torch.Tensor):
        parts = {k: getattr(out, k) for k in ("ce", "kd") if isinstance(getattr(out, k, None), torch.Tensor)}
        out = out.loss
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"kd_loss_fn `{name}` returned a {type(out).__name__}; it must return the loss as a scalar "
                        "torch.Tensor (no .item() or float(...): the student needs its gradient)")
    if out.numel() != 1:
        raise ValueError(f"kd_loss_fn `{name}` returned a tensor of shape {tuple(out.shape)}; it must return one "
                         "number, the loss averaged over the counted positions")
    if torch.is_grad_enabled() and not out.requires_grad:
        raise ValueError(f"kd_loss_fn `{name}` returned a loss without a gradient: it must be computed from "
                         "student_logits with torch operations (no .detach(), .numpy() or torch.no_grad())")
    value = float(out.detach())
    if not math.isfinite(value):
        raise ValueError(f"kd_loss_fn `{name}` returned {value} (not finite): a log of 0 or a division by zero "
                         "positions? Use log_softmax rather than log(softmax), and average over the counted "
                         "positions only")
    return out.reshape(()), parts


def _class_name(model: "nn.Module") -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__


class _TopK:
    """Teacher output stand-in holding cached top-k logits."""

    def __init__(self, ids: torch.Tensor, logits: torch.Tensor, logsumexp: torch.Tensor | None) -> None:
        self.topk_ids, self.topk_logits, self.logsumexp = ids, logits, logsumexp
        self.logits = None
        self.hidden_states = None


class CausalLMDistillationTrainer(DistillationTrainer):
    """``DistillationTrainer`` for causal LMs (see the module docstring for the four ``method`` values).

    Args:
        model: the student (typically a peft ``PeftModel`` with a LoRA adapter).
        args: ``TrainingArguments``; use :func:`course_utils.training.distillation_trainer.training_args`.
        teacher_model: the frozen teacher (``token_kd`` and ``uld``); not needed for ``sft`` and ``topk_kd``.
        method: ``"sft"``, ``"token_kd"``, ``"topk_kd"`` or ``"uld"``.
        temperature: T of the KD term (``token_kd``, ``topk_kd``, ``uld``).
        alpha_kd: weight of the KD term; ``sft`` forces 0 (CE only).
        chunk_size: ``token_kd`` only: positions per chunk of the memory-lean loss; None → plain autograd.
            Default: :func:`~course_utils.kd.llm_losses.default_chunk_size`.
        inplace_grad: ``token_kd`` with chunks: write the loss gradient into the logits' own buffer (the logits are
            not needed afterwards in training; see :func:`~course_utils.kd.llm_losses.chunked_kd_loss`).
        topk_tail: ``topk_kd``: keep the teacher's mass outside its top k as one "other tokens" bucket (needs the
            ``teacher_logsumexp`` column of :func:`add_teacher_topk`); False renormalises the top k instead.
        kd_loss_fn: ``token_kd`` only: another implementation of its loss, a :data:`KDLossFn`
            ``fn(student_logits (B, S, V), teacher_logits (B, S, V), labels (B, S), temperature, alpha_kd)`` → scalar
            loss (or an object with ``.loss``; its ``.ce``/``.kd`` are logged). The labels are unshifted, with −100
            on prompt and padding; S counts the positions from the batch's first scored one on (the prompt
            positions before it are never computed), which leaves the loss unchanged. ``chunk_size`` and
            ``inplace_grad`` are then unused. None (default): the library's chunked
            :func:`~course_utils.kd.llm_losses.causal_lm_distillation_loss`.
        **kwargs: ``train_dataset``, ``eval_dataset``, ``processing_class``, ``data_collator`` (default: a
            :class:`~course_utils.llm.data.CausalLMCollator`), ``callbacks`` …

    Raises:
        ValueError: before training, for an unknown method, a vocabulary mismatch in a token-level method, a
            missing teacher or missing dataset columns, token ids outside a model's vocabulary, a ``kd_loss_fn``
            with another method than ``token_kd``; during training, a ``kd_loss_fn`` result that is not one finite
            number with a gradient.
        TypeError: a ``kd_loss_fn`` that is not a function of five positional arguments, or returns no tensor.
    """

    def __init__(self, model: "nn.Module | None" = None, args: Any = None, *, teacher_model: "nn.Module | None" = None,
                 method: str = "token_kd", temperature: float = 2.0, alpha_kd: float = 0.5,
                 chunk_size: int | None | str = "auto", inplace_grad: bool = True, topk_tail: bool = True,
                 kd_loss_fn: KDLossFn | None = None, **kwargs: Any) -> None:
        if method not in LM_METHODS:
            raise ValueError(f"method must be one of {LM_METHODS}, got {method!r}")
        if kd_loss_fn is not None:
            check_kd_loss_fn(kd_loss_fn, method)
        self.method = method
        self.kd_loss_fn = kd_loss_fn
        if method == "sft":
            alpha_kd, teacher_model = 0.0, None
        if model is not None and chunk_size == "auto":
            chunk_size = llm_losses.default_chunk_size(vocabulary_size(model))
        self.chunk_size = chunk_size
        self.inplace_grad = inplace_grad
        self.topk_tail = topk_tail
        self._extras: dict[str, torch.Tensor] = {}
        if "data_collator" not in kwargs:
            tok = kwargs.get("processing_class")
            pad = getattr(tok, "pad_token_id", None)
            kwargs["data_collator"] = CausalLMCollator(pad if pad is not None else 0)
        column = TOPK_LOGITS if method == "topk_kd" else "teacher_logits"
        super().__init__(model, args, teacher_model=teacher_model, temperature=temperature, alpha_kd=alpha_kd,
                         teacher_logits_column=column, **kwargs)

    # --------------------------------------------------------------------------------------------- set-up
    def check_setup(self, student: "nn.Module", teacher: "nn.Module | None", tokenizer: Any,
                    train_dataset: Any) -> str:
        cols = set(getattr(train_dataset, "column_names", None) or [])
        if train_dataset is not None and "labels" not in cols:
            raise ValueError("the training set has no 'labels' column: build it with "
                             "course_utils.llm.data.sft_dataset (labels = input ids with -100 on the prompt)")
        rows = embedding_rows(student)
        top = max_token_id(train_dataset) if train_dataset is not None else None
        if top is not None and rows is not None and top >= rows:
            raise ValueError(f"the training set contains token id {top:,} but the student's embedding matrix has "
                             f"{rows:,} rows: it was tokenised with another tokenizer than the student's")
        if self.method == "sft":
            return "none"
        if self.method == "topk_kd":
            missing = [c for c in (TOPK_IDS, TOPK_LOGITS) if c not in cols]
            if missing:
                raise ValueError(f"method='topk_kd' needs the cached teacher columns {missing}: add them once with "
                                 "course_utils.llm.trainer.add_teacher_topk(dataset, teacher, k)")
            first = train_dataset[0]
            ids, vals = torch.as_tensor(first[TOPK_IDS]), torch.as_tensor(first[TOPK_LOGITS])
            if ids.dim() != 2 or ids.shape != vals.shape or ids.shape[0] != len(first["input_ids"]):
                raise ValueError(f"the top-k columns must hold one (k,) row per token: got {tuple(ids.shape)} ids and "
                                 f"{tuple(vals.shape)} logits for {len(first['input_ids'])} tokens")
            if int(ids.max()) >= vocabulary_size(student):
                raise ValueError(f"cached top-k ids reach {int(ids.max()):,} but the student has "
                                 f"{vocabulary_size(student):,} logits: they come from a teacher with another "
                                 "vocabulary (use method='sft' or 'uld')")
            return "column"
        if teacher is None:
            raise ValueError(f"method={self.method!r} needs teacher_model=... (a live teacher forward per batch); "
                             "for a teacher cached once use method='topk_kd', for plain text method='sft'")
        if self.method == "token_kd":
            check_vocabularies(student, teacher)
            t_rows = embedding_rows(teacher)
            if top is not None and t_rows is not None and top >= t_rows:
                raise ValueError(f"the training set contains token id {top:,} but the teacher's embedding matrix has "
                                 f"{t_rows:,} rows: teacher and student do not share the tokenizer")
            return "teacher"
        # uld: the teacher reads its own tokenization of the same text
        missing = [c for c in TEACHER_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"method='uld' needs the teacher's tokenization of each example ({missing} missing): "
                             "build the dataset with sft_dataset(records, student_tokenizer, recipe, "
                             "teacher_tokenizer=...)")
        t_rows = embedding_rows(teacher)
        t_top = max((max(x) for x in train_dataset["teacher_input_ids"] if len(x)), default=None)
        if t_top is not None and t_rows is not None and t_top >= t_rows:
            raise ValueError(f"teacher_input_ids reach {t_top:,} but the teacher's embedding matrix has {t_rows:,} "
                             "rows: they were tokenised with another tokenizer than the teacher's")
        return "teacher"

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for col in (TOPK_IDS, TOPK_LOGITS, TOPK_LSE, *TEACHER_COLUMNS):
            if col not in self._signature_columns:
                self._signature_columns.append(col)

    # ---------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model: "nn.Module", inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        # columns the student's forward() must not see; teacher_outputs / loss_terms read them
        self._extras = {k: inputs.pop(k) for k in (TOPK_IDS, TOPK_LSE, *TEACHER_COLUMNS) if k in inputs}
        if self.method != "uld":  # ULD aligns two tokenizations by position: it keeps every logit
            self._skip_prompt_logits(inputs)
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._extras = {}

    def _skip_prompt_logits(self, inputs: dict[str, Any]) -> None:
        """Compute logits only from the batch's first scored position on (``logits_to_keep``), in place.

        The loss reads the logits at positions whose *next* label is not -100; every position before the earliest
        response token of the batch is wasted work: an output projection to the whole vocabulary and, in
        ``token_kd``, the same for the teacher. Prompts are about half of each example here, so this halves the
        largest matrix product of a step. Labels and cached teacher columns are cut to the same window, so the
        loss (shift by one inside the window) is unchanged.
        """
        labels = inputs.get("labels")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.shape[1] < 2:
            return
        scored = labels[:, 1:] != -100                      # position p predicts label p + 1
        rows = scored.any(dim=1)
        if not bool(rows.any()):
            return
        first = int(scored[rows].float().argmax(dim=1).min())
        if first == 0:
            return
        inputs["logits_to_keep"] = labels.shape[1] - first  # the last S - first positions
        inputs["labels"] = labels[:, first:]
        for store in (inputs, self._extras):
            for key in (TOPK_IDS, TOPK_LOGITS, TOPK_LSE, "teacher_logits"):
                if isinstance(store.get(key), torch.Tensor):
                    store[key] = store[key][:, first:]

    def teacher_outputs(self, inputs: dict[str, torch.Tensor], precomputed: torch.Tensor | None) -> Any:
        if self.method == "sft":
            return None
        if self.method == "topk_kd":
            if precomputed is None or TOPK_IDS not in self._extras:
                return None
            return _TopK(self._extras[TOPK_IDS], precomputed, self._extras.get(TOPK_LSE))
        if self.method == "uld":
            self.teacher.eval()
            with torch.no_grad():
                out = self.teacher(input_ids=self._extras["teacher_input_ids"],
                                   attention_mask=self._extras["teacher_attention_mask"])
            out.labels = self._extras["teacher_labels"]
            return out
        return super().teacher_outputs(inputs, None)

    def loss_terms(self, student_outputs: Any, teacher_outputs: Any, labels: torch.Tensor | None,
                   inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("a batch has no labels: causal-LM distillation learns on the response tokens")
        z = student_outputs.logits
        if teacher_outputs is None:
            ce = _causal_ce(z, labels)
            return {"loss": ce, "ce": ce}
        t, a = self.temperature, self.alpha_kd
        if self.method == "topk_kd":
            out = llm_losses.causal_lm_topk_distillation_loss(
                z, teacher_outputs.topk_ids, teacher_outputs.topk_logits, labels, t, a,
                teacher_logsumexp=teacher_outputs.logsumexp if self.topk_tail else None)
        elif self.method == "uld":
            targets = llm_losses.shift_labels(labels)
            t_targets = llm_losses.shift_labels(teacher_outputs.labels)
            ce = _causal_ce(z, labels)
            uld = llm_losses.uld_loss(z, teacher_outputs.logits, student_mask=targets != -100,
                                      teacher_mask=t_targets != -100, temperature=t)
            return {"loss": (1.0 - a) * ce + a * uld, "ce": ce, "uld": uld}
        elif self.kd_loss_fn is not None:
            name = getattr(self.kd_loss_fn, "__name__", type(self.kd_loss_fn).__name__)
            loss, parts = _kd_loss_value(self.kd_loss_fn(z, teacher_outputs.logits, labels, t, a), name)
            return {"loss": loss, **parts}
        else:
            chunks = self.chunk_size if isinstance(self.chunk_size, int) else None
            out = llm_losses.causal_lm_distillation_loss(
                z, teacher_outputs.logits, labels, t, a, chunk_size=chunks,
                inplace_grad=self.inplace_grad and chunks is not None and torch.is_grad_enabled())
        return {"loss": out.loss, "ce": out.ce, "kd": out.kd}


def _causal_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    targets = llm_losses.shift_labels(labels)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


# ------------------------------------------------------------------------------------------------ top-k cache
@torch.inference_mode()
def add_teacher_topk(dataset: "Dataset", teacher: "nn.Module", k: int = 32, batch_size: int = 16,
                     temperature: float = 2.0, pad_token_id: int = 0) -> "tuple[Dataset, dict]":
    """``dataset`` with the teacher's top-``k`` logits and ids per token, and stats.

    One teacher forward pass over the training set replaces one per training step (DistillKit's approach). Kept
    at every position: the k largest raw logits (fp32) and their ids (columns ``teacher_topk_logits`` /
    ``teacher_topk_ids``) and the logsumexp of all logits / ``temperature`` (``teacher_logsumexp``), from which the
    loss recovers the teacher's exact top-k probabilities and the mass of the rest (the "tail bucket" of
    :func:`~course_utils.kd.llm_losses.topk_kd_loss`). The stats report the seconds spent and how much of the
    teacher's probability mass at temperature T the top k hold on response positions (mean and 5th percentile).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    start = time.perf_counter()
    collate = CausalLMCollator(pad_token_id)
    device = next(teacher.parameters()).device
    teacher.eval()
    ids_col: list = [None] * len(dataset)
    val_col: list = [None] * len(dataset)
    lse_col: list = [None] * len(dataset)
    masses = []
    order = sorted(range(len(dataset)), key=lambda i: len(dataset[i]["input_ids"]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        rows = [{c: dataset[i][c] for c in ("input_ids", "attention_mask", "labels")} for i in idx]
        batch = collate(rows)
        logits = teacher(input_ids=batch["input_ids"].to(device),
                         attention_mask=batch["attention_mask"].to(device)).logits.float()
        vals, ids = logits.topk(min(k, logits.shape[-1]), dim=-1)
        lse = torch.logsumexp(logits / temperature, dim=-1)
        mass = torch.exp(vals / temperature - lse.unsqueeze(-1)).sum(-1)
        resp = llm_losses.shift_labels(batch["labels"].to(device)) != -100
        masses.append(mass[resp].cpu())
        for row, i in enumerate(idx):
            n = len(dataset[i]["input_ids"])
            ids_col[i] = ids[row, :n].cpu().tolist()
            val_col[i] = vals[row, :n].cpu().tolist()
            lse_col[i] = lse[row, :n].cpu().tolist()
    for col in (TOPK_IDS, TOPK_LOGITS, TOPK_LSE):
        if col in dataset.column_names:
            dataset = dataset.remove_columns(col)
    dataset = dataset.add_column(TOPK_IDS, ids_col).add_column(TOPK_LOGITS, val_col).add_column(TOPK_LSE, lse_col)
    m = torch.cat(masses) if masses else torch.zeros(1)
    stats = {"k": k, "seconds": round(time.perf_counter() - start, 1), "temperature": temperature,
             "mass_mean": round(float(m.mean()), 4), "mass_p05": round(float(m.quantile(0.05)), 4),
             "positions": int(m.numel())}
    return dataset, stats


def dataset_fingerprint(dataset: "Dataset", columns: Sequence[str] = ("input_ids", "labels")) -> str:
    """A short hash of a dataset's token columns: identical data ⇔ identical fingerprint."""
    h = hashlib.sha1()
    for col in columns:
        if col in dataset.column_names:
            h.update(json.dumps(list(dataset[col])).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- evaluation
class HeldoutCurve(TrainerCallback):
    """Evaluates held-out perplexity every ``every`` steps and records it against *training* seconds.

    The clock runs from the start of training and stops while this callback evaluates, so ``train_seconds`` is the
    time spent training — what an equal-time comparison of methods needs. ``offset_seconds`` adds work done before
    training (e.g. caching the teacher's top-k logits); ``start`` is an optional (step 0) point.
    """

    def __init__(self, evaluate: Callable[["nn.Module"], float], every: int, offset_seconds: float = 0.0,
                 start: float | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.evaluate, self.every, self.offset = evaluate, every, offset_seconds
        self.points: list[dict[str, float]] = []
        if start is not None:
            self.points.append({"step": 0, "train_seconds": offset_seconds, "perplexity": start})
        self._t0 = 0.0
        self._paused = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._paused = 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every == 0 or step == state.max_steps:
            now = time.perf_counter()
            trained = now - self._t0 - self._paused
            value = self.evaluate(model)
            self._paused += time.perf_counter() - now
            self.points.append({"step": step, "train_seconds": round(self.offset + trained, 2),
                                "perplexity": value})
