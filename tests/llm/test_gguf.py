"""Unit tests for course_utils.llm.gguf: converting a GGUF checkpoint to a plain transformers model (quantization
config stripped, saved, reloaded with the same logits) and converting SmolLM2 once into the course cache, on tiny
Llamas in a temporary course cache (no hub, no assets)."""
from __future__ import annotations

import json

import pytest
import torch

from course_utils.core import cache
from course_utils.llm import gguf, tiny

pytestmark = pytest.mark.usefixtures("single_thread")


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

    monkeypatch.setattr(gguf, "quiet_load", fake_load)
    plain, tokenizer = gguf.convert_gguf(tmp_path, "x.gguf", tmp_path / "out")
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
    (gguf_dir / gguf.SMOLLM2_GGUF).write_bytes(b"not really a gguf")
    (gguf_dir / ".complete").write_text("ok")
    calls = []

    def fake_convert(d, f, target=None):
        calls.append(f)
        return tiny.tiny_llama(tok, layers=2), tok

    monkeypatch.setattr(gguf, "convert_gguf", fake_convert)
    first = gguf.smollm2_path(verbose=False)
    second = gguf.smollm2_path(verbose=False)
    assert first == second == cache.model_dir(gguf.SMOLLM2_NAME, "small") and calls == [gguf.SMOLLM2_GGUF]
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    (gguf_dir / gguf.SMOLLM2_GGUF).write_bytes(b"a different file")  # the fingerprint includes the size
    gguf.smollm2_path(verbose=False)
    assert len(calls) == 2
