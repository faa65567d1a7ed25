"""Unit tests for course_utils.vision.digits: the seeded data split and the MLP factory."""
from __future__ import annotations

import pytest
import torch

from course_utils.vision import digits


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
