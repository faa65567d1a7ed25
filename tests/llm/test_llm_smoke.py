"""The llm track's stand-ins for the gpu profile's smoke run (KD_SMOKE=1): tiny Mistral (4-bit through bitsandbytes)
and Phi-2 of the real classes on the real tokenizers, dolly's schema, the gpu recipe at stand-in size."""
from __future__ import annotations

import dataclasses

import pytest

from course_utils.llm import data, memory_budget, models, recipe, tiny


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("KD_SMOKE", "1")


@pytest.fixture
def no_smoke(monkeypatch):
    monkeypatch.delenv("KD_SMOKE", raising=False)


def test_stand_in_dolly_has_dolly_schema():
    ds = data.smoke_dolly(12)
    assert ds.column_names == ["instruction", "context", "response", "category"] and len(ds) == 12
    assert set(ds["category"]) == set(data.DOLLY_CATEGORIES)
    assert all(isinstance(v, str) for col in ds.column_names for v in ds[col])
    assert any(ds["context"]) and not all(ds["context"])


@pytest.mark.parametrize("n_rows", [1, 0, 2.0, True])
def test_stand_in_dolly_rejects_bad_sizes(n_rows):
    with pytest.raises(ValueError, match="n_rows"):
        data.smoke_dolly(n_rows)


def test_dolly_prompts_read_the_stand_in_in_the_smoke_run(smoke):
    prompts = data.dolly_prompts(6, 2)
    assert len(prompts["train"]) == 6 and len(prompts["heldout"]) == 2
    assert set(prompts["train"].column_names) == {"instruction", "context", "kind"}


def test_save_gpu_standins_rejects_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        tiny.save_gpu_standins(tmp_path / "missing", None, None)


def test_resolve_is_the_identity_outside_the_smoke_run(no_smoke):
    assert models.resolve(recipe.GPU_TEACHER) == recipe.GPU_TEACHER
    assert models.resolve("/some/path") == "/some/path"
    assert memory_budget.detect_gpu() is None or memory_budget.detect_gpu() != memory_budget.GPUS["T4"]


def test_gpu_recipe_outside_the_smoke_run(no_smoke):
    r = recipe.llm_recipe("gpu")
    assert (r.n_train, r.n_heldout, r.max_new_tokens) == (1000, 100, 128) and r.hparams == recipe.GPU_HPARAMS
    assert recipe.eval_every(r) == 50


def test_smoke_recipe_changes_sizes_only(smoke, monkeypatch):
    r = recipe.llm_recipe("gpu")
    monkeypatch.delenv("KD_SMOKE")
    full = recipe.llm_recipe("gpu")
    changed = {f.name for f in dataclasses.fields(r) if getattr(r, f.name) != getattr(full, f.name)}
    assert changed == set(recipe.SMOKE_SIZES) | {"hparams"}
    assert r.hparams["max_steps"] == 2 and r.hparams["learning_rate"] == full.hparams["learning_rate"]
    monkeypatch.setenv("KD_SMOKE", "1")
    assert recipe.eval_every(r) == 1


def test_smoke_run_detects_a_t4(smoke):
    assert memory_budget.detect_gpu() == memory_budget.GPUS["T4"]


def test_smoke_models_are_the_real_classes_on_the_real_tokenizers(smoke):
    import torch
    from transformers import MistralForCausalLM, PhiForCausalLM

    r = recipe.llm_recipe("gpu")
    teacher_tok, student_tok = models.load_lm_tokenizer(r.teacher), models.load_lm_tokenizer(r.student)
    assert len(teacher_tok) == 32_000 and len(student_tok) == 50_257
    assert teacher_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<s>[INST]")
    teacher = models.load_lm_teacher(r)
    assert isinstance(teacher, MistralForCausalLM)
    assert type(teacher.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    student = models.load_student_base(r)
    assert isinstance(student, PhiForCausalLM)
    assert models.vocabulary_size(student) == tiny.PHI_2_PADDED_VOCAB > len(student_tok)
    peft_model = models.add_lora(student, r)
    adapted = {name.split(".lora_A.")[0].rsplit(".", 1)[-1] for name, _ in peft_model.named_parameters()
               if ".lora_A." in name}
    assert adapted == set(recipe.PHI_LORA_TARGETS)
    ids = torch.tensor([teacher_tok("Bees make honey.").input_ids])
    with torch.inference_mode():
        assert teacher(ids).logits.shape == (1, ids.shape[1], 32_000)


def test_add_lora_rejects_a_target_that_names_no_module():
    tok = tiny.toy_char_tokenizer()
    r = dataclasses.replace(recipe.llm_recipe("gpu"), lora_targets=("qproj", "k_proj", "v_proj", "dense"))
    with pytest.raises(ValueError, match=r"\['qproj'\] name no module of PhiForCausalLM.*'q_proj'"):
        models.add_lora(tiny.tiny_phi(tok), r)


# ------------------------------------------------------------------------------ notebook 08's SmolLM2 pair
def test_smollm2_tokenizer_is_the_real_one():
    from course_utils.llm import gguf

    tok = gguf.smollm2_tokenizer()
    assert len(tok) == 49_152 and tok.eos_token == tok.pad_token == "<|im_end|>"
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                               add_generation_prompt=True)


def test_save_smollm2_standins_rejects_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        tiny.save_smollm2_standins(tmp_path / "missing", None)


def test_smoke_lm_standins_names_its_pairs():
    with pytest.raises(ValueError, match="distillation"):
        models.smoke_lm_standins("mistral")


@pytest.fixture
def smoke_cache(tmp_path, monkeypatch):
    """A course cache in ``tmp_path`` that links the real offline assets (the stand-ins are built from them) and
    starts with no models, so a test's cached teacher responses never reach the learner's cache."""
    from course_utils.core import assets

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "assets").symlink_to(assets.cache_dir() / "assets", target_is_directory=True)
    monkeypatch.setenv("KD_COURSE_CACHE", str(cache))
    return cache


def test_on_policy_smoke_pair_is_smollm2_sized_down(smoke, smoke_cache):
    import torch
    from transformers import LlamaForCausalLM

    from course_utils.llm import data, on_policy

    r = on_policy.on_policy_recipe("gpu")
    assert (r.teacher, r.student) == (recipe.ON_POLICY_GPU_TEACHER, recipe.ON_POLICY_GPU_STUDENT)
    assert models.resolve(r.teacher) != r.teacher and models.resolve(r.student) != r.student
    tok, teacher, student = models.load_lm_tokenizer(r.student), models.load_lm_teacher(r), models.load_student_base(r)
    assert len(tok) == 49_152 and isinstance(teacher, LlamaForCausalLM) and isinstance(student, LlamaForCausalLM)
    assert models.vocabulary_size(teacher) == models.vocabulary_size(student) == len(tok)   # one vocabulary
    assert not any(p.requires_grad for p in teacher.parameters())
    peft_model = models.add_lora(student, r)
    adapted = {name.split(".lora_A.")[0].rsplit(".", 1)[-1] for name, _ in peft_model.named_parameters()
               if ".lora_A." in name}
    assert adapted == set(recipe.LLAMA_LORA_TARGETS)
    # the stand-in teacher writes answers that end and pass the filter: notebook 08 needs 4 prompts per step
    generated = data.teacher_responses(r, teacher, tok, data.instruction_prompts(r))
    kept, _ = data.filter_responses(generated["train"])
    assert len(kept) >= 4 and all(rec["finished"] for rec in kept)
    assert list((smoke_cache / "models").iterdir()) == [smoke_cache / "models" / "gpu-smoke"]
    ids = torch.tensor([tok("Bees make honey.").input_ids])
    with torch.inference_mode():
        assert teacher(ids).logits.shape == (1, ids.shape[1], 49_152)
