"""The LLM distillation recipe per profile (it imports only ``gguf`` from the ``llm`` track): :class:`LLMRecipe` (teacher, student, layers
to drop, LoRA targets, data, prompt formats, hyper-parameters), :func:`llm_recipe`, and notebook 05's step counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ..core.profiles import smoke_active
from .gguf import smollm2_path

__all__ = ['LLAMA_LORA_TARGETS', 'PHI_LORA_TARGETS', 'LLMRecipe', 'SMALL_SYSTEM_PROMPT', 'SMALL_HPARAMS', 'GPU_HPARAMS', 'GPU_TEACHER', 'GPU_STUDENT', 'ON_POLICY_GPU_TEACHER', 'ON_POLICY_GPU_STUDENT', 'SMOKE_SIZES', 'llm_recipe', 'contiguous_block', 'odd_layers', 'NOTEBOOK_STEPS', 'training_steps', 'eval_every']


#: LoRA targets. SmolLM2/Llama: every linear projection of attention (q, k, v, o) and MLP (gate, up, down) — a
#: pruned student must *repair* what the removed layers did, and the QLoRA paper (Dettmers et al. 2023) found that
#: adapting all linear layers is what matches full fine-tuning. Phi-2: the attention projections q, k, v and its
#: output ``dense`` (the LoRA paper only tried attention matrices: Hu et al. 2021, §7.1), as in the memory figures
#: measured with ``scripts/gpu_memory_probe.py``; ``fc1``/``fc2`` (Phi-2's MLP) add capacity and 13.1 M parameters at
#: r = 16 (32 layers × 2 × 16 × (2560 + 10240)), on top of the attention adapters' 10.5 M.
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


#: The gpu recipe's teacher and student (hub ids; the smoke run loads stand-ins for them, see ``llm.models.resolve``).
GPU_TEACHER = "mistralai/Mistral-7B-Instruct-v0.2"
GPU_STUDENT = "microsoft/phi-2"
#: Notebook 08's gpu pair (one tokenizer, as token-level on-policy KD needs; the smoke run loads stand-ins for them).
ON_POLICY_GPU_TEACHER = "HuggingFaceTB/SmolLM2-1.7B-Instruct"
ON_POLICY_GPU_STUDENT = "HuggingFaceTB/SmolLM2-360M-Instruct"

#: What the gpu profile's smoke run (``KD_SMOKE=1``) changes in the gpu recipe: sizes only (a handful of prompts,
#: short generations, 2 training steps at batch 2).
SMOKE_SIZES = dict(n_train=12, n_heldout=6, max_new_tokens=8, max_length=64, generation_batch_size=4)
_SMOKE_HPARAMS = dict(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1, logging_steps=1)


def llm_recipe(profile: Any = None, **overrides: Any) -> LLMRecipe:
    """The recipe of a profile (a ``Profile``, its name, or None → ``small``); ``overrides`` replace fields.

    In the gpu profile's smoke run (``KD_SMOKE=1``) the gpu recipe keeps everything but the sizes
    (:data:`SMOKE_SIZES`, 2 training steps at batch 2).

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
            profile="gpu", teacher=GPU_TEACHER, student=GPU_STUDENT,
            teacher_4bit=True, drop_layers=(), lora_targets=PHI_LORA_TARGETS, lora_dropout=0.05,
            teacher_prompt="chat", student_prompt="phi", data="dolly", n_train=1000, n_heldout=100,
            max_new_tokens=128, max_length=512, generation_batch_size=8, hparams=dict(GPU_HPARAMS), dtype="auto",
            shared_vocabulary=False,
        )
        if smoke_active():
            r = replace(r, **SMOKE_SIZES, hparams={**r.hparams, **_SMOKE_HPARAMS})
    else:
        raise ValueError(f"unknown profile {name!r}; expected 'small' or 'gpu'")
    return replace(r, **overrides) if overrides else r


def contiguous_block(n_layers: int, start: int, stop: int) -> tuple[int, ...]:
    """Layers ``start … stop − 1`` (to drop), validated against ``n_layers``."""
    if not 0 <= start < stop <= n_layers:
        raise ValueError(f"need 0 ≤ start < stop ≤ {n_layers}, got start={start}, stop={stop}")
    return tuple(range(start, stop))


def odd_layers(n_layers: int) -> tuple[int, ...]:
    """The odd layers 1, 3, 5, … (to drop): DistilBERT's "keep every other layer" rule."""
    return tuple(range(1, n_layers, 2))


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
    """How often (steps) notebook 05 records held-out perplexity while a student trains (every step in the gpu
    profile's smoke run, which trains 2)."""
    if r.profile == "gpu" and smoke_active():
        return 1
    return _EVAL_EVERY.get(r.profile, 50)
