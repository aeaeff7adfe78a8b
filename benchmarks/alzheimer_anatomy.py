"""Does where the dark (CSF) pixels lie, or what a frozen DINOv2 sees, say more about Alzheimer's than how many there are?

The Alzheimer slices are atlas-registered and skull-stripped, so a pixel's place is an anatomical place once the
slice's level is known, and the level is known: a subject's ``entropy_rank`` (``subjects.csv``) is its slices'
order in the volume. Each slice's most similar slice of the same subject is always a neighbouring rank, and rank k of
every subject lies within a slice of rank k of the subjects' mean (``levels``, printed). Ranks 1-25 are in every
subject's training split; they run from the basal ganglia to the tops of the lateral ventricles, above the medial
temporal lobe.

Per subject (every subject of the training split), with 5-fold subject-level cross-validation repeated over seeds,
AUC of demented against healthy, and each one's margin over the dark share on the same folds:

- ``dark share``: the benchmark's baseline (``research.atrophy``), no fitting;
- ``histogram``: logistic regression on the subject's mean grey-level histogram;
- ``regional``: the dark share of each cell of a grid over the slice, averaged over the subject's slices
  (ventricles, temporal lobes and cortex fall in different cells), and with the histogram beside it;
- ``against healthy of the same level (thumbnails)``: each slice matched to its nearest slices (32x32 thumbnails)
  among the *training folds'* healthy subjects; the features are how much darker than them each cell is, averaged;
- ``dark share per level``: one dark share per rank 1-25;
- ``grey level per voxel, levels aligned``: ranks 1-25 stacked as a volume, each slice scaled by its 99th
  percentile, smoothed and sampled every ``VOXEL_STEP`` pixels, PCA to ``VOXEL_COMPONENTS`` inside the training folds;
  a map of where tissue is darker (voxel-based-morphometry-like);
- ``central and peripheral dark shares``: the dark share of the brain's inner part (ventricles) and of its rim
  (cortical sulci), split at ``CENTRAL_DEPTH`` of the head's deepest point, averaged over the subject's slices;
- ``frozen DINOv2 class token`` (with ``--dinov2 DIR``, a ``python -m train.dinov2`` output): the class token of
  ranks 1-25, averaged over them;
- ``attention over levels (MIL)`` on the frozen DINOv2 class tokens and on the mean patch tokens: a gated-attention
  multiple-instance model (Ilse et al. 2018) that sees a subject's 25 levels at once, each with a learned level
  embedding, on ``MIL_COMPONENTS`` principal components fitted inside the training folds; fixed settings, no tuning;
- ``slices scored one by one, pooled``: a logistic regression on each slice's mean patch token, trained on the
  training folds' slices with the subject's label, its logits averaged over the subject's levels.

Each model is built anew per fold from the repeat's seed. The logistic regressions are standardised with C = ``C``.
Nothing is written; figures are printed.
``python -m benchmarks.alzheimer_anatomy ../shared/data [--dinov2 artifacts/dinov2-small]``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_fill_holes, distance_transform_edt, gaussian_filter
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mri_cascade.research.atrophy import BRAIN_LEVEL, dark_level, slice_measures

GRID = 8  # cells along each side of the slice
NEIGHBOURS = 5
SEEDS = 5
C = 0.1
LEVELS = range(1, 26)  # the entropy ranks every subject has in the training split
VOXEL_SIGMA, VOXEL_STEP, VOXEL_COMPONENTS = 3.0, 8, 10
DINOV2_C = 0.01
DINOV2_SIZE = (196, 224)  # width, height: 14 x 16 patches of 14 px, the slices' aspect
CENTRAL_DEPTH = 0.35  # share of the head's deepest point beyond which a pixel is central (ventricles), else rim
MIL_COMPONENTS, MIL_HIDDEN, MIL_EPOCHS, MIL_WEIGHT_DECAY = 32, 16, 300, 1e-2
SLICE_COMPONENTS, SLICE_C = 64, 0.01


def dark_cells(grey: np.ndarray) -> np.ndarray:
    """The dark share of each of GRID x GRID cells of a slice (0 where a cell holds no brain)."""
    brain = grey > BRAIN_LEVEL
    dark = brain & (grey < dark_level(grey, brain)) if brain.any() else brain
    rows, columns = np.array_split(np.arange(grey.shape[0]), GRID), np.array_split(np.arange(grey.shape[1]), GRID)
    return np.array([[dark[np.ix_(r, c)].sum() / max(brain[np.ix_(r, c)].sum(), 1) for c in columns] for r in rows]).ravel()


def central_and_rim_dark(grey: np.ndarray) -> tuple[float, float]:
    """The dark share of the brain's central part (ventricles) and of its rim (sulci)."""
    brain = grey > BRAIN_LEVEL
    if not brain.any():
        return 0.0, 0.0
    head = binary_fill_holes(brain)
    depth = distance_transform_edt(head)
    central = depth > CENTRAL_DEPTH * depth.max()
    rim = head & ~central
    dark = head & (grey < dark_level(grey, brain))
    return (dark & central).sum() / max(central.sum(), 1), (dark & rim).sum() / max(rim.sum(), 1)


def thumbnail(grey: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((32, 32), Image.BILINEAR), dtype=np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def load(data_root: Path):
    """Every training-split slice: grey levels, subject, whether demented, level (entropy rank), path."""
    rows = [row for row in csv.DictReader(open(data_root / "alzheimer" / "subjects.csv")) if row["path"].startswith("train/")]
    greys = [np.asarray(Image.open(data_root / "alzheimer" / row["path"]).convert("L"), dtype=np.float32) for row in rows]
    subjects = np.array([row["subject"] for row in rows])
    demented = np.array([not row["subject"].startswith("NonDemented") for row in rows])
    levels = np.array([int(row["entropy_rank"]) for row in rows])
    return greys, subjects, demented, levels, [data_root / "alzheimer" / row["path"] for row in rows]


def aligned(members: dict[str, np.ndarray], levels: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Per subject, the indices of its slices of ``LEVELS``, in level order: (subjects, levels)."""
    return np.array([[members[s][levels[members[s]] == level][0] for level in LEVELS] for s in names])


def level_agreement(thumbs: np.ndarray, by_level: np.ndarray) -> tuple[float, float]:
    """How well ranks give levels: the share of slices whose most similar slice of the same subject is a neighbouring
    rank, and the share of subjects whose slices lie, by median, within one rank of the subjects' mean at that rank."""
    neighbouring, within_one = [], []
    mean = thumbs[by_level].mean(axis=0)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    for row in by_level:
        similar = thumbs[row] @ thumbs[row].T
        np.fill_diagonal(similar, -np.inf)
        neighbouring.append(np.abs(similar.argmax(axis=1) - np.arange(len(row))) == 1)
        within_one.append(abs(np.median((thumbs[row] @ mean.T).argmax(axis=1) - np.arange(len(row)))) <= 1)
    return float(np.concatenate(neighbouring).mean()), float(np.mean(within_one))


def voxel_features(greys: list[np.ndarray], by_level: np.ndarray) -> np.ndarray:
    """Each subject's levels as one volume of grey levels relative to each slice's 99th percentile, smoothed and
    sampled every VOXEL_STEP pixels."""
    def sampled(index: int) -> np.ndarray:
        grey = greys[index]
        scaled = grey / max(np.percentile(grey[grey > BRAIN_LEVEL], 99), 1.0)
        return gaussian_filter(scaled, VOXEL_SIGMA)[::VOXEL_STEP, ::VOXEL_STEP].ravel()
    return np.stack([np.concatenate([sampled(i) for i in row]) for row in by_level])


def dinov2_tokens(model_dir: Path, paths: list[Path], by_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frozen DINOv2's class token and mean patch token of each subject's levels: two (subjects, levels, 384)."""
    import torch
    from transformers import Dinov2Model

    from train.dinov2 import IMAGENET_MEAN, IMAGENET_STD

    model = Dinov2Model.from_pretrained(model_dir).eval()
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]

    def pixels(path: Path) -> np.ndarray:
        grey = np.asarray(Image.open(path).convert("L").resize(DINOV2_SIZE, Image.BICUBIC), dtype=np.float32) / 255
        return ((np.repeat(grey[None], 3, axis=0) - mean) / std).astype(np.float32)

    class_tokens, patch_tokens = [], []
    with torch.no_grad():
        for row in by_level:
            hidden = model(pixel_values=torch.from_numpy(np.stack([pixels(paths[i]) for i in row]))).last_hidden_state
            class_tokens.append(hidden[:, 0].numpy())
            patch_tokens.append(hidden[:, 1:].mean(dim=1).numpy())
    return np.stack(class_tokens), np.stack(patch_tokens)


class AttentionOverLevels:
    """Gated-attention multiple-instance learning over a subject's levels (Ilse et al. 2018), with a learned
    embedding per level, on whitened principal components of the slice features; ``fit``/``predict_proba`` like a
    scikit-learn classifier of (subjects, levels, features) arrays."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _inputs(self, features: np.ndarray):
        import torch

        flat = self.pca.transform(self.scaler.transform(features.reshape(-1, features.shape[-1])))
        flat /= np.sqrt(self.pca.explained_variance_)
        return torch.tensor(flat.reshape(*features.shape[:2], -1), dtype=torch.float32)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> AttentionOverLevels:
        import torch
        from torch import nn

        flat = features.reshape(-1, features.shape[-1])
        self.scaler = StandardScaler().fit(flat)
        self.pca = PCA(MIL_COMPONENTS, random_state=0).fit(self.scaler.transform(flat))
        torch.manual_seed(self.seed)
        levels = features.shape[1]

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Sequential(nn.Dropout(0.25), nn.Linear(MIL_COMPONENTS, MIL_HIDDEN), nn.ReLU())
                self.level = nn.Parameter(torch.zeros(levels, MIL_HIDDEN))
                self.value, self.gate = nn.Linear(MIL_HIDDEN, 8), nn.Linear(MIL_HIDDEN, 8)
                self.attention, self.out = nn.Linear(8, 1), nn.Linear(MIL_HIDDEN, 1)

            def forward(self, x):
                embedded = self.embed(x) + self.level
                weights = self.attention(torch.tanh(self.value(embedded)) * torch.sigmoid(self.gate(embedded)))
                return self.out((weights.softmax(dim=1) * embedded).sum(dim=1)).squeeze(-1)

        self.model = Model()
        optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=MIL_WEIGHT_DECAY)
        inputs, targets = self._inputs(features), torch.tensor(labels, dtype=torch.float32)
        self.model.train()
        for _ in range(MIL_EPOCHS):  # full batch
            optimiser.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(self.model(inputs), targets).backward()
            optimiser.step()
        self.model.eval()
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            positive = torch.sigmoid(self.model(self._inputs(features))).numpy()
        return np.stack([1 - positive, positive], axis=1)


class SlicesPooled:
    """A logistic regression on single slices (each with its subject's label), its logits averaged per subject."""

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SlicesPooled:
        self.model = make_pipeline(StandardScaler(), PCA(SLICE_COMPONENTS, random_state=0),
                                   LogisticRegression(C=SLICE_C, max_iter=5000))
        self.model.fit(features.reshape(-1, features.shape[-1]), np.repeat(labels, features.shape[1]))
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = self.model.decision_function(features.reshape(-1, features.shape[-1])).reshape(features.shape[:2])
        positive = 1 / (1 + np.exp(-logits.mean(axis=1)))
        return np.stack([1 - positive, positive], axis=1)


def logistic(c: float = C, components: int | None = None):
    steps = [StandardScaler(), *([PCA(components)] if components else []), LogisticRegression(C=c, max_iter=5000)]
    return make_pipeline(*steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the shared data folder (with alzheimer/ and its subjects.csv)")
    parser.add_argument("--dinov2", type=Path, help="a converted DINOv2 ViT-S/14 (python -m train.dinov2 --out DIR)")
    args = parser.parse_args()
    greys, slice_subject, slice_demented, levels, paths = load(args.data)
    cells = np.stack([dark_cells(g) for g in greys])
    thumbs = np.stack([thumbnail(g) for g in greys])
    measures = [slice_measures(Image.fromarray(g.astype(np.uint8))) for g in greys]
    central_rim = np.array([central_and_rim_dark(g) for g in greys])
    dark = np.array([m[0] for m in measures])
    histograms = np.stack([m[1] for m in measures])
    names = np.unique(slice_subject)
    members = {s: np.flatnonzero(slice_subject == s) for s in names}
    demented = np.array([slice_demented[members[s][0]] for s in names]).astype(int)
    by_level = aligned(members, levels, names)
    neighbouring, within_one = level_agreement(thumbs, by_level)
    print(f"levels: a slice's most similar slice of its subject is a neighbouring rank for {100 * neighbouring:.1f} % "
          f"of slices; {100 * within_one:.1f} % of subjects lie within one rank of the mean subject")
    fitted: dict[str, tuple[np.ndarray, Callable[[int], object]]] = {
        "histogram": (np.stack([histograms[members[s]].mean(axis=0) for s in names]), lambda seed: logistic()),
        "regional": (np.stack([cells[members[s]].mean(axis=0) for s in names]), lambda seed: logistic()),
        "grid and histogram together": (np.hstack([np.stack([cells[members[s]].mean(axis=0) for s in names]),
                                                   np.stack([histograms[members[s]].mean(axis=0) for s in names])]),
                                        lambda seed: logistic()),
        "central and peripheral dark shares": (np.stack([central_rim[members[s]].mean(axis=0) for s in names]),
                                               lambda seed: logistic()),
        "dark share per level": (dark[by_level], lambda seed: logistic()),
        "grey level per voxel, levels aligned": (voxel_features(greys, by_level),
                                                 lambda seed: logistic(components=VOXEL_COMPONENTS)),
    }
    if args.dinov2:
        class_tokens, patch_tokens = dinov2_tokens(args.dinov2, paths, by_level)
        fitted["frozen DINOv2 class token"] = (class_tokens.mean(axis=1), lambda seed: logistic(DINOV2_C))
        fitted["attention over levels (MIL), DINOv2 class tokens"] = (class_tokens, AttentionOverLevels)
        fitted["attention over levels (MIL), DINOv2 patch tokens"] = (patch_tokens, AttentionOverLevels)
        fitted["slices scored one by one, pooled (patch tokens)"] = (patch_tokens, lambda seed: SlicesPooled())
    dark_share = np.array([dark[members[s]].mean() for s in names])
    print(f"{len(names)} subjects ({demented.sum()} demented), {len(greys)} slices; AUC, subject-level 5-fold CV, "
          f"{SEEDS} seeds (mean, range over seeds), and the margin over the dark share (mean, range)")
    results = {name: [] for name in ("dark share", *fitted, "against healthy of the same level (thumbnails)")}
    for seed in range(SEEDS):
        scores = {name: np.zeros(len(names)) for name in results}
        scores["dark share"] = dark_share
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(names, demented):
            for name, (features, model) in fitted.items():
                scores[name][test] = model(seed).fit(features[train], demented[train]).predict_proba(features[test])[:, 1]
            healthy_slices = np.concatenate([members[names[i]] for i in train if not demented[i]])
            deficit = np.zeros((len(names), cells.shape[1]))
            for i, subject in enumerate(names):
                own = members[subject]
                reference = healthy_slices[slice_subject[healthy_slices] != subject]  # never the subject itself
                nearest = np.argsort(-(thumbs[own] @ thumbs[reference].T), axis=1)[:, :NEIGHBOURS]
                deficit[i] = (cells[own] - cells[reference][nearest].mean(axis=1)).mean(axis=0)
            matched = logistic().fit(deficit[train], demented[train])
            scores["against healthy of the same level (thumbnails)"][test] = matched.predict_proba(deficit[test])[:, 1]
        for name in results:
            results[name].append(roc_auc_score(demented, scores[name]))
    baseline = np.array(results["dark share"])
    for name, aucs in results.items():
        margin = np.array(aucs) - baseline
        print(f"  {name:<48} {np.mean(aucs):.3f} ({min(aucs):.3f}-{max(aucs):.3f})   "
              f"margin {np.mean(margin):+.3f} ({margin.min():+.3f} to {margin.max():+.3f})")


if __name__ == "__main__":
    main()
