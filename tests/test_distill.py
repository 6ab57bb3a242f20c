import json

import pytest
import torch

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.core.errors import ConfigError
from fittingroom.training.distill import distillation_loss


def test_loss_is_zero_when_the_student_matches_the_teacher():
    logits = torch.randn(8, 5)
    logp = torch.log_softmax(logits, 1)
    assert distillation_loss(logits, logp, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.randn(8, 5), logp, 4.0).item() > 0.01


def test_gradient_moves_the_student_towards_the_teacher():
    teacher = torch.log_softmax(torch.tensor([[3.0, 0.0, -3.0]]), 1)
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # descent raises class 0, lowers class 2


@pytest.mark.slow
def test_student_learns_from_a_finished_run(tiny_data, tiny_run, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=3, batch_size=16, lr=0.05,
                         model_args={"hidden": [32]}, teacher=str(tiny_run), distill_weight=1.0)
    result = train_run(config, out=tmp_path / "student", verbose=False)
    assert result.metrics["test_accuracy"] > 0.8  # learnt from the teacher alone, no label in the loss
    assert json.loads((tmp_path / "student" / "config.json").read_text())["teacher"] == str(tiny_run)


@pytest.mark.slow  # two runs: the teacher, then the student
def test_teacher_named_by_preset_is_trained_first_inside_the_run(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=2, batch_size=16, teacher="fast",
                         model_args={"hidden": [32]})
    result = train_run(config, out=tmp_path / "student", verbose=False)
    teacher = load_model(tmp_path / "student" / "teacher")
    assert json.loads((tmp_path / "student" / "teacher" / "config.json").read_text())["preset"] == "fast"
    assert teacher.classes == load_model(result.path).classes


def test_teacher_must_be_a_preset_or_a_finished_run(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=1, teacher=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="neither a preset .* nor a finished run"):
        train_run(config, out=tmp_path / "student", verbose=False)
    assert not (tmp_path / "student").exists()


def test_distill_settings_are_checked():
    with pytest.raises(ConfigError, match="distill_weight=1.5"):
        TrainConfig(distill_weight=1.5).validate()
