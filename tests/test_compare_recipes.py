"""How train/compare_folds.py scores a classifier task's recipes out of fold, and both comparison scripts a
recipe of several training runs."""


import numpy as np
import pytest
from datasets import Dataset

from train.compare_folds import (
    CLASSIFIER_METRICS,
    LABEL_METRICS,
    SUBJECTS,
    mean_over_runs,
    scoring_facts,
    with_subjects,
)


def test_a_classifier_is_scored_by_its_most_probable_class():
    """Catches scoring a column of the probabilities (as for P(healthy)) instead of the most probable class, and
    balanced accuracy that ignores a class."""
    truth = np.array([0, 0, 0, 1, 2])
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    assert CLASSIFIER_METRICS["accuracy"](truth, probabilities) == 0.8
    assert CLASSIFIER_METRICS["balanced_accuracy"](truth, probabilities) == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_a_classifier_task_scores_its_own_class_indices_in_one_group():
    held_out = Dataset.from_dict({"row": [2, 0], "label": [1, 0], "label_id": ["alzheimer_mild", "alzheimer_very_mild"],
                                  "source": ["alzheimer", "alzheimer"]})
    groups, truth, clusters = scoring_facts("alzheimer-severity", held_out, np.array([7, 8, 9]))
    assert groups.tolist() == ["alzheimer-severity"] * 2
    assert truth.tolist() == [1, 0] and clusters.tolist() == [9, 7]
    detector_groups, is_healthy, _ = scoring_facts("disease-detector", held_out, np.array([7, 8, 9]))
    assert detector_groups.tolist() == ["alzheimer"] * 2 and not is_healthy.any()


def test_a_recipe_of_several_runs_is_scored_by_the_mean_of_its_runs():
    """Catches averaging along the wrong axis of the (scans, runs) table, and scoring only one run."""
    truth = np.array([0, 1, 2, 1, 0])
    predicted = np.column_stack([truth, [0, 1, 2, 0, 1]])  # run 1 right 5 of 5, run 2 right 3 of 5
    assert mean_over_runs(LABEL_METRICS["accuracy"])(truth, predicted) == pytest.approx(0.8)


def test_a_fold_of_several_classifier_runs_is_scored_by_the_mean_of_its_runs():
    """compare_folds stacks each run's (scans, classes) probabilities on a last axis. Catches reading that axis as
    the classes (or the classes as runs), and scoring only the first run."""
    truth = np.array([0, 1, 1])
    right = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])  # 3 of 3
    one_wrong = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # 2 of 3
    runs = np.stack([right, one_wrong], axis=-1)
    assert mean_over_runs(CLASSIFIER_METRICS["accuracy"])(truth, runs) == pytest.approx(5 / 6)
    assert mean_over_runs(CLASSIFIER_METRICS["accuracy"])(truth[:2], runs[:2]) == 1.0  # scans index the first axis


def test_the_detector_is_also_scored_per_subject_on_its_slices_mean():
    """compare_folds adds one row per named subject (the mean of its slices' P(healthy), per run), scored in its own
    group. Catches pooling across subjects or runs, a subject's truth or cluster taken from another's slices, and
    unnamed scans (other collections) counted as a subject."""
    held_out = Dataset.from_dict({"subject": ["a", "b", "a", "", "b"]})
    groups = np.array(["alzheimer", "alzheimer", "alzheimer", "tumor", "alzheimer"])
    is_healthy = np.array([True, False, True, True, False])
    clusters = np.array([3, 4, 3, 9, 4])
    scores = {"recipe": np.array([[0.9, 0.5], [0.2, 0.4], [0.7, 0.3], [0.8, 0.8], [0.4, 0.0]])}  # (scans, runs)
    (subject_groups, truth, subject_clusters), pooled = with_subjects(held_out, groups, is_healthy, clusters, scores)
    assert subject_groups.tolist()[5:] == [SUBJECTS, SUBJECTS]
    assert truth.tolist()[5:] == [True, False] and subject_clusters.tolist()[5:] == [3, 4]
    np.testing.assert_allclose(pooled["recipe"][5:], [[0.8, 0.4], [0.3, 0.2]])
    np.testing.assert_array_equal(pooled["recipe"][:5], scores["recipe"])  # the scans themselves are kept
