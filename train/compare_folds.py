"""Compare training recipes of one cascade model on held-out subjects, pooled over several validation folds.

    python -m train.compare_folds ../shared/data \
        --recipe shipped=models/disease-detector,runs/shipped_f1/disease-detector \
        --recipe native=runs/native_f0/disease-detector,runs/native_f1/disease-detector --flips
    python -m train.compare_folds ../shared/data --task alzheimer-severity \
        --recipe shipped=models/alzheimer-severity,runs/severity_f1/alzheimer-severity \
        --recipe native=runs/native_f0/alzheimer-severity,runs/native_f1/alzheimer-severity
    python -m train.compare_folds ../shared/data --task alzheimer-severity \
        --recipe shipped=runs/s42_f0/alzheimer-severity,runs/s43_f0/alzheimer-severity,runs/s42_f1/... --recipe ...

Each model directory's ``training_args.json`` names the fold it was validated on (``--validation_fold`` of
``run_train.py``; absent means fold 0). Every recipe is scored on each fold's held-out scans by its own models
for that fold. The disease detector (the default ``--task``) is scored per scan family (the true collection): ROC
AUC of P(healthy), and the share of healthy scans kept at 95 % disease recall; and per subject
(``SUBJECTS``: each subject's held-out slices pooled as one series, their mean P(healthy), as the cascade pools a
series), where the collection names its subjects. Any other task is scored on the
held-out scans of its own classes: accuracy and balanced accuracy of its most probable class. Then each variant is
compared with the first recipe (or ``--baseline``), on the folds both have, by a paired bootstrap over
near-duplicate clusters (≈ subjects). ``--flips`` adds, for every recipe, its horizontal-flip average.

A recipe may name several training runs for a fold (another ``--seed``, the same ``--split_seed``): each fold's
figure is then the mean of its runs' figures, so that a comparison weighs recipes rather than single runs (a change
of seed alone can move a figure as much as a change of recipe; reports/history/accuracy_experiments.md, the seed
repeats of robust augmentation).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from mri_cascade.calibration import softmax
from mri_cascade.decisions import SCREENING_DISEASE_RECALL, healthy_above
from mri_cascade.images import load_image
from mri_cascade.labels import DISEASE_DETECTOR, FAMILIES, TASKS
from mri_cascade.loading import load_stage
from mri_cascade.research.audit import fingerprint_dataset, near_duplicate_groups
from mri_cascade.research.data import (
    SPLIT_SEED,
    VALIDATION_FRACTION,
    expand_sources,
    load_sources,
    split_validation,
    task_dataset,
    true_families,
)
from mri_cascade.research.evaluation import paired_cluster_bootstrap, tune_healthy_threshold
from mri_cascade.research.fitting import held_out_fold


def healthy_kept(is_healthy: np.ndarray, p_healthy: np.ndarray) -> float:
    """Share of healthy scans called healthy at the lowest threshold with >= 95 % disease recall."""
    threshold = tune_healthy_threshold(p_healthy, is_healthy, SCREENING_DISEASE_RECALL)["threshold"]
    return float(healthy_above(p_healthy[is_healthy], threshold).mean())


SUBJECTS = "subjects"
"""The detector's scoring group of whole subjects, beside the scan families."""
DETECTOR_METRICS = {"auc": lambda is_healthy, p: float(roc_auc_score(is_healthy, p)), "healthy_kept_at_95": healthy_kept}


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present; answers of a class not present are misses (sklearn warns of them on
    every bootstrap draw, which would bury the script's output)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(truth, predicted))


LABEL_METRICS = {  # true and predicted class indices
    "accuracy": lambda truth, predicted: float((truth == predicted).mean()),
    "balanced_accuracy": balanced_accuracy,
}


def mean_over_runs(metric):
    """``metric(truth, scores)`` averaged over a recipe's runs, whose scores are stacked on the last axis."""
    return lambda truth, scores: float(np.mean([metric(truth, scores[..., run]) for run in range(scores.shape[-1])]))


CLASSIFIER_METRICS = {name: lambda truth, p, metric=metric: metric(truth, p.argmax(1))  # p: (N, classes)
                      for name, metric in LABEL_METRICS.items()}


def stage_logits(model_dir: str, task: str, images: list, flips: bool = False,
                 batch_size: int = 32) -> dict[bool, np.ndarray]:
    """One model's logits per image, columns in the task's class order, as read once and, with ``flips``, as the
    cascade's test-time flips read them (``Stage.logits_and_embedding``): {False: ..., True: ...}."""
    stage = load_stage(model_dir, task)
    columns = [stage.config.label2id[c] for c in TASKS[task].classes]
    variants = (False, True) if flips else (False,)
    logits: dict[bool, list[np.ndarray]] = {flip: [] for flip in variants}
    for start in range(0, len(images), batch_size):
        pixels = stage.preprocess([load_image(image) for image in images[start : start + batch_size]])
        for flip in variants:
            stage.test_time_flips = flip
            logits[flip].append(stage.logits_and_embedding(pixels)[0][:, columns])
    return {flip: np.concatenate(parts) for flip, parts in logits.items()}


def probabilities(model_dir: str, task: str, images: list, flips: bool) -> dict[bool, np.ndarray]:
    """Per image, without and (with ``flips``) with test-time flips: P(healthy) from a disease detector, else the
    task's class probabilities (N, classes)."""
    return {flip: softmax(logits)[:, 0] if task == DISEASE_DETECTOR.name else softmax(logits)
            for flip, logits in stage_logits(model_dir, task, images, flips).items()}


def scoring_facts(task: str, dataset, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per held-out scan: the group it is scored in (the disease detector: its true family; else the task), what
    the metrics compare with (is it healthy; else its class index) and its near-duplicate cluster."""
    rows = clusters[np.asarray(dataset["row"])]
    if task == DISEASE_DETECTOR.name:
        return true_families(dataset), np.asarray(dataset["label_id"]) == "healthy", rows
    return np.full(len(dataset), task), np.asarray(dataset["label"]), rows


def with_subjects(dataset, groups: np.ndarray, is_healthy: np.ndarray, clusters: np.ndarray,
                  scores: dict[str, np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """A detector's held-out scans with one more row per named subject, in the group ``SUBJECTS``: its scans' mean
    P(healthy) per run (``scores``: variant -> (scans, runs)), whether it is healthy, and its scans' cluster."""
    subjects = np.asarray(dataset["subject"])
    named = np.unique(subjects[subjects != ""])
    if not len(named):
        return (groups, is_healthy, clusters), scores
    members = [np.flatnonzero(subjects == subject) for subject in named]
    facts = (np.concatenate([groups, np.full(len(named), SUBJECTS)]),
             np.concatenate([is_healthy, [is_healthy[rows[0]] for rows in members]]),
             np.concatenate([clusters, [clusters[rows[0]] for rows in members]]))
    pooled = {variant: np.concatenate([p, np.stack([p[rows].mean(axis=0) for rows in members])])
              for variant, p in scores.items()}
    return facts, pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--task", default=DISEASE_DETECTOR.name, choices=list(TASKS))
    parser.add_argument("--recipe", action="append", required=True,
                        help="name=model_dir[,model_dir...]: one or more runs per fold")
    parser.add_argument("--flips", action="store_true", help="also score each recipe with horizontal-flip averaging")
    parser.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED, help="the folds' seed (run_train.py --split_seed)")
    parser.add_argument("--baseline", default=None,
                        help="the variant every other is compared with, e.g. 'shipped+flips' (default: the first recipe)")
    parser.add_argument("--out", default="reports/detector_comparison.json")
    args = parser.parse_args()
    is_detector = args.task == DISEASE_DETECTOR.name

    train = load_sources(expand_sources(args.data))["train"]
    train = train.add_column("row", list(range(len(train))))
    clusters = near_duplicate_groups(fingerprint_dataset(train).thumbnails)
    recipes = {name: dirs.split(",") for name, dirs in (spec.split("=", 1) for spec in args.recipe)}
    held_out = {}  # fold -> validation dataset
    runs: dict[str, dict[int, list[np.ndarray]]] = {}  # variant -> fold -> one score array per run
    for name, model_dirs in recipes.items():
        for model_dir in model_dirs:
            fold = held_out_fold(model_dir, args.validation_fraction, args.seed)
            if fold is None:
                parser.error(f"{model_dir} held out no fold of this split (trained on every scan, or validated "
                             "another way): it cannot be scored out of fold")
            if fold not in held_out:
                validation = split_validation(train, clusters, args.validation_fraction, args.seed, fold)[1]
                held_out[fold] = validation if is_detector else task_dataset(validation, TASKS[args.task])
            print(f"{name}: {model_dir} on fold {fold} ({len(held_out[fold])} scans)", flush=True)
            for flip, p in probabilities(model_dir, args.task, held_out[fold]["image"], args.flips).items():
                runs.setdefault(f"{name}+flips" if flip else name, {}).setdefault(fold, []).append(p)
    scores = {variant: {fold: np.stack(fold_runs, axis=-1) for fold, fold_runs in by_fold.items()}
              for variant, by_fold in runs.items()}  # runs on the last axis
    facts = {fold: scoring_facts(args.task, dataset, clusters) for fold, dataset in held_out.items()}
    if is_detector:
        for fold, dataset in held_out.items():
            fold_scores = {variant: by_fold[fold] for variant, by_fold in scores.items() if fold in by_fold}
            facts[fold], pooled = with_subjects(dataset, *facts[fold], fold_scores)
            for variant, p in pooled.items():
                scores[variant][fold] = p
    metrics = {metric: mean_over_runs(fn) for metric, fn in (DETECTOR_METRICS if is_detector else CLASSIFIER_METRICS).items()}
    groups = (args.task,)
    if is_detector:
        groups = (*FAMILIES, SUBJECTS) if any((f[0] == SUBJECTS).any() for f in facts.values()) else FAMILIES

    report: dict = {"task": args.task, "recipes": recipes, "folds": {}, "comparisons": {}}
    for fold, (scan_groups, truth, _) in sorted(facts.items()):
        report["folds"][fold] = {
            variant: {"runs": by_fold[fold].shape[-1]} | {
                group: {metric: fn(truth[scan_groups == group], by_fold[fold][scan_groups == group])
                        for metric, fn in metrics.items()} for group in groups}
            for variant, by_fold in scores.items() if fold in by_fold
        }
    baseline = args.baseline or next(iter(scores))
    if baseline not in scores:
        parser.error(f"--baseline {baseline!r} is none of the variants: {', '.join(scores)}")
    for variant, by_fold in scores.items():
        if variant == baseline:
            continue
        shared = sorted(set(by_fold) & set(scores[baseline]))
        report["comparisons"][f"{variant} - {baseline}"] = {}
        for group in groups:
            parts = []
            for fold in shared:
                scan_groups, fold_truth, fold_clusters = facts[fold]
                members = scan_groups == group
                parts.append((fold_truth[members], by_fold[fold][members], scores[baseline][fold][members],
                              fold_clusters[members], np.full(members.sum(), fold)))
            truth, a, b, scan_clusters, folds = (np.concatenate(column) for column in zip(*parts))
            report["comparisons"][f"{variant} - {baseline}"][group] = {
                metric: paired_cluster_bootstrap(fn, truth, a, b, scan_clusters, folds) for metric, fn in metrics.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for fold, variants in report["folds"].items():
        for variant, figures in variants.items():
            print(f"fold {fold}  {variant:<30}{figures['runs']} run(s)  " + "  ".join(
                f"{group}: " + ", ".join(f"{metric} {value:.3f}" for metric, value in figures[group].items())
                for group in groups))
    for name, by_group in report["comparisons"].items():
        for group, differences in by_group.items():
            print(f"{name:<40} {group:<10}  " + "  ".join(
                f"{metric} {m['difference']:+.3f} ({m['low']:+.3f}, {m['high']:+.3f}; {m['clusters']} clusters)"
                for metric, m in differences.items()))


if __name__ == "__main__":
    main()
