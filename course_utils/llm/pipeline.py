"""Notebook 05's pipeline, cache-or-train: the teacher's top-k logits, each distilled LoRA student (SFT, token-level
KD, top-k KD) trained or loaded with its held-out curve, and :func:`distilled_students`, the documented loader of
notebook 05's models for notebook 06.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..core import cache
from ..evaluation.size import count_parameters
from ..training.distillation_trainer import training_args
from . import lm_eval
from .data import filter_responses, instruction_prompts, sft_dataset, teacher_responses
from .lm_eval import evaluate_lm
from .models import add_lora, load_lm_teacher, load_lm_tokenizer, load_student_base
from .recipe import LLMRecipe, eval_every, llm_recipe, training_steps
from .trainer import (LM_METHODS, CausalLMDistillationTrainer, HeldoutCurve, KDLossFn, add_teacher_topk,
                      check_kd_loss_fn, dataset_fingerprint)

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from torch import nn


__all__ = ['DistilledStudents', 'students_cached', 'distilled_students', 'teacher_topk', 'load_lora_student', 'distil']


@dataclass
class DistilledStudents:
    """Notebook 05's models and held-out data, as returned by :func:`distilled_students`.

    Attributes:
        recipe: the profile's :class:`LLMRecipe`.
        tokenizer: the student's tokenizer (left padding).
        teacher: the frozen teacher, or None when it was not needed (``with_teacher=False`` and every student cached).
        pruned: the student before training (the pruned base in ``small``, plain Phi-2 in ``gpu``), eval mode.
        students: ``{method: LoRA student}`` (peft ``PeftModel``, eval mode), e.g. ``"sft"``, ``"topk_kd"``.
        runs: ``{method: info}`` from :func:`course_utils.llm.pipeline.distil` (curve, seconds per step, …).
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

    # only names are needed: empty model paths spare the small profile's one-off GGUF conversion (≈ 25 s)
    r = llm_recipe(profile, **{"teacher": "", "student": "", **overrides})
    names = [f"llm-teacher-responses-{r.data}", *(f"llm-student-{m}" for m in (methods or _default_methods(r)))]
    return all(cache.load_meta(name, r.profile) is not None for name in names)


def distilled_students(profile: Any = None, methods: Sequence[str] | None = None, with_teacher: bool = True,
                       verbose: bool = False, **overrides: Any) -> DistilledStudents:
    """Notebook 05's distilled LLM students, loaded from the course cache (trained on demand, as notebook 05 does).

    Runs notebook 05's pipeline with its exact settings — prompts, teacher responses (cached), filter, SFT
    examples, the teacher's top-k (cached) and :func:`course_utils.llm.pipeline.distil` with
    :func:`training_steps` / :func:`eval_every` — so after notebook 05 every step is a cache hit (seconds);
    on an empty cache it costs what notebook 05's training costs.

    Args:
        profile: a ``Profile``, its name, or None (``small``).
        methods: which students; default ``("sft", "topk_kd")`` when teacher and student share a vocabulary,
            else ``("sft", "uld")``.
        with_teacher: load the teacher even if every student is cached (needed to score KD loss against it).
        verbose: print what is loaded or trained.
        overrides: :func:`llm_recipe` overrides (a different recipe trains, and caches, different students).

    Returns:
        :class:`DistilledStudents`.

    Example::

        d = llm.distilled_students("small")
        scores = lm_eval.language_model_scores({"pruned": d.pruned, **d.students}, d.heldout_data, teacher=d.teacher)
    """

    r = llm_recipe(profile, **overrides)
    methods = tuple(_default_methods(r) if methods is None else methods)
    for m in methods:
        if m not in LM_METHODS:
            raise ValueError(f"unknown method {m!r}; expected some of {LM_METHODS}")
        if m in ("token_kd", "topk_kd") and not r.shared_vocabulary:
            raise ValueError(f"method {m!r} needs one shared vocabulary; the {r.profile} recipe's teacher and student "
                             "have two: use 'sft' (sequence-level KD) or 'uld'")
    tokenizer = load_lm_tokenizer(r.student)
    teacher_tokenizer = load_lm_tokenizer(r.teacher) if r.teacher != r.student else tokenizer
    loaded: dict[str, Any] = {}

    def get_teacher() -> Any:
        if "teacher" not in loaded:
            loaded["teacher"] = load_lm_teacher(r)
        return loaded["teacher"]

    prompts = instruction_prompts(r)
    generated = teacher_responses(r, get_teacher, teacher_tokenizer, prompts)
    kept, _ = filter_responses(generated["train"])
    heldout_records, _ = filter_responses(generated["heldout"])
    train_data = sft_dataset(kept, tokenizer, r)
    heldout_data = sft_dataset(heldout_records, tokenizer, r)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pruned = load_student_base(r).eval()
    start = round(lm_eval.evaluate_lm(pruned, heldout_data, pad_token_id=pad)["perplexity"], 4)
    students, runs = {}, {}
    for m in methods:
        kwargs: dict[str, Any] = dict(training_steps(r, m))
        data = train_data
        if m == "topk_kd":
            data, stats = teacher_topk(r, get_teacher, train_data, pad, verbose=verbose)
            kwargs["offset_seconds"] = stats["seconds"]
        elif m == "uld":
            data = sft_dataset(kept, tokenizer, r, teacher_tokenizer=teacher_tokenizer)
        students[m], runs[m] = distil(r, m, data, tokenizer, teacher=get_teacher, heldout=heldout_data,
                                                  eval_every=eval_every(r), start_perplexity=start, verbose=verbose,
                                                  **kwargs)
        students[m].eval()
    teacher = get_teacher() if with_teacher else loaded.get("teacher")
    return DistilledStudents(r, tokenizer, teacher, pruned, students, runs, heldout_records, heldout_data)


def teacher_topk(r: "LLMRecipe", teacher: "nn.Module | Callable[[], nn.Module]", dataset: "Dataset",
                 pad_token_id: int = 0, verbose: bool = True) -> "tuple[Dataset, dict]":
    """:func:`add_teacher_topk` with ``k = r.top_k``, cached in the course cache (``teacher`` may be a function
    returning the model, so a cache hit never loads it)."""
    from datasets import load_from_disk

    name = "llm-teacher-topk"
    fp = r.generation_fingerprint(what="teacher top-k", top_k=r.top_k, temperature=r.temperature,
                                  data=dataset_fingerprint(dataset))
    target = cache.model_dir(name, r.profile)
    metrics = cache.lookup(name, fp, r.profile, needs="data")
    if metrics is not None:
        return load_from_disk(str(target / "data")), metrics
    model = teacher if hasattr(teacher, "forward") else teacher()
    out, stats = add_teacher_topk(dataset, model, r.top_k, temperature=r.temperature, pad_token_id=pad_token_id)
    cache.save_entry(name, fp, stats, r.profile, lambda d: out.save_to_disk(str(d / "data")))
    if verbose:
        print(f"teacher top-{r.top_k} logits cached in {stats['seconds']:.0f} s ({target})")
    return load_from_disk(str(target / "data")), stats


# ------------------------------------------------------------------------------------------------- train + cache
def _adapter_name(method: str, tag: str) -> str:
    return f"llm-student-{method}" + (f"-{tag}" if tag else "")


def load_lora_student(r: "LLMRecipe", method: str, fingerprint: dict, tag: str = "") -> "tuple[nn.Module, dict] | None":
    """The cached LoRA student of ``method`` (base + adapter, eval mode) and its metrics, or None."""
    from peft import PeftModel

    name = _adapter_name(method, tag)
    metrics = cache.lookup(name, fingerprint, r.profile)
    if metrics is None:
        return None
    model = PeftModel.from_pretrained(load_student_base(r), str(cache.model_dir(name, r.profile)))
    return model.eval(), metrics


def distil(
    r: "LLMRecipe",
    method: str,
    train_dataset: "Dataset",
    tokenizer: Any,
    *,
    teacher: "nn.Module | Callable[[], nn.Module] | None" = None,
    heldout: "Dataset | None" = None,
    eval_every: int | None = None,
    start_perplexity: float | None = None,
    offset_seconds: float = 0.0,
    seed: int = 0,
    tag: str = "",
    verbose: bool = True,
    kd_loss_fn: KDLossFn | None = None,
    **hparams: Any,
) -> "tuple[nn.Module, dict]":
    """Train (or load from the course cache) one LoRA student with ``method``; return ``(model, info)``.

    The student is the recipe's base (:func:`course_utils.llm.models.load_student_base`) plus a fresh LoRA adapter; the
    teacher (for ``token_kd``/``uld``; may be a function returning it, so a cache hit never loads it) is frozen.
    ``hparams`` override ``r.hparams`` and the course's :func:`~course_utils.training.distillation_trainer.training_args`. With
    ``heldout`` and ``eval_every``, ``info["curve"]`` holds held-out perplexity against training seconds.

    ``info`` also has ``steps``, ``train_seconds`` (training time, evaluations excluded), ``seconds_per_step``,
    ``trainable_parameters`` and ``log`` (the Trainer's log history). The adapter and ``info`` are cached under
    ``llm-student-<method>[-tag]`` with the recipe, method, seed, settings and a hash of the data.

    ``kd_loss_fn`` (``method="token_kd"`` only) trains with another implementation of the token-level loss, a
    :data:`~course_utils.llm.trainer.KDLossFn` ``fn(student_logits (B, S, V), teacher_logits (B, S, V), labels (B, S),
    temperature, alpha_kd)`` → scalar loss, instead of the library's chunked one (see
    :class:`~course_utils.llm.trainer.CausalLMDistillationTrainer`). Such a run is **never cached** — neither
    looked up nor saved, ``tag`` is unused: no fingerprint can tell what a function computes, so it trains every
    time; everything else (seed, LoRA initialisation, data order, curve) is as in the cached run with the same
    settings, which it can therefore be compared with. ``info["kd_loss_fn"]`` names the function.

    Raises:
        ValueError: an unknown ``method``, ``kd_loss_fn`` with another method than ``token_kd``, ``token_kd`` or
            ``uld`` without a ``teacher``.
        TypeError: a ``kd_loss_fn`` that is not a function of five positional arguments.
    """

    if method not in LM_METHODS:
        raise ValueError(f"method must be one of {LM_METHODS}, got {method!r}")
    if kd_loss_fn is not None:
        check_kd_loss_fn(kd_loss_fn, method)
    settings = {**r.hparams, **hparams}
    fp = r.fingerprint(what="student", method=method, seed=seed, settings=settings, eval_every=eval_every,
                       data=dataset_fingerprint(train_dataset),
                       heldout=dataset_fingerprint(heldout) if heldout is not None else None)
    hit = load_lora_student(r, method, fp, tag) if kd_loss_fn is None else None
    if hit is not None:
        if verbose:
            print(f"{method}: LoRA student loaded from the cache ({cache.model_dir(_adapter_name(method, tag), r.profile)})")
        return hit
    import transformers

    transformers.set_seed(seed)
    student = add_lora(load_student_base(r), r, seed=seed)
    live = None
    if method in ("token_kd", "uld"):
        if teacher is None:
            raise ValueError(f"method={method!r} needs the teacher")
        live = teacher if hasattr(teacher, "forward") else teacher()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    callbacks = []
    curve = None
    if heldout is not None and eval_every:
        curve = HeldoutCurve(lambda m: round(evaluate_lm(m, heldout, pad_token_id=pad)["perplexity"], 4), eval_every,
                             offset_seconds, start_perplexity)
        callbacks.append(curve)
    args = training_args(seed=seed, label_names=["labels"], **settings)
    trainer = CausalLMDistillationTrainer(
        student, args, teacher_model=live, method=method, temperature=r.temperature, alpha_kd=r.alpha_kd,
        train_dataset=train_dataset, processing_class=tokenizer, callbacks=callbacks, kd_loss_fn=kd_loss_fn,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    loss_name = None if kd_loss_fn is None else getattr(kd_loss_fn, "__name__", type(kd_loss_fn).__name__)
    if verbose:
        print(f"{method}: training {count_parameters(student, trainable_only=True):,} LoRA parameters "
              f"for {args.max_steps if args.max_steps > 0 else args.num_train_epochs} "
              f"{'steps' if args.max_steps > 0 else 'epochs'}"
              f"{'' if loss_name is None else f' with the loss {loss_name} (not cached)'} …", flush=True)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    student.eval()
    steps = trainer.state.global_step
    # Not rounded: train_seconds + offset_seconds must equal the curve's last point, or an equal-time comparison at
    # this run's budget would miss its own final evaluation.
    train_seconds = (curve.points[-1]["train_seconds"] - offset_seconds) if curve and curve.points else wall
    info = {"method": method, "steps": steps, "train_seconds": train_seconds,
            "seconds_per_step": round(train_seconds / max(steps, 1), 3),
            "trainable_parameters": count_parameters(student, trainable_only=True),
            "curve": curve.points if curve else [], "offset_seconds": offset_seconds,
            "log": [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in trainer.state.log_history]}
    if loss_name is not None:
        info["kd_loss_fn"] = loss_name
        if verbose:
            print(f"{method}: {steps} steps in {train_seconds:.0f} s ({info['seconds_per_step']:.2f} s/step) with "
                  f"{loss_name}, not cached")
        return student, info
    name = _adapter_name(method, tag)
    cache.save_entry(name, fp, info, r.profile, lambda d: student.save_pretrained(str(d)))
    if verbose:
        print(f"{method}: {steps} steps in {train_seconds:.0f} s ({info['seconds_per_step']:.2f} s/step), cached")
    return student, info
