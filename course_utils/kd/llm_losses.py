"""Distillation losses for language models: token-level KD that fits in memory, GKD's generalized JSD, and ULD.

Same conventions as :mod:`course_utils.kd.losses` (z = ``student_logits``, v = ``teacher_logits``, T = ``temperature``,
q = softmax(z/T), p = softmax(v/T), KD term = T² · KL(p ‖ q) averaged over distributions, ``alpha_kd`` weights
the KD term). Logits of a causal LM have shape ``(B, S, V)``: batch, sequence positions, vocabulary; every
position is one distribution.

What is here and when to use it:

=========================================  ==============================================================
function                                   use it for
=========================================  ==============================================================
:func:`chunked_kd_loss`                    token-level T²·KL(p ‖ q) at LLM vocabulary sizes without the
                                           5× ``B·S·V`` memory of the naive ``F.kl_div`` path
:func:`causal_lm_distillation_loss`        the full objective for a causal LM: shift for next-token
                                           prediction, mask ``-100`` labels, (1 − α)·CE + α·T²·KL
:func:`generalized_jsd_loss`               GKD's generalized Jensen–Shannon divergence (Agarwal et al. 2024)
:func:`uld_loss`                           Universal Logit Distillation (Boizard et al. 2024): works across
                                           *different* tokenizers / vocabulary sizes
:func:`topk_kd_loss`,                      KD against a teacher cached once as its top-k logits per token
:func:`causal_lm_topk_distillation_loss`   (DistillKit's sparse KD): no teacher forward in the training loop
=========================================  ==============================================================

Token-level losses (the first three) need one shared vocabulary: a Mistral teacher (32 000 logits) and a Phi-2
student (51 200 logits) cannot be compared entry by entry, and these functions refuse such a pair with an error
that names both sizes. Use sequence-level KD (fine-tune on teacher-generated text) or :func:`uld_loss` instead.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .losses import (
    DistillationLoss,
    _validate_mask,
    _validate_pair,
    distillation_loss,
    kl_divergence,
    validate_alpha_kd,
    validate_logits,
    validate_temperature,
)

__all__ = ['CHUNK_ELEMENTS', 'default_chunk_size', 'check_same_vocabulary', 'chunked_distillation_loss', 'chunked_kd_loss', 'shift_labels', 'causal_lm_distillation_loss', 'topk_kd_loss', 'causal_lm_topk_distillation_loss', 'generalized_jsd_loss', 'sampled_token_kd_loss', 'uld_loss']


#: elements (positions × vocabulary) per chunk when ``chunk_size`` is left to :func:`default_chunk_size`:
#: 2**20 fp32 values = 4 MiB per temporary, i.e. 20 positions at V = 51 200.
CHUNK_ELEMENTS = 2**20


def default_chunk_size(vocab_size: int) -> int:
    """Positions per chunk so that one chunk holds about :data:`CHUNK_ELEMENTS` logits (at least 1)."""
    return max(1, CHUNK_ELEMENTS // int(vocab_size))


# ----------------------------------------------------------------------------------------------- validation
def check_same_vocabulary(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Raise ``ValueError`` if the last (vocabulary) axes differ: token-level KD is then undefined.

    The message names both sizes and the two ways out (sequence-level KD, :func:`uld_loss`).
    """
    if not (isinstance(student_logits, torch.Tensor) and isinstance(teacher_logits, torch.Tensor)):
        return  # the type errors come from validate_logits, with their own message
    if student_logits.dim() == 0 or teacher_logits.dim() == 0:
        return
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vs != vt:
        raise ValueError(
            f"vocabulary mismatch: student_logits have {vs} entries per position, teacher_logits have {vt}. "
            "Token-level KD (KL or JSD between per-token distributions) needs teacher and student to share one "
            "tokenizer, entry i meaning the same token in both. Two alternatives work across tokenizers: "
            "sequence-level KD (let the teacher generate responses and fine-tune the student on that text), or "
            "the cross-tokenizer loss course_utils.kd.llm_losses.uld_loss (Universal Logit Distillation, "
            "Boizard et al. 2024, which compares sorted probabilities)."
        )


def _sample_rows(x: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Up to ``k`` evenly spaced distributions of ``x`` as a small ``(k, V)`` copy, whatever its strides."""
    leading = tuple(x.shape[:-1])
    n = math.prod(leading)
    if n == 0:
        return x.reshape(0, x.shape[-1])
    idx = torch.linspace(0, n - 1, min(k, n), device=x.device).round().long().unique()
    if not leading:
        return x.detach().reshape(1, -1)
    coords = torch.unravel_index(idx, leading)
    return x.detach()[coords]


def _cheap_validate_logits(x: torch.Tensor, name: str) -> None:
    """:func:`validate_logits` for tensors too big to scan in full.

    Type, dtype and shape are checked exactly; NaN/inf and "these are probabilities" on a few sampled rows
    (the chunk loop checks every chunk for NaN/inf as it goes, so nothing non-finite gets through).
    """
    if (not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[-1] < 2
            or x.numel() == 0):
        validate_logits(x, name)  # raises the standard message before any full-size work
    validate_logits(_sample_rows(x), name)


def _cheap_validate_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    _cheap_validate_logits(student_logits, "student_logits")
    _cheap_validate_logits(teacher_logits, "teacher_logits")
    check_same_vocabulary(student_logits, teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)} vs teacher_logits "
            f"{tuple(teacher_logits.shape)}. Both must be (..., V) with identical leading dimensions (same batch, "
            "same sequence positions); check padding/truncation and batch order."
        )


def _validate_labels(labels: torch.Tensor, leading: tuple[int, ...], vocab: int, ignore_index: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be an integer torch.Tensor of shape {leading}, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer token ids (dtype long), got {labels.dtype}")
    if tuple(labels.shape) != leading:
        raise ValueError(f"labels must have the logits' leading shape {leading}, got {tuple(labels.shape)}")
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        raise ValueError(f"labels must lie in [0, {vocab}) (or be ignore_index={ignore_index}); found "
                         f"{labels[bad].unique().tolist()[:5]}. Are the labels from the student's tokenizer?")
    return labels.long()


def _raise_non_finite(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    # Error path only: a full scan is fine here and gives the standard message with the full count.
    validate_logits(student_logits, "student_logits", check_probabilities=False)
    validate_logits(teacher_logits, "teacher_logits", check_probabilities=False)
    raise ValueError("the loss became non-finite although the logits are finite; please report this input")


# ------------------------------------------------------------------------------------------- chunked KD loss
class _ChunkedDistillation(torch.autograd.Function):
    """(1 − α)·CE + α·T²·KL(p ‖ q) whose gradient is computed chunk by chunk *inside forward*.

    Forward walks over chunks of positions; for each chunk it computes the loss and the exact gradient
    ∂loss/∂z = α·T·(q − p)/N_kd + (1 − α)·(softmax(z) − onehot(y))/N_ce, and writes it into a gradient buffer:
    either a preallocated ``empty_like`` tensor, or (``inplace_grad``) the student logits' own storage.
    Backward only multiplies that buffer by ``grad_output`` (a no-op when it is 1). No B×S×V temporary exists
    at any time; the largest temporaries are a few chunk×V tensors.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, labels, kd_mask, temperature, alpha_kd, chunk_size,
                inplace_grad, need_grad):
        vocab = student_logits.shape[-1]
        z = student_logits.detach()
        v = teacher_logits.detach()
        zf = z.reshape(-1, vocab)  # a view for contiguous logits (the usual case), else a copy
        vf = v.reshape(-1, vocab)
        rows = zf.shape[0]
        compute_dtype = torch.promote_types(z.dtype, torch.float32)
        # needs_input_grad is True under torch.no_grad() as well; the caller passes the real answer
        need_grad = need_grad and ctx.needs_input_grad[0]
        t = temperature
        # Both values are always computed (they are logged; distillation_loss reports them at alpha_kd = 0 or 1
        # too); each gradient only when its term is weighted.
        use_ce = labels is not None
        grad_kd, grad_ce = alpha_kd > 0.0, alpha_kd < 1.0

        n_kd = int(kd_mask.sum()) if kd_mask is not None else rows
        if use_ce:
            ce_valid = labels >= 0
            n_ce = int(ce_valid.sum())
        if need_grad:
            if inplace_grad and zf.data_ptr() == z.data_ptr() and z.is_contiguous():
                # Same storage *and* same version counter as the caller's tensor (detach() shares both): every
                # write below bumps its version, so any other autograd node that saved these logits for its own
                # backward fails loudly ("modified by an inplace operation") instead of computing garbage.
                grad = zf
            else:
                grad = torch.empty(zf.shape, dtype=z.dtype, device=z.device)

        kd_sum = torch.zeros((), dtype=torch.float64, device=z.device)
        ce_sum = torch.zeros((), dtype=torch.float64, device=z.device)
        for start in range(0, rows, chunk_size):
            stop = min(start + chunk_size, rows)
            zc = zf[start:stop].to(compute_dtype)  # a view when the dtype matches: never written in place
            if not bool(torch.isfinite(zc).all()) or not bool(torch.isfinite(vf[start:stop]).all()):
                _raise_non_finite(student_logits, teacher_logits)
            g = None
            # the KD value (and, when it is weighted, its gradient)
            log_p = torch.log_softmax(vf[start:stop].to(compute_dtype) / t, dim=-1)
            log_q = torch.log_softmax(zc / t, dim=-1)
            p = log_p.exp()
            log_p.sub_(log_q)  # log p − log q, in place: one temporary fewer
            kl_rows = (p.unsqueeze(-2) @ log_p.unsqueeze(-1)).reshape(-1)  # Σ_c p (log p − log q), no temp
            del log_p
            coef = torch.full((stop - start,), alpha_kd * t / n_kd, dtype=compute_dtype, device=z.device)
            if kd_mask is not None:
                m = kd_mask[start:stop]
                kl_rows = kl_rows * m
                coef = coef * m
            kd_sum += kl_rows.sum(dtype=torch.float64)
            if need_grad and grad_kd:
                g = log_q.exp_().sub_(p).mul_(coef.unsqueeze(-1))  # α·T·(q − p)/N_kd
            del log_q, p
            if use_ce:
                y = labels[start:stop]
                ok = ce_valid[start:stop]
                log_s = torch.log_softmax(zc, dim=-1)  # CE at T = 1
                picked = log_s.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                ce_sum -= (picked * ok).sum(dtype=torch.float64)
                if need_grad and grad_ce:
                    scale = ((1.0 - alpha_kd) / max(n_ce, 1)) * ok.to(compute_dtype)
                    gce = log_s.exp_()
                    gce.scatter_add_(-1, y.clamp(min=0).unsqueeze(-1), torch.full_like(picked, -1.0).unsqueeze(-1))
                    gce.mul_(scale.unsqueeze(-1))
                    g = gce if g is None else g.add_(gce)
                del log_s
            if need_grad:
                if g is None:
                    grad[start:stop].zero_()
                else:
                    grad[start:stop].copy_(g)
            del zc, g
        kd = kd_sum / n_kd * (t * t)
        ce = (ce_sum / n_ce) if use_ce else ce_sum
        loss = alpha_kd * kd + (1.0 - alpha_kd) * ce if use_ce else alpha_kd * kd
        if not (math.isfinite(float(loss))):
            _raise_non_finite(student_logits, teacher_logits)
        ctx.grad = grad if need_grad else None
        ctx.shape = student_logits.shape
        out_dtype = compute_dtype
        loss, ce, kd = loss.to(out_dtype), ce.to(out_dtype), kd.to(out_dtype)
        ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "the chunked KD loss was differentiated twice (backward(retain_graph=True) then backward again); its "
                "gradient is computed once in forward and handed over on the first backward. Recompute the loss."
            )
        ctx.grad = None
        if grad_loss is not None and bool(grad_loss != 1):
            grad.mul_(grad_loss.to(grad.dtype))
        return grad.view(ctx.shape), None, None, None, None, None, None, None, None


def _validate_chunk_size(chunk_size: int | None, vocab: int) -> int:
    if chunk_size is None:
        return default_chunk_size(vocab)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (positions per chunk), got {chunk_size!r}")
    return int(chunk_size)


def chunked_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha_kd: float = 1.0,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    inplace_grad: bool = False,
) -> DistillationLoss:
    """Memory-lean ``(1 − alpha_kd) · CE(z, y) + alpha_kd · T² · KL(p ‖ q)`` over ``(..., V)`` logits.

    The same value and gradient as :func:`course_utils.kd.losses.distillation_loss` (CE at T = 1 over positions whose
    label is not ``ignore_index``; KD averaged over the positions selected by ``mask``, or by the labels when
    ``mask`` is None and labels are given), computed chunk by chunk; see :func:`chunked_kd_loss` for the memory
    story and ``inplace_grad``. Only ``loss`` carries a gradient; ``ce`` and ``kd`` are detached, for logging.

    Returns:
        :class:`~course_utils.kd.losses.DistillationLoss` ``(loss, ce, kd)``.
    """
    _cheap_validate_pair(student_logits, teacher_logits)
    t = validate_temperature(temperature)
    alpha_kd = validate_alpha_kd(alpha_kd)
    leading = tuple(student_logits.shape[:-1])
    vocab = student_logits.shape[-1]
    chunk_size = _validate_chunk_size(chunk_size, vocab)
    if not isinstance(inplace_grad, bool):
        raise TypeError(f"inplace_grad must be True or False, got {inplace_grad!r}")
    flat_labels = None
    if labels is None:
        if alpha_kd != 1.0:
            raise ValueError(f"labels=None is only allowed with alpha_kd=1 (soft targets only), got alpha_kd={alpha_kd}")
    else:
        labels = _validate_labels(labels, leading, vocab, ignore_index)
        valid = labels != ignore_index
        if not bool(valid.any()):
            raise ValueError(f"every label equals ignore_index={ignore_index}; nothing to learn from in this batch")
        flat_labels = torch.where(valid, labels, torch.full_like(labels, -1)).reshape(-1)
        if mask is None:
            mask = valid
    mask = _validate_mask(mask, leading) if leading else None
    flat_mask = mask.reshape(-1) if mask is not None else None
    if not leading:  # a single distribution: treat it as one row
        student_logits, teacher_logits = student_logits.unsqueeze(0), teacher_logits.unsqueeze(0)
        if flat_labels is not None:
            flat_labels = flat_labels.reshape(1)
    need_grad = torch.is_grad_enabled() and student_logits.requires_grad
    loss, ce, kd = _ChunkedDistillation.apply(
        student_logits, teacher_logits, flat_labels, flat_mask, t, alpha_kd, chunk_size, inplace_grad, need_grad
    )
    return DistillationLoss(loss, ce, kd)


def chunked_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
    inplace_grad: bool = False,
) -> torch.Tensor:
    """Token-level ``T² · KL(p ‖ q)`` over ``(..., V)`` logits that never holds a full ``(..., V)`` temporary.

    Same value and gradient as :func:`course_utils.kd.losses.soft_target_loss` (forward KL, averaged over the
    distributions selected by ``mask``), but at LLM sizes it needs a fraction of the memory:

    * The naive path, ``F.kl_div(log_softmax(z/T), log_softmax(v/T), log_target=True)``, keeps several
      ``B·S·V`` tensors alive for backward (z/T, both log-softmaxes, the gradient of each op): about 5× the
      logits tensor above the inputs (B=4, S=512, V=51 200 fp32: 0.39 GiB of logits, ~2 GiB of loss).
    * Here a custom :class:`torch.autograd.Function` loops over chunks of ``chunk_size`` positions and computes,
      in *forward*, each chunk's loss **and** its gradient ∂(T²·KL)/∂z = T·(q − p)/N; backward just scales the
      stored gradient by ``grad_output``. Only a few ``chunk_size × V`` temporaries ever exist. This is the
      Liger-Kernel recipe (Hsu et al. 2024), in plain PyTorch.

    Where the gradient goes (``inplace_grad``):

    * ``False`` (default, safe): into a preallocated buffer the size of the logits (1× extra; the naive path
      allocates that gradient too). The logits are left untouched.
    * ``True``: into the student logits' **own storage**, overwriting them (the gradient of z has z's shape,
      and z is not needed again once its gradient is known). Memory above the inputs drops to the chunk
      temporaries (~0.07× of naive on CPU). The price: after the call, ``student_logits`` hold gradients, not
      logits — compute anything else you need from them (accuracy, a separate CE term, samples) *before*.
      The write bumps the tensor's version counter, so another autograd node that saved these logits for its
      backward raises "modified by an inplace operation" instead of silently using wrong values. It only applies
      when gradients are needed (under ``torch.no_grad()`` nothing is written) and to contiguous logits (others
      fall back to a buffer). Backward may run only once (no ``retain_graph`` double backward).

    Args:
        student_logits: ``(..., V)`` raw scores, e.g. ``(B, S, V)``; fp16/bf16 are upcast chunk by chunk to
            fp32 for the maths, and the gradient is stored in their dtype (tiny entries may flush to zero in
            fp16; upcast the logits to fp32 first if that matters, as Hugging Face's loss does).
        teacher_logits: same shape; treated as constants.
        temperature: T > 0.
        mask: optional bool ``(...)``: which positions count (e.g. ``labels != -100``); N is its number of True.
        chunk_size: positions per chunk; default :func:`default_chunk_size` (≈ 2**20 logits per chunk).
            Memory scales with it, speed barely (a chunk of 16–64 positions already saturates the kernels).
        inplace_grad: see above.

    Returns:
        Scalar tensor (fp32, or fp64 for fp64 inputs).
    """
    return chunked_distillation_loss(student_logits, teacher_logits, None, temperature, 1.0, mask, chunk_size,
                                     inplace_grad=inplace_grad).loss


# ----------------------------------------------------------------------------------------- causal LM wrapper
def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token targets aligned with the logits: ``out[..., t] = labels[..., t + 1]``, last position ignored.

    Shifting the *labels* (not slicing ``logits[:, :-1]``) keeps the logits contiguous, so no ``B·S·V`` copy
    is made — the same trick as Hugging Face's ``ForCausalLMLoss``.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() < 1:
        raise TypeError("labels must be an integer tensor of shape (B, S) (or (S,))")
    return F.pad(labels[..., 1:], (0, 1), value=ignore_index)


def causal_lm_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    alpha_kd: float = 0.5,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    inplace_grad: bool = False,
) -> DistillationLoss:
    """Token-level KD for a causal LM: ``(1 − alpha_kd) · CE + alpha_kd · T² · KL(p ‖ q)`` on next tokens.

    ``labels`` are the input ids with ``ignore_index`` (−100) on positions that must not be learned (prompt,
    padding), as Hugging Face's data collators produce them, *unshifted*: position t's logits predict
    ``labels[t + 1]``. The function shifts them (:func:`shift_labels`) and leaves a position out of *both* terms
    when its target is ``ignore_index`` — the teacher's opinion about prompt tokens is not distilled.

    Args:
        student_logits: ``(B, S, V)`` student outputs.
        teacher_logits: ``(B, S, V)`` teacher outputs for the same token ids — hence the same tokenizer; a
            different vocabulary size raises ``ValueError`` (see :func:`check_same_vocabulary`).
        labels: ``(B, S)`` integer ids or ``ignore_index``.
        temperature: T > 0 for the KD term (CE uses T = 1).
        alpha_kd: weight of the KD term in [0, 1].
        chunk_size: None → :func:`course_utils.kd.losses.distillation_loss` (plain autograd); an integer → the
            chunked loss (:func:`chunked_distillation_loss`), same value and gradient, a fraction of the memory.
        ignore_index: label value to skip.
        inplace_grad: chunked path only; see :func:`chunked_kd_loss`.

    Returns:
        ``DistillationLoss(loss, ce, kd)``; in the chunked path only ``loss`` has a gradient.
    """
    check_same_vocabulary(student_logits, teacher_logits)
    if isinstance(student_logits, torch.Tensor) and student_logits.dim() < 2:
        raise ValueError(f"student_logits must be (B, S, V) or (S, V), got shape {tuple(student_logits.shape)}")
    if isinstance(labels, torch.Tensor) and isinstance(student_logits, torch.Tensor) and \
            tuple(labels.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"labels must have the logits' leading shape {tuple(student_logits.shape[:-1])} (unshifted "
                         f"input ids with {ignore_index} on ignored positions), got {tuple(labels.shape)}")
    targets = shift_labels(labels, ignore_index)
    if chunk_size is None:
        if inplace_grad:
            raise ValueError("inplace_grad=True needs the chunked path: pass chunk_size as well")
        return distillation_loss(student_logits, teacher_logits, targets, temperature, alpha_kd, ignore_index)
    return chunked_distillation_loss(student_logits, teacher_logits, targets, temperature, alpha_kd,
                                     chunk_size=chunk_size, ignore_index=ignore_index, inplace_grad=inplace_grad)


# ------------------------------------------------------------------------------------- cached top-k teacher
def topk_kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logits: torch.Tensor,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
    teacher_logsumexp: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL`` against a teacher stored as its top-k logits per position (sparse KD, as in DistillKit).

    Storing all ``V`` teacher logits per token is impractical (49 152 floats per token for SmolLM2), so the teacher's
    ``k`` largest logits and their token ids are cached once. Two ways to turn them back into a target:

    * ``teacher_logsumexp=None`` — **renormalise**: p̃ = softmax(v_topk / T) on the k tokens, 0 elsewhere, and

          T² · KL(p̃ ‖ q) = T² · Σ_j p̃_j (log p̃_j − log q[id_j]),      q = softmax(z / T) over all V tokens.

      This equals :func:`course_utils.kd.losses.soft_target_loss` with the teacher's logits set to −∞ outside its
      top k: every token outside them is pushed towards probability 0, however much mass the teacher gave them.
    * ``teacher_logsumexp`` = logsumexp(v / T) over the *full* vocabulary, cached with the top k — **tail bucket**:
      p_j = exp(v_j / T − lse) are the teacher's exact top-k probabilities and the rest, p_tail = 1 − Σ_j p_j,
      becomes one extra outcome "any other token"; the student's is q_tail = Σ_{i ∉ top-k} q_i. The loss is the
      exact KL between the two distributions coarsened to k + 1 outcomes:

          T² · [ Σ_j p_j (log p_j − log q[id_j]) + p_tail (log p_tail − log q_tail) ]

      It keeps the teacher's confidence (how much mass lies outside its favourites), which matters at T > 1, where
      the top 32 of 49 152 tokens may hold well under half the mass. Its gradient for a token i outside the top k is
      T · q_i (1 − p_tail / q_tail) / N: the tail is scaled as a whole, not zeroed.

    Args:
        student_logits: ``(..., V)``.
        topk_ids: integer ``(..., k)`` token ids in ``[0, V)``.
        topk_logits: ``(..., k)`` the teacher's raw logits for those ids (not probabilities).
        temperature: T > 0 (for the tail bucket: the T the logsumexp was computed at).
        mask: optional bool ``(...)``: which positions count.
        teacher_logsumexp: optional ``(...)`` logsumexp of the teacher's full logits / T.

    Returns:
        Scalar tensor, averaged over the (masked) positions.
    """
    if not isinstance(student_logits, torch.Tensor) or not isinstance(topk_logits, torch.Tensor):
        raise TypeError("student_logits and topk_logits must be torch.Tensors")
    _cheap_validate_logits(student_logits, "student_logits")
    validate_logits(topk_logits, "topk_logits", check_probabilities=False)
    t = validate_temperature(temperature)
    if not isinstance(topk_ids, torch.Tensor) or topk_ids.is_floating_point() or topk_ids.dtype == torch.bool:
        raise TypeError("topk_ids must be an integer torch.Tensor of token ids")
    leading = tuple(student_logits.shape[:-1])
    if tuple(topk_ids.shape) != tuple(topk_logits.shape) or tuple(topk_ids.shape[:-1]) != leading:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_logits {tuple(topk_logits.shape)} must both be "
                         f"{leading} + (k,), matching student_logits {tuple(student_logits.shape)}")
    vocab = student_logits.shape[-1]
    if bool((topk_ids < 0).any()) or bool((topk_ids >= vocab).any()):
        raise ValueError(f"topk_ids must lie in [0, {vocab}) (the student's vocabulary); found "
                         f"{int(topk_ids.min())} … {int(topk_ids.max())}. Token-level KD needs one shared "
                         "vocabulary: were the ids cached from a teacher with another tokenizer?")
    if teacher_logsumexp is not None:
        if not isinstance(teacher_logsumexp, torch.Tensor) or tuple(teacher_logsumexp.shape) != leading:
            raise ValueError(f"teacher_logsumexp must be a tensor of shape {leading} (one value per position)")
        if not bool(torch.isfinite(teacher_logsumexp).all()):
            raise ValueError("teacher_logsumexp contains non-finite values")
    mask = _validate_mask(mask, leading)
    z, ids, v = student_logits, topk_ids.long(), topk_logits.detach()
    lse = teacher_logsumexp.detach() if teacher_logsumexp is not None else None
    if mask is not None:
        z, ids, v = z[mask], ids[mask], v[mask]
        lse = lse[mask] if lse is not None else None
    dtype = torch.promote_types(v.dtype, torch.float32)
    log_q_all = torch.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)) / t, dim=-1)
    log_q = log_q_all.gather(-1, ids).to(dtype)
    if lse is None:
        log_p = torch.log_softmax(v.to(dtype) / t, dim=-1)
        per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
        return per_position.mean() * (t * t)
    log_p = v.to(dtype) / t - lse.to(dtype).unsqueeze(-1)
    if bool((log_p > 1e-4).any()):
        raise ValueError("teacher_logsumexp is smaller than a cached logit / T: it must be the logsumexp of the "
                         "teacher's full logits at this temperature")
    log_p = log_p.clamp(max=0.0)
    p = log_p.exp()
    if ids.shape[-1] >= vocab:  # nothing outside the "top k": no tail bucket
        return (p * (log_p - log_q)).sum(-1).mean() * (t * t)
    p_tail = (1.0 - p.sum(-1)).clamp(min=0.0)
    # log q_tail = logsumexp of the student's log-probabilities outside the top k (exact, no 1 − Σ cancellation)
    log_q_tail = torch.logsumexp(log_q_all.scatter(-1, ids, float("-inf")), dim=-1).to(dtype)
    tail = torch.where(p_tail > 0, p_tail * (torch.log(p_tail.clamp(min=1e-30)) - log_q_tail),
                       torch.zeros_like(p_tail))
    per_position = (p * (log_p - log_q)).sum(-1) + tail
    return per_position.mean() * (t * t)


def causal_lm_topk_distillation_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    alpha_kd: float = 0.5,
    ignore_index: int = -100,
    teacher_logsumexp: torch.Tensor | None = None,
) -> DistillationLoss:
    """:func:`causal_lm_distillation_loss` with a cached top-k teacher (:func:`topk_kd_loss`) in the KD term.

    ``topk_ids`` / ``topk_logits`` are ``(B, S, k)``: the teacher's top-k at the *same* positions as the
    student's logits (position t predicts token t + 1 in both); ``teacher_logsumexp`` ``(B, S)`` selects the
    tail-bucket form. ``labels`` are unshifted, as in :func:`causal_lm_distillation_loss`; positions whose next
    token is ``ignore_index`` count in neither term.
    """
    t = validate_temperature(temperature)
    alpha_kd = validate_alpha_kd(alpha_kd)
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"labels must be an integer tensor of the logits' leading shape "
                         f"{tuple(student_logits.shape[:-1])} (unshifted input ids with {ignore_index} on ignored "
                         "positions)")
    targets = shift_labels(labels, ignore_index)
    valid = targets != ignore_index
    if not bool(valid.any()):
        raise ValueError(f"every label equals ignore_index={ignore_index}; nothing to learn from in this batch")
    ce = F.cross_entropy(student_logits[valid], targets[valid].long())
    kd = topk_kd_loss(student_logits, topk_ids, topk_logits, t, mask=valid, teacher_logsumexp=teacher_logsumexp)
    return DistillationLoss((1.0 - alpha_kd) * ce + alpha_kd * kd, ce, kd)


# -------------------------------------------------------------------------------------------- generalized JSD
def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """GKD's generalized Jensen–Shannon divergence, ``T² · JSD_β(p ‖ q)``, averaged over distributions.

    With teacher p = softmax(v/T), student q = softmax(z/T) and the mixture m = β·p + (1 − β)·q
    (Agarwal et al. 2024, "On-Policy Distillation of Language Models", eq. for D_JSD(β)):

        JSD_β(p ‖ q) = β · KL(p ‖ m) + (1 − β) · KL(q ‖ m)

    The limits (checked numerically in ``tests/kd/test_llm_losses.py``):

    * β → 0: JSD_β / β → KL(p ‖ q), the *forward* KL (mode-covering, standard KD). JSD_β itself → 0, so, as in
      TRL's ``GKDTrainer``, ``beta=0`` is defined as exactly the forward KL: ``beta=0`` equals
      :func:`course_utils.kd.losses.soft_target_loss`.
    * β → 1: JSD_β / (1 − β) → KL(q ‖ p), the *reverse* KL (mode-seeking); ``beta=1`` is defined as exactly
      T²·KL(q ‖ p) (``soft_target_loss(..., direction="reverse")``).
    * β = 0.5: the symmetric, bounded Jensen–Shannon divergence (≤ log 2 per position before the T² factor).

    Unlike TRL, the result is multiplied by T² (the course's convention for every KD term); at T = 1 they agree.
    The endpoints are a change of scale (JSD_β is O(β) near 0), so compare losses only at the same β.

    Args:
        student_logits, teacher_logits: ``(..., V)`` with the same shape and vocabulary.
        beta: β in [0, 1].
        temperature: T > 0.
        mask: optional bool ``(...)``: which positions count.
    """
    check_same_vocabulary(student_logits, teacher_logits)
    _validate_pair(student_logits, teacher_logits)
    t = validate_temperature(temperature)
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be a number in [0, 1] (0: forward KL, 1: reverse KL), got {beta!r}")
    beta = float(beta)
    if beta == 0.0:
        return kl_divergence(student_logits, teacher_logits, t, "forward", mask) * (t * t)
    if beta == 1.0:
        return kl_divergence(student_logits, teacher_logits, t, "reverse", mask) * (t * t)
    mask = _validate_mask(mask, tuple(student_logits.shape[:-1]))
    log_q = torch.log_softmax(student_logits / t, dim=-1)
    log_p = torch.log_softmax(teacher_logits.detach() / t, dim=-1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    per_position = beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1.0 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)
    if mask is not None:
        per_position = per_position[mask]
    return per_position.mean() * (t * t)


# ------------------------------------------------------------------------------------------- sampled-token KD
def sampled_token_kd_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-sample reverse-KL estimator: a policy-gradient loss whose reward is the teacher's opinion of the token
    the student sampled.

    For a token y_t the student sampled from q = softmax(z_t), the per-token *advantage* is

        A_t = −(log q(y_t) − log p(y_t))        (p: the teacher; A_t is a constant: no gradient flows through it)

    and the loss is −mean_t A_t · log q(y_t). Because E_{y∼q}[∇ log q(y)] = 0, its expected gradient is
    E_{y∼q}[(log q(y) − log p(y)) ∇ log q(y)] = ∇ KL(q ‖ p): the same per-position *reverse* KL as
    :func:`generalized_jsd_loss` with ``beta=1`` and T = 1, estimated from one token instead of summed over the
    vocabulary — unbiased only when ``tokens`` really were sampled from the student at temperature 1. The teacher
    sends one number per token, log p(y_t), instead of V logits.

    Args:
        student_logits: ``(..., V)`` logits at the positions that *predict* ``tokens`` (already shifted: row t
            scores token t).
        teacher_logprobs: ``(...)`` the teacher's log-probability of each token (e.g.
            :func:`course_utils.llm.on_policy.score_tokens`); treated as a constant.
        tokens: ``(...)`` integer ids of the sampled tokens.
        mask: optional bool ``(...)``: which positions count (the completion, not the prompt or padding).

    Returns:
        ``(loss, advantages)``: the scalar loss and the detached ``(...)`` advantages A_t (minus their mean over the
        mask is a one-sample estimate of the reverse KL).
    """
    _cheap_validate_logits(student_logits, "student_logits")
    leading = tuple(student_logits.shape[:-1])
    if not isinstance(teacher_logprobs, torch.Tensor) or not teacher_logprobs.dtype.is_floating_point \
            or tuple(teacher_logprobs.shape) != leading:
        raise ValueError(f"teacher_logprobs must be a float tensor of the logits' leading shape {leading} (one "
                         "log-probability per token), got "
                         f"{getattr(teacher_logprobs, 'dtype', type(teacher_logprobs).__name__)} "
                         f"{tuple(getattr(teacher_logprobs, 'shape', ()))}")
    if bool((teacher_logprobs > 1e-4).any()):
        raise ValueError("teacher_logprobs holds values > 0: pass log-probabilities (log_softmax, then the sampled "
                         "token's entry), not logits or probabilities")
    if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point or tuple(tokens.shape) != leading:
        raise ValueError(f"tokens must be an integer tensor of the logits' leading shape {leading} (the sampled ids, "
                         f"aligned with the logits that predict them), got "
                         f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    vocab = student_logits.shape[-1]
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got {int(tokens.min())} … {int(tokens.max())}")
    mask = _validate_mask(mask, leading)
    log_q = torch.log_softmax(student_logits, dim=-1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    advantages = -(log_q - teacher_logprobs.detach()).detach()
    per_token = -advantages * log_q
    if mask is not None:
        if not bool(mask.any()):
            raise ValueError("the mask selects no position: nothing was sampled to learn from")
        per_token = per_token[mask]
    return per_token.mean(), advantages


# ----------------------------------------------------------------------------------------------------- ULD
def uld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    student_mask: torch.Tensor | None = None,
    teacher_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al. 2024, arXiv:2402.12030): KD across different tokenizers.

    Token ids of two tokenizers mean different things, so probabilities cannot be compared entry by entry.
    ULD compares their *shapes* instead: at each aligned position, sort both distributions in decreasing order,
    pad the shorter vocabulary with zeros, and take the L1 distance

        ULD = Σ_i | sort↓(q)_i − sort↓(p)_i |        (a closed form of the Wasserstein-1 distance under a
                                                     uniform transport cost)

    averaged over aligned positions. It is 0 when the two distributions are equal up to a relabelling of the
    vocabulary (e.g. a permuted vocabulary), and at most 2. It teaches the student how confident the teacher is
    (its entropy, the mass of its top tokens), not which token it prefers — the paper adds it to the usual
    CE loss on the teacher's text: ``loss = CE + λ · ULD`` (λ ≈ 1–1.5 in the paper).

    Alignment rule: tokenizations of the same text have different lengths, so positions are paired by *order*,
    not by content. In batch row b the positions selected by ``student_mask[b]`` (all positions if None) and by
    ``teacher_mask[b]`` are taken in order, the i-th student position is paired with the i-th teacher position,
    and the longer list is truncated to the shorter one (the paper's rule: truncate to the shorter answer).
    Pass masks that select the logits predicting the answer tokens (e.g. ``shift_labels(labels) != -100``), so
    both lists start at the first answer token.

    Args:
        student_logits: ``(B, S_s, V_s)`` or ``(S_s, V_s)``.
        teacher_logits: ``(B, S_t, V_t)`` or ``(S_t, V_t)``; any ``V_t`` and ``S_t``; treated as constants.
        student_mask, teacher_mask: optional bool ``(B, S_s)`` / ``(B, S_t)`` (or ``(S,)`` for 2-D logits).
        temperature: T > 0 applied to both softmaxes (the paper uses 1).

    Returns:
        Scalar tensor: mean over aligned positions of the sorted-probability L1 distance.
    """
    validate_logits(student_logits, "student_logits")
    validate_logits(teacher_logits, "teacher_logits")
    t = validate_temperature(temperature)
    if student_logits.dim() not in (2, 3) or teacher_logits.dim() != student_logits.dim():
        raise ValueError(
            "uld_loss expects logits of shape (B, S, V) for both models (or (S, V) for both); got "
            f"student {tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}"
        )
    z, v = student_logits, teacher_logits.detach()
    if z.dim() == 2:
        z, v = z.unsqueeze(0), v.unsqueeze(0)
        student_mask = student_mask.unsqueeze(0) if isinstance(student_mask, torch.Tensor) else student_mask
        teacher_mask = teacher_mask.unsqueeze(0) if isinstance(teacher_mask, torch.Tensor) else teacher_mask
    if z.shape[0] != v.shape[0]:
        raise ValueError(f"student and teacher batch sizes differ: {z.shape[0]} vs {v.shape[0]}; row b of both must be "
                         "the same example")
    student_mask = _validate_uld_mask(student_mask, tuple(z.shape[:2]), "student_mask")
    teacher_mask = _validate_uld_mask(teacher_mask, tuple(v.shape[:2]), "teacher_mask")
    width = max(z.shape[-1], v.shape[-1])
    total = z.new_zeros((), dtype=torch.promote_types(z.dtype, torch.float32))
    count = 0
    for b in range(z.shape[0]):
        zs = z[b] if student_mask is None else z[b][student_mask[b]]
        vs = v[b] if teacher_mask is None else v[b][teacher_mask[b]]
        n = min(zs.shape[0], vs.shape[0])
        if n == 0:
            continue
        q = torch.softmax(zs[:n].to(total.dtype) / t, dim=-1).sort(dim=-1, descending=True).values
        with torch.no_grad():
            p = torch.softmax(vs[:n].to(total.dtype) / t, dim=-1).sort(dim=-1, descending=True).values
        q = F.pad(q, (0, width - q.shape[-1]))
        p = F.pad(p, (0, width - p.shape[-1]))
        total = total + (q - p).abs().sum()
        count += n
    if count == 0:
        raise ValueError("no aligned position: every batch row has an empty student or teacher mask")
    return total / count


def _validate_uld_mask(mask, leading: tuple[int, int], name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor of shape {leading}, got {type(mask).__name__}")
    if tuple(mask.shape) != leading:
        raise ValueError(f"{name} must have shape {leading} (batch, positions), got {tuple(mask.shape)}")
    return mask.bool()
