"""Unit tests for course_utils.vision.fashion_mnist: the idx reader, the Fashion-MNIST loader (fake files and the
real asset), balanced subsets and SmallCNN."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils.core import assets
from course_utils.vision import fashion_mnist

pytestmark = pytest.mark.usefixtures("single_thread")


def write_idx(path: Path, array: np.ndarray, compress: bool = True, type_code: int = 0x08) -> Path:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture()
def fake_root(tmp_path):
    """A miniature Fashion-MNIST: 10 train and 4 test images per class, pixel value = 10·label + index."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 10), ("t10k", 4)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels * 10
        images[:, 0, 1] = np.arange(len(labels))
        images[:, 5:20, 5:20] = 255
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    return tmp_path


# ---------------------------------------------------------------------------------------------------- read_idx
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, compress=compress)
    out = fashion_mnist.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and np.array_equal(out, array)


def test_read_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fashion_mnist.read_idx(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an idx file"):
        fashion_mnist.read_idx(bad)
    floats = write_idx(tmp_path / "f", np.zeros(3, dtype=np.uint8), compress=False, type_code=0x0D)
    with pytest.raises(ValueError, match="only unsigned bytes"):
        fashion_mnist.read_idx(floats)
    full = write_idx(tmp_path / "t", np.zeros((4, 5), dtype=np.uint8), compress=False)
    full.write_bytes(full.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.read_idx(full)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="could not be read"):
        fashion_mnist.read_idx(broken_gz)


# ------------------------------------------------------------------------------------------------------ loading
def test_load_from_root(fake_root):
    data = fashion_mnist.load_fashion_mnist(n_train=30, n_test=20, seed=0, root=fake_root)
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) == 1.0
    assert data.class_names == list(fashion_mnist.FASHION_MNIST_CLASSES) and len(data.class_names) == 10
    # labels stay attached to their images (the fake pixel (0, 0) encodes the label)
    assert torch.equal((data.x_train[:, 0, 0, 0] * 255 / 10).round().long(), data.y_train)
    assert torch.equal((data.x_test[:, 0, 0, 0] * 255 / 10).round().long(), data.y_test)
    assert torch.bincount(data.y_test, minlength=10).tolist() == [2] * 10   # balanced
    counts = torch.bincount(data.y_train, minlength=10).tolist()
    assert counts == [3] * 10


def test_load_is_seeded_and_test_draw_ignores_n_train(fake_root):
    a = fashion_mnist.load_fashion_mnist(n_train=30, n_test=20, seed=1, root=fake_root)
    b = fashion_mnist.load_fashion_mnist(n_train=30, n_test=20, seed=1, root=fake_root)
    c = fashion_mnist.load_fashion_mnist(n_train=50, n_test=20, seed=1, root=fake_root)
    d = fashion_mnist.load_fashion_mnist(n_train=30, n_test=20, seed=2, root=fake_root)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(a.x_test, c.x_test)
    assert not torch.equal(a.x_train, d.x_train)
    everything = fashion_mnist.load_fashion_mnist(n_train=None, n_test=None, root=fake_root)
    assert len(everything.y_train) == 100 and len(everything.y_test) == 40


@pytest.mark.parametrize("kwargs", [dict(n_train=0), dict(n_train=101), dict(n_test=41), dict(n_train=2.5),
                                    dict(n_train=True)])
def test_load_rejects_bad_sizes(fake_root, kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        fashion_mnist.load_fashion_mnist(root=fake_root, **{"n_train": 10, "n_test": 10, **kwargs})


def test_missing_files_name_the_fix(tmp_path, fake_root):
    (fake_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*course.sh setup"):
        fashion_mnist.load_fashion_mnist(root=fake_root)


def test_missing_asset_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(assets.AssetMissingError, match="bash course.sh setup"):
        fashion_mnist.load_fashion_mnist(n_train=10, n_test=10)


def test_real_asset():
    if not assets.is_fetched("fashion-mnist"):
        pytest.skip("fashion-mnist asset not fetched (bash course.sh setup)")
    data = fashion_mnist.load_fashion_mnist(n_train=200, n_test=100, seed=0)
    assert data.x_train.shape == (200, 1, 28, 28) and data.x_test.shape == (100, 1, 28, 28)
    assert torch.bincount(data.y_train, minlength=10).tolist() == [20] * 10
    images, labels = fashion_mnist._load_split(fashion_mnist.fashion_mnist_dir(), "train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    images, labels = fashion_mnist._load_split(fashion_mnist.fashion_mnist_dir(), "test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


def test_balanced_subset():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)
    idx = fashion_mnist.balanced_subset(labels, 6, seed=0)
    assert sorted(labels[idx].tolist()) == [0, 0, 1, 1, 2, 2]
    assert len(set(idx.tolist())) == 6
    assert torch.equal(idx, fashion_mnist.balanced_subset(labels, 6, seed=0))
    assert sorted(labels[fashion_mnist.balanced_subset(labels, 7, seed=0)].tolist()) == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="class 2 has only 2"):
        fashion_mnist.balanced_subset(labels, 9, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        fashion_mnist.balanced_subset(labels, 0, seed=0)


# -------------------------------------------------------------------------------------------------------- CNNs
def test_cnn_shapes_and_features():
    model = fashion_mnist.make_cnn((4, 8), seed=0)
    x = torch.rand(3, 1, 28, 28)
    logits, maps = model.forward_features(x)
    assert logits.shape == (3, 10)
    assert [tuple(m.shape[1:]) for m in maps] == model.feature_shapes() == [(4, 14, 14), (8, 7, 7)]
    assert torch.allclose(model(x), logits)
    assert all(torch.equal(a, b) for a, b in zip(model.features(x), maps))
    # gradients reach the first block through a feature map (what a FitNets hint loss needs)
    model.features(x)[0].pow(2).mean().backward()
    assert model.blocks[0][0].weight.grad is not None and model.head.weight.grad is None
    assert model.feature_shapes(32) == [(4, 16, 16), (8, 8, 8)]


def test_cnn_is_seeded_and_configurable():
    a, b = fashion_mnist.make_cnn((4,), seed=3), fashion_mnist.make_cnn((4,), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    plain = fashion_mnist.make_cnn((4, 8), batch_norm=False, seed=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert plain.blocks[0][0].bias is not None
    avg = fashion_mnist.SmallCNN((4, 8), head="avg", n_classes=3, seed=0)
    assert avg.head.in_features == 8 and avg(torch.rand(2, 1, 20, 36)).shape == (2, 3)
    rgb = fashion_mnist.SmallCNN((4,), in_channels=3, image_size=32)
    assert rgb(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=()), "non-empty"),
    (dict(channels=(4, 0)), "positive integers"),
    (dict(channels=(4.0,)), "positive integers"),
    (dict(n_classes=1), "at least 2"),
    (dict(in_channels=0), "in_channels"),
    (dict(head="max"), "head must be"),
    (dict(channels=(4, 4, 4, 4, 4), image_size=28), "image_size must be"),
])
def test_cnn_rejects_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fashion_mnist.SmallCNN(**kwargs)


def test_cnn_rejects_bad_inputs():
    model = fashion_mnist.make_cnn((4, 8), seed=0)
    with pytest.raises(ValueError, match=r"view\(-1, 1, 28, 28\)"):
        model(torch.rand(2, 784))
    with pytest.raises(ValueError, match="built for 28×28"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(TypeError):
        model(np.zeros((2, 1, 28, 28)))
    small = fashion_mnist.SmallCNN((4, 4, 4), head="avg")
    with pytest.raises(ValueError, match="too small"):
        small(torch.rand(1, 1, 4, 4))
