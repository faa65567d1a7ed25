"""Classroom edition: the course's exercises as nbgrader assignments, autograded by the course's checkers.

Usage::

    python -m course_utils.classroom OUT_DIR            # every notebook of solutions/
    python -m course_utils.classroom OUT_DIR 02 03      # only these notebooks

writes an nbgrader course directory (docs/instructors.md walks an instructor through it)::

    OUT_DIR/nbgrader_config.py
    OUT_DIR/source/<NN_name>/<NN_name>.ipynb            one assignment per notebook

and prints the points of each assignment. From ``solutions/NN_*.ipynb`` (the source of truth) each source notebook
gets nbgrader's cell metadata:

* every code cell tagged ``exercise`` is a **solution cell**. Its ``# BEGIN SOLUTION: <hint>`` line becomes the hint
  as a comment followed by ``# BEGIN SOLUTION``: nbgrader replaces the region with one stub for every exercise
  (:data:`CODE_STUB`), so the per-exercise hint has to live outside it to reach the learner;
* every code cell tagged ``check`` is an **autograded test cell** worth :data:`POINTS` of its checker. Its call
  becomes ``assert course_utils.checks.check_x(x), …``: a checker only *reports* a failure (prints ✘, returns
  ``False``) unless ``KD_COURSE_STRICT_CHECKS=1``, and nbgrader gives zero only to a test cell that raises, so the
  ``assert`` makes a failed check cost its points whatever the grading machine's environment;
* every other cell is **locked** (read-only; nbgrader restores its source from the instructor's copy when grading);
* the code cells after the two set-up cells that are not exercises or tests are tagged :data:`SKIP_TAG`. When
  autograding, :class:`SkipWhenGrading` (registered by the generated ``nbgrader_config.py``) replaces them with a
  comment before nbgrader runs the notebook. That is fair: a score is the sum of the checkers' verdicts, and a
  checker tests the learner's function on its own fixed inputs, never on what the training cells produce (the
  notebook contract requires exercise and check cells to run given only the standard imports, and
  ``tests/test_nbtool.py`` runs them that way). It is what keeps grading fast: notebook 03 trains for minutes, its
  checkers take seconds. The learner still runs the whole notebook, training included, while working.

Points are stated once, in :data:`POINTS`; a checker missing from it stops the build with a message saying so.
:func:`solution_leaks` is the scan that a generated student release must pass: no line of a solution in it.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

from .nbtool import BEGIN_RE, END_RE, SOLUTIONS_DIR, clean, read, strip_solutions

try:  # nbconvert comes with the dev extra, as nbgrader does; the preprocessor below is an nbconvert one
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("course_utils.classroom needs nbconvert and nbgrader, which come with the course's dev extra: "
                      "pip install -e '.[dev]'") from err

__all__ = ["POINTS", "SKIP_TAG", "CODE_STUB", "SETUP_CELLS", "graded_test_source", "assignment_notebook",
           "nbgrader_config", "build_course", "SkipWhenGrading", "autograde_preprocessors", "solution_leaks", "main"]

POINTS: dict[str, int] = {
    # notebook 01
    "check_stable_softmax": 2,
    "check_entropy": 2,
    # notebook 02
    "check_soft_target_loss": 3,
    "check_kd_gradient": 2,
    "check_distillation_loss": 3,
    # notebook 03
    "check_kd_compute_loss": 4,
    "check_layer_copy_init": 3,
    # notebook 04
    "check_hint_loss": 4,
    "check_layer_mapping": 2,
    # notebook 05
    "check_causal_kd_loss": 4,
    "check_sft_example": 2,
    "check_rouge_l": 3,
    # notebook 06
    "check_expected_calibration_error": 3,
    "check_latency_benchmark": 3,
    # notebook 07
    "check_ensemble_soft_targets": 3,
    "check_mutual_learning_losses": 3,
    # notebook 08
    "check_on_policy_loss": 4,
    "check_score_tokens": 2,
}
"""Points of each exercise, by the checker its test cell calls. Weighted by the work an exercise asks for: a
formula is 2, a loss with its numerical traps 3, a function that wires models together (a ``Trainer``'s
``compute_loss``, a hint loss with its projection, a causal LM's KD loss) 4."""

SKIP_TAG = "skip-when-grading"
"""Cell tag: :class:`SkipWhenGrading` does not let the autograder run this cell (training runs, plots, tables)."""

CODE_STUB = 'raise NotImplementedError("write your code here: the comment above says what")'
"""What nbgrader writes in place of each solution region of the student release (``ClearSolutions.code_stub``).
A checker that meets it says "`fn` is not implemented yet — write your code here: the comment above says what"."""

SETUP_CELLS = 2
"""The first code cells, which the autograder always runs: ``nbtool.SETUP_CELL`` and the notebook's imports."""

_SKIPPED_SOURCE = (f"# Not run when grading ({SKIP_TAG}): the score depends only on the test cells, which check your "
                   "functions on their own inputs.")
_HINT_WIDTH = 116


def _nbgrader(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
              points: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
                            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def graded_test_source(check_source: str, points: int, where: str = "check cell") -> tuple[str, str]:
    """The autograded test cell made from a check cell: the checker's call behind an ``assert``.

    Args:
        check_source: the source of a cell tagged ``check``: one call of a ``check_*`` function (as
            ``course_utils.checks.check_x(x)`` or ``check_x(x)``), optionally ending in ``;``.
        points: what the test is worth, stated in the cell's comment.
        where: notebook and cell, for error messages.

    Returns:
        ``(checker_name, test_source)``.

    Raises:
        ValueError: the cell is not a single call of a ``check_*`` function.
    """
    try:
        tree = ast.parse(check_source)
    except SyntaxError as err:
        raise ValueError(f"{where}: the check cell is not valid Python ({err.msg}); it must be one call such as "
                         "course_utils.checks.check_x(x)") from err
    call = tree.body[0].value if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) else None
    func = call.func if isinstance(call, ast.Call) else None
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if not name.startswith("check_"):
        raise ValueError(f"{where}: a check cell must be exactly one call of a course_utils.checks.check_* function "
                         f"(e.g. course_utils.checks.check_x(x)), got {check_source.strip()[:80]!r}; move anything "
                         "else into a cell of its own")
    expression = ast.get_source_segment(check_source, call)
    # The comment is all a learner sees of the grading rules in the cell; it says why the assert is there.
    source = (f"# Test ({points} point{'s' if points != 1 else ''}): passes when the check prints ✔. A failed check "
              "prints ✘ and what to fix, then\n# this assert stops the cell, so the test scores 0 whether or not "
              "KD_COURSE_STRICT_CHECKS is set.\n"
              f'assert {expression}, "not passed yet: the ✘ line above says what to fix"')
    return name, source


def _hinted_solution_source(source: str, where: str) -> str:
    """Move each ``# BEGIN SOLUTION: hint`` hint to comment lines above a bare ``# BEGIN SOLUTION``."""
    strip_solutions(source, where)  # raises SolutionMarkerError on unbalanced or nested markers
    out = []
    for line in source.splitlines():
        begin = BEGIN_RE.match(line)
        if begin:
            indent, hint = begin.group("indent"), (begin.group("hint") or "").strip()
            if hint:
                out += textwrap.wrap(hint, width=_HINT_WIDTH, initial_indent=f"{indent}# ",
                                     subsequent_indent=f"{indent}# ", break_on_hyphens=False)
            line = f"{indent}# BEGIN SOLUTION"
        out.append(line)
    return "\n".join(out)


def _note(points: Mapping[str, int]) -> str:
    total = sum(points.values())
    items = ", ".join(f"`{name.removeprefix('check_')}` {p}" for name, p in points.items())
    return (f"> **Classroom edition (nbgrader): {total} points** — {items}.\n>\n"
            "> Write your code in place of each `raise NotImplementedError(...)`; the comment above it says what to "
            "write. The test cell after each exercise runs its checker: ✔ is full points, ✘ says what to fix and "
            "scores 0 (it stops *Run All* there: run the cells below with *Run All Below*).\n>\n"
            f"> When your notebook is graded, only the set-up cells, the exercise cells and the test cells run; the "
            f"others (tagged `{SKIP_TAG}`: training runs, plots) are skipped. So your functions must use only their "
            "arguments and what the set-up cells import — the checkers call them exactly that way.")


def assignment_notebook(nb: nbformat.NotebookNode, name: str = "notebook",
                        points: Mapping[str, int] | None = None) -> tuple[nbformat.NotebookNode, dict[str, int]]:
    """The nbgrader source version of a solution notebook.

    Args:
        nb: a solution notebook (``solutions/NN_*.ipynb``); it is not modified.
        name: its file name, for messages and grade ids.
        points: points by checker name; default :data:`POINTS`.

    Returns:
        ``(source_notebook, points_of_its_tests)``: the notebook without outputs, its cells carrying nbgrader
        metadata (see the module docstring), and the points of each of its test cells by checker name.

    Raises:
        ValueError: no exercise; an exercise cell without a solution region or not followed by a check cell; a check
            cell that is not one ``check_*`` call or whose checker has no points; solution markers outside an
            exercise cell (nbgrader would refuse the notebook).
        SolutionMarkerError: unbalanced solution markers (a ``ValueError`` too).
        TypeError: ``nb`` is not a notebook.
    """
    if not isinstance(nb, nbformat.NotebookNode) or "cells" not in nb:
        raise TypeError(f"nb must be a notebook read with nbformat (e.g. course_utils.nbtool.read(path)), "
                        f"got {type(nb).__name__}")
    points = POINTS if points is None else points
    out = clean(nb)
    out.metadata["kernelspec"]["language"] = "python"  # nbgrader picks the solution stub by this language
    tests: dict[str, int] = {}
    code_seen = 0
    cells = out.cells
    for index, cell in enumerate(cells):
        where = f"{name} cell {index}"
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            code_seen += 1
        if "exercise" in tags:
            if cell.cell_type != "code" or not any(BEGIN_RE.match(line) for line in cell.source.splitlines()):
                raise ValueError(f"{where}: an exercise cell must be a code cell with a '# BEGIN SOLUTION: <hint>' … "
                                 "'# END SOLUTION' region for the learner to fill in")
            if index + 1 >= len(cells) or "check" not in cells[index + 1].metadata.get("tags", []):
                raise ValueError(f"{where}: an exercise cell must be followed by its check cell (tagged 'check')")
            cell.source = _hinted_solution_source(cell.source, where)
            cell.metadata["nbgrader"] = _nbgrader(f"answer-{index:02d}", solution=True)
        elif "check" in tags:
            if index == 0 or "exercise" not in cells[index - 1].metadata.get("tags", []):
                raise ValueError(f"{where}: a check cell must come right after its exercise cell (tagged 'exercise')")
            checker = graded_test_source(cell.source, 0, where)[0]
            if checker not in points:
                raise ValueError(f"{where}: {checker} has no points; add it to POINTS in course_utils/classroom.py")
            if checker in tests:
                raise ValueError(f"{where}: {checker} is called by two check cells; give each exercise its own checker")
            value = points[checker]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"points of {checker} must be a positive whole number, got {value!r}")
            _, cell.source = graded_test_source(cell.source, value, where)
            tests[checker] = value
            cell.metadata["nbgrader"] = _nbgrader(f"test-{checker.removeprefix('check_')}", grade=True,
                                                  locked=True, points=value)
        else:
            if "BEGIN SOLUTION" in cell.source:
                raise ValueError(f"{where}: solution markers outside a cell tagged 'exercise'; nbgrader would treat "
                                 "them as a solution region in a read-only cell")
            cell.metadata["nbgrader"] = _nbgrader(f"locked-{index:02d}", locked=True)
            if cell.cell_type == "code" and code_seen > SETUP_CELLS:
                cell.metadata["tags"] = tags + [SKIP_TAG]
        if cell.get("metadata", {}).get("tags") == []:
            del cell.metadata["tags"]
    if not tests:
        raise ValueError(f"{name} has no exercise (a cell tagged 'exercise' followed by one tagged 'check'); an "
                         "assignment needs at least one test")
    note = nbformat.v4.new_markdown_cell(_note(tests), id="classroom-edition-note")
    note.metadata["nbgrader"] = _nbgrader("classroom-edition-note", locked=True)
    cells.insert(1 if cells and cells[0].cell_type == "markdown" else 0, note)
    return out, tests


def nbgrader_config(course_id: str = "kd-course") -> str:
    """The text of the course directory's ``nbgrader_config.py``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", course_id or ""):
        raise ValueError(f"course_id must be letters, digits, '.', '_' or '-' (nbgrader uses it in paths), "
                         f"got {course_id!r}")
    return f'''\
"""nbgrader configuration of the knowledge-distillation course, written by `python -m course_utils.classroom`.

Run nbgrader from this directory (docs/instructors.md in the course repository). Regenerating the course directory
leaves this file alone once you have edited it.
"""
from course_utils.classroom import CODE_STUB, autograde_preprocessors

c = get_config()  # noqa: F821 - nbgrader defines get_config() when it reads this file

c.CourseDirectory.course_id = {course_id!r}
# One stub for every exercise; the hint of each stays in the comment lines nbgrader leaves above it.
c.ClearSolutions.code_stub = {{"python": CODE_STUB}}
# Cells tagged "skip-when-grading" (training runs, plots) are not run when autograding: a score depends only on
# the checkers, which test each function on their own inputs; grading a notebook takes seconds, not minutes.
c.Autograde.autograde_preprocessors = autograde_preprocessors()
# Per cell: a test cell takes seconds; the limit stops a submission that never returns, not a slow machine.
c.Execute.timeout = 300
'''


def build_course(out_dir: Path | str, solutions: Path | str = SOLUTIONS_DIR, numbers: Sequence[str] | None = None,
                 points: Mapping[str, int] | None = None) -> dict[str, dict[str, int]]:
    """Write an nbgrader course directory: ``source/<assignment>/<assignment>.ipynb`` per notebook and the config.

    Source notebooks are rewritten on every run (``solutions/`` is the source of truth); ``nbgrader_config.py`` is
    written only when it is missing, so an instructor's edits survive a rebuild.

    Args:
        out_dir: the course directory (created if missing).
        solutions: where the solution notebooks are.
        numbers: notebook numbers to include (``["02", "03"]``); default every notebook.
        points: points by checker name; default :data:`POINTS`.

    Returns:
        ``{assignment: {checker: points}}`` in notebook order.

    Raises:
        ValueError: ``out_dir`` is a file, ``solutions`` holds no notebook, or a number matches no notebook; and
            what :func:`assignment_notebook` raises.
    """
    out_dir, solutions = Path(out_dir), Path(solutions)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; give a directory for the nbgrader course (it is created if missing)")
    paths = sorted(solutions.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise ValueError(f"no solution notebook (NN_name.ipynb) in {solutions}")
    if numbers is not None:
        if isinstance(numbers, str):
            raise TypeError(f"numbers must be a list of notebook numbers such as ['02'], got the string {numbers!r}")
        wanted = [str(n).zfill(2) for n in numbers]
        unknown = sorted(set(wanted) - {p.name[:2] for p in paths})
        if unknown:
            raise ValueError(f"no solution notebook numbered {', '.join(unknown)} in {solutions}; there are "
                             f"{', '.join(p.name[:2] for p in paths)}")
        paths = [p for p in paths if p.name[:2] in wanted]
    built: dict[str, dict[str, int]] = {}
    for path in paths:
        notebook, tests = assignment_notebook(read(path), path.name, points)
        target = out_dir / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(nbformat.writes(notebook, version=4) + "\n", encoding="utf-8")
        built[path.stem] = tests
    config = out_dir / "nbgrader_config.py"
    if not config.exists():
        config.write_text(nbgrader_config(), encoding="utf-8")
    return built


class SkipWhenGrading(Preprocessor):
    """nbgrader autograde step: code cells tagged :data:`SKIP_TAG` are replaced by a comment, so they do not run.

    A test or solution cell is never skipped, whatever its tags: a tag is student-editable metadata, and a skipped
    test cell would not raise, i.e. would score full points. Skipping any other cell can only cost its author.
    """

    enabled = Bool(True, help="whether nbgrader uses this preprocessor").tag(config=True)

    def preprocess_cell(self, cell: nbformat.NotebookNode, resources: dict[str, Any],
                        index: int) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
        grading = cell.get("metadata", {}).get("nbgrader", {})
        if (cell.cell_type == "code" and SKIP_TAG in cell.get("metadata", {}).get("tags", [])
                and not grading.get("grade") and not grading.get("solution")):
            cell.source, cell.outputs = _SKIPPED_SOURCE, []
        return cell, resources


def autograde_preprocessors() -> list[type]:
    """nbgrader's autograde steps with :class:`SkipWhenGrading` first (before the notebook is executed)."""
    from nbgrader.converters import Autograde

    return [SkipWhenGrading, *Autograde.class_traits()["autograde_preprocessors"].default()]


def _solution_lines(source: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if BEGIN_RE.match(line) or (not inside and "BEGIN SOLUTION" in line):
            inside = True
        elif END_RE.match(line):
            inside = False
        elif inside:
            code = " ".join(line.split("  #")[0].split())
            if len(code) >= 12 and not code.startswith("#"):
                lines.append(code)
    return lines


def _code_lines(nb: nbformat.NotebookNode, outside_solutions: bool) -> Iterable[str]:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        inside = False
        for line in cell.source.splitlines():
            if outside_solutions and "BEGIN SOLUTION" in line:
                inside = True
            elif outside_solutions and END_RE.match(line):
                inside = False
            elif not inside:
                yield " ".join(line.split())


def solution_leaks(source: nbformat.NotebookNode, release: nbformat.NotebookNode) -> list[str]:
    """The lines of ``source``'s solution regions that a student ``release`` of it still contains.

    The scan of ``tests/test_nbtool.py`` for exercise notebooks: a solution line is a code line of at least 12
    characters (comments stripped, whitespace normalised); it leaks when a line of the release contains it. A
    line that the source also has outside its solution regions (e.g. in a later cell) is not a leak.

    Returns:
        The leaked lines, in source order (empty: the release is clean); ``["BEGIN SOLUTION marker"]`` first when a
        solution marker survived.
    """
    for nb, what in ((source, "source"), (release, "release")):
        if not isinstance(nb, nbformat.NotebookNode) or "cells" not in nb:
            raise TypeError(f"{what} must be a notebook read with nbformat, got {type(nb).__name__}")
    allowed = set(_code_lines(source, outside_solutions=True))
    released = list(_code_lines(release, outside_solutions=False))
    leaks = ["BEGIN SOLUTION marker"] if any("BEGIN SOLUTION" in line for line in released) else []
    for cell in source.cells:
        if cell.cell_type == "code":
            for line in _solution_lines(cell.source):
                if line not in allowed and line not in leaks and any(line in text for text in released):
                    leaks.append(line)
    return leaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.classroom", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="the nbgrader course directory to write (created if missing)")
    parser.add_argument("numbers", nargs="*", help="notebook numbers to include, e.g. 02 03 (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        built = build_course(args.out_dir, numbers=args.numbers or None)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for assignment, tests in built.items():
        items = ", ".join(f"{name.removeprefix('check_')} {p}" for name, p in tests.items())
        print(f"{assignment}: {sum(tests.values())} points ({items})")
    print(f"total: {sum(sum(t.values()) for t in built.values())} points in {len(built)} assignments, written to "
          f"{args.out_dir}/source/; next: cd {args.out_dir} && nbgrader generate_assignment <assignment>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
