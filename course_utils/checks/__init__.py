"""Exercise checkers: each ``check_*`` runs the learner's function, then prints "✔ …" and returns ``True``, or
prints "✘ <specific diagnosis and how to fix it>" and returns ``False`` — or raises :class:`CheckFailed` (an
``AssertionError``) when ``KD_COURSE_STRICT_CHECKS=1``, as in the test suite and when grading.

Usage in a notebook's check cell::

    course_utils.checks.check_stable_softmax(stable_softmax)

An unsolved exercise (its body still raises ``NotImplementedError("<hint>")``) fails with
"✘ `stable_softmax` is not implemented yet — <hint>". Passing anything but a function raises ``TypeError``.

One module per notebook; this package's ``__all__`` is the learners' API (every checker, by name):

- ``basics``      – notebooks 01–02: ``check_stable_softmax``, ``check_entropy``, ``check_soft_target_loss``,
  ``check_kd_gradient``, ``check_distillation_loss``.
- ``bert``        – notebook 03: ``check_kd_compute_loss`` (the KD ``compute_loss`` of a ``Trainer`` subclass; pass
  the class), ``check_layer_copy_init`` (DistilBERT-style ``init_student(teacher, layers)``). They build tiny
  random BERT models, so they import ``transformers`` when first called.
- ``features``    – notebook 04: ``check_hint_loss``, ``check_layer_mapping``.
- ``llm``         – notebook 05: ``check_sft_example``, ``check_causal_kd_loss``, ``check_rouge_l``.
- ``evaluation``  – notebook 06: ``check_expected_calibration_error``, ``check_latency_benchmark``.
- ``strategies``  – notebook 07: ``check_ensemble_soft_targets``, ``check_mutual_learning_losses``.
- ``on_policy``   – notebook 08: ``check_on_policy_loss``, ``check_score_tokens``.

- ``yours_or_reference(yours, reference, check=check_x)`` – what the later cells of a notebook (its training runs
  above all) use: the learner's implementation once it passes its checker, otherwise the course's reference (one
  printed line says which), so that skipping an exercise never stops the notebook.
- ``hints``       – ``hint("soft_target_loss")``: hints in steps for every exercise (the idea, then the tools, then
  the trap), never the code.

``_core`` holds what they share: running the learner's code, known-mistake variants, the ✔/✘ messages.
"""
from ._core import CheckFailed, yours_or_reference
from .basics import (
    check_distillation_loss,
    check_entropy,
    check_kd_gradient,
    check_soft_target_loss,
    check_stable_softmax,
)
from .bert import check_kd_compute_loss, check_layer_copy_init
from .evaluation import check_expected_calibration_error, check_latency_benchmark
from .features import check_hint_loss, check_layer_mapping
from .hints import HINTS, hint
from .llm import check_causal_kd_loss, check_rouge_l, check_sft_example
from .on_policy import check_on_policy_loss, check_score_tokens
from .strategies import check_ensemble_soft_targets, check_mutual_learning_losses

__all__ = ["CheckFailed", "yours_or_reference", "hint", "HINTS", "check_stable_softmax", "check_entropy", "check_soft_target_loss", "check_kd_gradient",
           "check_distillation_loss", "check_kd_compute_loss", "check_layer_copy_init", "check_hint_loss",
           "check_layer_mapping", "check_sft_example", "check_causal_kd_loss", "check_rouge_l",
           "check_expected_calibration_error", "check_latency_benchmark", "check_ensemble_soft_targets",
           "check_mutual_learning_losses", "check_on_policy_loss", "check_score_tokens"]
