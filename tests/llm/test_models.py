"""Unit tests for course_utils.llm.models: layer pruning, LoRA (starts as the base model, merges), 4-bit loading on
CPU, the vocabulary size, on tiny Llama / Mistral / Phi models from course_utils.llm.tiny (no hub, no assets); and the
real Mistral / GPT-2 tokenizers of the offline assets (skipped when not fetched)."""
from __future__ import annotations

import copy

import pytest
import torch

from course_utils.core import assets
from course_utils.evaluation import size
from course_utils.llm import models, recipe, tiny

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------------------ pruning
def test_prune_layers_copies_listed_layers(llama_pair):
    model, tok = llama_pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student = models.prune_layers(model, [0, 3])
    assert student.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert len(models.decoder_layers(model)) == 4
    sd = student.state_dict()
    assert torch.equal(sd["model.layers.1.self_attn.q_proj.weight"], before["model.layers.3.self_attn.q_proj.weight"])
    assert torch.equal(sd["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(sd["model.norm.weight"], before["model.norm.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # teacher intact
    t_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not any(p.data_ptr() in t_ptrs for p in student.parameters())  # nothing shared
    assert [layer.self_attn.layer_idx for layer in models.decoder_layers(student)] == [0, 1]
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()


def test_pruned_model_equals_manual_forward_and_generates_with_cache(llama_pair):
    model, tok = llama_pair
    keep = [2, 0]  # any order
    student = models.prune_layers(model, keep)
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
        models.prune_layers(llama_pair[0], keep)


def test_prune_layers_rejects_models_without_decoder_layers():
    with pytest.raises(ValueError, match="model.layers"):
        models.prune_layers(torch.nn.Linear(2, 2), [0])


# ------------------------------------------------------------------------------------------------------ LoRA
def test_lora_starts_as_base_and_merges(llama_pair, monkeypatch, tmp_path):
    model, tok = llama_pair
    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path)
    r = recipe.llm_recipe("small", drop_layers=())
    base = models.prune_layers(model, [0, 1, 2, 3])
    ids = torch.tensor([[4, 9, 11, 6]])
    with torch.no_grad():
        ref = base(ids).logits.clone()
    peft_model = models.add_lora(base, r, seed=0)
    n_lora = size.count_parameters(peft_model, trainable_only=True)
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
    merged = models.merge_lora(peft_model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)


def test_load_4bit_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    tok = tiny.toy_mistral_tokenizer()
    model = tiny.tiny_mistral(tok)
    path = tiny.save_model(model, tok, tmp_path / "mistral")
    q = models.load_4bit(path, compute_dtype="float32")
    kinds = {type(m).__name__ for m in q.modules()}
    assert "Linear4bit" in kinds
    assert models.memory_footprint_mb(q) < models.memory_footprint_mb(model)
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

    tok = tiny.toy_mistral_tokenizer()
    q = models.load_4bit(tiny.save_model(tiny.tiny_mistral(tok), tok, tmp_path / "mistral"), compute_dtype="float32")
    layers = [m for m in q.modules() if type(m).__name__ == "Linear4bit"]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of the two decoder layers
    for layer in layers:
        state = copy.deepcopy(layer.weight.quant_state)
        packed, state = _convert_weight_packed_for_cpu(layer.weight.data.clone(), state)
        assert packed.shape == (layer.out_features, layer.in_features // 2) and state.packing_format_for_cpu


def test_load_4bit_rejects_layers_the_cpu_kernel_cannot_pack(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import MistralConfig, MistralForCausalLM

    tok = tiny.toy_mistral_tokenizer()
    narrow = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match="multiple of the quantization block"):
        models.load_4bit(tiny.save_model(narrow, tok, tmp_path / "narrow"), compute_dtype="float32")


def test_vocabulary_size_uses_the_head(tmp_path):
    tok = tiny.toy_char_tokenizer()
    phi = tiny.tiny_phi(tok, padded_vocab=96)
    assert models.vocabulary_size(phi) == 96 > len(tok)


@pytest.mark.skipif(not (assets.is_fetched("mistral-tokenizer") and assets.is_fetched("gpt2-bpe")),
                    reason="offline tokenizer assets not fetched (bash course.sh setup)")
def test_real_tokenizers_split_the_same_text_differently():
    m, g = models.mistral_tokenizer(), models.gpt2_tokenizer()
    assert len(m) == 32_000 and len(g) == 50_257
    text = "Knowledge distillation transfers a teacher's predictions to a smaller student."
    assert m.tokenize(text)[:2] == ["▁Know", "ledge"] and g.tokenize(text)[:2] == ["Know", "ledge"]
    assert len(m.tokenize(text)) != len(g.tokenize(text))
    assert g.decode(g(text)["input_ids"]) == text
