"""course_utils: the small, tested library behind the knowledge-distillation course.

Subpackages, by layer (a module imports only from its own layer's lower modules or from lower layers; the three
tracks never import each other; see CONTRIBUTING.md for the diagram):

- ``core``        – profiles, ``setup()``, offline assets, the model cache, ``transformers`` helpers.
- ``kd``          – the distillation losses: logits, features, language models, ensembles.
- ``evaluation``  – metrics, calibration, bootstrap intervals, speed, size and memory, text metrics, the harness.
- ``training``    – ``DistillationTrainer`` and the small plain-PyTorch loops.
- ``text``        – the BERT track (notebooks 03, 04): sentiment data, BERT students, feature distillation, recipes.
- ``vision``      – the image track (notebooks 01, 02, 04's CNNs, 07): digits, Fashion-MNIST, multi-teacher strategies.
- ``llm``         – the language-model track (notebooks 05, 08): recipe, loading, pruning, LoRA, data, trainer, evaluation,
  on-policy distillation.
- ``checks``      – the exercise checkers that print ✔ or a specific diagnosis, one module per notebook.
- ``nbtool``      – turns ``solutions/`` into exercise ``notebooks/`` (``python -m course_utils.nbtool``).

Conventions used everywhere in the course (code names in brackets):

- student logits z (``student_logits``), teacher logits v (``teacher_logits``), temperature T (``temperature``);
- q = softmax(z / T) is the student distribution, p = softmax(v / T) the teacher's;
- the KD term is the *forward* KL, KL(p ‖ q) = Σ p log(p / q), scaled by T², averaged over distributions;
- ``alpha_kd`` weights the KD term: loss = (1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q).
"""
from __future__ import annotations

from ._lazy import lazy_submodules

# ``course_utils.setup()`` is the notebooks' first call (nbtool.SETUP_CELL), so it is importable from the package
# itself. Importing this package must stay cheap and must not import transformers/datasets: ``setup()`` has to set
# the offline environment variables before those libraries are first imported.
from .core.environment import setup

__all__ = ["setup", "core", "kd", "evaluation", "training", "text", "vision", "llm", "checks", "nbtool"]
__version__ = "0.1.0"

__getattr__ = lazy_submodules(__name__, __all__[1:])  # ``course_utils.kd`` works without an explicit import
