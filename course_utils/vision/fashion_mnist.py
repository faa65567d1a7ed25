"""Fashion-MNIST from the offline asset, and small CNNs whose intermediate feature maps are one call away.

Used by notebook 07 (multi-teacher, born-again, data-free distillation on images) and notebook 04 (feature
distillation: FitNets hints and attention transfer need the teacher's and the student's block outputs).

The images come from the Debian package ``dataset-fashion-mnist`` (Xiao, Rasul & Vollgraf 2017, MIT licence),
fetched once by ``bash course.sh setup`` (or ``python -m course_utils.core.assets fetch fashion-mnist``) into the
course cache. On a machine without ``apt`` (macOS, Windows), download the four ``*-idx?-ubyte.gz`` files from
https://github.com/zalandoresearch/fashion-mnist (``data/fashion``) into a folder and pass it as ``root=``.

Typical use::

    data = load_fashion_mnist(n_train=4000, n_test=2000, seed=0)   # (N, 1, 28, 28) float32 in [0, 1]
    model = make_cnn((16, 32), seed=0)
    logits = model(data.x_test)                                    # (N, 10)
    maps = model.features(data.x_test[:8])                         # [(8, 16, 14, 14), (8, 32, 7, 7)]
"""
from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..core import assets

__all__ = ['FASHION_MNIST_CLASSES', 'ImageData', 'read_idx', 'fashion_mnist_dir', 'balanced_subset', 'load_fashion_mnist', 'SmallCNN', 'make_cnn']


FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""Class names in label order (label 0 = T-shirt/top, …, 9 = Ankle boot), from the data set's README."""

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx format (LeCun's MNIST files): magic = 0x00 0x00 <dtype code> <number of dimensions>, then one big-endian
# uint32 per dimension, then the data. Fashion-MNIST only uses unsigned bytes (code 0x08).
_IDX_UBYTE = 0x08


@dataclass
class ImageData:
    """A train/test split of images.

    Attributes:
        x_train: ``(N_train, 1, 28, 28)`` float32 pixel intensities in [0, 1].
        y_train: ``(N_train,)`` int64 labels 0–9.
        x_test: ``(N_test, 1, 28, 28)``; y_test: ``(N_test,)``.
        class_names: names of the labels, in label order.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]


# --------------------------------------------------------------------------------------------------- reading
def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (optionally gzip-compressed) of unsigned bytes into an array of its stored shape.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an idx file of unsigned bytes, or is truncated (e.g. an interrupted download).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no idx file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a cut-off gzip stream is an EOFError
        raise ValueError(f"{path} could not be read ({err}); delete it and fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an idx file (its first bytes are {raw[:4]!r}, expected 00 00 08 <ndim>)")
    if raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path} stores idx type code 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes in all), "
                         f"the file has {len(raw)} bytes; delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """The folder holding the four Fashion-MNIST idx files.

    Args:
        root: a folder of your own with ``train-images-idx3-ubyte(.gz)`` etc.; default: the course's offline asset.

    Raises:
        course_utils.core.assets.AssetMissingError: the asset was never fetched (the message names the set-up command).
        FileNotFoundError: ``root`` (or the asset) lacks one of the files.
    """
    if root is None:

        folder = assets.path("fashion-mnist") / "datasets" / "fashion-mnist"
    else:
        folder = Path(root).expanduser()
    missing = [name for pair in _FILES.values() for name in pair if _find(folder, name) is None]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(n + '.gz' for n in missing)}. Run `bash course.sh setup` (or "
            "`python -m course_utils.core.assets fetch fashion-mnist --force`), or download the files from "
            "https://github.com/zalandoresearch/fashion-mnist (data/fashion) and pass their folder as root=."
        )
    return folder


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    return None


@functools.lru_cache(maxsize=4)
def _load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FILES[split]
    images = read_idx(_find(folder, images_name))  # type: ignore[arg-type]
    labels = read_idx(_find(folder, labels_name))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{split} split of {folder}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def balanced_subset(labels: torch.Tensor | np.ndarray, n: int, seed: int, n_classes: int | None = None) -> torch.Tensor:
    """Indices of ``n`` examples drawn at random with (as nearly as possible) equal counts per class.

    Each class gets ``n // C`` examples; the remainder goes to the first classes. Same seed, same indices.

    Raises:
        ValueError: ``n`` is not positive, or a class has fewer examples than its share.
    """
    labels = torch.as_tensor(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(n_classes):
        share = n // n_classes + (1 if c < n % n_classes else 0)
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < share:
            raise ValueError(f"class {c} has only {len(pool)} examples, {share} requested; ask for at most "
                             f"{n_classes * len(pool)} examples")
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[:share]])
    idx = torch.cat(chosen)
    return idx[torch.randperm(len(idx), generator=gen)]  # mixed classes, so mini-batches are not sorted by label


def load_fashion_mnist(n_train: int | None = 5000, n_test: int | None = 2000, seed: int = 0,
                       root: str | Path | None = None) -> ImageData:
    """Seeded, class-balanced subsets of Fashion-MNIST as tensors.

    Args:
        n_train: images drawn from the 60,000 official training images (``None``: all of them).
        n_test: images drawn from the 10,000 official test images (``None``: all of them). The test draw depends
            only on ``seed`` and ``n_test``, never on ``n_train``.
        seed: selects the subsets (same seed, same images).
        root: folder with the idx files instead of the course asset (see :func:`fashion_mnist_dir`).

    Returns:
        :class:`ImageData` with images ``(N, 1, 28, 28)`` float32 in [0, 1] and int64 labels.

    Raises:
        course_utils.core.assets.AssetMissingError: the offline asset is missing; run ``bash course.sh setup``.
        ValueError: a subset size outside ``[1, split size]``.
    """
    folder = fashion_mnist_dir(root)
    out = []
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = _load_split(folder, split)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(labels)):
            raise ValueError(f"n_{split} must be an integer in [1, {len(labels)}] or None (all), got {n!r}")
        y = torch.from_numpy(labels.astype(np.int64))
        idx = torch.arange(len(labels)) if n is None else balanced_subset(y, n, seed=2 * seed + offset, n_classes=10)
        x = torch.from_numpy(images[idx.numpy()].astype(np.float32) / 255.0).unsqueeze(1)
        out += [x, y[idx]]
    return ImageData(*out, class_names=list(FASHION_MNIST_CLASSES))


# ------------------------------------------------------------------------------------------------------ CNNs
class SmallCNN(nn.Module):
    """A small CNN: ``len(channels)`` blocks of conv3×3 → (BatchNorm) → ReLU → max-pool 2×2, then a linear layer.

    Each block halves the spatial size: a 28×28 input gives feature maps of 14×14, 7×7, 3×3, ….
    :meth:`features` returns every block's output — the "hints" of FitNets (Romero et al. 2015) and the maps
    attention transfer (Zagoruyko & Komodakis 2017) summarises.

    Args:
        channels: output channels of each block, e.g. ``(16, 32)``.
        n_classes: size of the output layer.
        in_channels: image channels (1 for Fashion-MNIST).
        image_size: side of the (square) input images; fixes the size of the ``"flatten"`` head.
        head: ``"flatten"`` (default): a linear layer on the flattened last feature map — keeps *where* things are,
            clearly more accurate for small nets on 28×28 images; ``"avg"``: global average pooling first (any image
            size, far fewer parameters).
        batch_norm: put a BatchNorm2d after each convolution (its running statistics are also what data-free
            distillation à la DeepInversion matches).
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)`` (same seed, same model).
    """

    def __init__(self, channels: Sequence[int] = (16, 32), n_classes: int = 10, in_channels: int = 1,
                 image_size: int = 28, head: str = "flatten", batch_norm: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        channels = tuple(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels}")
        for name, value in (("n_classes", n_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if head not in ("flatten", "avg"):
            raise ValueError(f"head must be 'flatten' or 'avg', got {head!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2 ** len(channels):
            raise ValueError(f"image_size must be an integer ≥ {2 ** len(channels)} for {len(channels)} blocks that "
                             f"each halve the size, got {image_size!r}")
        if seed is not None:
            torch.manual_seed(seed)
        self.channels = channels
        self.in_channels = in_channels
        self.image_size = image_size
        self.head_kind = head
        blocks = []
        width = in_channels
        for c in channels:
            layers: list[nn.Module] = [nn.Conv2d(width, c, kernel_size=3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            blocks.append(nn.Sequential(*layers))
            width = c
        self.blocks = nn.ModuleList(blocks)
        side = image_size // 2 ** len(channels)
        self.head = nn.Linear(width * side * side if head == "flatten" else width, n_classes)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of images (N, {self.in_channels}, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            hint = " (flattened images? use x.view(-1, 1, 28, 28))" if x.dim() == 2 else ""
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}{hint}")
        if self.head_kind == "flatten" and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"this CNN was built for {self.image_size}×{self.image_size} images (flatten head), got "
                             f"{tuple(x.shape[-2:])}; build it with image_size=… or head='avg'")
        min_side = 2 ** len(self.blocks)
        if min(x.shape[-2:]) < min_side:
            raise ValueError(f"images of {tuple(x.shape[-2:])} pixels are too small for {len(self.blocks)} blocks "
                             f"that each halve the size; they need at least {min_side}×{min_side}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(N, n_classes)`` and the list of block outputs ``[(N, channels[i], H / 2**(i+1), …), …]``."""
        self._check_input(x)
        maps = []
        h = x
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        pooled = h.flatten(1) if self.head_kind == "flatten" else h.mean(dim=(-2, -1))
        return self.head(pooled), maps

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output (after its pooling), first block first; gradients flow through them."""
        return self.forward_features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` for images ``(N, in_channels, H, W)``."""
        return self.forward_features(x)[0]

    def feature_shapes(self, image_size: int | tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
        """``(channels, height, width)`` of each block's output for square (or ``(H, W)``) input images
        (default: the ``image_size`` the model was built for)."""
        image_size = self.image_size if image_size is None else image_size
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        shapes = []
        for c in self.channels:
            h, w = h // 2, w // 2
            shapes.append((c, h, w))
        return shapes


def make_cnn(channels: Sequence[int] = (16, 32), n_classes: int = 10, seed: int | None = None,
             head: str = "flatten", batch_norm: bool = True) -> SmallCNN:
    """A :class:`SmallCNN` for 1-channel 28×28 images such as Fashion-MNIST (same seed, same initial weights)."""
    return SmallCNN(channels, n_classes=n_classes, in_channels=1, image_size=28, head=head, batch_norm=batch_norm,
                    seed=seed)
