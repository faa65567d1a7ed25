"""The exercise generator, the sync between solutions/ and notebooks/, and the notebook contract."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from course_utils import nbtool

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
STANDARD_IMPORTS = (
    "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\nimport course_utils\n"
    "import course_utils.checks\n"
)


# ------------------------------------------------------------------------------------------ strip_solutions
def test_strip_solutions_keeps_indentation_and_hint():
    src = (
        "def f(x):\n"
        '    """Docstring stays."""\n'
        "    # BEGIN SOLUTION: subtract the max first\n"
        "    m = x.max()\n"
        "    return x - m\n"
        "    # END SOLUTION\n"
        "print('after')"
    )
    out = nbtool.strip_solutions(src)
    assert out == (
        "def f(x):\n"
        '    """Docstring stays."""\n'
        "    raise NotImplementedError('subtract the max first')\n"
        "print('after')"
    )
    ns: dict = {}
    exec(out, ns)  # the generated code is valid Python
    with pytest.raises(NotImplementedError, match="subtract the max"):
        ns["f"](1)


def test_strip_solutions_default_hint_and_quotes():
    out = nbtool.strip_solutions("# BEGIN SOLUTION\nx = 1\n# END SOLUTION")
    assert out == f"raise NotImplementedError({nbtool.DEFAULT_HINT!r})"
    tricky = nbtool.strip_solutions("# BEGIN SOLUTION: use 'dim=-1' and \"keepdim\"\nx = 1\n# END SOLUTION")
    with pytest.raises(NotImplementedError, match="keepdim"):
        exec(tricky, {})


def test_strip_solutions_multiple_blocks():
    src = "# BEGIN SOLUTION: a\n1\n# END SOLUTION\nkeep = 2\n  # BEGIN SOLUTION: b\n  3\n  # END SOLUTION"
    assert nbtool.strip_solutions(src) == "raise NotImplementedError('a')\nkeep = 2\n  raise NotImplementedError('b')"


@pytest.mark.parametrize(
    "src, message",
    [
        ("# BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n# END SOLUTION", "without a BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "nested"),
    ],
)
def test_strip_solutions_rejects_unbalanced_markers(src, message):
    with pytest.raises(nbtool.SolutionMarkerError, match=message):
        nbtool.strip_solutions(src, where="demo.ipynb cell 3")


# ------------------------------------------------------------------------------------------ clean / build
def _executed_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "venv-123", "display_name": "x", "language": "python"},
                   "language_info": {"name": "python", "version": "3.11.7"}, "widgets": {"state": {}}}
    title = nbformat.v4.new_markdown_cell("# Title")
    ex = nbformat.v4.new_code_cell("def f():\n    # BEGIN SOLUTION: hint\n    return 1\n    # END SOLUTION",
                                   metadata={"tags": ["exercise"], "execution": {"iopub.status.busy": "2026"}})
    ex.execution_count = 7
    out = nbformat.v4.new_code_cell("f()", metadata={"collapsed": False})
    out.execution_count = 9
    out.outputs = [
        nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=9),
        nbformat.v4.new_output("display_data", {nbtool.WIDGET_MIME: {"model_id": "abc"}}),
    ]
    nb.cells = [title, ex, out]
    return nb


def test_clean_removes_volatile_metadata_and_is_idempotent():
    cleaned = nbtool.clean(_executed_notebook())
    assert cleaned.metadata == {"kernelspec": nbtool.KERNELSPEC, "language_info": {"name": "python"}}
    assert cleaned.cells[1].metadata == {"tags": ["exercise"]}
    assert cleaned.cells[2].metadata == {}
    assert [c.execution_count for c in cleaned.cells[1:]] == [1, 2]
    assert cleaned.cells[2].outputs[0]["execution_count"] == 2
    assert len(cleaned.cells[2].outputs) == 1, "widget-only outputs must be dropped"
    assert nbtool.clean(cleaned) == cleaned


def test_make_exercise_strips_outputs_keeps_tags_and_adds_note():
    ex = nbtool.make_exercise(_executed_notebook(), "demo.ipynb")
    assert ex.cells[0].source == "# Title"
    assert "Exercise version" in ex.cells[1].source
    code = [c for c in ex.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[0].metadata == {"tags": ["exercise"]}
    assert "raise NotImplementedError('hint')" in code[0].source and "return 1" not in code[0].source


def test_build_and_check_modes(tmp_path):
    sol, nbs = tmp_path / "solutions", tmp_path / "notebooks"
    sol.mkdir()
    nbformat.write(_executed_notebook(), str(sol / "01_demo.ipynb"))
    assert nbtool.build(sol, nbs, check=True) == ["01_demo.ipynb"]  # missing → stale
    assert nbtool.build(sol, nbs) == ["01_demo.ipynb"]
    assert nbtool.build(sol, nbs, check=True) == []
    (nbs / "99_orphan.ipynb").write_text("{}")
    assert nbtool.build(sol, nbs, check=True) == ["99_orphan.ipynb (no matching solution)"]
    nbtool.build(sol, nbs)
    assert not (nbs / "99_orphan.ipynb").exists()
    gen = nbs / "01_demo.ipynb"
    gen.write_text(gen.read_text().replace("hint", "edited"))
    assert nbtool.build(sol, nbs, check=True) == ["01_demo.ipynb"]


# -------------------------------------------------------------------------------- the real course notebooks
def test_notebooks_are_generated_from_solutions():
    """Sync test: notebooks/ must be exactly what `python -m course_utils.nbtool build` produces."""
    stale = nbtool.build(check=True)
    assert not stale, f"notebooks/ is stale: {stale}; run `python -m course_utils.nbtool build` and commit"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_is_clean(path):
    text = path.read_text(encoding="utf-8")
    assert nbtool._dumps(nbtool.clean(nbtool.read(path))) == text, (
        f"{path.name} carries volatile metadata; run `python -m course_utils.nbtool clean {path}`"
    )


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_follows_contract(path):
    nb = nbtool.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].source == nbtool.setup_cell(), (
        "first code cell must be nbtool.setup_cell() verbatim; run `python -m course_utils.nbtool setup-cell "
        f"{path.relative_to(ROOT)}` and `python -m course_utils.nbtool build`")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "title cell first"
    header = nb.cells[0].source.lower()
    assert "objective" in header and "runtime" in header, "header needs learning objectives and measured runtime"
    assert all(c.execution_count is not None for c in code), f"{path.name} is committed without outputs"
    text = "\n".join(c.source for c in nb.cells)
    assert "pitfall" in text.lower() and "going further" in text.lower()


def _exercise_pairs(nb):
    cells = nb.cells
    for i, cell in enumerate(cells):
        if "exercise" in cell.metadata.get("tags", []):
            assert i + 1 < len(cells) and "check" in cells[i + 1].metadata.get("tags", []), (
                f"exercise cell {i} must be followed by a cell tagged 'check'"
            )
            yield cell.source, cells[i + 1].source


EXERCISES = [
    (p, n) for p in SOLUTIONS for n, _ in enumerate(_exercise_pairs(nbtool.read(p)))
]


@pytest.mark.parametrize("path, index", EXERCISES, ids=lambda x: getattr(x, "name", str(x)))
def test_exercise_fails_unsolved_and_passes_solved(path, index, capsys):
    from course_utils.checks import CheckFailed

    solved = list(_exercise_pairs(nbtool.read(path)))[index]
    generated = list(_exercise_pairs(nbtool.read(ROOT / "notebooks" / path.name)))[index]
    assert "NotImplementedError" in generated[0]

    ns: dict = {}
    exec(STANDARD_IMPORTS, ns)
    exec(solved[0], ns)
    exec(solved[1], ns)
    assert "✔" in capsys.readouterr().out

    ns = {}
    exec(STANDARD_IMPORTS, ns)
    try:
        exec(generated[0], ns)
    except NotImplementedError:
        return  # a top-level exercise: the cell itself stops with the hint
    with pytest.raises(CheckFailed, match="not implemented"):
        exec(generated[1], ns)
    assert "✘" in capsys.readouterr().out


def test_every_solution_has_exercises():
    for path in SOLUTIONS:
        assert list(_exercise_pairs(nbtool.read(path))), f"{path.name} has no exercise"


def test_checked_cells_have_outputs():
    for path in SOLUTIONS:
        for cell in nbtool.read(path).cells:
            if cell.cell_type == "code" and cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
                assert cell.outputs, f"{path.name}: a NBVAL_CHECK_OUTPUT cell has no output to compare"
                assert "perf_counter" not in cell.source, f"{path.name}: timings must never be compared by nbval"


# --------------------------------------------------------------------------- outputs that depend on the CPU
# A float printed with enough digits to show its last bits differs between CPUs (AVX2, AVX-512, PyTorch's scalar
# kernels round differently): such a number in a compared output makes nbval fail on another machine although
# nothing is wrong. Checked outputs print results; residues are asserted against a bound instead.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
RESIDUE_BELOW = 1e-10


def rounding_residues(text: str) -> list[str]:
    """The numbers in ``text`` whose printed digits are rounding noise: any ``-0`` (``-0.0``, ``-0.000``, ``-0e0``)
    and any non-zero number of magnitude below ``RESIDUE_BELOW`` that is not a bound (after ``<``, ``≤``, ``>``)."""
    found = []
    for match in _NUMBER.finditer(text):
        if re.search(r"[<>≤≥]=?\s*$", text[:match.start()]):
            continue
        token = match.group()
        value = float(token)
        if (value == 0 and token.startswith("-")) or 0 < abs(value) < RESIDUE_BELOW:
            found.append(token)
    return found


@pytest.mark.parametrize("text, residues", [
    ("ULD = 9.32e-17", ["9.32e-17"]), ("gap -0.0000 points", ["-0.0000"]), ("x = -0", ["-0"]),
    ("-0e0 and 1.5e-11", ["-0e0", "1.5e-11"]), ("accuracy 0.8205, -0.97 GiB, 1e-10, 0.0, 2026-12-01", []),
    ("loss 3.2e-05 at step 10", []), ("ULD < 1e-12: True, gap <= 1e-15", []),
])
def test_rounding_residues_finds_noise_not_results(text, residues):
    assert rounding_residues(text) == residues


def _output_text(cell) -> str:
    parts = []
    for out in cell.outputs:
        if "text" in out:
            parts.append(out["text"])
        for mime in ("text/plain", "text/html", "text/markdown"):
            parts.append(out.get("data", {}).get(mime, ""))
    return "\n".join(parts)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name[:2])
def test_checked_outputs_print_no_rounding_residue(path):
    for index, cell in enumerate(nbtool.read(path).cells):
        if cell.cell_type == "code" and cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            residues = rounding_residues(_output_text(cell))
            assert not residues, (f"{path.name} cell {index}: the compared output prints {residues}, digits that "
                                  "depend on the CPU's rounding; print a bound (e.g. '< 1e-12: True') or round it")


# --------------------------------------------------------------------------------- hints that don't give it away
def _normalised(text: str) -> str:
    return " ".join(text.replace("−", "-").split())


def _solution_lines(source: str) -> list[str]:
    """The non-trivial code lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (comments stripped)."""
    lines, inside = [], False
    for line in source.splitlines():
        if nbtool.BEGIN_RE.match(line):
            inside = True
        elif nbtool.END_RE.match(line):
            inside = False
        elif inside:
            code = _normalised(line.split("  #")[0])
            if len(code) >= 12 and not code.startswith("#"):
                lines.append(code)
    return lines


def _what_the_learner_reads(source: str) -> list[str]:
    """Stub messages and docstrings of an exercise cell of notebooks/."""
    import ast

    tree = ast.parse(source)
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "NotImplementedError" and node.args:
            if isinstance(node.args[0], ast.Constant):
                texts.append(node.args[0].value)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            texts.append(ast.get_docstring(node))
    return texts


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name[:2])
def test_no_stub_message_or_docstring_gives_the_solution(path):
    solved = [cell for cell, _ in _exercise_pairs(nbtool.read(path))]
    generated = [cell for cell, _ in _exercise_pairs(nbtool.read(ROOT / "notebooks" / path.name))]
    for solution, exercise in zip(solved, generated):
        readable = [_normalised(t) for t in _what_the_learner_reads(exercise)]
        assert readable, "an exercise without a stub message or docstring"
        for line in _solution_lines(solution):
            leaks = [t for t in readable if line in t]
            assert not leaks, f"{path.name}: the learner reads a solution line, {line!r}, in {leaks[0][:120]!r}"


def test_no_hint_gives_a_solution_line():
    from course_utils.checks import HINTS

    hints = {name: _normalised(" ".join(steps)) for name, steps in HINTS.items()}
    exercises = set()
    for path in SOLUTIONS:
        for solution, _ in _exercise_pairs(nbtool.read(path)):
            exercises.update(re.findall(r"^\s*def (\w+)\(", solution, re.M))
            for line in _solution_lines(solution):
                assert not [n for n, h in hints.items() if line in h], f"a hint contains the solution line {line!r}"
    stubbed = {name for path in SOLUTIONS for solution, _ in _exercise_pairs(nbtool.read(path))
               for name in re.findall(r"hint\('(\w+)'\)", solution)}
    assert stubbed <= set(HINTS) and stubbed, "every stub points at hints that exist"


def test_hints_come_in_steps(capsys):
    from course_utils.checks import hints

    hints._shown.pop("entropy", None)
    first, second = hints.hint("entropy"), hints.hint("entropy")
    assert first.startswith("Hint 1/3") and second.startswith("Hint 2/3") and "again for hint 3" in second
    assert hints.hint("entropy", 3).startswith("Hint 3/3") and hints.hint("entropy").startswith("Hint 3/3")
    with pytest.raises(ValueError, match="exercises with hints"):
        hints.hint("entropie")
    with pytest.raises(ValueError, match="hints 1 to 3"):
        hints.hint("entropy", 4)


# ------------------------------------------------------------------------------------------------ variant
def test_set_settings_rewrites_the_first_assignment_and_keeps_its_comment():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("SEEDS = (0, 1)"),
                nbformat.v4.new_code_cell("SEEDS = (0, 1, 2)   # training seeds\nSPLIT_SEED = 0\nN_SEEDS = len(SEEDS)"),
                nbformat.v4.new_code_cell("SEEDS = (9,)")]
    out = nbtool.set_settings(nb, {"SEEDS": "(3, 4, 5)", "SPLIT_SEED": "1"})
    assert out.cells[1].source == "SEEDS = (3, 4, 5)   # training seeds\nSPLIT_SEED = 1\nN_SEEDS = len(SEEDS)"
    assert out.cells[0].source == "SEEDS = (0, 1)" and out.cells[2].source == "SEEDS = (9,)"
    assert nb.cells[1].source.startswith("SEEDS = (0, 1, 2)")   # the original is untouched


def test_set_settings_names_a_setting_it_cannot_find():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("FM_N, FM_SEEDS = 500, range(3)")]
    with pytest.raises(ValueError, match="no line 'FM_SEEDS = …'"):
        nbtool.set_settings(nb, {"FM_SEEDS": "range(3, 6)"})


def test_run_variant_executes_every_cell_and_reports_the_failed_claims(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("SEEDS = (0, 1)"),
                nbformat.v4.new_code_cell("assert len(SEEDS) == 2, 'two seeds'"),
                nbformat.v4.new_code_cell("print('still running')")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    errors = nbtool.run_variant(path, {"SEEDS": "(0, 1, 2)"}, out_dir=tmp_path / "out")
    assert errors == ["cell 1: AssertionError: two seeds"]
    executed = nbformat.read(str(tmp_path / "out" / "nb-SEEDS012.ipynb"), as_version=4)
    assert executed.cells[2].outputs[0]["text"] == "still running\n"


# ------------------------------------------------------------------------ repository URL, set-up cell, Colab links
URL = "https://github.com/kd-course/knowledge-distillation"
FORK = "https://github.com/someone/kd-fork"
# Where a notebook or the README names the repository the course is installed or opened from.
COURSE_REPO_REFS = [
    re.compile(r"git\+(?P<url>https?://\S+?)(?=[\"'\s)]|$)"),
    re.compile(r"COURSE_REPO\s*=\s*[\"'](?P<url>[^\"']+)[\"']"),
    re.compile(r"git clone\s+(?P<url>\S+)"),
    re.compile(r"colab\.research\.google\.com/github/(?P<url>[^/\s)]+/[^/\s)]+)"),
]
GITHUB_URL = re.compile(r"https?://github\.com/[^/\s\"')]+/[^/\s\"')#]+")


def foreign_repository_urls(text: str, url: str, code: bool = False) -> list[str]:
    """Repository URLs in ``text`` other than ``url``: every install, clone or Colab reference, and in code every
    GitHub URL at all (markdown may cite other projects' repositories; code has no reason to name one)."""
    found = [m["url"] for pattern in COURSE_REPO_REFS for m in pattern.finditer(text)]
    found = [f"https://github.com/{u}" if not u.startswith(("http", "git@", "/", "file:")) else u for u in found]
    if code:
        found += GITHUB_URL.findall(text)
    return sorted({u.removesuffix(".git").rstrip("/") for u in found} - {url})


def _pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(body)
    return path


def test_repository_url_is_read_from_pyproject(tmp_path):
    assert nbtool.repository_url() == URL  # the real pyproject.toml
    path = _pyproject(tmp_path, f'[project]\nname = "x"\n[project.urls]\nRepository = "{FORK}.git/"\n')
    assert nbtool.repository_url(path) == FORK  # a trailing .git or / is dropped


@pytest.mark.parametrize("body, error, message", [
    ('[project]\nname = "x"\n', ValueError, r"no `Repository = .*\[project.urls\]"),
    ('[project.urls]\nHomepage = "https://example.org"\n', ValueError, "no `Repository"),
    ('[project.urls]\nRepository = "https://gitlab.com/a/b"\n', ValueError, "not a GitHub repository URL"),
    ('[project.urls]\nRepository = "https://github.com/only-owner"\n', ValueError, "OWNER/REPO"),
    ('[project.urls]\nRepository = "https://github.com/a/b\\" + x"\n', ValueError, "not a GitHub"),
    ('[project.urls]\nRepository = 3\n', TypeError, "must be a string"),
])
def test_repository_url_says_how_to_fix_a_bad_pyproject(tmp_path, body, error, message):
    with pytest.raises(error, match=message):
        nbtool.repository_url(_pyproject(tmp_path, body))


def test_repository_url_without_pyproject_names_the_checkout(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkout of the course repository"):
        nbtool.repository_url(tmp_path / "pyproject.toml")


def test_setup_cell_carries_the_url_once_and_is_python():
    cell = nbtool.setup_cell(FORK)
    assert cell.count(FORK) == 1 and URL not in cell
    ast.parse(cell)
    assert nbtool.setup_cell() == nbtool.SETUP_CELL  # the old constant's name still reads the generated cell
    with pytest.raises(AttributeError):
        nbtool.NOT_A_NAME  # noqa: B018
    with pytest.raises(ValueError, match="not a GitHub repository URL"):
        nbtool.setup_cell("https://github.com/a/b\"; import os; \"")


def _run_setup_cell(monkeypatch, on_colab: bool, installed: bool) -> tuple[dict, list]:
    """Execute the set-up cell with pip and course_utils.setup replaced by recorders."""
    import importlib.util
    import subprocess
    import sys
    import types

    import course_utils

    runs: list = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: runs.append(cmd))
    monkeypatch.setattr(course_utils, "setup", lambda seed: f"profile(seed={seed})")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if installed or name != "course_utils" else None))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace: dict = {}
    exec(nbtool.setup_cell(FORK), namespace)
    return namespace, runs


def test_setup_cell_installs_from_the_repository_on_a_fresh_colab_only(monkeypatch):
    from importlib.metadata import version

    namespace, runs = _run_setup_cell(monkeypatch, on_colab=True, installed=False)
    assert namespace["profile"] == "profile(seed=0)"
    assert len(runs) == 1 and runs[0][1:5] == ["-m", "pip", "install", "-q"]
    assert runs[0][5:] == [f"git+{FORK}", f"torch=={version('torch')}"]  # the installed torch is kept
    for on_colab, installed in [(False, False), (False, True), (True, True)]:
        monkeypatch.undo()  # the recorders wrap what they replace: start from the real functions each time
        namespace, runs = _run_setup_cell(monkeypatch, on_colab, installed)
        assert runs == [] and namespace["profile"] == "profile(seed=0)"


def _nb_with_first_code(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(source)
    first.execution_count = 1
    first.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Using profile 'small'\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# 09 · A demo: subtitle"), first, nbformat.v4.new_code_cell("x = 1")]
    return nb


@pytest.mark.parametrize("old", ["", "import course_utils\nprofile = course_utils.setup(seed=0)", nbtool.setup_cell(URL)])
def test_write_setup_cell_replaces_a_setup_cell_and_keeps_its_outputs(old):
    nb = _nb_with_first_code(old)
    assert nbtool.write_setup_cell(nb, FORK) is True
    assert nb.cells[1].source == nbtool.setup_cell(FORK)
    assert nb.cells[1].outputs[0]["text"] == "Using profile 'small'\n" and nb.cells[1].execution_count == 1
    assert [c.source for c in (nb.cells[0], nb.cells[2])] == ["# 09 · A demo: subtitle", "x = 1"]
    assert nbtool.write_setup_cell(nb, FORK) is False  # idempotent


def test_write_setup_cell_never_overwrites_the_notebooks_own_code():
    nb = _nb_with_first_code("import torch\nmodel = train()")
    with pytest.raises(ValueError, match="insert an empty code cell"):
        nbtool.write_setup_cell(nb, FORK, name="09_demo.ipynb")
    assert nb.cells[1].source == "import torch\nmodel = train()"
    empty = nbformat.v4.new_notebook()
    empty.cells = [nbformat.v4.new_markdown_cell("# only text")]
    with pytest.raises(ValueError, match="first code cell must be the set-up cell"):
        nbtool.write_setup_cell(empty, FORK)


def test_update_setup_cells_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "09_demo.ipynb"
    nbformat.write(_nb_with_first_code(nbtool.setup_cell(URL)), str(path))
    before = path.read_text()
    assert nbtool.update_setup_cells([path], FORK, check=True) == [str(path)]
    assert path.read_text() == before
    assert nbtool.update_setup_cells([path], FORK) == [str(path)]
    assert nbtool.update_setup_cells([path], FORK, check=True) == []
    assert FORK in path.read_text() and URL not in path.read_text()


def test_colab_url_and_links(tmp_path):
    assert nbtool.colab_url("notebooks/01_a.ipynb", FORK) == (
        "https://colab.research.google.com/github/someone/kd-fork/blob/main/notebooks/01_a.ipynb")
    for bad in ["/abs/01_a.ipynb", "../01_a.ipynb", "notebooks/01_a.py"]:
        with pytest.raises(ValueError, match="path inside the repository"):
            nbtool.colab_url(bad, FORK)
    sol = tmp_path / "solutions"
    sol.mkdir()
    nbformat.write(_nb_with_first_code(""), str(sol / "09_demo.ipynb"))
    block = nbtool.colab_links(sol, FORK)
    assert block.startswith(nbtool.COLAB_BEGIN) and block.endswith(nbtool.COLAB_END)
    assert "| 09 · A demo | [![Open In Colab]" in block
    assert "someone/kd-fork/blob/main/notebooks/09_demo.ipynb" in block
    assert "someone/kd-fork/blob/main/solutions/09_demo.ipynb" in block


def test_update_readme_rewrites_only_the_block(tmp_path):
    sol = tmp_path / "solutions"
    sol.mkdir()
    nbformat.write(_nb_with_first_code(""), str(sol / "09_demo.ipynb"))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{nbtool.COLAB_BEGIN}\nstale\n{nbtool.COLAB_END}\noutro\n")
    assert nbtool.update_readme(readme, sol, FORK, check=True) is True
    assert "stale" in readme.read_text()
    assert nbtool.update_readme(readme, sol, FORK) is True
    assert readme.read_text() == f"intro\n{nbtool.colab_links(sol, FORK)}\noutro\n"
    assert nbtool.update_readme(readme, sol, FORK) is False
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no Colab links block"):
        nbtool.update_readme(readme, sol, FORK)


def test_foreign_repository_urls_finds_what_it_should():
    assert foreign_repository_urls(nbtool.setup_cell(URL), URL, code=True) == []
    assert foreign_repository_urls(nbtool.setup_cell(FORK), URL, code=True) == [FORK]
    assert foreign_repository_urls("pip install git+https://github.com/a/b.git", URL) == ["https://github.com/a/b"]
    assert foreign_repository_urls("[x](https://colab.research.google.com/github/a/b/blob/main/n.ipynb)", URL) == [
        "https://github.com/a/b"]
    assert foreign_repository_urls("see [DistillKit](https://github.com/arcee-ai/DistillKit)", URL) == []
    assert foreign_repository_urls("url = 'https://github.com/arcee-ai/DistillKit'", URL, code=True) == [
        "https://github.com/arcee-ai/DistillKit"]


NOTEBOOKS = SOLUTIONS + sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_names_no_repository_but_the_generated_one(path):
    url = nbtool.repository_url()
    nb = nbtool.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == nbtool.setup_cell(url), (
        f"the first code cell of {path.name} is not the generated set-up cell; run `python -m course_utils.nbtool "
        "setup-cell` and `python -m course_utils.nbtool build`")
    foreign = sorted({u for c in nb.cells for u in foreign_repository_urls(c.source, url, c.cell_type == "code")})
    assert not foreign, (f"{path.name} names {foreign}, but the course repository is {url} (pyproject.toml); "
                         "only the set-up cell, generated by `python -m course_utils.nbtool setup-cell`, names it")


def test_readme_colab_links_are_generated_from_pyproject():
    assert not nbtool.update_readme(check=True), (
        "README.md's Colab links differ from pyproject.toml's repository URL or the notebooks in solutions/; "
        "run `python -m course_utils.nbtool setup-cell`")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert foreign_repository_urls(readme, nbtool.repository_url()) == []
    for path in SOLUTIONS:
        assert nbtool.colab_url(f"notebooks/{path.name}") in readme


def test_setup_cell_cli_check(capsys):
    assert nbtool.main(["setup-cell", "--check"]) == 0
    assert nbtool.repository_url() in capsys.readouterr().out
