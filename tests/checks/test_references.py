"""The course's reference implementations pass the checkers they stand in for.

When a learner's function fails its check, ``yours_or_reference`` hands the notebook the library's version instead;
it must be the right answer by the checker's own standard.
"""
from __future__ import annotations

import pytest

from course_utils import checks
from course_utils.kd import losses

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("check, reference", [
    (checks.check_stable_softmax, losses.temperature_softmax),
    (checks.check_entropy, losses.entropy),
    (checks.check_soft_target_loss, losses.soft_target_loss),
    (checks.check_kd_gradient, losses.soft_target_gradient),
], ids=lambda x: getattr(x, "__name__", ""))
def test_library_functions_pass_the_checks_they_replace(check, reference, capsys):
    assert check(reference) is True
    assert capsys.readouterr().out.startswith("✔")


def test_the_library_layer_copy_passes_notebook_03s_check():
    # (notebook 03's other reference, DistillationTrainer, keeps more state than the exercise's __init__ sets, which
    # is all check_kd_compute_loss provides; the notebook shows instead that it trains the same student as yours)
    pytest.importorskip("transformers")
    from course_utils.text import bert

    assert checks.check_layer_copy_init(bert.init_student_from_teacher) is True
