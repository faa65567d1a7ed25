"""Unit tests for course_utils.trainer on tiny BERT teacher/student models and a 32-example tokenised dataset:
``DistillationTrainer`` with a live teacher and with precomputed logits, the set-up checks, inference helpers,
metrics and ``training_args``. Each training run is 3 steps on CPU (well under a second).
"""
from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest
import torch

from course_utils import data
from course_utils import trainer as tr
from course_utils.trainer import (
    DistillationTrainer,
    accuracy,
    add_teacher_logits,
    agreement,
    check_distillation_setup,
    predict_logits,
    training_args,
)

from datasets import Dataset  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    "the a movie film plot is was very not good great fun bad awful boring".split()
POSITIVE, NEGATIVE = ["good", "great", "fun"], ["bad", "awful", "boring"]
FILLER = ["the", "a", "movie", "film", "plot", "is", "was", "very", "not"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(str(path))


def _texts(n: int = 32, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 9))] + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def train_set(tokenizer):
    texts, labels = _texts()
    return data.tokenize(Dataset.from_dict({"text": texts, "label": labels}), tokenizer, max_length=16)


@pytest.fixture(scope="module")
def unlabelled(tokenizer):
    texts, _ = _texts(12, seed=1)
    return data.tokenize(Dataset.from_dict({"text": texts}), tokenizer, max_length=16)


def bert(layers: int = 1, seed: int = 0, num_labels: int = 2, vocab_size: int = len(VOCAB), **config):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
               intermediate_size=64, num_labels=num_labels, max_position_embeddings=64, initializer_range=0.2)
    cfg.update(config)
    return BertForSequenceClassification(BertConfig(**cfg))


def args(tmp_path, **overrides):
    kw = dict(output_dir=str(tmp_path), max_steps=3, logging_steps=1, per_device_train_batch_size=8,
              learning_rate=1e-3)
    kw.update(overrides)
    return training_args(**kw)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def step_logs(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


# ================================================================================== DistillationTrainer
def test_trains_with_a_live_teacher(tmp_path, train_set, tokenizer):
    teacher, student = bert(layers=2, seed=0).train(), bert(seed=1)
    t_before, s_before = snapshot(teacher), snapshot(student)
    trainer = DistillationTrainer(model=student, args=args(tmp_path), teacher_model=teacher, temperature=2.0,
                                  alpha_kd=0.5, train_dataset=train_set, processing_class=tokenizer)
    assert trainer.teacher_source == "teacher"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    trainer.train()
    logs = step_logs(trainer)
    assert trainer.state.global_step == 3 and len(logs) == 3
    for entry in logs:
        assert {"loss", "ce", "kd"} <= set(entry)
        assert entry["kd"] > 0 and entry["ce"] > 0
        # logged parts are unweighted: loss = ½ ce + ½ kd (the parts are rounded to 4 digits)
        assert entry["loss"] == pytest.approx(0.5 * entry["ce"] + 0.5 * entry["kd"], abs=2e-4)
    assert same(snapshot(teacher), t_before), "the teacher's weights changed"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not same(snapshot(student), s_before), "the student did not learn"
    assert all(p.grad is None for p in teacher.parameters())


def test_precomputed_logits_give_the_same_losses(tmp_path, train_set, tokenizer):
    teacher = bert(layers=2, seed=0)
    live = DistillationTrainer(model=bert(seed=1), args=args(tmp_path / "live"), teacher_model=teacher,
                               train_dataset=train_set, processing_class=tokenizer)
    live.train()
    with_logits = add_teacher_logits(train_set, teacher, tokenizer)
    assert tr.TEACHER_LOGITS in with_logits.column_names
    column = DistillationTrainer(model=bert(seed=1), args=args(tmp_path / "column"), teacher_model=None,
                                 train_dataset=with_logits, processing_class=tokenizer)
    assert column.teacher_source == "column" and column.teacher is None
    column.train()
    a, b = step_logs(live), step_logs(column)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for key in ("loss", "ce", "kd"):
            assert x[key] == pytest.approx(y[key], abs=1e-3), key


def test_column_wins_over_the_teacher(tmp_path, train_set, tokenizer):
    with_logits = add_teacher_logits(train_set, bert(layers=2, seed=0), tokenizer)
    other_teacher = bert(layers=2, seed=5)
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), teacher_model=other_teacher,
                                  train_dataset=with_logits, processing_class=tokenizer)
    assert trainer.teacher_source == "column"
    calls = []
    other_teacher.register_forward_hook(lambda *a: calls.append(1))
    trainer.train()
    assert calls == []


def test_alpha_kd_zero_needs_no_teacher(tmp_path, train_set, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), alpha_kd=0.0, train_dataset=train_set,
                                  processing_class=tokenizer)
    assert trainer.teacher_source == "none"
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 3 and all("ce" in e and "kd" not in e for e in logs)
    assert all(e["loss"] == pytest.approx(e["ce"], abs=1e-4) for e in logs)


def test_unlabelled_transfer_set_with_teacher_labels(tmp_path, unlabelled, tokenizer):
    teacher = bert(layers=2, seed=0)
    transfer = add_teacher_logits(unlabelled, teacher, tokenizer)
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path, per_device_train_batch_size=4),
                                  alpha_kd=0.7, train_dataset=transfer, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 3 and "kd" in step_logs(trainer)[0]


def test_evaluation_logs_the_parts(tmp_path, train_set, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path, max_steps=1),
                                  teacher_model=bert(layers=2, seed=0), train_dataset=train_set,
                                  eval_dataset=train_set.select(range(8)), processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_ce", "eval_kd"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(0.5 * metrics["eval_ce"] + 0.5 * metrics["eval_kd"], abs=2e-4)


def test_loss_terms_extension_is_logged(tmp_path, train_set, tokenizer):
    class WithHidden(DistillationTrainer):
        output_hidden_states = True

        def loss_terms(self, student_outputs, teacher_outputs, labels, inputs):
            terms = super().loss_terms(student_outputs, teacher_outputs, labels, inputs)
            hs, ht = student_outputs.hidden_states[-1], teacher_outputs.hidden_states[-1]
            terms["hidden"] = torch.nn.functional.mse_loss(hs, ht)
            terms["loss"] = terms["loss"] + 0.1 * terms["hidden"]
            return terms

    trainer = WithHidden(model=bert(seed=1), args=args(tmp_path, max_steps=2), teacher_model=bert(layers=2, seed=0),
                         train_dataset=train_set, processing_class=tokenizer)
    trainer.train()
    assert all("hidden" in e and e["hidden"] > 0 for e in step_logs(trainer))
    with pytest.raises(ValueError, match="hidden states"):
        WithHidden(model=bert(seed=1), args=args(tmp_path), processing_class=tokenizer,
                   train_dataset=add_teacher_logits(train_set, bert(2), tokenizer))


def test_loss_terms_without_labels_or_teacher(tmp_path, train_set, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), alpha_kd=0.0, train_dataset=train_set)
    out = tr._Logits(torch.randn(2, 2))
    with pytest.raises(ValueError, match="neither labels nor teacher logits"):
        trainer.loss_terms(out, None, None, {})


def test_constructor_errors(tmp_path, train_set):
    with pytest.raises(ValueError, match="student model"):
        DistillationTrainer(model=None, args=args(tmp_path))
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(model=bert(), args=args(tmp_path), teacher_model=bert(), temperature=0.0)
    with pytest.raises(ValueError, match="alpha_kd"):
        DistillationTrainer(model=bert(), args=args(tmp_path), teacher_model=bert(), alpha_kd=1.5)
    with pytest.raises(ValueError, match="needs teacher logits"):  # checked before Trainer.__init__ does any work
        DistillationTrainer(model=bert(), args=args(tmp_path), train_dataset=train_set)


# ============================================================================== check_distillation_setup
def test_setup_sources(train_set, tokenizer):
    student, teacher = bert(), bert(layers=2)
    assert check_distillation_setup(student, teacher, tokenizer, train_set) == "teacher"
    assert check_distillation_setup(student, None, tokenizer, train_set, alpha_kd=0.0) == "none"
    with_logits = train_set.add_column(tr.TEACHER_LOGITS, [[1.0, -1.0]] * len(train_set))
    assert check_distillation_setup(student, None, tokenizer, with_logits) == "column"
    assert check_distillation_setup(student, teacher, tokenizer, with_logits) == "column"
    renamed = train_set.add_column("soft", [[1.0, -1.0]] * len(train_set))
    assert check_distillation_setup(student, None, tokenizer, renamed, teacher_logits_column="soft") == "column"


def test_setup_label_count_mismatch(train_set, tokenizer):
    with pytest.raises(ValueError, match="teacher predicts 3 labels but the student 2"):
        check_distillation_setup(bert(num_labels=2), bert(num_labels=3), tokenizer, train_set)


def test_setup_column_errors(train_set, tokenizer):
    probs = train_set.add_column(tr.TEACHER_LOGITS, [[0.25, 0.75]] * len(train_set))
    with pytest.raises(ValueError, match="looks like probabilities"):
        check_distillation_setup(bert(), None, tokenizer, probs)
    # a first row that happens to sum to 1 does not condemn real logits
    mixed = train_set.add_column(tr.TEACHER_LOGITS, [[0.25, 0.75]] + [[2.0, -1.0]] * (len(train_set) - 1))
    assert check_distillation_setup(bert(), None, tokenizer, mixed) == "column"
    # probabilities everywhere but the first row are still caught
    late = train_set.add_column(tr.TEACHER_LOGITS, [[2.0, -1.0]] + [[0.25, 0.75]] * (len(train_set) - 1))
    assert len(train_set) >= 10
    with pytest.raises(ValueError, match="looks like probabilities"):
        check_distillation_setup(bert(), None, tokenizer, late)
    three = train_set.add_column(tr.TEACHER_LOGITS, [[1.0, 0.0, -1.0]] * len(train_set))
    with pytest.raises(ValueError, match=r"shape \(3,\) but the student predicts 2 labels"):
        check_distillation_setup(bert(), None, tokenizer, three)


def test_setup_tokenizer_mismatch(train_set, tokenizer):
    n = len(VOCAB)
    with pytest.raises(ValueError, match=f"tokenizer has {n} tokens but the student's .* has only {n - 2} rows"):
        check_distillation_setup(bert(vocab_size=n - 2), None, tokenizer, None, alpha_kd=0.0)
    with pytest.raises(ValueError, match="vocabularies do not match"):
        check_distillation_setup(bert(vocab_size=100), None, tokenizer, None, alpha_kd=0.0)
    with pytest.raises(ValueError, match="teacher's .* vocabularies do not match"):
        check_distillation_setup(bert(), bert(vocab_size=100), tokenizer, train_set)
    with pytest.raises(ValueError, match="padding id is 0 but the student's config says 1"):
        check_distillation_setup(bert(pad_token_id=1), None, tokenizer, None, alpha_kd=0.0)


def test_setup_token_ids_beyond_the_vocabulary(tokenizer):
    ds = Dataset.from_dict({"input_ids": [[2, 5, 3], [2, 30, 3]], "label": [0, 1]})
    with pytest.raises(ValueError, match=f"contains token id 30 but the student's embedding matrix has {len(VOCAB)}"):
        check_distillation_setup(bert(), None, None, ds, alpha_kd=0.0)
    ok = Dataset.from_dict({"input_ids": [[2, 5, 3], [2, len(VOCAB) - 1, 3]], "label": [0, 1]})
    assert check_distillation_setup(bert(), None, None, ok, alpha_kd=0.0) == "none"


def test_setup_needs_a_teacher_or_logits(train_set, tokenizer):
    with pytest.raises(ValueError, match="alpha_kd=0.5 needs teacher logits.*add_teacher_logits"):
        check_distillation_setup(bert(), None, tokenizer, train_set, alpha_kd=0.5)
    with pytest.raises(ValueError, match="alpha_kd"):
        check_distillation_setup(bert(), bert(), tokenizer, train_set, alpha_kd=-0.1)


# ========================================================================================= inference
def test_predict_logits_keeps_dataset_order_and_mode(train_set, tokenizer):
    model = bert(layers=2, seed=3).train()
    logits = predict_logits(model, train_set, tokenizer, batch_size=5)  # several length-sorted batches
    assert model.training, "train mode not restored"
    assert logits.shape == (32, 2) and logits.dtype == np.float32
    model.eval()
    with torch.no_grad():
        for i in (0, 7, 31):
            row = train_set[i]
            one = model(**{k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")})
            assert np.allclose(logits[i], one.logits[0].numpy(), atol=1e-5), i
    predict_logits(model, train_set, tokenizer)
    assert not model.training  # eval mode stays eval


def test_predict_logits_needs_tokenised_data(tokenizer):
    with pytest.raises(ValueError, match="not tokenised"):
        predict_logits(bert(), Dataset.from_dict({"text": ["a film"]}), tokenizer)


def test_add_teacher_logits(unlabelled, train_set, tokenizer):
    teacher = bert(layers=2, seed=0)
    out = add_teacher_logits(unlabelled, teacher, tokenizer)
    logits = np.array(out[tr.TEACHER_LOGITS])
    assert logits.shape == (12, 2)
    assert np.allclose(logits, predict_logits(teacher, unlabelled, tokenizer), atol=1e-6)
    assert out["label"] == logits.argmax(-1).tolist()
    assert "label" not in add_teacher_logits(unlabelled, teacher, tokenizer, label_missing=False).column_names
    # labelled data keeps its labels; an existing column is replaced; an array of logits is accepted
    fake = np.tile(np.array([[2.0, -2.0]], dtype=np.float32), (32, 1))
    once = add_teacher_logits(train_set, teacher, tokenizer)
    twice = add_teacher_logits(once, fake)
    assert twice["label"] == train_set["label"]
    assert twice.column_names.count(tr.TEACHER_LOGITS) == 1 and twice[0][tr.TEACHER_LOGITS] == [2.0, -2.0]
    custom = add_teacher_logits(train_set, fake, column="soft")
    assert "soft" in custom.column_names


def test_add_teacher_logits_errors(train_set):
    with pytest.raises(ValueError, match="got 5 rows of logits for a dataset of 32 examples"):
        add_teacher_logits(train_set, np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="needs the tokenizer"):
        add_teacher_logits(train_set, bert())


def test_accuracy_and_agreement():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, -1.0], [0.2, 0.1]])
    assert accuracy(logits, [0, 1, 1, 0]) == 0.75
    assert accuracy(logits, np.array([0, 1, 0, 0])) == 1.0
    assert agreement(logits, logits) == 1.0
    assert agreement(logits, -logits) == 0.0
    assert agreement(logits, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])) == 0.5
    with pytest.raises(ValueError, match="4 predictions but 3 labels"):
        accuracy(logits, [0, 1, 1])
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(logits, logits[:3])


# ======================================================================================== training_args
def test_training_args_defaults_and_overrides(tmp_path):
    a = training_args(seed=7, output_dir=str(tmp_path))
    assert a.seed == a.data_seed == 7
    assert a.output_dir == str(tmp_path)
    assert a.report_to in ([], "none", ["none"]) and a.disable_tqdm
    assert a.save_strategy == "no" and a.eval_strategy == "no" and a.logging_steps == 50
    assert a.per_device_train_batch_size == 32 and a.dataloader_num_workers == 0
    assert a.use_cpu == (not torch.cuda.is_available())
    b = training_args(output_dir=str(tmp_path), learning_rate=3e-4, logging_steps=5, per_device_train_batch_size=4,
                      num_train_epochs=2)
    assert (b.learning_rate, b.logging_steps, b.per_device_train_batch_size, b.num_train_epochs) == (3e-4, 5, 4, 2)
    assert training_args().output_dir == os.path.join(tempfile.gettempdir(), "kd-course-runs")


def test_train_student(tmp_path, train_set, tokenizer):
    student = bert(seed=1)
    trainer = tr.train_student(student, train_set, tokenizer, teacher=bert(layers=2, seed=0), alpha_kd=0.5,
                               output_dir=str(tmp_path), max_steps=2, logging_steps=1)
    assert isinstance(trainer, DistillationTrainer) and trainer.model is student
    assert trainer.state.global_step == 2 and not student.training
    assert trainer.temperature == 2.0 and trainer.args.seed == 0
