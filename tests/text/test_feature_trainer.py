"""Unit tests for course_utils.text.feature_trainer on tiny BERTs (teacher 4 × 32, student 2 × 16, 2 heads): the loss
is what the docstring says, the projections are trained (they are in the optimizer) but never part of the student,
attention maps need (and get) eager attention, every set-up error, narrow students, CKA helpers and the teacher cache;
and notebook 04's feature students of course_utils.text.recipes (trained, cached, reloaded)."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from course_utils.kd import features, losses
from course_utils.text import feature_trainer, recipes, sentiment
from course_utils.text.feature_trainer import FeatureDistillationTrainer
from course_utils.training import distillation_trainer


from datasets import Dataset  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    "the a movie film plot is was very not good great fun bad awful boring".split()


@pytest.fixture(scope="module")
def train_set(tokenizer):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(VOCAB[5:]) for _ in range(rng.randint(1, 9))) for _ in range(32)]
    return sentiment.tokenize(Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(32)]}), tokenizer,
                         max_length=16)


def bert(layers, hidden, seed, heads=2, **config):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               intermediate_size=2 * hidden, num_labels=2, max_position_embeddings=64, initializer_range=0.2,
               attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    cfg.update(config)
    return BertForSequenceClassification(BertConfig(**cfg))


def args(tmp_path, **overrides):
    kw = dict(output_dir=str(tmp_path), max_steps=3, logging_steps=1, per_device_train_batch_size=8,
              learning_rate=1e-2)
    kw.update(overrides)
    return distillation_trainer.training_args(**kw)


_DEFAULT = object()


def make_trainer(tmp_path, train_set, tokenizer, student=None, teacher=_DEFAULT, **kw):
    student = student if student is not None else bert(2, 16, seed=1)
    teacher = bert(4, 32, seed=2) if teacher is _DEFAULT else teacher
    defaults = dict(hidden_pairs=features.layer_map(2, 4, include_embeddings=True), hidden_weight=1.0,
                    attention_pairs=features.layer_map(2, 4), attention_weight=1.0)
    defaults.update(kw)
    return FeatureDistillationTrainer(model=student, args=args(tmp_path), teacher_model=teacher,
                                      train_dataset=train_set, processing_class=tokenizer, **defaults)


def batch(train_set, tokenizer, n=8):
    rows = train_set.select(range(n))
    feats = [{k: rows[k][i] for k in ("input_ids", "attention_mask", "token_type_ids", "label")} for i in range(n)]
    out = tokenizer.pad(feats, return_tensors="pt")
    out["labels"] = out.pop("label")
    return dict(out)


# ================================================================================================ the loss
@pytest.mark.parametrize("hidden_loss, attention_loss", [("mse", "kl"), ("cosine", "mse")])
def test_loss_is_logit_kd_plus_weighted_feature_terms(tmp_path, train_set, tokenizer, hidden_loss, attention_loss):
    tr = make_trainer(tmp_path, train_set, tokenizer, hidden_weight=0.7, attention_weight=2.0, hidden_loss=hidden_loss,
                      attention_loss=attention_loss, alpha_kd=0.4, temperature=3.0)
    inputs = batch(train_set, tokenizer)
    with tr._attention_maps():
        tr.model.train()
        loss = tr.compute_loss(tr.model, inputs)
        feats = {k: v for k, v in inputs.items() if k != "labels"}
        s = tr.model(**feats, output_hidden_states=True, output_attentions=True)
        with torch.no_grad():
            t = tr.teacher(**feats, output_hidden_states=True, output_attentions=True)
    mask = inputs["attention_mask"]
    fn = features.hint_loss if hidden_loss == "mse" else features.hidden_cosine_loss
    hidden = torch.stack([fn(s.hidden_states[i], t.hidden_states[j], tr.projections[f"s{i}_t{j}"], mask)
                          for i, j in [(0, 0), (1, 2), (2, 4)]]).mean()
    attention = torch.stack([features.attention_map_loss(s.attentions[i - 1], t.attentions[j - 1], mask,
                                                         kind=attention_loss) for i, j in [(1, 2), (2, 4)]]).mean()
    logit = losses.distillation_loss(s.logits, t.logits, inputs["labels"], temperature=3.0, alpha_kd=0.4).loss
    assert torch.allclose(loss, logit + 0.7 * hidden + 2.0 * attention, rtol=1e-5, atol=1e-6)
    logged = tr._terms["train"]
    assert {"ce", "kd", "hidden", "attention"} <= set(logged)


def test_training_trains_projections_and_keeps_them_out_of_the_student(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer)
    assert sorted(tr.projections) == ["s0_t0", "s1_t2", "s2_t4"]
    assert all(isinstance(p, nn.Linear) and p.in_features == 16 and p.out_features == 32 for p in tr.projections.values())
    before = {k: v.detach().clone() for k, v in tr.projections.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
    tr.train()
    in_optimizer = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in tr.projections.parameters()), "projections missing from the optimizer"
    after = tr.projections.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before), "the projections were not trained"
    assert all(torch.equal(teacher_before[k], v) for k, v in tr.teacher.state_dict().items()), "teacher changed"
    assert not any("proj" in k for k in tr.model.state_dict()), "projections leaked into the student"
    logs = [entry for entry in tr.state.log_history if "loss" in entry]
    assert logs and all({"ce", "kd", "hidden", "attention"} <= set(entry) for entry in logs)
    # the same learning-rate schedule for every group (linear decay to 0 at the last step)
    assert len({g["lr"] for g in tr.optimizer.param_groups}) == 1


def test_projection_group_added_only_once_and_to_a_given_optimizer(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer)
    opt = tr.create_optimizer()
    n_groups = len(opt.param_groups)
    assert tr.create_optimizer() is opt and len(opt.param_groups) == n_groups


def test_attention_implementation_switched_for_training_and_restored(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer)
    seen = []
    original = tr.compute_loss

    def spy(model, inputs, **kw):
        seen.append((tr.model.config._attn_implementation, tr.teacher.config._attn_implementation))
        return original(model, inputs, **kw)

    tr.compute_loss = spy
    impl = tr.model.config._attn_implementation
    tr.train()
    assert seen and set(seen) == {("eager", "eager")}
    assert tr.model.config._attn_implementation == impl and tr.teacher.config._attn_implementation == impl
    metrics = tr.evaluate(train_set)  # evaluation also needs the maps; only the logits are gathered
    assert {"eval_hidden", "eval_attention", "eval_loss"} <= set(metrics)
    assert tr.model.config._attn_implementation == impl


def test_hint_only_stage_with_alpha_zero_still_runs_the_teacher(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer, alpha_kd=0.0, attention_weight=0.0, attention_pairs=None)
    inputs = batch(train_set, tokenizer)
    tr.model.train()
    loss = tr.compute_loss(tr.model, inputs)
    assert "hidden" in tr._terms["train"] and "attention" not in tr._terms["train"]
    ce = tr._terms["train"]["ce"][-1]
    assert float(loss.detach()) == pytest.approx(ce + tr._terms["train"]["hidden"][-1], rel=1e-3)


def test_features_only_stage(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer, logit_weight=0.0, attention_weight=0.0, attention_pairs=None)
    inputs = batch(train_set, tokenizer)
    tr.model.train()
    loss = tr.compute_loss(tr.model, inputs)
    logged = tr._terms["train"]
    assert float(loss.detach()) == pytest.approx(logged["hidden"][-1], rel=1e-3)   # CE and KD logged, not optimised
    assert logged["ce"] and logged["kd"]
    w0 = tr.model.classifier.weight.detach().clone()
    tr.train()
    assert torch.equal(w0, tr.model.classifier.weight), "the classifier has no gradient in a features-only stage"


def test_equal_widths_need_no_projection(tmp_path, train_set, tokenizer):
    tr = make_trainer(tmp_path, train_set, tokenizer, student=bert(2, 32, seed=1), hidden_loss="cosine",
                      attention_weight=0.0, attention_pairs=None)
    assert len(tr.projections) == 0
    tr.train()
    assert all("hidden" in e for e in tr.state.log_history if "loss" in e)


def test_train_with_features_returns_trained_student(tmp_path, train_set, tokenizer):
    student, teacher = bert(2, 16, seed=1), bert(4, 32, seed=2)
    w0 = student.classifier.weight.detach().clone()
    tr = feature_trainer.train_with_features(student, train_set, tokenizer, teacher=teacher,
                                hidden_pairs=features.layer_map(2, 4), hidden_weight=1.0, seed=0,
                                output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8)
    assert tr.model is student and not student.training
    assert not torch.equal(w0, student.classifier.weight)
    assert tr.state.global_step == 2


# ================================================================================================= errors
@pytest.mark.parametrize("kw, error, match", [
    (dict(teacher=None), ValueError, "needs the teacher itself"),
    (dict(hidden_pairs=None), ValueError, "needs hidden_pairs"),
    (dict(attention_pairs=None), ValueError, "needs attention_pairs"),
    (dict(hidden_pairs=[(3, 4)]), ValueError, "student index 3.*2 layers"),
    (dict(hidden_pairs=[(1, 5)]), ValueError, "teacher index 5.*4 layers"),
    (dict(attention_pairs=[(0, 0)]), ValueError, "attention maps exist for layers 1"),
    (dict(hidden_loss="l1"), ValueError, "hidden_loss must be one of"),
    (dict(attention_loss="cos"), ValueError, "attention_loss must be one of"),
    (dict(hidden_weight=-1.0), ValueError, "≥ 0"),
    (dict(attention_weight="1"), TypeError, "number"),
    (dict(logit_weight=0.0, hidden_weight=0.0, attention_weight=0.0), ValueError, "nothing to learn"),
    (dict(student_heads=4), ValueError, "4 heads and the teacher 2"),
])
def test_setup_errors(tmp_path, train_set, tokenizer, kw, error, match):
    teacher = kw.pop("teacher", _DEFAULT)
    student = bert(2, 16, seed=1, heads=kw.pop("student_heads", 2))
    with pytest.raises(error, match=match):
        make_trainer(tmp_path, train_set, tokenizer, student=student, teacher=teacher, **kw)


def test_precomputed_logits_are_refused(tmp_path, train_set, tokenizer):
    teacher = bert(4, 32, seed=2)
    with_logits = distillation_trainer.add_teacher_logits(train_set, teacher, tokenizer)
    with pytest.raises(ValueError, match="hidden states"):
        make_trainer(tmp_path, with_logits, tokenizer, teacher=teacher)


def test_no_student_is_an_error(tmp_path, train_set, tokenizer):
    with pytest.raises(ValueError, match="student model"):
        FeatureDistillationTrainer(model=None, args=args(tmp_path), teacher_model=bert(4, 32, seed=2))


def test_attention_dropout_warns(tmp_path, train_set, tokenizer):
    with pytest.warns(UserWarning, match="attention dropout"):
        make_trainer(tmp_path, train_set, tokenizer, student=bert(2, 16, seed=1, attention_probs_dropout_prob=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_trainer(tmp_path, train_set, tokenizer, student=bert(2, 16, seed=1, attention_probs_dropout_prob=0.1),
                     attention_weight=0.0, attention_pairs=None)


# ============================================================================ your own hidden loss and projections
def own_mse(student_hidden, teacher_hidden, projection, attention_mask):
    """The hint loss written another way (masked sum / count): equal to features.hint_loss up to float rounding."""
    p = projection(student_hidden) if projection is not None else student_hidden
    m = attention_mask[..., None].to(p.dtype)
    return ((p - teacher_hidden.detach()) ** 2 * m).sum() / (m.sum() * p.shape[-1])


def linear(student_width, teacher_width):
    return nn.Linear(student_width, teacher_width)


def hidden_only(tmp_path, train_set, tokenizer, **kw):
    return make_trainer(tmp_path, train_set, tokenizer, student=bert(2, 16, seed=1), attention_weight=0.0,
                        attention_pairs=None, projection_seed=7, **kw)


def test_own_hidden_loss_is_called_per_pair_and_is_the_hidden_term(tmp_path, train_set, tokenizer):
    calls = []

    def spy(student_hidden, teacher_hidden, projection, attention_mask):
        calls.append((tuple(student_hidden.shape), tuple(teacher_hidden.shape), projection, attention_mask))
        return own_mse(student_hidden, teacher_hidden, projection, attention_mask)

    tr = hidden_only(tmp_path, train_set, tokenizer, hidden_loss=spy)
    named = hidden_only(tmp_path, train_set, tokenizer, hidden_loss="mse")
    inputs = batch(train_set, tokenizer)
    tr.model.train(), named.model.train()
    torch.manual_seed(0)
    loss = tr.compute_loss(tr.model, inputs)
    torch.manual_seed(0)
    expected = named.compute_loss(named.model, inputs)
    assert len(calls) == 3                                       # (0, 0), (1, 2), (2, 4)
    b, s = inputs["input_ids"].shape
    assert all(c[0] == (b, s, 16) and c[1] == (b, s, 32) and c[3] is inputs["attention_mask"] for c in calls)
    assert [c[2] for c in calls] == [tr.projections[k] for k in ("s0_t0", "s1_t2", "s2_t4")]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(tr._terms["train"]["hidden"][-1]),
                               torch.tensor(named._terms["train"]["hidden"][-1]), rtol=1e-5, atol=1e-6)


def test_projection_factory_starts_from_the_default_weights_and_leaves_the_rng_alone(tmp_path, train_set, tokenizer):
    made = []

    def factory(student_width, teacher_width):
        made.append((student_width, teacher_width))
        return nn.Linear(student_width, teacher_width)

    default = hidden_only(tmp_path, train_set, tokenizer)
    state = torch.get_rng_state()
    own = hidden_only(tmp_path, train_set, tokenizer, projection_factory=factory)
    assert torch.equal(state, torch.get_rng_state()), "building the projections moved the global RNG"
    assert made == [(16, 32)] * 3
    assert sorted(own.projections) == sorted(default.projections) == ["s0_t0", "s1_t2", "s2_t4"]
    for k, (i, j) in enumerate([(0, 0), (1, 2), (2, 4)]):  # the k-th pair under seed projection_seed + k
        reference = features.make_projection(16, 32, seed=7 + k)
        for name, value in own.projections[f"s{i}_t{j}"].state_dict().items():
            assert torch.equal(value, reference.state_dict()[name]) and torch.equal(
                value, default.projections[f"s{i}_t{j}"].state_dict()[name])
    in_optimizer = {id(p) for g in own.create_optimizer().param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in own.projections.parameters())


def test_projection_factory_unused_for_equal_widths(tmp_path, train_set, tokenizer):
    def factory(student_width, teacher_width):
        raise AssertionError("no projection is needed when the widths agree")

    tr = make_trainer(tmp_path, train_set, tokenizer, student=bert(2, 32, seed=1), attention_weight=0.0,
                      attention_pairs=None, projection_factory=factory, hidden_loss=own_mse)
    assert len(tr.projections) == 0
    tr.model.train()
    tr.compute_loss(tr.model, batch(train_set, tokenizer))   # own loss called with projection=None
    assert tr._terms["train"]["hidden"]


def test_own_loss_and_factory_train_the_named_run_up_to_float_noise(tmp_path, train_set, tokenizer):
    def run(**kw):
        student, teacher = bert(2, 16, seed=1), bert(4, 32, seed=2)
        tr = feature_trainer.train_with_features(student, train_set, tokenizer, teacher=teacher,
                                                 hidden_pairs=features.layer_map(2, 4), hidden_weight=1.0, seed=0,
                                                 output_dir=str(tmp_path), max_steps=3,
                                                 per_device_train_batch_size=8, **kw)
        return tr

    named, own = run(hidden_loss="mse"), run(hidden_loss=own_mse, projection_factory=linear)
    assert own.state.global_step == named.state.global_step == 3
    for (k, a), (_, b) in zip(named.model.state_dict().items(), own.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    for k, a in named.projections.state_dict().items():
        torch.testing.assert_close(a, own.projections.state_dict()[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("kw, error, match", [
    (dict(hidden_loss=42), TypeError, "hidden_loss must be one of .* or a function"),
    (dict(hidden_loss=torch.tensor(1.0)), TypeError, "without calling it"),
    (dict(hidden_loss=lambda student_hidden, teacher_hidden: 0.0), TypeError, "cannot be called as fn"),
    (dict(hidden_loss="l2"), ValueError, "hidden_loss must be one of"),
    (dict(projection_factory="linear"), TypeError, "projection_factory must be a function"),
    (dict(projection_factory=nn.Linear(16, 32)), TypeError, "without calling it"),
    (dict(projection_factory=lambda s, t: torch.zeros(t, s)), TypeError, "returned a Tensor; it must return an nn.Module"),
    (dict(projection_factory=lambda s, t: nn.Identity()), ValueError, "without trainable parameters"),
    (dict(projection_factory=lambda s, t: nn.Linear(t, s)), ValueError, "cannot be applied to student hidden states"),
    (dict(projection_factory=lambda s, t: nn.Linear(s, s)), ValueError, r"to \(1, 1, 16\); it must map .* \(1, 1, 32\)"),
])
def test_own_loss_and_factory_setup_errors(tmp_path, train_set, tokenizer, kw, error, match):
    with pytest.raises(error, match=match):
        hidden_only(tmp_path, train_set, tokenizer, **kw)


@pytest.mark.parametrize("result, error, match", [
    (lambda h_s, h_t, w, m: own_mse(h_s, h_t, w, m).item(), TypeError, "returned a float; it must return a scalar"),
    (lambda h_s, h_t, w, m: (w(h_s) - h_t) ** 2, ValueError, "returned a tensor of shape .*; it must return a scalar"),
])
def test_own_loss_with_a_wrong_result_fails_on_the_first_batch(tmp_path, train_set, tokenizer, result, error, match):
    tr = hidden_only(tmp_path, train_set, tokenizer, hidden_loss=result)
    tr.model.train()
    with pytest.raises(error, match=match):
        tr.compute_loss(tr.model, batch(train_set, tokenizer))

# ================================================================================================= students
def test_narrow_student_shapes():
    teacher = bert(4, 32, seed=2)
    s = feature_trainer.narrow_student(teacher, seed=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=32)
    assert isinstance(s, BertForSequenceClassification)
    assert s.config.hidden_size == 16 and s.config.num_hidden_layers == 2 and s.config.num_labels == 2
    assert s.get_input_embeddings().num_embeddings == len(VOCAB)
    assert s.config.attention_probs_dropout_prob == 0.0
    again = feature_trainer.narrow_student(teacher, seed=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32)
    assert all(torch.equal(a, b) for a, b in zip(s.state_dict().values(), again.state_dict().values()))
    assert feature_trainer.NARROW_STUDENTS["small"]["num_attention_heads"] == 12  # MiniLM's heads, for the attention loss
    with pytest.raises(ValueError, match="unknown profile"):
        feature_trainer.narrow_student(teacher, profile="tpu")


def test_pca_embeddings_from_teacher():
    teacher = bert(4, 32, seed=2)
    student = feature_trainer.narrow_student(teacher, seed=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, pca_embeddings=False)
    projection = feature_trainer.pca_embeddings_from(teacher, student)
    assert projection.shape == (32, 16)
    assert torch.allclose(projection.T @ projection, torch.eye(16), atol=1e-5)   # orthonormal directions
    words = teacher.bert.embeddings.word_embeddings.weight.detach()
    centred = words - words.mean(0)
    assert torch.allclose(student.bert.embeddings.word_embeddings.weight, centred @ projection, atol=1e-5)
    positions = teacher.bert.embeddings.position_embeddings.weight.detach()
    assert torch.allclose(student.bert.embeddings.position_embeddings.weight, positions @ projection, atol=1e-5)
    # the top directions keep more of the words' variance than any other 16 directions, e.g. random ones
    q, _ = torch.linalg.qr(torch.randn(32, 16, generator=torch.Generator().manual_seed(0)))
    assert (centred @ projection).var(0).sum() > (centred @ q).var(0).sum()
    assert feature_trainer.narrow_student(teacher, seed=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32).bert.embeddings.word_embeddings.weight.allclose(
        student.bert.embeddings.word_embeddings.weight, atol=1e-5)
    with pytest.raises(ValueError, match="wider"):
        feature_trainer.pca_embeddings_from(student, teacher)
    with pytest.raises(TypeError, match="embedding tables"):
        feature_trainer.pca_embeddings_from(teacher, nn.Linear(2, 2))


# ===================================================================================================== CKA
def test_hidden_states_of_and_cka(train_set, tokenizer):
    teacher, student = bert(4, 32, seed=2), bert(2, 16, seed=1)
    states = feature_trainer.hidden_states_of(teacher, train_set, tokenizer, batch_size=5)
    n_tokens = sum(len(x) for x in train_set["input_ids"])
    assert len(states) == 5 and all(s.shape == (n_tokens, 32) for s in states)
    assert teacher.training, "the model's train/eval mode is restored"
    noisy = bert(4, 32, seed=2, hidden_dropout_prob=0.5)
    first, second = feature_trainer.hidden_states_of(noisy, train_set, tokenizer), feature_trainer.hidden_states_of(noisy, train_set, tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(first, second)), "hidden states must be computed in eval mode"
    mat = feature_trainer.cka_between(student, teacher, train_set, tokenizer, teacher_states=states)
    assert mat.shape == (3, 5) and np.all((mat >= 0) & (mat <= 1 + 1e-9))
    self_sim = feature_trainer.cka_between(teacher, teacher, train_set, tokenizer)
    assert np.allclose(np.diag(self_sim), 1.0)
    with pytest.raises(ValueError, match="not tokenised"):
        feature_trainer.hidden_states_of(teacher, Dataset.from_dict({"text": ["a"]}), tokenizer)


# ============================================================================================ teacher cache
def test_teacher_cache_gives_the_live_teacher_results(tmp_path, train_set, tokenizer):
    """Two trainings on the same batches (same data_seed): with a shared cache the second one never runs the
    teacher, and every run ends with exactly the weights of an uncached run."""
    def run(cache, seed):
        student = bert(2, 16, seed=seed)
        tr = make_trainer(tmp_path, train_set, tokenizer, student=student, teacher=bert(4, 32, seed=2),
                          teacher_cache=cache)
        tr.args.data_seed = 0
        tr.train()
        return student
    cache = feature_trainer.TeacherCache()
    live = run(None, 1)
    cached = run(cache, 1)
    misses = cache.misses
    assert misses > 0 and cache.hits == 0 and len(cache) == misses and cache.nbytes() > 0
    again = run(cache, 3)  # another student, same batches: all hits
    assert cache.misses == misses and cache.hits == misses
    for (k, a), (_, b) in zip(live.state_dict().items(), cached.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert again is not None


def test_teacher_cache_completes_entries_and_is_type_checked(tmp_path, train_set, tokenizer):
    cache = feature_trainer.TeacherCache()
    teacher = bert(4, 32, seed=2).eval()
    b = {k: v for k, v in batch(train_set, tokenizer).items() if k != "labels"}
    out = cache.outputs(teacher, b, {2}, set())
    assert out.hidden_states[2] is not None and out.hidden_states[1] is None and all(a is None for a in out.attentions)
    teacher.set_attn_implementation("eager")
    out = cache.outputs(teacher, b, {2, 4}, {4})  # more layers requested: the entry is completed
    assert cache.misses == 2 and len(cache) == 1
    with torch.no_grad():
        ref = teacher(**b, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(out.hidden_states[4], ref.hidden_states[4])
    torch.testing.assert_close(out.attentions[3], ref.attentions[3])
    torch.testing.assert_close(out.logits, ref.logits)
    cache.outputs(teacher, b, {2}, {4})
    assert cache.hits == 1
    with pytest.raises(TypeError, match="TeacherCache"):
        make_trainer(tmp_path, train_set, tokenizer, teacher_cache={})


# ==================================================================================== notebook 04's students
@pytest.fixture
def tiny_task(monkeypatch, tmp_path, train_set, tokenizer):
    """A stand-in for sentiment.prepare(): tiny splits, a 2 × 16 narrow student, a 4-step recipe, a temporary cache."""
    from types import SimpleNamespace

    from datasets import DatasetDict

    monkeypatch.setenv("KD_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(feature_trainer.NARROW_STUDENTS, "small", dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                          intermediate_size=32, attention_probs_dropout_prob=0.0))
    monkeypatch.setitem(recipes.FEATURE_RECIPES, "small", dict(recipes.FEATURE_RECIPES["small"], max_steps=4,
                                                          per_device_train_batch_size=8))
    recipe = SimpleNamespace(fresh_kd=dict(temperature=2.0, alpha_kd=0.9))
    splits = DatasetDict(train=train_set, validation=train_set.select(range(8)), test=train_set.select(range(12)))
    return SimpleNamespace(profile="small", recipe=recipe, tokenizer=tokenizer, data=splits,
                           fingerprint=lambda splits=None, **extra: {"tiny": True, **extra})


@pytest.mark.parametrize("variant", sorted(recipes.FEATURE_VARIANTS))
def test_feature_student_trains_caches_and_reloads(tiny_task, variant):
    teacher = bert(4, 32, seed=2)
    model, metrics = recipes.feature_student(tiny_task, teacher, variant, seed=0)
    assert metrics["steps"] == 4 and len(metrics["test_logits"]) == 12 and 0 <= metrics["test_accuracy"] <= 1
    logged = set().union(*[set(e) for e in metrics["log"]])
    assert ("hidden" in logged) == recipes.FEATURE_VARIANTS[variant]["hidden"]
    assert ("attention" in logged) == recipes.FEATURE_VARIANTS[variant]["attention"]
    again, metrics2 = recipes.feature_student(tiny_task, teacher, variant, seed=0)  # from the cache now
    assert metrics2["test_logits"] == metrics["test_logits"]
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert not again.bert.embeddings.word_embeddings.weight.requires_grad  # frozen, as in training
    other = bert(4, 32, seed=5)  # another teacher: not the cached student
    _, metrics3 = recipes.feature_student(tiny_task, other, variant, seed=0)
    assert metrics3["test_logits"] != metrics["test_logits"]


def test_feature_student_variants_share_the_teacher_cache(tiny_task):
    teacher, cache = bert(4, 32, seed=2), feature_trainer.TeacherCache()
    recipes.train_feature_student(tiny_task, teacher, "hidden_attention", seed=0, teacher_cache=cache)
    misses = cache.misses
    recipes.train_feature_student(tiny_task, teacher, "logit", seed=1, teacher_cache=cache)
    recipes.train_feature_student(tiny_task, teacher, "hidden", seed=2, teacher_cache=cache)
    assert cache.misses == misses and cache.hits == 2 * misses   # same batches: the teacher ran only for the first


def test_feature_student_errors(tiny_task):
    teacher = bert(4, 32, seed=2)
    with pytest.raises(ValueError, match="unknown variant"):
        recipes.feature_student(tiny_task, teacher, "hiden")
    tiny_task.profile = "tpu"
    with pytest.raises(ValueError, match="no feature-distillation recipe"):
        recipes.feature_recipe(tiny_task)
