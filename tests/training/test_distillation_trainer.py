"""Unit tests for course_utils.training.distillation_trainer on tiny BERT teacher/student models and the shared
32-example tokenised ``reviews``: ``DistillationTrainer`` with a live teacher and with precomputed logits, the set-up
checks, ``add_teacher_logits`` and ``training_args``. Each training run is 3 steps on CPU (well under a second).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from course_utils.core.hf import dataset_logits
from course_utils.training import distillation_trainer
from course_utils.training.distillation_trainer import DistillationTrainer, add_teacher_logits, check_distillation_setup, training_args


from datasets import Dataset  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    "the a movie film plot is was very not good great fun bad awful boring".split()


pytestmark = pytest.mark.usefixtures("single_thread")


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
def test_trains_with_a_live_teacher(tmp_path, reviews, tokenizer):
    teacher, student = bert(layers=2, seed=0).train(), bert(seed=1)
    t_before, s_before = snapshot(teacher), snapshot(student)
    trainer = DistillationTrainer(model=student, args=args(tmp_path), teacher_model=teacher, temperature=2.0,
                                  alpha_kd=0.5, train_dataset=reviews, processing_class=tokenizer)
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


def test_precomputed_logits_give_the_same_losses(tmp_path, reviews, tokenizer):
    teacher = bert(layers=2, seed=0)
    live = DistillationTrainer(model=bert(seed=1), args=args(tmp_path / "live"), teacher_model=teacher,
                               train_dataset=reviews, processing_class=tokenizer)
    live.train()
    with_logits = add_teacher_logits(reviews, teacher, tokenizer)
    assert distillation_trainer.TEACHER_LOGITS in with_logits.column_names
    column = DistillationTrainer(model=bert(seed=1), args=args(tmp_path / "column"), teacher_model=None,
                                 train_dataset=with_logits, processing_class=tokenizer)
    assert column.teacher_source == "column" and column.teacher is None
    column.train()
    a, b = step_logs(live), step_logs(column)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for key in ("loss", "ce", "kd"):
            assert x[key] == pytest.approx(y[key], abs=1e-3), key


def test_column_wins_over_the_teacher(tmp_path, reviews, tokenizer):
    with_logits = add_teacher_logits(reviews, bert(layers=2, seed=0), tokenizer)
    other_teacher = bert(layers=2, seed=5)
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), teacher_model=other_teacher,
                                  train_dataset=with_logits, processing_class=tokenizer)
    assert trainer.teacher_source == "column"
    calls = []
    other_teacher.register_forward_hook(lambda *a: calls.append(1))
    trainer.train()
    assert calls == []


def test_alpha_kd_zero_needs_no_teacher(tmp_path, reviews, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), alpha_kd=0.0, train_dataset=reviews,
                                  processing_class=tokenizer)
    assert trainer.teacher_source == "none"
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 3 and all("ce" in e and "kd" not in e for e in logs)
    assert all(e["loss"] == pytest.approx(e["ce"], abs=1e-4) for e in logs)


def test_unlabelled_transfer_set_with_teacher_labels(tmp_path, unlabelled_reviews, tokenizer):
    teacher = bert(layers=2, seed=0)
    transfer = add_teacher_logits(unlabelled_reviews, teacher, tokenizer)
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path, per_device_train_batch_size=4),
                                  alpha_kd=0.7, train_dataset=transfer, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 3 and "kd" in step_logs(trainer)[0]


def test_evaluation_logs_the_parts(tmp_path, reviews, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path, max_steps=1),
                                  teacher_model=bert(layers=2, seed=0), train_dataset=reviews,
                                  eval_dataset=reviews.select(range(8)), processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_ce", "eval_kd"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(0.5 * metrics["eval_ce"] + 0.5 * metrics["eval_kd"], abs=2e-4)


def test_loss_terms_extension_is_logged(tmp_path, reviews, tokenizer):
    class WithHidden(DistillationTrainer):
        output_hidden_states = True

        def loss_terms(self, student_outputs, teacher_outputs, labels, inputs):
            terms = super().loss_terms(student_outputs, teacher_outputs, labels, inputs)
            hs, ht = student_outputs.hidden_states[-1], teacher_outputs.hidden_states[-1]
            terms["hidden"] = torch.nn.functional.mse_loss(hs, ht)
            terms["loss"] = terms["loss"] + 0.1 * terms["hidden"]
            return terms

    trainer = WithHidden(model=bert(seed=1), args=args(tmp_path, max_steps=2), teacher_model=bert(layers=2, seed=0),
                         train_dataset=reviews, processing_class=tokenizer)
    trainer.train()
    assert all("hidden" in e and e["hidden"] > 0 for e in step_logs(trainer))
    with pytest.raises(ValueError, match="hidden states"):
        WithHidden(model=bert(seed=1), args=args(tmp_path), processing_class=tokenizer,
                   train_dataset=add_teacher_logits(reviews, bert(2), tokenizer))


def test_loss_terms_without_labels_or_teacher(tmp_path, reviews, tokenizer):
    trainer = DistillationTrainer(model=bert(seed=1), args=args(tmp_path), alpha_kd=0.0, train_dataset=reviews)
    out = distillation_trainer._Logits(torch.randn(2, 2))
    with pytest.raises(ValueError, match="neither labels nor teacher logits"):
        trainer.loss_terms(out, None, None, {})


def test_constructor_errors(tmp_path, reviews):
    with pytest.raises(ValueError, match="student model"):
        DistillationTrainer(model=None, args=args(tmp_path))
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(model=bert(), args=args(tmp_path), teacher_model=bert(), temperature=0.0)
    with pytest.raises(ValueError, match="alpha_kd"):
        DistillationTrainer(model=bert(), args=args(tmp_path), teacher_model=bert(), alpha_kd=1.5)
    with pytest.raises(ValueError, match="needs teacher logits"):  # checked before Trainer.__init__ does any work
        DistillationTrainer(model=bert(), args=args(tmp_path), train_dataset=reviews)


# ============================================================================== check_distillation_setup
def test_setup_sources(reviews, tokenizer):
    student, teacher = bert(), bert(layers=2)
    assert check_distillation_setup(student, teacher, tokenizer, reviews) == "teacher"
    assert check_distillation_setup(student, None, tokenizer, reviews, alpha_kd=0.0) == "none"
    with_logits = reviews.add_column(distillation_trainer.TEACHER_LOGITS, [[1.0, -1.0]] * len(reviews))
    assert check_distillation_setup(student, None, tokenizer, with_logits) == "column"
    assert check_distillation_setup(student, teacher, tokenizer, with_logits) == "column"
    renamed = reviews.add_column("soft", [[1.0, -1.0]] * len(reviews))
    assert check_distillation_setup(student, None, tokenizer, renamed, teacher_logits_column="soft") == "column"


def test_setup_label_count_mismatch(reviews, tokenizer):
    with pytest.raises(ValueError, match="teacher predicts 3 labels but the student 2"):
        check_distillation_setup(bert(num_labels=2), bert(num_labels=3), tokenizer, reviews)


def test_setup_column_errors(reviews, tokenizer):
    probs = reviews.add_column(distillation_trainer.TEACHER_LOGITS, [[0.25, 0.75]] * len(reviews))
    with pytest.raises(ValueError, match="looks like probabilities"):
        check_distillation_setup(bert(), None, tokenizer, probs)
    # a first row that happens to sum to 1 does not condemn real logits
    mixed = reviews.add_column(distillation_trainer.TEACHER_LOGITS, [[0.25, 0.75]] + [[2.0, -1.0]] * (len(reviews) - 1))
    assert check_distillation_setup(bert(), None, tokenizer, mixed) == "column"
    # probabilities everywhere but the first row are still caught
    late = reviews.add_column(distillation_trainer.TEACHER_LOGITS, [[2.0, -1.0]] + [[0.25, 0.75]] * (len(reviews) - 1))
    assert len(reviews) >= 10
    with pytest.raises(ValueError, match="looks like probabilities"):
        check_distillation_setup(bert(), None, tokenizer, late)
    three = reviews.add_column(distillation_trainer.TEACHER_LOGITS, [[1.0, 0.0, -1.0]] * len(reviews))
    with pytest.raises(ValueError, match=r"shape \(3,\) but the student predicts 2 labels"):
        check_distillation_setup(bert(), None, tokenizer, three)


def test_setup_tokenizer_mismatch(reviews, tokenizer):
    n = len(VOCAB)
    with pytest.raises(ValueError, match=f"tokenizer has {n} tokens but the student's .* has only {n - 2} rows"):
        check_distillation_setup(bert(vocab_size=n - 2), None, tokenizer, None, alpha_kd=0.0)
    with pytest.raises(ValueError, match="vocabularies do not match"):
        check_distillation_setup(bert(vocab_size=100), None, tokenizer, None, alpha_kd=0.0)
    with pytest.raises(ValueError, match="teacher's .* vocabularies do not match"):
        check_distillation_setup(bert(), bert(vocab_size=100), tokenizer, reviews)
    with pytest.raises(ValueError, match="padding id is 0 but the student's config says 1"):
        check_distillation_setup(bert(pad_token_id=1), None, tokenizer, None, alpha_kd=0.0)


def test_setup_token_ids_beyond_the_vocabulary(tokenizer):
    ds = Dataset.from_dict({"input_ids": [[2, 5, 3], [2, 30, 3]], "label": [0, 1]})
    with pytest.raises(ValueError, match=f"contains token id 30 but the student's embedding matrix has {len(VOCAB)}"):
        check_distillation_setup(bert(), None, None, ds, alpha_kd=0.0)
    ok = Dataset.from_dict({"input_ids": [[2, 5, 3], [2, len(VOCAB) - 1, 3]], "label": [0, 1]})
    assert check_distillation_setup(bert(), None, None, ok, alpha_kd=0.0) == "none"


def test_setup_needs_a_teacher_or_logits(reviews, tokenizer):
    with pytest.raises(ValueError, match="alpha_kd=0.5 needs teacher logits.*add_teacher_logits"):
        check_distillation_setup(bert(), None, tokenizer, reviews, alpha_kd=0.5)
    with pytest.raises(ValueError, match="alpha_kd"):
        check_distillation_setup(bert(), bert(), tokenizer, reviews, alpha_kd=-0.1)


def test_add_teacher_logits(unlabelled_reviews, reviews, tokenizer):
    teacher = bert(layers=2, seed=0)
    out = add_teacher_logits(unlabelled_reviews, teacher, tokenizer)
    logits = np.array(out[distillation_trainer.TEACHER_LOGITS])
    assert logits.shape == (12, 2)
    assert np.allclose(logits, dataset_logits(teacher, unlabelled_reviews, tokenizer), atol=1e-6)
    assert out["label"] == logits.argmax(-1).tolist()
    assert "label" not in add_teacher_logits(unlabelled_reviews, teacher, tokenizer, label_missing=False).column_names
    # labelled data keeps its labels; an existing column is replaced; an array of logits is accepted
    fake = np.tile(np.array([[2.0, -2.0]], dtype=np.float32), (32, 1))
    once = add_teacher_logits(reviews, teacher, tokenizer)
    twice = add_teacher_logits(once, fake)
    assert twice["label"] == reviews["label"]
    assert twice.column_names.count(distillation_trainer.TEACHER_LOGITS) == 1 and twice[0][distillation_trainer.TEACHER_LOGITS] == [2.0, -2.0]
    custom = add_teacher_logits(reviews, fake, column="soft")
    assert "soft" in custom.column_names


def test_add_teacher_logits_errors(reviews):
    with pytest.raises(ValueError, match="got 5 rows of logits for a dataset of 32 examples"):
        add_teacher_logits(reviews, np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="needs the tokenizer"):
        add_teacher_logits(reviews, bert())


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


def test_train_student(tmp_path, reviews, tokenizer):
    student = bert(seed=1)
    trainer = distillation_trainer.train_student(student, reviews, tokenizer, teacher=bert(layers=2, seed=0), alpha_kd=0.5,
                               output_dir=str(tmp_path), max_steps=2, logging_steps=1)
    assert isinstance(trainer, DistillationTrainer) and trainer.model is student
    assert trainer.state.global_step == 2 and not student.training
    assert trainer.temperature == 2.0 and trainer.args.seed == 0
