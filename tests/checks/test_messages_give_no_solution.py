"""No checker message (or checker docstring) spells out a line of an exercise's solution.

A diagnosis names the mistake and the way out — the idea, or the API to use ("F.log_softmax", "torch.no_grad()") —
but never the line the learner is asked to write. This reads every string literal of the checker modules (an
f-string with its placeholders blanked) and looks for each non-trivial solution line of ``solutions/`` in it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from course_utils import nbtool

ROOT = Path(__file__).resolve().parents[2]
CHECKERS = ["basics", "bert", "features", "llm", "evaluation", "strategies"]

# Solution lines that are nothing but one API call, which a diagnosis may name (the exercise text names them too).
API_ONLY = {"model.eval()", "model(**inputs)", "with torch.no_grad():", "with torch.inference_mode():",
            "return student", "torch.set_num_threads(threads)"}


def _normalised(text: str) -> str:
    return " ".join(text.replace("−", "-").split())


def _solution_lines() -> set[str]:
    lines: set[str] = set()
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in nbtool.read(path).cells:
            inside = False
            for line in cell.source.splitlines():
                if nbtool.BEGIN_RE.match(line):
                    inside = True
                elif nbtool.END_RE.match(line):
                    inside = False
                elif inside:
                    code = _normalised(line.split("  #")[0])
                    if len(code) >= 12 and not code.startswith("#"):
                        lines.add(code)
    return lines - API_ONLY


def _strings(path: Path) -> list[str]:
    texts = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else " {} " for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
    return [_normalised(t) for t in texts]


def test_there_are_solution_lines_to_look_for():
    assert len(_solution_lines()) > 20


@pytest.mark.parametrize("module", CHECKERS)
def test_no_checker_string_contains_a_solution_line(module):
    texts = _strings(ROOT / "course_utils" / "checks" / f"{module}.py")
    leaks = sorted({line for line in _solution_lines() for text in texts if line in text})
    assert not leaks, f"checks/{module}.py gives away solution lines: {leaks}"
