"""The benchmark's pieces: clusters stay whole, thresholds are never fitted on the scans they answer, intervals
resample clusters, a subject's slices pool into one answer, and models trained on other collections are refused."""

import json

import numpy as np
import pytest
from conftest import save_tiny_models

from mri_cascade import Cascade
from mri_cascade.labels import TASKS
from mri_cascade.research import benchmark


def test_halves_keep_each_cluster_whole_and_split_the_clusters_evenly():
    clusters = np.repeat([f"s{i}" for i in range(10)], 3)
    first = benchmark.cluster_halves(clusters)
    for cluster in np.unique(clusters):
        assert len(set(first[clusters == cluster])) == 1
    assert first.sum() == 15


def test_each_half_is_answered_with_thresholds_fitted_on_the_other(monkeypatch, tiny_cascade):
    """A fit that returns the mean P(healthy) of what it was given as every threshold: each half's answers must
    follow the other half's mean. Catches fitting and answering on the same half."""
    p_healthy = np.r_[np.full(4, 0.2), np.full(4, 0.8)]
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (8, 1)),
                     "alzheimer-severity": np.tile([0.6, 0.3, 0.1], (8, 1)), "tumor-type": np.tile([0.4, 0.3, 0.3], (8, 1))}
    first_half = np.r_[np.ones(4, bool), np.zeros(4, bool)]

    def fit_means(cascade, probs, truth):
        mean = float(probs["disease-detector"][:, 0].mean())
        return {"operating_points": {point: {"alzheimer": mean, "tumor": mean} for point in ("balanced", "screening")}}

    monkeypatch.setattr(benchmark, "fit_operating_points", fit_means)
    answers, thresholds = benchmark.cross_fitted_answers(tiny_cascade, probabilities, np.array(["healthy"] * 8, object),
                                                          first_half)
    assert thresholds["first half"]["balanced"]["alzheimer"] == pytest.approx(0.8)  # fitted on the second half
    # first half: P(healthy) 0.2 is not above 0.8 -> disease; second half: 0.8 is above 0.2 -> healthy
    assert list(answers["balanced"][:4] != "healthy") == [True] * 4
    assert list(answers["balanced"][4:] == "healthy") == [True] * 4


def test_the_interval_resamples_whole_clusters():
    right = np.r_[np.ones(50), np.zeros(50)]  # two clusters: all right, all wrong
    clusters = np.r_[np.zeros(50), np.ones(50)]
    figure = benchmark.with_interval(benchmark.accuracy_of(right.astype(bool)), np.ones(100, bool), clusters)
    assert figure["value"] == 0.5 and figure["clusters"] == 2
    # resampling two clusters gives 0, 0.5 or 1; resampling scans would give a narrow interval around 0.5
    assert figure["low"] == 0.0 and figure["high"] == 1.0


def test_a_subjects_slices_pool_into_one_answer():
    # three slices: two weakly demented, one confidently healthy; their mean P(healthy) is 0.53
    p_healthy = np.array([0.4, 0.4, 0.8])
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (3, 1)),
                     "alzheimer-severity": np.tile([0.7, 0.2, 0.1], (3, 1)), "tumor-type": np.tile([0.4, 0.3, 0.3], (3, 1))}
    thresholds = {half: {"balanced": {"alzheimer": 0.5, "tumor": 0.5}} for half in ("first half", "second half")}
    slice_answers = np.array(["alzheimer_very_mild", "alzheimer_very_mild", "healthy"], dtype=object)
    figures = benchmark.subject_figures(probabilities, np.array(["alzheimer_very_mild"] * 3, object),
                                        np.array(["NonDemented_s001"] * 3), slice_answers, thresholds,
                                        np.ones(3, bool), "balanced")
    assert figures["subjects"] == 1
    assert figures["end_to_end"]["value"] == 0.0  # pooled: 0.53 > 0.5 -> healthy, wrong
    assert figures["majority_of_slices_end_to_end"]["value"] == 1.0  # two of three slices say very mild


def test_models_trained_on_other_collections_cannot_be_benchmarked(tmp_path):
    models = save_tiny_models(tmp_path / "models")
    for task in TASKS:
        (models / task / "training_args.json").write_text(json.dumps(
            {"data": ["x/alzheimer", "x/brain_tumor"], "validation": "fold", "validation_fold": 0}))
    Cascade.from_pretrained(models)  # loads fine
    with pytest.raises(ValueError, match="trained on"):
        benchmark.held_out_fold_of(str(models), ["d/alzheimer", "d/brain_tumor", "d/br35h"])
    assert benchmark.held_out_fold_of(str(models), ["d/alzheimer", "d/brain_tumor"]) == 0
