"""Unit tests for course_utils.training.loops: the KD-capable classifier loop on the digits MLPs (learns, is seeded,
its checks), predictions and accuracy of a model; and the CNN loops on random images (FitNets stage 1, KD with
attention transfer)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from course_utils.evaluation import metrics
from course_utils.training import loops
from course_utils.vision import digits
from course_utils.vision.fashion_mnist import make_cnn

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data():
    return digits.load_digits_splits(seed=0)


# ============================================================================================ digits MLPs
def test_training_learns_and_is_reproducible(data):
    def run():
        m = digits.make_mlp((32,), seed=0)
        hist = loops.train_classifier(m, data.x_train, data.y_train, epochs=5, lr=3e-3, seed=0)
        return m, hist

    m1, h1 = run()
    _, h2 = run()
    assert h1 == h2 and h1[-1] < h1[0]
    assert loops.model_accuracy(m1, data.x_test, data.y_test) > 0.85


def test_kd_training_path(data):
    teacher = digits.make_mlp((64,), seed=0)
    loops.train_classifier(teacher, data.x_train, data.y_train, epochs=5, lr=3e-3)
    t_logits = loops.predict_logits(teacher, data.x_train)
    student = digits.make_mlp((16,), seed=1)
    loops.train_classifier(student, data.x_train, None, epochs=5, lr=3e-3, teacher_logits=t_logits,
                            temperature=4.0, alpha_kd=1.0)
    agreement = metrics.accuracy(loops.predict_logits(student, data.x_test),
                                loops.predict_logits(teacher, data.x_test).argmax(-1))
    assert agreement > 0.8


def test_training_validation(data):
    m = digits.make_mlp((8,))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        loops.train_classifier(m, data.x_train, data.y_train, alpha_kd=0.5)
    with pytest.raises(ValueError, match="alpha_kd=1"):
        loops.train_classifier(m, data.x_train, None, teacher_logits=torch.zeros(1257, 10), alpha_kd=0.5)
    with pytest.raises(ValueError, match="rows"):
        loops.train_classifier(m, data.x_train, data.y_train[:10])
    with pytest.raises(ValueError, match="temperature"):
        loops.train_classifier(m, data.x_train, data.y_train, temperature=0)


def test_accuracy_of_logits_and_of_a_model(data):
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 0])) == 0.5
    with pytest.raises(ValueError, match="labels"):
        metrics.accuracy(logits, torch.tensor([0]))
    model = digits.make_mlp((), seed=0)
    assert loops.model_accuracy(model, data.x_test, data.y_test) == metrics.accuracy(
        loops.predict_logits(model, data.x_test), data.y_test)
    with pytest.raises(TypeError, match="evaluation.metrics.accuracy"):
        loops.model_accuracy(logits, data.x_test, data.y_test)
    with pytest.raises(ValueError, match="one label per input"):
        loops.model_accuracy(model, data.x_test, data.y_test[:-1])


# ===================================================================================================== CNNs
@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (48,), generator=gen)
    return x, y


def test_fitnets_stage1_trains_only_the_guided_blocks(images):
    x, _ = images
    teacher, student = make_cnn((8, 16), seed=0).eval(), make_cnn((4, 8, 8), seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    regressor, history = loops.fitnets_stage1(student, teacher, x, student_block=0, teacher_block=0, epochs=3,
                                           lr=1e-2, batch_size=16, seed=0)
    assert isinstance(regressor, nn.Conv2d) and regressor.in_channels == 4 and regressor.out_channels == 8
    assert len(history) == 3 and history[-1] < history[0]
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("blocks.0.") for k in changed)


def test_fitnets_stage1_errors(images):
    x, _ = images
    teacher, student = make_cnn((8, 16), seed=0), make_cnn((4, 8), seed=1)
    with pytest.raises(ValueError, match="same resolution"):
        loops.fitnets_stage1(student, teacher, x, student_block=0, teacher_block=1)
    with pytest.raises(ValueError, match="out of range"):
        loops.fitnets_stage1(student, teacher, x, student_block=2, teacher_block=0)
    with pytest.raises(TypeError, match="features"):
        loops.fitnets_stage1(nn.Linear(2, 2), teacher, x, student_block=0, teacher_block=0)
    with pytest.raises(ValueError, match="images"):
        loops.fitnets_stage1(student, teacher, x[:, 0], student_block=0, teacher_block=0)


def test_train_cnn_with_kd_and_attention_transfer(images):
    x, y = images
    teacher = make_cnn((8, 16), seed=0)
    loops.train_cnn(teacher, x, y, epochs=2, batch_size=16, seed=0)
    student = make_cnn((4, 8), seed=1)
    history = loops.train_cnn(student, x, y, teacher=teacher, alpha_kd=0.5, at_pairs=[(0, 0), (1, 1)], at_weight=100.0,
                           epochs=3, lr=1e-2, batch_size=16, seed=0)
    assert len(history) == 3 and all(np.isfinite(history))
    acc = loops.model_accuracy(student, x, y)
    assert 0.0 <= acc <= 1.0 and not student.training
    a = make_cnn((4, 8), seed=1)
    b = make_cnn((4, 8), seed=1)
    loops.train_cnn(a, x, y, epochs=1, batch_size=16, seed=3)
    loops.train_cnn(b, x, y, epochs=1, batch_size=16, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values())), "not seeded"


@pytest.mark.parametrize("kw, error, match", [
    (dict(alpha_kd=0.5), ValueError, "needs a teacher"),
    (dict(at_weight=1.0, teacher="t"), ValueError, "needs at_pairs"),
    (dict(alpha_kd=1.5, teacher="t"), ValueError, "alpha_kd"),
    (dict(at_weight=-1.0), ValueError, "≥ 0"),
])
def test_train_cnn_errors(images, kw, error, match):
    x, y = images
    if kw.get("teacher") == "t":
        kw["teacher"] = make_cnn((8, 16), seed=0)
    with pytest.raises(error, match=match):
        loops.train_cnn(make_cnn((4, 8), seed=1), x, y, **kw)
    with pytest.raises(ValueError, match="labels"):
        loops.train_cnn(make_cnn((4, 8), seed=1), x, y[:3])
