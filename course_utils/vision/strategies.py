"""Training procedures beyond one teacher (notebook 07): born-again generations, teacher-assistant chains, deep
mutual learning, and data-free distillation from noise or synthesized inputs.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kd.ensembles import mutual_learning_losses
from ..kd.losses import validate_alpha_kd, validate_temperature
from ..training.loops import predict_logits, train_classifier

__all__ = ['same_architecture', 'born_again', 'distill_chain', 'MutualLossesFn', 'mutual_learning', 'noise_inputs', 'synthesize_inputs']


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


MutualLossesFn = Callable[[list[torch.Tensor], torch.Tensor, float, float], Sequence[torch.Tensor]]
"""A deep-mutual-learning step's losses: ``losses_fn(logits, labels, temperature, alpha_kd)`` with ``logits`` the K
students' ``(B, C)`` logits on one batch and ``labels`` ``(B,)`` → K scalar losses, loss k for student k."""


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
    losses_fn: MutualLossesFn = mutual_learning_losses,
) -> list[list[float]]:
    """Train K ≥ 2 students together (online distillation, no pre-trained teacher), by default with
    :func:`course_utils.kd.ensembles.mutual_learning_losses`.

    All students see the same mini-batches (seeded order, as :func:`course_utils.training.loops.train_classifier`), each has
    its own Adam optimiser, and all are updated from one forward pass per batch (Zhang et al.'s Algorithm 1 updates
    them one after the other, recomputing predictions in between; with small learning rates the difference is small).
    One ``backward()`` on the sum of the K losses updates every student, so loss k must depend on student k's logits
    only — the peers detached; the first batch checks that.

    Args:
        models: the K ≥ 2 students, distinct ``nn.Module`` objects with the same output size ``C``; trained in place
            and left in eval mode.
        x: ``(N, …)`` training inputs; y: ``(N,)`` integer labels (required: without them the students can agree on
            anything).
        temperature, alpha_kd: passed to ``losses_fn`` (T > 0, alpha_kd in [0, 1]).
        seed: the mini-batch order (the models bring their own initialisation).
        losses_fn: one step's losses, called as ``losses_fn(logits, labels, temperature, alpha_kd)`` with ``logits``
            a list of the K students' ``(B, C)`` logits on the batch and ``labels`` its ``(B,)`` labels; it must return
            K scalar tensors (a list or tuple), loss k differentiable w.r.t. ``logits[k]`` and independent of the
            other students' logits. Default: the library's :func:`course_utils.kd.ensembles.mutual_learning_losses`.
            A function written for two students, ``pair(logits_a, logits_b, labels, temperature, alpha_kd)``, plugs
            in as ``lambda logits, labels, t, a: pair(*logits, labels, t, a)``.

    Returns:
        Per student, the mean training loss of each epoch (``K`` lists of ``epochs`` floats).

    Raises:
        TypeError: ``losses_fn`` is not callable, or returns something other than a list/tuple of tensors.
        ValueError: fewer than two students, the same student twice, no labels, bad training settings, or a
            ``losses_fn`` that returns the wrong number of losses, non-scalar or non-differentiable losses, or a loss
            that also depends on a peer's logits (a peer not detached).
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
    if not callable(losses_fn):
        raise TypeError(f"losses_fn must be a function (logits, labels, temperature, alpha_kd) -> K losses, got "
                        f"{type(losses_fn).__name__}; pass the function itself, without calling it")
    optimisers = [torch.optim.Adam(m.parameters(), lr=lr, weight_decay=weight_decay) for m in models]
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    histories: list[list[float]] = [[] for _ in models]
    for m in models:
        m.train()
    first = True
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        totals = [0.0] * len(models)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            logits = [m(x[idx]) for m in models]
            losses_ = _checked_losses(losses_fn(logits, y[idx], temperature, alpha_kd), logits, first)
            first = False
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


def _checked_losses(out: object, logits: list[torch.Tensor], check_peers: bool) -> list[torch.Tensor]:
    """``losses_fn``'s result as a list of K scalar losses, each depending on its own student only.

    The structure is checked on every batch (cheap); ``check_peers`` (the first batch) also differentiates every
    loss w.r.t. every student's logits, which finds a peer that was not detached.
    """
    k = len(logits)
    if isinstance(out, torch.Tensor) or not isinstance(out, (list, tuple)):
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"losses_fn returned {what}; it must return a list or tuple of {k} scalar losses, one per "
                        "student (not their sum: each student's optimiser needs its own loss)")
    if len(out) != k:
        raise ValueError(f"losses_fn returned {len(out)} losses for {k} students; return one loss per student, in "
                         "the order of the models")
    for i, loss in enumerate(out):
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"losses_fn's loss {i} is a {type(loss).__name__}, not a tensor; keep it in torch (no "
                            ".item() or float(...)) so that it can be backpropagated")
        if loss.numel() != 1:
            raise ValueError(f"losses_fn's loss {i} has shape {tuple(loss.shape)}; each loss must be a scalar — "
                             "reduce it over the batch (e.g. .mean(), or KL with reduction='batchmean')")
        if loss.grad_fn is None:
            raise ValueError(f"losses_fn's loss {i} is not differentiable w.r.t. student {i}'s logits (no grad_fn): "
                             "do not detach the student's own logits or compute its loss under torch.no_grad()")
    losses = [loss if loss.dim() == 0 else loss.reshape(()) for loss in out]
    if check_peers:
        for i, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, logits, retain_graph=True, allow_unused=True)
            if grads[i] is None:
                raise ValueError(f"losses_fn's loss {i} does not depend on student {i}'s logits (logits[{i}]); "
                                 "loss k must train student k: check the order of the returned losses")
            leaks = [j for j, g in enumerate(grads) if j != i and g is not None and bool(g.abs().max() > 0)]
            if leaks:
                raise ValueError(f"losses_fn's loss {i} sends gradients into student(s) {leaks}: their logits are "
                                 f"the target of student {i}, a constant for its loss — use logits[j].detach() for "
                                 "every peer j inside loss k")
    return losses


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
