"""A frozen DINOv2 ViT-S/14 with trained linear heads against the fine-tuned models, on the benchmark's fold.

    python -m train.compare_frozen ../shared/data --models models --out reports/frozen_dinov2.json

Every MRI training scan is cropped to the head (as the cascade does), resized to 224 px and embedded once by the
converted backbone (``train.dinov2``): the class token and the mean patch token, the input of
``Dinov2ForImageClassification``'s head. Per task, a logistic regression (C chosen by grouped 5-fold CV on the
training part) is fitted on the scans outside the fold the models held out and scores the fold. The fine-tuned
models score the same scans through the cascade. Both sides are compared by threshold-free figures, with paired
cluster bootstraps (subjects or near-duplicate clusters): the detector's AUC per family and per source, severity's
balanced accuracy, and tumor type's accuracy on the main and other sources.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mri_cascade import Cascade
from mri_cascade.images import crop_to_head, to_model_rgb
from mri_cascade.labels import ALZHEIMER_SEVERITY, DISEASE_DETECTOR, TUMOR_TYPE
from mri_cascade.research.audit import fingerprint_dataset, near_duplicate_groups
from mri_cascade.research.benchmark import held_out_fold_of, source_parts
from mri_cascade.research.data import SPLIT_SEED, VALIDATION_FRACTION, expand_sources, fold_assignment, load_sources
from mri_cascade.research.evaluation import paired_cluster_bootstrap
from train.dinov2 import dinov2_small

SIZE = 224


def embed(images, batch_size: int = 16) -> np.ndarray:
    model, processor = dinov2_small((SIZE, SIZE), {0: "a", 1: "b"})
    model.eval()
    features = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = [crop_to_head(to_model_rgb(image)).resize((SIZE, SIZE)) for image in images[start:start + batch_size]]
            hidden = model.dinov2(processor(chunk, return_tensors="pt")["pixel_values"]).last_hidden_state
            features.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=1).numpy())
            print(f"embedded {start + len(chunk)} / {len(images)}", end="\r", flush=True)
    return np.concatenate(features)


def head_scores(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, train: np.ndarray,
                test: np.ndarray) -> np.ndarray:
    """Class probabilities on ``test`` from a logistic regression fitted on ``train``."""
    folds = list(GroupKFold(n_splits=5).split(features[train], labels[train], groups[train]))
    head = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0], cv=folds,
                                                                 class_weight="balanced", max_iter=3000))
    head.fit(features[train], labels[train])
    return head.predict_proba(features[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", type=Path, default=Path("reports/frozen_dinov2.json"))
    args = parser.parse_args()
    sources = expand_sources(args.data)
    fold = held_out_fold_of(args.models, sources)
    data = load_sources(sources)["train"]
    prints = fingerprint_dataset(data)
    groups = near_duplicate_groups(prints.thumbnails)
    held = fold_assignment(data["label_id"], groups, VALIDATION_FRACTION, SPLIT_SEED) == fold
    subjects = np.asarray(data["subject"])
    clusters = np.where(subjects != "", subjects, np.char.add("cluster-", groups.astype(str)))
    parts = source_parts(data, prints.sizes)
    truth = np.asarray(data["label_id"])
    cache = args.out.with_suffix(".features.npy")
    if cache.is_file():
        features = np.load(cache)
    else:
        features = embed(data["image"])
        np.save(cache, features)
    fine_tuned = Cascade.from_pretrained(args.models).stage_probabilities(data.select(np.flatnonzero(held))["image"])
    report = {"held_out_fold": fold, "images": int(held.sum()), "comparisons": {}}
    rows = np.flatnonzero(held)

    def compare(name: str, metric, members: np.ndarray, frozen: np.ndarray, tuned: np.ndarray, labels: np.ndarray,
                classes_needed: int = 2) -> None:
        if len(set(labels[members].tolist())) < classes_needed:
            return
        result = paired_cluster_bootstrap(metric, labels[members], frozen[members], tuned[members],
                                          clusters[rows][members], np.zeros(int(members.sum())), draws=1000,
                                          classes_needed=classes_needed)
        result.update(frozen=metric(labels[members], frozen[members]), fine_tuned=metric(labels[members], tuned[members]))
        report["comparisons"][name] = result
        print(f"\n{name:<48} frozen DINOv2 {result['frozen']:.3f}  fine-tuned {result['fine_tuned']:.3f}  "
              f"difference {result['difference']:+.3f} ({result['low']:+.3f}, {result['high']:+.3f})")

    for task in (DISEASE_DETECTOR, ALZHEIMER_SEVERITY, TUMOR_TYPE):
        member = np.isin(truth, task.members())
        labels = np.array([task.class_index(label) if ok else -1 for label, ok in zip(truth, member)])
        frozen = np.zeros((len(rows), len(task.classes)))
        in_task = member[rows]
        frozen[in_task] = head_scores(features, labels, clusters, member & ~held, held & member)
        tuned = fine_tuned[task.name]
        held_labels = labels[rows]
        if task is DISEASE_DETECTOR:
            auc = lambda y, p: float(roc_auc_score(y, p))  # noqa: E731  (y = 1: disease)
            for part in np.unique(parts[rows]):
                members = in_task & (parts[rows] == part)
                compare(f"detector AUC, {part}", auc, members, frozen[:, 1], tuned[:, 1], held_labels)
            family = np.array([label.startswith("alzheimer") or (label == "healthy" and source == "alzheimer")
                               for label, source in zip(truth[rows], np.asarray(data["source"])[rows])])
            compare("detector AUC, Alzheimer family", auc, in_task & family, frozen[:, 1], tuned[:, 1], held_labels)
            compare("detector AUC, tumor family", auc, in_task & ~family, frozen[:, 1], tuned[:, 1], held_labels)
        elif task is ALZHEIMER_SEVERITY:
            balanced = lambda y, p: float(balanced_accuracy_score(y, p.argmax(axis=1)))  # noqa: E731
            compare("severity balanced accuracy", balanced, in_task, frozen, tuned, held_labels, classes_needed=1)
        else:
            accuracy = lambda y, p: float((p.argmax(axis=1) == y).mean())  # noqa: E731
            for part in np.unique(parts[rows][in_task]):
                compare(f"tumor type accuracy, {part}", accuracy, in_task & (parts[rows] == part), frozen, tuned,
                        held_labels, classes_needed=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
