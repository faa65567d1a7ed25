"""What a learner sees in Jupyter when a check fails: the ✘ diagnosis, not a traceback through course_utils."""
from __future__ import annotations

import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance(colors="nocolor")
    ip.run_cell("import torch\nimport course_utils.checks")
    return ip


def _run(shell, code: str) -> list[str]:
    with capture_output() as captured:
        result = shell.run_cell(code)
    assert isinstance(result.error_in_exec, AssertionError)  # the check still fails the cell (nbval, "Run all")
    return [line for line in (captured.stdout + captured.stderr).splitlines() if line.strip()]


def test_a_wrong_answer_shows_the_diagnosis_alone(shell):
    lines = _run(shell, "def stable_softmax(logits, temperature=1.0):\n"
                        "    return torch.softmax(logits, dim=-1)\n"
                        "course_utils.checks.check_stable_softmax(stable_softmax)")
    assert 1 <= len(lines) <= 5 and lines[0].startswith("✘"), lines
    assert not any("Traceback" in line or "course_utils/" in line or "File " in line for line in lines), lines


def test_a_crash_in_the_learners_code_shows_their_line_only(shell):
    lines = _run(shell, "def stable_softmax(logits, temperature=1.0):\n"
                        "    return logits / 0 + undefined_name\n"
                        "course_utils.checks.check_stable_softmax(stable_softmax)")
    text = "\n".join(lines)
    assert lines[0].startswith("✘") and "Your code raised it here:" in text and "NameError" in text, text
    assert "undefined_name" in text and "course_utils/" not in text and "site-packages" not in text, text
    assert len(lines) <= 8, text
