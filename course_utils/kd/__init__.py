"""``course_utils.kd``: The distillation losses, pure functions of tensors: no training loops, no cache, no data.

Modules:

- ``losses``     – temperature softmax, KL directions, the soft-target loss and the combined ``alpha_kd`` loss (notebooks 01–03)
- ``features``   – hint and attention-map losses, layer mapping, linear CKA (notebook 04)
- ``llm_losses`` – causal-LM KD that fits in memory (chunked, top-k), generalized JSD, ULD across tokenizers (notebook 05)
- ``ensembles``  – soft targets from several teachers, the mutual-learning pair loss (notebook 07)
"""

__all__ = ['losses', 'features', 'llm_losses', 'ensembles']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
