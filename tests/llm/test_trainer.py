"""Unit tests for course_utils.llm.trainer: CausalLMDistillationTrainer (sft / token_kd / topk_kd / uld), the
vocabulary-mismatch refusal, top-k caching, held-out evaluation (course_utils.llm.lm_eval.evaluate_lm), the
equal-time curve, save/resume of checkpoints; and course_utils.llm.pipeline: distil (adapter caching and merging) and
distilled_students (trained once, then loaded from the cache) — for the ``small`` path (tiny Llama teacher and a
pruned copy as student) and the ``gpu`` path (tiny Mistral teacher, tiny Phi student, two different tokenizers). No
hub, no assets.
"""
from __future__ import annotations

import math
import time

import pytest
import torch

from course_utils import llm
from course_utils.core import cache
from course_utils.kd import llm_losses
from course_utils.kd.losses import soft_target_loss
from course_utils.llm import lm_eval, models, pipeline, recipe, tiny
from course_utils.training.distillation_trainer import training_args


pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1, warmup_steps=0)
QUESTIONS = ["why are bees important ?", "write a haiku about tea", "give one fact about the moon",
             "explain rivers to a child", "ask one question about chess", "what is two plus three ?",
             "list three words related to music", "why are trains important ?"]


@pytest.fixture()
def small(tmp_path, monkeypatch, course_cache):
    """The small recipe on a tiny 4-layer Llama (teacher) and its 2-layer pruned copy (student)."""
    tok = tiny.toy_llama_tokenizer()
    path = tiny.save_model(tiny.tiny_llama(tok, layers=4), tok, tmp_path / "llama")
    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path / "llama")
    r = recipe.llm_recipe("small", drop_layers=(1, 2), n_train=8, n_heldout=4, max_new_tokens=6, max_length=64,
                   generation_batch_size=4, hparams=dict(TINY), top_k=5)
    teacher = models.load_lm_teacher(r)
    records = [{"instruction": q, "context": "", "response": f"the answer is {i} and it is big ."}
               for i, q in enumerate(QUESTIONS)]
    data = llm.data.sft_dataset(records, tok, r)
    return r, tok, teacher, data


@pytest.fixture()
def gpu(tmp_path, monkeypatch, course_cache):
    """The gpu recipe with tiny stand-ins: a Mistral teacher (word tokenizer) and a Phi student (char tokenizer)."""
    t_tok, s_tok = tiny.toy_mistral_tokenizer(), tiny.toy_char_tokenizer()
    t_path = tiny.save_model(tiny.tiny_mistral(t_tok), t_tok, tmp_path / "mistral")
    s_path = tiny.save_model(tiny.tiny_phi(s_tok), s_tok, tmp_path / "phi")
    r = recipe.llm_recipe("gpu", teacher=t_path, student=s_path, teacher_4bit=False, dtype="float32", n_train=8,
                   n_heldout=4, max_new_tokens=5, max_length=200, generation_batch_size=4, hparams=dict(TINY))
    return r, t_tok, s_tok


def _trainer(r, student, data, tok, method, teacher=None, **kw):
    args = training_args(seed=0, label_names=["labels"], **{**r.hparams, **kw})
    return llm.trainer.CausalLMDistillationTrainer(student, args, teacher_model=teacher, method=method,
                                                   temperature=r.temperature, alpha_kd=r.alpha_kd,
                                                   train_dataset=data, processing_class=tok)


def _batch(data, tok, n=4):
    return llm.data.CausalLMCollator(tok.pad_token_id)([data[i] for i in range(n)])


# ------------------------------------------------------------------------------------------------ token-level KD
def test_token_kd_loss_is_the_causal_distillation_loss(small):
    r, tok, teacher, data = small
    student = models.add_lora(models.load_student_base(r), r)
    trainer = _trainer(r, student, data, tok, "token_kd", teacher)
    assert trainer.teacher_source == "teacher" and trainer.chunk_size == llm_losses.default_chunk_size(len(tok))
    batch = _batch(data, tok)
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        z = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        v = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = llm_losses.causal_lm_distillation_loss(z, v, batch["labels"], r.temperature, r.alpha_kd)
    assert torch.allclose(loss.detach(), ref.loss, atol=1e-5)
    assert trainer._terms["train"]["kd"] and trainer._terms["train"]["ce"]


def test_inplace_gradient_equals_separate_buffer(small):
    r, tok, teacher, data = small
    grads = []
    for inplace in (True, False):
        student = models.add_lora(models.load_student_base(r), r, seed=0)
        for n, p in student.named_parameters():  # non-zero B so every LoRA matrix gets a gradient
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(hash(n) % 1000))
        trainer = _trainer(r, student, data, tok, "token_kd", teacher)
        trainer.inplace_grad = inplace
        trainer.compute_loss(student, dict(_batch(data, tok))).backward()
        grads.append({n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_vocabulary_mismatch_is_refused_before_training(gpu):
    r, t_tok, s_tok = gpu
    teacher, student = models.load_lm_teacher(r), models.add_lora(models.load_student_base(r), r)
    recs = [{"instruction": q, "context": "", "response": "the sun is hot ."} for q in QUESTIONS[:4]]
    data = llm.data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok)
    vt, vs = models.vocabulary_size(teacher), models.vocabulary_size(student)
    assert vt != vs
    for method in ("token_kd",):
        with pytest.raises(ValueError) as err:
            _trainer(r, student, data, s_tok, method, teacher)
        msg = str(err.value)
        for needle in (f"{vt:,}", f"{vs:,}", "method='sft'", "method='uld'", "MistralForCausalLM", "PhiForCausalLM"):
            assert needle in msg, (needle, msg)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        llm.trainer.check_vocabularies(student, teacher)


def test_setup_errors(small):
    r, tok, teacher, data = small
    student = models.add_lora(models.load_student_base(r), r)
    with pytest.raises(ValueError, match="method must be"):
        _trainer(r, student, data, tok, "distil")
    with pytest.raises(ValueError, match="needs teacher_model"):
        _trainer(r, student, data, tok, "token_kd", None)
    with pytest.raises(ValueError, match="teacher_topk_ids"):
        _trainer(r, student, data, tok, "topk_kd")
    with pytest.raises(ValueError, match="teacher's tokenization"):
        _trainer(r, student, data, tok, "uld", teacher)
    with pytest.raises(ValueError, match="'labels'"):
        _trainer(r, student, data.remove_columns("labels"), tok, "sft")
    # sft needs no teacher and ignores alpha_kd
    trainer = _trainer(r, student, data, tok, "sft", teacher)
    assert trainer.alpha_kd == 0.0 and trainer.teacher is None and trainer.teacher_source == "none"


# ------------------------------------------------------------------------------------------------ top-k KD
def test_add_teacher_topk_and_topk_trainer(small):
    r, tok, teacher, data = small
    topk, stats = llm.trainer.add_teacher_topk(data, teacher, k=5, batch_size=3, temperature=2.0,
                                               pad_token_id=tok.pad_token_id)
    assert 0 < stats["mass_p05"] <= stats["mass_mean"] <= 1 and stats["k"] == 5
    row = topk[2]
    with torch.no_grad():
        logits = teacher(torch.tensor([row["input_ids"]])).logits[0]
    vals, ids = logits.topk(5, -1)
    assert torch.allclose(torch.tensor(row[llm.trainer.TOPK_LSE]), torch.logsumexp(logits / 2.0, -1), atol=1e-5)
    assert torch.equal(torch.tensor(row[llm.trainer.TOPK_IDS]), ids)
    assert torch.allclose(torch.tensor(row[llm.trainer.TOPK_LOGITS]), vals, atol=1e-5)
    student = models.add_lora(models.load_student_base(r), r)
    trainer = _trainer(r, student, topk, tok, "topk_kd")
    assert trainer.teacher_source == "column" and trainer.teacher is None
    batch = _batch(topk, tok)
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        z = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    args = (z, batch[llm.trainer.TOPK_IDS], batch[llm.trainer.TOPK_LOGITS], batch["labels"], r.temperature,
            r.alpha_kd)
    ref = llm_losses.causal_lm_topk_distillation_loss(*args, teacher_logsumexp=batch[llm.trainer.TOPK_LSE])
    assert torch.allclose(loss.detach(), ref.loss, atol=1e-5)
    trainer.topk_tail = False  # renormalised top k instead of the tail bucket
    renorm = llm_losses.causal_lm_topk_distillation_loss(*args)
    assert torch.allclose(trainer.compute_loss(student, dict(batch)).detach(), renorm.loss, atol=1e-5)
    assert not torch.allclose(renorm.loss, ref.loss)
    trainer.train()
    assert trainer.state.global_step == 2


def test_teacher_topk_is_cached(small):
    r, tok, teacher, data = small
    a, sa = pipeline.teacher_topk(r, teacher, data, tok.pad_token_id, verbose=False)
    b, sb = pipeline.teacher_topk(r, lambda: pytest.fail("cache miss"), data, tok.pad_token_id, verbose=False)
    assert sa == sb and list(a[llm.trainer.TOPK_IDS]) == list(b[llm.trainer.TOPK_IDS])


def test_topk_ids_outside_the_student_vocabulary_are_refused(small):
    r, tok, teacher, data = small
    topk, _ = llm.trainer.add_teacher_topk(data, teacher, k=3, pad_token_id=tok.pad_token_id)
    bad = topk.map(lambda x: {llm.trainer.TOPK_IDS: [[i + 10_000 for i in row] for row in x[llm.trainer.TOPK_IDS]]})
    with pytest.raises(ValueError, match="another vocabulary"):
        _trainer(r, models.add_lora(models.load_student_base(r), r), bad, tok, "topk_kd")


# ------------------------------------------------------------------------------------------------ evaluation
def test_evaluate_lm_matches_direct_computation(small):
    r, tok, teacher, data = small
    student = models.load_student_base(r)
    out = lm_eval.evaluate_lm(student, data, teacher=teacher, temperature=2.0, batch_size=3,
                                  pad_token_id=tok.pad_token_id)
    ce, kd, n = 0.0, 0.0, 0
    with torch.no_grad():
        for row in data:
            ids = torch.tensor([row["input_ids"]])
            z, v = student(ids).logits[0], teacher(ids).logits[0]
            tgt = llm_losses.shift_labels(torch.tensor(row["labels"]))
            m = tgt != -100
            ce += float(torch.nn.functional.cross_entropy(z[m], tgt[m], reduction="sum"))
            kd += float(soft_target_loss(z[m], v[m], 2.0)) * int(m.sum())
            n += int(m.sum())
    assert out["tokens"] == n and math.isclose(out["perplexity"], math.exp(ce / n), rel_tol=1e-5)
    assert math.isclose(out["kd"], kd / n, rel_tol=1e-4)
    assert out["teacher_perplexity"] > 1
    assert lm_eval.evaluate_lm(teacher, data, teacher=teacher)["kd"] < 1e-6


def test_heldout_curve_excludes_evaluation_time(small):
    r, tok, teacher, data = small

    def slow_eval(model):
        time.sleep(0.3)
        return 1.0

    curve = llm.trainer.HeldoutCurve(slow_eval, every=1, offset_seconds=5.0, start=9.0)
    student = models.add_lora(models.load_student_base(r), r)
    trainer = _trainer(r, student, data, tok, "sft")
    trainer.add_callback(curve)
    trainer.train()
    assert [p["step"] for p in curve.points] == [0, 1, 2]
    assert curve.points[0] == {"step": 0, "train_seconds": 5.0, "perplexity": 9.0}
    assert curve.points[-1]["train_seconds"] - 5.0 < 0.3  # two sleeps of 0.3 s are not training time


# ------------------------------------------------------------------------------------------------ distil + cache
def test_distil_caches_adapter_and_curve(small):
    r, tok, teacher, data = small
    base_ppl = lm_eval.evaluate_lm(models.load_student_base(r), data, pad_token_id=tok.pad_token_id)["perplexity"]
    model, info = pipeline.distil(r, "token_kd", data, tok, teacher=teacher, heldout=data, eval_every=1,
                                     start_perplexity=base_ppl, verbose=False)
    assert info["steps"] == 2 and len(info["curve"]) == 3 and info["trainable_parameters"] > 0
    assert info["curve"][0]["perplexity"] == base_ppl
    assert any("kd" in e for e in info["log"])
    # the run's time budget reaches its own last evaluation (an equal-time comparison must not miss it)
    assert info["train_seconds"] + info["offset_seconds"] == pytest.approx(info["curve"][-1]["train_seconds"], abs=1e-9)
    again, info2 = pipeline.distil(r, "token_kd", data, tok, teacher=lambda: pytest.fail("loaded the teacher"),
                                      heldout=data, eval_every=1, start_perplexity=base_ppl, verbose=False)
    assert info2 == info
    ids = torch.tensor([data[0]["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)
    # any change of the settings retrains
    _, info3 = pipeline.distil(r, "token_kd", data, tok, teacher=teacher, verbose=False, learning_rate=1e-3)
    assert info3["curve"] == [] and cache.load_meta("llm-student-token_kd")["metrics"] == info3


def test_checkpoint_resume_equals_uninterrupted_run(small, tmp_path):
    r, tok, teacher, data = small
    hp = dict(max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=2)

    def run(output_dir, resume=None, **extra):
        student = models.add_lora(models.load_student_base(r), r, seed=0)
        trainer = _trainer(r, student, data, tok, "token_kd", teacher, output_dir=str(output_dir), **{**hp, **extra})
        trainer.train(resume_from_checkpoint=resume)
        return {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}

    full = run(tmp_path / "full")
    partial_dir = tmp_path / "part"
    run(partial_dir, max_steps=4, save_steps=2)  # writes checkpoint-2 and checkpoint-4
    resumed = run(partial_dir, resume=str(partial_dir / "checkpoint-2"))
    assert (partial_dir / "checkpoint-2" / "adapter_model.safetensors").is_file()
    for n in full:
        assert torch.allclose(full[n], resumed[n], atol=1e-6), n


# ------------------------------------------------------------------------------------------------ the gpu path
def test_gpu_path_sequence_level_kd_across_tokenizers(gpu, monkeypatch):
    """Mistral teacher generates → filter → Phi student (other tokenizer) fine-tuned with LoRA on the text."""
    from datasets import Dataset

    r, t_tok, s_tok = gpu
    rows = [{"instruction": q, "context": "", "response": "", "category": "open_qa"} for q in QUESTIONS * 2]
    monkeypatch.setattr(llm.data, "_load_dolly", lambda: Dataset.from_list(rows))
    prompts = llm.data.instruction_prompts(r)
    gen = llm.data.teacher_responses(r, lambda: models.load_lm_teacher(r), models.load_lm_tokenizer(r.teacher), prompts)
    assert len(gen["train"]) == 8 and all("response" in x for x in gen["train"])
    kept, report = llm.data.filter_responses(gen["train"])
    assert report.loc["kept", "dropped"] == len(kept)
    recs = kept or gen["train"]  # random weights may produce only duplicates; the path is what is tested
    recs = [{**x, "response": x["response"] or "the sun is hot ."} for x in recs]
    data = llm.data.sft_dataset(recs, s_tok, r)
    student, info = pipeline.distil(r, "sft", data, s_tok, verbose=False)
    assert info["steps"] == 2 and type(student.get_base_model()).__name__ == "PhiForCausalLM"
    merged = models.merge_lora(student)
    assert type(merged).__name__ == "PhiForCausalLM"


def test_gpu_path_uld_with_a_live_teacher(gpu):
    r, t_tok, s_tok = gpu
    recs = [{"instruction": q, "context": "", "response": "bees make honey and the sun is hot ."} for q in QUESTIONS]
    data = llm.data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok)
    teacher = models.load_lm_teacher(r)
    student, info = pipeline.distil(r, "uld", data, s_tok, teacher=teacher, verbose=False)
    ulds = [e["uld"] for e in info["log"] if "uld" in e]
    assert ulds and all(0 < u <= 2 for u in ulds)
    # the ULD term is the loss on the aligned answer positions
    trainer = _trainer(r, student, data, s_tok, "uld", teacher)
    batch = _batch(data, s_tok, 2)
    terms = {}
    orig = trainer.loss_terms

    def spy(*a, **k):
        terms.update(orig(*a, **k))
        return terms

    trainer.loss_terms = spy
    trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        z = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        v = teacher(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]).logits
    ref = llm_losses.uld_loss(z, v, llm_losses.shift_labels(batch["labels"]) != -100,
                              llm_losses.shift_labels(batch["teacher_labels"]) != -100, r.temperature)
    assert torch.allclose(terms["uld"].detach(), ref, atol=1e-5)


def test_distilled_students_trains_once_then_loads_from_the_cache(small, monkeypatch):
    r, tok, teacher, data = small
    answers = [f"the answer is {w} ." for w in ("red", "blue", "green", "seven", "tall", "quiet", "warm", "old",
                                                "fast", "round", "sweet", "bright")]

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):   # tiny random models write noise the filter drops
        return [{"response": answers[i % len(answers)], "new_tokens": 4, "finished": True}
                for i, _ in enumerate(prompts)]

    monkeypatch.setattr(llm.data, "generate", fake_generate)
    monkeypatch.setitem(recipe.NOTEBOOK_STEPS, "small", {"sft": 2, "topk_kd": 2})
    settings = dict(drop_layers=r.drop_layers, n_train=r.n_train, n_heldout=r.n_heldout, max_new_tokens=r.max_new_tokens,
                    max_length=r.max_length, generation_batch_size=r.generation_batch_size, hparams=r.hparams,
                    top_k=r.top_k)
    assert not pipeline.students_cached("small", **settings)
    first = pipeline.distilled_students("small", **settings)
    assert pipeline.students_cached("small", **settings)
    assert not pipeline.students_cached("small", methods=("token_kd",), **settings)
    assert set(first.students) == {"sft", "topk_kd"} and first.teacher is not None
    assert all(info["steps"] == 2 and len(info["curve"]) == 2 for info in first.runs.values())
    assert len(first.heldout_data) == len(first.heldout_records) > 0
    monkeypatch.setattr(pipeline, "load_lm_teacher", lambda *a, **k: pytest.fail("a cached run loaded the teacher"))
    again = pipeline.distilled_students("small", with_teacher=False, **settings)
    assert again.teacher is None and again.runs == first.runs
    ids = torch.tensor([first.heldout_data[0]["input_ids"]])
    with torch.no_grad():
        for m in first.students:
            assert torch.allclose(again.students[m](ids).logits, first.students[m](ids).logits, atol=1e-5)


def test_distilled_students_refuses_token_level_methods_across_vocabularies(gpu):
    r, _, _ = gpu
    with pytest.raises(ValueError, match="shared vocabulary"):
        pipeline.distilled_students("gpu", methods=("topk_kd",), teacher=r.teacher, student=r.student)
    with pytest.raises(ValueError, match="unknown method"):
        pipeline.distilled_students("gpu", methods=("kd",), teacher=r.teacher, student=r.student)


def test_prompt_logits_are_skipped_without_changing_loss_or_gradients(small):
    # logits before the batch's first response token are never scored: the trainer does not compute them
    r, tok, teacher, data = small
    topk, _ = llm.trainer.add_teacher_topk(data, teacher, k=5, batch_size=4, pad_token_id=tok.pad_token_id)
    for method, dataset, t in (("sft", data, None), ("token_kd", data, teacher), ("topk_kd", topk, None)):
        results = []
        for skip in (True, False):
            student = models.add_lora(models.load_student_base(r), r, seed=0)
            for n, p in student.named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
            trainer = _trainer(r, student, dataset, tok, method, t)
            batch = dict(_batch(dataset, tok))
            if skip:
                probe = dict(batch)
                trainer._skip_prompt_logits(probe)
                first = int((batch["labels"][:, 1:] != -100).float().argmax(1).min())
                assert first > 0 and probe["logits_to_keep"] == batch["labels"].shape[1] - first
            else:
                trainer._skip_prompt_logits = lambda inputs: None
            loss = trainer.compute_loss(student, batch)
            loss.backward()
            results.append((loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters()
                                            if p.grad is not None}))
        (a, ga), (b, gb) = results
        assert torch.allclose(a, b, atol=1e-5), method
        assert ga.keys() == gb.keys() and ga
        for n in ga:
            assert torch.allclose(ga[n], gb[n], atol=1e-5), (method, n)


# ------------------------------------------------------------------------------------- a custom token-level loss
def _naive_causal_kd_loss(student_logits, teacher_logits, labels, temperature, alpha_kd):
    """What notebook 05's exercise 1 asks for: plain autograd, shift, mask, (1 − α)·CE + α·T²·KL."""
    z, v, y = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    valid = y != -100
    ce = torch.nn.functional.cross_entropy(z[valid], y[valid])
    t = temperature
    kd = torch.nn.functional.kl_div(torch.log_softmax(z[valid] / t, -1), torch.log_softmax(v[valid] / t, -1),
                                    log_target=True, reduction="batchmean") * t * t
    return (1 - alpha_kd) * ce + alpha_kd * kd


def _lora_grads(student):
    return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fn", [_naive_causal_kd_loss, llm_losses.causal_lm_distillation_loss],
                         ids=["returns a tensor", "returns DistillationLoss"])
def test_kd_loss_fn_gives_the_library_loss_and_gradient(small, fn):
    r, tok, teacher, data = small
    results = []
    for kd_loss_fn in (None, fn):
        student = models.add_lora(models.load_student_base(r), r, seed=0)
        for n, p in student.named_parameters():  # non-zero B so every LoRA matrix gets a gradient
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
        args = training_args(seed=0, label_names=["labels"], **r.hparams)
        trainer = llm.trainer.CausalLMDistillationTrainer(
            student, args, teacher_model=teacher, method="token_kd", temperature=r.temperature, alpha_kd=r.alpha_kd,
            train_dataset=data, processing_class=tok, kd_loss_fn=kd_loss_fn)
        loss = trainer.compute_loss(student, dict(_batch(data, tok)))
        loss.backward()
        results.append((loss.detach(), _lora_grads(student), dict(trainer._terms["train"])))
    (ref_loss, ref_grads, ref_terms), (loss, grads, terms) = results
    assert loss.dim() == 0 and torch.allclose(loss, ref_loss, rtol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for n in grads:
        assert torch.allclose(grads[n], ref_grads[n], rtol=1e-4, atol=1e-6), n
    # a DistillationLoss result has its parts logged like the library's; a bare tensor is logged as the loss only
    assert set(terms) == ({"ce", "kd"} if fn is llm_losses.causal_lm_distillation_loss else set())
    assert set(ref_terms) == {"ce", "kd"}


def test_distil_with_kd_loss_fn_trains_every_time_and_matches_the_cached_run(small):
    r, tok, teacher, data = small
    _, ref = pipeline.distil(r, "token_kd", data, tok, teacher=teacher, heldout=data, eval_every=1, verbose=False)
    meta = cache.load_meta("llm-student-token_kd")
    for _ in range(2):  # never looked up, never saved: the second call trains again
        model, info = pipeline.distil(r, "token_kd", data, tok, teacher=teacher, heldout=data, eval_every=1,
                                      verbose=False, kd_loss_fn=_naive_causal_kd_loss)
        assert info["kd_loss_fn"] == "_naive_causal_kd_loss" and info["steps"] == ref["steps"] == 2
        assert cache.load_meta("llm-student-token_kd") == meta
        assert not any(e.name.startswith("llm-student-token_kd-") for e in cache.model_dir("x", r.profile).parent.iterdir())
        # same seed, LoRA initialisation and data order: the same run up to float rounding
        for a, b in zip(info["curve"], ref["curve"]):
            assert a["step"] == b["step"] and a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)
        losses_ = [e["loss"] for e in info["log"] if "loss" in e]
        assert losses_ == pytest.approx([e["loss"] for e in ref["log"] if "loss" in e], rel=1e-4)
    # the default (kd_loss_fn=None) still hits the cache with the same fingerprint
    _, again = pipeline.distil(r, "token_kd", data, tok, teacher=lambda: pytest.fail("loaded the teacher"),
                               heldout=data, eval_every=1, verbose=False)
    assert again == ref


def test_kd_loss_fn_errors_before_training(small):
    r, tok, teacher, data = small
    student = models.add_lora(models.load_student_base(r), r)

    def make(method="token_kd", fn=_naive_causal_kd_loss):
        args = training_args(seed=0, label_names=["labels"], **r.hparams)
        return llm.trainer.CausalLMDistillationTrainer(student, args, teacher_model=teacher, method=method,
                                                       train_dataset=data, processing_class=tok, kd_loss_fn=fn)

    with pytest.raises(TypeError, match="without calling it"):
        make(fn=torch.tensor(1.0))
    with pytest.raises(TypeError, match="five positional parameters"):
        make(fn=lambda student_logits, teacher_logits, labels: student_logits.sum())
    for method in ("sft", "uld"):
        with pytest.raises(ValueError, match="method='token_kd'"):
            make(method=method)
    with pytest.raises(ValueError, match="method='token_kd'"):
        llm.trainer.check_kd_loss_fn(_naive_causal_kd_loss, "topk_kd")
    llm.trainer.check_kd_loss_fn(lambda *args: None)  # *args binds five arguments
    # distil refuses before it loads any model or teacher
    with pytest.raises(ValueError, match="method='token_kd'"):
        pipeline.distil(r, "sft", data, tok, teacher=lambda: pytest.fail("loaded the teacher"),
                        kd_loss_fn=_naive_causal_kd_loss, verbose=False)
    with pytest.raises(TypeError, match="without calling it"):
        pipeline.distil(r, "token_kd", data, tok, teacher=teacher, kd_loss_fn="causal_kd_loss", verbose=False)


@pytest.mark.parametrize("fn, error, match", [
    (lambda z, v, y, t, a: _naive_causal_kd_loss(z, v, y, t, a).item(), TypeError, "returned a float"),
    (lambda z, v, y, t, a: None, TypeError, "returned a NoneType"),
    (lambda z, v, y, t, a: z[..., 0].mean(-1), ValueError, r"returned a tensor of shape \(4,"),
    (lambda z, v, y, t, a: _naive_causal_kd_loss(z.detach(), v, y, t, a), ValueError, "without a gradient"),
    (lambda z, v, y, t, a: z.sum() * float("nan"), ValueError, "not finite"),
], ids=["float", "None", "not a scalar", "detached", "nan"])
def test_kd_loss_fn_wrong_results_are_explained(small, fn, error, match):
    r, tok, teacher, data = small
    student = models.add_lora(models.load_student_base(r), r)
    args = training_args(seed=0, label_names=["labels"], **r.hparams)
    trainer = llm.trainer.CausalLMDistillationTrainer(student, args, teacher_model=teacher, method="token_kd",
                                                      train_dataset=data, processing_class=tok, kd_loss_fn=fn)
    with pytest.raises(error, match=match):
        trainer.compute_loss(student, dict(_batch(data, tok)))
