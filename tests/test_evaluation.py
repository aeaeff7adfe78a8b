import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mri_cascade.labels import TASKS
from mri_cascade.research.audit import fingerprint_dataset, near_duplicate_groups
from mri_cascade.research.calibration_fit import expected_calibration_error
from mri_cascade.research.data import fold_assignment, load_sources
from mri_cascade.research.evaluation import (
    classification_metrics,
    evaluate_cascade,
    evaluate_predictions,
    paired_cluster_bootstrap,
    tune_healthy_threshold,
    write_report,
)
from mri_cascade.research.evaluation import test_results_of as card_results  # not collected as a test


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


class AnswersHealthy:
    """A fold's models (as ``fitting.FoldModels``) that call every scan healthy, so the test can see which scans
    they answered."""

    def __init__(self, out_of_fold: set[str], swapped: set[str] = frozenset({"disease-detector"})):
        self.out_of_fold, self.swapped = out_of_fold, set(swapped)

    def logits(self, scans, batch_size=8, progress=None):
        n = len(scans)
        return {"disease-detector": np.tile([20.0, -20.0], (n, 1)), "alzheimer-vs-tumor": np.zeros((n, 2)),
                "alzheimer-severity": np.zeros((n, 3)), "tumor-type": np.zeros((n, 3))}


def test_unseen_subject_figures_take_each_fold_models_answers_on_the_subjects_they_held_out(tmp_path, tiny_cascade,
                                                                                           capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "alzheimer"
    for split, classes in {"train": {"NonDemented": 6, "VeryMildDemented": 6, "MildDemented": 6},
                           "test": {"NonDemented": 2, "MildDemented": 2}}.items():  # test: linked to no train image
        for class_name, count in classes.items():
            (root / split / class_name).mkdir(parents=True)
            for index in range(count):  # unrelated slices: no two are near duplicates
                pixels = rng.integers(0, 255, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels).resize((64, 64)).save(root / split / class_name / f"{index}.png")
    for class_folder in (root / "train").iterdir():  # and a copy of every training slice
        (root / "test" / class_folder.name).mkdir(exist_ok=True)
        for image in class_folder.iterdir():
            shutil.copy(image, root / "test" / class_folder.name / f"copy-{image.name}")
    splits = load_sources([str(root)])
    train_folds = fold_assignment(splits["train"]["label_id"],
                                  near_duplicate_groups(fingerprint_dataset(splits["train"]).thumbnails), 1 / 3)
    healthy = np.array(splits["train"]["label_id"]) == "healthy"
    held_out = {0: AnswersHealthy({"disease-detector", "alzheimer-severity"}),
                1: AnswersHealthy({"disease-detector"})}  # fold 1's severity model trained on it
    capsys.readouterr()
    report = evaluate_cascade(tiny_cascade, splits, validation_fraction=1 / 3, validation={}, held_out=held_out)
    assert "test split: 100%" in capsys.readouterr().err  # no silent minutes: a progress bar over the models' runs
    unseen = report["unseen_subjects_test"]
    from_folds = int((train_folds == 0).sum() + ((train_folds == 1) & healthy).sum())
    assert 0 < (train_folds == 1).sum() - ((train_folds == 1) & healthy).sum()  # fold 1 has demented scans to leave out
    assert unseen["folds"] == [0, 1] and unseen["images"] == 4 + from_folds
    called_healthy = np.asarray(unseen["cascade"]["confusion"])[:, unseen["cascade"]["labels"].index("healthy")].sum()
    assert called_healthy >= from_folds
    assert report["full_test"]["images"] == 4 + 18
    assert unseen["folds_by_model"] == {"disease-detector": [0, 1], "alzheimer-severity": [0], "tumor-type": []}
    assert card_results(report, "alzheimer-severity")["unseen_subjects"]["folds"] == [0]  # what its card names
    assert set(card_results(report, "alzheimer-vs-tumor")) == {"full", "deduplicated"}
    # the cascade's own held-out fold counts with the answers it already gave
    own = evaluate_cascade(tiny_cascade, splits, validation_fraction=1 / 3, validation={},
                           held_out={0: AnswersHealthy(set(TASKS), swapped=set())})["unseen_subjects_test"]
    assert own["images"] == 4 + int((train_folds == 0).sum())


def _auc(truth, scores):
    return float(roc_auc_score(truth, scores))


def test_paired_bootstrap_sees_a_better_detector_and_no_difference_between_equals():
    rng = np.random.default_rng(0)
    truth = np.tile([0, 1], 60)
    good, noise = truth + rng.normal(0, 0.5, truth.size), rng.normal(0, 1, truth.size)
    clusters = np.arange(truth.size) // 4
    folds = clusters % 2
    better = paired_cluster_bootstrap(_auc, truth, good, noise, clusters, folds, draws=200)
    assert better["low"] > 0 and better["difference"] > 0.3
    same = paired_cluster_bootstrap(_auc, truth, good, good, clusters, folds, draws=50)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "clusters": 30}


def test_paired_bootstrap_resamples_whole_clusters():
    """Twenty copies of each of twelve scans carry the evidence of twelve scans, not 240: the interval must be as
    wide as for the twelve, not as narrow as for 240 independent scans."""
    rng = np.random.default_rng(1)
    truth = np.tile([0, 1], 6)
    a, b = truth + rng.normal(0, 0.8, 12), truth + rng.normal(0, 0.8, 12)
    copies = np.repeat(np.arange(12), 20)
    folds = np.zeros(copies.size, int)
    as_clusters = paired_cluster_bootstrap(_auc, truth[copies], a[copies], b[copies], copies, folds, draws=300)
    as_scans = paired_cluster_bootstrap(_auc, truth[copies], a[copies], b[copies], np.arange(copies.size), folds,
                                        draws=300)
    assert as_clusters["clusters"] == 12
    assert (as_clusters["high"] - as_clusters["low"]) > 2 * (as_scans["high"] - as_scans["low"])


def test_paired_bootstrap_of_one_class_recall_needs_classes_needed_one():
    """Off-source validation of the detector holds diseased scans only: their recall is bootstrapped with
    classes_needed=1, and the default (made for AUC) refuses rather than loop for ever."""
    truth = np.ones(40, int)
    a, b = np.r_[np.ones(30, int), np.zeros(10, int)], np.r_[np.ones(10, int), np.zeros(30, int)]
    clusters, folds = np.arange(40) // 2, np.zeros(40, int)
    recall = lambda t, p: float((t == p).mean())  # noqa: E731
    compared = paired_cluster_bootstrap(recall, truth, a, b, clusters, folds, draws=100, classes_needed=1)
    assert compared["difference"] == pytest.approx(0.5) and compared["low"] > 0 and compared["clusters"] == 20
    with pytest.raises(ValueError, match="2 classes"):
        paired_cluster_bootstrap(recall, truth, a, b, clusters, folds, draws=10)
