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


def test_a_subject_is_answered_with_series_thresholds_fitted_on_the_other_half(monkeypatch, tiny_cascade):
    """Two subjects, one per half. s1's slices pool to P(healthy) 0.53: healthy under the slice threshold 0.5, but
    not under the series threshold 0.9 fitted on the other half's subject. Catches series thresholds fitted on
    the subjects they answer, the slice thresholds used for a series, or slices answered one by one."""
    p_healthy = np.array([0.4, 0.4, 0.8, 0.3, 0.3, 0.3])
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (6, 1)),
                     "alzheimer-severity": np.tile([0.7, 0.2, 0.1], (6, 1)), "tumor-type": np.tile([0.4, 0.3, 0.3], (6, 1))}
    subjects = np.array(["s1"] * 3 + ["s2"] * 3)
    first_half = subjects == "s1"
    thresholds = {half: {"balanced": {"alzheimer": 0.5, "tumor": 0.5}} for half in ("first half", "second half")}
    fitted_on = []

    def fit_series(cascade, probs, truth, named, slice_points):
        fitted_on.append(set(named))
        return {"operating_points": {"balanced": {**slice_points["balanced"], "alzheimer": 0.9}}}

    monkeypatch.setattr(benchmark, "fit_series_operating_points", fit_series)
    slice_answers = np.array(["alzheimer_very_mild", "alzheimer_very_mild", "healthy"] + ["alzheimer_very_mild"] * 3,
                             dtype=object)
    figures = benchmark.subject_figures(tiny_cascade, probabilities, np.array(["alzheimer_very_mild"] * 6, object),
                                        subjects, slice_answers, thresholds, first_half, "balanced")
    assert fitted_on == [{"s2"}, {"s1"}]  # the first half's series thresholds come from the second half
    assert figures["subjects"] == 2
    assert figures["end_to_end"]["value"] == 1.0  # 0.53 and 0.3 are not above 0.9: both very mild, right
    assert figures["with_slice_thresholds"]["end_to_end"]["value"] == 0.5  # s1: 0.53 > 0.5 -> healthy, wrong
    assert figures["majority_of_slices_end_to_end"]["value"] == 1.0


def test_models_trained_on_other_collections_cannot_be_benchmarked(tmp_path):
    models = save_tiny_models(tmp_path / "models")
    for task in TASKS:
        (models / task / "training_args.json").write_text(json.dumps(
            {"data": ["x/alzheimer", "x/brain_tumor"], "validation": "fold", "validation_fold": 0}))
    Cascade.from_pretrained(models)  # loads fine
    with pytest.raises(ValueError, match="trained on"):
        benchmark.held_out_fold_of(str(models), ["d/alzheimer", "d/brain_tumor", "d/br35h"])
    assert benchmark.held_out_fold_of(str(models), ["d/alzheimer", "d/brain_tumor"]) == 0


def test_refits_on_every_scan_are_benchmarked_through_their_fold_models_alone(tmp_path):
    """Catches the all-subject shipped models refused by the benchmark, a mix of refits and fold models taken as
    one fold's, and refits benchmarked with nothing out of fold."""
    models = save_tiny_models(tmp_path / "models")
    sources = ["d/alzheimer", "d/brain_tumor"]
    for task in TASKS:
        (models / task / "training_args.json").write_text(json.dumps(
            {"data": sources, "validation": "none", "validation_fold": 0}))
    assert benchmark.held_out_fold_of(str(models), sources) is None
    with pytest.raises(ValueError, match="nothing is out of fold for them"):
        benchmark.run_benchmark(str(models), sources)
    (models / "disease-detector" / "training_args.json").write_text(json.dumps(
        {"data": sources, "validation": "fold", "validation_fold": 0}))
    with pytest.raises(ValueError, match="or all train on every scan"):
        benchmark.held_out_fold_of(str(models), sources)
