"""Unit tests for course_utils.core.claims: an assert normally, a printed line in the smoke run only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from course_utils.core.claims import SMOKE_PREFIX, claim


@pytest.fixture(autouse=True)
def no_smoke(monkeypatch):
    monkeypatch.delenv("KD_SMOKE", raising=False)


@pytest.mark.parametrize("condition", [True, np.bool_(True), bool(pd.Series([1, 2]).gt(0).all()),
                                       pd.Series([1, 2]).gt(0).all()])
def test_a_claim_that_holds_prints_nothing(condition, capsys, monkeypatch):
    claim(condition, "holds")
    monkeypatch.setenv("KD_SMOKE", "1")
    claim(condition, "holds")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("smoke", ["", "0"])
def test_a_failed_claim_raises_outside_the_smoke_run(smoke, monkeypatch, capsys):
    monkeypatch.setenv("KD_SMOKE", smoke)
    with pytest.raises(AssertionError, match="^KD beats hard labels$"):
        claim(False, "KD beats hard labels")
    with pytest.raises(AssertionError):
        claim(np.bool_(False), "numpy too")
    assert capsys.readouterr().out == ""


def test_a_failed_claim_is_reported_in_the_smoke_run(monkeypatch, capsys):
    monkeypatch.setenv("KD_SMOKE", "1")
    claim(False, "KD beats hard labels")
    claim(np.bool_(False), "on every seed")
    assert capsys.readouterr().out == f"{SMOKE_PREFIX}KD beats hard labels\n{SMOKE_PREFIX}on every seed\n"
    assert SMOKE_PREFIX == "not checked (smoke run): "


@pytest.mark.parametrize("condition", [1, 0.5, None, "yes", torch.tensor(True), np.array([True, False]),
                                       pd.Series([True])])
def test_condition_must_be_a_bool(condition):
    with pytest.raises(TypeError, match="condition must be a bool"):
        claim(condition, "x")


def test_message_must_be_a_non_empty_string():
    with pytest.raises(TypeError, match="message must be a string"):
        claim(True, 3)
    with pytest.raises(ValueError, match="message is empty"):
        claim(True, "  ")


def test_invalid_smoke_variable_is_reported(monkeypatch):
    monkeypatch.setenv("KD_SMOKE", "yes")
    with pytest.raises(ValueError, match="KD_SMOKE"):
        claim(False, "x")
