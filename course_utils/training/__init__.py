"""``course_utils.training``: Training with distillation, independent of any task: uses ``kd`` and ``evaluation``, never the cache.

Modules:

- ``distillation_trainer`` – ``DistillationTrainer`` (a ``transformers.Trainer`` for KD) and its set-up checks
- ``loops``                – plain-PyTorch loops: classifier with KD, FitNets stage 1, logits and accuracy of a torch model
"""

__all__ = ['distillation_trainer', 'loops']

from .._lazy import lazy_submodules

__getattr__ = lazy_submodules(__name__, __all__)
