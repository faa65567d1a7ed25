"""Loading and shaping causal LMs: tokenizers, fp32/fp16 and 4-bit NF4 loading (bitsandbytes), the real Mistral and GPT-2
tokenizers from the offline assets, vocabulary size, decoder-layer pruning, LoRA adapters and merging.

In the gpu profile's smoke run (``KD_SMOKE=1``) the loaders resolve the gpu recipes' hub ids (Mistral-7B-Instruct,
Phi-2; notebook 08's SmolLM2-1.7B / 360M-Instruct) to :func:`smoke_lm_standins`: the same classes with tiny
random-weight configs and the real tokenizers, loaded by the same ``from_pretrained`` calls (the Mistral teacher in
4-bit through bitsandbytes).
"""
from __future__ import annotations

import atexit
import copy
import functools
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..core import assets
from ..core.hf import quiet_load
from ..core.profiles import smoke_active
from .gguf import _empty_like_class, smollm2_tokenizer
from .recipe import GPU_STUDENT, GPU_TEACHER, ON_POLICY_GPU_STUDENT, ON_POLICY_GPU_TEACHER, LLMRecipe
from .tiny import save_gpu_standins, save_smollm2_standins

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ['STANDIN_PAIRS', 'smoke_lm_standins', 'resolve', 'load_lm_tokenizer', 'load_causal_lm', 'load_4bit', 'load_lm_teacher', 'load_student_base', 'mistral_tokenizer', 'gpt2_tokenizer', 'vocabulary_size', 'decoder_layers', 'prune_layers', 'lora_config', 'add_lora', 'merge_lora', 'memory_footprint_mb']


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


#: The gpu recipes' hub ids that the smoke run replaces, and the stand-in pair of :func:`smoke_lm_standins` each is in.
STANDIN_PAIRS = {GPU_TEACHER: "distillation", GPU_STUDENT: "distillation",
                 ON_POLICY_GPU_TEACHER: "on_policy", ON_POLICY_GPU_STUDENT: "on_policy"}


@functools.lru_cache(maxsize=None)
def smoke_lm_standins(pair: str = "distillation") -> dict[str, str]:
    """``{hub id: directory}`` of one gpu pair's smoke-run stand-ins, built once per process in a temporary directory
    removed at exit: ``"distillation"`` (notebook 05's Mistral-7B-Instruct → Phi-2:
    :func:`course_utils.llm.tiny.save_gpu_standins` on :func:`mistral_tokenizer` and :func:`gpt2_tokenizer`) or
    ``"on_policy"`` (notebook 08's SmolLM2-1.7B → 360M-Instruct: :func:`course_utils.llm.tiny.save_smollm2_standins`
    on SmolLM2's tokenizer).

    Raises:
        ValueError: for another ``pair``.
    """
    if pair not in set(STANDIN_PAIRS.values()):
        raise ValueError(f"pair must be 'distillation' (notebook 05) or 'on_policy' (notebook 08), got {pair!r}")
    root = Path(tempfile.mkdtemp(prefix=f"kd-course-smoke-{pair}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    if pair == "on_policy":
        paths = save_smollm2_standins(root, smollm2_tokenizer())
        return {ON_POLICY_GPU_TEACHER: paths["teacher"], ON_POLICY_GPU_STUDENT: paths["student"]}
    paths = save_gpu_standins(root, mistral_tokenizer(), gpt2_tokenizer())
    return {GPU_TEACHER: paths["teacher"], GPU_STUDENT: paths["student"]}


def resolve(name_or_path: str) -> str:
    """What ``from_pretrained`` loads for ``name_or_path``: itself, except in the gpu profile's smoke run
    (``KD_SMOKE=1``), where the gpu recipes' hub ids (:data:`STANDIN_PAIRS`) become their stand-ins' directories
    (:func:`smoke_lm_standins`)."""
    if name_or_path in STANDIN_PAIRS and smoke_active():
        return smoke_lm_standins(STANDIN_PAIRS[name_or_path])[name_or_path]
    return name_or_path


def load_lm_tokenizer(name_or_path: str, padding_side: str = "left") -> Any:
    """``AutoTokenizer`` with a padding token (the EOS token if the model has none) and ``padding_side`` set.

    Left padding is what batched generation needs (every prompt ends where generation starts); the training
    collator pads on the right itself.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32", four_bit: bool = False,
                   device_map: Any = None) -> "nn.Module":
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; ``four_bit`` → bitsandbytes NF4 (see :func:`load_4bit`)."""
    from transformers import AutoModelForCausalLM


    if four_bit:
        return load_4bit(name_or_path, compute_dtype=dtype, device_map=device_map)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = quiet_load(AutoModelForCausalLM, resolve(name_or_path), **kwargs)
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


    dtype = _torch_dtype(compute_dtype)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                                bnb_4bit_compute_dtype=dtype)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = quiet_load(AutoModelForCausalLM, resolve(name_or_path), quantization_config=config, dtype=dtype,
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


def load_lm_teacher(r: LLMRecipe, device_map: Any = None) -> "nn.Module":
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


def prune_layers(model: "nn.Module", keep: Sequence[int]) -> "nn.Module":
    """A new model of the same class keeping only decoder layers ``keep`` (in that order), weights copied.

    Student layer ``i`` is teacher layer ``keep[i]``; embeddings, final norm and LM head are copied too. The
    student is built from a *copy* of the config with ``num_hidden_layers = len(keep)``, so every attention module
    gets its new ``layer_idx`` (the KV cache is indexed by it: a renumbering mistake breaks generation). The
    original model is left untouched and shares no tensor with the copy.

    Raises:
        ValueError: an empty, out-of-range or repeated ``keep``; a model without ``model.layers``.
    """

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

    Raises:
        ValueError: a name in ``r.lora_targets`` matches no module of ``model`` (peft would skip it silently).
    """
    import torch
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in r.lora_targets if t not in names]
    if missing:  # peft adapts the targets it finds and silently skips the others
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"LoRA targets {missing} name no module of {type(model).__name__}; its linear layers are "
                         f"named {linear}: fix the recipe's lora_targets")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(r))
    return peft_model


def merge_lora(peft_model: "nn.Module") -> "nn.Module":
    """A plain model with the adapter folded into the base weights (W + (α/r)·B·A): no peft needed to use it,
    no extra latency. The adapter copy inside ``peft_model`` is consumed; reload it to keep training."""
    return peft_model.merge_and_unload()


def memory_footprint_mb(model: "nn.Module") -> float:
    """Bytes of parameters and buffers in MB (``model.get_memory_footprint()`` when available)."""
    if hasattr(model, "get_memory_footprint"):
        return model.get_memory_footprint() / 1e6
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 1e6
