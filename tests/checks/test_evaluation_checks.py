"""Tests for the notebook-06 checkers in ``course_utils.checks.evaluation``: ``check_expected_calibration_error``
and ``check_latency_benchmark``.

As in the other checker tests: correct implementations pass (several styles); an unsolved exercise gives "not
implemented" with its hint; every known mistake fails with a ``CheckFailed`` whose message names it; a wrong
argument raises ``TypeError``.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from course_utils import checks
from course_utils.evaluation import calibration
from course_utils.checks import CheckFailed

pytestmark = pytest.mark.usefixtures("single_thread")


# ============================================================================================================ ECE
def ece_torch(probs, labels, n_bins=15):
    """The notebook's solution."""
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == labels).float()
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
    return float(ece)


def ece_numpy_left_closed(probs, labels, n_bins=15):
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf, pred = p.max(1), p.argmax(1)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)  # [lower, upper), last bin closed
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() / len(p) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


def ece_library(probs, labels, n_bins=15):
    return calibration.expected_calibration_error(probs, labels, n_bins)


@pytest.mark.parametrize("fn", [ece_torch, ece_library])
def test_ece_correct_implementations_pass(fn, capsys):
    assert checks.check_expected_calibration_error(fn) is True
    assert "✔" in capsys.readouterr().out


def test_ece_not_implemented(capsys, assert_fails):
    def expected_calibration_error(probs, labels, n_bins=15):
        raise NotImplementedError("confidence = probs.max(1) … (hint 7)")

    assert_fails(checks.check_expected_calibration_error, expected_calibration_error, "not implemented",
                 "hint 7", capsys=capsys)


def make_ece(confidence="top", weights="count", gap="abs", edges="all", bins="n_bins", scale="fraction"):
    def fn(probs, labels, n_bins=15):
        p = probs.double()
        pred = p.argmax(1)
        conf = p[:, 1] if confidence == "class1" else p.max(1).values
        correct = (pred == labels).double()
        m = {"n_bins": n_bins, "ten": 10, "one": 1}[bins]
        if edges == "drop_one":
            idx = torch.floor(conf * m).long()
        else:
            idx = (torch.ceil(conf * m).long() - 1).clamp(0, m - 1)
        total, filled = 0.0, 0
        for b in range(m):
            sel = idx == b
            if not sel.any():
                continue
            filled += 1
            g = correct[sel].mean() - conf[sel].mean()
            g = {"abs": g.abs(), "signed": g, "squared": g ** 2}[gap]
            total += g * sel.sum() / len(p) if weights == "count" else g
        if weights == "uniform":
            total = total / filled
        return float(total) * (100 if scale == "percent" else 1)

    return fn


@pytest.mark.parametrize("mistake, keywords", [
    (dict(confidence="class1"), ["probs[:, 1]", "predicts"]),
    (dict(weights="uniform"), ["equal weight", "n_b / N"]),
    (dict(gap="signed"), ["absolute", "cancel"]),
    (dict(gap="squared"), ["squared"]),
    (dict(edges="drop_one"), ["exactly 1.0"]),
    (dict(bins="ten"), ["ignores n_bins"]),
    (dict(bins="one"), ["one bin"]),
    (dict(scale="percent"), ["percentage"]),
    (dict(weights="uniform", gap="signed"), ["equal weight", "cancel"]),
])
def test_ece_mistakes_are_diagnosed(mistake, keywords, capsys, assert_fails):
    assert_fails(checks.check_expected_calibration_error, make_ece(**mistake), *keywords, capsys=capsys)


def test_ece_other_failures(assert_fails):
    def nan_bins(probs, labels, n_bins=15):
        conf, pred = probs.max(1)
        idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
        gaps = [((pred[idx == b] == labels[idx == b]).float().mean() - conf[idx == b].mean()).abs() * (idx == b).float().mean()
                for b in range(n_bins)]
        return float(sum(gaps))  # empty bins: mean of nothing = NaN

    assert_fails(checks.check_expected_calibration_error, nan_bins, "NaN", "empty bins")
    assert_fails(checks.check_expected_calibration_error, lambda p, y, n: None, "return")
    assert_fails(checks.check_expected_calibration_error, lambda p, y, n: "0.1", "float")
    assert_fails(checks.check_expected_calibration_error, lambda p, y, n: torch.zeros(n), "one number")
    assert_fails(checks.check_expected_calibration_error, lambda p, y, n: 0.123, "expected")
    with pytest.raises(TypeError, match="without calling it"):
        checks.check_expected_calibration_error(0.1)


# ================================================================================================ latency
def measure_latency(model, inputs, warmup=3, repeats=20, threads=1):
    """The notebook's solution."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(**inputs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(**inputs)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "times_ms": times}


def test_latency_solution_passes(capsys):
    assert checks.check_latency_benchmark(measure_latency) is True
    assert "✔" in capsys.readouterr().out


def test_latency_other_correct_style_passes():
    def bench(model, inputs, warmup=3, repeats=20, threads=1):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        model.eval()
        try:
            with torch.no_grad():
                [model(**inputs) for _ in range(warmup)]
                t = []
                for _ in range(repeats):
                    s = time.perf_counter_ns()
                    model(**inputs)
                    t.append((time.perf_counter_ns() - s) / 1e6)
        finally:
            torch.set_num_threads(old)
        t = torch.tensor(t)
        return {"median_ms": float(np.median(t.numpy())), "p90_ms": float(np.percentile(t.numpy(), 90, method="higher")),
                "times_ms": t}

    assert checks.check_latency_benchmark(bench) is True


def test_latency_not_implemented(assert_fails):
    def measure_latency(model, inputs, warmup=3, repeats=20, threads=1):
        raise NotImplementedError("warm up, then time (hint 9)")

    assert_fails(checks.check_latency_benchmark, measure_latency, "not implemented", "hint 9")


def make_latency(warmup_mode="before", eval_mode=True, grad=False, set_threads=True, restore=True, kwargs=True,
                 clock="perf_counter", unit=1000, summary="median", p90="percentile", timer="around"):
    def fn(model, inputs, warmup=3, repeats=20, threads=1):
        previous = torch.get_num_threads()
        if set_threads:
            torch.set_num_threads(threads)
        if eval_mode:
            model.eval()
        read = {"perf_counter": time.perf_counter, "time": lambda: time.time(),
                "process_time": lambda: time.process_time()}[clock]
        call = (lambda: model(**inputs)) if kwargs else (lambda: model(inputs))
        ctx = torch.enable_grad() if grad else torch.inference_mode()
        times = []
        with ctx:
            if warmup_mode == "before":
                for _ in range(warmup):
                    call()
            for _ in range(repeats + (warmup if warmup_mode == "timed" else 0)):
                start = read()
                if timer == "after":
                    call()
                    start = read()
                    times.append((read() - start) * unit)
                    continue
                call()
                times.append((read() - start) * unit)
            if warmup_mode == "after":
                for _ in range(warmup):
                    call()
        if warmup_mode == "timed_prefix":
            times = times  # (not used)
        if restore:
            torch.set_num_threads(previous)
        med = {"median": statistics.median(times), "mean": statistics.mean(times), "min": min(times)}[summary]
        q = {"percentile": float(np.percentile(times, 90)), "max": max(times)}[p90]
        return {"median_ms": med, "p90_ms": q, "times_ms": times}

    return fn


@pytest.mark.parametrize("mistake, keywords", [
    (dict(warmup_mode="none"), ["no warm-up"]),
    (dict(warmup_mode="timed"), ["timed the warm-up"]),
    (dict(eval_mode=False), ["model.eval()"]),
    (dict(grad=True), ["inference_mode"]),
    (dict(set_threads=False), ["set_num_threads"]),
    (dict(restore=False), ["restore"]),
    (dict(kwargs=False), ["model(**inputs)"]),
    (dict(clock="time"), ["time.time()", "perf_counter"]),
    (dict(clock="process_time"), ["process_time", "CPU time"]),
    (dict(unit=1), ["seconds", "1000"]),
    (dict(unit=1e6), ["not milliseconds"]),
    (dict(summary="mean"), ["mean", "median"]),
    (dict(summary="min"), ["minimum"]),
    (dict(p90="max"), ["maximum", "percentile"]),
    (dict(timer="after"), ["does not surround"]),
])
def test_latency_mistakes_are_diagnosed(mistake, keywords, capsys, assert_fails):
    assert_fails(checks.check_latency_benchmark, make_latency(**mistake), *keywords, capsys=capsys)


def test_latency_warmup_after_timing_is_diagnosed(assert_fails):
    assert_fails(checks.check_latency_benchmark, make_latency(warmup_mode="after"), "slow", "before")


def test_latency_wrong_returns(assert_fails):
    assert_fails(checks.check_latency_benchmark, lambda model, inputs, warmup, repeats, threads: None, "returned None")
    assert_fails(checks.check_latency_benchmark, lambda model, inputs, warmup, repeats, threads: [1.0], "dict")

    def no_times(model, inputs, warmup=3, repeats=20, threads=1):
        out = measure_latency(model, inputs, warmup, repeats, threads)
        del out["times_ms"]
        return out

    assert_fails(checks.check_latency_benchmark, no_times, "'times_ms' is missing")

    def never_calls(model, inputs, warmup=3, repeats=20, threads=1):
        return {"median_ms": 1.0, "p90_ms": 1.0, "times_ms": [1.0] * repeats}

    assert_fails(checks.check_latency_benchmark, never_calls, "never called the model")

    def too_few(model, inputs, warmup=3, repeats=20, threads=1):
        return measure_latency(model, inputs, warmup, repeats - 1, threads)

    assert_fails(checks.check_latency_benchmark, too_few, "expected warmup + repeats")
    with pytest.raises(TypeError, match="without calling it"):
        checks.check_latency_benchmark({"median_ms": 1.0})


def test_latency_checker_restores_threads():
    threads = torch.get_num_threads()
    with pytest.raises(CheckFailed):
        checks.check_latency_benchmark(make_latency(restore=False))
    assert torch.get_num_threads() == threads


# ------------------------------------------------------------------ mistakes the exercise text warns against
def test_ece_left_closed_bins_are_diagnosed(assert_fails):
    """The text: bins are right-closed, 1/n_bins belongs to the first bin (ceil(confidence · n_bins) − 1)."""
    message = assert_fails(checks.check_expected_calibration_error, ece_numpy_left_closed, "left-closed",
                           "right-closed", "1/n_bins")
    assert "clamp(0, n_bins - 1)" not in message


def test_ece_tensor_instead_of_float_is_diagnosed(assert_fails):
    """The text: "Return a Python float"."""
    def as_tensor(probs, labels, n_bins=15):
        return torch.tensor(ece_torch(probs, labels, n_bins))

    assert_fails(checks.check_expected_calibration_error, as_tensor, "tensor", "Python float")


def test_latency_threads_not_restored_when_the_model_raises_is_diagnosed(assert_fails):
    """Hint 2: restore the thread count afterwards, even if the model raises (try/finally)."""
    def no_finally(model, inputs, warmup=3, repeats=20, threads=1):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(**inputs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(**inputs)
                times.append((time.perf_counter() - start) * 1000)
        torch.set_num_threads(previous)
        return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "times_ms": times}

    before = torch.get_num_threads()
    assert_fails(checks.check_latency_benchmark, no_finally, "when the model raises", "finally")
    assert torch.get_num_threads() == before  # the checker itself restores the caller's setting
