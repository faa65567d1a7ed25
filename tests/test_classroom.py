"""The classroom edition: nbgrader source notebooks from solutions/, and grading them with nbgrader itself.

Most tests work on toy notebooks and take milliseconds. ``test_nbgrader_grades_notebook_02`` runs nbgrader's own
``generate_assignment`` and ``autograde`` (two submissions of notebook 02) in a temporary course: about 25 s.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

from course_utils import classroom, nbtool
from course_utils.checks import CheckFailed

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
STANDARD_IMPORTS = "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\nimport course_utils\n"


# --------------------------------------------------------------------------------------------- test cells
def test_a_check_call_becomes_an_assert_worth_its_points():
    name, source = classroom.graded_test_source("course_utils.checks.check_entropy(entropy);", 2)
    assert name == "check_entropy"
    assert source.startswith("# Test (2 points)")
    assert source.splitlines()[-1].startswith("assert course_utils.checks.check_entropy(entropy), ")
    assert classroom.graded_test_source("check_entropy(entropy)", 1)[1].startswith("# Test (1 point)")


@pytest.mark.parametrize("source", [
    "course_utils.checks.check_entropy(entropy)\nprint('more')",   # two statements
    "x = course_utils.checks.check_entropy(entropy)",              # not a bare call
    "print(entropy)",                                              # not a checker
    "course_utils.checks.check_entropy(",                          # not Python
])
def test_a_check_cell_that_is_not_one_checker_call_is_refused(source):
    with pytest.raises(ValueError, match="check cell"):
        classroom.graded_test_source(source, 2, where="demo cell 3")


ENTROPY_STUB = "def entropy(probs):\n    raise NotImplementedError('sum -p log p over the last axis')\n"
ENTROPY = "def entropy(probs):\n    return -torch.special.xlogy(probs, probs).sum(-1)\n"


@pytest.mark.parametrize("strict", ["0", "1"])
def test_a_failed_check_makes_the_test_cell_raise_in_either_mode(strict, monkeypatch, capsys):
    # nbgrader scores a test cell 0 only when it raises; by default a checker only prints ✘ and returns False.
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", strict)
    _, test = classroom.graded_test_source("course_utils.checks.check_entropy(entropy)", 2)
    ns: dict = {}
    exec(STANDARD_IMPORTS + ENTROPY_STUB, ns)
    with pytest.raises(CheckFailed if strict == "1" else AssertionError, match="not implemented|not passed yet"):
        exec(test, ns)
    assert "✘ `entropy` is not implemented yet — sum -p log p" in capsys.readouterr().out


def test_a_passed_check_lets_the_test_cell_pass(monkeypatch, capsys):
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "0")
    _, test = classroom.graded_test_source("course_utils.checks.check_entropy(entropy)", 2)
    ns: dict = {}
    exec(STANDARD_IMPORTS + ENTROPY, ns)
    exec(test, ns)
    assert "✔" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- source notebooks
def _toy(*, check: str = "course_utils.checks.check_entropy(entropy)") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "venv-1", "display_name": "x", "language": "python"}}
    cells = [
        nbformat.v4.new_markdown_cell("# 99 · Demo\n\nObjectives."),
        nbformat.v4.new_code_cell(nbtool.SETUP_CELL),
        nbformat.v4.new_code_cell("import torch"),
        nbformat.v4.new_markdown_cell("Theory."),
        nbformat.v4.new_code_cell("def entropy(probs):\n    # BEGIN SOLUTION: sum -p log p over the last axis\n"
                                  "    return -torch.special.xlogy(probs, probs).sum(-1)\n    # END SOLUTION",
                                  metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell(check, metadata={"tags": ["check"]}),
        nbformat.v4.new_code_cell("train_for_minutes()"),
    ]
    cells[1].outputs = [nbformat.v4.new_output("stream", text="profile small\n")]
    cells[1].execution_count = 1
    nb.cells = cells
    return nb


def _roles(nb):
    return [(c.cell_type, c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"]["solution"],
             c.metadata["nbgrader"]["grade"], c.metadata["nbgrader"]["locked"], c.metadata.get("tags", []))
            for c in nb.cells]


def test_assignment_notebook_marks_each_cell_for_nbgrader():
    toy = _toy()
    source, tests = classroom.assignment_notebook(toy, "99_demo.ipynb", points={"check_entropy": 2})
    assert tests == {"check_entropy": 2}
    assert _roles(source) == [
        ("markdown", "locked-00", False, False, True, []),
        ("markdown", "classroom-edition-note", False, False, True, []),
        ("code", "locked-01", False, False, True, []),                        # set-up: runs when grading
        ("code", "locked-02", False, False, True, []),                        # imports: runs when grading
        ("markdown", "locked-03", False, False, True, []),
        ("code", "answer-04", True, False, False, ["exercise"]),
        ("code", "test-entropy", False, True, True, ["check"]),
        ("code", "locked-06", False, False, True, [classroom.SKIP_TAG]),      # training: skipped when grading
    ]
    assert source.cells[6].metadata["nbgrader"]["points"] == 2
    assert "2 points" in source.cells[1].source and "`entropy` 2" in source.cells[1].source
    # the hint moves above a bare marker, where nbgrader's stub leaves it for the learner
    assert source.cells[5].source.splitlines()[1:3] == ["    # sum -p log p over the last axis",
                                                        "    # BEGIN SOLUTION"]
    assert all(c.get("outputs", []) == [] for c in source.cells)
    assert source.metadata["kernelspec"]["language"] == "python"
    assert toy.cells[4].source.splitlines()[1].endswith("over the last axis"), "the input is not modified"


def test_every_solution_notebook_becomes_an_assignment_and_every_points_entry_is_used():
    used = {}
    for path in SOLUTIONS:
        source, tests = classroom.assignment_notebook(nbtool.read(path), path.name)
        assert tests, path.name
        used.update(tests)
        # the leak scan has teeth: the source itself, solutions in place, would leak every solution line
        assert len(classroom.solution_leaks(source, source)) > len(tests), path.name
    assert used == classroom.POINTS, "POINTS lists a checker no notebook calls, or misses one"


@pytest.mark.parametrize("change, message", [
    (lambda nb: nb.cells.pop(5), "followed by its check cell"),
    (lambda nb: nb.cells.pop(4), "right after its exercise cell"),
    (lambda nb: setattr(nb.cells[4], "source", "def entropy(p):\n    return p"), "BEGIN SOLUTION"),
    (lambda nb: setattr(nb.cells[3], "source", "Type # BEGIN SOLUTION here"), "outside a cell tagged 'exercise'"),
    (lambda nb: setattr(nb.cells[4], "source", "# BEGIN SOLUTION: x\nx = 1"), "never closed"),
    (lambda nb: setattr(nb.cells[5], "source", "course_utils.checks.check_typo(entropy)"), "add it to POINTS"),
    (lambda nb: [nb.cells.pop(5), nb.cells.pop(4)], "has no exercise"),
    (lambda nb: nb.cells.extend(copy_pair(nb)), "two check cells"),
])
def test_assignment_notebook_names_what_to_fix(change, message):
    nb = _toy()
    change(nb)
    with pytest.raises(ValueError, match=message):
        classroom.assignment_notebook(nb, "99_demo.ipynb", points={"check_entropy": 2})


def copy_pair(nb):
    return [nbformat.from_dict(nbformat.v4.new_code_cell(c.source, metadata=dict(c.metadata))) for c in nb.cells[4:6]]


@pytest.mark.parametrize("points", [0, -1, 1.5, True])
def test_points_must_be_positive_whole_numbers(points):
    with pytest.raises(ValueError, match="positive whole number"):
        classroom.assignment_notebook(_toy(), points={"check_entropy": points})


def test_assignment_notebook_wants_a_notebook():
    with pytest.raises(TypeError, match="nbformat"):
        classroom.assignment_notebook({"cells": []})


# ------------------------------------------------------------------------------------- the course directory
def test_build_course_writes_sources_and_a_config_it_then_leaves_alone(tmp_path, capsys):
    out = tmp_path / "course"
    built = classroom.build_course(out, numbers=["1", "02"])
    assert list(built) == ["01_softmax_temperature", "02_kd_loss_derivation"]
    assert sum(built["02_kd_loss_derivation"].values()) == 8
    source = out / "source" / "02_kd_loss_derivation" / "02_kd_loss_derivation.ipynb"
    assert nbtool.read(source).cells[1].id == "classroom-edition-note"
    config = out / "nbgrader_config.py"
    config.write_text(config.read_text() + "c.Execute.timeout = 600  # edited\n")
    classroom.build_course(out, numbers=["02"])
    assert config.read_text().endswith("# edited\n"), "an instructor's config survives a rebuild"

    assert classroom.main([str(tmp_path / "again"), "02"]) == 0
    assert "02_kd_loss_derivation: 8 points (soft_target_loss 3, kd_gradient 2, distillation_loss 3)" in \
        capsys.readouterr().out


def test_build_course_names_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="numbered 42"):
        classroom.build_course(tmp_path, numbers=["42"])
    with pytest.raises(TypeError, match="list of notebook numbers"):
        classroom.build_course(tmp_path, numbers="02")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        classroom.build_course(tmp_path / "file")
    with pytest.raises(ValueError, match="no solution notebook"):
        classroom.build_course(tmp_path / "out", solutions=tmp_path)
    assert classroom.main([str(tmp_path / "out"), "42"]) == 2
    assert "numbered 42" in capsys.readouterr().err


def test_the_config_registers_the_skip_step_and_the_stub():
    cfg = Config()
    exec(classroom.nbgrader_config("lab-2027"), {"get_config": lambda: cfg})
    assert cfg.CourseDirectory.course_id == "lab-2027"
    assert cfg.ClearSolutions.code_stub == {"python": classroom.CODE_STUB}
    steps = cfg.Autograde.autograde_preprocessors
    assert steps[0] is classroom.SkipWhenGrading and steps[1].__name__ == "Execute"
    with pytest.raises(ValueError, match="course_id"):
        classroom.nbgrader_config("my course")


def test_skip_when_grading_never_skips_a_test_or_an_answer():
    def cell(kind, **grading):
        c = nbformat.v4.new_code_cell("train()", metadata={"tags": [classroom.SKIP_TAG]})
        c.metadata["nbgrader"] = grading
        c.cell_type = kind
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [cell("code", locked=True), cell("code", grade=True, points=2), cell("code", solution=True),
                nbformat.v4.new_code_cell("train()")]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="old")]
    out, _ = classroom.SkipWhenGrading().preprocess(nb, {})
    assert out.cells[0].source.startswith("# Not run when grading") and out.cells[0].outputs == []
    assert [c.source for c in out.cells[1:]] == ["train()"] * 3


# --------------------------------------------------------------------------------------------- leak scan
def test_solution_leaks_finds_solution_lines_and_markers():
    source = _toy()
    release = nbtool.make_exercise(source, "99_demo.ipynb")
    assert classroom.solution_leaks(source, release) == []
    line = "return -torch.special.xlogy(probs, probs).sum(-1)"
    release.cells[5].source = f"def entropy(probs):\n    {line}  # pasted"
    assert classroom.solution_leaks(source, release) == [line]
    # a line the notebook also shows outside its solution regions is not a leak
    source.cells.append(nbformat.v4.new_code_cell(f"def entropy_again(probs):\n    {line}"))
    assert classroom.solution_leaks(source, release) == []
    release.cells[5].source = "# BEGIN SOLUTION"
    assert classroom.solution_leaks(source, release) == ["BEGIN SOLUTION marker"]
    with pytest.raises(TypeError, match="release"):
        classroom.solution_leaks(source, [])


# ---------------------------------------------------------------------------------------- nbgrader itself
def _nbgrader(course: Path, *args: str) -> float:
    """Run ``nbgrader ARGS`` in ``course``; return its wall time in seconds."""
    env = dict(os.environ)
    # nbgrader runs `alembic` (its database migrations) as a command: it must find the venv's scripts.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return time.perf_counter() - start


def test_nbgrader_grades_notebook_02(tmp_path, monkeypatch):
    # The checkers' default (report, do not raise): what a grader's machine has unless someone sets it.
    monkeypatch.setenv("KD_COURSE_STRICT_CHECKS", "0")
    name = "02_kd_loss_derivation"
    course = tmp_path / "course"
    points = classroom.build_course(course, numbers=["02"])[name]
    _nbgrader(course, "generate_assignment", name)

    source = nbtool.read(course / "source" / name / f"{name}.ipynb")
    release = nbtool.read(course / "release" / name / f"{name}.ipynb")
    assert classroom.solution_leaks(source, release) == [], "the student release contains solution code"
    assert sum(classroom.CODE_STUB in c.source for c in release.cells) == len(points)

    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    solved = nbformat.from_dict(release)
    for cell in solved.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers[cell.metadata["nbgrader"]["grade_id"]]   # a learner who solved everything
    for student, nb in (("solved", solved), ("untouched", release)):
        (course / "submitted" / student / name).mkdir(parents=True)
        nbformat.write(nb, str(course / "submitted" / student / name / f"{name}.ipynb"))
        seconds = _nbgrader(course, "autograde", name, "--student", student)
        assert seconds < 120, f"autograding one submission took {seconds:.0f} s, over the 2-minute budget"

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission(name, s).score for s in ("solved", "untouched")}
        max_score = gradebook.find_assignment(name).max_score
    assert max_score == sum(points.values()) == 8
    assert scores == {"solved": 8, "untouched": 0}

    graded = nbtool.read(course / "autograded" / "untouched" / name / f"{name}.ipynb")
    text = "\n".join(out.get("text", "") for c in graded.cells if c.cell_type == "code" for out in c.outputs)
    assert text.count("is not implemented yet") == len(points), "each test cell shows the checker's diagnosis"
    skipped = sum(c.source.startswith("# Not run when grading") for c in graded.cells)
    assert skipped == sum(classroom.SKIP_TAG in c.metadata.get("tags", []) for c in source.cells) > 20
