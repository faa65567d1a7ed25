"""Distillation beyond one teacher: ensembles of teachers, born-again generations, teacher-assistant chains, deep
mutual learning, and distillation without real data (notebook 07).

Every strategy here is built from the course's two primitives, so there is one definition of the KD objective:

* :func:`course_utils.losses.distillation_loss` — ``(1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q)``;
* :func:`course_utils.digits.train_classifier` — Adam over seeded mini-batches with that loss, on precomputed
  teacher logits. It trains any ``nn.Module`` that maps a tensor of inputs to logits (MLPs on digits, the CNNs of
  :mod:`course_utils.vision`).

=================================  ==========================================================================
strategy                           functions
=================================  ==========================================================================
multi-teacher (ensemble) KD        :func:`stack_teacher_logits`, :func:`ensemble_soft_targets`,
                                   :func:`teacher_weights`, :func:`soft_targets_to_logits`
born-again networks                :func:`born_again`
teacher assistant (progressive)    :func:`distill_chain`
deep mutual learning (online)      :func:`mutual_learning_losses`, :func:`mutual_learning`
data-free / synthetic inputs       :func:`noise_inputs`, :func:`synthesize_inputs`
=================================  ==========================================================================

Shapes: ``K`` teachers, ``N`` examples, ``C`` classes. Conventions as in :mod:`course_utils.losses`: teacher logits
v, student logits z, temperature T, p = softmax(v / T), q = softmax(z / T), ``alpha_kd`` weights the KD term.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .digits import predict_logits, train_classifier
from .losses import distillation_loss, validate_alpha_kd, validate_logits, validate_temperature

__all__ = [
    "ENSEMBLE_METHODS",
    "WEIGHT_SCHEMES",
    "stack_teacher_logits",
    "ensemble_soft_targets",
    "teacher_weights",
    "soft_targets_to_logits",
    "same_architecture",
    "born_again",
    "distill_chain",
    "mutual_learning_losses",
    "mutual_learning",
    "noise_inputs",
    "synthesize_inputs",
]

ENSEMBLE_METHODS = ("mean_probs", "mean_logits", "weighted")
WEIGHT_SCHEMES = ("true_class", "confidence")


# ============================================================================================ multi-teacher
def stack_teacher_logits(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    label_spaces: Sequence[Sequence[str]] | None = None,
) -> torch.Tensor:
    """Check that several teachers' logits describe the same examples and the same classes; stack them.

    Args:
        teacher_logits: a sequence of ``K`` tensors ``(N, C)`` (one per teacher, rows aligned: row n of every
            tensor is example n), or one tensor ``(K, N, C)``.
        label_spaces: optionally, each teacher's class names in the order of its logit columns. They must be
            identical: averaging column c of two teachers only makes sense if column c means the same class.

    Returns:
        ``(K, N, C)`` float tensor.

    Raises:
        TypeError: not tensors / not floating point.
        ValueError: no teacher, different numbers of examples or classes, label spaces that differ (with the column
            permutation that fixes them when only the order differs), probabilities passed instead of logits.
    """
    if isinstance(teacher_logits, torch.Tensor):
        if teacher_logits.dim() != 3:
            raise ValueError(f"a single tensor of teacher logits must have shape (K, N, C), got "
                             f"{tuple(teacher_logits.shape)}; pass a list of (N, C) tensors for separate teachers")
        tensors = list(teacher_logits)
    elif isinstance(teacher_logits, (list, tuple)):
        tensors = list(teacher_logits)
    else:
        raise TypeError(f"teacher_logits must be a list of (N, C) tensors or a (K, N, C) tensor, got "
                        f"{type(teacher_logits).__name__}")
    if not tensors:
        raise ValueError("no teacher logits given: pass at least one (N, C) tensor")
    for k, t in enumerate(tensors):
        validate_logits(t, f"teacher_logits[{k}]")
        if t.dim() != 2:
            raise ValueError(f"teacher_logits[{k}] must have shape (N, C), got {tuple(t.shape)}")
    n0, c0 = tensors[0].shape
    for k, t in enumerate(tensors[1:], 1):
        if t.shape[1] != c0:
            raise ValueError(
                f"teachers do not share a label space: teacher 0 predicts {c0} classes, teacher {k} predicts "
                f"{t.shape[1]}. Multi-teacher KD averages the teachers' distributions class by class, so every "
                "teacher needs the same classes in the same column order — map or retrain the heads first."
            )
        if t.shape[0] != n0:
            raise ValueError(f"teacher 0 has logits for {n0} examples, teacher {k} for {t.shape[0]}; compute every "
                             "teacher's logits on the same inputs, in the same order")
    if label_spaces is not None:
        if len(label_spaces) != len(tensors):
            raise ValueError(f"{len(label_spaces)} label spaces for {len(tensors)} teachers; give one per teacher")
        reference = list(label_spaces[0])
        if len(reference) != c0:
            raise ValueError(f"label_spaces[0] names {len(reference)} classes but the logits have {c0} columns")
        for k, names in enumerate(label_spaces[1:], 1):
            names = list(names)
            if names == reference:
                continue
            if sorted(names) == sorted(reference) and len(set(names)) == len(names):
                order = [names.index(c) for c in reference]
                raise ValueError(
                    f"teacher {k} has the same classes as teacher 0 but in a different column order "
                    f"({names} vs {reference}); reorder its logits first: teacher_logits[{k}][:, {order}]"
                )
            extra, missing = sorted(set(names) - set(reference)), sorted(set(reference) - set(names))
            raise ValueError(
                f"teachers do not share a label space: teacher {k} has classes {extra} that teacher 0 lacks and "
                f"lacks {missing}. Averaging distributions over different classes is meaningless; restrict all "
                "teachers to the shared classes (and renormalise) or train heads on one label set."
            )
    return torch.stack([t.float() for t in tensors])


def _validate_method(method: str) -> None:
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"method must be one of {ENSEMBLE_METHODS}, got {method!r}")


def ensemble_soft_targets(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    temperature: float = 1.0,
    method: str = "mean_probs",
    weights: torch.Tensor | None = None,
    label_spaces: Sequence[Sequence[str]] | None = None,
) -> torch.Tensor:
    """Combine K teachers into one soft target distribution per example, at temperature T.

    * ``"mean_probs"``: p = (1/K) Σ_k softmax(v_k / T) — the ensemble's predictive distribution (an arithmetic
      mixture: it keeps every class any teacher finds plausible; Hinton et al. 2015 distil an ensemble this way).
    * ``"mean_logits"``: p = softmax((1/K) Σ_k v_k / T) — the normalised *geometric* mean of the teachers'
      distributions (a product of experts): classes need the support of all teachers, so it is sharper.
    * ``"weighted"``: p_n = Σ_k w_nk softmax(v_k / T) with per-example weights ``weights`` (e.g. from
      :func:`teacher_weights`): a teacher that is unsure or wrong about example n counts less for that example.

    Args:
        teacher_logits: ``K`` tensors ``(N, C)`` or one ``(K, N, C)`` (see :func:`stack_teacher_logits`).
        temperature: T > 0, applied to every teacher *before* combining (averaging at T = 1 and then softening is
            a different, wrong distribution).
        method: one of :data:`ENSEMBLE_METHODS`.
        weights: for ``"weighted"`` only: ``(N, K)`` per-example or ``(K,)`` global non-negative weights; rows are
            normalised to sum to 1.
        label_spaces: optional class names per teacher, checked to be identical.

    Returns:
        ``(N, C)`` probabilities (rows sum to 1). Pass them to a KD loss via :func:`soft_targets_to_logits`.
    """
    stacked = stack_teacher_logits(teacher_logits, label_spaces)
    t = validate_temperature(temperature)
    _validate_method(method)
    if method != "weighted" and weights is not None:
        raise ValueError(f"weights are only used with method='weighted', not {method!r}")
    if method == "mean_logits":
        return torch.softmax(stacked.mean(0) / t, dim=-1)
    probs = torch.softmax(stacked / t, dim=-1)  # (K, N, C)
    if method == "mean_probs":
        return probs.mean(0)
    w = _validate_weights(weights, n_teachers=stacked.shape[0], n_examples=stacked.shape[1])
    return torch.einsum("nk,knc->nc", w, probs)


def _validate_weights(weights: torch.Tensor | None, n_teachers: int, n_examples: int) -> torch.Tensor:
    if weights is None:
        raise ValueError("method='weighted' needs weights: (N, K) per example (see teacher_weights) or (K,) global")
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    w = weights.detach().float()
    if w.dim() == 1:
        w = w.expand(n_examples, -1)
    if w.dim() != 2 or tuple(w.shape) != (n_examples, n_teachers):
        raise ValueError(f"weights must have shape (N, K) = ({n_examples}, {n_teachers}) or (K,) = ({n_teachers},), "
                         f"got {tuple(weights.shape)}; note the order: one row per example, one column per teacher")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"{int((total <= 0).sum())} example(s) have all-zero teacher weights; every example needs "
                         "at least one teacher with a positive weight")
    return w / total


def teacher_weights(
    teacher_logits: Sequence[torch.Tensor] | torch.Tensor,
    labels: torch.Tensor | None = None,
    scheme: str = "true_class",
    sharpness: float = 1.0,
) -> torch.Tensor:
    """Per-example teacher weights ``(N, K)`` (rows sum to 1) for :func:`ensemble_soft_targets`.

    * ``"true_class"`` (needs ``labels``): w_nk ∝ p_k(y_n)^γ, teacher k's probability (at T = 1) of the correct
      class of example n — teachers that get example n wrong count little on it. The same idea, with other
      formulas, is behind confidence-aware multi-teacher KD (e.g. CA-MKD, Zhang et al. 2022).
    * ``"confidence"`` (no labels; usable on unlabelled transfer data): w_nk ∝ (max_c p_k(c | x_n))^γ.

    Args:
        labels: ``(N,)`` integer labels, for ``"true_class"``.
        sharpness: γ ≥ 0; 0 gives equal weights, larger values give more weight to the best teacher.
    """
    stacked = stack_teacher_logits(teacher_logits)
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}")
    if isinstance(sharpness, bool) or not isinstance(sharpness, numbers.Real) or not 0 <= sharpness < math.inf:
        raise ValueError(f"sharpness must be a finite number ≥ 0, got {sharpness!r}")
    log_probs = torch.log_softmax(stacked, dim=-1)  # (K, N, C) at T = 1
    if scheme == "true_class":
        if labels is None:
            raise ValueError("scheme='true_class' needs the labels (N,); use scheme='confidence' on unlabelled data")
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 1:
            raise TypeError("labels must be a 1-D integer tensor (N,)")
        n, c = stacked.shape[1:]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} examples")
        if bool(((labels < 0) | (labels >= c)).any()):
            raise ValueError(f"labels must lie in [0, {c})")
        score = log_probs.gather(-1, labels.long().view(1, -1, 1).expand(stacked.shape[0], -1, 1)).squeeze(-1)
    else:
        if labels is not None:
            raise ValueError("scheme='confidence' does not use labels; pass labels=None or scheme='true_class'")
        score = log_probs.max(-1).values
    # softmax over teachers of γ·log p = p^γ / Σ_k p^γ, computed in log space so tiny probabilities cannot give 0/0
    return torch.softmax(float(sharpness) * score, dim=0).T.contiguous()


def soft_targets_to_logits(probs: torch.Tensor, temperature: float = 1.0, floor: float = 1e-12) -> torch.Tensor:
    """Logits whose softmax at temperature T is ``probs``: ``T · log(probs)``.

    Every KD loss in the course takes *teacher logits*; an ensemble gives probabilities. Since
    softmax(T · log p / T) = p, these logits reproduce the ensemble's soft targets exactly at the same T.

    Args:
        probs: ``(..., C)`` rows summing to 1.
        temperature: the T the probabilities were computed at (and the KD loss will use).
        floor: probabilities are clamped to at least this before the log, so a class with p = 0 gets a very
            negative but finite logit.
    """
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        raise TypeError("probs must be a floating-point torch.Tensor (..., C)")
    t = validate_temperature(temperature)
    if probs.dim() < 1 or probs.shape[-1] < 2 or probs.numel() == 0:
        raise ValueError(f"probs must have shape (..., C) with C ≥ 2, got {tuple(probs.shape)}")
    if bool((probs < 0).any()) or not torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]), atol=1e-4):
        raise ValueError("probs must be probability distributions (non-negative, each row summing to 1); did you pass "
                         "logits? Those can go to the KD loss directly")
    return t * probs.clamp_min(floor).log()


# ============================================================================================ born-again
def same_architecture(a: nn.Module, b: nn.Module) -> bool:
    """True when two models have parameters and buffers of the same names and shapes (weights may differ)."""
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]  # noqa: E731
    return shapes(a) == shapes(b)


def _validate_training(epochs: int, lr: float, batch_size: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_rows(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]):
        raise ValueError(f"y must be a tensor with one label per row of x ({x.shape[0]}), got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")


def born_again(
    make_model: Callable[[int], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generations: int = 2,
    temperature: float = 4.0,
    alpha_kd: float = 0.5,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    first: nn.Module | None = None,
) -> list[nn.Module]:
    """Born-again networks (Furlanello et al. 2018): each generation is a fresh copy of the *same* architecture,
    distilled from the previous generation.

    Generation 0 is trained on the labels alone (or given as ``first``, already trained); generation g ≥ 1 is
    ``make_model(seed + g)`` — a new random initialisation — trained with
    ``(1 − alpha_kd) · CE + alpha_kd · T² · KL(p_{g−1} ‖ q_g)`` on the same ``(x, y)``, where the previous
    generation's logits on ``x`` are computed once in eval mode.

    Args:
        make_model: ``make_model(seed)`` → an untrained model; must build the same architecture for every seed.
        x: ``(N, …)`` training inputs; y: ``(N,)`` labels.
        generations: number of distilled generations after generation 0 (≥ 1).
        first: an already trained generation 0 (skips its training; must have the same architecture).
        seed: generation g uses ``seed + g`` for its initialisation and its mini-batch order.

    Returns:
        ``[generation 0, generation 1, …, generation generations]`` (all in eval mode).
    """
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations must be an integer ≥ 1, got {generations!r}")
    if isinstance(make_model, nn.Module) or not callable(make_model):
        raise TypeError("make_model must be a function seed -> untrained nn.Module, e.g. lambda s: make_mlp((32,), "
                        "seed=s), not a model: every generation needs a fresh initialisation")
    _check_rows(x, y)
    temperature, alpha_kd = validate_temperature(temperature), validate_alpha_kd(alpha_kd)
    _validate_training(epochs, lr, batch_size)
    train = dict(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    if first is None:
        first = make_model(seed)
        train_classifier(first, x, y, seed=seed, **train)
    models = [first]
    for g in range(1, generations + 1):
        model = make_model(seed + g)
        if not same_architecture(model, first):
            raise ValueError(f"make_model({seed + g}) built a different architecture from generation 0; born-again "
                             "generations all share one architecture (for a smaller student use distill_chain)")
        teacher_logits = predict_logits(models[-1], x)
        train_classifier(model, x, y, seed=seed + g, teacher_logits=teacher_logits, temperature=temperature,
                         alpha_kd=alpha_kd, **train)
        models.append(model)
    return models


# ===================================================================================== teacher assistants
def distill_chain(
    teacher: nn.Module,
    chain: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    temperature: float = 4.0,
    alpha_kd: float = 0.5,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[nn.Module]:
    """Progressive distillation through teacher assistants (Mirzadeh et al. 2020): teacher → chain[0] → chain[1] → ….

    Each model in ``chain`` is trained with KD from the one before it (the trained ``teacher`` for the first), on the
    same ``(x, y)``; the previous model's logits on ``x`` are computed once, in eval mode. A chain of one model is
    plain KD. Usually the models shrink along the chain (e.g. large teacher → medium assistant → small student),
    so that no step has to bridge a large capacity gap.

    Args:
        teacher: the trained teacher (not modified).
        chain: untrained models, assistant(s) first, final student last; trained in place.
        y: labels, or None with ``alpha_kd = 1`` (pure soft targets).
        seed: step i uses ``seed + i`` for its mini-batch order (the models bring their own initialisation).

    Returns:
        The trained chain, in order (the final student is the last element).
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a trained nn.Module, got {type(teacher).__name__}")
    chain = list(chain)
    if not chain or not all(isinstance(m, nn.Module) for m in chain):
        raise ValueError("chain must be a non-empty sequence of nn.Module: assistant(s) first, the student last")
    if any(m is teacher for m in chain) or len({id(m) for m in chain}) != len(chain):
        raise ValueError("every model in the chain must be a distinct object (and not the teacher itself)")
    _check_rows(x, y)
    temperature, alpha_kd = validate_temperature(temperature), validate_alpha_kd(alpha_kd)
    _validate_training(epochs, lr, batch_size)
    previous = teacher
    for i, model in enumerate(chain):
        teacher_logits = predict_logits(previous, x)
        out = predict_logits(model, x[:1])
        if out.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError(f"chain[{i}] predicts {out.shape[-1]} classes but its teacher predicts "
                             f"{teacher_logits.shape[-1]}; every model in the chain needs the same label space")
        train_classifier(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                         seed=seed + i, teacher_logits=teacher_logits, temperature=temperature, alpha_kd=alpha_kd)
        previous = model
    return chain


# ===================================================================================== deep mutual learning
def mutual_learning_losses(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    temperature: float = 1.0,
    alpha_kd: float = 0.5,
) -> list[torch.Tensor]:
    """One step's losses of deep mutual learning (Zhang et al. 2018) for K ≥ 2 students trained together.

    Student k learns from the labels and from its peers, whose predictions are treated as fixed targets:

        loss_k = (1 − alpha_kd) · CE(z_k, y) + alpha_kd · T² · mean_{l ≠ k} KL(softmax(z_l / T) ‖ softmax(z_k / T))

    The peers' logits are detached, so loss_k only moves student k. Zhang et al. use T = 1 and equal weights
    (CE + KL), which is ``alpha_kd = 0.5`` up to a factor 2.

    Args:
        logits: the K students' logits ``(B, C)`` on the same batch.
        labels: ``(B,)`` integer labels.

    Returns:
        ``[loss_0, …, loss_{K−1}]`` scalar tensors.
    """
    if not isinstance(logits, (list, tuple)) or len(logits) < 2:
        raise ValueError("mutual learning needs the logits of at least two students, as a list [z_a, z_b, ...]")
    shapes = {tuple(z.shape) for z in logits if isinstance(z, torch.Tensor)}
    if len(shapes) != 1 or not all(isinstance(z, torch.Tensor) for z in logits):
        raise ValueError(f"every student's logits must be tensors of one shape (B, C), got "
                         f"{[tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__ for z in logits]}")
    t, a = validate_temperature(temperature), validate_alpha_kd(alpha_kd)
    out = []
    for k, z in enumerate(logits):
        parts = [distillation_loss(z, peer.detach(), labels, temperature=t, alpha_kd=a)
                 for l, peer in enumerate(logits) if l != k]
        # every part has the same CE; averaging the parts averages the KL terms over the peers
        out.append(torch.stack([p.loss for p in parts]).mean())
    return out


def mutual_learning(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    temperature: float = 1.0,
    alpha_kd: float = 0.5,
    seed: int = 0,
) -> list[list[float]]:
    """Train K ≥ 2 students together with :func:`mutual_learning_losses` (online distillation, no pre-trained teacher).

    All students see the same mini-batches (seeded order, as :func:`course_utils.digits.train_classifier`), each has
    its own Adam optimiser, and all are updated from one forward pass per batch (Zhang et al.'s Algorithm 1 updates
    them one after the other, recomputing predictions in between; with small learning rates the difference is small).

    Returns:
        Per student, the mean training loss of each epoch.
    """
    models = list(models)
    if len(models) < 2 or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("mutual learning needs at least two nn.Module students")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("the students must be distinct objects (the same model twice would learn from itself)")
    _check_rows(x, y)
    if y is None:
        raise ValueError("mutual learning needs labels y: without them the students can agree on anything")
    temperature, alpha_kd = validate_temperature(temperature), validate_alpha_kd(alpha_kd)
    _validate_training(epochs, lr, batch_size)
    optimisers = [torch.optim.Adam(m.parameters(), lr=lr, weight_decay=weight_decay) for m in models]
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    histories: list[list[float]] = [[] for _ in models]
    for m in models:
        m.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        totals = [0.0] * len(models)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            losses_ = mutual_learning_losses([m(x[idx]) for m in models], y[idx], temperature, alpha_kd)
            for opt in optimisers:
                opt.zero_grad()
            torch.stack(losses_).sum().backward()  # peers are detached: each loss only reaches its own student
            for k, (opt, loss) in enumerate(zip(optimisers, losses_)):
                opt.step()
                totals[k] += loss.item() * len(idx)
        for k in range(len(models)):
            histories[k].append(totals[k] / n)
    for m in models:
        m.eval()
    return histories


# ============================================================================================== data-free
def noise_inputs(n: int, shape: Sequence[int], kind: str = "uniform", low: float = 0.0, high: float = 1.0,
                 seed: int = 0) -> torch.Tensor:
    """``(n, *shape)`` random inputs for the crudest data-free transfer set.

    ``"uniform"``: i.i.d. U(low, high) per pixel; ``"gaussian"``: N(μ, σ) with μ = (low + high)/2 and
    σ = (high − low)/4, clipped to [low, high].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if kind not in ("uniform", "gaussian"):
        raise ValueError(f"kind must be 'uniform' or 'gaussian', got {kind!r}")
    if not low < high:
        raise ValueError(f"need low < high, got {low} and {high}")
    gen = torch.Generator().manual_seed(seed)
    size = (n, *tuple(shape))
    if kind == "uniform":
        return low + (high - low) * torch.rand(size, generator=gen)
    mid, sd = (low + high) / 2, (high - low) / 4
    return (mid + sd * torch.randn(size, generator=gen)).clamp(low, high)


def synthesize_inputs(
    teacher: nn.Module,
    n: int,
    shape: Sequence[int],
    *,
    steps: int = 200,
    lr: float = 0.05,
    bn_weight: float = 0.0,
    tv_weight: float = 0.0,
    l2_weight: float = 0.0,
    low: float = 0.0,
    high: float = 1.0,
    n_classes: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-guided synthetic inputs, in the spirit of DeepInversion (Yin et al. 2020): start from noise and
    optimise the *inputs* so that the frozen teacher recognises a chosen class in each of them.

    Minimised with Adam over the pixels (clamped to ``[low, high]`` after each step)::

        CE(teacher(x), target)                                   make the teacher see the target class
        + bn_weight · Σ_l (‖μ_l(x) − μ̂_l‖₂ + ‖σ²_l(x) − σ̂²_l‖₂)    batch statistics at every BatchNorm layer l match
                                                                 the running statistics the teacher saw in training
        + tv_weight · TV(x) + l2_weight · ‖x‖²/N                   image priors (smoothness, small values)

    Without the BatchNorm term the inputs only need to *fool* the teacher (they look like noise to us); the
    statistics of the real training data stored in the BN layers are what makes the samples resemble real inputs.

    Args:
        teacher: trained classifier (put in eval mode; its parameters are not changed).
        n: number of inputs; targets cycle through the classes (balanced).
        shape: shape of one input, e.g. ``(64,)`` or ``(1, 28, 28)``.
        bn_weight: > 0 needs BatchNorm layers in the teacher.
        tv_weight: total variation (mean absolute difference of neighbouring pixels); 4-D image inputs only.
        n_classes: default: the teacher's output size.
        seed: initial noise and target order.

    Returns:
        ``(x, targets)``: ``(n, *shape)`` inputs (detached) and the ``(n,)`` classes they were optimised for.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a trained nn.Module, got {type(teacher).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0, got {steps!r}")
    for name, value in (("lr", lr), ("bn_weight", bn_weight), ("tv_weight", tv_weight), ("l2_weight", l2_weight)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
    x = noise_inputs(n, shape, low=low, high=high, seed=seed)
    if tv_weight and x.dim() != 4:
        raise ValueError(f"tv_weight needs image inputs (n, channels, height, width), got shape {tuple(x.shape)}")
    was_training = teacher.training
    teacher.eval()
    with torch.no_grad():
        n_out = teacher(x[:1]).shape[-1]
    n_classes = n_out if n_classes is None else n_classes
    if n_classes != n_out:
        raise ValueError(f"n_classes={n_classes} but the teacher predicts {n_out} classes")
    gen = torch.Generator().manual_seed(seed + 1)
    targets = (torch.arange(n) % n_classes)[torch.randperm(n, generator=gen)]

    bn_layers = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_weight and not bn_layers:
        raise ValueError("bn_weight > 0 needs a teacher with BatchNorm layers (their running statistics are the "
                         "target); this teacher has none — set bn_weight=0")
    bn_terms: list[torch.Tensor] = []

    def match_statistics(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        h = inputs[0]
        dims = [0] + list(range(2, h.dim()))  # every axis but the channels
        mean, var = h.mean(dims), h.var(dims, unbiased=False)
        bn_terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                        + torch.linalg.vector_norm(var - module.running_var))

    hooks = [m.register_forward_hook(match_statistics) for m in bn_layers] if bn_weight else []
    requires = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        x = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            bn_terms.clear()
            loss = F.cross_entropy(teacher(x), targets)
            if bn_weight:
                loss = loss + bn_weight * torch.stack(bn_terms).sum()
            if tv_weight:
                tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
                loss = loss + tv_weight * tv
            if l2_weight:
                loss = loss + l2_weight * x.pow(2).flatten(1).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(low, high)
    finally:
        for h in hooks:
            h.remove()
        for p, r in zip(teacher.parameters(), requires):
            p.requires_grad_(r)
        teacher.train(was_training)
    return x.detach(), targets
