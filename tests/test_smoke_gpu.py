"""The gpu profile's smoke run: every covered notebook's gpu code path, end to end on CPU, offline, in seconds.

``KD_PROFILE=gpu KD_SMOKE=1`` (see :mod:`course_utils.core.profiles`) makes the loaders build stand-ins that keep
everything but the size: the real model classes with tiny random-weight configs, the real tokenizers, local data with
the hub datasets' schemas, and recipes that train one or two steps. Results claims go through
``course_utils.core.claims.claim``, which reports a failed one as ``not checked (smoke run): …`` instead of raising;
every other statement of the notebook runs as on a GPU machine, so a cell that fails here fails there.

The notebooks run in order, each in a fresh kernel, sharing one temporary course cache (the offline assets linked
in, the model cache empty at the start), as a learner runs them: every training path runs once, later notebooks load
what earlier ones cached (06 evaluates 05's LLM students), and the learner's own cache is never touched. A notebook
that prints that it skipped a section fails the test. Measured on the 2-core development machine: 03 22 s, 04 64 s,
05 25 s, 06 20 s, 08 106 s (17 short LoRA runs of tiny SmolLM2 stand-ins, most of it token-by-token generation),
about 4 min in all; the budget is 5 minutes (``SMOKE_BUDGET``).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from course_utils import nbtool
from course_utils.core import assets
from course_utils.core.claims import SMOKE_PREFIX

#: Notebooks whose gpu code path the smoke run executes.
SMOKE_NOTEBOOKS = ("03", "04", "05", "06", "08")
#: Notebooks with a gpu code path that the smoke run does not execute yet (none: a new notebook goes in one of the
#: three lists, and the test below fails until it does).
SMOKE_LATER: set[str] = set()
#: Notebooks on the digits / Fashion-MNIST data with no profile-dependent code (tested below): nothing to smoke.
PROFILE_FREE = ("01", "02", "07")
#: The smoke run's wall-clock budget for all covered notebooks together, in seconds (2 CPU cores).
SMOKE_BUDGET = 300

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _solution(number: str) -> Path:
    (path,) = nbtool.SOLUTIONS_DIR.glob(f"{number}_*.ipynb")
    return path


def test_every_notebook_is_covered_or_excluded_by_name():
    numbers = {p.name[:2] for p in nbtool.SOLUTIONS_DIR.glob("[0-9][0-9]_*.ipynb")}
    assert numbers == set(SMOKE_NOTEBOOKS) | SMOKE_LATER | set(PROFILE_FREE)
    assert not set(SMOKE_NOTEBOOKS) & (SMOKE_LATER | set(PROFILE_FREE))


_DURATIONS: dict[str, float] = {}


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """One course cache for the module's smoke runs: the real offline assets (a link), an empty model cache."""
    cache = tmp_path_factory.mktemp("smoke") / "cache"
    cache.mkdir()
    (cache / "assets").symlink_to(assets.cache_dir() / "assets", target_is_directory=True)
    return cache


@pytest.mark.parametrize("number", SMOKE_NOTEBOOKS)
def test_smoke_run_of_the_gpu_profile(number, smoke_cache, monkeypatch):
    cache = smoke_cache
    monkeypatch.setenv("KD_COURSE_CACHE", str(cache))
    monkeypatch.setenv("KD_PROFILE", "gpu")
    monkeypatch.setenv("KD_SMOKE", "1")
    monkeypatch.delenv("KD_COURSE_RETRAIN", raising=False)
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    path = _solution(number)
    nb = nbtool.read(path)
    start = time.perf_counter()
    errors = nbtool.execute(nb, cwd=path.parent, timeout=600)
    seconds = time.perf_counter() - start
    _DURATIONS[number] = seconds

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    not_run = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.get("execution_count") is None]
    text = "\n".join("".join(out.get("text", "")) for cell in code for out in cell.get("outputs", []))
    unchecked = [line for line in text.splitlines() if line.startswith(SMOKE_PREFIX)]
    print(f"\n{path.name}: {len(code) - len(not_run)}/{len(code)} code cells run, {len(unchecked)} claims not "
          f"checked (smoke run), {seconds:.0f} s")
    for line in unchecked:
        print(f"  {line}")
    assert "smoke run (KD_SMOKE=1)" in text, "the set-up cell chose the smoke run of the gpu profile"
    skipped = [line for line in text.splitlines() if re.search(r"\b(is|are) skipped\b", line)]
    assert skipped == [], f"{path.name} skipped part of its gpu code path: {skipped}"
    assert errors == [], f"{path.name}'s gpu code path failed in the smoke run: {errors}"
    assert not_run == [], f"cells {not_run} of {path.name} did not run"
    assert not list((cache / "models").glob("gpu/*")), "the smoke run wrote gpu-profile entries into the model cache"


def test_smoke_runs_fit_their_budget():
    if set(_DURATIONS) != set(SMOKE_NOTEBOOKS):
        pytest.skip("only meaningful after every smoke run ran in this session")
    total = sum(_DURATIONS.values())
    print(f"\nsmoke runs: {total:.0f} s in all ({', '.join(f'{k}: {v:.0f} s' for k, v in _DURATIONS.items())})")
    assert total <= SMOKE_BUDGET


@pytest.mark.parametrize("folder", [nbtool.SOLUTIONS_DIR, nbtool.NOTEBOOKS_DIR])
def test_no_notebook_mentions_the_smoke_run(folder):
    """Notebooks never branch on the smoke run: their only route is ``claim``, which the loaders' stand-ins serve."""
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            source = "".join(cell["source"])
            assert not re.search(r"smoke|KD_SMOKE", source, re.IGNORECASE), f"{path.name} cell {i} mentions the smoke run"


@pytest.mark.parametrize("number", PROFILE_FREE)
def test_profile_free_notebooks_have_no_profile_dependent_code(number):
    """01, 02 and 07 are left out of the smoke run because nothing in them depends on the profile: past the set-up
    cell, ``profile`` appears only in the closing ``ran in`` line, nothing loads a profile's model or data or asks
    for CUDA, and the library modules they import (``vision``, ``training``, ``kd``, ``evaluation``) never read the
    profile either. A profile-dependent line added here fails this test: then add the notebook to the smoke run."""
    nb = nbtool.read(_solution(number))
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    assert "course_utils.setup(" in code[0]
    for source in code[1:]:
        for line in source.splitlines():
            if "profile" in line:
                assert re.fullmatch(r"""print\(f"notebook \d\d ran in .*\(profile '\{profile\.name\}'\)"\)""", line), line
            assert not re.search(r"\bcuda\b|\bgpu\b|recipe|course_utils\.(text|llm|core)\b|from course_utils import",
                                 line), line
            match = re.match(r"\s*(?:from|import) course_utils\.(\w+)", line)
            if match:
                assert match.group(1) in ("vision", "training", "kd", "evaluation", "checks"), line
    for module in ("vision", "training", "kd", "evaluation"):
        for source in (nbtool.REPO_ROOT / "course_utils" / module).glob("*.py"):
            text = source.read_text()
            assert not re.search(r"profiles|smoke_active|bert_recipe|llm_recipe", text), f"{source} reads the profile"
