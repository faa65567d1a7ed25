"""Fixtures shared by the checker tests (course_utils.checks)."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from course_utils.checks import CheckFailed


def _assert_fails(check: Callable, fn: Callable, *keywords: str, capsys=None) -> str:
    """Run ``check(fn)``, expect CheckFailed whose message contains every keyword (case-insensitive); with ``capsys``,
    the checker must also have printed the message after a ✘."""
    with pytest.raises(CheckFailed) as info:
        check(fn)
    message = str(info.value)
    for keyword in keywords:
        assert keyword.lower() in message.lower(), f"{keyword!r} not in diagnosis: {message}"
    if capsys is not None:
        assert "✘ " + message in capsys.readouterr().out
    return message


@pytest.fixture
def assert_fails():
    """``assert_fails(check, fn, *keywords, capsys=None)``: the diagnosis of a wrong ``fn``, checked for keywords."""
    return _assert_fails
