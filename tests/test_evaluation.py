import json
from types import SimpleNamespace

import numpy as np
import pytest

from mri_cascade.calibration import expected_calibration_error
from mri_cascade.evaluation import (
    classification_metrics,
    evaluate_predictions,
    tune_healthy_threshold,
    write_report,
)


def test_classification_metrics_on_a_known_case():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    metrics = classification_metrics(labels, scores)
    assert metrics["accuracy"] == 0.75
    assert metrics["balanced_accuracy"] == 0.75
    assert metrics["roc_auc"] == 1.0


@pytest.mark.parametrize("target", [0.9, 0.95, 0.99])
def test_tuned_threshold_reaches_the_target_disease_recall(target):
    rng = np.random.default_rng(0)
    is_healthy = rng.random(2000) < 0.4
    p_healthy = np.clip(np.where(is_healthy, 0.75, 0.3) + rng.normal(0, 0.2, 2000), 0, 1)
    tuned = tune_healthy_threshold(p_healthy, is_healthy, target)
    called_healthy = p_healthy > tuned["threshold"]
    assert (~called_healthy[~is_healthy]).mean() >= target
    assert tuned["validation_disease_recall"] >= target
    # the most specific such threshold: lowering it to the next disease score below calls one more disease healthy
    disease_scores = np.sort(p_healthy[~is_healthy])
    next_lower = disease_scores[disease_scores < tuned["threshold"]].max()
    assert (~(p_healthy[~is_healthy] > next_lower)).mean() < target


def test_tuned_threshold_on_a_known_case():
    # ten diseased scans at 0.0 .. 0.9: 90 % recall allows one miss, the 0.9 one, so t = 0.8
    p_healthy = np.concatenate([np.arange(10) / 10, [0.95, 0.99]])
    is_healthy = np.array([False] * 10 + [True] * 2)
    assert tune_healthy_threshold(p_healthy, is_healthy, 0.9)["threshold"] == pytest.approx(0.8)
    assert tune_healthy_threshold(p_healthy, is_healthy, 1.0)["threshold"] == pytest.approx(0.9)


def test_evaluation_report_holds_every_figure_and_writes_pngs(tmp_path):
    truth = ["healthy", "alzheimer_mild", "tumor_glioma", "tumor_pituitary", "alzheimer_very_mild"]
    stage = {
        "disease-detector": np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4], [0.3, 0.7]]),
        "alzheimer-vs-tumor": np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.8, 0.2]]),
        "alzheimer-severity": np.array([[0.3, 0.4, 0.3], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1]]),
        "tumor-type": np.array([[0.3, 0.4, 0.3], [0.3, 0.4, 0.3], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]),
    }
    predicted = ["healthy", "alzheimer_mild", "tumor_glioma", "tumor_pituitary", "alzheimer_mild"]
    confidence = [0.9, 0.6, 0.7, 0.8, 0.5]
    results = [SimpleNamespace(label=label, probabilities={label: c}) for label, c in zip(predicted, confidence)]
    families = np.array(["alzheimer", "alzheimer", "tumor", "tumor", "alzheimer"])
    figures = evaluate_predictions(truth, stage, results, families)
    assert figures["cascade"]["accuracy"] == pytest.approx(0.8)
    assert figures["disease_detector_at_threshold"]["disease_recall"] == 1.0
    assert figures["disease_detector_at_threshold"]["per_family"]["tumor"]["images"] == 2
    assert figures["disease_detector_at_threshold"]["per_family"]["alzheimer"]["healthy_kept"] == 1.0
    assert figures["cascade"]["mean_confidence"] == pytest.approx(np.mean(confidence))
    assert figures["cascade"]["ece"] == pytest.approx(expected_calibration_error(
        np.array(confidence), np.array([True, True, True, True, False])))
    assert figures["models"]["tumor-type"]["accuracy"] == 1.0
    assert figures["models"]["alzheimer-severity"]["images"] == 2
    write_report({"operating_point": "screening", "full_test": figures, "deduplicated_test": figures}, tmp_path)
    assert json.loads((tmp_path / "evaluation_screening.json").read_text())["full_test"]["images"] == 5
    assert (tmp_path / "confusion_cascade_full_test_screening.png").stat().st_size > 1000
    assert (tmp_path / "confusion_tumor-type_deduplicated_test.png").exists()
