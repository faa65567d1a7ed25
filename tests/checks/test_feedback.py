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


# ------------------------------------------------------------------------- report-only mode (the default)
WRONG_SOFTMAX = "def stable_softmax(logits, temperature=1.0):\n    return torch.softmax(logits, dim=-1)\n"
RIGHT_SOFTMAX = ("def stable_softmax(logits, temperature=1.0):\n"
                 "    z = logits / temperature\n"
                 "    z = z - z.max(dim=-1, keepdim=True).values\n"
                 "    return z.exp() / z.exp().sum(dim=-1, keepdim=True)\n")


def test_by_default_a_failed_check_reports_and_run_all_goes_on(shell, monkeypatch):
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "0")
    with capture_output() as captured:
        result = shell.run_cell(WRONG_SOFTMAX + "ok = course_utils.checks.check_stable_softmax(stable_softmax)")
    assert result.error_in_exec is None and shell.user_ns["ok"] is False
    assert captured.stdout.startswith("✘") and "Traceback" not in captured.stdout + captured.stderr


def test_a_bad_strict_setting_says_what_to_use(monkeypatch):
    from course_utils.checks import _core

    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "yes")
    with pytest.raises(ValueError, match="use 1"):
        _core.strict_checks()


def _pick(shell, code: str) -> tuple[object, str]:
    with capture_output() as captured:
        result = shell.run_cell(code + "picked = course_utils.checks.yours_or_reference(stable_softmax, "
                                "reference_softmax, check=course_utils.checks.check_stable_softmax)")
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return shell.user_ns["picked"], captured.stdout


def test_yours_or_reference_trains_with_yours_once_it_passes(shell):
    shell.run_cell("reference_softmax = lambda logits, temperature=1.0: torch.softmax(logits / temperature, -1)")
    picked, out = _pick(shell, RIGHT_SOFTMAX)
    assert picked is shell.user_ns["stable_softmax"]
    assert out.splitlines() == ["✔ your `stable_softmax` passed check_stable_softmax: the cells below use yours"]


def test_yours_or_reference_falls_back_in_one_line(shell, monkeypatch):
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "0")
    shell.run_cell("reference_softmax = lambda logits, temperature=1.0: torch.softmax(logits / temperature, -1)")
    for stub in (WRONG_SOFTMAX, "def stable_softmax(logits, temperature=1.0):\n    raise NotImplementedError('x')\n"):
        picked, out = _pick(shell, stub)
        assert picked is shell.user_ns["reference_softmax"]
        assert len(out.splitlines()) == 1 and "the cells below use the course's reference implementation" in out, out


def test_yours_or_reference_fails_the_suite_in_strict_mode(shell):
    shell.run_cell("reference_softmax = lambda logits, temperature=1.0: torch.softmax(logits / temperature, -1)")
    with pytest.raises(AssertionError):
        _pick(shell, WRONG_SOFTMAX)


def test_yours_or_reference_rejects_mismatched_arguments():
    from course_utils.checks import check_stable_softmax, yours_or_reference

    with pytest.raises(TypeError, match="check= must be"):
        yours_or_reference(len, len, check="check_stable_softmax")
    with pytest.raises(TypeError, match="tuples of the same length"):
        yours_or_reference((len, len), len, check=check_stable_softmax)
