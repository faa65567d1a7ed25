"""Static checks of the packaging: environment.yml mirrors pyproject.toml, CI calls the README's test command."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_parses_and_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] and "pip" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    project = _pyproject()["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    listed = {_name(r) for r in pip_section}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_torch_pins():
    deps = _pyproject()["project"]["dependencies"]
    torch_req = next(d for d in deps if _name(d) == "torch")
    assert ">=" in torch_req and "==" not in torch_req, "pyproject must not pin torch exactly (Colab keeps its own)"
    env_text = (ROOT / "environment.yml").read_text()
    assert "torch==2.13.0" in env_text
    assert 'TORCH_PIN="torch==2.13.0"' in (ROOT / "course.sh").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash course.sh test" in readme
    assert re.search(r"^bash course\.sh test\s*$", ci, re.M), ".ci/run must call exactly the README's test command"


def test_offline_variables_set_by_course_script():
    script = (ROOT / "course.sh").read_text()
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert var in script
