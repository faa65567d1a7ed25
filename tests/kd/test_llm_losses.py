"""Unit tests for course_utils.kd.llm_losses: chunked KD (value, gradient, in-place buffer), causal-LM wrapper,
generalized JSD (its β limits), ULD (cross-vocabulary), top-k KD (with its tail bucket), and every refusal path."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.kd import llm_losses
from course_utils.kd.losses import distillation_loss, kl_divergence, soft_target_loss


DOUBLE = torch.float64


def logits(*shape: int, seed: int = 0, scale: float = 3.0, dtype=DOUBLE) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE) * scale).to(dtype)


def grads(fn, z: torch.Tensor, *args, **kwargs):
    zz = z.clone().requires_grad_()
    out = fn(zz, *args, **kwargs)
    loss = out.loss if isinstance(out, tuple) else out
    loss.backward()
    return loss.detach(), zz.grad.clone()


# ------------------------------------------------------------------------------------------- chunked KD
@pytest.mark.parametrize("shape", [(2, 5, 7), (11, 7), (7,)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_matches_soft_target_loss(shape, temperature, chunk_size, inplace, dtype):
    z, v = logits(*shape, seed=1, dtype=dtype), logits(*shape, seed=2, dtype=dtype)
    ref, g_ref = grads(soft_target_loss, z, v, temperature)
    out, g = grads(llm_losses.chunked_kd_loss, z, v, temperature, chunk_size=chunk_size, inplace_grad=inplace)
    assert torch.allclose(out.to(ref.dtype), ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(g.to(g_ref.dtype), g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("inplace", [False, True])
def test_chunked_mask_and_grad_output_scaling(inplace):
    z, v = logits(3, 6, 9, seed=3), logits(3, 6, 9, seed=4)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(5)) > 0.4
    z1 = z.clone().requires_grad_()
    (0.7 * soft_target_loss(z1, v, 2.0, mask=mask) + 0.1).backward()
    z2 = z.clone().requires_grad_()
    (0.7 * llm_losses.chunked_kd_loss(z2, v, 2.0, mask=mask, chunk_size=4, inplace_grad=inplace) + 0.1).backward()
    assert torch.allclose(z2.grad, z1.grad, atol=1e-12)
    assert bool((z2.grad[~mask] == 0).all()), "masked positions must get exactly zero gradient"


def test_chunked_gradient_is_t_times_q_minus_p_over_n():
    z, v, t = logits(4, 5, seed=6), logits(4, 5, seed=7), 3.0
    _, g = grads(llm_losses.chunked_kd_loss, z, v, t, chunk_size=2)
    expected = t * (torch.softmax(z / t, -1) - torch.softmax(v / t, -1)) / 4
    assert torch.allclose(g, expected, atol=1e-12)


def test_chunked_fp16_logits_close_to_fp32_reference():
    z, v = logits(2, 8, 50, seed=8, scale=2.0), logits(2, 8, 50, seed=9, scale=2.0)
    ref, g_ref = grads(soft_target_loss, z.float(), v.float(), 2.0)
    out, g = grads(llm_losses.chunked_kd_loss, z.half(), v.half(), 2.0, chunk_size=5)
    assert out.dtype == torch.float32 and g.dtype == torch.float16
    assert torch.allclose(out, ref, rtol=2e-3)
    assert torch.allclose(g.float(), g_ref, atol=1e-4)


def test_inplace_grad_overwrites_logits_and_guards_saved_uses():
    z, v = logits(2, 4, 6, seed=10), logits(2, 4, 6, seed=11)
    _, g_ref = grads(soft_target_loss, z, v, 2.0)
    # default: the logits are left untouched
    zz = z.clone().requires_grad_()
    llm_losses.chunked_kd_loss(zz, v, 2.0).backward()
    assert torch.equal(zz.detach(), z)
    # inplace_grad=True: the logits' storage now holds the gradient
    zz = z.clone().requires_grad_()
    llm_losses.chunked_kd_loss(zz, v, 2.0, inplace_grad=True).backward()
    assert torch.allclose(zz.detach(), g_ref) and torch.allclose(zz.grad, g_ref)
    # another node that saved the logits for its backward fails loudly instead of using gradients as logits
    zz = z.clone().requires_grad_()
    other = (zz**2).sum()  # pow saves its input
    kd = llm_losses.chunked_kd_loss(zz, v, 2.0, inplace_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (other + kd).backward()
    # no gradient needed → nothing is written
    zz = z.clone().requires_grad_()
    with torch.no_grad():
        val = llm_losses.chunked_kd_loss(zz, v, 2.0, inplace_grad=True)
    assert torch.equal(zz.detach(), z) and torch.isclose(val, soft_target_loss(z, v, 2.0))


def test_inplace_grad_on_non_contiguous_logits_falls_back_to_a_buffer():
    z, v = logits(6, 5, seed=12), logits(6, 5, seed=13)
    zz = z.clone().t().contiguous().t().requires_grad_()  # same values, column-major strides
    assert not zz.is_contiguous()
    llm_losses.chunked_kd_loss(zz, v, 2.0, inplace_grad=True).backward()
    _, g_ref = grads(soft_target_loss, z, v, 2.0)
    assert torch.equal(zz.detach(), z) and torch.allclose(zz.grad, g_ref)


def test_chunked_backward_twice_raises():
    z = logits(3, 4, seed=14).requires_grad_()
    loss = llm_losses.chunked_kd_loss(z, logits(3, 4, seed=15), 2.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="differentiated twice"):
        loss.backward()


@pytest.mark.parametrize("alpha_kd", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("inplace", [False, True])
def test_chunked_distillation_matches_distillation_loss(alpha_kd, inplace):
    z, v = logits(2, 6, 9, seed=16), logits(2, 6, 9, seed=17)
    labels = torch.randint(0, 9, (2, 6), generator=torch.Generator().manual_seed(18))
    labels[0, :3] = -100
    ref = distillation_loss(z.clone().requires_grad_(), v, labels, 2.0, alpha_kd)
    zr = z.clone().requires_grad_()
    distillation_loss(zr, v, labels, 2.0, alpha_kd).loss.backward()
    zc = z.clone().requires_grad_()
    out = llm_losses.chunked_distillation_loss(zc, v, labels, 2.0, alpha_kd, chunk_size=4, inplace_grad=inplace)
    out.loss.backward()
    for a, b in zip(out, ref):
        assert torch.allclose(a, b.detach(), atol=1e-10)
    assert not out.ce.requires_grad and not out.kd.requires_grad
    assert torch.allclose(zc.grad, zr.grad, atol=1e-12)


# ------------------------------------------------------------------------------------------- causal LM
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_causal_lm_loss_shifts_labels_and_masks_ignored(chunk_size):
    b, s, vocab = 2, 7, 11
    z, v = logits(b, s, vocab, seed=20), logits(b, s, vocab, seed=21)
    labels = torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(22))
    labels[:, :3] = -100  # the prompt
    labels[1, -2:] = -100  # padding
    # reference: the explicit shift, dropping the last position
    zr = z.clone().requires_grad_()
    ref = distillation_loss(zr[:, :-1], v[:, :-1], labels[:, 1:], 2.0, 0.4)
    ref.loss.backward()
    zc = z.clone().requires_grad_()
    out = llm_losses.causal_lm_distillation_loss(zc, v, labels, temperature=2.0, alpha_kd=0.4, chunk_size=chunk_size)
    out.loss.backward()
    for a, r in zip(out, ref):
        assert torch.allclose(a, r.detach(), atol=1e-10)
    assert torch.allclose(zc.grad, zr.grad, atol=1e-12)
    assert bool((zc.grad[:, -1] == 0).all()) and bool((zc.grad[:, :2] == 0).all())


def test_shift_labels():
    labels = torch.tensor([[5, 6, 7, 8]])
    assert llm_losses.shift_labels(labels).tolist() == [[6, 7, 8, -100]]


@pytest.mark.parametrize("func", ["causal", "chunked", "chunked_distill", "gjsd"])
def test_vocab_mismatch_error_names_sizes_and_alternatives(func):
    z, v = torch.randn(1, 2, 32000), torch.randn(1, 2, 51200)
    labels = torch.zeros(1, 2, dtype=torch.long)
    call = {
        "causal": lambda: llm_losses.causal_lm_distillation_loss(z, v, labels, 2.0, 0.5),
        "chunked": lambda: llm_losses.chunked_kd_loss(z, v, 2.0),
        "chunked_distill": lambda: llm_losses.chunked_distillation_loss(z, v, labels, 2.0, 0.5),
        "gjsd": lambda: llm_losses.generalized_jsd_loss(z, v),
    }[func]
    with pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    for needle in ("32000", "51200", "sequence-level", "uld_loss"):
        assert needle in msg, (needle, msg)


def test_causal_lm_mismatch_also_with_chunks():
    with pytest.raises(ValueError, match="32000.*51200"):
        llm_losses.causal_lm_distillation_loss(torch.randn(1, 3, 32000), torch.randn(1, 3, 51200),
                                       torch.zeros(1, 3, dtype=torch.long), chunk_size=2)


def test_chunked_validation_errors():
    z, v = logits(2, 3, 5, seed=23), logits(2, 3, 5, seed=24)
    with pytest.raises(ValueError, match="shape mismatch"):
        llm_losses.chunked_kd_loss(z, v[:, :2], 2.0)
    with pytest.raises(TypeError, match="floating-point"):
        llm_losses.chunked_kd_loss(z.long(), v, 2.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        llm_losses.chunked_kd_loss(z.tolist(), v, 2.0)
    with pytest.raises(ValueError, match="temperature"):
        llm_losses.chunked_kd_loss(z, v, 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        llm_losses.chunked_kd_loss(z, v, 2.0, chunk_size=0)
    with pytest.raises(ValueError, match="no position"):
        llm_losses.chunked_kd_loss(z, v, 2.0, mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="probabilities"):
        llm_losses.chunked_kd_loss(torch.softmax(z, -1), v, 2.0)
    with pytest.raises(ValueError, match="ignore_index"):
        llm_losses.causal_lm_distillation_loss(z, v, torch.full((2, 3), -100), chunk_size=2)
    with pytest.raises(ValueError, match="labels must lie"):
        llm_losses.causal_lm_distillation_loss(z, v, torch.full((2, 3), 7), chunk_size=2)
    with pytest.raises(ValueError, match="leading shape"):
        llm_losses.causal_lm_distillation_loss(z, v, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        llm_losses.causal_lm_distillation_loss(z, v, torch.zeros(2, 3, dtype=torch.long), inplace_grad=True)


@pytest.mark.parametrize("where", ["student", "teacher"])
def test_chunked_rejects_non_finite_in_any_chunk(where):
    z, v = logits(4, 8, 6, seed=25), logits(4, 8, 6, seed=26)
    (z if where == "student" else v)[3, 5, 2] = float("nan")  # not in the sampled rows, in a late chunk
    with pytest.raises(ValueError, match="non-finite"):
        llm_losses.chunked_kd_loss(z.requires_grad_(), v, 2.0, chunk_size=2)


def test_default_chunk_size():
    assert llm_losses.default_chunk_size(51_200) == 20
    assert llm_losses.default_chunk_size(10**9) == 1


# ------------------------------------------------------------------------------------------- generalized JSD
def test_gjsd_endpoints_are_forward_and_reverse_kl():
    z, v, t = logits(3, 4, 8, seed=30), logits(3, 4, 8, seed=31), 2.0
    assert torch.allclose(llm_losses.generalized_jsd_loss(z, v, beta=0.0, temperature=t), soft_target_loss(z, v, t))
    assert torch.allclose(llm_losses.generalized_jsd_loss(z, v, beta=1.0, temperature=t),
                          soft_target_loss(z, v, t, direction="reverse"))


def test_gjsd_limits_numerically():
    """β → 0: JSD_β/β → KL(p‖q) (forward); β → 1: JSD_β/(1−β) → KL(q‖p) (reverse)."""
    z, v = logits(5, 10, seed=32, scale=1.5), logits(5, 10, seed=33, scale=1.5)
    fwd, rev = kl_divergence(z, v), kl_divergence(z, v, direction="reverse")
    assert not torch.isclose(fwd, rev, rtol=0.05)  # the two limits are distinguishable here
    for eps in (1e-4, 1e-6):
        small = llm_losses.generalized_jsd_loss(z, v, beta=eps) / eps
        large = llm_losses.generalized_jsd_loss(z, v, beta=1 - eps) / eps
        assert torch.isclose(small, fwd, rtol=50 * eps), (eps, small, fwd)
        assert torch.isclose(large, rev, rtol=50 * eps), (eps, large, rev)


def test_gjsd_half_is_symmetric_bounded_and_zero_on_equal():
    z, v, t = logits(4, 6, seed=34), logits(4, 6, seed=35), 1.5
    a = llm_losses.generalized_jsd_loss(z, v, beta=0.5, temperature=t)
    b = llm_losses.generalized_jsd_loss(v, z, beta=0.5, temperature=t)
    assert torch.isclose(a, b)
    assert 0 < a <= t * t * math.log(2)
    assert llm_losses.generalized_jsd_loss(z, z.clone(), beta=0.3).abs() < 1e-12


def test_gjsd_matches_definition_and_gradcheck():
    z, v, beta, t = logits(3, 5, seed=36), logits(3, 5, seed=37), 0.3, 2.0
    p, q = torch.softmax(v / t, -1), torch.softmax(z / t, -1)
    m = beta * p + (1 - beta) * q
    expected = (beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)).mean() * t * t
    assert torch.allclose(llm_losses.generalized_jsd_loss(z, v, beta=beta, temperature=t), expected)
    zz = z.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: llm_losses.generalized_jsd_loss(x, v, beta=beta, temperature=t), (zz,))


def test_gjsd_mask_and_validation():
    z, v = logits(2, 4, 5, seed=38), logits(2, 4, 5, seed=39)
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    expected = llm_losses.generalized_jsd_loss(z[mask], v[mask], beta=0.5)
    assert torch.allclose(llm_losses.generalized_jsd_loss(z, v, beta=0.5, mask=mask), expected)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="beta"):
            llm_losses.generalized_jsd_loss(z, v, beta=bad)


# ------------------------------------------------------------------------------------------- ULD
def _uld_reference(zs: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
    """ULD written out for 2-D, already aligned inputs: sort, zero-pad, L1, mean over positions."""
    width = max(zs.shape[-1], vt.shape[-1])
    q = F.pad(torch.softmax(zs, -1).sort(-1, descending=True).values, (0, width - zs.shape[-1]))
    p = F.pad(torch.softmax(vt, -1).sort(-1, descending=True).values, (0, width - vt.shape[-1]))
    return (q - p).abs().sum(-1).mean()


def test_uld_zero_for_identical_and_permuted_vocabulary():
    z = logits(2, 5, 7, seed=40)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(41))
    assert llm_losses.uld_loss(z, z.clone()) < 1e-12
    assert llm_losses.uld_loss(z, z[..., perm]) < 1e-12
    # padding the vocabulary with impossible tokens does not change the distribution's shape either
    padded = torch.cat([z, torch.full((2, 5, 4), -1e4, dtype=DOUBLE)], -1)
    assert llm_losses.uld_loss(z, padded) < 1e-12


def test_uld_different_vocabularies_and_lengths():
    z, v = logits(2, 4, 7, seed=42), logits(2, 6, 11, seed=43)  # stand-ins for 50 257 vs 32 000
    loss = llm_losses.uld_loss(z, v)  # must not raise on the vocabulary mismatch
    expected = (_uld_reference(z[0], v[0, :4]) + _uld_reference(z[1], v[1, :4])) / 2
    assert torch.allclose(loss, expected)
    assert 0 < loss <= 2
    zz = z.clone().requires_grad_()
    vv = v.clone().requires_grad_()
    llm_losses.uld_loss(zz, vv).backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0 and vv.grad is None  # teacher is a constant
    assert torch.autograd.gradcheck(lambda x: llm_losses.uld_loss(x, v), (z.clone().requires_grad_(),))


def test_uld_alignment_rule_with_masks():
    z, v = logits(2, 6, 7, seed=44), logits(2, 5, 11, seed=45)
    sm = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    tm = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    # row 0: student positions 1..4 (4) vs teacher 2..4 (3) → 3 pairs; row 1: student 2..3 (2) vs teacher 0..4 → 2
    expected = (3 * _uld_reference(z[0, 1:4], v[0, 2:5]) + 2 * _uld_reference(z[1, 2:4], v[1, 0:2])) / 5
    assert torch.allclose(llm_losses.uld_loss(z, v, student_mask=sm, teacher_mask=tm), expected)


def test_uld_real_vocabulary_sizes():
    z, v = logits(1, 3, 50257, seed=46, scale=2.0, dtype=torch.float32), logits(1, 3, 32000, seed=47, scale=2.0,
                                                                              dtype=torch.float32)
    loss = llm_losses.uld_loss(z, v)
    assert torch.isfinite(loss) and 0 < loss < 2


def test_uld_validation():
    z, v = logits(2, 3, 5, seed=48), logits(2, 3, 6, seed=49)
    with pytest.raises(ValueError, match="batch sizes differ"):
        llm_losses.uld_loss(z, v[:1])
    with pytest.raises(ValueError, match="no aligned position"):
        llm_losses.uld_loss(z, v, student_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        llm_losses.uld_loss(z, v, teacher_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, S, V\)"):
        llm_losses.uld_loss(z, v[0])
    with pytest.raises(ValueError, match="probabilities"):
        llm_losses.uld_loss(torch.softmax(z, -1), v)
    assert torch.allclose(llm_losses.uld_loss(z[0], v[0]), llm_losses.uld_loss(z[:1], v[:1]))


# ------------------------------------------------------------------------------------------- cached top-k
def _dense_from_topk(ids: torch.Tensor, vals: torch.Tensor, vocab: int) -> torch.Tensor:
    """Teacher logits that are the cached ones on the top-k ids and (finite) −1e9 elsewhere."""
    dense = torch.full((*ids.shape[:-1], vocab), -1e9, dtype=vals.dtype)
    return dense.scatter(-1, ids, vals)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_kd_equals_dense_kd_against_truncated_teacher(temperature):
    z, v = logits(2, 5, 12, seed=60), logits(2, 5, 12, seed=61)
    vals, ids = v.topk(4, dim=-1)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    ref, g_ref = grads(soft_target_loss, z, _dense_from_topk(ids, vals, 12), temperature, mask=mask)
    out, g = grads(llm_losses.topk_kd_loss, z, ids, vals, temperature, mask=mask)
    assert torch.allclose(out, ref, atol=1e-10)
    assert torch.allclose(g, g_ref, atol=1e-12)


def test_topk_kd_with_all_ids_is_the_full_kd():
    z, v = logits(3, 4, 6, seed=62), logits(3, 4, 6, seed=63)
    vals, ids = v.topk(6, dim=-1)  # k = V: nothing truncated
    assert torch.allclose(llm_losses.topk_kd_loss(z, ids, vals, 2.0), soft_target_loss(z, v, 2.0), atol=1e-12)


def test_causal_lm_topk_matches_dense_causal_loss_on_truncated_teacher():
    b, s, vocab = 2, 6, 10
    z, v = logits(b, s, vocab, seed=64), logits(b, s, vocab, seed=65)
    labels = torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(66))
    labels[:, :2] = -100
    vals, ids = v.topk(3, dim=-1)
    ref = llm_losses.causal_lm_distillation_loss(z, _dense_from_topk(ids, vals, vocab), labels, 2.0, 0.3)
    out = llm_losses.causal_lm_topk_distillation_loss(z, ids, vals, labels, 2.0, 0.3)
    for a, r in zip(out, ref):
        assert torch.allclose(a, r, atol=1e-10)


def test_topk_validation():
    z = logits(2, 3, 5, seed=67)
    vals, ids = logits(2, 3, 5, seed=68).topk(2, dim=-1)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        llm_losses.topk_kd_loss(z, ids + 4, vals)
    with pytest.raises(ValueError, match="must both be"):
        llm_losses.topk_kd_loss(z, ids[:, :2], vals[:, :2])
    with pytest.raises(TypeError, match="integer"):
        llm_losses.topk_kd_loss(z, ids.double(), vals)
    with pytest.raises(ValueError, match="non-finite"):
        llm_losses.topk_kd_loss(z, ids, vals.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="ignore_index"):
        llm_losses.causal_lm_topk_distillation_loss(z, ids, vals, torch.full((2, 3), -100))


def _coarse_kl(z, v, k, t):
    """KL between teacher and student coarsened to the teacher's top-k tokens + one 'other' bucket, times T²."""
    p, q = torch.softmax(v / t, -1), torch.softmax(z / t, -1)
    ids = v.topk(k, -1).indices
    pk, qk = p.gather(-1, ids), q.gather(-1, ids)
    P = torch.cat([pk, 1 - pk.sum(-1, keepdim=True)], -1)
    Q = torch.cat([qk, 1 - qk.sum(-1, keepdim=True)], -1)
    return (P * (P.log() - Q.log())).sum(-1).mean() * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_topk_tail_bucket_is_the_coarsened_kl(temperature):
    z, v = logits(3, 4, 20, seed=70), logits(3, 4, 20, seed=71)
    vals, ids = v.topk(5, -1)
    lse = torch.logsumexp(v / temperature, -1)
    out = llm_losses.topk_kd_loss(z, ids, vals, temperature, teacher_logsumexp=lse)
    assert torch.allclose(out, _coarse_kl(z, v, 5, temperature), atol=1e-10)
    zz = z.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: llm_losses.topk_kd_loss(x, ids, vals, temperature, teacher_logsumexp=lse), (zz,))
    # it differs from the renormalised form, which ignores the teacher's tail mass
    assert not torch.isclose(out, llm_losses.topk_kd_loss(z, ids, vals, temperature))


def test_topk_tail_bucket_zero_when_student_matches_teacher_and_exact_for_k_equals_v():
    v = logits(2, 3, 9, seed=72)
    vals, ids = v.topk(4, -1)
    lse = torch.logsumexp(v / 2.0, -1)
    assert llm_losses.topk_kd_loss(v.clone(), ids, vals, 2.0, teacher_logsumexp=lse).abs() < 1e-12
    z = logits(2, 3, 9, seed=73)
    vals, ids = v.topk(9, -1)
    zz = z.clone().requires_grad_()
    out = llm_losses.topk_kd_loss(zz, ids, vals, 2.0, teacher_logsumexp=lse)
    out.backward()
    assert torch.allclose(out, soft_target_loss(z, v, 2.0)) and torch.isfinite(zz.grad).all()


def test_topk_tail_bucket_validation():
    z, v = logits(2, 3, 6, seed=74), logits(2, 3, 6, seed=75)
    vals, ids = v.topk(2, -1)
    with pytest.raises(ValueError, match="shape"):
        llm_losses.topk_kd_loss(z, ids, vals, teacher_logsumexp=torch.zeros(2))
    with pytest.raises(ValueError, match="full logits"):
        llm_losses.topk_kd_loss(z, ids, vals, 2.0, teacher_logsumexp=torch.full((2, 3), -50.0, dtype=DOUBLE))
