"""Unit tests for course_utils.kd.losses: validation (every failure path) and numerical correctness."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.kd.losses import DistillationLoss, distillation_loss, entropy, kl_divergence, soft_target_gradient, soft_target_loss, temperature_log_softmax, temperature_softmax, validate_alpha_kd, validate_logits, validate_temperature


DOUBLE = torch.float64
# torch.testing.assert_close's defaults: (rtol, atol) per dtype.
TOLERANCE = {torch.float64: (1e-7, 1e-7), torch.float32: (1.3e-6, 1e-5), torch.float16: (1e-3, 1e-5),
             torch.bfloat16: (1.6e-2, 1e-5)}


pytestmark = pytest.mark.usefixtures("single_thread")


def assert_close(actual, expected, rtol=None, atol=None):
    """Like torch.testing.assert_close (same shape, same dtype, its default tolerances) without its ~1 s first import."""
    assert isinstance(actual, torch.Tensor), type(actual)
    if isinstance(expected, torch.Tensor):
        assert expected.dtype == actual.dtype, (actual.dtype, expected.dtype)
    else:
        expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    r, a = TOLERANCE.get(actual.dtype, (0.0, 0.0))
    r, a = (r if rtol is None else rtol), (a if atol is None else atol)
    assert torch.allclose(actual, expected, rtol=r, atol=a), (
        f"not close (rtol={r}, atol={a}): max |difference| = {float((actual - expected).abs().max())}\n"
        f"actual={actual}\nexpected={expected}"
    )


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DOUBLE) * scale


def reference_kd(z: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    """The brief's reference: PyTorch's own kl_div, batchmean, scaled by T²."""
    return F.kl_div(F.log_softmax(z / t, -1), F.softmax(v / t, -1), reduction="batchmean") * t**2


# Every function that takes a (student, teacher) pair, with the extra arguments it needs.
PAIR_FUNCS = {
    "kl_divergence": lambda z, v, **kw: kl_divergence(z, v, **kw),
    "soft_target_loss": lambda z, v, **kw: soft_target_loss(z, v, **kw),
    "distillation_loss": lambda z, v, **kw: distillation_loss(
        z, v, torch.zeros(v.shape[:-1], dtype=torch.long), **kw
    ),
}
TEMPERATURE_FUNCS = {
    **PAIR_FUNCS,
    "temperature_softmax": lambda z, v, **kw: temperature_softmax(z, **kw),
    "temperature_log_softmax": lambda z, v, **kw: temperature_log_softmax(z, **kw),
}


@pytest.fixture(params=sorted(PAIR_FUNCS))
def pair_func(request):
    return PAIR_FUNCS[request.param]


@pytest.fixture(params=sorted(TEMPERATURE_FUNCS))
def temp_func(request):
    return TEMPERATURE_FUNCS[request.param]


# ================================================================================================ temperature
class TestValidateTemperature:
    @pytest.mark.parametrize("good", [1, 2.0, 0.05, np.float32(4.0), np.int64(3), torch.tensor(2.5), torch.tensor([3.0])])
    def test_accepts_positive_finite_numbers(self, good):
        out = validate_temperature(good)
        assert isinstance(out, float)
        assert out == pytest.approx(float(good))

    @pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, float("nan"), float("inf"), -float("inf"), torch.tensor(0.0)])
    def test_rejects_non_positive_nan_inf(self, bad):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            validate_temperature(bad)

    @pytest.mark.parametrize("bad", ["2", None, True, False, [2.0], 1 + 2j, torch.tensor([1.0, 2.0])])
    def test_rejects_non_numbers(self, bad):
        with pytest.raises(TypeError, match="temperature"):
            validate_temperature(bad)

    @pytest.mark.parametrize("bad", [0, -2.0, float("nan"), float("inf")])
    def test_every_function_rejects_bad_values(self, temp_func, bad):
        with pytest.raises(ValueError, match="temperature"):
            temp_func(logits(3, 4), logits(3, 4, seed=1), temperature=bad)

    def test_every_function_rejects_nan_temperature_mentioning_nan(self, temp_func):
        with pytest.raises(ValueError, match="nan"):
            temp_func(logits(3, 4), logits(3, 4, seed=1), temperature=float("nan"))

    @pytest.mark.parametrize("bad", ["2", None, True])
    def test_every_function_rejects_non_numbers(self, temp_func, bad):
        with pytest.raises(TypeError, match="temperature"):
            temp_func(logits(3, 4), logits(3, 4, seed=1), temperature=bad)


# ==================================================================================================== alpha_kd
class TestValidateAlphaKd:
    @pytest.mark.parametrize("good", [0, 0.0, 0.3, 1, 1.0, np.float64(0.5)])
    def test_accepts_unit_interval(self, good):
        assert validate_alpha_kd(good) == pytest.approx(float(good))

    @pytest.mark.parametrize("bad", [-0.01, 1.01, 2, -1, float("nan"), float("inf")])
    def test_rejects_outside_unit_interval(self, bad):
        with pytest.raises(ValueError, match=r"alpha_kd must lie in \[0, 1\]"):
            validate_alpha_kd(bad)

    @pytest.mark.parametrize("bad", ["0.5", None, True, torch.tensor([0.5, 0.5])])
    def test_rejects_non_numbers(self, bad):
        with pytest.raises(TypeError, match="alpha_kd"):
            validate_alpha_kd(bad)

    @pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
    def test_distillation_loss_rejects_bad_alpha(self, bad):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        with pytest.raises(ValueError, match="alpha_kd"):
            distillation_loss(z, v, torch.tensor([0, 1, 2, 3]), alpha_kd=bad)


# ====================================================================================================== logits
class TestValidateLogits:
    def test_accepts_raw_scores(self):
        validate_logits(logits(2, 3, 7))
        validate_logits(logits(5))
        validate_logits(torch.randn(4, 6, dtype=torch.float16))
        validate_logits(torch.randn(4, 6, dtype=torch.bfloat16))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="torch.Tensor"):
            validate_logits([[0.1, 2.0]], name="student_logits")
        with pytest.raises(TypeError, match="student_logits"):
            validate_logits(np.zeros((2, 3)), name="student_logits")

    @pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.uint8, torch.bool])
    def test_integer_tensor_is_type_error(self, dtype):
        with pytest.raises(TypeError, match="floating-point"):
            validate_logits(torch.ones(3, 4, dtype=dtype), name="teacher_logits")

    @pytest.mark.parametrize("shape", [(), (4, 1), (1,)])
    def test_needs_a_class_axis_with_two_classes(self, shape):
        with pytest.raises(ValueError, match="C ≥ 2"):
            validate_logits(torch.zeros(shape))

    def test_empty_batch_is_rejected(self):
        with pytest.raises(ValueError, match="no distribution"):
            validate_logits(torch.zeros(0, 5))
        with pytest.raises(ValueError, match="no distribution"):
            kl_divergence(torch.zeros(2, 0, 5), torch.ones(2, 0, 5))

    @pytest.mark.parametrize("value,kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (-float("inf"), "inf")])
    def test_non_finite_values(self, value, kind):
        x = logits(2, 3, 7)
        x[1, 2, 3] = value
        with pytest.raises(ValueError, match=kind) as err:
            validate_logits(x, name="student_logits")
        assert "student_logits" in str(err.value)
        assert "1 non-finite" in str(err.value)

    def test_nan_and_inf_both_named(self):
        x = logits(4, 5)
        x[0, 0], x[1, 1], x[2, 2] = float("nan"), float("inf"), float("nan")
        with pytest.raises(ValueError, match="NaN/inf") as err:
            validate_logits(x)
        assert "3 non-finite" in str(err.value)

    def test_probabilities_rejected(self):
        p = torch.softmax(logits(4, 6), -1)
        with pytest.raises(ValueError, match="probabilities"):
            validate_logits(p, name="teacher_logits")
        validate_logits(p, check_probabilities=False)  # explicitly allowed

    def test_probabilities_rejected_in_3d(self):
        with pytest.raises(ValueError, match="probabilities"):
            validate_logits(torch.softmax(logits(2, 3, 7), -1))

    def test_logits_in_unit_range_but_not_normalised_pass(self):
        validate_logits(torch.full((3, 4), 0.5))  # rows sum to 2, not probabilities
        validate_logits(torch.tensor([[0.2, 0.3], [0.5, 0.5]]))  # only one row sums to 1


class TestPairValidation:
    """Failure paths shared by kl_divergence, soft_target_loss and distillation_loss."""

    def test_nan_logits(self, pair_func):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        z[0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            pair_func(z, v)

    def test_inf_teacher_logits(self, pair_func):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        v[1, 1, 1] = float("inf")
        with pytest.raises(ValueError, match="inf") as err:
            pair_func(z, v)
        assert "teacher_logits" in str(err.value)

    def test_integer_logits(self, pair_func):
        with pytest.raises(TypeError, match="floating-point"):
            pair_func(torch.ones(2, 3, 7, dtype=torch.long), logits(2, 3, 7))
        with pytest.raises(TypeError, match="teacher_logits"):
            pair_func(logits(2, 3, 7), torch.ones(2, 3, 7, dtype=torch.int32))

    def test_probabilities_as_logits(self, pair_func):
        z, v = logits(4, 6), logits(4, 6, seed=1)
        with pytest.raises(ValueError, match="probabilities") as err:
            pair_func(z, torch.softmax(v, -1))
        assert "teacher_logits" in str(err.value)
        with pytest.raises(ValueError, match="probabilities") as err:
            pair_func(torch.softmax(z, -1), v)
        assert "student_logits" in str(err.value)

    def test_class_size_mismatch_names_both_sizes(self, pair_func):
        with pytest.raises(ValueError) as err:
            pair_func(logits(2, 3, 7), logits(2, 3, 9))
        msg = str(err.value)
        assert "7" in msg and "9" in msg
        assert "mismatch" in msg

    def test_vocab_mismatch_message_uses_the_real_sizes(self):
        # The LLM case of the brief (Mistral 32000 vs Phi-2 51200), kept tiny: only the last axis matters.
        with pytest.raises(ValueError, match=r"32000.*51200"):
            kl_divergence(torch.zeros(1, 1, 32000), torch.zeros(1, 1, 51200))

    def test_leading_shape_mismatch(self, pair_func):
        with pytest.raises(ValueError, match="shape mismatch") as err:
            pair_func(logits(2, 3, 7), logits(2, 4, 7))
        assert "(2, 3, 7)" in str(err.value) and "(2, 4, 7)" in str(err.value)
        with pytest.raises(ValueError, match="shape mismatch"):
            pair_func(logits(6, 7), logits(2, 3, 7))

    def test_non_tensor(self, pair_func):
        with pytest.raises(TypeError, match="torch.Tensor"):
            pair_func([[0.0, 1.0]], logits(1, 2))


# ===================================================================================== temperature softmax
class TestTemperatureSoftmax:
    @pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 8.0])
    def test_equals_softmax_of_scaled_logits(self, t):
        z = logits(4, 10)
        assert_close(temperature_softmax(z, t), torch.softmax(z / t, dim=-1))
        assert_close(temperature_log_softmax(z, t), torch.log_softmax(z / t, dim=-1))

    def test_sums_to_one_along_dim(self):
        z = logits(3, 5, 4)
        assert_close(temperature_softmax(z, 3.0, dim=1).sum(1), torch.ones(3, 4, dtype=DOUBLE))
        assert_close(temperature_softmax(z, 3.0).sum(-1), torch.ones(3, 5, dtype=DOUBLE))

    def test_stable_for_huge_logits(self):
        z = torch.tensor([[1000.0, 999.0, 0.0], [1000.0, 1000.0, 1000.0]])
        p = temperature_softmax(z, 2.0)
        assert torch.isfinite(p).all()
        assert_close(p.sum(-1), torch.ones(2))
        assert_close(p[1], torch.full((3,), 1 / 3))
        e = math.exp(-0.5)
        assert_close(p[0, :2], torch.tensor([1 / (1 + e), e / (1 + e)]), atol=1e-6, rtol=1e-5)
        # the naive formula overflows: exp(1000/2) = inf, inf/inf = NaN
        naive = torch.exp(z / 2.0) / torch.exp(z / 2.0).sum(-1, keepdim=True)
        assert torch.isnan(naive).any()

    def test_higher_temperature_is_softer(self):
        z = logits(1, 10)
        entropies = []
        for t in (0.5, 1.0, 2.0, 4.0, 16.0):
            p = temperature_softmax(z, t)
            entropies.append(float(-(p * p.log()).sum()))
        assert entropies == sorted(entropies)
        assert entropies[-1] < math.log(10)

    def test_log_softmax_finite_where_log_of_softmax_is_minus_inf(self):
        z = torch.tensor([[0.0, -200.0, 200.0]])
        naive = torch.log(torch.softmax(z / 1.0, -1))
        assert torch.isinf(naive).any()
        ls = temperature_log_softmax(z, 1.0)
        assert torch.isfinite(ls).all()
        assert_close(ls, torch.tensor([[-200.0, -400.0, 0.0]]))

    def test_non_tensor_is_type_error(self):
        with pytest.raises(TypeError, match="torch.Tensor"):
            temperature_softmax([1.0, 2.0])
        with pytest.raises(TypeError, match="torch.Tensor"):
            temperature_log_softmax(np.array([1.0, 2.0]))


# ============================================================================================== KL & soft loss
class TestKLDivergence:
    @pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
    def test_forward_matches_definition(self, t):
        z, v = logits(5, 8), logits(5, 8, seed=1)
        p, q = torch.softmax(v / t, -1), torch.softmax(z / t, -1)
        expected = (p * (p.log() - q.log())).sum(-1).mean()
        assert_close(kl_divergence(z, v, t), expected)

    @pytest.mark.parametrize("t", [1.0, 3.0])
    def test_reverse_matches_definition(self, t):
        z, v = logits(5, 8), logits(5, 8, seed=1)
        p, q = torch.softmax(v / t, -1), torch.softmax(z / t, -1)
        expected = (q * (q.log() - p.log())).sum(-1).mean()
        got = kl_divergence(z, v, t, direction="reverse")
        assert_close(got, expected)
        # reverse KL(q‖p) is forward KL with the roles swapped ...
        assert_close(got, kl_divergence(v, z, t))
        # ... and KL is not symmetric
        assert not torch.allclose(got, kl_divergence(z, v, t))

    def test_non_negative_and_zero_for_identical(self):
        for seed in range(10):
            z, v = logits(3, 6, seed=seed), logits(3, 6, seed=seed + 100)
            for direction in ("forward", "reverse"):
                assert kl_divergence(z, v, 2.0, direction=direction) >= 0
                assert kl_divergence(z, z.clone(), 2.0, direction=direction).abs() < 1e-12
        # shifting logits by a constant does not change the distribution
        z = logits(3, 6)
        assert kl_divergence(z, z + 5.0, 1.0).abs() < 1e-12

    def test_unknown_direction(self):
        with pytest.raises(ValueError, match="direction"):
            kl_divergence(logits(2, 3), logits(2, 3, seed=1), direction="backward")

    def test_one_dimensional_input_is_one_distribution(self):
        z, v = logits(6), logits(6, seed=1)
        assert_close(kl_divergence(z, v, 2.0), kl_divergence(z[None], v[None], 2.0))
        assert kl_divergence(z, v).dim() == 0

    def test_3d_averages_over_all_positions(self):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        t = 2.0
        per_position = torch.stack(
            [kl_divergence(z[b, s : s + 1], v[b, s : s + 1], t) for b in range(2) for s in range(3)]
        )
        assert_close(kl_divergence(z, v, t), per_position.mean())
        # equals the flattened 2-D computation (B·S distributions, batchmean)
        assert_close(kl_divergence(z, v, t), kl_divergence(z.reshape(6, 7), v.reshape(6, 7), t))

    def test_mask_excludes_positions(self):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        mask = torch.tensor([[True, True, False], [True, False, False]])
        got = kl_divergence(z, v, 2.0, mask=mask)
        assert_close(got, kl_divergence(z[mask], v[mask], 2.0))
        # garbage (even huge) logits in masked-out positions do not matter
        z2 = z.clone()
        z2[~mask] = 1e4
        assert_close(kl_divergence(z2, v, 2.0, mask=mask), got)
        # an integer 0/1 mask works like a boolean one
        assert_close(kl_divergence(z, v, 2.0, mask=mask.long()), got)

    def test_full_mask_equals_no_mask(self):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        assert_close(kl_divergence(z, v, mask=torch.ones(2, 3, dtype=torch.bool)), kl_divergence(z, v))

    @pytest.mark.parametrize("shape", [(2,), (3, 2), (2, 3, 1), (6,)])
    def test_bad_mask_shape(self, shape):
        with pytest.raises(ValueError, match=r"mask must have the logits' leading shape \(2, 3\)"):
            kl_divergence(logits(2, 3, 7), logits(2, 3, 7, seed=1), mask=torch.ones(shape, dtype=torch.bool))

    def test_empty_mask(self):
        with pytest.raises(ValueError, match="mask selects no position"):
            kl_divergence(logits(2, 3, 7), logits(2, 3, 7, seed=1), mask=torch.zeros(2, 3, dtype=torch.bool))
        with pytest.raises(ValueError, match="mask selects no position"):
            soft_target_loss(logits(2, 3, 7), logits(2, 3, 7, seed=1), mask=torch.zeros(2, 3, dtype=torch.bool))

    def test_mask_not_a_tensor(self):
        with pytest.raises(TypeError, match="mask"):
            kl_divergence(logits(2, 3), logits(2, 3, seed=1), mask=[True, False])

    def test_teacher_gets_no_gradient(self):
        z = logits(4, 5).requires_grad_()
        v = logits(4, 5, seed=1).requires_grad_()
        for direction in ("forward", "reverse"):
            z.grad = v.grad = None
            kl_divergence(z, v, 2.0, direction=direction).backward()
            assert z.grad is not None and z.grad.abs().sum() > 0
            assert v.grad is None

    def test_low_precision_inputs(self):
        z, v = logits(4, 5).float(), logits(4, 5, seed=1).float()
        got = kl_divergence(z.half(), v.half(), 2.0)
        assert got.dtype == torch.float16
        assert abs(float(got) - float(kl_divergence(z, v, 2.0))) < 1e-2


class TestSoftTargetLoss:
    @pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
    def test_matches_torch_kl_div_batchmean_times_t_squared(self, t):
        z, v = logits(6, 10), logits(6, 10, seed=1)
        assert_close(soft_target_loss(z, v, t), reference_kd(z, v, t))
        # and the log_target form named in the docstring
        lt = F.kl_div(F.log_softmax(z / t, -1), F.log_softmax(v / t, -1), log_target=True, reduction="batchmean")
        assert_close(soft_target_loss(z, v, t), lt * t * t)

    def test_float32_matches_reference(self):
        z, v = logits(6, 10).float(), logits(6, 10, seed=1).float()
        assert_close(soft_target_loss(z, v, 3.0), reference_kd(z, v, 3.0))

    def test_is_t_squared_times_kl(self):
        z, v = logits(3, 4), logits(3, 4, seed=1)
        for direction in ("forward", "reverse"):
            assert_close(
                soft_target_loss(z, v, 3.0, direction=direction), 9.0 * kl_divergence(z, v, 3.0, direction=direction)
            )

    def test_default_temperature_is_two(self):
        z, v = logits(3, 4), logits(3, 4, seed=1)
        assert_close(soft_target_loss(z, v), reference_kd(z, v, 2.0))

    def test_3d_averages_over_b_times_s(self):
        b, s, c, t = 2, 3, 7, 2.0
        z, v = logits(b, s, c), logits(b, s, c, seed=1)
        flat = reference_kd(z.reshape(b * s, c), v.reshape(b * s, c), t)
        assert_close(soft_target_loss(z, v, t), flat)
        # F.kl_div's batchmean on the 3-D tensor divides by B only: S times larger, which is NOT the convention
        assert_close(reference_kd(z, v, t), flat * s)

    def test_masked_positions_excluded(self):
        z, v = logits(2, 4, 5), logits(2, 4, 5, seed=1)
        mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
        assert_close(soft_target_loss(z, v, 2.0, mask=mask), reference_kd(z[mask], v[mask], 2.0))

    @pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 4.0])
    def test_gradient_matches_closed_form(self, t):
        """∂/∂z of T²·KL(p‖q) averaged over B rows is T·(q − p)/B."""
        b, c = 5, 7
        z = logits(b, c).requires_grad_()
        v = logits(b, c, seed=1).requires_grad_()
        soft_target_loss(z, v, t).backward()
        q, p = torch.softmax(z.detach() / t, -1), torch.softmax(v.detach() / t, -1)
        assert_close(z.grad, t * (q - p) / b)
        assert v.grad is None

    def test_gradient_matches_finite_differences(self):
        z, v, t, h = logits(2, 4), logits(2, 4, seed=1), 3.0, 1e-6
        zz = z.clone().requires_grad_()
        soft_target_loss(zz, v, t).backward()
        numeric = torch.zeros_like(z)
        for idx in np.ndindex(*z.shape):
            e = torch.zeros_like(z)
            e[idx] = h
            numeric[idx] = (soft_target_loss(z + e, v, t) - soft_target_loss(z - e, v, t)) / (2 * h)
        assert_close(zz.grad, numeric, rtol=1e-5, atol=1e-8)

    def test_gradient_scale_independent_of_t_for_large_t(self):
        """Why T²: for large T the gradient of T²·KL tends to a T-independent limit instead of vanishing like 1/T²."""
        z, v = logits(1, 5, scale=0.5), logits(1, 5, seed=1, scale=0.5)
        norms = []
        for t in (10.0, 100.0):
            zz = z.clone().requires_grad_()
            soft_target_loss(zz, v, t).backward()
            norms.append(float(zz.grad.norm()))
        assert norms[1] == pytest.approx(norms[0], rel=2e-2)


# ============================================================================================ combined loss
class TestDistillationLoss:
    @pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
    def test_is_convex_combination(self, alpha):
        z, v = logits(6, 5), logits(6, 5, seed=1)
        y = torch.tensor([0, 1, 2, 3, 4, 0])
        out = distillation_loss(z, v, y, temperature=3.0, alpha_kd=alpha)
        assert isinstance(out, DistillationLoss)
        ce = F.cross_entropy(z, y)
        kd = reference_kd(z, v, 3.0)
        assert_close(out.ce, ce)
        assert_close(out.kd, kd)
        assert_close(out.loss, (1 - alpha) * ce + alpha * kd)
        loss, ce_part, kd_part = out  # unpacks as a tuple
        assert loss is out.loss and ce_part is out.ce and kd_part is out.kd

    def test_ce_uses_temperature_one(self):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        y = torch.tensor([1, 2, 3, 4])
        a = distillation_loss(z, v, y, temperature=1.0)
        b = distillation_loss(z, v, y, temperature=7.0)
        assert_close(a.ce, b.ce)
        assert not torch.allclose(a.kd, b.kd)

    def test_reverse_direction_kd(self):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        y = torch.tensor([1, 2, 3, 4])
        out = distillation_loss(z, v, y, temperature=2.0, alpha_kd=0.5, direction="reverse")
        assert_close(out.kd, soft_target_loss(z, v, 2.0, direction="reverse"))

    def test_unknown_direction(self):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        with pytest.raises(ValueError, match="direction must be one of"):
            distillation_loss(z, v, torch.tensor([1, 2, 3, 4]), direction="both")
        with pytest.raises(ValueError, match="direction must be one of"):
            distillation_loss(z, v, None, alpha_kd=1.0, direction="both")

    def test_ignore_index_excluded_from_both_terms(self):
        b, s, c = 2, 4, 6
        z, v = logits(b, s, c), logits(b, s, c, seed=1)
        y = torch.tensor([[1, 2, -100, -100], [0, -100, 5, 3]])
        keep = y != -100
        out = distillation_loss(z, v, y, temperature=2.0, alpha_kd=0.3)
        assert_close(out.ce, F.cross_entropy(z[keep], y[keep]))
        assert_close(out.ce, F.cross_entropy(z.reshape(-1, c), y.reshape(-1), ignore_index=-100))
        assert_close(out.kd, reference_kd(z[keep], v[keep], 2.0))
        assert_close(out.loss, 0.7 * out.ce + 0.3 * out.kd)
        # logits at ignored positions do not influence anything, not even their gradient
        zz = z.clone().requires_grad_()
        distillation_loss(zz, v, y, temperature=2.0, alpha_kd=0.3).loss.backward()
        assert zz.grad[~keep].abs().max() == 0
        assert zz.grad[keep].abs().max() > 0

    def test_custom_ignore_index(self):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        y = torch.tensor([1, 7, 3, 7])
        out = distillation_loss(z, v, y, ignore_index=7)
        keep = y != 7
        assert_close(out.ce, F.cross_entropy(z[keep], y[keep]))
        assert_close(out.kd, reference_kd(z[keep], v[keep], 2.0))

    @pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.int16, torch.uint8])
    def test_any_integer_label_dtype(self, dtype):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        y = torch.tensor([0, 1, 2, 3])
        out = distillation_loss(z, v, y.to(dtype))
        assert_close(out.ce, F.cross_entropy(z, y))

    def test_one_dimensional_logits_with_scalar_label(self):
        z, v = logits(5), logits(5, seed=1)
        out = distillation_loss(z, v, torch.tensor(2), alpha_kd=0.5)
        assert_close(out.ce, F.cross_entropy(z[None], torch.tensor([2])))
        assert_close(out.kd, reference_kd(z[None], v[None], 2.0))

    def test_labels_none_only_with_alpha_one(self):
        z, v = logits(2, 3, 7), logits(2, 3, 7, seed=1)
        out = distillation_loss(z, v, None, temperature=2.0, alpha_kd=1.0)
        assert_close(out.loss, soft_target_loss(z, v, 2.0))
        assert_close(out.kd, out.loss)
        assert out.ce.item() == 0.0 and out.ce.dim() == 0 and out.ce.dtype == out.kd.dtype
        for alpha in (0.0, 0.5, 0.99):
            with pytest.raises(ValueError, match="labels=None is only allowed with alpha_kd=1"):
                distillation_loss(z, v, None, alpha_kd=alpha)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
    def test_float_or_bool_labels(self, dtype):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        with pytest.raises(TypeError, match="integer class indices"):
            distillation_loss(z, v, torch.tensor([0, 1, 0, 1]).to(dtype))

    def test_one_hot_labels_are_rejected(self):
        z, v = logits(4, 5), logits(4, 5, seed=1)
        one_hot = F.one_hot(torch.tensor([0, 1, 2, 3]), 5)
        with pytest.raises(ValueError, match=r"leading shape \(4,\)"):
            distillation_loss(z, v, one_hot)
        with pytest.raises(TypeError, match="integer"):
            distillation_loss(z, v, one_hot.float())

    def test_labels_not_a_tensor(self):
        with pytest.raises(TypeError, match="labels must be an integer torch.Tensor"):
            distillation_loss(logits(2, 3), logits(2, 3, seed=1), [0, 1])

    @pytest.mark.parametrize("shape", [(2,), (2, 3, 1), (3, 2), (6,)])
    def test_labels_wrong_shape(self, shape):
        with pytest.raises(ValueError, match=r"labels must have the logits' leading shape \(2, 3\)"):
            distillation_loss(logits(2, 3, 7), logits(2, 3, 7, seed=1), torch.zeros(shape, dtype=torch.long))

    @pytest.mark.parametrize("bad", [5, 7, -1, -2])
    def test_labels_out_of_range(self, bad):
        z, v = logits(3, 5), logits(3, 5, seed=1)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)") as err:
            distillation_loss(z, v, torch.tensor([0, bad, 1]))
        assert str(bad) in str(err.value)

    def test_all_labels_ignored(self):
        z, v = logits(2, 3, 5), logits(2, 3, 5, seed=1)
        with pytest.raises(ValueError, match="ignore_index=-100"):
            distillation_loss(z, v, torch.full((2, 3), -100))

    def test_gradients(self):
        z = logits(4, 5).requires_grad_()
        v = logits(4, 5, seed=1).requires_grad_()
        y = torch.tensor([0, 1, 2, 3])
        a, t = 0.4, 3.0
        distillation_loss(z, v, y, temperature=t, alpha_kd=a).loss.backward()
        q1 = torch.softmax(z.detach(), -1)
        q, p = torch.softmax(z.detach() / t, -1), torch.softmax(v.detach() / t, -1)
        expected = (1 - a) * (q1 - F.one_hot(y, 5)) / 4 + a * t * (q - p) / 4
        assert_close(z.grad, expected)
        assert v.grad is None



def test_validate_weight():
    from course_utils.kd.losses import validate_weight

    assert validate_weight(0, "hidden_weight") == 0.0 and validate_weight(2.5, "w") == 2.5
    for bad in (True, "1", None):
        with pytest.raises(TypeError, match="hidden_weight must be a number"):
            validate_weight(bad, "hidden_weight")
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="hidden_weight must be a finite number ≥ 0"):
            validate_weight(bad, "hidden_weight")


# ------------------------------------------------------------------------------------------------ entropy
def test_entropy_bounds_and_torch_agreement():
    C = 10
    one_hot = F.one_hot(torch.tensor([3, 7]), C).float()
    assert torch.equal(entropy(one_hot), torch.zeros(2))                       # 0 · log 0 = 0, exactly
    uniform = torch.full((4, C), 1 / C)
    assert torch.allclose(entropy(uniform), torch.full((4,), math.log(C)))
    p = torch.softmax(torch.randn(3, 5, C, generator=torch.Generator().manual_seed(0)), -1)
    h = entropy(p)
    assert h.shape == (3, 5)
    assert torch.allclose(h, torch.distributions.Categorical(probs=p).entropy(), atol=1e-6)


@pytest.mark.parametrize("bad, error, message", [
    ([0.5, 0.5], TypeError, "floating-point torch.Tensor"),
    (torch.tensor([1, 0]), TypeError, "dtype torch.int64"),
    (torch.tensor(0.5), ValueError, "class axis"),
    (torch.tensor([1.2, -0.2]), ValueError, "negative"),
    (torch.tensor([2.0, 1.0, -0.5]), ValueError, "negative"),
    (torch.tensor([3.0, 1.0]), ValueError, "not 1"),
])
def test_entropy_rejects_what_is_not_probabilities(bad, error, message):
    with pytest.raises(error, match=message):
        entropy(bad)


# -------------------------------------------------------------------------------------- soft_target_gradient
@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_soft_target_gradient_matches_autograd(T):
    gen = torch.Generator().manual_seed(1)
    z = (3 * torch.randn(6, 7, generator=gen)).double().requires_grad_(True)
    v = (3 * torch.randn(6, 7, generator=gen)).double()
    kl_rows = (torch.softmax(v / T, -1) * (torch.log_softmax(v / T, -1) - torch.log_softmax(z / T, -1))).sum()
    (autograd,) = torch.autograd.grad(kl_rows, z)
    g = soft_target_gradient(z, v, T)
    assert torch.allclose(g, autograd, atol=1e-12)
    assert torch.allclose(g.sum(-1), torch.zeros(6, dtype=torch.float64), atol=1e-12)   # rows sum to 0
    # the library's loss (T² · batchmean) has gradient T · (q − p) / B
    z.grad = None
    soft_target_loss(z, v, T).backward()
    assert torch.allclose(z.grad, T**2 * g / 6, atol=1e-12)


def test_soft_target_gradient_validates_like_the_losses():
    with pytest.raises(ValueError, match="shape mismatch"):
        soft_target_gradient(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        soft_target_gradient(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
