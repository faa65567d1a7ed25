"""Unit tests for course_utils.evaluation.harness: ``evaluate_classifiers`` on tiny BERTs (quality, size, latency and
memory in one table, paired differences, pretty/markdown/CSV output) and its errors, the Pareto front, the results
path and readable column names."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils.core.hf import dataset_logits
from course_utils.evaluation import harness

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a movie film good bad great awful plot is was".split()
TEXTS = ["the movie is good", "a bad film", "great plot", "the film was awful", "good", "bad bad plot",
         "the plot is great", "awful"]


@pytest.fixture(scope="module")
def labelled(tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"text": TEXTS, "label": [1, 0, 1, 0, 1, 0, 1, 0]})
    return ds.map(lambda x: tokenizer(x["text"], truncation=True, max_length=16), batched=True)


LOGITS = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])


# ================================================================================================ harness
def test_evaluate_classifiers(tokenizer, labelled, tmp_path, tiny_bert):
    teacher, student = tiny_bert(2, seed=0), tiny_bert(1, seed=1)
    from course_utils.evaluation import harness, metrics, size

    given = dataset_logits(student, labelled, tokenizer)
    result = harness.evaluate_classifiers({"teacher": teacher, "student": student, "student int8": size.quantize_int8(student)},
                                     labelled, tokenizer, logits={"student": given}, batch_sizes=(1, 4), repeats=3,
                                     warmup=1, threads=1, n_bins=5)
    t = result.table
    assert list(t.index) == ["teacher", "student", "student int8"] and result.reference == "teacher"
    for col in ("params_m", "size_mb", "weights_mb", "activations_mb_b4", "peak_mb_b4", "b1_median_ms", "b4_p90_ms",
                "b4_throughput", "b1_speedup", "accuracy", "macro_f1", "ece", "confidence", "nll", "agreement",
                "kl_to_teacher"):
        assert col in t.columns, col
    assert t.loc["teacher", "b1_speedup"] == 1.0 and t.loc["teacher", "agreement"] == 1.0
    assert t.loc["teacher", "kl_to_teacher"] == pytest.approx(0.0, abs=1e-9)
    assert t.loc["student", "accuracy"] == metrics.accuracy(given, labelled["label"])
    assert t.loc["student int8", "size_mb"] < t.loc["student", "size_mb"]
    assert t.loc["student int8", "params_m"] == t.loc["student", "params_m"]
    assert result.latency.attrs["threads"] == 1 and t.attrs["examples"] == len(labelled)
    diff = result.difference("student", "teacher", n_resamples=200)
    assert diff.estimate == pytest.approx(t.loc["student", "accuracy"] - t.loc["teacher", "accuracy"])
    assert list(result.compare([("student", "teacher")], n_resamples=200).index) == ["student − teacher"]
    pretty = result.pretty(["accuracy", "b4_median_ms", "peak_mb_b4"])
    assert list(pretty.columns) == ["accuracy", "b4 latency median (ms)", "peak memory b4 (MB)"]
    md = result.to_markdown(["accuracy", "size_mb"])
    assert md.splitlines()[0] == "| model | accuracy | size on disk (MB) |" and len(md.splitlines()) == 5
    path = result.to_csv(tmp_path / "out" / "summary.csv")
    import pandas as pd

    back = pd.read_csv(path, index_col="model")
    assert list(back.index) == list(t.index) and back.loc["student", "accuracy"] == pytest.approx(t.loc["student", "accuracy"])
    with pytest.raises(ValueError, match="unknown model"):
        result.difference("student", "nobody")


def test_evaluate_classifiers_quality_only_and_errors(tokenizer, labelled, tiny_bert):
    model = tiny_bert()
    result = harness.evaluate_classifiers({"m": model}, labelled, tokenizer, batch_sizes=())
    assert result.latency is None and "b1_median_ms" not in result.table.columns
    with pytest.raises(ValueError, match="reference 'x'"):
        harness.evaluate_classifiers({"m": model}, labelled, tokenizer, reference="x", batch_sizes=())
    with pytest.raises(ValueError, match="'label' column"):
        harness.evaluate_classifiers({"m": model}, labelled.remove_columns("label"), tokenizer, batch_sizes=())
    with pytest.raises(ValueError, match="unknown model"):
        harness.evaluate_classifiers({"m": model}, labelled, tokenizer, logits={"x": LOGITS}, batch_sizes=())
    with pytest.raises(ValueError, match="4 rows for 8 examples"):
        harness.evaluate_classifiers({"m": model}, labelled, tokenizer, logits={"m": LOGITS}, batch_sizes=())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        harness.evaluate_classifiers({"m": "model"}, labelled, tokenizer)
    with pytest.raises(ValueError, match="non-empty mapping"):
        harness.evaluate_classifiers({}, labelled, tokenizer)


def test_pareto_front():
    import pandas as pd

    t = pd.DataFrame({"accuracy": [0.85, 0.83, 0.80, 0.79, 0.85], "latency": [100.0, 50.0, 20.0, 30.0, 120.0]},
                     index=["teacher", "student", "tiny", "dominated", "slow twin"])
    front = harness.pareto_front(t, maximize=["accuracy"], minimize=["latency"])
    assert front.to_dict() == {"teacher": True, "student": True, "tiny": True, "dominated": False, "slow twin": False}
    with pytest.raises(ValueError, match="at least one column"):
        harness.pareto_front(t)
    with pytest.raises(ValueError, match="not in the table"):
        harness.pareto_front(t, maximize=["f1"])
    t.loc["tiny", "latency"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        harness.pareto_front(t, maximize=["accuracy"], minimize=["latency"])


def test_results_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path))
    path = harness.results_path("06_summary.csv")
    assert path == tmp_path / "results" / "06_summary.csv" and path.parent.is_dir()
    for bad in ("", "../x.csv", ".hidden", 3):
        with pytest.raises(ValueError, match="plain file name"):
            harness.results_path(bad)


def test_readable_columns():
    import pandas as pd

    t = pd.DataFrame({"size_mb": [1.0], "b32_median_ms": [2.0], "peak_mb_b8": [3.0], "accuracy drop": [0.1]},
                     index=["m"])
    out = harness.readable_columns(t)
    assert list(out.columns) == ["size on disk (MB)", "b32 latency median (ms)", "peak memory b8 (MB)",
                                 "accuracy drop"]
    assert list(t.columns)[0] == "size_mb"  # a renamed copy: the harness's table keeps its machine-readable names
