"""Unit tests for course_utils.kd.features: layer mapping, hint/cosine/attention/attention-transfer losses and
linear CKA — values against hand-computed references, gradients, and every validation error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils.kd import features
from course_utils.kd.features import attention_map_loss, attention_transfer_loss, check_layer_map, cka_matrix, hidden_cosine_loss, hint_loss, layer_map, linear_cka, make_projection, spatial_attention, token_features


pytestmark = pytest.mark.usefixtures("single_thread")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def mask_bs(b=3, s=5):
    m = torch.ones(b, s, dtype=torch.long)
    m[1, 3:] = 0
    m[2, 4:] = 0
    return m


# ================================================================================================ layer_map
@pytest.mark.parametrize("m, n, expected", [
    (3, 6, [(1, 2), (2, 4), (3, 6)]),          # TinyBERT: every other layer, last meets last
    (4, 12, [(1, 3), (2, 6), (3, 9), (4, 12)]),
    (4, 6, [(1, 1), (2, 3), (3, 4), (4, 6)]),  # not divisible: floor(m·N/M)
    (6, 6, [(i, i) for i in range(1, 7)]),
    (1, 6, [(1, 6)]),
])
def test_layer_map_uniform(m, n, expected):
    assert layer_map(m, n) == expected
    assert layer_map(m, n, "uniform", include_embeddings=True) == [(0, 0)] + expected


def test_layer_map_last_and_explicit():
    assert layer_map(3, 6, "last") == [(1, 4), (2, 5), (3, 6)]
    assert layer_map(3, 6, [1, 3, 6]) == [(1, 1), (2, 3), (3, 6)]
    assert layer_map(3, 6, [1, 3, 6], include_embeddings=True)[0] == (0, 0)
    assert layer_map(3, 6, [(3, 6), (1, 2)]) == [(1, 2), (3, 6)]  # pairs, sorted by student layer
    assert layer_map(3, 6, [(0, 0), (3, 6)]) == [(0, 0), (3, 6)]
    assert all(isinstance(i, int) for pair in layer_map(2, 4, [np.int64(2), np.int64(4)]) for i in pair)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((4, 2), {}, ValueError, "only 2"),
    ((4, 2, "last"), {}, ValueError, "no deeper"),
    ((3, 6, "every_other"), {}, ValueError, "unknown layer-mapping strategy"),
    ((3, 6, [2, 4]), {}, ValueError, "one teacher layer per student layer"),
    ((3, 6, [2, 4, 7]), {}, ValueError, "teacher index 7.*6 layers"),
    ((3, 6, [(4, 6)]), {}, ValueError, "student index 4.*3 layers"),
    ((3, 6, [(1, 2, 3)]), {}, ValueError, "pair"),
    ((3, 6, [(1, 2), (1, 4)]), {}, ValueError, "repeat"),
    ((3, 6, []), {}, ValueError, "empty"),
    ((3, 6, [2.0, 4, 6]), {}, TypeError, "integer"),
    ((3, 6, 5), {}, TypeError, "strategy"),
    ((0, 6), {}, ValueError, "≥ 1"),
    ((3.0, 6), {}, TypeError, "n_student"),
    ((True, 6), {}, TypeError, "n_student"),
])
def test_layer_map_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        layer_map(*args, **kwargs)


def test_check_layer_map_attention_excludes_embeddings():
    assert check_layer_map([(1, 2), (3, 6)], 3, 6, attention=True) == [(1, 2), (3, 6)]
    with pytest.raises(ValueError, match="attention maps exist for layers 1"):
        check_layer_map([(0, 0)], 3, 6, attention=True)
    with pytest.raises(ValueError, match="non-empty list"):
        check_layer_map("uniform", 3, 6)
    with pytest.raises(ValueError, match="pair"):
        check_layer_map([5], 3, 6)


def test_num_layers_and_width():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=3,
                                                     num_attention_heads=2, intermediate_size=32))
    assert features.num_layers(model) == 3 and features.hidden_width(model) == 16
    cnn = nn.Module()
    cnn.blocks = nn.ModuleList([nn.Identity(), nn.Identity()])
    assert features.num_layers(cnn) == 2
    with pytest.raises(TypeError, match="how many layers"):
        features.num_layers(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="hidden_size"):
        features.hidden_width(nn.Linear(2, 2))


# ================================================================================================ hint loss
def test_make_projection_shapes_and_seed():
    lin = make_projection(4, 6, seed=1)
    assert isinstance(lin, nn.Linear) and lin.weight.shape == (6, 4)
    assert torch.equal(lin.weight, make_projection(4, 6, seed=1).weight)
    conv = make_projection(3, 5, conv=True)
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.out_channels == 5
    state = torch.random.get_rng_state()
    make_projection(4, 6, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "a seeded projection must not consume the global RNG"
    with pytest.raises(ValueError, match="≥ 1"):
        make_projection(0, 6)


def test_hint_loss_matches_mse_and_masks_padding():
    s, t = randn(3, 5, 4, seed=1), randn(3, 5, 6, seed=2)
    proj = make_projection(4, 6, seed=0)
    assert torch.allclose(hint_loss(s, t, proj), F.mse_loss(proj(s), t))
    m = mask_bs()
    expected = ((proj(s) - t) ** 2)[m.bool()].mean()
    assert torch.allclose(hint_loss(s, t, proj, m), expected)
    # padding positions do not matter
    t2 = t.clone()
    t2[1, 3:] = 100.0
    assert torch.allclose(hint_loss(s, t2, proj, m), expected)
    # equal widths: no projection needed
    assert torch.allclose(hint_loss(t, t + 1.0), torch.tensor(1.0))
    assert features.hidden_mse is hint_loss


def test_hint_loss_gradients_reach_student_and_projection_not_teacher():
    s = randn(2, 3, 4, seed=1).requires_grad_()
    t = randn(2, 3, 6, seed=2).requires_grad_()
    proj = make_projection(4, 6, seed=0)
    hint_loss(s, t, proj).backward()
    assert s.grad is not None and proj.weight.grad is not None
    assert t.grad is None, "the teacher's features are a constant target"
    # finite differences on one student entry
    s0 = s.detach().clone()
    eps = 1e-3
    for idx in [(0, 0, 0), (1, 2, 3)]:
        plus, minus = s0.clone(), s0.clone()
        plus[idx] += eps
        minus[idx] -= eps
        with torch.no_grad():
            fd = (hint_loss(plus, t, proj) - hint_loss(minus, t, proj)) / (2 * eps)
        assert torch.isclose(fd, s.grad[idx], rtol=1e-2, atol=1e-5)


def test_hint_loss_cnn_maps():
    s, t = randn(2, 3, 7, 7, seed=1), randn(2, 8, 7, 7, seed=2)
    reg = make_projection(3, 8, conv=True, seed=0)
    assert torch.allclose(hint_loss(s, t, reg), F.mse_loss(reg(s), t))
    with pytest.raises(ValueError, match="conv=True"):
        hint_loss(s, t)
    with pytest.raises(ValueError, match="no padding"):
        hint_loss(s, t, reg, attention_mask=torch.ones(2, 3))


@pytest.mark.parametrize("make, match, error", [
    (lambda: (randn(2, 3, 4), randn(2, 3, 6), None, None), "4 wide but the teacher's 6.*make_projection\\(4, 6\\)",
     ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 6), nn.Linear(4, 5), None), "after the projection", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 6), nn.Linear(5, 6), None), "could not be applied", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 4, 4), None, None), "shape", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 4, 1), None, None), "number of dimensions", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 4), None, torch.ones(2, 4)), "attention_mask has shape", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 4), None, torch.zeros(2, 3)), "no token", ValueError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 4), None, [[1, 1, 1]]), "attention_mask must be a torch.Tensor", TypeError),
    (lambda: (randn(2, 3, 4).numpy(), randn(2, 3, 4), None, None), "torch.Tensor", TypeError),
    (lambda: (torch.ones(2, 3, 4, dtype=torch.long), randn(2, 3, 4), None, None), "floating-point", TypeError),
    (lambda: (randn(2, 3, 4), randn(2, 3, 6), "linear", None), "nn.Module", TypeError),
])
def test_hint_loss_errors(make, match, error):
    s, t, proj, mask = make()
    with pytest.raises(error, match=match):
        hint_loss(s, t, proj, mask)


# ============================================================================================== cosine loss
def test_hidden_cosine_loss_values():
    t = randn(2, 4, 6, seed=3)
    assert torch.allclose(hidden_cosine_loss(3.0 * t, t), torch.tensor(0.0), atol=1e-6)  # scale does not matter
    assert torch.allclose(hidden_cosine_loss(-t, t), torch.tensor(2.0))
    s = randn(2, 4, 6, seed=4)
    ref = nn.CosineEmbeddingLoss()(s.reshape(-1, 6), t.reshape(-1, 6), torch.ones(8))
    assert torch.allclose(hidden_cosine_loss(s, t), ref, atol=1e-6)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    expected = (1 - F.cosine_similarity(s, t, dim=-1))[m.bool()].mean()
    assert torch.allclose(hidden_cosine_loss(s, t, attention_mask=m), expected)
    proj = make_projection(3, 6, seed=0)
    s3 = randn(2, 4, 3, seed=5)
    assert torch.allclose(hidden_cosine_loss(s3, t, proj), (1 - F.cosine_similarity(proj(s3), t, dim=-1)).mean())
    with pytest.raises(ValueError, match="make_projection\\(3, 6\\)"):
        hidden_cosine_loss(s3, t)
    with pytest.raises(ValueError, match="\\(B, S, H\\)"):
        hidden_cosine_loss(randn(4, 6), t)


# =========================================================================================== attention maps
def attn(b=3, h=2, s=5, seed=0, mask=None):
    scores = randn(b, h, s, s, seed=seed)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


def test_attention_map_loss_mse_and_kl_values():
    m = mask_bs()
    a_s, a_t = attn(seed=1, mask=m), attn(seed=2, mask=m)
    assert torch.allclose(attention_map_loss(a_s, a_t, kind="mse"), F.mse_loss(a_s, a_t))
    valid = (m.bool()[:, :, None] & m.bool()[:, None, :])[:, None].expand_as(a_s)
    assert torch.allclose(attention_map_loss(a_s, a_t, m, kind="mse"), ((a_s - a_t) ** 2)[valid].mean())
    # KL: one distribution per (example, head, real query row)
    kl_rows = F.kl_div(a_s.clamp_min(1e-30).log(), a_t, reduction="none").sum(-1)  # (B, h, S)
    rows = m.bool()[:, None, :].expand_as(kl_rows)
    assert torch.allclose(attention_map_loss(a_s, a_t, m, kind="kl"), kl_rows[rows].mean(), atol=1e-6)
    assert torch.isfinite(attention_map_loss(a_s, a_t, m, kind="kl"))
    assert float(attention_map_loss(a_t, a_t, m, kind="kl")) == pytest.approx(0.0, abs=1e-6)
    # head averaging for different head counts
    a4 = attn(h=4, seed=3, mask=m)
    expected = F.mse_loss(a_s.mean(1), a4.mean(1))
    assert torch.allclose(attention_map_loss(a_s, a4, average_heads=True), expected)


def test_attention_map_loss_gradient_only_to_student():
    a_s = attn(seed=1).requires_grad_()
    a_t = attn(seed=2).requires_grad_()
    attention_map_loss(a_s, a_t, kind="kl").backward()
    assert a_s.grad is not None and a_t.grad is None


@pytest.mark.parametrize("make, match", [
    (lambda: (attn(h=2), attn(h=4), {}), "2 attention heads and the teacher 4.*average_heads"),
    (lambda: (attn(s=5), attn(s=6), {}), "different batches or sequence"),
    (lambda: (randn(3, 2, 5, 4), attn(), {}), "\\(B, heads, S, S\\)"),
    (lambda: (attn(), attn(), {"kind": "l1"}), "kind must be one of"),
    (lambda: (attn(), attn(), {"attention_mask": torch.ones(3, 4)}), "attention_mask has shape"),
])
def test_attention_map_loss_errors(make, match):
    a_s, a_t, kw = make()
    with pytest.raises(ValueError, match=match):
        attention_map_loss(a_s, a_t, **kw)


# ===================================================================================== attention transfer
def test_spatial_attention_and_transfer_loss():
    f = randn(2, 3, 4, 4, seed=1)
    a = spatial_attention(f)
    assert a.shape == (2, 16)
    assert torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.allclose(a, F.normalize(f.pow(2).mean(1).view(2, -1)))  # the authors' at(x)
    t = randn(2, 8, 4, 4, seed=2)  # more channels: fine, no projection
    expected = (F.normalize(f.pow(2).mean(1).view(2, -1)) - F.normalize(t.pow(2).mean(1).view(2, -1))).pow(2).mean()
    assert torch.allclose(attention_transfer_loss(f, t), expected)
    assert float(attention_transfer_loss(t, 2.0 * t)) == pytest.approx(0.0, abs=1e-7)  # scale-free
    s = f.clone().requires_grad_()
    attention_transfer_loss(s, t.requires_grad_()).backward()
    assert s.grad is not None and t.grad is None
    assert spatial_attention(f, p=1).shape == (2, 16)


def test_attention_transfer_errors():
    with pytest.raises(ValueError, match="same batch size and spatial size"):
        attention_transfer_loss(randn(2, 3, 4, 4), randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="\\(B, C, H, W\\)"):
        attention_transfer_loss(randn(2, 16), randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="p must be a positive"):
        spatial_attention(randn(2, 3, 4, 4), p=0)
    with pytest.raises(ValueError, match="\\(B, C, H, W\\)"):
        spatial_attention(randn(3, 4, 4))


# ===================================================================================================== CKA
def test_linear_cka_properties():
    x = randn(200, 10, seed=1)
    q, _ = torch.linalg.qr(randn(10, 10, seed=2))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # rotation, scale, shift: invariant
    wide = torch.cat([x, torch.zeros(200, 5)], dim=1)
    assert linear_cka(x, wide) == pytest.approx(1.0)               # different widths are fine
    noise = randn(200, 12, seed=3)
    assert linear_cka(x, noise) < 0.2
    assert linear_cka(x, noise) == pytest.approx(linear_cka(noise, x))
    assert linear_cka(x.numpy(), noise.numpy()) == pytest.approx(linear_cka(x, noise))
    # the Gram-matrix (n × n) form of Kornblith et al. gives the same value
    xc, yc = x - x.mean(0), noise - noise.mean(0)
    kx, ky = (xc @ xc.T).double(), (yc @ yc.T).double()
    assert linear_cka(x, noise) == pytest.approx(float((kx * ky).sum() / (kx.norm() * ky.norm())), rel=1e-6)
    # a representation that is partly shared scores in between
    mixed = x[:, :5]
    assert 0.2 < linear_cka(x, mixed) < 1.0


@pytest.mark.parametrize("x, y, error, match", [
    (torch.ones(5, 2), torch.ones(6, 2), ValueError, "5 rows but y has 6"),
    (torch.ones(5), torch.ones(5, 2), ValueError, "matrix"),
    (torch.ones(1, 2), torch.ones(1, 2), ValueError, "at least 2"),
    (torch.ones(5, 2), torch.randn(5, 2), ValueError, "constant"),
    ([[1.0, 2.0]], torch.ones(1, 2), TypeError, "torch.Tensor or numpy"),
])
def test_linear_cka_errors(x, y, error, match):
    with pytest.raises(error, match=match):
        linear_cka(x, y)


def test_cka_matrix_and_token_features():
    h = randn(3, 5, 4, seed=1)
    m = mask_bs()
    tokens = token_features(h, m)
    assert tokens.shape == (int(m.sum()), 4)
    assert torch.equal(tokens[:5], h[0])
    assert token_features(h).shape == (15, 4)
    a, b = randn(50, 4, seed=1), randn(50, 6, seed=2)
    mat = cka_matrix([a, b], [a, b, a])
    assert mat.shape == (2, 3)
    assert mat[0, 0] == pytest.approx(1.0) and mat[0, 2] == pytest.approx(1.0) and mat[1, 1] == pytest.approx(1.0)
    assert mat[0, 1] == pytest.approx(linear_cka(a, b), abs=1e-12)   # the shared-centring shortcut, same numbers
    assert mat[1, 0] == pytest.approx(linear_cka(b, a), abs=1e-12)
    with pytest.raises(ValueError, match="at least one"):
        cka_matrix([], [a])
    with pytest.raises(ValueError, match="row counts"):
        cka_matrix([a], [randn(40, 4, seed=3)])
    with pytest.raises(ValueError, match="constant"):
        cka_matrix([a], [torch.ones(50, 3)])
    with pytest.raises(ValueError, match="matrix"):
        cka_matrix([randn(50, 2, 2, seed=4)], [a])
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        cka_matrix([[[1.0, 2.0]]], [a])
    with pytest.raises(ValueError, match="\\(B, S, H\\)"):
        token_features(randn(3, 4))
