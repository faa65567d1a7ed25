"""course_utils.llm.on_policy and the sampled-token loss: masks, rollouts, scores, the loop, and agreement with TRL."""
from __future__ import annotations

import math

import pytest
import torch

from course_utils.kd.llm_losses import generalized_jsd_loss, sampled_token_kd_loss
from course_utils.llm import on_policy, tiny
from course_utils.llm.recipe import llm_recipe

EOS = 2


def _recipe():
    return llm_recipe("small", teacher="", student="", system_prompt=None)


# ------------------------------------------------------------------------------------------ completion mask
def test_completion_mask_keeps_the_first_eos_and_drops_prompt_and_padding():
    seq = torch.tensor([[EOS, 5, 6, 7, EOS, EOS], [4, 5, 6, 8, 9, EOS]])
    mask = on_policy.completion_mask(seq, 3, EOS)
    assert mask.tolist() == [[False, False, False, True, True, False], [False, False, False, True, True, True]]


def test_completion_mask_without_eos_keeps_the_whole_completion():
    seq = torch.tensor([[4, 5, 6, 7]])
    assert on_policy.completion_mask(seq, 2, EOS).tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("seq, p, match", [
    (torch.zeros(2, 4), 1, "integer"), (torch.zeros(4, dtype=torch.long), 1, "integer"),
    (torch.zeros(2, 4, dtype=torch.long), 4, "prompt_length"), (torch.zeros(2, 4, dtype=torch.long), True, "prompt_length"),
])
def test_completion_mask_rejects_bad_input(seq, p, match):
    with pytest.raises(ValueError, match=match):
        on_policy.completion_mask(seq, p, EOS)


# --------------------------------------------------------------------------------------------- the losses
def test_on_policy_loss_is_the_masked_shifted_jsd():
    g = torch.Generator().manual_seed(0)
    seq = torch.tensor([[EOS, 5, 6, 7, EOS, EOS], [4, 5, 6, 8, 9, EOS]])
    z, v = torch.randn(2, 6, 11, generator=g), torch.randn(2, 6, 11, generator=g)
    mask = on_policy.completion_mask(seq, 3, EOS)[:, 1:]
    for beta in (0.0, 0.5, 1.0):
        expected = generalized_jsd_loss(z[:, :-1], v[:, :-1], beta=beta, mask=mask)
        assert torch.allclose(on_policy.on_policy_loss(z, v, seq, 3, EOS, beta), expected)


def test_sampled_token_loss_is_an_unbiased_reverse_kl_gradient():
    # E_{y~q}[gradient of the one-sample loss] equals the gradient of KL(q || p), computed exactly over y
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(7, generator=g, dtype=torch.float64)
    log_p = torch.log_softmax(v, -1)
    exact = torch.autograd.grad(generalized_jsd_loss(z[None], v[None], beta=1.0), z)[0]
    q = torch.softmax(z, -1).detach()
    expected_grad = torch.zeros_like(z)
    for y in range(7):
        loss, adv = sampled_token_kd_loss(z[None], log_p[y][None], torch.tensor([y]))
        expected_grad += q[y] * torch.autograd.grad(loss, z)[0]
        assert math.isclose(float(adv[0]), -(float(torch.log_softmax(z, -1)[y]) - float(log_p[y])), rel_tol=1e-9)
    assert torch.allclose(expected_grad, exact, atol=1e-10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(teacher_logprobs=torch.zeros(2, 4)), "leading shape"),
    (dict(teacher_logprobs=torch.full((2, 3), 0.5)), "log-probabilities"),
    (dict(tokens=torch.zeros(2, 3)), "integer"),
    (dict(tokens=torch.full((2, 3), 9, dtype=torch.long)), r"\[0, 5\)"),
    (dict(mask=torch.zeros(2, 3, dtype=torch.bool)), "selects no position"),
])
def test_sampled_token_loss_rejects_bad_input(kwargs, match):
    args = dict(student_logits=torch.randn(2, 3, 5), teacher_logprobs=-torch.rand(2, 3),
                tokens=torch.zeros(2, 3, dtype=torch.long), mask=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sampled_token_kd_loss(**args)


# ------------------------------------------------------------------------------------ rollouts and scores
@pytest.fixture(scope="module")
def pair():
    tok = tiny.toy_llama_tokenizer()
    return tiny.tiny_llama(tok, layers=2, seed=0), tiny.tiny_llama(tok, layers=2, seed=1), tok


RECORDS = [{"instruction": "tell me about penguins", "response": "penguins like bread"},
           {"instruction": "coffee", "response": "chess"}]


def test_rollouts_share_one_layout(pair):
    student, _, tok = pair
    r = _recipe()
    ids, mask = on_policy.prompt_batch(tok, RECORDS, r)
    assert ids.shape == mask.shape and mask[:, -1].all()          # left padding
    roll = on_policy.sample_completions(student, ids, mask, tok.eos_token_id, tok.pad_token_id, 5, seed=0)
    again = on_policy.sample_completions(student, ids, mask, tok.eos_token_id, tok.pad_token_id, 5, seed=0)
    assert torch.equal(roll.sequences, again.sequences)           # seeded sampling
    assert roll.prompt_length == ids.shape[1] and not roll.completion[:, :roll.prompt_length].any()
    text = on_policy.teacher_text_batch(tok, RECORDS, r, tok.eos_token_id)
    assert text.completion.sum(1).tolist() == [len(tok(x["response"], add_special_tokens=False)["input_ids"]) + 1
                                               for x in RECORDS]  # the response and its EOS


def test_score_tokens_matches_the_shifted_log_softmax(pair):
    student, _, tok = pair
    seq = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    mask = torch.ones_like(seq)
    scores = on_policy.score_tokens(student, seq, mask)
    logits = student(input_ids=seq, attention_mask=mask).logits
    expected = torch.log_softmax(logits[:, :-1], -1).gather(-1, seq[:, 1:, None]).squeeze(-1)
    assert scores.shape == (2, 3) and not scores.requires_grad and torch.allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("method, lmbda", [("gkd", 1.0), ("gkd", 0.0), ("sampled", 1.0), ("sft", 0.0)])
def test_every_method_trains_and_reports(pair, method, lmbda):
    student, teacher, tok = pair
    info = on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, method, lmbda=lmbda, beta=0.5,
                                     config=on_policy.OnPolicyConfig(steps=2, prompts_per_step=2, max_new_tokens=4),
                                     evaluate=lambda m: {"ok": 1}, use_cache=False, progress=False)
    assert len(info["losses"]) == 2 and all(math.isfinite(x) for x in info["losses"])
    assert info["on_policy"] == [lmbda == 1.0] * 2 and info["at_steps"] == {"ok": 1}
    assert any(p.requires_grad for p in info["adapter"].parameters())


def test_a_custom_loss_is_the_one_that_trains(pair):
    student, teacher, tok = pair
    calls = []

    def loss_fn(*args):
        calls.append(1)
        return on_policy.on_policy_loss(*args)

    cfg = on_policy.OnPolicyConfig(steps=2, prompts_per_step=2, max_new_tokens=4)
    mine = on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, lmbda=1.0, config=cfg, loss_fn=loss_fn,
                                     progress=False)
    ref = on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, lmbda=1.0, config=cfg, use_cache=False,
                                    progress=False)
    assert len(calls) == 2 and mine["losses"] == ref["losses"]


def test_a_run_is_cached_and_read_back_without_the_adapter(pair, course_cache):
    student, teacher, tok = pair
    cfg = on_policy.OnPolicyConfig(steps=2, prompts_per_step=2, max_new_tokens=4)
    first = on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, lmbda=1.0, config=cfg, progress=False)
    again = on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, lmbda=1.0, config=cfg, progress=False)
    assert "adapter" in first and "adapter" not in again     # the second call trained nothing
    assert again["losses"] == first["losses"] and again["step_seconds"] == first["step_seconds"]
    assert (course_cache / "models" / "small" / "onpolicy-gkd-l1-b0.5-s0-n2" / "value.json").is_file()


# ------------------------------------------------------------------------------------------- exposure bias
def test_exposure_profile_scores_own_and_teacher_text(pair):
    student, teacher, tok = pair
    prof = on_policy.exposure_profile(student, teacher, tok, _recipe(), RECORDS, max_new_tokens=5)
    teacher_text = on_policy.teacher_text_batch(tok, RECORDS, _recipe(), tok.eos_token_id)
    side = prof["teacher_text"]
    assert side["sequences"] == teacher_text.sequences.tolist()
    assert side["completion"] == teacher_text.completion.int().tolist() and side["count"][0] == len(RECORDS)
    logp = on_policy.score_tokens(teacher, teacher_text.sequences, teacher_text.attention_mask)
    keep = teacher_text.completion[:, 1:]
    assert side["mean_teacher_logprob"] == pytest.approx(float(logp[keep].mean()), abs=1e-4)
    for key in ("own", "teacher_text"):
        assert len(prof[key]["reverse_kl"]) == len(prof[key]["count"]) and min(prof[key]["reverse_kl"]) >= 0


def test_rescore_agrees_with_the_measurement_and_names_a_wrong_shape(pair):
    student, teacher, tok = pair
    own = on_policy.exposure_profile(student, teacher, tok, _recipe(), RECORDS, max_new_tokens=5)["own"]
    yours, measured = on_policy.rescore(own, teacher, on_policy.score_tokens, rows=2)
    assert yours == pytest.approx(measured, abs=1e-5)
    with pytest.raises(ValueError, match="expected"):
        on_policy.rescore(own, teacher, lambda m, s, a: on_policy.score_tokens(m, s, a)[:, 1:])
    with pytest.raises(ValueError, match="exposure_profile"):
        on_policy.rescore({"sequences": []}, teacher, on_policy.score_tokens)
    with pytest.raises(ValueError, match="rows"):
        on_policy.rescore(own, teacher, on_policy.score_tokens, rows=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="ppo"), "method"), (dict(lmbda=1.5), "lmbda"), (dict(beta=-0.1), "beta"),
    (dict(method="sampled", lmbda=0.5), "lmbda=1"), (dict(method="sft", lmbda=1.0), "lmbda=0"),
])
def test_train_on_policy_rejects_bad_settings(pair, kwargs, match):
    student, teacher, tok = pair
    args = dict(method="gkd", lmbda=1.0, beta=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        on_policy.train_on_policy(_recipe(), student, teacher, tok, RECORDS, args.pop("method"), **args)


@pytest.mark.parametrize("field, value", [("steps", 0), ("prompts_per_step", 1.5), ("temperature", 0.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        on_policy.OnPolicyConfig(**{field: value})


# ----------------------------------------------------------------------------------------- TRL agrees
def test_the_course_jsd_equals_trls_up_to_the_t_squared_factor():
    trl_gkd = pytest.importorskip("trl.experimental.gkd")
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(2, 6, 50, generator=g, dtype=torch.float64), torch.randn(2, 6, 50, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50, (2, 6), generator=g)
    labels[:, :2] = -100
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for t in (1.0, 2.0):
            theirs = trl_gkd.GKDTrainer.generalized_jsd_loss(z, v, labels=labels, beta=beta, temperature=t)
            ours = generalized_jsd_loss(z, v, beta=beta, temperature=t, mask=labels != -100)
            assert torch.allclose(ours, theirs * t * t, rtol=1e-10), (beta, t)
