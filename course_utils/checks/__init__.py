"""Exercise checkers: each ``check_*`` runs the learner's function, then prints "✔ …" and returns ``True``, or
prints "✘ <specific diagnosis and how to fix it>" and raises :class:`CheckFailed` (an ``AssertionError``).

Usage in a notebook's check cell::

    course_utils.checks.check_stable_softmax(stable_softmax)

An unsolved exercise (its body still raises ``NotImplementedError("<hint>")``) fails with
"✘ `stable_softmax` is not implemented yet — <hint>". Passing anything but a function raises ``TypeError``.

Notebooks 01–02 (:mod:`.basics`): ``check_stable_softmax``, ``check_entropy``, ``check_soft_target_loss``,
``check_kd_gradient``, ``check_distillation_loss``.

Notebook 03 (:mod:`.bert`): ``check_kd_compute_loss`` (the KD ``compute_loss`` of a ``Trainer`` subclass; pass the
class), ``check_layer_copy_init`` (DistilBERT-style ``init_student(teacher, layers)``). They build tiny random BERT
models, so they import ``transformers`` when first called.
"""
from ._core import CheckFailed
from .basics import (
    check_distillation_loss,
    check_entropy,
    check_kd_gradient,
    check_soft_target_loss,
    check_stable_softmax,
)
from .bert import check_kd_compute_loss, check_layer_copy_init
from .strategies import check_ensemble_soft_targets, check_mutual_learning_losses
from .features import check_hint_loss, check_layer_mapping
from .llm import check_causal_kd_loss, check_rouge_l, check_sft_example
from .evaluation import check_expected_calibration_error, check_latency_benchmark
