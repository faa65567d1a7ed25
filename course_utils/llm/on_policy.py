"""On-policy distillation (notebook 08): the student writes, the teacher grades.

Every batch is a :class:`Rollout`: left-padded prompts followed by a completion — sampled by the student (on-policy)
or the teacher's cached response (off-policy) — with a mask of the completion tokens. Notation as in GKD
(Agarwal et al. 2024): λ (``lmbda``) is the probability that a batch is student-generated, β (``beta``) the
generalized-JSD interpolation (0: forward KL, 1: reverse KL; :func:`course_utils.kd.llm_losses.generalized_jsd_loss`).

Functions, in the order a step uses them: :func:`prompt_batch` → :func:`sample_completions` or
:func:`teacher_text_batch` → :func:`completion_mask` → :func:`score_tokens` / :func:`on_policy_loss` →
:func:`train_on_policy` (the loop, cache-or-train) and :func:`evaluate_students` (held-out metrics on the students'
own text, cached with the run).
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..core import cache
from ..evaluation.text_metrics import rouge_l
from ..kd.llm_losses import generalized_jsd_loss, sampled_token_kd_loss
from .data import _encode, format_prompt, left_pad
from .models import add_lora
from .recipe import (LLAMA_LORA_TARGETS, ON_POLICY_GPU_STUDENT, ON_POLICY_GPU_TEACHER, LLMRecipe,
                     llm_recipe)

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ['OnPolicyConfig', 'Rollout', 'METHODS', 'prompt_batch', 'completion_mask', 'sample_completions',
           'teacher_text_batch', 'score_tokens', 'on_policy_loss', 'train_on_policy', 'evaluate_students',
           'per_position_reverse_kl', 'on_policy_recipe', 'exposure_profile', 'rescore', 'gradient_noise']

#: ``sft``: cross-entropy on the teacher's text. ``gkd``: generalized JSD on a λ-mix of student samples and teacher
#: text (λ = 0 is token-level KD on the teacher's text). ``sampled``: the one-sample reverse-KL policy gradient on
#: student samples (:func:`course_utils.kd.llm_losses.sampled_token_kd_loss`).
METHODS = ("sft", "gkd", "sampled")

LossFn = Callable[..., torch.Tensor]
ScoreFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class OnPolicyConfig:
    """Settings of one on-policy (or off-policy) LoRA run of notebook 08.

    Attributes:
        steps: optimiser steps at which the run is evaluated ("equal steps").
        prompts_per_step: prompts (= sequences) per step.
        max_new_tokens: cap on the student's sampled completions.
        temperature: sampling temperature of the student's rollouts. The loss always uses T = 1 (as TRL's
            ``GKDTrainer``), so at 1 the samples come from exactly the distribution the loss is about.
        learning_rate, warmup_steps: AdamW, constant after a linear warm-up (notebook 05's schedule).
    """

    steps: int = 20
    prompts_per_step: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    learning_rate: float = 2e-3
    warmup_steps: int = 3

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (1 samples the student's own distribution), got {self.temperature!r}")


@dataclass
class Rollout:
    """A batch of prompt + completion sequences.

    Attributes:
        sequences: ``(B, L)`` token ids; the prompts are left-padded to ``prompt_length``, completions follow.
        attention_mask: ``(B, L)`` 1 on prompt and completion tokens (up to and including the first EOS).
        prompt_length: width of the (left-padded) prompt block.
        completion: ``(B, L)`` bool, the completion tokens the loss is about (the first EOS included, the padding
            after it excluded).
        seconds: how long building the batch took (the student's generation, for on-policy batches).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    completion: torch.Tensor
    seconds: float = 0.0


def prompt_batch(tokenizer: Any, records: Sequence[dict], r: LLMRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_ids, prompt_mask)``, both ``(B, P)``: the student's chat prompts of ``records``, left-padded."""
    if not records:
        raise ValueError("records is empty: pass at least one {'instruction': …} record")
    rows = [_encode(tokenizer, format_prompt(tokenizer, rec["instruction"], rec.get("context", ""), r.student_prompt,
                                             r.system_prompt), r.student_prompt) for rec in records]
    return left_pad(rows, _pad_id(tokenizer))


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def completion_mask(sequences: torch.Tensor, prompt_length: int, eos_token_id: int) -> torch.Tensor:
    """Bool ``(B, L)``: the completion tokens, from ``prompt_length`` up to **and including** the first EOS.

    Positions are found by *where* the first EOS is, never by comparing ids with the pad token: SmolLM2's (and many
    chat models') pad token *is* its EOS, so ``sequences != pad_token_id`` would also drop the real EOS, and a
    student that never learns to stop rambles to the token cap.
    """
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.dtype.is_floating_point:
        raise ValueError(f"sequences must be an integer (B, L) tensor, got {getattr(sequences, 'shape', type(sequences))}")
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or not 0 <= prompt_length < sequences.shape[1]:
        raise ValueError(f"prompt_length must be an int in [0, {sequences.shape[1]}) (the completion must not be "
                         f"empty), got {prompt_length!r}")
    completion = torch.zeros_like(sequences, dtype=torch.bool)
    tail = sequences[:, prompt_length:]
    is_eos = tail == eos_token_id
    # a position is kept while no EOS came strictly before it: the first EOS itself stays in
    eos_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    completion[:, prompt_length:] = ~eos_before
    return completion


def sample_completions(model: "nn.Module", prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, eos_token_id: int,
                       pad_token_id: int, max_new_tokens: int = 32, temperature: float = 1.0,
                       seed: int | None = None) -> Rollout:
    """The model's sampled completions of a prompt batch (KV-cached ``generate``, pure sampling: no top-k/top-p)."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                                 temperature=float(temperature), top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad_token_id, eos_token_id=eos_token_id, use_cache=True)
    finally:
        model.train(was_training)
    sequences = out.clone()  # leave inference mode: the tensor feeds a training forward pass
    p = prompt_ids.shape[1]
    if sequences.shape[1] == p:
        raise RuntimeError("generate returned no new token")
    completion = completion_mask(sequences, p, eos_token_id)
    attention = torch.cat([prompt_mask, completion[:, p:].long()], dim=1)
    return Rollout(sequences, attention, p, completion, time.perf_counter() - start)


def teacher_text_batch(tokenizer: Any, records: Sequence[dict], r: LLMRecipe, eos_token_id: int) -> Rollout:
    """The same layout for off-policy data: each prompt, then the teacher's cached ``response`` and EOS."""
    prompt_ids, prompt_mask = prompt_batch(tokenizer, records, r)
    bodies = [tokenizer(rec["response"], add_special_tokens=False)["input_ids"] + [eos_token_id] for rec in records]
    width = max(len(b) for b in bodies)
    tail = torch.full((len(records), width), _pad_id(tokenizer), dtype=torch.long)
    for i, body in enumerate(bodies):
        tail[i, :len(body)] = torch.tensor(body)
    sequences = torch.cat([prompt_ids, tail], dim=1)
    p = prompt_ids.shape[1]
    completion = completion_mask(sequences, p, eos_token_id)
    return Rollout(sequences, torch.cat([prompt_mask, completion[:, p:].long()], dim=1), p, completion)


def _token_logprobs(logits: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """``(B, L − 1)`` log-probabilities of each next token under ``(B, L, V)`` logits: what :func:`score_tokens`
    returns, from logits already computed."""
    return torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, sequences[:, 1:].unsqueeze(-1)).squeeze(-1)


def score_tokens(model: "nn.Module", sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, L − 1)``: log-probability the model gives each next token, ``log π(x_{t+1} | x_{≤t})``, in one forward
    pass without gradients. Column t scores token t + 1: the logits at position t predict the *next* token."""
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=attention_mask).logits
    return _token_logprobs(logits, sequences)


def on_policy_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, sequences: torch.Tensor,
                   prompt_length: int, eos_token_id: int, beta: float) -> torch.Tensor:
    """Generalized JSD (T = 1) between teacher and student over the completion tokens only.

    ``student_logits`` / ``teacher_logits`` are ``(B, L, V)`` forward passes over ``sequences`` ``(B, L)``, so the
    logits at position t predict token t + 1: the positions ``t − 1`` of the completion tokens ``t`` count
    (:func:`completion_mask`, EOS included, prompt and padding excluded). The teacher is a constant.
    """
    mask = completion_mask(sequences, prompt_length, eos_token_id)[:, 1:]
    return generalized_jsd_loss(student_logits[:, :-1], teacher_logits[:, :-1].detach(), beta=beta, mask=mask)


def per_position_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``(...)`` per-position KL(q ‖ p) (student ‖ teacher, T = 1), no reduction."""
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def on_policy_recipe(profile: Any = None) -> LLMRecipe:
    """Notebook 08's pair. ``small``: notebook 05's SmolLM2-135M teacher and its pruned copy (one tokenizer).
    ``gpu``: SmolLM2-1.7B-Instruct → SmolLM2-360M-Instruct, one vocabulary, fits a T4 in fp16 (notebook 05's
    Mistral → Phi-2 pair has two tokenizers: token-level on-policy KD cannot compare their distributions)."""
    name = getattr(profile, "name", profile) or "small"
    if name == "gpu":
        return llm_recipe("gpu", teacher=ON_POLICY_GPU_TEACHER, student=ON_POLICY_GPU_STUDENT, teacher_4bit=False,
                          drop_layers=(), lora_targets=LLAMA_LORA_TARGETS, student_prompt="chat", shared_vocabulary=True)
    return llm_recipe(name)


# ---------------------------------------------------------------------------------------------------- training
def _check_method(method: str, lmbda: float, beta: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("lmbda", lmbda), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if method == "sampled" and lmbda != 1:
        raise ValueError("method='sampled' is a policy gradient: it needs the student's own samples (lmbda=1)")
    if method == "sft" and lmbda != 0:
        raise ValueError("method='sft' trains on the teacher's text only (lmbda=0)")


def _step_loss(method: str, student: "nn.Module", teacher: "nn.Module", batch: Rollout, eos: int, beta: float,
               loss_fn: LossFn, score_fn: ScoreFn) -> torch.Tensor:
    logits = student(input_ids=batch.sequences, attention_mask=batch.attention_mask).logits
    mask = batch.completion[:, 1:]
    if method == "sft":
        return torch.nn.functional.cross_entropy(logits[:, :-1][mask], batch.sequences[:, 1:][mask])
    if method == "sampled":
        teacher_logprobs = score_fn(teacher, batch.sequences, batch.attention_mask)
        loss, _ = sampled_token_kd_loss(logits[:, :-1], teacher_logprobs, batch.sequences[:, 1:], mask)
        return loss
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch.sequences, attention_mask=batch.attention_mask).logits
    return loss_fn(logits, teacher_logits, batch.sequences, batch.prompt_length, eos, beta)


def _run_name(method: str, lmbda: float, beta: float, seed: int, steps: int, equal_time: bool) -> str:
    # one entry per distinct run: a shorter run of the same method and seed must not overwrite a longer one
    return f"onpolicy-{method}-l{lmbda:g}-b{beta:g}-s{seed}-n{steps}" + ("-eqtime" if equal_time else "")


def train_on_policy(r: LLMRecipe, pruned: "nn.Module", teacher: "nn.Module", tokenizer: Any,
                    train_records: Sequence[dict], method: str = "gkd", *, lmbda: float = 1.0, beta: float = 0.5,
                    seed: int = 0, config: OnPolicyConfig = OnPolicyConfig(), seconds_budget: float | None = None,
                    evaluate: Callable[["nn.Module"], dict] | None = None, loss_fn: LossFn | None = None,
                    score_fn: ScoreFn | None = None, use_cache: bool = True, progress: bool = True) -> dict:
    """Train a fresh LoRA adapter on a copy of ``pruned`` (or load the run's results from the cache); return its info.

    Each step draws ``config.prompts_per_step`` training prompts; with probability ``lmbda`` the student samples
    their completions (on-policy), else the teacher's cached responses are used. The step's loss is ``method``'s
    (see :data:`METHODS`); for ``gkd`` it is ``loss_fn`` (default :func:`on_policy_loss`) with ``beta``; for
    ``sampled`` the teacher's per-token log-probabilities come from ``score_fn`` (default :func:`score_tokens`).

    ``evaluate(student)`` (a dict of metrics) runs after ``config.steps`` steps ("equal steps") and, when
    ``seconds_budget`` is given, again once the run's training time (generation included, evaluation excluded)
    reaches the budget ("equal time"); the run continues past ``config.steps`` only for that.

    Returns:
        ``{"method", "lmbda", "beta", "seed", "losses", "step_seconds", "generation_seconds", "at_steps",
        "at_budget", "steps_at_budget", "adapter" (the trained student, not cached)}``. Results (without the
        adapter) are cached under ``onpolicy-<method>-l<λ>-b<β>-s<seed>-n<steps>[-eqtime]`` unless a custom ``loss_fn``/``score_fn``
        is given or ``use_cache`` is False.
    """
    _check_method(method, lmbda, beta)
    custom = loss_fn is not None or score_fn is not None
    loss_fn = loss_fn or on_policy_loss
    score_fn = score_fn or score_tokens
    if not train_records:
        raise ValueError("train_records is empty")
    fingerprint = r.fingerprint(what="on-policy", method=method, lmbda=float(lmbda), beta=float(beta), seed=seed,
                                config=asdict(config), seconds_budget=seconds_budget,
                                n_records=len(train_records), evaluated=evaluate is not None)
    name = _run_name(method, lmbda, beta, seed, config.steps, seconds_budget is not None)
    trained: dict[str, "nn.Module"] = {}

    def run() -> dict:
        info, trained["adapter"] = _train(r, pruned, teacher, tokenizer, train_records, method, lmbda, beta, seed,
                                          config, seconds_budget, evaluate, loss_fn, score_fn, progress)
        return info

    if use_cache and not custom:
        info, _ = cache.cached_json(name, fingerprint, run, r.profile, verbose=False)
    else:
        info = run()
    return {**info, **trained}


def _train(r: LLMRecipe, pruned: "nn.Module", teacher: "nn.Module", tokenizer: Any, train_records: Sequence[dict],
           method: str, lmbda: float, beta: float, seed: int, config: OnPolicyConfig, seconds_budget: float | None,
           evaluate: Callable[["nn.Module"], dict] | None, loss_fn: LossFn, score_fn: ScoreFn,
           progress: bool) -> tuple[dict, "nn.Module"]:
    """:func:`train_on_policy`'s loop, uncached: ``(info without the adapter, the trained student)``."""
    eos, pad = int(tokenizer.eos_token_id), int(_pad_id(tokenizer))
    student = add_lora(copy.deepcopy(pruned), r, seed=seed)
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (config.warmup_steps + 1)))
    rng = random.Random(seed)
    info: dict[str, Any] = {"method": method, "lmbda": float(lmbda), "beta": float(beta), "seed": seed,
                            "losses": [], "step_seconds": [], "generation_seconds": [], "on_policy": [],
                            "at_steps": None, "at_budget": None, "steps_at_budget": None}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=f"{method} λ={lmbda:g} β={beta:g} seed {seed}", unit="step", leave=False)
    elapsed, step = 0.0, 0
    while True:
        start = time.perf_counter()
        batch_records = rng.sample(list(train_records), config.prompts_per_step)
        on_policy = rng.random() < lmbda
        if on_policy:
            ids, mask = prompt_batch(tokenizer, batch_records, r)
            batch = sample_completions(student, ids, mask, eos, pad, config.max_new_tokens, config.temperature,
                                       seed=seed * 100_003 + step)
        else:
            batch = teacher_text_batch(tokenizer, batch_records, r, eos)
        loss = _step_loss(method, student, teacher, batch, eos, beta, loss_fn, score_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        seconds = time.perf_counter() - start
        elapsed += seconds
        step += 1
        info["losses"].append(round(float(loss.detach()), 5))
        info["step_seconds"].append(round(seconds, 4))
        info["generation_seconds"].append(round(batch.seconds, 4))
        info["on_policy"].append(on_policy)
        if bar is not None and step <= config.steps:
            bar.update(1)
        if step == config.steps:
            info["at_steps"] = evaluate(student) if evaluate else None
            if bar is not None:
                bar.close()
        if step >= config.steps and (seconds_budget is None or elapsed >= seconds_budget):
            break
    if seconds_budget is not None:
        info["at_budget"] = evaluate(student) if evaluate and step > config.steps else info["at_steps"]
        info["steps_at_budget"] = step
    student.eval()
    return info, student


# -------------------------------------------------------------------------------------------------- evaluation
def evaluate_students(model: "nn.Module", teacher: "nn.Module", tokenizer: Any, r: LLMRecipe,
                      heldout_records: Sequence[dict], task: Sequence[tuple[str, str]] = (),
                      max_new_tokens: int = 32) -> dict:
    """Held-out metrics of one model on its **own** greedy text, scored by the teacher.

    * ``reverse_kl``: mean per-token KL(student ‖ teacher) over the model's completions of the held-out prompts;
    * ``rouge_l``: ROUGE-L F1 of those completions against the teacher's responses;
    * ``task_accuracy``: share of ``task`` ``(question, answer)`` pairs whose greedy completion contains the answer
      (case-insensitive), and ``task_correct``, the list of per-question results;
    * ``mean_length``: mean completion tokens of the held-out prompts (EOS included);
    * ``samples``: the first completions, for a side-by-side table.
    """
    eos, pad = int(tokenizer.eos_token_id), int(_pad_id(tokenizer))
    records = list(heldout_records) + [{"instruction": q} for q, _ in task]
    ids, mask = prompt_batch(tokenizer, records, r)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # the raw logits of each generated position come with the tokens: no second student forward pass
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, eos_token_id=eos, output_logits=True, return_dict_in_generate=True)
        sequences = out.sequences.clone()
        p = ids.shape[1]
        completion = completion_mask(sequences, p, eos)
        attention = torch.cat([mask, completion[:, p:].long()], dim=1)
        n = len(heldout_records)
        z = torch.stack(out.logits, dim=1)[:n]                         # (n, K, V): position p + k's prediction
        with torch.no_grad():
            v = teacher(input_ids=sequences[:n], attention_mask=attention[:n]).logits[:, p - 1:p - 1 + z.shape[1]]
        per_position = per_position_reverse_kl(z, v)
    finally:
        model.train(was_training)
    keep = completion[:n, p:p + z.shape[1]]
    texts = []
    for row in range(len(records)):
        body = [t for t, m in zip(sequences[row, p:].tolist(), completion[row, p:].tolist()) if m and t != eos]
        texts.append(tokenizer.decode(body, skip_special_tokens=True).strip())
    rouge = [rouge_l(t, rec["response"]) for t, rec in zip(texts[:n], heldout_records)]
    correct = [answer.lower() in t.lower() for t, (_, answer) in zip(texts[n:], task)]
    return {"reverse_kl": round(float(per_position[keep].mean()), 4),
            "rouge_l": round(sum(rouge) / len(rouge), 4),
            "task_accuracy": round(sum(correct) / len(correct), 4) if task else None,
            "task_correct": correct,
            "mean_length": round(float(completion[:n].sum(1).float().mean()), 2),
            "samples": texts[:n]}


def exposure_profile(model: "nn.Module", teacher: "nn.Module", tokenizer: Any, r: LLMRecipe,
                     records: Sequence[dict], max_new_tokens: int = 32, seed: int = 0) -> dict:
    """How the teacher grades ``model``'s own sampled text against the teacher's text, position by position.

    ``model`` samples a completion of each prompt (temperature 1, seeded); the same prompts with the teacher's
    cached responses are the teacher-written text. On both, per completion position k (0 = first token):
    ``reverse_kl[k]`` = mean KL(model ‖ teacher) and ``teacher_logprob[k]`` = mean log p_teacher(token), from one
    teacher forward pass per text. The result is JSON-able (cache it with :func:`course_utils.core.cache.cached_json`).

    Returns:
        ``{"own": {...}, "teacher_text": {...}}``, each with the per-position lists ``reverse_kl``,
        ``teacher_logprob`` and ``count`` (sequences still running at position k), their token means
        ``mean_reverse_kl`` and ``mean_teacher_logprob``, and the scored text itself (``sequences``,
        ``attention_mask``, ``completion`` as 0/1 lists, ``row_logprob_sums``) for :func:`rescore`.
    """
    eos, pad = int(tokenizer.eos_token_id), int(_pad_id(tokenizer))
    ids, mask = prompt_batch(tokenizer, records, r)
    rollouts = {"own": sample_completions(model, ids, mask, eos, pad, max_new_tokens, 1.0, seed=seed),
                "teacher_text": teacher_text_batch(tokenizer, records, r, eos)}
    out = {}
    was_training = model.training
    model.eval()
    try:
        for key, batch in rollouts.items():
            with torch.no_grad():
                z = model(input_ids=batch.sequences, attention_mask=batch.attention_mask).logits[:, :-1]
                v = teacher(input_ids=batch.sequences, attention_mask=batch.attention_mask).logits
            kl = per_position_reverse_kl(z, v[:, :-1])
            logp = _token_logprobs(v, batch.sequences)
            keep = batch.completion[:, 1:]
            p = batch.prompt_length - 1  # column p scores the first completion token
            width = int(keep[:, p:].sum(1).max())
            rows: dict[str, Any] = {"reverse_kl": [], "teacher_logprob": [], "count": []}
            for k in range(width):
                m = keep[:, p + k]
                rows["count"].append(int(m.sum()))
                rows["reverse_kl"].append(round(float(kl[:, p + k][m].mean()), 4))
                rows["teacher_logprob"].append(round(float(logp[:, p + k][m].mean()), 4))
            rows["mean_reverse_kl"] = round(float(kl[keep].mean()), 4)
            rows["mean_teacher_logprob"] = round(float(logp[keep].mean()), 4)
            rows.update(sequences=batch.sequences.tolist(), attention_mask=batch.attention_mask.tolist(),
                        completion=batch.completion.int().tolist(),
                        row_logprob_sums=[float(x) for x in (logp * keep).sum(1)])
            out[key] = rows
    finally:
        model.train(was_training)
    return out


def rescore(scored: dict, teacher: "nn.Module", score_fn: ScoreFn, rows: int = 8) -> tuple[float, float]:
    """Score the first ``rows`` texts of one side of :func:`exposure_profile` (``profile["own"]`` or
    ``profile["teacher_text"]``) again with ``score_fn(teacher, sequences, attention_mask)`` → ``(B, L − 1)``.

    Returns:
        ``(mean teacher log p per completion token by score_fn, the same mean as exposure_profile measured it)``.

    Raises:
        ValueError: ``scored`` is not one side of an exposure profile, ``rows`` is not a positive integer, or
            ``score_fn`` returns another shape than ``(B, L − 1)``.
    """
    needed = {"sequences", "attention_mask", "completion", "row_logprob_sums"}
    if not isinstance(scored, dict) or not needed <= set(scored):
        raise ValueError("scored must be one side of exposure_profile's result, e.g. profile['own'] "
                         f"(a dict with {sorted(needed)})")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    sequences = torch.tensor(scored["sequences"][:rows])
    attention = torch.tensor(scored["attention_mask"][:rows])
    logp = score_fn(teacher, sequences, attention)
    expected = (sequences.shape[0], sequences.shape[1] - 1)
    if not isinstance(logp, torch.Tensor) or tuple(logp.shape) != expected:
        raise ValueError(f"score_fn returned {tuple(getattr(logp, 'shape', ()))}, expected {expected} "
                         "(one log-probability per next token: batch × (length − 1))")
    keep = torch.tensor(scored["completion"][:rows], dtype=torch.bool)[:, 1:]
    n = int(keep.sum())
    return float(logp.detach().float()[keep].sum()) / n, sum(scored["row_logprob_sums"][:rows]) / n


def gradient_noise(pruned: "nn.Module", teacher: "nn.Module", tokenizer: Any, r: LLMRecipe, records: Sequence[dict],
                   n_draws: int = 6, max_new_tokens: int = 32, seed: int = 0) -> dict:
    """Spread of the LoRA gradient of the full-distribution reverse KL (GKD, β = 1) and of the sampled-token
    estimator over ``n_draws`` independent rollouts of the same prompts, from a fresh adapter on ``pruned``.

    Returns, per estimator, ``relative_variance`` = mean ‖g_i − ḡ‖² / ‖ḡ‖² (0: every draw gives the same
    direction), ``cosine_to_mean`` (mean over draws) and ``loss_seconds`` (mean time of forward + loss + backward,
    generation excluded), and ``generation_seconds`` (mean over the draws).
    """
    if n_draws < 2:
        raise ValueError(f"n_draws must be ≥ 2 to measure a spread, got {n_draws!r}")
    eos, pad = int(tokenizer.eos_token_id), int(_pad_id(tokenizer))
    student = add_lora(copy.deepcopy(pruned), r, seed=seed)
    params = [p for p in student.parameters() if p.requires_grad]
    ids, mask = prompt_batch(tokenizer, records, r)
    grads: dict[str, list[torch.Tensor]] = {"full": [], "sampled": []}
    seconds: dict[str, list[float]] = {"full": [], "sampled": []}
    generation = []
    for draw in range(n_draws):
        batch = sample_completions(student, ids, mask, eos, pad, max_new_tokens, 1.0, seed=seed * 1000 + draw)
        generation.append(batch.seconds)
        for key in grads:
            start = time.perf_counter()
            student.train()
            loss = _step_loss("gkd" if key == "full" else "sampled", student, teacher, batch, eos, 1.0,
                              on_policy_loss, score_tokens)
            g = torch.autograd.grad(loss, params)
            seconds[key].append(time.perf_counter() - start)
            grads[key].append(torch.cat([x.reshape(-1) for x in g]))
    out: dict[str, Any] = {"generation_seconds": round(sum(generation) / n_draws, 3), "n_draws": n_draws}
    for key, gs in grads.items():
        stack = torch.stack(gs)
        mean = stack.mean(0)
        spread = float(((stack - mean) ** 2).sum(1).mean() / (mean ** 2).sum())
        cosine = float(torch.nn.functional.cosine_similarity(stack, mean[None], dim=1).mean())
        out[key] = {"relative_variance": round(spread, 3), "cosine_to_mean": round(cosine, 3),
                    "loss_seconds": round(sum(seconds[key]) / n_draws, 3)}
    return out
