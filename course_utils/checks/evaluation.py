"""Checkers for notebook 06 (evaluating a distilled model): the expected calibration error and a correct latency
benchmark.

=====================================================================  =========================================
exercise                                                               checker
=====================================================================  =========================================
``expected_calibration_error(probs, labels, n_bins) -> float``:        :func:`check_expected_calibration_error`
top-label confidence, ``n_bins`` equal-width bins on [0, 1],
Σ_b n_b/N · |accuracy_b − confidence_b|
``measure_latency(model, inputs, warmup, repeats, threads) ->          :func:`check_latency_benchmark`
{"median_ms", "p90_ms", "times_ms"}``: eval mode, inference mode,
fixed threads (restored), untimed warm-up, ``time.perf_counter``
around each call, median and 90th percentile in milliseconds
=====================================================================  =========================================

References: :func:`course_utils.evaluation.calibration.expected_calibration_error` and
:func:`course_utils.evaluation.speed.measure_latency`. The ECE checker uses small seeded tensors; the latency checker
times a fake model whose calls take known durations (busy-waiting on ``time.perf_counter``): two slow (40 ms) "cold"
calls first, then 2 ms each, with one 20 ms hiccup in the middle — so a missing warm-up, a mean instead of a
median, or a timer around the wrong code shows in the numbers.
"""
from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ._core import (
    Case,
    Dimensions,
    call_learner,
    checker,
    fail,
    find_mistakes,
    fmt,
    mistakes_message,
    passed,
    require_callable,
    run_cases,
)

__all__ = ["check_expected_calibration_error", "check_latency_benchmark"]


# ============================================================================================================ ECE
def _ece_cases() -> list[Case]:
    """Binary, 3-class and 4-class cases; confidences avoid bin edges except some exact 1.0s (saturated softmax).

    Each case mixes under-confident bins (low confidence, right more often than that) with over-confident ones, so
    that the number of bins matters (with all gaps of one sign every binning would give the same ECE).
    """
    gen = torch.Generator().manual_seed(6)

    def labels_for(probs: torch.Tensor, accuracy: float) -> torch.Tensor:
        pred = probs.argmax(-1)
        wrong = (pred + torch.randint(1, probs.shape[1], pred.shape, generator=gen)) % probs.shape[1]
        return torch.where(torch.rand(len(pred), generator=gen) < accuracy, pred, wrong)

    cases: list[Case] = []
    probs = torch.tensor([[0.91, 0.09], [0.17, 0.83], [0.67, 0.33], [0.44, 0.56], [0.97, 0.03], [0.26, 0.74],
                          [0.12, 0.88], [0.59, 0.41]])
    cases.append({"probs": probs, "labels": torch.tensor([0, 1, 1, 1, 0, 0, 1, 0]), "n_bins": 10})
    probs = torch.softmax(torch.randn(300, 3, generator=gen) * 2.5, -1)
    probs[:40] = torch.nn.functional.one_hot(probs[:40].argmax(-1), 3).float()  # 40 predictions exactly 100 % sure
    cases.append({"probs": probs, "labels": labels_for(probs, 0.8), "n_bins": 15})
    probs = torch.softmax(torch.randn(160, 4, generator=gen) * 1.5, -1)
    cases.append({"probs": probs, "labels": labels_for(probs, 0.6), "n_bins": 5})
    # Confidences exactly on the edges of 4 bins (0.5, 0.75; exact in binary floating point): right-closed bins put
    # them in the lower bin, (0.25, 0.5] and (0.5, 0.75], left-closed ones in the upper.
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.125, 0.5, 0.25, 0.125], [0.75, 0.125, 0.0625, 0.0625],
                          [0.0625, 0.125, 0.75, 0.0625], [0.6, 0.2, 0.1, 0.1], [0.125, 0.1, 0.7, 0.075],
                          [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.9, 0.05, 0.03, 0.02], [0.3, 0.3125, 0.2, 0.1875]])
    cases.append({"probs": probs, "labels": torch.tensor([0, 1, 1, 2, 0, 2, 0, 3, 0, 0]), "n_bins": 4})
    return cases


_ECE_MISTAKES: Dimensions = {
    "confidence": [
        ("top", ""),
        ("class1", "you used the probability of class 1 (probs[:, 1]) as the confidence; ECE bins each prediction by "
                   "the probability of the class it *predicts*: confidence = probs.max(dim=1).values, prediction = "
                   "probs.argmax(dim=1)."),
    ],
    "weights": [
        ("count", ""),
        ("uniform", "you averaged the per-bin gaps with equal weight; ECE weights each bin by its share of the "
                    "predictions, n_b / N — a bin holding 3 predictions must not count as much as one holding 300."),
    ],
    "gap": [
        ("abs", ""),
        ("signed", "the gaps are not in absolute value, so over-confident bins (accuracy < confidence) and "
                   "under-confident ones cancel out. Use |accuracy_b − confidence_b|."),
        ("squared", "you squared the gaps (that is a root-mean-square style calibration error); ECE uses the "
                    "absolute gap |accuracy_b − confidence_b|."),
    ],
    "edges": [
        ("all", ""),
        ("drop_one", "predictions with confidence exactly 1.0 fall outside your bins (bins [lower, upper) never "
                     "contain 1.0) — a saturated softmax gives many of them. Clamp the bin index to n_bins − 1, or "
                     "make the last bin closed."),
        ("left_closed", "your bins are left-closed, [lower, upper): a confidence exactly on an edge (0.5 with 4 bins) "
                        "lands in the bin above it. The course's bins are right-closed, (lower, upper] — 1/n_bins "
                        "belongs to the first bin and 1.0 to the last: bin index ceil(confidence · n_bins) − 1, "
                        "clamped to [0, n_bins − 1]."),
    ],
    "bins": [
        ("n_bins", ""),
        ("ten", "your result ignores n_bins (it always uses 10 bins): use the n_bins argument."),
        ("one", "you compared the mean confidence with the overall accuracy — one bin for everything; that hides "
                "miscalibration that averages out (over-confident on some predictions, under-confident on others). "
                "Split the predictions into n_bins bins by confidence and compare within each."),
    ],
    "scale": [
        ("fraction", ""),
        ("percent", "you returned a percentage; return the ECE as a fraction in [0, 1]."),
    ],
}


def _ece_variant(case: Case, choice: Mapping[str, Any]) -> torch.Tensor:
    probs = case["probs"].double()
    labels = case["labels"]
    pred = probs.argmax(-1)
    conf = probs[:, 1] if choice["confidence"] == "class1" else probs.max(-1).values
    correct = (pred == labels).double()
    m = {"n_bins": case["n_bins"], "ten": 10, "one": 1}[choice["bins"]]
    idx = torch.ceil(conf * m).long() - 1
    keep = torch.ones_like(conf, dtype=torch.bool)
    if choice["edges"] == "drop_one":  # bins [lo, hi): index floor(conf * m), 1.0 lands in a bin that does not exist
        idx = torch.floor(conf * m).long()
        keep = idx < m
    elif choice["edges"] == "left_closed":  # bins [lo, hi), the last one closed
        idx = torch.floor(conf * m).long()
    idx = idx.clamp(0, m - 1)
    total = torch.tensor(0.0, dtype=torch.float64)
    filled = 0
    for b in range(m):
        sel = (idx == b) & keep
        n_b = int(sel.sum())
        if n_b == 0:
            continue
        filled += 1
        gap = correct[sel].mean() - conf[sel].mean()
        gap = {"abs": gap.abs(), "signed": gap, "squared": gap ** 2}[choice["gap"]]
        total = total + (gap * n_b / len(conf) if choice["weights"] == "count" else gap)
    if choice["weights"] == "uniform":
        total = total / max(filled, 1)
    return total * (100 if choice["scale"] == "percent" else 1)


def _ece_reference(case: Case) -> torch.Tensor:
    return _ece_variant(case, {name: options[0][0] for name, options in _ECE_MISTAKES.items()})


def _scalar(out: Any, name: str) -> torch.Tensor:
    if out is None:
        fail(f"`{name}` returned None — did you forget the `return` statement?")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            fail(f"`{name}` returned a tensor of shape {tuple(out.shape)}; the ECE is one number (sum over bins).")
        fail(f"`{name}` returned a tensor ({fmt(out.detach().reshape(()))}); the exercise asks for a Python float: "
             "convert the sum with float(...) before returning it.")
    if isinstance(out, (bool, np.bool_)) or not isinstance(out, (int, float, np.floating, np.integer)):
        fail(f"`{name}` returned {type(out).__name__}; return the ECE as a float.")
    return torch.tensor(float(out), dtype=torch.float64)


@checker
def check_expected_calibration_error(fn: Callable[..., Any]) -> bool:
    """Check ``expected_calibration_error(probs, labels, n_bins) -> float``.

    ``probs`` is an ``(N, C)`` tensor of probabilities, ``labels`` ``N`` class indices. Expected: top-label
    confidence ``probs.max(1)``, ``n_bins`` equal-width bins on [0, 1] (a confidence of exactly 1.0 in the last
    one), ECE = Σ_b (n_b/N)·|accuracy_b − confidence_b| over non-empty bins. Diagnoses: the probability of class 1
    instead of the top class; unweighted mean over bins; signed or squared gaps; 1.0 dropped; left-closed bins
    (confidences exactly on an edge in the bin above); n_bins ignored; one bin; a percentage; NaN from empty bins;
    a tensor instead of a Python float; not a number. Reference: :func:`course_utils.evaluation.calibration.expected_calibration_error`.
    """
    name = require_callable(fn, "expected_calibration_error")
    cases = _ece_cases()
    for case in cases:  # NaN first: the commonest crash-free mistake (0/0 in empty bins)
        out = _scalar(call_learner(fn, case), name)
        if torch.isnan(out):
            fail(f"`{name}` returned NaN for {case['n_bins']} bins — empty bins (no prediction in them) give 0/0. "
                 "Skip bins with no predictions; they contribute nothing to the weighted sum.")
        break
    outputs, first_bad = run_cases(fn, cases, _ece_reference, convert=_scalar, rtol=1e-4, atol=1e-6)
    if first_bad is None:
        return passed(f"`{name}` is correct: top-label confidence, {', '.join(str(c['n_bins']) for c in cases)} "
                      "equal-width bins, gaps weighted by the bins' share of the predictions.")
    diagnoses = find_mistakes(cases, outputs, first_bad, _ece_variant, _ECE_MISTAKES, max_mistakes=2, rtol=1e-4,
                              atol=1e-6)
    if diagnoses:
        fail(mistakes_message(name, diagnoses))
    case = cases[first_bad]
    fail(f"`{name}` returns {fmt(outputs[first_bad])} for {tuple(case['probs'].shape)} probabilities and "
         f"n_bins={case['n_bins']}; expected {fmt(_ece_reference(case))}. Check: confidence = probs.max(dim=1), "
         "correct = (probs.argmax(dim=1) == labels), bin = ceil(confidence · n_bins) − 1 (clamped to [0, n_bins − 1]), "
         "and ECE = Σ over bins of (count / N) · |mean(correct) − mean(confidence)|.")


# ================================================================================================ latency
COLD_MS, STEADY_MS, HICCUP_MS = 40.0, 2.0, 20.0
COLD_CALLS = 2
_perf_counter = time.perf_counter  # our own reference: a learner's code can't swap it under the fake model


class _FakeModel(torch.nn.Module):
    """Records how it is called and takes known times: COLD_CALLS slow first calls, then STEADY_MS each, except one
    HICCUP_MS call (the ``hiccup``-th)."""

    def __init__(self, hiccup: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)  # so it has parameters, like a real model
        self.hiccup = hiccup
        self.calls: list[dict[str, Any]] = []
        self.train()  # a freshly built model is in training mode: the learner must switch it off

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        k = len(self.calls)
        self.calls.append({"args": args, "kwargs": kwargs, "training": self.training,
                           "grad": torch.is_grad_enabled(), "threads": torch.get_num_threads(),
                           "start": _perf_counter()})
        ms = COLD_MS if k < COLD_CALLS else HICCUP_MS if k == self.hiccup else STEADY_MS
        end = _perf_counter() + ms / 1000
        while _perf_counter() < end:
            pass
        self.calls[-1]["end"] = _perf_counter()
        return self.linear(torch.zeros(1, 2))


@contextlib.contextmanager
def _watch_clocks(used: set[str]) -> Iterator[None]:
    """Record which of the wrong clocks (``time.time``, ``time.process_time``) the learner's code reads."""
    originals = {"time": time.time, "process_time": time.process_time}

    def spy(key: str) -> Callable[[], float]:
        def clock() -> float:
            used.add(key)
            return originals[key]()
        return clock

    time.time, time.process_time = spy("time"), spy("process_time")
    try:
        yield
    finally:
        time.time, time.process_time = originals["time"], originals["process_time"]


def _get(out: Any, key: str, name: str) -> Any:
    if key not in out:
        fail(f"`{name}` must return a dict with the keys 'median_ms', 'p90_ms' and 'times_ms'; '{key}' is missing "
             f"(got {sorted(out)}).")
    return out[key]


def _number(value: Any, key: str, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
        fail(f"`{name}` returned {key} of type {type(value).__name__}; it must be a number of milliseconds.")
    return float(value)


@checker(one_thread=False)  # it sets the thread count itself: the learner's function must restore it
def check_latency_benchmark(fn: Callable[..., Any]) -> bool:
    """Check ``measure_latency(model, inputs, warmup, repeats, threads) -> {"median_ms", "p90_ms", "times_ms"}``.

    Expected: ``model.eval()``; ``torch.set_num_threads(threads)`` during the measurement and the previous count
    restored afterwards; ``warmup`` untimed calls ``model(**inputs)``, then ``repeats`` calls each timed with
    ``time.perf_counter()`` inside ``torch.inference_mode()`` (or ``no_grad``); ``times_ms`` the ``repeats``
    durations in milliseconds, ``median_ms`` their median and ``p90_ms`` their 90th percentile.

    Diagnoses: not a dict; wrong call count (no warm-up, warm-up timed, too few repeats); warm-up after timing;
    training mode; autograd on; threads not set or not restored, or not restored when the model raises (no
    try/finally); inputs not passed as keywords; ``time.time`` or
    ``time.process_time``; seconds instead of milliseconds; a timer that does not surround the call; the mean (or
    min) instead of the median; the maximum instead of the 90th percentile.
    """
    name = require_callable(fn, "measure_latency")
    cases = [dict(warmup=3, repeats=12, threads=1), dict(warmup=2, repeats=9, threads=2)]
    previous = torch.get_num_threads()
    other = 2 if previous == 1 else 1  # the caller's setting must survive the benchmark
    try:
        for case in cases:
            torch.set_num_threads(other)
            model = _FakeModel(hiccup=case["warmup"] + case["repeats"] // 2)
            inputs = {"input_ids": torch.arange(6).reshape(2, 3), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
            clocks: set[str] = set()
            with _watch_clocks(clocks):
                out = call_learner(fn, {"model": model, "inputs": inputs, **case})
            _check_run(name, out, model, inputs, case, clocks, other)
        torch.set_num_threads(other)
        _check_threads_restored_on_error(fn, name, other)
    finally:
        torch.set_num_threads(previous)
    return passed(f"`{name}` measures latency correctly: eval mode, inference mode, {cases[0]['threads']} and "
                  f"{cases[1]['threads']} fixed threads (restored), untimed warm-up, perf_counter around each call, "
                  "median and p90 in milliseconds.")


class _FailingModel(_FakeModel):
    """Raises from its second call on, as a real model does when a batch does not fit in memory."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.calls:
            self.calls.append({"args": args, "kwargs": kwargs})
            raise RuntimeError("the checker's model fails on purpose (like an out-of-memory error mid-benchmark)")
        return super().forward(*args, **kwargs)


def _check_threads_restored_on_error(fn: Callable[..., Any], name: str, caller_threads: int) -> None:
    """The thread count must come back even when the model raises in the middle of the benchmark."""
    model = _FailingModel(hiccup=-1)
    inputs = {"input_ids": torch.arange(6).reshape(2, 3), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fn(model, inputs, 2, 5, 2 if caller_threads == 1 else 1)
    except Exception:  # noqa: BLE001 - expected: the model's error goes through
        pass
    if torch.get_num_threads() != caller_threads:
        fail(f"`{name}` restores the thread count when all goes well, but not when the model raises: after a model "
             f"that failed on its second call torch was left on {torch.get_num_threads()} thread(s) instead of the "
             f"caller's {caller_threads}. Put the measurement in a try block and restore the previous count in its "
             "finally clause, so that it comes back even if the model raises.")


def _check_run(name: str, out: Any, model: _FakeModel, inputs: dict, case: dict, clocks: set[str],
               caller_threads: int) -> None:
    warmup, repeats, threads = case["warmup"], case["repeats"], case["threads"]
    where = f"(warmup={warmup}, repeats={repeats}, threads={threads})"
    if out is None:
        fail(f"`{name}` returned None — return {{'median_ms': ..., 'p90_ms': ..., 'times_ms': [...]}}.")
    if not isinstance(out, Mapping):
        fail(f"`{name}` returned {type(out).__name__}; return a dict {{'median_ms': ..., 'p90_ms': ..., "
             "'times_ms': [...]}}.")
    calls = model.calls
    if not calls:
        fail(f"`{name}` never called the model: run model(**inputs) warmup + repeats times.")
    first = calls[0]
    if first["args"] or set(first["kwargs"]) != set(inputs) or any(
            first["kwargs"][k] is not v and not torch.equal(first["kwargs"][k], v) for k, v in inputs.items()):
        got = (f"{len(first['args'])} positional argument(s)" if first["args"]
               else f"keywords {sorted(first['kwargs'])}")
        fail(f"`{name}` called the model with {got}; pass the batch as keyword arguments: model(**inputs) "
             f"(expected keywords {sorted(inputs)}).")
    if any(c["training"] for c in calls):
        fail(f"`{name}` ran the model in training mode: call model.eval() first — dropout is active in training "
             "mode, and that is not the model you deploy.")
    if any(c["grad"] for c in calls):
        fail(f"`{name}` ran the model with autograd on: wrap the calls in `with torch.inference_mode():` (or "
             "torch.no_grad()); recording the graph for a backward pass that never comes costs time and memory.")
    if any(c["threads"] != threads for c in calls):
        seen = sorted({c["threads"] for c in calls})
        fail(f"`{name}` ran the model with {seen} thread(s) {where}: set torch's thread count to `threads` "
             "(torch.set_num_threads) before timing — latencies measured with different thread counts cannot be "
             "compared.")
    if torch.get_num_threads() != caller_threads:
        fail(f"`{name}` left torch on {torch.get_num_threads()} thread(s); the caller had {caller_threads}. Save "
             "torch.get_num_threads() before and restore it afterwards (try/finally), so the benchmark does not "
             "change the rest of the notebook.")
    times = _get(out, "times_ms", name)
    if isinstance(times, torch.Tensor):
        times = times.tolist()
    if not isinstance(times, (list, tuple, np.ndarray)):
        fail(f"`{name}` returned times_ms of type {type(times).__name__}; return the list of timed durations.")
    times = [_number(t, "an entry of times_ms", name) for t in times]
    n_calls = len(calls)
    if n_calls == repeats and len(times) == repeats:
        fail(f"`{name}` made no warm-up calls {where}: the first calls of a model are slow (memory allocation, "
             "lazy initialisation, cold caches) — run it `warmup` times untimed before timing `repeats` calls.")
    if len(times) == warmup + repeats:
        fail(f"`{name}` timed the warm-up calls too {where}: times_ms has {len(times)} entries. Time only the "
             f"`repeats` calls that follow the warm-up.")
    if n_calls != warmup + repeats:
        fail(f"`{name}` called the model {n_calls} times {where}; expected warmup + repeats = {warmup + repeats}.")
    if len(times) != repeats:
        fail(f"`{name}` returned {len(times)} durations in times_ms {where}; expected one per timed call "
             f"({repeats}).")
    if "time" in clocks:
        fail(f"`{name}` reads time.time(): that is the wall-clock time of day — it can jump (clock adjustments) and "
             "is not meant for measuring short intervals. Use time.perf_counter().")
    if "process_time" in clocks:
        fail(f"`{name}` reads time.process_time(): that is CPU time of this process summed over its threads, not "
             "elapsed time — with 2 threads busy it runs twice as fast as the clock. Use time.perf_counter().")
    steady = np.median(times)
    if 0.75 * STEADY_MS / 1000 <= steady < 0.02:
        fail(f"`{name}` returned times of about {steady:.4f} — seconds, it seems. Return milliseconds: multiply the "
             "perf_counter differences by 1000.")
    if steady < 0.5 * STEADY_MS:
        fail(f"`{name}` measured {steady:.3f} ms per call for calls that take {STEADY_MS:g} ms: the timer does not "
             "surround the model call. Read perf_counter() just before model(**inputs) and again right after it.")
    if steady > 200:
        fail(f"`{name}` returned times of about {steady:.0f} — that is not milliseconds for calls that take "
             f"{STEADY_MS:g} ms (microseconds? nanoseconds?). Use (perf_counter() − start) · 1000.")
    if sum(t >= 0.9 * COLD_MS for t in times) >= COLD_CALLS:  # the slow first calls are among the timed ones
        fail(f"`{name}` timed the first, slow calls: run the warm-up *before* the timed calls.")
    median = _number(_get(out, "median_ms", name), "median_ms", name)
    p90 = _number(_get(out, "p90_ms", name), "p90_ms", name)
    arr = np.asarray(times)
    if not np.isclose(median, np.median(arr), rtol=1e-6, atol=1e-9):
        if np.isclose(median, arr.mean(), rtol=1e-6):
            fail(f"`{name}` reports the mean as median_ms ({median:.2f} ms; the median of your times is "
                 f"{np.median(arr):.2f} ms). One slow run — here a {HICCUP_MS:g} ms hiccup — drags a mean up; the "
                 "median is what a typical call takes. Use statistics.median(times) or np.median(times).")
        if np.isclose(median, arr.min(), rtol=1e-6):
            fail(f"`{name}` reports the minimum as median_ms: the best case is optimistic. Use np.median(times).")
        fail(f"`{name}` returned median_ms = {median:.3f} but the median of its times_ms is {np.median(arr):.3f}.")
    lo, hi = np.percentile(arr, 90, method="lower"), np.percentile(arr, 90, method="higher")
    if not (lo - 1e-9 <= p90 <= hi + 1e-9):
        if np.isclose(p90, arr.max(), rtol=1e-6):
            fail(f"`{name}` reports the maximum as p90_ms ({p90:.2f} ms): the 90th percentile is the time 90 % of the "
                 "calls stay under — np.percentile(times, 90).")
        fail(f"`{name}` returned p90_ms = {p90:.3f}; the 90th percentile of its times_ms lies between {lo:.3f} and "
             f"{hi:.3f} (np.percentile(times, 90)).")
    if median < 0.8 * STEADY_MS or median > 10 * STEADY_MS:
        fail(f"`{name}` measured a median of {median:.2f} ms for calls that take {STEADY_MS:g} ms each.")
