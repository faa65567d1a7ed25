"""Feature distillation: losses on intermediate representations, layer mapping, and linear CKA.

Logit KD (notebooks 01–03) only tells the student what the teacher *outputs*. The losses here also tell it what the
teacher *computes on the way*: its hidden states (FitNets hints, TinyBERT, DistilBERT's cosine loss), its attention
maps (TinyBERT), or where a CNN looks (attention transfer). All of them are pure functions of tensors, so they can be
tested on their own; :mod:`course_utils.text.feature_trainer` wires them into the ``Trainer``.

=====================================  ==========================================================  ==================
function                               loss (per matched layer)                                    from
=====================================  ==========================================================  ==================
:func:`hint_loss`                      mean((W·h_s − h_t)²), W a learned projection when the       Romero et al. 2015
                                       widths differ (``hidden_mse`` is the same function)         Jiao et al. 2020
:func:`hidden_cosine_loss`             mean(1 − cos(W·h_s, h_t)) over tokens                       Sanh et al. 2019
:func:`attention_map_loss`             mean((A_s − A_t)²) per head (``"mse"``), or                 Jiao et al. 2020
                                       KL(A_t ‖ A_s) per query row (``"kl"``)                      Wang et al. 2020
:func:`attention_transfer_loss`        mean((a_s − a_t)²), a = normalised Σ_c |F_c|^p map          Zagoruyko &
                                                                                                   Komodakis 2017
:func:`linear_cka`                     similarity of two representations of the same examples     Kornblith et al.
                                                                                                   2019
=====================================  ==========================================================  ==================

Layer indices follow ``transformers``' ``output_hidden_states``: for an encoder with L layers,
``hidden_states`` has L + 1 entries — index 0 is the embedding output, index i the output of layer i. An attention map
exists for layers 1…L only (``attentions[i - 1]`` belongs to layer i). :func:`layer_map` builds a list of
``(student_index, teacher_index)`` pairs in that convention; :func:`check_layer_map` validates one against both
models' layer counts.

Shapes: B = batch, S = sequence length, H = hidden width, h = attention heads, C/H/W = CNN channels/height/width.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['LayerPairs', 'STRATEGIES', 'Strategy', 'layer_map', 'check_layer_map', 'num_layers', 'hidden_width', 'make_projection', 'hint_loss', 'hidden_mse', 'hidden_cosine_loss', 'ATTENTION_KINDS', 'attention_map_loss', 'spatial_attention', 'attention_transfer_loss', 'token_features', 'linear_cka', 'cka_matrix']


LayerPairs = list[tuple[int, int]]
"""``[(student_index, teacher_index), …]`` in ``hidden_states`` indexing (0 = embeddings, i = layer i)."""

STRATEGIES = ("uniform", "last")
Strategy = Union[str, Sequence[int], Sequence[tuple[int, int]]]


# ============================================================================================ layer mapping
def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _layer_count(value: Any, what: str) -> int:
    n = _int(value, what)
    if n < 1:
        raise ValueError(f"{what} must be ≥ 1 (a number of transformer layers), got {n}")
    return n


def layer_map(n_student: int, n_teacher: int, strategy: Strategy = "uniform", *,
              include_embeddings: bool = False) -> LayerPairs:
    """Which teacher layer each student layer should imitate.

    Args:
        n_student: the student's number of layers M (``config.num_hidden_layers``).
        n_teacher: the teacher's number of layers N ≥ M for the named strategies.
        strategy:
            * ``"uniform"`` — TinyBERT's g(m) = m·N/M: student layer m ↔ teacher layer ⌊m·N/M⌋, so the layers are
              spread evenly and the last student layer always meets the last teacher layer (6 → 3: 2, 4, 6);
            * ``"last"`` — the last M teacher layers (Sun et al. 2019's PKD-Last; 6 → 3: 4, 5, 6);
            * a list of M teacher layer indices, one per student layer 1…M (e.g. ``[2, 4, 6]``);
            * a list of ``(student_index, teacher_index)`` pairs, to match only some layers (e.g. ``[(3, 6)]``).
        include_embeddings: also match the embedding outputs (index 0 ↔ 0), as TinyBERT does. Ignored for an
            explicit list of pairs (put ``(0, 0)`` in it yourself).

    Returns:
        ``[(student_index, teacher_index), …]`` in ``hidden_states`` indexing, sorted by student index, validated
        with :func:`check_layer_map`.

    Raises:
        TypeError: non-integer counts or indices, or a strategy of the wrong type.
        ValueError: an unknown strategy name, a student deeper than the teacher for ``"uniform"``/``"last"``, a list
            of the wrong length, or indices outside either model (see :func:`check_layer_map`).
    """
    m = _layer_count(n_student, "n_student")
    n = _layer_count(n_teacher, "n_teacher")
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown layer-mapping strategy {strategy!r}; use 'uniform', 'last', a list of "
                             f"{m} teacher layer indices, or a list of (student, teacher) pairs")
        if m > n:
            raise ValueError(f"the student has {m} layers but the teacher only {n}: strategy {strategy!r} gives each "
                             "student layer its own teacher layer, so it needs a student no deeper than the teacher. "
                             "Pass an explicit list of (student, teacher) pairs instead.")
        teacher = [(i * n) // m for i in range(1, m + 1)] if strategy == "uniform" else list(range(n - m + 1, n + 1))
        pairs = list(zip(range(1, m + 1), teacher))
        if include_embeddings:
            pairs.insert(0, (0, 0))
    elif isinstance(strategy, Sequence) and not isinstance(strategy, (bytes, bytearray)):
        items = list(strategy)
        if not items:
            raise ValueError("the explicit layer mapping is empty: give at least one teacher layer to match")
        if all(isinstance(x, (tuple, list)) for x in items):
            pairs = []
            for x in items:
                if len(x) != 2:
                    raise ValueError(f"each pair must be (student_index, teacher_index), got {tuple(x)!r}")
                pairs.append((_int(x[0], "a student layer index"), _int(x[1], "a teacher layer index")))
        else:
            teacher = [_int(x, "a teacher layer index") for x in items]
            if len(teacher) != m:
                raise ValueError(f"an explicit list needs one teacher layer per student layer: the student has {m} "
                                 f"layers but the list {teacher} has {len(teacher)} entries. To match only some layers "
                                 "pass (student, teacher) pairs, e.g. [(3, 6)].")
            pairs = list(zip(range(1, m + 1), teacher))
            if include_embeddings:
                pairs.insert(0, (0, 0))
    else:
        raise TypeError(f"strategy must be 'uniform', 'last' or a list of layer indices/pairs, got "
                        f"{type(strategy).__name__}")
    return check_layer_map(sorted(pairs), m, n)


def check_layer_map(pairs: Sequence[tuple[int, int]], n_student: int, n_teacher: int, *,
                    attention: bool = False) -> LayerPairs:
    """Validate ``(student_index, teacher_index)`` pairs against both models' layer counts; return them as a list.

    Args:
        pairs: in ``hidden_states`` indexing: 0 = embeddings, i = layer i (so up to ``n_student``/``n_teacher``).
        attention: the pairs select attention maps, which exist for layers 1…L only (not for the embeddings).

    Raises:
        TypeError: a non-integer index. ValueError: no pairs, an index outside a model, a repeated student index.
    """
    m = _layer_count(n_student, "n_student")
    n = _layer_count(n_teacher, "n_teacher")
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError(f"expected a non-empty list of (student_index, teacher_index) pairs, got {pairs!r}")
    low = 1 if attention else 0
    what = "attention maps exist for layers 1…L" if attention else "hidden_states has L + 1 entries: 0 = embeddings"
    out: LayerPairs = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"each entry must be a (student_index, teacher_index) pair, got {pair!r}")
        s, t = _int(pair[0], "a student layer index"), _int(pair[1], "a teacher layer index")
        if not low <= s <= m:
            raise ValueError(f"student index {s} in {tuple(pair)} is outside the student, which has {m} layers "
                             f"(valid: {low}…{m}; {what})")
        if not low <= t <= n:
            raise ValueError(f"teacher index {t} in {tuple(pair)} is outside the teacher, which has {n} layers "
                             f"(valid: {low}…{n}; {what})")
        out.append((s, t))
    students = [s for s, _ in out]
    if len(set(students)) != len(students):
        raise ValueError(f"student indices repeat in {out}: match each student layer to one teacher layer")
    return out


def num_layers(model: nn.Module) -> int:
    """``model.config.num_hidden_layers`` (transformers models), else ``len(model.blocks)`` (course CNNs)."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    if n is None and isinstance(getattr(model, "blocks", None), nn.ModuleList):
        n = len(model.blocks)
    if n is None:
        raise TypeError(f"cannot tell how many layers a {type(model).__name__} has: expected a transformers model "
                        "(config.num_hidden_layers) or a course CNN (.blocks)")
    return int(n)


def hidden_width(model: nn.Module) -> int:
    """``model.config.hidden_size`` (or ``dim`` for DistilBERT-style configs)."""
    config = getattr(model, "config", None)
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if width is None:
        raise TypeError(f"{type(model).__name__} has no config.hidden_size: pass the widths yourself")
    return int(width)


# ================================================================================================ hints
def make_projection(student_width: int, teacher_width: int, *, conv: bool = False, seed: int | None = None) -> nn.Module:
    """A learned projection from the student's width to the teacher's (FitNets' "regressor", TinyBERT's W_h).

    Args:
        conv: a 1×1 ``nn.Conv2d`` for CNN feature maps ``(B, C, H, W)``; default ``nn.Linear`` for ``(…, H)``.
        seed: initialise the weights from ``torch.manual_seed(seed)`` (the global RNG is left untouched).

    It is trained together with the student and thrown away afterwards: it only exists so that a narrow student
    can be compared with a wide teacher.
    """
    s, t = _layer_count(student_width, "student_width"), _layer_count(teacher_width, "teacher_width")
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        return nn.Conv2d(s, t, kernel_size=1) if conv else nn.Linear(s, t)


def _tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (features), got dtype {x.dtype}")
    return x


def _token_mask(mask: torch.Tensor | None, leading: tuple[int, ...]) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor of shape {leading}, got {type(mask).__name__}")
    if tuple(mask.shape) != leading:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but the features' leading shape is "
                         f"{leading} (one entry per token: batch × sequence)")
    mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("attention_mask selects no token at all; the loss would be 0/0")
    return mask


def _project(student: torch.Tensor, teacher: torch.Tensor, projection: nn.Module | None, conv: bool) -> torch.Tensor:
    axis = 1 if conv else -1
    if projection is None:
        if student.shape[axis] != teacher.shape[axis]:
            kind = (f"make_projection({student.shape[axis]}, {teacher.shape[axis]}, conv=True) (a 1×1 convolution)"
                    if conv else f"make_projection({student.shape[axis]}, {teacher.shape[axis]}) (an nn.Linear)")
            raise ValueError(f"the student's features are {student.shape[axis]} wide but the teacher's "
                             f"{teacher.shape[axis]}: they cannot be compared directly. Pass a learned projection, "
                             f"e.g. {kind}, trained together with the student (FitNets' regressor).")
        return student
    if not callable(projection):
        raise TypeError(f"projection must be an nn.Module (e.g. nn.Linear), got {type(projection).__name__}")
    try:
        projected = projection(student)
    except RuntimeError as err:
        raise ValueError(f"the projection could not be applied to student features of shape "
                         f"{tuple(student.shape)} ({err}); it must map the student's width "
                         f"{student.shape[axis]} to the teacher's {teacher.shape[axis]}") from err
    return projected


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, projected: bool, what: str) -> None:
    if tuple(student.shape) != tuple(teacher.shape):
        after = "after the projection " if projected else ""
        raise ValueError(f"{what}: {after}the student's features have shape {tuple(student.shape)} but the teacher's "
                         f"{tuple(teacher.shape)}; batch and positions (and the width, once projected) must agree")


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, projection: nn.Module | None = None,
              attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """FitNets hint / TinyBERT hidden-state loss: mean squared error between projected student and teacher features.

        L = mean over positions and features of (W·h_s − h_t)²

    Args:
        student_features: ``(B, S, H_s)`` hidden states, or ``(B, C_s, H, W)`` CNN maps (then ``projection`` must be
            a 1×1 convolution, :func:`make_projection` with ``conv=True``).
        teacher_features: ``(B, S, H_t)`` or ``(B, C_t, H, W)``; treated as a constant target (detached).
        projection: maps the student's width to the teacher's; required when they differ, optional otherwise.
        attention_mask: ``(B, S)``, 1 for real tokens: padding positions are left out of the mean.

    Returns:
        A scalar tensor (differentiable w.r.t. the student and the projection).

    Raises:
        TypeError: non-tensor or integer features. ValueError: widths differ without a projection, shapes that
        still differ after it, a mask of the wrong shape or one that selects nothing.
    """
    s = _tensor(student_features, "student_features")
    t = _tensor(teacher_features, "teacher_features").detach()
    conv = s.dim() == 4 and t.dim() == 4
    if s.dim() != t.dim() or s.dim() < 2:
        raise ValueError(f"student_features {tuple(s.shape)} and teacher_features {tuple(t.shape)} must have the same "
                         "number of dimensions: (B, S, H) hidden states or (B, C, H, W) feature maps")
    if attention_mask is not None and conv:
        raise ValueError("attention_mask is for token features (B, S, H); CNN feature maps have no padding")
    p = _project(s, t, projection, conv)
    _check_same_shape(p, t, projection is not None, "hint_loss")
    mask = _token_mask(attention_mask, tuple(t.shape[:-1]))
    sq = (p - t.to(p.dtype)).pow(2)
    if mask is None:
        return sq.mean()
    return sq[mask].mean()


hidden_mse = hint_loss
"""Alias: TinyBERT's hidden-state loss is the FitNets hint loss applied to transformer hidden states."""


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       projection: nn.Module | None = None,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """DistilBERT's cosine loss: ``mean(1 − cos(W·h_s, h_t))`` over (non-padding) tokens.

    It aligns the *directions* of the hidden vectors and ignores their length, so it needs no scale matching; with
    equal widths (DistilBERT keeps BERT's) no projection is needed. Same as ``nn.CosineEmbeddingLoss`` with target 1.

    Args:
        student_hidden: ``(B, S, H_s)``.  teacher_hidden: ``(B, S, H_t)`` (detached).
        projection: ``nn.Linear(H_s, H_t)`` when the widths differ.
        attention_mask: ``(B, S)``, 1 for real tokens.

    Returns:
        A scalar in [0, 2].
    """
    s = _tensor(student_hidden, "student_hidden")
    t = _tensor(teacher_hidden, "teacher_hidden").detach()
    if s.dim() != t.dim() or s.dim() < 2:
        raise ValueError(f"student_hidden {tuple(s.shape)} and teacher_hidden {tuple(t.shape)} must both be (B, S, H)")
    p = _project(s, t, projection, conv=False)
    _check_same_shape(p, t, projection is not None, "hidden_cosine_loss")
    mask = _token_mask(attention_mask, tuple(t.shape[:-1]))
    dist = 1.0 - F.cosine_similarity(p, t.to(p.dtype), dim=-1, eps=1e-8)
    return dist.mean() if mask is None else dist[mask].mean()


# ============================================================================================ attention maps
ATTENTION_KINDS = ("mse", "kl")


def attention_map_loss(student_attentions: torch.Tensor, teacher_attentions: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, kind: str = "mse",
                       average_heads: bool = False) -> torch.Tensor:
    """Attention-map distillation for one layer pair (TinyBERT; MiniLM's KL variant).

    * ``"mse"``: mean over heads, query rows and key columns of (A_s − A_t)² (Jiao et al. 2020, eq. 3 — they
      match the scores before the softmax; ``transformers`` returns the probabilities, which we match instead);
    * ``"kl"``: KL(A_t ‖ A_s) of each query row (a distribution over keys), averaged over heads and rows (Wang et
      al. 2020, MiniLM). Its scale does not shrink with the sequence length, unlike the MSE of probabilities.

    Args:
        student_attentions: ``(B, h_s, S, S)`` attention probabilities (``output_attentions=True``; needs the
            ``"eager"`` attention implementation). Note that in training mode they include attention dropout.
        teacher_attentions: ``(B, h_t, S, S)``, detached.
        attention_mask: ``(B, S)``, 1 for real tokens: padded queries and keys are left out.
        average_heads: compare head-averaged maps ``(B, S, S)``; needed when ``h_s != h_t``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: shapes that are not ``(B, h, S, S)``, different batch/sequence sizes, different head counts
        without ``average_heads``, an unknown ``kind``, a bad mask.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    a_s = _tensor(student_attentions, "student_attentions")
    a_t = _tensor(teacher_attentions, "teacher_attentions").detach()
    for name, a in (("student_attentions", a_s), ("teacher_attentions", a_t)):
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"{name} must have shape (B, heads, S, S), got {tuple(a.shape)}")
    if (a_s.shape[0], a_s.shape[-1]) != (a_t.shape[0], a_t.shape[-1]):
        raise ValueError(f"student attentions {tuple(a_s.shape)} and teacher attentions {tuple(a_t.shape)} cover "
                         "different batches or sequence lengths")
    if average_heads:
        a_s, a_t = a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True)
    elif a_s.shape[1] != a_t.shape[1]:
        raise ValueError(f"the student has {a_s.shape[1]} attention heads and the teacher {a_t.shape[1]}: heads can "
                         "only be matched one to one when their numbers agree. Give the student the teacher's number "
                         "of heads, or compare head-averaged maps with average_heads=True.")
    b, _, seq, _ = a_t.shape
    mask = _token_mask(attention_mask, (b, seq))
    a_t = a_t.to(a_s.dtype)
    if kind == "mse":
        sq = (a_s - a_t).pow(2)
        if mask is None:
            return sq.mean()
        pair = (mask[:, :, None] & mask[:, None, :])[:, None].expand_as(sq)
        return sq[pair].mean()
    # KL(p ‖ q) per query row; entries with p = 0 (masked keys) contribute nothing
    log_q = a_s.clamp_min(torch.finfo(a_s.dtype).tiny).log()
    terms = torch.where(a_t > 0, a_t * (a_t.clamp_min(torch.finfo(a_t.dtype).tiny).log() - log_q),
                        torch.zeros_like(a_t))
    rows = terms.sum(-1)  # (B, h, S)
    if mask is None:
        return rows.mean()
    return rows[mask[:, None, :].expand_as(rows)].mean()


def spatial_attention(feature_map: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis' activation-based attention map: ``normalize(mean_c |F_c|^p)``, flattened.

    Args:
        feature_map: ``(B, C, H, W)`` activations of one CNN block.
        p: exponent; p = 2 (the paper's choice) weighs strongly activated positions more.

    Returns:
        ``(B, H·W)``, each row of unit L2 norm: *where* the block responds, whatever its number of channels.
    """
    f = _tensor(feature_map, "feature_map")
    if f.dim() != 4:
        raise ValueError(f"feature_map must be a CNN activation of shape (B, C, H, W), got {tuple(f.shape)}")
    if not (isinstance(p, numbers.Real) and p > 0):
        raise ValueError(f"p must be a positive number, got {p!r}")
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017): ``mean((a_s − a_t)²)`` of the spatial attention maps.

    The channel counts may differ (the maps are summed over channels), so no projection is needed; the spatial
    sizes must agree. This is the authors' implementation (``(at(x) − at(y)).pow(2).mean()``); the paper writes the
    same thing as a norm of the difference, scaled by β/2 — weight the term accordingly (they used β = 10³).

    Args:
        student_map: ``(B, C_s, H, W)``.  teacher_map: ``(B, C_t, H, W)`` (detached).

    Raises:
        ValueError: different batch or spatial sizes (pool or interpolate one of them first).
    """
    s = _tensor(student_map, "student_map")
    t = _tensor(teacher_map, "teacher_map").detach()
    for name, x in (("student_map", s), ("teacher_map", t)):
        if x.dim() != 4:
            raise ValueError(f"{name} must be a CNN activation of shape (B, C, H, W), got {tuple(x.shape)}")
    if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"attention transfer compares maps position by position: student {tuple(s.shape)} and "
                         f"teacher {tuple(t.shape)} must have the same batch size and spatial size (H, W). Match "
                         "blocks of equal resolution, or resize one map with F.adaptive_avg_pool2d/F.interpolate.")
    return (spatial_attention(s, p) - spatial_attention(t, p).to(s.dtype)).pow(2).mean()


# ======================================================================================================= CKA
def token_features(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the real (non-padding) tokens of ``(B, S, H)`` hidden states into an ``(n_tokens, H)`` matrix."""
    h = _tensor(hidden, "hidden")
    if h.dim() != 3:
        raise ValueError(f"hidden must have shape (B, S, H), got {tuple(h.shape)}")
    mask = _token_mask(attention_mask, tuple(h.shape[:2]))
    return h.reshape(-1, h.shape[-1]) if mask is None else h[mask]


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same n examples.

        CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F),   X, Y column-centred

    It is 1 when Y is a rotation and uniform scaling of X (plus a shift) and falls towards 0 as they become
    unrelated; unlike a plain MSE it compares representations of *different widths*, with no projection to train.
    Computed in float64.

    Args:
        x: ``(n, p)``.  y: ``(n, q)`` — row i of both describes the same example (or token).

    Returns:
        A float in [0, 1].

    Raises:
        TypeError: not a tensor/array. ValueError: not 2-D, different row counts, fewer than 2 rows, a constant
        representation (its centred Gram matrix is 0).
    """
    a, b = _as_matrix(x, "x"), _as_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x has {a.shape[0]} rows but y has {b.shape[0]}: CKA compares two representations of the "
                         "same examples, row by row")
    if a.shape[0] < 2:
        raise ValueError("CKA needs at least 2 examples")
    (a, norm_a), (b, norm_b) = _centred(a, "x"), _centred(b, "y")
    return _cka(a, norm_a, b, norm_b)


def _as_matrix(a: Any, name: str) -> torch.Tensor:
    """``a`` as a float64 CPU matrix, or a TypeError/ValueError naming ``name``."""
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    if a.dim() != 2:
        raise ValueError(f"{name} must be a matrix (n_examples, features), got shape {tuple(a.shape)}; flatten "
                         "tokens first (token_features) or pool them")
    return a.detach().to(torch.float64).cpu()


def _centred(a: torch.Tensor, name: str) -> tuple[torch.Tensor, float]:
    """Column-centred ``a`` and the Frobenius norm of its Gram matrix ‖AᵀA‖_F (CKA's normaliser)."""
    a = a - a.mean(0, keepdim=True)
    norm = float(torch.linalg.matrix_norm(a.T @ a))
    if norm == 0.0:
        raise ValueError(f"{name} is constant over the examples (zero after centring): CKA is undefined")
    return a, norm


def _cka(a: torch.Tensor, norm_a: float, b: torch.Tensor, norm_b: float) -> float:
    return float(torch.linalg.matrix_norm(b.T @ a) ** 2 / (norm_a * norm_b))


def cka_matrix(student_reps: Sequence[torch.Tensor], teacher_reps: Sequence[torch.Tensor]) -> np.ndarray:
    """Linear CKA of every (student layer, teacher layer) pair.

    Args:
        student_reps: one ``(n, p_i)`` matrix per student layer (e.g. ``token_features`` of each hidden state).
        teacher_reps: one ``(n, q_j)`` matrix per teacher layer, same n rows in the same order.

    Returns:
        ``(len(student_reps), len(teacher_reps))`` array; entry [i, j] = CKA(student layer i, teacher layer j).
    """
    if not student_reps or not teacher_reps:
        raise ValueError("cka_matrix needs at least one representation on each side")
    # each matrix is validated, centred and its Gram norm computed once, not once per pair (linear_cka's numbers)
    s_m = [_as_matrix(a, f"student_reps[{i}]") for i, a in enumerate(student_reps)]
    t_m = [_as_matrix(b, f"teacher_reps[{j}]") for j, b in enumerate(teacher_reps)]
    rows = {a.shape[0] for a in s_m + t_m}
    if len(rows) > 1:
        raise ValueError(f"the representations have different row counts {sorted(rows)}: CKA compares two "
                         "representations of the same examples, row by row")
    if rows.pop() < 2:
        raise ValueError("CKA needs at least 2 examples")
    s_c = [_centred(a, f"student_reps[{i}]") for i, a in enumerate(s_m)]
    t_c = [_centred(b, f"teacher_reps[{j}]") for j, b in enumerate(t_m)]
    return np.array([[_cka(a, na, b, nb) for b, nb in t_c] for a, na in s_c])
