import numpy as np
import pytest

from fittingroom.inference.unsure import DEFAULT_RULES, fit_rules, image_stats, reasons, rules_from_info


def _probs(top: np.ndarray, labels: np.ndarray, classes: int = 4) -> np.ndarray:
    """Probabilities whose maximum is ``top`` at ``labels``, the rest spread evenly."""
    p = np.repeat(((1 - top) / (classes - 1))[:, None], classes, axis=1)
    p[np.arange(len(top)), labels] = top
    return p


def test_min_probability_flags_5_percent_of_right_answers_and_more_of_the_wrong_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    right = rng.random(1000) < 0.8
    top = np.where(right, rng.uniform(0.6, 1.0, 1000), rng.uniform(0.3, 0.7, 1000))
    predicted = np.where(right, labels, (labels + 1) % 4)
    images = rng.integers(0, 255, (100, 28, 28)).astype(np.uint8)
    rules = fit_rules(_probs(top, predicted), labels, images)
    assert rules["min_probability"] == pytest.approx(np.quantile(top[right], 0.05), abs=1e-4)
    assert rules["val_flagged"]["correct"] == pytest.approx(0.05, abs=0.01)
    assert rules["val_flagged"]["wrong"] > 0.5
    assert set(rules["ranges"]) == {"mean", "ink", "edges"}


def test_inputs_unlike_the_training_images_are_flagged_even_when_confident():
    rng = np.random.default_rng(1)
    train = np.zeros((500, 28, 28), dtype=np.uint8)
    for img in train:  # a light blob on black, like a garment
        h = int(rng.integers(14, 28))
        img[(28 - h) // 2:(28 + h) // 2, 6:22] = rng.integers(120, 255)
    rules = fit_rules(_probs(np.full(100, 0.9), np.zeros(100, int)), np.zeros(100, int), train)
    blank = np.zeros((1, 28, 28), dtype=np.uint8)
    noise = rng.integers(0, 256, (1, 28, 28)).astype(np.uint8)
    confident = _probs(np.array([0.99]), np.array([0]))
    assert "share of object pixels" in reasons(blank, confident, rules)[0]
    assert "edge density" in reasons(noise, confident, rules)[0]
    assert reasons(train[:1], confident, rules) == [None]
    assert "top probability 0.40 is below" in reasons(train[:1], _probs(np.array([0.4]), np.array([0])), rules)[0]


def test_image_stats_are_per_image_fractions():
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    images[1, :2] = 255
    stats = image_stats(images)
    assert stats["mean"].tolist() == [0.0, 0.5] and stats["ink"].tolist() == [0.0, 0.5]
    assert stats["edges"][0] == 0 and stats["edges"][1] > 0


def test_model_json_without_rules_gets_the_plain_threshold():
    assert rules_from_info({}) == DEFAULT_RULES
    assert rules_from_info({"unsure": {"min_probability": 0.7, "ranges": {"ink": [0.1, 0.9]}}}) == {
        "min_probability": 0.7, "ranges": {"ink": [0.1, 0.9]}}
