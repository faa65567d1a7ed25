"""Checkers for notebook 03 (BERT → DistilBERT): the KD ``compute_loss`` of a ``Trainer`` subclass and the
DistilBERT-style layer-copy initialisation of a student.

Both run the learner's code on tiny, seeded, randomly initialised ``BertForSequenceClassification`` models (vocab
100, hidden 32, 4 layers, 2 heads, 3 labels, no dropout), so they take well under a second on one CPU thread and
never touch a hub.

==========================================================================  ===================================
exercise                                                                    checker
==========================================================================  ===================================
``class KDTrainer(Trainer)`` with ``compute_loss(self, model, inputs,        :func:`check_kd_compute_loss`
return_outputs=False, num_items_in_batch=None)``: (1 − alpha_kd)·CE +
alpha_kd·T²·KL(p ‖ q) from the student ``model`` and the frozen
``self.teacher`` (also accepted: the ``compute_loss`` function alone)
``init_student(teacher, layers) -> student``: same class and config but     :func:`check_layer_copy_init`
``len(layers)`` layers; embeddings, the listed layers in order, pooler
and classifier copied from the teacher
==========================================================================  ===================================

References: :func:`course_utils.kd.losses.distillation_loss` and :func:`course_utils.text.bert.init_student_from_teacher`.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..kd import losses
from ..text import bert
from ._core import (
    Case,
    CheckFailed,
    Dimensions,
    _exception_hint,
    checker,
    close,
    describe,
    fail,
    find_mistakes,
    fmt,
    mistakes_message,
    passed,
)
from .basics import _DISTILLATION_MISTAKES, _distillation_variant, confident_probes, log_of_softmax_message

__all__ = ["check_kd_compute_loss", "check_layer_copy_init"]

_MAX_ERROR_TEXT = 300
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


# ------------------------------------------------------------------------------------------- tiny models
def _tiny_bert(seed: int, layers: int = 4, initializer_range: float = 0.02, logit_scale: float = 1.0) -> Any:
    """A seeded, tiny, dropout-free ``BertForSequenceClassification`` (3 labels); ``logit_scale`` multiplies the
    classifier's weights so that the logits are spread out and every known mistake changes the loss visibly."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        num_labels=3, max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if logit_scale != 1.0:
        with torch.no_grad():
            model.classifier.weight.mul_(logit_scale)
    return model


def _tiny_batch(seed: int, batch: int = 5, length: int = 7) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (some rows padded) / token_type_ids (a second segment) / labels."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 100, (batch, length), generator=gen)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    token_type_ids = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        keep = length - (row % 3)  # rows 1, 2, 4, … end in padding
        attention_mask[row, keep:] = 0
        input_ids[row, keep:] = 0
        token_type_ids[row, 3:keep] = 1
    labels = torch.randint(0, 3, (batch,), generator=gen)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "labels": labels}


def _learner_error(name: str, err: BaseException, where: str, extra: str = "") -> None:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 3] + "..."
    fail(f"`{name}` raised {type(err).__name__}{': ' + text if text else ''} — {where}.{extra}"
         f"{_exception_hint(err)}", cause=err)


def _not_implemented(name: str, err: NotImplementedError) -> None:
    hint = str(err).strip() or "replace the `raise NotImplementedError(...)` line with your code."
    fail(f"`{name}` is not implemented yet — {hint}", cause=None)


# ====================================================================================== KD compute_loss
_TEMPLATE = ("compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None)")

_KD_MISTAKES: Dimensions = {
    **_DISTILLATION_MISTAKES,
    "teacher_input": [
        ("logits", ""),
        ("probs", "the teacher's logits were turned into probabilities before the loss (double softmax): the loss "
                  "applies softmax(v / T) itself, and softmax of numbers that are already probabilities is nearly "
                  "uniform, so the student would learn almost nothing. Use the teacher's raw outputs.logits."),
    ],
}


def _kd_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    v = case["teacher_logits"]
    if choice["teacher_input"] == "probs":
        v = torch.softmax(v, dim=-1)
    return _distillation_variant(dict(case, teacher_logits=v), choice)


def _kd_reference(case: Case) -> torch.Tensor:
    return losses.distillation_loss(case["student_logits"], case["teacher_logits"], case["labels"],
                                    temperature=case["temperature"], alpha_kd=case["alpha_kd"]).loss


class _CallRecorder:
    """Records, per forward call of a model, which of its inputs were given (not None) and whether autograd was on."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[set[str]] = []
        self.grad_enabled: list[bool] = []
        self._signature = inspect.signature(model.forward)
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        try:
            bound = self._signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            bound = dict(kwargs)
        self.calls.append({k for k, v in bound.items() if v is not None})
        self.grad_enabled.append(torch.is_grad_enabled())

    def reset(self) -> None:
        self.calls = []
        self.grad_enabled = []

    def given(self) -> set[str]:
        return set().union(*self.calls) if self.calls else set()

    def remove(self) -> None:
        self._handle.remove()


def _compute_loss_target(obj: Any) -> tuple[str, Callable[..., Any]]:
    """Return ``(display name, make_call)``: ``make_call(teacher, T, alpha)`` → a bound ``compute_loss``."""
    if isinstance(obj, type):
        fn = getattr(obj, "compute_loss", None)
        name = f"{obj.__name__}.compute_loss"
        if fn is None:
            fail(f"`{obj.__name__}` has no compute_loss method: define {_TEMPLATE} in your class.")
        owner = next((c for c in obj.__mro__ if "compute_loss" in vars(c)), None)
        if owner is not None and owner.__module__.split(".")[0] == "transformers":
            fail(f"`{obj.__name__}` does not override compute_loss, so it is {owner.__name__}'s plain loss (the "
                 f"model's own cross-entropy, no teacher). Define {_TEMPLATE} inside your class — check its "
                 "indentation.")

        def make(teacher: Any, temperature: float, alpha_kd: float) -> Callable[..., Any]:
            inst = obj.__new__(obj)  # no Trainer.__init__: no TrainingArguments, no accelerator set-up
            inst.teacher, inst.temperature, inst.alpha_kd = teacher, temperature, alpha_kd
            return inst.compute_loss

        return name, make
    if callable(obj) and not hasattr(obj, "train"):  # a plain function compute_loss(self, model, inputs, ...)
        name = getattr(obj, "__name__", None) or repr(obj)

        def make_fn(teacher: Any, temperature: float, alpha_kd: float) -> Callable[..., Any]:
            self_ = types.SimpleNamespace(teacher=teacher, temperature=temperature, alpha_kd=alpha_kd)

            def bound(*args: Any, **kwargs: Any) -> Any:
                return obj(self_, *args, **kwargs)

            bound.checker_self = self_  # type: ignore[attr-defined]
            return bound

        return name, make_fn
    what = type(obj).__name__
    if hasattr(obj, "compute_loss") and hasattr(obj, "args"):
        raise TypeError(f"check_kd_compute_loss expects your Trainer class itself, e.g. "
                        f"check_kd_compute_loss(KDTrainer), but got an instance of {what}: pass the class, not a "
                        f"trainer built from it.")
    raise TypeError(f"check_kd_compute_loss expects your Trainer class (e.g. check_kd_compute_loss(KDTrainer)) or "
                    f"the function itself, but got {describe(obj)} ({what}).")


def _call_compute_loss(name: str, bound: Callable[..., Any], model: Any, inputs: dict, return_outputs: bool) -> Any:
    kwargs: dict[str, Any] = {"num_items_in_batch": None}
    if return_outputs:
        kwargs["return_outputs"] = True
    how = "return_outputs=True, " if return_outputs else ""
    where = (f"when called as compute_loss(model, inputs, {how}num_items_in_batch=None) with a tiny BERT student, "
             "inputs = {input_ids, attention_mask, token_type_ids, labels} and self.teacher, self.temperature, "
             "self.alpha_kd set")
    try:
        return bound(model, inputs, **kwargs)
    except NotImplementedError as err:
        _not_implemented(name, err)
    except CheckFailed:
        raise
    except AttributeError as err:
        extra = ""
        owner = getattr(bound, "__self__", None) or getattr(bound, "checker_self", None)
        if owner is not None and getattr(err, "obj", None) is owner:
            extra = (" The checker sets only self.teacher, self.temperature and self.alpha_kd (as your __init__ "
                     "does); inside compute_loss the student is the `model` argument.")
        _learner_error(name, err, where, extra)
    except TypeError as err:
        extra = ""
        if "unexpected keyword argument" in str(err) or "positional argument" in str(err):
            extra = f" The Trainer calls compute_loss with these arguments: keep the signature {_TEMPLATE}."
        _learner_error(name, err, where, extra)
    except Exception as err:  # the learner's bug, reported with its context
        _learner_error(name, err, where)


def _loss_tensor(out: Any, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        if out.dim() != 0:
            fail(f"`{name}` returns a tensor of shape {tuple(out.shape)}; the loss must be a single number (shape ()) "
                 "averaged over the batch.")
        return out
    if out is None:
        fail(f"`{name}` returned None — did you forget the `return` statement? Return the loss (and, with "
             "return_outputs=True, the pair (loss, student_outputs)).")
    if isinstance(out, (tuple, list)):
        fail(f"`{name}` returns a {type(out).__name__} when return_outputs=False (the training step): return only the "
             "loss then, and the pair (loss, student_outputs) only when return_outputs=True.")
    if isinstance(out, (float, int)):
        fail(f"`{name}` returned a Python {type(out).__name__} ({out!r}); return the loss tensor itself (no .item() or "
             "float(...)), the Trainer calls .backward() on it.")
    if isinstance(getattr(out, "loss", None), torch.Tensor):
        fail(f"`{name}` returns a {type(out).__name__} (a model output); return the loss tensor you computed.")
    fail(f"`{name}` returned a {type(out).__name__}; the loss must be a torch.Tensor.")


@checker
def check_kd_compute_loss(trainer_cls: Any) -> bool:
    """Check the KD ``compute_loss`` of the learner's ``Trainer`` subclass (notebook 03).

    Expected (the exercise part is the body of ``compute_loss``)::

        class KDTrainer(Trainer):
            def __init__(self, *args, teacher_model=None, temperature=2.0, alpha_kd=0.5, **kwargs): ...
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                # loss = (1 − alpha_kd)·CE(z, y) + alpha_kd·T²·KL(softmax(v/T) ‖ softmax(z/T)), batchmean
                # returns (loss, student_outputs) when return_outputs is true, else the loss alone

    The class is not constructed (that would need ``TrainingArguments``): the checker makes an instance with
    ``trainer_cls.__new__`` and sets ``teacher`` (a tiny BERT), ``temperature`` and ``alpha_kd`` on it, then calls
    ``compute_loss(student, inputs, num_items_in_batch=None)`` the way the Trainer's training step does, for
    several (T, alpha_kd) including alpha_kd = 0 and 1, and compares the loss with
    :func:`course_utils.kd.losses.distillation_loss`. A plain function ``compute_loss(self, model, inputs, …)`` is
    accepted too (``self`` then only has those three attributes).

    Diagnoses: student or teacher never run; attention_mask/token_type_ids not passed to a model; the model's own
    loss (``outputs.loss``, labels fed to the student) returned instead of the KD loss; labels passed to the student
    or the teacher even when the loss is right; the teacher run with autograd on (its logits detached afterwards
    instead of ``torch.no_grad()``); ``log(softmax(...))`` in either term (inf/NaN for a very confident student or
    teacher); teacher logits softmaxed
    before the loss (double softmax); and every mistake of :func:`check_distillation_loss` (missing T², ``mean``
    instead of ``batchmean``, reverse KL, alpha_kd on the wrong term, CE at temperature T, …), alone or two at a
    time; the loss not differentiable w.r.t. the student; gradients flowing into the teacher (no ``torch.no_grad``);
    ``return_outputs=True`` not returning ``(loss, student_outputs)``.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if given neither a class nor a function.
    """
    name, make = _compute_loss_target(trainer_cls)
    with torch.random.fork_rng():
        return _check_kd_compute_loss(name, make)


def _check_kd_compute_loss(name: str, make: Callable[..., Any]) -> bool:
    student = _tiny_bert(seed=1, layers=2, initializer_range=0.2, logit_scale=3.0)
    # The teacher's requires_grad stays on, so that a missing torch.no_grad() shows up as teacher gradients.
    teacher = _tiny_bert(seed=2, layers=4, initializer_range=0.3, logit_scale=3.0).eval()
    student.train()  # as in the Trainer's training step (no dropout, so the logits are deterministic)
    settings = [(2.0, 0.5, 60), (4.0, 0.3, 61), (1.5, 0.0, 62), (3.0, 1.0, 63)]
    batches = {seed: _tiny_batch(seed) for _, _, seed in settings}

    def inputs_for(seed: int) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in batches[seed].items()}  # a fresh dict: the learner may pop from it

    cases: list[Case] = []
    with torch.no_grad():
        for t, a, seed in settings:
            b = batches[seed]
            model_inputs = {k: b[k] for k in _INPUT_KEYS}
            cases.append({"student_logits": student(**model_inputs).logits,
                          "teacher_logits": teacher(**model_inputs).logits,
                          "labels": b["labels"], "temperature": t, "alpha_kd": a})

    rec_s, rec_t = _CallRecorder(student), _CallRecorder(teacher)
    try:
        outputs: list[torch.Tensor] = []
        given: list[tuple[set[str], set[str], int, int]] = []
        bad: int | None = None
        for i, (t, a, seed) in enumerate(settings):
            rec_s.reset()
            rec_t.reset()
            quiet = contextlib.redirect_stdout(io.StringIO()) if bad is not None else contextlib.nullcontext()
            try:
                with quiet:
                    loss = _loss_tensor(_call_compute_loss(name, make(teacher, t, a), student, inputs_for(seed), False),
                                        name)
            except CheckFailed:
                if bad is None:
                    raise
                break
            outputs.append(loss.detach())
            given.append((rec_s.given(), rec_t.given(), len(rec_s.calls), len(rec_t.calls)))
            if bad is None and not close(loss, _kd_reference(cases[i])):
                bad = i
        if bad is not None:
            _diagnose_kd(name, cases, outputs, given, bad)
        _check_no_labels_in_forward(name, given)
        rec_t.reset()
        _check_kd_gradients(name, make, student, teacher, settings[0], inputs_for(settings[0][2]), cases[0])
        if any(rec_t.grad_enabled):
            fail(f"`{name}` gives the right value and no gradient reaches the teacher, but the teacher's forward "
                 "pass ran with autograd on (outside torch.no_grad()): PyTorch recorded the whole teacher graph and "
                 "kept its activations for a backward pass that never comes, which costs memory and time on every "
                 "step — detaching the logits afterwards does not undo that. Run the teacher's forward inside a "
                 "torch.no_grad() block.")
        _check_return_outputs(name, make, student, teacher, settings[0], inputs_for(settings[0][2]), cases[0])
    finally:
        rec_s.remove()
        rec_t.remove()
    _check_confident_logits(name, make)
    return passed(
        f"`{name}` is correct: (1 − alpha_kd)·CE + alpha_kd·T²·KL(p ‖ q) from the student's and the teacher's "
        "logits for alpha_kd ∈ {0, 0.3, 0.5, 1} and T ∈ {1.5, 2, 3, 4}; the labels stay out of both models, the "
        "teacher runs without autograd, gradients reach the student but not the teacher, the loss stays finite for "
        "very confident models, and return_outputs=True gives (loss, student_outputs)."
    )


def _check_no_labels_in_forward(name: str, given: list[tuple[set[str], set[str], int, int]]) -> None:
    """The loss is right, but a model was called with ``labels``: it then computes its own cross-entropy."""
    for role, index, extra in (
            ("student", 0, " Worse, its outputs.loss is the plain cross-entropy, an easy thing to return by mistake "
                           "instead of the KD loss."),
            ("teacher", 1, "")):
        if any("labels" in g[index] for g in given):
            fail(f"`{name}` gives the right loss, but it passes `labels` to the {role}'s forward: a model that "
                 "gets labels computes its own cross-entropy loss on every step, which is wasted work here." + extra +
                 f" Call the {role} with the inputs only — every key of the batch except 'labels' — and use the "
                 "labels in your own loss.")


class _FixedLogits(torch.nn.Module):
    """A stand-in classifier that returns fixed logits (as a parameter, so gradients flow), whatever the inputs."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.weight * 1.0
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _check_confident_logits(name: str, make: Callable[..., Any]) -> None:
    """Very confident student or teacher (logit gaps ~300, 3 classes): log(softmax(...)) gives inf/NaN there."""
    for who, where, case in confident_probes(with_labels=True):
        student, teacher = _FixedLogits(case["student_logits"]), _FixedLogits(case["teacher_logits"]).eval()
        batch = _tiny_batch(70, batch=2)
        batch["labels"] = case["labels"].clone()
        full = dict(case, alpha_kd=0.5)
        with torch.enable_grad():
            loss = _loss_tensor(_call_compute_loss(name, make(teacher, case["temperature"], 0.5), student, batch,
                                                   False), name)
        if not bool(torch.isfinite(loss)):
            fail(log_of_softmax_message(name, loss.detach(), who, where + ", alpha_kd = 0.5"))
        expected = _kd_reference(full)
        if not close(loss.detach(), expected):
            fail(f"`{name}` returns {fmt(loss.detach())} for a very confident {who} ({where}), expected "
                 f"{fmt(expected)}: compute both terms from log-probabilities taken in one step (log-sum-exp), "
                 "never from probabilities.")


def _diagnose_kd(name: str, cases: list[Case], outputs: list[torch.Tensor],
                 given: list[tuple[set[str], set[str], int, int]], bad: int) -> None:
    case, out = cases[bad], outputs[bad]
    s_given, t_given, s_calls, t_calls = given[bad]
    expected = _kd_reference(case)
    where = f"for T = {case['temperature']:g}, alpha_kd = {case['alpha_kd']:g}"
    if s_calls == 0:
        fail(f"`{name}` never runs the student: compute its logits with the `model` argument, "
             "model(input_ids=..., attention_mask=..., token_type_ids=...).logits.")
    if t_calls == 0 and case["alpha_kd"] > 0:
        ce = F.cross_entropy(case["student_logits"], case["labels"])
        extra = (" Your loss equals the plain cross-entropy with the hard labels"
                 + (" — the model's own outputs.loss, because the labels went into the student's forward"
                    if "labels" in s_given else "") + ".") if close(out, ce) else ""
        fail(f"`{name}` never runs the teacher (self.teacher), so the KD term has no soft targets {where}.{extra} "
             "Compute teacher_logits = self.teacher(...).logits under torch.no_grad() and combine both terms.")
    for role, keys in (("student", s_given), ("teacher", t_given)):
        if role == "teacher" and case["alpha_kd"] == 0:
            continue
        missing = [k for k in ("attention_mask", "token_type_ids") if k not in keys]
        if missing:
            effect = ("padding tokens are attended to" if "attention_mask" in missing
                      else "the second segment is read as the first")
            fail(f"`{name}` does not pass {' and '.join(missing)} to the {role} (it was called with "
                 f"{sorted(keys)}), so its logits differ from the model's real predictions "
                 f"({effect}). "
                 "Call it with input_ids, attention_mask and token_type_ids — e.g. "
                 "model(**{k: v for k, v in inputs.items() if k != 'labels'}).")
    ces = [F.cross_entropy(c["student_logits"], c["labels"]) for c in cases[:len(outputs)]]
    if all(close(o, ce) for o, ce in zip(outputs, ces)) and any(c["alpha_kd"] > 0 for c in cases[:len(outputs)]):
        if any("labels" in g[0] for g in given):
            fail(f"`{name}` returns the model's own loss (outputs.loss): because the labels went into the student's "
                 "forward, the model computed its plain cross-entropy, and that is what you return — the KD term is "
                 "missing. Pop the labels first (labels = inputs.pop('labels')), run the student without them and "
                 "compute (1 − alpha_kd)·CE(z, labels) + alpha_kd·T²·KL(p ‖ q) yourself.")
        fail(f"`{name}` returns the plain cross-entropy with the hard labels: the KD term is missing. The loss is "
             "(1 − alpha_kd)·CE(z, labels) + alpha_kd·T²·KL(softmax(v/T) ‖ softmax(z/T)).")
    diagnoses = find_mistakes(cases, outputs, bad, _kd_variant, _KD_MISTAKES)
    if diagnoses:
        fail(mistakes_message(name, diagnoses))
    parts = []
    for i, c in enumerate(cases[:len(outputs)]):
        if c["alpha_kd"] in (0.0, 1.0) and not close(outputs[i], _kd_reference(c)):
            part, what = (("CE", "F.cross_entropy(student_logits, labels)") if c["alpha_kd"] == 0.0
                          else ("KD", "T² · KL(p ‖ q) with batchmean"))
            parts.append(f"at alpha_kd = {c['alpha_kd']:g} the loss is the {part} term alone, {what} = "
                         f"{fmt(_kd_reference(c))}, but you return {fmt(outputs[i])}")
    detail = ("; ".join(parts) + ". Fix that term first.") if parts else (
        "both terms are right on their own (alpha_kd = 0 and 1), so the weighting is off: "
        "(1 − alpha_kd)·CE + alpha_kd·KD.")
    fail(f"`{name}` returns {fmt(out)} {where}, expected {fmt(expected)}: {detail}")


def _check_kd_gradients(name: str, make: Callable[..., Any], student: Any, teacher: Any,
                        setting: tuple[float, float, int], inputs: dict, case: Case) -> None:
    t, a, _ = setting
    student.zero_grad(set_to_none=True)
    teacher.zero_grad(set_to_none=True)
    with torch.enable_grad():  # the check cell might run inside torch.no_grad()
        loss = _loss_tensor(_call_compute_loss(name, make(teacher, t, a), student, inputs, False), name)
        if not loss.requires_grad:
            fail(f"`{name}` gives the right value, but the loss has no gradient, so the student could never learn: "
                 "did you run the student under torch.no_grad(), or call .detach()/.item() on its logits? Only the "
                 "teacher's forward belongs under torch.no_grad().")
        loss.backward()
    s_grads = [p.grad for p in student.parameters() if p.grad is not None]
    if not s_grads or all(float(g.abs().sum()) == 0.0 for g in s_grads):
        fail(f"`{name}` gives the right value, but no gradient reaches the student's weights: the student's logits "
             "are detached (.detach(), torch.no_grad(), or a tensor rebuilt from numbers). Only the teacher's "
             "forward belongs under torch.no_grad().")
    leaked = [n for n, p in teacher.named_parameters() if p.grad is not None]
    student.zero_grad(set_to_none=True)
    teacher.zero_grad(set_to_none=True)
    if leaked:
        fail(f"`{name}` gives the right value, but gradients flow into the teacher ({len(leaked)} of its parameter "
             f"tensors got a .grad, e.g. {leaked[0]}): backpropagation runs through the teacher too, wasting memory "
             "and time, and an optimizer over its weights would change it. Run the teacher's forward inside a "
             "torch.no_grad() block.")


def _check_return_outputs(name: str, make: Callable[..., Any], student: Any, teacher: Any,
                          setting: tuple[float, float, int], inputs: dict, case: Case) -> None:
    t, a, _ = setting
    out = _call_compute_loss(name, make(teacher, t, a), student, inputs, True)
    expected = _kd_reference(case)
    fix = ("When return_outputs is true, return the pair (loss, student_outputs), where student_outputs is what "
           "model(...) returned; otherwise the loss alone: the Trainer's evaluation loop unpacks `loss, outputs = "
           "self.compute_loss(model, inputs, return_outputs=True)` and reads the predictions from outputs.")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        what = (("a single tensor" if isinstance(out, torch.Tensor) else f"an object of type {type(out).__name__}")
                if not isinstance(out, (tuple, list)) else f"a {type(out).__name__} of {len(out)} items")
        fail(f"`{name}` returns {what} with return_outputs=True instead of the pair (loss, student_outputs). {fix}")
    loss, outputs = out
    if not isinstance(loss, torch.Tensor) or not close(loss.detach(), expected):
        fail(f"`{name}` with return_outputs=True returns {describe(loss)} as its first item instead of the loss "
             f"({fmt(expected)}). {fix}")
    if isinstance(outputs, torch.Tensor):
        fail(f"`{name}` with return_outputs=True returns a tensor as its second item; return the student's whole "
             f"output object (it has .logits), not a tensor. {fix}")
    logits = getattr(outputs, "logits", None)
    if not isinstance(logits, torch.Tensor):
        fail(f"`{name}` with return_outputs=True returns {describe(outputs)} ({type(outputs).__name__}) as its second "
             f"item, which has no .logits. {fix}")
    if close(logits.detach(), case["teacher_logits"]) and not close(logits.detach(), case["student_logits"]):
        fail(f"`{name}` with return_outputs=True returns the teacher's outputs; it must return the student's "
             f"(evaluation measures the model being trained). {fix}")
    if not close(logits.detach(), case["student_logits"]):
        fail(f"`{name}` with return_outputs=True returns outputs whose logits are not the student's. {fix}")


# ======================================================================================= layer-copy init
def _layers_of(model: Any) -> tuple[str, Any]:
    path = bert._layer_path(model)
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return path, obj


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _group(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _equal_states(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return bool(a) and a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k].detach().cpu(), b[k].detach().cpu()) for k in a)


def _storages(model: torch.nn.Module) -> dict[int, str]:
    return {p.untyped_storage().data_ptr(): n for n, p in model.named_parameters() if p.numel()}


def _layer_list(layers: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in layers) + "]"


@checker
def check_layer_copy_init(fn: Callable[..., Any]) -> bool:
    """Check ``init_student(teacher, layers) -> student``: a DistilBERT-style layer-copy initialisation.

    Expected function:
        ``init_student(teacher: BertForSequenceClassification, layers: list[int]) -> student``: a new model of the
        teacher's class and config except ``num_hidden_layers = len(layers)``, whose embeddings, pooler and classifier
        are copies of the teacher's and whose layer ``i`` is a copy of teacher layer ``layers[i]``. The teacher is not
        modified and nothing is shared with it. Reference: :func:`course_utils.text.bert.init_student_from_teacher`.

    Tested on a tiny 4-layer ``BertForSequenceClassification`` with ``layers`` = [0, 2], [1, 3] and [3].

    Diagnoses: teacher returned or modified (its config's layer count, its layer list, its weights); different
    class; wrong number of layers; ``config.num_hidden_layers`` not updated; parameters shared with the teacher;
    embeddings, pooler or classifier not copied; the first k layers copied instead of the listed ones; layers in the
    wrong order; a layer that is no copy of any teacher layer; outputs differing from the reference's.

    Returns:
        ``True`` (after printing "✔ …").
    Raises:
        CheckFailed: with the diagnosis. TypeError: if ``fn`` is not callable.
    """
    if not callable(fn) or isinstance(fn, torch.nn.Module):
        raise TypeError(
            f"check_layer_copy_init expects your function itself, e.g. check_layer_copy_init(init_student), but got "
            f"{describe(fn)} ({type(fn).__name__}). Pass the function without calling it (no parentheses)."
        )
    name = getattr(fn, "__name__", None) or repr(fn)
    with torch.random.fork_rng():
        for seed, layers in ((10, [0, 2]), (11, [1, 3]), (12, [3])):
            _check_one_copy(fn, name, seed, layers)
    return passed(
        f"`{name}` is correct: for layers [0, 2], [1, 3] and [3] of a 4-layer BERT it returns a new model of the "
        "teacher's class with the embeddings, exactly those layers in order, the pooler and the classifier copied, "
        "config.num_hidden_layers updated, nothing shared with the teacher, and the teacher left unchanged."
    )


def _check_one_copy(fn: Callable[..., Any], name: str, seed: int, layers: list[int]) -> None:
    teacher = _tiny_bert(seed=seed, layers=4, initializer_range=0.2).eval()
    path, teacher_layers = _layers_of(teacher)
    base = path.split(".")[0]
    before = _snapshot(teacher)
    n_before = len(teacher_layers)
    where = f"for init_student(teacher, {_layer_list(layers)}) with a 4-layer teacher"
    try:
        student = fn(teacher, list(layers))
    except NotImplementedError as err:
        _not_implemented(name, err)
    except CheckFailed:
        raise
    except Exception as err:
        _learner_error(name, err, where)
    k = len(layers)

    # -- what came back, and is the teacher intact?
    if student is None:
        fail(f"`{name}` returned None — did you forget `return student`?")
    if not isinstance(student, torch.nn.Module):
        fail(f"`{name}` returned an object of type {type(student).__name__}; it must return the student model (a "
             f"{type(teacher).__name__}).")
    if student is teacher:
        fail(f"`{name}` returns the teacher object itself {where}: you modified the teacher in place, so the teacher "
             "is gone. Build a separate model: copy.deepcopy(teacher) and then keep only the chosen layers, or "
             "type(teacher)(config) with a copied config and copied weights.")
    if teacher.config.num_hidden_layers != n_before:
        fail(f"`{name}` changed the teacher's config {where}: teacher.config.num_hidden_layers is now "
             f"{teacher.config.num_hidden_layers}. The student's config must be a deep copy of the teacher's "
             "(copy.deepcopy) before you set num_hidden_layers on it.")
    _, t_layers_now = _layers_of(teacher)
    if len(t_layers_now) != n_before:
        fail(f"`{name}` modified the teacher {where}: it now has {len(t_layers_now)} layers instead of {n_before}. "
             "Work on a copy (copy.deepcopy(teacher)) or build a new model; the teacher must stay intact.")
    now = teacher.state_dict()
    changed = [key for key in before if key not in now or not torch.equal(now[key], before[key])]
    if changed:
        fail(f"`{name}` changed the teacher's weights {where} (e.g. {changed[0]}): did you copy in the wrong "
             "direction (teacher_part.load_state_dict(student_part.state_dict()))? Copy from the teacher into the "
             "student: student_part.load_state_dict(teacher_part.state_dict()).")

    # -- class, layer count, config
    if type(student) is not type(teacher):
        fail(f"`{name}` returns a {type(student).__name__}, but the student must have the teacher's class, "
             f"{type(teacher).__name__} (same heads, same forward), only with fewer layers: use type(teacher)(config) "
             "or copy.deepcopy(teacher).")
    try:
        _, s_layers = _layers_of(student)
    except TypeError:
        fail(f"`{name}`'s student has no encoder layer list at {path}.")
    if len(s_layers) != k:
        fail(f"`{name}` returns a student with {len(s_layers)} encoder layers {where}; it must have len(layers) = {k}: "
             "one copied teacher layer per entry of `layers`.")
    if student.config.num_hidden_layers != k:
        fail(f"`{name}`: the student has {k} layers but student.config.num_hidden_layers is still "
             f"{student.config.num_hidden_layers} {where}. Set num_hidden_layers on the student's config to the number of "
             "kept layers; "
             "otherwise save_pretrained/from_pretrained rebuilds the wrong number of layers.")
    s_cfg, t_cfg = student.config, teacher.config
    if s_cfg.num_labels != t_cfg.num_labels or s_cfg.hidden_size != t_cfg.hidden_size:
        fail(f"`{name}`: the student's config differs from the teacher's (num_labels {student.config.num_labels} vs "
             f"{teacher.config.num_labels}, hidden_size {student.config.hidden_size} vs {teacher.config.hidden_size}); "
             "copy the teacher's config and change only num_hidden_layers.")

    # -- independence
    t_storage = _storages(teacher)
    shared = [n for ptr, n in _storages(student).items() if ptr in t_storage]
    if shared:
        fail(f"`{name}`: the student shares {len(shared)} parameter tensors with the teacher {where} (e.g. "
             f"{shared[0]}), so training the student would change the teacher too. Copy the weights instead of "
             "assigning the teacher's modules: student_part.load_state_dict(teacher_part.state_dict()), .clone(), or "
             "start from copy.deepcopy(teacher).")

    # -- the copied parts
    s_state = student.state_dict()
    if not _equal_states(_group(s_state, f"{base}.embeddings."), _group(before, f"{base}.embeddings.")):
        fail(f"`{name}`: the student's embeddings are not the teacher's {where}: copy them too — "
             f"student.{base}.embeddings.load_state_dict(teacher.{base}.embeddings.state_dict()). The copied layers "
             "only make sense on top of the embeddings they were trained with.")
    t_layer_states = [_group(before, f"{path}.{j}.") for j in range(n_before)]
    source: list[int | None] = []
    for i in range(k):
        s_layer = _group(s_state, f"{path}.{i}.")
        source.append(next((j for j, t_layer in enumerate(t_layer_states) if _equal_states(s_layer, t_layer)), None))
    if source != list(layers):
        mapping = ", ".join(f"student layer {i} = " + (f"teacher layer {j}" if j is not None else "no teacher layer")
                            for i, j in enumerate(source))
        if source == list(range(k)):
            fail(f"`{name}` copied the first {k} teacher layer(s) {_layer_list(list(range(k)))} instead of the listed "
                 f"ones {_layer_list(layers)}: student layer i must be a copy of teacher layer layers[i] — iterate "
                 "over `layers`, not over range(len(layers)).")
        if None not in source and sorted(source) == sorted(layers):
            fail(f"`{name}` copied the right layers in the wrong order {where} ({mapping}): student layer i must be "
                 "teacher layer layers[i], in the order given.")
        if None in source:
            i = source.index(None)
            fail(f"`{name}`: student layer {i} is not a copy of any teacher layer {where} ({mapping}) — is it still "
                 f"randomly initialised? Copy teacher layer {layers[i]} into it.")
        fail(f"`{name}` copied the wrong layers {where}: {mapping}; expected teacher layers {_layer_list(layers)} in "
             "that order.")
    for part, prefix, what in (("pooler", f"{base}.pooler.", f"student.{base}.pooler"),
                               ("classifier", "classifier.", "student.classifier")):
        t_part = _group(before, prefix)
        if t_part and not _equal_states(_group(s_state, prefix), t_part):
            fail(f"`{name}`: the student's {part} is not the teacher's {where}: copy it too ({what}.load_state_dict("
                 f"{what.replace('student', 'teacher')}.state_dict())) — the fine-tuned teacher's {part} is part of "
                 "what the student inherits.")

    # -- end to end, against the reference
    reference = bert.init_student_from_teacher(teacher, layers)
    batch = _tiny_batch(seed + 100)
    model_inputs = {key: batch[key] for key in _INPUT_KEYS}
    was_training = student.training
    student.eval()
    reference.eval()
    try:
        with torch.no_grad():
            got, expected = student(**model_inputs).logits, reference(**model_inputs).logits
    except Exception as err:
        _learner_error(name, err, f"when the student returned {where} was run on a batch")
    finally:
        student.train(was_training)
    if not close(got, expected, rtol=1e-4, atol=1e-5):
        fail(f"`{name}`: the student's outputs differ from a correct layer copy's {where} (logits {fmt(got[0])} vs "
             f"{fmt(expected[0])} for the first example) although its layers, embeddings, pooler and classifier match: "
             "check the rest of its config (copy the teacher's config and change only num_hidden_layers).")
