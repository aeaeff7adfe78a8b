"""One-line baselines for Alzheimer's per subject: how much dark (CSF) there is, and the tissue histogram.

A model of Alzheimer's that does no better than counting dark pixels has learned how much CSF a brain holds, which
ageing raises too. The benchmark reports two baselines beside the detector, on the same subjects and slices:

- **dark share**: the share of a slice's brain pixels darker than ``DARK_LEVEL`` of the slice's 99th percentile (CSF
  on these skull-stripped T1 slices), averaged over the subject's slices; a larger share says demented;
- **histogram regression**: a logistic regression on the subject's mean ``HISTOGRAM_BINS``-bin histogram of brain
  grey levels, its scores out of fold (5-fold, stratified, averaged over ``REPEATS`` shuffles).

Each is scored by its AUC for demented against healthy subjects, with a 95 % interval from a bootstrap over
subjects, and the detector's margin over it by a paired bootstrap.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

BRAIN_LEVEL = 10  # grey level above which a pixel of a skull-stripped slice is brain (the background is 0)
DARK_LEVEL = 0.35  # a brain pixel darker than this share of the slice's 99th percentile counts as CSF
HISTOGRAM_BINS = 20
REPEATS = 10


def dark_level(grey: np.ndarray, brain: np.ndarray) -> float:
    """The grey level below which a brain pixel of a slice counts as CSF: ``DARK_LEVEL`` of the brain's 99th
    percentile (``brain`` must hold a pixel)."""
    return DARK_LEVEL * float(np.percentile(grey[brain], 99))


def slice_measures(image: Image.Image) -> tuple[float, np.ndarray]:
    """A slice's dark share and its brain pixels' grey-level histogram (shares summing to 1)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    brain = grey > BRAIN_LEVEL
    if not brain.any():
        return 0.0, np.zeros(HISTOGRAM_BINS)
    values = grey[brain]
    dark = float((values < dark_level(grey, brain)).mean())
    counts = np.histogram(values, bins=HISTOGRAM_BINS, range=(0, 256))[0]
    return dark, counts / counts.sum()


def subject_measures(images, subjects: np.ndarray, named: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per subject of ``named`` (in that order): the mean dark share and the mean histogram of its slices."""
    measures = [slice_measures(image) for image in images]
    dark = np.array([m[0] for m in measures])
    histograms = np.stack([m[1] for m in measures])
    return (np.array([dark[subjects == s].mean() for s in named]),
            np.stack([histograms[subjects == s].mean(axis=0) for s in named]))


def out_of_fold_histogram_scores(histograms: np.ndarray, demented: np.ndarray) -> np.ndarray:
    """The histogram regression's out-of-fold P(demented) per subject, averaged over ``REPEATS`` shuffles."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    scores = [cross_val_predict(model, histograms, demented, method="predict_proba",
                                cv=StratifiedKFold(5, shuffle=True, random_state=seed))[:, 1] for seed in range(REPEATS)]
    return np.mean(scores, axis=0)


def baseline_figures(detector_score: np.ndarray, dark: np.ndarray, histogram_score: np.ndarray,
                     demented: np.ndarray, interval) -> dict:
    """AUCs (demented against healthy subjects) of the detector's pooled P(disease) and of the two baselines, and the
    detector's margin over each, each with ``interval(statistic, members, clusters)`` over subjects."""
    everyone = np.ones(len(demented), dtype=bool)
    subjects = np.arange(len(demented))

    def auc(score: np.ndarray):
        def statistic(indices: np.ndarray) -> float | None:
            truth = demented[indices]
            return float(roc_auc_score(truth, score[indices])) if 0 < truth.sum() < len(truth) else None
        return statistic

    def margin(score: np.ndarray):
        detector, baseline = auc(detector_score), auc(score)

        def statistic(indices: np.ndarray) -> float | None:
            first, second = detector(indices), baseline(indices)
            return None if first is None or second is None else first - second
        return statistic

    return {"subjects": len(demented), "demented": int(demented.sum()),
            "detector_auc": interval(auc(detector_score), everyone, subjects),
            "dark_share_auc": interval(auc(dark), everyone, subjects),
            "histogram_regression_auc": interval(auc(histogram_score), everyone, subjects),
            "detector_margin_over_dark_share": interval(margin(dark), everyone, subjects),
            "detector_margin_over_histogram_regression": interval(margin(histogram_score), everyone, subjects)}
