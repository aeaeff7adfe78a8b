"""Fitting the operating points on validation probabilities: per family, balanced and screening."""

import numpy as np
import pytest
from conftest import save_tiny_models

from mri_cascade import Cascade
from mri_cascade.cascade import calls_healthy, scan_families
from mri_cascade.fitting import SCREENING_DISEASE_RECALL, best_accuracy_threshold, fit_operating_points


def test_best_accuracy_threshold_on_a_known_case():
    # healthy scores 0.7, 0.8, 0.9; diseased 0.1, 0.2, 0.75 (the cascade's disease answer right for all three)
    p = np.array([0.7, 0.8, 0.9, 0.1, 0.2, 0.75])
    healthy = np.array([True, True, True, False, False, False])
    right = np.array([False, False, False, True, True, True])
    # t in [0.2, 0.7) gets 5 of 6; t in [0.75, 0.8) also 5 of 6: the higher one wins, midway between 0.75 and 0.8
    assert best_accuracy_threshold(p, healthy, right) == pytest.approx(0.775)
    # when the disease answers are all wrong, every healthy scan must be called healthy
    assert (p[healthy] > best_accuracy_threshold(p, healthy, np.zeros(6, bool))).all()


def test_best_accuracy_threshold_beats_every_other_threshold():
    rng = np.random.default_rng(3)
    healthy = rng.random(300) < 0.5
    p = np.clip(np.where(healthy, 0.65, 0.35) + rng.normal(0, 0.2, 300), 0, 1)
    right = ~healthy & (rng.random(300) < 0.7)
    accuracy = lambda t: np.where(p > t, healthy, right).mean()  # noqa: E731
    best = best_accuracy_threshold(p, healthy, right)
    assert all(accuracy(best) >= accuracy(t) for t in np.linspace(0, 1, 501))


def _validation_set(rng, n: int, family: str, separation: float) -> tuple[dict, np.ndarray]:
    """Calibrated-looking stage probabilities for n scans of one family, half healthy."""
    healthy = np.arange(n) < n // 2
    p_healthy = np.clip(np.where(healthy, 0.5 + separation, 0.5 - separation) + rng.normal(0, 0.15, n), 0.001, 0.999)
    alzheimer = np.full(n, 0.95 if family == "alzheimer" else 0.05)
    truth = np.where(healthy, "healthy", "alzheimer_very_mild" if family == "alzheimer" else "tumor_glioma")
    return {
        "disease-detector": np.stack([p_healthy, 1 - p_healthy], axis=1),
        "alzheimer-vs-tumor": np.stack([alzheimer, 1 - alzheimer], axis=1),
        "alzheimer-severity": np.tile([0.8, 0.15, 0.05], (n, 1)),
        "tumor-type": np.tile([0.7, 0.2, 0.1], (n, 1)),
    }, truth


def test_operating_points_are_fitted_per_family(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    rng = np.random.default_rng(0)
    hard, hard_truth = _validation_set(rng, 400, "alzheimer", 0.1)  # the Alzheimer family is the harder one
    easy, easy_truth = _validation_set(rng, 200, "tumor", 0.3)
    probabilities = {task: np.concatenate([hard[task], easy[task]]) for task in hard}
    truth = np.concatenate([hard_truth, easy_truth])
    fitted = fit_operating_points(cascade, probabilities, truth)
    points = fitted["operating_points"]
    families = scan_families(probabilities["alzheimer-vs-tumor"])
    p_healthy, is_disease = probabilities["disease-detector"][:, 0], truth != "healthy"
    for family in ("alzheimer", "tumor"):
        members = (families == family) & is_disease
        screening = points["screening"][family]
        recall = (~calls_healthy(p_healthy[members], families[members], points["screening"])).mean()
        assert recall >= SCREENING_DISEASE_RECALL
        # the lowest such threshold (unless balanced is higher): the next lower disease score breaks the target
        assert screening >= points["balanced"][family]
        if screening > points["balanced"][family]:
            lower = p_healthy[members][p_healthy[members] < screening].max()
            assert (p_healthy[members] <= lower).mean() < SCREENING_DISEASE_RECALL
        assert fitted["validation"]["screening"][family]["disease_recall"] == pytest.approx(recall)
    assert points["screening"]["alzheimer"] > points["balanced"]["alzheimer"]  # the test must see the 95 % rule
    assert points["balanced"]["alzheimer"] != points["balanced"]["tumor"]
    assert points["screening"]["alzheimer"] != points["screening"]["tumor"]
    # balanced is the most accurate of all thresholds, per family
    for family in ("alzheimer", "tumor"):
        members = families == family
        best = fitted["validation"]["balanced"][family]["end_to_end_accuracy"]
        for t in np.linspace(0, 1, 101):
            labels = np.where(p_healthy[members] > t, "healthy", np.where(
                families[members] == "alzheimer", "alzheimer_very_mild", "tumor_glioma"))
            assert best >= (labels == truth[members]).mean() - 1e-12


def test_screening_never_misses_more_diseases_than_balanced(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    rng = np.random.default_rng(2)
    # well separated: the most accurate threshold already finds every disease, above the 95 % one
    parts = [_validation_set(rng, 200, family, 0.45) for family in ("alzheimer", "tumor")]
    probabilities = {task: np.concatenate([p[task] for p, _ in parts]) for task in parts[0][0]}
    fitted = fit_operating_points(cascade, probabilities, np.concatenate([t for _, t in parts]))
    for family in ("alzheimer", "tumor"):
        assert fitted["operating_points"]["screening"][family] == fitted["operating_points"]["balanced"][family]
        assert fitted["validation"]["screening"][family]["disease_recall"] == fitted["validation"]["balanced"][family][
            "disease_recall"]


def test_a_family_without_diseased_validation_scans_is_a_clear_error(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    probabilities, truth = _validation_set(np.random.default_rng(1), 50, "alzheimer", 0.2)
    with pytest.raises(ValueError, match="no diseased scans that stage 2 calls tumor"):
        fit_operating_points(cascade, probabilities, truth)
