"""Loading the two MRI collections, from a local image folder or the Hub, into the four task datasets."""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, concatenate_datasets, load_dataset
from sklearn.model_selection import StratifiedGroupKFold

from ..labels import ALZHEIMER_VS_TUMOR, LABEL_IDS, PARTIAL_LABELS, Task, label_id_from_source

logger = logging.getLogger(__name__)
VALIDATION_FRACTION = 0.15
"""Share of train held out as one grouped validation fold: round(1 / 0.15) = 7 folds."""
SPLIT_SEED = 42
"""Seed of the grouped folds (``run_train.py --split_seed``), kept apart from any training seed."""
FEATURES = Features({"image": Image(), "label_id": Value("string"), "source": Value("string"), "file": Value("string"),
                     "modality": Value("string"), "subject": Value("string")})
SUBJECTS_FILE = "subjects.csv"
"""A collection root's list of the subject of each image (``path`` relative to the root, ``subject``)."""
NON_MRI_LIST = Path(__file__).with_name("non_mri.csv")
"""The modality audit: every non-MRI image found in the collections (collection, file, modality, found_by)."""


@cache
def audited_non_mri() -> dict[str, dict[str, str]]:
    """Collection name -> {file (relative to the collection root): modality} of the audited non-MRI images."""
    listed: dict[str, dict[str, str]] = {}
    with NON_MRI_LIST.open(newline="") as rows:
        for row in csv.DictReader(rows):
            listed.setdefault(row["collection"], {})[row["file"]] = row["modality"]
    return listed


def _class_column(dataset: Dataset) -> str:
    for name, feature in dataset.features.items():
        if isinstance(feature, ClassLabel):
            return name
    raise ValueError(f"no class-label column in {list(dataset.features)}")


SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test",
               "validation": "validation", "valid": "validation", "val": "validation"}


def split_folders(root: str) -> dict[str, str]:
    """The split sub-folders of an image-folder root, by canonical split name (``Training`` -> ``train``)."""
    if not os.path.isdir(root):
        return {}
    return {SPLIT_NAMES[name.lower()]: os.path.join(root, name) for name in sorted(os.listdir(root))
            if name.lower() in SPLIT_NAMES and os.path.isdir(os.path.join(root, name))}


def collection_name(source: str) -> str:
    """A collection's name: a local root's folder name (``alzheimer``), else the Hub id."""
    return os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source


def canonical_order(sources: Sequence[str]) -> list[str]:
    """The collections in the one order their scans are put together in, by name. The grouped folds
    (``fold_assignment``) depend on the order of the scans, so the same collections named in another order drew
    other folds: kept fold logits then lacked scans, and a model's held-out fold was no longer the one measured."""
    return sorted(sources, key=collection_name)


def fold_order_problem(trained_on: Sequence[str]) -> str | None:
    """Why a model trained on the collections ``trained_on`` (its training record's ``data``, in its order) held out
    other folds than ``canonical_order`` draws; None when it did not."""
    if list(trained_on) == canonical_order(trained_on):
        return None
    names = [Path(source).name for source in trained_on]
    wanted = [Path(source).name for source in canonical_order(trained_on)]
    return (f"it was trained with its collections in the order {', '.join(names)}, so its validation fold was drawn "
            f"over the scans in that order, not in the one order used here ({', '.join(wanted)}): figures "
            "called out of fold may count scans it trained on; train it again (run_train.py now takes that order)")


def report_path(source: str | os.PathLike) -> str:
    """A path as reports store it: relative to the project (the checkout whose models/ the package finds, else the
    working directory), so a report reads the same on every machine; a Hub id unchanged."""
    from ..loading import checkout_models

    if not os.path.exists(source):
        return str(source)
    models = checkout_models()
    return os.path.relpath(Path(source).resolve(), models.parent if models else Path.cwd())


def collection_problem(root: str) -> str | None:
    """Why a local folder is no image-folder collection the project can use (``<root>/<split>/<class>/*`` with
    known class names), in words that follow its path; None when it is one."""
    folders = split_folders(root)
    if not folders:
        return "has no train/ or test/ folder of class folders"
    for split, path in folders.items():
        for name in sorted(os.listdir(path)):
            if not os.path.isdir(os.path.join(path, name)):
                continue
            try:
                label_id_from_source(name)
            except ValueError:
                return (f"has a class folder {split}/{name}/, which is none of the Alzheimer or brain tumor classes")
    return None


def load_source(source: str) -> DatasetDict:
    """One collection, as splits of (image, label_id, source, file, modality, subject).

    ``source`` is a local image-folder root (``<root>/<split>/<class>/*``) or a Hub dataset id
    such as ``Falah/Alzheimer_MRI`` or ``sartajbhuvaji/Brain-Tumor-Classification``. ``file`` is the image's path
    relative to the root; ``modality`` is what the modality audit (``NON_MRI_LIST``) lists for it, else "MRI";
    ``subject`` the patient it shows where the root's ``SUBJECTS_FILE`` names one, else ''. A
    local collection that holds some but not all of the files listed for its name fails loudly: it changed since
    the audit.
    """
    local = os.path.isdir(source)
    if local:
        problem = collection_problem(source)
        if problem:
            raise ValueError(f"{source} {problem}")
        folders = split_folders(source)
        raw = load_dataset(
            "imagefolder", data_files={split: os.path.join(path, "**") for split, path in folders.items()}, drop_labels=False
        )
    else:
        raw = load_dataset(source)
    name = collection_name(source)
    root = os.path.abspath(source) if local else None
    non_mri = audited_non_mri().get(name, {})
    subject_of = subjects_listed(Path(root) / SUBJECTS_FILE) if root else {}
    splits = {}
    files_seen: set[str] = set()
    for split, dataset in raw.items():
        split = SPLIT_NAMES.get(split.lower(), split)
        column = _class_column(dataset)
        names = dataset.features[column].names
        try:
            label_ids = [label_id_from_source(names[i]) for i in dataset[column]]
        except ValueError as error:
            raise ValueError(f"{source}, {split} split: {error}") from None
        paths = [image["path"] or "" for image in dataset.cast_column("image", Image(decode=False))["image"]]
        files = [os.path.relpath(path, root).replace(os.sep, "/") if root and path else path for path in paths]
        files_seen.update(files)
        dataset = dataset.select_columns(["image"]).add_column("label_id", label_ids)
        dataset = dataset.add_column("source", [name] * len(dataset)).add_column("file", files)
        dataset = dataset.add_column("modality", [non_mri.get(file, "MRI") for file in files])
        dataset = dataset.add_column("subject", [subject_of.get(file, "") for file in files])
        splits[split] = dataset.cast(FEATURES)
    missing = sorted(set(non_mri) - files_seen) if local else []
    if missing and len(missing) == len(non_mri):  # none of them: another collection of that name
        logger.warning("%s holds none of the %d images the modality audit lists for %s: it is not the audited "
                       "collection, and nothing of it is known to be non-MRI", source, len(non_mri), name)
    elif missing:
        raise ValueError(f"the modality audit ({NON_MRI_LIST.name}) lists {len(missing)} file(s) of {name} that "
                         f"{source} does not hold, e.g. {missing[0]}: the collection changed; audit it again")
    return DatasetDict(splits)


def subjects_listed(path: Path) -> dict[str, str]:
    """File (relative to the collection root) -> subject, from a ``SUBJECTS_FILE``; empty when there is none."""
    if not path.is_file():
        return {}
    with path.open(newline="") as rows:
        return {row["path"]: row["subject"] for row in csv.DictReader(rows)}


def load_sources(sources: Sequence[str], non_mri: bool = False) -> DatasetDict:
    """Several collections concatenated split by split, in ``canonical_order`` whatever order they are given in
    (``train`` and ``test``; a collection without a test split, such as Br35H, adds to train only): MRI only, unless
    ``non_mri``
    keeps the images the modality audit found to be another modality (CT), for refusal checks and their own
    report. No model trains, validates or is scored for accuracy on those."""
    loaded = [load_source(source) for source in canonical_order(sources)]
    splits = sorted(set.union(*(set(d) for d in loaded)))
    joined = {split: concatenate_datasets([d[split] for d in loaded if split in d]) for split in splits}
    if not non_mri:
        joined = {split: only_mri(dataset) for split, dataset in joined.items()}
    return DatasetDict(joined)


def only_mri(dataset: Dataset) -> Dataset:
    return dataset.select(np.flatnonzero(np.asarray(dataset["modality"]) == "MRI"))


def only_non_mri(dataset: Dataset) -> Dataset:
    return dataset.select(np.flatnonzero(np.asarray(dataset["modality"]) != "MRI"))


def split_validation(
    train: Dataset, groups: Sequence[int], fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED, fold: int = 0
) -> tuple[Dataset, Dataset]:
    """Carve a stratified validation split out of ``train`` that keeps each group on one side.

    ``groups`` clusters near-identical images (slices of one subject, re-encoded copies): a
    random split would put neighbours of a validation image in training and flatter it.
    ``train`` falls into ``round(1 / fraction)`` such folds; ``fold`` picks the one held out (0: the split
    the shipped models were trained on; others: more held-out subjects for comparing training recipes).
    """
    n_folds = round(1 / fraction)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} does not exist: a validation fraction of {fraction} gives folds 0-{n_folds - 1}")
    in_fold = fold_assignment(train["label_id"], groups, fraction, seed) == fold
    return train.select(np.flatnonzero(~in_fold)), train.select(np.flatnonzero(in_fold))


def fold_assignment(labels: Sequence[int], groups: Sequence[int], fraction: float = VALIDATION_FRACTION,
                    seed: int = SPLIT_SEED) -> np.ndarray:
    """The grouped fold (``split_validation``) each image falls in: scikit-learn's ``StratifiedGroupKFold`` into
    ``round(1 / fraction)`` folds."""
    folds = StratifiedGroupKFold(n_splits=round(1 / fraction), shuffle=True, random_state=seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for fold, (_, validation_index) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
        assignment[validation_index] = fold
    return assignment


def carve_validation(train: Dataset, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED,
                     thumbnails: np.ndarray | None = None,
                     fold: int = 0):
    """The training script's validation split: near-duplicate groups of ``train``, then ``split_validation``.

    Pass the train thumbnails when already computed (``audit.fingerprint_dataset``) to skip decoding again.
    """
    from .audit import fingerprint_dataset, near_duplicate_groups

    if thumbnails is None:
        thumbnails = fingerprint_dataset(train).thumbnails
    return split_validation(train, near_duplicate_groups(thumbnails), fraction, seed, fold)


def cross_source_split(
    train: Dataset, sizes: Sequence[tuple[int, int]], groups: Sequence[int], min_class_share: float = 0.5
) -> tuple[Dataset, Dataset]:
    """Hold out the scans that come from outside their collection's main source: a validation of transfer to
    other scanners and sources, which a random split cannot give (the tumor collection's test split comes from
    another distribution than its train split).

    A collection's main source is its most common image size (tumor collection: 512x512, the scans behind
    nearly all its glioma, meningioma and pituitary images). Held out: scans of another size, of a class at
    least ``min_class_share`` of whose scans are main-source (so each held-out class was learned from the main
    source), in near-duplicate groups with no main-source member. The rest, other-source healthy scans
    included, is the training part.
    """
    sources, labels = np.array(train["source"]), np.array(train["label_id"])
    sizes, groups = np.array([f"{w}x{h}" for w, h in sizes]), np.asarray(groups)
    main_source = np.zeros(len(train), dtype=bool)
    for source in np.unique(sources):
        in_source = sources == source
        values, counts = np.unique(sizes[in_source], return_counts=True)
        main_source |= in_source & (sizes == values[counts.argmax()])
    source_class = np.char.add(np.char.add(sources.astype(str), "/"), labels.astype(str))
    learned = [pair for pair in np.unique(source_class) if main_source[source_class == pair].mean() >= min_class_share]
    held_out = ~main_source & np.isin(source_class, learned) & ~np.isin(groups, groups[main_source])
    return train.select(np.flatnonzero(~held_out)), train.select(np.flatnonzero(held_out))


def task_dataset(dataset: Dataset, task: Task) -> Dataset:
    """Keep the images that belong to ``task`` and label them with its ClassLabel."""
    keep = [i for i, label in enumerate(dataset["label_id"]) if label in task.class_of]
    subset = dataset.select(keep)
    labels = [task.class_index(label) for label in subset["label_id"]]
    subset = subset.add_column("label", labels)
    return subset.cast_column("label", ClassLabel(names=list(task.classes)))


def label_counts(dataset: Dataset) -> dict[str, int]:
    values = dataset["label_id"]
    return {label: values.count(label) for label in LABEL_IDS + PARTIAL_LABELS if label in values}


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Collection roots and Hub ids, and the collections in a folder of them (``../shared/data`` holding
    ``alzheimer/``, ``brain_tumor/``, ...), in ``canonical_order``. A folder in there that is no usable collection
    (``collection_problem``: ``head_ct/`` has no splits, ``tumor_boxes/`` holds boxes) is skipped with a note on
    stderr naming it."""
    expanded = []
    for source in sources:
        if os.path.isdir(source) and not split_folders(source):
            children = sorted(os.path.join(source, c) for c in os.listdir(source)
                              if not c.startswith(".") and os.path.isdir(os.path.join(source, c)))
            problems = {child: collection_problem(child) for child in children}
            collections = [child for child, problem in problems.items() if problem is None]
            if not collections:
                raise ValueError(f"{source} is no collection (it has no train/ or test/ folder of class folders) "
                                 "and holds none")
            for child, problem in problems.items():
                if problem:
                    print(f"note: skipping {child}: it {problem}", file=sys.stderr)
            expanded.extend(collections)
        else:
            expanded.append(source)
    return canonical_order(expanded)


def true_families(dataset: Dataset) -> np.ndarray:
    """Each scan's true family ("alzheimer" or "tumor"), healthy scans included: the family of the diseased
    scans of the collection it comes from."""
    family_of = {}
    for source, label in zip(dataset["source"], dataset["label_id"]):
        if label in ALZHEIMER_VS_TUMOR.class_of:
            family_of.setdefault(source, ALZHEIMER_VS_TUMOR.class_of[label])
    missing = sorted(set(dataset["source"]) - set(family_of))
    if missing:
        raise ValueError(f"collections with no diseased scans have no family: {', '.join(missing)}")
    return np.array([family_of[source] for source in dataset["source"]])
