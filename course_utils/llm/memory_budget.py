"""GPU memory budgets for LLM distillation, and tools to measure peak memory on GPU and CPU.

Two halves:

* **Estimating** (no GPU needed): :func:`estimate_training_memory` adds up what a LoRA distillation step keeps on
  the GPU — the frozen teacher's (4-bit) weights, the student's weights, the LoRA parameters with their gradients
  and AdamW states, activations (with or without gradient checkpointing), the logits and what the loss makes of
  them — and returns a :class:`MemoryEstimate` that prints as a table and answers ``fits(gpu)``.
  :func:`estimate_for` fills the architecture numbers from a :class:`ModelSpec` preset (:data:`MISTRAL_7B`,
  :data:`PHI_2`), and :func:`recommend` picks batch size and gradient checkpointing for a GPU preset
  (:data:`GPUS`: T4 16 GB, A100 40/80 GB, H100 80 GB).
* **Measuring**: :func:`measure_peak_memory` runs a function and reports the peak memory *above what was allocated
  before it*: on CUDA from ``torch.cuda.max_memory_allocated``, on CPU from the allocations recorded by
  ``torch.profiler`` (exact allocator bytes, immune to glibc's caching, which makes RSS lie unless
  ``MALLOC_MMAP_THRESHOLD_=65536`` is set). :func:`kd_loss_peak_memory` / :func:`compare_kd_loss_memory` apply it
  to the naive and the chunked KD losses (optionally in a subprocess that reads peak RSS).

Calibration of the estimator (numbers in GiB, ``torch.cuda.max_memory_allocated``; measured on one H100 with
random weights of the real architectures, an earlier run of ``scripts/gpu_memory_probe.py``; reproduced by
``tests/llm/test_memory_budget.py::test_estimator_matches_measured_reference``, which prints this comparison)::

    what (Mistral-7B NF4 teacher, Phi-2 fp16 + LoRA r=16, batch 4 × 512)   measured   estimated
    teacher loaded in 4-bit NF4 (double quant)                               4.09        3.84   (−6 %)
    teacher forward, no grad                                                 4.66        4.41   (−5 %)
    both models resident                                                     9.15        9.06   (−1 %)
    one LoRA step, student CE only                                          22.97       22.89   (−0.3 %)
      … with gradient checkpointing                                         11.16       11.08   (−0.7 %)
    one LoRA step + teacher forward + ULD                                   26.30       26.25   (−0.2 %)
      … with gradient checkpointing                                         14.40       14.44   (+0.3 %)

Three constants were fitted to those rows (so the step rows agree by construction and are no independent check):
``ACTIVATION_FACTOR`` (≈ 80 bytes per token per hidden unit per layer for Phi-2 in fp16: its unfused ``gelu_new``
keeps four 4h-wide tensors, LoRA dropout copies its inputs), ``CE_LOGITS_FACTOR`` (3 fp32 copies of the logits
for the cross-entropy) and ``ULD_FACTOR`` (8 fp32 ``B·S·V`` tensors for the sort-based ULD loss). The weight rows
come from first principles (0.5 B/param + 0.016 B/param of NF4 double-quant statistics; fp16 embeddings and head)
and land within 6 %; the 4.09 GiB includes about 0.25 GiB that the loading path leaves allocated, which the
"both resident" row no longer shows. Other architectures, sequence lengths and attention kernels shift the
activation term: treat estimates as ±15 % and re-measure with ``scripts/gpu_memory_probe.py`` when you can.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from ..core.profiles import smoke_active
from ..evaluation.peak_memory import GiB

__all__ = ['GPUSpec', 'GPUS', 'ModelSpec', 'MISTRAL_7B', 'PHI_2', 'PHI_2_LORA_R16_PARAMS', 'SMOLLM2_1_7B', 'SMOLLM2_360M', 'SMOLLM2_360M_LORA_R16_PARAMS', 'MEASURED_H100', 'ACTIVATION_FACTOR', 'CE_LOGITS_FACTOR', 'KD_NAIVE_FACTOR', 'ULD_FACTOR', 'FORWARD_TRANSIENT_FACTOR', 'NF4_OVERHEAD_DOUBLE_QUANT', 'NF4_OVERHEAD', 'LORA_BYTES_PER_PARAM', 'BUDGET_METHODS', 'MemoryEstimate', 'detect_gpu', 'estimate_training_memory', 'estimate_for', 'teacher_footprint_gib', 'reference_comparison', 'Recommendation', 'recommend']


# ------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class GPUSpec:
    """A GPU as PyTorch sees it: ``total_gib`` is ``torch.cuda.get_device_properties(0).total_memory / 2**30``."""

    name: str
    total_gib: float
    bf16: bool
    note: str = ""


GPUS: dict[str, GPUSpec] = {
    "T4": GPUSpec("NVIDIA T4 16 GB", 14.75, False, "Colab's free GPU; no bf16 (train in fp16)"),
    "A100-40GB": GPUSpec("NVIDIA A100 40 GB", 39.39, True),
    "A100-80GB": GPUSpec("NVIDIA A100 80 GB", 79.15, True),
    "H100-80GB": GPUSpec("NVIDIA H100 80 GB", 79.19, True),
}


@dataclass(frozen=True)
class ModelSpec:
    """The numbers of a decoder-only LM that decide its memory (from its ``config.json``)."""

    name: str
    n_params: int
    hidden_size: int
    n_layers: int
    vocab_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    #: parameters that stay 16-bit when the model is loaded in 4/8 bit: embeddings, LM head, norms, biases
    #: (bitsandbytes only quantizes the ``nn.Linear`` layers inside the decoder blocks).
    unquantized_params: int

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * (self.hidden_size // self.n_heads)


#: mistralai/Mistral-7B-v0.1 (and -Instruct): 7.24 B parameters, 32 000-entry vocabulary, untied head.
MISTRAL_7B = ModelSpec("Mistral-7B", 7_241_732_096, 4096, 32, 32_000, 14_336, 32, 8, 262_410_240)
#: microsoft/phi-2: 2.78 B parameters, 51 200 logits (50 295 real tokens, padded), untied head with bias.
PHI_2 = ModelSpec("Phi-2", 2_779_683_840, 2560, 32, 51_200, 10_240, 32, 32, 263_101_440)
#: HuggingFaceTB/SmolLM2-1.7B-Instruct and SmolLM2-360M-Instruct (their config.json): one 49 152-token vocabulary,
#: tied embeddings — notebook 08's gpu pair for on-policy KD.
SMOLLM2_1_7B = ModelSpec("SmolLM2-1.7B", 1_711_376_384, 2048, 24, 49_152, 8192, 32, 32, 100_663_296)
SMOLLM2_360M = ModelSpec("SmolLM2-360M", 361_821_120, 960, 32, 49_152, 2560, 15, 5, 47_185_920)
#: LoRA r = 16 on all seven projections of SmolLM2-360M: 32 layers × 16 × (2·(960 + 960) + 2·(960 + 320) + 3·(960 + 2560)).
SMOLLM2_360M_LORA_R16_PARAMS = 8_683_520
#: LoRA r = 16 on q_proj, k_proj, v_proj, dense of Phi-2: 32 layers × 4 modules × 16 × (2560 + 2560).
PHI_2_LORA_R16_PARAMS = 10_485_760

#: Reference peaks (GiB, max_memory_allocated) measured on one H100 with ``scripts/gpu_memory_probe.py`` (the
#: README has a later run on an H200).
MEASURED_H100: dict[str, float] = {
    "teacher_loaded": 4.09,
    "teacher_forward": 4.66,
    "both_resident": 9.15,
    "step_ce": 22.97,
    "step_ce_ckpt": 11.16,
    "step_uld": 26.30,
    "step_uld_ckpt": 14.40,
}

# ------------------------------------------------------------------------------------------- constants
#: bytes kept per token, per hidden unit, per decoder layer for backward (fp16, no checkpointing), fitted to the
#: Phi-2 + LoRA rows of §7. Korthikanti et al. (2022) give 34 for a GPT block with flash attention; Phi-2's
#: unfused gelu_new (4 tensors of width 4h) and the LoRA dropout copies of q/k/v/dense inputs add the rest.
ACTIVATION_FACTOR = 80.0
#: fp32 copies of the student logits alive at the cross-entropy's peak: the upcast, the log-softmax kept for
#: backward, and its gradient (Hugging Face's ``ForCausalLMLoss`` upcasts to fp32).
CE_LOGITS_FACTOR = 3.0
#: extra fp32 copies for the naive token-level KL (teacher log-softmax, student log-softmax/T, the KL's gradient
#: and elementwise temporaries; 5× the logits above the inputs measured for the loss alone, minus the shared
#: gradient). Not calibrated on a GPU step; the chunked loss removes it.
KD_NAIVE_FACTOR = 4.0
#: fp32 ``B·S·max(V)`` tensors alive at a sort-based ULD loss's peak (softmax, sorted values, int64 indices = 2,
#: padded teacher, difference, |difference|...), fitted to the ULD rows of §7.
ULD_FACTOR = 8.0
#: transient activations of a no-grad forward, bytes per token per hidden unit (the widest MLP temporaries),
#: fitted to the teacher-forward row of §7.
FORWARD_TRANSIENT_FACTOR = 40.0
#: NF4 statistics per parameter: one absmax per 64 weights, stored in 8 bit with double quantization (plus an
#: fp32 second-level scale per 256 blocks), or fp32 without it.
NF4_OVERHEAD_DOUBLE_QUANT = 1 / 64 + 4 / (64 * 256)
NF4_OVERHEAD = 4 / 64
#: LoRA parameter, gradient and AdamW's two moments, all fp32 (peft keeps adapters in fp32 by default).
LORA_BYTES_PER_PARAM = 16

BUDGET_METHODS = ("ce", "token_kd", "token_kd_chunked", "uld", "sequence")


# ------------------------------------------------------------------------------------------- estimate
@dataclass
class MemoryEstimate:
    """Estimated peak GPU memory of one training step, in GiB, split by what holds it.

    ``allocated`` is comparable with ``torch.cuda.max_memory_allocated``; ``total`` adds the CUDA context and the
    caching allocator's fragmentation, i.e. what must fit in the card.
    """

    method: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    teacher_weights: float
    student_weights: float
    lora_states: float
    activations: float
    logits: float
    loss_temporaries: float
    teacher_forward: float
    phases: dict[str, float]
    peak_phase: str
    cuda_context: float
    fragmentation: float
    notes: list[str] = field(default_factory=list)

    COMPONENTS = ("teacher_weights", "student_weights", "lora_states", "activations", "logits", "loss_temporaries",
                  "teacher_forward")
    LABELS = {
        "teacher_weights": "teacher weights (frozen, quantized)",
        "student_weights": "student weights (frozen base)",
        "lora_states": "LoRA params + grads + AdamW (fp32)",
        "activations": "activations kept for backward",
        "logits": "logits (student, teacher)",
        "loss_temporaries": "loss temporaries",
        "teacher_forward": "teacher forward / generation transient",
    }

    @property
    def allocated(self) -> float:
        """Peak allocated memory (GiB): the largest phase."""
        return self.phases[self.peak_phase]

    @property
    def total(self) -> float:
        """What the card must hold (GiB): allocated peak + allocator fragmentation + CUDA context."""
        return self.allocated * (1.0 + self.fragmentation) + self.cuda_context

    def fits(self, gpu: float | str | GPUSpec, headroom_gib: float = 0.0) -> bool:
        """True if :attr:`total` + ``headroom_gib`` ≤ the GPU's memory (GiB, a :data:`GPUS` key, or a GPUSpec)."""
        return self.total + headroom_gib <= _gpu_gib(gpu)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(allocated=self.allocated, total=self.total)
        return d

    def table(self, gpu: float | str | GPUSpec | None = None) -> str:
        """A plain-text table of the breakdown (and the verdict for ``gpu`` if given)."""
        ckpt = "with" if self.gradient_checkpointing else "without"
        lines = [f"memory estimate — {self.method}, batch {self.batch_size} × {self.seq_len} tokens, {ckpt} "
                 "gradient checkpointing", f"  {'component':<44}{'GiB':>8}"]
        for name in self.COMPONENTS:
            lines.append(f"  {self.LABELS[name]:<44}{getattr(self, name):8.2f}")
        lines.append(f"  {'-' * 52}")
        for phase, gib in self.phases.items():
            mark = "  ← peak" if phase == self.peak_phase else ""
            lines.append(f"  {'phase: ' + phase:<44}{gib:8.2f}{mark}")
        lines.append(f"  {'peak allocated (max_memory_allocated)':<44}{self.allocated:8.2f}")
        lines.append(f"  {f'+ fragmentation ({self.fragmentation:.0%}) + CUDA context':<44}"
                     f"{self.total - self.allocated:8.2f}")
        lines.append(f"  {'total needed on the card':<44}{self.total:8.2f}")
        if gpu is not None:
            cap = _gpu_gib(gpu)
            verdict = "fits" if self.fits(cap) else "does NOT fit"
            lines.append(f"  {_gpu_name(gpu)} ({cap:.2f} GiB): {verdict}, {cap - self.total:+.2f} GiB left")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def detect_gpu() -> GPUSpec | None:
    """The current CUDA device as a :class:`GPUSpec` (name, total memory, bf16 support), or None without CUDA.

    In the gpu profile's smoke run (``KD_SMOKE=1``) it reports a T4 (:data:`GPUS` ``["T4"]``, Colab's free GPU)
    even on a CPU, so that the branches a GPU selects (notebook 05's memory plan) execute too.
    """
    import torch

    if smoke_active():
        return GPUS["T4"]
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return GPUSpec(props.name, round(props.total_memory / GiB, 2), bool(torch.cuda.is_bf16_supported()))


def _gpu_gib(gpu: float | str | GPUSpec) -> float:
    if isinstance(gpu, GPUSpec):
        return gpu.total_gib
    if isinstance(gpu, str):
        if gpu not in GPUS:
            raise ValueError(f"unknown GPU preset {gpu!r}; choose one of {sorted(GPUS)} or pass the GiB as a number")
        return GPUS[gpu].total_gib
    if isinstance(gpu, (int, float)) and not isinstance(gpu, bool) and gpu > 0:
        return float(gpu)
    raise TypeError(f"gpu must be a GiB number, a GPUS key or a GPUSpec, got {gpu!r}")


def _gpu_name(gpu: float | str | GPUSpec) -> str:
    if isinstance(gpu, GPUSpec):
        return gpu.name
    if isinstance(gpu, str):
        return GPUS[gpu].name
    return "GPU"


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be an integer {'≥ 0' if allow_zero else '≥ 1'}, got {value!r}")
    return value


def estimate_training_memory(
    teacher_params: int,
    student_params: int,
    lora_params: int,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    hidden_size: int,
    n_layers: int,
    teacher_bits: int = 4,
    student_dtype_bytes: int = 2,
    gradient_checkpointing: bool = False,
    *,
    method: str = "uld",
    teacher_unquantized_params: int | None = None,
    teacher_vocab_size: int | None = None,
    teacher_hidden_size: int | None = None,
    teacher_kv_dim: int | None = None,
    teacher_n_layers: int | None = None,
    double_quant: bool = True,
    generation_batch_size: int = 8,
    prompt_len: int | None = None,
    max_new_tokens: int = 128,
    activation_factor: float = ACTIVATION_FACTOR,
    ce_logits_factor: float = CE_LOGITS_FACTOR,
    uld_factor: float = ULD_FACTOR,
    cuda_context_gib: float = 0.5,
    fragmentation: float = 0.05,
) -> MemoryEstimate:
    """Estimate the peak GPU memory of one LoRA distillation step (frozen teacher, LoRA student, AdamW).

    Args:
        teacher_params: all teacher parameters (0 if there is no teacher).
        student_params: all student parameters (the frozen base).
        lora_params: trainable adapter parameters (fp32: weight + grad + 2 AdamW moments = 16 B each).
        batch_size, seq_len: tokens per step = batch_size × seq_len.
        vocab_size, hidden_size, n_layers: the student's (logits width, activation width, depth).
        teacher_bits: 4 (bitsandbytes NF4), 8 (LLM.int8) or 16 (fp16/bf16).
        student_dtype_bytes: 2 for fp16/bf16 student weights and activations, 4 for fp32.
        gradient_checkpointing: keep only each layer's input and recompute the layer in backward.
        method: what the step computes —
            ``"ce"`` student cross-entropy only, teacher resident (the §7 reference row);
            ``"token_kd"`` CE + token-level KL, naive (``F.kl_div``); needs one shared vocabulary;
            ``"token_kd_chunked"`` the same with :func:`course_utils.kd.llm_losses.causal_lm_distillation_loss`
            (``chunk_size`` set, ``inplace_grad=True``): no ``B·S·V`` loss temporaries;
            ``"uld"`` teacher forward + CE + ULD loss (cross-tokenizer);
            ``"sequence"`` two-phase sequence-level KD: the teacher generates, is freed, then the student
            trains on the text (the peak is the larger phase).
        teacher_unquantized_params: teacher parameters left in 16 bit (embeddings, head, norms); default
            2 × teacher_vocab_size × teacher_hidden_size (untied embeddings and head).
        teacher_vocab_size, teacher_hidden_size, teacher_kv_dim, teacher_n_layers: the teacher's (for its logits,
            forward transient and KV cache); default the student's.
        double_quant: NF4 double quantization (smaller statistics).
        generation_batch_size, prompt_len, max_new_tokens: the generation phase of ``"sequence"``
            (prompt_len defaults to seq_len).
        activation_factor, ce_logits_factor, uld_factor: calibrated constants (see the module docstring).
        cuda_context_gib: CUDA context + cuBLAS/cuDNN workspaces outside ``memory_allocated`` (≈ 0.3–0.6 GiB).
        fragmentation: fraction the caching allocator reserves beyond the allocated peak.

    Returns:
        :class:`MemoryEstimate` (GiB); ``print`` it for the table, ``.fits("T4")`` for a verdict.
    """
    if method not in BUDGET_METHODS:
        raise ValueError(f"method must be one of {BUDGET_METHODS}, got {method!r}")
    for name, value in (("teacher_params", teacher_params), ("lora_params", lora_params)):
        _positive_int(value, name, allow_zero=True)
    for name, value in (("student_params", student_params), ("batch_size", batch_size), ("seq_len", seq_len),
                        ("vocab_size", vocab_size), ("hidden_size", hidden_size), ("n_layers", n_layers)):
        _positive_int(value, name)
    if teacher_bits not in (4, 8, 16):
        raise ValueError(f"teacher_bits must be 4 (NF4), 8 (LLM.int8) or 16, got {teacher_bits!r}")
    if student_dtype_bytes not in (2, 4):
        raise ValueError(f"student_dtype_bytes must be 2 (fp16/bf16) or 4 (fp32), got {student_dtype_bytes!r}")
    if method == "token_kd" or method == "token_kd_chunked":
        if teacher_vocab_size is not None and teacher_vocab_size != vocab_size:
            raise ValueError(
                f"token-level KD needs one shared vocabulary, but the teacher has {teacher_vocab_size} entries and "
                f"the student {vocab_size}; estimate method='sequence' or method='uld' instead"
            )
    vt = teacher_vocab_size or vocab_size
    ht = teacher_hidden_size or hidden_size
    kv_t = teacher_kv_dim or ht
    lt = teacher_n_layers or n_layers
    tokens = batch_size * seq_len
    notes: list[str] = []

    # weights
    if teacher_params:
        unq = teacher_unquantized_params if teacher_unquantized_params is not None else min(teacher_params, 2 * vt * ht)
        quantized = teacher_params - unq
        per_param = {4: 0.5 + (NF4_OVERHEAD_DOUBLE_QUANT if double_quant else NF4_OVERHEAD), 8: 1.0 + 4 / ht,
                     16: 2.0}[teacher_bits]
        teacher_w = (quantized * per_param + unq * 2) / GiB
    else:
        teacher_w = 0.0
    student_w = student_params * student_dtype_bytes / GiB
    lora_w = lora_params * 4 / GiB
    lora_all = lora_params * LORA_BYTES_PER_PARAM / GiB

    # activations kept for backward
    per_layer = tokens * hidden_size * activation_factor * (student_dtype_bytes / 2) / GiB
    if gradient_checkpointing:
        activations = n_layers * tokens * hidden_size * student_dtype_bytes / GiB + per_layer
    else:
        activations = n_layers * per_layer

    # logits and the loss
    student_logits = tokens * vocab_size * student_dtype_bytes / GiB
    fp32_logits = tokens * vocab_size * 4 / GiB
    teacher_logits = tokens * vt * (2 + 4) / GiB  # fp16 output + fp32 upcast for the loss
    loss_tmp = 0.0
    if method in ("ce", "sequence"):
        logits = student_logits + ce_logits_factor * fp32_logits
    elif method == "token_kd":
        logits = student_logits + ce_logits_factor * fp32_logits + teacher_logits
        loss_tmp = KD_NAIVE_FACTOR * fp32_logits
    elif method == "token_kd_chunked":
        logits = student_logits + fp32_logits + teacher_logits  # the fp32 input; gradient written into it
        notes.append("chunked loss with inplace_grad=True: CE and KL gradients written into the logits' buffer")
    else:  # uld
        logits = student_logits + ce_logits_factor * fp32_logits + tokens * vt * 2 / GiB
        loss_tmp = uld_factor * tokens * max(vocab_size, vt) * 4 / GiB

    def forward_transient(n_tokens: int, vocab: int) -> float:
        largest_weight = 4 * ht * ht * 2  # one dequantized MLP matrix (≈ 3.5 h × h) in fp16, rounded up
        return (n_tokens * ht * FORWARD_TRANSIENT_FACTOR + n_tokens * vocab * 2 + largest_weight) / GiB

    phases: dict[str, float] = {}
    if method == "sequence":
        p_len = prompt_len or seq_len
        kv_cache = generation_batch_size * (p_len + max_new_tokens) * lt * 2 * kv_t * 2 / GiB
        gen = forward_transient(generation_batch_size * p_len, vt) + kv_cache
        phases["generate (teacher only)"] = teacher_w + gen
        phases["train (teacher freed)"] = student_w + lora_all + activations + logits
        teacher_fwd = gen
        notes.append(f"generation phase: batch {generation_batch_size}, {p_len} prompt + {max_new_tokens} new tokens "
                     f"(KV cache {kv_cache:.2f} GiB)")
    else:
        resident = teacher_w + student_w + lora_w
        teacher_fwd = forward_transient(tokens, vt) if teacher_params and method != "ce" else 0.0
        if teacher_fwd:
            phases["teacher forward (no grad)"] = resident + teacher_fwd
        phases["student forward + backward"] = teacher_w + student_w + lora_all + activations + logits + loss_tmp
    peak_phase = max(phases, key=phases.get)
    if method == "sequence" and peak_phase.startswith("train"):
        teacher_w_shown = 0.0
    else:
        teacher_w_shown = teacher_w
    return MemoryEstimate(
        method=method, batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=gradient_checkpointing,
        teacher_weights=teacher_w_shown, student_weights=student_w, lora_states=lora_all, activations=activations,
        logits=logits, loss_temporaries=loss_tmp, teacher_forward=teacher_fwd, phases=phases, peak_phase=peak_phase,
        cuda_context=cuda_context_gib, fragmentation=fragmentation, notes=notes,
    )


def estimate_for(
    teacher: ModelSpec | None = MISTRAL_7B,
    student: ModelSpec = PHI_2,
    lora_params: int = PHI_2_LORA_R16_PARAMS,
    batch_size: int = 4,
    seq_len: int = 512,
    gradient_checkpointing: bool = False,
    method: str = "uld",
    teacher_bits: int = 4,
    student_dtype_bytes: int = 2,
    **kwargs: Any,
) -> MemoryEstimate:
    """:func:`estimate_training_memory` with the architecture numbers taken from :class:`ModelSpec` presets."""
    t = teacher
    return estimate_training_memory(
        t.n_params if t else 0, student.n_params, lora_params, batch_size, seq_len, student.vocab_size,
        student.hidden_size, student.n_layers, teacher_bits=teacher_bits, student_dtype_bytes=student_dtype_bytes,
        gradient_checkpointing=gradient_checkpointing, method=method,
        teacher_unquantized_params=t.unquantized_params if t else None,
        teacher_vocab_size=t.vocab_size if t else None, teacher_hidden_size=t.hidden_size if t else None,
        teacher_kv_dim=t.kv_dim if t else None, teacher_n_layers=t.n_layers if t else None, **kwargs,
    )


def teacher_footprint_gib(teacher: ModelSpec = MISTRAL_7B, bits: int = 4, double_quant: bool = True) -> float:
    """Estimated allocated GiB of a teacher loaded in ``bits`` (weights and quantization statistics only)."""
    est = estimate_training_memory(teacher.n_params, 1, 0, 1, 1, teacher.vocab_size, teacher.hidden_size, 1,
                                   teacher_bits=bits, method="ce", teacher_unquantized_params=teacher.unquantized_params,
                                   teacher_vocab_size=teacher.vocab_size, teacher_hidden_size=teacher.hidden_size,
                                   double_quant=double_quant)
    return est.teacher_weights


def reference_comparison() -> list[dict[str, Any]]:
    """The estimator next to the §7 measurements (:data:`MEASURED_H100`): rows of what / measured / estimated."""
    t, s, lora = MISTRAL_7B, PHI_2, PHI_2_LORA_R16_PARAMS
    teacher_w = teacher_footprint_gib(t)
    fwd = estimate_for(t, s, lora, method="uld").teacher_forward
    resident = teacher_w + s.n_params * 2 / GiB + lora * 4 / GiB
    rows = [
        ("teacher_loaded", "teacher loaded in 4-bit NF4 (double quant)", teacher_w),
        ("teacher_forward", "teacher forward 4 × 512, no grad", teacher_w + fwd),
        ("both_resident", "both models resident", resident),
        ("step_ce", "LoRA step, student CE only", estimate_for(t, s, lora, method="ce").allocated),
        ("step_ce_ckpt", "  … with gradient checkpointing",
         estimate_for(t, s, lora, method="ce", gradient_checkpointing=True).allocated),
        ("step_uld", "LoRA step + teacher forward + ULD", estimate_for(t, s, lora, method="uld").allocated),
        ("step_uld_ckpt", "  … with gradient checkpointing",
         estimate_for(t, s, lora, method="uld", gradient_checkpointing=True).allocated),
    ]
    out = []
    for key, label, est in rows:
        meas = MEASURED_H100[key]
        out.append({"key": key, "what": label, "measured_gib": meas, "estimated_gib": round(est, 2),
                    "error_pct": round(100 * (est - meas) / meas, 1)})
    return out


# ------------------------------------------------------------------------------------------- recommend
@dataclass
class Recommendation:
    """What :func:`recommend` picked: per-device batch, accumulation steps, checkpointing, and the estimate."""

    gpu: str
    method: str
    batch_size: int
    grad_accum_steps: int
    gradient_checkpointing: bool
    estimate: MemoryEstimate | None
    fits: bool
    reason: str

    def __str__(self) -> str:
        if not self.fits:
            return f"{self.gpu}: {self.reason}"
        ckpt = "on" if self.gradient_checkpointing else "off"
        return (f"{self.gpu}: method={self.method}, batch_size={self.batch_size}, grad_accum_steps="
                f"{self.grad_accum_steps}, gradient_checkpointing={ckpt} — {self.reason}")


def recommend(
    gpu: str | GPUSpec | float,
    teacher: ModelSpec | None = MISTRAL_7B,
    student: ModelSpec = PHI_2,
    lora_params: int = PHI_2_LORA_R16_PARAMS,
    seq_len: int = 512,
    effective_batch_size: int = 8,
    method: str = "uld",
    headroom_gib: float = 0.5,
    **kwargs: Any,
) -> Recommendation:
    """Pick the per-device batch size and gradient checkpointing that fit ``gpu`` with ``headroom_gib`` to spare.

    Tries batch sizes from ``effective_batch_size`` down (halving) and, for each, without and then with
    gradient checkpointing; the first configuration whose :attr:`MemoryEstimate.total` + headroom fits wins
    (the largest batch is fastest; at equal batch, checkpointing costs ≈ 30 % more compute, so it is used only
    when needed). ``grad_accum_steps`` keeps the effective batch. If nothing fits, ``fits`` is False.
    """
    name = gpu if isinstance(gpu, str) else _gpu_name(gpu)
    cap = _gpu_gib(gpu)
    _positive_int(effective_batch_size, "effective_batch_size")
    batch = effective_batch_size
    while True:
        for ckpt in (False, True):
            est = estimate_for(teacher, student, lora_params, batch, seq_len, ckpt, method, **kwargs)
            if est.total + headroom_gib <= cap:
                reason = (f"needs {est.total:.1f} of {cap:.1f} GiB (peak allocated {est.allocated:.1f} GiB in "
                          f"'{est.peak_phase}')")
                return Recommendation(name, method, batch, math.ceil(effective_batch_size / batch), ckpt, est, True,
                                      reason)
        if batch == 1:
            break
        batch = max(1, batch // 2)
    est = estimate_for(teacher, student, lora_params, 1, seq_len, True, method, **kwargs)
    return Recommendation(name, method, 1, effective_batch_size, True, est, False,
                          f"method={method} does not fit even at batch 1 with checkpointing ({est.total:.1f} GiB "
                          f"needed, {cap:.1f} GiB available); try method='sequence', a shorter seq_len or a "
                          "smaller student")


def _main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "table":
        for row in reference_comparison():
            print(f"{row['what']:<48}{row['measured_gib']:>8.2f}{row['estimated_gib']:>8.2f}{row['error_pct']:>+7.1f}%")
        for gpu in GPUS:
            for method in ("ce", "uld", "sequence"):
                print(recommend(gpu, method=method, effective_batch_size=4))
        return 0
    print("usage: python -m course_utils.llm.memory_budget table", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
