import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fittingroom.evaluation.metrics import (
    calibration,
    classification_metrics,
    confusion_matrix,
    most_confused,
    per_class_scores,
    per_example_loss,
    top_k_accuracy,
)
from fittingroom.figures.evaluation import row_normalise

LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDICTED = np.array([0, 1, 1, 1, 2, 0])


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    assert confusion_matrix(LABELS, PREDICTED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix(np.array([3]), np.array([0]), 4)[3, 0] == 1  # classes with no images still get a row


def test_per_class_scores_match_hand_computed_values():
    scores = per_class_scores(confusion_matrix(LABELS, PREDICTED, 3))
    # precision = tp / predicted: 1/2, 2/3, 1/1; recall = tp / support: 1/2, 2/2, 1/2
    np.testing.assert_allclose(scores["precision"], [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(scores["recall"], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(scores["f1"], [0.5, 0.8, 2 / 3])
    assert scores["support"].tolist() == [2, 2, 2]


def test_a_class_never_predicted_has_precision_zero_not_nan():
    scores = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    assert scores["precision"].tolist() == [0.5, 0.0] and scores["f1"][1] == 0.0
    assert not np.isnan(row_normalise(np.zeros((2, 2), int))).any()


def test_row_normalise_divides_each_row_by_its_count():
    np.testing.assert_allclose(row_normalise(np.array([[3, 1], [0, 0]])), [[0.75, 0.25], [0.0, 0.0]])


def test_top_k_accuracy():
    logp = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]]))
    labels = np.array([1, 1, 0])
    assert top_k_accuracy(logp, labels, 1) == 0.0
    assert top_k_accuracy(logp, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logp, labels, 5) == 1.0  # k above the number of classes means all


def test_most_confused_lists_off_diagonal_pairs_largest_first():
    confusion = np.array([[50, 3, 9], [0, 40, 1], [7, 0, 30]])
    assert most_confused(confusion, 3) == [(0, 2, 9), (2, 0, 7), (0, 1, 3)]
    assert most_confused(np.eye(3, dtype=int) * 5) == []  # nothing confused, nothing listed


def _binary(confidences, correct):
    """(N, 2) probabilities whose top probability is ``confidence`` and labels that are right where ``correct``."""
    c = np.asarray(confidences, dtype=np.float64)
    proba = np.stack([c, 1 - c], axis=1)
    labels = np.where(np.asarray(correct, bool), 0, 1)
    return proba, labels


def test_ece_matches_a_hand_computed_example():
    proba, labels = _binary([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1])
    # bin of 0.9: accuracy 0.5, gap 0.4, weight 1/2; bin of 0.6: accuracy 1.0, gap 0.4, weight 1/2
    result = calibration(proba, labels, bins=10)
    assert result["ece"] == pytest.approx(0.4)
    filled = [b for b in result["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in filled] == [(2, 1.0), (2, 0.5)]


def test_ece_is_near_zero_when_calibrated_and_large_when_over_confident():
    confidences, correct = [], []
    for c in (0.55, 0.65, 0.75, 0.85, 0.95):  # 1000 predictions at each confidence, right that often
        confidences += [c] * 1000
        correct += [1] * round(c * 1000) + [0] * (1000 - round(c * 1000))
    assert calibration(*_binary(confidences, correct))["ece"] == pytest.approx(0.0, abs=1e-9)
    over = calibration(*_binary([0.99] * 1000, [1, 0] * 500))
    assert over["ece"] == pytest.approx(0.49)


def test_classification_metrics_agree_with_torch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4)) * 2
    labels = rng.integers(0, 4, 200)
    logp = F.log_softmax(torch.tensor(logits), dim=1).numpy()
    result = classification_metrics(logp, labels, ["a", "b", "c", "d"])
    assert result["overall"]["loss"] == pytest.approx(F.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item())
    assert result["overall"]["accuracy"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert np.sum(result["confusion"]) == 200
    assert [r["support"] for r in result["per_class"]] == np.bincount(labels, minlength=4).tolist()
    assert result["overall"]["macro_f1"] == pytest.approx(np.mean([r["f1"] for r in result["per_class"]]))
    np.testing.assert_allclose(per_example_loss(logp, labels), -logp[np.arange(200), labels])
