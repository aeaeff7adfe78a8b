import json

import numpy as np
import pytest

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
    # the most specific such threshold: nudging it up one disease score loses recall
    higher = np.sort(p_healthy[~is_healthy])
    next_score = higher[higher > tuned["threshold"]].min()
    assert (~(p_healthy[~is_healthy] > next_score)).mean() >= target or next_score == higher.max()


def test_evaluation_report_holds_every_figure_and_writes_pngs(tmp_path):
    truth = ["healthy", "alzheimer_mild", "tumor_glioma", "tumor_pituitary", "alzheimer_very_mild"]
    stage = {
        "disease-detector": np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4], [0.3, 0.7]]),
        "alzheimer-vs-tumor": np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.8, 0.2]]),
        "alzheimer-severity": np.array([[0.3, 0.4, 0.3], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1]]),
        "tumor-type": np.array([[0.3, 0.4, 0.3], [0.3, 0.4, 0.3], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]),
    }
    predicted = ["healthy", "alzheimer_mild", "tumor_glioma", "tumor_pituitary", "alzheimer_mild"]
    figures = evaluate_predictions(truth, stage, predicted, healthy_threshold=0.7)
    assert figures["cascade"]["accuracy"] == pytest.approx(0.8)
    assert figures["disease_detector_at_threshold"]["disease_recall"] == 1.0
    assert figures["models"]["tumor-type"]["accuracy"] == 1.0
    assert figures["models"]["alzheimer-severity"]["images"] == 2
    write_report({"full_test": figures, "deduplicated_test": figures}, tmp_path)
    assert json.loads((tmp_path / "evaluation.json").read_text())["full_test"]["images"] == 5
    assert (tmp_path / "confusion_cascade_full_test.png").stat().st_size > 1000
    assert (tmp_path / "confusion_tumor-type_deduplicated_test.png").exists()
