"""Notebook 05's models: which teacher and student each profile distils, how they are loaded, pruned and adapted.

=========  ================================================  ===================================================
profile    teacher (frozen)                                  student (LoRA adapter trained)
=========  ================================================  ===================================================
small      SmolLM2-135M-Instruct, fp32 (offline asset        the same model with decoder layers 6–20 removed
           ``smollm2-gguf``, converted once and cached)      (30 → 15 layers), LoRA r=16 on every projection
gpu        ``mistralai/Mistral-7B-Instruct-v0.2`` in 4-bit   ``microsoft/phi-2`` (fp16 on a T4, bf16 where
           NF4 (bitsandbytes, double quantization)           supported), LoRA r=16 on q_proj, k_proj, v_proj, dense
=========  ================================================  ===================================================

Everything is loaded with ``from_pretrained(path_or_id)``; the ``small`` profile's path is a directory in the course
cache, the ``gpu`` profile's a hub id, so notebook code is the same for both.

The packaged SmolLM2 is a GGUF file (Q4_1, 98 MB). ``transformers`` can read it (``from_pretrained(...,
gguf_file=...)`` dequantizes every tensor to fp32), but parsing the file takes ~40 s on two cores and a GGUF-loaded
model refuses ``save_pretrained``. :func:`smollm2_path` therefore converts it **once**: the dequantized state dict is
copied into a plain ``LlamaForCausalLM`` whose config has no ``quantization_config`` and saved, with the tokenizer, in
the course cache; later loads take about a second.
"""
from __future__ import annotations

import contextlib
import copy
import io
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from . import assets, cache

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "LLMRecipe",
    "recipe",
    "SMOLLM2_GGUF",
    "SMOLLM2_NAME",
    "smollm2_path",
    "convert_gguf",
    "load_tokenizer",
    "load_causal_lm",
    "load_teacher",
    "load_student_base",
    "load_4bit",
    "prune_layers",
    "decoder_layers",
    "contiguous_block",
    "every_other",
    "add_lora",
    "lora_config",
    "merge_lora",
    "count_parameters",
    "memory_footprint_mb",
    "vocabulary_size",
    "mistral_tokenizer",
    "gpt2_tokenizer",
    "NOTEBOOK_STEPS",
    "training_steps",
    "eval_every",
    "DistilledStudents",
    "students_cached",
    "distilled_students",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the packaged GGUF inside the ``smollm2-gguf`` asset."""
SMOLLM2_NAME = "smollm2-135m-instruct-fp32"
"""Name of the converted model in the course cache (``cache.model_dir(SMOLLM2_NAME)``)."""
_CONVERSION_VERSION = 1  # bump when the conversion changes: the cached copy is then rebuilt

#: LoRA targets. SmolLM2/Llama: every linear projection of attention (q, k, v, o) and MLP (gate, up, down) — a
#: pruned student must *repair* what the removed layers did, and the QLoRA paper (Dettmers et al. 2023) found that
#: adapting all linear layers is what matches full fine-tuning. Phi-2: the attention projections q, k, v and its
#: output ``dense``, as in the LoRA paper's recommendation for a fixed budget (Hu et al. 2021, §7.1) and in the
#: memory figures of the course design (§7); add ``fc1``/``fc2`` (Phi-2's MLP) for more capacity at +16 M parameters.
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "dense")


# ---------------------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class LLMRecipe:
    """What one profile uses in notebook 05.

    Attributes:
        profile: ``"small"`` or ``"gpu"``.
        teacher: path or hub id of the teacher (a chat/instruct causal LM).
        student: path or hub id of the student's base model.
        teacher_4bit: load the teacher in 4-bit NF4 (bitsandbytes) — the gpu recipe; the small one shows the 4-bit
            load but generates in fp32 (bitsandbytes' CPU kernels are ~4× slower than fp32 matmuls).
        drop_layers: decoder layers removed from the student base (a pruned copy of the teacher), or ``()``.
        lora_targets, lora_r, lora_alpha, lora_dropout: the LoRA adapter (peft ``LoraConfig``).
        teacher_prompt / student_prompt: prompt format of each model: ``"chat"`` (the tokenizer's chat template)
            or ``"phi"`` (Phi-2's documented ``"Instruct: …\\nOutput:"`` format; Phi-2 has no chat template).
        system_prompt: system message of ``"chat"`` prompts (None: the template's default, if any).
        data: ``"instructions"`` (the course's templated set, offline) or ``"dolly"`` (databricks-dolly-15k).
        n_train, n_heldout: prompts the teacher answers for training and for evaluation.
        max_new_tokens: cap on the teacher's (and students') generated tokens.
        max_length: cap on prompt + response tokens in training.
        generation_batch_size: prompts per batched ``generate`` call (on 2 CPU cores 144 prompts per call cost
            0.36 s per prompt against 0.45 s in calls of 48: the per-token overhead of ``generate`` is shared).
        temperature, alpha_kd: the KD term's T and weight (loss = (1 − α)·CE + α·T²·KL). T = 1 by default: over a
            vocabulary of tens of thousands of tokens a higher T spreads the teacher's mass over thousands of
            irrelevant tokens (at T = 2 SmolLM2's top 32 tokens hold about a third of it), and the cached top-k
            teacher then keeps little of the distribution.
        top_k: teacher logits kept per position when they are cached (DistillKit-style sparse KD).
        hparams: ``TrainingArguments`` overrides for the student (steps, batch, learning rate …).
        dtype: the student's (and live teacher's) compute dtype: ``"float32"`` on CPU, ``"auto"`` = bf16 if the GPU
            supports it else fp16 (a T4 has no bf16).
        shared_vocabulary: whether teacher and student share one tokenizer (token-level KD possible).
    """

    profile: str
    teacher: str
    student: str
    teacher_4bit: bool
    drop_layers: tuple[int, ...]
    lora_targets: tuple[str, ...]
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    teacher_prompt: str = "chat"
    student_prompt: str = "chat"
    system_prompt: str | None = None
    data: str = "instructions"
    n_train: int = 256
    n_heldout: int = 32
    max_new_tokens: int = 40
    max_length: int = 128
    generation_batch_size: int = 144
    temperature: float = 1.0
    alpha_kd: float = 0.5
    top_k: int = 32
    hparams: dict = field(default_factory=dict)
    dtype: str = "float32"
    shared_vocabulary: bool = True

    def describe(self) -> str:
        def short(name: str) -> str:
            return Path(name).name if "/" in name and Path(name).exists() else name

        student = short(self.student)
        if self.drop_layers:
            student += f" with decoder layers {_ranges(self.drop_layers)} removed"
        bits = "4-bit NF4" if self.teacher_4bit else self.dtype
        return (f"teacher: {short(self.teacher)} ({bits}, frozen); student: {student} + LoRA r={self.lora_r} on "
                f"{', '.join(self.lora_targets)}; data: {self.data} ({self.n_train} train / {self.n_heldout} held-out "
                f"prompts, ≤ {self.max_new_tokens} new tokens); T = {self.temperature:g}, alpha_kd = {self.alpha_kd:g}")

    def generation_fingerprint(self, **extra: Any) -> dict:
        """What the teacher's responses depend on (not the student or its training settings), plus ``extra``."""
        keys = ("profile", "teacher_4bit", "teacher_prompt", "system_prompt", "data", "n_train", "n_heldout",
                "max_new_tokens", "generation_batch_size", "dtype")
        return {"teacher": _short_id(self.teacher), **{k: getattr(self, k) for k in keys}, **extra}

    def fingerprint(self, **extra: Any) -> dict:
        """The settings a cached artefact (generations, adapters) depends on, plus ``extra``."""
        d = {k: v for k, v in self.__dict__.items()}
        d["teacher"] = _short_id(self.teacher)
        d["student"] = _short_id(self.student)
        d["drop_layers"] = list(self.drop_layers)
        d["lora_targets"] = list(self.lora_targets)
        return {**d, **extra}


def _short_id(name: str) -> str:
    """Cache paths differ between machines; the last component identifies the model."""
    return Path(name).name if "/" in name and Path(name).is_absolute() else name


def _ranges(xs: Iterable[int]) -> str:
    xs = sorted(xs)
    out, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            out.append(f"{start}–{x}" if x != start else f"{x}")
            start = None
    return ", ".join(out)


#: SmolLM2's default system message ("You are a helpful AI assistant named SmolLM, trained by Hugging Face") is
#: replaced by a request for brevity: fewer answers run into the token cap, and every token the teacher does not
#: write is generation and training time saved on a CPU.
SMALL_SYSTEM_PROMPT = "Keep every answer to one short sentence."

#: A *constant* learning rate after a short warm-up: students trained for different numbers of steps then follow the
#: same curve (a shorter run is a prefix of a longer one), so equal-step and equal-time comparisons are fair.
SMALL_HPARAMS = dict(max_steps=80, per_device_train_batch_size=4, learning_rate=2e-3, warmup_steps=5,
                     lr_scheduler_type="constant_with_warmup", weight_decay=0.0, logging_steps=10)
GPU_HPARAMS = dict(num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                   learning_rate=2e-4, warmup_steps=0.05, lr_scheduler_type="cosine", weight_decay=0.0,
                   logging_steps=20)


def recipe(profile: Any = None, **overrides: Any) -> LLMRecipe:
    """The recipe of a profile (a ``Profile``, its name, or None → ``small``); ``overrides`` replace fields.

    ``small`` needs the ``smollm2-gguf`` asset and converts it on first use (see :func:`smollm2_path`).
    """
    name = getattr(profile, "name", profile) or "small"
    if name == "small":
        # the converted SmolLM2 is only needed (and converted) when teacher or student is not overridden
        path = "" if {"teacher", "student"} <= set(overrides) else str(smollm2_path())
        r = LLMRecipe(
            profile="small", teacher=path, student=path, teacher_4bit=False,
            drop_layers=contiguous_block(30, 6, 21), lora_targets=LLAMA_LORA_TARGETS, hparams=dict(SMALL_HPARAMS),
            system_prompt=SMALL_SYSTEM_PROMPT,
        )
    elif name == "gpu":
        r = LLMRecipe(
            profile="gpu", teacher="mistralai/Mistral-7B-Instruct-v0.2", student="microsoft/phi-2",
            teacher_4bit=True, drop_layers=(), lora_targets=PHI_LORA_TARGETS, lora_dropout=0.05,
            teacher_prompt="chat", student_prompt="phi", data="dolly", n_train=1000, n_heldout=100,
            max_new_tokens=128, max_length=512, generation_batch_size=8, hparams=dict(GPU_HPARAMS), dtype="auto",
            shared_vocabulary=False,
        )
    else:
        raise ValueError(f"unknown profile {name!r}; expected 'small' or 'gpu'")
    return replace(r, **overrides) if overrides else r


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

    from .models import _quiet_load

    with _shared_gguf_reader(), contextlib.redirect_stderr(io.StringIO()):  # no de-quantization progress bar
        tokenizer = _quiet_load(AutoTokenizer, str(gguf_dir), gguf_file=gguf_file)
        gguf_model = _quiet_load(AutoModelForCausalLM, str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
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


def smollm2_path(verbose: bool = True) -> Path:
    """Directory of SmolLM2-135M-Instruct as a plain fp32 ``LlamaForCausalLM`` (+ tokenizer) in the course cache.

    Converted from the ``smollm2-gguf`` asset on first use (~40 s on two cores) and reused afterwards.
    """
    gguf = assets.path("smollm2-gguf", SMOLLM2_GGUF)
    fingerprint = {"source": SMOLLM2_GGUF, "bytes": gguf.stat().st_size, "version": _CONVERSION_VERSION}
    target = cache.model_dir(SMOLLM2_NAME, "small")
    meta = cache.load_meta(SMOLLM2_NAME, "small")
    if meta is not None and meta.get("fingerprint") == fingerprint and (target / "config.json").is_file():
        return target
    if verbose:
        print(f"converting {SMOLLM2_GGUF} to fp32 once (cached in {target}) …", flush=True)
    start = time.perf_counter()
    model, tokenizer = convert_gguf(gguf.parent, gguf.name)
    cache.save(model, SMOLLM2_NAME, fingerprint, {"convert_seconds": round(time.perf_counter() - start, 1)},
               "small", tokenizer=tokenizer)
    return target


# ---------------------------------------------------------------------------------------------------- loading
def _torch_dtype(name: str) -> "torch.dtype":
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes) + ['auto']}, got {name!r}")
    return dtypes[name]


def load_tokenizer(name_or_path: str, padding_side: str = "left") -> Any:
    """``AutoTokenizer`` with a padding token (the EOS token if the model has none) and ``padding_side`` set.

    Left padding is what batched generation needs (every prompt ends where generation starts); the training
    collator pads on the right itself.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32", four_bit: bool = False,
                   device_map: Any = None) -> "nn.Module":
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; ``four_bit`` → bitsandbytes NF4 (see :func:`load_4bit`)."""
    from transformers import AutoModelForCausalLM

    from .models import _quiet_load

    if four_bit:
        return load_4bit(name_or_path, compute_dtype=dtype, device_map=device_map)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = _quiet_load(AutoModelForCausalLM, name_or_path, **kwargs)
    return model.eval()


def load_4bit(name_or_path: str, compute_dtype: str = "auto", double_quant: bool = True,
              device_map: Any = None) -> "nn.Module":
    """Load a causal LM with its decoder's linear layers quantized to 4-bit NF4 by bitsandbytes (QLoRA's format).

    NF4 stores each weight in 4 bits plus one scale per block of 64 weights (8-bit scales with double
    quantization); embeddings, norms and the LM head stay in ``compute_dtype``. Matmuls dequantize on the fly.
    Works on CUDA and, with bitsandbytes ≥ 0.45, on CPU (slowly).
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from .models import _quiet_load

    dtype = _torch_dtype(compute_dtype)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                                bnb_4bit_compute_dtype=dtype)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = _quiet_load(AutoModelForCausalLM, name_or_path, quantization_config=config, dtype=dtype,
                        device_map=device_map)
    if next(model.parameters()).device.type == "cpu":
        _check_cpu_packable(model)
    return model.eval()


def _check_cpu_packable(model: "nn.Module", block_n: int = 32) -> None:
    """Raise ``ValueError`` if bitsandbytes' CPU kernel could not repack one of ``model``'s NF4 layers.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weight on the first no-grad forward in eval mode, which
    needs ``in_features`` to be a whole number of quantization blocks and ``out_features`` a multiple of 32. Other
    CPUs never repack, so the same model would work on one machine and crash on another: check on every CPU.
    """
    for name, module in model.named_modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None or not hasattr(module, "in_features"):
            continue
        if module.in_features % state.blocksize or module.out_features % block_n:
            raise ValueError(
                f"layer '{name}' ({module.in_features} -> {module.out_features}) cannot run 4-bit on a CPU: "
                f"bitsandbytes' CPU kernel needs in_features to be a multiple of the quantization block "
                f"({state.blocksize}) and out_features a multiple of {block_n}. Use a model whose widths are "
                f"multiples of 64, or load it without 4-bit on a CPU.")


def load_teacher(r: LLMRecipe, device_map: Any = None) -> "nn.Module":
    """The recipe's frozen teacher (4-bit when ``r.teacher_4bit``), in eval mode, ``requires_grad=False``."""
    model = load_causal_lm(r.teacher, r.dtype, four_bit=r.teacher_4bit, device_map=device_map)
    return model.requires_grad_(False)


def load_student_base(r: LLMRecipe, device_map: Any = None) -> "nn.Module":
    """The student before LoRA: the recipe's student model, pruned to ``r.drop_layers`` if any."""
    model = load_causal_lm(r.student, r.dtype, device_map=device_map)
    if r.drop_layers:
        keep = [i for i in range(len(decoder_layers(model))) if i not in set(r.drop_layers)]
        model = prune_layers(model, keep)
    return model


def mistral_tokenizer() -> Any:
    """Mistral-7B's SentencePiece tokenizer (32 000 tokens) from the offline ``mistral-tokenizer`` asset."""
    import shutil
    import tempfile

    from transformers import LlamaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:  # transformers looks for the file name "tokenizer.model"
        shutil.copy(assets.path("mistral-tokenizer", "tokenizer.model.v1"), Path(tmp) / "tokenizer.model")
        return LlamaTokenizerFast.from_pretrained(tmp)


def gpt2_tokenizer() -> Any:
    """The GPT-2 byte-level BPE tokenizer (50 257 tokens; Phi-2's tokenizer is this BPE plus a few added tokens) from the offline
    ``gpt2-bpe`` asset."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = models.BPE.from_file(str(assets.path("gpt2-bpe", "encoder.json")), str(assets.path("gpt2-bpe", "vocab.bpe")))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def vocabulary_size(model: "nn.Module") -> int:
    """Width of the model's logits (the LM head's rows; may exceed ``len(tokenizer)``: Phi-2 pads 50 295 → 51 200)."""
    head = model.get_output_embeddings()
    if head is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


# ---------------------------------------------------------------------------------------------------- pruning
_LAYER_KEY = re.compile(r"^(.*\blayers)\.(\d+)\.(.*)$")


def decoder_layers(model: "nn.Module") -> Any:
    """The ``nn.ModuleList`` of decoder blocks (``model.model.layers`` for Llama, Mistral, Phi, Qwen …)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.layers: prune_layers supports decoder-only causal LMs "
                         "such as LlamaForCausalLM, MistralForCausalLM, PhiForCausalLM")
    return layers


def contiguous_block(n_layers: int, start: int, stop: int) -> tuple[int, ...]:
    """Layers ``start … stop − 1`` (to drop), validated against ``n_layers``."""
    if not 0 <= start < stop <= n_layers:
        raise ValueError(f"need 0 ≤ start < stop ≤ {n_layers}, got start={start}, stop={stop}")
    return tuple(range(start, stop))


def every_other(n_layers: int) -> tuple[int, ...]:
    """The odd layers 1, 3, 5, … (to drop): DistilBERT's "keep every other layer" rule."""
    return tuple(range(1, n_layers, 2))


def prune_layers(model: "nn.Module", keep: Sequence[int]) -> "nn.Module":
    """A new model of the same class keeping only decoder layers ``keep`` (in that order), weights copied.

    Student layer ``i`` is teacher layer ``keep[i]``; embeddings, final norm and LM head are copied too. The
    student is built from a *copy* of the config with ``num_hidden_layers = len(keep)``, so every attention module
    gets its new ``layer_idx`` (the KV cache is indexed by it: a renumbering mistake breaks generation). The
    original model is left untouched and shares no tensor with the copy.

    Raises:
        ValueError: an empty, out-of-range or repeated ``keep``; a model without ``model.layers``.
    """
    import torch

    n = len(decoder_layers(model))
    keep = [int(i) for i in keep]
    if not keep:
        raise ValueError("keep at least one decoder layer")
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the model has layers 0 … {n - 1}")
    if len(set(keep)) != len(keep):
        raise ValueError(f"keep lists a layer twice: {keep}; each student layer must be a different teacher layer")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    for attr in ("layer_types",):  # per-layer settings (sliding/full attention) follow their layers
        values = getattr(config, attr, None)
        if isinstance(values, (list, tuple)) and len(values) == n:
            setattr(config, attr, [values[i] for i in keep])
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match is None:
            state[key] = value.detach().clone()
        elif int(match.group(2)) in new_index:
            state[f"{match.group(1)}.{new_index[int(match.group(2))]}.{match.group(3)}"] = value.detach().clone()
    dtype = next(model.parameters()).dtype
    student = _empty_like_class(type(model), config).to(dtype)
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    student.generation_config = copy.deepcopy(model.generation_config)
    return student.eval()


# ------------------------------------------------------------------------------------------------------- LoRA
def lora_config(r: LLMRecipe) -> Any:
    """The recipe's peft ``LoraConfig`` (task ``CAUSAL_LM``)."""
    from peft import LoraConfig

    return LoraConfig(r=r.lora_r, lora_alpha=r.lora_alpha, lora_dropout=r.lora_dropout,
                      target_modules=list(r.lora_targets), task_type="CAUSAL_LM", bias="none")


def add_lora(model: "nn.Module", r: LLMRecipe, seed: int = 0) -> "nn.Module":
    """Wrap ``model`` in a peft ``PeftModel`` with the recipe's LoRA adapter (base frozen, adapter trainable).

    LoRA (Hu et al. 2021) adds ΔW = (α/r)·B·A next to each targeted weight W, with A (r × in) random and
    B (out × r) zero, so the model starts *exactly* as the base model. Only A and B are trained.
    """
    import torch
    from peft import get_peft_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(r))
    return peft_model


def merge_lora(peft_model: "nn.Module") -> "nn.Module":
    """A plain model with the adapter folded into the base weights (W + (α/r)·B·A): no peft needed to use it,
    no extra latency. The adapter copy inside ``peft_model`` is consumed; reload it to keep training."""
    return peft_model.merge_and_unload()


def count_parameters(model: "nn.Module", trainable_only: bool = False) -> int:
    """Number of (trainable) parameters; tied weights counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def memory_footprint_mb(model: "nn.Module") -> float:
    """Bytes of parameters and buffers in MB (``model.get_memory_footprint()`` when available)."""
    if hasattr(model, "get_memory_footprint"):
        return model.get_memory_footprint() / 1e6
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 1e6


# ------------------------------------------------------------------------------- notebook 05's students, reusable
#: Training steps of notebook 05's students in the ``small`` profile (the ``gpu`` profile trains for the recipe's
#: epochs). The live-teacher KD run is short: it only measures what a teacher forward per step costs.
NOTEBOOK_STEPS = {"small": {"sft": 80, "token_kd": 12, "topk_kd": 80}}
_EVAL_EVERY = {"small": 20, "gpu": 50}


def training_steps(r: LLMRecipe, method: str) -> dict:
    """``{"max_steps": n}`` for notebook 05's ``method`` student in ``r.profile``, or ``{}`` (the recipe's epochs)."""
    steps = NOTEBOOK_STEPS.get(r.profile, {})
    return {"max_steps": steps[method]} if method in steps else {}


def eval_every(r: LLMRecipe) -> int:
    """How often (steps) notebook 05 records held-out perplexity while a student trains."""
    return _EVAL_EVERY.get(r.profile, 50)


@dataclass
class DistilledStudents:
    """Notebook 05's models and held-out data, as returned by :func:`distilled_students`.

    Attributes:
        recipe: the profile's :class:`LLMRecipe`.
        tokenizer: the student's tokenizer (left padding).
        teacher: the frozen teacher, or None when it was not needed (``with_teacher=False`` and every student cached).
        pruned: the student before training (the pruned base in ``small``, plain Phi-2 in ``gpu``), eval mode.
        students: ``{method: LoRA student}`` (peft ``PeftModel``, eval mode), e.g. ``"sft"``, ``"topk_kd"``.
        runs: ``{method: info}`` from :func:`course_utils.llm_trainer.distil` (curve, seconds per step, …).
        heldout_records: the filtered held-out prompts with the teacher's responses (``instruction``, ``context``,
            ``response`` …).
        heldout_data: the same tokenised for the student (``input_ids``, ``attention_mask``, ``labels``).
    """

    recipe: LLMRecipe
    tokenizer: Any
    teacher: Any
    pruned: Any
    students: dict
    runs: dict
    heldout_records: list
    heldout_data: Any


def _default_methods(r: LLMRecipe) -> tuple[str, str]:
    """Notebook 05's students: SFT plus token-level KD from the cached top-k, or ULD across two vocabularies."""
    return ("sft", "topk_kd") if r.shared_vocabulary else ("sft", "uld")


def students_cached(profile: Any = None, methods: Sequence[str] | None = None, **overrides: Any) -> bool:
    """True when notebook 05's teacher responses and its ``methods`` students are in the course cache.

    A cheap presence check (no model is loaded) for notebooks that evaluate notebook 05's students and would
    rather not train them silently: :func:`distilled_students` still verifies each entry's fingerprint and retrains
    a stale one.
    """
    from . import cache

    # only names are needed: empty model paths spare the small profile's one-off GGUF conversion (≈ 25 s)
    r = recipe(profile, **{"teacher": "", "student": "", **overrides})
    names = [f"llm-teacher-responses-{r.data}", *(f"llm-student-{m}" for m in (methods or _default_methods(r)))]
    return all(cache.load_meta(name, r.profile) is not None for name in names)


def distilled_students(profile: Any = None, methods: Sequence[str] | None = None, with_teacher: bool = True,
                       verbose: bool = False, **overrides: Any) -> DistilledStudents:
    """Notebook 05's distilled LLM students, loaded from the course cache (trained on demand, as notebook 05 does).

    Runs notebook 05's pipeline with its exact settings — prompts, teacher responses (cached), filter, SFT
    examples, the teacher's top-k (cached) and :func:`course_utils.llm_trainer.distil` with
    :func:`training_steps` / :func:`eval_every` — so after notebook 05 every step is a cache hit (seconds);
    on an empty cache it costs what notebook 05's training costs.

    Args:
        profile: a ``Profile``, its name, or None (``small``).
        methods: which students; default ``("sft", "topk_kd")`` when teacher and student share a vocabulary,
            else ``("sft", "uld")``.
        with_teacher: load the teacher even if every student is cached (needed to score KD loss against it).
        verbose: print what is loaded or trained.
        overrides: :func:`recipe` overrides (a different recipe trains, and caches, different students).

    Returns:
        :class:`DistilledStudents`.

    Example::

        d = llm.distilled_students("small")
        scores = llm_eval.evaluate_many({"pruned": d.pruned, **d.students}, d.heldout_data, teacher=d.teacher)
    """
    from . import llm_data, llm_eval, llm_trainer

    r = recipe(profile, **overrides)
    methods = tuple(_default_methods(r) if methods is None else methods)
    for m in methods:
        if m not in llm_trainer.METHODS:
            raise ValueError(f"unknown method {m!r}; expected some of {llm_trainer.METHODS}")
        if m in ("token_kd", "topk_kd") and not r.shared_vocabulary:
            raise ValueError(f"method {m!r} needs one shared vocabulary; the {r.profile} recipe's teacher and student "
                             "have two: use 'sft' (sequence-level KD) or 'uld'")
    tokenizer = load_tokenizer(r.student)
    teacher_tokenizer = load_tokenizer(r.teacher) if r.teacher != r.student else tokenizer
    loaded: dict[str, Any] = {}

    def get_teacher() -> Any:
        if "teacher" not in loaded:
            loaded["teacher"] = load_teacher(r)
        return loaded["teacher"]

    prompts = llm_data.instruction_prompts(r)
    generated = llm_data.teacher_responses(r, get_teacher, teacher_tokenizer, prompts)
    kept, _ = llm_data.filter_responses(generated["train"])
    heldout_records, _ = llm_data.filter_responses(generated["heldout"])
    train_data = llm_data.sft_dataset(kept, tokenizer, r)
    heldout_data = llm_data.sft_dataset(heldout_records, tokenizer, r)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pruned = load_student_base(r).eval()
    start = round(llm_eval.evaluate_lm(pruned, heldout_data, pad_token_id=pad)["perplexity"], 4)
    students, runs = {}, {}
    for m in methods:
        kwargs: dict[str, Any] = dict(training_steps(r, m))
        data = train_data
        if m == "topk_kd":
            data, stats = llm_trainer.teacher_topk(r, get_teacher, train_data, pad, verbose=verbose)
            kwargs["offset_seconds"] = stats["seconds"]
        elif m == "uld":
            data = llm_data.sft_dataset(kept, tokenizer, r, teacher_tokenizer=teacher_tokenizer)
        students[m], runs[m] = llm_trainer.distil(r, m, data, tokenizer, teacher=get_teacher, heldout=heldout_data,
                                                  eval_every=eval_every(r), start_perplexity=start, verbose=verbose,
                                                  **kwargs)
        students[m].eval()
    teacher = get_teacher() if with_teacher else loaded.get("teacher")
    return DistilledStudents(r, tokenizer, teacher, pruned, students, runs, heldout_records, heldout_data)
