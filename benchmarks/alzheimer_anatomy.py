"""Does where the dark (CSF) pixels lie say more about Alzheimer's than how many there are?

The Alzheimer slices are atlas-registered and skull-stripped, so a pixel's place is an anatomical place once the
slice's level is known. Per subject (``subjects.csv``, every subject of the training split), with 5-fold subject-level
cross-validation repeated over seeds, AUC of demented against healthy:

- ``dark share``: the benchmark's baseline (``research.atrophy``), no fitting;
- ``histogram``: logistic regression on the subject's mean grey-level histogram;
- ``regional``: logistic regression on the dark share of each cell of a grid over the slice, averaged over the
  subject's slices (ventricles, temporal horns and cortex fall in different cells);
- ``against healthy of the same level``: each slice is matched to its nearest slices (32x32 thumbnails) among the
  *training folds'* healthy subjects, which sets its level; the features are how much darker than them each cell is,
  averaged over the subject's slices (a coarse voxel-based-morphometry map of missing tissue).

Nothing is written; figures are printed. ``python -m benchmarks.alzheimer_anatomy ../shared/data``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mri_cascade.research.atrophy import BRAIN_LEVEL, DARK_LEVEL, slice_measures

GRID = 8  # cells along each side of the slice
NEIGHBOURS = 5
SEEDS = 5


def dark_cells(grey: np.ndarray) -> np.ndarray:
    """The dark share of each of GRID x GRID cells of a slice (0 where a cell holds no brain)."""
    brain = grey > BRAIN_LEVEL
    dark = brain & (grey < DARK_LEVEL * np.percentile(grey[brain], 99)) if brain.any() else brain
    rows, columns = np.array_split(np.arange(grey.shape[0]), GRID), np.array_split(np.arange(grey.shape[1]), GRID)
    return np.array([[dark[np.ix_(r, c)].sum() / max(brain[np.ix_(r, c)].sum(), 1) for c in columns] for r in rows]).ravel()


def thumbnail(grey: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((32, 32), Image.BILINEAR), dtype=np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def load(data_root: Path):
    rows = [row for row in csv.DictReader(open(data_root / "alzheimer" / "subjects.csv")) if row["path"].startswith("train/")]
    greys = [np.asarray(Image.open(data_root / "alzheimer" / row["path"]).convert("L"), dtype=np.float32) for row in rows]
    subjects = np.array([row["subject"] for row in rows])
    demented = np.array([not row["subject"].startswith("NonDemented") for row in rows])
    return greys, subjects, demented


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    greys, slice_subject, slice_demented = load(args.data)
    cells = np.stack([dark_cells(g) for g in greys])
    thumbs = np.stack([thumbnail(g) for g in greys])
    measures = [slice_measures(Image.fromarray(g.astype(np.uint8))) for g in greys]
    dark = np.array([m[0] for m in measures])
    histograms = np.stack([m[1] for m in measures])
    names = np.unique(slice_subject)
    members = {s: np.flatnonzero(slice_subject == s) for s in names}
    demented = np.array([slice_demented[members[s][0]] for s in names]).astype(int)
    per_subject = {"dark share": np.array([[dark[members[s]].mean()] for s in names]),
                   "histogram": np.stack([histograms[members[s]].mean(axis=0) for s in names]),
                   "regional": np.stack([cells[members[s]].mean(axis=0) for s in names])}
    print(f"{len(names)} subjects ({demented.sum()} demented), {len(greys)} slices; AUC, subject-level 5-fold CV, "
          f"{SEEDS} seeds (mean, range over seeds)")

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))

    results = {name: [] for name in (*per_subject, "against healthy of the same level", "regional + histogram")}
    for seed in range(SEEDS):
        scores = {name: np.zeros(len(names)) for name in results}
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(names, demented):
            for name, features in per_subject.items():
                if name == "dark share":
                    scores[name][test] = features[test, 0]
                else:
                    scores[name][test] = model().fit(features[train], demented[train]).predict_proba(features[test])[:, 1]
            both = np.hstack([per_subject["regional"], per_subject["histogram"]])
            scores["regional + histogram"][test] = model().fit(both[train], demented[train]).predict_proba(both[test])[:, 1]
            healthy_slices = np.concatenate([members[names[i]] for i in train if not demented[i]])
            deficit = np.zeros((len(names), cells.shape[1]))
            for i, subject in enumerate(names):
                own = members[subject]
                reference = healthy_slices[slice_subject[healthy_slices] != subject]  # never the subject itself
                nearest = np.argsort(-(thumbs[own] @ thumbs[reference].T), axis=1)[:, :NEIGHBOURS]
                deficit[i] = (cells[own] - cells[reference][nearest].mean(axis=1)).mean(axis=0)
            fitted = model().fit(deficit[train], demented[train])
            scores["against healthy of the same level"][test] = fitted.predict_proba(deficit[test])[:, 1]
        for name in results:
            results[name].append(roc_auc_score(demented, scores[name]))
    for name, aucs in results.items():
        print(f"  {name:<36} {np.mean(aucs):.3f} ({min(aucs):.3f}-{max(aucs):.3f})")


if __name__ == "__main__":
    main()
