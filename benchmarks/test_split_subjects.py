"""Which subjects and which slices a collection's test split holds, against its train split.

    python -m benchmarks.test_split_subjects ../shared/data/alzheimer   # prints the figures, writes a JSON

Subjects are the near-duplicate groups of ``audit.near_duplicate_groups`` (thumbnail cosine similarity >= 0.99,
linked in chains): on the Alzheimer collection each training group is one subject's slices, one label each.
Drawn over train and test together (``audit.joint_groups``), a test slice that joins a training group is another
slice of a training subject. Where in the stack a slice lies is read from its head area (the share of pixels
above ``FOREGROUND``): axial slices shrink towards either end of the head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mri_cascade.research.audit import fingerprint_dataset, joint_groups, near_duplicate_groups
from mri_cascade.research.data import load_source

REPO = Path(__file__).resolve().parent.parent

FOREGROUND = 20  # grey level (of 255) above which a pixel counts as head rather than background
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def head_area(images) -> np.ndarray:
    return np.array([(np.asarray(image.convert("L")) > FOREGROUND).mean() for image in images])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", help="one collection root, with train/ and test/ (../shared/data/alzheimer)")
    parser.add_argument("--out", default=str(REPO / "reports" / "test_split_subjects.json"))
    args = parser.parse_args()

    splits = load_source(args.collection)
    train, test = splits["train"], splits["test"]
    train_prints, test_prints = fingerprint_dataset(train), fingerprint_dataset(test)
    train_labels, test_labels = np.array(train["label_id"]), np.array(test["label_id"])
    train_only = near_duplicate_groups(train_prints.thumbnails)
    test_groups, train_groups = joint_groups(test_prints.thumbnails, train_prints.thumbnails)
    linked = np.isin(test_groups, train_groups)
    subjects = np.unique(train_groups)
    train_area, test_area = head_area(train["image"]), head_area(test["image"])
    # within each subject: where its test slices rank among all its slices by head area (0: smallest, 1: largest)
    ranks, slices = [], []
    for subject in subjects:
        areas = np.sort(np.concatenate([train_area[train_groups == subject], test_area[test_groups == subject]]))
        own_test = test_area[test_groups == subject]
        ranks.extend(np.searchsorted(areas, own_test) / max(len(areas) - 1, 1))
        slices.append(((train_groups == subject).sum(), len(own_test)))
    pairs, counts = np.unique(np.array(slices), axis=0, return_counts=True)
    figures = {
        "train_images": len(train), "test_images": len(test),
        "training_groups": int(len(np.unique(train_only))),
        "groups_with_one_label": int(sum(len(set(train_labels[train_only == g])) == 1 for g in np.unique(train_only))),
        "groups_over_train_and_test": int(len(np.unique(np.concatenate([train_groups, test_groups])))),
        "test_images_linked_to_a_training_subject": int(linked.sum()),
        "test_images_whose_label_differs_from_their_subject": int(sum(
            set(train_labels[train_groups == g]) != {label} for g, label in zip(test_groups[linked], test_labels[linked]))),
        "slices_per_subject_train_test": {f"{a}+{b}": int(n) for (a, b), n in zip(pairs, counts)},
        "head_area_quantiles": {"quantiles": list(QUANTILES),
                                "train": np.quantile(train_area, QUANTILES).round(3).tolist(),
                                "test": np.quantile(test_area, QUANTILES).round(3).tolist()},
        "test_slice_rank_within_subject_quantiles": np.quantile(ranks, QUANTILES).round(2).tolist(),
    }
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
