"""The Alzheimer baselines: the dark (CSF) share and the histogram regression, and the detector's margin over them."""

import numpy as np
from PIL import Image

from mri_cascade.research import benchmark
from mri_cascade.research.atrophy import baseline_figures, out_of_fold_histogram_scores, slice_measures, subject_measures
from mri_cascade.research.benchmark import with_interval


def brain(dark_share: float, seed: int) -> Image.Image:
    """A skull-stripped 'slice': tissue at grey 150-200 with ``dark_share`` of the brain at CSF grey 30."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((64, 64))
    pixels[8:56, 8:56] = rng.uniform(150, 200, (48, 48))
    dark = rng.random((48, 48)) < dark_share
    pixels[8:56, 8:56][dark] = 30
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def test_the_dark_share_counts_csf_inside_the_brain_only():
    dark, histogram = slice_measures(brain(0.2, 0))
    assert abs(dark - 0.2) < 0.02  # the black background is not counted
    assert histogram.shape == (20,) and abs(histogram.sum() - 1) < 1e-9


def test_more_csf_ranks_subjects_as_demented_and_the_margin_is_paired(monkeypatch):
    """Subjects with more CSF are demented: both baselines find it (AUC near 1); a detector that scores at random
    has a negative margin over them. Catches a sign error (AUC near 0) and a margin of the wrong way round."""
    demented = np.array([0, 1] * 20)
    subjects = np.repeat(np.arange(40).astype(str), 3)
    images = [brain(0.1 + 0.15 * demented[int(s)] + 0.02 * k, int(s) * 10 + k) for s in range(40) for k in range(3)]
    monkeypatch.setattr(benchmark, "BOOTSTRAP_RESAMPLES", 200)
    dark, histograms = subject_measures(images, subjects, np.arange(40).astype(str))
    scores = out_of_fold_histogram_scores(histograms, demented)
    chance = np.random.default_rng(0).random(40)
    figures = baseline_figures(chance, dark, scores, demented, with_interval)
    assert figures["dark_share_auc"]["value"] > 0.95 and figures["histogram_regression_auc"]["value"] > 0.9
    assert figures["detector_margin_over_dark_share"]["value"] < -0.2
    assert figures["detector_margin_over_dark_share"]["high"] < 0


def test_the_series_threshold_is_refitted_on_resamples_and_scored_on_the_subjects_left_out(tiny_cascade):
    """Subjects whose pooled P(healthy) separates them perfectly: every resample's threshold keeps every left-out
    healthy subject and finds every left-out diseased one. Catches scoring on the subjects the threshold was fitted on
    (no left-out set) and recall and healthy kept swapped."""
    from mri_cascade.cli import stability_line
    from mri_cascade.research.benchmark import series_threshold_stability

    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i:02d}" for i in range(30)], 2)
    diseased = np.repeat(np.arange(30) % 3 == 0, 2)
    p_healthy = np.where(diseased, rng.uniform(0.05, 0.3, 60), rng.uniform(0.7, 0.95, 60))
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (60, 1)),
                     "alzheimer-severity": np.tile([0.6, 0.3, 0.1], (60, 1)),
                     "tumor-type": np.tile([0.4, 0.3, 0.3], (60, 1))}
    truth = np.where(diseased, "alzheimer_very_mild", "healthy").astype(object)
    stability = series_threshold_stability(tiny_cascade, probabilities, truth, subjects, "balanced")
    assert stability["resamples"] > 150 and stability["subjects"] == 30
    assert stability["disease_recall"]["p5"] == 1.0 and stability["healthy_kept"]["p5"] == 1.0
    assert stability["disease_recall_every_subject"]["p5"] == 1.0 and stability["healthy_kept_every_subject"]["p5"] == 1.0
    assert stability["disease_recall_fixed_threshold"]["p5"] == 1.0
    assert stability["fitted_on_every_subject"]["disease_recall"] == 1.0
    line = stability_line("balanced", stability)  # what `mri-cascade benchmark` prints of it
    assert "disease recall fixed threshold 1.000-1.000" in line and "(disease recall 1.000, healthy kept 1.000)" in line
    assert 0.3 <= stability["threshold"]["p5"] <= stability["threshold"]["p95"] < 0.7
