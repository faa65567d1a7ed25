#!/usr/bin/env python
"""Measure the GPU memory of notebook 05's `gpu` recipe with real-size architectures, and check the estimator.

Builds Mistral-7B (teacher, loaded in 4-bit NF4 with bitsandbytes, double quantization, fp16 compute) and Phi-2
(student, fp16 + LoRA r = 16 on q_proj, k_proj, v_proj, dense) from their published configurations with RANDOM
weights — memory and speed depend on shapes and dtypes, not on the values — and measures, with
``torch.cuda.max_memory_allocated``:

* the teacher's footprint after loading, and its no-grad forward at batch 4 × 512;
* greedy generation throughput of the 4-bit teacher (batch 8, 128 new tokens);
* both models resident; one LoRA training step at batch 4 × 512 (AdamW, fp16 autocast), student CE only and with
  the teacher's forward + the cross-tokenizer ULD loss, each without and with gradient checkpointing;
* the KD loss alone (B=4, S=512, V=51 200, fp32): naive ``kl_div`` vs the chunked losses;
* two-phase sequence-level KD: the teacher is freed first, then the student step (CE on teacher text).

It prints each figure next to ``course_utils.llm.memory_budget``'s estimate and a JSON summary, written to
``$OUT/gpu_memory.json`` when ``OUT`` is set (or to ``--out``). No hub access is needed: the random teacher is saved
to a local fp16 checkpoint (≈ 14.5 GB in ``--workdir``, deleted afterwards) and reloaded through
``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))``, the path learners use.

    python scripts/gpu_memory_probe.py                 # one CUDA GPU, ≈ 3–5 min on an H100
    python scripts/gpu_memory_probe.py --tiny          # tiny configs on CPU in seconds (what the unit test runs)

Requires torch, transformers, peft, bitsandbytes (the 4-bit part; ``--no-4bit`` loads the teacher in fp16
instead) and course_utils (found from the repository root automatically).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from course_utils.evaluation import peak_memory
from course_utils.kd.llm_losses import uld_loss
from course_utils.llm import memory_budget

GiB = 2**30
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "dense"]


def mistral_config(tiny: bool):
    from transformers import MistralConfig

    if tiny:
        return MistralConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=320, max_position_embeddings=512)
    # mistralai/Mistral-7B-v0.1 config.json
    return MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5,
                         rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False, hidden_act="silu")


def phi_config(tiny: bool):
    from transformers import PhiConfig

    if tiny:
        return PhiConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=512, partial_rotary_factor=0.4, max_position_embeddings=512, resid_pdrop=0.1)
    # microsoft/phi-2 config.json
    return PhiConfig(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32,
                     vocab_size=51200, partial_rotary_factor=0.4, max_position_embeddings=2048, resid_pdrop=0.1,
                     embd_pdrop=0.0, attention_dropout=0.0, layer_norm_eps=1e-5, rope_theta=10000.0,
                     hidden_act="gelu_new", tie_word_embeddings=False)


def spec_of(name: str, cfg, n_params: int, unquantized: int) -> memory_budget.ModelSpec:
    return memory_budget.ModelSpec(name, n_params, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size,
                       cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                       unquantized)


# ----------------------------------------------------------------------------------------------- helpers
class Probe:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def clean(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> float | None:
        return torch.cuda.memory_allocated() / GiB if self.cuda else None

    def peak(self, fn: Callable[[], Any]) -> tuple[Any, float, float]:
        """(result, absolute peak GiB or None on CPU, seconds)."""
        self.clean()
        m = peak_memory.measure_peak_memory(fn, device=self.device)
        absolute = (m.baseline + m.peak_above_baseline) / GiB if self.cuda else m.peak_above_baseline / GiB
        return m.result, absolute, m.seconds


def build_teacher(cfg, device: torch.device, workdir: Path, four_bit: bool):
    """Random-init teacher saved as an fp16 checkpoint, reloaded in 4-bit NF4 (or fp16) on ``device``."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = workdir / "teacher-fp16"
    t0 = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    t_build = time.perf_counter() - t0
    kwargs: dict[str, Any] = {"dtype": torch.float16, "device_map": {"": device.index or 0} if device.type == "cuda"
                              else {"": "cpu"}}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    teacher = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    teacher.eval()
    teacher.requires_grad_(False)
    t_load = time.perf_counter() - t0
    shutil.rmtree(path, ignore_errors=True)
    return teacher, n_params, t_build, t_load


def build_student(cfg, device: torch.device):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        base = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    n_params = sum(p.numel() for p in base.parameters())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    student = get_peft_model(base, lora)
    n_lora = sum(p.numel() for p in student.parameters() if p.requires_grad)
    return student, n_params, n_lora


def set_checkpointing(model, on: bool) -> None:
    # transformers ≥ 5.2x renamed gradient_checkpointing_* to activation_checkpointing_*; accept both.
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()
    model.config.use_cache = False


def make_step(student, optimizer, ids_s: torch.Tensor, device: torch.device, teacher=None, ids_t=None):
    """One LoRA step: (teacher forward) → student forward → CE (+ ULD) → backward → AdamW step."""
    amp = torch.autocast(device.type, dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> float:
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=ids_t).logits
        with amp:
            out = student(input_ids=ids_s, labels=ids_s)
            loss = out.loss
            if teacher_logits is not None:
                loss = loss + uld_loss(out.logits, teacher_logits)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    return step


def generation_throughput(teacher, vocab: int, batch: int, prompt_len: int, new_tokens: int, device) -> dict:
    ids = torch.randint(3, vocab, (batch, prompt_len), device=device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.no_grad():
        teacher.generate(ids[:, :8], max_new_tokens=4, min_new_tokens=4, **{**kw, "attention_mask": kw["attention_mask"][:, :8]})
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = teacher.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    made = (out.shape[1] - prompt_len) * batch
    res = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "seconds": round(dt, 2),
           "tokens_per_s_total": round(made / dt, 1), "tokens_per_s_per_sequence": round(made / dt / batch, 1)}
    if device.type == "cuda":
        res["peak_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
    return res


# ----------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    tiny = args.tiny
    if args.device:
        device = torch.device(args.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if not tiny and device.type != "cuda":
        raise SystemExit("real-size probe needs a CUDA GPU; use --tiny on CPU")
    four_bit = not args.no_4bit
    b, s = (2, 16) if tiny else (args.batch, args.seq)
    gen_b, gen_new, gen_prompt = (2, 4, 8) if tiny else (8, 128, 64)
    probe = Probe(device)
    torch.manual_seed(0)
    import peft
    import transformers

    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "total_gib": round(torch.cuda.get_device_properties(device).total_memory / GiB, 2) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "tiny": tiny, "batch": b, "seq_len": s, "teacher_4bit": four_bit,
        "measure": "torch.cuda.max_memory_allocated (GiB)" if device.type == "cuda" else "torch.profiler CPU allocations above baseline (GiB)",
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
        if four_bit:
            raise SystemExit("bitsandbytes is not importable: install it (or run with --no-4bit)")
    t_start = time.perf_counter()
    measured: dict[str, float | None] = {}
    timings: dict[str, float] = {}

    tcfg, scfg = mistral_config(tiny), phi_config(tiny)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kd-probe-"))
    workdir.mkdir(parents=True, exist_ok=True)
    probe.clean()
    teacher, t_params, t_build, t_load = build_teacher(tcfg, device, workdir, four_bit)
    timings["teacher_build_save_s"], timings["teacher_load_s"] = round(t_build, 1), round(t_load, 1)
    measured["teacher_loaded"] = probe.allocated()
    info["teacher_memory_footprint_gib"] = round(teacher.get_memory_footprint() / GiB, 3)
    info["teacher_params"] = t_params
    unq = sum(p.numel() for n, p in teacher.named_parameters() if p.dtype in (torch.float16, torch.float32, torch.bfloat16))
    if four_bit:
        info["teacher_unquantized_params"] = unq
    print(f"teacher: {t_params / 1e9:.3f} B params, allocated {measured['teacher_loaded']} GiB, "
          f"footprint {info['teacher_memory_footprint_gib']} GiB ({t_build:.0f} s build+save, {t_load:.0f} s load)",
          flush=True)

    ids_t = torch.randint(3, tcfg.vocab_size, (b, s), device=device)
    ids_s = torch.randint(3, scfg.vocab_size, (b, s), device=device)

    def teacher_forward():
        with torch.no_grad():
            return teacher(input_ids=ids_t).logits.shape

    _, measured["teacher_forward"], _ = probe.peak(teacher_forward)
    print(f"teacher forward {b}x{s}: peak {measured['teacher_forward']:.2f} GiB", flush=True)

    if not args.skip_generation:
        info["generation"] = generation_throughput(teacher, tcfg.vocab_size, gen_b, gen_prompt, gen_new, device)
        print(f"generation: {info['generation']}", flush=True)

    student, s_params, n_lora = build_student(scfg, device)
    info["student_params"], info["lora_params"] = s_params, n_lora
    probe.clean()
    measured["both_resident"] = probe.allocated()
    print(f"student: {s_params / 1e9:.3f} B params, LoRA {n_lora / 1e6:.2f} M trainable; both resident "
          f"{measured['both_resident']} GiB", flush=True)
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=5e-5)

    def measure_step(key: str, ckpt: bool, with_teacher: bool) -> None:
        set_checkpointing(student, ckpt)
        step = make_step(student, optimizer, ids_s, device, teacher if with_teacher else None, ids_t)
        step()  # warm-up: AdamW states exist from here on, as in every later step
        _, measured[key], sec = probe.peak(step)
        timings[key + "_s"] = round(sec, 3)
        print(f"{key}: peak {measured[key]:.2f} GiB, {sec:.2f} s/step", flush=True)

    measure_step("step_ce", False, False)
    measure_step("step_ce_ckpt", True, False)
    measure_step("step_uld", False, True)
    measure_step("step_uld_ckpt", True, True)

    # the KD loss alone, B=4, S=512, V=51 200 on the GPU (tiny: small sizes)
    kd_shape = (2, 16, 512) if tiny else (4, 512, 51_200)
    probe.clean()
    info["kd_loss_memory"] = peak_memory.compare_kd_loss_memory(batch_size=kd_shape[0], seq_len=kd_shape[1],
                                                      vocab_size=kd_shape[2], device=str(device))
    for row in info["kd_loss_memory"]:
        print(f"KD loss {row['method']:<16} {row['mib']:9.1f} MiB above inputs ({row['ratio_to_logits']:.3f}× logits, "
              f"{row['vs_naive']:.3f}× naive)", flush=True)

    # two-phase sequence-level KD: free the teacher, then train the student on (teacher-generated) text
    del teacher
    probe.clean()
    measured["student_only_resident"] = probe.allocated()
    measure_step("sequence_train", False, False)
    measure_step("sequence_train_ckpt", True, False)
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    shutil.rmtree(workdir, ignore_errors=True) if not args.workdir else None

    # the estimator's predictions for the same configurations
    tspec = spec_of("teacher", tcfg, t_params, info.get("teacher_unquantized_params", t_params))
    sspec = spec_of("student", scfg, s_params, 0)
    bits = 4 if four_bit else 16
    est = lambda **kw: memory_budget.estimate_for(tspec, sspec, n_lora, b, s, teacher_bits=bits, **kw)  # noqa: E731
    teacher_w = memory_budget.teacher_footprint_gib(tspec, bits=bits)
    predicted = {
        "teacher_loaded": teacher_w,
        "teacher_forward": teacher_w + est(method="uld").teacher_forward,
        "both_resident": teacher_w + s_params * 2 / GiB + n_lora * 4 / GiB,
        "step_ce": est(method="ce").allocated,
        "step_ce_ckpt": est(method="ce", gradient_checkpointing=True).allocated,
        "step_uld": est(method="uld").allocated,
        "step_uld_ckpt": est(method="uld", gradient_checkpointing=True).allocated,
        "sequence_train": est(method="sequence").phases["train (teacher freed)"],
        "sequence_train_ckpt": est(method="sequence", gradient_checkpointing=True).phases["train (teacher freed)"],
    }
    rows = []
    for key, pred in predicted.items():
        meas = measured.get(key)
        ref = memory_budget.MEASURED_H100.get(key) if not tiny else None
        rows.append({"what": key, "measured_gib": None if meas is None else round(meas, 3),
                     "estimated_gib": round(pred, 3), "reference_s7_gib": ref,
                     "error_pct": None if not meas else round(100 * (pred - meas) / meas, 1)})
    summary = {"info": info, "measured_gib": {k: (None if v is None else round(v, 3)) for k, v in measured.items()},
               "comparison": rows, "timings": timings}
    print("\n{:<22}{:>10}{:>11}{:>9}{:>13}".format("what", "measured", "estimated", "error", "§7 (H100)"))
    for r in rows:
        meas = "n/a" if r["measured_gib"] is None else f"{r['measured_gib']:.2f}"
        err = "" if r["error_pct"] is None else f"{r['error_pct']:+.1f}%"
        ref = "" if r["reference_s7_gib"] is None else f"{r['reference_s7_gib']:.2f}"
        print(f"{r['what']:<22}{meas:>10}{r['estimated_gib']:>11.2f}{err:>9}{ref:>13}")
    print(json.dumps(summary, indent=1))
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_memory.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(summary, indent=1))
        print(f"wrote {out}")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny Mistral/Phi configs (runs on CPU in seconds)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    p.add_argument("--no-4bit", action="store_true", help="load the teacher in fp16 instead of 4-bit NF4")
    p.add_argument("--skip-generation", action="store_true", help="skip the generation throughput measurement")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--workdir", default=None, help="where the temporary fp16 teacher checkpoint goes (≈ 14.5 GB)")
    p.add_argument("--out", default=None, help="JSON output path (default: $OUT/gpu_memory.json if OUT is set)")
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
