"""Model size: parameter counts (int8-quantized weights included), weights in memory, size on disk, peak
inference memory, and int8 dynamic quantization of the linear layers.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ._validation import _require_module
from .peak_memory import measure_peak_memory
from .speed import _device_of, _forward_keys

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ['SIZE_FORMATS', 'count_parameters', 'weights_memory_mb', 'size_on_disk_mb', 'inference_memory_mb', 'quantize_int8']


SIZE_FORMATS = ("auto", "save_pretrained", "state_dict")


# ========================================================================================== memory and size
def _is_quantized_module(module: Any) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized")


def _quantized_tensors(module: Any) -> list["torch.Tensor"]:
    """The packed (int8) weight and float bias of a quantized Linear/Embedding — invisible to ``parameters()``."""
    out = []
    if _is_quantized_module(module):
        for attr in ("weight", "bias"):
            fn = getattr(module, attr, None)
            if callable(fn):
                try:
                    t = fn()
                except Exception:  # pragma: no cover - a quantized module without that part
                    continue
                if t is not None:
                    out.append(t)
    return out


def count_parameters(model: "nn.Module", trainable_only: bool = False, exclude_embeddings: bool = False) -> int:
    """Number of parameters (shared tensors counted once), int8-quantized weights included.

    Args:
        model: any ``nn.Module`` (a ``transformers`` model for ``exclude_embeddings``).
        trainable_only: count only parameters with ``requires_grad`` (quantized weights are never trainable).
        exclude_embeddings: leave out the input (word) embedding matrix (``model.get_input_embeddings()``).
    """
    _require_module(model)
    skip_params: set[int] = set()
    skip_modules: set[int] = set()
    if exclude_embeddings:
        getter = getattr(model, "get_input_embeddings", None)
        if getter is None:
            raise TypeError(f"{type(model).__name__} has no get_input_embeddings(); exclude_embeddings needs a "
                            "transformers model")
        emb = getter()
        skip_params = {id(p) for p in emb.parameters()}
        skip_modules = {id(emb)}
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip_params or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    if not trainable_only:
        for module in model.modules():
            if id(module) not in skip_modules:
                total += sum(t.numel() for t in _quantized_tensors(module))
    return total


def _tensor_bytes(t: "torch.Tensor") -> int:
    """Bytes of one tensor; a quantized tensor counts its int8 values plus its per-channel scales/zero points."""
    n = t.numel() * t.element_size()
    if getattr(t, "is_quantized", False):
        import torch

        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            scales, zeros = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            n += scales.numel() * scales.element_size() + zeros.numel() * zeros.element_size()
    return n


def weights_memory_mb(model: "nn.Module") -> float:
    """Memory taken by the model's parameters and buffers, in MB (10⁶ bytes); int8-quantized weights count one byte
    each (plus their scales). Tensors shared between modules (tied weights) are counted once.
    """
    _require_module(model)
    seen: set[int] = set()
    total = 0
    tensors = list(model.parameters()) + list(model.buffers())
    for module in model.modules():
        tensors += _quantized_tensors(module)
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += _tensor_bytes(t)
    return total / 1e6


def size_on_disk_mb(model: "nn.Module", how: str = "auto") -> float:
    """Size in MB (10⁶ bytes) of the saved model.

    Args:
        how: ``"save_pretrained"``: the files ``model.save_pretrained`` writes (safetensors weights + config) — what
            you would ship with ``transformers``; ``"state_dict"``: ``torch.save(model.state_dict())`` — the only
            format that also holds int8-quantized modules, so use it to compare fp32 and int8 models;
            ``"auto"``: ``save_pretrained`` for an unquantized ``transformers`` model, else ``state_dict``.
    """
    _require_module(model)
    if how not in SIZE_FORMATS:
        raise ValueError(f"how must be one of {SIZE_FORMATS}, got {how!r}")
    quantized = any(_is_quantized_module(m) for m in model.modules())
    if how == "auto":
        how = "save_pretrained" if hasattr(model, "save_pretrained") and not quantized else "state_dict"
    if how == "save_pretrained":
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"{type(model).__name__} has no save_pretrained(); use how='state_dict'")
        if quantized:
            raise ValueError("save_pretrained cannot save int8-quantized modules; use how='state_dict'")
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence writes to file descriptor 2 (not only ``sys.stderr``): torch's profiler (kineto) logs two lines per
    session from C++, which Jupyter would show under the cell."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def inference_memory_mb(model: "nn.Module", inputs: Mapping[str, Any]) -> float:
    """Peak memory one forward pass allocates *on top of* the weights, in MB (10⁶ bytes).

    Measured with :func:`course_utils.evaluation.peak_memory.measure_peak_memory` (CUDA: ``max_memory_allocated``; CPU: the
    allocations ``torch.profiler`` records — exact, and blind to glibc's caching that makes RSS misleading) after
    one untimed warm-up call, in eval mode under ``torch.inference_mode()``. Add :func:`weights_memory_mb` for the
    total a deployment needs.

    Args:
        model: the model; only the inputs its ``forward`` accepts are passed.
        inputs: keyword inputs of one batch (e.g. one entry of :func:`text_batches`).
    """
    import torch


    _require_module(model)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of keyword arguments, got {type(inputs).__name__}")
    keys = _forward_keys(model)
    device = _device_of(model)
    kw = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items() if keys is None or k in keys}
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(**kw)

    forward()  # warm-up: one-time allocations (thread pools, packed kernels) are not the model's
    quiet = _native_stderr_silenced() if device.type == "cpu" else contextlib.nullcontext()
    with quiet:
        return measure_peak_memory(forward, device=device).peak_above_baseline / 1e6


# ============================================================================================== compression
def quantize_int8(model: "nn.Module", embeddings: bool = True) -> "nn.Module":
    """A copy of ``model`` with dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``).

    Every ``nn.Linear`` stores int8 weights (one scale per tensor); its inputs are quantized on the fly per batch
    ("dynamic") and the matrix product runs in int8 on x86 (fbgemm/oneDNN) or ARM (qnnpack) CPUs. With
    ``embeddings`` the ``nn.Embedding`` tables are stored as 8-bit too (weight-only, one scale per row) — in a
    small BERT they hold most of the parameters, so without them the file barely shrinks. The original model
    is left untouched. No training data is needed, which makes it the natural last step after distillation.

    ``torch.ao.quantization`` is deprecated in favour of ``torchao`` (``torchao.quantization.quantize_`` with
    ``Int8DynamicActivationInt8WeightConfig``); it still works in torch 2.13, and its deprecation warnings are
    silenced here.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a model on a GPU (dynamic int8 quantization is a CPU technique) or already quantized.
    """
    import torch
    from torch import nn

    _require_module(model)
    if _device_of(model).type != "cpu":
        raise ValueError(f"dynamic int8 quantization runs on the CPU; the model is on {_device_of(model)} — "
                         "move it with model.cpu() first")
    if any(_is_quantized_module(m) for m in model.modules()):
        raise ValueError("the model is already quantized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices (see the docstring)
        from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

        spec: dict[type, Any] = {nn.Linear: default_dynamic_qconfig}
        if embeddings:
            spec[nn.Embedding] = float_qparams_weight_only_qconfig
        copy_ = copy.deepcopy(model).eval()
        return quantize_dynamic(copy_, spec, dtype=torch.qint8)
