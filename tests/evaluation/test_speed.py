"""Unit tests for course_utils.evaluation.speed: the latency protocol (warm-up, interleaving, threads, inference
mode), its errors, speed-ups, text batches and the latency benchmark of tiny BERTs."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from course_utils.evaluation import speed

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a movie film good bad great awful plot is was".split()
TEXTS = ["the movie is good", "a bad film", "great plot", "the film was awful", "good", "bad bad plot",
         "the plot is great", "awful"]


# ==================================================================================================== speed
class Recorder(nn.Module):
    """Records every call: its name, the inputs it got, the grad/inference mode, train mode and thread count."""

    calls: list = []

    def __init__(self, name: str, seconds: float = 0.0):
        super().__init__()
        self.name, self.seconds = name, seconds
        self.lin = nn.Linear(2, 2)

    def forward(self, input_ids, attention_mask=None):
        Recorder.calls.append({"name": self.name, "batch": input_ids.shape[0], "training": self.training,
                               "inference": torch.is_inference_mode_enabled(), "threads": torch.get_num_threads(),
                               "mask": attention_mask is not None})
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return input_ids


def test_measure_latency_protocol():
    Recorder.calls = []
    models = {"a": Recorder("a").train(), "b": Recorder("b", seconds=0.002)}
    inputs = {b: {"input_ids": torch.zeros(b, 3), "attention_mask": torch.ones(b, 3), "token_type_ids": None}
              for b in (1, 4)}
    threads = torch.get_num_threads()
    table = speed.measure_latency(models, inputs, repeats=4, warmup=2, threads=2)
    assert torch.get_num_threads() == threads
    assert list(table.index) == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    assert list(table.columns) == ["median_ms", "p90_ms", "mean_ms", "min_ms", "throughput"]
    assert table.attrs["threads"] == 2 and table.attrs["repeats"] == 4 and table.attrs["warmup"] == 2
    assert all(len(v) == 4 for v in table.attrs["raw"].values())
    calls = Recorder.calls
    assert len(calls) == 2 * 2 * (2 + 4)  # models × batch sizes × (warm-up + timed)
    assert all(c["inference"] and not c["training"] and c["threads"] == 2 and c["mask"] for c in calls)
    timed_b1 = [c["name"] for c in calls if c["batch"] == 1][4:]  # after 2 + 2 warm-up calls
    assert timed_b1 == ["a", "b", "b", "a", "a", "b", "b", "a"]  # interleaved and rotated
    assert table.loc[("b", 1), "median_ms"] >= 2.0 > table.loc[("a", 1), "median_ms"]
    assert table.loc[("b", 4), "throughput"] == pytest.approx(4000 / table.loc[("b", 4), "median_ms"])
    assert table.loc[("b", 1), "p90_ms"] >= table.loc[("b", 1), "median_ms"]
    ratio = speed.speedups(table, "b")
    assert ratio.loc["b", 1] == 1.0 and ratio.loc["a", 4] > 1.0


def test_measure_latency_callable_inputs_and_models():
    Recorder.calls = []
    seen = []
    table = speed.measure_latency({"fn": lambda **kw: seen.append(sorted(kw))}, lambda b: {"x": torch.zeros(b)},
                               batch_sizes=[2], repeats=3, warmup=0, rotate=False)
    assert list(table.index) == [("fn", 2)] and seen == [["x"]] * 3


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(models={}), ValueError, "non-empty mapping"),
    (dict(models={"m": 3}), TypeError, "cannot be called"),
    (dict(repeats=0), ValueError, "repeats must be ≥ 1 and warmup ≥ 0"),
    (dict(warmup=-1), ValueError, "repeats must be ≥ 1 and warmup ≥ 0"),
    (dict(repeats=2.5), TypeError, "integers"),
    (dict(batch_sizes=[8]), ValueError, r"no inputs for batch size\(s\) \[8\]"),
    (dict(inputs=lambda b: {}), ValueError, "give the batch_sizes"),
    (dict(inputs=[1, 2]), TypeError, "inputs must be"),
    (dict(inputs={1: torch.zeros(1)}), TypeError, "mapping of keyword arguments"),
])
def test_measure_latency_errors(kwargs, error, match):
    args = dict(models={"m": Recorder("m")}, inputs={1: {"input_ids": torch.zeros(1, 2)}})
    args.update(kwargs)
    threads = torch.get_num_threads()
    with pytest.raises(error, match=match):
        speed.measure_latency(**args)
    assert torch.get_num_threads() == threads


def test_speedups_errors():
    table = speed.measure_latency({"m": Recorder("m")}, {1: {"input_ids": torch.zeros(1, 2)}}, repeats=1, warmup=0)
    with pytest.raises(ValueError, match="was not measured"):
        speed.speedups(table, "teacher")
    with pytest.raises(ValueError, match="not a column"):
        speed.speedups(table, "m", stat="p50")


def test_text_batches_and_benchmark_latency(tokenizer, tiny_bert):
    batches = speed.text_batches(tokenizer, TEXTS, [1, 4], max_length=4)
    assert batches[1]["input_ids"].shape[0] == 1 and batches[4]["input_ids"].shape == (4, 4)
    table = speed.benchmark_latency({"big": tiny_bert(2), "small": tiny_bert(1)}, tokenizer, TEXTS, batch_sizes=(1, 4),
                                 repeats=3, warmup=1, threads=1)
    assert list(table.index) == ["big", "small"] and list(table.columns) == ["latency b1 (ms)", "latency b4 (ms)"]
    assert table.attrs["threads"] == 1 and len(table.attrs["raw"][("big", 4)]) == 3
    assert table.attrs["latency"].loc[("small", 4), "median_ms"] == table.loc["small", "latency b4 (ms)"]
    with pytest.raises(ValueError, match="need at least 32 texts, got 8"):
        speed.benchmark_latency({"m": tiny_bert()}, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="models is empty"):
        speed.benchmark_latency({}, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="measures CPU latency"):
        speed.benchmark_latency({"m": tiny_bert().to("meta")}, tokenizer, TEXTS, batch_sizes=(1,))
    with pytest.raises(TypeError, match="sequence of strings"):
        speed.text_batches(tokenizer, "one text", [1])
    with pytest.raises(ValueError, match="batch_sizes is empty"):
        speed.text_batches(tokenizer, TEXTS, [])
