"""Data audit: exact and near-duplicate images within and across splits.

Exact duplicates have identical greyscale pixels. Near duplicates have 32x32 thumbnails
(zero-mean, unit-norm) whose cosine similarity is at least ``NEAR_DUPLICATE_SIMILARITY``:
re-encoded or rescaled copies of one scan, and the other slices of one subject (on the
Alzheimer collection this links every training image into ~200 groups of at most 26 slices).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from PIL import Image

THUMBNAIL_SIDE = 32
NEAR_DUPLICATE_SIMILARITY = 0.99


@dataclass
class Fingerprints:
    exact: list[str]
    thumbnails: np.ndarray  # (n, THUMBNAIL_SIDE**2), zero-mean rows of unit norm
    sizes: list[tuple[int, int]]  # (width, height) as stored, before any resizing


def fingerprint_images(images) -> Fingerprints:
    exact, thumbnails, sizes = [], [], []
    for image in images:
        sizes.append(image.size)
        grey = image.convert("L")
        exact.append(hashlib.sha1(grey.tobytes() + repr(grey.size).encode()).hexdigest())
        small = np.asarray(grey.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR), dtype=np.float32).ravel()
        small -= small.mean()
        thumbnails.append(small / (np.linalg.norm(small) + 1e-6))
    return Fingerprints(exact, np.stack(thumbnails), sizes)


def _fingerprint_batch(batch: dict) -> dict:
    prints = fingerprint_images(batch["image"])
    return {"exact": prints.exact, "thumbnail": list(prints.thumbnails), "size": [list(size) for size in prints.sizes]}


def fingerprint_dataset(dataset: Dataset) -> Fingerprints:
    """``fingerprint_images`` of the dataset's images, through ``Dataset.map``: for a dataset backed by cache files
    (an image folder, as ``data.load_sources`` loads it), ``datasets`` stores the result beside them and later runs
    read it back (``train/``, 2 cores: 6.5 s the first time, 0.5 s after)."""
    mapped = dataset.select_columns(["image"]).map(_fingerprint_batch, batched=True, batch_size=256,
                                                   remove_columns=["image"], desc="fingerprinting images")
    thumbnails = np.asarray(mapped.with_format("numpy")["thumbnail"], dtype=np.float32)
    return Fingerprints(mapped["exact"], thumbnails, [tuple(size) for size in mapped["size"]])


def nearest_similarity(queries: np.ndarray, references: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """For each query row, the highest cosine similarity to any reference row (and its index)."""
    best = np.full(len(queries), -1.0, dtype=np.float32)
    best_index = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(queries), 1024):
        similarity = queries[start : start + 1024] @ references.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -1.0
        best_index[start : start + 1024] = similarity.argmax(axis=1)
        best[start : start + 1024] = similarity.max(axis=1)
    return best, best_index


def near_duplicate_groups(thumbnails: np.ndarray, threshold: float = NEAR_DUPLICATE_SIMILARITY) -> np.ndarray:
    """Connected components of the near-duplicate graph: one group id per image."""
    parent = np.arange(len(thumbnails))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(thumbnails), 1024):
        similarity = thumbnails[start : start + 1024] @ thumbnails.T
        for row, column in zip(*np.nonzero(similarity >= threshold)):
            a, b = find(start + row), find(column)
            if a != b:
                parent[a] = b
    return np.array([find(i) for i in range(len(thumbnails))])


def joint_groups(
    queries: np.ndarray, references: np.ndarray, threshold: float = NEAR_DUPLICATE_SIMILARITY
) -> tuple[np.ndarray, np.ndarray]:
    """``near_duplicate_groups`` over query and reference thumbnails together: the query images' group ids, then
    the reference images'. A query whose group holds references is linked to them by a chain of near duplicates:
    on the Alzheimer collection, another slice of a subject they show (every group there is one subject)."""
    groups = near_duplicate_groups(np.concatenate([queries, references]), threshold)
    return groups[: len(queries)], groups[len(queries):]


def subject_in_reference(queries: np.ndarray, references: np.ndarray,
                         threshold: float = NEAR_DUPLICATE_SIMILARITY) -> np.ndarray:
    """Boolean mask over ``queries``: linked to some reference image by a chain of near duplicates (``joint_groups``)."""
    query_groups, reference_groups = joint_groups(queries, references, threshold)
    return np.isin(query_groups, reference_groups)


NO_TRAINING_SUBJECT, SEVERAL_FOLDS = -1, -2


def subject_folds(queries: np.ndarray, references: np.ndarray, reference_folds: np.ndarray,
                  threshold: float = NEAR_DUPLICATE_SIMILARITY) -> np.ndarray:
    """For each query image, the fold of the reference (training) images a chain of near duplicates links it to
    (``joint_groups``): the fold whose models never saw its subject. ``NO_TRAINING_SUBJECT`` when it is linked to
    none, ``SEVERAL_FOLDS`` when its links span folds."""
    query_groups, reference_groups = joint_groups(queries, references, threshold)
    reference_folds = np.asarray(reference_folds)
    folds = np.full(len(queries), NO_TRAINING_SUBJECT, dtype=np.int64)
    for group in np.unique(query_groups):
        linked = np.unique(reference_folds[reference_groups == group])
        if len(linked):
            folds[query_groups == group] = linked[0] if len(linked) == 1 else SEVERAL_FOLDS
    return folds


def duplicates_of_reference(
    queries: Fingerprints, references: Fingerprints, threshold: float = NEAR_DUPLICATE_SIMILARITY
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over ``queries``: exact copy of some reference, near copy of some reference."""
    reference_hashes = set(references.exact)
    exact = np.array([h in reference_hashes for h in queries.exact])
    similarity, _ = nearest_similarity(queries.thumbnails, references.thumbnails)
    return exact, exact | (similarity >= threshold)


def within_split_duplicates(prints: Fingerprints, threshold: float = NEAR_DUPLICATE_SIMILARITY):
    """Boolean masks: image has an exact twin / a near twin elsewhere in the same split."""
    seen: dict[str, int] = {}
    for h in prints.exact:
        seen[h] = seen.get(h, 0) + 1
    exact = np.array([seen[h] > 1 for h in prints.exact])
    similarity, _ = nearest_similarity(prints.thumbnails, prints.thumbnails, exclude_self=True)
    return exact, exact | (similarity >= threshold)


def audit_table(labels: list[str], masks: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per-class counts of each mask, plus the class size, plus a total row."""
    labels_array = np.asarray(labels)
    table = {}
    for label in sorted(set(labels)):
        in_class = labels_array == label
        table[label] = {"images": int(in_class.sum()), **{k: int((m & in_class).sum()) for k, m in masks.items()}}
    table["total"] = {"images": len(labels), **{k: int(m.sum()) for k, m in masks.items()}}
    return table
