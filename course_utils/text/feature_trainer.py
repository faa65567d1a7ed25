"""Feature distillation in practice: a ``DistillationTrainer`` with hidden-state and attention losses, narrow BERT
students, CKA between two models' layers, and a small CNN training loop for FitNets hints and attention transfer.

:class:`FeatureDistillationTrainer` extends notebook 03's :class:`course_utils.training.distillation_trainer.DistillationTrainer`:

    loss = logit_weight · [(1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q)]        (notebook 03's loss; weight 1)
         + hidden_weight    · mean over pairs (s, t) of  L_hidden(W_st · h_s, h_t)
         + attention_weight · mean over pairs (s, t) of  L_attn(A_s, A_t)

* h = ``hidden_states`` of both models (``output_hidden_states=True``), A = their ``attentions``
  (``output_attentions=True``; both models are switched to the ``"eager"`` attention implementation during training,
  because ``sdpa`` does not return attention maps, and switched back afterwards);
* L_hidden is :func:`course_utils.kd.features.hint_loss` (``"mse"``) or :func:`~course_utils.kd.features.hidden_cosine_loss`
  (``"cosine"``), or any function with their signature (``hidden_loss=your_loss``: notebook 04 trains with the
  learner's own hint loss); L_attn is :func:`~course_utils.kd.features.attention_map_loss` (``"mse"`` or ``"kl"``);
* W_st is a learned ``nn.Linear`` per matched pair when the widths differ (:attr:`projections`;
  ``projection_factory`` builds another module instead). It is added to the Trainer's optimizer (its own parameter
  group, with the same learning-rate schedule) and trained with the student, but it is never part of the student:
  ``trainer.model`` and whatever you save from it do not contain it.

The teacher runs live (no precomputed logits): the features of every batch are needed. Every loss part is logged
(``ce``, ``kd``, ``hidden``, ``attention``). ``logit_weight=0`` gives a features-only stage (TinyBERT's
intermediate-layer distillation, FitNets' stage 1); train the logits in a second stage.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
import torch.nn as nn

from ..core.profiles import smoke_active
from ..kd import features
from ..kd.losses import validate_weight
from ..training import distillation_trainer

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

__all__ = ['HIDDEN_LOSSES', 'HiddenLoss', 'ProjectionFactory', 'TeacherCache', 'FeatureDistillationTrainer', 'train_with_features', 'NARROW_STUDENTS', 'SMOKE_NARROW_STUDENT', 'narrow_student', 'pca_embeddings_from', 'hidden_states_of', 'cka_between']


HIDDEN_LOSSES = ("mse", "cosine")
"""The hidden-state losses a :class:`FeatureDistillationTrainer` knows by name (``hidden_loss=``)."""

HiddenLoss = Union[str, Callable[..., torch.Tensor]]
"""``hidden_loss=``: a name from :data:`HIDDEN_LOSSES`, or a function
``(student_hidden (B, S, H_s), teacher_hidden (B, S, H_t), projection, attention_mask (B, S)) -> Tensor ()`` with
the signature of :func:`course_utils.kd.features.hint_loss` (``projection`` maps ``(…, H_s)`` to ``(…, H_t)``, or
is None when the widths agree)."""

ProjectionFactory = Callable[[int, int], nn.Module]
"""``projection_factory=``: ``(student_width, teacher_width) -> nn.Module`` mapping ``(…, H_s)`` to ``(…, H_t)``,
with trainable parameters (e.g. ``nn.Linear(student_width, teacher_width)``)."""


def _hidden_loss_fn(hidden_loss: Any) -> HiddenLoss:
    """``hidden_loss`` validated: a known name, or a function that can be called as ``fn(h_s, h_t, W, mask)``."""
    if isinstance(hidden_loss, str):
        if hidden_loss not in HIDDEN_LOSSES:
            raise ValueError(f"hidden_loss must be one of {HIDDEN_LOSSES} or a loss function, got {hidden_loss!r}")
        return hidden_loss
    if not callable(hidden_loss):
        raise TypeError(f"hidden_loss must be one of {HIDDEN_LOSSES} or a function (student_hidden, teacher_hidden, "
                        f"projection, attention_mask) -> scalar tensor, got {type(hidden_loss).__name__}. Pass the "
                        "function itself, without calling it.")
    try:
        signature = inspect.signature(hidden_loss)
    except (TypeError, ValueError):  # no signature to read (some builtins): its results are checked instead
        return hidden_loss
    try:
        signature.bind(None, None, None, None)
    except TypeError as err:
        raise TypeError(f"hidden_loss {_name(hidden_loss)} cannot be called as fn(student_hidden, teacher_hidden, "
                        f"projection, attention_mask) ({err}): give it these four positional parameters, as "
                        "course_utils.kd.features.hint_loss has") from None
    return hidden_loss


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _make_projections(factory: ProjectionFactory | None, pairs: Sequence[tuple[int, int]], w_s: int, w_t: int,
                      seed: int) -> nn.ModuleDict:
    """One projection ``(…, w_s) → (…, w_t)`` per pair, named ``"s{i}_t{j}"``; the k-th is built under
    ``torch.manual_seed(seed + k)`` (the global RNG is left untouched), so a factory returning ``nn.Linear`` starts
    from exactly the weights of :func:`course_utils.kd.features.make_projection`."""
    if factory is not None and (isinstance(factory, nn.Module) or not callable(factory)):
        raise TypeError(f"projection_factory must be a function (student_width, teacher_width) -> nn.Module that "
                        f"builds one projection per layer pair, got {type(factory).__name__}. Pass the function "
                        "itself, without calling it (e.g. projection_factory=make_hint_projection).")
    out = nn.ModuleDict()
    for k, (i, j) in enumerate(pairs):
        if factory is None:
            out[f"s{i}_t{j}"] = features.make_projection(w_s, w_t, seed=seed + k)
            continue
        call = f"projection_factory {_name(factory)}({w_s}, {w_t})"
        with torch.random.fork_rng():
            torch.manual_seed(seed + k)
            module = factory(w_s, w_t)
            if not isinstance(module, nn.Module):
                raise TypeError(f"{call} returned a {type(module).__name__}; it must return an nn.Module with "
                                f"trainable weights, e.g. nn.Linear({w_s}, {w_t})")
            if not any(p.requires_grad for p in module.parameters()):
                raise ValueError(f"{call} returned a {type(module).__name__} without trainable parameters: the "
                                 f"projection is learned with the student (FitNets' regressor); return e.g. "
                                 f"nn.Linear({w_s}, {w_t})")
            try:
                with torch.no_grad():
                    y = module(torch.zeros(1, 1, w_s))
            except RuntimeError as err:
                raise ValueError(f"{call} returned a module that cannot be applied to student hidden states "
                                 f"(…, {w_s}): {err}. It must map the student's width to the teacher's: "
                                 f"e.g. nn.Linear({w_s}, {w_t})") from None
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (1, 1, w_t):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{call} maps student hidden states (1, 1, {w_s}) to {shape}; it must map the student's "
                             f"width {w_s} to the teacher's {w_t}: (1, 1, {w_t})")
        out[f"s{i}_t{j}"] = module
    return out


class TeacherCache:
    """The frozen teacher's outputs per batch, keyed by the batch's token ids: students trained on the *same*
    batches (same dataset, batch size and ``Trainer`` seed, which fixes the batch order) share one teacher pass.

    On a CPU the teacher's forward pass costs more than the small student's whole training step, so a comparison
    of several students (seeds × loss variants) that reuses the batches is several times faster. Only what the
    trainers ask for is kept (logits, the mapped hidden states and attention maps), as CPU tensors; a batch seen
    with other layers requested is run again and the entry completed. The results are exactly those of a live
    teacher: the cache stores its outputs, keyed by everything the teacher reads (ids, mask, segment ids).

    Attributes:
        hits, misses: batches served from the cache / computed.
    """

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(inputs: dict[str, torch.Tensor]) -> str:
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        for name in sorted(inputs):
            value = inputs[name]
            if isinstance(value, torch.Tensor):
                h.update(name.encode())
                h.update(str(tuple(value.shape)).encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.entries)

    def nbytes(self) -> int:
        """Memory held by the cached tensors, in bytes."""
        total = 0
        for e in self.entries.values():
            total += e["logits"].numel() * e["logits"].element_size()
            for part in ("hidden", "attentions"):
                total += sum(t.numel() * t.element_size() for t in e[part].values())
        return total

    def outputs(self, teacher: nn.Module, inputs: dict[str, torch.Tensor], hidden_layers: set[int],
                attention_layers: set[int]) -> Any:
        """The teacher's outputs for ``inputs``: an object with ``logits``, ``hidden_states`` and ``attentions``
        (tuples indexed like the model's; entries that were not requested are None)."""
        from types import SimpleNamespace

        key = self.key(inputs)
        entry = self.entries.get(key)
        if entry is None or not (hidden_layers <= entry["hidden"].keys()
                                 and attention_layers <= entry["attentions"].keys()):
            self.misses += 1
            with torch.no_grad():
                out = teacher(**inputs, output_hidden_states=True, output_attentions=bool(attention_layers))
            entry = entry or {"hidden": {}, "attentions": {}}
            entry["logits"] = out.logits.detach().cpu()
            entry["hidden"].update({j: out.hidden_states[j].detach().cpu() for j in hidden_layers})
            # attentions[j - 1] is layer j (hidden_states indexing, as in the layer maps)
            entry["attentions"].update({j: out.attentions[j - 1].detach().cpu() for j in attention_layers})
            self.entries[key] = entry
        else:
            self.hits += 1
        device = inputs["input_ids"].device if "input_ids" in inputs else torch.device("cpu")
        n = features.num_layers(teacher)
        hidden = tuple(entry["hidden"][j].to(device) if j in entry["hidden"] else None for j in range(n + 1))
        attentions = tuple(entry["attentions"][j].to(device) if j in entry["attentions"] else None
                           for j in range(1, n + 1))
        return SimpleNamespace(logits=entry["logits"].to(device), hidden_states=hidden, attentions=attentions)


class FeatureDistillationTrainer(distillation_trainer.DistillationTrainer):
    """``DistillationTrainer`` + hidden-state and attention-map losses on chosen layer pairs.

    Args:
        model: the student (a ``transformers`` encoder classifier, e.g. ``BertForSequenceClassification``).
        args: ``TrainingArguments`` (see :func:`course_utils.training.distillation_trainer.training_args`).
        teacher_model: the teacher (required: its hidden states are computed live for every batch).
        hidden_pairs: ``[(student_index, teacher_index), …]`` in ``hidden_states`` indexing (0 = embeddings), e.g.
            from :func:`course_utils.kd.features.layer_map`; validated against both models' layer counts.
        hidden_weight: weight of the hidden-state term (0 = off).
        hidden_loss: ``"mse"`` (FitNets/TinyBERT), ``"cosine"`` (DistilBERT), or your own loss function with the
            signature of :func:`course_utils.kd.features.hint_loss` (:data:`HiddenLoss`): called once per pair as
            ``fn(student_hidden (B, S, H_s), teacher_hidden (B, S, H_t), projection or None, attention_mask (B, S))``
            and returning a scalar tensor.
        attention_pairs: layer pairs for the attention term (layers 1…L; ``attentions[i − 1]`` is layer i).
        attention_weight: weight of the attention term (0 = off).
        attention_loss: ``"mse"`` (TinyBERT) or ``"kl"`` (MiniLM).
        logit_weight: weight of notebook 03's logit loss (CE + KD); 0 for a features-only stage.
        projection_seed: seeds the projections' initial weights (default: ``args.seed``): the k-th pair's
            projection is built under ``torch.manual_seed(projection_seed + k)``.
        projection_factory: ``(student_width, teacher_width) -> nn.Module`` building each projection
            (:data:`ProjectionFactory`); None (default): :func:`course_utils.kd.features.make_projection`. A factory
            that returns ``nn.Linear(student_width, teacher_width)`` starts from the default's weights. Only called
            when the widths differ.
        teacher_cache: a :class:`TeacherCache` shared by several trainers on the same batches (same ``args.seed``):
            the teacher then runs once per distinct batch. None (default): the teacher runs for every batch.
        temperature, alpha_kd, **kwargs: as for :class:`~course_utils.training.distillation_trainer.DistillationTrainer`.

    Attributes:
        projections: ``nn.ModuleDict`` ``{"s{i}_t{j}": nn.Linear(H_s, H_t)}`` for the hidden pairs whose widths
            differ (empty when they agree).

    Raises:
        ValueError: no teacher, precomputed logits instead of a teacher, layer pairs outside either model, an
            unknown loss name, head counts that differ for the attention loss, every weight zero with nothing
            else to learn from, or a projection factory whose module has nothing to train or the wrong output width.
        TypeError: weights that are not numbers; a ``hidden_loss`` or ``projection_factory`` that is not a function
            of the expected arguments, or a factory that does not return an ``nn.Module``. (A ``hidden_loss`` whose
            result is not a scalar tensor raises when the first batch is trained.)
    """

    output_hidden_states = True

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        *,
        teacher_model: nn.Module | None = None,
        hidden_pairs: Sequence[tuple[int, int]] | None = None,
        hidden_weight: float = 0.0,
        hidden_loss: HiddenLoss = "mse",
        attention_pairs: Sequence[tuple[int, int]] | None = None,
        attention_weight: float = 0.0,
        attention_loss: str = "kl",
        logit_weight: float = 1.0,
        projection_seed: int | None = None,
        teacher_cache: TeacherCache | None = None,
        projection_factory: ProjectionFactory | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("FeatureDistillationTrainer needs the student model as `model`")
        if teacher_model is None:
            raise ValueError("feature distillation needs the teacher itself (teacher_model=...): its hidden states "
                             "and attention maps are computed live for every batch, precomputed logits are not enough")
        self.hidden_weight = validate_weight(hidden_weight, "hidden_weight")
        self.attention_weight = validate_weight(attention_weight, "attention_weight")
        self.logit_weight = validate_weight(logit_weight, "logit_weight")
        if self.logit_weight == 0 and self.hidden_weight == 0 and self.attention_weight == 0:
            raise ValueError("every loss weight is 0 (logit_weight, hidden_weight, attention_weight): nothing to learn")
        hidden_loss = _hidden_loss_fn(hidden_loss)
        if attention_loss not in features.ATTENTION_KINDS:
            raise ValueError(f"attention_loss must be one of {features.ATTENTION_KINDS}, got {attention_loss!r}")
        self.hidden_loss, self.attention_loss = hidden_loss, attention_loss
        n_s, n_t = features.num_layers(model), features.num_layers(teacher_model)
        if self.hidden_weight > 0 and not hidden_pairs:
            raise ValueError("hidden_weight > 0 needs hidden_pairs, e.g. features.layer_map(n_student, n_teacher)")
        if self.attention_weight > 0 and not attention_pairs:
            raise ValueError("attention_weight > 0 needs attention_pairs, e.g. features.layer_map(n_student, n_teacher)")
        self.hidden_pairs = features.check_layer_map(hidden_pairs, n_s, n_t) if hidden_pairs else []
        self.attention_pairs = (features.check_layer_map(attention_pairs, n_s, n_t, attention=True)
                                if attention_pairs else [])
        if self.attention_weight > 0:
            h_s = getattr(model.config, "num_attention_heads", None)
            h_t = getattr(teacher_model.config, "num_attention_heads", None)
            if h_s != h_t:
                raise ValueError(f"the attention loss matches heads one to one, but the student has {h_s} heads and "
                                 f"the teacher {h_t}: build the student with num_attention_heads={h_t} (any width "
                                 f"divisible by {h_t} works)")
            if getattr(model.config, "attention_probs_dropout_prob", 0.0):
                warnings.warn("the student uses attention dropout: in training mode the attention maps it returns are "
                              "the dropped-out ones, so the attention loss compares noisy maps. Build the student with "
                              "attention_probs_dropout_prob=0.0.", stacklevel=2)
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)
        w_s, w_t = features.hidden_width(model), features.hidden_width(teacher_model)
        seed = self.args.seed if projection_seed is None else projection_seed
        projected = self.hidden_pairs if self.hidden_weight > 0 and w_s != w_t else []
        self.projections = _make_projections(projection_factory, projected, w_s, w_t, seed)
        self.projections.to(self.args.device)
        self._needs_attentions = self.attention_weight > 0
        if teacher_cache is not None and not isinstance(teacher_cache, TeacherCache):
            raise TypeError(f"teacher_cache must be a TeacherCache or None, got {type(teacher_cache).__name__}")
        self.teacher_cache = teacher_cache

    # ------------------------------------------------------------------------------------ the optimizer
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer for the student, plus a parameter group for the projections.

        Without this the projections would keep their random initial weights (the Trainer only optimises
        ``self.model``'s parameters) and the hidden-state loss would fight a fixed random map. The scheduler, created
        after the optimizer, applies the same warm-up and decay to the new group.
        """
        optimizer = super().create_optimizer(model)
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in self.projections.parameters() if id(p) not in present]
        if missing:
            optimizer.add_param_group({"params": missing, "weight_decay": self.args.weight_decay})
        return optimizer

    # ------------------------------------------------------------------------------------- training run
    @contextlib.contextmanager
    def _attention_maps(self):
        """Eager attention on both models inside the block when attention maps are matched (``sdpa``, the default,
        returns none), then each model's previous implementation again."""
        models = [self.model, self.teacher] if self._needs_attentions else []
        previous = [m.config._attn_implementation for m in models]
        for m in models:
            m.set_attn_implementation("eager")
        try:
            yield
        finally:
            for m, impl in zip(models, previous):
                m.set_attn_implementation(impl)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train`` (projections in train mode, eager attention while it runs when maps are matched)."""
        self.projections.train()
        with self._attention_maps():
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """``Trainer.evaluate``; the evaluation loss includes the feature terms."""
        with self._attention_maps():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.predict`` (as :meth:`evaluate`)."""
        with self._attention_maps():
            return super().predict(*args, **kwargs)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self._needs_attentions:
            inputs = {**inputs, "output_attentions": True}
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if return_outputs:  # evaluation gathers every output tensor: keep only the logits, not 2L+1 feature tensors
            loss, student_outputs = out
            return loss, type(student_outputs)(logits=student_outputs.logits)
        return out

    def teacher_outputs(self, inputs: dict[str, torch.Tensor], precomputed: torch.Tensor | None) -> Any:
        """The frozen teacher's logits, hidden states and (when matched) attention maps for this batch."""
        self.teacher.eval()
        kw = {k: v for k, v in inputs.items()
              if k in self._teacher_keys and k not in ("output_hidden_states", "output_attentions")}
        if self.teacher_cache is not None:
            hidden = {j for _, j in self.hidden_pairs} if self.hidden_weight > 0 else set()
            attention = {j for _, j in self.attention_pairs} if self._needs_attentions else set()
            return self.teacher_cache.outputs(self.teacher, kw, hidden, attention)
        with torch.no_grad():
            return self.teacher(**kw, output_hidden_states=True, output_attentions=self._needs_attentions)

    def loss_terms(self, student_outputs: Any, teacher_outputs: Any, labels: torch.Tensor | None,
                   inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The logit terms of :class:`~course_utils.training.distillation_trainer.DistillationTrainer` plus ``hidden`` and ``attention``."""
        if teacher_outputs is None:  # alpha_kd = 0: the base class skipped the teacher, but the features need it
            teacher_outputs = self.teacher_outputs(inputs, None)
        terms = super().loss_terms(student_outputs, teacher_outputs, labels, inputs)
        mask = inputs.get("attention_mask")
        # a features-only stage leaves the logit terms out of the graph (logged only): the classifier gets no
        # gradient at all, so AdamW does not even decay it
        parts = [self.logit_weight * terms["loss"]] if self.logit_weight > 0 else []
        if self.hidden_weight > 0:
            terms["hidden"] = self.hidden_term(student_outputs.hidden_states, teacher_outputs.hidden_states, mask)
            parts.append(self.hidden_weight * terms["hidden"])
        if self.attention_weight > 0:
            terms["attention"] = self.attention_term(student_outputs.attentions, teacher_outputs.attentions, mask)
            parts.append(self.attention_weight * terms["attention"])
        terms["loss"] = torch.stack(parts).sum() if len(parts) > 1 else parts[0]
        return terms

    def hidden_term(self, student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                    mask: torch.Tensor | None) -> torch.Tensor:
        """Mean over :attr:`hidden_pairs` of the hidden-state loss (through the pair's projection, if any)."""
        own = callable(self.hidden_loss)
        if own:
            fn = self.hidden_loss
        else:
            fn = features.hint_loss if self.hidden_loss == "mse" else features.hidden_cosine_loss
        parts = [fn(student_hidden[i], teacher_hidden[j], self.projections[f"s{i}_t{j}"]
                    if f"s{i}_t{j}" in self.projections else None, mask)
                 for i, j in self.hidden_pairs]
        for part in parts if own else ():
            if not isinstance(part, torch.Tensor):
                raise TypeError(f"hidden_loss {_name(fn)} returned a {type(part).__name__}; it must return a scalar "
                                "torch.Tensor (no .item() or float(...): the student learns from it)")
            if part.dim() != 0:
                raise ValueError(f"hidden_loss {_name(fn)} returned a tensor of shape {tuple(part.shape)}; it must "
                                 "return a scalar: the mean over the real tokens and the features")
        return torch.stack(parts).mean()

    def attention_term(self, student_attn: Sequence[torch.Tensor], teacher_attn: Sequence[torch.Tensor],
                       mask: torch.Tensor | None) -> torch.Tensor:
        """Mean over :attr:`attention_pairs` of the attention-map loss (layer i ↔ ``attentions[i − 1]``)."""
        if not student_attn or not teacher_attn:
            raise RuntimeError("the models returned no attention maps: they must use the 'eager' attention "
                               "implementation (FeatureDistillationTrainer.train switches to it)")
        parts = [features.attention_map_loss(student_attn[i - 1], teacher_attn[j - 1], mask, kind=self.attention_loss)
                 for i, j in self.attention_pairs]
        return torch.stack(parts).mean()


def train_with_features(
    student: nn.Module,
    train_dataset: "Dataset",
    tokenizer: Any,
    *,
    teacher: nn.Module,
    hidden_pairs: Sequence[tuple[int, int]] | None = None,
    hidden_weight: float = 0.0,
    hidden_loss: HiddenLoss = "mse",
    attention_pairs: Sequence[tuple[int, int]] | None = None,
    attention_weight: float = 0.0,
    attention_loss: str = "kl",
    logit_weight: float = 1.0,
    temperature: float = 2.0,
    alpha_kd: float = 0.5,
    seed: int = 0,
    teacher_cache: TeacherCache | None = None,
    projection_seed: int | None = None,
    projection_factory: ProjectionFactory | None = None,
    **hparams: Any,
) -> FeatureDistillationTrainer:
    """Train ``student`` with :class:`FeatureDistillationTrainer` (the course's ``training_args`` + ``hparams``).

    Same conventions as :func:`course_utils.training.distillation_trainer.train_student`: the trained model is ``trainer.model`` (left in
    eval mode), the loss parts are in ``trainer.state.log_history``; the trained projections stay on
    ``trainer.projections`` and are not part of the student. ``train_dataset`` must not carry a
    ``teacher_logits`` column (the teacher runs live). ``seed`` seeds the ``Trainer`` (batch order, dropout);
    ``projection_seed`` the projections (default: ``seed``).

    ``hidden_loss`` may be your own loss function and ``projection_factory`` your own projection builder (see
    :class:`FeatureDistillationTrainer`): with a loss equal to a named one up to float rounding and a factory that
    returns ``nn.Linear``, the run is the named loss's run up to float noise (same batches, same initial weights).
    """
    cls = functools.partial(FeatureDistillationTrainer, hidden_pairs=hidden_pairs, hidden_weight=hidden_weight,
                            hidden_loss=hidden_loss, attention_pairs=attention_pairs,
                            attention_weight=attention_weight, attention_loss=attention_loss,
                            logit_weight=logit_weight, teacher_cache=teacher_cache,
                            projection_seed=projection_seed, projection_factory=projection_factory)
    return distillation_trainer.train_student(student, train_dataset, tokenizer, teacher=teacher, temperature=temperature,
                            alpha_kd=alpha_kd, seed=seed, trainer_class=cls, **hparams)


# ============================================================================================ narrow students
NARROW_STUDENTS: dict[str, dict[str, Any]] = {
    # Half the teacher's width and depth, the teacher's 12 heads (so attention maps can be matched head by head),
    # no attention dropout (the attention loss would otherwise compare dropped-out maps).
    "small": dict(hidden_size=192, num_hidden_layers=3, num_attention_heads=12, intermediate_size=768,
                  attention_probs_dropout_prob=0.0),
    "gpu": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                attention_probs_dropout_prob=0.0),
}
"""Shape of the freshly initialised narrow student per profile (``BertConfig`` keyword arguments)."""
SMOKE_NARROW_STUDENT: dict[str, Any] = dict(hidden_size=48, num_hidden_layers=6, num_attention_heads=12,
                                            intermediate_size=96, attention_probs_dropout_prob=0.0)
"""The gpu narrow student's shape in the smoke run (``KD_SMOKE=1``): half the stand-in teacher's width and depth
(:data:`course_utils.text.bert.SMOKE_STANDINS`), its 12 heads."""


def narrow_student(teacher: nn.Module, profile: str = "small", seed: int = 0, pca_embeddings: bool = True,
                   **overrides: Any) -> nn.Module:
    """A ``BertForSequenceClassification`` narrower than ``teacher`` (see :data:`NARROW_STUDENTS`), with the
    teacher's vocabulary, label count and position range; ``overrides`` change any ``BertConfig`` field.

    Its encoder layers, pooler and classifier are random (seeded). With ``pca_embeddings`` (default) its embedding
    tables are the teacher's, projected onto their top principal directions (:func:`pca_embeddings_from`): layers
    cannot be copied across widths, but embeddings can be compressed.
    """
    from transformers import BertConfig, BertForSequenceClassification

    if profile not in NARROW_STUDENTS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(NARROW_STUDENTS)}")
    base = SMOKE_NARROW_STUDENT if profile == "gpu" and smoke_active() else NARROW_STUDENTS[profile]
    shape = {**base, **overrides}
    config = BertConfig(vocab_size=teacher.get_input_embeddings().num_embeddings,
                        num_labels=teacher.config.num_labels,
                        max_position_embeddings=teacher.config.max_position_embeddings,
                        pad_token_id=teacher.config.pad_token_id, **shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = BertForSequenceClassification(config)
    if pca_embeddings:
        pca_embeddings_from(teacher, student)
    return student


def _embedding_tables(model: nn.Module) -> dict[str, nn.Embedding]:
    emb = getattr(getattr(model, "bert", model), "embeddings", None)
    tables = {name: getattr(emb, name, None) for name in ("word_embeddings", "position_embeddings",
                                                           "token_type_embeddings")}
    if emb is None or not all(isinstance(t, nn.Embedding) for t in tables.values()):
        raise TypeError(f"{type(model).__name__} has no BERT embedding tables (word, position, token type)")
    return tables  # type: ignore[return-value]


@torch.no_grad()
def pca_embeddings_from(teacher: nn.Module, student: nn.Module) -> torch.Tensor:
    """Set the student's word, position and token-type embeddings to the teacher's, projected onto the top
    ``H_s`` principal directions of the teacher's word embeddings (one shared projection, so the three tables stay
    in one space). Returns the ``(H_t, H_s)`` projection.

    Raises:
        ValueError: the student is not narrower than the teacher, or the tables' sizes differ.
    """
    t_tabs, s_tabs = _embedding_tables(teacher), _embedding_tables(student)
    w_t, w_s = t_tabs["word_embeddings"].weight.shape[1], s_tabs["word_embeddings"].weight.shape[1]
    if w_s > w_t:
        raise ValueError(f"the student's embeddings ({w_s}) are wider than the teacher's ({w_t}): nothing to compress")
    for name, t in t_tabs.items():
        if t.weight.shape[0] != s_tabs[name].weight.shape[0]:
            raise ValueError(f"{name}: the teacher has {t.weight.shape[0]} rows, the student "
                             f"{s_tabs[name].weight.shape[0]}; build the student with the teacher's sizes")
    words = t_tabs["word_embeddings"].weight.double()
    centred = words - words.mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    projection = vt[:w_s].T  # (H_t, H_s), orthonormal columns
    for name, t in t_tabs.items():
        source = centred if name == "word_embeddings" else t.weight.double()
        s_tabs[name].weight.copy_((source @ projection).to(s_tabs[name].weight.dtype))
    return projection.float()


# ================================================================================================ CKA
@torch.inference_mode()
def hidden_states_of(model: nn.Module, dataset: "Dataset", tokenizer: Any, batch_size: int = 128) -> list[torch.Tensor]:
    """Every layer's representation of every real token of ``dataset``: a list of L + 1 ``(n_tokens, H)`` tensors.

    Rows follow the dataset's order and, within an example, its tokens; padding is left out, so two models that
    share a tokenizer give row-aligned matrices (what :func:`course_utils.kd.features.linear_cka` needs).
    """
    if "input_ids" not in dataset.column_names:
        raise ValueError("the dataset is not tokenised (no input_ids column); run course_utils.text.sentiment.tokenize first")
    keys = set(inspect.signature(model.forward).parameters)
    cols = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names and c in keys]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_layer: list[list[torch.Tensor]] = []
    try:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start:start + batch_size]
            batch = tokenizer.pad([{c: rows[c][i] for c in cols} for i in range(len(rows[cols[0]]))],
                                  return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, output_hidden_states=True)
            for layer, h in enumerate(out.hidden_states):
                if len(per_layer) <= layer:
                    per_layer.append([])
                per_layer[layer].append(features.token_features(h.float(), batch["attention_mask"]).cpu())
    finally:
        model.train(was_training)
    return [torch.cat(chunks) for chunks in per_layer]


def cka_between(student: nn.Module, teacher: nn.Module, dataset: "Dataset", tokenizer: Any,
                teacher_states: list[torch.Tensor] | None = None) -> np.ndarray:
    """Linear CKA between every student layer (rows, 0 = embeddings) and every teacher layer (columns) on the real
    tokens of ``dataset``. Pass ``teacher_states`` (from :func:`hidden_states_of`) to reuse the teacher's pass."""
    t_states = teacher_states if teacher_states is not None else hidden_states_of(teacher, dataset, tokenizer)
    return features.cka_matrix(hidden_states_of(student, dataset, tokenizer), t_states)
