"""Tests for the notebook-03 checkers in ``course_utils.checks.bert``: ``check_kd_compute_loss`` and
``check_layer_copy_init``.

As in ``test_basics_checks.py``: correct implementations pass; an unsolved exercise gives "not implemented" with its
hint; every known mistake fails with a ``CheckFailed`` whose message names it; a wrong argument raises ``TypeError``.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import checks
from course_utils.kd import losses
from course_utils.text import bert

Trainer = pytest.importorskip("transformers").Trainer

HINT = "pop the labels, run both models, combine CE and KD (hint text 43)"
KEYS = ("input_ids", "attention_mask", "token_type_ids")


pytestmark = pytest.mark.usefixtures("single_thread")


# ===================================================================================== KD compute_loss
def kd_loss(z, v, y, t, a):
    return (1 - a) * F.cross_entropy(z, y) + a * t * t * F.kl_div(
        F.log_softmax(z / t, -1), F.softmax(v / t, -1), reduction="batchmean")


class KDTrainer(Trainer):
    """The notebook's solution."""

    def __init__(self, *args, teacher_model=None, temperature=2.0, alpha_kd=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher_model.eval().requires_grad_(False)
        self.temperature, self.alpha_kd = temperature, alpha_kd

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        student_outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                token_type_ids=inputs["token_type_ids"])
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          token_type_ids=inputs["token_type_ids"]).logits
        loss = kd_loss(student_outputs.logits, teacher_logits, labels, self.temperature, self.alpha_kd)
        return (loss, student_outputs) if return_outputs else loss


def compute_loss_with(loss_fn, no_grad=True, keys=KEYS, student_no_grad=False):
    """A plain ``compute_loss(self, ...)`` whose loss is ``loss_fn(z, v, y, T, a)``."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        ctx = torch.no_grad() if student_no_grad else torch.enable_grad()
        with ctx:
            out = model(**{k: inputs[k] for k in keys})
        if no_grad:
            with torch.no_grad():
                v = self.teacher(**{k: inputs[k] for k in keys}).logits
        else:
            v = self.teacher(**{k: inputs[k] for k in keys}).logits
        loss = loss_fn(out.logits, v, labels, self.temperature, self.alpha_kd)
        return (loss, out) if return_outputs else loss

    return compute_loss


def _kl(first, target, reduction="batchmean"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(first, target, reduction=reduction)


def test_kd_compute_loss_correct(capsys):
    assert checks.check_kd_compute_loss(KDTrainer) is True
    out = capsys.readouterr().out
    assert out.startswith("✔ `KDTrainer.compute_loss` is correct")


def test_kd_compute_loss_alternatives_pass():
    # a plain function, **inputs without labels, pop, course_utils' loss

    def f(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        out = model(**inputs)
        with torch.no_grad():
            v = self.teacher(**inputs).logits
        loss = losses.distillation_loss(out.logits, v, labels, self.temperature, self.alpha_kd).loss
        return (loss, out) if return_outputs else loss

    assert checks.check_kd_compute_loss(f)

    class Positional(Trainer):  # the models called positionally, torch.inference_mode for the teacher
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            args = (inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
            out = model(*args)
            with torch.inference_mode():
                v = self.teacher(*args).logits.clone()
            t, a = self.temperature, self.alpha_kd
            loss = (1 - a) * F.cross_entropy(out.logits, inputs["labels"]) + a * t**2 * F.kl_div(
                F.log_softmax(out.logits / t, -1), F.log_softmax(v / t, -1), log_target=True, reduction="batchmean")
            return (loss, out) if return_outputs else loss

    assert checks.check_kd_compute_loss(Positional)


def test_kd_compute_loss_labels_in_a_forward_are_diagnosed_even_when_the_loss_is_right(assert_fails):
    """The exercise says: call the student *without* labels (it would compute its own CE); the same for the teacher."""

    class OwnCE(Trainer):  # labels fed to the student, its own CE used as the CE term: the right value
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            with torch.no_grad():
                v = self.teacher(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]).logits
            t, a = self.temperature, self.alpha_kd
            loss = (1 - a) * out.loss + a * t**2 * F.kl_div(F.log_softmax(out.logits / t, -1),
                                                             F.log_softmax(v / t, -1), log_target=True,
                                                             reduction="batchmean")
            return (loss, out) if return_outputs else loss

    assert_fails(checks.check_kd_compute_loss, OwnCE, "right loss", "passes `labels` to the student", "except 'labels'")

    def teacher_gets_labels(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**{k: inputs[k] for k in KEYS})
        with torch.no_grad():
            v = self.teacher(**inputs).logits
        loss = losses.distillation_loss(out.logits, v, inputs["labels"], self.temperature, self.alpha_kd).loss
        return (loss, out) if return_outputs else loss

    assert_fails(checks.check_kd_compute_loss, teacher_gets_labels, "passes `labels` to the teacher")


def test_kd_compute_loss_teacher_detached_instead_of_no_grad_is_diagnosed(assert_fails):
    """No gradient reaches the teacher, but its forward ran with autograd on: the graph was built and kept."""

    def detached(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        out = model(**inputs)
        v = self.teacher(**inputs).logits.detach()
        loss = losses.distillation_loss(out.logits, v, labels, self.temperature, self.alpha_kd).loss
        return (loss, out) if return_outputs else loss

    message = assert_fails(checks.check_kd_compute_loss, detached, "autograd on", "torch.no_grad()", "detaching")
    assert ".detach()" not in message or "teacher" in message


@pytest.mark.parametrize("loss_fn, keywords", [
    # log(softmax(·)) for the student in the KD term: -inf where its softmax underflows
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y) + a * t**2 * _kl(torch.log(F.softmax(z / t, -1)),
                                                                             F.softmax(v / t, -1)),
     ["very confident student", "KD term", "log(softmax"]),
    # the hard-label term as nll_loss(log(softmax(z)))
    (lambda z, v, y, t, a: (1 - a) * F.nll_loss(torch.log(F.softmax(z, -1)), y) + a * t**2 * _kl(
        F.log_softmax(z / t, -1), F.softmax(v / t, -1)), ["very confident student", "cross-entropy", "log(softmax"]),
    # the teacher's log-probabilities as log(softmax(·)) with log_target=True: 0 · (-inf) = NaN
    (lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y) + a * t**2 * F.kl_div(
        F.log_softmax(z / t, -1), torch.log(F.softmax(v / t, -1)), log_target=True, reduction="batchmean"),
     ["very confident teacher", "teacher's side", "log(softmax"]),
])
def test_kd_compute_loss_log_of_softmax_is_diagnosed(loss_fn, keywords, assert_fails):
    message = assert_fails(checks.check_kd_compute_loss, compute_loss_with(loss_fn), *keywords)
    assert "log_softmax" not in message


def test_kd_compute_loss_not_implemented(capsys, assert_fails):
    class Todo(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            raise NotImplementedError(HINT)

    message = assert_fails(checks.check_kd_compute_loss, Todo, capsys=capsys)
    assert message == f"`Todo.compute_loss` is not implemented yet — {HINT}"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        raise NotImplementedError(HINT)

    assert assert_fails(checks.check_kd_compute_loss, compute_loss).startswith(
        "`compute_loss` is not implemented yet — ")


def test_kd_compute_loss_type_errors():
    with pytest.raises(TypeError, match="Trainer class"):
        checks.check_kd_compute_loss(torch.zeros(3))
    with pytest.raises(TypeError):
        checks.check_kd_compute_loss(None)
    fake_trainer = type("FakeTrainer", (), {"compute_loss": lambda self: None, "args": None})()
    with pytest.raises(TypeError, match="not a trainer built from it"):
        checks.check_kd_compute_loss(fake_trainer)
    with pytest.raises(TypeError):  # a model is callable, but it is not the exercise
        checks.check_kd_compute_loss(nn.Linear(2, 2))


def test_kd_compute_loss_not_overridden(assert_fails):
    class Forgot(Trainer):
        pass

    assert_fails(checks.check_kd_compute_loss, Forgot, "does not override compute_loss", "indentation")
    assert_fails(checks.check_kd_compute_loss, type("Empty", (), {}), "no compute_loss method")


def _no_grad_teacher(loss_fn=kd_loss):
    return compute_loss_with(loss_fn, no_grad=False)


def _model_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    out = model(**inputs)  # labels included: out.loss is the model's own CE
    with torch.no_grad():
        self.teacher(**{k: inputs[k] for k in KEYS})
    return (out.loss, out) if return_outputs else out.loss


def _no_teacher(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    out = model(**inputs)
    return (out.loss, out) if return_outputs else out.loss


def _returns_loss_only(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    return compute_loss_with(kd_loss)(self, model, inputs)


def _returns_logits(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    out = compute_loss_with(kd_loss)(self, model, inputs, return_outputs=True)
    return (out[0], out[1].logits) if return_outputs else out[0]


def _returns_teacher_outputs(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    loss = compute_loss_with(kd_loss)(self, model, dict(inputs))
    if not return_outputs:
        return loss
    with torch.no_grad():
        return loss, self.teacher(**{k: inputs[k] for k in KEYS})


def _always_tuple(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    return compute_loss_with(kd_loss)(self, model, inputs, return_outputs=True)


def _item(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    return compute_loss_with(kd_loss)(self, model, inputs).item()


def _wrong_attribute(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    return self.teacher_model(**inputs)


def _old_signature(self, model, inputs, return_outputs=False):
    return compute_loss_with(kd_loss)(self, model, inputs, return_outputs)


def _never_student(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    with torch.no_grad():
        v = self.teacher(**{k: inputs[k] for k in KEYS}).logits
    z = v * 0.5
    return kd_loss(z, v, inputs["labels"], self.temperature, self.alpha_kd)


KD_WRONG = [
    (compute_loss_with(lambda z, v, y, t, a: kd_loss(z, F.softmax(v, -1), y, t, a)), ["double softmax"]),
    (compute_loss_with(lambda z, v, y, t, a: kd_loss(z, v, y, t, a) - a * (1 - 1 / t**2) * kd_loss(z, v, y, t, 1.0)),
     ["T²", "missing"]),
    (compute_loss_with(lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y)
                       + a * t * t * _kl(F.log_softmax(z / t, -1), F.softmax(v / t, -1), "mean")),
     ["batchmean", "reduction=\"mean\""]),
    (compute_loss_with(lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y)
                       + a * t * t * _kl(F.log_softmax(v / t, -1), F.softmax(z / t, -1))), ["swapped", "reverse"]),
    (compute_loss_with(lambda z, v, y, t, a: a * F.cross_entropy(z, y)
                       + (1 - a) * kd_loss(z, v, y, t, 1.0)), ["wrong term", "alpha"]),
    (compute_loss_with(lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z / t, y)
                       + a * kd_loss(z, v, y, t, 1.0)), ["temperature T", "T = 1"]),
    (compute_loss_with(lambda z, v, y, t, a: (1 - a) * F.cross_entropy(z, y)
                       + a * _kl(F.log_softmax(v / t, -1), F.softmax(z / t, -1))), ["2 problems", "T²", "reverse"]),
    (compute_loss_with(lambda z, v, y, t, a: kd_loss(z, v, y, t, a) + 0.01 * a), ["KD term"]),
    (compute_loss_with(lambda z, v, y, t, a: kd_loss(z, v, y, t, a) + 0.01 * (1 - a)), ["CE term"]),
    (compute_loss_with(kd_loss, keys=("input_ids",)), ["attention_mask", "student"]),
    (compute_loss_with(kd_loss, keys=("input_ids", "attention_mask")), ["token_type_ids"]),
    (_no_grad_teacher(), ["gradients flow into the teacher", "torch.no_grad()"]),
    (compute_loss_with(kd_loss, student_no_grad=True), ["no gradient", "student"]),
    (_model_loss, ["outputs.loss", "labels went into the student's forward", "KD term is missing"]),
    (_no_teacher, ["never runs the teacher", "outputs.loss"]),
    (_never_student, ["never runs the student"]),
    (_returns_loss_only, ["single tensor", "return_outputs=True", "(loss, student_outputs)"]),
    (_returns_logits, ["second item", "whole output object"]),
    (_returns_teacher_outputs, ["teacher's outputs"]),
    (_always_tuple, ["return_outputs=False", "return only the loss"]),
    (_item, ["Python float", ".item()"]),
    (_wrong_attribute, ["AttributeError", "teacher_model", "self.teacher, self.temperature and self.alpha_kd"]),
    (_old_signature, ["num_items_in_batch", "keep the signature"]),
]


@pytest.mark.parametrize("wrong, keywords", KD_WRONG)
def test_kd_compute_loss_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_kd_compute_loss, wrong, *keywords, capsys=capsys)


def test_kd_compute_loss_diagnoses_in_a_class(assert_fails):
    class KDTrainerTwoMistakes(KDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.temperature = self.temperature  # attributes set by the checker are readable and writable
            return compute_loss_with(lambda z, v, y, t, a: a * F.cross_entropy(z / t, y)
                                     + (1 - a) * kd_loss(z, v, y, t, 1.0))(self, model, inputs, return_outputs)

    message = assert_fails(checks.check_kd_compute_loss, KDTrainerTwoMistakes, "2 problems", "wrong term",
                           "temperature T")
    assert message.startswith("`KDTrainerTwoMistakes.compute_loss` has 2 problems")


def test_kd_compute_loss_attribute_error_in_a_class(assert_fails):
    class UsesSelfModel(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return self.model(**inputs).loss

    message = assert_fails(checks.check_kd_compute_loss, UsesSelfModel, "AttributeError", "'model'",
                           "the student is the `model` argument")
    assert message.startswith("`UsesSelfModel.compute_loss` raised AttributeError")


def test_kd_compute_loss_loss_with_wrong_shape(assert_fails):
    def per_row(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**{k: inputs[k] for k in KEYS})
        return F.cross_entropy(out.logits, inputs["labels"], reduction="none")

    assert_fails(checks.check_kd_compute_loss, per_row, "shape (5,)", "single number")


def test_kd_compute_loss_works_inside_no_grad_and_keeps_rng():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    before = torch.get_num_threads()
    with torch.no_grad():
        assert checks.check_kd_compute_loss(KDTrainer)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == before


# ===================================================================================== layer-copy init
def init_student(teacher, layers):
    """The notebook's solution: a deep copy, keeping only the chosen layers."""
    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = nn.ModuleList([student.bert.encoder.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    return student


def init_student_fresh(teacher, layers):
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for i, j in enumerate(layers):
        student.bert.encoder.layer[i].load_state_dict(teacher.bert.encoder.layer[j].state_dict())
    student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student


def _skipping(part):
    """init_student_fresh without copying ``part`` (left randomly initialised)."""

    def f(teacher, layers):
        config = copy.deepcopy(teacher.config)
        config.num_hidden_layers = len(layers)
        student = type(teacher)(config)
        pairs = [("embeddings", student.bert.embeddings, teacher.bert.embeddings),
                 ("pooler", student.bert.pooler, teacher.bert.pooler),
                 ("classifier", student.classifier, teacher.classifier)]
        pairs += [(f"layer{i}", student.bert.encoder.layer[i], teacher.bert.encoder.layer[j])
                  for i, j in enumerate(layers)]
        for name, s, t in pairs:
            if name != part:
                s.load_state_dict(t.state_dict())
        return student

    return f


def _with_layers(order):
    def f(teacher, layers):
        return init_student_fresh(teacher, order(list(layers)))

    return f


def _config_not_updated(teacher, layers):
    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = nn.ModuleList([student.bert.encoder.layer[i] for i in layers])
    return student


def _layers_not_removed(teacher, layers):
    student = copy.deepcopy(teacher)
    student.config.num_hidden_layers = len(layers)
    return student


def _shared_modules(teacher, layers):
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    student.bert.embeddings = teacher.bert.embeddings
    student.bert.encoder.layer = nn.ModuleList([teacher.bert.encoder.layer[i] for i in layers])
    student.bert.pooler = teacher.bert.pooler
    student.classifier = teacher.classifier
    return student


def _shared_config(teacher, layers):
    config = teacher.config
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    student.load_state_dict(_copied_state(teacher, layers))
    return student


def _copied_state(teacher, layers):
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith("bert.encoder.layer."):
            j, rest = key[len("bert.encoder.layer."):].split(".", 1)
            if int(j) in layers:
                state[f"bert.encoder.layer.{layers.index(int(j))}.{rest}"] = value.clone()
        else:
            state[key] = value.clone()
    return state


def _teacher_trimmed(teacher, layers):
    teacher.bert.encoder.layer = nn.ModuleList([teacher.bert.encoder.layer[i] for i in layers])
    return copy.deepcopy(teacher)


def _teacher_returned(teacher, layers):
    teacher.bert.encoder.layer = nn.ModuleList([teacher.bert.encoder.layer[i] for i in layers])
    teacher.config.num_hidden_layers = len(layers)
    return teacher


def _wrong_direction(teacher, layers):
    student = init_student_fresh(teacher, layers)
    teacher.classifier.load_state_dict(type(teacher)(teacher.config).classifier.state_dict())
    return student


def _encoder_only(teacher, layers):
    return init_student_fresh(teacher, layers).bert


def _head_config(teacher, layers):  # a different number of labels
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    config.num_labels = 2
    return type(teacher)(config)


def _random_last_layer(teacher, layers):
    return _skipping(f"layer{len(layers) - 1}")(teacher, layers)


def test_layer_copy_init_correct(capsys):
    assert checks.check_layer_copy_init(init_student) is True
    assert capsys.readouterr().out.startswith("✔ `init_student` is correct")
    assert checks.check_layer_copy_init(init_student_fresh)
    assert checks.check_layer_copy_init(bert.init_student_from_teacher)


def test_layer_copy_init_not_implemented(capsys, assert_fails):
    def init_student(teacher, layers):
        raise NotImplementedError(HINT)

    message = assert_fails(checks.check_layer_copy_init, init_student, capsys=capsys)
    assert message == f"`init_student` is not implemented yet — {HINT}"


def test_layer_copy_init_type_errors():
    with pytest.raises(TypeError, match="function itself"):
        checks.check_layer_copy_init(None)
    with pytest.raises(TypeError, match="function itself"):
        checks.check_layer_copy_init(nn.Linear(2, 2))  # the result of calling it


LAYER_WRONG = [
    (_with_layers(lambda layers: list(range(len(layers)))), ["first", "instead of the listed ones", "range"]),
    (_with_layers(lambda layers: layers[::-1]), ["wrong order"]),
    (_skipping("embeddings"), ["embeddings"]),
    (_skipping("pooler"), ["pooler"]),
    (_skipping("classifier"), ["classifier"]),
    (_random_last_layer, ["not a copy of any teacher layer"]),
    (_config_not_updated, ["num_hidden_layers is still 4"]),
    (_layers_not_removed, ["4 encoder layers", "len(layers)"]),
    (_shared_modules, ["shares", "would change the teacher", "clone"]),
    (_shared_config, ["changed the teacher's config", "deepcopy"]),
    (_teacher_trimmed, ["modified the teacher", "now has 2 layers"]),
    (_teacher_returned, ["teacher object itself"]),
    (_wrong_direction, ["changed the teacher's weights", "wrong direction"]),
    (_encoder_only, ["BertModel", "teacher's class"]),
    (_head_config, ["config differs", "num_labels"]),
    (lambda teacher, layers: None, ["return"]),
    (lambda teacher, layers: teacher.state_dict(), ["must return the student model"]),
    (lambda teacher, layers: teacher.bert.encoder.layer[layers[5]], ["IndexError", "init_student(teacher, [0, 2])"]),
]


@pytest.mark.parametrize("wrong, keywords", LAYER_WRONG)
def test_layer_copy_init_diagnoses(wrong, keywords, capsys, assert_fails):
    assert_fails(checks.check_layer_copy_init, wrong, *keywords, capsys=capsys)


def test_layer_copy_init_first_layers_only_wrong_for_later_cases(assert_fails):
    """[0, 2] → [0, 1] is recognised, and so is [3] → [0] (a single layer)."""

    def first_k(teacher, layers):
        return init_student_fresh(teacher, list(range(len(layers))) if layers != [0, 2] else layers)

    assert_fails(checks.check_layer_copy_init, first_k, "first 2 teacher layer(s) [0, 1]")


def test_layer_copy_init_keeps_rng_and_threads():
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    before = torch.get_num_threads()
    checks.check_layer_copy_init(init_student_fresh)
    assert torch.equal(torch.rand(2), expected)
    assert torch.get_num_threads() == before


def test_exports():
    import course_utils

    assert course_utils.checks.check_kd_compute_loss is checks.check_kd_compute_loss
    assert "check_layer_copy_init" in checks.bert.__all__
