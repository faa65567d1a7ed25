"""Unit tests for course_utils.llm.recipe: the small and gpu recipes (models, LoRA targets, description, the
fingerprint) and the layer helpers."""
from __future__ import annotations

import pytest

from course_utils.llm import recipe

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------------------ recipes
def test_recipes_small_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe, "smollm2_path", lambda verbose=True: tmp_path / "smol")
    small = recipe.llm_recipe("small")
    assert small.drop_layers == tuple(range(6, 21)) and small.shared_vocabulary and not small.teacher_4bit
    assert set(small.lora_targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    gpu = recipe.llm_recipe("gpu")
    assert gpu.teacher.startswith("mistralai/Mistral-7B") and gpu.student == "microsoft/phi-2"
    assert gpu.teacher_4bit and not gpu.shared_vocabulary and gpu.data == "dolly" and gpu.student_prompt == "phi"
    assert set(gpu.lora_targets) == {"q_proj", "k_proj", "v_proj", "dense"}
    assert "4-bit NF4" in gpu.describe() and "layers 6–20 removed" in small.describe()
    assert recipe.llm_recipe("gpu", n_train=5).n_train == 5
    with pytest.raises(ValueError, match="unknown profile"):
        recipe.llm_recipe("tpu")
    # cache paths differ between machines: the fingerprint keeps the directory name only
    assert small.fingerprint()["teacher"] == "smol"


def test_layer_helpers():
    assert recipe.contiguous_block(30, 6, 21) == tuple(range(6, 21))
    assert recipe.odd_layers(6) == (1, 3, 5)
    with pytest.raises(ValueError):
        recipe.contiguous_block(10, 5, 11)
