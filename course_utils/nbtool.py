"""Notebook tool: ``solutions/`` (source of truth, with outputs) → ``notebooks/`` (exercise versions).

Usage::

    python -m course_utils.nbtool build            # regenerate notebooks/ from solutions/
    python -m course_utils.nbtool build --check    # exit 1 if notebooks/ is stale (also: ``--check`` alone)
    python -m course_utils.nbtool clean FILE...    # strip volatile metadata from executed solution notebooks
    python -m course_utils.nbtool variant NB SPLIT_SEED=1 "SEEDS=(3, 4, 5)"
                                                   # run a notebook with other settings, report the failed cells

What ``build`` does to each solution notebook:

* in code cells, every block between ``# BEGIN SOLUTION[: hint]`` and ``# END SOLUTION`` becomes
  ``raise NotImplementedError("<hint>")`` at the block's indentation;
* all outputs and execution counts are removed; cell tags (``exercise``, ``check``, …) are kept;
* a short note saying where the notebook came from is inserted after the title cell.

``clean`` keeps outputs but drops what changes on every run without meaning anything: kernel and language
versions, execution timestamps, widget state, and cell metadata other than tags. Re-running a notebook and
cleaning it therefore gives a small diff.

``variant`` is how a claim is checked beyond the split and seeds it was written on: it rewrites the notebook's
settings lines (``NAME = value`` at the start of a line of a code cell, e.g. ``SPLIT_SEED`` and ``SEEDS``), executes
every cell even after an error, writes the executed copy to ``build/variants/`` and lists the cells that raised —
each a claim (an ``assert``) that did not hold with those settings.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?::\s*(?P<hint>.*?))?\s*$")
END_RE = re.compile(r"^[ \t]*# END SOLUTION\s*$")
DEFAULT_HINT = "Exercise: replace this line with your implementation."
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

#: The first code cell of every notebook (a test enforces it). On Colab it installs the course package from the
#: repository without touching Colab's own torch (pyproject only asks for torch>=2.4); everywhere it then picks the
#: profile, sets the offline variables before transformers is imported, seeds and quiets the logs.
SETUP_CELL = '''\
# Set-up. Locally, `bash course.sh setup` installed everything; on Colab this installs the course package.
import importlib.util, os, subprocess, sys, time
if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:
    COURSE_REPO = os.environ.get("KD_COURSE_REPO", "https://github.com/kd-course/knowledge-distillation")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{COURSE_REPO}"], check=True)

import course_utils

NOTEBOOK_START = time.perf_counter()
profile = course_utils.setup(seed=0)  # profile (small|gpu), offline variables, seeds, quiet logs'''


class SolutionMarkerError(ValueError):
    """A ``# BEGIN SOLUTION`` without its ``# END SOLUTION`` (or the reverse)."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace each ``# BEGIN SOLUTION … # END SOLUTION`` block by ``raise NotImplementedError(hint)``.

    Args:
        source: a code cell's source.
        where: used in error messages (notebook name and cell index).

    Raises:
        SolutionMarkerError: unbalanced or nested markers.
    """
    out: list[str] = []
    inside = False
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN_RE.match(line), END_RE.match(line)
        if begin:
            if inside:
                raise SolutionMarkerError(f"{where}, line {lineno}: nested '# BEGIN SOLUTION'")
            inside = True
            hint = (begin.group("hint") or "").strip() or DEFAULT_HINT
            out.append(f"{begin.group('indent')}raise NotImplementedError({hint!r})")
        elif end:
            if not inside:
                raise SolutionMarkerError(f"{where}, line {lineno}: '# END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"{where}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'")
    return "\n".join(out)


def _clean_metadata(nb: nbformat.NotebookNode) -> None:
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        cell.metadata = nbformat.from_dict({"tags": list(tags)} if tags else {})


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return a copy of an executed notebook without volatile metadata (outputs are kept).

    Execution counts are renumbered 1, 2, … over the executed code cells, widget outputs are dropped
    (their state is not saved, so they would render as an error), and only cell tags survive as metadata.
    """
    nb = copy.deepcopy(nb)
    _clean_metadata(nb)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result"):
                out.get("data", {}).pop(WIDGET_MIME, None)
                if not out.get("data"):
                    continue
                if "metadata" in out:
                    out["metadata"] = {}
            outputs.append(out)
        cell.outputs = outputs
        if cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
    return nb


def make_exercise(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercise version of a solution notebook: solutions stripped, no outputs, tags kept."""
    ex = clean(nb)
    for i, cell in enumerate(ex.cells):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, where=f"{name} cell {i}")
            cell.outputs = []
            cell.execution_count = None
    note = nbformat.v4.new_markdown_cell(
        f"> **Exercise version.** Generated from `solutions/{name}` by `python -m course_utils.nbtool build`. "
        "Cells marked with `raise NotImplementedError(...)` are yours to complete; the cell after each one "
        "checks your answer. The solution notebook has the reference code and outputs."
    )
    note.id = "exercise-version-note"
    ex.cells.insert(1 if ex.cells and ex.cells[0].cell_type == "markdown" else 0, note)
    return ex


def _dumps(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def build(solutions: Path = SOLUTIONS_DIR, notebooks: Path = NOTEBOOKS_DIR, check: bool = False) -> list[str]:
    """Regenerate (or, with ``check``, compare) every exercise notebook.

    Returns:
        Names of notebooks that were stale (``check``) or rewritten (no ``check``), plus stray files in
        ``notebooks/`` that have no solution.
    """
    changed: list[str] = []
    sources = sorted(solutions.glob("*.ipynb"))
    expected = {p.name for p in sources}
    for stray in sorted(notebooks.glob("*.ipynb")):
        if stray.name not in expected:
            changed.append(f"{stray.name} (no matching solution)")
            if not check:
                stray.unlink()
    for src in sources:
        text = _dumps(make_exercise(read(src), src.name))
        dst = notebooks / src.name
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            changed.append(src.name)
            if not check:
                notebooks.mkdir(parents=True, exist_ok=True)
                dst.write_text(text, encoding="utf-8")
    return changed


def clean_files(paths: list[Path], check: bool = False) -> list[str]:
    """Clean solution notebooks in place (or, with ``check``, list those that are not clean)."""
    dirty = []
    for p in paths:
        text = _dumps(clean(read(p)))
        if p.read_text(encoding="utf-8") != text:
            dirty.append(str(p))
            if not check:
                p.write_text(text, encoding="utf-8")
    return dirty


def set_settings(nb: nbformat.NotebookNode, settings: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of ``nb`` with each ``NAME = value`` settings line (first one in a code cell) given a new value.

    Raises:
        ValueError: a name has no ``NAME = …`` line of its own in any code cell.
    """
    nb = copy.deepcopy(nb)
    for name, value in settings.items():
        line = re.compile(rf"^{re.escape(name)}\s*=\s*[^#\n]*?(?P<comment>\s*#.*)?$", re.MULTILINE)
        for cell in nb.cells:
            if cell.cell_type == "code" and line.search(cell.source):
                cell.source = line.sub(lambda m: f"{name} = {value}{m.group('comment') or ''}", cell.source, count=1)
                break
        else:
            raise ValueError(f"no line '{name} = …' in any code cell; the settings a variant can change are "
                             "assignments of their own at the start of a line")
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 1800) -> list[str]:
    """Run every cell of ``nb`` in place in a fresh kernel (continuing after errors) and describe the errors.

    Returns:
        ``"cell N: ErrorName: message"`` for each cell that raised, in order (empty: every cell ran cleanly).
    """
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    errors = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {index}: {out['ename']}: {out['evalue'][:200]}")
    return errors


def run_variant(path: Path, settings: dict[str, str], out_dir: Path = REPO_ROOT / "build" / "variants") -> list[str]:
    """Execute a notebook with other settings, save the executed copy in ``out_dir``; return its errors."""
    nb = set_settings(read(path), settings)
    errors = execute(nb, cwd=path.parent)
    tag = "-".join(re.sub(r"[^0-9A-Za-z]+", "", f"{k}{v}") for k, v in settings.items())
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out_dir / f"{path.stem}-{tag}.ipynb"))
    return errors


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--check":  # `nbtool --check` == `nbtool build --check`
        argv = ["build", "--check"] + argv[1:]
    parser = argparse.ArgumentParser(prog="python -m course_utils.nbtool", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate notebooks/ from solutions/")
    b.add_argument("--check", action="store_true", help="only report stale notebooks; exit 1 if any")
    c = sub.add_parser("clean", help="strip volatile metadata from solution notebooks in place")
    c.add_argument("paths", nargs="*", type=Path, help="default: every solutions/*.ipynb")
    c.add_argument("--check", action="store_true", help="only report notebooks that are not clean; exit 1 if any")
    v = sub.add_parser("variant", help="execute a notebook with other settings and list the cells that raised")
    v.add_argument("path", type=Path)
    v.add_argument("settings", nargs="+", help="NAME=value, e.g. SPLIT_SEED=1 'SEEDS=(3, 4, 5)'")
    args = parser.parse_args(argv)
    if args.cmd == "variant":
        settings = dict(item.split("=", 1) for item in args.settings)
        errors = run_variant(args.path, {k.strip(): v.strip() for k, v in settings.items()})
        print("\n".join(errors) if errors else "every cell ran without an error")
        return 1 if errors else 0
    if args.cmd == "build":
        changed = build(check=args.check)
        if args.check:
            if changed:
                print("notebooks/ is out of date with solutions/: " + ", ".join(changed)
                      + "\nrun `python -m course_utils.nbtool build` and commit the result.")
                return 1
            print("notebooks/ is in sync with solutions/")
            return 0
        print("regenerated: " + (", ".join(changed) if changed else "nothing (already in sync)"))
        return 0
    paths = args.paths or sorted(SOLUTIONS_DIR.glob("*.ipynb"))
    dirty = clean_files(paths, check=args.check)
    if args.check and dirty:
        print("not clean (run `python -m course_utils.nbtool clean`): " + ", ".join(dirty))
        return 1
    print(("cleaned: " + ", ".join(dirty)) if dirty else "all clean")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
