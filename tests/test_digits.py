"""course_utils.digits: data split, MLP factory, the KD-capable training loop."""
from __future__ import annotations

import pytest
import torch

from course_utils import digits


@pytest.fixture(scope="module")
def data():
    return digits.load_digits_splits(seed=0)


def test_split_shapes_and_ranges(data):
    assert data.x_train.shape == (1257, 64) and data.x_test.shape == (540, 64)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert sorted(data.y_test.unique().tolist()) == list(range(10))
    again = digits.load_digits_splits(seed=0)
    assert torch.equal(again.x_test, data.x_test)


def test_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        digits.load_digits_splits(test_fraction=1.5)
    with pytest.raises(ValueError, match="positive integers"):
        digits.make_mlp((0,))
    with pytest.raises(ValueError, match="dropout"):
        digits.make_mlp((8,), dropout=1.0)


def test_make_mlp_is_seeded():
    a, b = digits.make_mlp((8,), seed=3), digits.make_mlp((8,), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a(torch.zeros(2, 64)).shape == (2, 10)


def test_training_learns_and_is_reproducible(data):
    def run():
        m = digits.make_mlp((32,), seed=0)
        hist = digits.train_classifier(m, data.x_train, data.y_train, epochs=5, lr=3e-3, seed=0)
        return m, hist

    m1, h1 = run()
    _, h2 = run()
    assert h1 == h2 and h1[-1] < h1[0]
    assert digits.accuracy(m1, data.x_test, data.y_test) > 0.85


def test_kd_training_path(data):
    teacher = digits.make_mlp((64,), seed=0)
    digits.train_classifier(teacher, data.x_train, data.y_train, epochs=5, lr=3e-3)
    t_logits = digits.predict_logits(teacher, data.x_train)
    student = digits.make_mlp((16,), seed=1)
    digits.train_classifier(student, data.x_train, None, epochs=5, lr=3e-3, teacher_logits=t_logits,
                            temperature=4.0, alpha_kd=1.0)
    agreement = digits.accuracy(digits.predict_logits(student, data.x_test),
                                digits.predict_logits(teacher, data.x_test).argmax(-1))
    assert agreement > 0.8


def test_training_validation(data):
    m = digits.make_mlp((8,))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        digits.train_classifier(m, data.x_train, data.y_train, alpha_kd=0.5)
    with pytest.raises(ValueError, match="alpha_kd=1"):
        digits.train_classifier(m, data.x_train, None, teacher_logits=torch.zeros(1257, 10), alpha_kd=0.5)
    with pytest.raises(ValueError, match="rows"):
        digits.train_classifier(m, data.x_train, data.y_train[:10])
    with pytest.raises(ValueError, match="temperature"):
        digits.train_classifier(m, data.x_train, data.y_train, temperature=0)


def test_accuracy_forms(data):
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert digits.accuracy(logits, torch.tensor([0, 0])) == 0.5
    with pytest.raises(ValueError, match="labels"):
        digits.accuracy(logits, torch.tensor([0]))
    with pytest.raises(TypeError, match="needs the labels"):
        digits.accuracy(digits.make_mlp(()), data.x_test)
