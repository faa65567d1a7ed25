"""Unit tests for course_utils.core.profiles. No test opens a real network connection."""
from __future__ import annotations

import socket

import pytest

from course_utils.core import profiles
from course_utils.core.profiles import PROFILE_NAMES, Profile, select


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket connection fails the test instead of reaching the internet."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"a test tried to open a network connection: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("KD_PROFILE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "KD_SMOKE"):
        monkeypatch.delenv(var, raising=False)


def machine(monkeypatch, cuda: bool, hub: bool) -> dict[str, int]:
    """Pretend the machine has (or lacks) CUDA and a reachable hub; count how often each probe runs."""
    calls = {"cuda": 0, "hub": 0}

    def fake_cuda():
        calls["cuda"] += 1
        return cuda

    def fake_hub(timeout: float = 2.0):
        calls["hub"] += 1
        return hub

    monkeypatch.setattr(profiles, "cuda_available", fake_cuda)
    monkeypatch.setattr(profiles, "hub_reachable", fake_hub)
    return calls


# ================================================================================================ Profile
def test_profile_dataclass():
    p = Profile("small", "because", offline=True)
    assert p.is_small and not Profile("gpu", "x", offline=False).is_small
    assert str(p) == "profile 'small': because"
    with pytest.raises(AttributeError):
        p.name = "gpu"  # frozen
    assert PROFILE_NAMES == ("small", "gpu")


# ============================================================================================ explicit choice
@pytest.mark.parametrize("value,expected", [("small", "small"), ("gpu", "gpu"), (" GPU ", "gpu"), ("Small", "small")])
def test_kd_profile_override(monkeypatch, value, expected):
    calls = machine(monkeypatch, cuda=not (expected == "gpu"), hub=True)
    monkeypatch.setenv("KD_PROFILE", value)
    p = select(verbose=False)
    assert p.name == expected
    assert p.offline == (expected == "small")
    assert "KD_PROFILE" in p.reason
    # an override never probes for CUDA; asking for gpu checks the hub exactly once, small never does
    assert calls == {"cuda": 0, "hub": int(expected == "gpu")}


@pytest.mark.parametrize("value", ["invalid", "cpu", "GPUs", "smal"])
def test_invalid_kd_profile_names_the_value(monkeypatch, value):
    machine(monkeypatch, cuda=False, hub=False)
    monkeypatch.setenv("KD_PROFILE", value)
    with pytest.raises(ValueError) as err:
        select(verbose=False)
    msg = str(err.value)
    assert repr(value.strip().lower()) in msg
    assert "KD_PROFILE" in msg
    assert "small" in msg and "gpu" in msg


@pytest.mark.parametrize("value", ["", "auto", "  AUTO ", "   "])
def test_empty_or_auto_kd_profile_means_auto_detection(monkeypatch, value):
    calls = machine(monkeypatch, cuda=False, hub=True)
    monkeypatch.setenv("KD_PROFILE", value)
    p = select(verbose=False)
    assert p.name == "small" and "no CUDA" in p.reason
    assert calls["cuda"] == 1


@pytest.mark.parametrize("name", ["small", "gpu"])
def test_explicit_argument(monkeypatch, name):
    calls = machine(monkeypatch, cuda=False, hub=True)
    p = select(name, verbose=False)
    assert p.name == name
    assert p.reason == "requested by argument"
    assert p.offline is (name == "small")
    assert calls == {"cuda": 0, "hub": int(name == "gpu")}


def test_explicit_argument_beats_kd_profile(monkeypatch):
    machine(monkeypatch, cuda=True, hub=True)
    monkeypatch.setenv("KD_PROFILE", "gpu")
    assert select("small", verbose=False).name == "small"
    monkeypatch.setenv("KD_PROFILE", "invalid")  # not even read when an argument is given
    assert select("gpu", verbose=False).name == "gpu"


def test_invalid_argument(monkeypatch):
    machine(monkeypatch, cuda=False, hub=False)
    with pytest.raises(ValueError, match=r"unknown profile 'tpu' \(from argument\)"):
        select("tpu", verbose=False)


@pytest.mark.parametrize("bad", [1, True, ["small"]])
def test_non_string_argument(monkeypatch, bad):
    machine(monkeypatch, cuda=False, hub=False)
    with pytest.raises(TypeError, match="profile name must be a string"):
        select(bad, verbose=False)


# ============================================================================================ auto-detection
@pytest.mark.parametrize(
    "cuda,hub,expected,reason_part",
    [
        (False, False, "small", "no CUDA"),
        (False, True, "small", "no CUDA"),
        (True, False, "small", "unreachable"),
        (True, True, "gpu", "reachable"),
    ],
)
def test_auto_detection(monkeypatch, capsys, cuda, hub, expected, reason_part):
    calls = machine(monkeypatch, cuda=cuda, hub=hub)
    p = select()
    assert p.name == expected
    assert p.offline is (expected == "small")
    assert reason_part in p.reason
    assert calls["cuda"] == 1
    assert calls["hub"] == (1 if cuda else 0)  # no CUDA: the hub is never probed
    out = capsys.readouterr().out
    assert f"'{expected}'" in out
    assert p.reason in out
    assert "KD_PROFILE" in out


def test_cuda_with_hf_hub_offline_explains_why(monkeypatch):
    machine(monkeypatch, cuda=True, hub=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = select(verbose=False)
    assert p.name == "small"
    assert "HF_HUB_OFFLINE=1" in p.reason


def test_verbose_false_prints_nothing(monkeypatch, capsys):
    machine(monkeypatch, cuda=False, hub=True)
    select(verbose=False)
    select("gpu", verbose=False)
    assert capsys.readouterr().out == ""


def test_explicit_choice_message(monkeypatch, capsys):
    machine(monkeypatch, cuda=False, hub=True)
    monkeypatch.setenv("KD_PROFILE", "gpu")
    select()
    out = capsys.readouterr().out
    assert "profile 'gpu'" in out and "requested by KD_PROFILE" in out


# ============================================================================================ probes
class FakeConnection:
    def __init__(self, log, address, timeout):
        log.append((address, timeout))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_hub_reachable_true_when_connection_opens(monkeypatch):
    log = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: FakeConnection(log, address, timeout))
    assert profiles.hub_reachable(timeout=0.5) is True
    assert log == [(("huggingface.co", 443), 0.5)]


@pytest.mark.parametrize("error", [OSError("no route"), socket.timeout("timed out"), ConnectionRefusedError()])
def test_hub_reachable_false_on_os_error(monkeypatch, error):
    def fail(address, timeout):
        raise error

    monkeypatch.setattr(socket, "create_connection", fail)
    assert profiles.hub_reachable() is False


def test_hub_reachable_respects_offline_variable_without_probing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the autouse no_network fixture would raise if a connection were attempted
    assert profiles.hub_reachable() is False


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_hub_reachable_honours_offline_variable_even_when_gpu_is_asked_for(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("KD_PROFILE", "gpu")
    assert profiles.hub_offline() is True
    assert profiles.hub_reachable() is False  # no probe: the no_network fixture would raise


@pytest.mark.parametrize("value", ["0", "false", "", "no"])
def test_hub_offline_false_values(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert profiles.hub_offline() is False


def test_hub_reachable_gives_up_after_timeout_even_if_the_lookup_hangs(monkeypatch):
    """socket's timeout does not bound the DNS lookup; the probe's own deadline does."""
    import threading
    import time

    release = threading.Event()

    def hang(address, timeout):
        release.wait(5)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    try:
        assert profiles.hub_reachable(timeout=0.2) is False
        assert time.perf_counter() - start < 1.5
    finally:
        release.set()


def test_hub_reachable_passes_on_unexpected_errors(monkeypatch):
    def broken(address, timeout):
        raise KeyError("not a network error")

    monkeypatch.setattr(socket, "create_connection", broken)
    with pytest.raises(KeyError, match="not a network error"):
        profiles.hub_reachable()


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                       ("2", TypeError), (None, TypeError), (True, TypeError)])
def test_hub_reachable_rejects_bad_timeouts(bad, error):
    with pytest.raises(error, match="timeout must be"):
        profiles.hub_reachable(timeout=bad)


def test_hub_address_follows_hf_endpoint(monkeypatch):
    assert profiles.hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org")
    assert profiles.hub_address() == ("hf-mirror.example.org", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://localhost:8080/")
    assert profiles.hub_address() == ("localhost", 8080)
    log = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: FakeConnection(log, address, timeout))
    assert profiles.hub_reachable() is True and log[0][0] == ("localhost", 8080)
    monkeypatch.setenv("HF_ENDPOINT", "huggingface")
    with pytest.raises(ValueError, match="HF_ENDPOINT"):
        profiles.hub_address()


# ==================================================================== gpu asked for, hub unreachable
@pytest.mark.parametrize("how", ["KD_PROFILE", "argument"])
def test_gpu_without_hub_fails_at_once_in_one_line(monkeypatch, capsys, how):
    calls = machine(monkeypatch, cuda=True, hub=False)
    if how == "KD_PROFILE":
        monkeypatch.setenv("KD_PROFILE", "gpu")
    with pytest.raises(profiles.HubUnreachableError) as err:
        select("gpu" if how == "argument" else None)
    msg = str(err.value)
    assert "\n" not in msg
    assert "gpu profile" in msg and "Hugging Face hub" in msg
    assert "huggingface.co:443 did not answer within" in msg
    assert ("KD_PROFILE=small" if how == "KD_PROFILE" else "profile='small'") in msg
    assert calls == {"cuda": 0, "hub": 1}  # checked once, no retries
    assert capsys.readouterr().out == ""  # nothing claims the gpu profile was chosen


def test_gpu_with_hf_hub_offline_names_the_variable_without_probing(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KD_PROFILE", "gpu")
    with pytest.raises(profiles.HubUnreachableError) as err:
        select(verbose=False)  # the real hub_reachable: the no_network fixture proves it does not probe
    msg = str(err.value)
    assert "HF_HUB_OFFLINE=1 is set" in msg and "HF_HUB_OFFLINE=0" in msg and "KD_PROFILE=small" in msg
    assert "\n" not in msg


def test_gpu_unreachable_error_is_a_runtime_error():
    assert issubclass(profiles.HubUnreachableError, RuntimeError)


def test_gpu_with_hub_reachable_over_real_probe(monkeypatch):
    log = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: FakeConnection(log, address, timeout))
    monkeypatch.setenv("KD_PROFILE", "gpu")
    assert select(verbose=False).name == "gpu"
    assert log == [(("huggingface.co", 443), profiles.HUB_TIMEOUT)]


def test_cuda_available_follows_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profiles.cuda_available() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.cuda_available() is False


# ================================================================================================ smoke run
@pytest.mark.parametrize("value, active", [("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_smoke_active(monkeypatch, value, active):
    monkeypatch.setenv("KD_SMOKE", value)
    assert profiles.smoke_active() is active


def test_smoke_active_unset():
    assert profiles.smoke_active() is False


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_smoke_active_rejects_other_values(monkeypatch, value):
    monkeypatch.setenv("KD_SMOKE", value)
    with pytest.raises(ValueError, match="KD_SMOKE=.*use 1"):
        profiles.smoke_active()


@pytest.mark.parametrize("how", ["env", "argument"])
def test_smoke_selects_gpu_without_the_hub(monkeypatch, how):
    calls = machine(monkeypatch, cuda=False, hub=False)
    monkeypatch.setenv("KD_SMOKE", "1")
    if how == "env":
        monkeypatch.setenv("KD_PROFILE", "gpu")
    p = select("gpu" if how == "argument" else None, verbose=False)
    assert p.name == "gpu" and p.smoke and p.offline and "smoke run" in p.reason
    assert calls == {"cuda": 0, "hub": 0}


def test_profile_smoke_defaults_to_false():
    assert Profile("gpu", "x", offline=False).smoke is False


@pytest.mark.parametrize("profile", [None, "small"])
def test_smoke_needs_the_gpu_profile(monkeypatch, profile):
    machine(monkeypatch, cuda=False, hub=False)
    monkeypatch.setenv("KD_SMOKE", "1")
    with pytest.raises(ValueError, match="set KD_PROFILE=gpu"):
        select(profile, verbose=False)


def test_smoke_prints_its_reason(monkeypatch, capsys):
    monkeypatch.setenv("KD_SMOKE", "1")
    select("gpu")
    assert "smoke run (KD_SMOKE=1)" in capsys.readouterr().out
