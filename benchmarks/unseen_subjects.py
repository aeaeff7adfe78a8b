"""The figures behind the README's "What the Alzheimer test split measures": on test scans of unseen subjects.

    python benchmarks/unseen_subjects.py ../shared/data --fold-models folds/1 folds/2 folds/3
    python benchmarks/unseen_subjects.py ../shared/data --compare-severity OLD_MODELS_DIR   # row 27, re-scored

1. Slice level: for the Alzheimer subjects of each held-out fold, the fold's models (``fitting.unseen_subject_cascades``)
   on those subjects' training slices and on their test slices, at the balanced point.
2. 95 % intervals for the unseen-subject end to end and Alzheimer disease recall at both operating points, from a
   bootstrap over subject clusters (``audit.joint_groups``; an unlinked scan is a cluster of its own).
3. With ``--compare-severity DIR``: the shipped severity model against DIR's on the Alzheimer test slices of subjects
   both held out (the shipped models' fold) and of subjects both trained on, paired bootstrap over subjects.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mri_cascade import Cascade  # noqa: E402
from mri_cascade.audit import NO_TRAINING_SUBJECT, fingerprint_dataset, joint_groups, near_duplicate_groups, subject_folds  # noqa: E402,E501
from mri_cascade.cascade import OPERATING_POINTS, load_stage  # noqa: E402
from mri_cascade.data import expand_sources, fold_assignment, load_sources  # noqa: E402
from mri_cascade.evaluation import cascade_figures, paired_cluster_bootstrap, tasks_deciding  # noqa: E402
from mri_cascade.fitting import unseen_subject_cascades  # noqa: E402
from mri_cascade.labels import ALZHEIMER_SEVERITY  # noqa: E402

DRAWS = 1000


def alzheimer_figures(cascade: Cascade, probabilities: dict, truth: np.ndarray) -> dict:
    figures = cascade_figures(cascade, probabilities, truth, "balanced")
    family = figures["disease_detector_at_threshold"]["per_family"]["alzheimer"]
    severity = figures["models"][ALZHEIMER_SEVERITY.name]
    return {"scans": len(truth), "end_to_end": family["end_to_end_accuracy"],
            "detector_auc": float(roc_auc_score(truth != "healthy", probabilities["disease-detector"][:, 1])),
            "disease_recall": family["disease_recall"], "healthy_kept": family["healthy_kept"],
            "severity_accuracy": severity["accuracy"], "severity_balanced_accuracy": severity["balanced_accuracy"]}


def cluster_interval(statistic, clusters: np.ndarray, rng: np.random.Generator) -> list[float]:
    members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    draws = [statistic(np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))]))
             for _ in range(DRAWS)]
    return np.percentile(draws, [2.5, 97.5]).round(4).tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--models", default=str(REPO / "models"))
    parser.add_argument("--fold-models", nargs="*", default=[])
    parser.add_argument("--compare-severity", default=None, metavar="MODELS_DIR")
    parser.add_argument("--out", default=str(REPO / "reports" / "unseen_subjects" / "slice_level.json"))
    args = parser.parse_args()

    sources = expand_sources(args.data)
    splits = load_sources(sources)
    train, test = splits["train"], splits["test"]
    train_prints, test_prints = fingerprint_dataset(train), fingerprint_dataset(test)
    train_folds = fold_assignment(train["label_id"], near_duplicate_groups(train_prints.thumbnails))
    test_folds = subject_folds(test_prints.thumbnails, train_prints.thumbnails, train_folds)
    clusters, _ = joint_groups(test_prints.thumbnails, train_prints.thumbnails)
    truth = np.asarray(test["label_id"])
    alzheimer = {"train": np.asarray(train["source"]) == "alzheimer", "test": np.asarray(test["source"]) == "alzheimer"}
    shipped = Cascade.from_pretrained(args.models)
    held_out = unseen_subject_cascades(shipped, sources, args.fold_models)
    if not held_out:
        parser.error("these models were not trained on these collections: no held-out folds to score")
    report: dict = {"folds": sorted(held_out)}

    # 1 and 2: each test scan of an unseen subject answered by models that held it out (as evaluate does)
    levels: dict[str, tuple[list, list]] = {"training slices": ([], []), "test slices": ([], [])}
    unseen_index, unseen_probabilities = [], []
    for fold, (cascade, out_of_fold) in held_out.items():
        for name, split, folds in (("training slices", train, train_folds), ("test slices", test, test_folds)):
            members = np.flatnonzero(alzheimer["train" if split is train else "test"] & (folds == fold))
            if {"disease-detector", ALZHEIMER_SEVERITY.name} <= out_of_fold and len(members):
                levels[name][0].append(shipped.calibrated(cascade.stage_logits(split.select(members)["image"])))
                levels[name][1].append(np.asarray(split["label_id"])[members])
        members = np.flatnonzero((test_folds == fold) & np.array([tasks_deciding(label) <= out_of_fold for label in truth]))
        unseen_index.append(members)
        unseen_probabilities.append(shipped.calibrated(cascade.stage_logits(test.select(members)["image"])))
    report["slice_level"] = {name: alzheimer_figures(
        shipped, {task: np.concatenate([p[task] for p in parts]) for task in parts[0]}, np.concatenate(labels))
        for name, (parts, labels) in levels.items() if parts}
    unlinked = np.flatnonzero(test_folds == NO_TRAINING_SUBJECT)
    unseen_index.append(unlinked)
    unseen_probabilities.append(shipped.stage_probabilities(test.select(unlinked)["image"]))
    index = np.concatenate(unseen_index)
    probabilities = {task: np.concatenate([p[task] for p in unseen_probabilities]) for task in unseen_probabilities[0]}
    labels, groups = truth[index], clusters[index]
    alzheimer_disease = np.char.startswith(labels.astype(str), "alzheimer_")
    report["intervals"] = {}
    for point in OPERATING_POINTS:
        answers = np.array([result.label for result in shipped.combine(probabilities, point)])
        right, found = answers == labels, answers != "healthy"
        rng = np.random.default_rng(0)
        report["intervals"][point] = {
            "scans": len(labels), "clusters": int(len(np.unique(groups))),
            "end_to_end": [float(right.mean()), cluster_interval(lambda i, right=right: right[i].mean(), groups, rng)],
            "alzheimer_disease_recall": [float(found[alzheimer_disease].mean()), cluster_interval(
                lambda i, found=found: found[i][alzheimer_disease[i]].mean(), groups, rng)],
        }

    # 3: severity against another recipe's model that held out the same fold
    if args.compare_severity:
        other = load_stage(str(Path(args.compare_severity) / ALZHEIMER_SEVERITY.name), ALZHEIMER_SEVERITY.name)
        other.test_time_flips = shipped.stages[ALZHEIMER_SEVERITY.name].test_time_flips
        demented = np.flatnonzero(np.isin(truth, ALZHEIMER_SEVERITY.members()))
        images = test.select(demented)["image"]
        classes = np.array([ALZHEIMER_SEVERITY.class_index(label) for label in truth[demented]])
        answers = {name: Cascade({**shipped.stages, ALZHEIMER_SEVERITY.name: stage}).stage_logits(images)[
            ALZHEIMER_SEVERITY.name].argmax(axis=1)
            for name, stage in (("shipped", shipped.stages[ALZHEIMER_SEVERITY.name]), ("other", other))}
        own_fold = min(held_out)  # the shipped models' own held-out fold
        report["severity_against_other"] = {}
        for subjects, keep in (("neither trained on", test_folds[demented] == own_fold),
                               ("both trained on", test_folds[demented] != own_fold)):
            report["severity_against_other"][subjects] = {
                metric.__name__: paired_cluster_bootstrap(
                    metric, classes[keep], answers["shipped"][keep], answers["other"][keep], clusters[demented][keep],
                    np.zeros(keep.sum()), draws=DRAWS, classes_needed=1)
                for metric in (accuracy, balanced_accuracy)}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"-> {args.out}")
    return 0


def accuracy(truth: np.ndarray, answers: np.ndarray) -> float:
    return float((truth == answers).mean())


def balanced_accuracy(truth: np.ndarray, answers: np.ndarray) -> float:
    return float(balanced_accuracy_score(truth, answers))


if __name__ == "__main__":
    sys.exit(main())
