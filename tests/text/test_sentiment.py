"""Unit tests for course_utils.text.sentiment: the label rule, the snippet reader, the seeded splits (small profile
from a temporary snippets file, gpu profile from an in-memory stand-in for the hub dataset) and tokenisation.

No test touches the network; one test reads the real ``rotten-tomatoes`` asset and is skipped when it is not cached.
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest

from course_utils.core import assets
from course_utils.text import sentiment
from course_utils.text.sentiment import load_sentiment, read_snippets, score_to_label, tokenize


datasets = pytest.importorskip("datasets")

N_POS, N_NEG, N_NEUTRAL, N_DUPLICATES = 26, 24, 6, 4
N_KEPT = N_POS + N_NEG

# the words of the snippets: the shared ``tokenizer`` fixture puts the special tokens before them
VOCAB = "snippet is a an great awful movie film neutral about plot".split() + [str(i) for i in range(30)]


# ------------------------------------------------------------------------------------------------ fixtures
def _rows() -> list[tuple[int, float, str]]:
    """60 synthetic snippets: 26 positive, 24 negative, 6 neutral, 4 duplicates (case/whitespace variants)."""
    rows = []
    for i in range(N_POS):
        rows.append((len(rows) + 1, 0.5 + (i % 7) * 0.5, f"snippet {i} is a great movie"))
    for i in range(N_NEG):
        rows.append((len(rows) + 1, -0.5 - (i % 7) * 0.5, f"snippet {i} is an awful film"))
    for i, score in enumerate((0.0, 0.3, -0.3, 0.49, -0.49, 0.1)):
        rows.append((len(rows) + 1, score, f"neutral snippet {i} about a plot"))
    # duplicates of kept snippets; the first occurrence wins (the second has the opposite score on purpose)
    rows.append((len(rows) + 1, -2.0, "SNIPPET 0 is a great   movie"))
    rows.append((len(rows) + 1, 1.0, "  snippet 1 IS a great movie "))
    rows.append((len(rows) + 1, 3.0, "snippet 0 is an awful film"))
    rows.append((len(rows) + 1, -1.0, "snippet\t2 is an awful film"))
    assert len(rows) == N_POS + N_NEG + N_NEUTRAL + N_DUPLICATES == 60
    return rows


@pytest.fixture(scope="module")
def snippets_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("snippets") / "movieReviewSnippets_GroundTruth.txt"
    # the real file's format: id<TAB>score<TAB>text, CRLF line ends
    path.write_bytes("".join(f"{i}\t{s}\t{t}\r\n" for i, s, t in _rows()).encode("utf-8"))
    return path


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def _texts(split) -> list[str]:
    return list(split["text"])


@pytest.fixture(scope="module")
def small(snippets_file):
    return load_sentiment(path=snippets_file, n_train=20, n_validation=10, n_test=10)


# ------------------------------------------------------------------------------------------- score_to_label
@pytest.mark.parametrize("score, label", [
    (2.3, 1), (0.5, 1), (4.0, 1), (-0.5, 0), (-3.1, 0), (0.49, None), (-0.49, None), (0.0, None),
    ("1.5", 1), (np.float32(-2.0), 0), (1, 1),
])
def test_score_to_label_rule(score, label):
    assert score_to_label(score) == label


def test_score_to_label_margins():
    assert score_to_label(0.7, margin=1.0) is None
    assert score_to_label(1.0, margin=1.0) == 1 and score_to_label(-1.0, margin=1.0) == 0
    # margin 0: every non-zero score has a side, exactly 0 stays neutral
    assert score_to_label(0.01, margin=0.0) == 1 and score_to_label(-0.01, margin=0.0) == 0
    assert score_to_label(0.0, margin=0.0) is None
    assert sentiment.NEUTRAL_MARGIN == 0.5


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_score_to_label_rejects_non_finite(score):
    with pytest.raises(ValueError, match="finite"):
        score_to_label(score)


def test_score_to_label_rejects_bad_input():
    with pytest.raises(ValueError, match="margin"):
        score_to_label(1.0, margin=-0.1)
    with pytest.raises(ValueError):
        score_to_label("very good")
    with pytest.raises(TypeError):
        score_to_label(None)


# -------------------------------------------------------------------------------------------- read_snippets
def test_read_snippets_format(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"1\t2.5\tA fine film .\r\n"
                     b"\r\n"                                   # blank lines are skipped
                     b"2\t-1.25\tTabs\tinside the text stay\r\n"
                     b"3\t0\t  padded text  \r\n"
                     b"4\t1.0\tno final newline")
    assert read_snippets(path) == [
        (1, 2.5, "A fine film ."),
        (2, -1.25, "Tabs\tinside the text stay"),
        (3, 0.0, "padded text"),
        (4, 1.0, "no final newline"),
    ]
    assert read_snippets(str(path))[0][2] == "A fine film ."  # str paths too


def test_read_snippets_utf8(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes("7\t1.5\tAmélie is charming — really\r\n".encode("utf-8"))
    assert read_snippets(path) == [(7, 1.5, "Amélie is charming — really")]


def test_read_snippets_malformed_line_has_its_number(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"1\t2.5\tok\r\n2\t1.0\tok too\r\nno tabs on this line\r\n")
    with pytest.raises(ValueError, match=r"s\.txt:3: expected 'id<TAB>score<TAB>text'"):
        read_snippets(path)


def test_read_snippets_bad_score_has_its_number(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"1\t2.5\tok\r\n2\tgood\ttext\r\n")
    with pytest.raises(ValueError, match=r":2: bad id or score"):
        read_snippets(path)
    path.write_bytes(b"x1\t2.5\tok\r\n")
    with pytest.raises(ValueError, match=r":1: bad id or score"):
        read_snippets(path)


def test_read_snippets_fixture_file(snippets_file):
    rows = read_snippets(snippets_file)
    assert len(rows) == 60
    assert rows[0] == (1, 0.5, "snippet 0 is a great movie")
    assert rows[-1][2] == "snippet\t2 is an awful film"


# --------------------------------------------------------------------------------- load_sentiment (small)
def test_splits_and_sizes(small):
    assert list(small) == ["train", "validation", "test", "transfer"] == list(sentiment.SPLITS)
    assert {k: len(v) for k, v in small.items()} == {"train": 20, "validation": 10, "test": 10, "transfer": 10}
    for split in ("train", "validation", "test"):
        assert small[split].column_names == ["text", "label"]
        assert small[split].features["label"].names == ["negative", "positive"]
        assert set(small[split]["label"]) <= {0, 1}


def test_transfer_has_no_label(small):
    assert small["transfer"].column_names == ["text"]


def test_duplicates_and_neutral_dropped(small):
    texts = [t for split in small.values() for t in _texts(split)]
    assert len(texts) == N_KEPT
    assert len({_normal(t) for t in texts}) == N_KEPT
    assert not any(t.startswith("neutral") for t in texts)
    assert "SNIPPET 0 is a great   movie" not in texts  # the first occurrence is kept, verbatim
    assert "snippet 0 is a great movie" in texts


def test_labels_follow_the_scores(small, snippets_file):
    first = {}
    for _, score, text in read_snippets(snippets_file):
        first.setdefault(_normal(text), score_to_label(score))
    for split in ("train", "validation", "test"):
        for row in small[split]:
            assert row["label"] == first[_normal(row["text"])]


def test_no_overlap_between_splits(small):
    sets = {k: {_normal(t) for t in _texts(v)} for k, v in small.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)


def test_splits_are_stratified(small):
    for split in ("validation", "test"):  # 26 : 24 overall → 5 ± 1 positives in 10
        assert 4 <= sum(small[split]["label"]) <= 6


def test_same_seed_same_splits_other_seed_differs(snippets_file, small):
    again = load_sentiment(path=snippets_file, n_train=20, n_validation=10, n_test=10, seed=0)
    for split in small:
        assert _texts(again[split]) == _texts(small[split])
    other = load_sentiment(path=snippets_file, n_train=20, n_validation=10, n_test=10, seed=1)
    assert _texts(other["test"]) != _texts(small["test"])
    assert set(_texts(other["train"])) != set(_texts(small["train"]))


def test_none_takes_the_remainder(snippets_file):
    d = load_sentiment(path=snippets_file, n_train=None, n_validation=5, n_test=5, n_transfer=0)
    assert {k: len(v) for k, v in d.items()} == {"train": 40, "validation": 5, "test": 5, "transfer": 0}
    d = load_sentiment(path=snippets_file, n_train=10, n_validation=5, n_test=5, n_transfer=3)
    assert {k: len(v) for k, v in d.items()} == {"train": 10, "validation": 5, "test": 5, "transfer": 3}


def test_margin_keeps_more(snippets_file):
    d = load_sentiment(path=snippets_file, n_train=None, n_validation=0, n_test=0, n_transfer=0, margin=0.2)
    assert len(d["train"]) == N_KEPT + 4  # ±0.3 and ±0.49 now have a side; 0.0 and 0.1 do not


def test_profile_objects_and_names(snippets_file):
    by_object = load_sentiment(types.SimpleNamespace(name="small"), path=snippets_file, n_train=20,
                               n_validation=10, n_test=10)
    by_name = load_sentiment("small", path=snippets_file, n_train=20, n_validation=10, n_test=10)
    assert _texts(by_object["train"]) == _texts(by_name["train"])


@pytest.mark.parametrize("sizes, match", [
    (dict(n_train=45), "only 50 are available"),
    (dict(n_train=-1), "non-negative integer"),
    (dict(n_train=2.5), "non-negative integer"),
    (dict(n_train=None, n_transfer=None), "at most one split size may be None"),
])
def test_impossible_sizes(snippets_file, sizes, match):
    kwargs = dict(n_train=20, n_validation=10, n_test=10)
    kwargs.update(sizes)
    with pytest.raises(ValueError, match=match):
        load_sentiment(path=snippets_file, **kwargs)


def test_unknown_profile(snippets_file):
    with pytest.raises(ValueError, match="unknown profile 'tiny'"):
        load_sentiment("tiny", path=snippets_file)


def test_describe(small):
    table = sentiment.describe_splits(small)
    assert list(table.index) == ["train", "validation", "test", "transfer"]
    assert table.loc["train", "examples"] == 20
    assert table.loc["transfer", "labelled"] == False  # noqa: E712  (numpy bool)
    assert math.isnan(table.loc["transfer", "positive"])
    assert 0 <= table.loc["test", "positive"] <= 1
    assert table.loc["train", "mean words"] > 3


# ------------------------------------------------------------------------------------ load_sentiment (gpu)
def _hub(n_train: int = 20, splits=("train", "validation", "test")):
    from datasets import Dataset, DatasetDict

    def split(n, name):
        return Dataset.from_dict({"text": [f"{name} review {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})

    sizes = {"train": n_train, "validation": 4, "test": 6}
    return DatasetDict({name: split(sizes[name], name) for name in splits})


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load(name):
        calls.append(name)
        return _hub()

    monkeypatch.setattr(sentiment, "_load_hub_dataset", load)
    return calls


def test_gpu_profile_uses_the_hub_splits(fake_hub):
    d = load_sentiment("gpu", n_train=8, seed=0)
    assert fake_hub == [sentiment.HUB_DATASET] == ["rotten_tomatoes"]
    assert list(d) == list(sentiment.SPLITS)
    assert {k: len(v) for k, v in d.items()} == {"train": 8, "validation": 4, "test": 6, "transfer": 12}
    assert d["transfer"].column_names == ["text"]
    assert _texts(d["validation"]) == _texts(_hub()["validation"])
    train, transfer = set(_texts(d["train"])), set(_texts(d["transfer"]))
    assert not train & transfer and train | transfer == set(_texts(_hub()["train"]))
    assert sum(d["train"]["label"]) == 4  # stratified: 4 of each label


def test_gpu_profile_sizes_and_seed(fake_hub):
    d = load_sentiment(types.SimpleNamespace(name="gpu"), n_train=None, n_transfer=None)
    assert (len(d["train"]), len(d["transfer"])) == (10, 10)  # both None: half of the hub's train split each
    d = load_sentiment("gpu", n_train=None, n_transfer=5)
    assert (len(d["train"]), len(d["transfer"])) == (15, 5)
    a, b = load_sentiment("gpu", n_train=8, seed=0), load_sentiment("gpu", n_train=8, seed=0)
    assert _texts(a["train"]) == _texts(b["train"])
    assert _texts(load_sentiment("gpu", n_train=8, seed=3)["train"]) != _texts(a["train"])
    with pytest.raises(ValueError, match="only 20 are available"):
        load_sentiment("gpu", n_train=30)


def test_gpu_profile_missing_split(monkeypatch):
    monkeypatch.setattr(sentiment, "_load_hub_dataset", lambda name: _hub(splits=("train", "test")))
    with pytest.raises(ValueError, match=r"lacks the splits \['validation'\]"):
        load_sentiment("gpu", n_train=8)


# ---------------------------------------------------------------------------------------------- tokenize
def test_tokenize_adds_columns(small, tokenizer):
    tok = tokenize(small, tokenizer, max_length=8)
    for split in small:
        ds = tok[split]
        assert set(ds.column_names) == set(small[split].column_names) | {"input_ids", "attention_mask",
                                                                          "token_type_ids", "length"}
        assert _texts(ds) == _texts(small[split])
        assert ds["length"] == [len(ids) for ids in ds["input_ids"]]
        assert max(ds["length"]) == 8 and min(ds["length"]) >= 3  # truncated, [CLS] … [SEP], not padded
    row = tok["train"][0]
    assert row["input_ids"][0] == tokenizer.cls_token_id and row["input_ids"][-1] == tokenizer.sep_token_id


def test_tokenize_single_dataset_long_limit(small, tokenizer):
    ds = tokenize(small["test"], tokenizer, max_length=64)
    assert ds["length"] == [len(tokenizer(t)["input_ids"]) for t in _texts(small["test"])]
    assert "label" in ds.column_names


def test_tokenize_rejects_short_max_length(small, tokenizer):
    with pytest.raises(ValueError, match="at least 8"):
        tokenize(small, tokenizer, max_length=7)


# ------------------------------------------------------------------------------------------- real asset
def test_real_rotten_tomatoes_asset():
    from course_utils.text.sentiment import load_sentiment, read_snippets

    try:
        path = assets.path("rotten-tomatoes", "movieReviewSnippets_GroundTruth.txt")
    except assets.AssetMissingError:
        pytest.skip("rotten-tomatoes asset not cached (python -m course_utils.assets fetch)")
    rows = read_snippets(path)
    assert len(rows) == 10_605
    d = load_sentiment(path=path, n_train=None, n_validation=1000, n_test=2000, n_transfer=0)
    labels = np.concatenate([d[s]["label"] for s in ("train", "validation", "test")])
    assert len(labels) == 10_070
    assert abs(labels.mean() - 0.496) < 0.0005
    default = load_sentiment()  # the default path is this asset
    assert {k: len(v) for k, v in default.items()} == {"train": 2000, "validation": 1000, "test": 2000,
                                                        "transfer": 5070}
