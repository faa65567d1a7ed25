"""``course_utils.llm``: The language-model track (notebooks 05 and 08, and 05's students in 06). Never imports ``text`` or ``vision``.

Inside, each module imports only those listed before it; ``pipeline`` (cache-or-train) sits on top.

Modules:

- ``gguf``          – SmolLM2 from its packaged GGUF file, converted to fp32 once
- ``recipe``        – ``LLMRecipe`` per profile (imports only ``gguf``), notebook 05's step counts
- ``models``        – tokenizers, fp32 and 4-bit loading, vocabulary size, layer pruning, LoRA
- ``memory_budget`` – GPU memory estimates for a distillation step and what fits on a T4 / A100
- ``data``          – instruction prompts, the teacher's responses (cached), SFT examples, the collator
- ``trainer``       – ``CausalLMDistillationTrainer`` (SFT, token KD, top-k KD) and the held-out curve
- ``lm_eval``       – perplexity and KD loss on the teacher's responses, generations, side-by-side tables
- ``pipeline``      – cache-or-train: top-k logits, the distilled LoRA students, ``distilled_students()``
- ``on_policy``     – notebook 08: student rollouts, the teacher's scores, GKD / sampled-token losses, the loop
- ``tiny``          – tiny random models and toy tokenizers of the real architectures, for tests and checkers
"""

__all__ = ['gguf', 'recipe', 'models', 'memory_budget', 'data', 'trainer', 'lm_eval', 'pipeline', 'on_policy', 'tiny']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
