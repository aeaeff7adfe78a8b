"""Metrics, the data audit report, threshold tuning and the test-split evaluation of the cascade."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from ..decisions import healthy_above
from ..labels import (
    ALZHEIMER_SEVERITY,
    ALZHEIMER_VS_TUMOR,
    DISEASE_DETECTOR,
    FAMILIES,
    LABEL_IDS,
    PARTIAL_LABELS,
    TASKS,
    TUMOR_TYPE,
    answers_match,
    typed_truth,
)
from .audit import (
    NO_TRAINING_SUBJECT,
    Fingerprints,
    audit_table,
    duplicates_of_reference,
    subject_folds,
    subject_in_reference,
    within_split_duplicates,
)
from .calibration_fit import expected_calibration_error
from .data import SPLIT_SEED, VALIDATION_FRACTION


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and, for two classes, ROC AUC; ``scores`` are logits or probabilities."""
    labels = np.asarray(labels)
    predictions = np.asarray(scores).argmax(axis=-1)
    metrics = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro")),
    }
    if scores.shape[-1] == 2 and len(set(labels.tolist())) == 2:
        metrics["roc_auc"] = float(roc_auc_score(labels, np.asarray(scores)[:, 1] - np.asarray(scores)[:, 0]))
    return metrics


def tune_healthy_threshold(p_healthy: np.ndarray, is_healthy: np.ndarray, target_recall: float) -> dict[str, float]:
    """The lowest threshold t (healthy iff P(healthy) > t) whose disease recall reaches ``target_recall``.

    Lower t calls more scans healthy, so this is the most specific threshold that still misses
    at most 1 - target_recall of the diseased scans: it is one of their scores, and the next lower
    disease score would miss one more.
    """
    disease_scores = np.sort(p_healthy[~is_healthy])
    # the epsilon keeps 1 - 0.9 = 0.0999... from rounding one allowed miss in ten away
    allowed_misses = int(np.floor((1 - target_recall) * len(disease_scores) + 1e-9))
    # at t = the (allowed_misses+1)-th highest disease score, only the allowed_misses above it are called healthy
    threshold = float(disease_scores[len(disease_scores) - allowed_misses - 1])
    threshold = min(max(threshold, 0.0), 1.0)
    called_healthy = healthy_above(p_healthy, threshold)
    return {
        "threshold": threshold,
        "target_disease_recall": target_recall,
        "validation_disease_recall": float((~called_healthy[~is_healthy]).mean()),
        "validation_accuracy": float((called_healthy == is_healthy).mean()),
    }


def modality_counts(splits) -> dict[str, dict[str, int]]:
    """The modality audit's counts (``data.NON_MRI_LIST``) in splits loaded with their non-MRI images: per
    ``collection/split/label``, the images and how many of them are listed as another modality than MRI."""
    counts: dict[str, dict[str, int]] = {}
    for split, dataset in splits.items():
        for source, label, modality in zip(dataset["source"], dataset["label_id"], dataset["modality"]):
            row = counts.setdefault(f"{source}/{split}/{label}", {"images": 0, "non_mri": 0})
            row["images"] += 1
            row["non_mri"] += modality != "MRI"
    return dict(sorted(counts.items()))


def audit_report(splits, train_prints: Fingerprints, test_prints: Fingerprints,
                 modalities: dict[str, dict[str, int]] | None = None) -> dict:
    """Duplicate counts per class: within train, within test, and test images that copy a train image or are
    linked to one by a chain of near duplicates (``linked``: on the Alzheimer collection, a slice of a subject
    whose other slices are in train); and ``modalities`` (``modality_counts``) when given."""
    train_exact, train_near = within_split_duplicates(train_prints)
    test_exact, test_near = within_split_duplicates(test_prints)
    cross_exact, cross_near = duplicates_of_reference(test_prints, train_prints)
    linked = subject_in_reference(test_prints.thumbnails, train_prints.thumbnails)
    return {
        "train_within_split": audit_table(splits["train"]["label_id"], {"exact": train_exact, "near": train_near}),
        "test_within_split": audit_table(splits["test"]["label_id"], {"exact": test_exact, "near": test_near}),
        "test_duplicating_train": audit_table(splits["test"]["label_id"],
                                              {"exact": cross_exact, "near": cross_near, "linked": linked}),
        **({"non_mri": modalities} if modalities is not None else {}),
    }


def print_audit(audit: dict) -> None:
    for section, table in audit.items():
        columns = list(next(iter(table.values())))
        width = max(22, *(len(label) for label in table))
        print(f"\n{section}:")
        print(f"  {'class':<{width}}" + "".join(f"{column:>8}" for column in columns))
        for label, row in table.items():
            print(f"  {label:<{width}}" + "".join(f"{row[column]:>8}" for column in columns))


def _per_class(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    return {label: {k: round(float(v), 4) for k, v in report[label].items()} for label in labels}


def decision_figures(truth: np.ndarray, labels: np.ndarray, families: np.ndarray) -> dict:
    """End-to-end accuracy, detector accuracy, disease recall and healthy scans kept healthy, for all scans and
    per scan family (``families``: "alzheimer" or "tumor" per scan)."""
    truth, labels, families = np.asarray(truth), np.asarray(labels), np.asarray(families)

    def figures(members: np.ndarray) -> dict:
        is_healthy, called_healthy = truth[members] == "healthy", labels[members] == "healthy"
        return {
            "images": int(members.sum()),
            "end_to_end_accuracy": float(answers_match(labels[members], truth[members]).mean()) if members.any() else None,
            "detector_accuracy": float((called_healthy == is_healthy).mean()) if members.any() else None,
            "disease_recall": float((~called_healthy[~is_healthy]).mean()) if (~is_healthy).any() else None,
            "healthy_kept": float(called_healthy[is_healthy].mean()) if is_healthy.any() else None,
        }

    return {"all": figures(np.ones(len(truth), bool)), **{family: figures(families == family) for family in FAMILIES}}


def evaluate_predictions(
    true_labels: list[str], stage_probabilities: dict[str, np.ndarray], results: list, families: np.ndarray
) -> dict:
    """Every figure for one set of images: each model on its own task's images, the healthy decision per scan
    family, and the cascade's answers (``results``, as ``Cascade.combine`` gives them) with their calibration."""
    predicted_labels = [result.label for result in results]
    true_array = np.asarray(true_labels)
    scored_truth = [str(label) for label in typed_truth(predicted_labels, true_array)]
    figures: dict = {"images": len(true_labels), "models": {}}
    for task in TASKS.values():
        members = np.isin(true_array, task.members())
        if not members.any():
            continue
        truth = [task.class_of[label] for label in true_array[members]]
        truth_index = np.array([task.class_index(label) for label in true_array[members]])
        probabilities = stage_probabilities[task.name][members]
        predicted = [task.classes[i] for i in probabilities.argmax(axis=1)]
        figures["models"][task.name] = {
            "images": int(members.sum()),
            **classification_metrics(truth_index, probabilities),
            "per_class": _per_class(truth, predicted, list(task.classes)),
            "confusion": confusion_matrix(truth, predicted, labels=list(task.classes)).tolist(),
        }
    decisions = decision_figures(true_array, np.asarray(predicted_labels), families)
    figures["disease_detector_at_threshold"] = {
        "accuracy": decisions["all"]["detector_accuracy"], "disease_recall": decisions["all"]["disease_recall"],
        "healthy_recall": decisions["all"]["healthy_kept"], "per_family": {f: decisions[f] for f in FAMILIES},
    }
    labels = [label for label in LABEL_IDS + PARTIAL_LABELS if label in set(scored_truth) | set(predicted_labels)]
    confidence = np.array([result.probabilities[result.label] for result in results])
    figures["cascade"] = {
        "accuracy": float(accuracy_score(scored_truth, predicted_labels)),
        "balanced_accuracy": float(balanced_accuracy_score(scored_truth, predicted_labels)),
        "macro_f1": float(f1_score(scored_truth, predicted_labels, average="macro")),
        "ece": expected_calibration_error(confidence, np.asarray(predicted_labels) == np.asarray(scored_truth)),
        "mean_confidence": float(confidence.mean()),
        "per_class": _per_class(scored_truth, predicted_labels, labels),
        "labels": labels,
        "confusion": confusion_matrix(scored_truth, predicted_labels, labels=labels).tolist(),
    }
    return figures


def cascade_figures(cascade, probabilities: dict[str, np.ndarray], truth: np.ndarray, operating_point: str | None = None,
                    thresholds: dict[str, float] | None = None) -> dict:
    """``evaluate_predictions`` of the cascade's answers on calibrated stage probabilities, at ``operating_point``
    or with ``thresholds`` (as ``Cascade.combine`` takes them), each scan's family as stage 2 names it."""
    from ..decisions import scan_families

    return evaluate_predictions(list(truth), probabilities, cascade.combine(probabilities, operating_point, thresholds),
                                scan_families(probabilities[ALZHEIMER_VS_TUMOR.name]))


def tasks_deciding(label_id: str) -> set[str]:
    """The diagnosing models whose answers decide whether a scan of this true label is answered right: the
    detector, and for a disease the model that names it. (Stage 2 only names the collection, and has not erred
    on any split.)"""
    return {DISEASE_DETECTOR.name} | {task.name for task in (ALZHEIMER_SEVERITY, TUMOR_TYPE)
                                      if label_id in task.members()}


class HeldOutModels(Protocol):
    """One held-out fold's models, as ``fitting.FoldModels`` holds them."""

    out_of_fold: set[str]  # the tasks whose model never trained on the fold
    swapped: set[str]  # the tasks a fold model answers, rather than the cascade's own

    def logits(self, scans, batch_size: int = 8) -> dict[str, np.ndarray]: ...


def evaluate_cascade(cascade, splits, batch_size: int = 8, operating_point: str | None = None,
                     validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED, validation: dict | None = None,
                     held_out: Mapping[int, HeldOutModels] | None = None, non_mri_test=None) -> dict:
    """Every figure at ``operating_point`` (default: the cascade's own) on the test split: all of it, without the
    images that duplicate a training image, and on the test images of subjects that the models answering them
    never saw. On validation: ``validation``'s figures when given (``fitting.stored_validation_figures``: what
    ``calibrate`` stored), else fold 0 through the cascade.

    Unseen subjects matter because the Alzheimer test split holds other slices of the training subjects, so its
    full figure also measures how well the models learned those subjects. ``held_out`` maps a fold of
    ``splits["train"]`` (``data.fold_assignment``) to its models (``fitting.unseen_subject_models``: a
    ``fitting.FoldModels``, with the tasks whose model never trained on it). A test image linked to a training subject of fold K
    (``audit.subject_folds``) counts when fold K's models held it out for every task deciding its answer
    (``tasks_deciding``); their logits then go through this cascade's temperatures and thresholds. A test image
    linked to no training image counts with this cascade's answer.

    ``non_mri_test``: the test images that the modality audit found to be CT (``data.only_non_mri``), which are
    in no accuracy figure: whatever their folder says, the right answer to them is a refusal. Their row counts the
    refusals and the answers given."""
    from .audit import fingerprint_dataset, near_duplicate_groups
    from .data import carve_validation, fold_assignment

    point = operating_point or cascade.operating_point
    test = splits["test"]
    train_prints, test_prints = fingerprint_dataset(splits["train"]), fingerprint_dataset(test)
    _, duplicates = duplicates_of_reference(test_prints, train_prints)

    truth = np.asarray(test["label_id"])
    probabilities = cascade.stage_probabilities(test["image"], batch_size=batch_size, progress="test split")

    def figures_on(keep: np.ndarray, probabilities: dict[str, np.ndarray] = probabilities) -> dict:
        return cascade_figures(cascade, {task: p[keep] for task, p in probabilities.items()}, truth[keep], point)

    report = {
        "operating_point": point,
        "healthy_thresholds": cascade.thresholds(point),
        "test_images_duplicating_train": int(duplicates.sum()),
        "full_test": figures_on(np.ones(len(truth), dtype=bool)),
        "deduplicated_test": figures_on(~duplicates),
    }
    if held_out:
        train_folds = fold_assignment(splits["train"]["label_id"], near_duplicate_groups(train_prints.thumbnails),
                                      validation_fraction, seed)
        folds = subject_folds(test_prints.thumbnails, train_prints.thumbnails, train_folds)
        unseen = folds == NO_TRAINING_SUBJECT
        unseen_probabilities = {task: p.copy() for task, p in probabilities.items()}
        for fold, models in held_out.items():
            members = np.flatnonzero((folds == fold) & np.array([tasks_deciding(label) <= models.out_of_fold
                                                                 for label in truth]))
            if len(members) and models.swapped:  # this cascade's own answers are in already
                fold_probabilities = cascade.calibrated(models.logits(test.select(members), batch_size,
                                                                      progress=f"test scans of fold {fold}"))
                for task, values in fold_probabilities.items():
                    unseen_probabilities[task][members] = values
            unseen[members] = True
        diagnosing = (DISEASE_DETECTOR, ALZHEIMER_SEVERITY, TUMOR_TYPE)
        report["unseen_subjects_test"] = {
            "folds": sorted(held_out),
            "folds_by_model": {task.name: sorted(fold for fold, models in held_out.items()
                                                 if task.name in models.out_of_fold) for task in diagnosing},
            **figures_on(unseen, unseen_probabilities),
        }
    if non_mri_test is not None and len(non_mri_test):
        results = cascade.predict_batch(non_mri_test["image"], batch_size=batch_size, operating_point=point,
                                        progress="non-MRI test scans")
        report["non_mri_test"] = {"images": len(results), "refused": sum(result.refused for result in results),
                                  "answered": dict(Counter(result.label for result in results if not result.refused))}
    if validation is None:
        _, fold = carve_validation(splits["train"], validation_fraction, seed, train_prints.thumbnails)
        validation = cascade_figures(cascade, cascade.stage_probabilities(fold["image"], batch_size=batch_size,
                                                                          progress="validation fold"),
                                     np.asarray(fold["label_id"]), point)
    return {**report, "validation": validation}


def test_results_of(report: dict, task: str) -> dict:
    """One model's headline test figures (full, deduplicated and, for a diagnosing model when the report has
    them, on unseen subjects with the folds whose models of its recipe answered them), as its model card reads
    them."""
    results = {}
    for variant in ("full", "deduplicated", "unseen_subjects"):
        figures = report.get(f"{variant}_test")
        if figures is None or task not in figures["models"]:
            continue
        if variant == "unseen_subjects" and task not in figures["folds_by_model"]:
            continue  # stage 2 answered these scans in folds it trained on
        results[variant] = {k: v for k, v in figures["models"][task].items() if k not in ("per_class", "confusion")}
        if variant == "unseen_subjects":
            results[variant]["folds"] = figures["folds_by_model"][task]
    return results


def save_confusion_png(confusion: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 3 + 0.8 * len(labels)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=labels).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report_name(operating_point: str) -> str:
    return f"evaluation_{operating_point}.json"


def write_report(report: dict, out_dir: Path) -> None:
    """``evaluation_<operating point>.json``, and a confusion-matrix PNG per model and per test set, under
    ``out_dir``; the cascade's PNGs are per operating point too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    point = report["operating_point"]
    (out_dir / report_name(point)).write_text(json.dumps(report, indent=2))
    for variant in ("full_test", "deduplicated_test"):
        figures = report[variant]
        save_confusion_png(
            figures["cascade"]["confusion"], figures["cascade"]["labels"],
            f"Cascade ({point}), {variant.replace('_', ' ')} ({figures['images']} images)",
            out_dir / f"confusion_cascade_{variant}_{point}.png",
        )
        for task_name, model_figures in figures["models"].items():
            save_confusion_png(
                model_figures["confusion"], list(TASKS[task_name].classes),
                f"{task_name}, {variant.replace('_', ' ')} ({model_figures['images']} images)",
                out_dir / f"confusion_{task_name}_{variant}.png",
            )


def paired_cluster_bootstrap(
    metric, truth: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, clusters: np.ndarray,
    folds: np.ndarray, draws: int = 1000, seed: int = 0, classes_needed: int = 2,
) -> dict[str, float]:
    """How much better ``metric(truth, scores)`` is for A than for B, with a 95 % interval that respects clusters.

    Slices of one subject are not independent scans, so each draw resamples whole clusters (with replacement)
    within each fold; the statistic is the fold-size-weighted mean of the per-fold differences (each fold has its
    own model, whose scores are not comparable across folds). Draws in which a fold has fewer than
    ``classes_needed`` classes (2 for AUC; 1 for, e.g., the recall of one class) are redrawn.
    """
    truth, scores_a, scores_b = np.asarray(truth), np.asarray(scores_a), np.asarray(scores_b)
    clusters, folds = np.asarray(clusters), np.asarray(folds)
    fold_ids = np.unique(folds)
    if any(len(set(truth[folds == fold].tolist())) < classes_needed for fold in fold_ids):
        raise ValueError(f"every fold needs scans of {classes_needed} classes")
    members = {fold: [np.flatnonzero((folds == fold) & (clusters == c)) for c in np.unique(clusters[folds == fold])]
               for fold in fold_ids}

    def difference(indices_per_fold: dict) -> float:
        sizes = np.array([len(indices_per_fold[fold]) for fold in fold_ids], dtype=float)
        diffs = [metric(truth[i], scores_a[i]) - metric(truth[i], scores_b[i])
                 for i in (indices_per_fold[fold] for fold in fold_ids)]
        return float(np.dot(sizes / sizes.sum(), diffs))

    observed = difference({fold: np.flatnonzero(folds == fold) for fold in fold_ids})
    rng = np.random.default_rng(seed)
    samples: list[float] = []
    while len(samples) < draws:
        drawn = {fold: np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))])
                 for fold, groups in members.items()}
        if all(len(set(truth[i].tolist())) >= classes_needed for i in drawn.values()):
            samples.append(difference(drawn))
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": observed, "low": float(low), "high": float(high), "clusters": sum(map(len, members.values()))}
