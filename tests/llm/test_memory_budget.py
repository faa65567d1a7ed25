"""Unit tests for course_utils.llm.memory_budget: the GPU budget estimator against the measured §7 figures, the
T4/A100 verdicts, how its components scale, its input checks, and GPU detection without CUDA."""
from __future__ import annotations

import pytest
import torch

from course_utils.llm import memory_budget


# ------------------------------------------------------------------------------------------------ estimator
def test_estimator_matches_measured_reference():
    rows = {r["key"]: r for r in memory_budget.reference_comparison()}
    assert set(rows) == set(memory_budget.MEASURED_H100)
    for key in ("teacher_loaded", "teacher_forward"):  # first principles: within 7 %
        assert abs(rows[key]["error_pct"]) <= 7, rows[key]
    for key in ("both_resident", "step_ce", "step_ce_ckpt", "step_uld", "step_uld_ckpt"):  # fitted rows
        assert abs(rows[key]["error_pct"]) <= 2, rows[key]


def test_t4_verdicts_follow_the_course_design():
    """§7: on a T4 the single-phase recipe (teacher resident, batch 4 × 512) does not fit without gradient
    checkpointing and barely with it; two-phase sequence-level KD fits comfortably."""
    uld = memory_budget.estimate_for(method="uld", batch_size=4)
    uld_ckpt = memory_budget.estimate_for(method="uld", batch_size=4, gradient_checkpointing=True)
    seq_ckpt = memory_budget.estimate_for(method="sequence", batch_size=4, gradient_checkpointing=True)
    assert not uld.fits("T4") and uld_ckpt.allocated < memory_budget.GPUS["T4"].total_gib < uld_ckpt.total
    assert seq_ckpt.fits("T4", headroom_gib=5.0) and 6.5 < seq_ckpt.allocated < 8.5
    assert seq_ckpt.peak_phase.startswith("train") and seq_ckpt.teacher_weights == 0.0
    rec = memory_budget.recommend("T4", method="uld", effective_batch_size=4)
    assert rec.fits and rec.gradient_checkpointing and rec.batch_size * rec.grad_accum_steps >= 4
    assert memory_budget.recommend("A100-80GB", method="uld").gradient_checkpointing is False
    assert "fits" in uld_ckpt.table("A100-40GB") and "does NOT fit" in uld.table("T4")


def test_estimator_components_scale_as_expected():
    a = memory_budget.estimate_for(method="ce", batch_size=2)
    b = memory_budget.estimate_for(method="ce", batch_size=4)
    assert b.activations == pytest.approx(2 * a.activations) and b.student_weights == a.student_weights
    assert memory_budget.estimate_for(method="ce", gradient_checkpointing=True).activations < b.activations / 5
    assert memory_budget.teacher_footprint_gib(bits=4) < memory_budget.teacher_footprint_gib(bits=8) < memory_budget.teacher_footprint_gib(bits=16)


def test_estimator_validation():
    with pytest.raises(ValueError, match="method"):
        memory_budget.estimate_for(method="magic")
    with pytest.raises(ValueError, match="shared vocabulary"):
        memory_budget.estimate_for(method="token_kd")  # Mistral 32 000 vs Phi-2 51 200
    with pytest.raises(ValueError, match="batch_size"):
        memory_budget.estimate_training_memory(1, 1, 0, 0, 1, 10, 4, 1)
    with pytest.raises(ValueError, match="teacher_bits"):
        memory_budget.estimate_training_memory(1, 1, 0, 1, 1, 10, 4, 1, teacher_bits=3)
    with pytest.raises(ValueError, match="GPU preset"):
        memory_budget.estimate_for(method="ce").fits("V100")
    # same vocabulary: token-level KD is estimable, and the chunked loss needs less than the naive one
    naive = memory_budget.estimate_for(memory_budget.PHI_2, memory_budget.PHI_2, method="token_kd", teacher_bits=16)
    chunked = memory_budget.estimate_for(memory_budget.PHI_2, memory_budget.PHI_2, method="token_kd_chunked", teacher_bits=16)
    assert chunked.allocated < naive.allocated


def test_detect_gpu_without_cuda():

    if not torch.cuda.is_available():
        assert memory_budget.detect_gpu() is None
