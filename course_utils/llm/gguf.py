"""SmolLM2-135M-Instruct from its packaged GGUF file: dequantized to a plain fp32 ``LlamaForCausalLM`` once and cached.
"""
from __future__ import annotations

import contextlib
import copy
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..core import assets, cache
from ..core.hf import quiet_load

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ['SMOLLM2_GGUF', 'SMOLLM2_NAME', 'convert_gguf', 'smollm2_tokenizer', 'smollm2_path']


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the packaged GGUF inside the ``smollm2-gguf`` asset."""
SMOLLM2_NAME = "smollm2-135m-instruct-fp32"
"""Name of the converted model in the course cache (``cache.model_dir(SMOLLM2_NAME)``)."""
_CONVERSION_VERSION = 1  # bump when the conversion changes: the cached copy is then rebuilt


def _empty_like_class(cls: type, config: Any) -> "nn.Module":
    """``cls(config)`` without the random initialisation that its weights are about to replace (transformers'
    ``no_init_weights``); non-persistent buffers such as the RoPE frequencies are computed as usual. Call
    ``tie_weights()`` after loading the state dict."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return cls(config)


# ------------------------------------------------------------------------------------------ GGUF → fp32, once
@contextlib.contextmanager
def _shared_gguf_reader() -> Iterator[None]:
    """Parse each GGUF file once while the block runs.

    transformers builds a ``gguf.GGUFReader`` for the tokenizer, again for the config and again for the tensors;
    parsing SmolLM2's metadata (49 152 tokens and their merges) takes ~11 s on two cores each time. The reader is
    read-only (a memory map), so the three loads can share one.
    """
    try:
        import gguf
    except ImportError:  # transformers raises its own, clearer error
        yield
        return
    original = gguf.GGUFReader
    readers: dict[tuple, Any] = {}

    def shared(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def convert_gguf(gguf_dir: str | Path, gguf_file: str, target: str | Path | None = None) -> "tuple[nn.Module, Any]":
    """Load a GGUF causal LM dequantized to fp32 and return ``(plain model, tokenizer)``; save them to ``target``.

    ``from_pretrained(..., gguf_file=...)`` returns a model whose config carries a GGUF ``quantization_config``
    and which refuses ``save_pretrained``. Its weights are ordinary fp32 tensors, so they are copied into a fresh
    model of the same class built from a config *without* ``quantization_config`` (strict ``load_state_dict``: every
    tensor must match).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    with _shared_gguf_reader(), contextlib.redirect_stderr(io.StringIO()):  # no de-quantization progress bar
        tokenizer = quiet_load(AutoTokenizer, str(gguf_dir), gguf_file=gguf_file)
        gguf_model = quiet_load(AutoModelForCausalLM, str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = _empty_like_class(type(gguf_model), config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(gguf_model.generation_config)
    plain.eval()
    del gguf_model
    if target is not None:
        plain.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return plain, tokenizer


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (49 152 tokens, ChatML template, pad = EOS) read from the ``smollm2-gguf`` asset alone,
    in a few seconds, without converting the model (:func:`smollm2_path` converts both)."""
    from transformers import AutoTokenizer

    gguf = assets.path("smollm2-gguf", SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def smollm2_path(verbose: bool = True) -> Path:
    """Directory of SmolLM2-135M-Instruct as a plain fp32 ``LlamaForCausalLM`` (+ tokenizer) in the course cache.

    Converted from the ``smollm2-gguf`` asset on first use (~40 s on two cores) and reused afterwards.
    """
    gguf = assets.path("smollm2-gguf", SMOLLM2_GGUF)
    fingerprint = {"source": SMOLLM2_GGUF, "bytes": gguf.stat().st_size, "version": _CONVERSION_VERSION}
    target = cache.model_dir(SMOLLM2_NAME, "small")
    if cache.lookup(SMOLLM2_NAME, fingerprint, "small", needs="config.json", honour_retrain=False) is not None:
        return target
    if verbose:
        print(f"converting {SMOLLM2_GGUF} to fp32 once (cached in {target}) …", flush=True)
    start = time.perf_counter()
    model, tokenizer = convert_gguf(gguf.parent, gguf.name)
    cache.save(model, SMOLLM2_NAME, fingerprint, {"convert_seconds": round(time.perf_counter() - start, 1)},
               "small", tokenizer=tokenizer)
    return target
