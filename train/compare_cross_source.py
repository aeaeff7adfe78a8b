"""Compare training recipes of one task on scans from another source than the one they learned each class from.

    python -m train.run_train --task tumor-type --validation cross-source --augmentation robust --output_dir runs/robust ...
    python -m train.compare_cross_source ../shared/data --task tumor-type \
        --recipe standard=runs/standard/tumor-type --recipe robust=runs/robust/tumor-type

Every model must have been trained with ``--validation cross-source`` (``data.cross_source_split``), so that none
of the held-out scans was seen in training. Each recipe is scored on them (accuracy, with a 95 % interval from
resampling near-duplicate clusters, and balanced accuracy, the mean of the held-out classes' recalls), and each is
compared with the first recipe by a paired bootstrap over those clusters.

A recipe may name several training runs, one per seed (``--recipe robust=runs/s42/tumor-type,runs/s43/tumor-type``):
it is then scored by the mean of its runs' figures. On these ~150 clusters a change of seed alone moved accuracy by
12 points (reports/history/accuracy_experiments.md, the seed repeats of robust augmentation), and the bootstrap
resamples scans, not training runs, so one run per recipe compares two models rather than two recipes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mri_cascade.labels import TASKS
from mri_cascade.research.audit import fingerprint_dataset, near_duplicate_groups
from mri_cascade.research.benchmark import with_interval
from mri_cascade.research.data import cross_source_split, expand_sources, load_sources, task_dataset
from mri_cascade.research.evaluation import paired_cluster_bootstrap
from train.compare_folds import LABEL_METRICS, mean_over_runs, stage_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument("--recipe", action="append", required=True,
                        help="name=model_dir[,model_dir...], one training run per seed; the first recipe is the baseline")
    parser.add_argument("--flips", action="store_true",
                        help="also score each recipe with test-time flips (NAME+flips), as the cascade would run it")
    parser.add_argument("--out", default="reports/cross_source_comparison.json")
    args = parser.parse_args()

    recipes = {name: runs.split(",") for name, runs in (spec.split("=", 1) for spec in args.recipe)}
    for name, runs in recipes.items():
        for model_dir in runs:
            trained_on = json.loads((Path(model_dir) / "training_args.json").read_text()).get("validation")
            if trained_on != "cross-source":
                parser.error(f"{model_dir} ({name}) was not trained with --validation cross-source: "
                             "its held-out scans may be in its training")
    train = load_sources(expand_sources(args.data))["train"]
    train = train.add_column("row", list(range(len(train))))
    prints = fingerprint_dataset(train)
    clusters = near_duplicate_groups(prints.thumbnails)
    held_out = task_dataset(cross_source_split(train, prints.sizes, clusters)[1], TASKS[args.task])
    truth, groups = np.asarray(held_out["label"]), clusters[np.asarray(held_out["row"])]
    print(f"{len(held_out)} held-out scans in {len(set(groups.tolist()))} clusters", flush=True)

    predictions = {}  # recipe (and recipe+flips) -> most probable class, (scans, runs)
    for name, runs in recipes.items():
        logits = [stage_logits(model_dir, args.task, held_out["image"], args.flips) for model_dir in runs]
        for flipped in logits[0]:
            predictions[f"{name}+flips" if flipped else name] = np.stack([run[flipped].argmax(axis=1) for run in logits], axis=1)
    metrics = {metric: mean_over_runs(fn) for metric, fn in LABEL_METRICS.items()}
    classes = TASKS[args.task].classes
    report: dict = {"task": args.task, "held_out_scans": len(held_out), "clusters": len(set(groups.tolist())),
                    "recipes": recipes, "scores": {}, "comparisons": {}}
    for name, predicted in predictions.items():
        report["scores"][name] = scores = {metric: fn(truth, predicted) for metric, fn in metrics.items()}
        scores["runs"] = predicted.shape[1]
        scores["accuracy_per_run"] = [LABEL_METRICS["accuracy"](truth, run) for run in predicted.T]
        scores["accuracy_interval"] = with_interval(lambda i, p=predicted: metrics["accuracy"](truth[i], p[i]),
                                                    np.ones(len(truth), dtype=bool), groups)
        scores["recall"] = {classes[c]: float((predicted[truth == c] == c).mean()) for c in np.unique(truth)}
        interval = scores["accuracy_interval"]  # no interval when the held-out scans form one cluster
        bounds = f" ({interval['low']:.3f}-{interval['high']:.3f})" if interval["low"] is not None else ""
        print(f"{name:<20}accuracy {scores['accuracy']:.3f}{bounds}  balanced_accuracy {scores['balanced_accuracy']:.3f}  "
              f"per run {', '.join(f'{a:.3f}' for a in scores['accuracy_per_run'])}  recall "
              + ", ".join(f"{k} {v:.3f}" for k, v in scores["recall"].items()))
    baseline = next(iter(recipes))
    for name, predicted in predictions.items():
        if name == baseline:
            continue
        report["comparisons"][f"{name} - {baseline}"] = comparison = {
            metric: paired_cluster_bootstrap(fn, truth, predicted, predictions[baseline], groups, np.zeros_like(groups),
                                             classes_needed=len(set(truth.tolist())))
            for metric, fn in metrics.items()}
        print(f"{name} - {baseline}: " + "  ".join(
            f"{metric} {m['difference']:+.3f} ({m['low']:+.3f}, {m['high']:+.3f})" for metric, m in comparison.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
