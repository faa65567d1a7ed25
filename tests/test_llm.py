"""Unit tests for course_utils.llm (recipes, GGUF conversion, layer pruning, LoRA, 4-bit loading) and
course_utils.llm_data (instruction set, dolly, prompt formats, batched generation, filtering, SFT examples).

Everything runs on tiny Llama / Mistral / Phi models from :mod:`course_utils.llm_tiny` in a temporary course cache:
no hub, no assets.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from course_utils import cache, llm, llm_data
from course_utils import llm_tiny as tiny

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def course_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KD_COURSE_RETRAIN", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def llama_pair():
    tok = tiny.llama_tokenizer()
    return tiny.tiny_llama(tok, layers=4), tok


# ------------------------------------------------------------------------------------------------------ recipes
def test_recipes_small_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(llm, "smollm2_path", lambda verbose=True: tmp_path / "smol")
    small = llm.recipe("small")
    assert small.drop_layers == tuple(range(6, 21)) and small.shared_vocabulary and not small.teacher_4bit
    assert set(small.lora_targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    gpu = llm.recipe("gpu")
    assert gpu.teacher.startswith("mistralai/Mistral-7B") and gpu.student == "microsoft/phi-2"
    assert gpu.teacher_4bit and not gpu.shared_vocabulary and gpu.data == "dolly" and gpu.student_prompt == "phi"
    assert set(gpu.lora_targets) == {"q_proj", "k_proj", "v_proj", "dense"}
    assert "4-bit NF4" in gpu.describe() and "layers 6–20 removed" in small.describe()
    assert llm.recipe("gpu", n_train=5).n_train == 5
    with pytest.raises(ValueError, match="unknown profile"):
        llm.recipe("tpu")
    # cache paths differ between machines: the fingerprint keeps the directory name only
    assert small.fingerprint()["teacher"] == "smol"


def test_layer_helpers():
    assert llm.contiguous_block(30, 6, 21) == tuple(range(6, 21))
    assert llm.every_other(6) == (1, 3, 5)
    with pytest.raises(ValueError):
        llm.contiguous_block(10, 5, 11)


# ------------------------------------------------------------------------------------------------------ GGUF
def test_convert_gguf_strips_quantization_config_and_saves(tmp_path, monkeypatch, llama_pair):
    """The GGUF path is replaced by a tiny model whose config carries a GGUF quantization_config, as transformers'
    GGUF loader returns it; the converted copy must save, reload and compute the same logits."""
    model, tok = llama_pair
    gguf_like = tiny.tiny_llama(tok, layers=2, seed=3)
    gguf_like.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    calls = []

    def fake_load(cls, name, **kwargs):
        calls.append(kwargs.get("gguf_file"))
        return tok if "Tokenizer" in cls.__name__ else gguf_like

    import course_utils.models as models

    monkeypatch.setattr(models, "_quiet_load", fake_load)
    plain, tokenizer = llm.convert_gguf(tmp_path, "x.gguf", tmp_path / "out")
    assert calls == ["x.gguf", "x.gguf"]
    assert getattr(plain.config, "quantization_config", None) is None
    assert "quantization_config" not in json.loads((tmp_path / "out" / "config.json").read_text())
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = torch.tensor([[3, 8, 9, 10]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, gguf_like(ids).logits, atol=1e-6)
    assert getattr(reloaded.config, "quantization_config", None) is None
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # still tied


def test_smollm2_path_converts_once(course_cache, monkeypatch, tmp_path, llama_pair):
    model, tok = llama_pair
    gguf_dir = course_cache / "assets" / "smollm2-gguf"
    gguf_dir.mkdir(parents=True)
    (gguf_dir / llm.SMOLLM2_GGUF).write_bytes(b"not really a gguf")
    (gguf_dir / ".complete").write_text("ok")
    calls = []

    def fake_convert(d, f, target=None):
        calls.append(f)
        return tiny.tiny_llama(tok, layers=2), tok

    monkeypatch.setattr(llm, "convert_gguf", fake_convert)
    first = llm.smollm2_path(verbose=False)
    second = llm.smollm2_path(verbose=False)
    assert first == second == cache.model_dir(llm.SMOLLM2_NAME, "small") and calls == [llm.SMOLLM2_GGUF]
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    (gguf_dir / llm.SMOLLM2_GGUF).write_bytes(b"a different file")  # the fingerprint includes the size
    llm.smollm2_path(verbose=False)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------------ pruning
def test_prune_layers_copies_listed_layers(llama_pair):
    model, tok = llama_pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student = llm.prune_layers(model, [0, 3])
    assert student.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert len(llm.decoder_layers(model)) == 4
    sd = student.state_dict()
    assert torch.equal(sd["model.layers.1.self_attn.q_proj.weight"], before["model.layers.3.self_attn.q_proj.weight"])
    assert torch.equal(sd["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(sd["model.norm.weight"], before["model.norm.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # teacher intact
    t_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not any(p.data_ptr() in t_ptrs for p in student.parameters())  # nothing shared
    assert [layer.self_attn.layer_idx for layer in llm.decoder_layers(student)] == [0, 1]
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()


def test_pruned_model_equals_manual_forward_and_generates_with_cache(llama_pair):
    model, tok = llama_pair
    keep = [2, 0]  # any order
    student = llm.prune_layers(model, keep)
    ids = torch.tensor([[5, 9, 12, 7, 3]])
    with torch.no_grad():
        # manual forward through the chosen teacher layers
        inner = model.model
        h = inner.embed_tokens(ids)
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        emb = inner.rotary_emb(h, pos)
        mask = torch.full((5, 5), float("-inf")).triu(1)[None, None]
        for i in keep:
            out = inner.layers[i](h, attention_mask=mask, position_ids=pos, position_embeddings=emb)
            h = out[0] if isinstance(out, tuple) else out
        manual = model.lm_head(inner.norm(h))
        assert torch.allclose(student(ids).logits, manual, atol=1e-5)
        # greedy generation with the KV cache equals greedy decoding without it
        gen = student.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6,
                               pad_token_id=tok.pad_token_id)
        seq = ids
        for _ in range(6):
            nxt = student(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
        assert torch.equal(gen, seq)


@pytest.mark.parametrize("keep, match", [([], "at least one"), ([0, 4], "do not exist"), ([1, 1], "twice")])
def test_prune_layers_errors(llama_pair, keep, match):
    with pytest.raises(ValueError, match=match):
        llm.prune_layers(llama_pair[0], keep)


def test_prune_layers_rejects_models_without_decoder_layers():
    with pytest.raises(ValueError, match="model.layers"):
        llm.prune_layers(torch.nn.Linear(2, 2), [0])


# ------------------------------------------------------------------------------------------------------ LoRA
def test_lora_starts_as_base_and_merges(llama_pair, monkeypatch, tmp_path):
    model, tok = llama_pair
    monkeypatch.setattr(llm, "smollm2_path", lambda verbose=True: tmp_path)
    r = llm.recipe("small", drop_layers=())
    base = llm.prune_layers(model, [0, 1, 2, 3])
    ids = torch.tensor([[4, 9, 11, 6]])
    with torch.no_grad():
        ref = base(ids).logits.clone()
    peft_model = llm.add_lora(base, r, seed=0)
    n_lora = llm.count_parameters(peft_model, trainable_only=True)
    # r × (in + out) per targeted projection, 4 layers
    cfg = model.config
    kv = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    per_layer = 16 * ((32 + 32) + (32 + kv) * 2 + (32 + 32) + 3 * (32 + 64))
    assert n_lora == 4 * per_layer
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, ref)  # B = 0: starts exactly at the base model
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        adapted = peft_model(ids).logits.clone()
    assert not torch.allclose(adapted, ref)
    merged = llm.merge_lora(peft_model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)


def test_load_4bit_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    tok = tiny.mistral_tokenizer()
    model = tiny.tiny_mistral(tok)
    path = tiny.save(model, tok, tmp_path / "mistral")
    q = llm.load_4bit(path, compute_dtype="float32")
    kinds = {type(m).__name__ for m in q.modules()}
    assert "Linear4bit" in kinds
    assert llm.memory_footprint_mb(q) < llm.memory_footprint_mb(model)
    ids = torch.tensor([[1, 8, 9, 10]])
    with torch.no_grad():
        a, b = q(ids).logits, model(ids).logits
    assert a.shape == b.shape and torch.isfinite(a).all()
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9  # 4-bit ≈ the fp32 model


def test_tiny_4bit_layers_survive_the_cpu_repacking(tmp_path):
    """bitsandbytes repacks NF4 weights for its CPU kernel only on CPUs with AVX512-BF16; call that repacking
    (plain PyTorch) on every quantized layer so narrow tiny models fail on any CPU, not only on those."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    tok = tiny.mistral_tokenizer()
    q = llm.load_4bit(tiny.save(tiny.tiny_mistral(tok), tok, tmp_path / "mistral"), compute_dtype="float32")
    layers = [m for m in q.modules() if type(m).__name__ == "Linear4bit"]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of the two decoder layers
    for layer in layers:
        state = copy.deepcopy(layer.weight.quant_state)
        packed, state = _convert_weight_packed_for_cpu(layer.weight.data.clone(), state)
        assert packed.shape == (layer.out_features, layer.in_features // 2) and state.packing_format_for_cpu


def test_load_4bit_rejects_layers_the_cpu_kernel_cannot_pack(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import MistralConfig, MistralForCausalLM

    tok = tiny.mistral_tokenizer()
    narrow = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match="multiple of the quantization block"):
        llm.load_4bit(tiny.save(narrow, tok, tmp_path / "narrow"), compute_dtype="float32")


def test_vocabulary_size_uses_the_head(tmp_path):
    tok = tiny.char_tokenizer()
    phi = tiny.tiny_phi(tok, padded_vocab=96)
    assert llm.vocabulary_size(phi) == 96 > len(tok)


# --------------------------------------------------------------------------------------------- instruction set
def test_instruction_set_is_deterministic_and_heldout_is_new():
    a, b = llm_data.instruction_set(100, 30, seed=0), llm_data.instruction_set(100, 30, seed=0)
    assert list(a["train"]["instruction"]) == list(b["train"]["instruction"])
    assert len(a["train"]) == 100 and len(a["heldout"]) == 30
    train, held = set(a["train"]["instruction"]), set(a["heldout"]["instruction"])
    assert not train & held and len(train) == 100 and len(held) == 30
    kinds = set(a["train"]["kind"])
    assert set(llm_data.TASKS) <= kinds and {"add", "subtract", "compare"} & kinds
    assert list(llm_data.instruction_set(100, 30, seed=1)["train"]["instruction"]) != list(a["train"]["instruction"])
    with pytest.raises(ValueError, match="pairs exist"):
        llm_data.instruction_set(400, 100)
    with pytest.raises(ValueError, match="positive"):
        llm_data.instruction_set(0, 5)


def test_dolly_prompts_drop_human_responses(monkeypatch):
    from datasets import Dataset

    rows = [{"instruction": f"Question {i}?", "context": "Some context." if i % 2 else "",
             "response": "human answer", "category": "open_qa"} for i in range(12)]
    rows.append({"instruction": "x" * 2000, "context": "", "response": "", "category": "long"})
    monkeypatch.setattr(llm_data, "_load_dolly", lambda: Dataset.from_list(rows))
    d = llm_data.dolly_prompts(8, 3, seed=0)
    assert len(d["train"]) == 8 and len(d["heldout"]) == 3
    assert set(d["train"].column_names) == {"instruction", "context", "kind"}
    assert "x" * 2000 not in list(d["train"]["instruction"]) + list(d["heldout"]["instruction"])
    with pytest.raises(ValueError, match="usable rows"):
        llm_data.dolly_prompts(20, 5)


def test_format_prompt_styles():
    tok = tiny.mistral_tokenizer()
    assert llm_data.format_prompt(tok, "Give a fact.", "", "chat") == "<s>[INST] Give a fact. [/INST]"
    assert llm_data.format_prompt(tok, "Q?", "ctx", "phi") == "Instruct: Q?\n\nctx\nOutput:"
    with pytest.raises(ValueError, match="no chat template"):
        llm_data.format_prompt(tiny.char_tokenizer(), "Q?", "", "chat")
    with pytest.raises(ValueError, match="style"):
        llm_data.format_prompt(tok, "Q?", "", "alpaca")


# ------------------------------------------------------------------------------------------------- generation
def test_generate_batched_equals_one_by_one_and_reports_cutoffs(llama_pair):
    model, tok = llama_pair
    prompts = [llm_data.format_prompt(tok, q) for q in ("why is the sky blue ?", "one fact", "write a haiku about tea")]
    batched = llm_data.generate(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [llm_data.generate(model, tok, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single  # left padding + attention mask: batching changes nothing
    for g in batched:
        assert set(g) == {"response", "new_tokens", "finished"} and 1 <= g["new_tokens"] <= 5
    # force EOS right away: finished, empty response
    with torch.no_grad():
        model.lm_head.weight.data[tok.eos_token_id] += 100.0
    try:
        out = llm_data.generate(model, tok, prompts[:1], max_new_tokens=5)
    finally:
        with torch.no_grad():
            model.lm_head.weight.data[tok.eos_token_id] -= 100.0
    assert out == [{"response": "", "new_tokens": 1, "finished": True}]
    with pytest.raises(ValueError, match="max_new_tokens"):
        llm_data.generate(model, tok, prompts, max_new_tokens=0)


def test_cached_json_round_trip(course_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"a": [1, 2]}

    assert llm_data.cached_json("x", {"k": 1}, compute, verbose=False) == ({"a": [1, 2]}, False)
    assert llm_data.cached_json("x", {"k": 1}, compute, verbose=False) == ({"a": [1, 2]}, True)
    llm_data.cached_json("x", {"k": 2}, compute, verbose=False)
    assert len(calls) == 2
    assert json.loads((cache.model_dir("x") / cache.META_FILE).read_text())["fingerprint"] == {"k": 2}


# ------------------------------------------------------------------------------------------------- filtering
def test_filter_responses_counts_every_reason():
    recs = [
        {"response": "Tea is a drink made from leaves.", "finished": True},
        {"response": "", "finished": True},
        {"response": "Bees make honey and they", "finished": False},
        {"response": "a cat a cat a cat a cat a cat a cat a cat", "finished": True},
        {"response": "I'm sorry, but I can't help with that.", "finished": True},
        {"response": "tea is a drink made from leaves", "finished": True},
        {"response": "Tea is a drink made from leaves, friend.", "finished": True},
        {"response": "Rivers flow to the sea.", "finished": True},
    ]
    kept, report = llm_data.filter_responses(recs)
    assert [r["response"] for r in kept] == [recs[0]["response"], recs[7]["response"]]
    counts = report["dropped"].to_dict()
    assert counts == {"empty": 1, "cut off at the token cap": 1, "repetitive": 1, "refusal": 1,
                      "exact duplicate": 1, "near duplicate": 1, "kept": 2}


def test_repetition_and_refusal_helpers():
    assert llm_data.repetition_ratio("one two three four") == 0.0
    assert llm_data.repetition_ratio("la la la la la la") > 0.7
    assert llm_data.is_refusal("As an AI language model, I cannot do that")
    assert not llm_data.is_refusal("The sorry state of the roads")


# ------------------------------------------------------------------------------------------------ SFT examples
def test_sft_example_masks_prompt_and_learns_eos():
    ex = llm_data.sft_example([1, 2, 3], [7, 8], eos_id=9)
    assert ex == {"input_ids": [1, 2, 3, 7, 8, 9], "attention_mask": [1] * 6, "labels": [-100, -100, -100, 7, 8, 9]}
    assert llm_data.sft_example([1, 2], [7, 8, 9], eos_id=0, max_length=4)["labels"] == [-100, -100, 7, 8]
    with pytest.raises(ValueError, match="no room"):
        llm_data.sft_example([1, 2, 3], [4], eos_id=0, max_length=3)


def test_sft_dataset_cross_tokenizer_columns(monkeypatch, tmp_path):
    monkeypatch.setattr(llm, "smollm2_path", lambda verbose=True: tmp_path)
    r = llm.recipe("gpu", max_length=400)
    s_tok, t_tok = tiny.char_tokenizer(), tiny.mistral_tokenizer()
    recs = [{"instruction": "Give one fact about tea.", "context": "", "response": "Tea is hot."}]
    ds = llm_data.sft_dataset(recs, s_tok, r, teacher_tokenizer=t_tok)
    row = ds[0]
    # student: Phi format, character tokens; the response starts after "Output:" with a space
    prompt_len = len(s_tok("Instruct: Give one fact about tea.\nOutput:", add_special_tokens=False)["input_ids"])
    assert row["labels"][:prompt_len] == [-100] * prompt_len
    assert s_tok.decode([t for t in row["labels"] if t != -100]) == " Tea is hot.<|endoftext|>"
    # teacher: its chat template, word tokens: fewer tokens for the same text
    resp_t = [t for t in row["teacher_labels"] if t != -100]
    assert len(resp_t) < len([t for t in row["labels"] if t != -100])
    assert resp_t[-1] == t_tok.eos_token_id and row["teacher_input_ids"][0] == t_tok.bos_token_id
    assert row["teacher_input_ids"].count(t_tok.bos_token_id) == 1  # no second BOS from add_special_tokens


def test_collator_pads_every_column():
    col = llm_data.CausalLMCollator(pad_token_id=0)
    batch = col([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7],
         "teacher_topk_ids": [[1, 2], [3, 4], [5, 6]], "teacher_topk_logits": [[0.5, 0.1]] * 3},
        {"input_ids": [5], "attention_mask": [1], "labels": [5],
         "teacher_topk_ids": [[1, 2]], "teacher_topk_logits": [[0.5, 0.1]]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["teacher_topk_ids"].shape == (2, 3, 2) and batch["teacher_topk_logits"].dtype == torch.float32
