#!/usr/bin/env python
"""Distil a causal LM into a LoRA student from the command line — notebook 05's code, as one script.

Same library functions as the notebook (``course_utils.llm``: ``recipe``, ``models``, ``data``, ``trainer``, ``pipeline``), so a run here and a
run there train the same student. Steps: prompts → teacher responses (generated once, cached in the course cache,
by the main process) → filter → tokenise → [teacher top-k, cached] → LoRA training with ``Trainer`` checkpoints →
the adapter and the merged model saved → held-out perplexity written to ``<output-dir>/metrics.json``.

Single process::

    python scripts/distill_llm.py --profile small --method topk_kd --output-dir runs/topk

Several GPUs or machines (data parallel; each process holds its own copy of the 4-bit teacher, ≈ 4 GiB for
Mistral-7B, and of the student; the Trainer averages gradients)::

    accelerate launch --config_file configs/accelerate_multi_gpu.yaml scripts/distill_llm.py --profile gpu --method sft
    accelerate launch --config_file configs/accelerate_fsdp.yaml scripts/distill_llm.py --profile gpu --method sft

Two CPU processes (what the course's test runs; gloo backend)::

    accelerate launch --config_file configs/accelerate_cpu_2proc.yaml scripts/distill_llm.py --profile small ...

Interrupted? Run the same command with ``--resume``: training continues from the last checkpoint in
``--output-dir`` (optimizer, scheduler, RNG and data order restored).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _layers(text: str) -> tuple[int, ...]:
    """``"6-20"`` → (6, …, 20); ``"1,3,5"`` → (1, 3, 5); ``""`` → ()."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return tuple(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=None, choices=["small", "gpu"], help="default: KD_PROFILE or auto")
    p.add_argument("--method", default="sft", choices=["sft", "token_kd", "topk_kd", "uld"])
    p.add_argument("--output-dir", default="runs/distill", help="checkpoints, adapter/, merged/, metrics.json")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per device")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-merge", action="store_true", help="save the adapter only")
    p.add_argument("--no-filter", action="store_true",
                   help="train on every teacher response, unfiltered (for smoke tests with random tiny teachers)")
    # recipe overrides (tests use them to run on tiny local models)
    p.add_argument("--teacher", default=None, help="path or hub id replacing the recipe's teacher")
    p.add_argument("--student", default=None, help="path or hub id replacing the recipe's student")
    p.add_argument("--drop-layers", default=None, help="decoder layers removed from the student, e.g. 6-20")
    p.add_argument("--no-4bit", action="store_true", help="load the teacher unquantized")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-heldout", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import course_utils

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    profile = course_utils.setup(seed=args.seed, profile=args.profile, verbose=rank == 0)
    import torch

    from course_utils.llm import data, lm_eval, models, pipeline, recipe
    from course_utils.llm.trainer import CausalLMDistillationTrainer
    from course_utils.training.distillation_trainer import training_args

    overrides = {k: v for k, v in {
        "teacher": args.teacher, "student": args.student, "n_train": args.n_train, "n_heldout": args.n_heldout,
        "max_new_tokens": args.max_new_tokens, "max_length": args.max_length,
        "drop_layers": _layers(args.drop_layers) if args.drop_layers is not None else None,
    }.items() if v is not None}
    if args.no_4bit:
        overrides["teacher_4bit"] = False
    r = recipe.llm_recipe(profile, **overrides)
    hp = dict(r.hparams)
    for key, value in (("max_steps", args.max_steps), ("per_device_train_batch_size", args.batch_size),
                       ("learning_rate", args.learning_rate)):
        if value is not None:
            hp[key] = value
    hp.update(save_strategy="steps", save_steps=args.save_steps, save_total_limit=2,
              gradient_checkpointing=args.gradient_checkpointing)
    if args.gradient_checkpointing:
        hp["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    targs = training_args(seed=args.seed, output_dir=args.output_dir, label_names=["labels"], **hp)
    device_map = {"": local_rank} if torch.cuda.is_available() else {"": "cpu"}
    if rank == 0:
        print(r.describe(), flush=True)

    tok = models.load_lm_tokenizer(r.student)
    teacher_tok = models.load_lm_tokenizer(r.teacher)
    teacher = None

    def get_teacher():
        nonlocal teacher
        if teacher is None:
            teacher = models.load_lm_teacher(r, device_map=device_map)
        return teacher

    start = time.perf_counter()
    with targs.main_process_first(desc="teacher responses"):  # rank 0 generates and caches, the others read
        prompts = data.instruction_prompts(r, seed=args.seed)
        generated = data.teacher_responses(r, get_teacher, teacher_tok, prompts)
    kept, report = data.filter_responses(generated["train"])
    held, _ = data.filter_responses(generated["heldout"])
    if rank == 0:
        print(report.to_string(), flush=True)
    if args.no_filter:
        kept, held = generated["train"], generated["heldout"]
    if not kept or not held:
        raise SystemExit("every teacher response of a split was filtered out (see the table above): use more prompts, "
                         "a larger --max-new-tokens, or --no-filter for a smoke test")
    cross = args.method == "uld"
    train = data.sft_dataset(kept, tok, r, teacher_tokenizer=teacher_tok if cross else None)
    heldout = data.sft_dataset(held, tok, r)
    if args.method == "topk_kd":
        with targs.main_process_first(desc="teacher top-k"):
            train, stats = pipeline.teacher_topk(r, get_teacher, train, tok.pad_token_id, verbose=rank == 0)
    live = get_teacher() if args.method in ("token_kd", "uld") else None
    if teacher is not None and live is None:  # generation or top-k done: free the teacher before training
        teacher = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    student = models.add_lora(models.load_student_base(r, device_map=device_map), r, seed=args.seed)
    collator = data.CausalLMCollator(tok.pad_token_id, teacher_pad_token_id=teacher_tok.pad_token_id or 0)
    trainer = CausalLMDistillationTrainer(
        student, targs, teacher_model=live, method=args.method, temperature=r.temperature, alpha_kd=r.alpha_kd,
        train_dataset=train, processing_class=tok, data_collator=collator)
    resume = bool(args.resume) and any(Path(args.output_dir).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    out = Path(args.output_dir)
    trainer.save_model(str(out / "adapter"))  # the LoRA adapter only (a few MB); main process writes
    summary: dict = {}
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        metrics = lm_eval.evaluate_lm(model, heldout, pad_token_id=tok.pad_token_id or 0)
        summary = {"method": args.method, "profile": r.profile, "world_size": targs.world_size,
                   "steps": trainer.state.global_step, "resumed": resume, "train_examples": len(train),
                   "heldout_perplexity": round(metrics["perplexity"], 4),
                   "seconds": round(time.perf_counter() - start, 1)}
        if not args.no_merge:
            merged = models.merge_lora(model)
            merged.save_pretrained(out / "merged")
            tok.save_pretrained(out / "merged")
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
